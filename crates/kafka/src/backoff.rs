//! The one retry schedule: every retry and restart waits by it.
//!
//! Exponential with jitter (backon's): the nominal wait starts at `min` and doubles after each
//! failure in a row up to `max`; each wait handed out is the nominal one plus a random part of
//! up to as much again, so replicas that failed together do not retry in step.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// First and longest nominal wait before retrying a transient log or registry failure.
pub const RETRY_MIN: Duration = Duration::from_millis(100);
/// See [`RETRY_MIN`].
pub const RETRY_MAX: Duration = Duration::from_secs(5);

/// The waits between the attempts of one thing that keeps failing.
#[derive(Debug)]
pub struct Backoff {
    schedule: ExponentialBuilder,
    max: Duration,
    waits: ExponentialBackoff,
    /// Whether a wait was handed out since the last reset (a reset per success stays cheap).
    waited: bool,
}

impl Backoff {
    /// Waits from `min` (nominal) doubling up to `max` (nominal), with jitter, without end.
    pub fn new(min: Duration, max: Duration) -> Self {
        let schedule = ExponentialBuilder::new()
            .with_min_delay(min)
            .with_max_delay(max.max(min))
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Self { schedule, max, waits: schedule.build(), waited: false }
    }

    /// [`RETRY_MIN`] to [`RETRY_MAX`]: for transient log and registry failures.
    pub fn for_retries() -> Self {
        Self::new(RETRY_MIN, RETRY_MAX)
    }

    /// The wait before the next attempt.
    pub fn next_wait(&mut self) -> Duration {
        self.waited = true;
        // The schedule has no last wait; the longest stands in should that ever change.
        self.waits.next().unwrap_or(self.max)
    }

    /// Back to the first wait, after a success.
    pub fn reset(&mut self) {
        if std::mem::take(&mut self.waited) {
            self.waits = self.schedule.build();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);
    const ROUNDING: Duration = Duration::from_micros(1);

    #[test]
    fn waits_grow_and_stay_within_min_and_max_plus_jitter() {
        for _ in 0..100 {
            let mut backoff = Backoff::new(MIN, MAX);
            let waits: Vec<Duration> = (0..20).map(|_| backoff.next_wait()).collect();
            for (n, wait) in waits.iter().enumerate() {
                // Nominal: MIN doubled n times, capped; jitter adds less than as much again.
                // (The schedule computes in f32 seconds: a microsecond either way is rounding.)
                let nominal = MIN.saturating_mul(1 << n.min(16)).min(MAX);
                let (low, high) = (nominal - ROUNDING, nominal * 2 + ROUNDING);
                assert!(*wait >= low && *wait <= high, "wait {n} is {wait:?}, nominal {nominal:?}");
            }
            // Below the cap each wait is longer than the last, whatever the jitter.
            assert!(waits.windows(2).take(5).all(|pair| pair[1] > pair[0]), "{waits:?}");
            assert!(waits.iter().all(|wait| *wait >= MIN - ROUNDING && *wait <= MAX * 2 + ROUNDING));
        }
    }

    #[test]
    fn reset_starts_again_from_the_first_wait() {
        let mut backoff = Backoff::new(MIN, MAX);
        for _ in 0..10 {
            backoff.next_wait();
        }
        backoff.reset();
        let first = backoff.next_wait();
        assert!(first >= MIN - ROUNDING && first <= MIN * 2 + ROUNDING, "{first:?}");
    }

    #[test]
    fn jitter_spreads_the_waits() {
        let firsts: std::collections::BTreeSet<Duration> =
            (0..20).map(|_| Backoff::new(MIN, MAX).next_wait()).collect();
        assert!(firsts.len() > 1, "twenty replicas would retry in step: {firsts:?}");
    }
}
