//! Counters of how the local state is used, for INFO's stats section:
//! `keyspace_hits`, `keyspace_misses` and `expired_keys`.
//!
//! They are this node's own observations, never replicated and never read
//! by apply. Reads count one hit or miss per key looked up, where Redis's
//! `lookupKeyRead` counts them: the single- and multi-key lookups of read
//! commands (`with_key`, `with_keys`), not KEYS, SCAN or RANDOMKEY. Apply
//! counts the keys an `ExpireKeys` entry deleted once its batch has
//! committed, so every node counts the expiry deletions it applied.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Stripes of the hit and miss counters. Every read counts one per key, from
/// whichever thread runs it: one shared counter would bounce its cache line
/// between the cores on every read. Each thread writes its own stripe
/// (threads beyond this many share), and a snapshot adds them up.
const STRIPES: usize = 8;

/// One stripe, alone on its cache lines (128 bytes: adjacent-line
/// prefetchers pull pairs).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe {
    hits: AtomicU64,
    misses: AtomicU64,
}

/// The stripe this thread writes: threads take stripes in turn as they
/// first count.
fn stripe_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

/// The counters, relaxed atomics (INFO needs no snapshot across them).
#[derive(Debug, Default)]
pub(super) struct UsageCounters {
    stripes: [Stripe; STRIPES],
    pub(super) expired: AtomicU64,
}

/// The counters' values at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageStats {
    /// Lookups by read commands that found a live key.
    pub keyspace_hits: u64,
    /// Lookups by read commands that found none (absent or expired).
    pub keyspace_misses: u64,
    /// Keys deleted by applied expiry (`ExpireKeys`) entries.
    pub expired_keys: u64,
}

impl UsageCounters {
    /// Counts one lookup.
    pub(super) fn lookup(&self, found: bool) {
        let stripe = &self.stripes[stripe_index()];
        let counter = if found { &stripe.hits } else { &stripe.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> UsageStats {
        let sum = |counter: fn(&Stripe) -> &AtomicU64| {
            self.stripes
                .iter()
                .map(|s| counter(s).load(Ordering::Relaxed))
                .fold(0u64, u64::wrapping_add)
        };
        UsageStats {
            keyspace_hits: sum(|s| &s.hits),
            keyspace_misses: sum(|s| &s.misses),
            expired_keys: self.expired.load(Ordering::Relaxed),
        }
    }

    pub(super) fn reset(&self) {
        for stripe in &self.stripes {
            stripe.hits.store(0, Ordering::Relaxed);
            stripe.misses.store(0, Ordering::Relaxed);
        }
        self.expired.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use crate::cluster::op::{Deadline, Op, SetCondition, SetExpiry};
    use crate::storage::tests::open_store;

    fn set(key: &'static str, expire_at: Option<i64>) -> Op {
        Op::Set {
            key: Bytes::from_static(key.as_bytes()),
            value: Bytes::from_static(b"v"),
            condition: SetCondition::Always,
            expiry: expire_at.map_or(SetExpiry::Clear, |at| SetExpiry::Set(Deadline::At(at))),
            get: false,
        }
    }

    #[test]
    fn lookups_count_hits_and_misses_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let mut batch = store.begin();
        batch.apply(&set("live", None), 0).unwrap();
        batch.apply(&set("dying", Some(100)), 0).unwrap();
        batch.commit().unwrap();

        store.with_key(b"live", 50, |_| ()).unwrap();
        store.with_key(b"absent", 50, |_| ()).unwrap();
        // Expired at the read's clock: a miss, as in Redis.
        store.with_key(b"dying", 200, |_| ()).unwrap();
        let keys = [
            Bytes::from_static(b"live"),
            Bytes::from_static(b"dying"),
            Bytes::from_static(b"absent"),
        ];
        store.with_keys(&keys, 50, |_| ()).unwrap();
        let stats = store.usage_stats();
        assert_eq!((stats.keyspace_hits, stats.keyspace_misses), (3, 3));
        // Scans do not count, as Redis's KEYS and SCAN do not.
        store.keys(b"*", 50).unwrap();
        assert_eq!(store.usage_stats(), stats);

        store.reset_usage_stats();
        assert_eq!(store.usage_stats(), super::UsageStats::default());
    }

    #[test]
    fn applied_expiry_deletions_count_once_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let mut batch = store.begin();
        batch.apply(&set("a", Some(100)), 0).unwrap();
        batch.apply(&set("b", Some(100)), 0).unwrap();
        batch.apply(&set("c", Some(5_000)), 0).unwrap();
        batch.commit().unwrap();

        let due = store.expired_keys(100, 10).unwrap();
        let mut batch = store.begin();
        // "c" is not due: only two deletions.
        let mut keys = due.clone();
        keys.push(Bytes::from_static(b"c"));
        batch.apply(&Op::ExpireKeys(keys), 100).unwrap();
        assert_eq!(store.usage_stats().expired_keys, 0, "not yet committed");
        batch.commit().unwrap();
        assert_eq!(store.usage_stats().expired_keys, 2);
        // Nothing left to expire: applying the same entry again deletes none.
        let mut batch = store.begin();
        batch.apply(&Op::ExpireKeys(due), 100).unwrap();
        batch.commit().unwrap();
        assert_eq!(store.usage_stats().expired_keys, 2);
    }

    #[test]
    fn lookups_from_many_threads_all_count() {
        let counters = super::UsageCounters::default();
        std::thread::scope(|scope| {
            for t in 0..12 {
                let counters = &counters;
                scope.spawn(move || {
                    for i in 0..1_000 {
                        counters.lookup((i + t) % 4 != 0);
                    }
                });
            }
        });
        let stats = counters.snapshot();
        assert_eq!((stats.keyspace_hits, stats.keyspace_misses), (9_000, 3_000));
        counters.reset();
        assert_eq!(counters.snapshot(), super::UsageStats::default());
    }
}
