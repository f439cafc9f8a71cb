//! The RESP front end on its own: connections and the listener driven with
//! raw bytes, against a small stand-in executor instead of a node, so that
//! framing, pipelining, QUIT, protocol errors, limits, timeouts, maxclients
//! and shutdown are tested without Raft. Command behaviour against real
//! nodes lives in the other test files.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use raftis::server::connection::Closed;
use raftis::server::state::ClientEntry;
use raftis::server::{serve, serve_connection, Executor, Reply, ServerState, Session, Settings};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Answers PING, ECHO, HELLO and CLIENT ID; counts the batches it is given.
#[derive(Default)]
struct Stand {
    batches: AtomicUsize,
    requests: AtomicUsize,
}

impl Stand {
    fn run(session: &mut Session, argv: &[Bytes]) -> Reply {
        let name = String::from_utf8_lossy(&argv[0]).to_ascii_lowercase();
        match (name.as_str(), argv.len()) {
            ("ping", 1) => Reply::simple("PONG"),
            ("echo", 2) => Reply::Bulk(argv[1].clone()),
            ("hello", 2) => {
                session.protocol = if &argv[1][..] == b"3" { 3 } else { 2 };
                Reply::Map(vec![(
                    Reply::bulk("proto"),
                    Reply::Integer(i64::from(session.protocol)),
                )])
            }
            ("null", 1) => Reply::Null,
            ("client", 2) => Reply::Integer(i64::try_from(session.id).unwrap_or(-1)),
            _ => Reply::error(format!("ERR unknown command '{name}'")),
        }
    }
}

impl Executor for Stand {
    async fn execute_batch(
        &self,
        session: &mut Session,
        requests: &mut Vec<Vec<Bytes>>,
        out: &mut BytesMut,
    ) {
        self.batches.fetch_add(1, Ordering::SeqCst);
        for argv in requests.drain(..) {
            self.requests.fetch_add(1, Ordering::SeqCst);
            let reply = Stand::run(session, &argv);
            reply.encode(session.reply_protocol(), out);
        }
    }
}

/// A stream that counts the writes made to it.
struct Counted {
    inner: DuplexStream,
    writes: Arc<AtomicUsize>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct Harness {
    client: DuplexStream,
    writes: Arc<AtomicUsize>,
    stand: Arc<Stand>,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<std::io::Result<Closed>>,
}

fn start(settings: Settings) -> Harness {
    let (client, server_side) = tokio::io::duplex(1 << 20);
    let writes = Arc::new(AtomicUsize::new(0));
    let stream = Counted {
        inner: server_side,
        writes: Arc::clone(&writes),
    };
    let state = Arc::new(ServerState::new(settings));
    let entry = Arc::new(ClientEntry::new(state.next_client_id(), None, None, -1));
    state.register(Arc::clone(&entry));
    let session = Session::new(state, entry);
    let stand = Arc::new(Stand::default());
    let (stop, stop_rx) = watch::channel(false);
    let exec = Arc::clone(&stand);
    let done =
        tokio::spawn(async move { serve_connection(stream, &*exec, session, stop_rx).await });
    Harness {
        client,
        writes,
        stand,
        stop,
        done,
    }
}

/// Reads until the server closes its side.
async fn read_to_end(client: &mut DuplexStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .expect("read");
    out
}

/// Reads exactly `n` bytes.
async fn read_n(client: &mut DuplexStream, n: usize) -> Vec<u8> {
    let mut out = vec![0; n];
    tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut out))
        .await
        .expect("the reply arrives")
        .expect("read");
    out
}

