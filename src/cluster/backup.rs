//! Backups of the committed state: served by a running node to `raftis
//! backup`, and seeded into a new cluster's data dirs by `raftis restore`.
//!
//! # Serving a backup
//!
//! `RAFT.BACKUP BEGIN` ([`Backups::begin`]) first passes a linearizable read
//! barrier (the same ReadIndex round a `GET` makes), so the node has applied
//! every write acknowledged before the command arrived. It then writes a
//! snapshot file of its applied state, from one consistent fjall snapshot,
//! with the state machine's own writer (the same file format Raft sends to a
//! lagging follower: data stream with its checksum, then the last applied
//! log id and membership), hashing it with xxh3-64 as it goes. The file is
//! the backup session: `<data_dir>/snapshots/backup-<id>.tmp`, where `<id>`
//! is 16 random hex digits. `RAFT.BACKUP READ <id> <offset> <count>`
//! ([`Backups::read`]) returns up to [`MAX_CHUNK`] bytes of it, read at an
//! offset, so neither side ever holds the whole file; `RAFT.BACKUP END <id>`
//! ([`Backups::end`]) deletes it. Each read touches the file's modification
//! time, and a watcher task deletes a file left idle for the idle timeout
//! (an abandoned backup). A node that restarts deletes every `.tmp` file in
//! its snapshot directory (see the state machine), so a crash leaves nothing
//! behind either. Keeping the sessions as files means they need no state in
//! the node beyond its data dir.
//!
//! # Restoring one
//!
//! [`seed_data_dir`] turns a snapshot into the data dir of a member of a
//! *new* cluster, as `etcdutl snapshot restore` does. It writes a staging
//! directory beside the data dir and renames it into place once everything
//! is written and synced, so a data dir is never half restored. The store
//! holds the snapshot's data with its last log id as last applied and the
//! new cluster's membership (not the one the backup was taken under); the
//! snapshot directory holds the same snapshot with the new membership in
//! its metadata; the log is empty and recorded as purged through that log
//! id; and the vote is this member's own, in the term of that log id. openraft
//! then starts the node as initialized (the node ignores its
//! `--initial-cluster`), elections begin one term above the backup's, and a
//! member added later is caught up from the snapshot, since no log older
//! than it exists.
//!
//! # Caveats
//!
//! - A backup costs one snapshot's worth of disk on the node while it runs;
//!   at most [`MAX_BACKUPS`] run at once on one node (checked by counting
//!   files, so two `BEGIN`s racing may both pass at the limit).
//! - The key count of a backup is only known once it is restored.
//! - A restore killed midway leaves a hidden `.<name>.restoring` directory
//!   beside the data dir (the data dir itself is untouched until the final
//!   rename); the next restore into the same data dir removes it.
//! - The snapshot directory's name is `Cluster::start`'s layout, repeated
//!   here.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use xxhash_rust::xxh3::Xxh3;

use super::log_store::LogStore;
use super::state_machine::{read_snapshot_meta, write_snapshot, StateMachine};
use super::types::{Member, SnapshotMeta, StoredMembership, Vote};
use super::{Cluster, ClusterError};
use crate::storage::Store;

/// The most bytes one `RAFT.BACKUP READ` returns.
pub const MAX_CHUNK: u64 = 8 * 1024 * 1024;

/// How many backups may run at once on one node.
pub const MAX_BACKUPS: usize = 4;

/// How long a backup may go without a read before it is deleted.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Subdirectories of a data dir, as `Cluster::start` lays it out.
const DB_DIR: &str = "db";
const SNAPSHOT_DIR: &str = "snapshots";

const FILE_PREFIX: &str = "backup-";
const FILE_SUFFIX: &str = ".tmp";

/// Why a backup command failed. `Display` is the RESP error line.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// No backup has this id on this node.
    #[error("ERR no such backup '{0}' (ended, idle for too long, or the node restarted)")]
    NoSuchBackup(String),
    /// [`MAX_BACKUPS`] are already running.
    #[error("ERR too many backups in progress on this node ({0}); try again later")]
    TooMany(usize),
    /// The read barrier failed: no leader or no quorum.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Writing or reading the backup file failed.
    #[error("ERR backup failed: {what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

impl BackupError {
    fn io(what: &'static str) -> impl FnOnce(io::Error) -> BackupError {
        move |source| BackupError::Io { what, source }
    }
}

