//! `import HASHES.csv`: register devices with Autopilot by hardware hash, the first step of a
//! migration, into `<input stem>.import.csv` (a valid `run` input: `import → run → status`).
//!
//! ```text
//! hashes.csv ─▶ rows ─▶ per tenant: listing, records, import in batches, poll, sync, listing ─▶ sheet
//! ```
//!
//! The machinery is the run's: a lock on the import file, a journal of the devices sent
//! (synced before each batch goes out, so that `--resume` after `kill -9` never imports a
//! device twice: it finds the record the dead run created and watches it), a budget per
//! tenant (imports and deletes are Intune writes, a batch of up to 100 devices one write;
//! reads take the larger read room), Ctrl-C leaving what is in flight to `--resume`.

mod advice;
mod delete;
mod flow;
pub mod hashes;
mod reach;
mod reads;
mod send;
mod settle;
pub mod sheet;
mod sync;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Config;
use crate::halt::Halt;
use crate::lock::{LockError, RunLock};
use crate::output::{Journal, OutputError};

pub use sheet::{HEADER, ImportStatus};

/// Devices per import call by default. Graph documents no limit; the portal takes 500 rows a
/// file. 100 keeps one call's body near 400 KB (a hash is ~4 KB) and a refused batch cheap to
/// split; 5,000 devices are 50 writes, a fraction of one 20-second window.
pub const DEFAULT_BATCH: usize = 100;

/// What `import` is asked to do.
#[derive(Debug, Clone)]
pub struct ImportConfig {
    pub input: PathBuf,
    /// The import file (`-o`).
    pub output: PathBuf,
    pub resume: bool,
    pub overwrite: bool,
    /// How to reach the tenants: credentials, URLs, rates, the tenants file.
    pub graph: Config,
    pub settings: Settings,
    pub progress: bool,
}

/// How the import goes.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Devices per import call.
    pub batch: usize,
    /// Import calls (and record deletions) in flight at most, per tenant.
    pub concurrency: usize,
    /// Longest the import waits for its records to be processed and its devices listed.
    pub timeout: Duration,
    /// Leave this run's import records in place instead of deleting them once settled.
    pub keep_records: bool,
    /// The service's least time between two syncs: Intune's ten minutes (an emulator may be
    /// told another).
    pub sync_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            batch: DEFAULT_BATCH,
            concurrency: 4,
            timeout: Duration::from_secs(3600),
            keep_records: false,
            sync_interval: sync::INTERVAL,
        }
    }
}

impl ImportConfig {
    pub fn new(input: &Path, graph: Config) -> Self {
        ImportConfig {
            input: input.to_path_buf(),
            output: default_output(input),
            resume: false,
            overwrite: false,
            graph,
            settings: Settings::default(),
            progress: false,
        }
    }
}

/// `<input stem>.import.csv` beside the input.
pub fn default_output(input: &Path) -> PathBuf {
    crate::config::beside(input, "import")
}

