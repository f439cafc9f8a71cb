//! The local applied state: user keys and values on fjall, and the
//! state-machine metadata the cluster layer keeps beside them.
//!
//! Data flows in two directions. Writes arrive only as committed Raft
//! entries: the cluster layer opens an [`ApplyBatch`] with [`Store::begin`],
//! applies each entry's `Op` (later ops see earlier ones through the batch's
//! in-memory overlay), adds its own metadata (last applied log id,
//! membership) with [`ApplyBatch::put_meta`], and commits everything as one
//! atomic fjall write batch. Reads come from command handlers after the read
//! barrier, through the methods in `read.rs`, with the node's clock only to
//! hide expired keys.
//!
//! Layout in the node's one fjall database (the Raft log shares it, in its
//! own keyspaces):
//! - `sm_meta`: the caller's metadata under `m/`, and this layer's own state
//!   under `s/`: which data generation is current, its key count and its
//!   count of keys with an expiry (kept in every batch, so DBSIZE and INFO
//!   keyspace are O(1)).
//! - `data_<gen>`: the current generation's keys and values, and
//!   `data_<gen>_ttl`: its expiry index (see `encoding.rs`).
//!
//! Generations make FLUSHALL and snapshot installation cheap and atomic:
//! both build or create a fresh generation, then switch the `s/gen` pointer
//! in one batch with the rest of the metadata, and only then drop the old
//! keyspaces. A crash before the switch leaves the old generation current,
//! and [`Store::open`] deletes any generation the pointer does not name.
//!
//! Writers are serialized (one open [`ApplyBatch`] or import at a time);
//! readers never wait for them. The writer alone keeps an in-memory filter
//! of the current generation's keys (`key_filter.rs`), so that an op on a
//! key the store certainly lacks skips the point read of its previous
//! state.

mod apply;
mod encoding;
mod engine;
mod error;
mod expiry;
mod glob;
mod key_filter;
mod number;
mod read;
mod snapshot;
mod stats;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use fjall::{Database, Keyspace, KeyspaceCreateOptions};

pub use apply::{ApplyBatch, MAX_STRING_LEN};
pub use encoding::Kind;
pub use engine::{write_may_stall, EngineActivity, EngineOptions};
pub use error::StorageError;
pub use glob::glob_match;
pub use number::parse_i64;
pub use read::{Entry, ScanOptions, Value};
pub use stats::UsageStats;

/// Longest user key that can be stored: fjall keys hold at most 65535
/// bytes, and data and expiry-index keys put 8 bytes in front of the user
/// key.
pub const MAX_KEY_LEN: usize = u16::MAX as usize - encoding::HASH_LEN;

/// The caller's metadata as (key, value) pairs, as [`Store::export`] returns
/// and [`Store::import`] takes them.
pub type MetaPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Name of the metadata keyspace.
const META_KEYSPACE: &str = "sm_meta";
/// Prefix of the caller's metadata keys inside `sm_meta`.
const CALLER_META: &[u8] = b"m/";
/// The current generation id (u64 big-endian).
const GENERATION_KEY: &[u8] = b"s/gen";
/// The current generation's key count (u64 big-endian).
const COUNT_KEY: &[u8] = b"s/count";
/// The current generation's count of keys with an expiry (u64 big-endian).
const EXPIRES_KEY: &[u8] = b"s/expires";
/// Prefix of data generation keyspace names.
const GENERATION_PREFIX: &str = "data_";
/// Suffix of a generation's expiry index keyspace name.
const EXPIRY_SUFFIX: &str = "_ttl";

/// One generation of user data: its values and its expiry index.
#[derive(Clone)]
struct Generation {
    id: u64,
    data: Keyspace,
    expiry: Keyspace,
}

