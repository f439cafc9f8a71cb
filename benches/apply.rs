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

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::EntryPayload;
use raftis::cluster::op::{SetCondition, SetExpiry};
use raftis::cluster::state_machine::StateMachine;
use raftis::cluster::types::{Entry, StampedOp, TypeConfig};
use raftis::cluster::Op;
use raftis::storage::{EngineOptions, Store};
use raftis::telemetry::Telemetry;

/// Distinct keys the SETs cycle through.
const KEYS: u64 = 100_000;

/// The committed entry at `index` of term 1: a SET with a 64-byte value.
fn set_entry(index: u64) -> Entry {
    let op = Op::Set {
        key: Bytes::from(format!("key:{:012}", index % KEYS)),
        value: Bytes::from_static(&[b'x'; 64]),
        condition: SetCondition::Always,
        expiry: SetExpiry::Clear,
        get: false,
    };
    Entry {
        log_id: openraft::LogId::new(
            openraft::impls::leader_id_adv::LeaderId {
                term: 1,
                node_id: 1,
            },
            index,
        ),
        payload: EntryPayload::Normal(StampedOp {
            now_ms: 1_700_000_000_000,
            op,
            trace: None,
        }),
    }
}

fn apply(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = EngineOptions::default();
    let db = engine
        .open_database(&dir.path().join("db"))
        .expect("database");
    let store = Arc::new(Store::open(db, &engine).expect("store"));
    let sm = StateMachine::open(
        store.clone(),
        dir.path().join("snapshots"),
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
    // Short runs, so that `cargo bench` of every file takes minutes on a
    // 2-core machine; `cargo bench -- --measurement-time 10` asks for more.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = apply
}
criterion_main!(benches);
