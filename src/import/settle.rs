//! After the imports: the records watched until the service settles each, then one sync and
//! the listing read until every complete record's device is in it.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::advice;
use super::reach::{Flow, Watched};
use super::send::{self, Stopped};
use super::sheet::ImportStatus;
use super::sync::{self, Asked};
use crate::graph::answer::ErrorInfo;
use crate::graph::model::{ImportProgress, ImportedIdentity};

/// Records read one by one at most; more are read a page of the collection at a time.
const SINGLE_READS: usize = 10;
/// Longest pause between readings of the records and of the listing.
const MAX_POLL: Duration = Duration::from_secs(30);

impl Flow<'_> {
    /// Read the watched records until each is settled (or the deadline): refused ones are
    /// written `failed` with their error and advice; complete ones are returned.
    pub(super) async fn poll(
        &self,
        mut watched: Vec<Watched>,
        deadline: Instant,
    ) -> Result<Vec<Watched>, Stopped> {
        let mut complete = Vec::new();
        let mut pause = Duration::from_secs(1);
        while !watched.is_empty() {
            if Instant::now() >= deadline {
                let e = ErrorInfo {
                    code: advice::TIMED_OUT.into(),
                    message: format!(
                        "still being processed after {}; the record is kept: `import \
                         --resume` watches it again",
                        humantime::format_duration(self.shared.settings.timeout)
                    ),
                };
                for w in &watched {
                    self.fail_one(w, &e)?;
                }
                break;
            }
            let msg = format!("processing {} pending", watched.len());
            self.shared.phase(self.reach, &msg);
            if !self.reach.budget.wait(pause).await {
                return Err(Stopped);
            }
            pause = (pause * 2).min(MAX_POLL);
            let states = match self.states(&watched).await? {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(
                        "{}",
                        crate::output::printable(&self.named(format!("{}: {}", e.code, e.message)))
                    );
                    continue;
                }
            };
            let mut still = Vec::new();
            for mut w in watched {
                match states.get(&w.record).map(ImportedIdentity::progress) {
                    Some(ImportProgress::Pending) => still.push(w),
                    Some(ImportProgress::Complete) | None => {
                        // A record gone (deleted by someone) may still have registered its
                        // device: the listing will tell.
                        w.registration = states
                            .get(&w.record)
                            .and_then(|r| r.state.as_ref().and_then(|s| s.registration_id.clone()));
                        complete.push(w);
                    }
                    Some(ImportProgress::Error { code, name }) => {
                        let mut line = self.line(w.row, &w.serial, ImportStatus::Failed);
                        line.import_id = w.record.to_string();
                        line.error_code = code.to_string();
                        line.error_message = advice::for_error(code, &name);
                        line.error_name = name;
                        line.attempts = w.attempts;
                        self.write(line)?;
                        if w.ours {
                            self.delete(w.record);
                        }
                    }
                }
            }
            watched = still;
        }
        Ok(complete)
    }

    /// The records' states now: one GET each when few, else the collection's pages.
    async fn states(
        &self,
        watched: &[Watched],
    ) -> Result<Result<HashMap<Uuid, ImportedIdentity>, ErrorInfo>, Stopped> {
        if watched.len() > SINGLE_READS {
            return Ok(self.records().await?.map(|by_serial| {
                by_serial
                    .into_values()
                    .flatten()
                    .filter_map(|r| Uuid::parse_str(&r.id).ok().map(|id| (id, r)))
                    .collect()
            }));
        }
        let (budget, graph, counts) = (&self.reach.budget, &self.reach.graph, &self.reach.counts);
        let reads = watched.iter().map(|w| async move {
            counts.reads.inc();
            let id = w.record;
            (
                id,
                send::read(budget, |t| async move { graph.imported_one(&t, id).await }).await,
            )
        });
        let mut states = HashMap::new();
        for (id, read) in futures::future::join_all(reads).await {
            match read {
                Ok(r) => {
                    states.insert(id, r);
                }
                // 404: the record is gone; the listing decides.
                Err(Some(e)) if e.code == "ResourceNotFound" || e.code == "NotFound" => {}
                Err(Some(e)) => return Ok(Err(e)),
                Err(None) => return Err(Stopped),
            }
        }
        Ok(Ok(states))
    }

    /// Sync, then read the listing until every complete record's device is in it (or the
    /// deadline). A sync refused (one ran lately, or runs now) is asked again when the
    /// service takes it, while the listing is read meanwhile: the sync that runs may list
    /// them. Never more than one sync of ours per ten minutes.
    pub(super) async fn register(
        &self,
        complete: Vec<Watched>,
        deadline: Instant,
    ) -> Result<(), Stopped> {
        let mut waiting: HashMap<String, Watched> = complete
            .into_iter()
            .map(|w| (w.serial.to_lowercase(), w))
            .collect();
        let mut sync_at = Some(Instant::now());
        let mut synced: Option<Instant> = None;
        let mut pause = Duration::from_secs(2);
        while !waiting.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                return self.not_listed(waiting.into_values());
            }
            if sync_at.is_some_and(|at| now >= at) {
                self.shared.phase(self.reach, "syncing");
                match sync::ask(self.reach, self.shared.settings.sync_interval).await? {
                    Asked::Started => {
                        sync_at = None;
                        synced = Some(Instant::now());
                        pause = Duration::from_secs(2);
                    }
                    Asked::AgainIn(d) => sync_at = Some(Instant::now() + d),
                }
            }
            let msg = format!("waiting for {} devices in the listing", waiting.len());
            self.shared.phase(self.reach, &msg);
            let until_sync = sync_at.map(|at| at.saturating_duration_since(Instant::now()));
            let wait = until_sync
                .map_or(pause, |u| u.min(pause))
                .min(deadline - Instant::now());
            if !self.reach.budget.wait(wait).await {
                return Err(Stopped);
            }
            pause = (pause * 2).min(MAX_POLL * 2);
            self.listing_reading(&mut waiting).await?;
            // Our sync did not list them after the service's interval: ask again (allowed now).
            if synced.is_some_and(|t| t.elapsed() > self.shared.settings.sync_interval)
                && sync_at.is_none()
            {
                sync_at = Some(Instant::now());
                synced = None;
            }
        }
        Ok(())
    }

    /// One pass of the listing: every waiting device listed now is `registered`.
    async fn listing_reading(&self, waiting: &mut HashMap<String, Watched>) -> Result<(), Stopped> {
        let mut seen: HashMap<String, Vec<String>> = HashMap::new();
        let counts = &self.reach.counts;
        let read = crate::listing::each_identity(
            &self.reach.graph,
            &self.reach.budget,
            |identity| {
                if let Some(s) = identity.serial_number.as_deref() {
                    let s = s.to_lowercase();
                    if waiting.contains_key(&s) {
                        seen.entry(s).or_default().push(identity.id);
                    }
                }
            },
            |_| counts.reads.inc(),
        )
        .await;
        match read {
            Err(crate::listing::ReadError::Stopped) => return Err(Stopped),
            Err(e) => {
                tracing::warn!(
                    "{}",
                    crate::output::printable(&self.named(format!("cannot read the listing: {e}")))
                );
            }
            Ok(_) => {}
        }
        for (serial, ids) in seen {
            let Some(w) = waiting.remove(&serial) else {
                continue;
            };
            // The identity the record named, when it is among those of the serial.
            let id = w
                .registration
                .as_ref()
                .and_then(|r| ids.iter().find(|i| i.eq_ignore_ascii_case(r)))
                .or(ids.first())
                .cloned()
                .unwrap_or_default();
            let mut line = self.line(w.row, &w.serial, ImportStatus::Registered);
            line.device_id = id;
            line.import_id = w.record.to_string();
            line.attempts = w.attempts;
            self.write(line)?;
            if w.ours {
                self.delete(w.record);
            }
        }
        Ok(())
    }

    fn not_listed(&self, waiting: impl Iterator<Item = Watched>) -> Result<(), Stopped> {
        let e = ErrorInfo {
            code: advice::NOT_LISTED.into(),
            message: format!(
                "imported (its record is complete) but not in the identity listing after {}; \
                 the record is kept: `import --resume` looks again",
                humantime::format_duration(self.shared.settings.timeout)
            ),
        };
        for w in waiting {
            self.fail_one(&w, &e)?;
        }
        Ok(())
    }
}
