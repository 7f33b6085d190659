//! The tenant's Autopilot identities as the emulator holds them: which devices exist, their
//! serial numbers, the order the listing gives them in, and how one renders as Graph's
//! `windowsAutopilotDeviceIdentity` with its profile assignment status.
//!
//! Pure data: the status is computed from the first assignment's time and "now", both passed
//! in, so the rules are testable without a clock.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use serde_json::{Map, Value, json};

/// Graph's type name, in `@odata.type` and in error messages about properties.
pub(crate) const IDENTITY_TYPE: &str = "microsoft.graph.windowsAutopilotDeviceIdentity";

/// What Graph shows for a date it has not set (`deploymentProfileAssignedDateTime` before the
/// profile is assigned, `lastContactedDateTime` of a device never seen).
pub(crate) const NO_DATE: &str = "0001-01-01T00:00:00Z";

/// One identity: a lowercase device id and its serial number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub id: String,
    pub serial: String,
}

/// The identities in listing order, with an index by id.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
}

impl Directory {
    /// `identities` first, in their order (a repeated id keeps its first serial), then the
    /// `devices` ids they do not name, sorted (a set has no order of its own) and with an
    /// invented serial. Two ids may share a serial: tenants do hold such duplicates.
    pub(crate) fn new(identities: &[(String, String)], devices: Option<&HashSet<String>>) -> Self {
        let mut directory = Self::default();
        for (id, serial) in identities {
            directory.push(id.to_ascii_lowercase(), serial.clone());
        }
        if let Some(devices) = devices {
            let mut rest: Vec<String> = devices.iter().map(|d| d.to_ascii_lowercase()).collect();
            rest.sort();
            for id in rest {
                let serial = invented_serial(&id);
                directory.push(id, serial);
            }
        }
        directory
    }

    fn push(&mut self, id: String, serial: String) {
        if self.index.contains_key(&id) {
            return;
        }
        self.index.insert(id.clone(), self.entries.len());
        self.entries.push(Entry { id, serial });
    }

    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The identity with this (lowercase) id.
    pub(crate) fn get(&self, id: &str) -> Option<&Entry> {
        self.index.get(id).and_then(|&i| self.entries.get(i))
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The serial a bare id gets: `SN` and the id's first 8 hex digits in upper case
/// (`SN1B2C3D4E`). Deterministic, so a rehearsal can name it, and free of hyphens, so the
/// `contains` filter (which Graph refuses for hyphens) can find it.
pub(crate) fn invented_serial(id: &str) -> String {
    let head: String = id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    format!("SN{}", head.to_ascii_uppercase())
}

/// One line of a device file: `id`, `id,serial` or `id serial` (the serial is the rest of the
/// line, trimmed). Blank lines and `#` comments give `None`. A bare id (or an empty serial)
/// gets the invented serial.
pub(crate) fn parse_device_line(line: &str) -> Option<(String, String)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (id, serial) = match line.find(|c: char| c == ',' || c.is_whitespace()) {
        Some(at) => (&line[..at], line[at + 1..].trim()),
        None => (line, ""),
    };
    let id = id.to_ascii_lowercase();
    let serial = if serial.is_empty() {
        invented_serial(&id)
    } else {
        serial.to_string()
    };
    Some((id, serial))
}

/// When a device's first assignment was stored: the monotonic instant (for the delay) and
/// the wall clock (for `deploymentProfileAssignedDateTime`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Assigned {
    pub at: Instant,
    pub wall: SystemTime,
}

