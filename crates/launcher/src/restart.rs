//! When a failed replica starts again: the same for a replica task (`run`) and a replica
//! process (`run --processes`).

use std::time::Duration;

use competing_transformers_kafka::Backoff;

/// First nominal wait before restarting a failed replica; it doubles on each failure in a row.
pub(crate) const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest nominal wait before restarting a failed replica (jitter adds up to as much again).
pub(crate) const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A replica that ran this long before failing is restarted after the shortest wait.
pub(crate) const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The waits between the lives of one replica.
pub(crate) struct Restarts {
    backoff: Backoff,
}

impl Restarts {
    pub(crate) fn new() -> Self {
        Self { backoff: Backoff::new(RESTART_BACKOFF_MIN, RESTART_BACKOFF_MAX) }
    }

    /// The wait before the next start of a replica whose last life lasted `ran`: a long
    /// enough healthy run forgets the failures before it.
    pub(crate) fn wait_after(&mut self, ran: Duration) -> Duration {
        if ran >= HEALTHY_RUN {
            self.backoff.reset();
        }
        self.backoff.next_wait()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_and_a_healthy_run_starts_over() {
        let mut restarts = Restarts::new();
        let quick = Duration::from_secs(1);
        let first = restarts.wait_after(quick);
        assert!(first >= RESTART_BACKOFF_MIN && first <= RESTART_BACKOFF_MIN * 2, "{first:?}");
        let second = restarts.wait_after(quick);
        assert!(second > first, "{first:?} then {second:?}");
        let after_healthy = restarts.wait_after(HEALTHY_RUN);
        assert!(after_healthy <= RESTART_BACKOFF_MIN * 2, "{after_healthy:?}");
    }
}
