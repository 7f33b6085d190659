//! One tenant's import, as stages:
//!
//! ```text
//! rows ─▶ listed already? (existing) ─▶ a record of ours from before? (adopted) ─▶ import in
//!   batches ─▶ poll the records ─▶ sync ─▶ wait for the listing (registered) ─▶ delete our records
//! ```
//!
//! Read before write: one pass of the identity listing says which serials are registered,
//! one pass of the import records which have a record already. A serial whose record this
//! run's journal names (an earlier attempt) is watched, never imported again. Records are
//! deleted only when they are this run's and their device is listed or refused: a record is
//! the evidence that a device was sent until the listing shows it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::Shared;
use super::advice;
use super::hashes::HashRow;
use super::send::{self, Sent, Stopped};
use super::sheet::{ImportLine, ImportStatus};
use super::sync::{self, Asked};
use crate::budget::Budget;
use crate::graph::answer::ErrorInfo;
use crate::graph::client::GraphClient;
use crate::graph::model::{ImportProgress, ImportedIdentity};

/// Records read one by one at most; more are read a page of the collection at a time.
const SINGLE_READS: usize = 10;
/// Longest pause between readings of the records and of the listing.
const MAX_POLL: Duration = Duration::from_secs(30);
/// Times a request whose answer was lost is followed up (an import read back and sent again
/// for the devices it did not create, a delete sent again), each after a backoff step,
/// before giving up on it.
const LOST_ROUNDS: u32 = 8;

/// A counter of requests of one kind.
#[derive(Debug, Default)]
pub struct Count(AtomicU64);

impl Count {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Requests by kind, and what became of the records.
#[derive(Debug, Default)]
pub struct Counts {
    pub imports: Count,
    pub reads: Count,
    pub syncs: Count,
    pub deletes: Count,
    pub records_created: Count,
    pub records_deleted: Count,
    pub records_left: Count,
}

/// One tenant, ready to send.
pub struct Reach {
    pub key: Option<String>,
    pub budget: Arc<Budget>,
    pub graph: GraphClient,
    pub counts: Counts,
}

/// A device sent (or found sent by an earlier attempt) whose record is watched.
#[derive(Debug, Clone)]
struct Watched {
    row: u64,
    serial: String,
    record: Uuid,
    /// This run created it (its journal says so): it is deleted once settled.
    ours: bool,
    attempts: u32,
    /// The identity id the record names once complete.
    registration: Option<String>,
}

/// Import `rows` into the tenant; the count of rows left without a line (stopped first).
/// `cleanup`: serials an earlier attempt finished whose records may still be there.
pub async fn import(
    reach: &Reach,
    rows: Vec<HashRow>,
    cleanup: Vec<String>,
    shared: &Shared<'_>,
) -> u64 {
    let total = rows.len() as u64;
    let written = AtomicU64::new(0);
    let (tx, rx) = mpsc::unbounded_channel::<Uuid>();
    let flow = Flow {
        reach,
        shared,
        written: &written,
        deletes: tx,
    };
    let work = async move {
        let _ = flow.stages(rows, cleanup).await;
        drop(flow); // closes the delete queue
    };
    tokio::join!(work, delete_all(reach, rx, shared.settings.concurrency));
    total - written.load(Ordering::Relaxed)
}

struct Flow<'a> {
    reach: &'a Reach,
    shared: &'a Shared<'a>,
    written: &'a AtomicU64,
    deletes: mpsc::UnboundedSender<Uuid>,
}

