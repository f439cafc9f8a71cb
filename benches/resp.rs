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

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use raftis::server::codec::{ProtocolLimits, RequestDecoder};
use raftis::server::{Protocol, Reply};

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

criterion_group! {
    name = benches;
    // Short runs, so that `cargo bench` of every file takes minutes on a
    // 2-core machine; `cargo bench -- --measurement-time 10` asks for more.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = decode, encode
}
criterion_main!(benches);
