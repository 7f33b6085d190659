//! The status file: where it goes by default, and writing a reading to it whole. Each reading
//! replaces the file by rename, so a reader (or a crash) sees the previous reading or the new
//! one, never half of one.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::reading::Line;
use crate::output::neutralize;

/// The status columns, in order. Columns are only ever added at the end, so a reader that
/// takes them by position keeps working; `tenant` is empty in single-tenant use.
pub const HEADER: [&str; 7] = [
    "row",
    "device_id",
    "serial_number",
    "assignment_status",
    "assigned_at",
    "detailed_status",
    "tenant",
];

/// `<results stem>.status.csv` beside the results file: `devices.results.csv` gives
/// `devices.results.status.csv`.
pub fn default_output(results: &Path) -> PathBuf {
    let stem = results
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "results".to_string());
    results.with_file_name(format!("{stem}.status.csv"))
}

/// Whether `a` and `b` name one file (however spelled: `..`, a symlink, a hard link).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) if x == y => true,
        _ => file_id(a).is_some_and(|id| file_id(b) == Some(id)),
    }
}

#[cfg(unix)]
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(_path: &Path) -> Option<(u64, u64)> {
    None
}

/// Whether a reading may replace what is at `path` without `--overwrite`: nothing, an empty
/// file, or a status file (an earlier reading: its first line starts with the status header's
/// first four columns, so files of a version with fewer or more columns count). A symbolic
/// link, a directory or any other file is not.
pub fn replaceable(path: &Path) -> bool {
    use std::io::{BufRead, Read};
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return true;
    };
    if !meta.file_type().is_file() {
        return false;
    }
    if meta.len() == 0 {
        return true;
    }
    let Ok(file) = File::open(path) else {
        return false;
    };
    let mut first = Vec::new();
    if std::io::BufReader::new(file.take(4096))
        .read_until(b'\n', &mut first)
        .is_err()
    {
        return false;
    }
    let first = String::from_utf8_lossy(&first);
    let columns: Vec<&str> = first.trim_end_matches(['\r', '\n']).split(',').collect();
    columns.len() >= 4 && columns[..4] == HEADER[..4]
}

/// Replace the file at `path` with `lines`: written to `<path>.tmp` beside it, synced, renamed
/// over. The caller holds the file's lock, so the temporary name is its own.
pub fn write(path: &Path, lines: &[Line]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = write_to(&tmp, lines).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn write_to(tmp: &Path, lines: &[Line]) -> std::io::Result<()> {
    let mut w = csv::Writer::from_writer(BufWriter::new(File::create(tmp)?));
    w.write_record(HEADER)?;
    for l in lines {
        // Values come from the tenant: a spreadsheet must not run one as a formula. Graph's
        // enum values and ids pass unchanged.
        let row = l.row.to_string();
        let cells = [
            row.as_str(),
            &l.device_id,
            &l.serial_number,
            &l.assignment_status,
            &l.assigned_at,
            &l.detailed_status,
            &l.tenant,
        ];
        w.write_record(cells.map(neutralize).iter().map(|c| c.as_bytes()))?;
    }
    let mut file = w.into_inner().map_err(|e| e.into_error())?;
    file.flush()?;
    file.into_inner().map_err(|e| e.into_error())?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_sits_beside_the_results() {
        assert_eq!(
            default_output(Path::new("/data/devices.results.csv")),
            PathBuf::from("/data/devices.results.status.csv")
        );
    }

    #[test]
    fn a_reading_replaces_the_file_whole_and_values_are_guarded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.csv");
        std::fs::write(&path, "old\n").unwrap();
        let line = Line {
            row: 3,
            device_id: "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d".into(),
            serial_number: "=cmd".into(),
            assignment_status: "assignedUnkownSyncState".into(),
            assigned_at: "2026-01-02T03:04:05Z".into(),
            detailed_status: "none".into(),
            tenant: "contoso".into(),
        };
        let single = Line {
            tenant: String::new(),
            ..line.clone()
        };
        write(&path, &[line, single]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "row,device_id,serial_number,assignment_status,assigned_at,detailed_status,tenant\n\
             3,0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d,'=cmd,assignedUnkownSyncState,\
             2026-01-02T03:04:05Z,none,contoso\n\
             3,0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d,'=cmd,assignedUnkownSyncState,\
             2026-01-02T03:04:05Z,none,\n"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp left"
        );
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a-directory");
        std::fs::create_dir(&target).unwrap();
        assert!(write(&target, &[]).is_err());
        assert!(target.is_dir());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp left"
        );
    }

    #[test]
    fn same_file_sees_through_spellings() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("r.csv");
        std::fs::write(&a, "x").unwrap();
        let spelled = dir.path().join(".").join("r.csv");
        assert!(same_file(&a, &spelled));
        assert!(!same_file(&a, &dir.path().join("other.csv")));
    }
}