/// What `RAFT.BACKUP BEGIN` reports about the backup it prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// The session id, for `READ` and `END`.
    pub id: String,
    /// Size of the backup in bytes.
    pub size: u64,
    /// xxh3-64 of all of its bytes.
    pub xxh3: u64,
    /// Index of the last log entry the backup includes.
    pub last_log_index: u64,
    /// Term of that entry.
    pub last_log_term: u64,
}

/// The backup sessions of one node: files in its snapshot directory.
#[derive(Debug, Clone)]
pub struct Backups {
    dir: PathBuf,
    idle_timeout: Duration,
}

impl Backups {
    /// The backups of the node whose data dir is `data_dir`, deleted after
    /// [`IDLE_TIMEOUT`] without a read.
    #[must_use]
    pub fn in_data_dir(data_dir: &Path) -> Backups {
        Backups {
            dir: data_dir.join(SNAPSHOT_DIR),
            idle_timeout: IDLE_TIMEOUT,
        }
    }

    /// The same, with another idle timeout (tests).
    #[must_use]
    pub fn with_idle_timeout(mut self, idle_timeout: Duration) -> Backups {
        self.idle_timeout = idle_timeout;
        self
    }

    /// Waits for a linearizable read barrier, then writes a snapshot of the
    /// applied state to a new backup file and reports it.
    ///
    /// # Errors
    /// [`BackupError::TooMany`], [`BackupError::Cluster`] when the barrier
    /// fails (`CLUSTERDOWN`, `TIMEOUT`), [`BackupError::Io`] when the file
    /// cannot be written.
    pub async fn begin(
        &self,
        cluster: &Cluster,
        store: Arc<Store>,
    ) -> Result<BackupInfo, BackupError> {
        let running = self.running().map_err(BackupError::io("listing backups"))?;
        if running >= MAX_BACKUPS {
            return Err(BackupError::TooMany(running));
        }
        cluster.read_barrier(false).await?;
        let id = format!("{:016x}", rand::random::<u64>());
        let path = self.path(&id);
        let written = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || write_backup(&store, &path))
                .await
                .map_err(|e| BackupError::Io {
                    what: "writing the backup",
                    source: io::Error::other(e),
                })?
        };
        let (meta, size, xxh3) = match written {
            Ok(written) => written,
            Err(source) => {
                let _ = fs::remove_file(&path);
                return Err(BackupError::Io {
                    what: "writing the backup",
                    source,
                });
            }
        };
        tokio::spawn(expire_when_idle(path, self.idle_timeout));
        let last = meta.last_log_id.as_ref();
        let info = BackupInfo {
            id,
            size,
            xxh3,
            last_log_index: last.map_or(0, |l| l.index),
            last_log_term: last.map_or(0, |l| l.leader_id.term),
        };
        tracing::info!(id = %info.id, size, index = info.last_log_index, "backup prepared");
        Ok(info)
    }

    /// Up to `count` bytes of backup `id` from `offset` (fewer at its end,
    /// none past it), and marks the backup as in use.
    ///
    /// # Errors
    /// [`BackupError::NoSuchBackup`], or [`BackupError::Io`].
    pub async fn read(&self, id: &str, offset: u64, count: u64) -> Result<Bytes, BackupError> {
        let path = self.existing(id)?;
        let count = usize::try_from(count.min(MAX_CHUNK)).unwrap_or(0);
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || {
            let file = fs::File::open(&path).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => BackupError::NoSuchBackup(id),
                _ => BackupError::Io {
                    what: "opening the backup",
                    source: e,
                },
            })?;
            // The idle watcher judges by this time.
            file.set_modified(SystemTime::now())
                .map_err(BackupError::io("touching the backup"))?;
            read_at(&file, offset, count).map_err(BackupError::io("reading the backup"))
        })
        .await
        .map_err(|e| BackupError::Io {
            what: "reading the backup",
            source: io::Error::other(e),
        })?
    }

    /// Deletes backup `id`.
    ///
    /// # Errors
    /// [`BackupError::NoSuchBackup`], or [`BackupError::Io`].
    pub fn end(&self, id: &str) -> Result<(), BackupError> {
        let path = self.existing(id)?;
        fs::remove_file(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => BackupError::NoSuchBackup(id.to_owned()),
            _ => BackupError::Io {
                what: "deleting the backup",
                source: e,
            },
        })
    }

    /// Number of backups running on this node.
    ///
    /// # Errors
    /// The snapshot directory cannot be listed.
    pub fn running(&self) -> io::Result<usize> {
        let mut n = 0;
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(FILE_PREFIX) && name.ends_with(FILE_SUFFIX) {
                n += 1;
            }
        }
        Ok(n)
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{FILE_PREFIX}{id}{FILE_SUFFIX}"))
    }

    /// The path of backup `id`; the id must look like one we hand out, so
    /// a client cannot name any other file.
    fn existing(&self, id: &str) -> Result<PathBuf, BackupError> {
        let well_formed =
            id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !well_formed {
            return Err(BackupError::NoSuchBackup(id.to_owned()));
        }
        Ok(self.path(id))
    }
}

