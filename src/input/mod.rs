//! Input CSV reading: header aliases, BOM, delimiter detection, defaults from flags, and the
//! turning of each row into a [`Job`] or an [`InvalidRow`] whose reason names the column and
//! value.
//!
//! The reader is a plain blocking iterator: the pipeline runs it on a blocking thread and feeds
//! a bounded channel, so memory stays flat however long the file is. A bad row is data (an
//! `InvalidRow`), never an error that stops the run; only a file that cannot be read as a table
//! at all (missing, no header, no `device_id` column, I/O failure) is an [`InputError`].

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use csv::ByteRecord;
use uuid::Uuid;

use crate::graph::model::{Assignment, FilterType, Source, Target, TargetKind, normalize_word};

/// Defaults from flags for rows that leave target columns empty.
#[derive(Debug, Clone, Default)]
pub struct RowDefaults {
    pub target_type: Option<TargetKind>,
    pub group_id: Option<Uuid>,
    pub collection_id: Option<String>,
    pub filter_id: Option<Uuid>,
    pub filter_type: Option<FilterType>,
    pub source: Option<Source>,
    pub source_id: Option<String>,
}

/// Parse a GUID in the forms Graph and Intune exports use (hyphenated, braced or bare).
pub fn parse_guid(s: &str) -> Result<Uuid, String> {
    let t = s.trim();
    Uuid::try_parse(t).map_err(|_| format!("{} is not a GUID", quote(t)))
}

/// One valid row, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// 1-based index of the data row (the header is not a row).
    pub row: u64,
    pub device_id: Uuid,
    pub assignment: Assignment,
}

/// A row that will never be sent, with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidRow {
    pub row: u64,
    /// The `device_id` cell as written (may be empty or not a GUID).
    pub device_id: String,
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

/// The columns of the input contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Column {
    DeviceId,
    TargetType,
    GroupId,
    CollectionId,
    FilterId,
    FilterType,
    Source,
    SourceId,
    AssignmentId,
}

impl Column {
    const ALL: [Column; 9] = [
        Column::DeviceId,
        Column::TargetType,
        Column::GroupId,
        Column::CollectionId,
        Column::FilterId,
        Column::FilterType,
        Column::Source,
        Column::SourceId,
        Column::AssignmentId,
    ];

    fn name(self) -> &'static str {
        match self {
            Column::DeviceId => "device_id",
            Column::TargetType => "target_type",
            Column::GroupId => "group_id",
            Column::CollectionId => "collection_id",
            Column::FilterId => "filter_id",
            Column::FilterType => "filter_type",
            Column::Source => "source",
            Column::SourceId => "source_id",
            Column::AssignmentId => "assignment_id",
        }
    }

    /// Accepted header names, already normalised (lowercase, no `_`, `-` or spaces).
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Column::DeviceId => &[
                "deviceid",
                "autopilotdeviceid",
                "windowsautopilotdeviceidentityid",
            ],
            Column::TargetType => &["targettype"],
            Column::GroupId => &["groupid"],
            Column::CollectionId => &["collectionid"],
            Column::FilterId => &["filterid"],
            Column::FilterType => &["filtertype"],
            Column::Source => &["source"],
            Column::SourceId => &["sourceid"],
            Column::AssignmentId => &["assignmentid"],
        }
    }

    /// Position in [`Column::ALL`], to index a [`ColumnMap`].
    fn index(self) -> usize {
        self as usize
    }

    fn from_header(h: &str) -> Option<Column> {
        let n = normalize_word(h.trim());
        Column::ALL
            .into_iter()
            .find(|c| c.aliases().contains(&n.as_str()))
    }
}

/// Input column index of each contract column present. An array indexed by [`Column`] rather
/// than a hash map: it is looked up nine times per row, and hashing the key cost more than the
/// rest of the lookup.
#[derive(Debug, Clone, Copy, Default)]
struct ColumnMap([Option<usize>; Column::ALL.len()]);

impl ColumnMap {
    fn get(&self, col: Column) -> Option<usize> {
        self.0[col.index()]
    }

    /// Set `col` to input column `i`, returning the column it already had.
    fn insert(&mut self, col: Column, i: usize) -> Option<usize> {
        self.0[col.index()].replace(i)
    }
}

/// Pick the delimiter from the header line: whichever of `,` `;` tab occurs most (`,` on a tie).
fn detect_delimiter(header_line: &[u8]) -> u8 {
    let count = |d: u8| header_line.iter().filter(|&&b| b == d).count();
    let (mut best, mut best_n) = (b',', count(b','));
    for d in [b';', b'\t'] {
        let n = count(d);
        if n > best_n {
            (best, best_n) = (d, n);
        }
    }
    best
}

/// Unknown header names listed in the warning; the rest are counted.
const MAX_UNKNOWN_LISTED: usize = 20;

