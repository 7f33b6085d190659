//! One reading: a single pass over the tenant's identity listing, matched to the landed rows.
//!
//! The listing, not the single-device GET: the GET has been seen to answer `unknown` for a
//! device the listing shows assigned, and one pass costs ⌈identities ÷ page⌉ requests however
//! many rows there are.

use std::collections::{BTreeMap, HashMap, HashSet};

use uuid::Uuid;

use super::results::Landed;
use crate::budget::Budget;
use crate::graph::client::GraphClient;
use crate::graph::model::Identity;
use crate::listing::{Listed, ReadError, each_identity};

/// The status of a device the listing does not hold (deleted, or another tenant's).
pub const NOT_FOUND: &str = "notFound";

/// The status of a row whose tenant could not be read (its token was refused, its listing
/// failed): the reason is in the line's `detailed_status`. Ours, not Graph's.
pub const NOT_READ: &str = "notRead";

/// The status of a listed identity that states none: Graph's own word for it.
const UNSTATED: &str = "unknown";

/// Statuses that mean the profile is assigned, in Graph's spelling (`Unkown` is Graph's). The
/// corrected spelling is accepted too, should Graph ever fix it.
pub const ASSIGNED: [&str; 4] = [
    "assignedInSync",
    "assignedOutOfSync",
    "assignedUnkownSyncState",
    "assignedUnknownSyncState",
];

pub fn is_assigned(status: &str) -> bool {
    ASSIGNED.contains(&status)
}

/// One line of the status file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub row: u64,
    pub device_id: String,
    pub serial_number: String,
    /// Graph's value verbatim, or [`NOT_FOUND`].
    pub assignment_status: String,
    pub assigned_at: String,
    pub detailed_status: String,
    /// The results file's tenant of the row; empty in single-tenant use.
    pub tenant: String,
}

/// What one reading found.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    pub lines: Vec<Line>,
    /// Rows per assignment status.
    pub counts: BTreeMap<String, u64>,
    /// Rows whose status is one of [`ASSIGNED`].
    pub assigned: u64,
    pub listed: Listed,
}

/// Read the listing once and match it to `landed`. Only the identities asked for are kept, so
/// a tenant of any size costs memory in proportion to the rows.
pub async fn read(
    graph: &GraphClient,
    budget: &Budget,
    landed: &[Landed],
    on_page: impl FnMut(Listed),
) -> Result<Reading, ReadError> {
    let wanted: HashSet<Uuid> = landed.iter().map(|l| l.device).collect();
    let mut found: HashMap<Uuid, Identity> = HashMap::new();
    let keep = |identity: Identity| {
        if let Ok(id) = Uuid::try_parse(identity.id.trim())
            && wanted.contains(&id)
        {
            found.insert(id, identity);
        }
    };
    let listed = each_identity(graph, budget, keep, on_page).await?;
    Ok(Reading::of(landed, &found, listed))
}

impl Reading {
    /// Match `landed` to the identities `found`, in row order.
    pub fn of(landed: &[Landed], found: &HashMap<Uuid, Identity>, listed: Listed) -> Reading {
        let lines = landed.iter().map(|l| line(l, found.get(&l.device)));
        Reading::from_lines(lines.collect(), listed)
    }

    /// The lines of rows whose tenant could not be read: [`NOT_READ`], with `reason`.
    pub fn not_read(landed: &[Landed], reason: &str) -> Reading {
        let lines = landed.iter().map(|l| Line {
            assignment_status: NOT_READ.to_string(),
            detailed_status: reason.to_string(),
            ..line(l, None)
        });
        Reading::from_lines(lines.collect(), Listed::default())
    }

    /// One reading of several tenants' parts, its lines back in row order.
    pub fn merge(parts: impl IntoIterator<Item = Reading>) -> Reading {
        let mut lines = Vec::new();
        let mut listed = Listed::default();
        for part in parts {
            lines.extend(part.lines);
            listed.pages += part.listed.pages;
            listed.identities += part.listed.identities;
        }
        lines.sort_by_key(|l| l.row);
        Reading::from_lines(lines, listed)
    }

    fn from_lines(lines: Vec<Line>, listed: Listed) -> Reading {
        let mut counts = BTreeMap::new();
        let mut assigned = 0;
        for line in &lines {
            *counts.entry(line.assignment_status.clone()).or_default() += 1;
            if is_assigned(&line.assignment_status) {
                assigned += 1;
            }
        }
        Reading {
            lines,
            counts,
            assigned,
            listed,
        }
    }
}

