//! Pacing writes so the run sits on the service's limit without crossing it.
//!
//! * **Window slots** ([`Throttle`]) enforce `--rate COUNT/DURATION` exactly: there are `COUNT`
//!   slots; a request takes one before it is sent and gives it back `DURATION` after its answer
//!   arrived. The service saw the request at some instant between send and answer, so a slot
//!   reused `DURATION` after the answer can never make the service see more than `COUNT`
//!   requests in any window of `DURATION`, whatever the latency. Bursts at the start of each
//!   window are allowed: that is what lets a run finish at the theoretical minimum
//!   ((⌈n/COUNT⌉ − 1) × DURATION).
//! * The **pace** ([`pace`]) learns the service's real budget from its 429s and adjusts how many
//!   slots are usable and how long each is held.
//! * The **gate** ([`Gate`]) holds every worker back while the service says it is over budget.

mod gate;
mod pace;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::RateSpec;
pub use gate::Gate;
pub use pace::Answer;
use pace::{Inner, Role, Window};

/// A window slot held by one request. Call [`Slot::answered`] when its answer (or failure)
/// arrived; dropping it unanswered (the request was never sent) frees it at once.
#[derive(Debug)]
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    inner: Arc<Inner>,
    /// This request goes alone: a probe or a trial's test.
    role: Role,
    /// When it was let go.
    sent: Instant,
}

impl Slot {
    /// Record the answer and start the slot's cool-down: it is reusable one window after
    /// this answer.
    pub fn answered(mut self, answer: Answer) {
        let answered_at = Instant::now();
        let rehold = self.inner.observe(answer, self.role, self.sent);
        let faulted_probe = self.role == Role::Probe && answer == Answer::Other;
        self.role = Role::Normal;
        self.inner.clone().rehold(rehold);
        if faulted_probe && let Some(permit) = self.permit.take() {
            // A probe of a service that looks down, answered with a fault again: the service
            // did no work, and the next probe takes the slot. Held a window, it would come
            // back alone after the outage, a request short of every burst from then on.
            self.inner.release(permit);
            return;
        }
        // A refused request is held a window like any other, probes too: Graph counts
        // refused requests, so it keeps a place in the service's window until then.
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
            // `Other` ends no episode: nothing to hold back.
            let _ = self.inner.observe(Answer::Other, self.role, self.sent);
        }
        if let Some(permit) = self.permit.take() {
            self.inner.release(permit);
        }
    }
}

/// How often a request waiting for a step's test looks again whether it may go.
const RECHECK: Duration = Duration::from_millis(20);

