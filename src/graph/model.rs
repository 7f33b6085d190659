//! The wire model of a `windowsAutopilotDeploymentProfileAssignment` and of Graph's error
//! envelope, as Graph's beta reference documents them.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const ASSIGNMENT_ODATA_TYPE: &str =
    "#microsoft.graph.windowsAutopilotDeploymentProfileAssignment";

/// The assignment target kinds Graph knows. `Base` is the plain
/// `deviceAndAppManagementAssignmentTarget` that carries only a filter, as in the seed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetKind {
    Group,
    ExclusionGroup,
    AllDevices,
    AllLicensedUsers,
    ConfigurationManagerCollection,
    Base,
}

impl TargetKind {
    pub const ALL: [TargetKind; 6] = [
        TargetKind::Group,
        TargetKind::ExclusionGroup,
        TargetKind::AllDevices,
        TargetKind::AllLicensedUsers,
        TargetKind::ConfigurationManagerCollection,
        TargetKind::Base,
    ];

    /// The word used in the input CSV's `target_type` column.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Group => "group",
            TargetKind::ExclusionGroup => "exclusion_group",
            TargetKind::AllDevices => "all_devices",
            TargetKind::AllLicensedUsers => "all_licensed_users",
            TargetKind::ConfigurationManagerCollection => "configuration_manager_collection",
            TargetKind::Base => "base",
        }
    }

    /// The `@odata.type` sent. The base type is written without `#`, exactly as the seed
    /// request writes it; Graph accepts both spellings.
    pub fn odata_type(self) -> &'static str {
        match self {
            TargetKind::Group => "#microsoft.graph.groupAssignmentTarget",
            TargetKind::ExclusionGroup => "#microsoft.graph.exclusionGroupAssignmentTarget",
            TargetKind::AllDevices => "#microsoft.graph.allDevicesAssignmentTarget",
            TargetKind::AllLicensedUsers => "#microsoft.graph.allLicensedUsersAssignmentTarget",
            TargetKind::ConfigurationManagerCollection => {
                "#microsoft.graph.configurationManagerCollectionAssignmentTarget"
            }
            TargetKind::Base => "microsoft.graph.deviceAndAppManagementAssignmentTarget",
        }
    }

    /// Recognise an `@odata.type` in either spelling (with or without `#`).
    pub fn from_odata_type(s: &str) -> Option<TargetKind> {
        let bare = s.strip_prefix('#').unwrap_or(s);
        TargetKind::ALL.into_iter().find(|k| {
            k.odata_type()
                .trim_start_matches('#')
                .eq_ignore_ascii_case(bare)
        })
    }

    /// Parse a `target_type` cell: the CSV word (case, `_`, `-` and spaces ignored) or an
    /// `@odata.type` name. It runs on every input row, so words are compared in place.
    pub fn parse(s: &str) -> Result<TargetKind, String> {
        TargetKind::ALL
            .into_iter()
            .find(|k| same_word(s, k.as_str()))
            .or_else(|| TargetKind::from_odata_type(s.trim()))
            .ok_or_else(|| {
                format!(
                    "unknown target_type {s:?} (expected one of: {})",
                    TargetKind::ALL.map(TargetKind::as_str).join(", ")
                )
            })
    }

    /// Kinds that need a `groupId`.
    pub fn needs_group(self) -> bool {
        matches!(self, TargetKind::Group | TargetKind::ExclusionGroup)
    }
}

