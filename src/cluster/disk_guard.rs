//! Free disk space: refuse writes before the disk fills, resume once it
//! has room again, and report what persistence looks like (`INFO
//! persistence`).
//!
//! A [`DiskGuard`] measures the free space on the filesystem of the data
//! dir (`statvfs`) every [`CHECK_PERIOD`] and compares it with
//! `storage.min_free_mb`:
//!
//! - **Enough**: nothing happens.
//! - **Low** (below `min_free_mb`): this node refuses client writes with
//!   `-MISCONF`, Redis's prefix for "persistence is failing, writes are
//!   refused" (`forward.rs` checks at entry, before anything is proposed;
//!   the expiry loop's deletions go the same way and are skipped). Reads
//!   keep working. If the node leads, it also refuses writes forwarded by
//!   followers and hands leadership to the most up-to-date reachable voter
//!   (at most once per [`HANDOFF_PERIOD`]), so that a healthy majority keeps
//!   taking writes. It still stores what the leader replicates: the log of a
//!   follower does not grow faster than the cluster's writes, and a node
//!   that stays current keeps answering linearizable reads.
//! - **Critical** (below half of `min_free_mb`): the node also refuses
//!   AppendEntries that carry entries (`rpc_server.rs`). Heartbeats still
//!   pass, so it does not start elections; the leader keeps retrying with
//!   backoff. The remaining half is a reserve for what the node writes on its
//!   own (fjall's journal rotation and compaction, snapshot builds), so it
//!   never reaches a real "no space left on device".
//!
//! When space comes back the node resumes by itself: it takes writes again,
//! and the leader's retries bring its log up to date (or a snapshot does,
//! if the leader purged what it missed). Nothing is reset or rewritten.
//!
//! With the check disabled (`min_free_mb = 0`), or when one burst of writes
//! is larger than the margin, fjall's write fails with ENOSPC (and fjall
//! poisons the database: no later write goes through). The log store or
//! the state machine reports it to openraft, which treats any storage error
//! as fatal and stops Raft on this node: no entry is acknowledged that is
//! not on disk, and apply stops rather than skip an entry, so nothing
//! diverges. The process stays up and says so: one error log line, writes
//! answered at once with `-CLUSTERDOWN raft stopped on node N after a
//! storage error (...)`, linearizable reads with `-CLUSTERDOWN` after the
//! request timeout. After space is freed, a restart recovers from fjall's
//! journal with every acknowledged write (`integration/disk.rs` checks it).
//!
//! # Caveats
//!
//! - A Critical follower cannot apply what it refuses to store, so a
//!   linearizable read on it waits for an index it will not reach and fails
//!   after the request timeout; `READONLY` reads still answer from its
//!   applied state. A Low (not Critical) node is not affected.
//! - Free space is sampled, not reserved: a burst larger than the margin
//!   written within one [`CHECK_PERIOD`] can still reach ENOSPC (see above).
//! - Space measured is what unprivileged users may use (`f_bavail`); root's
//!   reserved blocks are not counted as free.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::async_runtime::WatchReceiver;
use openraft::errors::Fatal;

use super::core::Core;
use super::log_store::LogStore;
use super::rpc::RemoteError;
use super::state_machine::last_snapshot_time;
use super::Cluster;

/// How often free space is measured.
pub const CHECK_PERIOD: Duration = Duration::from_millis(250);

/// Least time between two leader handoffs for lack of space: a handoff that
/// did not happen (no reachable voter) is not retried in a tight loop.
pub const HANDOFF_PERIOD: Duration = Duration::from_secs(3);

const MIB: u64 = 1024 * 1024;

/// How much room the data dir's filesystem has, against `min_free_mb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SpaceLevel {
    /// At least `min_free_mb` free (or the check is disabled).
    Enough = 0,
    /// Below `min_free_mb`: client writes are refused.
    Low = 1,
    /// Below half of `min_free_mb`: new log entries are refused too.
    Critical = 2,
}

impl SpaceLevel {
    /// The level for `free` bytes with a threshold of `min_free` bytes (0:
    /// never low).
    #[must_use]
    pub fn classify(free: u64, min_free: u64) -> SpaceLevel {
        if min_free == 0 || free >= min_free {
            SpaceLevel::Enough
        } else if free < min_free / 2 {
            SpaceLevel::Critical
        } else {
            SpaceLevel::Low
        }
    }

    fn from_u8(v: u8) -> SpaceLevel {
        match v {
            0 => SpaceLevel::Enough,
            1 => SpaceLevel::Low,
            _ => SpaceLevel::Critical,
        }
    }
}

/// This node's free-space check; shared by the write path, the peer server
/// and INFO through [`Core`].
pub struct DiskGuard {
    node_id: u64,
    data_dir: PathBuf,
    snapshot_dir: PathBuf,
    min_free_bytes: u64,
    /// Free bytes at the last measure; `u64::MAX` until one succeeds.
    free_bytes: AtomicU64,
    /// [`SpaceLevel`] at the last measure.
    level: AtomicU8,
    /// The log and database, for sizes in INFO.
    log: LogStore,
}

