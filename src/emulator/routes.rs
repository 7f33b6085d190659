//! Which Graph resource a path names ([`Route`]), and what a method on it does ([`Target`]),
//! with the service whose throttle it spends. Pure matching: the request pipeline (`graph`)
//! answers the refusals.

use axum::http::Method;

use super::throttle::Bucket;

/// A Graph path (below the version segment) this emulator knows.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// `/deviceManagement/windowsAutopilotDeviceIdentities/{id}/deploymentProfile/assignments`
    Assignments(&'a str),
    /// `/deviceManagement/windowsAutopilotDeviceIdentities/{id}/deploymentProfile/assignments/{aid}`
    Assignment(&'a str, &'a str),
    /// `/deviceManagement/windowsAutopilotDeviceIdentities/{id}/updateDeviceProperties`
    UpdateDeviceProperties(&'a str),
    /// `/deviceManagement/windowsAutopilotDeviceIdentities`
    Identities,
    /// `/deviceManagement/windowsAutopilotDeviceIdentities/{id}`
    Identity(&'a str),
    /// `/deviceManagement/importedWindowsAutopilotDeviceIdentities`
    ImportedIdentities,
    /// `/deviceManagement/importedWindowsAutopilotDeviceIdentities/import`
    Import,
    /// `/deviceManagement/importedWindowsAutopilotDeviceIdentities/{id}`
    ImportedIdentity(&'a str),
    /// `/deviceManagement/windowsAutopilotSettings`
    AutopilotSettings,
    /// `/deviceManagement/windowsAutopilotSettings/sync`
    AutopilotSync,
    /// `/deviceManagement/windowsAutopilotDeploymentProfiles`
    Profiles,
    /// `/deviceManagement/windowsAutopilotDeploymentProfiles/{id}`
    Profile(&'a str),
    /// `/deviceManagement/windowsAutopilotDeploymentProfiles/{id}/assignments`
    ProfileAssignments(&'a str),
    /// `/devices` (Entra ID's device objects)
    Devices,
    /// `/groups`
    Groups,
    /// `/groups/{id}`
    Group(&'a str),
    /// `/groups/{id}/members`, or its cast `/groups/{id}/members/microsoft.graph.device`
    /// (`true`).
    Members(&'a str, bool),
    /// `/groups/{id}/members/$ref`
    MemberRefs(&'a str),
    /// `/groups/{id}/members/{member}/$ref`
    MemberRef(&'a str, &'a str),
    Batch,
    Unknown,
}

impl Route<'_> {
    /// Whether it is Entra ID's (served under `v1.0` as under `beta`); Intune's Autopilot
    /// resources are beta only.
    pub(crate) fn is_entra(&self) -> bool {
        matches!(
            self,
            Route::Devices
                | Route::Groups
                | Route::Group(_)
                | Route::Members(..)
                | Route::MemberRefs(_)
                | Route::MemberRef(..)
        )
    }
}

/// Match a path below the version segment (a query is ignored). Graph matches segment names
/// case-insensitively; `$` may come percent-encoded.
pub(crate) fn route(path: &str) -> Route<'_> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let is = |s: &str, name: &str| s.eq_ignore_ascii_case(name);
    let dollar = |s: &str, name: &str| {
        s.strip_prefix('$')
            .or_else(|| s.strip_prefix("%24"))
            .is_some_and(|rest| rest.eq_ignore_ascii_case(name))
    };
    let dm = |dm: &str, set: &str, name: &str| is(dm, "deviceManagement") && is(set, name);
    let identities = |d: &str, s: &str| dm(d, s, "windowsAutopilotDeviceIdentities");
    let profiles = |d: &str, s: &str| dm(d, s, "windowsAutopilotDeploymentProfiles");
    let imported = |d: &str, s: &str| dm(d, s, "importedWindowsAutopilotDeviceIdentities");
    let settings = |d: &str, s: &str| dm(d, s, "windowsAutopilotSettings");
    match segments.as_slice() {
        [b] if dollar(b, "batch") => Route::Batch,
        [d, s] if identities(d, s) => Route::Identities,
        [d, s, id] if identities(d, s) => Route::Identity(id),
        [d, s, id, u] if identities(d, s) && is(u, "updateDeviceProperties") => {
            Route::UpdateDeviceProperties(id)
        }
        [d, s, id, dp, a]
            if identities(d, s) && is(dp, "deploymentProfile") && is(a, "assignments") =>
        {
            Route::Assignments(id)
        }
        [d, s, id, dp, a, aid]
            if identities(d, s) && is(dp, "deploymentProfile") && is(a, "assignments") =>
        {
            Route::Assignment(id, aid)
        }
        [d, s] if imported(d, s) => Route::ImportedIdentities,
        [d, s, a] if imported(d, s) && is(a, "import") => Route::Import,
        [d, s, id] if imported(d, s) => Route::ImportedIdentity(id),
        [d, s] if settings(d, s) => Route::AutopilotSettings,
        [d, s, a] if settings(d, s) && is(a, "sync") => Route::AutopilotSync,
        [d, s] if profiles(d, s) => Route::Profiles,
        [d, s, id] if profiles(d, s) => Route::Profile(id),
        [d, s, id, a] if profiles(d, s) && is(a, "assignments") => Route::ProfileAssignments(id),
        [d] if is(d, "devices") => Route::Devices,
        [g] if is(g, "groups") => Route::Groups,
        [g, id] if is(g, "groups") => Route::Group(id),
        [g, id, m] if is(g, "groups") && is(m, "members") => Route::Members(id, false),
        [g, id, m, r] if is(g, "groups") && is(m, "members") && dollar(r, "ref") => {
            Route::MemberRefs(id)
        }
        [g, id, m, c] if is(g, "groups") && is(m, "members") && is(c, "microsoft.graph.device") => {
            Route::Members(id, true)
        }
        [g, id, m, member, r] if is(g, "groups") && is(m, "members") && dollar(r, "ref") => {
            Route::MemberRef(id, member)
        }
        _ => Route::Unknown,
    }
}

/// Whether the request is a write that starts the timed outage's clock: an assignment POST,
/// or a group member write (what `run --action group` sends first).
pub(crate) fn starts_outage(route: &Route<'_>, method: &Method) -> bool {
    match route {
        Route::Assignments(_) | Route::MemberRefs(_) => *method == Method::POST,
        Route::Group(_) => *method == Method::PATCH,
        _ => false,
    }
}

/// What a request with a known route and an allowed method does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    Assign(&'a str),
    /// `DELETE` of one assignment: the device, the assignment id.
    DeleteAssignment(&'a str, &'a str),
    UpdateProperties(&'a str),
    ReadAssignments(&'a str),
    ListIdentities,
    ReadIdentity(&'a str),
    ListProfiles,
    ReadProfile(&'a str),
    ReadProfileAssignments(&'a str),
    AssignProfile(&'a str),
    ListDevices,
    ListGroups,
    ReadGroup(&'a str),
    /// The group, and whether the path is the `microsoft.graph.device` cast.
    ListMembers(&'a str, bool),
    /// `PATCH /groups/{id}` with `members@odata.bind`.
    BindMembers(&'a str),
    AddMember(&'a str),
    RemoveMember(&'a str, &'a str),
    /// The `import` action: a batch of records.
    ImportRecords,
    /// `POST` of one import record.
    CreateRecord,
    ListRecords,
    ReadRecord(&'a str),
    DeleteRecord(&'a str),
    SyncAutopilot,
    ReadAutopilotSettings,
}

impl Target<'_> {
    /// The service whose throttle the request spends.
    pub(crate) fn bucket(&self) -> Bucket {
        match self {
            Target::ListDevices
            | Target::ListGroups
            | Target::ReadGroup(_)
            | Target::ListMembers(..)
            | Target::BindMembers(_)
            | Target::AddMember(_)
            | Target::RemoveMember(..) => Bucket::Directory,
            _ => Bucket::Intune,
        }
    }

    /// Whether it spends the write window (and may make promises violations are judged by).
    pub(crate) fn is_write(&self) -> bool {
        matches!(
            self,
            Target::Assign(_)
                | Target::DeleteAssignment(..)
                | Target::UpdateProperties(_)
                | Target::AssignProfile(_)
                | Target::BindMembers(_)
                | Target::AddMember(_)
                | Target::RemoveMember(..)
                | Target::ImportRecords
                | Target::CreateRecord
                | Target::DeleteRecord(_)
                | Target::SyncAutopilot
        )
    }
}

/// Why a request never reaches a resource: answered before anything is counted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 405.
    MethodNotAllowed,
    /// 400: a `$batch` inside a `$batch`.
    NestedBatch,
    /// 400 "Resource not found for the segment …", with the path's first segment.
    UnknownSegment(String),
}

/// The target of a route and method. `entra_only`: the version serves Entra ID's resources
/// only (`v1.0`).
pub(crate) fn target<'a>(
    route: Route<'a>,
    method: &Method,
    path: &str,
    entra_only: bool,
) -> Result<Target<'a>, Refusal> {
    if entra_only && !route.is_entra() && route != Route::Batch {
        return Err(unknown(path));
    }
    let (get, post) = (*method == Method::GET, *method == Method::POST);
    let (patch, delete) = (*method == Method::PATCH, *method == Method::DELETE);
    match route {
        Route::Assignments(device) if post => Ok(Target::Assign(device)),
        Route::Assignments(device) if get => Ok(Target::ReadAssignments(device)),
        Route::Assignment(device, id) if delete => Ok(Target::DeleteAssignment(device, id)),
        Route::UpdateDeviceProperties(device) if post => Ok(Target::UpdateProperties(device)),
        Route::Identities if get => Ok(Target::ListIdentities),
        Route::Identity(id) if get => Ok(Target::ReadIdentity(id)),
        Route::Profiles if get => Ok(Target::ListProfiles),
        Route::Profile(id) if get => Ok(Target::ReadProfile(id)),
        Route::ProfileAssignments(id) if get => Ok(Target::ReadProfileAssignments(id)),
        Route::ProfileAssignments(id) if post => Ok(Target::AssignProfile(id)),
        Route::Import if post => Ok(Target::ImportRecords),
        Route::ImportedIdentities if post => Ok(Target::CreateRecord),
        Route::ImportedIdentities if get => Ok(Target::ListRecords),
        Route::ImportedIdentity(id) if get => Ok(Target::ReadRecord(id)),
        Route::ImportedIdentity(id) if delete => Ok(Target::DeleteRecord(id)),
        Route::AutopilotSync if post => Ok(Target::SyncAutopilot),
        Route::AutopilotSettings if get => Ok(Target::ReadAutopilotSettings),
        Route::Devices if get => Ok(Target::ListDevices),
        Route::Groups if get => Ok(Target::ListGroups),
        Route::Group(id) if get => Ok(Target::ReadGroup(id)),
        Route::Group(id) if patch => Ok(Target::BindMembers(id)),
        Route::Members(id, cast) if get => Ok(Target::ListMembers(id, cast)),
        Route::MemberRefs(id) if post => Ok(Target::AddMember(id)),
        Route::MemberRef(id, member) if delete => Ok(Target::RemoveMember(id, member)),
        Route::Batch => Err(Refusal::NestedBatch),
        Route::Unknown => Err(unknown(path)),
        _ => Err(Refusal::MethodNotAllowed),
    }
}

fn unknown(path: &str) -> Refusal {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let segment = path.trim_matches('/').split('/').next().unwrap_or("");
    Refusal::UnknownSegment(segment.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_case_insensitively() {
        assert_eq!(route("/$batch"), Route::Batch);
        assert_eq!(route("/%24batch"), Route::Batch);
        assert_eq!(
            route(
                "/deviceManagement/windowsAutopilotDeviceIdentities/abc/deploymentProfile/assignments?x=1"
            ),
            Route::Assignments("abc")
        );
        assert_eq!(
            route(
                "/devicemanagement/WINDOWSAUTOPILOTDEVICEIDENTITIES/abc/deploymentprofile/assignments/"
            ),
            Route::Assignments("abc")
        );
        assert_eq!(
            route("/deviceManagement/windowsAutopilotDeviceIdentities?$top=5"),
            Route::Identities
        );
        assert_eq!(
            route("/devicemanagement/windowsautopilotdeviceidentities/abc"),
            Route::Identity("abc")
        );
        assert_eq!(route("/me"), Route::Unknown);
        assert_eq!(route(""), Route::Unknown);
    }

    #[test]
    fn directory_and_profile_routes() {
        assert_eq!(route("/devices?$top=999"), Route::Devices);
        assert_eq!(route("/Groups"), Route::Groups);
        assert_eq!(route("/groups/g1"), Route::Group("g1"));
        assert_eq!(route("/groups/g1/members"), Route::Members("g1", false));
        assert_eq!(
            route("/groups/g1/members/Microsoft.Graph.Device?$select=id"),
            Route::Members("g1", true)
        );
        assert_eq!(route("/groups/g1/members/$ref"), Route::MemberRefs("g1"));
        assert_eq!(route("/groups/g1/members/%24REF"), Route::MemberRefs("g1"));
        assert_eq!(
            route("/groups/g1/members/o1/$ref"),
            Route::MemberRef("g1", "o1")
        );
        assert_eq!(route("/groups/g1/owners"), Route::Unknown);
        assert_eq!(
            route("/deviceManagement/windowsAutopilotDeploymentProfiles?$expand=assignments"),
            Route::Profiles
        );
        assert_eq!(
            route("/deviceManagement/windowsAutopilotDeploymentProfiles/p1/assignments"),
            Route::ProfileAssignments("p1")
        );
    }

    #[test]
    fn import_and_sync_routes_are_beta_intune_writes_and_reads() {
        let t = |path, method: Method, entra_only| target(route(path), &method, path, entra_only);
        let records = "/deviceManagement/importedWindowsAutopilotDeviceIdentities";
        let import = format!("{records}/Import");
        let one = format!("{records}/abc");
        let sync = "/deviceManagement/windowsAutopilotSettings/sync";
        fn kind(t: Result<Target<'_>, Refusal>) -> Result<(Target<'_>, Bucket, bool), Refusal> {
            t.map(|t| (t, t.bucket(), t.is_write()))
        }
        assert_eq!(
            kind(t(&import, Method::POST, false)),
            Ok((Target::ImportRecords, Bucket::Intune, true))
        );
        assert_eq!(
            kind(t(records, Method::POST, false)),
            Ok((Target::CreateRecord, Bucket::Intune, true))
        );
        assert_eq!(
            kind(t(&one, Method::GET, false)),
            Ok((Target::ReadRecord("abc"), Bucket::Intune, false))
        );
        assert_eq!(
            t(&one, Method::DELETE, false),
            Ok(Target::DeleteRecord("abc"))
        );
        assert_eq!(
            t(&import, Method::GET, false),
            Err(Refusal::MethodNotAllowed)
        );
        assert_eq!(
            kind(t(sync, Method::POST, false)),
            Ok((Target::SyncAutopilot, Bucket::Intune, true))
        );
        assert_eq!(
            t(
                "/deviceManagement/windowsAutopilotSettings",
                Method::GET,
                false
            ),
            Ok(Target::ReadAutopilotSettings)
        );
        assert_eq!(
            t(sync, Method::POST, true),
            Err(Refusal::UnknownSegment("deviceManagement".into()))
        );
    }

    #[test]
    fn targets_by_method_and_version() {
        let t = |path, method: Method, entra_only| target(route(path), &method, path, entra_only);
        assert_eq!(
            t("/groups/g", Method::PATCH, false),
            Ok(Target::BindMembers("g"))
        );
        assert_eq!(
            t("/groups/g", Method::PATCH, true),
            Ok(Target::BindMembers("g"))
        );
        assert_eq!(
            t("/groups/g", Method::DELETE, false),
            Err(Refusal::MethodNotAllowed)
        );
        assert_eq!(
            t("/groups/g/members/o/$ref", Method::DELETE, false),
            Ok(Target::RemoveMember("g", "o"))
        );
        assert_eq!(
            t(
                "/deviceManagement/windowsAutopilotDeviceIdentities",
                Method::GET,
                true
            ),
            Err(Refusal::UnknownSegment("deviceManagement".into()))
        );
        assert_eq!(t("/$batch", Method::POST, true), Err(Refusal::NestedBatch));
        assert_eq!(
            t("/groups/g", Method::PATCH, false).map(|t| (t.bucket(), t.is_write())),
            Ok((Bucket::Directory, true))
        );
        assert_eq!(
            t(
                "/deviceManagement/windowsAutopilotDeploymentProfiles/p/assignments",
                Method::POST,
                false
            )
            .map(|t| (t.bucket(), t.is_write())),
            Ok((Bucket::Intune, true))
        );
    }
}
