//! What a run did: the [`Summary`] value, its exit code, and the two ways it is reported (the
//! human lines on stderr and the `--summary-json` document schedulers read).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::config::RateSpec;
// Error codes and abort reasons come from the service: shown printable, never raw.
use crate::output::printable;
use crate::progress::pace_words;

/// What a run did, for the summary, `--summary-json` and the exit code.
#[derive(Debug, Clone)]
pub struct Summary {
    pub input: PathBuf,
    pub output: PathBuf,
    /// Rows reported in the results file by this run.
    pub rows: u64,
    /// Rows skipped because an earlier run already reported them (`--resume`).
    pub skipped: u64,
    /// The skipped rows by the status an earlier run reported: with this run's counts below
    /// they make the whole results file, which the exit code describes.
    pub earlier: Counts,
    /// This run's rows by status (see [`Summary::whole_file`] for the file's).
    pub created: u64,
    pub existing: u64,
    pub failed: u64,
    pub invalid: u64,
    /// Failed rows by Graph error code (or our transport code).
    pub by_error_code: BTreeMap<String, u64>,
    /// HTTP requests made to Graph (POSTs and reconciling GETs).
    pub requests: u64,
    pub throttled_responses: u64,
    pub reconciliations: u64,
    pub throttled_time: Duration,
    /// The pace in force at the end (below the configured rate if the service throttled).
    pub final_rate: RateSpec,
    pub token_requests: u64,
    pub configured_rate: RateSpec,
    pub started_at: SystemTime,
    pub finished_at: SystemTime,
    pub elapsed: Duration,
    /// How the run ended.
    pub outcome: Outcome,
    /// Serial numbers resolved to identity ids before the run, if the input named any.
    pub resolution: Option<ResolutionSummary>,
    /// Rows in flight at most at the end (pinned by `--concurrency`, or as the latency led);
    /// with `--tenants`, summed over the tenants.
    pub concurrency: usize,
    /// With `--tenants`: what each tenant did, in the tenants file's order (empty otherwise).
    pub tenants: Vec<TenantSummary>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every input row has its line (some may be `failed` or `invalid`).
    Completed,
    /// Stopped early, with the reason (token rejected, breaker tripped, ...): exit code 3.
    Aborted(String),
    /// Stopped by the caller's shutdown token (Ctrl-C): exit code 130.
    Interrupted,
    /// Stopped because the results file or the journal could not be written (a full disk,
    /// the file-size limit), with the reason: exit code 2, as a run that could not start for
    /// the file; every line on disk is whole, and `--resume` continues.
    Unwritable(String),
}

impl Outcome {
    /// The word the summary JSON's `outcome` carries.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Aborted(_) => "aborted",
            Outcome::Interrupted => "interrupted",
            // The word a run that could not write its file always gave.
            Outcome::Unwritable(_) => "error",
        }
    }
}

/// Rows by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub created: u64,
    pub existing: u64,
    pub failed: u64,
    pub invalid: u64,
}

impl Counts {
    /// Both counts together.
    pub fn plus(self, o: Counts) -> Counts {
        Counts {
            created: self.created + o.created,
            existing: self.existing + o.existing,
            failed: self.failed + o.failed,
            invalid: self.invalid + o.invalid,
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "created": self.created,
            "existing": self.existing,
            "failed": self.failed,
            "invalid": self.invalid,
        })
    }

    fn line(&self) -> String {
        format!(
            "created {} · existing {} · failed {} · invalid {}",
            self.created, self.existing, self.failed, self.invalid
        )
    }
}

/// One tenant of a `--tenants` run.
#[derive(Debug, Clone)]
pub struct TenantSummary {
    pub tenant: String,
    /// This run's rows of the tenant by status.
    pub created: u64,
    pub existing: u64,
    pub failed: u64,
    pub invalid: u64,
    /// The tenant's rows an earlier run finished (`--resume`), by status.
    pub earlier: Counts,
    pub requests: u64,
    pub throttled_responses: u64,
    pub throttled_time: Duration,
    pub configured_rate: RateSpec,
    pub final_rate: RateSpec,
    pub token_requests: u64,
    pub concurrency: usize,
    /// Why this tenant stopped early (its token rejected, its breaker tripped).
    pub aborted: Option<String>,
}

