//! The progress bar on stderr and the end-of-run summary.
//!
//! The bar is hidden when stderr is not a terminal (a scheduler's log file should not fill
//! with redraws) or with `-q`.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::Status;
use crate::pipeline::Summary;

/// Live counts shown on the bar.
pub struct Progress {
    bar: ProgressBar,
    created: AtomicU64,
    failed: AtomicU64,
    invalid: AtomicU64,
}

impl Progress {
    pub fn new(wanted: bool) -> Self {
        let visible = wanted && std::io::stderr().is_terminal();
        let target = if visible {
            ProgressDrawTarget::stderr_with_hz(5)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} rows · {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        if visible {
            *active_bar() = Some(bar.clone());
        }
        Self {
            bar,
            created: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
        }
    }

    /// The bar, for suspending it while a log line is printed.
    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }

    pub fn set_total(&self, rows: u64) {
        self.bar.set_length(rows);
    }

    /// Skip rows already done (resume).
    pub fn advance(&self, rows: u64) {
        self.bar.inc(rows);
    }

    pub fn record(&self, status: Status) {
        let counter = match status {
            Status::Created | Status::Existing => &self.created,
            Status::Failed => &self.failed,
            Status::Invalid => &self.invalid,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.bar.inc(1);
    }

    /// Refresh the message: counts, and the throttle pause when there is one.
    /// Refresh the message: counts, the pace, an ETA from the pace (the run goes in bursts of
    /// a window's worth, so a rate measured over the last seconds would mislead), and why it is
    /// waiting when it is.
    pub fn tick(
        &self,
        paused_for: Option<Duration>,
        rate: crate::config::RateSpec,
        at_limit: bool,
    ) {
        let mut msg = format!(
            "created {} · failed {} · invalid {} · pace {rate}",
            self.created.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.invalid.load(Ordering::Relaxed)
        );
        if let Some(total) = self.bar.length() {
            let remaining = total.saturating_sub(self.bar.position());
            if remaining > 0 {
                let secs = (remaining as f64 / rate.per_second()).ceil() as u64;
                msg.push_str(&format!(
                    " · ETA ≈ {}",
                    humantime::format_duration(Duration::from_secs(secs))
                ));
            }
        }
        if let Some(d) = paused_for {
            msg.push_str(&format!(
                " · throttled, resuming in {}s",
                d.as_secs_f64().ceil()
            ));
        } else if at_limit {
            msg.push_str(" · at the rate limit, waiting for the window");
        }
        self.bar.set_message(msg);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
        *active_bar() = None;
    }
}

/// The bar on screen, if any, so that log lines can be printed around it.
static ACTIVE_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn active_bar() -> std::sync::MutexGuard<'static, Option<ProgressBar>> {
    ACTIVE_BAR.lock().unwrap_or_else(|p| p.into_inner())
}

/// Log output to stderr that does not garble the progress bar: each log line is written with
/// the bar suspended (cleared, line printed, bar redrawn).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

/// One log event, buffered until the formatter is done with it.
pub struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let write = || {
            let _ = std::io::stderr().lock().write_all(&self.0);
        };
        let bar = active_bar().clone();
        match bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;
    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::with_capacity(256))
    }
}

/// The machine-readable summary (`--summary-json`). Field names are a contract for
/// schedulers and monitoring: add fields, never rename or remove them.
pub fn summary_json(s: &Summary, exit_code: u8) -> serde_json::Value {
    let time = |t: std::time::SystemTime| humantime::format_rfc3339_millis(t).to_string();
    let outcome = if s.aborted.is_some() {
        "aborted"
    } else if s.interrupted {
        "interrupted"
    } else {
        "completed"
    };
    serde_json::json!({
        "schema": 1,
        "outcome": outcome,
        "exit_code": exit_code,
        "aborted_reason": s.aborted,
        "input": s.input.display().to_string(),
        "results": s.output.display().to_string(),
        "started_at": time(s.started_at),
        "finished_at": time(s.finished_at),
        "elapsed_seconds": s.elapsed.as_secs_f64(),
        "rows": {
            "reported": s.rows,
            "skipped": s.skipped,
            "created": s.created,
            "existing": s.existing,
            "failed": s.failed,
            "invalid": s.invalid,
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
        let _ = writeln!(out, "  skipped {} rows an earlier run finished", s.skipped);
    }
    let _ = writeln!(
        out,
        "  created {} · existing {} · failed {} · invalid {}",
        s.created, s.existing, s.failed, s.invalid
    );
    if !s.by_error_code.is_empty() {
        let codes: Vec<String> = s
            .by_error_code
            .iter()
            .map(|(code, n)| format!("{code} {n}"))
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
    let _ = writeln!(
        out,
        "  effective rate {:.2} req/s (configured {} = {:.2} req/s; pace at the end {})",
        s.effective_rate(),
        s.configured_rate,
        s.configured_rate.per_second(),
        s.final_rate
    );
    let _ = writeln!(out, "  results: {}", s.output.display());
    if let Some(reason) = &s.aborted {
        let _ = writeln!(out, "  ABORTED: {reason}");
    }
    if s.interrupted {
        let _ = writeln!(
            out,
            "  interrupted: rows not started are absent from the results"
        );
    }
    out
}
