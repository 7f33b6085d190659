//! A tenant's hardware-hash import records and how each is processed: `pending` for the
//! import delay, then `complete` (with the id its identity will have), `error` (802 bad hash,
//! 806 serial already held, or a configured code) or `unknown` (808, where Intune leaves a
//! device another tenant holds).
//!
//! Pure data: time and the rules are passed in. Records are processed in the order they were
//! stored (all wait the same delay), so an earlier record of a serial is always settled before
//! a later one is judged against it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::ImportRecordState;
use super::envelope::new_guid;

pub(crate) const INVALID_HASH: u16 = 802;
pub(crate) const ALREADY_ASSIGNED: u16 = 806;
pub(crate) const OTHER_TENANT: u16 = 808;

/// A hash shorter than this cannot be a device's hardware hash.
const MIN_HASH_BYTES: usize = 8;

/// Intune's `deviceErrorName` for a code.
pub(crate) fn error_name(code: u16) -> &'static str {
    match code {
        INVALID_HASH => "InvalidZtdHardwareHash",
        ALREADY_ASSIGNED => "ZtdDeviceAlreadyAssigned",
        OTHER_TENANT => "ZtdDeviceAssignedToOtherTenant",
        _ => "UnknownError",
    }
}

/// How serials compare: trimmed, ignoring ASCII case.
pub(crate) fn serial_key(serial: &str) -> String {
    serial.trim().to_ascii_uppercase()
}

/// What a request gives a record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Fields {
    pub serial: String,
    pub product_key: String,
    pub group_tag: String,
    pub upn: String,
    pub hash: String,
}

/// `deviceImportStatus`, with what it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    Pending,
    /// With the `deviceRegistrationId`: the identity id the device will have.
    Complete(String),
    Error(u16),
    Unknown(u16),
}

impl Status {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Complete(_) => "complete",
            Status::Error(_) => "error",
            Status::Unknown(_) => "unknown",
        }
    }

    fn state(&self) -> Value {
        let (registration, code) = match self {
            Status::Pending => ("", 0),
            Status::Complete(id) => (id.as_str(), 0),
            Status::Error(code) | Status::Unknown(code) => ("", *code),
        };
        json!({
            "deviceImportStatus": self.name(),
            "deviceRegistrationId": registration,
            "deviceErrorCode": code,
            "deviceErrorName": if code == 0 { "" } else { error_name(code) },
        })
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub id: String,
    pub fields: Fields,
    pub status: Status,
    /// When processing may settle it.
    due: Instant,
    /// Left by another run (`EmulatorConfig::import_records`).
    pub foreign: bool,
    /// Deleted records stay, hidden: a completed one still registers at the next sync.
    deleted: bool,
}

impl Record {
    /// The record as Graph answers it; the hash is never echoed.
    pub(crate) fn answer(&self) -> Value {
        json!({
            "id": self.id,
            "serialNumber": self.fields.serial,
            "productKey": self.fields.product_key,
            "groupTag": self.fields.group_tag,
            "assignedUserPrincipalName": self.fields.upn,
            "hardwareIdentifier": null,
            "importId": "",
            "state": self.status.state(),
        })
    }
}

/// What processing consults beyond the store: configured error codes by serial key, and
/// whether the tenant already lists an identity with a serial key.
pub(crate) struct Rules<'a> {
    pub errors: &'a HashMap<String, u16>,
    pub listed: &'a dyn Fn(&str) -> bool,
}

#[derive(Debug, Default)]
pub(crate) struct Imports {
    records: Vec<Record>,
    by_id: HashMap<String, usize>,
    /// Every record before this one is settled (or deleted while pending).
    next_pending: usize,
    /// Serial keys of records that completed (deleted or not): a later record is 806.
    completed: HashSet<String>,
    /// Serial key → records created for it through the import routes.
    created: HashMap<String, u32>,
}

impl Imports {
    /// The store a tenant starts with: the foreign records, already settled.
    pub(crate) fn with_foreign(foreign: &[(String, ImportRecordState)], now: Instant) -> Self {
        let mut imports = Self::default();
        for (serial, state) in foreign {
            let status = match state {
                ImportRecordState::Complete => Status::Complete(new_guid()),
                ImportRecordState::Error => Status::Error(ALREADY_ASSIGNED),
            };
            if matches!(status, Status::Complete(_)) {
                imports.completed.insert(serial_key(serial));
            }
            let fields = Fields {
                serial: serial.clone(),
                hash: STANDARD.encode(serial.as_bytes()),
                ..Fields::default()
            };
            imports.push(fields, status, now, true);
        }
        imports.next_pending = imports.records.len();
        imports
    }

    fn push(&mut self, fields: Fields, status: Status, due: Instant, foreign: bool) -> &Record {
        let id = new_guid();
        let at = self.records.len();
        self.by_id.insert(id.clone(), at);
        self.records.push(Record {
            id,
            fields,
            status,
            due,
            foreign,
            deleted: false,
        });
        &self.records[at]
    }

    /// Store a record from a request, pending until `delay` has passed.
    pub(crate) fn store(&mut self, fields: Fields, now: Instant, delay: Duration) -> &Record {
        *self.created.entry(serial_key(&fields.serial)).or_default() += 1;
        let due = now.checked_add(delay).unwrap_or(now);
        self.push(fields, Status::Pending, due, false)
    }

    /// A record that is not deleted, by id (any case).
    pub(crate) fn get(&self, id: &str) -> Option<&Record> {
        let at = *self.by_id.get(&id.to_ascii_lowercase())?;
        self.records.get(at).filter(|r| !r.deleted)
    }

    /// The records not deleted, in creation order.
    pub(crate) fn live(&self) -> Vec<&Record> {
        self.records.iter().filter(|r| !r.deleted).collect()
    }

