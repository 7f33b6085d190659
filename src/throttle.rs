//! Pacing every request (retries and reconciling GETs included) so the run sits on Graph's
//! limit without crossing it.
//!
//! Three mechanisms, each for one reason:
//!
//! * **Window slots** enforce the `--rate COUNT/DURATION` contract exactly: there are `COUNT`
//!   slots; a request takes one before it is sent and gives it back `DURATION` after its answer
//!   arrived. The service saw the request at some instant between send and answer, so a slot
//!   reused `DURATION` after the answer can never make the service see more than `COUNT`
//!   requests in any window of `DURATION`, whatever the network latency. Bursts at the start of
//!   each window are allowed, which is what lets a run finish at the theoretical minimum
//!   ((⌈n/COUNT⌉ − 1) × DURATION) instead of 1/COUNT of a window later per request.
//! * A **governor** GCRA limiter (burst `COUNT`, one cell per `DURATION/COUNT`) caps the
//!   sustained rate. At the configured rate it never binds tighter than the slots; it is the
//!   knob an adaptive rate turns.
//! * The **gate**: one 429 means the app is over its budget, so every worker must hold back,
//!   not just the one that got it. The gate closes until the Retry-After (or the backoff delay)
//!   has passed and no request is sent while it is closed.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::RateSpec;

#[derive(Debug, Default)]
struct GateState {
    until: Option<Instant>,
    /// Time the gate has been (or is planned to be) closed, as a union of intervals.
    closed_total: Duration,
}

/// The shared pause: closed until an instant, by whichever throttled answer asked for the
/// latest one.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<GateState>,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        // A poisoned lock only means another thread panicked mid-update of two plain fields.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Close the gate for `d` from now (never shortens an existing closure).
    pub fn close_for(&self, d: Duration) {
        let now = Instant::now();
        let new_until = now + d;
        let mut s = self.lock();
        let old_until = s.until.filter(|u| *u > now).unwrap_or(now);
        if new_until > old_until {
            s.closed_total += new_until - old_until;
            s.until = Some(new_until);
        }
    }

    /// How long the gate stays closed, if it is.
    pub fn remaining(&self) -> Option<Duration> {
        let now = Instant::now();
        self.lock().until.filter(|u| *u > now).map(|u| u - now)
    }

    /// Total time the gate has been closed so far.
    pub fn closed_total(&self) -> Duration {
        let now = Instant::now();
        let s = self.lock();
        // Do not count the part of the current closure that lies in the future.
        let future = s
            .until
            .filter(|u| *u > now)
            .map(|u| u - now)
            .unwrap_or_default();
        s.closed_total.saturating_sub(future)
    }

    /// Wait until the gate is open. Re-checks after each sleep: another 429 may have
    /// extended the closure meanwhile.
    pub async fn wait(&self) {
        loop {
            let until = self.lock().until;
            match until {
                Some(u) if u > Instant::now() => tokio::time::sleep_until(u).await,
                _ => return,
            }
        }
    }
}

/// A window slot held by one request. Call [`Slot::answered`] when its answer (or failure)
/// arrived; dropping it unanswered (the request was never sent) frees it at once.
#[derive(Debug)]
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    hold: Duration,
}

impl Slot {
    /// Start the slot's cool-down: it is reusable one window after this answer.
    pub fn answered(mut self) {
        if let Some(permit) = self.permit.take() {
            let hold = self.hold;
            tokio::spawn(async move {
                tokio::time::sleep(hold).await;
                drop(permit);
            });
        }
    }
}

/// The throttle shared by every worker.
pub struct Throttle {
    slots: Arc<Semaphore>,
    hold: Duration,
    limiter: DefaultDirectRateLimiter,
    gate: Gate,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("hold", &self.hold)
            .field("gate", &self.gate)
            .finish_non_exhaustive()
    }
}

/// Extra hold past the window so that clock granularity on either side cannot put a reused
/// slot exactly on the window's edge: 0.5 % of the window, between 1 ms and 250 ms.
fn edge_margin(window: Duration) -> Duration {
    (window / 200).clamp(Duration::from_millis(1), Duration::from_millis(250))
}

impl Throttle {
    pub fn new(rate: RateSpec) -> Self {
        let count = NonZeroU32::new(rate.count).unwrap_or(NonZeroU32::MIN);
        let period = (rate.per / count.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(count))
            .allow_burst(count);
        Self {
            slots: Arc::new(Semaphore::new(count.get() as usize)),
            hold: rate.per + edge_margin(rate.per),
            limiter: RateLimiter::direct(quota),
            gate: Gate::default(),
        }
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Wait until one request may be sent: gate open, a window slot free, the rate limiter
    /// ready, and the gate still open (a 429 may have closed it while we waited).
    pub async fn acquire(&self) -> Slot {
        self.gate.wait().await;
        // The semaphore is never closed; if it were, pacing by the limiter alone is safe.
        let permit = self.slots.clone().acquire_owned().await.ok();
        self.limiter.until_ready().await;
        self.gate.wait().await;
        Slot {
            permit,
            hold: self.hold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slots_allow_a_burst_then_wait_a_window_after_the_answer() {
        let t = Throttle::new(RateSpec::new(3, Duration::from_secs(2)));
        let start = Instant::now();
        let slots: Vec<Slot> = vec![t.acquire().await, t.acquire().await, t.acquire().await];
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "a full window's burst is immediate"
        );
        tokio::time::sleep(Duration::from_millis(300)).await; // the answers take 300 ms
        for s in slots {
            s.answered();
        }
        let _fourth = t.acquire().await;
        // 300 ms answer + 2 s window + 10 ms margin.
        assert_eq!(start.elapsed(), Duration::from_millis(2310));
    }

    #[tokio::test(start_paused = true)]
    async fn gate_holds_everyone_and_only_extends() {
        let t = Throttle::new(RateSpec::new(100, Duration::from_secs(1)));
        let start = Instant::now();
        t.gate().close_for(Duration::from_secs(5));
        t.gate().close_for(Duration::from_secs(2)); // shorter: ignored
        assert!(t.gate().remaining().is_some());
        let _s = t.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(t.gate().closed_total(), Duration::from_secs(5));
        assert!(t.gate().remaining().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn unanswered_slot_is_freed_at_once_answered_one_after_the_window() {
        let t = Throttle::new(RateSpec::new(2, Duration::from_secs(10)));
        drop(t.acquire().await);
        assert_eq!(t.slots.available_permits(), 2);
        t.acquire().await.answered();
        tokio::task::yield_now().await;
        assert_eq!(t.slots.available_permits(), 1);
        tokio::time::sleep(Duration::from_millis(10_100)).await;
        assert_eq!(t.slots.available_permits(), 2);
    }
}
