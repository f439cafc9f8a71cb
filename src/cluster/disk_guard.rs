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
//!   followers and hands leadership to another voter (see *Leader
//!   handoff* below), so that a healthy majority keeps taking writes. It still stores what the leader replicates: the log of a
//!   follower does not grow faster than the cluster's writes, and a node
//!   that stays current keeps answering linearizable reads.
//! - **Critical** (below half of `min_free_mb`): the node also refuses
//!   AppendEntries that carry entries (`rpc_server.rs`). Heartbeats still
//!   pass, so it does not start elections; the leader keeps retrying with
//!   backoff. The remaining half is a reserve for what the node writes on its
//!   own (fjall's journal rotation and compaction, snapshot builds), so it
//!   never reaches a real "no space left on device".
//!
//! Snapshots from the leader are held to the same reserve at every level
//! ([`DiskGuard::snapshot_refusal`]): installing one takes about three times
//! its file's size (the received file, the imported data, the copy kept to
//! serve others), so each chunk, and the install itself, is refused with
//! `NoSpace` when that would no longer fit above half of `min_free_mb`
//! (always so when Critical). A refused transfer is abandoned and its
//! partial file removed; the leader retries about once a second
//! (`network.rs`). The size learned from a refused transfer is remembered
//! for [`SNAPSHOT_SIZE_MEMORY`], so the retries are refused before anything
//! is written instead of filling and deleting the same file over and over.
//!
//! # Leader handoff
//!
//! A Low leader hands leadership over at most once per Low episode (the
//! episode ends when space is back to Enough): if the new leader is low
//! too, it hands off once in turn, and leadership settles after at most one
//! handoff per low node instead of moving back and forth. The target must
//! have acknowledged the leader lately and hold the leader's whole log:
//! a node that refused entries for lack of space (or lags for any other
//! reason) could not take over, and starting a transfer stops the leader's
//! heartbeats, costing an election. Among those, a node other than the one
//! this node took leadership from is preferred (it may have handed off for
//! lack of space), then the lowest id. A leader waits an election timeout
//! after it is elected before it picks (what it knows of the others' logs
//! comes with their first answers). With no voter that qualifies it keeps
//! leadership, refusing writes, says so once, and looks again every check.
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
//! - "Three times the file" is an estimate of a snapshot install's peak
//!   (fjall's journal and tables may briefly hold more while importing).
//! - A node that gets leadership back within the same Low episode (by an
//!   election, say after its successor failed) keeps it and refuses writes
//!   until space is freed or an operator moves it (`RAFT.TRANSFER_LEADER`):
//!   that is the price of never moving leadership back and forth.
//! - The node leadership came from is noted every [`CHECK_PERIOD`]; one that
//!   led for less than that may not be recognised as such.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::async_runtime::WatchReceiver;
use openraft::errors::Fatal;
use openraft::ServerState;

use super::core::Core;
use super::log_store::LogStore;
use super::rpc::RemoteError;
use super::state_machine::last_snapshot_time;
use super::transfer::TransferRefusal;
use super::Cluster;
use crate::storage::EngineActivity;

/// How often free space is measured.
pub const CHECK_PERIOD: Duration = Duration::from_millis(250);

/// Least time between two attempts at a leader handoff for lack of space
/// that the leader refused before starting it (the target stopped
/// answering meanwhile, say). A transfer that started is not retried in the
/// same Low episode at all.
pub const HANDOFF_PERIOD: Duration = Duration::from_secs(3);

/// How long the size of a snapshot refused for lack of space is
/// remembered: new transfers at least that big are refused before anything
/// is written, until space is freed or this much time passes (the leader's
/// snapshot may have shrunk meanwhile).
pub const SNAPSHOT_SIZE_MEMORY: Duration = Duration::from_secs(30);

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
    /// The size of the last snapshot refused for lack of space, and when.
    refused_snapshot: Mutex<Option<(u64, Instant)>>,
}

