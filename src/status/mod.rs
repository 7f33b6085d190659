//! `status`: did the assignments land? For the rows a results file reports `created` or
//! `existing`, read each device's profile assignment status from the tenant's identity listing
//! and write it to a status CSV; with `--watch`, read again until every device is assigned.
//!
//! Nothing is written to Graph. The status file is locked for the duration (one writer per
//! file) and replaced whole by each reading, so it always holds the latest complete one.

mod reading;
mod results;
mod sheet;
mod ticker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::budget::Budget;
use crate::config::Config;
use crate::graph::client::GraphClient;
use crate::listing::{Listed, ReadError};
use crate::lock::{LockError, RunLock};

pub use reading::{ASSIGNED, NOT_FOUND, is_assigned};
pub use results::ResultsError;
pub use sheet::{HEADER, default_output};

use reading::Reading;
use results::Landed;
use ticker::Ticker;

/// `--watch`: read again every `interval` until every row is assigned or `timeout` has passed
/// (checked between readings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watch {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for Watch {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// Everything `status` needs.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    /// The results CSV of a run.
    pub results: PathBuf,
    /// The status CSV.
    pub output: PathBuf,
    /// Replace an existing status file (else it is refused, untouched).
    pub overwrite: bool,
    pub watch: Option<Watch>,
    /// How to reach the tenant: credentials, cloud, URLs, pace, timeouts and retries. Its
    /// input, output and run-only fields are not used.
    pub graph: Config,
    /// Show progress on stderr.
    pub progress: bool,
}

impl StatusConfig {
    /// One reading of `results` into the default status file beside it.
    pub fn new(results: impl Into<PathBuf>, graph: Config) -> Self {
        let results = results.into();
        Self {
            output: default_output(&results),
            results,
            overwrite: false,
            watch: None,
            graph,
            progress: false,
        }
    }
}

/// What `status` found: the latest reading's counts, and how it ended.
#[derive(Debug, Clone, Default)]
pub struct StatusReport {
    pub output: PathBuf,
    /// Rows the results file reports landed: the rows read.
    pub rows: u64,
    /// Rows per assignment status in the latest reading.
    pub counts: BTreeMap<String, u64>,
    /// Rows assigned in the latest reading.
    pub assigned: u64,
    /// Readings completed (and written).
    pub readings: u32,
    /// What the latest reading's listing read: pages and identities.
    pub listed: Listed,
    /// `--watch` gave up at its timeout.
    pub timed_out: bool,
    /// Why reading stopped: authentication failed, the listing could not be read.
    pub aborted: Option<String>,
    /// Stopped by the caller's shutdown token (Ctrl-C).
    pub interrupted: bool,
}

impl StatusReport {
    /// 0 every row assigned · 1 some are not, or there were no landed rows to read (nothing is
    /// confirmed) · 3 aborted · 130 interrupted.
    pub fn exit_code(&self) -> u8 {
        if self.aborted.is_some() {
            3
        } else if self.interrupted {
            130
        } else if self.rows > 0 && self.assigned == self.rows {
            0
        } else {
            1
        }
    }

    /// The counts for stdout: a total line, then one line per status.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{}: {} rows · {} assigned · {} not assigned\n",
            self.output.display(),
            self.rows,
            self.assigned,
            self.rows - self.assigned.min(self.rows)
        );
        for (status, count) in &self.counts {
            s.push_str(&format!("  {status:<26} {count}\n"));
        }
        s
    }
}

/// `status` could not start, or could not write its file. Exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error(
        "status file {} already exists: pass --overwrite to replace it, or -o to write \
         elsewhere", .0.display()
    )]
    Exists(PathBuf),
    #[error("the status file {} is the results file: choose another -o", .0.display())]
    IsResults(PathBuf),
    #[error(
        "status file {} is in use by another autopilot-bulk status ({holder}): wait for it to \
         finish or write elsewhere with -o; nothing was read or written", output.display()
    )]
    Locked { output: PathBuf, holder: String },
    #[error(transparent)]
    Lock(LockError),
    #[error("cannot write status file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Read the status of every landed row of `config.results` into `config.output`; with
