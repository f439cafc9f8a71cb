//! The Raft log on fjall, with group commit.
//!
//! Entries live in the `raft_log` keyspace under their big-endian index, so
//! key order is log order; the vote, the committed log id and the last purged
//! log id live in `raft_meta`. Both keyspaces share the node's one fjall
//! database (and so its one journal) with the state machine.
//!
//! Durability: openraft may only be told that an append is done once the
//! entries are on disk. `append` writes the entries into fjall (which makes
//! them readable at once) and hands the completion callback to a dedicated
//! flusher thread. The flusher takes every callback that is waiting, fsyncs
//! the journal once, and completes them all: entries that arrive together
//! share one fsync (group commit) however many client writes they carry.
//! Because the journal is sequential, one fsync covers every write made
//! before it, including state-machine batches.
//!
//! The vote is different: it must be durable before `save_vote` returns, so it
//! is fsynced inline (off the async runtime's threads).

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use fjall::{Database, Keyspace, PersistMode};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{EntryPayload, OptionalSend, RaftLogReader};
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;

use super::core::{now_ms, proposer_of, term_of};
use super::journal_sync::JournalSync;
use super::log_tail::LogTail;
use super::types::{Entry, LogId, TypeConfig, Vote};
use crate::storage::{EngineActivity, EngineOptions};
use crate::telemetry::trace::{attr, NodeTracer, Stage};
use crate::telemetry::{Telemetry, TraceParent};

/// Keyspace of the entries, by big-endian index.
const LOG_KEYSPACE: &str = "raft_log";
/// Keyspace of the vote, committed and purged log ids.
const META_KEYSPACE: &str = "raft_meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"purged";

/// Opens (or creates) the log and meta keyspaces in `db`.
fn open_keyspaces(
    db: &Database,
    engine: &EngineOptions,
) -> Result<(Keyspace, Keyspace), io::Error> {
    let log = db
        .keyspace(LOG_KEYSPACE, || engine.keyspace())
        .map_err(io::Error::other)?;
    let meta = db
        .keyspace(META_KEYSPACE, || engine.keyspace())
        .map_err(io::Error::other)?;
    Ok((log, meta))
}

/// The Raft log store. Cloning shares the same store (the clone is what
/// openraft uses as its log reader).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    log: Keyspace,
    meta: Keyspace,
    flusher: mpsc::Sender<Flush>,
    tracer: NodeTracer,
    /// The newest entries, decoded: what replication and apply read.
    tail: Mutex<LogTail>,
}

/// One append waiting for the group fsync.
struct Flush {
    /// Tells openraft the entries are durable.
    callback: IOFlushed<TypeConfig>,
    /// How many entries the append wrote.
    entries: usize,
    /// Its traced writes.
    traced: Vec<TracedEntry>,
}

/// A traced write in an append: where its log spans hang.
#[derive(Clone, Copy)]
struct TracedEntry {
    index: u64,
    term: u64,
    /// The AppendEntries server span on a follower, the proposal on the leader.
    parent: TraceParent,
    /// This node proposed it, as leader.
    proposed_here: bool,
}

