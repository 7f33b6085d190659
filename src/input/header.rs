//! The start of the file, before any data row: a byte order mark, text that is not CSV at all
//! (UTF-16, binary), the delimiter, and the header row mapped to contract columns. Everything
//! here ends the run with one clear reason rather than a row of mojibake per line.

use csv::ByteRecord;

use super::cells::{parse_guid, quote};
use super::columns::{Column, ColumnMap};

/// The UTF-8 byte order mark Excel writes at the start of "CSV UTF-8".
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Unknown header names listed in the warning; the rest are counted.
const MAX_UNKNOWN_LISTED: usize = 20;

/// What the first bytes of the file say, before the csv parser reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sniffed {
    /// Bytes of BOM to skip: csv positions start after it.
    pub(crate) bom_len: u64,
    pub(crate) delimiter: u8,
}

/// Judge the start of the file (one buffer's worth): refuse an empty or non-text file, note a
/// BOM, and pick the delimiter unless `delimiter` overrides detection.
pub(crate) fn sniff(start: &[u8], delimiter: Option<u8>) -> Result<Sniffed, String> {
    let bom = start.starts_with(BOM);
    let body = if bom { &start[BOM.len()..] } else { start };
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err("the file is empty: expected a header row naming at least device_id".into());
    }
    let line_end = body
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .unwrap_or(body.len());
    // Judge the header line only: one corrupt data row must not cost the valid ones.
    let header_line = &body[..line_end];
    if let Some(reason) = not_text(header_line) {
        return Err(reason);
    }
    Ok(Sniffed {
        bom_len: if bom { BOM.len() as u64 } else { 0 },
        delimiter: delimiter.unwrap_or_else(|| detect_delimiter(header_line)),
    })
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

