//! The timed outage ([`Outage`]): from `at` after the first assignment POST, for `length`,
//! Graph answers every request 503 without doing anything. Checked right after the bearer
//! check, before routing and the throttle, so that a refused request is neither executed nor
//! counted against the window, and draws no seeded fault (the faults a run meets afterwards
//! do not depend on how many requests the outage refused).
//!
//! The clock is pure logic (every method takes the current instant); [`refused`] applies it
//! to one request.

use std::time::Instant;

use super::Outage;
use super::envelope::{Answer, Ctx, Errors};
use super::state::{Caller, Shared};

/// When the outage is, once the first assignment POST has started its clock.
#[derive(Debug)]
pub(crate) struct OutageClock {
    outage: Option<Outage>,
    /// The first assignment POST's arrival; `None` until then.
    started: Option<Instant>,
}

impl OutageClock {
    pub(crate) fn new(outage: Option<Outage>) -> Self {
        Self {
            outage,
            started: None,
        }
    }

    /// An assignment POST arrived at `now`: the first one starts the clock, later ones change
    /// nothing.
    pub(crate) fn assignment_posted(&mut self, now: Instant) {
        if self.outage.is_some() && self.started.is_none() {
            self.started = Some(now);
        }
    }

    /// Whether Graph is down at `now`: within `[start + at, start + at + length)`.
    pub(crate) fn down(&self, now: Instant) -> bool {
        let (Some(outage), Some(started)) = (self.outage, self.started) else {
            return false;
        };
        now.saturating_duration_since(started)
            .checked_sub(outage.at)
            .is_some_and(|into| into < outage.length)
    }
}

/// The 503 a Graph request arriving at `now` gets while Graph is down, counted in the
/// caller's `outage_requests`; `None` while it is up. `assignment_post`: the request is an
/// assignment POST, which starts the clock (and with `at` zero is itself refused).
///
/// The body is Graph's own envelope, never Intune's form: with Graph down, Intune is not
/// reached (as with the 401s).
pub(crate) fn refused(
    shared: &Shared,
    ctx: &Ctx,
    path: &str,
    caller: &Caller,
    assignment_post: bool,
    now: Instant,
) -> Option<Answer> {
    let outage = shared.config.outage?;
    {
        let mut inner = shared.lock();
        if assignment_post {
            inner.outage.assignment_posted(now);
        }
        if !inner.outage.down(now) {
            return None;
        }
        inner.data(&caller.data).stats.outage_requests += 1;
    }
    let errors = Errors {
        ctx,
        intune: false,
        path,
    };
    Some(errors.unavailable(outage.retry_after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn clock(at_ms: u64, length_ms: u64) -> OutageClock {
        OutageClock::new(Some(Outage {
            at: Duration::from_millis(at_ms),
            length: Duration::from_millis(length_ms),
            retry_after: None,
        }))
    }

    #[test]
    fn down_from_at_to_at_plus_length_after_the_first_post() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut c = clock(100, 50);
        // Before any assignment POST, Graph is up whatever the time.
        assert!(!c.down(ms(120)));
        c.assignment_posted(t0);
        // A later POST does not restart the clock.
        c.assignment_posted(ms(100));
        assert!(!c.down(t0));
        assert!(!c.down(ms(99)));
        assert!(c.down(ms(100)));
        assert!(c.down(ms(149)));
        assert!(!c.down(ms(150)));
        assert!(!c.down(ms(10_000)));
    }

    #[test]
    fn at_zero_refuses_the_post_that_starts_the_clock() {
        let t0 = Instant::now();
        let mut c = clock(0, 50);
        c.assignment_posted(t0);
        assert!(c.down(t0));
    }

    #[test]
    fn no_outage_or_zero_length_is_never_down() {
        let t0 = Instant::now();
        let mut none = OutageClock::new(None);
        none.assignment_posted(t0);
        assert!(!none.down(t0));
        let mut empty = clock(0, 0);
        empty.assignment_posted(t0);
        assert!(!empty.down(t0));
    }

    #[test]
    fn an_instant_before_the_start_is_not_down() {
        // Requests race for the lock: one stamped before the first POST's instant may be
        // judged after it. It saturates to "at the start", never wraps.
        let t0 = Instant::now();
        let later = t0 + Duration::from_millis(5);
        let mut c = clock(0, 50);
        c.assignment_posted(later);
        assert!(c.down(t0));
        let mut c = clock(10, 50);
        c.assignment_posted(later);
        assert!(!c.down(t0));
    }
}
