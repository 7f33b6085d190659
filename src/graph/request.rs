//! The requests the run makes, in the shape both a lone request and a `$batch` envelope need
//! (method, path below the Graph base URL, JSON body).

use uuid::Uuid;

use super::model::{Assignment, ImportRecord};

const IDENTITIES: &str = "/deviceManagement/windowsAutopilotDeviceIdentities";

/// One request to Graph.
#[derive(Debug, Clone)]
pub(crate) enum Request {
    /// Create one assignment of a device.
    Post { device: Uuid, body: Assignment },
    /// A page of a device's assignments: the first, or a later one (`page`: the
    /// `@odata.nextLink` below the base URL).
    List { device: Uuid, page: Option<String> },
    /// A page of the tenant's Autopilot identities: the first (`top` per page), or a later one.
    Identities { top: u32, page: Option<String> },
    /// The identities whose serial number contains `serial` (`contains` is a substring match:
    /// the caller keeps exact matches).
    IdentitiesWithSerial { serial: String },
    /// Set one identity's group tag (answered 204 No Content).
    UpdateDeviceProperties { device: Uuid, group_tag: String },
    /// One identity, to read its group tag back after an ambiguous tag write.
    Identity { device: Uuid },
    /// A page of the directory's devices (object id and deviceId): the first, or a later one.
    Devices { page: Option<String> },
    /// The directory device whose `deviceId` is `device_id` (an identity's azureAdDeviceId).
    DeviceByDeviceId { device_id: Uuid },
    /// One group: whether it exists and takes members.
    Group { group: Uuid },
    /// A page of a group's device members: the first, or a later one.
    Members { group: Uuid, page: Option<String> },
    /// Add up to 20 directory objects (`refs`: their `directoryObjects` URLs) to a group.
    AddMembers { group: Uuid, refs: Vec<String> },
    /// The tenant's Autopilot deployment profiles with their assignments: the first page, or
    /// a later one.
    Profiles { page: Option<String> },
    /// Assign a deployment profile to a group.
    AssignProfile { profile: String, group: Uuid },
    /// The groups of this display name (several groups may share one).
    GroupsNamed { name: String },
    /// Delete one assignment of a device (`undo`); `assignment` is checked by
    /// [`is_assignment_id`] first, so that it is one path segment.
    DeleteAssignment { device: Uuid, assignment: String },
    /// Remove one directory object from a group (`undo`).
    RemoveMember { group: Uuid, member: Uuid },
    /// Register devices by hardware hash, several to a request.
    Import { records: Vec<ImportRecord> },
    /// Register one device by hardware hash (when a batch is refused).
    ImportOne { record: ImportRecord },
    /// A page of the tenant's import records: the first, or a later one.
    ImportedIdentities { page: Option<String> },
    /// One import record (`id` is a GUID: checked by the caller).
    ImportedIdentity { id: Uuid },
    /// Delete one import record (the device stays registered).
    DeleteImported { id: Uuid },
    /// Ask the Autopilot service to sync: registered devices then appear in the listing.
    Sync,
    /// The tenant's Autopilot settings (its last sync).
    AutopilotSettings,
}

const IMPORTED: &str = "/deviceManagement/importedWindowsAutopilotDeviceIdentities";

/// Whether `id` can stand in a path as one assignment id: letters, digits, `-`, `_` and `.`,
/// not starting with `.` (so never `..`). An id from a results file is data, not a path.
pub(crate) fn is_assignment_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

const PROFILES: &str = "/deviceManagement/windowsAutopilotDeploymentProfiles";

/// Directory objects per page asked for on the directory's listings (its maximum).
pub(crate) const DIRECTORY_PAGE: u32 = 999;