/// An import that could not start (nothing was sent), or whose file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Hashes(#[from] hashes::HashesError),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Locked(#[from] LockError),
    #[error("cannot use the journal {path}: {source}")]
    Journal {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How an import ended: as a run does (completed, aborted, interrupted, or stopped because
/// its file or journal could not be written).
pub use crate::summary::Outcome as ImportOutcome;

/// Requests sent, by kind, over every tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    pub imports: u64,
    pub reads: u64,
    pub syncs: u64,
    pub deletes: u64,
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportSummary {
    pub output: PathBuf,
    /// Rows of the hash file.
    pub rows: u64,
    /// Rows an earlier import into this file finished (`--resume`), by status.
    pub earlier: BTreeMap<ImportStatus, u64>,
    /// This run's rows by status.
    pub by_status: BTreeMap<ImportStatus, u64>,
    pub requests: Requests,
    /// Import records this run created, deleted, and left in place.
    pub records_created: u64,
    pub records_deleted: u64,
    pub records_left: u64,
    pub elapsed: Duration,
    pub outcome: ImportOutcome,
}

impl ImportSummary {
    /// Rows of `s`, this run's and an earlier one's.
    pub fn count(&self, s: ImportStatus) -> u64 {
        self.by_status.get(&s).copied().unwrap_or(0) + self.earlier.get(&s).copied().unwrap_or(0)
    }

    /// As `run`'s: 0 every row is registered or existing, 1 some failed or are invalid, 3
    /// aborted, 130 interrupted.
    pub fn exit_code(&self) -> u8 {
        match self.outcome {
            ImportOutcome::Aborted(_) => 3,
            ImportOutcome::Unwritable(_) => 2,
            ImportOutcome::Interrupted => 130,
            ImportOutcome::Completed
                if self.count(ImportStatus::Failed) + self.count(ImportStatus::Invalid) > 0 =>
            {
                1
            }
            ImportOutcome::Completed => 0,
        }
    }

    /// The end-of-import lines for stderr.
    pub fn render(&self) -> String {
        let r = &self.requests;
        let mut s = format!(
            "import: {} rows · {} registered · {} existing · {} failed · {} invalid · {:.1}s → {}\n  \
             requests: {} import · {} read · {} sync · {} delete; records: {} created, {} \
             deleted, {} left\n",
            self.rows,
            self.count(ImportStatus::Registered),
            self.count(ImportStatus::Existing),
            self.count(ImportStatus::Failed),
            self.count(ImportStatus::Invalid),
            self.elapsed.as_secs_f64(),
            self.output.display(),
            r.imports,
            r.reads,
            r.syncs,
            r.deletes,
            self.records_created,
            self.records_deleted,
            self.records_left,
        );
        let earlier: u64 = self.earlier.values().sum();
        if earlier > 0 {
            s.push_str(&format!("  {earlier} rows finished by an earlier import\n"));
        }
        match &self.outcome {
            ImportOutcome::Aborted(reason) | ImportOutcome::Unwritable(reason) => {
                s.push_str(&format!(
                    "  aborted: {}\n",
                    crate::output::printable(reason)
                ));
            }
            ImportOutcome::Interrupted => s.push_str("  interrupted\n"),
            ImportOutcome::Completed => {}
        }
        s
    }

    /// `--summary-json`: field names are a contract (add, never rename).
    pub fn json(&self, exit_code: u8) -> serde_json::Value {
        let outcome = self.outcome.as_str();
        let reason = match &self.outcome {
            ImportOutcome::Aborted(r) | ImportOutcome::Unwritable(r) => Some(r.clone()),
            _ => None,
        };
        let by = |m: &BTreeMap<ImportStatus, u64>| {
            ImportStatus::ALL
                .iter()
                .map(|s| {
                    (
                        s.as_str().to_string(),
                        m.get(s).copied().unwrap_or(0).into(),
                    )
                })
                .collect::<serde_json::Map<String, serde_json::Value>>()
        };
        let r = &self.requests;
        serde_json::json!({
            "command": "import",
            "output": self.output.display().to_string(),
            "rows": self.rows,
            "registered": self.count(ImportStatus::Registered),
            "existing": self.count(ImportStatus::Existing),
            "failed": self.count(ImportStatus::Failed),
            "invalid": self.count(ImportStatus::Invalid),
            "this_run": by(&self.by_status),
            "earlier": by(&self.earlier),
            "requests": {
                "import": r.imports, "read": r.reads, "sync": r.syncs, "delete": r.deletes,
            },
            "records": {
                "created": self.records_created,
                "deleted": self.records_deleted,
                "left": self.records_left,
            },
            "elapsed_ms": u64::try_from(self.elapsed.as_millis()).unwrap_or(u64::MAX),
            "outcome": outcome,
            "abort_reason": reason,
            "exit_code": exit_code,
        })
    }
}

/// What every tenant's flow shares.
pub(crate) struct Shared<'a> {
    sheet: Mutex<(sheet::ImportSheet, BTreeMap<ImportStatus, u64>)>,
    journal: &'a Journal,
    /// Devices (by [`journal_key`]) an earlier attempt may have sent.
    journaled: HashSet<Uuid>,
    halt: &'a Halt,
    progress: &'a crate::progress::Progress,
    settings: Settings,
}

impl Shared<'_> {
    /// Write one finished row; a write error stops the import (what was written stays).
    fn write(&self, line: &sheet::ImportLine) -> Result<(), send::Stopped> {
        let mut guard = self.sheet.lock().unwrap_or_else(|p| p.into_inner());
        let (sheet, tally) = &mut *guard;
        if let Err(e) = sheet.write(line) {
            let reason = format!("{e}; --resume continues from what was written");
            self.halt.abort_as(crate::codes::UNWRITABLE, reason);
            return Err(send::Stopped);
        }
        *tally.entry(line.status).or_default() += 1;
        self.progress.advance(1);
        Ok(())
    }

    /// What a tenant is doing now, on the progress line.
    fn phase(&self, reach: &reach::Reach, what: &str) {
        self.progress
            .message(crate::connect::named(reach.key.as_deref(), what));
    }
}

