//! The import file, `<input stem>.import.csv`: one line per row of the hash file, flushed as
//! each row ends, and read back for `--resume`. Its `device_id` and `serial_number` columns
//! make it a `run` input as it stands: `import → run → status`.

use std::collections::HashMap;
use std::path::Path;
use std::time::SystemTime;

use crate::output::sheet::{Sheet, read_back};
use crate::output::{OutputError, neutralize};

/// The import file's columns, in contract order (only ever added to at the end); `tenant`
/// follows with `--tenants`.
pub const HEADER: [&str; 10] = [
    "row",
    "serial_number",
    "status",
    "device_id",
    "import_id",
    "error_code",
    "error_name",
    "error_message",
    "attempts",
    "finished_at",
];

/// What became of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ImportStatus {
    /// Imported by this run and listed as an Autopilot identity (`device_id`).
    Registered,
    /// Already an Autopilot identity of the tenant: nothing imported.
    Existing,
    /// The service refused it, or it was not listed in time (`error_*` say which).
    Failed,
    /// The row cannot be imported as written (`error_message` names the column).
    Invalid,
}

impl ImportStatus {
    pub const ALL: [ImportStatus; 4] = [
        ImportStatus::Registered,
        ImportStatus::Existing,
        ImportStatus::Failed,
        ImportStatus::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ImportStatus::Registered => "registered",
            ImportStatus::Existing => "existing",
            ImportStatus::Failed => "failed",
            ImportStatus::Invalid => "invalid",
        }
    }

    fn parse(s: &str) -> Option<ImportStatus> {
        ImportStatus::ALL.into_iter().find(|u| u.as_str() == s)
    }

    /// Nothing more to do for the row: `--resume` leaves it.
    pub fn is_final(self) -> bool {
        matches!(self, ImportStatus::Registered | ImportStatus::Existing)
    }
}

/// One line of the import file.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportLine {
    pub row: u64,
    pub serial_number: String,
    pub status: ImportStatus,
    pub device_id: String,
    pub import_id: String,
    /// Graph's numeric `deviceErrorCode` (806, 808, …) or the tool's own code.
    pub error_code: String,
    pub error_name: String,
    pub error_message: String,
    pub attempts: u32,
    pub finished_at: SystemTime,
    /// With `--tenants`: the tenants file's key.
    pub tenant: Option<String>,
}

impl ImportLine {
    pub fn new(row: u64, serial: &str, status: ImportStatus, tenant: Option<&str>) -> Self {
        ImportLine {
            row,
            serial_number: serial.to_string(),
            status,
            device_id: String::new(),
            import_id: String::new(),
            error_code: String::new(),
            error_name: String::new(),
            error_message: String::new(),
            attempts: 0,
            finished_at: SystemTime::now(),
            tenant: tenant.map(str::to_string),
        }
    }
}

/// The import file being written.
pub struct ImportSheet {
    sheet: Sheet,
    tenants: bool,
}

impl ImportSheet {
    /// Create it; an existing file is refused unless `overwrite`. `tenants`: the `tenant`
    /// column follows.
    pub fn create(path: &Path, overwrite: bool, tenants: bool) -> Result<Self, OutputError> {
        let sheet = Sheet::create(path, overwrite, &header(tenants))?;
        Ok(ImportSheet { sheet, tenants })
    }

    /// Continue it past its last complete line (`--resume`).
    pub fn append(path: &Path, valid_len: u64, tenants: bool) -> Result<Self, OutputError> {
        let sheet = Sheet::append(path, valid_len)?;
        Ok(ImportSheet { sheet, tenants })
    }

    pub fn write(&mut self, l: &ImportLine) -> Result<(), OutputError> {
        let text = |s: &str| neutralize(s).into_owned();
        let mut fields = vec![
            l.row.to_string(),
            text(&l.serial_number),
            l.status.as_str().to_string(),
            text(&l.device_id),
            text(&l.import_id),
            text(&l.error_code),
            text(&l.error_name),
            text(&l.error_message),
            l.attempts.to_string(),
            humantime::format_rfc3339_millis(l.finished_at).to_string(),
        ];
        if self.tenants {
            fields.push(text(l.tenant.as_deref().unwrap_or("")));
        }
        self.sheet.fields(fields)
    }
}

fn header(tenants: bool) -> Vec<&'static str> {
    let mut h = HEADER.to_vec();
    if tenants {
        h.push("tenant");
    }
    h
}

/// An earlier import file, read back for `--resume`: each device's last line.
#[derive(Debug, Default)]
pub struct Earlier {
    /// (lowercase serial, tenant key) → its last status and identity id.
    pub by_serial: HashMap<(String, String), (ImportStatus, String)>,
    /// Lines in the file (repeats included).
    pub lines: u64,
    pub valid_len: u64,
}

impl Earlier {
    /// The identity a finished row of this serial was given, if it finished.
    pub fn finished(&self, serial: &str, tenant: Option<&str>) -> Option<&(ImportStatus, String)> {
        self.by_serial
            .get(&key(serial, tenant))
            .filter(|(s, _)| s.is_final())
    }
}

/// The key an earlier row is known by: the device (its serial, in its tenant), not its row
/// number, so that a hash file edited between runs still resumes.
pub fn key(serial: &str, tenant: Option<&str>) -> (String, String) {
    (
        serial.to_lowercase(),
        tenant.unwrap_or_default().to_lowercase(),
    )
}

/// Read an import file for `--resume`; a torn last line is cut, anything else not an import
/// line is an error.
pub fn read_earlier(path: &Path, tenants: bool) -> Result<Earlier, OutputError> {
    let mut earlier = Earlier::default();
    let (by_serial, lines) = (&mut earlier.by_serial, &mut earlier.lines);
    let header = header(tenants);
    earlier.valid_len = read_back(path, &header, "import file", |record| {
        let serial = record.get(1).unwrap_or_default();
        let Some(status) = record.get(2).and_then(ImportStatus::parse) else {
            return false;
        };
        let device = record.get(3).unwrap_or_default().to_string();
        let tenant = record.get(10).filter(|_| tenants);
        // The file neutralizes cells a spreadsheet would run: `'=x` was written for `=x`.
        let serial = serial.strip_prefix('\'').unwrap_or(serial);
        by_serial.insert(key(serial, tenant), (status, device));
        *lines += 1;
        true
    })?;
    Ok(earlier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_import_file_is_read_back_by_serial_past_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.import.csv");
        let mut s = ImportSheet::create(&p, false, false).unwrap();
        let mut done = ImportLine::new(1, "PF1", ImportStatus::Registered, None);
        done.device_id = "d1".into();
        s.write(&done).unwrap();
        s.write(&ImportLine::new(2, "PF2", ImportStatus::Failed, None))
            .unwrap();
        drop(s);
        assert!(matches!(
            ImportSheet::create(&p, false, false),
            Err(OutputError::Exists(_))
        ));
        let good = std::fs::metadata(&p).unwrap().len();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"3,PF3,regis"))
            .unwrap();
        let earlier = read_earlier(&p, false).unwrap();
        assert_eq!((earlier.valid_len, earlier.lines), (good, 2));
        assert_eq!(
            earlier.finished("pf1", None).map(|(_, d)| d.as_str()),
            Some("d1")
        );
        assert!(earlier.finished("PF2", None).is_none());
        assert!(read_earlier(&p, true).is_err(), "another header");
    }
}
