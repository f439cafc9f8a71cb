//! The set-up the criterion benches share, so that each bench file holds
//! only what it measures.
//!
//! A bench file includes it with `mod support;` and takes what it needs:
//! the criterion settings every bench runs with ([`short_runs`]), the
//! runtime the async benches drive the node's code on ([`runtime`]), a
//! fjall database in a temporary directory with the engine options a node
//! starts with ([`TempDatabase`]), the SET log entry a leader proposes
//! ([`set_entry`]), and the executor's steps from a decoded argument
//! vector to a command ready to run ([`argv`], [`prepare`]). Nothing here
//! is timed by itself.

// Each bench file compiles its own copy and uses part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use criterion::Criterion;
use fjall::Database;
use openraft::EntryPayload;
use raftis::cluster::op::{SetCondition, SetExpiry};
use raftis::cluster::types::{Entry, StampedOp};
use raftis::cluster::Op;
use raftis::command::table::lookup_entry;
use raftis::command::{Args, Handler};
use raftis::server::Reply;
use raftis::storage::{EngineOptions, Store};
use tokio::runtime::Runtime;

/// Distinct keys the SETs of [`set_entry`] cycle through (`redis-benchmark
/// -r 100000`), so that most of them overwrite a key.
pub const KEYS: u64 = 100_000;

/// Criterion with short runs, so that `cargo bench` of every file takes
/// minutes on a 2-core machine (`cargo bench -- --measurement-time 10`
/// asks for more): one second of warm-up, `measurement` of measuring.
#[must_use]
pub fn short_runs(measurement: Duration) -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(measurement)
}

/// A multi-threaded tokio runtime with two workers, as on the 2-core
/// machine the figures in benches/RESULTS.md come from.
#[must_use]
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A fjall database in a temporary directory, opened with the engine
/// options a node starts with; the directory goes when this is dropped.
pub struct TempDatabase {
    /// The database, in `db` under the directory.
    pub db: Database,
    /// The options it was opened with.
    pub engine: EngineOptions,
    dir: tempfile::TempDir,
}

impl TempDatabase {
    /// Creates the directory and opens the database in it.
    #[must_use]
    pub fn open() -> TempDatabase {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = EngineOptions::default();
        let db = engine
            .open_database(&dir.path().join("db"))
            .expect("database");
        TempDatabase { db, engine, dir }
    }

    /// The database's directory (what the log store's fsync follows).
    #[must_use]
    pub fn db_dir(&self) -> PathBuf {
        self.dir.path().join("db")
    }

    /// A directory for snapshots beside the database.
    #[must_use]
    pub fn snapshot_dir(&self) -> PathBuf {
        self.dir.path().join("snapshots")
    }

    /// The node's store over this database.
    #[must_use]
    pub fn store(&self) -> Store {
        Store::open(self.db.clone(), &self.engine).expect("store")
    }
}

/// The log entry at `index` of term 1, as a leader proposes a client's
/// `SET key:<index mod KEYS> <64 bytes>`.
#[must_use]
pub fn set_entry(index: u64) -> Entry {
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

/// The argument vector of `parts`, as the request decoder produces it.
#[must_use]
pub fn argv(parts: &[&[u8]]) -> Vec<Bytes> {
    parts.iter().map(|p| Bytes::copy_from_slice(p)).collect()
}

/// A read command's handler: the store, its arguments, the read clock.
pub type ReadHandler = fn(&Store, &mut Args, u64) -> Reply;

/// What a request is once the executor has prepared it: a write's
/// replicated operation, or a read's handler with its arguments (run after
/// the read barrier).
pub enum Prepared {
    /// The operation to propose.
    Write(Op),
    /// The handler and its arguments.
    Read(ReadHandler, Args),
}

/// Prepares `argv` the way the executor does: looks the name up in the
/// command table (case-insensitive), checks that it is no container
/// command and its arity, and runs a write's parse function. Panics on a
/// request the table refuses, or that is neither a read nor a write: every
/// bench input is a valid read or write.
#[must_use]
pub fn prepare(argv: Vec<Bytes>) -> Prepared {
    let entry = lookup_entry(&argv[0]).expect("bench command is in the table");
    assert!(!entry.is_container(), "not a container command");
    let spec = entry.spec;
    assert!(spec.arity_ok(argv.len()), "bench request has a valid arity");
    let mut args = Args::new(argv);
    match spec.handler {
        Handler::Write(parse) => match parse(&mut args) {
            Ok(op) => Prepared::Write(op),
            Err(reply) => panic!("bench request refused: {reply:?}"),
        },
        Handler::Read(read) => Prepared::Read(read, args),
        Handler::Server(_) | Handler::Admin(_) => panic!("bench command is not a read or write"),
    }
}
