//! Which keys the current generation certainly does not hold, from memory.
//!
//! Every write's apply needs the key's previous state (was it there, with
//! which expiry) for the exact key count and the expiry index. In an LSM
//! tree that is a point read: a memtable skiplist search and a filter and
//! index lookup per table, up to a third of a pipelined write's CPU (see
//! benches/RESULTS.md). [`KeyFilter`] answers "certainly absent" for a key
//! the store does not have without touching fjall.
//!
//! It holds a multiset of 32-bit fingerprints (the top half of the key hash
//! that already prefixes every data key), one per stored key, in
//! open-addressing tables: 256 shards that each grow on their own, so a
//! resize never stalls an apply for long; about 5 to 7 bytes per key. A key
//! whose fingerprint is missing is absent; a key whose fingerprint is
//! present is probably there (another key may share it: about one in 430
//! with 10M keys) and is read from fjall as before. Deleting a key removes one copy
//! of its fingerprint, so the multiset always equals the fingerprints of
//! the stored keys and there are never false "absent" answers.
//!
//! Data flow: only the store's writer touches the filter (the apply batch
//! asks it before a point read and hands it the keys a batch created and
//! deleted once the batch is committed; FLUSHALL empties it). At open and
//! after a snapshot install it is built on a thread from a fjall snapshot
//! taken between two batches; the batches committed meanwhile queue their
//! changes, which the build replays before the filter is used. Until then,
//! and for good if a build fails, every key is read.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use fjall::{Keyspace, Readable, Snapshot};

use super::encoding::HASH_LEN;
use super::StorageError;

/// The fingerprint of a data key's hash (the top half; never 0, which
/// marks an empty slot).
#[must_use]
pub(super) fn fingerprint(hash: u64) -> u32 {
    match (hash >> 32) as u32 {
        0 => 1,
        f => f,
    }
}

/// The fingerprint of a stored data key, from its hash prefix.
///
/// # Errors
/// [`StorageError::Corrupt`] for a key too short to hold a hash.
pub(super) fn data_key_fingerprint(data_key: &[u8]) -> Result<u32, StorageError> {
    let prefix: [u8; HASH_LEN] = data_key
        .get(..HASH_LEN)
        .and_then(|p| p.try_into().ok())
        .ok_or(StorageError::Corrupt("data key shorter than its hash"))?;
    Ok(fingerprint(u64::from_be_bytes(prefix)))
}

/// A key whose presence a committed batch changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    Created(u32),
    Deleted(u32),
}

/// The filter of the current generation's keys (see the module docs).
#[derive(Default)]
pub(super) struct KeyFilter {
    state: Mutex<FilterState>,
    /// Signalled when the state leaves `Building` (tests wait on it).
    built: Condvar,
    /// The running build's thread, if any.
    builder: Mutex<Option<Builder>>,
}

/// A build's thread, and the flag that asks it to give up.
struct Builder {
    cancel: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

#[derive(Default)]
enum FilterState {
    /// Not usable, and no build running: after a failed build, or before
    /// the first one starts.
    #[default]
    Off,
    /// A build of build number `build` runs; the changes committed since
    /// its snapshot wait here, in order.
    Building {
        build: u64,
        pending: Vec<Change>,
    },
    Ready(FingerprintSet),
}

impl KeyFilter {
    fn state(&self) -> std::sync::MutexGuard<'_, FilterState> {
        // Every update below leaves the state whole before it can panic
        // (allocation aside), so a poisoned lock's state is usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the key with data-key hash `hash` is certainly absent.
    /// `false` means "read it": present, or not known.
    pub(super) fn certainly_absent(&self, hash: u64) -> bool {
        match &*self.state() {
            FilterState::Ready(set) => !set.contains(fingerprint(hash)),
            _ => false,
        }
    }

