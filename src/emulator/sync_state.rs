//! One tenant's Autopilot sync history: whether one runs, when the next is allowed, and the
//! times `windowsAutopilotSettings` shows. Pure state; `sync` acts on it.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::EmulatorConfig;

/// A sync under way: when it ends, and the records complete when it started.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    pub(crate) ends: Instant,
    pub(crate) snapshot: Vec<usize>,
}

/// Why a sync is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// 409: one is running.
    Running,
    /// 429: within the interval of the last accepted one.
    TooSoon,
}

/// One tenant's sync history.
#[derive(Debug, Default)]
pub(crate) struct SyncState {
    pub(crate) running: Option<Running>,
    /// Before this, a sync is refused 429.
    pub(crate) next_allowed: Option<Instant>,
    /// Wall clock of the last accepted trigger (`lastManualSyncTriggerDateTime`).
    pub(crate) triggered: Option<SystemTime>,
    /// Wall clock the last sync finished (`lastSyncDateTime`).
    pub(crate) finished: Option<SystemTime>,
}

impl SyncState {
    /// The state at start: never synced, or synced `last_sync_ago` before `now`.
    pub(crate) fn new(config: &EmulatorConfig, now: Instant, wall: SystemTime) -> Self {
        let Some(ago) = config.last_sync_ago else {
            return Self::default();
        };
        let at = wall.checked_sub(ago).unwrap_or(wall);
        let wait = config.sync_interval.saturating_sub(ago);
        Self {
            running: None,
            next_allowed: Some(now.checked_add(wait).unwrap_or(now)),
            triggered: Some(at),
            finished: Some(at),
        }
    }

    /// Start a sync at `now` registering `snapshot`, unless one runs or it is too soon.
    pub(crate) fn start(
        &mut self,
        now: Instant,
        wall: SystemTime,
        config: &EmulatorConfig,
        snapshot: Vec<usize>,
    ) -> Result<(), Refused> {
        if self.running.as_ref().is_some_and(|r| now < r.ends) {
            return Err(Refused::Running);
        }
        if self.next_allowed.is_some_and(|at| now < at) {
            return Err(Refused::TooSoon);
        }
        let after = |d: Duration| now.checked_add(d).unwrap_or(now);
        self.running = Some(Running {
            ends: after(config.sync_duration),
            snapshot,
        });
        self.next_allowed = Some(after(config.sync_interval));
        self.triggered = Some(wall);
        Ok(())
    }

    /// The running sync, taken once it has ended by `now`.
    pub(crate) fn ended(&mut self, now: Instant) -> Option<Running> {
        if self.running.as_ref().is_some_and(|r| r.ends <= now) {
            return self.running.take();
        }
        None
    }

    pub(crate) fn status(&self) -> &'static str {
        match (&self.running, self.finished) {
            (Some(_), _) => "inProgress",
            (None, Some(_)) => "completed",
            (None, None) => "unknown",
        }
    }
}