/// Lowercase and drop `_`, `-` and spaces, so `All-Devices` and `all_devices` match.
pub(crate) fn normalize_word(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether `a` and `b` are equal after [`normalize_word`], compared in place: normalising into
/// fresh Strings for a cell and each of six kinds costs a visible share of `validate`'s time.
fn same_word(a: &str, b: &str) -> bool {
    fn normalized(s: &str) -> impl Iterator<Item = char> + '_ {
        s.chars()
            .filter(|c| !matches!(c, '_' | '-' | ' '))
            .flat_map(char::to_lowercase)
    }
    /// The same for ASCII text, byte by byte (char::to_lowercase of ASCII is ASCII lowercase).
    fn normalized_ascii(s: &str) -> impl Iterator<Item = u8> + '_ {
        s.bytes()
            .filter(|b| !matches!(b, b'_' | b'-' | b' '))
            .map(|b| b.to_ascii_lowercase())
    }
    if a.is_ascii() && b.is_ascii() {
        normalized_ascii(a).eq(normalized_ascii(b))
    } else {
        normalized(a).eq(normalized(b))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterType {
    None,
    Include,
    Exclude,
}

impl FilterType {
    pub fn parse(s: &str) -> Result<FilterType, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(FilterType::None),
            "include" => Ok(FilterType::Include),
            "exclude" => Ok(FilterType::Exclude),
            _ => Err(format!(
                "unknown filter_type {s:?} (expected none, include or exclude)"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Source {
    #[serde(rename = "direct")]
    Direct,
    #[serde(rename = "policySets")]
    PolicySets,
}

impl Source {
    pub fn parse(s: &str) -> Result<Source, String> {
        match normalize_word(s).as_str() {
            "direct" => Ok(Source::Direct),
            "policysets" | "policyset" => Ok(Source::PolicySets),
            _ => Err(format!(
                "unknown source {s:?} (expected direct or policySets)"
            )),
        }
    }
}

/// A `deviceAndAppManagementAssignmentTarget` (or one of its derived types). It reads back
/// what it writes, so that a row can wait on disk (a tenant's overflowing queue).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target {
    #[serde(
        rename = "@odata.type",
        serialize_with = "ser_kind",
        deserialize_with = "de_kind"
    )]
    pub kind: TargetKind,
    #[serde(rename = "groupId", skip_serializing_if = "Option::is_none")]
    pub group_id: Option<Uuid>,
    #[serde(rename = "collectionId", skip_serializing_if = "Option::is_none")]
    pub collection_id: Option<String>,
    #[serde(
        rename = "deviceAndAppManagementAssignmentFilterId",
        skip_serializing_if = "Option::is_none"
    )]
    pub filter_id: Option<Uuid>,
    #[serde(
        rename = "deviceAndAppManagementAssignmentFilterType",
        skip_serializing_if = "Option::is_none"
    )]
    pub filter_type: Option<FilterType>,
}

fn ser_kind<S: serde::Serializer>(kind: &TargetKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.odata_type())
}

fn de_kind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TargetKind, D::Error> {
    let s = String::deserialize(d)?;
    TargetKind::from_odata_type(&s)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown target type {s:?}")))
}

fn assignment_odata_type() -> &'static str {
    ASSIGNMENT_ODATA_TYPE
}

/// The POST body of one assignment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Assignment {
    #[serde(
        rename = "@odata.type",
        skip_deserializing,
        default = "assignment_odata_type"
    )]
    pub odata_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub target: Target,
    pub source: Source,
    #[serde(rename = "sourceId", skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
}

impl Assignment {
    pub fn new(
        target: Target,
        source: Source,
        source_id: Option<String>,
        id: Option<String>,
    ) -> Self {
        Self {
            odata_type: ASSIGNMENT_ODATA_TYPE,
            id,
            target,
            source,
            source_id,
        }
    }
}

/// Graph's error envelope: `{"error":{"code","message","innerError":{...}}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorEnvelope {
    pub error: GraphError,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GraphError {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

impl GraphError {
    /// Parse an error body. `None` when it is not Graph's envelope (a proxy's HTML page, say).
    pub fn from_body(body: &[u8]) -> Option<GraphError> {
        serde_json::from_slice::<ErrorEnvelope>(body)
            .ok()
            .map(|e| e.error)
    }

    /// A readable message: Intune's front end often puts a JSON document inside `message`
    /// (`{"_version":3,"Message":"An error has occurred - Operation ID ..."}`); take its
    /// `Message` out.
    pub fn readable_message(&self) -> String {
        unwrap_intune_message(&self.message)
    }
}

/// Unwrap Intune's JSON-inside-`message`; any other text is returned trimmed.
pub fn unwrap_intune_message(message: &str) -> String {
    let trimmed = message.trim();
    if trimmed.starts_with('{')
        && let Ok(serde_json::Value::Object(map)) = serde_json::from_str(trimmed)
        && let Some(serde_json::Value::String(m)) =
            map.get("Message").or_else(|| map.get("message"))
    {
        return m.trim().to_string();
    }
    trimmed.to_string()
}

/// A `windowsAutopilotDeviceIdentity` as the listing returns it: only what the run and `status`
/// read. Every field is optional: a listing that leaves one out must not fail the page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Identity {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "serialNumber", default)]
    pub serial_number: Option<String>,
    #[serde(rename = "groupTag", default)]
    pub group_tag: Option<String>,
    /// Graph's `windowsAutopilotProfileAssignmentStatus`, verbatim (`notAssigned`, `pending`,
    /// `assignedInSync`, `assignedOutOfSync`, `assignedUnkownSyncState` in Graph's spelling, ...).
    #[serde(rename = "deploymentProfileAssignmentStatus", default)]
    pub assignment_status: Option<String>,
    #[serde(rename = "deploymentProfileAssignmentDetailedStatus", default)]
    pub detailed_status: Option<String>,
    #[serde(rename = "deploymentProfileAssignedDateTime", default)]
    pub assigned_at: Option<String>,
    /// The Entra device's `deviceId` (not its object id): how a static group's member is
    /// found for the identity.
    #[serde(rename = "azureAdDeviceId", default)]
    pub azure_ad_device_id: Option<String>,
}

