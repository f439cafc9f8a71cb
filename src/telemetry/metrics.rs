//! This node's metrics in a Prometheus registry, and the text `/metrics`
//! serves.
//!
//! Two kinds of values meet here. Events are recorded as they happen, by
//! the layer that sees them, through [`Metrics`]'s `observe_*` and `count_*`
//! methods: a group fsync of the Raft log (`log_store.rs`), a write's
//! proposal-to-commit time on the leader, a snapshot built or installed
//! (`state_machine.rs`), a write forwarded to the leader (`forward.rs`), a
//! command's latency (`command/exec.rs`), and leader changes, which a task
//! started by [`Metrics::watch_leaders`] counts from Raft's own metrics.
//! Levels (term, role, indexes, connections, error counts, disk space and
//! the storage engine's background work) already live in the cluster, the
//! disk guard and the RESP front end, so they are read when Prometheus
//! scrapes, into a [`LiveState`], instead of being copied on every change.
//! [`Metrics::encode`] writes both, in the Prometheus text format (version
//! 0.0.4) or in OpenMetrics, whichever the scraper asked for.
//!
//! Every node owns its registry: several nodes in one process (the tests)
//! never share a metric. Names follow Prometheus's conventions: `raftis_`
//! first, the unit last (`_seconds`, `_total` for counters), histograms in
//! seconds.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::cluster::disk_guard::PersistenceStatus;
use crate::cluster::RaftStatus;
use crate::command::table::{self, CommandId};

/// The roles `raftis_raft_role` reports, one series each (1 for the
/// current role, 0 for the others).
pub const ROLES: [&str; 5] = ["leader", "follower", "candidate", "learner", "removed"];

/// Which snapshot operation a duration belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotKind {
    /// This node built a snapshot of its own state (log compaction).
    Build,
    /// This node installed a snapshot received from the leader.
    Install,
}

impl SnapshotKind {
    fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::Build => "build",
            SnapshotKind::Install => "install",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SnapshotLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CommandLabels {
    command: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CommandResultLabels {
    command: &'static str,
    result: &'static str,
}

/// A histogram family whose members share one bucket layout.
type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

/// Upper bounds of the request and commit latency buckets, in seconds:
/// 10 µs (a command served locally) to about 5.2 s.
fn request_bounds() -> impl Iterator<Item = f64> {
    exponential_buckets(0.00001, 2.0, 20)
}

/// A histogram of request latencies.
fn request_buckets() -> Histogram {
    Histogram::new(request_bounds())
}

/// Snapshot durations: 1 ms to about 4.4 min.
fn snapshot_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

/// This node's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    leader_changes: Counter,
    /// The last (term, leader) counted by `leader_changes`.
    last_leader: Mutex<Option<(u64, u64)>>,
    /// False once Raft has stopped (its metrics channel closed or reported
    /// a fatal error), as seen by [`Metrics::watch_leaders`].
    raft_running: AtomicBool,
    commit_duration: Histogram,
    fsync_duration: Histogram,
    fsync_entries: Histogram,
    proposal_writes: Histogram,
    snapshot_duration: HistogramFamily<SnapshotLabels>,
    forwarded_writes: Counter,
    /// `raftis_commands_total` and `raftis_command_duration_seconds`,
    /// shared with the registry's collector that encodes them.
    commands: Arc<CommandSeries>,
}

/// Every command's `/metrics` series, in [`CommandId`] order: counters and
/// a histogram per command as plain atomics, so observing a command indexes
/// an array and takes no lock (a `Family` would hash the labels under a
/// read lock, and a `Histogram` lock its mutex, on every command). Never
/// reset: these are Prometheus counters, unlike INFO's commandstats.
#[derive(Debug)]
struct CommandSeries {
    /// The full names, by id.
    names: Box<[&'static str]>,
    /// The bucket upper bounds, in seconds (+Inf implied after them).
    bounds: Box<[f64]>,
    by_id: Box<[CommandCounters]>,
}

/// One command's series, on cache lines of their own.
#[derive(Debug)]
#[repr(align(128))]
struct CommandCounters {
    ok: AtomicU64,
    error: AtomicU64,
    /// The histogram's `_sum`: an `f64` of seconds, as its bits.
    sum_bits: AtomicU64,
    /// Calls per bucket (not cumulative), the last one +Inf.
    buckets: Box<[AtomicU64]>,
}

impl CommandSeries {
    fn new() -> CommandSeries {
        let bounds: Box<[f64]> = request_bounds().collect();
        let names: Box<[&'static str]> = table::command_names().collect();
        let by_id = names
            .iter()
            .map(|_| CommandCounters {
                ok: AtomicU64::new(0),
                error: AtomicU64::new(0),
                sum_bits: AtomicU64::new(0f64.to_bits()),
                buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            })
            .collect();
        CommandSeries {
            names,
            bounds,
            by_id,
        }
    }

    /// Counts one call, as `Family::get_or_create(..).inc()` and
    /// `Histogram::observe` counted it: the first bucket whose bound is at
    /// least `seconds`, and `seconds` added to the sum.
    fn observe(&self, id: CommandId, seconds: f64, error: bool) {
        let Some(c) = self.by_id.get(id.index()) else {
            return;
        };
        let result = if error { &c.error } else { &c.ok };
        result.fetch_add(1, Ordering::Relaxed);
        let bucket = self.bounds.partition_point(|bound| *bound < seconds);
        if let Some(b) = c.buckets.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        // No atomic f64 add: compare-and-swap the bits (uncontended, one try).
        let _ = c
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + seconds).to_bits())
            });
    }
}