/// Why a file whose first line is `start` cannot be CSV text, if it cannot: UTF-16 (Excel's
/// "Unicode Text" export) and binary files would otherwise fail with a header full of mojibake.
fn not_text(start: &[u8]) -> Option<String> {
    if start.starts_with(b"\xFF\xFE") || start.starts_with(b"\xFE\xFF") {
        return Some(
            "the file is UTF-16 text, as Windows PowerShell 5.1's `Out-File` and `>` write it (and \
             Excel's \"Unicode Text\"): write it again with `Export-Csv -Encoding UTF8` or \
             `Out-File -Encoding utf8` (or `Set-Content -Encoding utf8`), or save it from Excel \
             as \"CSV UTF-8\""
                .into(),
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

/// The header row, understood.
#[derive(Debug, Clone)]
pub(super) struct Header {
    pub(super) columns: ColumnMap,
    /// Header names as written (lossy UTF-8, trimmed), to name a column in a reason.
    pub(super) names: Vec<String>,
    /// Names that are not contract columns (ignored; the caller warns once). A 10,000-column
    /// sheet must not make a 10,000-name warning: past [`MAX_UNKNOWN_LISTED`] the rest are
    /// counted in a last entry.
    pub(super) unknown: Vec<String>,
}

impl Header {
    /// List `name` among the ignored columns (an input column this run does not read): always
    /// named, before the count of names past [`MAX_UNKNOWN_LISTED`] if there is one.
    pub(super) fn ignore(&mut self, name: String) {
        let at = match self.unknown.last() {
            Some(last) if self.unknown.len() > MAX_UNKNOWN_LISTED && last.starts_with("… and ") => {
                self.unknown.len() - 1
            }
            _ => self.unknown.len(),
        };
        self.unknown.insert(at, name);
    }
}

/// Map the header row to contract columns. A repeated column, or neither `device_id` nor
/// `serial_number`, is refused.
pub(super) fn read_header(headers: &ByteRecord) -> Result<Header, String> {
    let mut columns = ColumnMap::new(headers.len());
    let mut unknown = Vec::new();
    let mut unknown_count = 0usize;
    let mut names = Vec::with_capacity(headers.len());
    for (i, raw) in headers.iter().enumerate() {
        let name = String::from_utf8_lossy(raw);
        let name = name.trim();
        names.push(name.to_string());
        match Column::from_header(name) {
            Some(col) => {
                if let Some(prev) = columns.insert(col, i) {
                    return Err(format!(
                        "column {} appears twice in the header (columns {} and {})",
                        col.name(),
                        prev + 1,
                        i + 1
                    ));
                }
            }
            None if name.is_empty() => {}
            None => {
                unknown_count += 1;
                if unknown.len() < MAX_UNKNOWN_LISTED {
                    unknown.push(name.to_string());
                }
            }
        }
    }
    if unknown_count > unknown.len() {
        unknown.push(format!("… and {} more", unknown_count - unknown.len()));
    }
    if columns.get(Column::DeviceId).is_none() && columns.get(Column::SerialNumber).is_none() {
        return Err(no_device_id(headers));
    }
    Ok(Header {
        columns,
        names,
        unknown,
    })
}

/// Why a header without `device_id` is refused. A file that starts with data rather than a
/// header is the usual cause: say so.
fn no_device_id(headers: &ByteRecord) -> String {
    if let Some(i) = headers
        .iter()
        .position(|h| std::str::from_utf8(h).is_ok_and(|h| parse_guid(h).is_ok()))
    {
        return format!(
            "the header row is missing: the first row holds data (column {} is the GUID \
             {}), but it must name the columns and include device_id or serial_number, \
             e.g. device_id,target_type,group_id",
            i + 1,
            quote(&String::from_utf8_lossy(&headers[i]))
        );
    }
    let shown: Vec<String> = headers
        .iter()
        .take(8)
        .map(|h| quote(&String::from_utf8_lossy(h)))
        .collect();
    format!(
        "no device_id or serial_number column in the header row (found {}{}); the first \
         row must name the columns, e.g. device_id,target_type,group_id",
        shown.join(", "),
        if headers.len() > 8 { ", …" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(names: &[&str]) -> Result<Header, String> {
        read_header(&ByteRecord::from(names.to_vec()))
    }

    #[test]
    fn bom_and_delimiter() {
        let s = sniff(b"\xEF\xBB\xBFdevice_id;a;b,c\nx,y,z,w,v\n", None).unwrap();
        assert_eq!(
            s,
            Sniffed {
                bom_len: 3,
                delimiter: b';'
            }
        );
        assert_eq!(
            sniff(b"device_id\tgroup_id\n", None).unwrap().delimiter,
            b'\t'
        );
        assert_eq!(sniff(b"device_id\n", None).unwrap().delimiter, b',');
        assert_eq!(
            sniff(b"a;b;c\n", Some(b',')).unwrap(),
            Sniffed {
                bom_len: 0,
                delimiter: b','
            }
        );
    }

    #[test]
    fn not_text_is_refused_by_the_header_line_only() {
        assert!(sniff(b"", None).unwrap_err().contains("empty"));
        assert!(
            sniff(b"\xEF\xBB\xBF \r\n", None)
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            sniff(b"\xFF\xFEd\0e\0", None)
                .unwrap_err()
                .contains("UTF-16")
        );
        assert!(sniff(b"d\0e\0v\0", None).unwrap_err().contains("NUL"));
        assert!(
            sniff(b"\x01\x02\x03\x04ab", None)
                .unwrap_err()
                .contains("control characters")
        );
        // A binary data row does not cost the file.
        assert!(sniff(b"device_id\n\0\0\0\x01\x02", None).is_ok());
    }

    #[test]
    fn header_names_map_to_columns() {
        let h = header(&[" Autopilot Device ID", "Target-Type", "", "notes"]).unwrap();
        assert_eq!(h.columns.get(Column::DeviceId), Some(0));
        assert_eq!(h.columns.get(Column::TargetType), Some(1));
        assert_eq!(h.columns.width(), 4);
        assert_eq!(h.names, ["Autopilot Device ID", "Target-Type", "", "notes"]);
        assert_eq!(h.unknown, ["notes"]);
    }

    #[test]
    fn unknown_names_are_listed_then_counted() {
        let names: Vec<String> = (0..25).map(|i| format!("x{i}")).collect();
        let mut all: Vec<&str> = vec!["device_id"];
        all.extend(names.iter().map(String::as_str));
        let h = header(&all).unwrap();
        assert_eq!(h.unknown.len(), MAX_UNKNOWN_LISTED + 1);
        assert_eq!(h.unknown[MAX_UNKNOWN_LISTED], "… and 5 more");
        // An input column this run does not read is named even past the cap.
        let mut h = h;
        h.ignore("Group Tag".into());
        assert_eq!(h.unknown[MAX_UNKNOWN_LISTED], "Group Tag");
        assert_eq!(h.unknown.last().map(String::as_str), Some("… and 5 more"));
        let mut h = header(&["device_id", "notes"]).unwrap();
        h.ignore("tenant".into());
        assert_eq!(h.unknown, ["notes", "tenant"]);
    }

    #[test]
    fn bad_headers_say_why() {
        let e = header(&["device_id", "deviceId"]).unwrap_err();
        assert!(
            e.contains("appears twice") && e.contains("columns 1 and 2"),
            "{e}"
        );
        let e = header(&["model", "make"]).unwrap_err();
        assert!(e.contains("no device_id or serial_number column"), "{e}");
        let e = header(&["x", "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"]).unwrap_err();
        assert!(
            e.contains("header row is missing") && e.contains("column 2"),
            "{e}"
        );
    }
}