#[tokio::test]
async fn pipeline_is_one_batch_and_one_write() {
    let mut h = start(Settings::default());
    h.client
        .write_all(b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\nPING\r\n")
        .await
        .unwrap();
    let expected = b"+PONG\r\n$2\r\nhi\r\n+PONG\r\n";
    assert_eq!(read_n(&mut h.client, expected.len()).await, expected);
    assert_eq!(h.stand.batches.load(Ordering::SeqCst), 1);
    assert_eq!(h.writes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn errors_leave_the_connection_usable() {
    let mut h = start(Settings::default());
    h.client.write_all(b"NOPE\r\n").await.unwrap();
    let expected = b"-ERR unknown command 'nope'\r\n";
    assert_eq!(read_n(&mut h.client, expected.len()).await, expected);
    h.client.write_all(b"PING\r\n").await.unwrap();
    assert_eq!(read_n(&mut h.client, 7).await, b"+PONG\r\n");
}

#[tokio::test]
async fn quit_answers_ok_and_skips_what_follows() {
    let mut h = start(Settings::default());
    h.client
        .write_all(b"PING\r\n*1\r\n$4\r\nquit\r\nPING\r\n")
        .await
        .unwrap();
    assert_eq!(read_to_end(&mut h.client).await, b"+PONG\r\n+OK\r\n");
    assert_eq!(h.stand.requests.load(Ordering::SeqCst), 1);
    assert_eq!(h.done.await.unwrap().unwrap(), Closed::Quit);
}

#[tokio::test]
async fn protocol_error_answers_then_closes() {
    let mut h = start(Settings::default());
    h.client
        .write_all(b"PING\r\n*1\r\nPING\r\nPING\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_to_end(&mut h.client).await,
        b"+PONG\r\n-ERR Protocol error: expected '$', got 'P'\r\n"
    );
    assert!(matches!(
        h.done.await.unwrap().unwrap(),
        Closed::Protocol(_)
    ));
}

#[tokio::test]
async fn oversize_bulk_is_refused_before_its_body() {
    let mut h = start(Settings {
        proto_max_bulk_len: 1024,
        ..Settings::default()
    });
    h.client
        .write_all(b"*2\r\n$4\r\nECHO\r\n$1025\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_to_end(&mut h.client).await,
        b"-ERR Protocol error: invalid bulk length\r\n"
    );
}

#[tokio::test]
async fn query_buffer_limit_closes_without_reply() {
    let mut h = start(Settings {
        client_query_buffer_limit: 1000,
        ..Settings::default()
    });
    h.client
        .write_all(b"*2\r\n$4\r\nECHO\r\n$1000\r\n")
        .await
        .unwrap();
    assert_eq!(read_to_end(&mut h.client).await, b"");
}

#[tokio::test]
async fn http_request_is_closed_silently() {
    let mut h = start(Settings::default());
    h.client
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_to_end(&mut h.client).await, b"");
    assert_eq!(h.done.await.unwrap().unwrap(), Closed::CrossProtocol);
}

#[tokio::test]
async fn large_value_across_many_reads() {
    let mut h = start(Settings::default());
    let value = vec![b'v'; 300_000];
    let mut req = format!("*2\r\n$4\r\nECHO\r\n${}\r\n", value.len()).into_bytes();
    req.extend_from_slice(&value);
    req.extend_from_slice(b"\r\n");
    for chunk in req.chunks(7_000) {
        h.client.write_all(chunk).await.unwrap();
        tokio::task::yield_now().await;
    }
    let header = b"$300000\r\n";
    let got = read_n(&mut h.client, header.len() + value.len() + 2).await;
    assert_eq!(&got[..header.len()], header);
    assert_eq!(&got[header.len()..header.len() + value.len()], &value[..]);
}

#[tokio::test]
async fn protocol_switch_applies_from_the_next_reply() {
    let mut h = start(Settings::default());
    h.client
        .write_all(b"NULL\r\nHELLO 3\r\nNULL\r\nHELLO 2\r\nNULL\r\n")
        .await
        .unwrap();
    let expected: &[u8] =
        b"$-1\r\n%1\r\n$5\r\nproto\r\n:3\r\n_\r\n*2\r\n$5\r\nproto\r\n:2\r\n$-1\r\n";
    assert_eq!(read_n(&mut h.client, expected.len()).await, expected);
}

#[tokio::test]
async fn shutdown_closes_an_idle_connection() {
    let mut h = start(Settings::default());
    h.client.write_all(b"PING\r\n").await.unwrap();
    assert_eq!(read_n(&mut h.client, 7).await, b"+PONG\r\n");
    h.stop.send(true).unwrap();
    assert_eq!(read_to_end(&mut h.client).await, b"");
    assert_eq!(h.done.await.unwrap().unwrap(), Closed::Shutdown);
}

#[tokio::test]
async fn idle_timeout_closes() {
    let mut h = start(Settings {
        timeout_secs: 1,
        ..Settings::default()
    });
    assert_eq!(read_to_end(&mut h.client).await, b"");
    assert_eq!(h.done.await.unwrap().unwrap(), Closed::IdleTimeout);
}

#[tokio::test]
async fn end_of_stream_ends_the_connection() {
    let mut h = start(Settings::default());
    h.client.shutdown().await.unwrap();
    drop(h.client);
    assert_eq!(h.done.await.unwrap().unwrap(), Closed::Eof);
}

async fn read_some(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = vec![0; n];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut out))
        .await
        .expect("reply")
        .expect("read");
    out
}

#[tokio::test]
async fn listener_enforces_maxclients_and_drains_on_shutdown() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(ServerState::new(Settings {
        maxclients: 1,
        ..Settings::default()
    }));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        Arc::new(Stand::default()),
        Arc::clone(&state),
        async {
            let _ = stop_rx.await;
        },
    ));

    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(b"CLIENT ID\r\n").await.unwrap();
    assert_eq!(read_some(&mut first, 4).await, b":1\r\n");
    assert_eq!(state.connected_clients(), 1);
    assert_eq!(state.tcp_port(), u64::from(addr.port()));

    let mut second = TcpStream::connect(addr).await.unwrap();
    let mut refused = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), second.read_to_end(&mut refused))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(refused, b"-ERR max number of clients reached\r\n");
    assert_eq!(
        state
            .stats
            .rejected_connections
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    stop_tx.send(()).unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), first.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(state.connected_clients(), 0);
}
