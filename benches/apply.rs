//! Apply of a committed run of entries to the state machine.
//!
//! Opens the node's real [`StateMachine`] over a [`Store`] on a fjall
//! database in a temporary directory (the engine options a node starts
//! with) and times [`RaftStateMachine::apply`] of runs of 1, 64 and 512
//! committed SET entries, as openraft hands them over: each run becomes one
//! `storage::ApplyBatch` and one atomic fjall batch with the last-applied
//! log id inside it. Apply writes no fsync of its own (the log's group fsync
//! covers the shared journal), so this is the CPU and memtable cost of
//! applying. Keys cycle through 100,000 names (`redis-benchmark -r
//! 100000`), so most SETs overwrite a key; values are 64 bytes.
//!
//! Entries carry no responder (no client waits on them here): the real
//! path differs only by one channel send per entry after the batch commits.
//! Throughput is entries applied.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use openraft::storage::{EntryResponder, RaftStateMachine};
use raftis::cluster::state_machine::StateMachine;
use raftis::cluster::types::TypeConfig;
use raftis::telemetry::Telemetry;
use support::{set_entry, TempDatabase, KEYS};

fn apply(c: &mut Criterion) {
    let rt = support::runtime();
    let database = TempDatabase::open();
    let store = Arc::new(database.store());
    let sm = StateMachine::open(
        store.clone(),
        database.snapshot_dir(),
        Telemetry::untraced(1),
    )
    .expect("state machine");
    let mut next_index = 1u64;

    let mut group = c.benchmark_group("apply_set");
    group.sample_size(20);
    for run in [1u64, 64, 512] {
        group.throughput(Throughput::Elements(run));
        group.bench_function(format!("run_{run}"), |b| {
            b.iter_custom(|iters| {
                let mut sm = sm.clone();
                rt.block_on(async {
                    let mut took = Duration::ZERO;
                    for _ in 0..iters {
                        let entries: Vec<std::io::Result<EntryResponder<TypeConfig>>> = (next_index
                            ..next_index + run)
                            .map(|i| Ok((set_entry(i), None)))
                            .collect();
                        next_index += run;
                        let started = Instant::now();
                        sm.apply(futures::stream::iter(entries))
                            .await
                            .expect("apply");
                        took += started.elapsed();
                    }
                    took
                })
            });
        });
    }
    group.finish();
    // Every SET landed: the figures are of real applies, not refusals.
    let applied = (next_index - 1).min(KEYS);
    assert_eq!(store.key_count(), applied, "every key applied");
}

criterion_group! {
    name = benches;
    config = support::short_runs(Duration::from_secs(3));
    targets = apply
}
criterion_main!(benches);
