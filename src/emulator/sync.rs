//! Intune's Autopilot sync, per tenant: `POST …/windowsAutopilotSettings/sync` starts one
//! (204); while it runs another is 409, and within the sync interval of the last accepted one
//! 429 without Retry-After (the sync's own rule, not the throttle's). When it finishes it
//! registers every record that was complete when it started. `GET …/windowsAutopilotSettings`
//! tells its state.
//!
//! Everything happens lazily: [`settle`] brings a tenant's records and sync up to "now" in
//! time order before any request reads them, so the answer is the same whenever it is asked.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::Stats;
use super::directory::NO_DATE;
use super::envelope::{Answer, Errors};
use super::imports::{Imports, Rules};
use super::state::{Shared, TenantData};
use super::sync_state::{Refused, Running};

/// The `id` of the tenant's `windowsAutopilotSettings` (one per tenant in Intune).
const SETTINGS_ID: &str = "7b2ac4e8-5a0f-4c7e-9f3d-0a1b2c3d4e5f";

/// Totals over every tenant (and the unattributed counters), with each configured
/// tenant's own in `tenants`.
pub(crate) fn stats(shared: &Shared) -> Stats {
    let mut inner = shared.lock();
    let mut total = inner.unattributed.clone();
    let mut tenants = BTreeMap::new();
    let now = Instant::now();
    for (key, data) in &mut inner.tenants {
        // A sync may have ended since the last request: its registrations count.
        settle(shared, data, now);
        let stats = data.snapshot();
        total.add(&stats);
        if !shared.tenants.is_empty() {
            tenants.insert(key.clone(), stats);
        }
    }
    total.tenants = tenants;
    total
}

/// Import records as (serial, id, status): one tenant's, or with `None` every tenant's.
pub(crate) fn import_records(
    shared: &Shared,
    tenant: Option<&str>,
) -> Vec<(String, String, String)> {
    let key = match tenant {
        Some(name) => match shared.caller(name) {
            Some(c) => Some(c.data),
            None => return Vec::new(),
        },
        None => None,
    };
    let mut inner = shared.lock();
    let now = Instant::now();
    let mut out = Vec::new();
    for (k, data) in &mut inner.tenants {
        if key.as_ref().is_some_and(|key| key != k) {
            continue;
        }
        settle(shared, data, now);
        out.extend(data.imports.live().into_iter().map(|r| {
            let status = r.status.name().to_string();
            (r.fields.serial.clone(), r.id.clone(), status)
        }));
    }
    out
}

/// Bring the tenant's records and sync up to `now`: records due before a sync's end settle
/// first (so it sees them), then it registers its snapshot, then the rest settle.
pub(crate) fn settle(shared: &Shared, data: &mut TenantData, now: Instant) {
    if let Some(running) = data.sync.ended(now) {
        settle_records(shared, data, running.ends);
        finish(shared, data, &running);
    }
    settle_records(shared, data, now);
}

fn settle_records(shared: &Shared, data: &mut TenantData, upto: Instant) {
    let TenantData {
        imports,
        registered,
        ..
    } = data;
    let listed = |key: &str| shared.listed_serials.contains(key) || registered.has_serial(key);
    let rules = Rules {
        errors: &shared.import_errors,
        listed: &listed,
    };
    imports.settle(upto, &rules);
}

/// Register the snapshot's records as the tenant's identities.
fn finish(shared: &Shared, data: &mut TenantData, running: &Running) {
    let TenantData {
        imports,
        registered,
        stats,
        sync,
        ..
    } = data;
    stats.devices_registered += register(imports, registered, &running.snapshot);
    let duration = shared.config.sync_duration;
    sync.finished = sync.triggered.map(|t| t.checked_add(duration).unwrap_or(t));
}

fn register(
    imports: &Imports,
    registered: &mut super::registered::Registered,
    snapshot: &[usize],
) -> u64 {
    let mut added = 0;
    for record in snapshot.iter().filter_map(|&at| imports.at(at)) {
        if let super::imports::Status::Complete(id) = &record.status
            && registered.register(id, &record.fields)
        {
            added += 1;
        }
    }
    added
}

