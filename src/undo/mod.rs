//! `undo RESULTS.csv`: put back every device a run reports `created`, and nothing else. An
//! assignment is deleted, a tag set back to the one the device had (unless it was retagged
//! since), a group member removed; rows the run did not change are `skipped`.
//!
//! ```text
//! results.csv ─▶ source (one step per row) ─▶ ≤ concurrency steps, each through its tenant's budget ─▶ sheet ─▶ <stem>.undo.csv
//! ```
//!
//! The machinery is the run's: the lock on the undo file, the journal written before each
//! row's first write (so that `--resume` after a crash knows a 404 was its own doing), a budget
//! per tenant (and the directory's for members), Ctrl-C finishing rows in flight. The rows are
//! few and each is one or two requests, so a bounded loop stands in for the run's pipeline.

mod sheet;
mod source;
mod step;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::halt::Halt;
use crate::lock::{LockError, RunLock};
use crate::output::{Journal, OutputError};

pub use sheet::{HEADER, UndoStatus};
pub use source::{Entry, Step};

/// What `undo` is asked to do.
#[derive(Debug, Clone)]
pub struct UndoConfig {
    /// The results file of the run to undo.
    pub results: PathBuf,
    /// The undo file (`-o`).
    pub output: PathBuf,
    pub resume: bool,
    pub overwrite: bool,
    /// How to reach the tenants: credentials, URLs, rates, the tenants file.
    pub graph: Config,
    /// Rows in flight at most.
    pub concurrency: usize,
    pub progress: bool,
}

impl UndoConfig {
    pub fn new(results: &Path, graph: Config) -> Self {
        UndoConfig {
            results: results.to_path_buf(),
            output: default_output(results),
            resume: false,
            overwrite: false,
            graph,
            concurrency: 4,
            progress: false,
        }
    }
}

/// `<results stem>.undo.csv` beside the results file.
pub fn default_output(results: &Path) -> PathBuf {
    crate::config::beside(results, "undo")
}

/// An undo that could not start (nothing was sent), or whose undo file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum UndoError {
    #[error("cannot undo {}: {reason}", path.display())]
    Results { path: PathBuf, reason: String },
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

/// How an undo ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UndoOutcome {
    Completed,
    Aborted(String),
    Interrupted,
}

/// What an undo did.
#[derive(Debug, Clone)]
pub struct UndoSummary {
    pub output: PathBuf,
    /// Rows of the results file.
    pub rows: u64,
    /// Rows an earlier undo of this file finished (`--resume`).
    pub earlier: u64,
    pub by_status: BTreeMap<UndoStatus, u64>,
    /// Skipped rows that should have been undone but could not (retagged since, not recorded).
    pub not_undone: u64,
    pub requests: u64,
    pub elapsed: Duration,
    pub outcome: UndoOutcome,
}

impl UndoSummary {
    pub fn count(&self, s: UndoStatus) -> u64 {
        self.by_status.get(&s).copied().unwrap_or(0)
    }

    /// As `run`'s: 0 every changed row is back, 1 some failed or could not be undone, 3
    /// aborted, 130 interrupted.
    pub fn exit_code(&self) -> u8 {
        match self.outcome {
            UndoOutcome::Aborted(_) => 3,
            UndoOutcome::Interrupted => 130,
            UndoOutcome::Completed if self.count(UndoStatus::Failed) + self.not_undone > 0 => 1,
            UndoOutcome::Completed => 0,
        }
    }

    /// The end-of-undo lines for stderr.
    pub fn render(&self) -> String {
        let mut s = format!(
            "undo: {} rows · {} undone · {} gone · {} skipped ({} not undone) · {} failed · {} \
             requests · {:.1}s → {}\n",
            self.rows,
            self.count(UndoStatus::Undone),
            self.count(UndoStatus::Gone),
            self.count(UndoStatus::Skipped),
            self.not_undone,
            self.count(UndoStatus::Failed),
            self.requests,
            self.elapsed.as_secs_f64(),
            self.output.display()
        );
        if self.earlier > 0 {
            s.push_str(&format!(
                "  {} rows done by an earlier undo\n",
                self.earlier
            ));
        }
        match &self.outcome {
            UndoOutcome::Aborted(reason) => {
                s.push_str(&format!(
                    "  aborted: {}\n",
                    crate::output::printable(reason)
                ));
            }
            UndoOutcome::Interrupted => s.push_str("  interrupted\n"),
            UndoOutcome::Completed => {}
        }
        s
    }

