//! Everything Raft: how a write becomes durable on a majority and applied
//! everywhere, and how a read on any node stays linearizable.
//!
//! # Design
//!
//! Each node runs one openraft instance over three pieces of ours:
//!
//! - the **log store** (`log_store.rs`): the Raft log in fjall, acknowledged
//!   to openraft only after fsync, with one fsync shared by every entry that
//!   arrived together (group commit);
//! - the **state machine** (`state_machine.rs`): committed entries applied to
//!   the `storage::Store`, one atomic fjall batch per run of entries with the
//!   last-applied log id inside it; snapshots streamed to and from files;
//! - the **peer transport** (`network.rs`, `rpc_server.rs`, `rpc.rs`): one
//!   multiplexed TCP connection per peer carrying Raft's RPCs, snapshot
//!   chunks, forwarded writes and read-index requests.
//!
//! On top of it, [`Cluster`] is the API the command layer uses:
//! [`Cluster::write`] and [`Cluster::write_batch`] (propose on the leader or
//! forward to it, `forward.rs`; a connection's consecutive pipelined writes
//! travel as one `Op::Batch` entry so they keep their order and apply all or
//! none), [`Cluster::read_barrier`] (ReadIndex on the leader, or its lease
//! with `raft.read_policy = "lease"`; on a follower, concurrent reads share
//! one read-index request to the leader per round, `read.rs`) and
//! [`Cluster::status`].
//!
//! Time: the leader stamps each entry with its clock and apply computes
//! expiry from the stamp, never from a local clock. The leader also runs
//! active expiry: it finds keys whose TTL has passed and proposes their
//! deletion. Stamps and the clock reads use to hide expired keys are floored
//! at the highest stamp applied, so time never runs backwards on a node even
//! when leaders' clocks disagree.
//!
//! Tracing: a traced write carries its trace context in the log entry
//! (`StampedOp::trace`) and in each AppendEntries (the leader's span per
//! traced entry), so the log store, the state machine and the peer transport
//! of every node record their part of the write's trace (`telemetry::trace`),
//! though openraft runs them in tasks of its own.
//!
//! Everything openraft-specific stays inside this module: the rest of the
//! crate sees `Op`, `OpResult`, `ClusterError` and `RaftStatus`.
//!
//! # Caveats
//!
//! - The log store and the state machine share one fjall journal. That makes
//!   the log fsync cover state-machine writes made before it, but it also
//!   means a fsync failure poisons both: the node stops rather than diverge.
//! - A write whose fate is unknown (leader lost mid-commit) is reported as
//!   `-TIMEOUT`, never retried: there is no client-side request id to
//!   de-duplicate with, so a retry could apply a non-idempotent op twice.
//! - Installing a snapshot copies the received file once more into the
//!   snapshot directory; a large state costs twice its size on disk briefly.
//! - A cluster starts from `initial_cluster` (or one node alone); later
//!   changes go through `RAFT.NODE` and `--join` (`membership.rs`, joint
//!   consensus; `force_new_cluster.rs` for a quorum lost for good). Nothing
//!   checks that every member was given the same list, nor stops a node
//!   whose data dir was wiped from initializing again (etcd's cluster id
//!   would).
//! - The trace context inside log entries is part of the replicated data
//!   (one byte per entry, 26 more when traced): a data dir or a peer of a
//!   build from before tracing cannot be read by this one, nor the other
//!   way round, and nothing detects it but a decoding error (there is no
//!   format version yet).
//! - Lease reads (opt-in) trust that the members' monotonic clocks run at
//!   the same rate; openraft forgets a node's promise not to vote when it
//!   restarts, so a lease node holds its vote and elections for a lease
//!   length after it starts (`rpc_server.rs`, `integration/lease.rs`).
//! - Reads hide expired keys by this node's clock (floored as above): with
//!   clocks far apart, a key may look expired on one node shortly before it
//!   does on another, until the leader's deletion is applied everywhere.

