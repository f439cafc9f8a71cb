//! RESP on the wire: decoding pipelined requests and encoding replies.
//!
//! Decode feeds one buffer holding N pipelined `SET key:<i> <64 bytes>`
//! requests (RESP2 arrays of bulk strings, as `redis-benchmark -t set -d 64
//! -P N` sends them) to the server's own [`RequestDecoder`], exactly as a
//! connection does after a read: `decode` until it returns `Ok(None)`. Each
//! iteration starts from a fresh copy of the buffer, made outside the timed
//! part. Throughput is requests decoded.
//!
//! Encode runs [`Reply::encode`] for a pipelined batch of 128 replies of one
//! shape (`+OK`, a 64-byte and a 4 KiB bulk string, an integer, a ten-element
//! array of 64-byte bulks) into one output buffer, as a connection encodes a
//! batch before its single flush. Throughput is replies encoded.
//!
//! Connection runs the server's own [`serve_connection`] loop (read, decode,
//! execute, encode, write, repeat) over an in-memory stream that hands it
//! 64 reads, each holding one `GET` or `SET` (as from 50 clients that do not
//! pipeline) or a pipeline of 16 of them, then the end of the stream. The
//! executor answers each request as a hit would (a 64-byte bulk for `GET`,
//! `+OK` for `SET`) without running a command: what is measured is the
//! front end's own cost per request, which `command_parse` and the `read`
//! and `apply` benches leave out. Throughput is requests served.
//!
//! For instruction counts, which the machine's load does not move, run one
//! benchmark under callgrind, e.g.
//! `valgrind --tool=callgrind target/release/deps/resp-<hash> --bench
//! '^resp_connection/get_x64_reads$' --profile-time 3`: the inclusive cost of
//! `Runtime::block_on` divided by the calls of `Reply::encode` (one per
//! request; `callgrind_annotate --inclusive=yes --tree=caller`) is the
//! front end's instructions per request, and `RequestDecoder::decode`'s
//! inclusive cost over the same count is the decoder's share.

use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use raftis::server::codec::{ProtocolLimits, RequestDecoder};
use raftis::server::connection::Closed;
use raftis::server::{serve_connection, Executor, Protocol, Reply, Session};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A 64-byte value, as `redis-benchmark -d 64` sends.
const VALUE_64: [u8; 64] = [b'x'; 64];