/// What `INFO persistence` reports about this node's disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistenceStatus {
    /// Disk space of this node's fjall database (log, Raft state, data).
    pub db_size_bytes: u64,
    /// First index held in the Raft log, 0 when it is empty.
    pub log_first_index: u64,
    /// Last index in the Raft log (or the last purged one when it is empty).
    pub log_last_index: u64,
    /// Entries held in the Raft log.
    pub log_entries: u64,
    /// Last log index the current snapshot covers, 0 if none.
    pub last_snapshot_index: u64,
    /// When the current snapshot was written, unix seconds; 0 if none.
    pub last_snapshot_time: u64,
    /// Free bytes on the data dir's filesystem.
    pub disk_free_bytes: u64,
    /// Free space is below `min_free_bytes`: writes are refused.
    pub disk_low: bool,
    /// Free space is below half of `min_free_bytes`: new log entries are
    /// refused too.
    pub disk_critical: bool,
    /// The threshold (`storage.min_free_mb` in bytes); 0: disabled.
    pub min_free_bytes: u64,
}

impl DiskGuard {
    /// A guard for `data_dir` with a threshold of `min_free_bytes` (0
    /// disables refusals; free space is still measured for INFO). Measures
    /// once before returning, so a node that starts on a full disk refuses
    /// writes from its first request.
    #[must_use]
    pub fn new(
        node_id: u64,
        data_dir: PathBuf,
        snapshot_dir: PathBuf,
        min_free_bytes: u64,
        log: LogStore,
    ) -> DiskGuard {
        let guard = DiskGuard {
            node_id,
            data_dir,
            snapshot_dir,
            min_free_bytes,
            free_bytes: AtomicU64::new(u64::MAX),
            level: AtomicU8::new(SpaceLevel::Enough as u8),
            log,
        };
        guard.refresh();
        guard
    }

    /// Measures free space now, updates the level (logging a change) and
    /// returns it. A failed measure keeps the previous level.
    pub fn refresh(&self) -> SpaceLevel {
        let free = match free_bytes(&self.data_dir) {
            Ok(free) => free,
            Err(e) => {
                tracing::warn!(error = %e, path = %self.data_dir.display(), "cannot measure free disk space");
                return self.level();
            }
        };
        self.free_bytes.store(free, Ordering::Release);
        let level = SpaceLevel::classify(free, self.min_free_bytes);
        let before = SpaceLevel::from_u8(self.level.swap(level as u8, Ordering::AcqRel));
        if level != before {
            match level {
                SpaceLevel::Enough => tracing::info!(
                    free_bytes = free,
                    "disk space is back above storage.min_free_mb; writes are accepted again"
                ),
                SpaceLevel::Low => tracing::warn!("{}", self.low_message(free)),
                SpaceLevel::Critical => tracing::error!(
                    "{}; below half of it this node also stops storing new log entries",
                    self.low_message(free)
                ),
            }
        }
        level
    }

    /// The level at the last measure.
    #[must_use]
    pub fn level(&self) -> SpaceLevel {
        SpaceLevel::from_u8(self.level.load(Ordering::Acquire))
    }

    /// Free bytes at the last measure.
    #[must_use]
    pub fn free_bytes(&self) -> u64 {
        self.free_bytes.load(Ordering::Acquire)
    }

    /// Why a client write must be refused here, or `None` when it may go on.
    #[must_use]
    pub fn write_refusal(&self) -> Option<String> {
        (self.level() >= SpaceLevel::Low).then(|| self.low_message(self.free_bytes()))
    }

    /// Why log entries from the leader must be refused here, or `None`.
    #[must_use]
    pub fn replication_refusal(&self) -> Option<RemoteError> {
        (self.level() >= SpaceLevel::Critical).then(|| {
            RemoteError::NoSpace(format!(
                "{}; new log entries are refused",
                self.low_message(self.free_bytes())
            ))
        })
    }

    fn low_message(&self, free: u64) -> String {
        low_message(
            self.node_id,
            free,
            &self.data_dir,
            self.min_free_bytes / MIB,
        )
    }

    /// Sizes and free space for `INFO persistence`; measures free space now.
    #[must_use]
    pub fn persistence(&self, last_snapshot_index: u64, purged_index: u64) -> PersistenceStatus {
        let level = self.refresh();
        let db_size_bytes = self.log.database_disk_space().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the database size");
            0
        });
        let (first, last) = self.log.index_bounds().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the raft log bounds");
            (None, None)
        });
        let last_snapshot_time = match last_snapshot_time(&self.snapshot_dir) {
            Ok(t) => t.map_or(0, unix_seconds),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the snapshot time");
                0
            }
        };
        PersistenceStatus {
            db_size_bytes,
            log_first_index: first.unwrap_or(0),
            log_last_index: last.unwrap_or(purged_index),
            log_entries: match (first, last) {
                (Some(f), Some(l)) if l >= f => l - f + 1,
                _ => 0,
            },
            last_snapshot_index,
            last_snapshot_time,
            disk_free_bytes: self.free_bytes(),
            disk_low: level >= SpaceLevel::Low,
            disk_critical: level >= SpaceLevel::Critical,
            min_free_bytes: self.min_free_bytes,
        }
    }
}

