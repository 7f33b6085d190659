//! The progress bar on stderr and the end-of-run summary.
//!
//! The bar is hidden when stderr is not a terminal (a scheduler's log file should not fill
//! with redraws) or with `-q`.

use std::io::IsTerminal;
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
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} rows · {per_sec} · ETA {eta} · {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
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
    pub fn tick(&self, paused_for: Option<Duration>) {
        let mut msg = format!(
            "created {} · failed {} · invalid {}",
            self.created.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.invalid.load(Ordering::Relaxed)
        );
        if let Some(d) = paused_for {
            msg.push_str(&format!(
                " · throttled, resuming in {}s",
                d.as_secs_f64().ceil()
            ));
        }
        self.bar.set_message(msg);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
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
        "  effective rate {:.2} req/s (configured {} = {:.2} req/s)",
        s.effective_rate(),
        s.configured_rate,
        s.configured_rate.per_second()
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
