//! The timed outage ([`Outage`]): from `at` after the first write (an assignment POST or a
//! group member write), for `length`,
//! Graph answers every request 503 without doing anything. Checked right after the bearer
//! check, before routing and the throttle, so that a refused request is neither executed nor
//! counted against the window, and draws no seeded fault (the faults a run meets afterwards
//! do not depend on how many requests the outage refused).
//!
//! The clock is pure logic (every method takes the current instant); `graph::outage_refusal`
//! applies it to one request.

use std::time::Duration;

use tokio::time::Instant;

/// A time-based outage of Graph, so that a run can be rehearsed riding through one (a
/// regional incident, a deployment gone wrong): unlike the seeded `fault_503`, which strikes
/// single requests at random, every Graph request fails for a stretch of time, and clients
/// must wait it out without burning their retries.
///
/// The clock starts at the emulator's first assignment POST or group member write (`PATCH
/// /groups/{id}`, `POST …/members/$ref`; top-level or inside `$batch`), so that the outage
/// hits a run however long its setup took; with `at` zero that write is already refused. For
/// `length` from then on, every Graph request (assignment POST and GET, identity reads,
/// `updateDeviceProperties`, directory reads and writes, `$batch` envelopes and their inner
/// requests) is answered 503 `ServiceUnavailable` once its bearer token has been checked; the
/// token endpoint stays up, as Entra ID is not Graph. One outage for the whole emulator, all
/// tenants alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    /// How long after the first assignment POST (or member write) the outage begins.
    pub at: Duration,
    /// How long it lasts. Zero: no outage.
    pub length: Duration,
    /// `Retry-After` seconds sent with every outage 503 (no header when `None`, as Graph often
    /// sends none for a 503).
    pub retry_after: Option<u64>,
}

/// When the outage is, once the first write has started its clock.
#[derive(Debug)]
pub(crate) struct OutageClock {
    outage: Option<Outage>,
    /// The first write's arrival; `None` until then.
    started: Option<Instant>,
}

impl OutageClock {
    pub(crate) fn new(outage: Option<Outage>) -> Self {
        Self {
            outage,
            started: None,
        }
    }

    /// A write that starts the clock arrived at `now`: the first one does, later ones change
    /// nothing.
    pub(crate) fn write_arrived(&mut self, now: Instant) {
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
        // Before any write, Graph is up whatever the time.
        assert!(!c.down(ms(120)));
        c.write_arrived(t0);
        // A later POST does not restart the clock.
        c.write_arrived(ms(100));
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
        c.write_arrived(t0);
        assert!(c.down(t0));
    }

    #[test]
    fn no_outage_or_zero_length_is_never_down() {
        let t0 = Instant::now();
        let mut none = OutageClock::new(None);
        none.write_arrived(t0);
        assert!(!none.down(t0));
        let mut empty = clock(0, 0);
        empty.write_arrived(t0);
        assert!(!empty.down(t0));
    }

    #[test]
    fn an_instant_before_the_start_is_not_down() {
        // Requests race for the lock: one stamped before the first POST's instant may be
        // judged after it. It saturates to "at the start", never wraps.
        let t0 = Instant::now();
        let later = t0 + Duration::from_millis(5);
        let mut c = clock(0, 50);
        c.write_arrived(later);
        assert!(c.down(t0));
        let mut c = clock(10, 50);
        c.write_arrived(later);
        assert!(!c.down(t0));
    }
}
