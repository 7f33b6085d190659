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
    /// 429: over the budget, with the Retry-After it stated, if any.
    Throttled { retry_after: Option<Duration> },
    /// No verdict on the budget (5xx, connection failure).
    Other,
}

/// A window slot held by one request. Call [`Slot::answered`] when its answer (or failure)
/// arrived; dropping it unanswered (the request was never sent) frees it at once.
#[derive(Debug)]
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    inner: Arc<Inner>,
    /// This request goes alone: a probe or a trial's test.
    role: Role,
}

/// Why a request goes alone, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Normal,
    /// The first request after a throttle pause.
    Probe,
    /// The first request paced by a shorter hold on trial: its answer decides the trial.
    Test,
}

impl Slot {
    /// Record the answer and start the slot's cool-down: it is reusable one window after
    /// this answer.
    pub fn answered(mut self, answer: Answer) {
        let answered_at = Instant::now();
        self.inner.observe(answer, self.role);
        self.role = Role::Normal;
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
        if self.role != Role::Normal {
            // A probe or test that was never sent: let another request go alone instead.
            self.inner.observe(Answer::Other, self.role);
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
    /// The next request at or after this instant tests the hold on trial.
    test_due: Option<Instant>,
    /// A probe or test is out.
    probe_in_flight: bool,
    /// First episode only: start of the window the service was counting when it began (the
    /// first accepted answer within `hold` before the first 429).
    episode_start: Option<Instant>,
    /// First episode only: the service's window is known to be longer than this.
    episode_lower: Duration,
    /// The service has throttled before: its budget has been measured once.
    measured: bool,
    /// The search for the service's window length, once measured.
    search: Option<Search>,
    /// One window after the first episode, during which a 429 says nothing about the count:
    /// the service may still be counting the episode's own 429s.
    aftermath: Option<Instant>,
    /// The last step up in slots, to undo when it proves one step too far.
    last_step: Option<u32>,
    /// No steps up before this instant (set after a throttle, as TCP's ssthresh does).
    frozen_until: Option<Instant>,
    last_change: Instant,
}

/// Bisection of the hold between a value the service throttled (`lower`) and one it accepted
/// for a whole window (`upper`).
#[derive(Debug, Clone, Copy)]
struct Search {
    lower: Duration,
    upper: Duration,
    /// The hold on trial, between the two.
    trial: Option<Duration>,
    /// The first trial is the whole number of seconds in range, if any: Graph's published
    /// windows are whole seconds (20 s for Intune's writes), so it usually ends the search
    /// at once.
    whole_second: bool,
}

impl Search {
    /// Close enough: a further halving would gain under 2 % of the pace, and each trial that
    /// fails costs a pause.
    fn settled(&self) -> bool {
        self.upper.saturating_sub(self.lower) <= self.upper / 50
    }

    /// The first trial: the shortest whole number of seconds (plus the edge margin) strictly
    /// between the bounds.
    fn whole_second_trial(&mut self, margin: Duration) -> Option<Duration> {
        if !self.whole_second {
            return None;
        }
        let above = self.lower.saturating_sub(margin);
        let seconds = above.as_secs() + 1;
        let trial = Duration::from_secs(seconds) + margin;
        if trial < self.upper {
            Some(trial)
        } else {
            self.whole_second = false;
            None
        }
    }
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
    /// The service's real budget is discovered, not guessed:
    ///
    /// * **Count.** At the first 429 ever, the usable count becomes what the service accepted
    ///   in the current window (plus what was already in flight and is accepted).
    /// * **Window.** When the probe after that pause is accepted, the time since the window
    ///   began bounds the service's window from above; every 429 of the episode (a failed
    ///   probe; the end of a stated Retry-After, which Graph rounds up to whole seconds)
    ///   bounds it from below. The hold is then bisected between the two, one trial per
    ///   window: a trial the service throttles becomes the new lower bound and the hold goes
    ///   back up, a clean one the new upper bound, until they are within 2 %. The whole
    ///   second in range is tried first (Graph's windows are whole seconds), and the first
    ///   request a trial paces goes alone, so a failed trial costs one 429.
    /// * **The first window after the pause** may still hold the episode's 429s (Graph counts
    ///   throttled requests too): a 429 there pauses and probes again but cuts nothing.
    /// * **Back towards `--rate`.** Once the window is found, every ten clean windows the count
    ///   grows by 5 %. A 429 undoes that step and freezes steps for five windows; a 429 with
    ///   no step to undo, or while frozen, cuts the count by a tenth (another app may have
    ///   started sharing the budget).
    ///
    /// So a configured rate above the service's limit converges onto it and stays there with
    /// rare 429s.
    fn observe(&self, answer: Answer, role: Role) {
        let now = Instant::now();
        let mut w = self.lock();
        let horizon = now.checked_sub(w.hold).unwrap_or(now);
        while w.accepted.front().is_some_and(|t| *t < horizon) {
            w.accepted.pop_front();
        }
        if role != Role::Normal {
            w.probe_in_flight = false;
        }
        match answer {
            Answer::Accepted => {
                w.accepted.push_back(now);
                if role == Role::Test {
                    // The shorter hold on trial did not overrun the service's window.
                    if let Some(s) = w.search.as_mut()
                        && let Some(trial) = s.trial.take()
                    {
                        s.upper = trial;
                        if std::mem::take(&mut s.whole_second) {
                            // A whole-second window fits: take it as the service's.
                            s.lower = s.lower.max(trial - trial / 50);
                        }
                        w.last_change = now;
                    }
                } else if role == Role::Probe {
                    // The pause is over: the service accepts again.
                    w.probing = false;
                    if let Some(start) = w.episode_start.take() {
                        self.end_first_episode(&mut w, now, start);
                    }
                    w.last_change = now;
                } else if w.probing && !w.measured {
                    // Sent before the first 429 and accepted: part of the measured budget.
                    let count = w.count + 1;
                    self.set_count(&mut w, count);
                } else if self.adaptive && !w.probing {
                    self.step(&mut w, now);
                }
            }
            Answer::Throttled { retry_after } => {
                if !w.probing {
                    w.probing = true;
                    if self.adaptive {
                        self.throttled(&mut w, now);
                    }
                    w.last_change = now;
                }
                if let Some(start) = w.episode_start {
                    // The window that began at `start` still counts: it is longer than the time
                    // since, and (Retry-After being rounded up to whole seconds) than the time
                    // until a second before the stated instant.
                    let since = now.saturating_duration_since(start);
                    let stated = retry_after
                        .map(|ra| since + ra.saturating_sub(Duration::from_secs(1)))
                        .unwrap_or_default();
                    w.episode_lower = w.episode_lower.max(since).max(stated);
                }
            }
            Answer::Other => {
                if role == Role::Test && w.search.is_some_and(|s| s.trial.is_some()) {
                    // No verdict: the next request tests the trial instead.
                    w.test_due = Some(now);
                }
            }
        }
        drop(w);
        if role != Role::Normal {
            self.probe_done.notify_waiters();
        }
    }

    /// A 429 that starts an episode.
    fn throttled(&self, w: &mut Window, now: Instant) {
        if !w.measured {
            w.episode_start = Some(w.accepted.front().copied().unwrap_or(now));
            w.episode_lower = Duration::ZERO;
            let accepted = u32::try_from(w.accepted.len()).unwrap_or(u32::MAX);
            let count = accepted.min(w.count);
            self.set_count(w, count);
            return;
        }
        if let Some(s) = w.search.as_mut()
            && let Some(trial) = s.trial.take()
        {
            // The hold on trial was too short.
            s.lower = s.lower.max(trial);
            s.whole_second = false;
            w.hold = s.upper;
            w.test_due = None;
            return;
        }
        if w.aftermath.is_some_and(|a| now < a) {
            // Graph counts throttled requests too: the first window after the first pause may
            // still hold its 429s. Pause and probe again, the count stands.
            return;
        }
        let frozen = w.frozen_until.is_some_and(|f| now < f);
        let count = match w.last_step.take() {
            Some(step) if !frozen => w.count.saturating_sub(step),
            _ => (f64::from(w.count) * 0.9) as u32,
        };
        self.set_count(w, count);
        w.frozen_until = Some(now + w.hold * 5);
    }

    /// The probe after the first 429 was accepted: the window's bounds are known.
    fn end_first_episode(&self, w: &mut Window, now: Instant, start: Instant) {
        w.measured = true;
        if !self.adaptive {
            return;
        }
        let upper = (now.saturating_duration_since(start) + self.margin).max(w.hold);
        let lower = (w.episode_lower + self.margin)
            .max(self.base_hold)
            .min(upper);
        w.hold = upper;
        w.search = Some(Search {
            lower,
            upper,
            trial: None,
            whole_second: true,
        });
        w.aftermath = Some(now + upper);
    }

    /// An accepted answer outside any episode: move the pace one step when a window has
    /// passed cleanly.
    fn step(&self, w: &mut Window, now: Instant) {
        if w.search.is_some_and(|s| s.trial.is_some()) {
            // A trial is on: its test decides.
            return;
        }
        let clean = now.saturating_duration_since(w.last_change);
        if clean < w.hold {
            return;
        }
        if let Some(s) = w.search.as_mut() {
            if !s.settled() {
                // Slots answered from now on come back after the trial hold: the first request
                // they pace meets the service's window at its fullest, and goes alone.
                let trial = s
                    .whole_second_trial(self.margin)
                    .unwrap_or((s.lower + s.upper) / 2);
                s.trial = Some(trial);
                w.hold = trial;
                w.test_due = Some(now + trial);
                w.last_change = now;
                return;
            }
            w.hold = s.upper;
        }
        if w.frozen_until.is_some_and(|f| now < f) || w.count >= self.ceiling {
            return;
        }
        // More slots only after ten clean windows: the count was measured, and each step too
        // far costs a pause.
        if clean >= w.hold * 10 {
            let step = (w.count / 20).max(1);
            let count = w.count + step;
            self.set_count(w, count);
            w.last_step = Some(step);
            w.last_change = now;
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
                    test_due: None,
                    probe_in_flight: false,
                    episode_start: None,
                    episode_lower: Duration::ZERO,
                    measured: false,
                    search: None,
                    aftermath: None,
                    last_step: None,
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
        // Whole milliseconds: the pace is shown to people.
        let per = w.hold.saturating_sub(self.inner.margin);
        RateSpec::new(w.count, Duration::from_millis(per.as_millis() as u64))
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
            let role = {
                let mut w = self.inner.lock();
                let test = w.test_due.is_some_and(|d| Instant::now() >= d);
                if w.probe_in_flight {
                    None
                } else if w.probing {
                    w.probe_in_flight = true;
                    Some(Role::Probe)
                } else if test {
                    w.test_due = None;
                    w.probe_in_flight = true;
                    Some(Role::Test)
                } else {
                    Some(Role::Normal)
                }
            };
            match role {
                Some(role) => {
                    return Slot {
                        permit,
                        inner: self.inner.clone(),
                        role,
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
        t.acquire().await.answered(Answer::Throttled {
            retry_after: Some(Duration::from_secs(2)),
        });
        assert_eq!(t.current_rate().count, 4);
        t.gate().close_for(Duration::from_secs(2));
        // After the pause exactly one request (the probe) may go until it is answered.
        let probe = t.acquire().await;
        assert_eq!(probe.role, Role::Probe);
        let second = tokio::time::timeout(Duration::from_millis(100), t.acquire()).await;
        assert!(
            second.is_err(),
            "a second request went out beside the probe"
        );
        probe.answered(Answer::Accepted);
        let next = t.acquire().await;
        assert_eq!(next.role, Role::Normal);
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
        t.acquire().await.answered(Answer::Throttled {
            retry_after: Some(Duration::from_secs(2)),
        });
        assert_eq!(t.current_rate(), RateSpec::new(10, Duration::from_secs(1)));
    }

    /// Drive a throttle configured 4x too high (200/1 s) through a first episode against a
    /// service that takes 100 per window: 100 accepted at once, a 429 with `retry_after` 0.2 s
    /// later, a pause, and the probe accepted at `probe_at` after the start.
    async fn first_episode(retry_after: Option<Duration>, probe_at: Duration) -> Throttle {
        let t = Throttle::new(RateSpec::new(200, Duration::from_secs(1)), true);
        let start = Instant::now();
        let mut slots = Vec::new();
        for _ in 0..100 {
            slots.push(t.acquire().await);
        }
        for s in slots {
            s.answered(Answer::Accepted);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        t.acquire()
            .await
            .answered(Answer::Throttled { retry_after });
        t.gate().close_for((start + probe_at) - Instant::now());
        let probe = t.acquire().await;
        assert_eq!(probe.role, Role::Probe);
        probe.answered(Answer::Accepted);
        t
    }

    /// Answer requests as they are allowed until one of `role` goes; return it unanswered.
    async fn until_role(t: &Throttle, role: Role) -> Slot {
        loop {
            let s = t.acquire().await;
            if s.role == role {
                return s;
            }
            s.answered(Answer::Accepted);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stated_retry_after_bounds_the_window_and_a_whole_second_trial_settles_it() {
        // 429 at 0.2 s saying "2": the window ends in (1.2 s, 2.2 s] after the start.
        let t = first_episode(Some(Duration::from_secs(2)), Duration::from_millis(2200)).await;
        assert_eq!(
            t.current_rate(),
            RateSpec::new(100, Duration::from_millis(2200))
        );
        // One window later the hold tries 2 s (the whole second in range); its first request
        // goes alone and, accepted, settles it.
        let test = until_role(&t, Role::Test).await;
        assert_eq!(t.current_rate(), RateSpec::new(100, Duration::from_secs(2)));
        let second = tokio::time::timeout(Duration::from_millis(50), t.acquire()).await;
        assert!(second.is_err(), "a request went out beside the test");
        test.answered(Answer::Accepted);
        // Settled: windows later, requests go without further trials at the same pace.
        // (Few requests: governor's clock is real time, which a paused test does not advance.)
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let s = t.acquire().await;
            assert_eq!(s.role, Role::Normal);
            s.answered(Answer::Accepted);
        }
        assert_eq!(t.current_rate(), RateSpec::new(100, Duration::from_secs(2)));
        assert!(t.inner.lock().search.is_some_and(|s| s.settled()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_trial_raises_the_lower_bound_and_restores_the_hold() {
        let t = first_episode(None, Duration::from_millis(2700)).await;
        let upper = t.current_rate().per;
        // The service's window is really 2.5 s: the whole-second trial (2 s) is throttled.
        let test = until_role(&t, Role::Test).await;
        assert_eq!(t.current_rate().per, Duration::from_secs(2));
        test.answered(Answer::Throttled { retry_after: None });
        assert_eq!(t.current_rate().per, upper, "the hold goes back up at once");
        assert_eq!(t.current_rate().count, 100, "a failed trial costs no slots");
        let s = t.inner.lock().search.expect("searching");
        assert!(s.lower >= Duration::from_secs(2), "{s:?}");
        assert!(!s.whole_second);
        // After the pause and a clean window, the next trial is the midpoint.
        t.gate().close_for(Duration::from_millis(250));
        until_role(&t, Role::Probe).await.answered(Answer::Accepted);
        let test = until_role(&t, Role::Test).await;
        let trial = t.current_rate().per;
        assert!(
            trial > Duration::from_secs(2) && trial < upper,
            "{trial:?} not between 2 s and {upper:?}"
        );
        test.answered(Answer::Accepted);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_just_after_the_first_pause_does_not_cut_the_count() {
        let t = first_episode(None, Duration::from_millis(2100)).await;
        // Graph still counts the episode's 429s: the first window after it may meet one more.
        t.acquire().await.answered(Answer::Accepted);
        t.acquire()
            .await
            .answered(Answer::Throttled { retry_after: None });
        assert_eq!(t.current_rate().count, 100);
        // Later, with no step to undo, a 429 means the budget shrank: a tenth goes.
        t.gate().close_for(Duration::from_millis(250));
        until_role(&t, Role::Probe).await.answered(Answer::Accepted);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let s = t.acquire().await;
        s.answered(Answer::Throttled { retry_after: None });
        assert_eq!(t.current_rate().count, 90);
    }
}
