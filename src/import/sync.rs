//! The Autopilot sync: it makes registered devices appear in the identity listing. The service
//! takes one every ten minutes (429 otherwise, without Retry-After) and none while one runs
//! (409). Neither refusal is the app's throttle, and neither fails the import: the sync is
//! asked again when the service will take it, read from the tenant's last sync time.

use std::time::{Duration, SystemTime};

use super::reach::Reach;
use super::send::{self, Stopped};
use crate::graph::model::SyncAnswer;

/// The service's rule: one sync per ten minutes.
pub const INTERVAL: Duration = Duration::from_secs(600);

/// What asking for a sync gave: started now, or when to ask again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    Started,
    AgainIn(Duration),
}

/// Ask for one sync. The request takes a read's room, not a write slot: one every ten minutes
/// costs the write window nothing, and its 429 must not teach the window a throttle.
/// `interval`: the service's least time between syncs ([`INTERVAL`]); a refused sync is asked
/// again a fortieth of it later at the soonest (15 s for Intune's).
pub async fn ask(reach: &Reach, interval: Duration) -> Result<Asked, Stopped> {
    reach.counts.syncs.inc();
    let (budget, graph) = (&reach.budget, &reach.graph);
    let answer = send::read(budget, |t| async move { graph.sync(&t).await }).await;
    match answer {
        Ok(SyncAnswer::Started) => Ok(Asked::Started),
        Ok(SyncAnswer::Running) => Ok(Asked::AgainIn(interval / 40)),
        Ok(SyncAnswer::TooSoon) => Ok(Asked::AgainIn(until_allowed(reach, interval).await?)),
        Err(None) => Err(Stopped),
        Err(Some(e)) => {
            tracing::warn!(
                "{}",
                crate::connect::named(
                    reach.key.as_deref(),
                    format!(
                        "the Autopilot sync was refused ({}: {}); asking again in a minute",
                        e.code,
                        crate::output::printable(&e.message)
                    )
                )
            );
            Ok(Asked::AgainIn(Duration::from_secs(60)))
        }
    }
}

/// How long until the service takes a sync again: `interval` after its last manual sync, by
/// the tenant's settings; a tenth of it when they cannot be read.
async fn until_allowed(reach: &Reach, interval: Duration) -> Result<Duration, Stopped> {
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
    Ok(wait_after(last, SystemTime::now(), interval))
}

/// `interval` (and a little) after `last`: at least a fortieth of it, at most all of it.
fn wait_after(last: Option<SystemTime>, now: SystemTime, interval: Duration) -> Duration {
    let Some(last) = last else {
        return interval / 10;
    };
    let allowed = last + interval + interval / 120;
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
