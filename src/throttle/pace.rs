//! The adaptive pace: how many window slots are usable and how long each is held, learned
//! from the service's answers (see [`Inner::observe`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

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

/// Why a request goes alone, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Normal,
    /// The first request after a throttle pause.
    Probe,
    /// The first request paced by a shorter hold on trial: its answer decides the trial.
    Test,
}

/// Adaptive state: how many slots are usable and how long each is held.
#[derive(Debug)]
pub(super) struct Window {
    /// Slots usable now (≤ the configured COUNT).
    pub(super) count: u32,
    /// Hold after each answer (≥ the configured DURATION + margin).
    pub(super) hold: Duration,
    /// Permits to retire as they come back (the count was lowered while they were out).
    pub(super) debt: u32,
    /// Accepted requests answered within the last `hold`: (answer time, send time), in
    /// answer order.
    pub(super) accepted: std::collections::VecDeque<(Instant, Instant)>,
    /// A throttle episode is on: after the gate opens, one probe goes first.
    pub(super) probing: bool,
    /// The service looks down (faults cluster): one request at a time finds out when it is
    /// back, instead of every row in flight failing again.
    pub(super) outage: bool,
    /// The next request at or after this instant tests the hold on trial.
    pub(super) test_due: Option<Instant>,
    /// A probe or test is out.
    pub(super) probe_in_flight: bool,
    /// First episode only: start of the window the service was counting when it began (the
    /// first accepted answer within `hold` before the first 429).
    pub(super) episode_start: Option<Instant>,
    /// First episode only: the service's window is known to be longer than this.
    pub(super) episode_lower: Duration,
    /// First episode only: when the requests the service accepted in that window were
    /// answered. The service frees its room one window after each, not all at once.
    pub(super) episode_accepted: Vec<Instant>,
    /// First episode only: when its 429s were answered. Graph counts refused requests too, so
    /// each one keeps a place in its window until it has aged out.
    pub(super) episode_refused: Vec<Instant>,
    /// First episode only: a Retry-After was stated, and whether one named a time (less the
    /// second it may be rounded up by) before this run's oldest request in the window would
    /// have left a window of the configured length: then the window held others' requests,
    /// and the count measured is a floor.
    pub(super) episode_stated: bool,
    pub(super) episode_early_room: bool,
    /// The service has throttled before: its budget has been measured once.
    pub(super) measured: bool,
    /// The service has shown that it takes the pace in force: measured, or a whole window's
    /// count accepted, or a whole window gone by since the first answer, without a 429 (or a
    /// pace within Graph's published limit).
    pub(super) proven: bool,
    /// When the first request was accepted.
    pub(super) first_accepted: Option<Instant>,
    /// The search for the service's window length, once measured.
    pub(super) search: Option<Search>,
    /// One window after the first episode, during which a 429 says nothing about the count:
    /// the service may still be counting the episode's own 429s.
    pub(super) aftermath: Option<Instant>,
    /// The last step up in slots, to undo when it proves one step too far.
    pub(super) last_step: Option<u32>,
    /// Steps up may double the count (see [`Inner::step`]) until one proves too far.
    pub(super) doubling: bool,
    /// A step up is pending until its first request beyond the old count is answered: that
    /// request goes alone (as a [`Role::Test`], see [`Window::step_role`]), so a window the
    /// service counts as full at the old count costs one 429, not a burst.
    pub(super) count_test: bool,
    /// After a step up's first request was refused: when the service's window, full of this
    /// run's requests at the old count, frees its first place (the oldest accepted answer plus
    /// the hold). Without Retry-After, the probe waits for it rather than guessing.
    pub(super) room_at: Option<Instant>,
    /// No steps up before this instant (set after a throttle, as TCP's ssthresh does).
    pub(super) frozen_until: Option<Instant>,
    pub(super) last_change: Instant,
}

impl Window {
    /// A step up is pending (see [`Window::count_test`]): the role of a request that holds a
    /// slot while `free` others are free, or `None` to wait. Within the old count it goes as
    /// usual. Beyond it, it is the step's test, and goes only once the service's window
    /// surely holds the old count of this run's requests: sent within the window (less the
    /// edge margin), and answered. Sent earlier, in the gap between two bursts, it would fit
    /// whatever the service's count, and let the whole step follow into a full window.
    pub(super) fn step_role(&self, free: usize, now: Instant, margin: Duration) -> Option<Role> {
        let old = self.count.saturating_sub(self.last_step.unwrap_or(0)) as usize;
        let out = ((self.count + self.debt) as usize).saturating_sub(free);
        if out <= old {
            return Some(Role::Normal);
        }
        let window = self
            .search
            .map_or(self.hold, |s| s.lower)
            .saturating_sub(margin);
        let since = now.checked_sub(window.saturating_sub(margin));
        let surely = since.map_or(0, |since| {
            self.accepted
                .iter()
                .filter(|(_, sent)| *sent > since)
                .count()
        });
        (surely >= old).then_some(Role::Test)
    }

