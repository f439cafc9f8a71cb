//! The Raft state machine: committed entries applied to the store, and
//! snapshots of it.
//!
//! Apply: openraft hands over a run of committed entries; each normal entry's
//! `Op` is applied through one `storage::ApplyBatch` (later ops in the run see
//! earlier ones), membership entries are recorded, and the batch commits with
//! `last_applied` and `last_membership` inside it: one atomic fjall write per
//! run, so a crash can neither lose an applied entry nor apply one twice.
//! Apply reads no clock: expiry uses the leader's stamp in each entry. Only
//! then are the waiting clients answered.
//!
//! Snapshots are files in `<data_dir>/snapshots`. Building one streams every
//! key from a consistent fjall snapshot into the file, followed by a trailer
//! that records what the snapshot covers:
//!
//! ```text
//! [data stream][meta (postcard)][meta_len: u64 LE][data_len: u64 LE][MAGIC]
//! ```
//!
//! Installing one loads the data stream into a fresh generation of the store
//! and switches to it atomically (see `storage`), so a crash mid-install
//! leaves the previous state intact.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};

use super::core::term_of;
use super::op::OpResult;
use super::types::{Entry, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::storage::Store;
use crate::telemetry::metrics::SnapshotKind;
use crate::telemetry::trace::Stage;
use crate::telemetry::{Telemetry, TraceParent};
use opentelemetry::trace::SpanKind;
use std::time::SystemTime;

const KEY_LAST_APPLIED: &[u8] = b"raft_last_applied";
const KEY_MEMBERSHIP: &[u8] = b"raft_membership";
const MAGIC: &[u8; 8] = b"RFTSNAP1";
const TRAILER_LEN: u64 = 8 + 8 + 8;

/// The state machine openraft drives. Clones share the store.
#[derive(Clone)]
pub struct StateMachine {
    store: Arc<Store>,
    snapshot_dir: PathBuf,
    /// Disambiguates snapshots built at the same log position.
    builds: Arc<AtomicU64>,
    /// Serializes what changes or reads the set of snapshot files: openraft
    /// builds snapshots in a task of their own, concurrently with installs
    /// and with serving the current snapshot to others.
    files: Arc<std::sync::Mutex<()>>,
    /// See [`StateMachine::applied_clock`].
    clock: Arc<AtomicU64>,
    /// Apply spans of traced writes; snapshot metrics.
    telemetry: Telemetry,
}

/// A traced write in a run being applied.
struct AppliedWrite {
    index: u64,
    term: u64,
    /// Its proposal span.
    parent: TraceParent,
    /// When it entered this node's log, if this node proposed it.
    appended: Option<SystemTime>,
}

/// The traced writes of a run being applied.
struct AppliedTraces {
    writes: Vec<AppliedWrite>,
    /// When apply started.
    started: SystemTime,
    /// The run's last index.
    last_index: u64,
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl StateMachine {
    /// A state machine over `store`, keeping snapshot files in `snapshot_dir`
    /// (created if missing; leftovers of interrupted transfers are removed).
    ///
    /// # Errors
    /// The directory cannot be created or listed.
    pub fn open(
        store: Arc<Store>,
        snapshot_dir: PathBuf,
        telemetry: Telemetry,
    ) -> io::Result<Self> {
        fs::create_dir_all(&snapshot_dir)?;
        for entry in fs::read_dir(&snapshot_dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("incoming-") || name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(StateMachine {
            store,
            snapshot_dir,
            builds: Arc::default(),
            files: Arc::default(),
            clock: Arc::default(),
            telemetry,
        })
    }

    /// Before a run is applied, when tracing is on: the traced writes of
    /// the run, with the time apply starts, which is when each write this
    /// node proposed is known committed.
    fn start_apply_traces(&self, run: &[Entry]) -> Option<AppliedTraces> {
        let book = self.telemetry.tracer.book()?;
        let now_ms = super::core::now_ms();
        let writes = run
            .iter()
            .filter_map(|entry| match &entry.payload {
                EntryPayload::Normal(stamped) => {
                    let parent = stamped.live_trace(now_ms)?;
                    let index = entry.log_id.index();
                    Some(AppliedWrite {
                        index,
                        term: term_of(&entry.log_id),
                        parent,
                        appended: book.take_appended(index),
                    })
                }
                _ => None,
            })
            .collect();
        Some(AppliedTraces {
            writes,
            started: SystemTime::now(),
            last_index: run.last().map_or(0, |e| e.log_id.index()),
        })
    }

    /// After a run was applied and answered: for each traced write, the
    /// commit span if this node proposed it (from when it entered this
    /// node's log until apply started, when a quorum had it durable) and
    /// the apply span, linked to the other traced writes of the run; then
    /// forgets the book's records through the run.
    fn finish_apply_traces(&self, traced: &AppliedTraces, ended: SystemTime, entries: usize) {
        let tracer = &self.telemetry.tracer;
        let parents: Vec<TraceParent> = traced.writes.iter().map(|w| w.parent).collect();
        for w in &traced.writes {
            if let Some(appended) = w.appended {
                tracer.record(Stage {
                    parent: w.parent,
                    name: "raftis.commit",
                    kind: SpanKind::Internal,
                    start: appended,
                    end: traced.started,
                    log_id: Some((w.index, w.term)),
                    batch_entries: 0,
                    batch: &[],
                    attributes: Vec::new(),
                });
            }
            tracer.record(Stage {
                parent: w.parent,
                name: "raftis.apply",
                kind: SpanKind::Internal,
                start: traced.started,
                end: ended,
                log_id: Some((w.index, w.term)),
                batch_entries: entries,
                batch: &parents,
                attributes: Vec::new(),
            });
        }
        if let Some(book) = tracer.book() {
            book.forget_through(traced.last_index);
        }
    }

    /// The highest leader clock stamp applied so far (ms since the Unix
    /// epoch), shared with the node so that expiry on reads and new stamps
    /// never go behind what was already applied.
    #[must_use]
    pub fn applied_clock(&self) -> Arc<AtomicU64> {
        self.clock.clone()
    }

    fn applied(&self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let last_applied = match self.store.meta(KEY_LAST_APPLIED).map_err(other)? {
            Some(b) => postcard::from_bytes(&b).map_err(other)?,
            None => None,
        };
        let membership = match self.store.meta(KEY_MEMBERSHIP).map_err(other)? {
            Some(b) => postcard::from_bytes(&b).map_err(other)?,
            None => StoredMembership::default(),
        };
        Ok((last_applied, membership))
    }

    /// Snapshot files, newest (highest log index) last.
    fn snapshot_files(&self) -> io::Result<Vec<PathBuf>> {
        snapshot_files_in(&self.snapshot_dir)
    }

    /// Makes `path` the current snapshot: renames it into place, makes the
    /// rename durable, and removes every other snapshot (all older: callers
    /// hold the file lock and never keep a snapshot behind the newest).
    fn commit_file(&self, tmp: &Path, path: &Path) -> io::Result<()> {
        fs::rename(tmp, path)?;
        fs::File::open(&self.snapshot_dir)?.sync_all()?;
        for old in self.snapshot_files()? {
            if old != path {
                let _ = fs::remove_file(old);
            }
        }
        Ok(())
    }

    /// The newest snapshot file and its metadata, opened (so it stays
    /// readable even if a newer one replaces it afterwards). Callers hold
    /// the file lock.
    fn newest(&self) -> io::Result<Option<(SnapshotMeta, fs::File)>> {
        let Some(path) = self.snapshot_files()?.pop() else {
            return Ok(None);
        };
        let mut file = fs::File::open(&path)?;
        let (meta, _) = read_trailer(&mut file)?;
        file.seek(SeekFrom::Start(0))?;
        Ok(Some((meta, file)))
    }

    fn lock_files(&self) -> std::sync::MutexGuard<'_, ()> {
        self.files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `snap-<index>-<term>-<tag>`, zero-padded so that name order is log order.
    fn file_name(meta: &SnapshotMeta, tag: &str) -> String {
        match &meta.last_log_id {
            Some(id) => format!("snap-{:020}-{}-{tag}", id.index, id.leader_id.term),
            None => format!("snap-{:020}-0-{tag}", 0),
        }
    }

    /// Builds a snapshot of the applied state. The export (the long part)
    /// runs without the file lock; if a newer snapshot was installed
    /// meanwhile, that one stays current and is returned instead, so a
    /// slow build never replaces a snapshot the log was purged behind.
    fn build_blocking(&self) -> io::Result<(SnapshotMeta, fs::File)> {
        let seq = self.builds.fetch_add(1, Ordering::Relaxed);
        let tmp = self.snapshot_dir.join(format!("build-{seq}.tmp"));
        let mut out = io::BufWriter::new(fs::File::create(&tmp)?);
        let meta = write_snapshot(&self.store, &mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        let path = self
            .snapshot_dir
            .join(Self::file_name(&meta, &format!("b{seq}")));
        let _files = self.lock_files();
        if let Some((newer, file)) = self.newest()? {
            let index = |m: &SnapshotMeta| m.last_log_id.as_ref().map(|l| l.index);
            if index(&newer) > index(&meta) {
                let _ = fs::remove_file(&tmp);
                return Ok((newer, file));
            }
        }
        self.commit_file(&tmp, &path)?;
        Ok((meta, fs::File::open(&path)?))
    }

    fn install_blocking(&self, meta: &SnapshotMeta, mut file: fs::File) -> io::Result<()> {
        let _files = self.lock_files();
        let (file_meta, data_len) = read_trailer(&mut file)?;
        if file_meta.last_log_id != meta.last_log_id {
            return Err(invalid("snapshot file does not match its metadata"));
        }
        file.seek(SeekFrom::Start(0))?;
        let mut data = io::BufReader::new(&mut file).take(data_len);
        let applied = postcard::to_allocvec(&meta.last_log_id).map_err(other)?;
        let membership = postcard::to_allocvec(&meta.last_membership).map_err(other)?;
        self.store
            .import(
                &mut data,
                vec![
                    (KEY_LAST_APPLIED.to_vec(), applied),
                    (KEY_MEMBERSHIP.to_vec(), membership),
                ],
            )
            .map_err(other)?;
        // Keep a copy as our current snapshot, to serve to others.
        let seq = self.builds.fetch_add(1, Ordering::Relaxed);
        let tmp = self.snapshot_dir.join(format!("install-{seq}.tmp"));
        file.seek(SeekFrom::Start(0))?;
        let mut out = fs::File::create(&tmp)?;
        io::copy(&mut file, &mut out)?;
        out.sync_all()?;
        let path = self
            .snapshot_dir
            .join(Self::file_name(meta, &format!("i{seq}")));
        self.commit_file(&tmp, &path)
    }

    /// Makes this state machine's state the snapshot that starts at `start`
    /// in `source` (as [`write_snapshot`] writes them) under `meta`
    /// instead of the metadata the file carries: `raftis restore` seeds a
    /// new cluster's member this way, with the backup's data and last log id
    /// but the new cluster's membership. The data is imported exactly as an
    /// installed snapshot is, and the current snapshot file is rewritten with
    /// `meta` in its trailer, so the snapshot this node later sends to a new
    /// member carries the new membership, not the one the backup was taken
    /// under.
    ///
    /// # Errors
    /// A file that is not a snapshot or whose last log id is not `meta`'s, a
    /// data stream that fails its checks, or any I/O error.
    pub(crate) fn seed_blocking(
        &self,
        source: &mut fs::File,
        start: u64,
        meta: &SnapshotMeta,
    ) -> io::Result<()> {
        let (file_meta, data_len) = read_trailer_from(source, start)?;
        if file_meta.last_log_id != meta.last_log_id {
            return Err(invalid("snapshot file does not match its metadata"));
        }
        let tmp = self.snapshot_dir.join("seed.tmp");
        let mut out = io::BufWriter::new(fs::File::create(&tmp)?);
        source.seek(SeekFrom::Start(start))?;
        let copied = io::copy(&mut (&mut *source).take(data_len), &mut out)?;
        if copied != data_len {
            return Err(invalid("snapshot file is truncated"));
        }
        write_trailer(&mut out, meta, data_len)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        let installed = self.install_blocking(meta, fs::File::open(&tmp)?);
        let _ = fs::remove_file(&tmp);
        installed
    }

    fn current_blocking(&self) -> io::Result<Option<(SnapshotMeta, fs::File)>> {
        let _files = self.lock_files();
        self.newest()
    }
}

/// Writes a snapshot of `store`'s applied state to `out` in the snapshot
/// file format (data stream, then the trailer) and returns its metadata:
/// the last applied log id and membership as seen by the same consistent
/// fjall snapshot as the data. Memory use does not grow with the data.
///
/// # Errors
/// Any storage error, stored metadata that does not decode, or a failed
/// write to `out`.
pub(crate) fn write_snapshot(store: &Store, out: &mut dyn Write) -> io::Result<SnapshotMeta> {
    let mut counted = CountingWriter {
        inner: out,
        written: 0,
    };
    let pairs = store.export(&mut counted).map_err(other)?;
    let data_len = counted.written;
    let find = |key: &[u8]| {
        pairs
            .iter()
            .find(|(k, _)| k.as_slice() == key)
            .map(|(_, v)| v.as_slice())
    };
    let last_log_id: Option<LogId> = match find(KEY_LAST_APPLIED) {
        Some(b) => postcard::from_bytes(b).map_err(other)?,
        None => None,
    };
    let last_membership: StoredMembership = match find(KEY_MEMBERSHIP) {
        Some(b) => postcard::from_bytes(b).map_err(other)?,
        None => StoredMembership::default(),
    };
    let meta = SnapshotMeta {
        last_log_id,
        last_membership,
    };
    write_trailer(counted.inner, &meta, data_len)?;
    Ok(meta)
}

/// The snapshot files in `dir`, newest (highest log index) last.
fn snapshot_files_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("snap-") && !n.ends_with(".tmp"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// When the current snapshot in `snapshot_dir` was written (built here or
/// received from the leader): its file's modification time, which survives
/// restarts. `None` when there is no snapshot yet.
///
/// # Errors
/// A snapshot directory or file that cannot be read.
pub(crate) fn last_snapshot_time(snapshot_dir: &Path) -> io::Result<Option<std::time::SystemTime>> {
    match snapshot_files_in(snapshot_dir)?.pop() {
        None => Ok(None),
        Some(path) => Ok(Some(fs::metadata(path)?.modified()?)),
    }
}

/// Reads the trailer of the snapshot that starts at `start` in `file` and
/// runs to its end: its metadata and the length of its data stream. The
/// data stream itself is not checked here (its own
/// checksum is verified when it is imported).
///
/// # Errors
/// `InvalidData` for a file too short, with a foreign magic, lengths that do
/// not add up or metadata that does not decode; any I/O error.
pub(crate) fn read_snapshot_meta(
    file: &mut fs::File,
    start: u64,
) -> io::Result<(SnapshotMeta, u64)> {
    read_trailer_from(file, start)
}

/// Counts the bytes written through it (the data stream's length, which
/// the trailer records).
struct CountingWriter<'a> {
    inner: &'a mut dyn Write,
    written: u64,
}

impl Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn write_trailer(
    out: &mut (impl Write + ?Sized),
    meta: &SnapshotMeta,
    data_len: u64,
) -> io::Result<()> {
    let encoded = postcard::to_allocvec(meta).map_err(other)?;
    out.write_all(&encoded)?;
    out.write_all(&(encoded.len() as u64).to_le_bytes())?;
    out.write_all(&data_len.to_le_bytes())?;
    out.write_all(MAGIC)?;
    out.flush()
}

/// Reads a snapshot file's trailer: its metadata and the data stream length.
fn read_trailer(file: &mut fs::File) -> io::Result<(SnapshotMeta, u64)> {
    read_trailer_from(file, 0)
}

/// [`read_trailer`] of a snapshot that starts at `start` in `file` and
/// runs to its end (a backup file carries one after its own header).
fn read_trailer_from(file: &mut fs::File, start: u64) -> io::Result<(SnapshotMeta, u64)> {
    let end = file.seek(SeekFrom::End(0))?;
    let len = end
        .checked_sub(start)
        .ok_or_else(|| invalid("snapshot file too short"))?;
    if len < TRAILER_LEN {
        return Err(invalid("snapshot file too short"));
    }
    file.seek(SeekFrom::Start(start + len - TRAILER_LEN))?;
    let mut tail = [0u8; TRAILER_LEN as usize];
    file.read_exact(&mut tail)?;
    let (lens, magic) = tail.split_at(16);
    if magic != MAGIC {
        return Err(invalid("not a raftis snapshot (bad magic)"));
    }
    let mut word = [0u8; 8];
    word.copy_from_slice(&lens[..8]);
    let meta_len = u64::from_le_bytes(word);
    word.copy_from_slice(&lens[8..]);
    let data_len = u64::from_le_bytes(word);
    if data_len
        .checked_add(meta_len)
        .and_then(|n| n.checked_add(TRAILER_LEN))
        != Some(len)
    {
        return Err(invalid("snapshot file lengths do not add up"));
    }
    file.seek(SeekFrom::Start(start + data_len))?;
    let mut encoded = vec![0u8; usize::try_from(meta_len).map_err(other)?];
    file.read_exact(&mut encoded)?;
    let meta =
        postcard::from_bytes(&encoded).map_err(|e| invalid(format!("snapshot metadata: {e}")))?;
    Ok((meta, data_len))
}

/// Applies one run of committed entries as one atomic batch, with the last
/// applied log id (and the membership, if it changed) inside it. Returns
/// each entry's result and the highest leader stamp in the run.
fn apply_run(store: &Store, run: &[Entry]) -> io::Result<(Vec<OpResult>, u64)> {
    let mut batch = store.begin();
    let mut results = Vec::with_capacity(run.len());
    let mut membership = None;
    let mut clock = 0;
    for entry in run {
        results.push(match &entry.payload {
            EntryPayload::Blank => OpResult::Ok,
            EntryPayload::Normal(stamped) => {
                clock = clock.max(stamped.now_ms);
                batch.apply(&stamped.op, stamped.now_ms).map_err(other)?
            }
            EntryPayload::Membership(m) => {
                membership = Some(StoredMembership::new(Some(entry.log_id), m.clone()));
                OpResult::Ok
            }
        });
    }
    let last_applied = run.last().map(|e| e.log_id);
    batch.put_meta(
        KEY_LAST_APPLIED,
        postcard::to_allocvec(&last_applied).map_err(other)?,
    );
    if let Some(m) = &membership {
        batch.put_meta(KEY_MEMBERSHIP, postcard::to_allocvec(m).map_err(other)?);
    }
    batch.commit().map_err(other)?;
    Ok((results, clock))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(other)?
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = tokio::fs::File;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let sm = self.clone();
        let started = std::time::Instant::now();
        let (meta, file) = blocking(move || sm.build_blocking()).await?;
        let metrics = &self.telemetry.metrics;
        metrics.observe_snapshot(SnapshotKind::Build, started.elapsed());
        tracing::info!(snapshot = %meta, "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: tokio::fs::File::from_std(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = tokio::fs::File;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        self.applied()
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        // Collect the run first, then apply it as one fjall batch, on this
        // task: the log's group fsync does not hold fjall's journal lock
        // (journal_sync.rs), so the write only fills the memtable and the
        // journal buffer, and a hop to a blocking thread would cost more
        // than it saves; unless fjall may hold writes back now.
        let mut run = Vec::new();
        let mut responders = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            responders.push(responder);
            run.push(entry);
        }
        if run.is_empty() {
            return Ok(());
        }
        let traced = self.start_apply_traces(&run);
        let entries = run.len();
        let (results, clock) = if self.store.write_may_stall() {
            let store = self.store.clone();
            blocking(move || apply_run(&store, &run)).await?
        } else {
            apply_run(&self.store, &run)?
        };
        let applied = SystemTime::now();
        self.clock.fetch_max(clock, Ordering::AcqRel);
        for (responder, result) in responders.into_iter().zip(results) {
            if let Some(responder) = responder {
                responder.send(result);
            }
        }
        // After the answers: recording must not delay them.
        if let Some(traced) = traced {
            self.finish_apply_traces(&traced, applied, entries);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: tokio::fs::File,
    ) -> io::Result<()> {
        let sm = self.clone();
        let meta_owned = meta.clone();
        let started = std::time::Instant::now();
        let file = snapshot.into_std().await;
        blocking(move || sm.install_blocking(&meta_owned, file)).await?;
        let metrics = &self.telemetry.metrics;
        metrics.observe_snapshot(SnapshotKind::Install, started.elapsed());
        tracing::info!(snapshot = %meta, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        let sm = self.clone();
        let Some((meta, file)) = blocking(move || sm.current_blocking()).await? else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            meta,
            snapshot: tokio::fs::File::from_std(file),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::telemetry::Telemetry;

    use openraft::testing::log::{StoreBuilder, Suite};
    use openraft::type_config::TypeConfigExt;
    use openraft::StorageError;

    use bytes::Bytes;
    use openraft::storage::{EntryResponder, RaftStateMachine};
    use openraft::{EntryPayload, RaftSnapshotBuilder};

    use std::sync::atomic::Ordering;

    use super::StateMachine;
    use crate::cluster::log_store::LogStore;
    use crate::cluster::types::{Entry, StampedOp, TypeConfig};
    use crate::storage::{EngineOptions, Store};

    struct FjallBuilder;

    fn storage_error(e: impl std::fmt::Display) -> StorageError<TypeConfig> {
        StorageError::read(TypeConfig::err_from_error(&std::io::Error::other(
            e.to_string(),
        )))
    }

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for FjallBuilder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
            let dir = tempfile::tempdir().map_err(storage_error)?;
            let engine = EngineOptions::default();
            let db = engine
                .open_database(&dir.path().join("db"))
                .map_err(storage_error)?;
            let store = Store::open(db.clone(), &engine).map_err(storage_error)?;
            let log = LogStore::open(
                &db,
                &dir.path().join("db"),
                &engine,
                &Telemetry::untraced(1),
            )
            .map_err(storage_error)?;
            let sm = StateMachine::open(
                Arc::new(store),
                dir.path().join("snapshots"),
                Telemetry::untraced(1),
            )
            .map_err(storage_error)?;
            Ok((dir, log, sm))
        }
    }

    fn open_sm(dir: &std::path::Path) -> (StateMachine, Arc<Store>) {
        let engine = EngineOptions::default();
        let db = engine.open_database(&dir.join("db")).unwrap();
        let store = Arc::new(Store::open(db, &engine).unwrap());
        (
            StateMachine::open(store.clone(), dir.join("snapshots"), Telemetry::untraced(1))
                .unwrap(),
            store,
        )
    }

    fn set(key: &str, value: &str) -> crate::cluster::Op {
        crate::cluster::Op::MSet(vec![(
            Bytes::from(key.to_string()),
            Bytes::from(value.to_string()),
        )])
    }

    /// Applies `ops` as committed entries 1..=n of term 1, through the same
    /// path openraft uses.
    async fn apply_ops(sm: &mut StateMachine, ops: Vec<crate::cluster::Op>) {
        let entries: Vec<std::io::Result<EntryResponder<TypeConfig>>> = ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| {
                let entry = Entry {
                    log_id: openraft::LogId::new(
                        openraft::impls::leader_id_adv::LeaderId {
                            term: 1,
                            node_id: 1,
                        },
                        i as u64 + 1,
                    ),
                    payload: EntryPayload::Normal(StampedOp {
                        now_ms: 1_000,
                        op,
                        trace: None,
                    }),
                };
                Ok((entry, None))
            })
            .collect();
        sm.apply(futures::stream::iter(entries)).await.unwrap();
    }

    fn value(store: &Store, key: &str) -> Option<Bytes> {
        store.get(key.as_bytes(), 2_000).unwrap().map(|v| v.payload)
    }

    #[tokio::test]
    async fn snapshot_round_trips_into_another_node() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (mut sm_a, _) = open_sm(a.path());
        let (mut sm_b, store_b) = open_sm(b.path());
        apply_ops(&mut sm_a, vec![set("k1", "v1"), set("k2", "v2")]).await;
        // The leader's stamp is the floor of this node's clock from now on.
        assert_eq!(sm_a.applied_clock().load(Ordering::Acquire), 1_000);
        let snapshot = sm_a.build_snapshot().await.unwrap();
        assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(2));

        sm_b.install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .unwrap();
        assert_eq!(value(&store_b, "k1").as_deref(), Some(&b"v1"[..]));
        assert_eq!(store_b.key_count(), 2);
        let (applied, _) = sm_b.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(2));
        // The installed snapshot is the one this node now serves to others.
        let current = sm_b.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snapshot.meta);
    }

    #[tokio::test]
    async fn corrupt_snapshot_is_refused_and_state_kept() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (mut sm_a, _) = open_sm(a.path());
        let (mut sm_b, store_b) = open_sm(b.path());
        apply_ops(&mut sm_a, vec![set("k1", "from-a")]).await;
        apply_ops(&mut sm_b, vec![set("mine", "kept")]).await;
        let snapshot = sm_a.build_snapshot().await.unwrap();
        let path = sm_a.snapshot_files().unwrap().pop().unwrap();
        let bytes = std::fs::read(&path).unwrap();

        // Truncated: the trailer is gone.
        let truncated = b.path().join("truncated");
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let file = tokio::fs::File::open(&truncated).await.unwrap();
        assert!(sm_b.install_snapshot(&snapshot.meta, file).await.is_err());

        // A flipped byte in the data stream.
        let mut flipped = bytes.clone();
        flipped[3] ^= 0xff;
        let path = b.path().join("flipped");
        std::fs::write(&path, &flipped).unwrap();
        let file = tokio::fs::File::open(&path).await.unwrap();
        assert!(sm_b.install_snapshot(&snapshot.meta, file).await.is_err());

        assert_eq!(value(&store_b, "mine").as_deref(), Some(&b"kept"[..]));
        assert_eq!(value(&store_b, "k1"), None);
        assert_eq!(store_b.key_count(), 1);
    }

    /// openraft's own storage conformance suite against the fjall log store
    /// and state machine.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openraft_storage_suite() {
        Suite::test_all(FjallBuilder).await.expect("storage suite");
    }
}
