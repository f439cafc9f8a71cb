//! Error replies counted by their prefix, for `INFO errorstats` and the
//! `/metrics` errors-by-prefix counter.
//!
//! The executor hands every error reply it sends to
//! [`Stats::note_error`](super::state::Stats::note_error), which counts it
//! here under its prefix as Redis 7.2's `afterErrorReply` and
//! `incrementErrorCount` do: the prefix is the message's first word when a
//! space ends it within Redis's 32-byte window (which includes the `-` that
//! RESP puts in front), `ERR` otherwise. At most [`MAX_PREFIXES`] distinct
//! prefixes are kept, so a client cannot grow the table without bound: the
//! first error under one more prefix replaces them all with
//! `ERRORSTATS_DISABLED` (count 1) and nothing more is counted by prefix
//! until `CONFIG RESETSTAT`. While a leader is being elected every reply is
//! an error, so the prefixes raftis itself replies with are counted with no
//! lock once seen; only a prefix's first error, other prefixes, the
//! overflow and the reset take the table's lock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Redis's `ERROR_STATS_NUMBER`.
pub const MAX_PREFIXES: usize = 128;

/// The one prefix left once the table has overflowed.
pub const DISABLED_PREFIX: &str = "ERRORSTATS_DISABLED";

/// Bytes of the reply, `-` included, in which Redis looks for the space that
/// ends the prefix.
const PREFIX_WINDOW: usize = 32;

/// The prefix Redis counts an error reply under. `message` is the error
/// without RESP's leading `-` (as [`Reply::Error`](super::Reply::Error)
/// holds it).
#[must_use]
pub fn error_prefix(message: &[u8]) -> &[u8] {
    let window = &message[..message.len().min(PREFIX_WINDOW - 1)];
    match window.iter().position(|&b| b == b' ') {
        Some(end) => &message[..end],
        None => b"ERR",
    }
}

/// Prefixes counted without a lock once seen: the ones raftis itself
/// replies with (and Redis's most common), so the request path takes no
/// lock even when every reply is an error, as during a leader election.
/// `ERR` first: it is the most frequent.
const KNOWN_PREFIXES: [&str; 8] = [
    "ERR",
    "CLUSTERDOWN",
    "WRONGTYPE",
    "TIMEOUT",
    "MISCONF",
    "NOPROTO",
    "EXECABORT",
    "NOAUTH",
];

/// Counts per prefix, bounded; shared by every connection.
///
/// A prefix in [`KNOWN_PREFIXES`] has an atomic counter: once it has
/// counted one error since the last reset, more are one relaxed increment.
/// The first error of a prefix, any other prefix, the overflow and the
/// reset go through the lock, which is what keeps the bound exact: a known
/// counter goes from 0 to 1 only under it.
#[derive(Debug, Default)]
pub struct ErrorTable {
    known: [AtomicU64; KNOWN_PREFIXES.len()],
    /// Set (under the lock) when the table overflowed; read without it by
    /// the fast path.
    disabled: AtomicBool,
    locked: Mutex<Locked>,
}

/// What the lock guards: the prefixes not in [`KNOWN_PREFIXES`].
#[derive(Debug, Default)]
struct Locked {
    counts: BTreeMap<String, u64>,
    disabled: bool,
}

