//! One client connection: read, decode, execute, encode, flush, repeat.
//!
//! Each turn of [`serve_connection`]'s loop decodes every complete request
//! already in the read buffer, hands the whole batch to the [`Executor`]
//! (which runs them in order and appends each reply, encoded in the
//! session's protocol of that moment, to one output buffer), then writes
//! that buffer with a single write: a pipeline of N requests costs one
//! syscall each way, not N. Only then is the socket read again, so a client
//! that pipelines faster than we answer is slowed by TCP, and the read
//! buffer holds at most one incomplete request beyond what was read.
//!
//! `QUIT` is answered `+OK` after the requests before it, and the
//! connection closes without running what follows. `SHUTDOWN` runs in a
//! batch of its own, after the replies to the requests before it are
//! written: a successful one never answers (its connection is closed when
//! the node stops), and the client must still hear what came before it,
//! as it does from a Redis primary that waits for its replicas. A
//! protocol error is answered (after the requests before it) and closes
//! the connection, as do the idle timeout, the end of the stream and a
//! shutdown (after the current batch is answered). Both buffers are reused
//! across batches and shrunk back after an unusually large one.
//!
//! What a turn costs besides the requests themselves is kept small, since
//! with clients that do not pipeline a turn is one request: one clock
//! reading per read (for `CLIENT LIST`'s `idle`, stored without a lock),
//! the shutdown signal checked with one atomic load per batch and waited on
//! by one future kept across reads rather than one registered per read, and
//! no random branch order in the `select!`.

use std::future::Future;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::codec::{ProtocolError, RequestDecoder};
use super::reply::Reply;
use super::session::Session;

/// What a read asks of the socket at least, so many small pipelined
/// requests arrive in one read.
const READ_CHUNK: usize = 16 * 1024;

/// Buffers grown past this for one large request or reply are replaced by
/// fresh ones afterwards rather than kept for the connection's lifetime.
const KEEP_BUFFER: usize = 1024 * 1024;

/// Runs the requests of one batch. The node implements it with the command
/// table (`command::exec`); tests can substitute their own.
pub trait Executor: Send + Sync + 'static {
    /// Runs `requests` (drained) in order, appending each reply to `out`,
    /// encoded in the protocol `session` is in when the reply is produced.
    fn execute_batch<'a>(
        &'a self,
        session: &'a mut Session,
        requests: &'a mut Vec<Vec<Bytes>>,
        out: &'a mut BytesMut,
    ) -> impl Future<Output = ()> + Send + 'a;
}

/// Why a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// The client closed its side.
    Eof,
    /// `QUIT`.
    Quit,
    /// A protocol error (already answered, when Redis answers it).
    Protocol(ProtocolError),
    /// Idle longer than `timeout`.
    IdleTimeout,
    /// The server is shutting down.
    Shutdown,
    /// An HTTP request (`POST`, `Host:`): closed silently, as Redis does,
    /// so a browser tricked into talking to us cannot issue commands.
    CrossProtocol,
}

