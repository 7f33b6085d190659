//! The results CSV: one line per input row, in completion order, flushed per row so that an
//! interrupted run leaves every finished row on disk.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    #[error("cannot resume from {path}: {reason}")]
    Resume { path: PathBuf, reason: String },
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

    /// Continue an existing results file (`--resume`): cut it back to `valid_len` bytes (a
    /// torn last line from a crash goes) and append from there.
    pub fn append(path: &Path, valid_len: u64) -> Result<Self, OutputError> {
        let create_err = |source| OutputError::Create {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(create_err)?;
        file.set_len(valid_len).map_err(create_err)?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(create_err)?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: csv::Writer::from_writer(file),
        })
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

/// What an earlier run recorded for one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prior {
    /// Fingerprint of the device id as written (case and the formula guard ignored), to check
    /// that the results file belongs to the input without keeping every id in memory.
    pub device: u64,
    pub status: Status,
}

/// An earlier results file, read back for `--resume`.
#[derive(Debug, Default)]
pub struct PriorResults {
    /// Latest result per row (a resumed run appends; the last line for a row wins).
    pub rows: HashMap<u64, Prior>,
    /// Bytes of complete lines: anything after is a torn line from a crash.
    pub valid_len: u64,
    /// A row appears more than once (an earlier resume redid it): compact at the end.
    pub has_repeats: bool,
}

/// Fingerprint a device-id cell the same way for the input and the results file.
pub fn device_fingerprint(cell: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    cell.trim()
        .trim_start_matches('\'')
        .to_ascii_lowercase()
        .hash(&mut h);
    h.finish()
}

/// Read a results file for `--resume`. A torn last line (no newline, or too few fields) is
/// tolerated and cut; anything else that is not a results line is an error.
pub fn read_prior(path: &Path) -> Result<PriorResults, OutputError> {
    let err = |reason: String| OutputError::Resume {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    // Only bytes up to the last newline can be complete lines.
    let complete = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(&bytes[..complete]);
    let mut record = csv::StringRecord::new();
    let mut prior = PriorResults::default();
    let mut first = true;
    loop {
        let start = rdr.position().byte();
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(err(format!("line {}: {e}", rdr.position().line()))),
        }
        let end = rdr.position().byte();
        if first {
            first = false;
            if record.iter().collect::<Vec<_>>() != HEADER {
                return Err(err(
                    "the first line is not the results header: not an autopilot-bulk results file"
                        .into(),
                ));
            }
            prior.valid_len = end;
            continue;
        }
        let parsed = (record.len() == HEADER.len())
            .then(|| Some((record[0].parse::<u64>().ok()?, Status::parse(&record[2])?)))
            .flatten();
        match parsed {
            Some((row, status)) => {
                let p = Prior {
                    device: device_fingerprint(&record[1]),
                    status,
                };
                if prior.rows.insert(row, p).is_some() {
                    prior.has_repeats = true;
                }
                prior.valid_len = end;
            }
            // A short last line is what a crash mid-write leaves: cut it.
            None if end as usize == complete => break,
            None => {
                return Err(err(format!(
                    "line {} is not a results line (starts at byte {start})",
                    record.position().map(|p| p.line()).unwrap_or(0)
                )));
            }
        }
    }
    if first {
        // Empty file: the crash came before the header was written.
        prior.valid_len = 0;
    }
    Ok(prior)
}

