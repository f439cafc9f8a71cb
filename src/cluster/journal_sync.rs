//! Fsyncing fjall's journal without holding its writer lock.
//!
//! `Database::persist(SyncAll)` flushes the journal's buffer and fsyncs the
//! file while holding the journal's writer lock, so every write to the
//! database (log appends on the Raft core's path, state-machine batches)
//! waits for the whole fsync. [`JournalSync::sync`] does the two halves
//! separately: `persist(Buffer)` hands the buffered bytes to the kernel under
//! the lock (a `write(2)`), then the fsync runs on this type's own handle to
//! the active journal file, with the lock free. Writes made meanwhile land in
//! the page cache and wait for the next group fsync; the ones handed over
//! before the fsync are covered by it, because fsync flushes the file's data
//! whichever descriptor asks.
//!
//! Which file is active: fjall 3 names its journals `<id>.jnl` in the
//! database directory, with ids counting up, seals the active journal with
//! a full fsync before it creates the next one (`Writer::rotate`), and
//! deletes sealed journals once their memtables are flushed. So after the
//! buffer flush, the newest `<id>.jnl` is either the file holding those
//! bytes or a successor, whose creation already made them durable. fjall
//! deletes sealed journals oldest first, so while the held journal still has
//! a name no newer one can have been deleted: if `<held+1>.jnl` does not
//! exist either, the held journal is the newest (two `stat`s per group);
//! otherwise the directory is listed to find the newest.
//! This relies on fjall's on-disk layout; the version is pinned in Cargo.toml
//! and a test below checks the layout, so an upgrade that changes it fails
//! loudly rather than silently skipping fsyncs.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use fjall::{Database, PersistMode};

/// An fsync handle on the active journal of one fjall database.
pub struct JournalSync {
    dir: PathBuf,
    /// The newest journal seen: its id and an open handle.
    active: Option<(u64, File)>,
    /// The first failed fsync, repeated from then on: after a failed fsync
    /// the kernel may have dropped the dirty pages, and a later fsync on the
    /// same file can succeed without them.
    failed: Option<String>,
}

impl JournalSync {
    /// A syncer for the database whose directory is `dir` (the one given to
    /// `Database::builder`).
    #[must_use]
    pub fn new(dir: &Path) -> Self {
        JournalSync {
            dir: dir.to_path_buf(),
            active: None,
            failed: None,
        }
    }

    /// Makes every write to `db` made before this call durable.
    ///
    /// # Errors
    /// A failed buffer flush (fjall then poisons the database) or fsync
    /// (every later call fails too: the caller must treat the writes as
    /// lost), or no journal file found in the directory.
    pub fn sync(&mut self, db: &Database) -> io::Result<()> {
        if let Some(why) = &self.failed {
            return Err(io::Error::other(format!(
                "an earlier journal fsync failed: {why}"
            )));
        }
        db.persist(PersistMode::Buffer).map_err(io::Error::other)?;
        let result = self.sync_active();
        if let Err(e) = &result {
            self.failed = Some(e.to_string());
        }
        result
    }

    /// Fsyncs the newest journal file. The directory is listed only when
    /// the held journal may no longer be the newest: fjall may have rotated
    /// more than once since the last call and deleted the journals in
    /// between, so counting up from the held id could stop short.
    fn sync_active(&mut self) -> io::Result<()> {
        if !self.held_is_newest()? {
            let newest = newest_journal(&self.dir)?;
            if !matches!(&self.active, Some((id, _)) if *id == newest) {
                // The writes handed over may still be in the journal held
                // until now, should a rotation have failed half-way (the new
                // file created, the writer still on the old one): sync it
                // once more before moving on.
                if let Some((_, previous)) = &self.active {
                    previous.sync_data()?;
                }
                let file = File::open(journal_path(&self.dir, newest))?;
                self.active = Some((newest, file));
            }
        }
        match &self.active {
            Some((_, file)) => file.sync_data(),
            None => Err(io::Error::other("no journal file open")),
        }
    }