/// What `INFO persistence` (and `/metrics`) report about this node's disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// The storage engine's flushes, compactions and block cache.
    pub engine: EngineActivity,
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
            refused_snapshot: Mutex::new(None),
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

    /// Why the snapshot being received must be refused here, or `None`:
    /// `received` bytes of its file are on disk already and `next` more are
    /// about to be written (0 when the file is complete and about to be
    /// installed). Refused when its install (about three times the file)
    /// would not fit above half of `min_free_mb`; a new transfer
    /// (`received` 0) is also refused while one at least as big as it was
    /// refused within [`SNAPSHOT_SIZE_MEMORY`] would not fit. Measures free
    /// space now: a burst of chunks is much faster than [`CHECK_PERIOD`].
    #[must_use]
    pub fn snapshot_refusal(&self, received: u64, next: u64) -> Option<RemoteError> {
        if self.min_free_bytes == 0 {
            return None;
        }
        self.refresh();
        let free = self.free_bytes();
        let size = received.saturating_add(next);
        let mut remembered = self
            .refused_snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !snapshot_fits(free, self.min_free_bytes, received, size) {
            let known = remembered
                .filter(|(_, at)| at.elapsed() < SNAPSHOT_SIZE_MEMORY)
                .map(|(known, _)| known);
            let error = self.snapshot_refusal_error(free, size);
            // Logged once per size learned, not once per retry.
            if known.is_none_or(|known| size > known) {
                *remembered = Some((size, Instant::now()));
                tracing::warn!("{error}");
            }
            return Some(error);
        }
        if received == 0 {
            if let Some((known, _)) =
                remembered.filter(|(_, at)| at.elapsed() < SNAPSHOT_SIZE_MEMORY)
            {
                if !snapshot_fits(free, self.min_free_bytes, 0, known) {
                    return Some(self.snapshot_refusal_error(free, known));
                }
            }
        }
        None
    }

    fn snapshot_refusal_error(&self, free: u64, size: u64) -> RemoteError {
        RemoteError::NoSpace(snapshot_message(
            self.node_id,
            free,
            &self.data_dir,
            size,
            self.min_free_bytes,
        ))
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
            engine: self.log.engine_activity(),
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

/// Whether `free` bytes hold what is left to do for a snapshot of `size`
/// bytes of which `received` are written (the rest of the file, then the
/// import and the kept copy, each about the file's size) and still leave
/// half of `min_free`.
fn snapshot_fits(free: u64, min_free: u64, received: u64, size: u64) -> bool {
    let needed = size
        .saturating_sub(received)
        .saturating_add(size.saturating_mul(2));
    free >= (min_free / 2).saturating_add(needed)
}

/// The text of a snapshot refusal, after the `NoSpace` error's prefix.
fn snapshot_message(node_id: u64, free: u64, path: &Path, size: u64, min_free: u64) -> String {
    format!(
        "disk space low on node {node_id}: {} MiB free under {}; installing a snapshot of at \
         least {} MiB takes about {} MiB and must leave {} MiB (half of storage.min_free_mb); \
         the snapshot is refused until space is freed",
        free / MIB,
        path.display(),
        size.div_ceil(MIB),
        size.saturating_mul(3).div_ceil(MIB),
        min_free / 2 / MIB
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
/// low and leads a cluster with other voters, hands leadership over (see
/// *Leader handoff* above). Runs until aborted.
pub(super) async fn run(core: Arc<Core>) {
    let mut tick = tokio::time::interval(CHECK_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut episode = HandoffEpisode::default();
    let mut stop_logged = false;
    loop {
        tick.tick().await;
        if !stop_logged {
            if let Some(why) = raft_stopped(&core) {
                tracing::error!("{why}; commands that need raft answer -CLUSTERDOWN until then");
                stop_logged = true;
            }
        }
        let level = core.disk.refresh();
        let view = handoff_view(&core, episode.previous_leader);
        if let Some(leader) = view.leader.filter(|l| *l != core.id) {
            episode.previous_leader = Some(leader);
        }
        let now = Instant::now();
        episode.leading_since = if view.leads {
            Some(episode.leading_since.unwrap_or(now))
        } else {
            None
        };
        // A leader elected a moment ago has not heard from every member
        // yet: what it knows of their logs waits for an election timeout.
        let settled = episode
            .leading_since
            .is_some_and(|since| now.saturating_duration_since(since) >= view.reach);
        if !episode.may_try(level, now) || !settled || !view.leads_others() {
            continue;
        }
        let Some(target) = handoff_target(&view) else {
            if !episode.no_target_logged {
                episode.no_target_logged = true;
                tracing::warn!(
                    "low on disk space, but no other voter is reachable and holds the whole log; \
                     keeping leadership, writes stay refused"
                );
            }
            continue;
        };
        episode.tried_at = Some(Instant::now());
        let deadline = Instant::now() + core.request_timeout;
        match core.move_leader(Some(target), deadline).await {
            Ok(Ok(to)) => {
                episode.handed_off = true;
                tracing::warn!(to, "handed leadership over: this node is low on disk space");
            }
            Ok(Err(refusal)) => {
                // Started and not completed: the election it caused is
                // not repeated in this episode.
                episode.handed_off = matches!(refusal, TransferRefusal::NotCompleted { .. });
                tracing::warn!(
                    %refusal,
                    "low on disk space but could not hand leadership over; writes stay refused"
                );
            }
            Err(e) => tracing::debug!(error = %e, "leadership handoff for disk space"),
        }
    }
}

/// The handoff's bookkeeping across checks: what bounds it to one transfer
/// per Low episode.
#[derive(Debug, Default)]
struct HandoffEpisode {
    /// A transfer was started in this episode.
    handed_off: bool,
    /// When a handoff was last attempted.
    tried_at: Option<Instant>,
    /// "No target" was logged in this episode.
    no_target_logged: bool,
    /// The last other node seen leading: where this node's leadership
    /// likely came from.
    previous_leader: Option<u64>,
    /// Since when this node leads, if it does.
    leading_since: Option<Instant>,
}

impl HandoffEpisode {
    /// Whether a handoff may be attempted now at `level`; space back to
    /// Enough ends the episode.
    fn may_try(&mut self, level: SpaceLevel, now: Instant) -> bool {
        if level == SpaceLevel::Enough {
            self.handed_off = false;
            self.tried_at = None;
            self.no_target_logged = false;
            return false;
        }
        !self.handed_off
            && self
                .tried_at
                .is_none_or(|at| now.saturating_duration_since(at) >= HANDOFF_PERIOD)
    }
}

/// What the guard knows about the cluster when it picks a successor.
#[derive(Debug, Default)]
struct HandoffView {
    /// This node's id.
    id: u64,
    /// Whether this node leads.
    leads: bool,
    /// The current leader, if known.
    leader: Option<u64>,
    /// Voter ids.
    voters: BTreeSet<u64>,
    /// This node's last log index.
    last_log_index: u64,
    /// Highest log index known replicated to each member (leader only).
    matched: BTreeMap<u64, u64>,
    /// Members that acknowledged the leader within an election timeout.
    reachable: BTreeSet<u64>,
    /// The last other node seen leading.
    previous_leader: Option<u64>,
    /// How recent an acknowledgement counts as reachable: an election
    /// timeout.
    reach: Duration,
}

impl HandoffView {
    /// This node leads, and some other voter could.
    fn leads_others(&self) -> bool {
        self.leads && self.voters.iter().any(|v| *v != self.id)
    }
}

fn handoff_view(core: &Core, previous_leader: Option<u64>) -> HandoffView {
    let reach = Duration::from_millis(core.raft.config().election_timeout_min);
    let metrics = core.raft.metrics();
    let m = metrics.borrow_watched();
    let (matched, reachable) = super::core::follower_progress(&m, reach);
    HandoffView {
        id: core.id,
        leads: m.state == ServerState::Leader && m.current_leader == Some(core.id),
        leader: m.current_leader,
        voters: m.membership_config.membership().voter_ids().collect(),
        last_log_index: m.last_log_index.unwrap_or(0),
        matched,
        reachable,
        previous_leader,
        reach,
    }
}

/// The voter to hand leadership to for lack of space, if any: another
/// voter that acknowledged the leader lately and holds its whole log, so
/// that it can take over at once (one that refused entries for lack of
/// space cannot); not the node this one took over from if another will do,
/// then the lowest id.
fn handoff_target(view: &HandoffView) -> Option<u64> {
    view.voters
        .iter()
        .copied()
        .filter(|v| *v != view.id && view.reachable.contains(v))
        .filter(|v| {
            view.matched
                .get(v)
                .is_some_and(|m| *m >= view.last_log_index)
        })
        .min_by_key(|v| (Some(*v) == view.previous_leader, *v))
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

impl Cluster {
    /// Log and disk figures for `INFO persistence` and `/metrics`.
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
    fn a_snapshot_must_fit_three_times_above_half_the_threshold() {
        let min = 16 * MIB;
        // Nothing received yet: 3 MiB for a 1 MiB snapshot, over 8 MiB.
        assert!(snapshot_fits(11 * MIB, min, 0, MIB));
        assert!(!snapshot_fits(11 * MIB - 1, min, 0, MIB));
        // 2 MiB on disk of a 3 MiB file: 1 MiB more, then 6 MiB to install.
        assert!(snapshot_fits(15 * MIB, min, 2 * MIB, 3 * MIB));
        assert!(!snapshot_fits(15 * MIB - 1, min, 2 * MIB, 3 * MIB));
        // The whole file received: the install needs twice it again.
        assert!(snapshot_fits(14 * MIB, min, 3 * MIB, 3 * MIB));
        assert!(!snapshot_fits(14 * MIB - 1, min, 3 * MIB, 3 * MIB));
        // Critical: even an empty chunk is refused.
        assert!(!snapshot_fits(min / 2 - 1, min, 0, 0));
        assert!(snapshot_fits(u64::MAX, min, 0, u64::MAX));
    }

    #[test]
    fn the_snapshot_refusal_says_what_it_needs() {
        assert_eq!(
            snapshot_message(3, 9 * MIB + 5, Path::new("/data"), 2 * MIB + 1, 16 * MIB),
            "disk space low on node 3: 9 MiB free under /data; installing a snapshot of at \
             least 3 MiB takes about 7 MiB and must leave 8 MiB (half of storage.min_free_mb); \
             the snapshot is refused until space is freed"
        );
    }

    #[test]
    fn one_handoff_per_low_episode() {
        let t0 = Instant::now();
        let mut episode = HandoffEpisode::default();
        assert!(!episode.may_try(SpaceLevel::Enough, t0));
        assert!(episode.may_try(SpaceLevel::Low, t0));
        // An attempt the leader refused before starting: retried after
        // HANDOFF_PERIOD.
        episode.tried_at = Some(t0);
        assert!(!episode.may_try(SpaceLevel::Low, t0 + HANDOFF_PERIOD / 2));
        assert!(episode.may_try(SpaceLevel::Critical, t0 + HANDOFF_PERIOD));
        // A transfer that started: not again in this episode.
        episode.handed_off = true;
        assert!(!episode.may_try(SpaceLevel::Low, t0 + HANDOFF_PERIOD * 100));
        // Space came back: the next low episode may hand off again.
        assert!(!episode.may_try(SpaceLevel::Enough, t0 + HANDOFF_PERIOD * 100));
        assert!(episode.may_try(SpaceLevel::Low, t0 + HANDOFF_PERIOD * 100));
    }

    fn leader_view() -> HandoffView {
        HandoffView {
            id: 1,
            leads: true,
            leader: Some(1),
            voters: [1, 2, 3, 4].into(),
            last_log_index: 10,
            matched: [(1, 10), (2, 10), (3, 10), (4, 10), (5, 10)].into(),
            reachable: [1, 2, 3, 4, 5].into(),
            previous_leader: None,
            reach: Duration::from_millis(300),
        }
    }

    #[test]
    fn the_handoff_goes_to_a_reachable_voter_holding_the_whole_log() {
        let mut v = leader_view();
        assert!(v.leads_others());
        assert_eq!(handoff_target(&v), Some(2));
        // Node 2 refused entries (short of space itself): it lags, and
        // could not take over.
        v.matched.insert(2, 7);
        assert_eq!(handoff_target(&v), Some(3));
        v.reachable.remove(&3);
        assert_eq!(handoff_target(&v), Some(4));
        // Node 5 is up to date but a learner.
        v.matched.insert(4, 9);
        assert_eq!(handoff_target(&v), None);
    }

    #[test]
    fn the_handoff_avoids_the_node_leadership_came_from() {
        let mut v = leader_view();
        v.previous_leader = Some(2);
        assert_eq!(handoff_target(&v), Some(3));
        // Unless nobody else will do.
        v.voters = [1, 2].into();
        assert_eq!(handoff_target(&v), Some(2));
    }

    #[test]
    fn a_follower_or_a_lone_voter_does_not_hand_off() {
        let mut v = leader_view();
        v.voters = [1].into();
        assert!(!v.leads_others());
        let mut v = leader_view();
        v.leads = false;
        assert!(!v.leads_others());
    }

    #[test]
    fn free_space_is_measured_on_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert!(free_bytes(&dir.path().join("missing")).is_err());
    }
}