    /// `--summary-json`: field names are a contract (add, never rename).
    pub fn json(&self, exit_code: u8) -> serde_json::Value {
        let outcome = match &self.outcome {
            UndoOutcome::Completed => "completed",
            UndoOutcome::Aborted(_) => "aborted",
            UndoOutcome::Interrupted => "interrupted",
        };
        let reason = match &self.outcome {
            UndoOutcome::Aborted(r) => Some(r.clone()),
            _ => None,
        };
        serde_json::json!({
            "command": "undo",
            "output": self.output.display().to_string(),
            "rows": self.rows,
            "earlier": self.earlier,
            "undone": self.count(UndoStatus::Undone),
            "gone": self.count(UndoStatus::Gone),
            "skipped": self.count(UndoStatus::Skipped),
            "not_undone": self.not_undone,
            "failed": self.count(UndoStatus::Failed),
            "requests": self.requests,
            "elapsed_ms": u64::try_from(self.elapsed.as_millis()).unwrap_or(u64::MAX),
            "outcome": outcome,
            "abort_reason": reason,
            "exit_code": exit_code,
        })
    }
}

/// The rows of `results` and what undo would do to each (`--dry-run`): nothing is sent.
pub fn plan(results: &Path) -> Result<Vec<Entry>, UndoError> {
    source::read(results)
}

/// What a step sends, for `--dry-run`; `None` for a skipped row.
pub fn describe(step: &Step) -> Option<String> {
    use crate::graph::request::Request;
    let request = match step {
        Step::Skip { .. } => return None,
        Step::Delete { device, assignment } => Request::DeleteAssignment {
            device: *device,
            assignment: assignment.clone(),
        },
        Step::Remove { group, member, .. } => Request::RemoveMember {
            group: *group,
            member: *member,
        },
        Step::Restore {
            device,
            set,
            previous,
        } => {
            let write = crate::action::tag::write(*device, previous);
            let body = write.body().unwrap_or_default();
            return Some(format!(
                "{} {} {body} (if it still carries {set:?})",
                write.method(),
                write.path()
            ));
        }
    };
    Some(format!("{} {}", request.method(), request.path()))
}

