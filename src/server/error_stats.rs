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
//! until `CONFIG RESETSTAT`.

use std::collections::BTreeMap;

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

/// Counts per prefix, bounded.
#[derive(Debug, Default)]
pub struct ErrorTable {
    counts: BTreeMap<String, u64>,
    disabled: bool,
}

impl ErrorTable {
    /// Counts one error reply with this message.
    pub fn note(&mut self, message: &[u8]) {
        if self.disabled {
            return;
        }
        let prefix = String::from_utf8_lossy(error_prefix(message));
        if let Some(count) = self.counts.get_mut(prefix.as_ref()) {
            *count += 1;
            return;
        }
        if self.counts.len() >= MAX_PREFIXES {
            tracing::warn!(
                prefixes = MAX_PREFIXES,
                "errorstats stopped counting errors by prefix: too many distinct prefixes \
                 (CONFIG RESETSTAT starts again)"
            );
            self.counts.clear();
            self.counts.insert(DISABLED_PREFIX.to_owned(), 1);
            self.disabled = true;
            return;
        }
        self.counts.insert(prefix.into_owned(), 1);
    }

    /// Every prefix with its count, sorted by prefix.
    #[must_use]
    pub fn counts(&self) -> Vec<(String, u64)> {
        self.counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// `CONFIG RESETSTAT`: empty, and counting again.
    pub fn reset(&mut self) {
        self.counts.clear();
        self.disabled = false;
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
        let mut table = ErrorTable::default();
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
        let mut table = ErrorTable::default();
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
}