pub mod backup;
pub mod core;
pub mod disk_guard;
pub mod force_new_cluster;
pub mod forward;
pub mod journal_sync;
pub mod log_store;
pub mod log_tail;
pub mod membership;
pub mod network;
pub mod op;
pub mod proposer;
pub mod read;
pub mod rpc;
pub mod rpc_server;
pub mod state_machine;
pub mod transfer;
pub mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{InitializeError, RaftError};
use openraft::{ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use op::{Op, OpResult};
pub use types::{Member, StampedOp, TypeConfig};

use self::core::Core;
use self::log_store::LogStore;
use self::network::{NetworkFactory, Peers, SelfInfo};
use self::state_machine::StateMachine;
use crate::config::{RaftConfig, ReadPolicy};
use crate::server::Reply;
use crate::storage::Store;

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Not applied: no leader or no quorum before the command was proposed.
    #[error("CLUSTERDOWN {0}")]
    Unavailable(String),
    /// Proposed, but the outcome was not seen in time.
    #[error("TIMEOUT {0}")]
    Timeout(String),
    /// Not applied: this node (or the leader) is low on disk space
    /// (`disk_guard.rs`). Redis's prefix for "persistence failing, writes
    /// refused".
    #[error("MISCONF {0}")]
    NoSpace(String),
    /// The node could not start its Raft layer.
    #[error("cannot start the cluster layer: {what}: {source}")]
    Startup {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

impl ClusterError {
    /// The RESP error prefix this error is reported with.
    #[must_use]
    pub fn resp_prefix(&self) -> &'static str {
        match self {
            ClusterError::Unavailable(_) => "CLUSTERDOWN",
            ClusterError::Timeout(_) => "TIMEOUT",
            ClusterError::NoSpace(_) => "MISCONF",
            ClusterError::Startup { .. } => "ERR",
        }
    }

    fn startup(what: &'static str) -> impl FnOnce(io::Error) -> ClusterError {
        move |source| ClusterError::Startup { what, source }
    }
}

impl From<ClusterError> for Reply {
    fn from(e: ClusterError) -> Reply {
        match e {
            ClusterError::Startup { .. } => Reply::error(format!("ERR {e}")),
            _ => Reply::error(e.to_string()),
        }
    }
}

/// What the cluster layer needs to start, derived from the configuration.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// This node's id.
    pub id: u64,
    /// Where the fjall database and snapshots live.
    pub data_dir: PathBuf,
    /// The RESP address clients use for this node (announced to peers).
    pub resp_addr: String,
    /// The peer address other nodes use for this node.
    pub peer_addr: String,
    /// The initial voters, id → peer address; empty for a one-node cluster.
    pub initial_members: BTreeMap<u64, String>,
    /// How long a request may wait for a leader and a commit.
    pub request_timeout: Duration,
    /// Heartbeat, election and snapshot settings (`[raft]` in the config).
    pub raft: RaftConfig,
    /// fjall's block cache and memtable sizes (`[storage]` in the config).
    pub engine: crate::storage::EngineOptions,
    /// Free bytes below which this node refuses writes (`storage.min_free_mb`); 0: never.
    pub min_free_bytes: u64,
    /// Start without initializing a cluster: this node joins an existing
    /// one (`--join`), whose leader adds it and replicates to it.
    pub join: bool,
    /// Make this node the only voter before Raft starts (`--force-new-cluster`).
    pub force_new_cluster: bool,
    /// This node's tracer and metrics.
    pub telemetry: crate::telemetry::Telemetry,
}

/// A snapshot of this node's Raft state, for INFO and admin commands.
#[derive(Debug, Clone)]
pub struct RaftStatus {
    /// This node's id.
    pub node_id: u64,
    /// `leader`, `follower`, `learner` or `candidate`.
    pub role: &'static str,
    /// The leader this node knows of.
    pub leader_id: Option<u64>,
    /// Current term.
    pub term: u64,
    /// Highest log index known committed.
    pub commit_index: u64,
    /// Highest log index applied here.
    pub last_applied: u64,
    /// Highest log index in this node's log.
    pub last_log_index: u64,
    /// Voter ids.
    pub voters: Vec<u64>,
    /// Learner ids.
    pub learners: Vec<u64>,
    /// Every member: id and peer address.
    pub members: Vec<(u64, String)>,
    /// Index of the last snapshot, 0 if none.
    pub snapshot_index: u64,
    /// Highest log index purged from this node's log, 0 if none: a node
    /// lagging behind it can only catch up through a snapshot.
    pub purged_index: u64,
    /// Voters needed for a decision: floor(voters/2)+1.
    pub quorum: usize,
    /// Voters that may fail with the cluster still working: floor((voters-1)/2).
    pub failure_tolerance: usize,
    /// The voter count is even (no more tolerance than one voter fewer).
    pub voters_even: bool,
    /// This node was removed from the cluster and serves nothing.
    pub removed: bool,
    /// Every member with replication facts, when this node leads (empty
    /// otherwise: only the leader knows them; `RAFT.NODES` asks it).
    pub nodes: Vec<membership::NodeInfo>,
}

