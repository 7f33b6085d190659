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
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
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

/// What the service said to a request, as far as pacing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Processed within the service's budget (2xx, and 4xx other than 429).
    Accepted,
    /// 429: over the budget. `stated`: the answer said when to come back (Retry-After), so
    /// the window learned from the probe that follows is as tight as the service's word.
    Throttled { stated: bool },
    /// No verdict on the budget (5xx, connection failure).
    Other,
}

/// A window slot held by one request. Call [`Slot::answered`] when its answer (or failure)
/// arrived; dropping it unanswered (the request was never sent) frees it at once.
#[derive(Debug)]
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    inner: Arc<Inner>,
    /// This request is the single probe sent after a throttle episode.
    probe: bool,
}

impl Slot {
    /// Record the answer and start the slot's cool-down: it is reusable one window after
    /// this answer.
    pub fn answered(mut self, answer: Answer) {
        let answered_at = Instant::now();
        self.inner.observe(answer, self.probe);
        self.probe = false;
        if let Some(permit) = self.permit.take() {
            let inner = self.inner.clone();
            tokio::spawn(async move {
                // The hold may grow while this slot cools down (the service throttled): the
                // slot then waits for the longer hold, so no early burst follows a pause.
                loop {
                    let due = answered_at + inner.lock().hold;
                    if Instant::now() >= due {
                        break;
                    }
                    tokio::time::sleep_until(due).await;
                }
                inner.release(permit);
            });
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.probe {
            // A probe that was never sent: let another request probe.
            self.inner.observe(Answer::Other, true);
        }
        if let Some(permit) = self.permit.take() {
            self.inner.release(permit);
        }
    }
}

/// Adaptive state: how many slots are usable and how long each is held.
#[derive(Debug)]
struct Window {
    /// Slots usable now (≤ the configured COUNT).
    count: u32,
    /// Hold after each answer (≥ the configured DURATION + margin).
    hold: Duration,
    /// Permits to retire as they come back (the count was lowered while they were out).
    debt: u32,
    /// Answer times of accepted requests within the last `hold`.
    accepted: std::collections::VecDeque<Instant>,
    /// A throttle episode is on: after the gate opens, one probe goes first.
    probing: bool,
    probe_in_flight: bool,
    /// Start of the window the service was counting when the episode began: the first
    /// accepted answer within `hold` before the first 429.
    episode_start: Option<Instant>,
    /// The service has throttled before: its budget has been measured once.
    measured: bool,
    /// A shorter hold was once throttled: the hold stays where it is.
    hold_settled: bool,
    /// The last additive step, to undo when it proves one step too far.
    last_step: Step,
    /// No additive steps before this instant (set after a throttle, as TCP's ssthresh does).
    frozen_until: Option<Instant>,
    last_change: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    None,
    ShorterHold(Duration),
    MoreSlots(u32),
}

struct Inner {
    slots: Arc<Semaphore>,
    ceiling: u32,
    base_hold: Duration,
    /// The part of each hold that is edge margin, not window.
    margin: Duration,
    adaptive: bool,
    window: Mutex<Window>,
    probe_done: Notify,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("ceiling", &self.ceiling)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Give a permit back, or retire it if the usable count was lowered meanwhile.
    fn release(&self, permit: OwnedSemaphorePermit) {
        let mut w = self.lock();
        if w.debt > 0 {
            w.debt -= 1;
            permit.forget();
        } else {
            drop(permit);
        }
    }

    fn set_count(&self, w: &mut Window, count: u32) {
        let count = count.clamp(1, self.ceiling);
        if count < w.count {
            let cut = (w.count - count) as usize;
            let forgotten = self.slots.forget_permits(cut);
            w.debt += (cut - forgotten) as u32;
        } else if count > w.count {
            let more = count - w.count;
            let repaid = more.min(w.debt);
            w.debt -= repaid;
            self.slots.add_permits((more - repaid) as usize);
        }
        w.count = count;
    }

