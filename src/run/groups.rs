//! Before a group run's first write: which directory object each wanted device is, and, for
//! each wanted group, whether it takes members and who its members are. Reads only:
//!
//! 1. the identity listing (Intune, one paged pass) gives each wanted device's
//!    `azureAdDeviceId`;
//! 2. the directory gives each such device's object id: one `$filter=deviceId eq …` read per
//!    device when few are wanted, else the paged `/devices` listing (999 a page);
//! 3. each group is read (unknown: its rows fail `GroupNotFound`; dynamic: `DynamicGroup`), then
//!    its device members, paged: a device already a member is `existing`, with no write.
//!
//! Directory reads go through the directory's budget, the listing through Intune's.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use uuid::Uuid;

use crate::budget::Budget;
use crate::codes;
use crate::graph::answer::{Attempt, ErrorInfo, Page};
use crate::graph::client::GraphClient;
use crate::graph::model::DirectoryDevice;
use crate::listing::{self, ReadError};

use super::resolve::normalize;

/// Below this many devices, each is looked up alone; from it on, the directory is paged.
const LOOKUPS_BELOW: usize = 50;

/// What a group row's device and group hold before the run writes.
#[derive(Debug, Default)]
pub struct Memberships {
    /// Identity id → its directory object id (lowercase); `None`: not in the directory.
    objects: HashMap<Uuid, Option<String>>,
    /// Group → its device members' object ids (lowercase), or why it takes none.
    groups: HashMap<Uuid, Result<HashSet<String>, ErrorInfo>>,
    /// A read that failed for every row (the listing, the directory).
    unread: Option<ErrorInfo>,
}

/// What a group row needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// Add this directory object.
    Add(String),
    /// Already a member: nothing to write.
    Member,
    Failed(ErrorInfo),
}

impl Memberships {
    pub fn decide(&self, device: Uuid, group: Uuid) -> Membership {
        if let Some(e) = &self.unread {
            return Membership::Failed(e.clone());
        }
        let oid = match self.objects.get(&device) {
            Some(Some(oid)) => oid,
            _ => {
                return Membership::Failed(ErrorInfo {
                    code: codes::DEVICE_NOT_IN_DIRECTORY.into(),
                    message: format!(
                        "device {device} has no Entra device object (no azureAdDeviceId, or \
                         none in the directory): it cannot join a group until it has \
                         registered with Entra ID"
                    ),
                });
            }
        };
        match self.groups.get(&group) {
            Some(Ok(members)) if members.contains(oid) => Membership::Member,
            Some(Ok(_)) => Membership::Add(oid.clone()),
            Some(Err(e)) => Membership::Failed(e.clone()),
            None => Membership::Failed(ErrorInfo {
                code: codes::INTERNAL.into(),
                message: format!("group {group} was not read before the run"),
            }),
        }
    }

    /// Memberships as given (tests of the writes that follow them).
    #[cfg(test)]
    pub fn given(
        objects: HashMap<Uuid, Option<String>>,
        groups: HashMap<Uuid, Result<HashSet<String>, ErrorInfo>>,
    ) -> Self {
        Self {
            objects,
            groups,
            unread: None,
        }
    }

    /// The object id of `device`, when known.
    pub fn object(&self, device: Uuid) -> Option<&str> {
        self.objects.get(&device).and_then(|o| o.as_deref())
    }
}

/// What a group run's pre-read is for: the devices named by id in `ids` or by serial in
/// `serials`, the groups `groups`, and the `azureAdDeviceId`s serial resolution already read.
pub struct Wanted<'a> {
    pub ids: &'a HashSet<Uuid>,
    pub serials: &'a HashSet<String>,
    pub groups: &'a HashSet<Uuid>,
    pub known: &'a HashMap<Uuid, Option<Uuid>>,
}

/// The reads. The identity listing is read only for devices the serial resolution did not
/// already see.
pub async fn read(
    wanted: Wanted<'_>,
    graph: &GraphClient,
    intune: &Budget,
    directory: &Budget,
) -> Memberships {
    let mut m = Memberships::default();
    let Wanted {
        ids,
        serials,
        groups,
        known,
    } = wanted;
    let unknown_ids = ids.iter().any(|id| !known.contains_key(id));
    let azure = if unknown_ids {
        match azure_ids(ids, serials, graph, intune).await {
            Ok(azure) => azure,
            Err(e) => return unread(m, "the identity listing", e),
        }
    } else {
        known.clone()
    };
    let objects = match directory_objects(&azure, graph, directory).await {
        Ok(objects) => objects,
        Err(e) => return unread(m, "the directory's devices", e),
    };
    m.objects = azure
        .iter()
        .map(|(device, azure)| {
            let oid = azure.and_then(|a| objects.get(&a).cloned());
            (*device, oid)
        })
        .collect();
    for &group in groups {
        let held = group_members(group, graph, directory).await;
        m.groups.insert(group, held);
    }
    tracing::info!(
        devices = m.objects.len(),
        groups = m.groups.len(),
        "read the devices' directory objects and the groups' members"
    );
    m
}

fn unread(mut m: Memberships, what: &str, e: ReadError) -> Memberships {
    m.unread = Some(read_error(&format!("cannot read {what}"), e));
    m
}

fn read_error(what: &str, e: ReadError) -> ErrorInfo {
    match e {
        ReadError::Failed { code, message } => ErrorInfo {
            code,
            message: format!("{what}: {message}"),
        },
        other => ErrorInfo {
            code: codes::STOPPED.into(),
            message: format!("{what}: {other}"),
        },
    }
}