    /// The `n`th (from 0) of the first episode's answers, accepted and refused together, in
    /// time order; the last one past the end.
    fn episode_entry(&self, n: usize) -> Option<Instant> {
        let mut all: Vec<Instant> = self
            .episode_accepted
            .iter()
            .chain(&self.episode_refused)
            .copied()
            .collect();
        all.sort_unstable();
        all.get(n).or(all.last()).copied()
    }

    pub(super) fn new(count: u32, hold: Duration) -> Self {
        Self {
            count,
            hold,
            debt: 0,
            accepted: std::collections::VecDeque::new(),
            probing: false,
            outage: false,
            test_due: None,
            probe_in_flight: false,
            episode_start: None,
            episode_lower: Duration::ZERO,
            episode_accepted: Vec::new(),
            episode_refused: Vec::new(),
            episode_stated: false,
            episode_early_room: false,
            measured: false,
            proven: false,
            first_accepted: None,
            search: None,
            aftermath: None,
            last_step: None,
            doubling: true,
            count_test: false,
            room_at: None,
            frozen_until: None,
            last_change: Instant::now(),
        }
    }
}

/// Window lengths services commonly count over, shortest first: 1-2-5 steps, then 20 s
/// (Intune's writes), 30 s and a minute; past the last, whole minutes. Few on purpose: every
/// probe that fails on the way up costs a request the service counts.
const COMMON_WINDOWS_MS: [u64; 10] = [
    100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 30_000, 60_000,
];

/// The shortest common window length longer than `lower`.
pub(super) fn next_window(lower: Duration) -> Duration {
    COMMON_WINDOWS_MS
        .iter()
        .map(|ms| Duration::from_millis(*ms))
        .find(|w| *w > lower)
        .unwrap_or_else(|| Duration::from_secs((lower.as_secs() / 60 + 1) * 60))
}

/// Bisection of the hold between a value the service throttled (`lower`) and one it accepted
/// for a whole window (`upper`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Search {
    pub(super) lower: Duration,
    pub(super) upper: Duration,
    /// The hold on trial, between the two.
    pub(super) trial: Option<Duration>,
    /// The first trial is a likely length in range, if any: Graph's published windows are
    /// whole seconds and usually common ones (20 s for Intune's writes), so it usually ends the
    /// search at once.
    pub(super) likely: bool,
}

impl Search {
    /// Close enough: a further halving would gain under 2 % of the pace, and each trial that
    /// fails costs a pause.
    pub(super) fn settled(&self) -> bool {
        self.upper.saturating_sub(self.lower) <= self.upper / 50
    }

    /// The first trial (plus the edge margin), strictly between the bounds: the shortest
    /// common window length ([`next_window`]), else the shortest whole number of seconds.
    /// First probes without Retry-After stop at common lengths, so the lower bound is often
    /// the common length below the service's.
    fn likely_trial(&mut self, margin: Duration) -> Option<Duration> {
        if !self.likely {
            return None;
        }
        let above = self.lower.saturating_sub(margin);
        let common = next_window(above);
        let whole = Duration::from_secs(above.as_secs() + 1);
        let trial = [common, whole]
            .into_iter()
            .map(|t| t + margin)
            .find(|t| *t < self.upper);
        if trial.is_none() {
            self.likely = false;
        }
        trial
    }
}

pub(super) struct Inner {
    pub(super) slots: Arc<Semaphore>,
    pub(super) ceiling: u32,
    pub(super) base_hold: Duration,
    /// The part of each hold that is edge margin, not window.
    pub(super) margin: Duration,
    pub(super) adaptive: bool,
    pub(super) window: Mutex<Window>,
    pub(super) probe_done: Notify,
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
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Give a permit back, or retire it if the usable count was lowered meanwhile.
    pub(super) fn release(&self, permit: OwnedSemaphorePermit) {
        let mut w = self.lock();
        if w.debt > 0 {
            w.debt -= 1;
            permit.forget();
        } else {
            drop(permit);
        }
    }