impl Identity {
    /// The Entra device's `deviceId`, when the identity names one (not nil).
    pub fn azure_device_id(&self) -> Option<Uuid> {
        self.azure_ad_device_id
            .as_deref()
            .and_then(|a| Uuid::parse_str(a.trim()).ok())
            .filter(|a| !a.is_nil())
    }

    /// The listing shows the device holding no deployment profile assignment at all: a POST
    /// for it cannot duplicate one.
    pub fn not_assigned(&self) -> bool {
        self.assignment_status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("notAssigned"))
    }
}

/// An Entra directory device: its object `id` (what a group's member is) and its `deviceId`
/// (what an Autopilot identity's `azureAdDeviceId` names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct DirectoryDevice {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "deviceId", default)]
    pub device_id: Option<String>,
}

/// An Autopilot deployment profile with the targets it is assigned to.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DeploymentProfile {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "displayName", default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub assignments: Vec<ReturnedAssignment>,
}

impl DeploymentProfile {
    /// The groups the profile is assigned to (`groupAssignmentTarget`s).
    pub fn groups(&self) -> Vec<Uuid> {
        self.assignments
            .iter()
            .filter_map(|a| {
                let target = a.target.as_ref()?.as_object()?;
                let kind = target.get("@odata.type")?.as_str()?;
                (TargetKind::from_odata_type(kind) == Some(TargetKind::Group))
                    .then(|| target.get("groupId")?.as_str()?.parse().ok())
                    .flatten()
            })
            .collect()
    }

    /// Whether the profile is assigned to All Devices.
    pub fn all_devices(&self) -> bool {
        self.assignments.iter().any(|a| {
            a.target
                .as_ref()
                .and_then(|t| t.get("@odata.type"))
                .and_then(|k| k.as_str())
                .and_then(TargetKind::from_odata_type)
                == Some(TargetKind::AllDevices)
        })
    }
}

/// An Entra group, as far as adding members depends on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct DirectoryGroup {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "displayName", default)]
    pub display_name: Option<String>,
    /// `DynamicMembership` here: members come from a rule and cannot be added.
    #[serde(rename = "groupTypes", default)]
    pub group_types: Vec<String>,
    #[serde(rename = "securityEnabled", default)]
    pub security_enabled: Option<bool>,
}

impl DirectoryGroup {
    pub fn is_dynamic(&self) -> bool {
        self.group_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case("DynamicMembership"))
    }
}

/// An assignment as Graph returns it (201 body, or an item of the GET list).
#[derive(Debug, Clone, Deserialize)]
pub struct ReturnedAssignment {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub target: Option<serde_json::Value>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(rename = "sourceId", default)]
    pub source_id: Option<String>,
}