    /// Learn from one answer.
    ///
    /// The service's real budget is discovered, not guessed. At the first 429 ever, the usable
    /// count becomes what the service accepted in the current window; when the probe after the
    /// pause is accepted, the time since that window began bounds the service's window length
    /// from above, and the hold grows to it. While the service keeps accepting, one small step
    /// a window brings the pace back towards the configured rate: first the hold shrinks by
    /// 5 % (until a shorter hold is once throttled: then that step is undone and the hold
    /// stays; with a stated Retry-After it never shrinks), then, every three clean windows, the
    /// count grows by 5 %. A later 429 undoes the last step and freezes steps
    /// for five windows; a 429 while frozen (or with no step to undo) cuts the count by a tenth. So a configured rate above
    /// the service's limit converges onto it and stays there with rare 429s.
    fn observe(&self, answer: Answer, probe: bool) {
        let now = Instant::now();
        let mut w = self.lock();
        let horizon = now.checked_sub(w.hold).unwrap_or(now);
        while w.accepted.front().is_some_and(|t| *t < horizon) {
            w.accepted.pop_front();
        }
        let mut wake = false;
        match answer {
            Answer::Accepted => {
                w.accepted.push_back(now);
                if w.probing && !w.measured && !probe {
                    // Sent before the first 429 and accepted: part of the measured budget.
                    let count = w.count + 1;
                    self.set_count(&mut w, count);
                }
                if probe {
                    // The pause is over: the service accepts again.
                    w.probing = false;
                    w.probe_in_flight = false;
                    wake = true;
                    if let Some(start) = w.episode_start.take() {
                        if self.adaptive && !w.measured {
                            let learned =
                                now.saturating_duration_since(start) + edge_margin(self.base_hold);
                            if learned > w.hold {
                                w.hold = learned;
                            }
                        }
                        w.measured = true;
                        w.last_change = now;
                    }
                } else if self.adaptive
                    && !w.probing
                    && w.frozen_until.is_none_or(|f| now >= f)
                    && now.saturating_duration_since(w.last_change) >= w.hold
                {
                    if w.hold > self.base_hold && !w.hold_settled {
                        let previous = w.hold;
                        w.hold = (w.hold.mul_f64(0.95)).max(self.base_hold);
                        w.last_step = Step::ShorterHold(previous);
                        w.last_change = now;
                    } else if w.count < self.ceiling
                        && now.saturating_duration_since(w.last_change) >= w.hold * 3
                    {
                        // More slots only after three clean windows: the count was measured, and
                        // each step too far costs a pause.
                        let step = (w.count / 20).max(1);
                        let count = w.count + step;
                        self.set_count(&mut w, count);
                        w.last_step = Step::MoreSlots(step);
                        w.last_change = now;
                    }
                }
            }
            Answer::Throttled { stated } => {
                if probe {
                    w.probe_in_flight = false;
                    wake = true;
                }
                if !w.probing {
                    w.probing = true;
                    w.episode_start = Some(w.accepted.front().copied().unwrap_or(now));
                    if self.adaptive {
                        if !w.measured {
                            let accepted = u32::try_from(w.accepted.len()).unwrap_or(u32::MAX);
                            // Without a stated Retry-After the first window after the pause
                            // still holds the 429s and failed probes the service counted: start
                            // a twentieth below what it accepted.
                            let measured = if stated {
                                accepted
                            } else {
                                accepted - accepted / 20
                            };
                            let count = measured.min(w.count);
                            self.set_count(&mut w, count);
                            // With a stated Retry-After the probe lands when the service said
                            // it has room: the hold learned from it needs no shortening.
                            w.hold_settled = stated;
                        } else if w.frozen_until.is_some_and(|f| now < f) {
                            let count = (f64::from(w.count) * 0.9) as u32;
                            self.set_count(&mut w, count);
                        } else {
                            match w.last_step {
                                Step::ShorterHold(previous) => {
                                    w.hold = previous;
                                    w.hold_settled = true;
                                }
                                Step::MoreSlots(step) => {
                                    let count = w.count.saturating_sub(step);
                                    self.set_count(&mut w, count);
                                }
                                Step::None => {
                                    let count = (f64::from(w.count) * 0.9) as u32;
                                    self.set_count(&mut w, count);
                                }
                            }
                        }
                        // The first episode measured the budget; later ones found a step too
                        // far: hold still for a while before stepping again.
                        if w.measured {
                            w.frozen_until = Some(now + w.hold * 5);
                        }
                        w.last_step = Step::None;
                    }
                    w.last_change = now;
                }
            }
            Answer::Other => {
                if probe {
                    w.probe_in_flight = false;
                    wake = true;
                }
            }
        }
        drop(w);
        if wake {
            self.probe_done.notify_waiters();
        }
    }
}

/// The throttle shared by every worker.
pub struct Throttle {
    inner: Arc<Inner>,
    limiter: DefaultDirectRateLimiter,
    gate: Gate,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("inner", &self.inner)
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
    /// A throttle for `rate`. `adaptive`: lower the pace when the service throttles below it
    /// (and climb back); otherwise the configured rate is used as is.
    pub fn new(rate: RateSpec, adaptive: bool) -> Self {
        let count = NonZeroU32::new(rate.count).unwrap_or(NonZeroU32::MIN);
        let period = (rate.per / count.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(count))
            .allow_burst(count);
        let base_hold = rate.per + edge_margin(rate.per);
        Self {
            inner: Arc::new(Inner {
                slots: Arc::new(Semaphore::new(count.get() as usize)),
                ceiling: count.get(),
                base_hold,
                margin: edge_margin(rate.per),
                adaptive,
                window: Mutex::new(Window {
                    count: count.get(),
                    hold: base_hold,
                    debt: 0,
                    accepted: std::collections::VecDeque::new(),
                    probing: false,
                    probe_in_flight: false,
                    episode_start: None,
                    measured: false,
                    hold_settled: false,
                    last_step: Step::None,
                    frozen_until: None,
                    last_change: Instant::now(),
                }),
                probe_done: Notify::new(),
            }),
            limiter: RateLimiter::direct(quota),
            gate: Gate::default(),
        }
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Longest pause before probing again after a 429 without Retry-After: a quarter of the
    /// configured window. Each failed probe costs one counted request; a longer pause would
    /// overshoot the moment the service has room again by up to the whole pause.
    pub fn probe_interval(&self) -> Duration {
        self.inner.base_hold / 4
    }

    /// Every window slot is taken: requests wait for the window to move on.
    pub fn at_limit(&self) -> bool {
        self.inner.slots.available_permits() == 0
    }

    /// The pace in force now, as COUNT/DURATION (lower than configured after throttling).
    pub fn current_rate(&self) -> RateSpec {
        let w = self.inner.lock();
        RateSpec::new(w.count, w.hold.saturating_sub(self.inner.margin))
    }

    /// Wait until one request may be sent: gate open, a window slot free, the rate limiter
    /// ready, the gate still open (a 429 may have closed it while we waited), and, after a
    /// throttle episode, no other probe out: the first request after a pause goes alone, so
    /// that a window the service still counts as full costs one 429, not a burst of them.
    pub async fn acquire(&self) -> Slot {
        loop {
            self.gate.wait().await;
            // The semaphore is never closed; if it were, pacing by the limiter alone is safe.
            let permit = self.inner.slots.clone().acquire_owned().await.ok();
            self.limiter.until_ready().await;
            self.gate.wait().await;
            let notified = self.inner.probe_done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let probe = {
                let mut w = self.inner.lock();
                if !w.probing {
                    Some(false)
                } else if w.probe_in_flight {
                    None
                } else {
                    w.probe_in_flight = true;
                    Some(true)
                }
            };
            match probe {
                Some(probe) => {
                    return Slot {
                        permit,
                        inner: self.inner.clone(),
                        probe,
                    };
                }
                None => {
                    if let Some(p) = permit {
                        self.inner.release(p);
                    }
                    notified.await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slots_allow_a_burst_then_wait_a_window_after_the_answer() {
        let t = Throttle::new(RateSpec::new(3, Duration::from_secs(2)), true);
        let start = Instant::now();
        let slots: Vec<Slot> = vec![t.acquire().await, t.acquire().await, t.acquire().await];
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "a full window's burst is immediate"
        );
        tokio::time::sleep(Duration::from_millis(300)).await; // the answers take 300 ms
        for s in slots {
            s.answered(Answer::Accepted);
        }
        let _fourth = t.acquire().await;
        // 300 ms answer + 2 s window + 10 ms margin.
        assert_eq!(start.elapsed(), Duration::from_millis(2310));
    }

    #[tokio::test(start_paused = true)]
    async fn gate_holds_everyone_and_only_extends() {
        let t = Throttle::new(RateSpec::new(100, Duration::from_secs(1)), true);
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
        let t = Throttle::new(RateSpec::new(2, Duration::from_secs(10)), true);
        drop(t.acquire().await);
        assert_eq!(t.inner.slots.available_permits(), 2);
        t.acquire().await.answered(Answer::Accepted);
        tokio::task::yield_now().await;
        assert_eq!(t.inner.slots.available_permits(), 1);
        tokio::time::sleep(Duration::from_millis(10_100)).await;
        assert_eq!(t.inner.slots.available_permits(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_429_measures_the_budget_and_a_probe_goes_alone() {
        let t = Throttle::new(RateSpec::new(10, Duration::from_secs(1)), true);
        // The service accepts 4, then throttles.
        for _ in 0..4 {
            t.acquire().await.answered(Answer::Accepted);
        }
        t.acquire()
            .await
            .answered(Answer::Throttled { stated: true });
        assert_eq!(t.current_rate().count, 4);
        t.gate().close_for(Duration::from_secs(2));
        // After the pause exactly one request (the probe) may go until it is answered.
        let probe = t.acquire().await;
        assert!(probe.probe);
        let second = tokio::time::timeout(Duration::from_millis(100), t.acquire()).await;
        assert!(
            second.is_err(),
            "a second request went out beside the probe"
        );
        probe.answered(Answer::Accepted);
        let next = t.acquire().await;
        assert!(!next.probe);
        // The probe came back ~2 s after the window began: the hold grew to cover it.
        assert!(
            t.current_rate().per >= Duration::from_secs(2),
            "{}",
            t.current_rate()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pinned_rate_does_not_adapt() {
        let t = Throttle::new(RateSpec::new(10, Duration::from_secs(1)), false);
        t.acquire().await.answered(Answer::Accepted);
        t.acquire()
            .await
            .answered(Answer::Throttled { stated: true });
        assert_eq!(t.current_rate(), RateSpec::new(10, Duration::from_secs(1)));
    }
}