    /// Hold free slots back until the instants `dues` (see [`Inner::observe`]): one slot each,
    /// as many as are free now.
    pub(super) fn rehold(self: Arc<Self>, mut dues: Vec<Instant>) {
        dues.sort_unstable();
        let held: Vec<(Instant, OwnedSemaphorePermit)> = dues
            .into_iter()
            .map_while(|due| Some((due, self.slots.clone().try_acquire_owned().ok()?)))
            .collect();
        if held.is_empty() {
            return;
        }
        tokio::spawn(async move {
            for (due, permit) in held {
                tokio::time::sleep_until(due).await;
                self.release(permit);
            }
        });
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
    /// * **Window.** Without Retry-After, probes try the configured window, then common
    ///   lengths ([`Inner::first_episode_probe`]). When a probe is accepted, the time since
    ///   the window began bounds the service's window from above; every 429 of the episode (a
    ///   failed probe; the end of a stated Retry-After, which Graph rounds up to whole seconds)
    ///   bounds it from below. The hold is then bisected between the two, one trial per
    ///   window: a trial the service throttles becomes the new lower bound and the hold goes
    ///   back up, a clean one the new upper bound, until they are within 2 %. A likely length
    ///   in range is tried first (common, else whole seconds), and the first request a trial
    ///   paces goes alone, so a failed trial costs one 429.
    /// * **The first window after the pause** may still hold the episode's 429s (Graph counts
    ///   throttled requests too): a 429 there pauses and probes again but cuts nothing.
    /// * **Back towards `--rate`.** Once the window is found (at once, while the count is under
    ///   half of `--rate`), a count that may be a floor others left doubles as each doubling
    ///   fits ([`Inner::step`]); otherwise, and after a
    ///   doubling too far, every ten clean windows the count grows by 5 %. Each step's first
    ///   request beyond the old count goes alone ([`Window::step_role`]); a 429 on a step sets
    ///   the count to what the service took and freezes steps for five windows; a 429 with no
    ///   step in effect, or while frozen, cuts the count by a tenth (another app may have
    ///   started sharing the budget).
    ///
    /// So a configured rate above the service's limit converges onto it and stays there with
    /// rare 429s.
    ///
    /// Returns the instants until which free slots must be held back: at the end of the first
    /// episode, the slots of the requests accepted before it come back one measured window
    /// after each was answered, as the service's room does (they were freed after the shorter
    /// configured window, and would otherwise go out at once into a window still full).
    pub(super) fn observe(&self, answer: Answer, role: Role, sent: Instant) -> Vec<Instant> {
        let mut rehold = Vec::new();
        let now = Instant::now();
        let mut w = self.lock();
        let horizon = now.checked_sub(w.hold).unwrap_or(now);
        while w.accepted.front().is_some_and(|(t, _)| *t < horizon) {
            w.accepted.pop_front();
        }
        if role != Role::Normal {
            w.probe_in_flight = false;
        }
        if answer != Answer::Other {
            // The service answers again.
            w.outage = false;
        }
        match answer {
            Answer::Accepted => {
                w.accepted.push_back((now, sent));
                if role == Role::Test && std::mem::take(&mut w.count_test) {
                    // The step up's first request fit: the rest of the step follows, and a
                    // doubling doubles again at once (its test waits for the window to hold
                    // the new count), as TCP's slow start does per round trip.
                    if w.doubling {
                        let count = w.count;
                        self.step_up(&mut w, now, count);
                    }
                } else if role == Role::Test {
                    // The shorter hold on trial did not overrun the service's window.
                    if let Some(s) = w.search.as_mut()
                        && let Some(trial) = s.trial.take()
                    {
                        s.upper = trial;
                        if std::mem::take(&mut s.likely) {
                            // A likely window fits: take it as the service's.
                            s.lower = s.lower.max(trial - trial / 50);
                        }
                        w.last_change = now;
                    }
                } else if role == Role::Probe {
                    // The pause is over: the service accepts again.
                    w.probing = false;
                    w.last_change = now;
                    if let Some(start) = w.episode_start.take() {
                        self.end_first_episode(&mut w, now, start);
                        let hold = w.hold;
                        rehold = std::mem::take(&mut w.episode_accepted)
                            .into_iter()
                            .map(|a| a + hold)
                            .filter(|due| *due > now)
                            .collect();
                        if let Some(mut s) = w.search.filter(|_| self.adaptive) {
                            if w.doubling && (s.settled() || w.count < self.ceiling / 2) {
                                // The count just measured may be a window others had filled:
                                // find out at once (see [`Inner::step`]). Far below `--rate`
                                // (a run started into a window another run had filled may
                                // measure next to nothing), before the window's last per cent:
                                // the search goes on once the count has settled.
                                let count = w.count;
                                self.step_up(&mut w, now, count);
                            } else if let Some(trial) = s.likely_trial(self.margin) {
                                // A likely window length in range (a stated HTTP-date, rounded
                                // up to whole seconds, leaves the upper bound up to a second
                                // long): try it from this window on, not one window later.
                                // The slots held back above keep the upper bound.
                                w.search = Some(s);
                                Self::start_trial(&mut w, now, trial);
                            }
                        }
                    }
                } else if w.probing && !w.measured {
                    // Sent before the first 429 and accepted: part of the measured budget.
                    let count = w.count + 1;
                    self.set_count(&mut w, count);
                } else if self.adaptive && !w.probing {
                    self.step(&mut w, now);
                }
                let first = *w.first_accepted.get_or_insert(now);
                if !w.probing && (w.accepted.len() >= w.count as usize || now - first >= w.hold) {
                    w.proven = true;
                }
            }
            Answer::Throttled { retry_after } => {
                if !w.probing {
                    w.probing = true;
                    if self.adaptive {
                        self.throttled(&mut w, now, role);
                    }
                    w.last_change = now;
                }
                if let Some(start) = w.episode_start {
                    // The service's window is longer than the time since the oldest answer that
                    // may still fill it: with R refusals already counted (Graph counts them),
                    // room needs R + 1 of the window's requests to have aged out. And
                    // (Retry-After being rounded up to whole seconds) longer than the time
                    // until a second before the stated instant.
                    let oldest = w.episode_entry(w.episode_refused.len()).unwrap_or(start);
                    let since = now.saturating_duration_since(oldest);
                    let stated = retry_after
                        .map(|ra| {
                            now.saturating_duration_since(start)
                                + ra.saturating_sub(Duration::from_secs(1))
                        })
                        .unwrap_or_default();
                    w.episode_lower = w.episode_lower.max(since).max(stated);
                    w.episode_refused.push(now);
                    if let Some(ra) = retry_after {
                        let configured = self.base_hold.saturating_sub(self.margin);
                        w.episode_stated = true;
                        // Whole seconds (or an HTTP-date) may name a time up to a second
                        // after the room: the room came before this run's window was out
                        // if even a second earlier could have.
                        let earliest = now + ra.saturating_sub(Duration::from_secs(1));
                        w.episode_early_room |= earliest < start + configured;
                    }
                }
            }
            Answer::Other => {
                if role == Role::Test && w.search.is_some_and(|s| s.trial.is_some()) {
                    // No verdict: the next request tests the trial instead (a step's test
                    // stays pending by itself).
                    w.test_due = Some(now);
                }
            }
        }
        // Requests waiting for a step's test learn from every answer whether it may go.
        let wake = role != Role::Normal || w.count_test;
        drop(w);
        if wake {
            self.probe_done.notify_waiters();
        }
        rehold
    }

    /// A 429 that starts an episode.
    fn throttled(&self, w: &mut Window, now: Instant, role: Role) {
        if !w.measured {
            w.episode_start = Some(w.accepted.front().map_or(now, |(t, _)| *t));
            w.episode_lower = Duration::ZERO;
            w.episode_accepted = w.accepted.iter().map(|(t, _)| *t).collect();
            w.episode_refused.clear();
            (w.episode_stated, w.episode_early_room) = (false, false);
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
            s.likely = false;
            w.hold = s.upper;
            w.test_due = None;
            return;
        }
        let step_test = role == Role::Test && std::mem::take(&mut w.count_test);
        if step_test || w.last_step.is_some() {
            // A step up went too far: the service's window is full of this run's requests,
            // and has room again when the oldest of them ages out.
            w.count_test = false;
            w.room_at = w.accepted.front().map(|(a, _)| *a + w.hold);
        } else if w.aftermath.is_some_and(|a| now < a) {
            // Graph counts throttled requests too: the first window after the first pause may
            // still hold its 429s. Pause and probe again, the count stands.
            return;
        }
        let frozen = w.frozen_until.is_some_and(|f| now < f);
        let count = match w.last_step.take() {
            Some(step) if !frozen || step_test || w.aftermath.is_some_and(|a| now < a) => {
                w.doubling = false;
                // The window is full of this run's requests: what the service took within it
                // is its count. A refused test says the old count was already all of it; a
                // later 429 (the test fitted, the rest of the step did not) may come from an
                // earlier step of a doubling chain, so the old count proves nothing then.
                let took = u32::try_from(w.accepted.len()).unwrap_or(u32::MAX);
                let floor = if step_test {
                    w.count.saturating_sub(step)
                } else {
                    1
                };
                took.min(w.count).max(floor)
            }
            _ => (f64::from(w.count) * 0.9) as u32,
        };
        self.set_count(w, count);
        w.frozen_until = Some(now + w.hold * 5);
    }

    /// After a refused step up and no Retry-After: how long until the window has room (see
    /// [`Window::room_at`]). Taken once.
    pub(super) fn room_in(&self, now: Instant) -> Option<Duration> {
        let at = self.lock().room_at.take()?;
        Some(at.saturating_duration_since(now))
    }

    /// First episode, no Retry-After stated: when the next probe should go. The configured
    /// window is tried first (the count may be all that was wrong); once it failed, the next
    /// common window length above what the failures proved ([`next_window`]). Each is timed
    /// for the instant the service has room if its window is that long: when as many of the
    /// window's requests have aged out as it refused, plus one. A probe sent earlier would
    /// fail, and Graph counts it, which takes a place from the next window's burst.
    pub(super) fn first_episode_probe(&self) -> Option<Instant> {
        let w = self.lock();
        w.episode_start?;
        let configured = self.base_hold.saturating_sub(self.margin);
        let window = if w.episode_lower < configured {
            configured
        } else {
            next_window(w.episode_lower)
        };
        let oldest = w.episode_entry(w.episode_refused.len())?;
        Some(oldest + window + self.margin)
    }

    /// The probe after the first 429 was accepted: the window's bounds are known.
    fn end_first_episode(&self, w: &mut Window, now: Instant, start: Instant) {
        w.measured = true;
        w.proven = true;
        // Doubling tests whether the count measured was a window others had filled. A stated
        // Retry-After says so already: room came back before this run's own requests left
        // the window, or it did not (then a refused test would cost a pause as long as the
        // rounded-up Retry-After). Without one, a refused test waits only for the room.
        w.doubling = !w.episode_stated || w.episode_early_room;
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
            likely: true,
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
                let trial = s
                    .likely_trial(self.margin)
                    .unwrap_or((s.lower + s.upper) / 2);
                Self::start_trial(w, now, trial);
                return;
            }
            w.hold = s.upper;
        }
        if w.frozen_until.is_some_and(|f| now < f) || w.count >= self.ceiling {
            return;
        }
        // A first measurement may have met a window others had filled (the run before a
        // `--resume`, last night's run, another app's burst): whatever fraction of `--rate` it
        // measured, the count doubles after each clean window until a doubling draws a 429,
        // then grows 5 % per ten clean windows. Each step's first request goes alone, so a
        // step too far costs one 429, and the window it met is this run's own: the pause
        // lasts until its oldest request ages out.
        let (wait, step) = if w.doubling {
            (w.hold, w.count)
        } else {
            (w.hold * 10, (w.count / 20).max(1))
        };
        if clean >= wait {
            self.step_up(w, now, step);
        }
    }

    /// Hold slots for `trial` from now on. Slots answered from now on come back after it: the
    /// first request they pace meets the service's window at its fullest, and goes alone.
    fn start_trial(w: &mut Window, now: Instant, trial: Duration) {
        if let Some(s) = w.search.as_mut() {
            s.trial = Some(trial);
        }
        w.hold = trial;
        w.test_due = Some(now + trial);
        w.last_change = now;
    }

    /// `step` more slots, pending the first request beyond the old count
    /// ([`Window::count_test`]). Nothing above `--rate`.
    fn step_up(&self, w: &mut Window, now: Instant, step: u32) {
        let step = step.min(self.ceiling.saturating_sub(w.count));
        if step == 0 {
            return;
        }
        let count = w.count + step;
        self.set_count(w, count);
        w.last_step = Some(step);
        w.last_change = now;
        w.count_test = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_trial_is_the_common_length_in_range_else_a_whole_second() {
        let ms = Duration::from_millis;
        let search = |lower, upper| Search {
            lower: ms(lower),
            upper: ms(upper),
            trial: None,
            likely: true,
        };
        let margin = ms(20);
        // Probes stopped at 15 s (refused) and 20 s (accepted): Intune's 20 s, not 16 s.
        assert_eq!(
            search(15_040, 21_300).likely_trial(margin),
            Some(ms(20_020))
        );
        // No common length in range: the whole second.
        assert_eq!(search(6_300, 7_500).likely_trial(margin), Some(ms(7_020)));
        // Neither: bisection from then on.
        let mut s = search(2_100, 2_600);
        assert_eq!(s.likely_trial(margin), None);
        assert!(!s.likely);
    }
}
