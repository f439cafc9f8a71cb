//! Instantaneous rates for INFO (`instantaneous_ops_per_sec`,
//! `instantaneous_input_kbps`, `instantaneous_output_kbps`), computed as
//! Redis computes them.
//!
//! Redis's `serverCron` samples each counter every 100 ms
//! (`trackInstantaneousMetric`): the increase since the previous sample,
//! per second; INFO reports the mean of the last 16 samples, so a rate
//! covers the last 1.6 s. raftis has no cron: the executor offers a sample
//! after each command ([`Stats::sample_rates`](super::state::Stats::sample_rates))
//! and INFO offers one before it reads, and a [`RateSampler`] takes it only
//! when a period has passed. Under load that is Redis's sampling exactly. After
//! a quiet gap of several periods, the one sample taken covers the whole gap;
//! it is entered once per period it spans (at most 16), each with the mean
//! rate over the gap, which is what Redis's samples of those periods would
//! add up to. So an idle node reads 0, and no timer runs for it.

use std::time::{Duration, Instant};

/// Redis's `STATS_METRIC_SAMPLES`.
pub const SAMPLES: usize = 16;

/// Redis's sampling period (`run_with_period(100)` in `serverCron`).
pub const PERIOD: Duration = Duration::from_millis(100);

/// One counter's recent samples.
#[derive(Debug, Clone)]
pub struct RateSampler {
    samples: [u64; SAMPLES],
    next: usize,
    last_at: Instant,
    last_value: u64,
}

impl RateSampler {
    /// A sampler whose counter stands at `value` at `now`.
    #[must_use]
    pub fn new(value: u64, now: Instant) -> Self {
        RateSampler {
            samples: [0; SAMPLES],
            next: 0,
            last_at: now,
            last_value: value,
        }
    }

    /// Samples the counter, now at `value`, if a period has passed since the
    /// previous sample. A counter that went down (reset) counts as no
    /// increase.
    pub fn sample(&mut self, value: u64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last_at);
        if elapsed < PERIOD {
            return;
        }
        let increase = u128::from(value.saturating_sub(self.last_value));
        let per_sec = increase * 1_000_000_000 / elapsed.as_nanos().max(1);
        let per_sec = u64::try_from(per_sec).unwrap_or(u64::MAX);
        let periods = (elapsed.as_nanos() / PERIOD.as_nanos()).min(SAMPLES as u128);
        for _ in 0..periods {
            self.samples[self.next] = per_sec;
            self.next = (self.next + 1) % SAMPLES;
        }
        self.last_at = now;
        self.last_value = value;
    }

    /// The mean of the last [`SAMPLES`] samples, per second (Redis's
    /// `getInstantaneousMetric`, integer division included).
    #[must_use]
    pub fn per_second(&self) -> u64 {
        let sum: u128 = self.samples.iter().map(|&s| u128::from(s)).sum();
        u64::try_from(sum / SAMPLES as u128).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_rate_fills_the_window() {
        let start = Instant::now();
        let mut s = RateSampler::new(0, start);
        // 50 per 100 ms = 500/s, sampled every period.
        for i in 1..=SAMPLES as u64 {
            s.sample(50 * i, start + PERIOD * u32::try_from(i).unwrap());
        }
        assert_eq!(s.per_second(), 500);
    }

    #[test]
    fn early_offers_are_ignored() {
        let start = Instant::now();
        let mut s = RateSampler::new(0, start);
        s.sample(1_000, start + PERIOD / 2);
        assert_eq!(s.per_second(), 0);
        // The increase is still counted once a period has passed.
        s.sample(1_000, start + PERIOD);
        assert_eq!(s.per_second(), 10_000 / SAMPLES as u64);
    }

    #[test]
    fn a_single_sample_counts_one_sixteenth() {
        let start = Instant::now();
        let mut s = RateSampler::new(0, start);
        // 160 in one period: 1600/s, averaged with 15 empty samples.
        s.sample(160, start + PERIOD);
        assert_eq!(s.per_second(), 100);
    }

    #[test]
    fn a_quiet_gap_decays_to_zero() {
        let start = Instant::now();
        let mut s = RateSampler::new(0, start);
        for i in 1..=SAMPLES as u64 {
            s.sample(100 * i, start + PERIOD * u32::try_from(i).unwrap());
        }
        assert_eq!(s.per_second(), 1_000);
        // Ten seconds with no increase replace every sample.
        s.sample(100 * SAMPLES as u64, start + Duration::from_secs(12));
        assert_eq!(s.per_second(), 0);
    }

    #[test]
    fn a_gap_spreads_its_mean_rate_over_its_periods() {
        let start = Instant::now();
        let mut s = RateSampler::new(0, start);
        // 400 over 400 ms: four samples of 1000/s, twelve empty.
        s.sample(400, start + PERIOD * 4);
        assert_eq!(s.per_second(), 4 * 1_000 / SAMPLES as u64);
    }

    #[test]
    fn a_reset_counter_is_no_increase() {
        let start = Instant::now();
        let mut s = RateSampler::new(1_000, start);
        s.sample(10, start + PERIOD);
        assert_eq!(s.per_second(), 0);
        s.sample(170, start + PERIOD * 2);
        assert_eq!(s.per_second(), 100);
    }
}