#[cfg(test)]
impl RaftStatus {
    /// A follower of a healthy three-voter cluster led by node 2, applied
    /// through what it knows committed (unit tests of status readers).
    pub(crate) fn sample() -> RaftStatus {
        RaftStatus {
            node_id: 1,
            role: "follower",
            leader_id: Some(2),
            term: 3,
            commit_index: 10,
            last_applied: 10,
            last_log_index: 10,
            voters: vec![1, 2, 3],
            learners: Vec::new(),
            members: Vec::new(),
            snapshot_index: 0,
            purged_index: 0,
            quorum: 2,
            failure_tolerance: 1,
            voters_even: false,
            removed: false,
            nodes: Vec::new(),
        }
    }
}

/// This node's handle on the Raft group.
pub struct Cluster {
    core: Arc<Core>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Cluster {
    /// Opens storage under `opts.data_dir`, starts Raft and the peer server
    /// on `peer_listener`, and initializes the cluster if this is its first
    /// start. Returns the cluster handle and the store for local reads.
    ///
    /// # Errors
    /// Storage that cannot be opened or a Raft configuration that openraft refuses.
    pub async fn start(
        opts: ClusterOptions,
        peer_listener: TcpListener,
    ) -> Result<(Cluster, Arc<Store>), ClusterError> {
        let db_dir = opts.data_dir.join("db");
        std::fs::create_dir_all(&db_dir)
            .map_err(ClusterError::startup("creating the data directory"))?;
        let db = opts
            .engine
            .open_database(&db_dir)
            .map_err(|e| ClusterError::Startup {
                what: "opening the database",
                source: io::Error::other(e),
            })?;
        let store =
            Arc::new(
                Store::open(db.clone(), &opts.engine).map_err(|e| ClusterError::Startup {
                    what: "opening the store",
                    source: io::Error::other(e),
                })?,
            );
        let mut log_store = LogStore::open(&db, &db_dir, &opts.engine, &opts.telemetry)
            .map_err(ClusterError::startup("opening the raft log"))?;
        if opts.force_new_cluster {
            let forced = force_new_cluster::force_new_cluster(
                &mut log_store,
                &opts.data_dir,
                opts.id,
                &opts.peer_addr,
            )
            .await
            .map_err(ClusterError::startup("forcing a new cluster"))?;
            tracing::warn!(
                term = forced.term,
                index = forced.index,
                "--force-new-cluster: this node is now the only voter of its cluster; \
                 add members back with RAFT.NODE ADD and never restart the old ones"
            );
        }
        let snapshot_dir = opts.data_dir.join("snapshots");
        let disk = Arc::new(disk_guard::DiskGuard::new(
            opts.id,
            opts.data_dir.clone(),
            snapshot_dir.clone(),
            opts.min_free_bytes,
            log_store.clone(),
        ));
        let state_machine =
            StateMachine::open(store.clone(), snapshot_dir.clone(), opts.telemetry.clone())
                .map_err(ClusterError::startup("opening the snapshot directory"))?;
        let applied_clock = state_machine.applied_clock();

        let lease = opts.raft.read_policy == ReadPolicy::Lease;
        let raft_config = openraft::Config {
            cluster_name: "raftis".into(),
            heartbeat_interval: opts.raft.heartbeat_interval_ms,
            election_timeout_min: opts.raft.election_timeout_min_ms,
            election_timeout_max: opts.raft.election_timeout_max_ms,
            install_snapshot_timeout: opts.raft.install_snapshot_timeout_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(opts.raft.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: opts.raft.max_in_snapshot_log_to_keep,
            enable_pre_vote: Some(true),
            // Replicate an entry as soon as it is in the leader's log, not
            // after the leader's own fsync: the two run side by side, which
            // takes one fsync off a write's latency (one client's SET p50:
            // 0.89 -> 0.57 ms, benches/RESULTS.md). Safe: the leader counts
            // itself toward the quorum only once its fsync is done.
            broadcast_submitted_on_append: Some(true),
            // With lease reads a node starts with elections off (see
            // `vote_hold_off_until` below): set here, not after `Raft::new`,
            // so that not even the core's first tick may campaign.
            enable_elect: !lease,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::Startup {
            what: "validating the raft configuration",
            source: io::Error::other(e),
        })?;

        let me = SelfInfo {
            node_id: opts.id,
            resp_addr: opts.resp_addr.clone(),
        };
        let peers = Arc::new(Peers::new(
            me,
            Duration::from_millis(opts.raft.heartbeat_interval_ms.max(100) * 5),
        ));
        // Taken before Raft starts: what this node promised not to vote for
        // in its previous life is gone, and a leader may still hold a lease
        // on that promise for up to `election_timeout_max` from then.
        let vote_hold_off_until = lease
            .then(|| Instant::now() + Duration::from_millis(opts.raft.election_timeout_max_ms));
        let raft = openraft::Raft::new(
            opts.id,
            Arc::new(raft_config),
            NetworkFactory::new(
                peers.clone(),
                Duration::from_millis(opts.raft.election_timeout_min_ms),
                opts.telemetry.tracer.clone(),
            ),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| ClusterError::Startup {
            what: "starting raft",
            source: io::Error::other(e),
        })?;

        let proposer = proposer::Proposer::start(
            raft.clone(),
            applied_clock.clone(),
            opts.telemetry.metrics.clone(),
        );
        if let Some(until) = vote_hold_off_until {
            let raft = raft.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(until.into()).await;
                raft.runtime_config().elect(true);
            });
        }
        let core = Arc::new(Core {
            id: opts.id,
            read_policy: opts.raft.read_policy,
            vote_hold_off_until,
            raft,
            peers,
            snapshot_dir,
            request_timeout: opts.request_timeout,
            proposer,
            applied_clock,
            read_batch: read::ReadIndexBatch::default(),
            peer_read_batch: read::ReadIndexBatch::default(),
            disk,
            removed: membership::RemovalState::load(&opts.data_dir),
            telemetry: opts.telemetry.clone(),
        });
        let mut tasks = vec![tokio::spawn(rpc_server::serve(peer_listener, core.clone()))];

        if core.removed.is_removed() {
            // Removed earlier (the marker in the data dir): no elections,
            // no serving; see `membership.rs`.
            tracing::warn!("this node was removed from the cluster; not serving");
            if let Err(e) = core.raft.shutdown().await {
                tracing::debug!(error = %e, "stopping raft of a removed node");
            }
        } else if !opts.join {
            initialize_once(&core, &opts).await?;
        }
        tasks.push(tokio::spawn(membership::watch_membership(core.clone())));
        tasks.push(tokio::spawn(run_active_expiry(core.clone(), store.clone())));
        tasks.push(tokio::spawn(disk_guard::run(core.clone())));
        Ok((Cluster { core, tasks }, store))
    }