/// The text of the refusal, after the `MISCONF` prefix.
fn low_message(node_id: u64, free: u64, path: &Path, min_free_mb: u64) -> String {
    format!(
        "disk space low on node {node_id}: {} MiB free under {}, below storage.min_free_mb ({min_free_mb} MiB); \
         writes are refused until space is freed",
        free / MIB,
        path.display()
    )
}

/// Bytes an unprivileged process may still write on the filesystem holding `path`.
fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The guard's task: measures every [`CHECK_PERIOD`]; while this node is
/// low and leads a cluster with other voters, hands leadership over (at
/// most once per [`HANDOFF_PERIOD`]). Runs until aborted.
pub(super) async fn run(core: Arc<Core>) {
    let mut tick = tokio::time::interval(CHECK_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_handoff: Option<Instant> = None;
    let mut stop_logged = false;
    loop {
        tick.tick().await;
        if !stop_logged {
            if let Some(why) = raft_stopped(&core) {
                tracing::error!("{why}; commands that need raft answer -CLUSTERDOWN until then");
                stop_logged = true;
            }
        }
        if core.disk.refresh() == SpaceLevel::Enough {
            continue;
        }
        if last_handoff.is_some_and(|at| at.elapsed() < HANDOFF_PERIOD) || !leads_others(&core) {
            continue;
        }
        last_handoff = Some(Instant::now());
        let deadline = Instant::now() + core.request_timeout;
        match core.move_leader(None, deadline).await {
            Ok(Ok(to)) => {
                tracing::warn!(to, "handed leadership over: this node is low on disk space")
            }
            Ok(Err(refusal)) => tracing::warn!(
                %refusal,
                "low on disk space but could not hand leadership over; writes stay refused"
            ),
            Err(e) => tracing::debug!(error = %e, "leadership handoff for disk space"),
        }
    }
}

/// Why Raft no longer runs on this node, if it stopped on its own (a
/// storage error such as a full disk with the check disabled, a failed
/// fsync, a panic): every write would otherwise wait out the request timeout
/// for nothing. A normal stop (shutdown) is not reported: clients are
/// drained before it, and the write path's usual answers apply.
pub(super) fn raft_stopped(core: &Core) -> Option<String> {
    let metrics = core.raft.metrics();
    let m = metrics.borrow_watched();
    match m.running_state.as_ref().err()? {
        Fatal::StorageError(e) => Some(format!(
            "raft stopped on node {} after a storage error ({e}); \
             free disk space if it is full, then restart the node",
            core.id
        )),
        Fatal::Stopped => None,
        other => Some(format!("raft stopped on node {}: {other}", core.id)),
    }
}

/// This node leads, and some other voter could.
fn leads_others(core: &Core) -> bool {
    let metrics = core.raft.metrics();
    let m = metrics.borrow_watched();
    m.current_leader == Some(core.id)
        && m.membership_config
            .membership()
            .voter_ids()
            .any(|v| v != core.id)
}

impl Cluster {
    /// Log and disk figures for `INFO persistence`.
    #[must_use]
    pub fn persistence(&self) -> PersistenceStatus {
        let status = self.status();
        self.core
            .disk
            .persistence(status.snapshot_index, status.purged_index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_threshold_and_its_half() {
        let min = 256 * MIB;
        assert_eq!(SpaceLevel::classify(u64::MAX, min), SpaceLevel::Enough);
        assert_eq!(SpaceLevel::classify(min, min), SpaceLevel::Enough);
        assert_eq!(SpaceLevel::classify(min - 1, min), SpaceLevel::Low);
        assert_eq!(SpaceLevel::classify(min / 2, min), SpaceLevel::Low);
        assert_eq!(SpaceLevel::classify(min / 2 - 1, min), SpaceLevel::Critical);
        assert_eq!(SpaceLevel::classify(0, min), SpaceLevel::Critical);
    }

    #[test]
    fn zero_disables_the_check() {
        assert_eq!(SpaceLevel::classify(0, 0), SpaceLevel::Enough);
    }

    #[test]
    fn level_survives_the_atomic_round_trip() {
        for level in [SpaceLevel::Enough, SpaceLevel::Low, SpaceLevel::Critical] {
            assert_eq!(SpaceLevel::from_u8(level as u8), level);
        }
    }

    #[test]
    fn the_refusal_names_node_space_path_and_key() {
        assert_eq!(
            low_message(2, 80 * MIB + 5, Path::new("/data"), 256),
            "disk space low on node 2: 80 MiB free under /data, below storage.min_free_mb (256 MiB); \
             writes are refused until space is freed"
        );
    }

    #[test]
    fn free_space_is_measured_on_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert!(free_bytes(&dir.path().join("missing")).is_err());
    }
}
