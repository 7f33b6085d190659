//! The live progress bar on stderr, and the log writer that prints around it.
//!
//! The bar is hidden when stderr is not a terminal (a scheduler's log file should not fill
//! with redraws) or with `-q`.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::Status;

/// Live counts shown on the bar.
pub struct Progress {
    bar: ProgressBar,
    created: AtomicU64,
    failed: AtomicU64,
    invalid: AtomicU64,
}

impl Progress {
    pub fn new(wanted: bool) -> Self {
        // With JSON on stderr (`--log-format json`) every line is an event: no bar.
        let visible = wanted && std::io::stderr().is_terminal() && !crate::notes::json();
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

    /// Refresh the message: counts, the pace, an ETA from the pace (the run goes in bursts of
    /// a window's worth, so a rate measured over the last seconds would mislead), and why it is
    /// waiting when it is.
    pub fn tick(
        &self,
        paused_for: Option<Duration>,
        rate: crate::config::RateSpec,
        at_limit: bool,
        in_flight: usize,
    ) {
        let mut msg = format!(
            "created {} · failed {} · invalid {} · pace {rate} · {in_flight} in flight",
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

    /// The resolution phase: pages (or lookups) read, identities seen, serials found.
    pub fn resolving(&self, pages: u64, identities: u64, found: Option<usize>, wanted: usize) {
        let found = found
            .map(|f| format!(" · {f} of {wanted} serials found"))
            .unwrap_or_default();
        self.bar.set_message(format!(
            "resolving {wanted} serial numbers: {pages} requests · {identities} identities{found}"
        ));
        self.bar.tick();
    }

    /// A command's own message (what it is doing now).
    pub fn message(&self, msg: String) {
        self.bar.set_message(msg);
        self.bar.tick();
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

/// Print log lines around `bar` (another command's bar) until [`release_bar`].
pub(crate) fn hold_bar(bar: &ProgressBar) {
    *active_bar() = Some(bar.clone());
}

pub(crate) fn release_bar() {
    *active_bar() = None;
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
        write_stderr(&self.0);
    }
}

/// Write `bytes` to stderr with the bar (if any) suspended. A closed stderr is a quiet end of
/// output, never a panic.
pub(crate) fn write_stderr(bytes: &[u8]) {
    let write = || {
        let _ = std::io::stderr().lock().write_all(bytes);
    };
    let bar = active_bar().clone();
    match bar {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;
    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::with_capacity(256))
    }
}
