//! Input CSV reading: the file's header, then each row turned into a [`Job`] or an
//! [`InvalidRow`] whose reason names the column and value.
//!
//! The reader is a plain blocking iterator: the pipeline runs it on a blocking thread and feeds
//! a bounded channel, so memory stays flat however long the file is. A bad row is data (an
//! `InvalidRow`), never an error that stops the run; only a file that cannot be read as a table
//! at all (missing, no header, no `device_id` column, I/O failure) is an [`InputError`].
//!
//! The parts are split by job so that each can be tested alone: `header` judges the start of
//! the file, `columns` names the contract's columns, `cells` turns one record into a job
//! without touching a file, `recover` repairs a quote left open, and `dedupe` remembers which
//! (device, target) pairs came before. This file only strings them together.

mod cells;
mod columns;
mod dedupe;
mod header;
pub(crate) use header::sniff;
mod recover;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use csv::ByteRecord;

pub use crate::action::Action;
pub(crate) use cells::parse_guid;
pub use cells::{Device, Job, RowDefaults, same_tenant};

/// A row that will never be sent, with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidRow {
    pub row: u64,
    /// The `device_id` cell as written (may be empty or not a GUID).
    pub device_id: String,
    /// The `serial_number` cell as written (empty when there is none).
    pub serial_number: String,
    /// The `tenant` cell as written (empty when there is none, or without `--tenants`).
    pub tenant: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Job(Job),
    Invalid(InvalidRow),
}

impl Parsed {
    pub fn row(&self) -> u64 {
        match self {
            Parsed::Job(j) => j.row,
            Parsed::Invalid(i) => i.row,
        }
    }
}

/// The input cannot be read as a table at all. Ends the run before anything is sent.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Header { path: PathBuf, reason: String },
    #[error("{path}: read error after row {row}: {source}")]
    Read {
        path: PathBuf,
        row: u64,
        source: csv::Error,
    },
}

/// Streaming reader of the input CSV. Iterate it for one [`Parsed`] per data row.
pub struct InputReader {
    file: recover::InputFile,
    reader: csv::Reader<BufReader<File>>,
    header: header::Header,
    defaults: RowDefaults,
    record: ByteRecord,
    row: u64,
    /// (device, target) fingerprint → first row (see [`dedupe::Seen`]).
    seen: dedupe::Seen,
    done: bool,
}

impl InputReader {
    /// Open `path`, read and check the header. `delimiter` overrides detection.
    pub fn open(
        path: &Path,
        delimiter: Option<u8>,
        defaults: RowDefaults,
    ) -> Result<Self, InputError> {
        let open_err = |source| InputError::Open {
            path: path.to_path_buf(),
            source,
        };
        let header_err = |reason: String| InputError::Header {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(open_err)?;
        let len = file.metadata().map_err(open_err)?.len();
        let mut buf = BufReader::with_capacity(256 * 1024, file);
        // Peek at the start for a BOM and the header line, without consuming the header.
        let sniffed =
            header::sniff(buf.fill_buf().map_err(open_err)?, delimiter).map_err(header_err)?;
        buf.consume(sniffed.bom_len as usize);
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(sniffed.delimiter)
            .flexible(true)
            .has_headers(true)
            .from_reader(buf);
        let headers = reader
            .byte_headers()
            .map_err(|e| header_err(format!("cannot read the header row: {e}")))?;
        let mut header = header::read_header(headers).map_err(header_err)?;
        if defaults.tenants.is_none()
            && let Some(i) = header.columns.remove(columns::Column::Tenant)
        {
            // One tenant: the column means nothing, like any other unknown column.
            let name = header.names[i].clone();
            header.ignore(name);
        }
        if defaults.action != Action::Tag
            && let Some(i) = header.columns.remove(columns::Column::GroupTag)
        {
            // An assignment or a group membership sets no tag: a `Group Tag` column (an
            // export's) is unused, and said so, lest it be taken for part of the run.
            let name = format!("{} (read only with --action tag)", header.names[i]);
            header.ignore(name);
        }
        Ok(Self {
            file: recover::InputFile {
                path: path.to_path_buf(),
                bom_len: sniffed.bom_len,
                len,
                delimiter: sniffed.delimiter,
            },
            reader,
            header,
            defaults,
            record: ByteRecord::new(),
            row: 0,
            seen: dedupe::Seen::default(),
            done: false,
        })
    }

    /// Header names this run does not read: not input columns, or input columns of another
    /// action or of `--tenants` (ignored; the caller warns once).
    pub fn unknown_columns(&self) -> &[String] {
        &self.header.unknown
    }

    /// Rows may name devices by serial number: they are resolved before the run.
    pub fn has_serial_numbers(&self) -> bool {
        self.header
            .columns
            .get(columns::Column::SerialNumber)
            .is_some()
    }

    /// The record just read as row `row`: a job, an invalid row, or an I/O error from
    /// re-reading the file to recover from an open quote.
    fn parse_current(&mut self, row: u64) -> Result<Parsed, std::io::Error> {
        let (columns, defaults) = (&self.header.columns, &self.defaults);
        let open_quote = recover::open_quote(
            &self.file,
            &mut self.reader,
            &mut self.record,
            &self.header.names,
            |record| cells::parse_row(row, record, columns, defaults).is_ok(),
        )?;
        let parsed = match open_quote {
            Some(reason) => Err(reason),
            None => cells::parse_row(row, &self.record, columns, defaults),
        };
        Ok(match parsed {
            Err(reason) => Parsed::Invalid(InvalidRow {
                row,
                device_id: cells::device_cell_lossy(&self.record, columns),
                serial_number: cells::serial_cell_lossy(&self.record, columns),
                tenant: cells::tenant_cell_lossy(&self.record, columns),
                reason,
            }),
            Ok(job) => {
                let fp = dedupe::fingerprint(&job.device, &job.work, &job.tenant);
                match self.seen.first_or_insert(fp, row) {
                    Some(first) => Parsed::Invalid(InvalidRow {
                        row,
                        device_id: job.device.id().map(|d| d.to_string()).unwrap_or_default(),
                        serial_number: job.device.serial().unwrap_or_default().to_string(),
                        tenant: job.tenant.clone().unwrap_or_default(),
                        reason: duplicate_reason(first, &job.work),
                    }),
                    None => Parsed::Job(job),
                }
            }
        })
    }
}

/// Why a row repeats an earlier one. A device takes one group tag a run, so a second tag row
/// for it is refused whatever its tag: say so, since a different tag conflicts rather than
/// repeats.
fn duplicate_reason(first: u64, work: &crate::action::Work) -> String {
    match work {
        crate::action::Work::Tag(tag) => format!(
            "duplicate of row {first}: a device takes one group tag a run; this row's {:?} is \
             not set (if it differs from row {first}'s, the two rows conflict: keep one)",
            crate::output::printable(tag)
        ),
        _ => format!("duplicate of row {first}"),
    }
}

impl Iterator for InputReader {
    type Item = Result<Parsed, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => {
                self.done = true;
                None
            }
            Err(source) => {
                self.done = true;
                Some(Err(InputError::Read {
                    path: self.file.path.clone(),
                    row: self.row,
                    source,
                }))
            }
            Ok(true) => {
                self.row += 1;
                let parsed = self.parse_current(self.row).map_err(|source| {
                    self.done = true;
                    InputError::Open {
                        path: self.file.path.clone(),
                        source,
                    }
                });
                Some(parsed)
            }
        }
    }
}