impl TenantSummary {
    /// The tenant's rows in the whole results file: this run's and the earlier runs'.
    pub fn whole_file(&self) -> Counts {
        let this_run = Counts {
            created: self.created,
            existing: self.existing,
            failed: self.failed,
            invalid: self.invalid,
        };
        this_run.plus(self.earlier)
    }

    fn outcome(&self) -> &'static str {
        if self.aborted.is_some() {
            "aborted"
        } else {
            "completed"
        }
    }
}

/// The resolution phase: how many serials, how many found, what it cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolutionSummary {
    pub serials: u64,
    pub found: u64,
    /// Listing pages or lookups read (a retried one counts once).
    pub requests: u64,
    pub elapsed: Duration,
}

impl Summary {
    /// Requests per second actually sent.
    pub fn effective_rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        }
    }

    /// Why the run stopped early, if it was aborted.
    pub fn aborted(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Aborted(reason) | Outcome::Unwritable(reason) => Some(reason),
            _ => None,
        }
    }

    /// This run's rows by status.
    pub fn this_run(&self) -> Counts {
        Counts {
            created: self.created,
            existing: self.existing,
            failed: self.failed,
            invalid: self.invalid,
        }
    }

    /// Every row of the results file (each row's last line) by status: this run's and the
    /// rows earlier runs finished. A nightly `--resume` is judged by the file, not the night.
    pub fn whole_file(&self) -> Counts {
        self.this_run().plus(self.earlier)
    }

    /// The exit code contract: 0 all created/existing, 1 some failed or invalid in the whole
    /// results file (an earlier run's `invalid` rows too), 3 aborted, 130 interrupted.
    pub fn exit_code(&self) -> u8 {
        let file = self.whole_file();
        match self.outcome {
            Outcome::Aborted(_) => 3,
            Outcome::Unwritable(_) => 2,
            Outcome::Interrupted => 130,
            Outcome::Completed if file.failed > 0 || file.invalid > 0 => 1,
            Outcome::Completed => 0,
        }
    }
}

/// The machine-readable summary (`--summary-json`). Field names are a contract for
/// schedulers and monitoring: add fields, never rename or remove them. `rows.created` ..
/// `rows.invalid` count the whole results file; `rows.earlier` the part earlier runs
/// finished (`rows.skipped`), `rows.this_run` the rest (`rows.reported`).
pub fn summary_json(s: &Summary, exit_code: u8) -> serde_json::Value {
    let file = s.whole_file();
    let time = |t: std::time::SystemTime| humantime::format_rfc3339_millis(t).to_string();
    serde_json::json!({
        "schema": 1,
        "outcome": s.outcome.as_str(),
        "exit_code": exit_code,
        "aborted_reason": s.aborted(),
        "input": s.input.display().to_string(),
        "results": s.output.display().to_string(),
        "started_at": time(s.started_at),
        "finished_at": time(s.finished_at),
        "elapsed_seconds": s.elapsed.as_secs_f64(),
        "rows": {
            "reported": s.rows,
            "skipped": s.skipped,
            "created": file.created,
            "existing": file.existing,
            "failed": file.failed,
            "invalid": file.invalid,
            "earlier": s.earlier.json(),
            "this_run": s.this_run().json(),
        },
        "errors_by_code": s.by_error_code,
        "requests": s.requests,
        "throttled_responses": s.throttled_responses,
        "throttled_seconds": s.throttled_time.as_secs_f64(),
        "reconciliations": s.reconciliations,
        "token_requests": s.token_requests,
        "configured_rate": s.configured_rate.to_string(),
        "configured_rate_per_second": s.configured_rate.per_second(),
        "final_rate": s.final_rate.to_string(),
        "effective_rate_per_second": s.effective_rate(),
        "concurrency": s.concurrency,
        "resolution": s.resolution.map(|r| serde_json::json!({
            "serials": r.serials,
            "found": r.found,
            "requests": r.requests,
            "seconds": r.elapsed.as_secs_f64(),
        })),
        "tenants": s.tenants.iter().map(|t| (t.tenant.clone(), tenant_json(t))).collect::<serde_json::Map<_, _>>(),
    })
}

