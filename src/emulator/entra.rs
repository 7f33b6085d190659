//! The tenant's Entra directory as the emulator holds it: a device object for every identity
//! (but those configured out of it), the groups, their first members, and the Autopilot
//! deployment profiles with their group assignments. Built once at start from the
//! configuration and the identities; each tenant then starts its own [`EntraData`] (members,
//! profile assignments) from the same first state.
//!
//! Pure data: the routes (`devices`, `groups`, `members`, `profiles`) read and change it.
//!
//! Without configured groups any GUID names an assigned security group, and without configured
//! profiles any GUID names a profile, so that `run --emulator` rehearses out of the box (as
//! the assignment routes accept any device without a device list). Without a device list,
//! likewise, any identity id has a directory device, found from its `deviceId` or object id
//! (see [`super::ids`]); only the configured identities are listed.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Value, json};

use super::EmulatorConfig;
use super::directory::{Directory, invented_serial};
use super::ids::{
    azure_ad_device_id, directory_object_id, identity_of_device_id, identity_of_object,
};
use super::validate::is_guid;

/// Intune's fixed id for the "All devices" virtual group, in assignment ids.
pub(crate) const ALL_DEVICES_ID: &str = "adadadad-808e-44e2-905a-0b7873a8a531";

/// An Entra security group the emulator holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Object id, a GUID (compared ignoring case).
    pub id: String,
    pub display_name: String,
    /// `groupTypes: ["DynamicMembership"]`: members come from a rule, never from writes.
    pub dynamic: bool,
}

impl Group {
    /// An assigned (static) security group, the kind `run --action group` fills.
    pub fn assigned(id: &str, display_name: &str) -> Self {
        Self {
            id: id.to_ascii_lowercase(),
            display_name: display_name.to_string(),
            dynamic: false,
        }
    }

    /// A dynamic security group: it refuses member writes.
    pub fn dynamic(id: &str, display_name: &str) -> Self {
        Self {
            dynamic: true,
            ..Self::assigned(id, display_name)
        }
    }

    /// The name a group gets when none is given: `Group` and its id's first 8 hex digits.
    pub fn default_name(id: &str) -> String {
        format!("Group {}", id.get(..8).unwrap_or(id))
    }
}

/// What a deployment profile is assigned to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileTarget {
    /// `#microsoft.graph.groupAssignmentTarget` with this group id.
    Group(String),
    /// `#microsoft.graph.allDevicesAssignmentTarget`.
    AllDevices,
}

/// An Autopilot deployment profile and the targets it is assigned to at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// A GUID (compared ignoring case).
    pub id: String,
    pub display_name: String,
    pub assigned_to: Vec<ProfileTarget>,
}

/// One Entra device object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceObject {
    /// The directory object id (what a group's members are).
    pub id: String,
    /// The device id, the identity's `azureAdDeviceId`.
    pub device_id: String,
    pub display_name: String,
}

impl DeviceObject {
    pub(crate) fn of(identity: &str, serial: &str) -> Option<Self> {
        Some(Self {
            id: directory_object_id(identity)?,
            device_id: azure_ad_device_id(identity)?,
            display_name: serial.to_string(),
        })
    }

    /// Graph's `microsoft.graph.device`, properties in Graph's order.
    pub(crate) fn properties(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("id", json!(self.id)),
            ("accountEnabled", json!(true)),
            ("deviceId", json!(self.device_id)),
            ("displayName", json!(self.display_name)),
            ("operatingSystem", json!("Windows")),
            ("trustType", json!("AzureAd")),
        ]
    }
}

/// The directory as configured; the same for every tenant.
#[derive(Debug, Default)]
pub(crate) struct Entra {
    /// Listed device objects, in the identities' order.
    devices: Vec<DeviceObject>,
    by_device_id: HashMap<String, usize>,
    by_object_id: HashMap<String, usize>,
    /// Identity ids whose `azureAdDeviceId` is empty (and that have no device object).
    no_device_id: HashSet<String>,
    /// Identity ids listed with an `azureAdDeviceId` but without a device object.
    not_in_directory: HashSet<String>,
    /// Any identity id has a device (no device list was given).
    permissive: bool,
    groups: Vec<Group>,
    profiles: Vec<Profile>,
    /// The members every tenant starts with: group id → object ids.
    first_members: Vec<(String, String)>,
}

