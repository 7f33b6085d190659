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
        let visible = wanted && std::io::stderr().is_terminal();
        let target = if visible {
            ProgressDrawTarget::stderr_with_hz(5)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        let style =
            ProgressStyle::with_template(TEMPLATE).unwrap_or_else(|_| ProgressStyle::default_bar());
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

    /// Refresh the message: counts, why it is waiting when it is, an ETA from the pace (the
    /// run goes in bursts of a window's worth, so a rate measured over the last seconds would
    /// mislead), the pace and the rows at once, as many as the terminal's width holds
    /// ([`fit`]).
    pub fn tick(
        &self,
        paused_for: Option<Duration>,
        rate: crate::config::RateSpec,
        at_limit: bool,
        seats: usize,
    ) {
        let total = self.bar.length();
        let eta = total.and_then(|total| {
            let remaining = total.saturating_sub(self.bar.position());
            (remaining > 0 && rate.per_second() > 0.0)
                .then(|| Duration::from_secs((remaining as f64 / rate.per_second()).ceil() as u64))
        });
        let fields = Fields {
            created: self.created.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            invalid: self.invalid.load(Ordering::Relaxed),
            waiting: match paused_for {
                Some(d) => Waiting::Throttled(d),
                None if at_limit => Waiting::Window,
                None => Waiting::No,
            },
            eta,
            rate,
            seats,
        };
        self.bar
            .set_message(fit(&fields, message_width(terminal_width(), total)));
    }

    /// The resolution phase: pages (or lookups) read, identities seen, serials found.
    pub fn resolving(&self, pages: u64, identities: u64, found: Option<usize>, wanted: usize) {
        let found = found
            .map(|f| format!(" · {f} of {wanted} serials found"))
            .unwrap_or_default();
        let msg = format!(
            "resolving {wanted} serial numbers: {pages} requests · {identities} identities{found}"
        );
        let width = message_width(terminal_width(), self.bar.length());
        self.bar.set_message(truncate(&msg, width));
        self.bar.tick();
    }

    /// A command's own message (what it is doing now).
    pub fn message(&self, msg: String) {
        let width = message_width(terminal_width(), self.bar.length());
        self.bar.set_message(truncate(&msg, width));
        self.bar.tick();
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
        *active_bar() = None;
    }
}

/// What the run's progress line tells beside the bar.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fields {
    pub created: u64,
    pub failed: u64,
    pub invalid: u64,
    pub waiting: Waiting,
    /// Time left at the pace, if rows are left.
    pub eta: Option<Duration>,
    /// The pace in force (the first tenant's window, summed over tenants).
    pub rate: crate::config::RateSpec,
    /// Rows that may be in flight at once.
    pub seats: usize,
}

/// Why rows are not going out now, if they are not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Waiting {
    No,
    /// Graph answered 429: nothing is sent for this long.
    Throttled(Duration),
    /// This window's writes are all sent: the next go out as the window moves on.
    Window,
}

/// The terminal's columns on stderr (80 when it cannot tell).
fn terminal_width() -> usize {
    console::Term::stderr()
        .size_checked()
        .map_or(80, |(_, cols)| usize::from(cols))
}

/// The bar's template: `{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} rows · {msg}`.
const TEMPLATE: &str = "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} rows · {msg}";
/// Columns the template takes besides the bar, the counter and the message: `⠁ [00:00:00] `,
/// ` `, ` rows · `, and one spare so that the line never reaches the last column (a terminal
/// wraps a line that does).
const TEMPLATE_FIXED: usize = 13 + 1 + 8 + 1;
/// The narrowest bar kept: below it the bar would not be seen, so the message gives way.
const MIN_BAR: usize = 10;

/// The columns left for the message on a terminal `width` wide, `total` rows long.
pub(crate) fn message_width(width: usize, total: Option<u64>) -> usize {
    let digits = total.map_or(1, |t| t.to_string().len());
    width.saturating_sub(TEMPLATE_FIXED + MIN_BAR + 2 * digits + 1)
}