/// Why a file whose first line is `start` cannot be CSV text, if it cannot: UTF-16 (Excel's
/// "Unicode Text" export) and binary files would otherwise fail with a header full of mojibake.
fn not_text(start: &[u8]) -> Option<String> {
    if start.starts_with(b"\xFF\xFE") || start.starts_with(b"\xFE\xFF") {
        return Some(
            "the file is UTF-16 text (Excel's \"Unicode Text\"): save it as \"CSV UTF-8\"".into(),
        );
    }
    if start.contains(&0) {
        return Some(
            "the file is not CSV text: it contains NUL bytes (binary data, or UTF-16 without a \
             byte order mark; save it as \"CSV UTF-8\")"
                .into(),
        );
    }
    // Text has few control characters besides tab and line breaks; a binary file has many.
    let sample = &start[..start.len().min(4096)];
    let controls = sample
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
        .count();
    (controls * 20 > sample.len()).then(|| {
        "the file is not CSV text: it is mostly control characters (binary data?)".to_string()
    })
}

/// Longest value quoted back in a reason: a 1 MB cell must not make a 1 MB error message.
const MAX_QUOTED: usize = 64;

/// Quote a cell value for a reason, shortened when huge.
fn quote(s: &str) -> String {
    if s.chars().count() <= MAX_QUOTED {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX_QUOTED).collect();
        format!("{head:?}… ({} chars)", s.chars().count())
    }
}

