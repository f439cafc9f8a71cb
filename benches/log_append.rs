//! Raft log append with group commit: write, fsync, acknowledge.
//!
//! Opens the node's real log store ([`LogStore`]) on a fjall database in a
//! temporary directory, with the engine options a node starts with, and
//! times what openraft waits for before it may count an entry as durable:
//! [`RaftLogStorage::append`] (postcard-encodes the entries and writes them
//! in one fjall batch) and then the completion callback, which the log's
//! flusher thread fires after its fsync of the journal. Every entry is a
//! SET of a 16-byte key to a 64-byte value, as a leader proposes it.
//!
//! - `log_append/batch_N`: one append of N entries at a time (openraft hands
//!   the log a run of entries that arrived together), waiting for its fsync
//!   before the next. Throughput is entries made durable.
//! - `log_group_commit/appenders_N`: N appends of one entry each, issued
//!   concurrently (each from its own task, on clones of the store), all
//!   waited for. The flusher fsyncs once for every callback waiting when it
//!   wakes, so the time per round grows far slower than N: N divided by
//!   (this figure's time over `appenders_1`'s) is about how many entries
//!   shared each fsync.
//!
//! fsync dominates and is noisy on a shared disk: few samples, short runs.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::type_config::TypeConfigExt;
use raftis::cluster::log_store::LogStore;
use raftis::cluster::types::{Entry, TypeConfig};
use raftis::telemetry::Telemetry;
use support::{set_entry, TempDatabase};

/// Appends `entries` and waits until the log store reports them durable.
async fn append_durably(store: &mut LogStore, entries: Vec<Entry>) {
    let (tx, rx) = TypeConfig::oneshot();
    store
        .append(entries, IOFlushed::signal(tx))
        .await
        .expect("append");
    rx.await.expect("flusher answers").expect("fsync");
}

/// A log store on a fresh database; the database lives as long as it.
fn open_log() -> (TempDatabase, LogStore) {
    let database = TempDatabase::open();
    let log = LogStore::open(
        &database.db,
        &database.db_dir(),
        &database.engine,
        &Telemetry::untraced(1),
    )
    .expect("log store");
    (database, log)
}

fn log_append(c: &mut Criterion) {
    let rt = support::runtime();
    let (_database, log) = open_log();
    let next_index = AtomicU64::new(1);
    let mut group = c.benchmark_group("log_append");
    group.sample_size(10);
    for batch in [1u64, 16, 128] {
        group.throughput(Throughput::Elements(batch));
        group.bench_function(format!("batch_{batch}"), |b| {
            b.iter_custom(|iters| {
                let mut store = log.clone();
                rt.block_on(async {
                    let mut took = Duration::ZERO;
                    for _ in 0..iters {
                        let first = next_index.fetch_add(batch, Ordering::Relaxed);
                        let entries: Vec<Entry> = (first..first + batch).map(set_entry).collect();
                        let started = Instant::now();
                        append_durably(&mut store, entries).await;
                        took += started.elapsed();
                    }
                    took
                })
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("log_group_commit");
    group.sample_size(10);
    for appenders in [1u64, 8, 64] {
        group.throughput(Throughput::Elements(appenders));
        group.bench_function(format!("appenders_{appenders}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut took = Duration::ZERO;
                    for _ in 0..iters {
                        let first = next_index.fetch_add(appenders, Ordering::Relaxed);
                        let entries: Vec<Entry> =
                            (first..first + appenders).map(set_entry).collect();
                        let started = Instant::now();
                        let tasks: Vec<_> = entries
                            .into_iter()
                            .map(|entry| {
                                let mut store = log.clone();
                                tokio::spawn(async move {
                                    append_durably(&mut store, vec![entry]).await
                                })
                            })
                            .collect();
                        for task in tasks {
                            task.await.expect("appender task");
                        }
                        took += started.elapsed();
                    }
                    took
                })
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::short_runs(Duration::from_secs(3));
    targets = log_append
}
criterion_main!(benches);
