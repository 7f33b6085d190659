//! Recovery from a quote left open. The csv parser then swallows every following line (to the
//! next quote or the end of the file) into one value, and those rows would be lost; instead
//! the bad row alone is reported and parsing resumes at its next line. The first line is
//! re-read from a second handle on the file, since the csv reader has already consumed it.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

use csv::ByteRecord;

/// The input file as recovery needs to know it, beside the csv reader on it.
#[derive(Debug, Clone)]
pub(super) struct InputFile {
    pub(super) path: PathBuf,
    /// Bytes of BOM skipped before the CSV text: csv positions start after it.
    pub(super) bom_len: u64,
    /// Length of the file when opened, to tell whether a record ran to its end.
    pub(super) len: u64,
    pub(super) delimiter: u8,
}

/// Detect a quote left open in `record`, just read by `reader`. If the record has a value
/// running over a line break and cannot be right (`is_valid` refuses it, or it ran to the end
/// of the file without a closing quote), re-read only its first physical line as this row and
/// resume parsing at the next line, so the rows after it are read as rows. Returns the reason
/// this row is invalid, or `None` when the record is not a swallowing one. Multi-line values
/// that close properly (a note in an ignored column) are left alone.
pub(super) fn open_quote<R: Read + Seek>(
    file: &InputFile,
    reader: &mut csv::Reader<R>,
    record: &mut ByteRecord,
    header_names: &[String],
    is_valid: impl FnOnce(&ByteRecord) -> bool,
) -> io::Result<Option<String>> {
    let Some(column) = line_break_column(record) else {
        return Ok(None);
    };
    let Some(start) = record.position().cloned() else {
        return Ok(None);
    };
    let at_end = file.bom_len + reader.position().byte() >= file.len;
    let swallowing = !is_valid(record) || (at_end && !file.ends_with_quote()?);
    if !swallowing {
        return Ok(None);
    }
    let first = file.bom_len + start.byte();
    let (line, consumed) = file.line_at(first)?;
    *record = split_line(&line, file.delimiter)?;
    let mut next = csv::Position::new();
    next.set_byte(start.byte() + consumed)
        .set_line(start.line() + 1)
        .set_record(start.record() + 1);
    reader
        .seek_raw(SeekFrom::Start(first + consumed), next)
        .map_err(io::Error::other)?;
    Ok(Some(reason(header_names, column)))
}

/// The first field of `record` holding a line break, if any.
fn line_break_column(record: &ByteRecord) -> Option<usize> {
    // One branch-free pass over all the record's bytes (it vectorises); the per-field search
    // runs only for the rare record that has a line break at all.
    let has_break = record
        .as_slice()
        .iter()
        .fold(false, |acc, &b| acc | (b == b'\n') | (b == b'\r'));
    if !has_break {
        return None;
    }
    record
        .iter()
        .position(|f| f.iter().any(|&b| b == b'\n' || b == b'\r'))
}

impl InputFile {
    /// Whether the file's last non-blank byte is a quote, i.e. a final multi-line value was
    /// closed.
    fn ends_with_quote(&self) -> io::Result<bool> {
        let mut file = File::open(&self.path)?;
        let tail = self.len.min(64);
        file.seek(SeekFrom::End(-(tail as i64)))?;
        let mut buf = Vec::with_capacity(64);
        file.take(tail).read_to_end(&mut buf)?;
        Ok(buf.trim_ascii_end().last() == Some(&b'"'))
    }

    /// The physical line starting at byte `offset`, without its line break, and the bytes it
    /// takes with the break.
    fn line_at(&self, offset: u64) -> io::Result<(Vec<u8>, u64)> {
        let mut file = BufReader::new(File::open(&self.path)?);
        file.seek(SeekFrom::Start(offset))?;
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
        Ok((line, consumed))
    }
}

/// One line as one record, quotes and all: an empty line leaves an empty record.
fn split_line(line: &[u8], delimiter: u8) -> io::Result<ByteRecord> {
    let mut one = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(line);
    let mut record = ByteRecord::new();
    // Reading from memory does not fail; should it, the run stops with the error.
    one.read_byte_record(&mut record)
        .map_err(io::Error::other)?;
    Ok(record)
}

/// The reason given for the row whose quote never closes, naming its column.
fn reason(header_names: &[String], column: usize) -> String {
    let name = header_names
        .get(column)
        .filter(|n| !n.is_empty())
        .map_or_else(
            || format!("column {}", column + 1),
            |n| format!("{n} (column {})", column + 1),
        );
    format!(
        "a quote opened in {name} is never closed on this line; the lines after it are read as \
         rows of their own"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_field_with_a_line_break() {
        assert_eq!(
            line_break_column(&ByteRecord::from(vec!["a", "b", "c"])),
            None
        );
        assert_eq!(
            line_break_column(&ByteRecord::from(vec!["a", "b\nc", "d\r"])),
            Some(1)
        );
    }

    #[test]
    fn an_open_quote_stays_in_its_line() {
        let r = split_line(b"x,\"y,z", b',').unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(&r[1], b"y,z");
        assert_eq!(split_line(b"", b';').unwrap().len(), 0);
    }

    #[test]
    fn reason_names_the_column() {
        let names = ["device_id".to_string(), String::new()];
        assert!(reason(&names, 0).starts_with("a quote opened in device_id (column 1) is never"));
        assert!(reason(&names, 1).starts_with("a quote opened in column 2 is never"));
        assert!(reason(&names, 5).starts_with("a quote opened in column 6 is never"));
    }

    #[test]
    fn lines_end_at_lf_crlf_or_cr() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        io::Write::write_all(&mut f, b"ab\r\ncd\ref\ngh").unwrap();
        let file = InputFile {
            path: f.path().to_path_buf(),
            bom_len: 0,
            len: 12,
            delimiter: b',',
        };
        assert_eq!(file.line_at(0).unwrap(), (b"ab".to_vec(), 4));
        assert_eq!(file.line_at(4).unwrap(), (b"cd".to_vec(), 3));
        assert_eq!(file.line_at(7).unwrap(), (b"ef".to_vec(), 3));
        assert_eq!(file.line_at(10).unwrap(), (b"gh".to_vec(), 2));
        assert!(!file.ends_with_quote().unwrap());
        io::Write::write_all(&mut f, b"\"\r\n \n").unwrap();
        let file = InputFile { len: 17, ..file };
        assert!(file.ends_with_quote().unwrap());
    }
}