/// Streaming reader of the input CSV. Iterate it for one [`Parsed`] per data row.
pub struct InputReader {
    path: PathBuf,
    reader: csv::Reader<BufReader<File>>,
    /// Input column index of each contract column present.
    columns: ColumnMap,
    header_len: usize,
    /// Header names as written (lossy UTF-8), to name a column in a reason.
    header_names: Vec<String>,
    unknown_columns: Vec<String>,
    defaults: RowDefaults,
    delimiter: u8,
    /// Bytes of BOM skipped before the CSV text: csv positions start after it.
    bom_len: u64,
    /// Length of the file when opened, to tell whether a record ran to its end.
    file_len: u64,
    record: ByteRecord,
    row: u64,
    /// (device, target) fingerprint → first row. A 64-bit fingerprint keeps this at about 10
    /// bytes per row (see [`seen::Seen`]); a false "duplicate" needs a hash collision (about 1
    /// in 10^7 for a million-row file).
    seen: seen::Seen,
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
        let file_len = file.metadata().map_err(open_err)?.len();
        let mut buf = BufReader::with_capacity(256 * 1024, file);
        // Peek at the start for a BOM and the header line, without consuming the header.
        let start = buf.fill_buf().map_err(open_err)?;
        let bom = start.starts_with(b"\xEF\xBB\xBF");
        let body = if bom { &start[3..] } else { start };
        if body.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(header_err(
                "the file is empty: expected a header row naming at least device_id".into(),
            ));
        }
        let line_end = body
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .unwrap_or(body.len());
        // Judge the header line only: one corrupt data row must not cost the valid ones.
        if let Some(reason) = not_text(&body[..line_end]) {
            return Err(header_err(reason));
        }
        let delimiter = delimiter.unwrap_or_else(|| detect_delimiter(&body[..line_end]));
        if bom {
            buf.consume(3);
        }
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .has_headers(true)
            .from_reader(buf);
        let headers = reader
            .byte_headers()
            .map_err(|e| header_err(format!("cannot read the header row: {e}")))?
            .clone();
        let mut columns = ColumnMap::default();
        let mut unknown_columns = Vec::new();
        let mut unknown_count = 0usize;
        let mut header_names = Vec::with_capacity(headers.len());
        for (i, raw) in headers.iter().enumerate() {
            let name = String::from_utf8_lossy(raw);
            header_names.push(name.trim().to_string());
            match Column::from_header(&name) {
                Some(col) => {
                    if let Some(prev) = columns.insert(col, i) {
                        return Err(header_err(format!(
                            "column {} appears twice in the header (columns {} and {})",
                            col.name(),
                            prev + 1,
                            i + 1
                        )));
                    }
                }
                None if name.trim().is_empty() => {}
                None => {
                    // A 10,000-column sheet must not make a 10,000-name warning.
                    unknown_count += 1;
                    if unknown_columns.len() < MAX_UNKNOWN_LISTED {
                        unknown_columns.push(name.trim().to_string());
                    }
                }
            }
        }
        if unknown_count > unknown_columns.len() {
            unknown_columns.push(format!(
                "… and {} more",
                unknown_count - unknown_columns.len()
            ));
        }
        if columns.get(Column::DeviceId).is_none() {
            // A file that starts with data rather than a header is the usual cause: say so.
            if let Some(i) = headers
                .iter()
                .position(|h| std::str::from_utf8(h).is_ok_and(|h| parse_guid(h).is_ok()))
            {
                return Err(header_err(format!(
                    "the header row is missing: the first row holds data (column {} is the GUID \
                     {}), but it must name the columns and include device_id, e.g. \
                     device_id,target_type,group_id",
                    i + 1,
                    quote(&String::from_utf8_lossy(&headers[i]))
                )));
            }
            let shown: Vec<String> = headers
                .iter()
                .take(8)
                .map(|h| quote(&String::from_utf8_lossy(h)))
                .collect();
            return Err(header_err(format!(
                "no device_id column in the header row (found {}{}); the first row must name \
                 the columns, e.g. device_id,target_type,group_id",
                shown.join(", "),
                if headers.len() > 8 { ", …" } else { "" }
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            columns,
            header_len: headers.len(),
            header_names,
            unknown_columns,
            defaults,
            delimiter,
            bom_len: if bom { 3 } else { 0 },
            file_len,
            record: ByteRecord::new(),
            row: 0,
            seen: seen::Seen::default(),
            done: false,
        })
    }

    /// Header names that are not input columns (ignored; the caller warns once).
    pub fn unknown_columns(&self) -> &[String] {
        &self.unknown_columns
    }

    /// Rows read so far.
    pub fn rows_read(&self) -> u64 {
        self.row
    }

    fn cell(&self, col: Column) -> Result<Option<&str>, String> {
        let Some(i) = self.columns.get(col) else {
            return Ok(None);
        };
        let Some(raw) = self.record.get(i) else {
            return Ok(None);
        };
        let s = std::str::from_utf8(raw)
            .map_err(|_| {
                format!(
                    "{} {} is not UTF-8 text (save the file as CSV UTF-8)",
                    col.name(),
                    quote(&String::from_utf8_lossy(raw))
                )
            })?
            .trim();
        Ok((!s.is_empty()).then_some(s))
    }

    /// Turn the current record into a job, or the reason it cannot be one.
    fn parse_record(&self) -> Result<(Uuid, Assignment), String> {
        if self.record.iter().all(|f| f.trim_ascii().is_empty()) {
            return Err("empty row: no values".into());
        }
        if self.record.len() != self.header_len {
            return Err(format!(
                "ragged row: {} fields where the header has {}",
                self.record.len(),
                self.header_len
            ));
        }
        let device = self
            .cell(Column::DeviceId)?
            .ok_or_else(|| "device_id is empty".to_string())?;
        let device = with_col(Column::DeviceId, parse_guid(device))?;

        let explicit_kind = self
            .cell(Column::TargetType)?
            .map(parse_target_kind)
            .transpose()?;
        let cell_group = self
            .cell(Column::GroupId)?
            .map(|s| with_col(Column::GroupId, parse_guid(s)))
            .transpose()?;
        let cell_collection = self
            .cell(Column::CollectionId)?
            .map(|s| with_col(Column::CollectionId, parse_collection_id(s)))
            .transpose()?;
        let group = cell_group.or(self.defaults.group_id);
        let has_cell_collection = cell_collection.is_some();
        let collection = cell_collection.or_else(|| self.defaults.collection_id.clone());
        let kind = explicit_kind
            .or(self.defaults.target_type)
            .unwrap_or(if group.is_some() {
                TargetKind::Group
            } else if collection.is_some() {
                TargetKind::ConfigurationManagerCollection
            } else {
                TargetKind::Base
            });
        let group_id =
            if kind.needs_group() {
                Some(group.ok_or_else(|| {
                    format!("group_id is required for target_type {}", kind.as_str())
                })?)
            } else if cell_group.is_some() {
                return Err(format!(
                    "group_id is set but target_type {} takes no group",
                    kind.as_str()
                ));
            } else {
                None
            };
        let collection_id = if kind == TargetKind::ConfigurationManagerCollection {
            Some(collection.ok_or_else(|| {
                "collection_id is required for target_type configuration_manager_collection"
                    .to_string()
            })?)
        } else if has_cell_collection {
            return Err(format!(
                "collection_id is set but target_type {} takes no collection",
                kind.as_str()
            ));
        } else {
            None
        };

        let filter_id = self
            .cell(Column::FilterId)?
            .map(|s| with_col(Column::FilterId, parse_guid(s)))
            .transpose()?
            .or(self.defaults.filter_id);
        let filter_type = self
            .cell(Column::FilterType)?
            .map(FilterType::parse)
            .transpose()?
            .or(self.defaults.filter_type)
            .or(filter_id.map(|_| FilterType::Include));
        if matches!(filter_type, Some(FilterType::Include | FilterType::Exclude))
            && filter_id.is_none()
        {
            return Err(format!(
                "filter_type {} needs a filter_id",
                if filter_type == Some(FilterType::Include) {
                    "include"
                } else {
                    "exclude"
                }
            ));
        }
        let source = self
            .cell(Column::Source)?
            .map(Source::parse)
            .transpose()?
            .or(self.defaults.source)
            .unwrap_or(Source::Direct);
        let source_id = self
            .cell(Column::SourceId)?
            .map(str::to_string)
            .or_else(|| self.defaults.source_id.clone());
        let assignment_id = self.cell(Column::AssignmentId)?.map(str::to_string);

        let target = Target {
            kind,
            group_id,
            collection_id,
            filter_id,
            filter_type,
        };
        Ok((
            device,
            Assignment::new(target, source, source_id, assignment_id),
        ))
    }

    /// Detect a quote left open, which makes the csv parser swallow every following line (to
    /// the next quote or the end of the file) into one value, losing those rows. If the record
    /// just read has a value running over a line break and cannot be right (it does not
    /// validate, or it ran to the end of the file without a closing quote), re-read only its
    /// first physical line as this row and resume parsing at the next line, so the rows after
    /// it are read as rows. Returns the reason this row is invalid, or `None` when the record
    /// is not a swallowing one. Multi-line values that close properly (a note in an ignored
    /// column) are left alone.
    fn open_quote(&mut self) -> std::io::Result<Option<String>> {
        // One branch-free pass over all the record's bytes (it vectorises); the per-field
        // search runs only for the rare record that has a line break at all.
        let has_break = self
            .record
            .as_slice()
            .iter()
            .fold(false, |acc, &b| acc | (b == b'\n') | (b == b'\r'));
        if !has_break {
            return Ok(None);
        }
        let Some(column) = self
            .record
            .iter()
            .position(|f| f.iter().any(|&b| b == b'\n' || b == b'\r'))
        else {
            return Ok(None);
        };
        let Some(start) = self.record.position().cloned() else {
            return Ok(None);
        };
        let at_end = self.bom_len + self.reader.position().byte() >= self.file_len;
        let swallowing =
            self.parse_record().is_err() || (at_end && !self.file_ends_with_quote()?);
        if !swallowing {
            return Ok(None);
        }
        // The first line of the record, from a second handle on the file.
        let first = self.bom_len + start.byte();
        let mut file = BufReader::new(File::open(&self.path)?);
        file.seek(SeekFrom::Start(first))?;
        let mut line = Vec::new();
        let mut consumed = 0u64;
        let mut byte = [0u8; 1];
        loop {
            if file.read(&mut byte)? == 0 {
                break;
            }
            consumed += 1;
            match byte[0] {
                b'\n' => break,
                b'\r' => {
                    // CRLF is one line break; a lone CR (old Mac files) is one too.
                    if file.fill_buf()?.first() == Some(&b'\n') {
                        file.consume(1);
                        consumed += 1;
                    }
                    break;
                }
                b => line.push(b),
            }
        }
        let mut one = csv::ReaderBuilder::new()
            .delimiter(self.delimiter)
            .has_headers(false)
            .flexible(true)
            .from_reader(line.as_slice());
        let mut record = ByteRecord::new();
        // Reading from memory cannot fail; an empty line leaves an empty record.
        one.read_byte_record(&mut record)
            .map_err(std::io::Error::other)?;
        self.record = record;
        let mut next = csv::Position::new();
        next.set_byte(start.byte() + consumed)
            .set_line(start.line() + 1)
            .set_record(start.record() + 1);
        self.reader
            .seek_raw(SeekFrom::Start(first + consumed), next)
            .map_err(std::io::Error::other)?;
        let name = self
            .header_names
            .get(column)
            .filter(|n| !n.is_empty())
            .map_or_else(
                || format!("column {}", column + 1),
                |n| format!("{n} (column {})", column + 1),
            );
        Ok(Some(format!(
            "a quote opened in {name} is never closed on this line; the lines after it are read \
             as rows of their own"
        )))
    }

    /// Whether the file's last non-blank byte is a quote, i.e. a final multi-line value was
    /// closed.
    fn file_ends_with_quote(&self) -> std::io::Result<bool> {
        let mut file = File::open(&self.path)?;
        let tail = self.file_len.min(64);
        file.seek(SeekFrom::End(-(tail as i64)))?;
        let mut buf = Vec::with_capacity(64);
        file.take(tail).read_to_end(&mut buf)?;
        Ok(buf.trim_ascii_end().last() == Some(&b'"'))
    }

    fn device_cell_lossy(&self) -> String {
        self.columns
            .get(Column::DeviceId)
            .and_then(|i| self.record.get(i))
            .map(|raw| String::from_utf8_lossy(raw).trim().to_string())
            .unwrap_or_default()
    }
}