    /// Records the presence changes of a committed batch.
    pub(super) fn record(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        match &mut *self.state() {
            FilterState::Ready(set) => set.apply(changes),
            FilterState::Building { pending, .. } => pending.extend_from_slice(changes),
            FilterState::Off => {}
        }
    }

    /// The generation changed to an empty one (FLUSHALL): nothing is stored.
    /// A build of the old generation still running is told to stop (its
    /// result would be dropped anyway).
    pub(super) fn reset_empty(&self) {
        *self.state() = FilterState::Ready(FingerprintSet::default());
        self.built.notify_all();
        // Its scan is of no use now; the thread is joined by the next
        // rebuild or the store's end, not here, in the middle of an apply.
        if let Some(builder) = &*self.builder.lock().unwrap_or_else(PoisonError::into_inner) {
            builder.cancel.store(true, Ordering::Relaxed);
        }
    }

    /// Starts building the filter of `data` as `snapshot` sees it, on a
    /// thread. The caller holds the store's writer, so the snapshot falls
    /// between two batches; `expected` is the key count, to size the table.
    /// A thread that cannot start leaves the filter off (every key read).
    pub(super) fn rebuild(self: &Arc<Self>, data: Keyspace, snapshot: Snapshot, expected: u64) {
        self.stop_build();
        let build = NEXT_BUILD.fetch_add(1, Ordering::Relaxed);
        *self.state() = FilterState::Building {
            build,
            pending: Vec::new(),
        };
        let filter = Arc::clone(self);
        let cancel = Arc::new(AtomicBool::new(false));
        let cancelled = Arc::clone(&cancel);
        let spawned = std::thread::Builder::new()
            .name("raftis-keyfilter".into())
            .spawn(move || {
                let result = scan(&data, &snapshot, expected, &cancelled);
                // The snapshot and the keyspace go before the thread ends:
                // whoever joins it knows the database is no longer held.
                drop((snapshot, data));
                let set = match result {
                    Ok(set) => set,
                    Err(error) => {
                        tracing::warn!(%error, "the key filter's build failed; every write reads its key");
                        None
                    }
                };
                filter.finish(build, set);
            });
        match spawned {
            Ok(thread) => {
                *self.builder.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(Builder { cancel, thread });
            }
            Err(error) => {
                tracing::warn!(%error, "cannot start the key filter's build; every write reads its key");
                self.finish(build, None);
            }
        }
    }

    /// Stops a running build and waits for its thread (a few thousand keys
    /// at most), so that nothing of the store's database is held past the
    /// store's end, nor scanned for a generation that was replaced.
    pub(super) fn stop_build(&self) {
        let builder = self
            .builder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(builder) = builder {
            builder.cancel.store(true, Ordering::Relaxed);
            if builder.thread.join().is_err() {
                tracing::error!("the key filter's build thread panicked");
            }
        }
    }

    /// Ends build `build` with its table (`None`: it failed, and the filter
    /// stays off): replays the changes that waited and makes the filter
    /// usable, unless the state moved on since (a FLUSHALL, a newer build).
    fn finish(&self, build: u64, result: Option<FingerprintSet>) {
        let mut state = self.state();
        let FilterState::Building {
            build: current,
            pending,
        } = &mut *state
        else {
            return;
        };
        if *current != build {
            return;
        }
        *state = match result {
            Some(mut set) => {
                set.apply(pending);
                FilterState::Ready(set)
            }
            None => FilterState::Off,
        };
        drop(state);
        self.built.notify_all();
    }

    /// Waits up to `timeout` for a running build to end; returns whether
    /// the filter is usable. For tests.
    #[cfg(test)]
    pub(super) fn wait_built(&self, timeout: std::time::Duration) -> bool {
        let state = self.state();
        let (state, _) = self
            .built
            .wait_timeout_while(state, timeout, |s| {
                matches!(s, FilterState::Building { .. })
            })
            .unwrap_or_else(PoisonError::into_inner);
        matches!(*state, FilterState::Ready(_))
    }

