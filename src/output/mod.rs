//! What a run reports: the results CSV (one line per input row, in completion order, flushed
//! per row so that an interrupted run leaves every finished row on disk), reading an earlier
//! results file back for `--resume`, and the intent journal that makes resuming safe after a
//! crash.
//!
//! This module holds the shapes everyone shares (the header, [`Status`], [`RowResult`],
//! [`OutputError`]); `writer` writes the file, `prior` reads and compacts it, `journal` keeps
//! the rows that may have reached the service.

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::SystemTime;

mod journal;
mod prior;
pub mod sheet;
mod writer;

pub use journal::{Journal, Started, may_land_until};
pub use prior::{
    Prior, PriorResults, compact, compacting_path, device_fingerprint, read_prior,
    serial_fingerprint,
};
pub use writer::ResultsWriter;
pub(crate) use writer::create_file;

/// Before the first request of a resume: wait until the "come back at" the stopped run was
/// last given (kept in its journal), or the run stops.
pub async fn wait_for_gate(at: std::time::SystemTime, stop: &tokio_util::sync::CancellationToken) {
    let Ok(wait) = at.duration_since(std::time::SystemTime::now()) else {
        return;
    };
    tracing::warn!(
        "the stopped run was told to wait (Retry-After): waiting the {} left before the first \
         request",
        humantime::format_duration(std::time::Duration::from_millis(wait.as_millis() as u64))
    );
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        () = stop.cancelled() => {}
    }
}

/// Cut a line a failed write left half-written at the end of `path`, so that every line on
/// disk is whole (a full disk or the file-size limit can stop a write mid-line).
pub fn cut_torn_tail(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let len = f.metadata()?.len();
    let tail = len.min(64 * 1024);
    f.seek(SeekFrom::Start(len - tail))?;
    let mut buf = Vec::with_capacity(tail as usize);
    f.read_to_end(&mut buf)?;
    if buf.last() == Some(&b'\n') || buf.is_empty() {
        return Ok(());
    }
    let keep = match buf.iter().rposition(|&b| b == b'\n') {
        Some(i) => len - tail + i as u64 + 1,
        None if tail == len => 0,
        None => return Ok(()), // a line longer than the tail read: leave it to --resume
    };
    f.set_len(keep)?;
    f.sync_data()
}

/// Before reading back what a stopped run may have sent: wait until its last request can no
/// longer land (`until`, from the journal), or the run stops. A read that comes first could
/// find nothing and send the write again beside the one still on its way.
pub async fn wait_for_landing(
    until: std::time::SystemTime,
    stop: &tokio_util::sync::CancellationToken,
) {
    let Ok(wait) = until.duration_since(std::time::SystemTime::now()) else {
        return;
    };
    tracing::warn!(
        "the stopped run sent its last requests moments ago: waiting {} (the request timeout) \
         before reading back, so that none of them lands after the read",
        humantime::format_duration(std::time::Duration::from_secs(wait.as_secs() + 1))
    );
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        () = stop.cancelled() => {}
    }
}

/// The results columns, in contract order. Columns are only ever added at the end: a results
/// file of an earlier version (its first [`HEADER_V1`] columns) is still read and continued.
pub const HEADER: [&str; 19] = [
    "row",
    "device_id",
    "status",
    "http_status",
    "assignment_id",
    "attempts",
    "error_code",
    "error_message",
    "request_id",
    "client_request_id",
    "duration_ms",
    "finished_at",
    "serial_number",
    "tenant",
    "action",
    "group_tag",
    "previous_group_tag",
    "group_id",
    "member_id",
];

/// The columns results files had before `serial_number`.
pub const HEADER_V1: usize = 12;

/// The columns results files had before `action` and what `undo` reads (`group_tag` to
/// `member_id`).
pub const HEADER_V2: usize = 14;

/// What a `created` row changed, as `undo` needs it to put it back: the last columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Change {
    /// Nothing beyond `assignment_id`, or not known.
    #[default]
    None,
    /// A tag run set `set` on a device that carried `previous` (empty: no tag). Recorded only
    /// when the tag before the run is known.
    Tag { set: String, previous: String },
    /// A group run added directory object `member` to `group`.
    Member { group: uuid::Uuid, member: String },
}

impl Change {
    /// The cells `group_tag`, `previous_group_tag`, `group_id`, `member_id`.
    pub fn cells(&self) -> [String; 4] {
        match self {
            Change::None => Default::default(),
            Change::Tag { set, previous } => {
                [set.clone(), previous.clone(), String::new(), String::new()]
            }
            Change::Member { group, member } => [
                String::new(),
                String::new(),
                group.to_string(),
                member.clone(),
            ],
        }
    }
}

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// 201: the assignment was created.
    Created,
    /// An identical assignment was found on the device (after an ambiguous failure).
    Existing,
    /// Gave up, or a permanent error.
    Failed,
    /// Never sent: the row did not validate.
    Invalid,
}

impl Status {
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "created" => Some(Status::Created),
            "existing" => Some(Status::Existing),
            "failed" => Some(Status::Failed),
            "invalid" => Some(Status::Invalid),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Existing => "existing",
            Status::Failed => "failed",
            Status::Invalid => "invalid",
        }
    }

    /// `created` and `existing` both mean the device holds the assignment.
    pub fn is_success(self) -> bool {
        matches!(self, Status::Created | Status::Existing)
    }
}

