//! Serial numbers to identity ids, before the first assignment.
//!
//! Admins hold serial numbers (hardware-hash exports, OEM lists), Graph wants identity ids.
//! The wanted serials (collected while planning, only for rows still to do) are found either
//! by one paged listing of the tenant's identities, or by one `contains(serialNumber,…)` lookup
//! per serial when there are few of them: a listing costs ⌈identities ÷ 100⌉ requests, lookups
//! one each. Serials with a hyphen always go through the listing (the filter has been reported
//! to refuse them). Every request goes through the tenant's budget like an assignment.
//! Matching ignores case and surrounding spaces and never guesses: a serial no identity holds,
//! or one two identities hold, fails its rows with the reason.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use crate::budget::Budget;
use crate::codes;
use crate::graph::answer::ErrorInfo;
use crate::graph::client::GraphClient;
use crate::graph::model::Identity;
use crate::input::{Device, Job};
use crate::listing::{self, Listed, ReadError};
use crate::progress::Progress;

/// At most this many serials are looked up one by one: a listing of a tenant of more than
/// `LOOKUP_MAX × 100` identities would cost more requests than the lookups.
pub const LOOKUP_MAX: usize = 25;

/// The key a serial number is matched by.
pub fn normalize(serial: &str) -> String {
    serial.trim().to_lowercase()
}

/// The identities holding each wanted serial, or why they could not be read.
#[derive(Debug, Default)]
pub struct Resolved {
    holders: HashMap<String, Vec<String>>,
    /// The `azureAdDeviceId` of each identity found (`None`: it has none), so that a group
    /// run need not read the listing again.
    azure: HashMap<Uuid, Option<Uuid>>,
    /// Listing pages or lookups it took.
    pub requests: u64,
    /// The listing or a lookup failed: every serial row fails with this.
    failure: Option<ErrorInfo>,
    /// Holders the read showed holding no profile assignment (`notAssigned`).
    unassigned: HashSet<Uuid>,
    /// Each holder's group tag as the read showed it (empty: none).
    tags: HashMap<Uuid, String>,
    /// It read the whole listing (not lookups): what it did not show, the tenant lacks.
    pub whole_listing: bool,
}

/// What a row's device resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Device(Uuid),
    /// The row cannot go: failed (`SerialNotFound`, `AmbiguousSerial`, a read failure).
    Failed(ErrorInfo),
    /// The row's device id and serial number name different devices.
    Invalid(String),
}

impl Resolved {
    /// Index the identities that hold a wanted serial (exact match, case and spaces ignored).
    pub fn new(wanted: &HashSet<String>, identities: impl IntoIterator<Item = Identity>) -> Self {
        let mut holders: HashMap<String, Vec<String>> = HashMap::new();
        let mut azure = HashMap::new();
        let mut unassigned = HashSet::new();
        let mut tags = HashMap::new();
        for identity in identities {
            let Some(serial) = identity.serial_number.as_deref().map(normalize) else {
                continue;
            };
            if wanted.contains(&serial) {
                if let Ok(id) = Uuid::parse_str(&identity.id) {
                    azure.insert(id, identity.azure_device_id());
                    if identity.not_assigned() {
                        unassigned.insert(id);
                    }
                    tags.insert(id, identity.group_tag.clone().unwrap_or_default());
                }
                let ids = holders.entry(serial).or_default();
                if !ids.iter().any(|id| id.eq_ignore_ascii_case(&identity.id)) {
                    ids.push(identity.id);
                }
            }
        }
        Self {
            holders,
            azure,
            requests: 0,
            failure: None,
            unassigned,
            tags,
            whole_listing: false,
        }
    }

    /// The group tag of every device holding a wanted serial, as the read showed it.
    pub fn tags(&self) -> &HashMap<Uuid, String> {
        &self.tags
    }

    /// Devices holding a wanted serial that the read showed `notAssigned`.
    pub fn unassigned(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.unassigned.iter().copied()
    }

    fn failed(error: ErrorInfo) -> Self {
        Self {
            failure: Some(error),
            ..Self::default()
        }
    }

    /// The `azureAdDeviceId` of each identity the resolution found.
    pub fn azure_ids(&self) -> &HashMap<Uuid, Option<Uuid>> {
        &self.azure
    }