/// Undo every row of the results file. `shutdown` stops taking new rows; rows in flight
/// finish.
pub async fn undo(
    config: UndoConfig,
    shutdown: CancellationToken,
) -> Result<UndoSummary, UndoError> {
    let started = tokio::time::Instant::now();
    let halt = Arc::new(Halt::child_of(&shutdown));
    if same_file(&config.results, &config.output) {
        return Err(UndoError::Config(
            "the undo file would be the results file: name another with -o".into(),
        ));
    }
    let entries = source::read(&config.results)?;
    let command: Vec<String> = std::env::args().collect();
    let mut lock = RunLock::acquire(&config.output, &command.join(" "))?;
    let reaches = connect(&config, &entries, &halt)?;
    let (sheet, earlier) = open_sheet(&config)?;
    lock.cover_results()?;
    let (journal, journaled) =
        Journal::open(&config.output, config.overwrite).map_err(|source| UndoError::Journal {
            path: Journal::path_for(&config.output),
            source,
        })?;
    let journaled: HashSet<u64> = journaled.into_iter().map(|s| s.row).collect();
    let progress = crate::progress::Progress::new(config.progress);
    progress.set_total(entries.len() as u64);
    let rows = entries.len() as u64;
    let todo: Vec<Entry> = entries
        .into_iter()
        .filter(|e| !earlier.finished(e.row))
        .collect();
    let earlier_done = rows - todo.len() as u64;
    progress.advance(earlier_done);
    let work = Work {
        reaches: &reaches,
        journal: &journal,
        journaled: &journaled,
        sheet: Mutex::new((sheet, BTreeMap::new(), 0)),
        halt: &halt,
        progress: &progress,
    };
    let unfinished = work.all(todo, config.concurrency.max(1)).await;
    progress.finish();
    let (_, by_status, not_undone) = work.sheet.into_inner().unwrap_or_else(|p| p.into_inner());
    let aborted = halt.reason().or_else(|| stopped_tenants(&reaches));
    let interrupted = aborted.is_none() && shutdown.is_cancelled();
    if unfinished == 0 && aborted.is_none() && !interrupted {
        if earlier.has_repeats || (config.resume && earlier_done < earlier.rows.len() as u64) {
            crate::output::compact(&config.output, |tmp| lock.install_results(tmp))?;
        }
        if let Err(e) = journal.remove() {
            tracing::warn!("cannot remove the journal: {e}");
        }
    }
    Ok(UndoSummary {
        output: config.output.clone(),
        rows,
        earlier: earlier_done,
        by_status,
        not_undone,
        requests: reaches.values().map(requests).sum(),
        elapsed: started.elapsed(),
        outcome: match (aborted, interrupted || unfinished > 0) {
            (Some(reason), _) => UndoOutcome::Aborted(reason),
            (None, true) => UndoOutcome::Interrupted,
            (None, false) => UndoOutcome::Completed,
        },
    })
}

/// The undo file, new or continued, and what an earlier undo of it finished.
fn open_sheet(config: &UndoConfig) -> Result<(sheet::Sheet, sheet::Earlier), UndoError> {
    if config.resume && config.output.exists() {
        let earlier = sheet::read_earlier(&config.output)?;
        let sheet = if earlier.valid_len == 0 {
            sheet::Sheet::create(&config.output, true)?
        } else {
            sheet::Sheet::append(&config.output, earlier.valid_len)?
        };
        return Ok((sheet, earlier));
    }
    let sheet = sheet::Sheet::create(&config.output, config.overwrite || config.resume)?;
    Ok((sheet, sheet::Earlier::default()))
}

/// Whether `a` and `b` name one existing file, however spelled.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn requests(r: &step::Reach) -> u64 {
    r.budget.stats().requests + r.directory.as_ref().map_or(0, |(d, _)| d.stats().requests)
}

/// Why tenants stopped on their own (a refused token), one after another.
fn stopped_tenants(reaches: &HashMap<Option<String>, step::Reach>) -> Option<String> {
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

/// A budget and client for every tenant the rows to undo name (the directory's too when a
/// row removes a member); a row naming a tenant the tenants file lacks, or tenants without a
/// tenants file, is refused before anything is sent.
fn connect(
    config: &UndoConfig,
    entries: &[Entry],
    halt: &Halt,
) -> Result<HashMap<Option<String>, step::Reach>, UndoError> {
    let tenants = &config.graph.tenants;
    for e in entries.iter().filter(|e| e.step.device().is_some()) {
        match (&e.tenant, tenants.is_empty()) {
            (Some(t), true) => {
                return Err(UndoError::Config(format!(
                    "row {} names tenant {:?}: give the run's tenants file with --tenants",
                    e.row,
                    crate::output::printable(t)
                )));
            }
            (Some(t), false) if crate::tenants::find(tenants, t).is_none() => {
                return Err(UndoError::Config(format!(
                    "row {} names tenant {:?}, which the tenants file does not hold",
                    e.row,
                    crate::output::printable(t)
                )));
            }
            (None, false) => {
                return Err(UndoError::Config(format!(
                    "row {} names no tenant, and --tenants was given",
                    e.row
                )));
            }
            _ => {}
        }
    }
    let members = entries
        .iter()
        .any(|e| matches!(e.step, Step::Remove { .. }));
    let mut reaches = HashMap::new();
    for (tenant, graph) in crate::connect::tenants(&config.graph) {
        let c = crate::connect::connect(tenant, graph.clone(), halt.token())
            .map_err(UndoError::Config)?;
        let directory = if members {
            let mut graph = graph;
            graph.rate = crate::run::DIRECTORY_RATE;
            let d =
                crate::connect::connect(tenant, graph, halt.token()).map_err(UndoError::Config)?;
            Some((d.budget, d.graph))
        } else {
            None
        };
        let reach = step::Reach {
            budget: c.budget,
            graph: c.graph,
            directory,
        };
        reaches.insert(c.key, reach);
    }
    Ok(reaches)
}

/// What the rows in flight share.
struct Work<'a> {
    reaches: &'a HashMap<Option<String>, step::Reach>,
    journal: &'a Journal,
    journaled: &'a HashSet<u64>,
    /// The undo file, the tally by status, and the count of rows not undone.
    sheet: Mutex<(sheet::Sheet, BTreeMap<UndoStatus, u64>, u64)>,
    halt: &'a Halt,
    progress: &'a crate::progress::Progress,
}