    /// Delete one: `Some(foreign)` when it was there.
    pub(crate) fn delete(&mut self, id: &str) -> Option<bool> {
        let at = *self.by_id.get(&id.to_ascii_lowercase())?;
        let record = self.records.get_mut(at).filter(|r| !r.deleted)?;
        record.deleted = true;
        Some(record.foreign)
    }

    /// Settle every pending record due by `upto`, in order.
    pub(crate) fn settle(&mut self, upto: Instant, rules: &Rules<'_>) {
        while let Some(record) = self.records.get(self.next_pending) {
            if record.due > upto {
                break;
            }
            // A record deleted before it was processed is never processed.
            if record.status == Status::Pending && !record.deleted {
                let status = self.outcome(&record.fields, rules);
                if matches!(status, Status::Complete(_)) {
                    self.completed.insert(serial_key(&record.fields.serial));
                }
                self.records[self.next_pending].status = status;
            }
            self.next_pending += 1;
        }
    }

    fn outcome(&self, fields: &Fields, rules: &Rules<'_>) -> Status {
        if !valid_hash(&fields.hash) {
            return Status::Error(INVALID_HASH);
        }
        let key = serial_key(&fields.serial);
        match rules.errors.get(&key) {
            Some(&OTHER_TENANT) => return Status::Unknown(OTHER_TENANT),
            Some(&code) => return Status::Error(code),
            None => {}
        }
        if (rules.listed)(&key) || self.completed.contains(&key) {
            return Status::Error(ALREADY_ASSIGNED);
        }
        Status::Complete(new_guid())
    }

    /// Positions of the records complete now, deleted or not: what a sync starting now
    /// registers.
    pub(crate) fn complete(&self) -> Vec<usize> {
        (0..self.records.len())
            .filter(|&at| matches!(self.records[at].status, Status::Complete(_)))
            .collect()
    }

    /// The record at a position [`Imports::complete`] gave (deleted or not).
    pub(crate) fn at(&self, at: usize) -> Option<&Record> {
        self.records.get(at)
    }

    pub(crate) fn serials_imported_twice(&self) -> u64 {
        self.created.values().filter(|&&n| n > 1).count() as u64
    }
}

/// Standard base64 (padded) of at least [`MIN_HASH_BYTES`] bytes.
fn valid_hash(hash: &str) -> bool {
    STANDARD
        .decode(hash.trim())
        .is_ok_and(|bytes| bytes.len() >= MIN_HASH_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "AAECAwQFBgcICQ==";

    fn fields(serial: &str, hash: &str) -> Fields {
        Fields {
            serial: serial.into(),
            hash: hash.into(),
            ..Fields::default()
        }
    }

    fn status(imports: &Imports, id: &str) -> Status {
        imports.get(id).map(|r| r.status.clone()).unwrap()
    }

    #[test]
    fn hashes_must_be_standard_base64_of_eight_bytes() {
        assert!(valid_hash(HASH));
        assert!(!valid_hash("AAECAw=="), "four bytes");
        assert!(!valid_hash("not base64!"));
        assert!(!valid_hash("AAECAwQFBgcICQ"), "unpadded");
        assert!(!valid_hash(""));
    }

    #[test]
    fn records_stay_pending_for_the_delay_then_settle_by_the_rules() {
        let t0 = Instant::now();
        let delay = Duration::from_secs(1);
        let errors = HashMap::from([("S-808".to_string(), 808), ("S-900".to_string(), 900)]);
        let listed = |key: &str| key == "LISTED";
        let rules = Rules {
            errors: &errors,
            listed: &listed,
        };
        let mut imports = Imports::default();
        let ids: Vec<String> = [
            ("s-ok", HASH),
            ("s-bad", "nope"),
            ("listed", HASH),
            ("s-808", HASH),
            ("s-900", HASH),
            ("S-OK ", HASH),
        ]
        .iter()
        .map(|(s, h)| imports.store(fields(s, h), t0, delay).id.clone())
        .collect();
        imports.settle(t0 + Duration::from_millis(999), &rules);
        assert!(ids.iter().all(|id| status(&imports, id) == Status::Pending));
        imports.settle(t0 + delay, &rules);
        let got: Vec<Status> = ids.iter().map(|id| status(&imports, id)).collect();
        assert!(matches!(&got[0], Status::Complete(r) if r.len() == 36));
        assert_eq!(
            got[1..],
            [
                Status::Error(802),
                Status::Error(806),
                Status::Unknown(808),
                Status::Error(900),
                Status::Error(806),
            ]
        );
        assert_eq!(imports.serials_imported_twice(), 1);
        let answer = imports.get(&ids[3]).unwrap().answer();
        assert_eq!(
            answer["state"]["deviceErrorName"],
            "ZtdDeviceAssignedToOtherTenant"
        );
        assert_eq!(answer["hardwareIdentifier"], Value::Null);
    }

    #[test]
    fn deleted_records_are_hidden_but_a_completed_one_stays_complete() {
        let t0 = Instant::now();
        let foreign = [("F-1".to_string(), ImportRecordState::Complete)];
        let mut imports = Imports::with_foreign(&foreign, t0);
        let id = imports
            .store(fields("S-1", HASH), t0, Duration::ZERO)
            .id
            .clone();
        let errors = HashMap::new();
        let rules = Rules {
            errors: &errors,
            listed: &|_| false,
        };
        imports.settle(t0, &rules);
        assert_eq!(imports.delete(&id.to_uppercase()), Some(false));
        assert_eq!(imports.delete(&id), None);
        assert!(imports.get(&id).is_none());
        assert_eq!(imports.live().len(), 1);
        assert_eq!(imports.complete(), [0, 1]);
        assert!(imports.at(0).is_some_and(|r| r.foreign));
    }
}