/// Each wanted identity's `azureAdDeviceId` (`None`: it has none).
async fn azure_ids(
    ids: &HashSet<Uuid>,
    serials: &HashSet<String>,
    graph: &GraphClient,
    budget: &Budget,
) -> Result<HashMap<Uuid, Option<Uuid>>, ReadError> {
    let mut found = HashMap::new();
    let keep = |identity: crate::graph::model::Identity| {
        let Ok(id) = Uuid::parse_str(&identity.id) else {
            return;
        };
        let by_serial = identity
            .serial_number
            .as_deref()
            .is_some_and(|s| serials.contains(&normalize(s)));
        if ids.contains(&id) || by_serial {
            found.insert(id, identity.azure_device_id());
        }
    };
    listing::each_identity(graph, budget, keep, |_| {}).await?;
    Ok(found)
}

/// `deviceId` → object id (lowercase) of the directory devices the identities name.
async fn directory_objects(
    azure: &HashMap<Uuid, Option<Uuid>>,
    graph: &GraphClient,
    budget: &Budget,
) -> Result<HashMap<Uuid, String>, ReadError> {
    let wanted: HashSet<Uuid> = azure.values().flatten().copied().collect();
    let mut objects = HashMap::new();
    let mut keep = |d: DirectoryDevice| {
        let device_id = d.device_id.as_deref().and_then(|s| Uuid::parse_str(s).ok());
        if let Some(device_id) = device_id.filter(|d| wanted.contains(d))
            && !d.id.trim().is_empty()
        {
            objects.insert(device_id, d.id.trim().to_ascii_lowercase());
        }
    };
    if wanted.len() < LOOKUPS_BELOW {
        for &device_id in &wanted {
            let page = listing::read(budget, |token| async move {
                graph.device_by_device_id(&token, device_id).await
            })
            .await?;
            page.value.into_iter().for_each(&mut keep);
        }
    } else {
        each_page(
            budget,
            |token, link| async move { graph.devices(&token, link.as_deref()).await },
            keep,
        )
        .await?;
    }
    Ok(objects)
}

/// A group's device members (object ids, lowercase), or why its rows cannot be added.
pub async fn group_members(
    group: Uuid,
    graph: &GraphClient,
    budget: &Budget,
) -> Result<HashSet<String>, ErrorInfo> {
    let what = format!("cannot read group {group}");
    let info = match listing::read(
        budget,
        |token| async move { graph.group(&token, group).await },
    )
    .await
    {
        Ok(info) => info,
        Err(ReadError::Failed { code, message }) if code.contains("NotFound") => {
            return Err(ErrorInfo {
                code: codes::GROUP_NOT_FOUND.into(),
                message: format!("group {group} is not a group of this tenant ({code}: {message})"),
            });
        }
        Err(e) => return Err(read_error(&what, e)),
    };
    if info.is_dynamic() {
        return Err(ErrorInfo {
            code: codes::DYNAMIC_GROUP.into(),
            message: format!(
                "group {group} ({}) is a dynamic group: its members come from its rule, none \
                 can be added; give an assigned group, or use --action tag with a rule on the \
                 group tag",
                info.display_name
                    .as_deref()
                    .unwrap_or("unnamed")
                    .escape_debug()
            ),
        });
    }
    let mut members = HashSet::new();
    each_page(
        budget,
        |token, link| async move { graph.members(&token, group, link.as_deref()).await },
        |d: DirectoryDevice| {
            members.insert(d.id.trim().to_ascii_lowercase());
        },
    )
    .await
    .map_err(|e| read_error(&what, e))?;
    Ok(members)
}

/// Every page of a directory listing, each object to `each`, stopped by the same rules as the
/// identity listing (see [`listing::Pager`]): a link that comes back, pages that add nothing.
async fn each_page<F, Fut>(
    budget: &Budget,
    send: F,
    mut each: impl FnMut(DirectoryDevice),
) -> Result<(), ReadError>
where
    F: Fn(Arc<str>, Option<String>) -> Fut,
    Fut: Future<Output = Attempt<Page<DirectoryDevice>>>,
{
    let mut next: Option<String> = None;
    let mut pager = listing::Pager::default();
    loop {
        let link = next.take();
        let page = listing::read(budget, |token| send(token, link.clone())).await?;
        let turn = pager.turn(
            page.value.iter().map(|d| d.id.as_str()),
            page.count,
            page.next_link,
        );
        page.value.into_iter().for_each(&mut each);
        match turn? {
            None => return Ok(()),
            Some(link) => next = Some(link),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_added_unless_a_member_or_without_an_object() {
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let (g, dynamic) = (Uuid::from_u128(10), Uuid::from_u128(11));
        let m = Memberships {
            objects: HashMap::from([(a, Some("oa".into())), (b, Some("ob".into())), (c, None)]),
            groups: HashMap::from([
                (g, Ok(HashSet::from(["ob".to_string()]))),
                (
                    dynamic,
                    Err(ErrorInfo {
                        code: "DynamicGroup".into(),
                        message: "dynamic".into(),
                    }),
                ),
            ]),
            unread: None,
        };
        assert_eq!(m.decide(a, g), Membership::Add("oa".into()));
        assert_eq!(m.decide(b, g), Membership::Member);
        let code = |x: Membership| match x {
            Membership::Failed(e) => e.code,
            other => format!("{other:?}"),
        };
        assert_eq!(code(m.decide(c, g)), "DeviceNotInDirectory");
        assert_eq!(code(m.decide(a, dynamic)), "DynamicGroup");
        assert_eq!(
            code(m.decide(Uuid::from_u128(9), g)),
            "DeviceNotInDirectory"
        );
    }
}