impl Work<'_> {
    /// Every row, at most `concurrency` at once, until done or stopped; the rows left
    /// unfinished.
    async fn all(&self, todo: Vec<Entry>, concurrency: usize) -> u64 {
        let unfinished = std::sync::atomic::AtomicU64::new(0);
        let total = todo.len() as u64;
        let taken = std::sync::atomic::AtomicU64::new(0);
        futures::stream::iter(todo)
            .take_until(self.halt.token().clone().cancelled_owned())
            .for_each_concurrent(concurrency, |e| {
                let (unfinished, taken) = (&unfinished, &taken);
                async move {
                    taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if !self.one(&e).await {
                        unfinished.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
            .await;
        let never_taken = total - taken.load(std::sync::atomic::Ordering::Relaxed);
        unfinished.load(std::sync::atomic::Ordering::Relaxed) + never_taken
    }

    /// One row to its line; `false`: it did not finish (left to `--resume`).
    async fn one(&self, e: &Entry) -> bool {
        let key = e.tenant.as_ref().and_then(|t| {
            let keys = self.reaches.keys().flatten();
            keys.into_iter()
                .find(|k| crate::tenants::same_key(k, t))
                .cloned()
        });
        let done = match (&e.step, self.reaches.get(&key)) {
            (Step::Skip { code, reason }, _) => step::Done {
                status: UndoStatus::Skipped,
                http_status: None,
                error: Some(crate::graph::answer::ErrorInfo {
                    code: code.unwrap_or_default().to_string(),
                    message: reason.clone(),
                }),
                attempts: 0,
            },
            (step, Some(reach)) => {
                let journaled = self.journaled.contains(&e.row);
                match step::perform(step, e.row, reach, self.journal, journaled).await {
                    Ok(done) => done,
                    Err(step::Stopped) => return false,
                }
            }
            (_, None) => return false, // checked before the start: never
        };
        self.write(e, done)
    }

    fn write(&self, e: &Entry, done: step::Done) -> bool {
        let (code, message) = match done.error {
            Some(err) => (Some(err.code).filter(|c| !c.is_empty()), Some(err.message)),
            None => (None, None),
        };
        let not_undone = done.status == UndoStatus::Skipped && code.is_some();
        let line = sheet::UndoLine {
            row: e.row,
            device_id: e.device_id.clone(),
            serial_number: e.serial_number.clone(),
            action: e.action.clone(),
            status: done.status,
            http_status: done.http_status,
            error_code: code,
            error_message: message,
            attempts: done.attempts,
            finished_at: SystemTime::now(),
            tenant: e.tenant.clone(),
        };
        let mut guard = self.sheet.lock().unwrap_or_else(|p| p.into_inner());
        let (sheet, tally, not) = &mut *guard;
        if let Err(err) = sheet.write(&line) {
            self.halt
                .abort(format!("{err}; --resume continues from what was written"));
            return false;
        }
        *tally.entry(done.status).or_default() += 1;
        *not += u64::from(not_undone);
        self.progress.advance(1);
        true
    }
}