impl Collector for CommandSeries {
    /// The two families, with a series for each command (and result) seen,
    /// as the `Family`s they replace showed them.
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // The full stop is what `Registry::register` appends to help texts.
        let mut commands = encoder.encode_descriptor(
            "commands",
            "Commands executed, by command name and result (ok, error).",
            None,
            MetricType::Counter,
        )?;
        for (name, c) in self.names.iter().zip(self.by_id.iter()) {
            for (result, counter) in [("ok", &c.ok), ("error", &c.error)] {
                let count = counter.load(Ordering::Relaxed);
                if count == 0 {
                    continue;
                }
                let labels = CommandResultLabels {
                    command: name,
                    result,
                };
                commands
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
            }
        }
        let mut durations = encoder.encode_descriptor(
            "command_duration_seconds",
            "Time to execute a command on this node, including its replication or read \
             barrier, by command name.",
            None,
            MetricType::Histogram,
        )?;
        for (name, c) in self.names.iter().zip(self.by_id.iter()) {
            let counts: Vec<u64> = c
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect();
            let count: u64 = counts.iter().sum();
            if count == 0 {
                continue;
            }
            let buckets: Vec<(f64, u64)> = self
                .bounds
                .iter()
                .copied()
                .chain(std::iter::once(f64::INFINITY))
                .zip(counts)
                .collect();
            let sum = f64::from_bits(c.sum_bits.load(Ordering::Relaxed));
            durations
                .encode_family(&CommandLabels { command: name })?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }
}

