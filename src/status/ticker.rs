//! What `status` shows while it reads: a bar on a terminal (pages read, then assigned of all
//! rows), or, under `--watch` without a terminal, one plain line per reading for the log.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::reading::Reading;
use crate::listing::Listed;

pub struct Ticker {
    bar: Option<ProgressBar>,
    /// A line per reading on stderr (watching, and no terminal to draw on).
    lines: bool,
}

impl Ticker {
    pub fn new(wanted: bool, watching: bool, rows: u64) -> Self {
        // With JSON on stderr there is no bar to draw: a line per reading instead.
        let terminal = std::io::stderr().is_terminal() && !crate::notes::json();
        let bar = (wanted && terminal).then(|| {
            let bar = ProgressBar::with_draw_target(Some(rows), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} assigned · {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            crate::progress::hold_bar(&bar);
            bar
        });
        Self {
            bar,
            lines: wanted && watching && !terminal,
        }
    }

    /// A page of reading `n` was read.
    pub fn page(&self, n: u32, listed: Listed) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "reading {n}: page {}, {} identities",
                listed.pages, listed.identities
            ));
        }
    }

    /// Reading `n` is done; the next comes after `next`, if any.
    pub fn reading(&self, n: u32, reading: &Reading, next: Option<Duration>) {
        let counts = reading
            .counts
            .iter()
            .map(|(status, count)| format!("{status} {count}"))
            .collect::<Vec<_>>()
            .join(" · ");
        let next = next
            .map(|d| format!("; next reading in {}", humantime::format_duration(d)))
            .unwrap_or_default();
        if let Some(bar) = &self.bar {
            bar.set_position(reading.assigned);
            bar.set_message(format!("reading {n}: {counts}{next}"));
        } else if self.lines {
            crate::notes::line(&format!(
                "autopilot-bulk: status reading {n}: {}/{} assigned ({counts}){next}",
                reading.assigned,
                reading.lines.len()
            ));
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            crate::progress::release_bar();
        }
    }
}
