//! `status`: did the assignments land? For the rows a results file reports `created` or
//! `existing`, read each device's profile assignment status from the tenant's identity listing
//! and write it to a status CSV; with `--watch`, read again until every device is assigned.
//!
//! A results file of a `--tenants` run names each row's tenant: with the same tenants file,
//! each tenant's rows are read from its own listing, all tenants at once (see `tenants`).
//!
//! Nothing is written to Graph. The status file is locked for the duration (one writer per
//! file) and replaced whole by each reading, so it always holds the latest complete one.

mod reading;
mod results;
mod sheet;
mod tenants;
mod ticker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::listing::Listed;
use crate::lock::{LockError, RunLock};

pub use reading::{ASSIGNED, NOT_FOUND, NOT_READ, is_assigned};
pub use results::ResultsError;
pub use sheet::{HEADER, default_output};

use reading::Reading;
use tenants::Reader;
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
    /// Replace an existing file at `output` that is not a status file (else it is refused,
    /// untouched). An earlier status file is replaced either way: every reading replaces the
    /// whole file, so it only held an earlier reading.
    pub overwrite: bool,
    pub watch: Option<Watch>,
    /// How to reach the tenant: credentials, cloud, URLs, pace, timeouts and retries. Its
    /// input, output and run-only fields are not used. With `tenants` set (`--tenants`), each
    /// landed row is read from the tenant its `tenant` column names, and `credentials` is not
    /// used.
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
    /// Why reading stopped: authentication failed, the listing could not be read. With
    /// tenants, each tenant that could not be read, as `tenant KEY: why`, joined by `; `.
    pub aborted: Option<String>,
    /// Stopped by the caller's shutdown token (Ctrl-C).
    pub interrupted: bool,
    /// With tenants: each tenant's rows in the latest reading, in the tenants file's order
    /// (tenants without landed rows left out). Empty in single-tenant use.
    pub tenants: Vec<TenantStatus>,
}

/// One tenant's share of the latest reading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantStatus {
    /// The tenants file's key.
    pub tenant: String,
    pub rows: u64,
    pub assigned: u64,
    /// Why it could not be read (its rows are [`NOT_READ`]).
    pub failed: Option<String>,
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

    /// The counts for stdout: a total line, one line per status, then one per tenant.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{}: {} rows · {} assigned · {} not assigned\n",
            self.output.display(),
            self.rows,
            self.assigned,
            self.rows - self.assigned.min(self.rows)
        );
        for (status, count) in &self.counts {
            // Graph's status values, verbatim in the file, printable on the terminal.
            let status = crate::output::printable(status);
            s.push_str(&format!("  {status:<26} {count}\n"));
        }
        for t in &self.tenants {
            let read = match t.failed {
                Some(_) => "not read".to_string(),
                None => format!("{} assigned", t.assigned),
            };
            s.push_str(&format!(
                "  tenant {}: {} rows · {read}\n",
                t.tenant, t.rows
            ));
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
        "results file {} names tenants ({tenants}): it is from a --tenants run, and one \
         tenant's listing would report the others' devices notFound; pass the same --tenants \
         file (or AUTOPILOT_BULK_TENANTS); nothing was read", results.display()
    )]
    TenantsNeeded { results: PathBuf, tenants: String },
    #[error(
        "results file {} names tenants the tenants file does not hold ({tenants}; it names: \
         {known}): pass the --tenants file the run used; nothing was read", results.display()
    )]
    UnknownTenant {
        results: PathBuf,
        tenants: String,
        known: String,
    },
    #[error(
        "results file {} row {row}{} reports a device landed without a tenant: with --tenants \
         every landed row must name its tenant (read a single-tenant results file without \
         --tenants); nothing was read",
        results.display(),
        if *more > 0 { format!(" (and {more} more)") } else { String::new() }
    )]
    NoTenant {
        results: PathBuf,
        row: u64,
        more: usize,
    },
    #[error(
        "{} already exists and is not a status file (its first line is not the status \
         header): pass --overwrite to replace it, or -o to write elsewhere", .0.display()
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
    if !config.overwrite && !sheet::replaceable(output) {
        return Err(StatusError::Exists(output.clone()));
    }
    let landed = results::read_landed(&config.results)?;
    let groups = tenants::group(landed, &config.graph.tenants, &config.results)?;
    let mut report = StatusReport {
        output: output.clone(),
        rows: groups.iter().map(|(_, rows)| rows.len() as u64).sum(),
        ..StatusReport::default()
    };
    if report.rows == 0 {
        write(output, &Reading::default())?;
        return Ok(report);
    }
    let mut readers = tenants::connect(groups, &config.graph, &shutdown)?;
    let ticker = Ticker::new(config.progress, config.watch.is_some(), report.rows);
    let watched = readings(&config, &mut readers, &shutdown, &ticker, &mut report).await;
    ticker.finish();
    watched.map(|()| report)
}

