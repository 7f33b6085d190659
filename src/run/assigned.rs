//! Before an assign row's first POST: whether its device certainly holds no profile assignment.
//!
//! A nightly run over the same export, a little changed, must not assign every device again.
//! So every assign row looks before it writes: the row starts in its state machine's reconcile
//! path (GET the device's assignments; an identical one is `existing`, no POST). Cheap first:
//! the identity listing says `deploymentProfileAssignmentStatus`, and a device `notAssigned`
//! there needs no per-device read. The listing costs ⌈identities ÷ 100⌉ requests, so it is read
//! only for more than [`LOOKUP_MAX`] devices; fewer are read one by one. A failed listing only
//! costs the shortcut: every row then reads its device first, which is never wrong.
//!
//! A run reads the listing beside its rows ([`follow`]), not before them: its pages come one
//! after another (each names the next), so 10,000 identities are 100 round trips, 20 s at
//! Graph's 200 ms, during which the rows' own reads and writes already go. A row whose device
//! the listing has not shown yet reads its device, as it would without the listing: never
//! wrong, and at most the rows started meanwhile. `plan` waits for the whole listing.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::budget::Budget;
use crate::graph::client::GraphClient;
use crate::graph::model::Identity;
use crate::listing;

use super::resolve::{LOOKUP_MAX, Resolved};

/// Whether a row's device must be read before its POST.
#[derive(Debug, Default)]
pub struct Assigned {
    /// Devices the listing showed `notAssigned` so far: POSTed at once.
    unassigned: Mutex<HashSet<Uuid>>,
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

    fn known(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.unassigned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the listing says of `device` (`identity`): `notAssigned` spares its read.
    fn note(&self, device: Uuid, identity: &Identity) {
        if identity.not_assigned() {
            self.known().insert(device);
        }
    }

    /// Whether `device`'s assignments are read (GET) before the POST: unless the listing showed
    /// it holds none (by now), it may hold an identical one already.
    pub fn must_look(&self, device: Uuid) -> bool {
        !self.blind && !self.known().contains(&device)
    }
}

/// The listing read beside a run's rows ([`follow`]): done with [`Listing::finish`].
#[derive(Debug)]
pub struct Listing {
    assigned: Arc<Assigned>,
    task: Option<JoinHandle<()>>,
}

impl Listing {
    /// `--no-read-before-write`, or not an assign run: nothing to read.
    pub fn blind() -> Self {
        Self {
            assigned: Arc::new(Assigned::blind()),
            task: None,
        }
    }

    /// Wait for the whole listing (`plan` decides every row from all of it).
    pub async fn complete(mut self) -> Arc<Assigned> {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.assigned.clone()
    }

    /// The rows are done: the rest of the listing is not needed. Its page in flight is
    /// dropped (a read lands nothing), so a slow listing never holds the run's end.
    pub async fn finish(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    pub fn assigned(&self) -> Arc<Assigned> {
        self.assigned.clone()
    }
}

impl Drop for Listing {
    /// A run that ends before it reached [`Listing::finish`] (an error on its way) leaves no
    /// listing reading on behind it.
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Which of `ids` are `notAssigned`, read beside the rows: those serial resolution already
/// listed at once, and, for more than [`LOOKUP_MAX`] devices (fewer cost fewer requests read
/// one by one), the identity listing's as its pages come. Returns once its first page came.
pub async fn follow(
    ids: &HashSet<Uuid>,
    resolved: &Resolved,
    graph: &GraphClient,
    budget: &Arc<Budget>,
) -> Listing {
    let assigned = Arc::new(Assigned::default());
    assigned.known().extend(resolved.unassigned());
    if ids.len() <= LOOKUP_MAX {
        return Listing {
            assigned,
            task: None,
        };
    }
    let (ids, graph, budget, shared) =
        (ids.clone(), graph.clone(), budget.clone(), assigned.clone());
    let (first, first_page) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move { read(&ids, &shared, &graph, &budget, first).await });
    // A tenant of 100 identities or fewer is listed whole before the first row.
    let _ = first_page.await;
    Listing {
        assigned,
        task: Some(task),
    }
}

/// Page the listing into `assigned` until its end, or until every one of `ids` was seen;
/// `first` hears of the first page.
async fn read(
    ids: &HashSet<Uuid>,
    assigned: &Assigned,
    graph: &GraphClient,
    budget: &Budget,
    first: tokio::sync::oneshot::Sender<()>,
) {
    let mut first = Some(first);
    let seen = Mutex::new(HashSet::new());
    let keep = |identity: Identity| {
        let Some(id) = Uuid::parse_str(&identity.id)
            .ok()
            .filter(|id| ids.contains(id))
        else {
            return;
        };
        seen.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
        assigned.note(id, &identity);
    };
    let go_on = |_| {
        if let Some(first) = first.take() {
            let _ = first.send(());
        }
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).len();
        seen < ids.len()
    };
    match listing::each_identity_while(graph, budget, keep, go_on).await {
        Ok(listed) => tracing::info!(
            pages = listed.pages,
            unassigned = assigned.known().len(),
            "read the devices' assignment status"
        ),
        Err(e) => tracing::warn!(
            "cannot read the devices' assignment status ({e}); every row reads its device \
             before writing"
        ),
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
        let assigned = Assigned::default();
        for (device, status) in [
            (a, Some("notAssigned")),
            (b, Some("assignedInSync")),
            (c, Some("pending")),
            (d, None),
        ] {
            assigned.note(device, &identity(device, status));
        }
        assert!(!assigned.must_look(a));
        assert!(assigned.must_look(b));
        assert!(assigned.must_look(c));
        assert!(assigned.must_look(d));
        // Absent from the listing: unknown, so read.
        assert!(assigned.must_look(Uuid::from_u64_pair(9, 9)));
        assert!(!Assigned::blind().must_look(b));
    }
}
