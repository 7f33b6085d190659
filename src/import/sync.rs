//! The Autopilot sync: it makes registered devices appear in the identity listing. The service
//! takes one every ten minutes (429 otherwise, without Retry-After) and none while one runs
//! (409). Neither refusal fails the import: the sync is asked for only when the tenant's last
//! sync time says the service will take it, and asked again when it will.

use std::time::{Duration, SystemTime};

use super::reach::Reach;
use super::send::{self, Sent, Stopped};
use crate::graph::model::SyncAnswer;

/// The service's rule: one sync per ten minutes.
pub const INTERVAL: Duration = Duration::from_secs(600);

/// What asking for a sync gave: started now, or when to ask again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    Started,
    AgainIn(Duration),
}

/// Ask for one sync, when the tenant's settings say the service will take one: a sync is
/// not even sent within `interval` ([`INTERVAL`]) of the last, so its 429 is rare and, when
/// it comes, most likely the app's throttle (the sync is a write: it takes a write slot). A
/// refused sync is asked again when allowed, or a fortieth of the interval later (15 s for
/// Intune's).
pub async fn ask(reach: &Reach, interval: Duration) -> Result<Asked, Stopped> {
    if let Some(wait) = until_allowed(reach, interval).await? {
        return Ok(Asked::AgainIn(wait));
    }
    reach.counts.syncs.inc();
    let (budget, graph) = (&reach.budget, &reach.graph);
    let mut attempts = 0;
    let sent = send::write(
        budget,
        &mut attempts,
        |t| async move { graph.sync(&t).await },
    )
    .await?;
    let soon = interval / 40;
    match sent {
        Sent::Done(SyncAnswer::Started) => Ok(Asked::Started),
        Sent::Done(SyncAnswer::Running) => Ok(Asked::AgainIn(soon)),
        // Refused though the settings said it would be taken: they lag; a tenth of the
        // interval (a minute for Intune's), not a fortieth, before asking again.
        Sent::Done(SyncAnswer::TooSoon) => Ok(Asked::AgainIn(
            until_allowed(reach, interval)
                .await?
                .unwrap_or(interval / 10),
        )),
        // It may have started: the listing tells, and a second ask meets 409 or 429.
        Sent::Unknown(_) => Ok(Asked::AgainIn(soon)),
        Sent::Refused { error: e, .. } => {
            tracing::warn!(
                "{}",
                crate::connect::named(
                    reach.key.as_deref(),
                    format!(
                        "the Autopilot sync was refused ({}: {}); asking again in {}",
                        e.code,
                        crate::output::printable(&e.message),
                        humantime::format_duration(interval / 10)
                    )
                )
            );
            Ok(Asked::AgainIn(interval / 10))
        }
    }
}

/// How long until the service takes a sync again, by the tenant's last manual sync: `None`
/// when it would now (or the settings cannot be read: then the sync's own answer decides).
async fn until_allowed(reach: &Reach, interval: Duration) -> Result<Option<Duration>, Stopped> {
    reach.counts.reads.inc();
    let (budget, graph) = (&reach.budget, &reach.graph);
    let settings = send::read(
        budget,
        |t| async move { graph.autopilot_settings(&t).await },
    )
    .await;
    let last = match settings {
        Err(None) => return Err(Stopped),
        Err(Some(_)) => None,
        Ok(s) => s.last_manual_sync.as_deref().and_then(parse_time),
    };
    let now = SystemTime::now();
    Ok(last
        .filter(|l| now < *l + interval + margin(interval))
        .map(|l| wait_after(Some(l), now, interval)))
}

/// Beyond the interval, before a sync is asked for: the settings may give whole seconds, so
/// the last sync may have been up to a second later than they say (5 s for Intune's ten
/// minutes).
fn margin(interval: Duration) -> Duration {
    (interval / 120).max(Duration::from_secs(1))
}

/// `interval` (and a margin) after `last`: at least a fortieth of it, at most all of it.
fn wait_after(last: Option<SystemTime>, now: SystemTime, interval: Duration) -> Duration {
    let Some(last) = last else {
        return interval / 10;
    };
    let allowed = last + interval + margin(interval);
    allowed
        .duration_since(now)
        .unwrap_or(Duration::ZERO)
        .clamp(interval / 40, interval)
}

/// An RFC 3339 time as Graph writes it (`2026-12-02T00:10:00.1234567Z`); Graph's "never"
/// (`0001-01-01T00:00:00Z`) is no time.
fn parse_time(s: &str) -> Option<SystemTime> {
    let t = humantime::parse_rfc3339_weak(s.trim().trim_end_matches('Z')).ok()?;
    (t > SystemTime::UNIX_EPOCH).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_sync_is_asked_again_ten_minutes_after_the_last() {
        let now = SystemTime::now();
        let last = now - Duration::from_secs(240);
        let wait = wait_after(Some(last), now, INTERVAL);
        assert_eq!(wait, Duration::from_secs(365));
        let long_ago = Some(now - INTERVAL * 2);
        // A sync the settings date a moment less than the interval ago is not yet asked for:
        // whole seconds may hide up to one.
        assert!(now < (now - INTERVAL) + INTERVAL + margin(INTERVAL));
        assert_eq!(wait_after(long_ago, now, INTERVAL), Duration::from_secs(15));
        assert_eq!(wait_after(None, now, INTERVAL), Duration::from_secs(60));
    }

    #[test]
    fn graph_times_are_read_and_never_is_no_time() {
        assert!(parse_time("2026-12-02T00:10:00.1234567Z").is_some());
        assert!(parse_time("2026-12-02T00:10:00Z").is_some());
        assert_eq!(parse_time("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_time("yesterday"), None);
    }
}
