//! Reading an earlier results file back for `--resume`, and compacting it to one line per row
//! once a resumed run has redone rows.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use super::{HEADER, HEADER_V1, HEADER_V2, OutputError, Status};

/// What an earlier run recorded for one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prior {
    /// Fingerprint of the device id as written (case and the formula guard ignored), to check
    /// that the results file belongs to the input without keeping every id in memory.
    pub device: u64,
    /// Fingerprint of the serial number the row named (0: none).
    pub serial: u64,
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
    /// Columns of the file: an earlier version's files have fewer, and are continued so.
    pub columns: usize,
    /// The `--action` the file's lines record (files of an earlier version record none).
    pub action: Option<String>,
}

/// Fingerprint a serial-number cell the same way for the input and the results file (0 for
/// an empty one).
pub fn serial_fingerprint(cell: &str) -> u64 {
    let serial = cell.trim().trim_start_matches('\'');
    if serial.is_empty() {
        0
    } else {
        device_fingerprint(serial)
    }
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
            let names: Vec<&str> = record.iter().collect();
            if names.len() < HEADER_V1 || names[..] != HEADER[..names.len().min(HEADER.len())] {
                return Err(err(
                    "the first line is not the results header: not an autopilot-bulk results file"
                        .into(),
                ));
            }
            prior.columns = names.len();
            prior.valid_len = end;
            continue;
        }
        let parsed = (record.len() == prior.columns)
            .then(|| Some((record[0].parse::<u64>().ok()?, Status::parse(&record[2])?)))
            .flatten();
        match parsed {
            Some((row, status)) => {
                let p = Prior {
                    device: device_fingerprint(&record[1]),
                    serial: record.get(HEADER_V1).map_or(0, serial_fingerprint),
                    status,
                };
                let action = record.get(HEADER_V2).filter(|a| !a.is_empty());
                if let (None, Some(a)) = (&prior.action, action) {
                    prior.action = Some(a.to_string());
                }
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
/// redid rows. Written to `<results>.compacting` (created new, never through a link planted
/// there) and handed to `install` to put in place (the run's lock renames it over the results
/// file and locks it first: see `RunLock::install_results`), so a crash leaves either file.
pub fn compact(
    path: &Path,
    install: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), OutputError> {
    let io_err = |source: std::io::Error| OutputError::Create {
        path: path.to_path_buf(),
        source,
    };
    let tmp = compacting_path(path);
    let written = write_compacted(path, &tmp).and_then(|()| install(&tmp).map_err(io_err));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Where [`compact`] writes: beside the results file, named after it.
pub fn compacting_path(results: &Path) -> PathBuf {
    let mut name = results.as_os_str().to_owned();
    name.push(".compacting");
    PathBuf::from(name)
}

/// `path`'s last line per row, header first, into a new file at `tmp`, synced.
fn write_compacted(path: &Path, tmp: &Path) -> Result<(), OutputError> {
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
    // What a crash left there goes; create_new then never opens a link planted in between.
    match std::fs::remove_file(tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(e)),
        _ => {}
    }
    let out = crate::lock::open_no_follow(OpenOptions::new().write(true).create_new(true), tmp)
        .map_err(io_err)?;
    let mut rdr = csv::Reader::from_path(path).map_err(csv_err)?;
    let mut w = csv::Writer::from_writer(out);
    w.write_record(rdr.headers().map_err(csv_err)?)
        .map_err(csv_err)?;
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
    file.sync_all().map_err(io_err)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::output::{ResultsWriter, RowResult};

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
        let mut w = ResultsWriter::append(&p, prior.valid_len, prior.columns).unwrap();
        w.write(&RowResult::invalid(2, "y".into(), "bad".into()))
            .unwrap();
        drop(w);
        let prior = read_prior(&p).unwrap();
        assert_eq!(prior.rows.len(), 2);
        assert!(!prior.has_repeats);
    }

    #[test]
    fn a_file_of_the_earlier_twelve_columns_is_continued_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        let old = HEADER[..HEADER_V1].join(",");
        std::fs::write(
            &p,
            format!("{old}\n1,0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d,created,201,a,1,,,,,5,2026-01-01T00:00:00Z\n"),
        )
        .unwrap();
        let prior = read_prior(&p).unwrap();
        assert_eq!((prior.columns, prior.rows.len()), (HEADER_V1, 1));
        let mut w = ResultsWriter::append(&p, prior.valid_len, prior.columns).unwrap();
        let mut r = RowResult::invalid(2, "y".into(), "bad".into());
        r.serial_number = Some("SN-1".into());
        w.write(&r).unwrap();
        drop(w);
        // Every line keeps the file's width: a strict reader reads it whole.
        let mut rdr = csv::Reader::from_path(&p).unwrap();
        assert_eq!(rdr.records().filter(|r| r.is_ok()).count(), 2);
        assert_eq!(read_prior(&p).unwrap().rows.len(), 2);
        compact(&p, |tmp| std::fs::rename(tmp, &p)).unwrap();
        assert!(
            std::fs::read_to_string(&p)
                .unwrap()
                .starts_with(&format!("{old}\n"))
        );
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
        compact(&p, |tmp| std::fs::rename(tmp, &p)).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(!text.contains("first") && text.contains("second") && text.contains("only"));
        assert!(!read_prior(&p).unwrap().has_repeats);
    }
}
