//! The shared pause. One 429 means the app is over its budget, so every worker must hold
//! back, not just the one that got it: no request is sent while the gate is closed.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

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