    /// Whether the held journal is certainly still the newest: it has not
    /// been deleted (so, deletion going oldest first, no newer journal has
    /// been) and its successor (fjall numbers a rotation's new journal one
    /// up) does not exist.
    fn held_is_newest(&self) -> io::Result<bool> {
        let Some((id, file)) = &self.active else {
            return Ok(false);
        };
        if file.metadata()?.nlink() == 0 {
            return Ok(false);
        }
        match std::fs::symlink_metadata(journal_path(&self.dir, id + 1)) {
            Ok(_) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(e),
        }
    }
}

fn journal_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id}.jnl"))
}

/// The highest journal id in `dir`.
fn newest_journal(dir: &Path) -> io::Result<u64> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let id = name
            .to_str()
            .and_then(|n| n.strip_suffix(".jnl"))
            .and_then(|n| n.parse::<u64>().ok());
        newest = newest.max(id);
    }
    newest.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no fjall journal (<id>.jnl) in {}", dir.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjall::KeyspaceCreateOptions;

    /// `len` bytes that do not compress (fjall LZ4-compresses big journal
    /// entries), from a xorshift sequence.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect()
    }

    /// The layout this module relies on: writes go to the newest `<id>.jnl`
    /// and have reached it (through the kernel) once `sync` returns. (fjall
    /// preallocates journals, so the file's length says nothing.)
    #[test]
    fn sync_hands_writes_to_the_newest_journal() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        let ks = db.keyspace("k", KeyspaceCreateOptions::default).unwrap();
        let mut sync = JournalSync::new(dir.path());
        // Below fjall's 4 KiB journal compression threshold: stored as is.
        let value = noise(4000, 1);
        ks.insert("key", value.clone()).unwrap();
        sync.sync(&db).unwrap();
        let id = sync.active.as_ref().unwrap().0;
        assert_eq!(id, newest_journal(dir.path()).unwrap());
        // No rotation since: the next group skips the directory listing.
        assert!(sync.held_is_newest().unwrap());
        let journal = std::fs::read(journal_path(dir.path(), id)).unwrap();
        assert!(
            journal.windows(value.len()).any(|w| w == value.as_slice()),
            "the value is not in journal {id}"
        );
    }

    /// Syncs, makes fjall rotate its journal `rotations` times (each: past
    /// 64 MB, then a memtable flush; fjall deletes the sealed journals once
    /// flushed), writes a value and syncs again: that sync must hold the
    /// newest journal, with the value in it.
    fn sync_across_rotations(rotations: u64) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        let ks = db.keyspace("k", KeyspaceCreateOptions::default).unwrap();
        let mut sync = JournalSync::new(dir.path());
        ks.insert("a", "1").unwrap();
        sync.sync(&db).unwrap();
        let first = sync.active.as_ref().unwrap().0;
        for round in 0..rotations {
            for i in 0..17u64 {
                ks.insert(i.to_be_bytes(), noise(4 << 20, round * 100 + i + 2))
                    .unwrap();
            }
            ks.rotate_memtable_and_wait().unwrap();
        }
        assert!(
            !sync.held_is_newest().unwrap(),
            "journal {first} taken for the newest after {rotations} rotation(s)"
        );
        let value = noise(4000, 99);
        ks.insert("b", value.clone()).unwrap();
        sync.sync(&db).unwrap();
        let held = sync.active.as_ref().unwrap().0;
        assert!(
            held >= first + rotations,
            "holding journal {held} after {rotations} rotation(s) from {first}"
        );
        assert_eq!(held, newest_journal(dir.path()).unwrap());
        let journal = std::fs::read(journal_path(dir.path(), held)).unwrap();
        assert!(journal.windows(value.len()).any(|w| w == value.as_slice()));
    }

    #[test]
    fn sync_follows_a_rotation() {
        sync_across_rotations(1);
    }

    /// The journal in between is deleted by the time of the second sync.
    #[test]
    fn sync_follows_two_rotations_past_a_deleted_journal() {
        sync_across_rotations(2);
    }

    #[test]
    fn a_directory_without_journal_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = JournalSync::new(dir.path()).sync_active().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