/// `n` pipelined SET requests with distinct keys and 64-byte values.
fn pipelined_sets(n: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(n * 110);
    for i in 0..n {
        let key = format!("key:{i:012}");
        buf.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
        buf.extend_from_slice(format!("${}\r\n", key.len()).as_bytes());
        buf.extend_from_slice(key.as_bytes());
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(format!("${}\r\n", VALUE_64.len()).as_bytes());
        buf.extend_from_slice(&VALUE_64);
        buf.extend_from_slice(b"\r\n");
    }
    buf
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("resp_decode_set");
    for n in [1usize, 16, 128] {
        let wire = pipelined_sets(n);
        group.throughput(Throughput::Elements(n as u64));
        // One decoder for the whole run, as a connection keeps one.
        let mut decoder = RequestDecoder::new(ProtocolLimits::default());
        group.bench_function(format!("pipeline_{n}"), |b| {
            b.iter_batched(
                || BytesMut::from(&wire[..]),
                |mut buf| {
                    let mut decoded = 0usize;
                    while let Ok(Some(argv)) = decoder.decode(&mut buf) {
                        decoded += argv.len();
                        black_box(argv);
                    }
                    // Every request is three arguments; anything else means
                    // the decoder stopped early and the figure is wrong.
                    assert_eq!(decoded, 3 * n, "decoder stopped before the end");
                    buf
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    const BATCH: usize = 128;
    let bulk_64 = Bytes::from_static(&VALUE_64);
    let replies = [
        ("ok", Reply::ok()),
        ("bulk_64", Reply::Bulk(bulk_64.clone())),
        ("bulk_4k", Reply::Bulk(Bytes::from(vec![b'y'; 4096]))),
        ("integer", Reply::Integer(1_234_567)),
        ("array_10x64", Reply::Array(vec![Reply::Bulk(bulk_64); 10])),
    ];
    let mut group = c.benchmark_group("resp_encode");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, reply) in &replies {
        let mut out = BytesMut::new();
        group.bench_function(format!("{name}_x{BATCH}"), |b| {
            b.iter(|| {
                // Cleared, not reallocated: a connection reuses its output
                // buffer from batch to batch the same way.
                out.clear();
                for _ in 0..BATCH {
                    black_box(reply).encode(Protocol::Resp2, &mut out);
                }
                black_box(out.len())
            });
        });
    }
    group.finish();
}

/// Answers `GET` with a 64-byte bulk and anything else with `+OK`, as a
/// hit and a successful write would be answered, without running them.
struct HitAnswers {
    value: Bytes,
}

impl Executor for HitAnswers {
    async fn execute_batch(
        &self,
        session: &mut Session,
        requests: &mut Vec<Vec<Bytes>>,
        out: &mut BytesMut,
    ) {
        for argv in requests.drain(..) {
            let reply = if argv[0].eq_ignore_ascii_case(b"get") {
                Reply::Bulk(self.value.clone())
            } else {
                Reply::ok()
            };
            reply.encode(session.reply_protocol(), out);
        }
    }
}

/// A client that sends one chunk per read (never more: a read returns at
/// most the next chunk) and then closes; what it is sent is counted only.
struct ScriptedClient {
    chunks: std::vec::IntoIter<Bytes>,
    received: usize,
}

impl AsyncRead for ScriptedClient {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        // Nothing left: a read of zero bytes, the end of the stream.
        if let Some(chunk) = self.chunks.next() {
            assert!(buf.remaining() >= chunk.len(), "read buffer too small");
            buf.put_slice(&chunk);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ScriptedClient {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.received += buf.len();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// One `GET key:<i>` request.
fn get_request(i: usize) -> Vec<u8> {
    let key = format!("key:{i:012}");
    format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).into_bytes()
}

fn connection(c: &mut Criterion) {
    const READS: usize = 64;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => panic!("no tokio runtime for the bench: {e}"),
    };
    let executor = HitAnswers {
        value: Bytes::from_static(&VALUE_64),
    };
    // Made once: a session's server state builds the command table's stats.
    let session = Session::detached();
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut group = c.benchmark_group("resp_connection");
    for (name, per_read) in [
        ("get", 1usize),
        ("set", 1),
        ("get_pipeline_16", 16),
        ("set_pipeline_16", 16),
    ] {
        let chunks: Vec<Bytes> = (0..READS)
            .map(|r| {
                let first = r * per_read;
                let wire: Vec<u8> = if name.starts_with("get") {
                    (first..first + per_read).flat_map(get_request).collect()
                } else {
                    pipelined_sets(per_read)
                };
                Bytes::from(wire)
            })
            .collect();
        group.throughput(Throughput::Elements((READS * per_read) as u64));
        group.bench_function(format!("{name}_x{READS}_reads"), |b| {
            b.iter_batched(
                || ScriptedClient {
                    chunks: chunks.clone().into_iter(),
                    received: 0,
                },
                |mut client| {
                    let closed = runtime.block_on(serve_connection(
                        &mut client,
                        &executor,
                        session.clone(),
                        stop_rx.clone(),
                    ));
                    assert!(matches!(closed, Ok(Closed::Eof)), "{closed:?}");
                    assert!(client.received > 0, "no replies");
                    client.received
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs, so that `cargo bench` of every file takes minutes on a
    // 2-core machine; `cargo bench -- --measurement-time 10` asks for more.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = decode, encode, connection
}
criterion_main!(benches);