/// One tenant's part of the summary JSON.
fn tenant_json(t: &TenantSummary) -> serde_json::Value {
    let file = t.whole_file();
    serde_json::json!({
        "outcome": t.outcome(),
        "aborted_reason": t.aborted,
        "rows": {
            "created": file.created,
            "existing": file.existing,
            "failed": file.failed,
            "invalid": file.invalid,
            "earlier": t.earlier.json(),
        },
        "requests": t.requests,
        "throttled_responses": t.throttled_responses,
        "throttled_seconds": t.throttled_time.as_secs_f64(),
        "token_requests": t.token_requests,
        "configured_rate": t.configured_rate.to_string(),
        "final_rate": t.final_rate.to_string(),
        "concurrency": t.concurrency,
    })
}

/// The summary for a run that could not start (exit code 2), so a scheduler always finds one.
pub fn error_json(error: &str, exit_code: u8) -> serde_json::Value {
    serde_json::json!({
        "schema": 1,
        "outcome": "error",
        "exit_code": exit_code,
        "error": error,
    })
}

/// The summary for a run quit at once by a second signal: the counts are not known, the
/// outcome is.
pub fn interrupted_json(reason: &str) -> serde_json::Value {
    serde_json::json!({
        "schema": 1,
        "outcome": "interrupted",
        "exit_code": 130,
        "error": reason,
    })
}

/// The summary's pace line. A rate is only measured over more than one window of the
/// configured rate: inside one, a window's writes go out at once by design, and requests over
/// seconds would read as many times the limit.
fn rate_line(s: &Summary) -> String {
    let configured = pace_words(s.configured_rate);
    let end = format!(
        "pace at the end {}; up to {} rows at once",
        pace_words(s.final_rate),
        s.concurrency
    );
    if s.elapsed > s.configured_rate.per {
        // The windows the run reached into, each a full window's writes: what the limit
        // allowed in that time (a run of 20.1 s at 100/20s reached two: up to 200 writes).
        let windows =
            (s.elapsed.as_secs_f64() / s.configured_rate.per.as_secs_f64()).floor() as u64 + 1;
        format!(
            "effective rate {:.2} requests/s over {:.1}s (configured {configured}: {windows} \
             windows, up to {} writes, in that time; {end})",
            s.effective_rate(),
            s.elapsed.as_secs_f64(),
            u64::from(s.configured_rate.count) * windows,
        )
    } else {
        format!(
            "rate: within one window ({} requests in {:.1}s; configured {configured}, and a \
             window's writes may go out at once; {end})",
            s.requests,
            s.elapsed.as_secs_f64(),
        )
    }
}