/// `POST /deviceManagement/windowsAutopilotSettings/sync` (the tenant already settled).
pub(crate) fn trigger(shared: &Shared, data: &mut TenantData, errors: &Errors<'_>) -> Answer {
    let now = Instant::now();
    let snapshot = data.imports.complete();
    let started = data
        .sync
        .start(now, SystemTime::now(), &shared.config, snapshot);
    match started {
        Ok(()) => {
            data.stats.syncs += 1;
            // A zero-length sync is over at once.
            settle(shared, data, now);
            Answer::json(StatusCode::NO_CONTENT, Value::Null)
        }
        Err(why) => refused(&mut data.stats, errors, why, shared.config.sync_interval),
    }
}

fn refused(stats: &mut Stats, errors: &Errors<'_>, why: Refused, interval: Duration) -> Answer {
    stats.syncs_refused += 1;
    match why {
        Refused::Running => errors.answer(
            StatusCode::CONFLICT,
            "Conflict",
            "A sync is already in progress",
        ),
        // No Retry-After: Intune does not say when, and this is not the throttle.
        Refused::TooSoon => errors.answer(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            &format!(
                "Sync can only be triggered once every {}",
                interval_words(interval)
            ),
        ),
    }
}

/// `10 minutes`, `30 seconds`, `1 hour`: the interval as Intune's message words it.
fn interval_words(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = match secs {
        s if s >= 3600 && s % 3600 == 0 => (s / 3600, "hour"),
        s if s >= 60 && s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// `GET /deviceManagement/windowsAutopilotSettings` (the tenant already settled).
pub(crate) fn settings(data: &TenantData, errors: &Errors<'_>) -> Answer {
    let date = |t: Option<SystemTime>| {
        t.map_or(NO_DATE.to_string(), |t| {
            humantime::format_rfc3339_seconds(t).to_string()
        })
    };
    Answer::json(
        StatusCode::OK,
        json!({
            "@odata.context": format!(
                "http://{}/beta/$metadata#deviceManagement/windowsAutopilotSettings/$entity",
                errors.ctx.host
            ),
            "id": SETTINGS_ID,
            "lastSyncDateTime": date(data.sync.finished),
            "lastManualSyncTriggerDateTime": date(data.sync.triggered),
            "syncStatus": data.sync.status(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::EmulatorConfig;
    use crate::emulator::sync_state::SyncState;

    fn config() -> EmulatorConfig {
        EmulatorConfig {
            sync_interval: Duration::from_secs(600),
            sync_duration: Duration::from_secs(2),
            ..EmulatorConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_sync_runs_then_the_interval_refuses_until_it_passes() {
        let config = config();
        let wall = SystemTime::UNIX_EPOCH;
        let mut s = SyncState::new(&config, Instant::now(), wall);
        assert_eq!(s.status(), "unknown");
        assert_eq!(s.start(Instant::now(), wall, &config, vec![3]), Ok(()));
        assert_eq!(s.status(), "inProgress");
        tokio::time::advance(Duration::from_secs(1)).await;
        let now = Instant::now();
        assert_eq!(s.start(now, wall, &config, vec![]), Err(Refused::Running));
        assert!(s.ended(now).is_none());
        tokio::time::advance(Duration::from_secs(1)).await;
        let ended = s.ended(Instant::now()).map(|r| r.snapshot);
        assert_eq!(ended, Some(vec![3]));
        let now = Instant::now();
        assert_eq!(s.start(now, wall, &config, vec![]), Err(Refused::TooSoon));
        tokio::time::advance(Duration::from_secs(598)).await;
        assert_eq!(s.start(Instant::now(), wall, &config, vec![]), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_sync_long_ago_leaves_only_the_rest_of_the_interval() {
        let config = EmulatorConfig {
            last_sync_ago: Some(Duration::from_secs(540)),
            ..config()
        };
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut s = SyncState::new(&config, Instant::now(), wall);
        assert_eq!(s.status(), "completed");
        assert_eq!(
            s.finished,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(460))
        );
        let now = Instant::now();
        assert_eq!(s.start(now, wall, &config, vec![]), Err(Refused::TooSoon));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(s.start(Instant::now(), wall, &config, vec![]), Ok(()));
    }

    #[test]
    fn intervals_are_worded_as_intune_words_them() {
        assert_eq!(interval_words(Duration::from_secs(600)), "10 minutes");
        assert_eq!(interval_words(Duration::from_secs(3600)), "1 hour");
        assert_eq!(interval_words(Duration::from_secs(90)), "90 seconds");
    }
}