/// The throttle shared by every worker.
pub struct Throttle {
    inner: Arc<Inner>,
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
/// slot exactly on the window's edge: 0.5 % of the window, between 1 ms and 20 ms. The hold
/// already starts at the answer, after the service counted the request; 20 ms covers a coarse
/// server clock (Windows ticks at 15.6 ms). Every window pays it once more, so it stays small:
/// at Intune's 20 s window, 0.1 % of the run.
fn edge_margin(window: Duration) -> Duration {
    (window / 200).clamp(Duration::from_millis(1), Duration::from_millis(20))
}

impl Throttle {
    /// A throttle for `rate`. `adaptive`: lower the pace when the service throttles below it
    /// (and climb back); otherwise the configured rate is used as is.
    pub fn new(rate: RateSpec, adaptive: bool) -> Self {
        let count = NonZeroU32::new(rate.count).unwrap_or(NonZeroU32::MIN);
        let base_hold = rate.per + edge_margin(rate.per);
        let mut window = Window::new(count.get(), base_hold);
        // Graph publishes 100 writes per 20 s per app and tenant (the default): a pace within
        // it is taken on trust, one above it is a guess the service may soon refuse.
        window.proven = rate.within(RateSpec::default());
        Self {
            inner: Arc::new(Inner {
                slots: Arc::new(Semaphore::new(count.get() as usize)),
                ceiling: count.get(),
                base_hold,
                margin: edge_margin(rate.per),
                adaptive,
                window: std::sync::Mutex::new(window),
                probe_done: Default::default(),
            }),
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

    /// Before the service's window is known (the first throttle episode) and without a
    /// Retry-After: how long to pause before the next probe. `None` otherwise.
    pub fn first_probe_in(&self) -> Option<Duration> {
        let at = self.inner.first_episode_probe()?;
        Some(at.saturating_duration_since(Instant::now()))
    }

    /// After a step up in count whose first request was refused: how long until the
    /// service's window, full of this run's own requests, has room again. Taken once, so call
    /// it on every 429 and use it only without a Retry-After.
    pub fn room_in(&self) -> Option<Duration> {
        self.inner.room_in(Instant::now())
    }

    /// The service has shown that it takes the pace in force (see [`Throttle::new`]): until
    /// then, a request in flight may meet the first 429, and so may every other one.
    pub fn proven(&self) -> bool {
        self.inner.lock().proven
    }

    /// The service looks down: from now until a request is answered, requests go one at a
    /// time (the budget closes the gate between them).
    pub fn outage(&self) {
        self.inner.lock().outage = true;
    }

    /// The service looks down: the next request goes alone as a probe, reads too, so that a
    /// service still down meets one request, not every read at once. (After a 429 only writes
    /// probe: reads have their own, larger budget, so a read's answer says nothing of the
    /// write window, and taken as its probe it would end the pause on the wrong evidence.)
    pub fn outage_on(&self) -> bool {
        self.inner.lock().outage
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

    /// Wait until one request may be sent: gate open, a window slot free, the gate still open
    /// (a 429 may have closed it while we waited), and, after a throttle episode or during an
    /// outage, no other probe out: the first request after a pause goes alone, so that a
    /// window the service still counts as full costs one 429, and a service still down one
    /// fault, not a burst of them.
    pub async fn acquire(&self) -> Slot {
        loop {
            self.gate.wait().await;
            // The semaphore is never closed, so a permit is always had.
            let permit = self.inner.slots.clone().acquire_owned().await.ok();
            self.gate.wait().await;
            let notified = self.inner.probe_done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let role = {
                let mut w = self.inner.lock();
                let now = Instant::now();
                let test = w.test_due.is_some_and(|d| now >= d);
                if w.probe_in_flight {
                    None
                } else if w.probing || w.outage {
                    w.probe_in_flight = true;
                    Some(Role::Probe)
                } else if w.count_test {
                    let free = self.inner.slots.available_permits();
                    let role = w.step_role(free, now, self.inner.margin);
                    w.probe_in_flight = role == Some(Role::Test);
                    role
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
                        sent: Instant::now(),
                    };
                }
                None => {
                    if let Some(p) = permit {
                        self.inner.release(p);
                    }
                    // A step's test may become due as slots cool down, with no answer to say
                    // so: look again now and then.
                    let _ = tokio::time::timeout(self.inner.margin.max(RECHECK), notified).await;
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
        let s = t.inner.lock().search.expect("searching");
        assert_eq!(s.upper - t.inner.margin, Duration::from_millis(2200));
        // From this window on the hold tries 2 s (the whole second in range); the first
        // request it paces goes alone and, accepted, settles it.
        assert_eq!(t.current_rate(), RateSpec::new(100, Duration::from_secs(2)));
        // "Come back in 2 s" at 0.2 s into a run set for 1 s windows: the room comes after
        // this run's own requests left, so the 100 measured are the service's, not a floor
        // others left: no doubling test (its refusal would cost a rounded-up pause).
        assert!(!t.inner.lock().doubling);
        let test = until_role(&t, Role::Test).await;
        assert_eq!(t.current_rate(), RateSpec::new(100, Duration::from_secs(2)));
        let second = tokio::time::timeout(Duration::from_millis(50), t.acquire()).await;
        assert!(second.is_err(), "a request went out beside the test");
        test.answered(Answer::Accepted);
        // Settled: windows later, requests go without further trials at the same pace.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let s = t.acquire().await;
            assert_eq!(s.role, Role::Normal);
            s.answered(Answer::Accepted);
        }
        // The count may have stepped up meanwhile: this service accepts everything.
        assert_eq!(t.current_rate().per, Duration::from_secs(2));
        assert!(t.inner.lock().search.is_some_and(|s| s.settled()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_trial_raises_the_lower_bound_and_restores_the_hold() {
        let t = first_episode(None, Duration::from_millis(2700)).await;
        let upper = t.inner.lock().search.expect("searching").upper - t.inner.margin;
        // The service's window is really 2.5 s: the whole-second trial (2 s) is throttled.
        let test = until_role(&t, Role::Test).await;
        assert_eq!(t.current_rate().per, Duration::from_secs(2));
        test.answered(Answer::Throttled { retry_after: None });
        assert_eq!(t.current_rate().per, upper, "the hold goes back up at once");
        assert_eq!(t.current_rate().count, 100, "a failed trial costs no slots");
        let s = t.inner.lock().search.expect("searching");
        assert!(s.lower >= Duration::from_secs(2), "{s:?}");
        assert!(!s.likely);
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

    /// A service that takes `count` per second, answering at once: what one request meets.
    fn service(window: &mut std::collections::VecDeque<Instant>, count: usize) -> Answer {
        let now = Instant::now();
        while window
            .front()
            .is_some_and(|a| *a + Duration::from_secs(1) <= now)
        {
            window.pop_front();
        }
        if window.len() < count {
            window.push_back(now);
            Answer::Accepted
        } else {
            Answer::Throttled { retry_after: None }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_count_measured_far_below_the_rate_doubles_per_round_trip_until_a_test_is_refused() {
        // The service's window still holds an earlier run's requests (last night's run, a
        // `--resume` right after a stop): it takes 4, then says come back in 1 s. Alone, it
        // takes 24 a second; `--rate` says 40.
        let t = Throttle::new(RateSpec::new(40, Duration::from_secs(1)), true);
        for _ in 0..4 {
            t.acquire().await.answered(Answer::Accepted);
        }
        t.acquire().await.answered(Answer::Throttled {
            retry_after: Some(Duration::from_secs(1)),
        });
        assert_eq!(t.current_rate().count, 4);
        t.gate().close_for(Duration::from_secs(1));
        until_role(&t, Role::Probe).await.answered(Answer::Accepted);
        let start = Instant::now();
        let mut window = std::collections::VecDeque::from([start]);
        let (mut tests, mut refused) = (Vec::new(), 0);
        while start.elapsed() < Duration::from_secs(6) {
            let slot = t.acquire().await;
            if slot.role == Role::Test {
                tests.push(t.current_rate().count);
            }
            let answer = service(&mut window, 24);
            slot.answered(answer);
            if answer != Answer::Accepted {
                refused += 1;
                let pause = t.room_in().unwrap_or(t.probe_interval());
                t.gate().close_for(pause);
            }
        }
        // Each doubling's test went alone once the window held the old count: 4 → 8 → 16 →
        // 32 within the first window, not one doubling a window.
        assert_eq!(tests[..3], [8, 16, 32], "{tests:?}");
        // A doubling too far costs a 429 or two, and the count settles on the service's.
        assert!(refused <= 3, "{refused} refused");
        assert_eq!(t.current_rate().count, 24);
    }

    #[tokio::test(start_paused = true)]
    async fn a_count_measured_near_nothing_doubles_before_the_window_search_settles() {
        // Started into a window another run had filled: the very first request is refused, no
        // Retry-After. The probe goes 1.5 s later: the window is somewhere in (1 s, 1.5 s].
        let t = Throttle::new(RateSpec::new(40, Duration::from_secs(1)), true);
        t.acquire()
            .await
            .answered(Answer::Throttled { retry_after: None });
        assert_eq!(t.current_rate().count, 1);
        t.gate().close_for(Duration::from_millis(1500));
        until_role(&t, Role::Probe).await.answered(Answer::Accepted);
        assert!(t.inner.lock().search.is_some_and(|s| !s.settled()));
        // One slot for windows while the last per cent of the window is searched would cost
        // the whole run: the count doubles at once, its test beyond the old count going alone.
        assert_eq!(t.current_rate().count, 2);
        assert!(t.inner.lock().count_test);
    }

    #[tokio::test(start_paused = true)]
    async fn held_back_slots_come_back_one_by_one_at_their_instants() {
        let t = Throttle::new(RateSpec::new(3, Duration::from_secs(1)), true);
        let now = Instant::now();
        let dues = vec![now + Duration::from_secs(2), now + Duration::from_secs(1)];
        t.inner.clone().rehold(dues);
        assert_eq!(t.inner.slots.available_permits(), 1);
        tokio::time::sleep(Duration::from_millis(1001)).await;
        assert_eq!(t.inner.slots.available_permits(), 2);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(t.inner.slots.available_permits(), 3);
        // No more than the free slots are held back.
        t.inner
            .clone()
            .rehold(vec![now + Duration::from_secs(9); 5]);
        assert_eq!(t.inner.slots.available_permits(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_probe_holds_its_slot_a_window_a_faulted_one_frees_it() {
        let t = Throttle::new(RateSpec::new(2, Duration::from_secs(1)), false);
        let slot = |role| Slot {
            permit: t.inner.slots.clone().try_acquire_owned().ok(),
            inner: t.inner.clone(),
            role,
            sent: Instant::now(),
        };
        slot(Role::Probe).answered(Answer::Throttled { retry_after: None });
        tokio::task::yield_now().await;
        assert_eq!(t.inner.slots.available_permits(), 1, "held for a window");
        tokio::time::sleep(Duration::from_millis(1006)).await;
        assert_eq!(t.inner.slots.available_permits(), 2);
        // A probe of a service that is down, answered with a fault: free at once.
        slot(Role::Probe).answered(Answer::Other);
        assert_eq!(t.inner.slots.available_permits(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn without_retry_after_probes_try_the_configured_window_then_the_next_common_one() {
        // Configured 200 per 1 s; the service takes 100 per 2 s and counts refusals.
        let t = Throttle::new(RateSpec::new(200, Duration::from_secs(1)), true);
        let start = Instant::now();
        let mut slots = Vec::new();
        for _ in 0..102 {
            slots.push(t.acquire().await);
        }
        assert_eq!(t.first_probe_in(), None, "no episode yet");
        tokio::time::sleep(Duration::from_millis(10)).await;
        let refused = slots.split_off(100);
        for s in slots {
            s.answered(Answer::Accepted);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        for s in refused {
            s.answered(Answer::Throttled { retry_after: None });
        }
        // Two refusals are counted: room comes when three answers of the window aged out
        // (all at 10 ms), if the window is the configured 1 s (+ 5 ms margin).
        let due = Duration::from_millis(10 + 1000 + 5);
        assert_eq!(t.first_probe_in(), Some(due - start.elapsed()));
        tokio::time::sleep_until(start + due).await;
        let probe = t.acquire().await;
        assert_eq!((probe.role, start.elapsed()), (Role::Probe, due));
        tokio::time::sleep(Duration::from_millis(10)).await;
        probe.answered(Answer::Throttled { retry_after: None });
        // Refused: the window is longer than 1 s; the next common length is 2 s.
        let due = Duration::from_millis(10 + 2000 + 5);
        assert_eq!(t.first_probe_in(), Some(due - start.elapsed()));
        tokio::time::sleep_until(start + due).await;
        t.acquire().await.answered(Answer::Accepted);
        assert_eq!(t.first_probe_in(), None, "the episode is over");
        assert_eq!(t.current_rate().count, 100);
    }

    #[test]
    fn common_windows_come_in_order_then_whole_minutes() {
        let next = |ms| pace::next_window(Duration::from_millis(ms));
        assert_eq!(next(0), Duration::from_millis(100));
        assert_eq!(next(1_015), Duration::from_secs(2));
        assert_eq!(next(10_020), Duration::from_secs(20));
        assert_eq!(next(20_000), Duration::from_secs(30));
        assert_eq!(next(61_000), Duration::from_secs(120));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pace_above_graphs_published_limit_is_proven_by_a_clean_window() {
        assert!(Throttle::new(RateSpec::default(), true).proven());
        assert!(Throttle::new(RateSpec::new(50, Duration::from_secs(20)), true).proven());
        assert!(!Throttle::new(RateSpec::new(101, Duration::from_secs(60)), true).proven());
        let t = Throttle::new(RateSpec::new(10, Duration::from_secs(1)), true);
        for _ in 0..9 {
            t.acquire().await.answered(Answer::Accepted);
            assert!(!t.proven());
        }
        t.acquire().await.answered(Answer::Accepted);
        assert!(t.proven());
        // Or a whole window without a 429, however few were sent.
        let t = Throttle::new(RateSpec::new(10, Duration::from_secs(1)), true);
        t.acquire().await.answered(Answer::Accepted);
        tokio::time::sleep(Duration::from_millis(600)).await;
        t.acquire().await.answered(Answer::Accepted);
        assert!(!t.proven());
        tokio::time::sleep(Duration::from_millis(600)).await;
        t.acquire().await.answered(Answer::Accepted);
        assert!(t.proven());
    }
}