impl Assigned {
    pub(crate) fn now() -> Self {
        Self {
            at: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// `deploymentProfileAssignmentStatus` and `deploymentProfileAssignedDateTime`: `notAssigned`
/// before any assignment, `pending` until `delay` has passed since the first, then
/// `assignedInSync`, assigned at the end of the delay. Graph takes a while to push a profile
/// to a device; clients that poll the status must see that in-between state.
pub(crate) fn assignment_status(
    first: Option<Assigned>,
    delay: Duration,
    now: Instant,
) -> (&'static str, String) {
    match first {
        None => ("notAssigned", NO_DATE.to_string()),
        Some(a) if now.saturating_duration_since(a.at) >= delay => {
            let when = a.wall.checked_add(delay).unwrap_or(a.wall);
            (
                "assignedInSync",
                humantime::format_rfc3339_seconds(when).to_string(),
            )
        }
        Some(_) => ("pending", NO_DATE.to_string()),
    }
}

/// The identity's properties in Graph's order (without `@odata.type`). `status` and
/// `assigned_at` come from [`assignment_status`]; the Entra device ids are left empty for the
/// caller to fill (they come from the directory).
pub(crate) fn properties(
    entry: &Entry,
    status: &str,
    assigned_at: &str,
) -> Vec<(&'static str, Value)> {
    vec![
        ("id", json!(entry.id)),
        ("deploymentProfileAssignmentStatus", json!(status)),
        ("deploymentProfileAssignmentDetailedStatus", json!("none")),
        ("deploymentProfileAssignedDateTime", json!(assigned_at)),
        ("groupTag", json!("")),
        ("purchaseOrderIdentifier", json!("")),
        ("serialNumber", json!(entry.serial)),
        ("productKey", json!("")),
        ("manufacturer", json!("")),
        ("model", json!("")),
        ("enrollmentState", json!("notContacted")),
        ("lastContactedDateTime", json!(NO_DATE)),
        ("addressableUserName", json!("")),
        ("userPrincipalName", json!("")),
        ("resourceName", json!("")),
        ("skuNumber", json!("")),
        ("systemFamily", json!("")),
        ("azureActiveDirectoryDeviceId", json!("")),
        ("azureAdDeviceId", json!("")),
        ("managedDeviceId", json!("")),
        ("displayName", json!("")),
    ]
}

/// Whether `name` is a property of the identity type (for `$select`).
pub(crate) fn is_property(name: &str) -> bool {
    let probe = Entry {
        id: String::new(),
        serial: String::new(),
    };
    properties(&probe, "", "").iter().any(|(p, _)| *p == name)
}

/// The identity as a JSON object: every property, or with `select` only `id` and the named
/// ones (Graph always returns the key).
pub(crate) fn render(props: Vec<(&'static str, Value)>, select: Option<&[String]>) -> Value {
    let mut out = Map::new();
    if select.is_none() {
        out.insert("@odata.type".into(), json!(format!("#{IDENTITY_TYPE}")));
    }
    for (name, value) in props {
        let wanted = select.is_none_or(|s| name == "id" || s.iter().any(|n| n == name));
        if wanted {
            out.insert(name.into(), value);
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_first_then_devices_sorted_with_invented_serials() {
        let given = vec![
            (
                "B0000000-0000-4000-8000-000000000000".to_string(),
                "S-2".to_string(),
            ),
            (
                "a0000000-0000-4000-8000-000000000000".to_string(),
                "S-2".to_string(),
            ),
            (
                "b0000000-0000-4000-8000-000000000000".to_string(),
                "other".to_string(),
            ),
        ];
        let devices: HashSet<String> = [
            "d0000000-0000-4000-8000-000000000000",
            "c1234567-0000-4000-8000-000000000000",
            "a0000000-0000-4000-8000-000000000000",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let dir = Directory::new(&given, Some(&devices));
        let got: Vec<(&str, &str)> = dir
            .entries()
            .iter()
            .map(|e| (e.id.as_str(), e.serial.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("b0000000-0000-4000-8000-000000000000", "S-2"),
                ("a0000000-0000-4000-8000-000000000000", "S-2"),
                ("c1234567-0000-4000-8000-000000000000", "SNC1234567"),
                ("d0000000-0000-4000-8000-000000000000", "SND0000000"),
            ]
        );
        assert_eq!(
            dir.get("c1234567-0000-4000-8000-000000000000")
                .map(|e| e.serial.as_str()),
            Some("SNC1234567")
        );
        assert!(dir.get("e0000000-0000-4000-8000-000000000000").is_none());
    }

    #[test]
    fn device_lines() {
        let id = "AB12CD34-0000-4000-8000-000000000000";
        let lower = id.to_ascii_lowercase();
        assert_eq!(parse_device_line(""), None);
        assert_eq!(parse_device_line("  # note"), None);
        assert_eq!(
            parse_device_line(id),
            Some((lower.clone(), "SNAB12CD34".into()))
        );
        assert_eq!(
            parse_device_line(&format!("{id},PF-3X 9")),
            Some((lower.clone(), "PF-3X 9".into()))
        );
        assert_eq!(
            parse_device_line(&format!(" {id}\t 5CD333527Z ")),
            Some((lower.clone(), "5CD333527Z".into()))
        );
        assert_eq!(
            parse_device_line(&format!("{id},")),
            Some((lower, "SNAB12CD34".into()))
        );
    }

    #[test]
    fn status_moves_from_not_assigned_through_pending() {
        let t0 = Instant::now();
        let delay = Duration::from_secs(5);
        assert_eq!(
            assignment_status(None, delay, t0),
            ("notAssigned", NO_DATE.into())
        );
        let first = Assigned {
            at: t0,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        };
        assert_eq!(
            assignment_status(Some(first), delay, t0 + Duration::from_secs(4)),
            ("pending", NO_DATE.into())
        );
        assert_eq!(
            assignment_status(Some(first), delay, t0 + delay),
            ("assignedInSync", "2023-11-14T22:13:25Z".into())
        );
    }

    #[test]
    fn select_keeps_the_id() {
        let e = Entry {
            id: "x".into(),
            serial: "S".into(),
        };
        let all = render(properties(&e, "notAssigned", NO_DATE), None);
        assert_eq!(all["@odata.type"], format!("#{IDENTITY_TYPE}"));
        assert_eq!(all["serialNumber"], "S");
        let some = render(
            properties(&e, "notAssigned", NO_DATE),
            Some(&["serialNumber".to_string()]),
        );
        assert_eq!(some, json!({"id": "x", "serialNumber": "S"}));
        assert!(is_property("groupTag"));
        assert!(!is_property("nope"));
    }
}