/// ConfigMgr collection ids look like `SMS00001` (site code + 5 hex digits); accept any
/// printable token so that nothing valid is refused, but catch obvious garbage.
fn parse_collection_id(s: &str) -> Result<String, String> {
    if s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{} is not a collection id (e.g. SMS00001)",
            quote(s)
        ))
    }
}

/// [`TargetKind::parse`] without its allocations on the common path: a CSV word
/// (`group`, `All-Devices`, ...) is matched by comparing normalised characters in place, the
/// same normalisation as [`normalize_word`] (so exactly the same cells match); anything else
/// (an `@odata.type` name, or an error to report) goes to `TargetKind::parse`. It runs on
/// every row, and normalising into fresh Strings for the cell and each of the six kinds was
/// a visible share of `validate`'s time.
fn parse_target_kind(s: &str) -> Result<TargetKind, String> {
    fn normalized(s: &str) -> impl Iterator<Item = char> + '_ {
        s.chars()
            .filter(|c| !matches!(c, '_' | '-' | ' '))
            .flat_map(char::to_lowercase)
    }
    /// The same for ASCII text, byte by byte (char::to_lowercase of ASCII is ASCII lowercase).
    fn normalized_ascii(s: &str) -> impl Iterator<Item = u8> + '_ {
        s.bytes()
            .filter(|b| !matches!(b, b'_' | b'-' | b' '))
            .map(|b| b.to_ascii_lowercase())
    }
    let ascii = s.is_ascii();
    TargetKind::ALL
        .into_iter()
        .find(|k| {
            if ascii {
                normalized_ascii(s).eq(normalized_ascii(k.as_str()))
            } else {
                normalized(s).eq(normalized(k.as_str()))
            }
        })
        .map_or_else(|| TargetKind::parse(s), Ok)
}