/// The local applied key-value state, shared by the state machine (the only
/// writer) and every reader.
pub struct Store {
    db: Database,
    meta: Keyspace,
    current: RwLock<Arc<Generation>>,
    key_count: AtomicU64,
    expires_count: AtomicU64,
    next_generation: AtomicU64,
    writer: WriterSlot,
    usage: stats::UsageCounters,
    /// How new generations' keyspaces are created.
    engine: EngineOptions,
    /// Which keys the current generation certainly lacks; the writer's.
    key_filter: Arc<key_filter::KeyFilter>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("generation", &self.current().id)
            .field("key_count", &self.key_count())
            .field("expires_count", &self.expires_count())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store's keyspaces in `db` (creating them on first use,
    /// with `engine`'s memtable size) and deletes data generations left
    /// behind by an interrupted flush or snapshot install.
    ///
    /// # Errors
    /// Any fjall error, or [`StorageError::Corrupt`] if the metadata does not
    /// decode.
    pub fn open(db: Database, engine: &EngineOptions) -> Result<Store, StorageError> {
        let meta = db.keyspace(META_KEYSPACE, || engine.keyspace())?;
        let existing: Vec<(u64, String)> = db
            .list_keyspace_names()
            .iter()
            .filter_map(|name| parse_generation_name(name).map(|id| (id, name.to_string())))
            .collect();
        let highest = existing.iter().map(|(id, _)| *id).max().unwrap_or(0);

        let (current, key_count, expires_count) = match meta.get(GENERATION_KEY)? {
            Some(raw) => {
                let id = decode_u64(&raw, "generation pointer")?;
                let count = match meta.get(COUNT_KEY)? {
                    Some(raw) => decode_u64(&raw, "key count")?,
                    None => 0,
                };
                let generation = open_generation(&db, engine, id)?;
                let expires = match meta.get(EXPIRES_KEY)? {
                    Some(raw) => decode_u64(&raw, "expires count")?,
                    None => {
                        // Written by a version that did not keep this count:
                        // derive it once from the expiry index, which holds
                        // exactly one entry per key with an expiry.
                        let expires = generation.expiry.len()? as u64;
                        meta.insert(EXPIRES_KEY, expires.to_be_bytes())?;
                        expires
                    }
                };
                (generation, count, expires)
            }
            None => {
                // First open: any generation keyspaces are leftovers of a
                // crash before the very first pointer write.
                let generation = open_generation(&db, engine, highest + 1)?;
                let mut batch = db.batch();
                batch.insert(&meta, GENERATION_KEY, generation.id.to_be_bytes());
                batch.insert(&meta, COUNT_KEY, 0u64.to_be_bytes());
                batch.insert(&meta, EXPIRES_KEY, 0u64.to_be_bytes());
                batch.commit()?;
                (generation, 0, 0)
            }
        };

        for (id, name) in &existing {
            if *id != current.id {
                tracing::info!(keyspace = %name, "dropping orphaned data generation");
                let keyspace = db.keyspace(name, KeyspaceCreateOptions::default)?;
                db.delete_keyspace(keyspace)?;
            }
        }

        let key_filter = Arc::new(key_filter::KeyFilter::default());
        if engine.key_filter {
            // No writer exists yet: the snapshot falls between two batches.
            key_filter.rebuild(current.data.clone(), db.snapshot(), key_count);
        }
        Ok(Store {
            next_generation: AtomicU64::new(highest.max(current.id) + 1),
            db,
            meta,
            current: RwLock::new(Arc::new(current)),
            key_count: AtomicU64::new(key_count),
            expires_count: AtomicU64::new(expires_count),
            writer: WriterSlot::default(),
            usage: stats::UsageCounters::default(),
            engine: *engine,
            key_filter,
        })
    }

    /// Bytes of memory the key filter takes (see `key_filter.rs`): about 5
    /// to 7 per key; 0 while it is being built.
    #[must_use]
    pub fn key_filter_bytes(&self) -> u64 {
        u64::try_from(self.key_filter.memory_bytes()).unwrap_or(u64::MAX)
    }