    /// How many fingerprints it holds, when usable. For tests.
    #[cfg(test)]
    pub(super) fn len(&self) -> Option<usize> {
        match &*self.state() {
            FilterState::Ready(set) => Some(set.len),
            _ => None,
        }
    }

    /// Bytes the filter's table takes (0 while not usable).
    #[must_use]
    pub(super) fn memory_bytes(&self) -> usize {
        match &*self.state() {
            FilterState::Ready(set) => set.memory_bytes(),
            _ => 0,
        }
    }
}

/// Build numbers: unique per process, so a build's result is never taken
/// for another's.
static NEXT_BUILD: AtomicU64 = AtomicU64::new(1);

/// How many keys a build scans between two looks at its cancel flag.
const CANCEL_CHECK_EVERY: usize = 4096;

/// The fingerprints of every key of `data` in `snapshot`; `None` if
/// `cancel` was raised meanwhile.
fn scan(
    data: &Keyspace,
    snapshot: &Snapshot,
    expected: u64,
    cancel: &AtomicBool,
) -> Result<Option<FingerprintSet>, StorageError> {
    let started = std::time::Instant::now();
    let mut set = FingerprintSet::with_expected(usize::try_from(expected).unwrap_or(usize::MAX));
    for (scanned, item) in snapshot.iter(data).enumerate() {
        if scanned % CANCEL_CHECK_EVERY == 0 && cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        set.insert(data_key_fingerprint(&item.key()?)?);
    }
    tracing::info!(
        keys = set.len,
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "key filter built"
    );
    Ok(Some(set))
}

/// Shards of the set, by a fingerprint's top byte: each grows and shrinks
/// on its own, so a resize moves 1/256 of the fingerprints and an apply
/// never stalls on rehashing millions of them.
const SHARDS: usize = 256;
/// Bits of a fingerprint below its shard byte: where in its shard it lives.
const IN_SHARD_BITS: u32 = 24;
/// Smallest shard, in slots.
const MIN_SLOTS: usize = 64;
/// Grow a shard when more than this share of its slots (in percent) would
/// be taken.
const MAX_LOAD_PERCENT: usize = 85;
/// Shrink a shard when fewer than this share (in percent) are taken.
const MIN_LOAD_PERCENT: usize = 20;

/// A multiset of non-zero `u32`s (see [`Shard`]).
struct FingerprintSet {
    shards: Vec<Shard>,
    len: usize,
}

impl Default for FingerprintSet {
    fn default() -> Self {
        FingerprintSet::with_expected(0)
    }
}

impl FingerprintSet {
    /// An empty set sized for `expected` uniform values without growing.
    fn with_expected(expected: usize) -> Self {
        let per_shard = expected / SHARDS;
        FingerprintSet {
            shards: (0..SHARDS)
                .map(|_| Shard::with_expected(per_shard))
                .collect(),
            len: 0,
        }
    }

    fn shard(&self, value: u32) -> &Shard {
        &self.shards[(value >> IN_SHARD_BITS) as usize]
    }

    fn shard_mut(&mut self, value: u32) -> &mut Shard {
        &mut self.shards[(value >> IN_SHARD_BITS) as usize]
    }

    fn contains(&self, value: u32) -> bool {
        self.shard(value).find(value).is_some()
    }

    fn insert(&mut self, value: u32) {
        debug_assert_ne!(value, 0);
        self.shard_mut(value).insert(value);
        self.len += 1;
    }

    /// Removes one copy of `value`; returns whether there was one.
    fn remove(&mut self, value: u32) -> bool {
        let removed = self.shard_mut(value).remove(value);
        if removed {
            self.len -= 1;
        }
        removed
    }

    fn apply(&mut self, changes: &[Change]) {
        for change in changes {
            match *change {
                Change::Created(f) => self.insert(f),
                Change::Deleted(f) => {
                    if !self.remove(f) {
                        // Cannot happen while the filter mirrors the store;
                        // if it ever does, a stale copy elsewhere only costs
                        // a read, while a missing one would be wrong.
                        tracing::error!("key filter lacks a deleted key's fingerprint");
                    }
                }
            }
        }
    }

