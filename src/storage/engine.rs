//! How this node's fjall database is opened and its keyspaces created: the
//! memory the engine may hold and how much it replays after a restart.
//!
//! A node's memory beyond its connections is mostly fjall's: the block cache
//! (`storage.cache_size_mb`, shared by every keyspace), one memtable per
//! keyspace, where writes wait until they are flushed to a table on disk
//! (`storage.memtable_size_mb` each), and every table's index and filter
//! blocks, which grow with the data (see [`EngineOptions::keyspace`]). The
//! journal holds every write that no table holds yet; a restart reads it
//! back into memtables, so small memtables also keep restarts short. fjall
//! rotates a memtable that grows past its size and flushes it in the
//! background; sealed journals are capped at [`MAX_JOURNAL_BYTES`], past
//! which fjall flushes the keyspaces that keep the oldest file alive.
//!
//! Data flows one way: the cluster layer builds [`EngineOptions`] from the
//! configuration, opens the database with [`EngineOptions::open_database`],
//! and hands the same options to [`crate::storage::Store::open`] and the
//! Raft log store, which create their keyspaces with
//! [`EngineOptions::keyspace`]; INFO reads the engine's background work
//! and cache back through [`EngineActivity`]. fjall records a keyspace's
//! memtable size and pinning when the keyspace is created: keyspaces made
//! before a change of `memtable_size_mb` (or before index and filter blocks
//! were pinned) keep theirs, except the data generation, which every
//! `FLUSHALL` and snapshot install replaces (and [`flush_memtables`] bounds
//! what any of them holds across a restart anyway).

use std::path::Path;
use std::time::{Duration, Instant};

use fjall::config::PinningPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions};

use super::StorageError;

/// Default `storage.cache_size_mb`, in bytes.
pub const DEFAULT_CACHE_SIZE_BYTES: u64 = 32 * 1024 * 1024;

/// Default `storage.memtable_size_mb`, in bytes. fjall's own default is
/// 64 MiB per keyspace, and a node has four busy ones (data, expiry index,
/// Raft log, metadata): up to 256 MiB of memtables (more while sealed ones
/// wait for their flush), over what Redis needs for a million small keys,
/// and a journal of that size to replay on restart.
pub const DEFAULT_MEMTABLE_SIZE_BYTES: u64 = 8 * 1024 * 1024;

/// Cap on the sealed journals' size on disk (fjall's minimum; its default
/// is 512 MiB). Past it, fjall flushes the keyspaces whose unflushed writes
/// keep the oldest journal file alive. The active journal comes on top (fjall
/// rotates it at a flush once it passes 64 MB), so a restart after a crash
/// may read back about twice this.
pub const MAX_JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

/// The engine's memory settings (`[storage]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// Block cache, bytes (`storage.cache_size_mb`).
    pub cache_size_bytes: u64,
    /// Largest memtable of each keyspace before it is flushed, bytes
    /// (`storage.memtable_size_mb`).
    pub memtable_size_bytes: u64,
    /// Keep the in-memory filter of stored keys (`storage.key_filter`; see
    /// `key_filter.rs`).
    pub key_filter: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            cache_size_bytes: DEFAULT_CACHE_SIZE_BYTES,
            memtable_size_bytes: DEFAULT_MEMTABLE_SIZE_BYTES,
            key_filter: true,
        }
    }
}

impl EngineOptions {
    /// Opens (or creates) the fjall database in `dir` with this block cache
    /// and the journal cap.
    ///
    /// # Errors
    /// Any fjall error (an unreadable or locked directory, a corrupt journal).
    pub fn open_database(&self, dir: &Path) -> Result<Database, StorageError> {
        Ok(Database::builder(dir)
            .cache_size(self.cache_size_bytes)
            .max_journaling_size(MAX_JOURNAL_BYTES)
            .open()?)
    }