impl Entra {
    /// Resolve the configuration against the identities. Every name (group, profile, device)
    /// it cannot place is an error, so a rehearsal is never silently different from its
    /// setup.
    pub(crate) fn new(config: &EmulatorConfig, identities: &Directory) -> Result<Self, String> {
        let mut entra = Entra {
            permissive: config.devices.is_none(),
            ..Entra::default()
        };
        for spec in &config.no_device_id {
            entra
                .no_device_id
                .extend(resolve(spec, config, identities)?);
        }
        for spec in &config.not_in_directory {
            entra
                .not_in_directory
                .extend(resolve(spec, config, identities)?);
        }
        for e in identities.entries() {
            if entra.absent(&e.id) {
                continue;
            }
            if let Some(object) = DeviceObject::of(&e.id, &e.serial) {
                let at = entra.devices.len();
                entra.by_device_id.insert(object.device_id.clone(), at);
                entra.by_object_id.insert(object.id.clone(), at);
                entra.devices.push(object);
            }
        }
        entra.groups = checked_groups(&config.groups)?;
        entra.profiles = checked_profiles(&config.profiles)?;
        for (group, spec) in &config.members {
            let group = group.trim().to_ascii_lowercase();
            if entra.group(&group).is_none() {
                return Err(format!("member {group}={spec}: no such group"));
            }
            for identity in resolve(spec, config, identities)? {
                let object = entra
                    .object_of_identity(&identity, identities)
                    .ok_or_else(|| format!("member {group}={spec}: not in the directory"))?;
                entra.first_members.push((group.clone(), object.id));
            }
        }
        Ok(entra)
    }

    fn absent(&self, identity: &str) -> bool {
        self.no_device_id.contains(identity) || self.not_in_directory.contains(identity)
    }

    /// The `azureAdDeviceId` the identity lists: empty for one configured without.
    pub(crate) fn azure_ad_device_id(&self, identity: &str) -> String {
        if self.no_device_id.contains(identity) {
            return String::new();
        }
        azure_ad_device_id(identity).unwrap_or_default()
    }

    /// The listed device objects, in order.
    pub(crate) fn devices(&self) -> &[DeviceObject] {
        &self.devices
    }

    fn object_of_identity(&self, identity: &str, identities: &Directory) -> Option<DeviceObject> {
        if self.absent(identity) {
            return None;
        }
        let device_id = azure_ad_device_id(identity)?;
        if let Some(&at) = self.by_device_id.get(&device_id) {
            return self.devices.get(at).cloned();
        }
        let listed = identities.get(identity);
        if !self.permissive && listed.is_none() {
            return None;
        }
        let serial = listed.map_or_else(|| invented_serial(identity), |e| e.serial.clone());
        DeviceObject::of(identity, &serial)
    }

    /// The device object with this `deviceId` (any case).
    pub(crate) fn device_by_device_id(
        &self,
        device_id: &str,
        ids: &Directory,
    ) -> Option<DeviceObject> {
        let identity = identity_of_device_id(device_id)?;
        self.object_of_identity(&identity, ids)
    }

    /// The device object with this object id (any case).
    pub(crate) fn device_by_object_id(
        &self,
        object_id: &str,
        ids: &Directory,
    ) -> Option<DeviceObject> {
        let identity = identity_of_object(object_id)?;
        self.object_of_identity(&identity, ids)
    }

    /// The group with this id (lowercase): a configured one, or without any configured, an
    /// assigned group for any GUID.
    pub(crate) fn group(&self, id: &str) -> Option<Group> {
        if self.groups.is_empty() {
            return is_guid(id).then(|| Group::assigned(id, &Group::default_name(id)));
        }
        self.groups.iter().find(|g| g.id == id).cloned()
    }

    /// The configured groups, in order.
    pub(crate) fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The profile with this id (lowercase), configured or (without any) invented.
    pub(crate) fn profile(&self, id: &str) -> Option<Profile> {
        if self.profiles.is_empty() {
            return is_guid(id).then(|| Profile {
                id: id.to_string(),
                display_name: format!("Profile {}", id.get(..8).unwrap_or(id)),
                assigned_to: Vec::new(),
            });
        }
        self.profiles.iter().find(|p| p.id == id).cloned()
    }

    /// The configured profiles, in order (none: any GUID is a profile).
    pub(crate) fn profiles(&self) -> &[Profile] {
        &self.profiles
    }

    /// What every tenant starts with: the first members and the profiles' first assignments.
    pub(crate) fn first_data(&self) -> EntraData {
        let mut data = EntraData::default();
        for (group, object) in &self.first_members {
            data.members
                .entry(group.clone())
                .or_default()
                .insert(object);
        }
        for p in &self.profiles {
            let list = data.profile_assignments.entry(p.id.clone()).or_default();
            for target in &p.assigned_to {
                list.push(profile_assignment(&p.id, target));
            }
        }
        data
    }
}

