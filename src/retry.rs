//! The retry policy: how long to wait before the next attempt of a row and when to give up.
//!
//! One policy for every retry of the run: rows and the token endpoint alike. The exponential
//! schedule comes from the `backoff` crate, which is unmaintained (RUSTSEC-2025-0012); it is
//! used only here, so replacing it is a change to this file alone.

use std::time::Duration;

use backoff::ExponentialBackoff;
use backoff::backoff::Backoff;
use tokio::time::Instant;

/// Per-row retry budget and backoff shape.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub max_retry_time: Duration,
    /// First backoff delay (before jitter).
    pub initial: Duration,
    /// Longest backoff delay.
    pub max_interval: Duration,
    /// Each delay is the previous times this.
    pub multiplier: f64,
    /// Jitter: a delay d becomes uniform in [d(1-r), d(1+r)], so workers that failed together
    /// do not come back together.
    pub randomization: f64,
}

impl RetryPolicy {
    pub fn new(max_attempts: u32, max_retry_time: Duration) -> Self {
        Self {
            max_attempts,
            max_retry_time,
            initial: Duration::from_secs(1),
            max_interval: Duration::from_secs(60),
            multiplier: 2.0,
            randomization: 0.5,
        }
    }

    /// The budget of one row, starting now.
    pub fn start(&self) -> RowRetry {
        let backoff = ExponentialBackoff {
            current_interval: self.initial,
            initial_interval: self.initial,
            randomization_factor: self.randomization,
            multiplier: self.multiplier,
            max_interval: self.max_interval,
            // The budget is ours (attempts and retry time), not the crate's.
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        };
        RowRetry {
            backoff,
            started: Instant::now(),
            max_attempts: self.max_attempts,
            max_retry_time: self.max_retry_time,
        }
    }
}

/// One row's retry state.
#[derive(Debug)]
pub struct RowRetry {
    backoff: ExponentialBackoff,
    started: Instant,
    max_attempts: u32,
    max_retry_time: Duration,
}

/// Why a row stops retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    Attempts,
    Time,
}

impl RowRetry {
    /// The next step of the jittered backoff schedule (advances it).
    pub fn next_backoff(&mut self) -> Option<Duration> {
        self.backoff.next_backoff()
    }

    /// After `attempts` failed attempts: the delay before the next one — the service's
    /// Retry-After when it gave one, else the next jittered backoff step — or why not to retry.
    pub fn next_delay(
        &mut self,
        attempts: u32,
        retry_after: Option<Duration>,
    ) -> Result<Duration, GiveUp> {
        if attempts >= self.max_attempts {
            return Err(GiveUp::Attempts);
        }
        let delay = match retry_after {
            Some(ra) => ra,
            None => self
                .backoff
                .next_backoff()
                .unwrap_or(self.backoff.max_interval),
        };
        if self.started.elapsed() + delay > self.max_retry_time {
            return Err(GiveUp::Time);
        }
        Ok(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn backoff_grows_with_jitter_and_retry_after_wins() {
        let mut r = RetryPolicy::new(10, Duration::from_secs(3600)).start();
        let d1 = r.next_delay(1, None).unwrap();
        assert!(
            d1 >= Duration::from_millis(500) && d1 <= Duration::from_millis(1500),
            "{d1:?}"
        );
        let d2 = r.next_delay(2, None).unwrap();
        assert!(
            d2 >= Duration::from_millis(1000) && d2 <= Duration::from_millis(3000),
            "{d2:?}"
        );
        assert_eq!(
            r.next_delay(3, Some(Duration::from_secs(7))),
            Ok(Duration::from_secs(7))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn budget_limits_attempts_and_time() {
        let mut r = RetryPolicy::new(3, Duration::from_secs(10)).start();
        assert!(r.next_delay(2, Some(Duration::from_secs(1))).is_ok());
        assert_eq!(
            r.next_delay(3, Some(Duration::from_secs(1))),
            Err(GiveUp::Attempts)
        );
        let mut r = RetryPolicy::new(10, Duration::from_secs(10)).start();
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert_eq!(
            r.next_delay(1, Some(Duration::from_secs(3))),
            Err(GiveUp::Time)
        );
    }
}