/// The human summary printed on stderr at the end of a run.
pub fn render_summary(s: &Summary) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "autopilot-bulk: {} rows in {:.1}s",
        s.rows,
        s.elapsed.as_secs_f64()
    );
    if s.skipped > 0 {
        let _ = writeln!(
            out,
            "  skipped {} rows an earlier run finished: {}",
            s.skipped,
            s.earlier.line()
        );
        let _ = writeln!(out, "  this run: {}", s.this_run().line());
        let _ = writeln!(out, "  whole results file: {}", s.whole_file().line());
    } else {
        let _ = writeln!(out, "  {}", s.whole_file().line());
    }
    if !s.by_error_code.is_empty() {
        let codes: Vec<String> = s
            .by_error_code
            .iter()
            .map(|(code, n)| format!("{} {n}", printable(code)))
            .collect();
        let _ = writeln!(out, "  errors: {}", codes.join(" · "));
    }
    let _ = writeln!(
        out,
        "  requests {} · 429s {} · reconciled {} · throttled {:.1}s",
        s.requests,
        s.throttled_responses,
        s.reconciliations,
        s.throttled_time.as_secs_f64()
    );
    let _ = writeln!(out, "  {}", rate_line(s));
    if let Some(r) = s.resolution {
        let _ = writeln!(
            out,
            "  serial numbers: {} of {} found with {} requests in {:.1}s",
            r.found,
            r.serials,
            r.requests,
            r.elapsed.as_secs_f64()
        );
    }
    for t in &s.tenants {
        let _ = writeln!(
            out,
            "  tenant {}: {} · requests {} · 429s {} · pace {} · {}",
            t.tenant,
            t.whole_file().line(),
            t.requests,
            t.throttled_responses,
            pace_words(t.final_rate),
            t.aborted
                .as_deref()
                .map_or("completed".into(), |r| format!("ABORTED: {}", printable(r)))
        );
    }
    let _ = writeln!(out, "  results: {}", s.output.display());
    match &s.outcome {
        Outcome::Aborted(reason) => {
            let _ = writeln!(out, "  ABORTED: {}", printable(reason));
        }
        Outcome::Unwritable(reason) => {
            let _ = writeln!(out, "  STOPPED: {}", printable(reason));
        }
        Outcome::Interrupted => {
            let _ = writeln!(
                out,
                "  interrupted: rows not started are absent from the results"
            );
        }
        Outcome::Completed => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(requests: u64, elapsed: Duration) -> Summary {
        let rate = RateSpec::new(100, Duration::from_secs(20));
        Summary {
            input: "devices.csv".into(),
            output: "devices.results.csv".into(),
            rows: requests,
            skipped: 0,
            earlier: Counts::default(),
            created: requests,
            existing: 0,
            failed: 0,
            invalid: 0,
            by_error_code: BTreeMap::new(),
            requests,
            throttled_responses: 0,
            reconciliations: 0,
            throttled_time: Duration::ZERO,
            final_rate: RateSpec::new(100, Duration::from_millis(20_025)),
            token_requests: 1,
            configured_rate: rate,
            started_at: SystemTime::UNIX_EPOCH,
            finished_at: SystemTime::UNIX_EPOCH,
            elapsed,
            outcome: Outcome::Completed,
            resolution: None,
            concurrency: 16,
            tenants: Vec::new(),
        }
    }

    /// 95 requests in 40 ms is a burst inside one window, not 2375 req/s: no rate is shown.
    #[test]
    fn a_run_inside_one_window_shows_no_rate() {
        let text = render_summary(&summary(95, Duration::from_millis(40)));
        assert!(
            !text.contains("req/s") && !text.contains("requests/s"),
            "{text}"
        );
        assert!(!text.contains("2375"), "{text}");
        assert!(
            text.contains("within one window (95 requests in 0.0s"),
            "{text}"
        );
        assert!(text.contains("configured 100 writes per 20s"), "{text}");
        assert!(
            text.contains("pace at the end 100 writes per 20s;"),
            "{text}"
        );
        assert!(text.contains("up to 16 rows at once"), "{text}");
        assert!(!text.contains("in flight"), "{text}");
    }

    #[test]
    fn a_run_over_more_than_a_window_shows_its_rate() {
        let text = render_summary(&summary(500, Duration::from_secs(100)));
        assert!(
            text.contains(
                "effective rate 5.00 requests/s over 100.0s (configured 100 writes per 20s: 6 \
                 windows, up to 600 writes, in that time;"
            ),
            "{text}"
        );
        assert!(!text.contains("within one window"), "{text}");
        // Exactly one window is still inside it.
        let text = render_summary(&summary(100, Duration::from_secs(20)));
        assert!(text.contains("within one window"), "{text}");
    }
}
