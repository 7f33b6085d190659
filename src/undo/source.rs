//! What a results file says each row changed, read by column name (later versions add columns
//! at the end; a file of an earlier version lacks undo's), the last line of a row winning (a
//! resumed run appends): for each row, the one step that puts its device back, or why none.

use std::collections::BTreeMap;
use std::path::Path;

use uuid::Uuid;

use super::UndoError;
use super::sheet;
use crate::codes;
use crate::output::Status;

/// One row of the results file, as undo sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub row: u64,
    /// As the results file writes it (the formula guard taken off).
    pub device_id: String,
    pub serial_number: String,
    /// The results' `tenant` (a `--tenants` run's key), when it names one.
    pub tenant: Option<String>,
    /// `assign`, `tag` or `group`; empty when the file does not say.
    pub action: String,
    pub step: Step,
}

/// What puts a row's device back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing is sent: why, and the error code when the row should have been undone but
    /// cannot be (none for a row the run did not change).
    Skip {
        code: Option<&'static str>,
        reason: String,
    },
    /// Delete the assignment the run created.
    Delete { device: Uuid, assignment: String },
    /// Set the tag back to `previous` (empty: none), if the device still carries `set`.
    Restore {
        device: Uuid,
        set: String,
        previous: String,
    },
    /// Remove the directory object the run added to the group.
    Remove {
        device: Uuid,
        group: Uuid,
        member: Uuid,
    },
}

impl Step {
    /// The device the step writes to (what the journal names).
    pub fn device(&self) -> Option<Uuid> {
        match self {
            Step::Skip { .. } => None,
            Step::Delete { device, .. }
            | Step::Restore { device, .. }
            | Step::Remove { device, .. } => Some(*device),
        }
    }
}

/// Where the columns are; `None`: an earlier version's file has no such column.
struct Columns {
    at: BTreeMap<&'static str, usize>,
}

const NAMES: [&str; 11] = [
    "row",
    "device_id",
    "status",
    "assignment_id",
    "serial_number",
    "tenant",
    "action",
    "group_tag",
    "previous_group_tag",
    "group_id",
    "member_id",
];

impl Columns {
    fn find(headers: &csv::StringRecord) -> Result<Columns, String> {
        let names: Vec<&str> = headers.iter().map(str::trim).collect();
        if names == sheet::HEADER {
            return Err(
                "it is an undo file: undoing an undo is refused (run the action again \
                        to redo it)"
                    .into(),
            );
        }
        if names.len() < crate::output::HEADER_V1
            || names[..] != crate::output::HEADER[..names.len().min(crate::output::HEADER.len())]
        {
            return Err(
                "the first line is not the results header: not an autopilot-bulk \
                        results file"
                    .into(),
            );
        }
        let mut at = BTreeMap::new();
        for name in NAMES {
            if let Some(i) = names.iter().position(|h| *h == name) {
                at.insert(name, i);
            }
        }
        Ok(Columns { at })
    }

    /// A cell by column name, the formula guard taken off; empty when the file has no such
    /// column.
    fn cell<'r>(&self, record: &'r csv::StringRecord, name: &str) -> &'r str {
        let cell = self.at.get(name).and_then(|&i| record.get(i)).unwrap_or("");
        unguard(cell)
    }
}

/// A cell as written, without the `'` the results writer puts before a leading `=`, `+`,
/// `-`, `@`, tab or CR (so that a spreadsheet does not run it).
pub fn unguard(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@', '\t', '\r']) => rest,
        _ => cell,
    }
}

