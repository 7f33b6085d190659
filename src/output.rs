//! The results CSV: one line per input row, in completion order, flushed per row so that an
//! interrupted run leaves every finished row on disk.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The results columns, in contract order.
pub const HEADER: [&str; 12] = [
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
];

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
}

/// Neutralise a free-text value so that a spreadsheet does not run it as a formula
/// (`=cmd|' /C calc'!A0`): a leading `=`, `+`, `-`, `@`, tab or CR gets a `'` in front.
/// The csv writer already quotes separators, quotes and newlines, so a value cannot break
/// the row structure.
pub fn neutralize(s: &str) -> Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{s}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// Owns the results file. One task owns it; results reach it over a channel.
pub struct ResultsWriter {
    path: PathBuf,
    writer: csv::Writer<File>,
}

impl ResultsWriter {
    /// Create the results file and write the header. An existing file is refused (and left
    /// untouched) unless `overwrite`.
    pub fn create(path: &Path, overwrite: bool) -> Result<Self, OutputError> {
        let mut opts = OpenOptions::new();
        opts.write(true);
        if overwrite {
            opts.create(true).truncate(true);
        } else {
            // create_new is atomic: no window between "does it exist" and "create".
            opts.create_new(true);
        }
        let file = opts.open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                OutputError::Exists(path.to_path_buf())
            } else {
                OutputError::Create {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        let mut w = Self {
            path: path.to_path_buf(),
            writer: csv::Writer::from_writer(file),
        };
        w.write_fields(HEADER)?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_fields<I, T>(&mut self, fields: I) -> Result<(), OutputError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        self.writer
            .write_record(fields)
            .and_then(|()| self.writer.flush().map_err(csv::Error::from))
            .map_err(|source| OutputError::Write {
                path: self.path.clone(),
                source,
            })
    }

    /// Write one row and flush it to the operating system.
    pub fn write(&mut self, r: &RowResult) -> Result<(), OutputError> {
        let opt = |o: &Option<String>| neutralize(o.as_deref().unwrap_or("")).into_owned();
        let fields = [
            r.row.to_string(),
            neutralize(&r.device_id).into_owned(),
            r.status.as_str().to_string(),
            r.http_status.map(|s| s.to_string()).unwrap_or_default(),
            opt(&r.assignment_id),
            r.attempts.to_string(),
            opt(&r.error_code),
            opt(&r.error_message),
            opt(&r.request_id),
            opt(&r.client_request_id),
            r.duration_ms.to_string(),
            humantime::format_rfc3339_millis(r.finished_at).to_string(),
        ];
        self.write_fields(&fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_existing_file_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        std::fs::write(&p, "keep me").unwrap();
        assert!(matches!(
            ResultsWriter::create(&p, false),
            Err(OutputError::Exists(_))
        ));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "keep me");
        ResultsWriter::create(&p, true).unwrap();
        assert!(
            std::fs::read_to_string(&p)
                .unwrap()
                .starts_with("row,device_id,status,")
        );
    }

    #[test]
    fn rows_are_on_disk_after_each_write_and_formulas_neutralised() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        let mut w = ResultsWriter::create(&p, false).unwrap();
        w.write(&RowResult::invalid(
            3,
            "=cmd|' /C calc'!A0".into(),
            "device_id: \"=cmd\" is not a GUID,\nsecond line".into(),
        ))
        .unwrap();
        // Read back while the writer is still open: flushed per row.
        let mut rdr = csv::Reader::from_path(&p).unwrap();
        assert_eq!(rdr.headers().unwrap().iter().collect::<Vec<_>>(), HEADER);
        let rec = rdr.records().next().unwrap().unwrap();
        assert_eq!(&rec[0], "3");
        assert_eq!(&rec[1], "'=cmd|' /C calc'!A0");
        assert_eq!(&rec[2], "invalid");
        assert_eq!(&rec[7], "device_id: \"=cmd\" is not a GUID,\nsecond line");
        assert!(rec[11].ends_with('Z'));
    }
}