    fn memory_bytes(&self) -> usize {
        self.shards.iter().map(Shard::memory_bytes).sum()
    }
}

/// One shard: linear probing, each value's home slot proportional to its
/// bits below the shard byte, 0 marking an empty slot, deletion by backward
/// shift (no tombstones).
struct Shard {
    slots: Vec<u32>,
    len: usize,
}

impl Shard {
    fn with_expected(expected: usize) -> Self {
        Shard {
            slots: vec![0; Self::slots_for(expected)],
            len: 0,
        }
    }

    fn slots_for(expected: usize) -> usize {
        (expected.saturating_mul(100) / MAX_LOAD_PERCENT + 1).max(MIN_SLOTS)
    }

    fn home(&self, value: u32) -> usize {
        // Scales the value's low bits to the shard (Lemire's multiply-shift):
        // values are uniform, and so are home slots.
        let low = u64::from(value & ((1 << IN_SHARD_BITS) - 1));
        ((low * self.slots.len() as u64) >> IN_SHARD_BITS) as usize
    }

    fn next(&self, slot: usize) -> usize {
        if slot + 1 == self.slots.len() {
            0
        } else {
            slot + 1
        }
    }

    /// The slot holding `value`, if any.
    fn find(&self, value: u32) -> Option<usize> {
        let mut slot = self.home(value);
        loop {
            match self.slots[slot] {
                0 => return None,
                v if v == value => return Some(slot),
                _ => slot = self.next(slot),
            }
        }
    }

    fn insert(&mut self, value: u32) {
        if (self.len + 1) * 100 > self.slots.len() * MAX_LOAD_PERCENT {
            self.resize(self.slots.len() * 3 / 2);
        }
        self.place(value);
        self.len += 1;
    }

    fn place(&mut self, value: u32) {
        let mut slot = self.home(value);
        while self.slots[slot] != 0 {
            slot = self.next(slot);
        }
        self.slots[slot] = value;
    }

    fn remove(&mut self, value: u32) -> bool {
        let Some(mut hole) = self.find(value) else {
            return false;
        };
        // Backward shift: move up every later value of the run that may sit
        // in the hole (its home is not between the hole and where it is).
        let mut slot = hole;
        loop {
            slot = self.next(slot);
            let moved = self.slots[slot];
            if moved == 0 {
                break;
            }
            let home = self.home(moved);
            let stays = if hole <= slot {
                hole < home && home <= slot
            } else {
                hole < home || home <= slot
            };
            if !stays {
                self.slots[hole] = moved;
                hole = slot;
            }
        }
        self.slots[hole] = 0;
        self.len -= 1;
        if self.slots.len() > MIN_SLOTS && self.len * 100 < self.slots.len() * MIN_LOAD_PERCENT {
            self.resize(self.slots.len() / 2);
        }
        true
    }

    fn resize(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.slots, vec![0; slots.max(MIN_SLOTS)]);
        for value in old.into_iter().filter(|&v| v != 0) {
            self.place(value);
        }
    }