/// One reading, or (watching) one every interval until every row of a tenant still readable is
/// assigned, the timeout passes, every tenant has failed or the caller stops. Each complete
/// reading is written at once. One tenant alone that fails writes nothing (the file keeps the
/// last complete reading); among several, a tenant that fails has its rows written
/// [`NOT_READ`] and the others go on.
async fn readings(
    config: &StatusConfig,
    readers: &mut [Reader],
    shutdown: &CancellationToken,
    ticker: &Ticker,
    report: &mut StatusReport,
) -> Result<(), StatusError> {
    let several = !config.graph.tenants.is_empty();
    let deadline = config.watch.map(|w| Instant::now() + w.timeout);
    loop {
        let n = report.readings + 1;
        let Some(parts) = tenants::read_all(readers, shutdown, |l| ticker.page(n, l)).await else {
            report.interrupted = true;
            return Ok(());
        };
        report.aborted = aborted(readers, several);
        if !several && report.aborted.is_some() {
            return Ok(());
        }
        let waiting = readers
            .iter()
            .zip(&parts)
            .any(|(r, p)| r.failed.is_none() && p.assigned < r.landed.len() as u64);
        if several {
            report.tenants = readers
                .iter()
                .zip(&parts)
                .map(|(r, p)| TenantStatus {
                    tenant: r.key.clone().unwrap_or_default(),
                    rows: r.landed.len() as u64,
                    assigned: p.assigned,
                    failed: r.failed.clone(),
                })
                .collect();
        }
        let reading = Reading::merge(parts);
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
        report.timed_out = waiting && left.is_zero();
        let pause = (waiting && !left.is_zero()).then(|| watch.interval.min(left));
        ticker.reading(n, &reading, pause);
        let Some(pause) = pause else { return Ok(()) };
        tokio::select! {
            _ = shutdown.cancelled() => {
                report.interrupted = true;
                return Ok(());
            }
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Why the readers that failed could not be read: the reason alone for the one tenant of a
/// single-tenant status, each as `tenant KEY: why` among several.
fn aborted(readers: &[Reader], several: bool) -> Option<String> {
    let failed: Vec<String> = readers
        .iter()
        .filter_map(|r| {
            let why = r.failed.as_deref()?;
            Some(match (&r.key, several) {
                (Some(key), true) => format!("tenant {key}: {why}"),
                _ => why.to_string(),
            })
        })
        .collect();
    // Graph's messages are in it, and it is shown on the terminal: printable only.
    (!failed.is_empty()).then(|| crate::output::printable(&failed.join("; ")).into_owned())
}

/// Whether the results file at `results` can be read without `--tenants`: an error when it
/// names tenants. Lets the command line say so before asking for credentials that would not
/// read it right. A file that cannot be read passes: `status` reports that itself.
pub fn single_tenant(results: &std::path::Path) -> Result<(), StatusError> {
    match results::read_landed(results) {
        Ok(landed) => tenants::group(landed, &[], results).map(drop),
        Err(_) => Ok(()),
    }
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

    #[test]
    fn graphs_status_values_are_shown_printable() {
        let report = StatusReport {
            rows: 1,
            counts: [("pending\u{1b}[2J\r\nforged".to_string(), 1)].into(),
            ..StatusReport::default()
        };
        let shown = report.render();
        assert!(!shown.contains(['\u{1b}', '\r']), "{shown:?}");
        assert_eq!(shown.lines().count(), 2, "{shown}");
    }
}
