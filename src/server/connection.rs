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
        if *shutdown.borrow() {
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
            read = read => match read {
                None => return Ok(Closed::IdleTimeout),
                Some(n) => n?,
            },
            _ = shutdown.changed() => return Ok(Closed::Shutdown),
        };
        if n == 0 {
            return Ok(Closed::Eof);
        }
        server
            .stats
            .net_input_bytes
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        let mut meta = session.client.meta();
        meta.last_interaction = Instant::now();
        meta.qbuf = rbuf.len();
    }
}
