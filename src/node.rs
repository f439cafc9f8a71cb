//! A running raftis node: what every connection and command shares, and how
//! a node starts and stops.
//!
//! `main` loads the configuration and calls [`run`]; tests call [`start`]
//! with listeners they bound themselves (port 0). Starting opens storage and
//! Raft (`cluster::Cluster::start`), then serves RESP clients on the client
//! listener until told to stop. Stopping drains client connections first, then
//! stops Raft, so every handle on the database is gone when it returns.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cluster::{Cluster, ClusterOptions};
use crate::config::Config;
use crate::error::Error;
use crate::storage::Store;

/// Everything a command may need.
pub struct Node {
    /// The validated configuration this node started with.
    pub config: Arc<Config>,
    /// Local applied state, for reads.
    pub store: Arc<Store>,
    /// Raft: writes, read barriers, status.
    pub cluster: Cluster,
}

/// A node that is serving; stop it with [`RunningNode::stop`].
pub struct RunningNode {
    node: Arc<Node>,
    resp_addr: SocketAddr,
    stop_tx: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl RunningNode {
    /// The shared node state.
    #[must_use]
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Where RESP clients connect.
    #[must_use]
    pub fn resp_addr(&self) -> SocketAddr {
        self.resp_addr
    }

    /// Stops serving clients (open connections are closed), then stops Raft.
    pub async fn stop(mut self) {
        self.stop_inner().await;
    }

    async fn stop_inner(&mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        self.node.cluster.shutdown().await;
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

fn cluster_options(
    config: &Config,
    resp_addr: SocketAddr,
    peer_addr: SocketAddr,
) -> ClusterOptions {
    let advertised_peer = {
        let configured = config.peer_listen_addr();
        if configured.port() == 0 {
            peer_addr.to_string()
        } else {
            configured.to_string()
        }
    };
    let advertised_resp = if config.listen.port() == 0 {
        resp_addr.to_string()
    } else {
        config.listen.to_string()
    };
    ClusterOptions {
        id: config.id,
        data_dir: config.data_dir.clone(),
        resp_addr: advertised_resp,
        peer_addr: advertised_peer.clone(),
        initial_members: match &config.initial_cluster {
            Some(_) => config.initial_members(),
            None => std::collections::BTreeMap::from([(config.id, advertised_peer)]),
        },
        request_timeout: config.request_timeout(),
        raft: config.raft.clone(),
        cache_size_bytes: config.storage.cache_size_bytes(),
    }
}

/// Starts a node on listeners the caller bound.
///
/// # Errors
/// Storage or Raft that cannot start.
pub async fn start(
    config: Config,
    resp: TcpListener,
    peer: TcpListener,
) -> Result<RunningNode, Error> {
    let resp_addr = resp.local_addr()?;
    let peer_addr = peer.local_addr()?;
    let options = cluster_options(&config, resp_addr, peer_addr);
    let (cluster, store) = Cluster::start(options, peer).await?;
    let node = Arc::new(Node {
        config: Arc::new(config),
        store,
        cluster,
    });
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let serving = crate::server::listener::serve_node(resp, node.clone(), async move {
        let _ = stop_rx.await;
    });
    let server = tokio::spawn(async move {
        if let Err(e) = serving.await {
            tracing::error!(error = %e, "RESP server stopped");
        }
    });
    tracing::info!(id = node.config.id, %resp_addr, %peer_addr, "raftis node started");
    Ok(RunningNode {
        node,
        resp_addr,
        stop_tx: Some(stop_tx),
        server: Some(server),
    })
}

/// Binds the configured addresses, serves until SIGINT or SIGTERM, then
/// stops cleanly.
///
/// # Errors
/// An address that cannot be bound, or storage or Raft that cannot start.
pub async fn run(config: Config) -> Result<(), Error> {
    let resp = bind("listen", config.listen.to_string()).await?;
    let peer = bind("peer_listen", config.peer_listen_addr().to_string()).await?;
    let node = start(config, resp, peer).await?;
    wait_for_signal().await?;
    tracing::info!("shutting down");
    node.stop().await;
    Ok(())
}

async fn bind(key: &'static str, addr: String) -> Result<TcpListener, Error> {
    match TcpListener::bind(&addr).await {
        Ok(l) => Ok(l),
        Err(source) => Err(Error::Bind { key, addr, source }),
    }
}

async fn wait_for_signal() -> Result<(), Error> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