/// Writes a backup file at `path`; returns the snapshot's metadata, the
/// file's size and its xxh3-64.
fn write_backup(store: &Store, path: &Path) -> io::Result<(SnapshotMeta, u64, u64)> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    let mut out = HashingWriter {
        inner: io::BufWriter::new(file),
        hasher: Xxh3::new(),
        written: 0,
    };
    let meta = write_snapshot(store, &mut out)?;
    out.flush()?;
    Ok((meta, out.written, out.hasher.digest()))
}

/// `pread` until `count` bytes or the end of the file.
fn read_at(file: &fs::File, offset: u64, count: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; count];
    let mut filled = 0;
    while filled < count {
        let n = file.read_at(&mut buf[filled..], offset + filled as u64)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(Bytes::from(buf))
}

/// Deletes the backup at `path` once it has gone `idle` without a read;
/// returns when it is gone (ended, or deleted here).
async fn expire_when_idle(path: PathBuf, idle: Duration) {
    loop {
        tokio::time::sleep(idle / 4).await;
        let modified = match fs::metadata(&path).and_then(|m| m.modified()) {
            Ok(modified) => modified,
            Err(_) => return,
        };
        let quiet = SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default();
        if quiet >= idle {
            tracing::warn!(path = %path.display(), ?idle, "backup abandoned; deleting it");
            let _ = fs::remove_file(&path);
            return;
        }
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: Xxh3,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let done = buf.get(..n).unwrap_or_default();
        self.hasher.update(done);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Why a data dir could not be seeded from a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The data dir exists and is not empty.
    #[error("data dir {0} is not empty; restore only seeds a new, empty data dir")]
    NotEmpty(PathBuf),
    /// The snapshot is not usable (bad trailer, bad data, covers nothing).
    #[error("the snapshot in the backup is invalid: {0}")]
    Invalid(String),
    /// `id` is not among `members`.
    #[error("--id {id} is not in --initial-cluster (ids: {ids})")]
    NotAMember {
        /// The id given.
        id: u64,
        /// The ids listed.
        ids: String,
    },
    /// The storage could not be written.
    #[error("cannot seed {path}: {what}: {source}")]
    Io {
        /// The data dir.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

/// What a snapshot covers, from its trailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// Index of the last log entry it includes.
    pub last_log_index: u64,
    /// Term of that entry.
    pub last_log_term: u64,
}

/// What [`seed_data_dir`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeededMember {
    /// Index of the last log entry the restored state includes.
    pub last_log_index: u64,
    /// Term of that entry.
    pub last_log_term: u64,
    /// Keys in the restored store.
    pub keys: u64,
}

/// Reads what the snapshot starting at `start` in `file` covers, checking
/// its trailer (not yet its data stream, which is checked on import).
///
/// # Errors
/// [`RestoreError::Invalid`] for a bad trailer or a snapshot that covers no
/// log entry.
pub fn inspect_snapshot(file: &mut fs::File, start: u64) -> Result<SnapshotSummary, RestoreError> {
    let (meta, _) =
        read_snapshot_meta(file, start).map_err(|e| RestoreError::Invalid(e.to_string()))?;
    let last = meta
        .last_log_id
        .ok_or_else(|| RestoreError::Invalid("it covers no log entry".to_owned()))?;
    Ok(SnapshotSummary {
        last_log_index: last.index,
        last_log_term: last.leader_id.term,
    })
}

/// Seeds `data_dir` (missing or empty) as member `id` of a new cluster whose
/// voters are `members` (id → peer address), holding exactly the data of
/// the snapshot that starts at `start` in `snapshot`. Blocking. On failure,
/// whatever it created is removed again.
///
/// # Errors
/// [`RestoreError::NotEmpty`], [`RestoreError::NotAMember`],
/// [`RestoreError::Invalid`] for a snapshot that fails its checks (its data
/// stream's checksum included), [`RestoreError::Io`].
pub fn seed_data_dir(
    data_dir: &Path,
    snapshot: &mut fs::File,
    start: u64,
    id: u64,
    members: &BTreeMap<u64, String>,
) -> Result<SeededMember, RestoreError> {
    if !members.contains_key(&id) {
        let ids: Vec<String> = members.keys().map(u64::to_string).collect();
        return Err(RestoreError::NotAMember {
            id,
            ids: ids.join(", "),
        });
    }
    let io_err = |what: &'static str| {
        move |source: io::Error| RestoreError::Io {
            path: data_dir.to_owned(),
            what,
            source,
        }
    };
    match fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(RestoreError::NotEmpty(data_dir.to_owned()));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("reading the data dir")(e)),
    }
    let (meta, _) =
        read_snapshot_meta(snapshot, start).map_err(|e| RestoreError::Invalid(e.to_string()))?;
    // Seed a sibling directory and rename it into place at the end, so the
    // data dir is either untouched or complete, whenever the restore stops.
    let name = data_dir
        .file_name()
        .ok_or_else(|| io_err("naming the data dir")(io::Error::other("it has no name")))?;
    let parent = match data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut staging_name = std::ffi::OsString::from(".");
    staging_name.push(name);
    staging_name.push(".restoring");
    let staging = parent.join(staging_name);
    fs::create_dir_all(&parent).map_err(io_err("creating the data dir's parent"))?;
    // A leftover of an interrupted restore into the same dir.
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_err("removing an earlier, interrupted restore"))?;
    }
    fs::create_dir(&staging).map_err(io_err("creating the staging dir"))?;
    let seeded = seed(&staging, data_dir, snapshot, start, id, members, &meta).and_then(|seeded| {
        // rename(2) replaces an empty directory atomically.
        fs::rename(&staging, data_dir).map_err(io_err("moving the restored data into place"))?;
        sync_dir(&parent).map_err(io_err("syncing the data dir's parent"))?;
        Ok(seeded)
    });
    if seeded.is_err() {
        // Everything `seed` opened is closed by now.
        let _ = fs::remove_dir_all(&staging);
    }
    seeded
}