impl LogStore {
    /// Opens (or creates, with `engine`'s memtable size) the log keyspaces
    /// in `db` and starts the flusher thread, which fsyncs the journal of the
    /// database in `db_dir` (`db`'s directory) for each group of appends and
    /// records fsync latency in `telemetry`'s metrics and the log spans of
    /// traced writes.
    ///
    /// # Errors
    /// Any fjall error opening the keyspaces, or failure to start the thread.
    pub fn open(
        db: &Database,
        db_dir: &Path,
        engine: &EngineOptions,
        telemetry: &Telemetry,
    ) -> Result<Self, io::Error> {
        let (log, meta) = open_keyspaces(db, engine)?;
        let (tx, rx) = mpsc::channel();
        let flush_db = db.clone();
        let flush_telemetry = telemetry.clone();
        let journal = JournalSync::new(db_dir);
        std::thread::Builder::new()
            .name("raftis-log-fsync".into())
            .spawn(move || run_flusher(&flush_db, journal, &rx, &flush_telemetry))?;
        let store = LogStore {
            inner: Arc::new(Inner {
                db: db.clone(),
                log,
                meta,
                flusher: tx,
                tracer: telemetry.tracer.clone(),
                tail: Mutex::new(LogTail::default()),
            }),
        };
        store.remove_purge_leftovers()?;
        Ok(store)
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, io::Error> {
        match self.inner.meta.get(key).map_err(io::Error::other)? {
            None => Ok(None),
            Some(bytes) => postcard::from_bytes(&bytes).map(Some).map_err(invalid_data),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), io::Error> {
        let bytes = postcard::to_allocvec(value).map_err(invalid_data)?;
        self.inner.meta.insert(key, bytes).map_err(io::Error::other)
    }

    /// Seeds the empty log in `db` for a member of a cluster restored from a
    /// backup taken at `last`: records the log as purged through `last` (so
    /// the log starts right after the restored state, and a member that
    /// needs anything older is sent the snapshot) and stores `vote`, then
    /// fsyncs. openraft then starts the node as initialized, with `last` as
    /// its last log id. Starts no flusher thread, so the database closes as
    /// soon as the caller drops it.
    ///
    /// # Errors
    /// A log that is not empty (`AlreadyExists`), or any fjall error.
    pub(crate) fn seed_restored(db: &Database, last: &LogId, vote: &Vote) -> Result<(), io::Error> {
        // A restored data dir starts with the default memtable size.
        let (log, meta) = open_keyspaces(db, &EngineOptions::default())?;
        let taken = |key: &[u8]| meta.get(key).map(|v| v.is_some()).map_err(io::Error::other);
        if log.first_key_value().is_some() || taken(KEY_PURGED)? || taken(KEY_VOTE)? {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the raft log is not empty",
            ));
        }
        let mut batch = db.batch();
        batch.insert(
            &meta,
            KEY_PURGED,
            postcard::to_allocvec(last).map_err(invalid_data)?,
        );
        batch.insert(
            &meta,
            KEY_VOTE,
            postcard::to_allocvec(vote).map_err(invalid_data)?,
        );
        batch.commit().map_err(io::Error::other)?;
        db.persist(PersistMode::SyncAll).map_err(io::Error::other)
    }

    /// Bytes the node's whole database (journal and every keyspace: log,
    /// state machine, data) takes on disk.
    ///
    /// # Errors
    /// Any fjall error.
    pub(crate) fn database_disk_space(&self) -> Result<u64, io::Error> {
        self.inner.db.disk_space().map_err(io::Error::other)
    }

    /// The node's database's background work and block cache now.
    pub(crate) fn engine_activity(&self) -> EngineActivity {
        EngineActivity::of(&self.inner.db)
    }

    /// The first and last index in the log, `None` when it is empty.
    ///
    /// # Errors
    /// Any fjall error, or a key that is not an index.
    pub(crate) fn index_bounds(&self) -> Result<(Option<u64>, Option<u64>), io::Error> {
        let first = match self.inner.log.first_key_value() {
            Some(guard) => Some(index_of(&guard.key().map_err(io::Error::other)?)?),
            None => None,
        };
        Ok((first, self.last_index()?))
    }

    /// Removes every entry whose index is in `range`, in one batch.
    fn remove_range(&self, range: impl RangeBounds<[u8; 8]>) -> Result<(), io::Error> {
        let mut batch = self.inner.db.batch();
        for guard in self.inner.log.range(range) {
            let key = guard.key().map_err(io::Error::other)?;
            batch.remove(&self.inner.log, key);
        }
        batch.commit().map_err(io::Error::other)
    }

    /// The last index in the log, `None` when it is empty.
    fn last_index(&self) -> Result<Option<u64>, io::Error> {
        match self.inner.log.last_key_value() {
            Some(guard) => Ok(Some(index_of(&guard.key().map_err(io::Error::other)?)?)),
            None => Ok(None),
        }
    }

    /// Deletes entries at or below the recorded purge that a crash between
    /// a purge's record and its deletion left behind (nothing reads them,
    /// but they take space and make INFO's first log index wrong). Run once
    /// at open: it reads the log's first key, which is slow behind the
    /// tombstones of earlier purges.
    fn remove_purge_leftovers(&self) -> Result<(), io::Error> {
        let Some(purged) = self.get_meta::<LogId>(KEY_PURGED)? else {
            return Ok(());
        };
        let (Some(first), Some(last)) = self.index_bounds()? else {
            return Ok(());
        };
        let to = last.min(purged.index);
        if first <= to {
            tracing::info!(
                first,
                to,
                "removing log entries left behind by an interrupted purge"
            );
            self.remove_indexes(first..=to)?;
        }
        Ok(())
    }