/// The message for `width` columns: every field that fits, dropping them as the width
/// narrows in a fixed order: the rows at once first, then the pace, the time left, the zero
/// counts, the long form of why it waits; what is left is cut to fit.
pub(crate) fn fit(f: &Fields, width: usize) -> String {
    let count = |n: u64, what: &str| format!("{n} {what}");
    let waiting_long = match f.waiting {
        Waiting::No => None,
        Waiting::Throttled(d) => Some(format!(
            "Graph asked to wait: resuming in {}s",
            d.as_secs_f64().ceil()
        )),
        Waiting::Window => Some("rate limit reached, waiting for the next window".into()),
    };
    let waiting_short = match f.waiting {
        Waiting::No => None,
        Waiting::Throttled(d) => Some(format!("throttled {}s", d.as_secs_f64().ceil())),
        Waiting::Window => Some("waiting for the window".into()),
    };
    let waiting_word = match f.waiting {
        Waiting::Window => Some("waiting".to_string()),
        _ => waiting_short.clone(),
    };
    let eta = f
        .eta
        .map(|d| format!("about {} left", humantime::format_duration(d)));
    let pace = format!("pace {}", pace_words(f.rate));
    let seats = format!("up to {} rows at once", f.seats);
    // From the fullest line to the barest; the first that fits is shown.
    let all_counts = vec![
        count(f.created, "done"),
        count(f.failed, "failed"),
        count(f.invalid, "invalid"),
    ];
    let mut some_counts = vec![count(f.created, "done")];
    if f.failed > 0 {
        some_counts.push(count(f.failed, "failed"));
    }
    if f.invalid > 0 {
        some_counts.push(count(f.invalid, "invalid"));
    }
    let with = |counts: &[String], parts: &[&Option<String>]| {
        let mut all: Vec<&str> = counts.iter().map(String::as_str).collect();
        all.extend(parts.iter().filter_map(|p| p.as_deref()));
        all.join(" · ")
    };
    let (eta, pace, seats) = (&eta, &Some(pace), &Some(seats));
    let candidates = [
        with(&all_counts, &[&waiting_long, eta, pace, seats]),
        with(&all_counts, &[&waiting_long, eta, pace]),
        with(&all_counts, &[&waiting_long, eta]),
        with(&all_counts, &[&waiting_long]),
        with(&some_counts, &[&waiting_long]),
        with(&some_counts, &[&waiting_short]),
        with(&some_counts, &[&waiting_word]),
    ];
    for c in &candidates {
        if c.chars().count() <= width {
            return c.clone();
        }
    }
    truncate(&candidates[candidates.len() - 1], width)
}

/// A pace in words: `100 writes per 20s` (the window to the second from a second up, so that
/// a window learned from the service does not read `20s 25ms`).
pub(crate) fn pace_words(rate: crate::config::RateSpec) -> String {
    let per = if rate.per >= Duration::from_secs(1) {
        humantime::format_duration(Duration::from_secs(rate.per.as_secs_f64().round() as u64))
            .to_string()
    } else {
        format!("{}ms", rate.per.as_millis())
    };
    format!("{} writes per {per}", rate.count)
}