/// One results line.
#[derive(Debug, Clone, PartialEq)]
pub struct RowResult {
    pub row: u64,
    pub device_id: String,
    pub status: Status,
    pub http_status: Option<u16>,
    pub assignment_id: Option<String>,
    pub attempts: u32,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub request_id: Option<String>,
    pub client_request_id: Option<String>,
    pub duration_ms: u64,
    pub finished_at: SystemTime,
    /// The serial number the input row named, if it named one.
    pub serial_number: Option<String>,
    /// With `--tenants`: the tenant the row belongs to (as the input names it).
    pub tenant: Option<String>,
    /// What the row changed, for `undo`.
    pub change: Change,
}

impl RowResult {
    /// A row that never validated.
    pub fn invalid(row: u64, device_id: String, reason: String) -> Self {
        Self {
            row,
            device_id,
            status: Status::Invalid,
            http_status: None,
            assignment_id: None,
            attempts: 0,
            error_code: None,
            error_message: Some(reason),
            request_id: None,
            client_request_id: None,
            duration_ms: 0,
            finished_at: SystemTime::now(),
            serial_number: None,
            tenant: None,
            change: Change::None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(
        "results file {0} already exists: pass --resume to continue it, --overwrite to replace \
         it, or -o to write elsewhere"
    )]
    Exists(PathBuf),
    #[error("cannot create results file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write results file {path}: {source}")]
    Write { path: PathBuf, source: csv::Error },
    #[error("cannot resume from {path}: {reason}")]
    Resume { path: PathBuf, reason: String },
    #[error(
        "results file {0} was removed or replaced during the run, so the results of rows \
         finished since are not in it; the run stopped. Restore it and pass --resume (rows that \
         may have been sent are in its journal and are read back before any POST)"
    )]
    Gone(PathBuf),
}

/// Neutralise a free-text value so that a spreadsheet does not run it as a formula
/// (`=cmd|' /C calc'!A0`): a leading `=`, `+`, `-`, `@`, tab or CR gets a `'` in front.
/// The csv writer already quotes separators, quotes and newlines, so a value cannot break
/// the row structure.
pub fn neutralize(s: &str) -> Cow<'_, str> {
    // Control characters from a service's error body (NUL, escape sequences) have no place
    // in a CSV cell a person opens; line breaks and tabs are kept (the writer quotes them).
    let s = replace_chars(s, |c| {
        (c.is_control() && !matches!(c, '\n' | '\r' | '\t')).then_some('\u{FFFD}')
    });
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{s}"))
    } else {
        s
    }
}

/// Server-controlled text on its way to the terminal (preflight, status, the summary, the
/// log): no control character reaches it raw, so an error message or a token claim cannot
/// move the cursor, recolour the screen or forge a line (ESC, CSI, CR, LF), and no
/// bidirectional override reorders what is shown. Line breaks and tabs become spaces, the
/// rest U+FFFD.
pub fn printable(s: &str) -> Cow<'_, str> {
    replace_chars(s, unprintable)
}

/// One formatted log event made [`printable`] as a whole, whatever its fields carried: one
/// line (its final line break kept), no raw control character. ESC is left to the log
/// formatter, which escapes any in the fields it formats and uses it for colour at a terminal.
pub fn printable_log_line(s: &str) -> Cow<'_, str> {
    let body = s.strip_suffix('\n').unwrap_or(s);
    match replace_chars(body, |c| (c != '\x1b').then(|| unprintable(c)).flatten()) {
        Cow::Borrowed(_) => Cow::Borrowed(s),
        Cow::Owned(mut clean) => {
            clean.push_str(&s[body.len()..]);
            Cow::Owned(clean)
        }
    }
}

/// What [`printable`] shows instead of `c`, if `c` may not be shown raw.
fn unprintable(c: char) -> Option<char> {
    match c {
        '\n' | '\r' | '\t' => Some(' '),
        '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => {
            Some('\u{FFFD}')
        }
        c if c.is_control() => Some('\u{FFFD}'),
        _ => None,
    }
}

/// `s` with each character `replace` maps replaced; borrowed when none is.
fn replace_chars(s: &str, replace: impl Fn(char) -> Option<char>) -> Cow<'_, str> {
    if !s.chars().any(|c| replace(c).is_some()) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().map(|c| replace(c).unwrap_or(c)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_keeps_its_end_and_the_formatters_escapes_only() {
        let line = "WARN \x1b[2mx\x1b[0m: bad\r\n✓ forged\u{7}\n";
        assert_eq!(
            printable_log_line(line),
            "WARN \x1b[2mx\x1b[0m: bad  ✓ forged\u{FFFD}\n"
        );
        assert!(matches!(printable_log_line("plain\n"), Cow::Borrowed(_)));
    }

    #[test]
    fn printable_text_holds_no_control_or_override_character() {
        let hostile = "ok\u{1b}[2J\rforged\nline\ttab\u{9b}31m\u{202E}txt.exe\u{0}";
        let shown = printable(hostile);
        assert_eq!(
            shown,
            "ok\u{FFFD}[2J forged line tab\u{FFFD}31m\u{FFFD}txt.exe\u{FFFD}"
        );
        assert!(matches!(printable("plain é ✓"), Cow::Borrowed(_)));
        // A CSV cell keeps its line breaks and tabs (the writer quotes them).
        assert_eq!(neutralize("a\u{1b}b\nc"), "a\u{FFFD}b\nc");
    }
}