/// Every row of the results file at `path`, in row order. A torn last line (a run still
/// writing, or one that crashed mid-line) is left out; any other line that is not a results
/// line is an error, as is an undo file.
pub fn read(path: &Path) -> Result<Vec<Entry>, UndoError> {
    let bad = |reason: String| UndoError::Results {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut rdr = csv::Reader::from_reader(&bytes[..complete]);
    let headers = rdr.headers().map_err(|e| bad(e.to_string()))?.clone();
    let columns = Columns::find(&headers).map_err(bad)?;
    let mut last = BTreeMap::new();
    for record in rdr.records() {
        let record = record.map_err(|e| bad(e.to_string()))?;
        let line = record.position().map_or(0, csv::Position::line);
        let entry = entry(&columns, &record).map_err(|e| bad(format!("line {line}: {e}")))?;
        last.insert(entry.row, entry);
    }
    Ok(last.into_values().collect())
}

/// One line: its row and the step that undoes it.
fn entry(c: &Columns, record: &csv::StringRecord) -> Result<Entry, String> {
    let cell = |name| c.cell(record, name);
    let row = cell("row")
        .parse::<u64>()
        .map_err(|_| format!("row {:?} is not a row number", cell("row")))?;
    let status = Status::parse(cell("status"))
        .ok_or_else(|| format!("status {:?} is not a results status", cell("status")))?;
    let recorded = cell("action");
    let action = match recorded {
        "" if !cell("assignment_id").is_empty() => "assign",
        a => a,
    };
    let step = if status == Status::Created {
        step(c, record, action)
    } else {
        skip(
            None,
            format!("not changed by the run (it reports {})", status.as_str()),
        )
    };
    Ok(Entry {
        row,
        device_id: cell("device_id").to_string(),
        serial_number: cell("serial_number").to_string(),
        tenant: Some(cell("tenant").to_string()).filter(|t| !t.is_empty()),
        action: action.to_string(),
        step,
    })
}

fn skip(code: Option<&'static str>, reason: String) -> Step {
    Step::Skip { code, reason }
}

/// The step for a `created` row of `action`.
fn step(c: &Columns, record: &csv::StringRecord, action: &str) -> Step {
    let cell = |name| c.cell(record, name);
    let not_recorded = |what: &str| {
        skip(
            Some(codes::NOT_RECORDED),
            format!(
                "the results file does not record {what} (it was written by an earlier version, or \
         the run could not read it): left as it is"
            ),
        )
    };
    let Ok(device) = Uuid::parse_str(cell("device_id")) else {
        return skip(
            Some(codes::NOT_RECORDED),
            format!("device_id {:?} is not a GUID", cell("device_id")),
        );
    };
    match action {
        "assign" if cell("assignment_id").is_empty() => not_recorded("the assignment id"),
        "assign" => Step::Delete {
            device,
            assignment: cell("assignment_id").to_string(),
        },
        "tag" if cell("group_tag").is_empty() => {
            not_recorded("the tag the device had before the run")
        }
        "tag" => Step::Restore {
            device,
            set: cell("group_tag").to_string(),
            previous: cell("previous_group_tag").to_string(),
        },
        "group" => match (
            Uuid::parse_str(cell("group_id")),
            Uuid::parse_str(cell("member_id")),
        ) {
            (Ok(group), Ok(member)) => Step::Remove {
                device,
                group,
                member,
            },
            _ => not_recorded("the group and the directory object the run added"),
        },
        "" => not_recorded("what the run changed (a tag or group row's earlier state)"),
        other => skip(
            Some(codes::NOT_RECORDED),
            format!("unknown action {:?}", crate::output::printable(other)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";

    fn read_text(text: &str) -> Result<Vec<Entry>, UndoError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        std::fs::write(&p, text).unwrap();
        read(&p)
    }

    #[test]
    fn an_old_file_undoes_its_assignments_and_skips_what_it_does_not_record() {
        let old = crate::output::HEADER[..crate::output::HEADER_V2].join(",");
        let text = format!(
            "{old}\n1,{D},created,201,a-1,1,,,,,5,2026-01-01T00:00:00Z,,\n\
             2,{D},created,204,,1,,,,,5,2026-01-01T00:00:00Z,,\n\
             3,{D},existing,,a-3,1,,,,,5,2026-01-01T00:00:00Z,,\n4,{D},crea"
        );
        let entries = read_text(&text).unwrap();
        assert_eq!(entries.len(), 3, "the torn last line is left out");
        assert!(matches!(&entries[0].step, Step::Delete { assignment, .. } if assignment == "a-1"));
        assert!(matches!(
            entries[1].step,
            Step::Skip {
                code: Some(codes::NOT_RECORDED),
                ..
            }
        ));
        assert!(matches!(entries[2].step, Step::Skip { code: None, .. }));
    }

    #[test]
    fn the_last_line_of_a_row_wins_and_tags_lose_their_formula_guard() {
        let header = crate::output::HEADER.join(",");
        let g = "5e7e0c2a-3b1d-4c8e-9f6a-0d1c2b3a4f5e";
        let text = format!(
            "{header}\n1,{D},failed,503,,3,x,y,,,5,t,,,tag,,,,\n\
             1,{D},created,204,,1,,,,,5,t,,,tag,'=Kiosk,'-Lab,,\n\
             2,{D},created,204,,1,,,,,5,t,,,group,,,{g},{D}\n"
        );
        let entries = read_text(&text).unwrap();
        assert_eq!(
            entries[0].step,
            Step::Restore {
                device: D.parse().unwrap(),
                set: "=Kiosk".into(),
                previous: "-Lab".into()
            }
        );
        assert!(matches!(entries[1].step, Step::Remove { .. }));
    }

    #[test]
    fn an_undo_file_or_another_table_is_refused() {
        let undo = format!("{}\n", sheet::HEADER.join(","));
        let e = read_text(&undo).unwrap_err().to_string();
        assert!(e.contains("undoing an undo is refused"), "{e}");
        let e = read_text("device_id,group_id\nx,y\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an autopilot-bulk results file"), "{e}");
    }
}
