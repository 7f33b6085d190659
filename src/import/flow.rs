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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::Shared;
use super::advice;
use super::hashes::HashRow;
use super::reach::{Flow, LOST_ROUNDS, Reach, Watched};
use super::send::{self, Sent, Stopped};
use super::sheet::ImportStatus;
use crate::graph::answer::ErrorInfo;
use crate::graph::model::{ImportProgress, ImportedIdentity};

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
    tokio::join!(
        work,
        super::delete::delete_all(reach, rx, shared.settings.concurrency)
    );
    total - written.load(Ordering::Relaxed)
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
            let reason = format!("cannot write the journal: {e}; nothing more is sent");
            self.shared.halt.abort_as(crate::codes::UNWRITABLE, reason);
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