impl Assignment {
    /// Whether an assignment Graph holds is this one: same target (kind, group or collection,
    /// filter id and type), source and source id. Used to reconcile after an ambiguous failure,
    /// so "absent" spellings compare equal: no filter type = `none`, no source = `direct`, no
    /// source id = empty.
    pub fn matches(&self, held: &ReturnedAssignment) -> bool {
        let Some(target) = held.target.as_ref().and_then(|t| t.as_object()) else {
            return false;
        };
        let text = |key: &str| target.get(key).and_then(|v| v.as_str()).map(str::trim);
        let same_guid = |ours: Option<Uuid>, theirs: Option<&str>| {
            let theirs = theirs
                .filter(|s| !s.is_empty())
                .and_then(|s| Uuid::try_parse(s).ok())
                .filter(|u| !u.is_nil());
            ours == theirs
        };
        let kind_ok =
            text("@odata.type").and_then(TargetKind::from_odata_type) == Some(self.target.kind);
        let group_ok = same_guid(self.target.group_id, text("groupId"));
        let collection_ok = match (
            &self.target.collection_id,
            text("collectionId").filter(|s| !s.is_empty()),
        ) {
            (None, None) => true,
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        };
        let filter_ok = same_guid(
            self.target.filter_id,
            text("deviceAndAppManagementAssignmentFilterId"),
        );
        let filter_type_ok = self.target.filter_type.unwrap_or(FilterType::None)
            == text("deviceAndAppManagementAssignmentFilterType")
                .and_then(|s| FilterType::parse(s).ok())
                .unwrap_or(FilterType::None);
        let source_ok = held
            .source
            .as_deref()
            .map(|s| Source::parse(s).ok() == Some(self.source))
            .unwrap_or(self.source == Source::Direct);
        let source_id_ok =
            self.source_id.as_deref().unwrap_or("") == held.source_id.as_deref().unwrap_or("");
        kind_ok
            && group_ok
            && collection_ok
            && filter_ok
            && filter_type_ok
            && source_ok
            && source_id_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seed_body_is_reproduced_exactly() {
        let target = Target {
            kind: TargetKind::Base,
            group_id: None,
            collection_id: None,
            filter_id: None,
            filter_type: Some(FilterType::Include),
        };
        let mut value = serde_json::to_value(Assignment::new(
            target,
            Source::PolicySets,
            Some("Source Id value".into()),
            None,
        ))
        .unwrap();
        let seed: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/seed_body.json")).unwrap();
        // The seed's filter id is a placeholder string, not a GUID; patch it in to compare.
        let filter = "deviceAndAppManagementAssignmentFilterId";
        value["target"][filter] = seed["target"][filter].clone();
        assert_eq!(value, seed);
    }

    #[test]
    fn target_kinds_parse_from_words_and_odata_types() {
        assert_eq!(TargetKind::parse("All-Devices"), Ok(TargetKind::AllDevices));
        assert_eq!(
            TargetKind::parse("#microsoft.graph.groupAssignmentTarget"),
            Ok(TargetKind::Group)
        );
        assert_eq!(
            TargetKind::parse("microsoft.graph.deviceAndAppManagementAssignmentTarget"),
            Ok(TargetKind::Base)
        );
        assert!(TargetKind::parse("groups").unwrap_err().contains("groups"));
    }

    #[test]
    fn reconciliation_matches_same_target_only() {
        let group: Uuid = "2b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d".parse().unwrap();
        let ours = Assignment::new(
            Target {
                kind: TargetKind::Group,
                group_id: Some(group),
                collection_id: None,
                filter_id: None,
                filter_type: None,
            },
            Source::Direct,
            None,
            None,
        );
        let held =
            |v: serde_json::Value| -> ReturnedAssignment { serde_json::from_value(v).unwrap() };
        assert!(ours.matches(&held(json!({"id":"a","target":{"@odata.type":"microsoft.graph.groupAssignmentTarget","groupId":group.to_string().to_uppercase(),"deviceAndAppManagementAssignmentFilterType":"none"},"source":"direct"}))));
        assert!(!ours.matches(&held(json!({"id":"a","target":{"@odata.type":"#microsoft.graph.exclusionGroupAssignmentTarget","groupId":group.to_string()}}))));
        assert!(!ours.matches(&held(json!({"id":"a","target":{"@odata.type":"#microsoft.graph.groupAssignmentTarget","groupId":"3b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"}}))));
        assert!(!ours.matches(&held(json!({"id":"a","target":{"@odata.type":"#microsoft.graph.groupAssignmentTarget","groupId":group.to_string()},"source":"policySets"}))));
        assert!(!ours.matches(&held(json!({"id":"a"}))));
    }

    #[test]
    fn intune_message_is_unwrapped() {
        let m = r#"{"_version":3,"Message":"An error has occurred - Operation ID (for customer support): 00000000 - Activity ID: 1 - Url: https://x","CustomApiErrorPhrase":"","RetryAfter":null}"#;
        assert!(unwrap_intune_message(m).starts_with("An error has occurred - Operation ID"));
        assert_eq!(unwrap_intune_message(" plain "), "plain");
        assert_eq!(unwrap_intune_message("{not json"), "{not json");
    }
}

/// One device to register, as `importedWindowsAutopilotDeviceIdentities/import` takes it.
/// The hash is only ever serialized into a request body: never logged, never in a results
/// file (its `Debug` leaves it out).
#[derive(Clone, Serialize)]
pub struct ImportRecord {
    #[serde(rename = "@odata.type")]
    pub odata_type: &'static str,
    #[serde(rename = "serialNumber")]
    pub serial_number: String,
    #[serde(rename = "productKey")]
    pub product_key: String,
    #[serde(rename = "hardwareIdentifier")]
    pub hardware_identifier: String,
    #[serde(rename = "groupTag")]
    pub group_tag: String,
    #[serde(rename = "assignedUserPrincipalName")]
    pub assigned_user: String,
}

impl std::fmt::Debug for ImportRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportRecord")
            .field("serial_number", &self.serial_number)
            .field("hardware_identifier", &"<hidden>")
            .finish_non_exhaustive()
    }
}