    /// Removes the entries at `indexes`, in one batch. Unlike
    /// [`Self::remove_range`] it reads nothing: a purge knows which indexes
    /// it drops, and scanning the log's memtable for them costs far more
    /// than the deletions.
    fn remove_indexes(&self, indexes: std::ops::RangeInclusive<u64>) -> Result<(), io::Error> {
        let mut batch = self.inner.db.batch();
        for index in indexes {
            batch.remove(&self.inner.log, index_key(index));
        }
        batch.commit().map_err(io::Error::other)
    }

    /// The decoded tail of the log.
    fn tail(&self) -> std::sync::MutexGuard<'_, LogTail> {
        // A panic while holding the lock leaves a consistent tail (every
        // method finishes its bookkeeping before it can panic, and none
        // does), so a poisoned lock is still usable.
        self.inner
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Fsyncs everything written so far. Blocking.
    fn sync(&self) -> Result<(), io::Error> {
        self.inner
            .db
            .persist(PersistMode::SyncAll)
            .map_err(io::Error::other)
    }
}

/// The flusher thread: one fsync per group of waiting appends.
fn run_flusher(
    db: &Database,
    mut journal: JournalSync,
    rx: &mpsc::Receiver<Flush>,
    telemetry: &Telemetry,
) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        waiting.extend(rx.try_iter());
        let started = Instant::now();
        let started_at = SystemTime::now();
        // Writes go on while the fsync runs (see journal_sync.rs); the next
        // group is whatever arrived meanwhile.
        let result = journal.sync(db);
        let elapsed = started.elapsed();
        let ended_at = SystemTime::now();
        let entries = waiting.iter().map(|f| f.entries).sum();
        telemetry.metrics.observe_fsync(elapsed, entries);
        tracing::trace!(entries, ?elapsed, "log fsync");
        let ok = result.is_ok();
        // The acknowledgements first, the spans after: recording must not
        // delay the writes waiting for this fsync.
        let mut traced = Vec::new();
        let mut complete = |f: Flush, outcome: io::Result<()>| {
            traced.extend(f.traced);
            f.callback.io_completed(outcome);
        };
        match result {
            Ok(()) => waiting.into_iter().for_each(|f| complete(f, Ok(()))),
            Err(e) => {
                tracing::error!(error = %e, "log fsync failed; the node stops accepting writes");
                let msg = e.to_string();
                for f in waiting {
                    complete(f, Err(io::Error::other(msg.clone())));
                }
            }
        }
        if !traced.is_empty() {
            record_fsync(
                &telemetry.tracer,
                &traced,
                entries,
                (started_at, ended_at),
                ok,
            );
        }
    }
}

/// The `raftis.log.fsync` span of each traced write in one group fsync,
/// linked to the other traced writes it made durable.
fn record_fsync(
    tracer: &NodeTracer,
    traced: &[TracedEntry],
    entries: usize,
    (start, end): (SystemTime, SystemTime),
    ok: bool,
) {
    let parents: Vec<TraceParent> = traced.iter().map(|t| t.parent).collect();
    for t in traced {
        tracer.record(Stage {
            parent: t.parent,
            name: "raftis.log.fsync",
            kind: SpanKind::Internal,
            start,
            end,
            log_id: Some((t.index, t.term)),
            batch_entries: entries,
            batch: &parents,
            attributes: if ok {
                Vec::new()
            } else {
                vec![KeyValue::new(attr::ERROR_TYPE, "io")]
            },
        });
    }
}

/// `entry` as a traced write, with where its spans hang: under its
/// proposal on the node that proposed it (the leader), else under the
/// AppendEntries that brought it (a follower) when that request was for the
/// same write. `None` for writes that are not traced (or too old).
fn traced_entry(tracer: &NodeTracer, entry: &Entry) -> Option<TracedEntry> {
    let book = tracer.book()?;
    let EntryPayload::Normal(stamped) = &entry.payload else {
        return None;
    };
    let proposal = stamped.live_trace(now_ms())?;
    let index = entry.log_id.index();
    // A record left by an AppendEntries that was refused may name another
    // write at this index: only the same trace counts.
    let received = book
        .take_received(index)
        .filter(|r| r.trace_id == proposal.trace_id);
    Some(TracedEntry {
        index,
        term: term_of(&entry.log_id),
        parent: received.unwrap_or(proposal),
        proposed_here: tracer.node_id() == Some(proposer_of(&entry.log_id)),
    })
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The index a log key stands for.
fn index_of(key: &[u8]) -> Result<u64, io::Error> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad log key"))?;
    Ok(u64::from_be_bytes(bytes))
}