impl Flow<'_> {
    async fn stages(&self, rows: Vec<HashRow>, cleanup: Vec<String>) -> Result<(), Stopped> {
        let deadline = Instant::now() + self.shared.settings.timeout;
        if rows.is_empty() && cleanup.is_empty() {
            return Ok(());
        }
        self.shared
            .phase(self.reach, "reading the identity listing");
        let listed = match self.listed().await? {
            Ok(listed) => listed,
            Err(e) => return self.fail_all(rows.iter().map(|r| (r.row, &r.serial)), &e, 0),
        };
        let mut todo = Vec::new();
        for r in rows {
            match listed.get(&r.serial.to_lowercase()) {
                Some(id) => {
                    let mut line = self.line(r.row, &r.serial, ImportStatus::Existing);
                    line.device_id = id.clone();
                    self.write(line)?;
                }
                None => todo.push(r),
            }
        }
        if todo.is_empty() && cleanup.is_empty() {
            return Ok(());
        }
        self.shared.phase(self.reach, "reading the import records");
        let records = match self.records().await? {
            Ok(records) => records,
            Err(e) => return self.fail_all(todo.iter().map(|r| (r.row, &r.serial)), &e, 0),
        };
        // Finished devices whose records a stop left behind: this run's, so deleted now.
        for serial in &cleanup {
            let found = records.get(&serial.to_lowercase()).into_iter().flatten();
            for id in found.filter_map(|r| Uuid::parse_str(&r.id).ok()) {
                self.delete(id);
            }
        }
        let (mut watched, fresh) = self.adopt(todo, &records);
        self.shared
            .phase(self.reach, &format!("importing {}", fresh.len()));
        let batches: Vec<Vec<HashRow>> = fresh
            .chunks(self.shared.settings.batch)
            .map(<[HashRow]>::to_vec)
            .collect();
        let sent: Vec<Result<Vec<Watched>, Stopped>> = futures::stream::iter(batches)
            .map(|b| self.import_batch(b))
            .buffer_unordered(self.shared.settings.concurrency)
            .collect()
            .await;
        for s in sent {
            watched.extend(s?);
        }
        let complete = self.poll(watched, deadline).await?;
        self.register(complete, deadline).await
    }

    /// Serials already registered in the tenant (lowercase) → identity id.
    async fn listed(&self) -> Result<Result<HashMap<String, String>, ErrorInfo>, Stopped> {
        let mut listed = HashMap::new();
        let counts = &self.reach.counts;
        let read = crate::listing::each_identity(
            &self.reach.graph,
            &self.reach.budget,
            |identity| {
                if let Some(s) = identity.serial_number.as_deref() {
                    listed.entry(s.to_lowercase()).or_insert(identity.id);
                }
            },
            |_| counts.reads.inc(),
        )
        .await;
        Ok(match read {
            Ok(_) => Ok(listed),
            Err(crate::listing::ReadError::Stopped) => return Err(Stopped),
            Err(e) => Err(ErrorInfo {
                code: advice::UNREADABLE.into(),
                message: format!("cannot read the identity listing: {e}"),
            }),
        })
    }

    /// Every import record of the tenant, by lowercase serial.
    async fn records(
        &self,
    ) -> Result<Result<HashMap<String, Vec<ImportedIdentity>>, ErrorInfo>, Stopped> {
        let mut by_serial: HashMap<String, Vec<ImportedIdentity>> = HashMap::new();
        let mut pager = crate::listing::Pager::default();
        let mut next: Option<String> = None;
        let (budget, graph) = (&self.reach.budget, &self.reach.graph);
        loop {
            self.reach.counts.reads.inc();
            let link = next.take();
            let page = send::read(budget, |t| {
                let link = link.clone();
                async move { graph.imported(&t, link.as_deref()).await }
            })
            .await;
            let page = match page {
                Ok(p) => p,
                Err(None) => return Err(Stopped),
                Err(Some(e)) => return Ok(Err(unreadable("the import records", &e))),
            };
            let turn = pager.turn(
                page.value.iter().map(|r| r.id.as_str()),
                page.count,
                page.next_link,
            );
            for r in page.value {
                let serial = r.serial_number.clone().unwrap_or_default().to_lowercase();
                by_serial.entry(serial).or_default().push(r);
            }
            match turn {
                Ok(None) => return Ok(Ok(by_serial)),
                Ok(Some(link)) => next = Some(link),
                Err(e) => {
                    let e = ErrorInfo {
                        code: "PagingLoop".into(),
                        message: e.to_string(),
                    };
                    return Ok(Err(unreadable("the import records", &e)));
                }
            }
        }
    }

    /// Split the rows into records to watch and devices to import. A serial with a record in
    /// flight (pending or complete) is watched, never sent again: this run's record (its
    /// journal names the serial) is watched and deleted later; another's is watched and left.
    /// A record that failed before is no obstacle: the device is imported anew (and an error
    /// record of this run's is deleted).
    fn adopt(
        &self,
        rows: Vec<HashRow>,
        records: &HashMap<String, Vec<ImportedIdentity>>,
    ) -> (Vec<Watched>, Vec<HashRow>) {
        let (mut watched, mut fresh) = (Vec::new(), Vec::new());
        for r in rows {
            let ours = self
                .shared
                .journaled
                .contains(&super::journal_key(&r.serial, self.reach.key.as_deref()));
            let found = records.get(&r.serial.to_lowercase()).into_iter().flatten();
            let mut live = None;
            for rec in found {
                let Ok(id) = Uuid::parse_str(&rec.id) else {
                    continue;
                };
                match rec.progress() {
                    ImportProgress::Error { .. } if ours => self.delete(id),
                    ImportProgress::Error { .. } => {}
                    _ => live = live.or(Some(id)),
                }
            }
            match live {
                Some(record) => watched.push(Watched {
                    row: r.row,
                    serial: r.serial.clone(),
                    record,
                    ours,
                    attempts: 0,
                    registration: None,
                }),
                None => fresh.push(r),
            }
        }
        (watched, fresh)
    }

    /// Import one batch: journaled first, then sent; a refused batch is split in halves down
    /// to single records (and a single record is tried alone at the collection); a batch whose
    /// answer was lost is read back, and only the devices it did not create are sent again.
    async fn import_batch(&self, rows: Vec<HashRow>) -> Result<Vec<Watched>, Stopped> {
        let journal = self.shared.journal;
        let keys = rows.iter().map(|r| {
            (
                r.row,
                super::journal_key(&r.serial, self.reach.key.as_deref()),
            )
        });
        let recorded = futures::future::join_all(keys.map(|(row, k)| journal.record(row, k))).await;
        if let Some(Err(e)) = recorded.into_iter().find(Result::is_err) {
            self.shared.halt.abort(format!(
                "cannot write the journal: {e}; nothing more is sent"
            ));
            return Err(Stopped);
        }
        let mut watched = Vec::new();
        let mut todo = vec![rows];
        let mut lost_rounds = 0;
        let mut backoff = self.reach.budget.start_row();
        while let Some(rows) = todo.pop() {
            let mut attempts = 0;
            let sent = self.send_rows(&rows, &mut attempts).await?;
            match sent {
                Sent::Done(created) => {
                    let (found, missing) = matched(&rows, created, attempts);
                    watched.extend(found);
                    if !missing.is_empty() {
                        todo.push(missing);
                    }
                }
                Sent::Refused { http_status, .. }
                    if rows.len() > 1 && matches!(http_status, Some(400 | 413)) =>
                {
                    let (a, b) = rows.split_at(rows.len() / 2);
                    todo.push(b.to_vec());
                    todo.push(a.to_vec());
                }
                Sent::Refused { error, .. } => {
                    let e = ErrorInfo {
                        code: advice::REFUSED.into(),
                        message: format!("{}: {}", error.code, error.message),
                    };
                    self.fail_all(rows.iter().map(|r| (r.row, &r.serial)), &e, attempts)?;
                }
                Sent::Unknown(error) => {
                    lost_rounds += 1;
                    // Give the service a moment to show what it did before reading it back.
                    let pause = backoff.next_backoff().unwrap_or(Duration::from_secs(1));
                    if !self.reach.budget.wait(pause).await {
                        return Err(Stopped);
                    }
                    let (found, missing) = self.read_back(rows, &error, lost_rounds).await?;
                    watched.extend(found);
                    if !missing.is_empty() {
                        todo.push(missing);
                    }
                }
            }
        }
        self.reach.counts.records_created.add(watched.len() as u64);
        Ok(watched)
    }

    /// Send `rows` as one import call, or alone at the collection when a single row's call
    /// was refused.
    async fn send_rows(
        &self,
        rows: &[HashRow],
        attempts: &mut u32,
    ) -> Result<Sent<Vec<ImportedIdentity>>, Stopped> {
        let (budget, graph, counts) = (&self.reach.budget, &self.reach.graph, &self.reach.counts);
        let records: Vec<_> = rows.iter().map(HashRow::record).collect();
        let sent = send::write(budget, attempts, |t| {
            counts.imports.inc();
            let records = records.clone();
            async move { graph.import(&t, records).await }
        })
        .await?;
        match (sent, records.as_slice()) {
            (
                Sent::Refused {
                    http_status: Some(400 | 413),
                    ..
                },
                [one],
            ) => {
                let one = one.clone();
                let alone = send::write(budget, attempts, |t| {
                    counts.imports.inc();
                    let one = one.clone();
                    async move { graph.import_one(&t, one).await }
                })
                .await?;
                Ok(match alone {
                    Sent::Done(r) => Sent::Done(vec![r]),
                    Sent::Refused { http_status, error } => Sent::Refused { http_status, error },
                    Sent::Unknown(e) => Sent::Unknown(e),
                })
            }
            (sent, _) => Ok(sent),
        }
    }

    /// After a lost answer: which of `rows` have a record now (the call was carried out for
    /// them), and which must be sent again; after [`LOST_ROUNDS`], the rest fail.
    async fn read_back(
        &self,
        rows: Vec<HashRow>,
        error: &ErrorInfo,
        round: u32,
    ) -> Result<(Vec<Watched>, Vec<HashRow>), Stopped> {
        let records = match self.records().await? {
            Ok(r) => r,
            Err(e) => {
                self.fail_all(rows.iter().map(|r| (r.row, &r.serial)), &e, 1)?;
                return Ok((Vec::new(), Vec::new()));
            }
        };
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for r in rows {
            let live = records
                .get(&r.serial.to_lowercase())
                .into_iter()
                .flatten()
                .filter(|rec| !matches!(rec.progress(), ImportProgress::Error { .. }))
                .find_map(|rec| Uuid::parse_str(&rec.id).ok());
            match live {
                Some(record) => found.push(Watched {
                    row: r.row,
                    serial: r.serial.clone(),
                    record,
                    ours: true,
                    attempts: round,
                    registration: None,
                }),
                None => missing.push(r),
            }
        }
        if round >= LOST_ROUNDS && !missing.is_empty() {
            let e = ErrorInfo {
                code: advice::UNKNOWN.into(),
                message: format!(
                    "the import's answer was lost {round} times ({}: {}); no record of the \
                     device was found: `import --resume` reads the records again",
                    error.code, error.message
                ),
            };
            self.fail_all(missing.iter().map(|r| (r.row, &r.serial)), &e, round)?;
            missing.clear();
        }
        Ok((found, missing))
    }

    /// Read the watched records until each is settled (or the deadline): refused ones are
    /// written `failed` with their error and advice; complete ones are returned.
    async fn poll(
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
                    tracing::warn!("{}", self.named(format!("{}: {}", e.code, e.message)));
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
    async fn register(&self, complete: Vec<Watched>, deadline: Instant) -> Result<(), Stopped> {
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
                tracing::warn!("{}", self.named(format!("cannot read the listing: {e}")));
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

    /// Queue a record of this run for deletion (unless records are kept).
    fn delete(&self, record: Uuid) {
        if self.shared.settings.keep_records {
            self.reach.counts.records_left.inc();
        } else {
            let _ = self.deletes.send(record);
        }
    }

    fn line(&self, row: u64, serial: &str, status: ImportStatus) -> ImportLine {
        ImportLine::new(row, serial, status, self.reach.key.as_deref())
    }

    fn fail_one(&self, w: &Watched, e: &ErrorInfo) -> Result<(), Stopped> {
        let mut line = self.line(w.row, &w.serial, ImportStatus::Failed);
        line.import_id = w.record.to_string();
        line.error_code = e.code.clone();
        line.error_message = e.message.clone();
        line.attempts = w.attempts;
        self.write(line)
    }

    fn fail_all<'s>(
        &self,
        rows: impl Iterator<Item = (u64, &'s String)>,
        e: &ErrorInfo,
        attempts: u32,
    ) -> Result<(), Stopped> {
        for (row, serial) in rows {
            let mut line = self.line(row, serial, ImportStatus::Failed);
            line.error_code = e.code.clone();
            line.error_message = e.message.clone();
            line.attempts = attempts;
            self.write(line)?;
        }
        Ok(())
    }

    fn write(&self, line: ImportLine) -> Result<(), Stopped> {
        self.shared.write(&line)?;
        self.written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn named(&self, message: String) -> String {
        crate::connect::named(self.reach.key.as_deref(), message)
    }
}

/// The batch's answer matched to its rows: by serial (the answer's order is the request's,
/// but a serial is what both sides agree on). Rows the answer lacks are sent again.
fn matched(
    rows: &[HashRow],
    created: Vec<ImportedIdentity>,
    attempts: u32,
) -> (Vec<Watched>, Vec<HashRow>) {
    let mut by_serial: HashMap<String, Uuid> = HashMap::new();
    for c in created {
        if let (Some(s), Ok(id)) = (c.serial_number, Uuid::parse_str(&c.id)) {
            by_serial.entry(s.to_lowercase()).or_insert(id);
        }
    }
    let mut found = Vec::new();
    let mut missing = Vec::new();
    let mut used = HashSet::new();
    for r in rows {
        match by_serial.get(&r.serial.to_lowercase()) {
            Some(id) if used.insert(*id) => found.push(Watched {
                row: r.row,
                serial: r.serial.clone(),
                record: *id,
                ours: true,
                attempts,
                registration: None,
            }),
            _ => missing.push(r.clone()),
        }
    }
    (found, missing)
}

fn unreadable(what: &str, e: &ErrorInfo) -> ErrorInfo {
    ErrorInfo {
        code: advice::UNREADABLE.into(),
        message: format!("cannot read {what}: {}: {}", e.code, e.message),
    }
}

/// Delete queued records, a few at a time, as the run goes; what cannot be deleted is left
/// (and counted). A delete is safe to repeat: one whose answer was lost is sent again, and a
/// 404 then says the first one did it.
async fn delete_all(reach: &Reach, rx: mpsc::UnboundedReceiver<Uuid>, concurrency: usize) {
    let queue = futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|id| (id, rx)) },
    );
    queue
        .for_each_concurrent(concurrency, |id| async move {
            match delete_one(reach, id).await {
                Ok(()) => reach.counts.records_deleted.inc(),
                Err(why) => {
                    reach.counts.records_left.inc();
                    if let Some(e) = why {
                        let message = format!(
                            "cannot delete import record {id}: {}: {}",
                            e.code, e.message
                        );
                        let message = crate::connect::named(reach.key.as_deref(), message);
                        tracing::warn!("{}", crate::output::printable(&message));
                    }
                }
            }
        })
        .await;
}

/// One record deleted (or found gone); `Err(None)`: stopped first.
async fn delete_one(reach: &Reach, id: Uuid) -> Result<(), Option<ErrorInfo>> {
    let (budget, graph, counts) = (&reach.budget, &reach.graph, &reach.counts);
    let mut attempts = 0;
    let mut backoff = budget.start_row();
    for round in 0..LOST_ROUNDS {
        if round > 0 {
            let pause = backoff.next_backoff().unwrap_or(Duration::from_secs(1));
            if !budget.wait(pause).await {
                return Err(None);
            }
        }
        let sent = send::write(budget, &mut attempts, |t| {
            counts.deletes.inc();
            async move { graph.delete_imported(&t, id).await }
        })
        .await
        .map_err(|Stopped| None)?;
        match sent {
            Sent::Done(())
            | Sent::Refused {
                http_status: Some(404),
                ..
            } => return Ok(()),
            Sent::Refused { error, .. } => return Err(Some(error)),
            Sent::Unknown(_) => {}
        }
    }
    Err(Some(ErrorInfo {
        code: advice::UNKNOWN.into(),
        message: format!("its answer was lost {LOST_ROUNDS} times"),
    }))
}