/// `text` cut to `width` characters, the cut marked with `…`.
pub(crate) fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    if width > 0 {
        cut.push('…');
    }
    cut
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
    /// Whatever a field carried from a server (CR, LF, other control characters), the event
    /// reaches stderr as one printable line.
    fn drop(&mut self) {
        let line = String::from_utf8_lossy(&self.0);
        write_stderr(crate::output::printable_log_line(&line).as_bytes());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateSpec;

    fn fields(waiting: Waiting) -> Fields {
        Fields {
            created: 1234,
            failed: 0,
            invalid: 2,
            waiting,
            eta: Some(Duration::from_secs(1000)),
            rate: RateSpec::new(100, Duration::from_millis(20_025)),
            seats: 16,
        }
    }

    /// The whole line at `cols` columns for a run of 5,000 rows, as indicatif lays it out:
    /// the fixed parts, the message, and what is left for the bar.
    fn bar_left(cols: usize, msg: &str) -> isize {
        let counter = "1236/5000".len();
        cols as isize - (TEMPLATE_FIXED + counter + msg.chars().count()) as isize
    }

    #[test]
    fn the_line_fits_and_keeps_a_bar_from_60_to_200_columns() {
        for waiting in [
            Waiting::No,
            Waiting::Window,
            Waiting::Throttled(Duration::from_millis(12_300)),
        ] {
            for cols in [60, 80, 100, 120, 160, 200] {
                let msg = fit(&fields(waiting), message_width(cols, Some(5000)));
                assert!(
                    bar_left(cols, &msg) >= MIN_BAR as isize,
                    "{cols} columns, {waiting:?}: no room for the bar beside {msg:?}"
                );
            }
        }
    }

    #[test]
    fn fields_are_dropped_in_a_fixed_order_as_the_terminal_narrows() {
        let f = fields(Waiting::Window);
        let wide = fit(&f, 500);
        assert_eq!(
            wide,
            "1234 done · 0 failed · 2 invalid · rate limit reached, waiting for the next window \
             · about 16m 40s left · pace 100 writes per 20s · up to 16 rows at once"
        );
        let mut last = wide.clone();
        let mut seen = Vec::new();
        for width in (0..=wide.chars().count()).rev() {
            let msg = fit(&f, width);
            assert!(msg.chars().count() <= width, "{width}: {msg:?}");
            if msg != last {
                seen.push(msg.clone());
                last = msg;
            }
        }
        let gone = |part: &str| seen.iter().position(|m| !m.contains(part)).unwrap();
        // The rows at once go first, then the pace, the time left, the zero counts, the long
        // form of why it waits; the counts of rows done stay longest.
        let order = [
            gone("rows at once"),
            gone("pace"),
            gone("left"),
            gone("0 failed"),
            gone("next window"),
            gone("1234 done"),
        ];
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "{order:?}: {seen:#?}"
        );
        let short = "1234 done · 2 invalid · waiting for the window";
        assert_eq!(fit(&f, short.chars().count()), short);
        assert_eq!(
            fit(&f, short.chars().count() - 1),
            "1234 done · 2 invalid · waiting"
        );
        assert_eq!(fit(&f, 10), "1234 done…");
    }

    #[test]
    fn a_run_that_is_not_waiting_says_nothing_about_waiting() {
        let msg = fit(&fields(Waiting::No), 500);
        assert!(!msg.contains("wait") && !msg.contains("throttled"), "{msg}");
        let msg = fit(
            &fields(Waiting::Throttled(Duration::from_millis(12_300))),
            500,
        );
        assert!(
            msg.contains("Graph asked to wait: resuming in 13s"),
            "{msg}"
        );
        let short = "1234 done · 2 invalid · throttled 13s";
        let msg = fit(
            &fields(Waiting::Throttled(Duration::from_millis(12_300))),
            short.chars().count(),
        );
        assert_eq!(msg, short);
    }

    #[test]
    fn a_pace_reads_in_words_to_the_second() {
        assert_eq!(
            pace_words(RateSpec::new(100, Duration::from_millis(20_025))),
            "100 writes per 20s"
        );
        assert_eq!(
            pace_words(RateSpec::new(5, Duration::from_millis(250))),
            "5 writes per 250ms"
        );
    }

    #[test]
    fn message_width_leaves_the_template_and_a_bar() {
        assert_eq!(message_width(80, Some(5000)), 80 - 23 - 10 - 9);
        assert_eq!(message_width(20, Some(5000)), 0);
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 0), "");
    }
}