/// The journal's name for a device: its serial in its tenant, so that an edited hash file
/// (rows moved) still resumes by device. A fixed hash (FNV-1a, 128 bits): the same serial is
/// the same key in every build.
fn journal_key(serial: &str, tenant: Option<&str>) -> Uuid {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    let (serial, tenant) = sheet::key(serial, tenant);
    for b in tenant.bytes().chain([0]).chain(serial.bytes()) {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    Uuid::from_u128(h)
}

/// Import every row of the hash file. `shutdown` stops sending; what is in flight is left to
/// `--resume`.
pub async fn import(
    config: ImportConfig,
    shutdown: CancellationToken,
) -> Result<ImportSummary, ImportError> {
    let started = tokio::time::Instant::now();
    let halt = Arc::new(Halt::child_of(&shutdown));
    if same_file(&config.input, &config.output) {
        return Err(ImportError::Config(
            "the import file would be the hash file: name another with -o".into(),
        ));
    }
    let tenants = &config.graph.tenants;
    let (lines, unknown) = hashes::read(&config.input, config.graph.delimiter, tenants)?;
    if !unknown.is_empty() {
        tracing::warn!("columns ignored: {}", unknown.join(", "));
    }
    let command: Vec<String> = std::env::args().collect();
    let mut lock = RunLock::acquire(&config.output, &command.join(" "))?;
    let reaches = connect(&config, &halt)?;
    let with_tenants = !tenants.is_empty();
    let (sheet, earlier) = open_sheet(&config, with_tenants)?;
    lock.cover_results()?;
    let (journal, journaled) =
        Journal::open(&config.output, !config.resume).map_err(|source| ImportError::Journal {
            path: Journal::path_for(&config.output),
            source,
        })?;
    let journal = Arc::new(journal);
    let timeout = config.graph.request_timeout;
    if let Some(until) = crate::output::may_land_until(&journaled, timeout, SystemTime::now()) {
        crate::output::wait_for_landing(until, halt.token()).await;
    }
    if let Some(at) = journal.come_back_at() {
        crate::output::wait_for_gate(at, halt.token()).await;
    }
    for r in reaches.values() {
        r.budget.keep_gate_in(journal.clone());
    }
    let progress = crate::progress::Progress::new(config.progress);
    let rows = lines.len() as u64;
    progress.set_total(rows);
    let shared = Shared {
        sheet: Mutex::new((sheet, BTreeMap::new())),
        journal: &journal,
        journaled: journaled.iter().filter_map(|s| s.device).collect(),
        halt: &halt,
        progress: &progress,
        settings: config.settings.clone(),
    };
    let (by_tenant, earlier_done) = sort(lines, &earlier, &shared)?;
    progress.advance(earlier_done.values().sum());
    let flows = by_tenant.into_iter().filter_map(|(key, rows)| {
        let reach = reaches.get(&key)?;
        Some(flow::import(reach, rows.todo, rows.cleanup, &shared))
    });
    let unfinished: u64 = futures::future::join_all(flows).await.into_iter().sum();
    progress.finish();
    let by_status = shared
        .sheet
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .1;
    let aborted = halt.reason().or_else(|| stopped_tenants(&reaches));
    let interrupted = aborted.is_none() && (shutdown.is_cancelled() || unfinished > 0);
    if !interrupted && aborted.is_none() {
        if earlier.lines > 0 {
            crate::output::compact(&config.output, |tmp| lock.install_results(tmp))?;
        }
        if let Err(e) = journal.remove() {
            tracing::warn!("cannot remove the journal: {e}");
        }
    } else if reaches.values().all(|r| r.budget.unanswered() == 0) {
        // Stopped with nothing in flight: a resume need not wait for anything to land.
        if let Err(e) = journal.settled() {
            tracing::warn!("cannot write the journal: {e}");
        }
    }
    let sum = |f: fn(&reach::Counts) -> &reach::Count| {
        reaches.values().map(|r| f(&r.counts).get()).sum::<u64>()
    };
    Ok(ImportSummary {
        output: config.output.clone(),
        rows,
        earlier: earlier_done,
        by_status,
        requests: Requests {
            imports: sum(|c| &c.imports),
            reads: sum(|c| &c.reads),
            syncs: sum(|c| &c.syncs),
            deletes: sum(|c| &c.deletes),
        },
        records_created: sum(|c| &c.records_created),
        records_deleted: sum(|c| &c.records_deleted),
        records_left: sum(|c| &c.records_left),
        elapsed: started.elapsed(),
        outcome: match (aborted, interrupted) {
            (Some(reason), _) if halt.code() == Some(crate::codes::UNWRITABLE) => {
                ImportOutcome::Unwritable(reason)
            }
            (Some(reason), _) => ImportOutcome::Aborted(reason),
            (None, true) => ImportOutcome::Interrupted,
            (None, false) => ImportOutcome::Completed,
        },
    })
}

/// A tenant's share of the hash file.
#[derive(Debug, Default)]
struct TenantRows {
    /// Rows to import, in file order.
    todo: Vec<hashes::HashRow>,
    /// Serials an earlier attempt finished and its journal names: their records, if a stop
    /// came before they were deleted, are deleted now.
    cleanup: Vec<String>,
}

type ByTenant = BTreeMap<Option<String>, TenantRows>;

/// Invalid rows written at once; rows an earlier import finished counted, not redone; the
/// rest grouped by tenant, in file order.
fn sort(
    lines: Vec<hashes::Line>,
    earlier: &sheet::Earlier,
    shared: &Shared<'_>,
) -> Result<(ByTenant, BTreeMap<ImportStatus, u64>), ImportError> {
    let mut by_tenant: ByTenant = BTreeMap::new();
    let mut done = BTreeMap::new();
    for line in lines {
        match line {
            hashes::Line::Bad(b) => {
                let mut l = sheet::ImportLine::new(
                    b.row,
                    &b.serial,
                    ImportStatus::Invalid,
                    b.tenant.as_deref(),
                );
                l.error_message = b.reason;
                shared
                    .write(&l)
                    .map_err(|_| ImportError::Config("cannot write the import file".into()))?;
            }
            hashes::Line::Row(r) => {
                let rows = by_tenant.entry(r.tenant.clone()).or_default();
                match earlier.finished(&r.serial, r.tenant.as_deref()) {
                    Some((status, _)) => {
                        *done.entry(*status).or_default() += 1;
                        let key = journal_key(&r.serial, r.tenant.as_deref());
                        if shared.journaled.contains(&key) {
                            rows.cleanup.push(r.serial);
                        }
                    }
                    None => rows.todo.push(r),
                }
            }
        }
    }
    Ok((by_tenant, done))
}

/// The import file, new or continued, and what an earlier import into it finished.
fn open_sheet(
    config: &ImportConfig,
    tenants: bool,
) -> Result<(sheet::ImportSheet, sheet::Earlier), ImportError> {
    if config.resume && config.output.exists() {
        let earlier = sheet::read_earlier(&config.output, tenants)?;
        let sheet = if earlier.valid_len == 0 {
            sheet::ImportSheet::create(&config.output, true, tenants)?
        } else {
            sheet::ImportSheet::append(&config.output, earlier.valid_len, tenants)?
        };
        return Ok((sheet, earlier));
    }
    let sheet =
        sheet::ImportSheet::create(&config.output, config.overwrite || config.resume, tenants)?;
    Ok((sheet, sheet::Earlier::default()))
}

/// Whether `a` and `b` name one existing file, however spelled.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Why tenants stopped on their own (a refused token), one after another.
fn stopped_tenants(reaches: &HashMap<Option<String>, reach::Reach>) -> Option<String> {
    let reasons: Vec<String> = reaches
        .iter()
        .filter_map(|(key, r)| {
            Some(crate::connect::named(
                key.as_deref(),
                r.budget.halt().reason()?,
            ))
        })
        .collect();
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

/// A budget and client for every tenant.
fn connect(
    config: &ImportConfig,
    halt: &Halt,
) -> Result<HashMap<Option<String>, reach::Reach>, ImportError> {
    let mut reaches = HashMap::new();
    for c in
        crate::connect::connect_all(&config.graph, halt.token()).map_err(ImportError::Config)?
    {
        let reach = reach::Reach {
            key: c.key.clone(),
            budget: c.budget,
            graph: c.graph,
            counts: reach::Counts::default(),
        };
        reaches.insert(c.key, reach);
    }
    Ok(reaches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_keeps_its_journal_key_whatever_its_row_and_case() {
        assert_eq!(journal_key("PF1", None), journal_key("pf1", None));
        assert_ne!(journal_key("PF1", None), journal_key("PF2", None));
        assert_ne!(journal_key("PF1", Some("a")), journal_key("PF1", Some("b")));
        // Fixed across builds: a journal written by one build is read by the next.
        assert_eq!(
            journal_key("PF1", None).to_string(),
            journal_key("PF1", None).to_string()
        );
    }
}