    /// Options for a keyspace created now: this memtable size, every
    /// table's index and filter blocks held in memory, fjall's defaults
    /// otherwise.
    ///
    /// fjall pins index blocks only in levels 0 and 1 and filter blocks
    /// only in level 0; deeper tables' go through the block cache with the
    /// data blocks. With 10M keys and the 32 MiB cache, random reads then
    /// pushed them out all the time, and each point read (every GET, and the
    /// apply's read of each written key's previous value) loaded and
    /// checksummed a table's whole index and filter block again: about 1k
    /// GET/s and 800 SET/s on one node, against 20-29k and 14-21k with
    /// them pinned (benches/RESULTS.md, "Eighth session"). Pinned, they
    /// cost memory that grows with the data (a bloom filter's bits per key
    /// and an index entry per 4 KiB data block), as RocksDB's default of
    /// keeping them with each open table does.
    #[must_use]
    pub fn keyspace(&self) -> KeyspaceCreateOptions {
        KeyspaceCreateOptions::default()
            .max_memtable_size(self.memtable_size_bytes)
            .index_block_pinning_policy(PinningPolicy::all(true))
            .filter_block_pinning_policy(PinningPolicy::all(true))
    }
}

/// Sealed memtables waiting for their flush at which a write to a keyspace
/// may be made to wait (fjall sleeps writers while 4 or more are sealed).
const SEALED_MEMTABLES_STALL: usize = 2;
/// Level-0 tables at which a write may be made to wait (fjall stalls
/// writers from 20).
const L0_TABLES_STALL: usize = 16;

/// Whether a write to `keyspace` may block for a while now (fjall's
/// backpressure while flushes or compactions lag): callers that write on an
/// async runtime's thread move such a write to a blocking thread.
#[must_use]
pub fn write_may_stall(keyspace: &Keyspace) -> bool {
    keyspace.sealed_memtable_count() >= SEALED_MEMTABLES_STALL
        || keyspace.l0_table_count() >= L0_TABLES_STALL
}

/// Flushes every keyspace's memtable of `db` to tables on disk and waits
/// for the flushes, at most until `deadline`, so that the next open has
/// nothing in the journal to read back into memory: a node stopping cleanly
/// calls this once nothing writes any more. Returns whether everything was
/// flushed in time. Whatever is not flushed stays in the journal, so
/// nothing is lost either way: the next start replays it.
///
/// # Errors
/// Any fjall error while rotating a memtable.
pub fn flush_memtables(db: &Database, deadline: Instant) -> Result<bool, StorageError> {
    let mut keyspaces = Vec::new();
    for name in db.list_keyspace_names() {
        let keyspace = db.keyspace(&name, KeyspaceCreateOptions::default)?;
        keyspace.rotate_memtable()?;
        keyspaces.push(keyspace);
    }
    // A flush that fails (a full disk) is retried by fjall's workers
    // forever: poll with a deadline rather than wait for it.
    while keyspaces.iter().any(|k| k.sealed_memtable_count() > 0) {
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(FLUSH_POLL);
    }
    Ok(true)
}

/// What the engine is doing in the background and what its block cache
/// holds: INFO's `storage_*` fields. A bulk load leaves flushes and
/// compactions behind it for a while (minutes for millions of keys), and
/// they compete with requests for the cores; these say when that is over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineActivity {
    /// Compactions running now.
    pub compactions_running: u64,
    /// Sealed memtables waiting for their flush to a table.
    pub flushes_pending: u64,
    /// Compactions finished since the node started.
    pub compactions_completed: u64,
    /// Time spent compacting since the node started, milliseconds.
    pub compaction_time_ms: u64,
    /// Bytes the block cache holds now.
    pub block_cache_used_bytes: u64,
    /// The block cache's capacity, bytes (`storage.cache_size_mb`).
    pub block_cache_capacity_bytes: u64,
}

impl EngineActivity {
    /// Reads `db`'s counters now; each is a snapshot of a counter fjall
    /// keeps, so the call costs no I/O. fjall marks these accessors
    /// experimental (hidden from its docs); the pinned fjall version keeps
    /// them stable for us, and the unit test below notices if they stop
    /// counting.
    #[must_use]
    pub fn of(db: &Database) -> EngineActivity {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        EngineActivity {
            compactions_running: count(db.active_compactions()),
            flushes_pending: count(db.outstanding_flushes()),
            compactions_completed: count(db.compactions_completed()),
            compaction_time_ms: u64::try_from(db.time_compacting().as_millis()).unwrap_or(u64::MAX),
            block_cache_used_bytes: db.cache_size(),
            block_cache_capacity_bytes: db.cache_capacity(),
        }
    }
}