/// Rewrite a results file so that each row appears once (its last line), after a resume
/// redid rows. Written to a temporary file and renamed over, so a crash leaves either file.
pub fn compact(path: &Path) -> Result<(), OutputError> {
    let io_err = |source: std::io::Error| OutputError::Create {
        path: path.to_path_buf(),
        source,
    };
    let csv_err = |source: csv::Error| OutputError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut last_line: HashMap<u64, usize> = HashMap::new();
    {
        let mut rdr = csv::Reader::from_path(path).map_err(csv_err)?;
        for (i, rec) in rdr.records().enumerate() {
            let rec = rec.map_err(csv_err)?;
            if let Some(row) = rec.get(0).and_then(|r| r.parse::<u64>().ok()) {
                last_line.insert(row, i);
            }
        }
    }
    let tmp = path.with_extension("csv.compacting");
    {
        let mut rdr = csv::Reader::from_path(path).map_err(csv_err)?;
        let mut w = csv::Writer::from_writer(File::create(&tmp).map_err(io_err)?);
        w.write_record(HEADER).map_err(csv_err)?;
        for (i, rec) in rdr.byte_records().enumerate() {
            let rec = rec.map_err(csv_err)?;
            let row = std::str::from_utf8(&rec[0])
                .ok()
                .and_then(|r| r.parse::<u64>().ok());
            if row.and_then(|r| last_line.get(&r)) == Some(&i) {
                w.write_byte_record(&rec).map_err(csv_err)?;
            }
        }
        let file = w.into_inner().map_err(|e| io_err(e.into_error()))?;
        file.sync_all().map_err(io_err)?;
    }
    std::fs::rename(&tmp, path).map_err(io_err)
}

/// The intent journal beside the results file: the rows whose first request may have reached
/// the service. Written and synced before that request is sent, so that after a crash (even
/// `kill -9` or a power cut) `--resume` knows which unfinished rows to reconcile with a GET
/// instead of POSTing blindly. Removed when a run completes.
pub struct Journal {
    path: PathBuf,
    file: Arc<std::sync::Mutex<File>>,
    group: std::sync::Mutex<Group>,
    synced: tokio::sync::Notify,
}

/// Group commit: rows that ask to be recorded while a sync is under way are written and synced
/// together by the next one, so a burst of rows costs one `fdatasync`, not one each.
#[derive(Debug, Default)]
struct Group {
    pending: Vec<u64>,
    /// Generation the rows in `pending` will be synced as.
    next: u64,
    /// Highest generation on disk.
    done: u64,
    syncing: bool,
    /// A failed sync: every row that waited for it gets the error.
    failed: Option<(u64, String)>,
}

impl Journal {
    pub fn path_for(results: &Path) -> PathBuf {
        let mut name = results.as_os_str().to_owned();
        name.push(".journal");
        PathBuf::from(name)
    }