/// Serves one client until it leaves, breaks the protocol, idles out, or
/// `shutdown` turns true.
///
/// # Errors
/// The socket's I/O error, if reading or writing fails.
pub async fn serve_connection<S, E>(
    mut stream: S,
    executor: &E,
    mut session: Session,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<Closed>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    E: Executor,
{
    let server = session.server.clone();
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut wbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut requests: Vec<Vec<Bytes>> = Vec::new();
    let mut decoder = RequestDecoder::new(server.settings.limits());
    // A `SHUTDOWN` decoded after other requests: it starts the next batch,
    // once the replies to those are written.
    let mut held_back: Option<Vec<Bytes>> = None;
    if *shutdown.borrow_and_update() {
        return Ok(Closed::Shutdown);
    }
    // Completes when the shutdown signal changes (or its sender is gone).
    // Made once: a `changed()` made per read would join and leave the
    // signal's waiter list (a lock each way) on every request.
    let mut stop_signal = shutdown.clone();
    let stop = stop_signal.changed();
    tokio::pin!(stop);
    loop {
        decoder.set_limits(server.settings.limits());
        let mut closing = None;
        requests.extend(held_back.take());
        loop {
            match decoder.decode(&mut rbuf) {
                Ok(Some(argv)) => {
                    let name = argv.first().map_or(&b""[..], |a| &a[..]);
                    if name.eq_ignore_ascii_case(b"shutdown") && !requests.is_empty() {
                        held_back = Some(argv);
                        break;
                    }
                    if name.eq_ignore_ascii_case(b"quit") {
                        closing = Some(Closed::Quit);
                        break;
                    }
                    if name.eq_ignore_ascii_case(b"post") || name.eq_ignore_ascii_case(b"host:") {
                        tracing::warn!(
                            client = session.id,
                            "possible cross-protocol attack: HTTP request on the RESP port; closing"
                        );
                        closing = Some(Closed::CrossProtocol);
                        break;
                    }
                    requests.push(argv);
                }
                Ok(None) => break,
                Err(e) => {
                    closing = Some(Closed::Protocol(e));
                    break;
                }
            }
        }
        if !requests.is_empty() {
            executor
                .execute_batch(&mut session, &mut requests, &mut wbuf)
                .await;
            requests.clear();
        }
        match &closing {
            Some(Closed::Quit) => Reply::ok().encode(session.reply_protocol(), &mut wbuf),
            Some(Closed::Protocol(e)) => {
                tracing::debug!(client = session.id, error = %e, "protocol error; closing");
                if let Some(reply) = e.reply() {
                    reply.encode(session.reply_protocol(), &mut wbuf);
                }
            }
            _ => {}
        }
        if !wbuf.is_empty() {
            stream.write_all(&wbuf).await?;
            stream.flush().await?;
            server
                .stats
                .net_output_bytes
                .fetch_add(wbuf.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if wbuf.capacity() > KEEP_BUFFER {
                wbuf = BytesMut::with_capacity(READ_CHUNK);
            } else {
                wbuf.clear();
            }
        }
        if let Some(reason) = closing {
            return Ok(reason);
        }
        // One atomic load while the signal has not changed. A signal whose
        // sender is gone can never be raised: that ends the connection as
        // the wait on it below would.
        let stopping = match shutdown.has_changed() {
            Ok(changed) => changed && *shutdown.borrow_and_update(),
            Err(_) => true,
        };
        if stopping {
            return Ok(Closed::Shutdown);
        }
        if held_back.is_some() {
            // Its batch is complete already: no need to read first.
            continue;
        }
        if rbuf.is_empty() && rbuf.capacity() > KEEP_BUFFER {
            rbuf = BytesMut::with_capacity(READ_CHUNK);
        }
        if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
            rbuf.reserve(READ_CHUNK);
        }
        let idle_timeout = server.settings.idle_timeout();
        let read = async {
            match idle_timeout {
                Some(limit) => tokio::time::timeout(limit, stream.read_buf(&mut rbuf))
                    .await
                    .ok(),
                None => Some(stream.read_buf(&mut rbuf).await),
            }
        };
        let n = tokio::select! {
            // The read first: when it is ready the signal is not polled.
            biased;
            read = read => match read {
                None => return Ok(Closed::IdleTimeout),
                Some(n) => n?,
            },
            _ = &mut stop => return Ok(Closed::Shutdown),
        };
        if n == 0 {
            return Ok(Closed::Eof);
        }
        server
            .stats
            .net_input_bytes
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        session.client.note_read(Instant::now(), rbuf.len());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Answers every request `+OK`; the first batch it runs may also raise
    /// the shutdown signal, as a `SHUTDOWN` elsewhere would mid-batch.
    struct OkThenStop {
        stop: Option<watch::Sender<bool>>,
    }

    impl Executor for OkThenStop {
        async fn execute_batch(
            &self,
            _session: &mut Session,
            requests: &mut Vec<Vec<Bytes>>,
            out: &mut BytesMut,
        ) {
            for _ in requests.drain(..) {
                Reply::ok().encode(crate::server::Protocol::Resp2, out);
            }
            if let Some(stop) = &self.stop {
                let _ = stop.send(true);
            }
        }
    }

    #[tokio::test]
    async fn a_signal_raised_before_the_start_closes_at_once() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b"PING\r\n").await.unwrap();
        let (_tx, rx) = watch::channel(true);
        let executor = OkThenStop { stop: None };
        let closed = serve_connection(server, &executor, Session::detached(), rx).await;
        assert_eq!(closed.unwrap(), Closed::Shutdown);
        let mut answered = Vec::new();
        client.read_to_end(&mut answered).await.unwrap();
        assert!(answered.is_empty(), "nothing is run once shut down");
    }

    #[tokio::test]
    async fn a_signal_raised_during_a_batch_closes_after_its_replies() {
        let (mut client, server) = tokio::io::duplex(1024);
        let (tx, rx) = watch::channel(false);
        let executor = OkThenStop { stop: Some(tx) };
        client.write_all(b"PING\r\nPING\r\n").await.unwrap();
        let closed = serve_connection(server, &executor, Session::detached(), rx).await;
        assert_eq!(closed.unwrap(), Closed::Shutdown);
        let mut answered = Vec::new();
        client.read_to_end(&mut answered).await.unwrap();
        assert_eq!(answered, b"+OK\r\n+OK\r\n");
    }

    #[tokio::test]
    async fn a_signal_whose_sender_is_gone_closes_the_connection() {
        let (mut client, server) = tokio::io::duplex(1024);
        let (tx, rx) = watch::channel(false);
        drop(tx);
        client.write_all(b"PING\r\n").await.unwrap();
        let executor = OkThenStop { stop: None };
        let closed = serve_connection(server, &executor, Session::detached(), rx).await;
        assert_eq!(closed.unwrap(), Closed::Shutdown);
        let mut answered = Vec::new();
        client.read_to_end(&mut answered).await.unwrap();
        assert!(answered.is_empty(), "closed before reading");
    }

    #[tokio::test]
    async fn client_list_sees_each_read_and_the_partial_request() {
        let (mut client, server) = tokio::io::duplex(1024);
        let (_tx, rx) = watch::channel(false);
        let session = Session::detached();
        let entry = Arc::clone(&session.client);
        let connected = entry.last_interaction();
        let task = tokio::spawn(async move {
            serve_connection(server, &OkThenStop { stop: None }, session, rx).await
        });
        // A whole request and the start of another.
        client.write_all(b"PING\r\n*2\r\n$3\r\nGET").await.unwrap();
        let mut reply = [0u8; 5];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"+OK\r\n");
        // The read is noted before its batch runs, so it is visible now; as
        // before this was lock-free, `qbuf` is what the buffer held right
        // after the read (the whole request and the partial one).
        let line = String::from_utf8(entry.info_line(Instant::now())).unwrap();
        assert!(line.contains(" qbuf=17 "), "{line}");
        let first_read = entry.last_interaction();
        assert!(first_read > connected);
        // The rest of it: the second read is noted too.
        client.write_all(b"\r\n$1\r\nk\r\n").await.unwrap();
        client.read_exact(&mut reply).await.unwrap();
        let line = String::from_utf8(entry.info_line(Instant::now())).unwrap();
        assert!(line.contains(" qbuf=20 "), "{line}");
        assert!(entry.last_interaction() > first_read);
        drop(client);
        assert_eq!(task.await.unwrap().unwrap(), Closed::Eof);
    }
}