/// Prefix a cell error with its column's name.
fn with_col<T>(col: Column, r: Result<T, String>) -> Result<T, String> {
    r.map_err(|e| format!("{}: {e}", col.name()))
}

fn fingerprint(device: Uuid, target: &Target) -> u64 {
    // DefaultHasher::new() has fixed keys: the same file always dedupes the same way.
    let mut h = std::hash::DefaultHasher::new();
    device.hash(&mut h);
    target.hash(&mut h);
    h.finish()
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
                    path: self.path.clone(),
                    row: self.row,
                    source,
                }))
            }
            Ok(true) => {
                self.row += 1;
                let row = self.row;
                let open_quote = match self.open_quote() {
                    Ok(found) => found,
                    Err(source) => {
                        self.done = true;
                        return Some(Err(InputError::Open {
                            path: self.path.clone(),
                            source,
                        }));
                    }
                };
                if let Some(reason) = open_quote {
                    return Some(Ok(Parsed::Invalid(InvalidRow {
                        row,
                        device_id: self.device_cell_lossy(),
                        reason,
                    })));
                }
                let parsed = match self.parse_record() {
                    Err(reason) => Parsed::Invalid(InvalidRow {
                        row,
                        device_id: self.device_cell_lossy(),
                        reason,
                    }),
                    Ok((device_id, assignment)) => match self
                        .seen
                        .first_or_insert(fingerprint(device_id, &assignment.target), row)
                    {
                        Some(first) => Parsed::Invalid(InvalidRow {
                            row,
                            device_id: device_id.to_string(),
                            reason: format!("duplicate of row {first}"),
                        }),
                        None => Parsed::Job(Job {
                            row,
                            device_id,
                            assignment,
                        }),
                    },
                };
                Some(Ok(parsed))
            }
        }
    }
}

/// Count data rows cheaply (for the progress bar's length). `None` if the file cannot be read.
pub fn count_rows(path: &Path, delimiter: Option<u8>) -> Option<u64> {
    let reader = InputReader::open(path, delimiter, RowDefaults::default()).ok()?;
    let mut rdr = reader.reader;
    let mut rec = ByteRecord::new();
    let mut n = 0;
    while rdr.read_byte_record(&mut rec).ok()? {
        n += 1;
    }
    Some(n)
}

/// The dedupe index behind `duplicate of row N`.
mod seen {
    use std::collections::HashMap;
    use std::hash::{BuildHasherDefault, Hasher};

    /// Capacity the recent map starts with. hashbrown rounds it up to 2^16 slots, which hold
    /// 57,344 entries (7/8 full) in about 1 MiB; the map is merged before it would grow.
    const RECENT_START: usize = 32 * 1024;
    /// The sorted array may be this many times the recent map's capacity (about 3.7 million
    /// rows at the start) before the recent map doubles. Each merge moves the whole array, so
    /// a recent map that never grew would make merging quadratic in the input; growing it
    /// keeps merging linear at a fraction of a byte per row.
    const SORTED_PER_RECENT: usize = 64;
    /// Top fingerprint bits that pick a bucket of the sorted array. The directory of 2^16
    /// bucket starts costs 256 KiB once (from the first merge on, so small files never pay
    /// it), and it lets an entry leave those 16 bits out.
    const DIRECTORY_BITS: u32 = 16;
    const BUCKETS: usize = 1 << DIRECTORY_BITS;
    const LOW_BITS: u32 = 64 - DIRECTORY_BITS;