/// A profile assignment as Graph shows it: id `{profile}_{group}` (Intune's form; All devices
/// has its fixed virtual group id), the target, source `direct`.
pub(crate) fn profile_assignment(profile: &str, target: &ProfileTarget) -> Value {
    let (key, target) = match target {
        ProfileTarget::Group(group) => (
            group.as_str(),
            json!({
                "@odata.type": "#microsoft.graph.groupAssignmentTarget",
                "deviceAndAppManagementAssignmentFilterId": null,
                "deviceAndAppManagementAssignmentFilterType": "none",
                "groupId": group,
            }),
        ),
        ProfileTarget::AllDevices => (
            ALL_DEVICES_ID,
            json!({
                "@odata.type": "#microsoft.graph.allDevicesAssignmentTarget",
                "deviceAndAppManagementAssignmentFilterId": null,
                "deviceAndAppManagementAssignmentFilterType": "none",
            }),
        ),
    };
    json!({
        "id": format!("{profile}_{key}"),
        "target": target,
        "source": "direct",
        "sourceId": profile,
    })
}

/// The identity ids a configured device names: an identity id (a GUID; with a device list it
/// must be one the tenant knows), else every identity with that serial number (ignoring case).
fn resolve(
    spec: &str,
    config: &EmulatorConfig,
    identities: &Directory,
) -> Result<Vec<String>, String> {
    let spec = spec.trim();
    if is_guid(spec) {
        let id = spec.to_ascii_lowercase();
        let known = identities.get(&id).is_some()
            || config.devices.as_ref().is_none_or(|d| d.contains(&id));
        return if known {
            Ok(vec![id])
        } else {
            Err(format!("device {spec}: not a known identity"))
        };
    }
    let ids: Vec<String> = identities
        .entries()
        .iter()
        .filter(|e| e.serial.eq_ignore_ascii_case(spec))
        .map(|e| e.id.clone())
        .collect();
    if ids.is_empty() {
        return Err(format!(
            "device {spec:?}: neither an identity id nor a known serial"
        ));
    }
    Ok(ids)
}

fn checked_groups(groups: &[Group]) -> Result<Vec<Group>, String> {
    let mut out: Vec<Group> = Vec::new();
    for g in groups {
        let id = g.id.trim().to_ascii_lowercase();
        if !is_guid(&id) {
            return Err(format!("group {:?}: the id must be a GUID", g.id));
        }
        if out.iter().any(|o| o.id == id) {
            return Err(format!("group {id} is configured twice"));
        }
        out.push(Group { id, ..g.clone() });
    }
    Ok(out)
}

fn checked_profiles(profiles: &[Profile]) -> Result<Vec<Profile>, String> {
    let mut out: Vec<Profile> = Vec::new();
    for p in profiles {
        let id = p.id.trim().to_ascii_lowercase();
        if !is_guid(&id) {
            return Err(format!("profile {:?}: the id must be a GUID", p.id));
        }
        if out.iter().any(|o| o.id == id) {
            return Err(format!("profile {id} is configured twice"));
        }
        let mut assigned_to = Vec::new();
        for t in &p.assigned_to {
            let t = match t {
                ProfileTarget::Group(g) if is_guid(g.trim()) => {
                    ProfileTarget::Group(g.trim().to_ascii_lowercase())
                }
                ProfileTarget::Group(g) => {
                    return Err(format!("profile {id}: group {g:?} is not a GUID"));
                }
                ProfileTarget::AllDevices => ProfileTarget::AllDevices,
            };
            if !assigned_to.contains(&t) {
                assigned_to.push(t);
            }
        }
        out.push(Profile {
            id,
            display_name: p.display_name.clone(),
            assigned_to,
        });
    }
    Ok(out)
}

/// A group's members: object ids in the order they were added, with a set for lookups.
#[derive(Debug, Default, Clone)]
pub(crate) struct Members {
    order: Vec<String>,
    set: HashSet<String>,
}

impl Members {
    pub(crate) fn contains(&self, object: &str) -> bool {
        self.set.contains(object)
    }

    /// Add one; `false` when it already was a member.
    pub(crate) fn insert(&mut self, object: &str) -> bool {
        if !self.set.insert(object.to_string()) {
            return false;
        }
        self.order.push(object.to_string());
        true
    }

    /// Remove one; `false` when it was not a member.
    pub(crate) fn remove(&mut self, object: &str) -> bool {
        if !self.set.remove(object) {
            return false;
        }
        self.order.retain(|o| o != object);
        true
    }

    pub(crate) fn ordered(&self) -> &[String] {
        &self.order
    }
}