    /// This node's Raft state.
    #[must_use]
    pub fn status(&self) -> RaftStatus {
        // Before the metrics are borrowed below: it borrows them too.
        let nodes = self.core.nodes_local().unwrap_or_default();
        let metrics = self.core.raft.metrics();
        let m = metrics.borrow_watched();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let learners: Vec<u64> = membership.learner_ids().collect();
        let voters_count = voters.len();
        let removed = self.core.removed.is_removed();
        let role = match m.state {
            _ if removed => "removed",
            ServerState::Leader => "leader",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            _ if !voters.contains(&self.core.id) && !voters.is_empty() => "learner",
            _ => "follower",
        };
        RaftStatus {
            node_id: self.core.id,
            role,
            leader_id: m.current_leader,
            term: m.current_term,
            commit_index: m
                .cluster_committed
                .as_ref()
                .or(m.local_committed.as_ref())
                .map_or(0, |l| l.index),
            last_applied: m.last_applied.as_ref().map_or(0, |l| l.index),
            last_log_index: m.last_log_index.unwrap_or(0),
            voters: voters.into_iter().collect(),
            learners,
            members: membership
                .nodes()
                .map(|(id, n)| (*id, n.peer_addr.clone()))
                .collect(),
            snapshot_index: m.snapshot.as_ref().map_or(0, |l| l.index),
            purged_index: m.purged.as_ref().map_or(0, |l| l.index),
            quorum: membership::quorum(voters_count),
            failure_tolerance: membership::failure_tolerance(voters_count),
            voters_even: voters_count > 0 && voters_count % 2 == 0,
            removed,
            nodes,
        }
    }