impl Request {
    pub(crate) fn method(&self) -> &'static str {
        match self {
            Request::Post { .. }
            | Request::UpdateDeviceProperties { .. }
            | Request::AssignProfile { .. }
            | Request::Import { .. }
            | Request::ImportOne { .. }
            | Request::Sync => "POST",
            Request::AddMembers { .. } => "PATCH",
            Request::DeleteAssignment { .. }
            | Request::RemoveMember { .. }
            | Request::DeleteImported { .. } => "DELETE",
            _ => "GET",
        }
    }

    /// The path below the Graph base URL (what `$batch` wants).
    pub(crate) fn path(&self) -> String {
        match self {
            Request::List {
                page: Some(page), ..
            }
            | Request::Identities {
                page: Some(page), ..
            }
            | Request::Devices { page: Some(page) }
            | Request::Profiles { page: Some(page) }
            | Request::Members {
                page: Some(page), ..
            }
            | Request::ImportedIdentities { page: Some(page) } => page.clone(),
            Request::Import { .. } => format!("{IMPORTED}/import"),
            Request::ImportOne { .. } => IMPORTED.to_string(),
            Request::ImportedIdentities { page: None } => format!("{IMPORTED}?$top=100"),
            Request::ImportedIdentity { id } | Request::DeleteImported { id } => {
                format!("{IMPORTED}/{id}")
            }
            Request::Sync => "/deviceManagement/windowsAutopilotSettings/sync".into(),
            Request::AutopilotSettings => "/deviceManagement/windowsAutopilotSettings".into(),
            Request::Post { device, .. } | Request::List { device, .. } => {
                format!("{IDENTITIES}/{device}/deploymentProfile/assignments")
            }
            Request::UpdateDeviceProperties { device, .. } => {
                format!("{IDENTITIES}/{device}/updateDeviceProperties")
            }
            Request::Identity { device } => format!("{IDENTITIES}/{device}"),
            Request::Identities { top, page: None } => format!("{IDENTITIES}?$top={top}"),
            Request::IdentitiesWithSerial { serial } => {
                // An OData string literal doubles its quotes; the filter is then percent-encoded.
                let filter = format!("contains(serialNumber,'{}')", serial.replace('\'', "''"));
                let encoded: String =
                    url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
                format!("{IDENTITIES}?$filter={encoded}")
            }
            Request::Devices { page: None } => {
                format!("/devices?$select=id,deviceId&$top={DIRECTORY_PAGE}")
            }
            Request::DeviceByDeviceId { device_id } => {
                format!("/devices?$filter=deviceId%20eq%20'{device_id}'&$select=id,deviceId")
            }
            Request::Group { group } => format!(
                "/groups/{group}?$select=id,displayName,groupTypes,securityEnabled,membershipRule"
            ),
            Request::Members { group, page: None } => format!(
                "/groups/{group}/members/microsoft.graph.device?$select=id,deviceId&$top={DIRECTORY_PAGE}"
            ),
            Request::AddMembers { group, .. } => format!("/groups/{group}"),
            Request::DeleteAssignment { device, assignment } => {
                format!("{IDENTITIES}/{device}/deploymentProfile/assignments/{assignment}")
            }
            Request::RemoveMember { group, member } => {
                format!("/groups/{group}/members/{member}/$ref")
            }
            Request::Profiles { page: None } => format!("{PROFILES}?$expand=assignments"),
            Request::AssignProfile { profile, .. } => {
                let profile: String =
                    url::form_urlencoded::byte_serialize(profile.as_bytes()).collect();
                format!("{PROFILES}/{profile}/assignments")
            }
            Request::GroupsNamed { name } => {
                let filter = format!("displayName eq '{}'", name.replace('\'', "''"));
                let encoded: String =
                    url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
                format!(
                    "/groups?$filter={encoded}&$select=id,displayName,groupTypes,securityEnabled"
                )
            }
        }
    }

    /// The device the request is about, if it is about one.
    pub(crate) fn device(&self) -> Option<Uuid> {
        match self {
            Request::Post { device, .. }
            | Request::List { device, .. }
            | Request::UpdateDeviceProperties { device, .. }
            | Request::DeleteAssignment { device, .. }
            | Request::Identity { device } => Some(*device),
            _ => None,
        }
    }

    pub(crate) fn body(&self) -> Option<serde_json::Value> {
        match self {
            Request::Post { body, .. } => serde_json::to_value(body).ok(),
            Request::UpdateDeviceProperties { group_tag, .. } => {
                Some(serde_json::json!({ "groupTag": group_tag }))
            }
            Request::AddMembers { refs, .. } => {
                Some(serde_json::json!({ "members@odata.bind": refs }))
            }
            Request::Import { records } => Some(serde_json::json!({
                "importedWindowsAutopilotDeviceIdentities": records,
            })),
            Request::ImportOne { record } => serde_json::to_value(record).ok(),
            Request::AssignProfile { group, .. } => Some(serde_json::json!({
                "@odata.type": "#microsoft.graph.windowsAutopilotDeploymentProfileAssignment",
                "target": {
                    "@odata.type": "#microsoft.graph.groupAssignmentTarget",
                    "groupId": group.to_string(),
                }
            })),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_below_the_base() {
        let first = Request::Identities {
            top: 100,
            page: None,
        };
        assert_eq!(first.path(), format!("{IDENTITIES}?$top=100"));
        let serial = Request::IdentitiesWithSerial {
            serial: "O'Brien 7".into(),
        };
        assert_eq!(
            serial.path(),
            format!("{IDENTITIES}?$filter=contains%28serialNumber%2C%27O%27%27Brien+7%27%29")
        );
    }

    #[test]
    fn a_group_tag_is_a_post_with_its_body() {
        let device = Uuid::nil();
        let tag = Request::UpdateDeviceProperties {
            device,
            group_tag: "Kiosk".into(),
        };
        assert_eq!(tag.method(), "POST");
        assert_eq!(
            tag.path(),
            format!("{IDENTITIES}/{device}/updateDeviceProperties")
        );
        assert_eq!(tag.body(), Some(serde_json::json!({"groupTag": "Kiosk"})));
        let read = Request::Identity { device };
        assert_eq!((read.method(), read.body()), ("GET", None));
        assert_eq!(read.path(), format!("{IDENTITIES}/{device}"));
    }
}