/// What one tenant's directory writes changed.
#[derive(Debug, Default, Clone)]
pub(crate) struct EntraData {
    /// Group id (lowercase) → its members.
    pub members: HashMap<String, Members>,
    /// Profile id (lowercase) → its assignments, in creation order.
    pub profile_assignments: BTreeMap<String, Vec<Value>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u32) -> String {
        format!("{i:08x}-0000-4000-8000-000000000000")
    }

    fn config(devices: bool) -> (EmulatorConfig, Directory) {
        let identities: Vec<(String, String)> =
            (1..=4).map(|i| (id(i), format!("SER-{i}"))).collect();
        let config = EmulatorConfig {
            devices: devices.then(|| identities.iter().map(|(i, _)| i.clone()).collect()),
            identities,
            no_device_id: vec!["SER-2".into()],
            not_in_directory: vec![id(3)],
            ..EmulatorConfig::default()
        };
        let dir = Directory::new(&config.identities, config.devices.as_ref());
        (config, dir)
    }

    #[test]
    fn every_identity_has_a_device_but_those_configured_out() {
        let (config, dir) = config(true);
        let entra = Entra::new(&config, &dir).unwrap();
        let listed: Vec<&str> = entra
            .devices()
            .iter()
            .map(|d| d.display_name.as_str())
            .collect();
        assert_eq!(listed, ["SER-1", "SER-4"]);
        assert_eq!(entra.azure_ad_device_id(&id(2)), "");
        let three = azure_ad_device_id(&id(3)).unwrap();
        assert_eq!(entra.azure_ad_device_id(&id(3)), three);
        assert_eq!(entra.device_by_device_id(&three, &dir), None);
        let one = &entra.devices()[0];
        assert_eq!(
            entra
                .device_by_object_id(&one.id.to_uppercase(), &dir)
                .as_ref(),
            Some(one)
        );
        // With a device list, an unknown identity has no device.
        let five = azure_ad_device_id(&id(5)).unwrap();
        assert_eq!(entra.device_by_device_id(&five, &dir), None);
        // Without one, it has, named by its invented serial; not listed.
        let (config, dir) = self::config(false);
        let entra = Entra::new(&config, &dir).unwrap();
        let found = entra.device_by_device_id(&five, &dir).unwrap();
        assert_eq!(found.display_name, invented_serial(&id(5)));
        assert_eq!(entra.devices().len(), 2);
    }

    #[test]
    fn groups_default_to_assigned_ones_until_some_are_configured() {
        let (config, dir) = config(true);
        let g = "5e7e0c2a-3b1d-4c8e-9f6a-0d1c2b3a4f5e";
        let entra = Entra::new(&config, &dir).unwrap();
        assert_eq!(entra.group(g).map(|g| g.dynamic), Some(false));
        assert_eq!(entra.group("nope"), None);
        let config = EmulatorConfig {
            groups: vec![Group::dynamic(&g.to_uppercase(), "Dyn")],
            members: vec![(g.into(), "SER-1".into())],
            ..config
        };
        let entra = Entra::new(&config, &dir).unwrap();
        assert_eq!(entra.group(g).map(|g| g.dynamic), Some(true));
        assert_eq!(entra.group(&id(9)), None);
        let first = entra.first_data();
        assert!(first.members[g].contains(&directory_object_id(&id(1)).unwrap()));
    }

    #[test]
    fn misconfigurations_are_refused() {
        let (config, dir) = config(true);
        let bad = [
            EmulatorConfig {
                not_in_directory: vec!["SER-9".into()],
                ..config.clone()
            },
            EmulatorConfig {
                groups: vec![Group::assigned("x", "X")],
                ..config.clone()
            },
            EmulatorConfig {
                members: vec![(id(9), "SER-1".into())],
                groups: vec![Group::assigned(&id(8), "G")],
                ..config.clone()
            },
            EmulatorConfig {
                members: vec![(id(8), "SER-3".into())],
                ..config.clone()
            },
            EmulatorConfig {
                members: vec![(id(8), id(7))],
                ..config.clone()
            },
            EmulatorConfig {
                profiles: vec![Profile {
                    id: id(1),
                    display_name: "P".into(),
                    assigned_to: vec![ProfileTarget::Group("g".into())],
                }],
                ..config.clone()
            },
        ];
        for c in bad {
            assert!(Entra::new(&c, &dir).is_err(), "{c:?}");
        }
    }

    #[test]
    fn profiles_start_with_their_assignments() {
        let (config, dir) = config(true);
        let p = id(7);
        let config = EmulatorConfig {
            profiles: vec![Profile {
                id: p.to_uppercase(),
                display_name: "Kiosk".into(),
                assigned_to: vec![ProfileTarget::Group(id(8)), ProfileTarget::AllDevices],
            }],
            ..config
        };
        let entra = Entra::new(&config, &dir).unwrap();
        let first = entra.first_data();
        let ids: Vec<&str> = first.profile_assignments[&p]
            .iter()
            .filter_map(|a| a["id"].as_str())
            .collect();
        assert_eq!(
            ids,
            [format!("{p}_{}", id(8)), format!("{p}_{ALL_DEVICES_ID}")]
        );
        assert!(entra.profile(&id(6)).is_none());
    }
}