impl ErrorTable {
    /// Counts one error reply with this message.
    pub fn note(&self, message: &[u8]) {
        let prefix = error_prefix(message);
        let known = KNOWN_PREFIXES.iter().position(|k| k.as_bytes() == prefix);
        if let Some(i) = known {
            let counter = &self.known[i];
            // A counter above 0 is a prefix already in the table: counting
            // it again cannot overflow the table.
            if !self.disabled.load(Ordering::Relaxed) && counter.load(Ordering::Relaxed) > 0 {
                counter.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let mut locked = self.lock();
        if locked.disabled {
            return;
        }
        match known {
            Some(i) if self.known[i].load(Ordering::Relaxed) > 0 => {
                self.known[i].fetch_add(1, Ordering::Relaxed);
                return;
            }
            Some(_) => {}
            None => {
                let prefix = String::from_utf8_lossy(prefix);
                if let Some(count) = locked.counts.get_mut(prefix.as_ref()) {
                    *count += 1;
                    return;
                }
            }
        }
        // A prefix not counted yet.
        if self.distinct(&locked) >= MAX_PREFIXES {
            tracing::warn!(
                prefixes = MAX_PREFIXES,
                "errorstats stopped counting errors by prefix: too many distinct prefixes \
                 (CONFIG RESETSTAT starts again)"
            );
            locked.counts.clear();
            locked.counts.insert(DISABLED_PREFIX.to_owned(), 1);
            locked.disabled = true;
            self.disabled.store(true, Ordering::Relaxed);
            for counter in &self.known {
                counter.store(0, Ordering::Relaxed);
            }
            return;
        }
        match known {
            Some(i) => {
                self.known[i].fetch_add(1, Ordering::Relaxed);
            }
            None => {
                locked
                    .counts
                    .insert(String::from_utf8_lossy(prefix).into_owned(), 1);
            }
        }
    }

    /// Prefixes counted so far (the lock held).
    fn distinct(&self, locked: &Locked) -> usize {
        let known = self
            .known
            .iter()
            .filter(|c| c.load(Ordering::Relaxed) > 0)
            .count();
        locked.counts.len() + known
    }

    /// Every prefix with its count, sorted by prefix.
    #[must_use]
    pub fn counts(&self) -> Vec<(String, u64)> {
        let locked = self.lock();
        let mut all = locked.counts.clone();
        // Once disabled, only ERRORSTATS_DISABLED is reported, whatever a
        // fast-path increment racing with the overflow left behind.
        if !locked.disabled {
            for (prefix, counter) in KNOWN_PREFIXES.iter().zip(&self.known) {
                let count = counter.load(Ordering::Relaxed);
                if count > 0 {
                    all.insert((*prefix).to_owned(), count);
                }
            }
        }
        all.into_iter().collect()
    }

    /// `CONFIG RESETSTAT`: empty, and counting again.
    pub fn reset(&self) {
        let mut locked = self.lock();
        locked.counts.clear();
        for counter in &self.known {
            counter.store(0, Ordering::Relaxed);
        }
        locked.disabled = false;
        self.disabled.store(false, Ordering::Relaxed);
    }

    /// The lock; its data stays consistent if a holder panicked (each
    /// critical section is a few map operations).
    fn lock(&self) -> MutexGuard<'_, Locked> {
        self.locked.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_the_first_word_within_redis_window() {
        assert_eq!(error_prefix(b"ERR syntax error"), b"ERR");
        assert_eq!(
            error_prefix(b"WRONGTYPE Operation against a key holding the wrong kind of value"),
            b"WRONGTYPE"
        );
        assert_eq!(error_prefix(b"CLUSTERDOWN no leader"), b"CLUSTERDOWN");
        // No space at all, or none within the window: ERR.
        assert_eq!(error_prefix(b"NOPE"), b"ERR");
        assert_eq!(error_prefix(b""), b"ERR");
        let long = format!("{} word", "X".repeat(31));
        assert_eq!(error_prefix(long.as_bytes()), b"ERR");
        // 30 bytes and a space: the space is the 32nd byte with the '-'.
        let fits = format!("{} word", "Y".repeat(30));
        assert_eq!(error_prefix(fits.as_bytes()), "Y".repeat(30).as_bytes());
    }

    #[test]
    fn counts_by_prefix_sorted() {
        let table = ErrorTable::default();
        table.note(b"WRONGTYPE Operation against a key");
        table.note(b"ERR syntax error");
        table.note(b"ERR value is not an integer");
        assert_eq!(
            table.counts(),
            vec![("ERR".to_owned(), 2), ("WRONGTYPE".to_owned(), 1)]
        );
        table.reset();
        assert!(table.counts().is_empty());
    }

    #[test]
    fn overflow_disables_until_reset() {
        let table = ErrorTable::default();
        for i in 0..MAX_PREFIXES {
            table.note(format!("P{i} x").as_bytes());
        }
        assert_eq!(table.counts().len(), MAX_PREFIXES);
        // A prefix already kept still counts.
        table.note(b"P0 again");
        assert_eq!(table.counts()[0], ("P0".to_owned(), 2));
        // One more prefix: only ERRORSTATS_DISABLED is left, and stays at 1.
        table.note(b"NEW x");
        table.note(b"P1 x");
        table.note(b"OTHER x");
        assert_eq!(table.counts(), vec![(DISABLED_PREFIX.to_owned(), 1)]);
        table.reset();
        table.note(b"ERR x");
        assert_eq!(table.counts(), vec![("ERR".to_owned(), 1)]);
    }

    #[test]
    fn known_prefixes_count_toward_the_bound() {
        let table = ErrorTable::default();
        table.note(b"ERR one");
        table.note(b"CLUSTERDOWN no leader");
        for i in 0..MAX_PREFIXES - 2 {
            table.note(format!("P{i} x").as_bytes());
        }
        table.note(b"ERR two");
        table.note(b"CLUSTERDOWN no leader");
        let counts = table.counts();
        assert_eq!(counts.len(), MAX_PREFIXES);
        assert!(counts.contains(&("ERR".to_owned(), 2)));
        assert!(counts.contains(&("CLUSTERDOWN".to_owned(), 2)));
        // A known prefix not seen yet is one prefix too many.
        table.note(b"WRONGTYPE x");
        assert_eq!(table.counts(), vec![(DISABLED_PREFIX.to_owned(), 1)]);
        table.note(b"ERR three");
        assert_eq!(table.counts(), vec![(DISABLED_PREFIX.to_owned(), 1)]);
        table.reset();
        table.note(b"ERR x");
        table.note(b"ERR y");
        assert_eq!(table.counts(), vec![("ERR".to_owned(), 2)]);
    }

    #[test]
    fn concurrent_errors_are_all_counted() {
        let table = ErrorTable::default();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1_000 {
                        table.note(b"CLUSTERDOWN no leader");
                        table.note(b"ODD x");
                    }
                });
            }
        });
        assert_eq!(
            table.counts(),
            vec![("CLUSTERDOWN".to_owned(), 4_000), ("ODD".to_owned(), 4_000)]
        );
    }
}