    /// Starts applying a group of committed entries. Only one batch (or
    /// import) is open at a time: this waits for the previous one to finish.
    #[must_use]
    pub fn begin(&self) -> ApplyBatch<'_> {
        ApplyBatch::new(self, self.writer.acquire())
    }

    /// Reads one of the caller's metadata values (written with
    /// [`ApplyBatch::put_meta`] or installed by [`Store::import`]).
    ///
    /// # Errors
    /// Any fjall error.
    pub fn meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.meta.get(caller_meta_key(key))?.map(|v| v.to_vec()))
    }

    /// Number of keys stored, expired ones not yet deleted included (as
    /// Redis's DBSIZE). O(1).
    #[must_use]
    pub fn key_count(&self) -> u64 {
        self.key_count.load(Ordering::Acquire)
    }

    /// Number of stored keys with an expiry, expired ones not yet deleted
    /// included (as the `expires` of Redis's INFO keyspace). O(1).
    #[must_use]
    pub fn expires_count(&self) -> u64 {
        self.expires_count.load(Ordering::Acquire)
    }

    /// This node's keyspace hits and misses and applied expiry deletions
    /// since it started or since [`Store::reset_usage_stats`].
    #[must_use]
    pub fn usage_stats(&self) -> UsageStats {
        self.usage.snapshot()
    }

    /// Zeroes the usage counters (`CONFIG RESETSTAT`).
    pub fn reset_usage_stats(&self) {
        self.usage.reset();
    }

    /// Flushes the memtables of the whole database (the Raft log's
    /// keyspaces too) to disk, waiting at most until `deadline`; returns
    /// whether all of it was flushed in time. Called by a node that stops
    /// cleanly, once Raft has stopped writing, so its next start reads
    /// nothing back from the journal (see `engine.rs`).
    ///
    /// # Errors
    /// Any fjall error while rotating a memtable.
    pub fn flush_memtables(&self, deadline: std::time::Instant) -> Result<bool, StorageError> {
        engine::flush_memtables(&self.db, deadline)
    }

    /// Whether an apply batch written now may block for a while (see
    /// [`write_may_stall`]).
    #[must_use]
    pub fn write_may_stall(&self) -> bool {
        let generation = self.current();
        engine::write_may_stall(&generation.data)
            || engine::write_may_stall(&generation.expiry)
            || engine::write_may_stall(&self.meta)
    }

    fn current(&self) -> Arc<Generation> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Creates the keyspaces of a new, empty generation that nothing points
    /// to yet.
    fn create_generation(&self) -> Result<Generation, StorageError> {
        let id = self.next_generation.fetch_add(1, Ordering::AcqRel);
        open_generation(&self.db, &self.engine, id)
    }

    /// Makes `generation` current in memory (after its pointer has been
    /// committed), with its counts, and drops the one it replaces.
    fn switch_to(&self, generation: Generation, key_count: u64, expires_count: u64) {
        let new = Arc::new(generation);
        let old = {
            let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
            std::mem::replace(&mut *current, new)
        };
        self.key_count.store(key_count, Ordering::Release);
        self.expires_count.store(expires_count, Ordering::Release);
        self.drop_generation(&old);
    }

    /// Deletes a generation's keyspaces. Readers still holding it keep
    /// reading until they let go (fjall removes the files afterwards). A
    /// failure only leaves an orphan for the next open to remove.
    fn drop_generation(&self, generation: &Generation) {
        for keyspace in [&generation.data, &generation.expiry] {
            if let Err(error) = self.db.delete_keyspace(keyspace.clone()) {
                tracing::warn!(generation = generation.id, %error, "could not drop data generation");
            }
        }
    }
}

fn generation_names(id: u64) -> (String, String) {
    let data = format!("{GENERATION_PREFIX}{id}");
    let expiry = format!("{data}{EXPIRY_SUFFIX}");
    (data, expiry)
}

fn parse_generation_name(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(GENERATION_PREFIX)?;
    let digits = rest.strip_suffix(EXPIRY_SUFFIX).unwrap_or(rest);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn open_generation(
    db: &Database,
    engine: &EngineOptions,
    id: u64,
) -> Result<Generation, StorageError> {
    let (data_name, expiry_name) = generation_names(id);
    Ok(Generation {
        id,
        data: db.keyspace(&data_name, || engine.keyspace())?,
        expiry: db.keyspace(&expiry_name, || engine.keyspace())?,
    })
}

fn caller_meta_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CALLER_META.len() + key.len());
    out.extend_from_slice(CALLER_META);
    out.extend_from_slice(key);
    out
}

fn decode_u64(raw: &[u8], what: &'static str) -> Result<u64, StorageError> {
    let bytes: [u8; 8] = raw.try_into().map_err(|_| StorageError::Corrupt(what))?;
    Ok(u64::from_be_bytes(bytes))
}

impl Drop for Store {
    fn drop(&mut self) {
        // The key filter's build holds a snapshot and a keyspace of this
        // database: gone with the store, so the directory can be opened
        // again at once (a node restarted in the same process).
        self.key_filter.stop_build();
    }
}

/// Serializes writers. A flag rather than a mutex so the guard is `Send`:
/// the state machine may hold a batch across an `.await` while it collects
/// entries. Writers come one at a time from openraft, so waiting here is a
/// safety net, not a contention point.
#[derive(Default)]
struct WriterSlot {
    busy: AtomicBool,
}

/// Proof that this writer holds the [`WriterSlot`]; releases it on drop.
struct WriterGuard<'a> {
    slot: &'a WriterSlot,
}

