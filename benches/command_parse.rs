//! Command parse: from a decoded argument vector to a command ready to run.
//!
//! What the executor does with each request before anything is replicated
//! or read (`command::exec`'s `resolve` and `prepare`): look the name up in
//! the command table (`command::table::lookup_entry`, case-insensitive),
//! check that it is no container command, check its arity, and, for a write, run
//! its parse function over an [`Args`](raftis::command::Args) cursor to get
//! the replicated [`Op`](raftis::cluster::Op). A read (GET) is ready once
//! resolved: its key is taken by the read handler after the read barrier.
//! The bench drives those same public table and parse functions in the
//! executor's order (`support::prepare`, which the read bench uses too);
//! the per-command stats the executor records around them are not
//! included.
//!
//! The argument vectors are built outside the timed part (the decoder makes
//! them, `benches/resp.rs` times that). Throughput is commands parsed.

mod support;

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use support::{argv, prepare, Prepared};

fn command_parse(c: &mut Criterion) {
    let value = [b'x'; 64];
    let mut mset: Vec<&[u8]> = vec![b"MSET"];
    let keys: Vec<String> = (0..10).map(|i| format!("key:{i:012}")).collect();
    for key in &keys {
        mset.push(key.as_bytes());
        mset.push(&value);
    }
    let requests: Vec<(&str, Vec<Bytes>)> = vec![
        ("set", argv(&[b"SET", b"key:000000000001", &value])),
        (
            "set_ex",
            argv(&[b"SET", b"key:000000000001", &value, b"EX", b"100"]),
        ),
        ("get", argv(&[b"GET", b"key:000000000001"])),
        ("incr", argv(&[b"INCR", b"counter:000000000001"])),
        ("mset_10", argv(&mset)),
    ];
    let mut group = c.benchmark_group("command_parse");
    group.throughput(Throughput::Elements(1));
    for (name, request) in &requests {
        group.bench_function(*name, |b| {
            b.iter_batched(
                || request.clone(),
                |argv| match prepare(argv) {
                    Prepared::Write(op) => black_box(op).key_count(),
                    Prepared::Read(_, args) => black_box(args).remaining(),
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::short_runs(Duration::from_secs(2));
    targets = command_parse
}
criterion_main!(benches);