    /// Open the journal for `results`, returning the rows it already names. `fresh` empties it.
    pub fn open(results: &Path, fresh: bool) -> std::io::Result<(Journal, Vec<u64>)> {
        let path = Self::path_for(results);
        let mut rows = Vec::new();
        if !fresh {
            match std::fs::read_to_string(&path) {
                Ok(text) => rows.extend(text.lines().filter_map(|l| l.trim().parse::<u64>().ok())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .truncate(false)
            .open(&path)?;
        if fresh {
            file.set_len(0)?;
        }
        Ok((
            Journal {
                path,
                file: Arc::new(std::sync::Mutex::new(file)),
                group: std::sync::Mutex::new(Group {
                    next: 1,
                    ..Group::default()
                }),
                synced: tokio::sync::Notify::new(),
            },
            rows,
        ))
    }

    fn group(&self) -> std::sync::MutexGuard<'_, Group> {
        self.group.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record that `row` is about to be sent, durably: returns once the row is synced to disk.
    /// The first caller syncs everything pending; callers arriving meanwhile are synced by the
    /// next round together.
    pub async fn record(&self, row: u64) -> std::io::Result<()> {
        let generation = {
            let mut g = self.group();
            g.pending.push(row);
            g.next
        };
        loop {
            let notified = self.synced.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let batch = {
                let mut g = self.group();
                if let Some((failed, e)) = &g.failed {
                    if *failed >= generation {
                        return Err(std::io::Error::other(e.clone()));
                    }
                }
                if g.done >= generation {
                    return Ok(());
                }
                if g.syncing {
                    None
                } else {
                    g.syncing = true;
                    let taken = g.next;
                    g.next += 1;
                    Some((std::mem::take(&mut g.pending), taken))
                }
            };
            let Some((rows, taken)) = batch else {
                notified.await;
                continue;
            };
            let file = self.file.clone();
            let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
                let mut text = String::with_capacity(rows.len() * 8);
                for r in rows {
                    text.push_str(&r.to_string());
                    text.push('\n');
                }
                f.write_all(text.as_bytes())?;
                f.sync_data()
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            {
                let mut g = self.group();
                g.syncing = false;
                match &written {
                    Ok(()) => g.done = taken,
                    Err(e) => g.failed = Some((taken, e.to_string())),
                }
            }
            self.synced.notify_waiters();
        }
    }

    /// The run completed: every row has its line; the journal has served its purpose.
    pub fn remove(&self) -> std::io::Result<()> {
        std::fs::remove_file(&self.path)
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

    #[test]
    fn prior_results_tolerate_a_torn_last_line_and_cut_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        let mut w = ResultsWriter::create(&p, false).unwrap();
        w.write(&RowResult::invalid(1, "'=x".into(), "bad".into()))
            .unwrap();
        drop(w);
        let good_len = std::fs::metadata(&p).unwrap().len();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"2,0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d,crea")
            .unwrap();
        let prior = read_prior(&p).unwrap();
        assert_eq!(prior.valid_len, good_len);
        assert_eq!(prior.rows.len(), 1);
        assert_eq!(prior.rows[&1].status, Status::Invalid);
        assert_eq!(prior.rows[&1].device, device_fingerprint("=X"));
        let mut w = ResultsWriter::append(&p, prior.valid_len).unwrap();
        w.write(&RowResult::invalid(2, "y".into(), "bad".into()))
            .unwrap();
        drop(w);
        let prior = read_prior(&p).unwrap();
        assert_eq!(prior.rows.len(), 2);
        assert!(!prior.has_repeats);
    }

    #[test]
    fn not_a_results_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        std::fs::write(&p, "device_id,group_id\nx,y\n").unwrap();
        assert!(matches!(read_prior(&p), Err(OutputError::Resume { .. })));
    }

    #[test]
    fn compact_keeps_the_last_line_per_row() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        let mut w = ResultsWriter::create(&p, false).unwrap();
        w.write(&RowResult::invalid(1, "a".into(), "first".into()))
            .unwrap();
        w.write(&RowResult::invalid(2, "b".into(), "only".into()))
            .unwrap();
        w.write(&RowResult::invalid(1, "a".into(), "second".into()))
            .unwrap();
        drop(w);
        assert!(read_prior(&p).unwrap().has_repeats);
        compact(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(!text.contains("first") && text.contains("second") && text.contains("only"));
        assert!(!read_prior(&p).unwrap().has_repeats);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn journal_remembers_rows_across_opens_and_groups_concurrent_records() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("r.csv");
        let (j, rows) = Journal::open(&results, true).unwrap();
        assert!(rows.is_empty());
        j.record(3).await.unwrap();
        j.record(7).await.unwrap();
        let j = Arc::new(j);
        let many: Vec<_> = (100..150)
            .map(|r| {
                let j = j.clone();
                tokio::spawn(async move { j.record(r).await })
            })
            .collect();
        for t in many {
            t.await.unwrap().unwrap();
        }
        let Ok(j) = Arc::try_unwrap(j) else {
            panic!("journal still shared")
        };
        let (_, mut rows) = Journal::open(&results, false).unwrap();
        rows.sort_unstable();
        assert_eq!(rows.len(), 52);
        assert_eq!(&rows[..2], &[3, 7]);
        assert_eq!(rows[2..], (100..150).collect::<Vec<_>>());
        j.remove().unwrap();
        assert!(!Journal::path_for(&results).exists());
    }
}