/// `config.watch`, again until all are assigned. `shutdown` stops it (the file keeps the last
/// complete reading).
pub async fn status(
    config: StatusConfig,
    shutdown: CancellationToken,
) -> Result<StatusReport, StatusError> {
    let output = &config.output;
    if sheet::same_file(output, &config.results) {
        return Err(StatusError::IsResults(output.clone()));
    }
    let command: Vec<String> = std::env::args().collect();
    let _lock = RunLock::acquire(output, &command.join(" ")).map_err(|e| match e {
        LockError::Held { holder, .. } => StatusError::Locked {
            output: output.clone(),
            holder,
        },
        e => StatusError::Lock(e),
    })?;
    // Checked under the lock: no other status can create it between the check and the write.
    if !config.overwrite && std::fs::symlink_metadata(output).is_ok() {
        return Err(StatusError::Exists(output.clone()));
    }
    let landed = results::read_landed(&config.results)?;
    let mut report = StatusReport {
        output: output.clone(),
        rows: landed.len() as u64,
        ..StatusReport::default()
    };
    if landed.is_empty() {
        write(output, &Reading::default())?;
        return Ok(report);
    }
    let http = crate::budget::connect(&config.graph).map_err(StatusError::Config)?;
    let budget =
        Budget::from_config(&config.graph, http.clone(), &shutdown).map_err(StatusError::Config)?;
    let tenant = Tenant {
        graph: GraphClient::new(http, &config.graph.graph_url),
        budget,
        shutdown,
    };
    let ticker = Ticker::new(config.progress, config.watch.is_some(), report.rows);
    let watched = readings(&config, &tenant, &landed, &ticker, &mut report).await;
    ticker.finish();
    watched.map(|()| report)
}

/// What one reading needs of the tenant.
struct Tenant {
    graph: GraphClient,
    budget: Budget,
    shutdown: CancellationToken,
}

/// One reading, or (watching) one every interval until all are assigned, the timeout passes,
/// the tenant's budget stops or the caller does. Each complete reading is written at once.
async fn readings(
    config: &StatusConfig,
    tenant: &Tenant,
    landed: &[Landed],
    ticker: &Ticker,
    report: &mut StatusReport,
) -> Result<(), StatusError> {
    let deadline = config.watch.map(|w| Instant::now() + w.timeout);
    loop {
        let n = report.readings + 1;
        let read = reading::read(&tenant.graph, &tenant.budget, landed, |l| ticker.page(n, l));
        let read = tokio::select! {
            biased;
            _ = tenant.shutdown.cancelled() => Err(ReadError::Stopped),
            r = read => r,
        };
        let reading = match read {
            Ok(r) => r,
            Err(e) => {
                stopped(tenant, e, report);
                return Ok(());
            }
        };
        write(&config.output, &reading)?;
        report.readings = n;
        report.counts = reading.counts.clone();
        report.assigned = reading.assigned;
        report.listed = reading.listed;
        let (Some(watch), Some(deadline)) = (config.watch, deadline) else {
            ticker.reading(n, &reading, None);
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let done = report.assigned == report.rows;
        report.timed_out = !done && left.is_zero();
        let pause = (!done && !left.is_zero()).then(|| watch.interval.min(left));
        ticker.reading(n, &reading, pause);
        let Some(pause) = pause else { return Ok(()) };
        tokio::select! {
            _ = tenant.shutdown.cancelled() => {
                report.interrupted = true;
                return Ok(());
            }
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Record why a reading did not complete: the caller stopped it, or the tenant failed.
fn stopped(tenant: &Tenant, e: ReadError, report: &mut StatusReport) {
    if tenant.shutdown.is_cancelled() {
        report.interrupted = true;
        return;
    }
    report.aborted = Some(match e {
        ReadError::Stopped => tenant
            .budget
            .halt()
            .reason()
            .unwrap_or_else(|| "stopped".to_string()),
        ReadError::Failed { ref code, .. } if code.eq_ignore_ascii_case("Forbidden") => format!(
            "reading the identity listing was refused: {e} (the app needs the Graph application \
             permission DeviceManagementServiceConfig.Read.All or ReadWrite.All)"
        ),
        ReadError::Failed { .. } => format!("reading the identity listing failed: {e}"),
        ReadError::PagingLoop(_) => e.to_string(),
    });
}

fn write(output: &std::path::Path, reading: &Reading) -> Result<(), StatusError> {
    sheet::write(output, &reading.lines).map_err(|source| StatusError::Write {
        path: output.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        let report = |rows, assigned| StatusReport {
            rows,
            assigned,
            ..StatusReport::default()
        };
        assert_eq!(report(3, 3).exit_code(), 0);
        assert_eq!(report(3, 2).exit_code(), 1);
        assert_eq!(
            report(0, 0).exit_code(),
            1,
            "nothing landed: nothing confirmed"
        );
        let interrupted = StatusReport {
            interrupted: true,
            ..report(3, 3)
        };
        assert_eq!(interrupted.exit_code(), 130);
        let aborted = StatusReport {
            aborted: Some("authentication failed".into()),
            ..interrupted
        };
        assert_eq!(aborted.exit_code(), 3);
    }
}