    /// Serials found (held by at least one identity).
    pub fn found(&self) -> usize {
        self.holders.len()
    }

    /// The device `job` names.
    pub fn device(&self, job: &Job) -> Resolution {
        let serial = match &job.device {
            Device::Id(id) => return Resolution::Device(*id),
            Device::Serial(s) | Device::Both(_, s) => s,
        };
        if let Some(e) = &self.failure {
            return Resolution::Failed(e.clone());
        }
        let holders = self
            .holders
            .get(&normalize(serial))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let ids: Vec<Uuid> = holders
            .iter()
            .filter_map(|h| Uuid::parse_str(h).ok())
            .collect();
        match (&job.device, ids.as_slice()) {
            (Device::Both(id, _), held) if held.contains(id) => Resolution::Device(*id),
            (Device::Both(id, _), _) => Resolution::Invalid(format!(
                "device_id {id} and serial_number {serial:?} name different devices (the \
                 serial is held by {})",
                if holders.is_empty() {
                    "no identity".to_string()
                } else {
                    holders.join(", ")
                }
            )),
            (_, [one]) => Resolution::Device(*one),
            (_, []) => Resolution::Failed(ErrorInfo {
                code: codes::SERIAL_NOT_FOUND.into(),
                message: format!("no Autopilot identity of the tenant holds serial {serial:?}"),
            }),
            (_, _) => Resolution::Failed(ErrorInfo {
                code: codes::AMBIGUOUS_SERIAL.into(),
                message: format!(
                    "serial {serial:?} is held by {} identities ({}): add a device_id column to \
                     say which",
                    holders.len(),
                    holders.join(", ")
                ),
            }),
        }
    }
}

/// Find every wanted serial's identities, through `budget`. `wanted` is normalised; a lookup
/// sends the serial as `spelled` holds it (as the row wrote it).
pub async fn resolve(
    wanted: &HashSet<String>,
    spelled: &HashMap<String, String>,
    graph: &GraphClient,
    budget: &Budget,
    progress: &Progress,
) -> Resolved {
    if wanted.is_empty() {
        return Resolved::default();
    }
    let by_lookup = wanted.len() <= LOOKUP_MAX && !wanted.iter().any(|s| s.contains('-'));
    tracing::info!(
        serials = wanted.len(),
        strategy = if by_lookup { "lookups" } else { "listing" },
        "resolving serial numbers"
    );
    let read = if by_lookup {
        lookups(wanted, spelled, graph, budget, progress).await
    } else {
        listing(wanted, graph, budget, progress).await
    };
    match read {
        Ok(resolved) => resolved,
        Err(e) => Resolved::failed(read_failed(&e, budget.halt())),
    }
}

/// Why the serials stayed unresolved, for every row that names one. A stop names its cause
/// (the token's refusal, a tripped breaker): "stopped" alone tells an admin nothing.
fn read_failed(e: &ReadError, halt: &crate::halt::Halt) -> ErrorInfo {
    let (code, why) = match e {
        ReadError::PagingLoop(_) => (codes::PAGING_LOOP.into(), e.to_string()),
        ReadError::Failed { code, .. } => (code.clone(), e.to_string()),
        ReadError::Stopped => (
            halt.code().unwrap_or("Stopped").into(),
            halt.reason().unwrap_or_else(|| e.to_string()),
        ),
    };
    ErrorInfo {
        code,
        message: format!("resolving serial numbers failed: {why}"),
    }
}

async fn listing(
    wanted: &HashSet<String>,
    graph: &GraphClient,
    budget: &Budget,
    progress: &Progress,
) -> Result<Resolved, ReadError> {
    let mut holding = Vec::new();
    let mut found = HashSet::new();
    let keep = |identity: Identity| {
        if let Some(serial) = identity.serial_number.as_deref().map(normalize)
            && wanted.contains(&serial)
        {
            found.insert(serial);
            holding.push(identity);
        }
    };
    let mut each = keep;
    let on_page = |listed: Listed| {
        progress.resolving(listed.pages, listed.identities, None, wanted.len());
    };
    let listed = listing::each_identity(graph, budget, &mut each, on_page).await?;
    let resolved = Resolved {
        requests: listed.pages,
        whole_listing: true,
        ..Resolved::new(wanted, holding)
    };
    progress.resolving(
        listed.pages,
        listed.identities,
        Some(resolved.found()),
        wanted.len(),
    );
    Ok(resolved)
}