    /// One row as kept in the sorted array: the fingerprint's low 48 bits (its top 16 are
    /// the bucket it sits in) and the row. 10 bytes, where `(u64, u64)` takes 16.
    #[derive(Clone, Copy, Default)]
    #[repr(C, packed(2))]
    struct Entry {
        low: u32,
        mid: u16,
        row: u32,
    }

    impl Entry {
        fn new(fp: u64, row: u32) -> Self {
            Self {
                low: fp as u32,
                mid: (fp >> 32) as u16,
                row,
            }
        }

        /// The fingerprint's low 48 bits.
        fn key(self) -> u64 {
            (u64::from(self.mid) << 32) | u64::from(self.low)
        }
    }

    fn bucket(fp: u64) -> usize {
        (fp >> LOW_BITS) as usize
    }

    fn low(fp: u64) -> u64 {
        fp & ((1 << LOW_BITS) - 1)
    }

    /// The fingerprint is already a SipHash output: hash it again for nothing.
    #[derive(Default)]
    pub(super) struct FpHasher(u64);

    impl Hasher for FpHasher {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            // Only u64 keys are hashed; fold anything else so that the hasher stays total.
            for &b in bytes {
                self.0 = self.0.rotate_left(8) ^ u64::from(b);
            }
        }
        fn write_u64(&mut self, n: u64) {
            self.0 = n;
        }
    }

    /// (device, target) fingerprint → first row, at about 10 bytes per distinct row.
    ///
    /// A `HashMap<u64, u64>` needs 17 bytes a slot in power-of-two tables at most 7/8 full that
    /// double when full: a million rows took a 2^21-slot table (36 MiB), and while growing the
    /// old table beside it, so `validate` peaked at 58 MB and `run` would have been over 60.
    /// Here the bulk of the rows sit in an array of packed 10-byte entries sorted by
    /// fingerprint, with a directory of buckets by the fingerprint's top 16 bits
    /// (fingerprints are uniform over u64, so a bucket holds about n/65,536 entries, a cache
    /// line or two up to a few million rows; a lookup costs about two cache misses, where a
    /// plain binary or interpolation search costs four or more, and that dominated
    /// `validate`'s time). Equality is still on all 64 bits. New rows go to a small hash map
    /// first, which is sorted and merged into the array, back to front in place, when full.
    /// Rows past u32::MAX (a file of over four billion rows) are kept whole in a map of their
    /// own.
    pub(super) struct Seen {
        sorted: Vec<Entry>,
        /// `directory[b]..directory[b + 1]` is the slice of `sorted` whose fingerprints' top
        /// bits are `b`. Empty until the first merge.
        directory: Vec<u32>,
        recent: HashMap<u64, u32, BuildHasherDefault<FpHasher>>,
        /// The merge buffer, kept between merges so that it is not reallocated each time.
        batch: Vec<(u64, u32)>,
        wide: HashMap<u64, u64>,
    }

    impl Default for Seen {
        fn default() -> Self {
            Self::with_recent_capacity(RECENT_START)
        }
    }

    impl Seen {
        pub(super) fn with_recent_capacity(capacity: usize) -> Self {
            Self {
                sorted: Vec::new(),
                directory: Vec::new(),
                recent: HashMap::with_capacity_and_hasher(capacity, Default::default()),
                batch: Vec::new(),
                wide: HashMap::new(),
            }
        }

        /// The first row seen with `fp`, or `None` after recording `row` as the first.
        pub(super) fn first_or_insert(&mut self, fp: u64, row: u64) -> Option<u64> {
            if let Some(&first) = self.recent.get(&fp) {
                return Some(u64::from(first));
            }
            if let Some(first) = self.find_sorted(fp) {
                return Some(u64::from(first));
            }
            if let Some(&first) = self.wide.get(&fp) {
                return Some(first);
            }
            match u32::try_from(row) {
                Ok(row) => {
                    if self.recent.len() >= self.recent.capacity() {
                        self.merge();
                    }
                    self.recent.insert(fp, row);
                }
                Err(_) => {
                    self.wide.insert(fp, row);
                }
            }
            None
        }

        /// Move the recent map into the sorted array.
        fn merge(&mut self) {
            if self.directory.is_empty() {
                self.directory = vec![0; BUCKETS + 1];
            }
            self.batch.clear();
            self.batch.extend(self.recent.drain());
            self.batch.sort_unstable_by_key(|&(fp, _)| fp);
            let (n, m) = (self.sorted.len(), self.batch.len());
            // Exact growth: the merge below touches every entry anyway, and a doubled
            // capacity would only be address space (or, where realloc copies, a larger spike).
            self.sorted.reserve_exact(m);
            self.sorted.resize(n + m, Entry::default());
            // Merge from the back into the array's new tail: no second array of the whole.
            // Fingerprints are distinct (a repeat is answered, never inserted). `b` tracks the
            // bucket of old entry i - 1, which gives back its top bits.
            let (mut i, mut j, mut b) = (n, m, BUCKETS - 1);
            for k in (0..n + m).rev() {
                let take_old = i > 0 && {
                    while self.directory[b] as usize > i - 1 {
                        b -= 1; // directory[0] == 0 <= i - 1: stops at bucket 0 at the latest
                    }
                    let old = ((b as u64) << LOW_BITS) | self.sorted[i - 1].key();
                    j == 0 || old > self.batch[j - 1].0
                };
                if take_old {
                    i -= 1;
                    self.sorted[k] = self.sorted[i];
                } else {
                    j -= 1;
                    let (fp, row) = self.batch[j];
                    self.sorted[k] = Entry::new(fp, row);
                }
                if j == 0 {
                    break; // the rest of the old entries are already in place
                }
            }
            // Each bucket start moves up by the new entries in the buckets before it.
            let mut added = 0u32;
            let mut next = 0usize;
            for b in 0..=BUCKETS {
                while next < m && bucket(self.batch[next].0) < b {
                    next += 1;
                    added += 1;
                }
                self.directory[b] += added; // n + m <= u32::MAX: only rows that fit u32
            }
            if self.sorted.len() > SORTED_PER_RECENT * self.recent.capacity() {
                self.recent.reserve(self.recent.capacity() + 1);
            }
        }

        /// Look `fp` up in the sorted array: one read of the directory, then a binary search
        /// of its bucket. Fingerprints are SipHash outputs, so buckets stay small; a crafted
        /// file that piles rows into one bucket costs O(log n) per row, never O(n).
        fn find_sorted(&self, fp: u64) -> Option<u32> {
            let b = bucket(fp);
            let (&start, &end) = (self.directory.get(b)?, self.directory.get(b + 1)?);
            let slice = self.sorted.get(start as usize..end as usize)?;
            let i = slice.binary_search_by_key(&low(fp), |e| e.key()).ok()?;
            slice.get(i).map(|e| e.row)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Against a plain map, across many merges and with skewed fingerprints too.
        #[test]
        fn agrees_with_a_hash_map() {
            for skew in 0..3 {
                let mut seen = Seen::with_recent_capacity(16);
                let mut reference: HashMap<u64, u64> = HashMap::new();
                let mut order = Vec::new();
                let mut rng = fastrand::Rng::with_seed(7);
                for row in 1..=20_000u64 {
                    // One in five rows repeats an earlier fingerprint.
                    let fp = if !order.is_empty() && rng.u8(..5) == 0 {
                        order[rng.usize(..order.len())]
                    } else {
                        match skew {
                            // Uniform, as SipHash outputs are.
                            0 => rng.u64(..),
                            // All in one bucket.
                            1 => rng.u64(..1 << 20),
                            // Few low bits, many buckets: the top bits must come back
                            // right from the directory.
                            _ => (rng.u64(..) & !((1 << 48) - 1)) | rng.u64(..4),
                        }
                    };
                    let expected = reference.get(&fp).copied();
                    if expected.is_none() {
                        reference.insert(fp, row);
                        order.push(fp);
                    }
                    assert_eq!(seen.first_or_insert(fp, row), expected, "row {row}");
                }
                // Every fingerprint still answers its first row after all the merges.
                for (&fp, &first) in &reference {
                    assert_eq!(seen.first_or_insert(fp, u64::MAX), Some(first));
                }
            }
        }

        #[test]
        fn extreme_fingerprints_and_wide_rows() {
            let mut seen = Seen::with_recent_capacity(1);
            for (row, fp) in [0, u64::MAX, 1, u64::MAX - 1].into_iter().enumerate() {
                assert_eq!(seen.first_or_insert(fp, row as u64 + 1), None);
            }
            assert_eq!(seen.first_or_insert(u64::MAX, 9), Some(2));
            assert_eq!(seen.first_or_insert(0, 9), Some(1));
            let wide = u64::from(u32::MAX) + 5;
            assert_eq!(seen.first_or_insert(42, wide), None);
            assert_eq!(seen.first_or_insert(42, wide + 1), Some(wide));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(job.device_id.to_string(), D1);
        assert_eq!(job.assignment.target.kind, TargetKind::Group);
        assert_eq!(job.assignment.target.group_id.unwrap().to_string(), G1);
        assert_eq!(job.assignment.source, Source::Direct);
    }

    #[test]
    fn tab_delimited_and_kind_inferred_from_group() {
        let text = format!("device_id\tgroup_id\n{D1}\t{G1}\n");
        let rows = read(text.as_bytes(), RowDefaults::default()).unwrap();
        let Parsed::Job(job) = &rows[0] else {
            panic!("{rows:?}")
        };
        assert_eq!(job.assignment.target.kind, TargetKind::Group);
    }

    #[test]
    fn bad_cells_name_column_and_value() {
        let text = format!(
            "device_id,target_type,group_id,filter_type,source\n\
             nope,,,,\n\
             {D1},groups,,,\n\
             {D1},group,,,\n\
             {D1},,,sideways,\n\
             {D1},,,,indirect\n\
             {D2},all_devices,{G1},,\n\
             {D1},base\n"
        );
        let rows = read(text.as_bytes(), RowDefaults::default()).unwrap();
        assert_eq!(rows.len(), 7);
        assert!(invalid(&rows[0]).contains("device_id") && invalid(&rows[0]).contains("nope"));
        assert!(invalid(&rows[1]).contains("target_type") && invalid(&rows[1]).contains("groups"));
        assert!(invalid(&rows[2]).contains("group_id is required"));
        assert!(
            invalid(&rows[3]).contains("filter_type") && invalid(&rows[3]).contains("sideways")
        );
        assert!(invalid(&rows[4]).contains("source") && invalid(&rows[4]).contains("indirect"));
        assert!(invalid(&rows[5]).contains("takes no group"));
        assert!(invalid(&rows[6]).contains("ragged"));
        assert_eq!(
            rows.iter().map(Parsed::row).collect::<Vec<_>>(),
            (1..=7).collect::<Vec<_>>()
        );
    }

    #[test]
    fn duplicates_name_the_first_row() {
        let text = format!("device_id,group_id\n{D1},{G1}\n{D2},{G1}\n{D1},{G1}\n{D1},\n");
        let rows = read(text.as_bytes(), RowDefaults::default()).unwrap();
        assert!(matches!(rows[0], Parsed::Job(_)));
        assert!(matches!(rows[1], Parsed::Job(_)));
        assert_eq!(invalid(&rows[2]), "duplicate of row 1");
        // Same device, other target (base): not a duplicate.
        assert!(matches!(rows[3], Parsed::Job(_)));
    }

    /// The allocation-free match accepts and refuses exactly what `TargetKind::parse` does.
    #[test]
    fn target_kind_fast_path_matches_parse() {
        for cell in [
            "group",
            "Group",
            "GROUP",
            "exclusion_group",
            "Exclusion-Group",
            "all devices",
            "ALL_LICENSED_USERS",
            "configuration_manager_collection",
            "base",
            "#microsoft.graph.groupAssignmentTarget",
            "microsoft.graph.allDevicesAssignmentTarget",
            "microsoft.graph.deviceAndAppManagementAssignmentTarget",
            "groups",
            "grou",
            "",
            "_-_",
            "gröup",
            "\u{212A}",           // KELVIN SIGN lowercases to ASCII k
            "B\u{0130}ase",       // İ lowercases to i + combining dot
            "all\u{00A0}devices", // no-break space is not ignored
            "ＧＲＯＵＰ",
        ] {
            assert_eq!(parse_target_kind(cell), TargetKind::parse(cell), "{cell:?}");
        }
    }

    #[test]
    fn flag_defaults_fill_empty_cells() {
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
        assert_eq!(a.assignment.target.kind, TargetKind::Group);
        assert_eq!(a.assignment.source, Source::PolicySets);
        assert_eq!(b.assignment.source, Source::Direct);
    }

    #[test]
    fn file_level_errors() {
        assert!(matches!(
            read(b"", RowDefaults::default()),
            Err(InputError::Header { .. })
        ));
        let e = read(b"serial,model\nx,y\n", RowDefaults::default()).unwrap_err();
        assert!(e.to_string().contains("no device_id column"), "{e}");
        let e = read(b"device_id,deviceId\n", RowDefaults::default()).unwrap_err();
        assert!(e.to_string().contains("appears twice"), "{e}");
        assert!(
            read(b"device_id\n", RowDefaults::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn seed_row_builds_the_seed_body() {
        let filter = "3b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
        let text = format!(
            "device_id,filter_id,filter_type,source,source_id\n{D1},{filter},include,policySets,Source Id value\n"
        );
        let rows = read(text.as_bytes(), RowDefaults::default()).unwrap();
        let Parsed::Job(job) = &rows[0] else {
            panic!("{rows:?}")
        };
        assert_eq!(
            serde_json::to_value(&job.assignment).unwrap(),
            serde_json::json!({
              "@odata.type": "#microsoft.graph.windowsAutopilotDeploymentProfileAssignment",
              "target": {
                "@odata.type": "microsoft.graph.deviceAndAppManagementAssignmentTarget",
                "deviceAndAppManagementAssignmentFilterId": filter,
                "deviceAndAppManagementAssignmentFilterType": "include"
              },
              "source": "policySets",
              "sourceId": "Source Id value"
            })
        );
    }
}