/// The line of one landed row. The serial number is the tenant's when the listing gives one,
/// else the results file's.
fn line(landed: &Landed, identity: Option<&Identity>) -> Line {
    let text = |v: Option<&String>| v.map(|s| s.trim().to_string()).unwrap_or_default();
    let serial_number = identity
        .and_then(|i| i.serial_number.as_ref())
        .filter(|s| !s.trim().is_empty())
        .or(landed.serial_number.as_ref());
    Line {
        row: landed.row,
        device_id: landed.device_id.clone(),
        serial_number: text(serial_number),
        assignment_status: match identity {
            None => NOT_FOUND.to_string(),
            Some(i) => i
                .assignment_status
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| UNSTATED.to_string()),
        },
        assigned_at: text(identity.and_then(|i| i.assigned_at.as_ref())),
        detailed_status: text(identity.and_then(|i| i.detailed_status.as_ref())),
        tenant: landed.tenant.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn landed(row: u64, id: &str, serial: Option<&str>) -> Landed {
        Landed {
            row,
            device_id: id.to_string(),
            device: Uuid::try_parse(id).unwrap(),
            serial_number: serial.map(str::to_string),
            tenant: None,
        }
    }

    #[test]
    fn lines_carry_graphs_values_verbatim_and_not_found_for_the_rest() {
        let a = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
        let b = "1b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
        let c = "2b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
        let identity = |status: &str| Identity {
            id: a.to_string(),
            serial_number: Some("SN-A".into()),
            assignment_status: Some(status.into()),
            detailed_status: Some("none".into()),
            assigned_at: Some("2026-01-02T03:04:05Z".into()),
            ..Identity::default()
        };
        let mut found = HashMap::new();
        found.insert(
            Uuid::try_parse(a).unwrap(),
            identity("assignedUnkownSyncState"),
        );
        found.insert(
            Uuid::try_parse(b).unwrap(),
            Identity {
                serial_number: None,
                ..identity("pending")
            },
        );
        let rows = [
            landed(1, &a.to_uppercase(), Some("ours")),
            landed(2, b, Some("SN-B")),
            landed(3, c, Some("SN-C")),
        ];
        let reading = Reading::of(&rows, &found, Listed::default());
        let statuses: Vec<&str> = reading
            .lines
            .iter()
            .map(|l| l.assignment_status.as_str())
            .collect();
        assert_eq!(statuses, ["assignedUnkownSyncState", "pending", NOT_FOUND]);
        let serials: Vec<&str> = reading
            .lines
            .iter()
            .map(|l| l.serial_number.as_str())
            .collect();
        assert_eq!(serials, ["SN-A", "SN-B", "SN-C"]);
        assert_eq!(reading.lines[0].device_id, a.to_uppercase());
        assert_eq!(reading.lines[2].assigned_at, "");
        assert_eq!(reading.assigned, 1);
        assert_eq!(reading.counts[NOT_FOUND], 1);
        assert_eq!(reading.counts["pending"], 1);
    }

    #[test]
    fn tenants_parts_merge_in_row_order_and_unread_rows_say_why() {
        let a = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
        let b = "1b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
        let mut found = HashMap::new();
        let assigned = Identity {
            id: a.to_string(),
            assignment_status: Some("assignedInSync".into()),
            ..Identity::default()
        };
        found.insert(Uuid::try_parse(a).unwrap(), assigned);
        let of = |row, id, tenant: &str| Landed {
            tenant: Some(tenant.to_string()),
            ..landed(row, id, None)
        };
        let listed = Listed {
            pages: 1,
            identities: 4,
        };
        let read = Reading::of(&[of(1, b, "x"), of(3, a, "x")], &found, listed);
        let unread = Reading::not_read(&[of(2, b, "y")], "authentication failed: nope");
        let merged = Reading::merge([read, unread]);
        let rows: Vec<(u64, &str, &str)> = merged
            .lines
            .iter()
            .map(|l| (l.row, l.assignment_status.as_str(), l.tenant.as_str()))
            .collect();
        assert_eq!(
            rows,
            [
                (1, NOT_FOUND, "x"),
                (2, NOT_READ, "y"),
                (3, "assignedInSync", "x")
            ]
        );
        assert_eq!(
            merged.lines[1].detailed_status,
            "authentication failed: nope"
        );
        assert_eq!((merged.assigned, merged.counts[NOT_READ]), (1, 1));
        assert_eq!(merged.listed, listed);
        assert!(!is_assigned(NOT_READ));
    }

    #[test]
    fn only_assigned_values_count_as_assigned() {
        for s in [
            "assignedInSync",
            "assignedOutOfSync",
            "assignedUnkownSyncState",
        ] {
            assert!(is_assigned(s), "{s}");
        }
        for s in [
            "notAssigned",
            "pending",
            "failed",
            "unknown",
            NOT_FOUND,
            "AssignedInSync",
        ] {
            assert!(!is_assigned(s), "{s}");
        }
    }
}