impl Metrics {
    /// The metrics of node `node_id`.
    #[must_use]
    pub fn new(node_id: u64) -> Metrics {
        let mut registry = Registry::with_prefix("raftis");
        registry.register(
            "node",
            "This node's Raft id and the raftis version, as labels",
            Info::new(vec![
                ("node_id", node_id.to_string()),
                ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ]),
        );
        let leader_changes = Counter::default();
        registry.register(
            "raft_leader_changes",
            "Leaders this node has seen elected (each new term with a known leader)",
            leader_changes.clone(),
        );
        let commit_duration = request_buckets();
        registry.register(
            "raft_proposal_commit_duration_seconds",
            "Time from a write's proposal on this node, as leader, until it was committed \
             and applied",
            commit_duration.clone(),
        );
        let fsync_duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "raft_log_fsync_duration_seconds",
            "Duration of one group fsync of the Raft log (its count is the number of fsyncs)",
            fsync_duration.clone(),
        );
        let fsync_entries = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "raft_log_fsync_entries",
            "Log entries made durable by one group fsync (its sum is the entries fsynced)",
            fsync_entries.clone(),
        );
        let proposal_writes = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "raft_proposal_writes",
            "Writes carried by one log entry this node proposed as leader (writes that \
             arrive together share an entry; its count is the number of entries proposed)",
            proposal_writes.clone(),
        );
        let snapshot_duration: HistogramFamily<SnapshotLabels> =
            Family::new_with_constructor(snapshot_buckets);
        registry.register(
            "raft_snapshot_duration_seconds",
            "Duration of snapshots built (kind=build) and installed from the leader \
             (kind=install); the count is the number of snapshots",
            snapshot_duration.clone(),
        );
        let forwarded_writes = Counter::default();
        registry.register(
            "forwarded_writes",
            "Writes (or pipelined write batches) this node sent to the leader over the peer \
             channel; a write sent again after a leader change counts again",
            forwarded_writes.clone(),
        );
        let commands = Arc::new(CommandSeries::new());
        registry.register_collector(Box::new(commands.clone()));
        // Pre-created, so both kinds show (with count 0) before the first
        // snapshot: a dashboard can tell "none yet" from "not exported".
        for kind in [SnapshotKind::Build, SnapshotKind::Install] {
            drop(snapshot_duration.get_or_create(&SnapshotLabels {
                kind: kind.as_str(),
            }));
        }
        Metrics {
            registry,
            leader_changes,
            last_leader: Mutex::new(None),
            raft_running: AtomicBool::new(true),
            commit_duration,
            fsync_duration,
            fsync_entries,
            proposal_writes,
            snapshot_duration,
            forwarded_writes,
            commands,
        }
    }

    /// One group fsync of the Raft log took `elapsed` and made `entries`
    /// appends durable.
    pub fn observe_fsync(&self, elapsed: Duration, entries: usize) {
        self.fsync_duration.observe(elapsed.as_secs_f64());
        // Exact for any realistic count (f64 holds integers up to 2^53).
        #[allow(clippy::cast_precision_loss)]
        self.fsync_entries.observe(entries as f64);
    }

    /// This node, as leader, proposed one log entry carrying `writes` writes.
    pub fn observe_proposal(&self, writes: usize) {
        // Exact for any realistic count (f64 holds integers up to 2^53).
        #[allow(clippy::cast_precision_loss)]
        self.proposal_writes.observe(writes as f64);
    }

    /// A write proposed on this node (the leader) was committed and applied
    /// `elapsed` after its proposal.
    pub fn observe_commit(&self, elapsed: Duration) {
        self.commit_duration.observe(elapsed.as_secs_f64());
    }

    /// A snapshot was built or installed in `elapsed`.
    pub fn observe_snapshot(&self, kind: SnapshotKind, elapsed: Duration) {
        self.snapshot_duration
            .get_or_create(&SnapshotLabels {
                kind: kind.as_str(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// This node sent a write (or a batch of pipelined writes) to the
    /// leader.
    pub fn count_forwarded_write(&self) {
        self.forwarded_writes.inc();
    }

    /// The command with id `id` ran for `elapsed` and replied with an error
    /// or not: its `raftis_commands_total` and
    /// `raftis_command_duration_seconds` series.
    pub fn observe_command_at(&self, id: CommandId, elapsed: Duration, error: bool) {
        self.commands.observe(id, elapsed.as_secs_f64(), error);
    }

    /// Raft reports `leader` in `term`: counts a leader change when that is
    /// a leader not counted before (a new term, or a leader where there was
    /// none).
    pub fn observe_leader(&self, term: u64, leader: Option<u64>) {
        let Some(leader) = leader else {
            return;
        };
        let mut last = self
            .last_leader
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *last != Some((term, leader)) {
            *last = Some((term, leader));
            self.leader_changes.inc();
        }
    }

    /// Leader changes counted so far.
    #[must_use]
    pub fn leader_changes(&self) -> u64 {
        self.leader_changes.get()
    }

    /// Whether Raft was still running when last seen by
    /// [`Metrics::watch_leaders`].
    #[must_use]
    pub fn raft_running(&self) -> bool {
        self.raft_running.load(Ordering::Relaxed)
    }

    /// Follows `cluster`'s leader, counting leader changes, until Raft
    /// stops; then marks Raft as stopped. The returned future holds no
    /// handle on the node (spawn it; it ends with Raft).
    pub fn watch_leaders(
        self: &Arc<Self>,
        cluster: &crate::cluster::Cluster,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let seen = self.clone();
        let done = self.clone();
        let watch = cluster.watch_leader(move |term, leader| seen.observe_leader(term, leader));
        async move {
            watch.await;
            done.raft_running.store(false, Ordering::Relaxed);
        }
    }

    /// The whole exposition: the recorded metrics, then the scrape-time
    /// levels in `live`, in the format `format`.
    ///
    /// # Errors
    /// Only if formatting fails, which writing to a `String` does not.
    pub fn encode(&self, live: &LiveState, format: Format) -> Result<String, std::fmt::Error> {
        use prometheus_client::encoding::{prometheus_text, text};
        let scraped = live.registry(self.raft_running());
        let mut out = String::new();
        match format {
            Format::Prometheus => {
                prometheus_text::encode(&mut out, &self.registry)?;
                prometheus_text::encode(&mut out, &scraped)?;
            }
            Format::OpenMetrics => {
                text::encode_registry(&mut out, &self.registry)?;
                text::encode_registry(&mut out, &scraped)?;
                text::encode_eof(&mut out)?;
            }
        }
        Ok(out)
    }
}

/// The exposition formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4: what any scraper reads.
    Prometheus,
    /// OpenMetrics 1.0 text, for a scraper that asks for it.
    OpenMetrics,
}

impl Format {
    /// The format a scraper's `Accept` header asks for: OpenMetrics if it
    /// names it (Prometheus does, preferring it), else the Prometheus text
    /// format.
    #[must_use]
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// The `Content-Type` of this format.
    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Levels read when Prometheus scrapes: this node's Raft state and its RESP
/// front end's connection and error counters.
#[derive(Debug, Clone)]
pub struct LiveState {
    /// The cluster's status.
    pub raft: RaftStatus,
    /// Clients connected now.
    pub connected_clients: u64,
    /// Connections accepted since start.
    pub connections_received: u64,
    /// Connections refused since start (over `maxclients`).
    pub connections_rejected: u64,
    /// Error replies since start, by prefix (`ERR`, `WRONGTYPE`...).
    pub errors_by_prefix: Vec<(String, u64)>,
    /// Disk space, and the storage engine's background work and cache.
    pub persistence: PersistenceStatus,
    /// Bytes the store's key filter takes (INFO memory's `key_filter_bytes`).
    pub key_filter_bytes: u64,
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let g: Gauge = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(name, help, g);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

impl LiveState {
    /// A one-scrape registry holding these levels.
    fn registry(&self, raft_running: bool) -> Registry {
        let mut r = Registry::with_prefix("raftis");
        let raft = &self.raft;
        gauge(
            &mut r,
            "raft_running",
            "1 while Raft runs on this node, 0 once it has stopped (removed, fatal error, \
             shutdown)",
            u64::from(raft_running && !raft.removed),
        );
        gauge(&mut r, "raft_term", "Current Raft term", raft.term);
        let roles = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
        for role in ROLES {
            roles
                .get_or_create(&vec![("role", role)])
                .set(i64::from(raft.role == role));
        }
        r.register(
            "raft_role",
            "This node's Raft role: 1 on the series of the current role, 0 on the others",
            roles,
        );
        gauge(
            &mut r,
            "raft_has_leader",
            "1 if this node knows a leader, else 0",
            u64::from(raft.leader_id.is_some()),
        );
        gauge(
            &mut r,
            "raft_leader_id",
            "Id of the leader this node knows, 0 if none",
            raft.leader_id.unwrap_or(0),
        );
        gauge(
            &mut r,
            "raft_commit_index",
            "Highest log index this node knows committed",
            raft.commit_index,
        );
        gauge(
            &mut r,
            "raft_applied_index",
            "Highest log index applied to this node's state",
            raft.last_applied,
        );
        gauge(
            &mut r,
            "raft_last_log_index",
            "Highest log index in this node's log",
            raft.last_log_index,
        );
        gauge(
            &mut r,
            "raft_snapshot_index",
            "Log index of this node's last snapshot, 0 if none",
            raft.snapshot_index,
        );
        gauge(
            &mut r,
            "raft_voters",
            "Voters in the membership this node knows",
            u64::try_from(raft.voters.len()).unwrap_or(u64::MAX),
        );
        gauge(
            &mut r,
            "client_connections",
            "RESP client connections open now",
            self.connected_clients,
        );
        counter(
            &mut r,
            "client_connections_received",
            "RESP client connections accepted since the node started",
            self.connections_received,
        );
        counter(
            &mut r,
            "client_connections_rejected",
            "RESP client connections refused since the node started (over maxclients)",
            self.connections_rejected,
        );
        let errors = Family::<Vec<(&'static str, String)>, Counter>::default();
        for (prefix, count) in &self.errors_by_prefix {
            errors
                .get_or_create(&vec![("prefix", prefix.clone())])
                .inc_by(*count);
        }
        r.register(
            "error_replies",
            "Error replies sent to clients since the node started, by error prefix \
             (ERR, WRONGTYPE, CLUSTERDOWN...)",
            errors,
        );
        self.register_storage(&mut r);
        gauge(
            &mut r,
            "key_filter_bytes",
            "Bytes of memory the filter of stored keys takes (0 while it is built)",
            self.key_filter_bytes,
        );
        r
    }

    /// The disk's and the storage engine's figures (INFO persistence's
    /// `db_size_bytes`, `disk_*` and `storage_*` fields).
    fn register_storage(&self, r: &mut Registry) {
        let p = &self.persistence;
        gauge(
            r,
            "db_size_bytes",
            "Disk space of this node's database (Raft log, state, data)",
            p.db_size_bytes,
        );
        gauge(
            r,
            "disk_free_bytes",
            "Free bytes on the data dir's filesystem",
            p.disk_free_bytes,
        );
        gauge(
            r,
            "disk_low",
            "1 while free space is below storage.min_free_mb: writes are refused",
            u64::from(p.disk_low),
        );
        gauge(
            r,
            "disk_critical",
            "1 while free space is below half of storage.min_free_mb: new log entries are \
             refused too",
            u64::from(p.disk_critical),
        );
        let e = &p.engine;
        gauge(
            r,
            "storage_flushes_pending",
            "Memtables waiting for their flush to a table on disk",
            e.flushes_pending,
        );
        gauge(
            r,
            "storage_compactions_running",
            "Storage compactions running now",
            e.compactions_running,
        );
        counter(
            r,
            "storage_compactions",
            "Storage compactions finished since the node started",
            e.compactions_completed,
        );
        let seconds: Counter<f64, AtomicU64> = Counter::default();
        #[allow(clippy::cast_precision_loss)]
        seconds.inc_by(e.compaction_time_ms as f64 / 1000.0);
        r.register(
            "storage_compaction_seconds",
            "Time spent compacting since the node started",
            seconds,
        );
        gauge(
            r,
            "storage_block_cache_bytes",
            "Bytes the storage engine's block cache holds now",
            e.block_cache_used_bytes,
        );
        gauge(
            r,
            "storage_block_cache_capacity_bytes",
            "Capacity of the block cache (storage.cache_size_mb)",
            e.block_cache_capacity_bytes,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> RaftStatus {
        RaftStatus {
            last_applied: 9,
            last_log_index: 11,
            ..RaftStatus::sample()
        }
    }

    fn live() -> LiveState {
        LiveState {
            raft: status(),
            connected_clients: 2,
            connections_received: 7,
            connections_rejected: 1,
            errors_by_prefix: vec![("ERR".into(), 4), ("WRONGTYPE".into(), 1)],
            persistence: PersistenceStatus {
                db_size_bytes: 123_456,
                disk_free_bytes: 9_000_000,
                disk_low: true,
                engine: crate::storage::EngineActivity {
                    compactions_running: 1,
                    flushes_pending: 2,
                    compactions_completed: 5,
                    compaction_time_ms: 1500,
                    block_cache_used_bytes: 4096,
                    block_cache_capacity_bytes: 32 * 1024 * 1024,
                },
                ..PersistenceStatus::default()
            },
            key_filter_bytes: 65_536,
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    /// The id of the command counted under `name` (the executor resolves
    /// it once per request).
    fn id(name: &str) -> CommandId {
        CommandId::of(name).unwrap()
    }

    #[test]
    fn leader_changes_count_each_new_term_with_a_leader_once() {
        let m = Metrics::new(1);
        m.observe_leader(1, None);
        assert_eq!(m.leader_changes(), 0);
        m.observe_leader(1, Some(2));
        m.observe_leader(1, Some(2));
        assert_eq!(m.leader_changes(), 1);
        // Leader lost, then the same node wins a new term: a new election.
        m.observe_leader(2, None);
        m.observe_leader(3, Some(2));
        assert_eq!(m.leader_changes(), 2);
        m.observe_leader(4, Some(3));
        assert_eq!(m.leader_changes(), 3);
    }

    #[test]
    fn prometheus_text_has_every_family_with_its_values() {
        let m = Metrics::new(7);
        m.observe_fsync(Duration::from_millis(2), 5);
        m.observe_commit(Duration::from_millis(3));
        m.observe_command_at(id("set"), Duration::from_micros(300), false);
        m.observe_command_at(id("set"), Duration::from_micros(300), true);
        m.observe_snapshot(SnapshotKind::Build, Duration::from_millis(40));
        m.count_forwarded_write();
        m.observe_proposal(3);
        m.observe_leader(3, Some(2));
        let text = m.encode(&live(), Format::Prometheus).unwrap();
        let samples = lines(&text);
        for expected in [
            "raftis_node_info{node_id=\"7\",version=\"",
            "raftis_raft_leader_changes_total 1",
            "raftis_raft_term 3",
            "raftis_raft_role{role=\"follower\"} 1",
            "raftis_raft_role{role=\"leader\"} 0",
            "raftis_raft_has_leader 1",
            "raftis_raft_leader_id 2",
            "raftis_raft_commit_index 10",
            "raftis_raft_applied_index 9",
            "raftis_raft_last_log_index 11",
            "raftis_raft_running 1",
            "raftis_raft_log_fsync_duration_seconds_count 1",
            "raftis_raft_log_fsync_entries_sum 5",
            "raftis_raft_proposal_writes_sum 3",
            "raftis_raft_proposal_writes_count 1",
            "raftis_raft_proposal_commit_duration_seconds_count 1",
            "raftis_raft_snapshot_duration_seconds_count{kind=\"build\"} 1",
            "raftis_raft_snapshot_duration_seconds_count{kind=\"install\"} 0",
            "raftis_forwarded_writes_total 1",
            "raftis_commands_total{command=\"set\",result=\"ok\"} 1",
            "raftis_commands_total{command=\"set\",result=\"error\"} 1",
            "raftis_command_duration_seconds_count{command=\"set\"} 2",
            "raftis_client_connections 2",
            "raftis_client_connections_received_total 7",
            "raftis_client_connections_rejected_total 1",
            "raftis_error_replies_total{prefix=\"ERR\"} 4",
            "raftis_error_replies_total{prefix=\"WRONGTYPE\"} 1",
            "raftis_db_size_bytes 123456",
            "raftis_disk_free_bytes 9000000",
            "raftis_disk_low 1",
            "raftis_disk_critical 0",
            "raftis_storage_flushes_pending 2",
            "raftis_storage_compactions_running 1",
            "raftis_storage_compactions_total 5",
            "raftis_storage_compaction_seconds_total 1.5",
            "raftis_storage_block_cache_bytes 4096",
            "raftis_storage_block_cache_capacity_bytes 33554432",
            "raftis_key_filter_bytes 65536",
        ] {
            assert!(
                samples.iter().any(|l| l.starts_with(expected)),
                "no sample {expected:?} in:\n{text}"
            );
        }
        assert!(text.contains("# TYPE raftis_raft_term gauge"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }

    /// The command series as the `Family`s they replaced encoded the same
    /// calls: the same samples, value for value.
    #[test]
    fn command_series_encode_as_families_did() {
        let calls: [(&'static str, u64, bool); 7] = [
            ("get", 3, false),
            ("get", 9, false),
            ("set", 10, false),
            ("set", 10_000, true),
            ("client|list", 700, false),
            ("incr", 20, true),
            ("set", 7_000_000, false),
        ];
        let m = Metrics::new(1);
        let mut reference = Registry::with_prefix("raftis");
        let commands = Family::<CommandResultLabels, Counter>::default();
        reference.register(
            "commands",
            "Commands executed, by command name and result (ok, error)",
            commands.clone(),
        );
        let durations: HistogramFamily<CommandLabels> =
            Family::new_with_constructor(request_buckets);
        reference.register(
            "command_duration_seconds",
            "Time to execute a command on this node, including its replication or read \
             barrier, by command name",
            durations.clone(),
        );
        for (name, micros, error) in calls {
            let elapsed = Duration::from_micros(micros);
            m.observe_command_at(id(name), elapsed, error);
            let result = if error { "error" } else { "ok" };
            commands
                .get_or_create(&CommandResultLabels {
                    command: name,
                    result,
                })
                .inc();
            durations
                .get_or_create(&CommandLabels { command: name })
                .observe(elapsed.as_secs_f64());
        }
        let ours = m.encode(&live(), Format::Prometheus).unwrap();
        let mut theirs = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut theirs, &reference).unwrap();
        let command_lines = |text: &str| {
            let mut v: Vec<String> = text
                .lines()
                .filter(|l| l.contains("raftis_command"))
                .map(str::to_owned)
                .collect();
            v.sort();
            v
        };
        assert_eq!(command_lines(&ours), command_lines(&theirs));
        assert!(!command_lines(&ours).is_empty());
        // OpenMetrics too.
        let ours = m.encode(&live(), Format::OpenMetrics).unwrap();
        let mut theirs = String::new();
        prometheus_client::encoding::text::encode_registry(&mut theirs, &reference).unwrap();
        assert_eq!(command_lines(&ours), command_lines(&theirs));
    }

    #[test]
    fn command_series_count_every_call_from_many_threads() {
        let m = Metrics::new(1);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for i in 0..1_000u64 {
                        m.observe_command_at(id("get"), Duration::from_micros(i % 50), i % 10 == 0);
                    }
                });
            }
        });
        let text = m.encode(&live(), Format::Prometheus).unwrap();
        let samples = lines(&text);
        for expected in [
            "raftis_commands_total{command=\"get\",result=\"ok\"} 3600",
            "raftis_commands_total{command=\"get\",result=\"error\"} 400",
            "raftis_command_duration_seconds_count{command=\"get\"} 4000",
            "raftis_command_duration_seconds_bucket{command=\"get\",le=\"+Inf\"} 4000",
        ] {
            assert!(samples.contains(&expected), "no {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn openmetrics_when_asked_ends_with_eof() {
        let m = Metrics::new(1);
        let text = m.encode(&live(), Format::OpenMetrics).unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        assert!(text.contains("# TYPE raftis_raft_leader_changes counter"));
    }

    #[test]
    fn the_accept_header_picks_the_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,\
                          text/plain;version=0.0.4;q=0.4,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert!(Format::Prometheus
            .content_type()
            .starts_with("text/plain; version=0.0.4"));
        assert!(Format::OpenMetrics
            .content_type()
            .starts_with("application/openmetrics-text"));
    }

    #[test]
    fn a_stopped_or_removed_raft_is_not_running() {
        let m = Metrics::new(1);
        let mut state = live();
        state.raft.removed = true;
        state.raft.role = "removed";
        let text = m.encode(&state, Format::Prometheus).unwrap();
        assert!(lines(&text).contains(&"raftis_raft_running 0"), "{text}");
        assert!(
            lines(&text).contains(&"raftis_raft_role{role=\"removed\"} 1"),
            "{text}"
        );
    }
}