pub const IMPORTED_ODATA_TYPE: &str = "#microsoft.graph.importedWindowsAutopilotDeviceIdentity";

/// An import record as Graph answers it (the hash is not read back).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ImportedIdentity {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "serialNumber", default)]
    pub serial_number: Option<String>,
    #[serde(default)]
    pub state: Option<ImportState>,
}

/// `importedWindowsAutopilotDeviceIdentityState`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ImportState {
    /// `unknown`, `pending`, `partial`, `complete`, `error`.
    #[serde(rename = "deviceImportStatus", default)]
    pub status: Option<String>,
    /// The identity id the device is registered as, once `complete`.
    #[serde(rename = "deviceRegistrationId", default)]
    pub registration_id: Option<String>,
    #[serde(rename = "deviceErrorCode", default)]
    pub error_code: Option<i64>,
    #[serde(rename = "deviceErrorName", default)]
    pub error_name: Option<String>,
}

/// How far the service has got with one import record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportProgress {
    /// Still being processed (`pending`, `partial`, or `unknown` without an error code).
    Pending,
    /// Registered with the Autopilot service; listed after the next sync.
    Complete,
    /// Refused: Graph's error code and name. A record can sit at `unknown` with an error code
    /// (808): the code, not the word, decides.
    Error { code: i64, name: String },
}

impl ImportedIdentity {
    pub fn progress(&self) -> ImportProgress {
        let state = self.state.clone().unwrap_or_default();
        let code = state.error_code.unwrap_or(0);
        let status = state.status.unwrap_or_default().to_ascii_lowercase();
        if code != 0 || status == "error" {
            return ImportProgress::Error {
                code,
                name: state.error_name.unwrap_or_default(),
            };
        }
        if status == "complete" {
            ImportProgress::Complete
        } else {
            ImportProgress::Pending
        }
    }
}

/// The tenant's Autopilot settings: when it last synced with the Autopilot service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AutopilotSettings {
    #[serde(rename = "lastSyncDateTime", default)]
    pub last_sync: Option<String>,
    #[serde(rename = "lastManualSyncTriggerDateTime", default)]
    pub last_manual_sync: Option<String>,
    #[serde(rename = "syncStatus", default)]
    pub sync_status: Option<String>,
}

/// The answer of `importedWindowsAutopilotDeviceIdentities/import`: the records created.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImportedBatch {
    #[serde(default)]
    pub value: Vec<ImportedIdentity>,
}

/// What the Autopilot sync request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncAnswer {
    /// Accepted (204): a sync runs now.
    Started,
    /// 409: a sync is already running.
    Running,
    /// 429: a sync ran in the last ten minutes (the service's rule, not the app's throttle).
    TooSoon,
}