/// How often [`flush_memtables`] checks whether the flushes are done.
const FLUSH_POLL: Duration = Duration::from_millis(5);

#[cfg(test)]
mod tests {
    use super::*;

    /// A database in a temp dir with a 1 MiB block cache and memtables of
    /// `memtable_size_bytes`.
    fn small_database(memtable_size_bytes: u64) -> (tempfile::TempDir, EngineOptions, Database) {
        let dir = tempfile::tempdir().unwrap();
        let options = EngineOptions {
            cache_size_bytes: 1024 * 1024,
            memtable_size_bytes,
            key_filter: true,
        };
        let db = options.open_database(dir.path()).unwrap();
        (dir, options, db)
    }

    #[test]
    fn activity_counts_flushes_compactions_and_the_block_cache() {
        let (_dir, options, db) = small_database(256 * 1024);
        let idle = EngineActivity::of(&db);
        assert_eq!(idle.block_cache_capacity_bytes, 1024 * 1024);
        assert_eq!(
            (idle.compactions_running, idle.flushes_pending),
            (0, 0),
            "{idle:?}"
        );
        assert_eq!(idle.compactions_completed, 0, "{idle:?}");
        let keyspace = db.keyspace("k", || options.keyspace()).unwrap();
        // 4 MiB through a 256 KiB memtable: about sixteen tables in level
        // 0, which fjall compacts into level 1 on its own.
        for i in 0..4096u32 {
            keyspace.insert(i.to_be_bytes(), vec![7u8; 1024]).unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let now = EngineActivity::of(&db);
            if now.compactions_completed > 0
                && now.compactions_running == 0
                && now.flushes_pending == 0
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no compaction finished: {now:?}"
            );
            std::thread::sleep(FLUSH_POLL);
        }
        // Reading a flushed key brings its data block into the cache.
        keyspace.rotate_memtable_and_wait().unwrap();
        assert!(keyspace.get(7u32.to_be_bytes()).unwrap().is_some());
        let read = EngineActivity::of(&db);
        assert!(read.block_cache_used_bytes > 0, "{read:?}");
    }

    #[test]
    fn keyspaces_take_the_memtable_size_and_flushes_empty_the_journal() {
        let (dir, options, db) = small_database(1024 * 1024);
        assert_eq!(db.cache_capacity(), 1024 * 1024);
        let keyspace = db.keyspace("k", || options.keyspace()).unwrap();
        // 4 MiB through a 1 MiB memtable: fjall rotates and flushes it on
        // its own, so the unflushed bytes stay near the memtable size.
        for i in 0..4096u32 {
            keyspace.insert(i.to_be_bytes(), vec![7u8; 1024]).unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while db.write_buffer_size() > 2 * 1024 * 1024 {
            assert!(
                std::time::Instant::now() < deadline,
                "memtables never flushed: {} bytes",
                db.write_buffer_size()
            );
            std::thread::yield_now();
        }
        assert!(keyspace.table_count() > 0);

        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        assert!(flush_memtables(&db, deadline).unwrap());
        // fjall drops a flushed memtable from the sealed list a moment
        // before it takes its bytes off the write-buffer count (a loaded CI
        // machine saw one memtable's worth still counted).
        while db.write_buffer_size() != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "everything is in tables: {} bytes still in memtables",
                db.write_buffer_size()
            );
            std::thread::sleep(FLUSH_POLL);
        }
        drop(keyspace);
        drop(db);
        let db = options.open_database(dir.path()).unwrap();
        assert_eq!(
            db.write_buffer_size(),
            0,
            "nothing read back from the journal"
        );
        let keyspace = db.keyspace("k", || options.keyspace()).unwrap();
        assert_eq!(keyspace.len().unwrap(), 4096);
    }

    /// Every level's index and filter blocks stay in memory (see
    /// [`EngineOptions::keyspace`]); fjall records the policy with the
    /// keyspace, so a reopened one keeps it.
    #[test]
    fn keyspaces_pin_index_and_filter_blocks_on_every_level() {
        // A policy lists levels from 0; its last entry holds for the rest.
        let options = EngineOptions::default().keyspace();
        for policy in [
            &options.index_block_pinning_policy,
            &options.filter_block_pinning_policy,
        ] {
            assert!(!policy.is_empty() && policy.iter().all(|&pinned| pinned));
        }
    }
}