    /// The time reads use to hide expired keys: this node's clock, never
    /// behind the highest leader stamp applied here (clocks differ between
    /// nodes and may step back; a key once seen expired stays expired).
    #[must_use]
    pub fn read_clock_ms(&self) -> u64 {
        self.core.clock_ms()
    }

    /// The RESP address `node_id` announced, if known.
    #[must_use]
    pub fn resp_addr(&self, node_id: u64) -> Option<String> {
        self.core.peers.resp_addr(node_id)
    }

    /// Stops Raft; in-flight requests fail.
    pub async fn shutdown(&self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Err(e) = self.core.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }

    /// Calls `seen` with the term and the leader this node knows of, now
    /// and after every change of Raft's state, until Raft stops (then the
    /// future ends). It holds no handle on the node, only Raft's metrics
    /// channel, so a spawned watch never keeps a stopped node alive
    /// (`telemetry::Metrics::watch_leaders` counts leader changes with it).
    pub fn watch_leader(
        &self,
        mut seen: impl FnMut(u64, Option<u64>) + Send + 'static,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        // The server metrics change with leader, vote and membership only
        // (the full metrics with every commit); their channel closes when
        // Raft stops, fatal error or not.
        let mut metrics = self.core.raft.server_metrics();
        async move {
            loop {
                let (term, leader) = core::term_and_leader(&metrics.borrow_watched());
                seen(term, leader);
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Initializes the cluster on its very first start. Every member is given
/// the same list and calls this; the membership entry they write is
/// identical, so whichever wins the first election, they agree. A node that
/// already has state (a restart) skips it.
async fn initialize_once(core: &Core, opts: &ClusterOptions) -> Result<(), ClusterError> {
    let initialized = core
        .raft
        .is_initialized()
        .await
        .map_err(|e| ClusterError::Startup {
            what: "reading raft state",
            source: io::Error::other(e),
        })?;
    if initialized {
        return Ok(());
    }
    let members: BTreeMap<u64, Member> = if opts.initial_members.is_empty() {
        BTreeMap::from([(
            opts.id,
            Member {
                peer_addr: opts.peer_addr.clone(),
            },
        )])
    } else {
        opts.initial_members
            .iter()
            .map(|(id, addr)| {
                (
                    *id,
                    Member {
                        peer_addr: addr.clone(),
                    },
                )
            })
            .collect()
    };
    match core.raft.initialize(members).await {
        Ok(()) => {
            tracing::info!("cluster initialized");
            Ok(())
        }
        // Another member's vote or log reached us first: already formed.
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(ClusterError::Startup {
            what: "initializing the cluster",
            source: io::Error::other(e),
        }),
    }
}

/// How often the leader looks for expired keys, and how many it deletes per
/// proposal (so one expiry burst never makes one giant entry).
const EXPIRY_PERIOD: Duration = Duration::from_millis(100);
const EXPIRY_BATCH: usize = 512;

/// Active expiry, leader only: finds keys whose time has passed by the
/// leader's clock and proposes their deletion. Apply deletes a key only if it
/// is still expired at the stamped time, so a key re-SET meanwhile survives.
async fn run_active_expiry(core: Arc<Core>, store: Arc<Store>) {
    let cluster = Cluster {
        core: core.clone(),
        tasks: Vec::new(),
    };
    let mut tick = tokio::time::interval(EXPIRY_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if core.current_leader() != Some(core.id) {
            continue;
        }
        loop {
            let keys = match store.expired_keys(core.clock_ms(), EXPIRY_BATCH) {
                Ok(keys) => keys,
                Err(e) => {
                    tracing::warn!(error = %e, "scanning for expired keys");
                    break;
                }
            };
            let full = keys.len() == EXPIRY_BATCH;
            if keys.is_empty() {
                break;
            }
            match cluster.write(Op::ExpireKeys(keys)).await {
                // Nothing was deleted (the stamp was earlier than the scan's
                // clock, say): scanning again now would find the same keys.
                Ok(OpResult::Integer(0)) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "proposing expired keys");
                    break;
                }
            }
            if !full {
                break;
            }
        }
    }
}