    fn memory_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A deterministic stream of fingerprints with many near neighbours
    /// (long probe runs) and duplicates.
    fn values(n: usize, seed: u64) -> Vec<u32> {
        let mut x = seed;
        (0..n)
            .map(|i| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let v = if i % 7 == 0 {
                    // Crowded at the last shard's end, so that its runs wrap
                    // around, with many duplicates.
                    u32::MAX - (x >> 54) as u32
                } else {
                    (x >> 32) as u32
                };
                v.max(1)
            })
            .collect()
    }

    #[test]
    fn behaves_as_a_multiset_through_growth_wrap_around_and_shrinking() {
        let mut set = FingerprintSet::default();
        let mut model: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
        let inserted = values(60_000, 7);
        for &v in &inserted {
            set.insert(v);
            *model.entry(v).or_default() += 1;
        }
        let last = &set.shards[SHARDS - 1];
        assert!(last.slots.len() > MIN_SLOTS, "the crowded last shard grew");
        assert!(
            last.slots[0] != 0 && last.slots[last.slots.len() - 1] != 0,
            "its run wraps around"
        );
        assert_eq!(set.len, inserted.len());
        // Remove every other value (duplicates included), then check every
        // value's presence against the model.
        for &v in inserted.iter().step_by(2) {
            assert!(set.remove(v));
            let count = model.get_mut(&v).unwrap();
            *count -= 1;
        }
        for (&v, &count) in &model {
            assert_eq!(set.contains(v), count > 0, "value {v}, count {count}");
        }
        for &v in &values(2_000, 99) {
            if !model.contains_key(&v) {
                assert!(!set.contains(v));
                assert!(!set.remove(v));
            }
        }
        // Empty it: every shard shrinks back and holds nothing.
        for &v in inserted.iter().skip(1).step_by(2) {
            assert!(set.remove(v));
        }
        assert_eq!(set.len, 0);
        assert_eq!(set.memory_bytes(), SHARDS * MIN_SLOTS * 4);
        assert!(set
            .shards
            .iter()
            .all(|s| s.len == 0 && s.slots.iter().all(|&v| v == 0)));
    }

    #[test]
    fn fingerprints_come_from_the_data_key_hash_and_are_never_zero() {
        assert_eq!(fingerprint(0x0000_0000_ffff_ffff), 1);
        assert_eq!(fingerprint(0x1234_5678_0000_0000), 0x1234_5678);
        let mut data_key = Vec::new();
        super::super::encoding::push_data_key(&mut data_key, b"k");
        assert_eq!(
            data_key_fingerprint(&data_key).unwrap(),
            fingerprint(super::super::encoding::key_hash(b"k"))
        );
        // A stored key too short to hold a hash fails the build (which then
        // leaves the filter off) instead of being guessed at.
        assert!(matches!(
            data_key_fingerprint(b"short"),
            Err(StorageError::Corrupt(_))
        ));
    }

    #[test]
    fn changes_committed_during_a_build_are_replayed_and_a_reset_wins() {
        let filter = KeyFilter::default();
        // Stands in for a build: the state a rebuild sets, then its end.
        *filter.state() = FilterState::Building {
            build: 1,
            pending: Vec::new(),
        };
        assert!(
            !filter.certainly_absent(5 << 32),
            "not usable while building"
        );
        filter.record(&[Change::Created(9), Change::Deleted(3)]);
        let mut scanned = FingerprintSet::default();
        scanned.insert(3);
        scanned.insert(4);
        filter.finish(1, Some(scanned));
        assert!(filter.wait_built(Duration::from_secs(1)));
        assert!(!filter.certainly_absent(9 << 32));
        assert!(filter.certainly_absent(3 << 32), "deleted meanwhile");
        assert!(!filter.certainly_absent(4 << 32));
        assert!(filter.memory_bytes() >= SHARDS * MIN_SLOTS * 4);

        // A FLUSHALL during a build: the build's result is dropped.
        *filter.state() = FilterState::Building {
            build: 2,
            pending: Vec::new(),
        };
        filter.reset_empty();
        let mut stale = FingerprintSet::default();
        stale.insert(4);
        filter.finish(2, Some(stale));
        assert!(filter.certainly_absent(4 << 32));

        // A failed build leaves the filter off: every key is read.
        *filter.state() = FilterState::Building {
            build: 3,
            pending: Vec::new(),
        };
        filter.finish(3, None);
        assert!(!filter.wait_built(Duration::from_secs(1)));
        assert!(!filter.certainly_absent(77 << 32));
        assert_eq!(filter.memory_bytes(), 0);
    }
}
