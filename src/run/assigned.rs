//! Before an assign run's first POST: which devices certainly hold no profile assignment.
//!
//! A nightly run over the same export, a little changed, must not assign every device again.
//! So every assign row looks before it writes: the row starts in its state machine's reconcile
//! path (GET the device's assignments; an identical one is `existing`, no POST). Cheap first:
//! the identity listing says `deploymentProfileAssignmentStatus`, and a device `notAssigned`
//! there needs no per-device read. The listing costs ⌈identities ÷ 100⌉ requests, so it is read
//! only for more than [`LOOKUP_MAX`] devices; fewer are read one by one. A failed listing only
//! costs the shortcut: every row then reads its device first, which is never wrong.

use std::collections::HashSet;

use uuid::Uuid;

use crate::budget::Budget;
use crate::graph::client::GraphClient;
use crate::graph::model::Identity;
use crate::listing;

use super::resolve::{LOOKUP_MAX, Resolved};

/// Whether a row's device must be read before its POST.
#[derive(Debug, Default)]
pub struct Assigned {
    /// Devices the listing showed `notAssigned`: POSTed at once.
    unassigned: HashSet<Uuid>,
    /// `--no-read-before-write`: nothing is read, every row is POSTed at once.
    blind: bool,
}

impl Assigned {
    /// No reads: every row writes at once (a first migration into an empty tenant).
    pub fn blind() -> Self {
        Self {
            blind: true,
            ..Self::default()
        }
    }

    /// Add the `notAssigned` devices among `identities` (from another read of the listing).
    pub fn add(&mut self, identities: impl IntoIterator<Item = Identity>) {
        let unassigned = identities
            .into_iter()
            .filter(Identity::not_assigned)
            .filter_map(|i| Uuid::parse_str(&i.id).ok());
        self.unassigned.extend(unassigned);
    }

    /// Add devices already known `notAssigned` (those serial resolution listed).
    pub fn extend(&mut self, unassigned: impl IntoIterator<Item = Uuid>) {
        self.unassigned.extend(unassigned);
    }

    /// Whether `device`'s assignments are read (GET) before the POST: unless the listing showed
    /// it holds none, it may hold an identical one already.
    pub fn must_look(&self, device: Uuid) -> bool {
        !self.blind && !self.unassigned.contains(&device)
    }
}

/// The `notAssigned` devices among `ids`, from one paged listing when they are more than
/// [`LOOKUP_MAX`] (else none: each row reads its own device, which costs fewer requests), and
/// those serial resolution already listed.
pub async fn read(
    ids: &HashSet<Uuid>,
    resolved: &Resolved,
    graph: &GraphClient,
    budget: &Budget,
) -> Assigned {
    let mut assigned = Assigned::default();
    assigned.extend(resolved.unassigned());
    if ids.len() <= LOOKUP_MAX {
        return assigned;
    }
    let mut kept = Vec::new();
    let keep = |identity: Identity| {
        if Uuid::parse_str(&identity.id).is_ok_and(|id| ids.contains(&id)) {
            kept.push(identity);
        }
    };
    match listing::each_identity(graph, budget, keep, |_| {}).await {
        Ok(listed) => {
            assigned.add(kept);
            tracing::info!(
                pages = listed.pages,
                unassigned = assigned.unassigned.len(),
                "read the devices' assignment status"
            );
            assigned
        }
        Err(e) => {
            tracing::warn!(
                "cannot read the devices' assignment status ({e}); every row reads its device \
                 before writing"
            );
            assigned
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(id: Uuid, status: Option<&str>) -> Identity {
        Identity {
            id: id.to_string(),
            assignment_status: status.map(str::to_string),
            ..Identity::default()
        }
    }

    #[test]
    fn only_devices_listed_not_assigned_skip_the_read() {
        let [a, b, c, d] = [1, 2, 3, 4].map(|n| Uuid::from_u64_pair(n, n));
        let mut assigned = Assigned::default();
        assigned.add([
            identity(a, Some("notAssigned")),
            identity(b, Some("assignedInSync")),
            identity(c, Some("pending")),
            identity(d, None),
        ]);
        assert!(!assigned.must_look(a));
        assert!(assigned.must_look(b));
        assert!(assigned.must_look(c));
        assert!(assigned.must_look(d));
        // Absent from the listing: unknown, so read.
        assert!(assigned.must_look(Uuid::from_u64_pair(9, 9)));
        assert!(!Assigned::blind().must_look(b));
    }
}