async fn lookups(
    wanted: &HashSet<String>,
    spelled: &HashMap<String, String>,
    graph: &GraphClient,
    budget: &Budget,
    progress: &Progress,
) -> Result<Resolved, ReadError> {
    let mut holding = Vec::new();
    for (i, serial) in wanted.iter().enumerate() {
        let sent = spelled.get(serial).unwrap_or(serial);
        let page = listing::read_of(budget, "a serial number lookup", |token| async move {
            graph.identities_with_serial(&token, sent).await
        })
        .await?;
        // `contains` is a substring match: Resolved keeps the exact ones.
        holding.extend(page.value);
        progress.resolving(i as u64 + 1, holding.len() as u64, None, wanted.len());
    }
    Ok(Resolved {
        requests: wanted.len() as u64,
        ..Resolved::new(wanted, holding)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Work;
    use crate::graph::model::{Assignment, Source, Target, TargetKind};

    fn identity(id: &str, serial: &str) -> Identity {
        Identity {
            id: id.into(),
            serial_number: Some(serial.into()),
            ..Identity::default()
        }
    }

    fn job(device: Device) -> Job {
        let target = Target {
            kind: TargetKind::AllDevices,
            group_id: None,
            collection_id: None,
            filter_id: None,
            filter_type: None,
        };
        Job {
            row: 1,
            device,
            work: Work::Assign(Assignment::new(target, Source::Direct, None, None)),
            tenant: None,
        }
    }

    const A: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
    const B: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

    #[test]
    fn exact_matches_only_ignoring_case_and_spaces() {
        let wanted: HashSet<String> = ["pf1abc", "dup", "gone"].map(String::from).into();
        let resolved = Resolved::new(
            &wanted,
            [
                identity(A, " PF1ABC "),
                identity(B, "PF1ABCD"), // a substring match of `contains`, not this serial
                identity(A, "dup"),
                identity(B, "DUP"),
            ],
        );
        let a: Uuid = A.parse().unwrap();
        assert_eq!(
            resolved.device(&job(Device::Serial("pf1AbC".into()))),
            Resolution::Device(a)
        );
        let Resolution::Failed(e) = resolved.device(&job(Device::Serial("gone".into()))) else {
            panic!("not found must fail")
        };
        assert_eq!(e.code, "SerialNotFound");
        assert!(e.message.contains("\"gone\""), "{}", e.message);
        let Resolution::Failed(e) = resolved.device(&job(Device::Serial("Dup".into()))) else {
            panic!("ambiguous must fail")
        };
        assert_eq!(e.code, "AmbiguousSerial");
        assert!(
            e.message.contains(A) && e.message.contains(B),
            "{}",
            e.message
        );
    }

    #[test]
    fn an_id_beside_a_serial_must_agree_and_may_disambiguate() {
        let wanted: HashSet<String> = ["s1", "dup"].map(String::from).into();
        let resolved = Resolved::new(
            &wanted,
            [identity(A, "s1"), identity(A, "dup"), identity(B, "dup")],
        );
        let (a, b): (Uuid, Uuid) = (A.parse().unwrap(), B.parse().unwrap());
        assert_eq!(
            resolved.device(&job(Device::Both(a, "S1".into()))),
            Resolution::Device(a)
        );
        assert!(matches!(
            resolved.device(&job(Device::Both(b, "s1".into()))),
            Resolution::Invalid(m) if m.contains("name different devices")
        ));
        assert_eq!(
            resolved.device(&job(Device::Both(b, "dup".into()))),
            Resolution::Device(b)
        );
        assert_eq!(resolved.device(&job(Device::Id(b))), Resolution::Device(b));
    }

    #[test]
    fn a_failed_read_fails_every_serial_row_but_not_id_rows() {
        let resolved = Resolved::failed(ErrorInfo {
            code: "PagingLoop".into(),
            message: "loop".into(),
        });
        assert!(matches!(
            resolved.device(&job(Device::Serial("x".into()))),
            Resolution::Failed(e) if e.code == "PagingLoop"
        ));
        let a: Uuid = A.parse().unwrap();
        assert_eq!(resolved.device(&job(Device::Id(a))), Resolution::Device(a));
    }
}
