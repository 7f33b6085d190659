//! A CSV the tool writes beside a run's results (the undo file, the import file): created
//! with its header (refused when it exists unless overwritten), one line flushed per row so
//! that an interrupted command leaves every finished row on disk, continued by `--resume` past
//! a torn last line, and read back line by line.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::OutputError;

/// Owns one such file.
pub struct Sheet {
    path: PathBuf,
    writer: csv::Writer<File>,
}

impl Sheet {
    /// Create the file with its header; an existing one is refused unless `overwrite`.
    pub fn create(path: &Path, overwrite: bool, header: &[&str]) -> Result<Sheet, OutputError> {
        let file = super::create_file(path, overwrite)?;
        let mut sheet = Sheet {
            path: path.to_path_buf(),
            writer: csv::Writer::from_writer(file),
        };
        sheet.fields(header)?;
        Ok(sheet)
    }

    /// Continue the file (`--resume`), cut back to `valid_len` bytes (a torn last line goes).
    pub fn append(path: &Path, valid_len: u64) -> Result<Sheet, OutputError> {
        let err = |source| OutputError::Create {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new().write(true).open(path).map_err(err)?;
        file.set_len(valid_len).map_err(err)?;
        let file = OpenOptions::new().append(true).open(path).map_err(err)?;
        Ok(Sheet {
            path: path.to_path_buf(),
            writer: csv::Writer::from_writer(file),
        })
    }

    /// Write one line and flush it.
    pub fn fields<I, T>(&mut self, fields: I) -> Result<(), OutputError>
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
}

/// Read the file back: its first line must be `header`; every complete line after it goes to
/// `each`, which answers `false` for a line that is not one of the file's. A torn last line
/// is left out. Returns the bytes of complete lines (where [`Sheet::append`] continues).
pub fn read_back(
    path: &Path,
    header: &[&str],
    what: &str,
    mut each: impl FnMut(&csv::StringRecord) -> bool,
) -> Result<u64, OutputError> {
    let err = |reason: String| OutputError::Resume {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if complete == 0 {
        return Ok(0);
    }
    let mut rdr = csv::Reader::from_reader(&bytes[..complete]);
    let headers = rdr.headers().map_err(|e| err(e.to_string()))?;
    if headers.iter().collect::<Vec<_>>() != header {
        return Err(err(format!("the first line is not the {what}'s header")));
    }
    let mut valid_len = rdr.position().byte();
    let mut record = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(err(e.to_string())),
        }
        if !each(&record) {
            return Err(err(format!(
                "line {} is not a line of the {what}",
                record.position().map_or(0, csv::Position::line)
            )));
        }
        valid_len = rdr.position().byte();
    }
    Ok(valid_len)
}
