//! The rows a run reports landed (`created`/`existing`), read from its results file by column
//! name: columns may be added at the end (`serial_number` and `tenant` are, and optional), so
//! positions are never assumed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::output::Status;

/// A row whose assignment the run reports made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landed {
    pub row: u64,
    /// The device id as the results file writes it.
    pub device_id: String,
    /// The same id, parsed: identities are matched on it, whatever its case.
    pub device: Uuid,
    /// The results file's `serial_number`, when it has the column and a value.
    pub serial_number: Option<String>,
    /// The results file's `tenant` (the tenants file's key of a `--tenants` run), when it has
    /// the column and a value: the tenant whose listing holds the device.
    pub tenant: Option<String>,
}

/// The results file cannot be read as one.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("cannot read results file {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("results file {} line {line}: {reason}", path.display())]
    Malformed {
        path: PathBuf,
        line: u64,
        reason: String,
    },
}

/// Columns every results file has; `serial_number` and `tenant` may follow.
const REQUIRED: [&str; 3] = ["row", "device_id", "status"];

/// The landed rows of the results file at `path`, in row order. A resumed run appends, so
/// the last line of a row wins: a row that failed and was then created counts, one created
/// and then reported otherwise does not. A short last line without its newline is what a run
/// still writing (or one that crashed mid-line) leaves: it is skipped, not an error.
pub fn read_landed(path: &Path) -> Result<Vec<Landed>, ResultsError> {
    let bytes = std::fs::read(path).map_err(|source| ResultsError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let malformed = |line: u64, reason: String| ResultsError::Malformed {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut rdr = csv::Reader::from_reader(bytes.as_slice());
    let columns = Columns::find(&mut rdr).map_err(|reason| malformed(1, reason))?;
    let mut last: BTreeMap<u64, Option<Landed>> = BTreeMap::new();
    let mut record = csv::StringRecord::new();
    loop {
        let read = rdr.read_record(&mut record);
        let torn = !bytes.ends_with(b"\n") && rdr.position().byte() as usize >= bytes.len();
        let (line, parsed) = match read {
            Ok(false) => break,
            Ok(true) => (line_of(record.position()), columns.parse(&record)),
            Err(e) => (line_of(e.position()), Err(describe(&e))),
        };
        match parsed {
            Ok((row, landed)) => {
                last.insert(row, landed);
            }
            Err(reason) if torn => {
                tracing::warn!(
                    "{} line {line} is cut short ({reason}); a run may still be writing it: \
                     skipped",
                    path.display()
                );
                break;
            }
            Err(reason) => return Err(malformed(line, reason)),
        }
    }
    Ok(last.into_values().flatten().collect())
}

/// A CSV error without the reader's own position (the line is named beside it).
fn describe(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields where the header has {expected_len}"),
        csv::ErrorKind::Utf8 { .. } => "not UTF-8 text".to_string(),
        _ => e.to_string(),
    }
}

fn line_of(position: Option<&csv::Position>) -> u64 {
    position.map_or(0, csv::Position::line)
}

/// Where the columns are.
struct Columns {
    row: usize,
    device_id: usize,
    status: usize,
    serial_number: Option<usize>,
    tenant: Option<usize>,
}

impl Columns {
    fn find(rdr: &mut csv::Reader<&[u8]>) -> Result<Columns, String> {
        let headers = rdr.headers().map_err(|e| e.to_string())?;
        let at = |name: &str| headers.iter().position(|h| h.trim() == name);
        let (Some(row), Some(device_id), Some(status)) = (at("row"), at("device_id"), at("status"))
        else {
            let missing: Vec<&str> = REQUIRED.into_iter().filter(|c| at(c).is_none()).collect();
            return Err(format!(
                "not an autopilot-bulk results file: no {} column",
                missing.join(", ")
            ));
        };
        Ok(Columns {
            row,
            device_id,
            status,
            serial_number: at("serial_number"),
            tenant: at("tenant"),
        })
    }

    /// One line: its row, and the row's device when the line reports it landed.
    fn parse(&self, record: &csv::StringRecord) -> Result<(u64, Option<Landed>), String> {
        let cell = |i: usize| record.get(i).unwrap_or("").trim();
        let row = cell(self.row)
            .parse::<u64>()
            .map_err(|_| format!("row {:?} is not a row number", cell(self.row)))?;
        let status = Status::parse(cell(self.status)).ok_or_else(|| {
            format!(
                "status {:?} is not created, existing, failed or invalid",
                cell(self.status)
            )
        })?;
        if !status.is_success() {
            return Ok((row, None));
        }
        let device_id = cell(self.device_id);
        let device = Uuid::try_parse(device_id).map_err(|_| {
            format!(
                "device_id {device_id:?} of a {} row is not a GUID",
                status.as_str()
            )
        })?;
        let optional = |column: Option<usize>| {
            column
                .map(cell)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Ok((
            row,
            Some(Landed {
                row,
                device_id: device_id.to_string(),
                device,
                serial_number: optional(self.serial_number),
                tenant: optional(self.tenant),
            }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "row,device_id,status,http_status,assignment_id,attempts,error_code,\
                          error_message,request_id,client_request_id,duration_ms,finished_at";
    const A: &str = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
    const B: &str = "1b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";

    fn line(row: u64, device: &str, status: &str) -> String {
        format!("{row},{device},{status},201,id,1,,,,,5,2026-01-01T00:00:00Z\n")
    }

    fn read(text: impl AsRef<[u8]>) -> Result<Vec<Landed>, ResultsError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        std::fs::write(&path, text).unwrap();
        read_landed(&path)
    }

    fn rows(landed: &[Landed]) -> Vec<u64> {
        landed.iter().map(|l| l.row).collect()
    }

    #[test]
    fn only_landed_rows_and_the_last_line_of_a_row_wins() {
        let text = format!(
            "{HEADER}\n{}{}{}{}{}{}",
            line(1, A, "created"),
            line(2, B, "failed"),
            line(3, "not-a-guid", "invalid"),
            line(4, &A.to_uppercase(), "existing"),
            line(2, B, "created"),
            line(1, A, "failed"),
        );
        let landed = read(&text).unwrap();
        assert_eq!(rows(&landed), [2, 4]);
        assert_eq!(landed[1].device_id, A.to_uppercase());
        assert_eq!(landed[1].device, Uuid::try_parse(A).unwrap());
        assert_eq!(landed[0].serial_number, None);
    }

    #[test]
    fn columns_are_found_by_name_and_serial_number_is_optional() {
        let text = format!(
            "{HEADER},serial_number\n{}",
            line(7, A, "created").replace('\n', ",SN-7\n")
        );
        let landed = read(&text).unwrap();
        assert_eq!(landed[0].serial_number.as_deref(), Some("SN-7"));
        let reordered = format!("status,row,device_id\ncreated,3,{A}\n");
        assert_eq!(rows(&read(&reordered).unwrap()), [3]);
    }

    #[test]
    fn the_tenant_column_is_read_by_name_and_optional() {
        let text = format!(
            "{HEADER},serial_number,tenant\n{}{}",
            line(1, A, "created").replace('\n', ",SN-1, Contoso \n"),
            line(2, B, "existing").replace('\n', ",,\n"),
        );
        let landed = read(&text).unwrap();
        assert_eq!(landed[0].tenant.as_deref(), Some("Contoso"));
        assert_eq!(landed[1].tenant, None);
        let without = format!("{HEADER}\n{}", line(1, A, "created"));
        assert_eq!(read(&without).unwrap()[0].tenant, None);
    }

    #[test]
    fn a_short_last_line_without_its_newline_is_skipped() {
        let text = format!("{HEADER}\n{}3,{B},crea", line(1, A, "created"));
        assert_eq!(rows(&read(&text).unwrap()), [1]);
        // Complete but without the final newline: kept.
        let text = format!("{HEADER}\n{}", line(1, A, "created").trim_end());
        assert_eq!(rows(&read(&text).unwrap()), [1]);
    }

    #[test]
    fn malformed_files_name_the_line() {
        let cases = [
            (String::new(), 1, "no row, device_id, status column"),
            ("device_id,group_id\nx,y\n".to_string(), 1, "no row, status"),
            (
                format!(
                    "{HEADER}\n{}{}",
                    line(1, A, "created"),
                    line(1, A, "created").replacen('1', "x", 1)
                ),
                3,
                "row \"x\"",
            ),
            (
                format!("{HEADER}\n{}", line(1, A, "done")),
                2,
                "status \"done\"",
            ),
            (
                format!("{HEADER}\n{}", line(1, "nope", "created")),
                2,
                "not a GUID",
            ),
            (
                format!("{HEADER}\n1,{A},created\n{}", line(2, A, "created")),
                2,
                "3 fields where the header has 12",
            ),
        ];
        for (text, want_line, want) in cases {
            match read(&text) {
                Err(ResultsError::Malformed { line, reason, .. }) => {
                    assert_eq!(line, want_line, "{reason}");
                    assert!(reason.contains(want), "{reason} lacks {want}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn bytes_that_are_not_text_name_their_line() {
        let mut bytes = format!("{HEADER}\n{}", line(1, A, "created")).into_bytes();
        bytes.extend_from_slice(b"2,\xff\xfe,created,,,1,,,,,5,x\n");
        let err = read(bytes).unwrap_err().to_string();
        assert!(err.contains("line 3: not UTF-8 text"), "{err}");
    }

    #[test]
    fn a_missing_file_is_unreadable_naming_it() {
        let err = read_landed(Path::new("/no/such/r.csv")).unwrap_err();
        assert!(matches!(err, ResultsError::Unreadable { .. }));
        assert!(err.to_string().contains("/no/such/r.csv"));
    }
}
