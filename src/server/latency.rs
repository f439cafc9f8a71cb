//! Per-command latency distributions for `INFO latencystats`, kept and read
//! as Redis 7 keeps them.
//!
//! Redis records each call's duration in an HdrHistogram (1 ns to 1 s, two
//! significant digits) and prints p50, p99 and p99.9 as the histogram's
//! `hdr_value_at_percentile` in microseconds. [`LatencyHistogram`] is the
//! same bucket layout, written out for this one configuration: values below
//! 256 ns each have a bucket; above, every power of two is split in 128
//! equal buckets, so a bucket is less than 1% wide. It is a fixed array of
//! relaxed atomics (24 KiB), so recording is one increment and needs no
//! lock; the executor creates one per command the first time the command
//! runs. A percentile is the highest value of the bucket where the
//! cumulative count reaches it, exactly as HdrHistogram answers, so the
//! figures match what Redis prints for the same durations.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Redis's `LATENCY_HISTOGRAM_MIN_VALUE` (ns): shorter calls count as this.
const MIN_NANOS: u64 = 1;
/// Redis's `LATENCY_HISTOGRAM_MAX_VALUE` (ns): longer calls count as this.
const MAX_NANOS: u64 = 1_000_000_000;
/// Values below this have a bucket each (HdrHistogram's sub-bucket count
/// for two significant digits).
const LINEAR: u64 = 256;
/// Buckets per power of two above [`LINEAR`].
const HALF: u64 = LINEAR / 2;
/// Bucket count: [`LINEAR`], then [`HALF`] for each further bit up to
/// [`MAX_NANOS`] (30 bits).
const BUCKETS: usize = 256 + 22 * 128;

/// The percentiles Redis prints by default
/// (`latency-tracking-info-percentiles "50 99 99.9"`), with their labels.
pub const PERCENTILES: [(&str, f64); 3] = [("50", 50.0), ("99", 99.0), ("99.9", 99.9)];

/// One command's call durations.
pub struct LatencyHistogram {
    counts: Box<[AtomicU64]>,
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count())
            .finish_non_exhaustive()
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// The bucket of `nanos` (already within [`MIN_NANOS`]..=[`MAX_NANOS`]).
fn bucket(nanos: u64) -> usize {
    let index = if nanos < LINEAR {
        nanos
    } else {
        let shift = u64::from(u64::BITS - nanos.leading_zeros()) - 8;
        let sub = nanos >> shift;
        LINEAR + (shift - 1) * HALF + (sub - HALF)
    };
    usize::try_from(index)
        .unwrap_or(BUCKETS - 1)
        .min(BUCKETS - 1)
}

/// The highest value that falls in bucket `index` (HdrHistogram's
/// `highest_equivalent_value`).
fn highest_in(index: usize) -> u64 {
    let index = index as u64;
    if index < LINEAR {
        return index;
    }
    let above = index - LINEAR;
    let shift = above / HALF + 1;
    let sub = above % HALF + HALF;
    ((sub + 1) << shift) - 1
}

impl LatencyHistogram {
    /// Records one call that took `took` (clamped to 1 ns ..= 1 s, as Redis
    /// clamps).
    pub fn record(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos())
            .unwrap_or(MAX_NANOS)
            .clamp(MIN_NANOS, MAX_NANOS);
        self.counts[bucket(nanos)].fetch_add(1, Ordering::Relaxed);
    }

    /// Calls recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// HdrHistogram's `hdr_value_at_percentile`, in nanoseconds: the
    /// highest value of the bucket where the cumulative count first reaches
    /// `percentile`% of all calls (rounded to the nearest call, at least
    /// one). 0 when nothing was recorded.
    #[must_use]
    pub fn value_at_percentile(&self, percentile: f64) -> u64 {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let wanted = ((percentile.min(100.0) / 100.0 * total as f64) + 0.5) as u64;
        let wanted = wanted.max(1);
        let mut seen = 0;
        for (index, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= wanted {
                return highest_in(index);
            }
        }
        0
    }

    /// Forgets every call (`CONFIG RESETSTAT`).
    pub fn reset(&self) {
        for c in self.counts.iter() {
            c.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_hdr_two_digit_buckets() {
        assert_eq!(bucket(1), 1);
        assert_eq!(bucket(255), 255);
        assert_eq!(bucket(256), 256);
        assert_eq!(highest_in(bucket(256)), 257);
        assert_eq!(highest_in(bucket(511)), 511);
        // Redis printed p50=6.015 for a 6 µs call, 12.031 for 12 µs.
        assert_eq!(highest_in(bucket(6_000)), 6_015);
        assert_eq!(highest_in(bucket(12_000)), 12_031);
        assert_eq!(highest_in(bucket(3_000)), 3_007);
        assert!(bucket(MAX_NANOS) < BUCKETS);
        // Every bucket's top value maps back to it, and the next value to the next.
        for index in 0..BUCKETS - 1 {
            let top = highest_in(index);
            assert_eq!(bucket(top), index);
            assert_eq!(bucket(top + 1), index + 1);
        }
        assert!(highest_in(BUCKETS - 1) >= MAX_NANOS);
    }

    #[test]
    fn percentiles_as_hdr_histogram_answers() {
        let h = LatencyHistogram::default();
        assert_eq!(h.value_at_percentile(50.0), 0);
        // What Redis printed for its two GETs: p50=3.007,p99=6.015.
        h.record(Duration::from_micros(6));
        h.record(Duration::from_micros(3));
        assert_eq!(h.value_at_percentile(50.0), 3_007);
        assert_eq!(h.value_at_percentile(99.0), 6_015);
        assert_eq!(h.value_at_percentile(99.9), 6_015);
        for _ in 0..98 {
            h.record(Duration::from_nanos(100));
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.value_at_percentile(50.0), 100);
        assert_eq!(h.value_at_percentile(99.0), 3_007);
        // Out of range: clamped as Redis clamps.
        h.record(Duration::ZERO);
        h.record(Duration::from_secs(5));
        assert_eq!(h.value_at_percentile(100.0), highest_in(bucket(MAX_NANOS)));
        h.reset();
        assert_eq!(h.count(), 0);
    }
}