/// Count data rows cheaply (for the progress bar's length). `None` if the file cannot be read.
pub(crate) fn count_rows(path: &Path, delimiter: Option<u8>) -> Option<u64> {
    let reader = InputReader::open(path, delimiter, RowDefaults::default()).ok()?;
    let mut rdr = reader.reader;
    let mut rec = ByteRecord::new();
    let mut n = 0;
    while rdr.read_byte_record(&mut rec).ok()? {
        n += 1;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::model::{Source, TargetKind};
    use std::io::Write;

    fn read(content: &[u8], defaults: RowDefaults) -> Result<Vec<Parsed>, InputError> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        let r = InputReader::open(f.path(), None, defaults)?;
        r.collect()
    }

    const D1: &str = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
    const D2: &str = "1b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
    const G1: &str = "2b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";

    fn invalid(p: &Parsed) -> &str {
        match p {
            Parsed::Invalid(i) => &i.reason,
            Parsed::Job(j) => panic!("row {} unexpectedly valid", j.row),
        }
    }

    #[test]
    fn header_aliases_bom_and_semicolons() {
        let text = format!("\u{feff}Autopilot Device ID;Target-Type;GROUP_ID\n{D1};group;{G1}\n");
        let rows = read(text.as_bytes(), RowDefaults::default()).unwrap();
        let Parsed::Job(job) = &rows[0] else {
            panic!("{rows:?}")
        };
        assert_eq!(job.device.id().map(|d| d.to_string()).as_deref(), Some(D1));
        assert_eq!(job.assignment().unwrap().target.kind, TargetKind::Group);
        assert_eq!(
            job.assignment()
                .unwrap()
                .target
                .group_id
                .unwrap()
                .to_string(),
            G1
        );
        assert_eq!(job.assignment().unwrap().source, Source::Direct);
    }

    #[test]
    fn tab_delimited_and_kind_inferred_from_group() {
        let text = format!("device_id\tgroup_id\n{D1}\t{G1}\n");
        let rows = read(text.as_bytes(), RowDefaults::default()).unwrap();
        let Parsed::Job(job) = &rows[0] else {
            panic!("{rows:?}")
        };
        assert_eq!(job.assignment().unwrap().target.kind, TargetKind::Group);
    }

    /// Reasons per cell are tested in `cells`; here, that invalid rows keep their numbers and
    /// report the device cell as written.
    #[test]
    fn invalid_rows_keep_their_numbers() {
        let text = format!(
            "device_id,target_type,group_id,filter_type,source\n\
             nope,,,,\n\
             {D1},groups,,,\n\
             {D1},group,,,\n\
             {D1},,,sideways,\n\
             {D1},all_devices,,,indirect\n\
             {D2},all_devices,{G1},,\n\
             {D1},base\n"
        );
        let rows = read(text.as_bytes(), RowDefaults::default()).unwrap();
        assert_eq!(rows.len(), 7);
        assert!(invalid(&rows[0]).contains("device_id") && invalid(&rows[0]).contains("nope"));
        assert!(invalid(&rows[6]).contains("ragged"));
        assert!(rows.iter().all(|p| !invalid(p).is_empty()));
        let Parsed::Invalid(first) = &rows[0] else {
            panic!("{rows:?}")
        };
        assert_eq!(first.device_id, "nope");
        assert_eq!(
            rows.iter().map(Parsed::row).collect::<Vec<_>>(),
            (1..=7).collect::<Vec<_>>()
        );
    }

    #[test]
    fn duplicates_name_the_first_row() {
        let text = format!(
            "device_id,target_type,group_id\n{D1},,{G1}\n{D2},,{G1}\n{D1},,{G1}\n{D1},base,\n\
             {D1},,\n"
        );
        let rows = read(text.as_bytes(), RowDefaults::default()).unwrap();
        assert!(matches!(rows[0], Parsed::Job(_)));
        assert!(matches!(rows[1], Parsed::Job(_)));
        assert_eq!(invalid(&rows[2]), "duplicate of row 1");
        // Same device, other target (base, asked for): not a duplicate.
        assert!(matches!(rows[3], Parsed::Job(_)));
        // No target at all is refused as such, not taken for a base target (row 4's).
        assert_eq!(
            invalid(&rows[4]),
            "no target: give group_id, collection_id, filter_id or --target-type"
        );
    }

    #[test]
    fn flag_defaults_reach_rows() {
        let defaults = RowDefaults {
            group_id: Some(G1.parse().unwrap()),
            source: Some(Source::PolicySets),
            ..RowDefaults::default()
        };
        let rows = read(
            format!("device_id,source\n{D1},\n{D2},direct\n").as_bytes(),
            defaults,
        )
        .unwrap();
        let Parsed::Job(a) = &rows[0] else { panic!() };
        let Parsed::Job(b) = &rows[1] else { panic!() };
        assert_eq!(a.assignment().unwrap().target.kind, TargetKind::Group);
        assert_eq!(a.assignment().unwrap().source, Source::PolicySets);
        assert_eq!(b.assignment().unwrap().source, Source::Direct);
    }

    /// An assign run does not read a `Group Tag` column: it is listed with the ignored ones.
    /// A tag run reads it, and a group tag is then no ignored column.
    #[test]
    fn a_group_tag_column_is_ignored_only_where_unused() {
        let open = |defaults: RowDefaults| {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            write!(
                f,
                "Device Serial Number,Group Tag,Hardware Hash\nSN1,Kiosk,AAAA\n"
            )
            .unwrap();
            let r = InputReader::open(f.path(), None, defaults).unwrap();
            let unknown = r.unknown_columns().to_vec();
            let rows: Vec<Parsed> = r.collect::<Result<_, _>>().unwrap();
            (unknown, rows)
        };
        let (unknown, rows) = open(RowDefaults {
            group_id: Some(G1.parse().unwrap()),
            ..RowDefaults::default()
        });
        assert_eq!(
            unknown,
            ["Hardware Hash", "Group Tag (read only with --action tag)"]
        );
        let Parsed::Job(job) = &rows[0] else {
            panic!("{rows:?}")
        };
        assert_eq!(job.work.group_tag(), None);
        let (unknown, rows) = open(RowDefaults {
            action: Action::Tag,
            ..RowDefaults::default()
        });
        assert_eq!(unknown, ["Hardware Hash"]);
        let Parsed::Job(job) = &rows[0] else {
            panic!("{rows:?}")
        };
        assert_eq!(job.work.group_tag(), Some("Kiosk"));
        // A group run adds members: the tag column is unused there too, and said so.
        let (unknown, _) = open(RowDefaults {
            action: Action::Group,
            group_id: Some(G1.parse().unwrap()),
            ..RowDefaults::default()
        });
        assert_eq!(
            unknown,
            ["Hardware Hash", "Group Tag (read only with --action tag)"]
        );
    }

    #[test]
    fn file_level_errors() {
        assert!(matches!(
            read(b"", RowDefaults::default()),
            Err(InputError::Header { .. })
        ));
        let e = read(b"model,make\nx,y\n", RowDefaults::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("no device_id or serial_number column"),
            "{e}"
        );
        let e = read(b"device_id,deviceId\n", RowDefaults::default()).unwrap_err();
        assert!(e.to_string().contains("appears twice"), "{e}");
        assert!(
            read(b"device_id\n", RowDefaults::default())
                .unwrap()
                .is_empty()
        );
    }
}