/// Writes the seeded state into `data_dir` (the staging dir); errors name
/// `shown` (the data dir the user asked for).
fn seed(
    data_dir: &Path,
    shown: &Path,
    snapshot: &mut fs::File,
    start: u64,
    id: u64,
    members: &BTreeMap<u64, String>,
    source_meta: &SnapshotMeta,
) -> Result<SeededMember, RestoreError> {
    let io_err = |what: &'static str| {
        move |source: io::Error| RestoreError::Io {
            path: shown.to_owned(),
            what,
            source,
        }
    };
    let last = source_meta
        .last_log_id
        .ok_or_else(|| RestoreError::Invalid("it covers no log entry".to_owned()))?;
    let voters: BTreeSet<u64> = members.keys().copied().collect();
    let nodes: BTreeMap<u64, Member> = members
        .iter()
        .map(|(id, addr)| {
            (
                *id,
                Member {
                    peer_addr: addr.clone(),
                },
            )
        })
        .collect();
    let membership = openraft::Membership::new(vec![voters], nodes)
        .map_err(|e| RestoreError::Invalid(format!("membership: {e}")))?;
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::new(Some(last), membership),
    };

    // The node started on this data dir later opens it with its own
    // [storage] settings; keyspaces created here get the defaults.
    let engine = crate::storage::EngineOptions::default();
    let db = engine
        .open_database(&data_dir.join(DB_DIR))
        .map_err(|e| io_err("opening the database")(io::Error::other(e)))?;
    let store = Arc::new(
        Store::open(db.clone(), &engine)
            .map_err(|e| io_err("opening the store")(io::Error::other(e)))?,
    );
    LogStore::seed_restored(&db, &last, &Vote::new(last.leader_id.term, id))
        .map_err(io_err("seeding the raft log"))?;
    let state_machine = StateMachine::open(
        store.clone(),
        data_dir.join(SNAPSHOT_DIR),
        crate::telemetry::Telemetry::untraced(id),
    )
    .map_err(io_err("opening the snapshot directory"))?;
    state_machine
        .seed_blocking(snapshot, start, &meta)
        .map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => RestoreError::Invalid(e.to_string()),
            _ => io_err("importing the snapshot")(e),
        })?;
    let keys = store.key_count();
    drop(state_machine);
    drop(store);
    db.persist(fjall::PersistMode::SyncAll)
        .map_err(|e| io_err("syncing the database")(io::Error::other(e)))?;
    drop(db);
    sync_dir(data_dir).map_err(io_err("syncing the data dir"))?;
    Ok(SeededMember {
        last_log_index: last.index,
        last_log_term: last.leader_id.term,
        keys,
    })
}

/// Makes a directory's entries durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}
