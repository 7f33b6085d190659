//! Writing the results CSV: created fresh (never over an existing file unless asked) or
//! continued for `--resume`, one flushed line per row.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::{HEADER, OutputError, RowResult, neutralize};

/// Owns the results file. One task owns it; results reach it over a channel.
pub struct ResultsWriter {
    path: PathBuf,
    writer: csv::Writer<File>,
    /// Columns written per line: all of [`HEADER`], or fewer when continuing a file an earlier
    /// version wrote, so that every line of one file has the same width.
    columns: usize,
    /// The run's `--action`, written on every line (what `undo` and `--resume` check).
    action: &'static str,
}

/// Create a file the tool writes from scratch (a results or undo file): an existing one is
/// refused, and left untouched, unless `overwrite`; a directory is named as such. A symbolic
/// link there is refused, never followed: `--overwrite` would truncate whatever it names.
pub(crate) fn create_file(path: &Path, overwrite: bool) -> Result<File, OutputError> {
    let mut opts = OpenOptions::new();
    opts.write(true);
    if overwrite {
        opts.create(true).truncate(true);
    } else {
        // create_new is atomic: no window between "does it exist" and "create".
        opts.create_new(true);
    }
    if path.is_dir() {
        return Err(OutputError::Create {
            path: path.to_path_buf(),
            source: std::io::Error::other("it is a directory: name a file with -o"),
        });
    }
    crate::lock::open_no_follow(&opts, path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            OutputError::Exists(path.to_path_buf())
        } else {
            OutputError::Create {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

impl ResultsWriter {
    /// Create the results file and write the header. An existing file is refused (and left
    /// untouched) unless `overwrite`.
    pub fn create(path: &Path, overwrite: bool) -> Result<Self, OutputError> {
        let file = create_file(path, overwrite)?;
        let mut w = Self {
            path: path.to_path_buf(),
            writer: csv::Writer::from_writer(file),
            columns: HEADER.len(),
            action: "",
        };
        w.write_fields(HEADER)?;
        Ok(w)
    }

    /// Continue an existing results file (`--resume`) of `columns` columns: cut it back to
    /// `valid_len` bytes (a torn last line from a crash goes) and append from there.
    pub fn append(path: &Path, valid_len: u64, columns: usize) -> Result<Self, OutputError> {
        let create_err = |source| OutputError::Create {
            path: path.to_path_buf(),
            source,
        };
        // Never through a symbolic link: the cut and the appends would land on its target.
        let open = |options: &mut OpenOptions| crate::lock::open_no_follow(options, path);
        let file = open(OpenOptions::new().write(true)).map_err(create_err)?;
        file.set_len(valid_len).map_err(create_err)?;
        let file = open(OpenOptions::new().append(true)).map_err(create_err)?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: csv::Writer::from_writer(file),
            columns: columns.clamp(1, HEADER.len()),
            action: "",
        })
    }

    /// Write `action` in the `action` column of every line.
    pub fn for_action(mut self, action: crate::action::Action) -> Self {
        self.action = action.as_str();
        self
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

    /// The file written to is still the one at the path: a results file removed or replaced
    /// mid-run would silently swallow every later row.
    fn check_in_place(&self) -> Result<(), OutputError> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let open = self.writer.get_ref().metadata();
            let named = std::fs::metadata(&self.path);
            match (open, named) {
                (Ok(a), Ok(b)) if a.dev() == b.dev() && a.ino() == b.ino() => {}
                _ => return Err(OutputError::Gone(self.path.clone())),
            }
        }
        Ok(())
    }

    /// The results file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write one row and flush it to the operating system.
    pub fn write(&mut self, r: &RowResult) -> Result<(), OutputError> {
        self.check_in_place()?;
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
            opt(&r.serial_number),
            opt(&r.tenant),
            self.action.to_string(),
        ];
        let [tag, previous, group, member] = r.change.cells();
        let fields = fields
            .into_iter()
            .chain([tag, previous].map(|t| neutralize(&t).into_owned()))
            .chain([group, member]);
        let columns = self.columns;
        self.write_fields(fields.take(columns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::neutralize;

    /// A link at the path is never written through: not by `--overwrite`'s create, not by a
    /// resume's append (its cut would truncate the target).
    #[cfg(unix)]
    #[test]
    fn a_symlink_at_the_path_is_neither_overwritten_nor_appended_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, "precious\n").unwrap();
        let p = dir.path().join("r.csv");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        let err = ResultsWriter::create(&p, true).err().unwrap();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let err = ResultsWriter::append(&p, 0, HEADER.len()).err().unwrap();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    }

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
    fn a_removed_results_file_is_an_error_not_a_sink() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        let mut w = ResultsWriter::create(&p, false).unwrap();
        w.write(&RowResult::invalid(1, "d".into(), "r".into()))
            .unwrap();
        std::fs::remove_file(&p).unwrap();
        assert!(matches!(
            w.write(&RowResult::invalid(2, "d".into(), "r".into())),
            Err(OutputError::Gone(_))
        ));
        let err = ResultsWriter::create(dir.path(), true)
            .err()
            .expect("a directory");
        assert!(err.to_string().contains("is a directory"), "{err}");
    }

    #[test]
    fn control_characters_never_reach_a_cell() {
        assert_eq!(
            neutralize("bad\0body\x1b[31m"),
            "bad\u{FFFD}body\u{FFFD}[31m"
        );
        assert_eq!(neutralize("two\nlines\tkept"), "two\nlines\tkept");
        assert_eq!(neutralize("=1+1"), "'=1+1");
    }
}
