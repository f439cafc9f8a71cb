//! The accept loop: admits clients up to `maxclients`, gives each one a task
//! running [`serve_connection`], and drains them on shutdown.
//!
//! [`serve`] accepts until its `shutdown` future completes. Each accepted
//! socket gets TCP_NODELAY (replies are flushed once per batch already, so
//! Nagle would only add latency), a fresh client id, an entry in the
//! [`ServerState`] client registry and its own task; one task per
//! connection, never per request. A client beyond `maxclients` is told
//! `-ERR max number of clients reached` and closed, as Redis does. On
//! shutdown the listener stops accepting, tells every connection to finish
//! the batch it is running, answer it and close, and returns once all have.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::connection::{serve_connection, Closed, Executor};
use super::session::Session;
use super::state::{ClientEntry, ServerState, Settings};

/// Sent to a client refused for being over `maxclients`.
const MAXCLIENTS_REPLY: &[u8] = b"-ERR max number of clients reached\r\n";

/// Serves RESP clients on `listener` with `executor` until `shutdown`
/// completes, then drains the open connections and returns.
///
/// `node::start` calls it as
/// `serve(listener, node.clone(), Arc::new(ServerState::new(settings)), signal)`.
///
/// # Errors
/// Only the listener's own failure to report its address; accept errors
/// (out of file descriptors...) are logged and retried after a pause.
pub async fn serve<E: Executor>(
    listener: TcpListener,
    executor: Arc<E>,
    state: Arc<ServerState>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    state.set_tcp_port(local.port());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next() => {}
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => admit(socket, &executor, &state, &stop_rx, &mut connections),
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning on it.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// [`serve`] for a node, with front-end state built from its configuration.
/// Use [`serve`] directly to keep a handle on the [`ServerState`] (for
/// metrics).
///
/// # Errors
/// As [`serve`].
pub async fn serve_node(
    listener: TcpListener,
    node: Arc<crate::node::Node>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let state = Arc::new(ServerState::new(Settings::from(&*node.config)));
    serve(listener, node, state, shutdown).await
}

fn admit<E: Executor>(
    socket: TcpStream,
    executor: &Arc<E>,
    state: &Arc<ServerState>,
    stop: &watch::Receiver<bool>,
    connections: &mut JoinSet<()>,
) {
    state
        .stats
        .connections_received
        .fetch_add(1, Ordering::Relaxed);
    let maxclients = state.settings.maxclients.load(Ordering::Relaxed);
    if state.connected_clients() as u64 >= maxclients {
        state
            .stats
            .rejected_connections
            .fetch_add(1, Ordering::Relaxed);
        // A fresh socket's send buffer is empty, so this never blocks; if it
        // cannot be written at once the client is closed all the same.
        let _ = socket.try_write(MAXCLIENTS_REPLY);
        return;
    }
    if let Err(e) = socket.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let entry = Arc::new(ClientEntry::new(
        state.next_client_id(),
        socket.peer_addr().ok(),
        socket.local_addr().ok(),
        raw_fd(&socket),
    ));
    state.register(Arc::clone(&entry));
    let session = Session::new(Arc::clone(state), entry);
    let executor = Arc::clone(executor);
    let state = Arc::clone(state);
    let stop = stop.clone();
    connections.spawn(async move {
        let id = session.id;
        // Unregisters even if the connection task panics.
        let _registered = Registered { state: &state, id };
        match serve_connection(socket, &*executor, session, stop).await {
            Ok(Closed::Eof | Closed::Quit | Closed::Shutdown) => {}
            Ok(reason) => tracing::debug!(client = id, ?reason, "connection closed"),
            Err(e) => tracing::debug!(client = id, error = %e, "connection failed"),
        }
    });
}

struct Registered<'a> {
    state: &'a ServerState,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.state.unregister(self.id);
    }
}

#[cfg(unix)]
fn raw_fd(socket: &TcpStream) -> i64 {
    use std::os::fd::AsRawFd;
    i64::from(socket.as_raw_fd())
}

#[cfg(not(unix))]
fn raw_fd(_socket: &TcpStream) -> i64 {
    -1
}
