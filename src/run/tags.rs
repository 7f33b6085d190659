//! Before a tag run's first write: which devices already carry the tag their row asks for.
//! One paged read of the tenant's identity listing (⌈identities ÷ 100⌉ requests, through the
//! same budget as the writes) keeps the current tag of every device the rows name; a row whose
//! device already carries its tag then finishes `existing` without a write. A failed read only
//! costs the shortcut: every row is written, which is harmless (the write is idempotent).

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use crate::budget::Budget;
use crate::graph::client::GraphClient;
use crate::listing;

use super::resolve::normalize;

/// The current group tag of each device a tag run's rows name, by identity id.
#[derive(Debug, Default)]
pub struct Tags {
    held: HashMap<Uuid, String>,
    /// The listing was read: a device it did not show with a tag carried none.
    read: bool,
}

impl Tags {
    /// Keep the tags of the identities named by id in `ids` or by serial in `serials`
    /// (normalised as [`normalize`] does).
    pub fn new(
        ids: &HashSet<Uuid>,
        serials: &HashSet<String>,
        identities: impl IntoIterator<Item = crate::graph::model::Identity>,
    ) -> Self {
        let mut held = HashMap::new();
        for identity in identities {
            let (Ok(id), Some(tag)) = (Uuid::parse_str(&identity.id), identity.group_tag) else {
                continue;
            };
            let by_serial = identity
                .serial_number
                .as_deref()
                .is_some_and(|s| serials.contains(&normalize(s)));
            if ids.contains(&id) || by_serial {
                held.insert(id, tag);
            }
        }
        Self { held, read: true }
    }

    /// The tags a whole-listing read of the serials already showed (`held`: device → tag,
    /// empty for none): a run whose rows all name serials needs no second pass.
    pub fn from_resolution(held: &HashMap<Uuid, String>) -> Self {
        let held = held
            .iter()
            .filter(|(_, t)| !t.is_empty())
            .map(|(d, t)| (*d, t.clone()))
            .collect();
        Self { held, read: true }
    }

    /// The tag `device` carried before the run (empty: none); `None` when the listing could
    /// not be read, so it is not known.
    pub fn previous(&self, device: Uuid) -> Option<String> {
        self.read
            .then(|| self.held.get(&device).cloned().unwrap_or_default())
    }

    /// Whether `device` already carries `tag` (see [`crate::action::tag::carries`]).
    pub fn carries(&self, device: Uuid, tag: &str) -> bool {
        crate::action::tag::carries(self.held.get(&device).map(String::as_str), tag)
    }
}

/// Read the listing once and keep the wanted devices' tags.
pub async fn read(
    ids: &HashSet<Uuid>,
    serials: &HashSet<String>,
    graph: &GraphClient,
    budget: &Budget,
) -> Tags {
    let mut identities = Vec::new();
    let keep = |identity: crate::graph::model::Identity| {
        let named = Uuid::parse_str(&identity.id).is_ok_and(|id| ids.contains(&id))
            || identity
                .serial_number
                .as_deref()
                .is_some_and(|s| serials.contains(&normalize(s)));
        if named && identity.group_tag.is_some() {
            identities.push(identity);
        }
    };
    match listing::each_identity(graph, budget, keep, |_| {}).await {
        Ok(listed) => {
            tracing::info!(pages = listed.pages, "read the devices' group tags");
            Tags::new(ids, serials, identities)
        }
        Err(e) => {
            tracing::warn!(
                "cannot read the devices' group tags ({}); every row is written",
                crate::output::printable(&e.to_string())
            );
            Tags::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::model::Identity;

    fn identity(id: Uuid, serial: &str, tag: Option<&str>) -> Identity {
        serde_json::from_value(serde_json::json!({
            "id": id.to_string(), "serialNumber": serial, "groupTag": tag
        }))
        .unwrap()
    }

    #[test]
    fn only_named_devices_are_kept() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let tags = Tags::new(
            &HashSet::from([a]),
            &HashSet::from(["sn-b".to_string()]),
            [
                identity(a, "SN-A", Some("Kiosk")),
                identity(b, "SN-B", Some("Lab")),
                identity(c, "SN-C", Some("Kiosk")),
            ],
        );
        assert!(tags.carries(a, "kiosk"));
        assert!(tags.carries(b, "Lab"));
        assert!(!tags.carries(c, "Kiosk"));
        assert!(!tags.carries(a, "Lab"));
    }
}
