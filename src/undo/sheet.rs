//! The undo file: one line per row of the results file, flushed per row (an interrupted undo
//! leaves every finished row on disk), and read back for `--resume`.

use std::collections::HashMap;
use std::path::Path;
use std::time::SystemTime;

use crate::output::{OutputError, neutralize};

/// The undo file's columns, in contract order (only ever added to at the end).
pub const HEADER: [&str; 11] = [
    "row",
    "device_id",
    "serial_number",
    "action",
    "status",
    "http_status",
    "error_code",
    "error_message",
    "attempts",
    "finished_at",
    "tenant",
];

/// What undo did to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UndoStatus {
    /// Put back: the assignment deleted, the tag restored, the member removed.
    Undone,
    /// Already as before the run (404: no longer there); nothing changed.
    Gone,
    /// Left alone: the run did not change it, it changed since, or the file lacks what undoing
    /// it needs (`error_message` says which).
    Skipped,
    /// Gave up, or a permanent error.
    Failed,
}

impl UndoStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UndoStatus::Undone => "undone",
            UndoStatus::Gone => "gone",
            UndoStatus::Skipped => "skipped",
            UndoStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<UndoStatus> {
        [
            UndoStatus::Undone,
            UndoStatus::Gone,
            UndoStatus::Skipped,
            UndoStatus::Failed,
        ]
        .into_iter()
        .find(|u| u.as_str() == s)
    }
}

/// One undo line.
#[derive(Debug, Clone, PartialEq)]
pub struct UndoLine {
    pub row: u64,
    pub device_id: String,
    pub serial_number: String,
    pub action: String,
    pub status: UndoStatus,
    pub http_status: Option<u16>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub attempts: u32,
    pub finished_at: SystemTime,
    pub tenant: Option<String>,
}

/// Owns the undo file.
pub struct Sheet(crate::output::sheet::Sheet);

impl Sheet {
    /// Create the undo file with its header; an existing one is refused unless `overwrite`.
    pub fn create(path: &Path, overwrite: bool) -> Result<Sheet, OutputError> {
        crate::output::sheet::Sheet::create(path, overwrite, &HEADER).map(Sheet)
    }

    /// Continue an undo file (`--resume`), cut back to `valid_len` bytes (a torn last line
    /// goes).
    pub fn append(path: &Path, valid_len: u64) -> Result<Sheet, OutputError> {
        crate::output::sheet::Sheet::append(path, valid_len).map(Sheet)
    }

    /// Write one line and flush it.
    pub fn write(&mut self, l: &UndoLine) -> Result<(), OutputError> {
        let text = |s: &str| neutralize(s).into_owned();
        let opt = |o: &Option<String>| text(o.as_deref().unwrap_or(""));
        self.0.fields([
            l.row.to_string(),
            text(&l.device_id),
            text(&l.serial_number),
            text(&l.action),
            l.status.as_str().to_string(),
            l.http_status.map(|s| s.to_string()).unwrap_or_default(),
            opt(&l.error_code),
            opt(&l.error_message),
            l.attempts.to_string(),
            humantime::format_rfc3339_millis(l.finished_at).to_string(),
            opt(&l.tenant),
        ])
    }
}

/// An earlier undo file, read back for `--resume`.
#[derive(Debug, Default)]
pub struct Earlier {
    /// The last status of each row.
    pub rows: HashMap<u64, UndoStatus>,
    /// Bytes of complete lines.
    pub valid_len: u64,
    /// A row appears more than once: compact at the end.
    pub has_repeats: bool,
}

impl Earlier {
    /// Whether `row` needs nothing more: anything but `failed` is final.
    pub fn finished(&self, row: u64) -> bool {
        self.rows
            .get(&row)
            .is_some_and(|s| *s != UndoStatus::Failed)
    }
}

/// Read an undo file for `--resume`; a torn last line is cut, anything else not an undo line
/// is an error.
pub fn read_earlier(path: &Path) -> Result<Earlier, OutputError> {
    let mut earlier = Earlier::default();
    let (rows, repeats) = (&mut earlier.rows, &mut earlier.has_repeats);
    earlier.valid_len = crate::output::sheet::read_back(path, &HEADER, "undo file", |record| {
        let row = record.get(0).and_then(|r| r.parse::<u64>().ok());
        let status = record.get(4).and_then(UndoStatus::parse);
        let (Some(row), Some(status)) = (row, status) else {
            return false;
        };
        *repeats |= rows.insert(row, status).is_some();
        true
    })?;
    Ok(earlier)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(row: u64, status: UndoStatus) -> UndoLine {
        UndoLine {
            row,
            device_id: "=d".into(),
            serial_number: String::new(),
            action: "assign".into(),
            status,
            http_status: Some(204),
            error_code: None,
            error_message: None,
            attempts: 1,
            finished_at: SystemTime::now(),
            tenant: None,
        }
    }

    #[test]
    fn an_undo_file_is_read_back_and_continued_past_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.undo.csv");
        let mut s = Sheet::create(&p, false).unwrap();
        s.write(&line(1, UndoStatus::Undone)).unwrap();
        s.write(&line(2, UndoStatus::Failed)).unwrap();
        drop(s);
        assert!(matches!(
            Sheet::create(&p, false),
            Err(OutputError::Exists(_))
        ));
        let good = std::fs::metadata(&p).unwrap().len();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"3,x,,assign,und"))
            .unwrap();
        let earlier = read_earlier(&p).unwrap();
        assert_eq!(earlier.valid_len, good);
        assert!(earlier.finished(1) && !earlier.finished(2) && !earlier.finished(3));
        let mut s = Sheet::append(&p, earlier.valid_len).unwrap();
        s.write(&line(2, UndoStatus::Gone)).unwrap();
        drop(s);
        let earlier = read_earlier(&p).unwrap();
        assert!(earlier.finished(2) && earlier.has_repeats);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("'=d") && !text.contains("und\n"), "{text}");
    }
}