impl WriterSlot {
    fn acquire(&self) -> WriterGuard<'_> {
        while self
            .busy
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::thread::yield_now();
        }
        WriterGuard { slot: self }
    }
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        self.slot.busy.store(false, Ordering::Release);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cluster::op::{Deadline, SetCondition, SetExpiry};
    use crate::cluster::Op;
    use bytes::Bytes;

    pub(crate) fn open_store(dir: &std::path::Path) -> Store {
        let engine = EngineOptions::default();
        Store::open(engine.open_database(dir).unwrap(), &engine).unwrap()
    }

    pub(crate) fn set(store: &Store, key: &str, value: &str) {
        let mut batch = store.begin();
        batch
            .apply(
                &Op::MSet(vec![(
                    Bytes::from(key.to_owned()),
                    Bytes::from(value.to_owned()),
                )]),
                1_000,
            )
            .unwrap();
        batch.commit().unwrap();
    }

    fn data_generations(store: &Store) -> Vec<String> {
        let mut names: Vec<String> = store
            .db
            .list_keyspace_names()
            .iter()
            .map(ToString::to_string)
            .filter(|n| n.starts_with(GENERATION_PREFIX))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn handles_cross_threads_and_awaits() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Store>();
        send::<ApplyBatch<'static>>();
    }

    #[test]
    fn generation_names_parse_back() {
        assert_eq!(parse_generation_name("data_7"), Some(7));
        assert_eq!(parse_generation_name("data_7_ttl"), Some(7));
        assert_eq!(parse_generation_name("data_"), None);
        assert_eq!(parse_generation_name("data_x"), None);
        assert_eq!(parse_generation_name("raft_log"), None);
    }

    /// A store dropped while its key filter is still being built lets go
    /// of the database: the same directory opens again at once (fjall locks
    /// it while any handle lives), as a node restarted in one process does.
    #[test]
    fn reopens_at_once_while_its_key_filter_builds() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_store(dir.path());
            let mut batch = store.begin();
            let pairs = (0..100_000)
                .map(|i| (Bytes::from(format!("key{i}")), Bytes::from_static(b"v")))
                .collect();
            batch.apply(&Op::MSet(pairs), 1_000).unwrap();
            batch.commit().unwrap();
            // In tables: the reopened stores' builds scan them from disk.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            assert!(store.flush_memtables(deadline).unwrap());
        }
        for _ in 0..2 {
            // Dropped at once: its build (100k keys) has barely begun.
            let store = open_store(dir.path());
            assert_eq!(store.key_count(), 100_000);
        }
        let store = open_store(dir.path());
        assert!(store
            .key_filter
            .wait_built(std::time::Duration::from_secs(30)));
        assert!(!store
            .key_filter
            .certainly_absent(encoding::key_hash(b"key7")));
    }

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_store(dir.path());
            set(&store, "a", "1");
            set(&store, "b", "2");
            let mut batch = store.begin();
            batch.put_meta(b"last_applied", b"42".to_vec());
            batch.commit().unwrap();
            assert_eq!(store.key_count(), 2);
        }
        let store = open_store(dir.path());
        assert_eq!(store.key_count(), 2);
        assert_eq!(store.meta(b"last_applied").unwrap(), Some(b"42".to_vec()));
        assert_eq!(store.meta(b"other").unwrap(), None);
        assert_eq!(
            store.get(b"a", 0).unwrap().unwrap().payload,
            Bytes::from_static(b"1")
        );
    }

    #[test]
    fn expires_count_survives_reopen_and_is_derived_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_store(dir.path());
            let mut batch = store.begin();
            for (key, ttl) in [("a", Some(1_000)), ("b", None), ("c", Some(2_000))] {
                let op = Op::Set {
                    key: Bytes::from(key),
                    value: Bytes::from("v"),
                    condition: SetCondition::Always,
                    expiry: ttl.map_or(SetExpiry::Clear, |ms| SetExpiry::Set(Deadline::After(ms))),
                    get: false,
                };
                batch.apply(&op, 1_000).unwrap();
            }
            batch.commit().unwrap();
            assert_eq!(store.expires_count(), 2);
        }
        {
            let store = open_store(dir.path());
            assert_eq!(store.expires_count(), 2);
            assert_eq!(store.key_count(), 3);
            // As left by a version that did not keep the count.
            store.meta.remove(EXPIRES_KEY).unwrap();
        }
        let store = open_store(dir.path());
        assert_eq!(store.expires_count(), 2, "derived from the expiry index");
        assert_eq!(
            store.meta.get(EXPIRES_KEY).unwrap().as_deref(),
            Some(&2u64.to_be_bytes()[..]),
            "and persisted"
        );
    }

    #[test]
    fn flush_switches_generation_and_orphans_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_store(dir.path());
            set(&store, "a", "1");
            let before = store.current().id;
            let mut batch = store.begin();
            batch.apply(&Op::FlushAll, 2_000).unwrap();
            batch.commit().unwrap();
            assert_ne!(store.current().id, before);
            assert_eq!(store.key_count(), 0);
            assert!(store.get(b"a", 0).unwrap().is_none());
            assert_eq!(
                data_generations(&store).len(),
                2,
                "{:?}",
                data_generations(&store)
            );

            // A generation created but never switched to (a crash mid-flush
            // or mid-import) is an orphan.
            let orphan = store.create_generation().unwrap();
            orphan.data.insert("x", "y").unwrap();
            assert_eq!(data_generations(&store).len(), 4);
        }
        let store = open_store(dir.path());
        let current = store.current().id;
        let (data, expiry) = generation_names(current);
        assert_eq!(data_generations(&store), vec![data, expiry]);
        assert_eq!(store.key_count(), 0);
        set(&store, "b", "2");
        assert_eq!(store.key_count(), 1);
    }
}