fn invalid_data(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn decode_entry(bytes: &[u8]) -> Result<Entry, io::Error> {
    postcard::from_bytes(bytes).map_err(invalid_data)
}

fn to_key_bound(b: Bound<&u64>) -> Bound<[u8; 8]> {
    match b {
        Bound::Included(i) => Bound::Included(index_key(*i)),
        Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        if let Some(entries) = self.tail().get(&range) {
            return Ok(entries);
        }
        let keys = (
            to_key_bound(range.start_bound()),
            to_key_bound(range.end_bound()),
        );
        let mut entries = Vec::new();
        for guard in self.inner.log.range(keys) {
            let (_, value) = guard.into_inner().map_err(io::Error::other)?;
            entries.push(decode_entry(&value)?);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.get_meta(KEY_PURGED)?;
        let last_entry = match self.inner.log.last_key_value() {
            Some(guard) => {
                let value = guard.value().map_err(io::Error::other)?;
                Some(decode_entry(&value)?.log_id)
            }
            None => None,
        };
        // A purge is recorded before its entries go; should the deletion be
        // lost, entries at or below the purged id still count as purged.
        let last_log_id = std::cmp::max(last_entry, last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.put_meta(KEY_VOTE, vote)?;
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.sync())
            .await
            .map_err(io::Error::other)?
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not fsynced: a lost committed id is re-learned from the leader; it
        // only lets a restarted node re-apply sooner.
        self.put_meta(KEY_COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = SystemTime::now();
        let mut batch = self.inner.db.batch();
        let mut appended_entries = Vec::new();
        let mut traced = Vec::new();
        for entry in entries {
            let value = postcard::to_allocvec(&entry).map_err(invalid_data)?;
            traced.extend(traced_entry(&self.inner.tracer, &entry));
            let size = value.len();
            batch.insert(&self.inner.log, index_key(entry.log_id.index), value);
            appended_entries.push((entry, size));
        }
        let count = appended_entries.len();
        // Written on the caller's task: the fsync runs without fjall's journal
        // lock (see journal_sync.rs), so this write only copies the entries
        // into the memtable and the journal buffer; unless fjall may hold it
        // back (flushes lagging), then on a blocking thread, so that the
        // runtime's other tasks (heartbeats among them) go on. It completes
        // before `append` returns, as openraft requires (appended entries must
        // be readable at once).
        if crate::storage::write_may_stall(&self.inner.log) {
            tokio::task::spawn_blocking(move || batch.commit())
                .await
                .map_err(io::Error::other)?
                .map_err(io::Error::other)?;
        } else {
            batch.commit().map_err(io::Error::other)?;
        }
        {
            let mut tail = self.tail();
            for (entry, size) in appended_entries {
                tail.push(entry, size);
            }
        }
        let appended = SystemTime::now();
        if let Some(book) = self.inner.tracer.book() {
            // On the leader, the entry now waits for a quorum to have it
            // durable: its commit span starts here (replication reads the
            // entry from this log, so no follower has it before this).
            for t in traced.iter().filter(|t| t.proposed_here) {
                book.note_appended(t.index, t.parent, appended);
            }
        }
        // The fsync first, the spans after: recording must not delay it.
        let spans = traced.clone();
        self.inner
            .flusher
            .send(Flush {
                callback,
                entries: count,
                traced,
            })
            .map_err(|_| io::Error::other("log flusher thread is gone"))?;
        for t in &spans {
            self.inner.tracer.record(Stage {
                parent: t.parent,
                name: "raftis.log.append",
                kind: SpanKind::Internal,
                start: started,
                end: appended,
                log_id: Some((t.index, t.term)),
                batch_entries: count,
                batch: &[],
                attributes: Vec::new(),
            });
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index + 1);
        self.tail().truncate_from(from);
        // Truncation needs no fsync: a resurrected conflicting suffix after a
        // crash is truncated again when the leader's entries arrive.
        self.remove_range((Bound::Included(index_key(from)), Bound::Unbounded))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // The fsync before deleting makes the state machine's applied state
        // (written earlier to the same journal) durable before the log that
        // could rebuild it is gone; the one after makes the deletion itself
        // durable, so a restart never finds a purged id above the last entry
        // (which openraft refuses as an inverted log).
        // Deleted by index, from the previous purge to the last entry
        // present (a snapshot installed on a lagging follower purges far past
        // its log's end: no tombstones for entries that never existed).
        // Entries a crash left behind a recorded purge go at the next start
        // (`remove_purge_leftovers`).
        let from = match self.get_meta::<LogId>(KEY_PURGED)? {
            Some(purged) => purged.index + 1,
            None => self.index_bounds()?.0.unwrap_or(log_id.index + 1),
        };
        let to = self.last_index()?.map_or(0, |last| last.min(log_id.index));
        self.put_meta(KEY_PURGED, &log_id)?;
        self.tail().purge_through(log_id.index);
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            store.sync()?;
            if from <= to {
                store.remove_indexes(from..=to)?;
            }
            store.sync()
        })
        .await
        .map_err(io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;
    use openraft::type_config::TypeConfigExt;

    use super::*;
    use crate::cluster::types::test_values::log_id;

    /// A log store on a fresh database; the directory lives as long as it.
    fn open_log() -> (tempfile::TempDir, Database, LogStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = EngineOptions::default()
            .open_database(&dir.path().join("db"))
            .unwrap();
        let log = reopen(&dir, &db);
        (dir, db, log)
    }

    /// The log store of `db` (in `dir`) opened again, as at a restart.
    fn reopen(dir: &tempfile::TempDir, db: &Database) -> LogStore {
        LogStore::open(
            db,
            &dir.path().join("db"),
            &EngineOptions::default(),
            &Telemetry::untraced(1),
        )
        .unwrap()
    }

    /// Appends blank entries at `indexes` and waits for their fsync.
    async fn append(log: &mut LogStore, indexes: std::ops::RangeInclusive<u64>) {
        let entries = indexes.map(|i| Entry::new_blank(log_id(i)));
        let (tx, rx) = TypeConfig::oneshot();
        log.append(entries, IOFlushed::signal(tx)).await.unwrap();
        rx.await.unwrap().unwrap();
    }

    async fn indexes_present(log: &mut LogStore) -> Vec<u64> {
        // Past the tail (which answers bounded ranges only): read from fjall.
        log.try_get_log_entries(0..u64::MAX)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect()
    }

    #[tokio::test]
    async fn purge_past_the_last_entry_deletes_only_entries_present() {
        let (_dir, _db, mut log) = open_log();
        append(&mut log, 1..=10).await;
        assert_eq!(log.inner.log.approximate_len(), 10);

        // A snapshot installed on a lagging follower purges far past its log.
        log.purge(log_id(100_000)).await.unwrap();
        assert_eq!(indexes_present(&mut log).await, Vec::<u64>::new());
        assert_eq!(log.index_bounds().unwrap(), (None, None));
        // The memtable counts writes and tombstones: 10 entries, then one
        // tombstone for each of them and none for indexes 11..=100000.
        assert_eq!(log.inner.log.approximate_len(), 20);
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(100_000)));
        assert_eq!(state.last_log_id, Some(log_id(100_000)));

        // The log goes on after the snapshot; the next purge starts from
        // the previous one, not from index 1.
        append(&mut log, 100_001..=100_005).await;
        log.purge(log_id(100_003)).await.unwrap();
        assert_eq!(indexes_present(&mut log).await, vec![100_004, 100_005]);
        assert_eq!(log.inner.log.approximate_len(), 20 + 5 + 3);
    }

    #[tokio::test]
    async fn open_removes_what_an_interrupted_purge_left() {
        let (dir, db, mut log) = open_log();
        append(&mut log, 1..=10).await;
        // A purge records its id first and deletes after; a crash in
        // between leaves the entries.
        log.put_meta(KEY_PURGED, &log_id(6)).unwrap();
        drop(log);
        let mut log = reopen(&dir, &db);
        assert_eq!(indexes_present(&mut log).await, vec![7, 8, 9, 10]);
        assert_eq!(log.index_bounds().unwrap(), (Some(7), Some(10)));

        // Recorded past the last entry (a snapshot install): everything
        // goes, and only the entries present get tombstones.
        log.put_meta(KEY_PURGED, &log_id(50_000)).unwrap();
        let before = log.inner.log.approximate_len();
        drop(log);
        let mut log = reopen(&dir, &db);
        assert_eq!(indexes_present(&mut log).await, Vec::<u64>::new());
        assert_eq!(log.inner.log.approximate_len(), before + 4);
    }
}
