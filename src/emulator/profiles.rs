//! Autopilot deployment profiles, once past bearer check, throttle (Intune's: reads, and the
//! assignment POST as a write) and faults: the listing (`$expand=assignments` adds each
//! profile's assignments), one profile, its assignments, and `POST …/{id}/assignments`, which
//! assigns a profile to a group (or to all devices) the way working tools do.
//!
//! An assignment's id is Intune's `{profile id}_{group id}` (All devices has a fixed virtual
//! group id), so one profile holds one assignment per group: a second POST for the same group
//! answers 409 `Conflict`. (Graph's answer there is not documented; clients should read the
//! assignments back after any refusal.)
//!
//! A profile assigned to a group reaches its member devices: a member added to such a group
//! (or a group getting such an assignment) starts its identity's profile status, as a direct
//! assignment does (`pending`, then `assignedInSync` after the assign delay).

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::directory::Assigned;
use super::entra::{ALL_DEVICES_ID, Profile, ProfileTarget, profile_assignment};
use super::envelope::{Answer, Errors};
use super::ids::identity_of_object;
use super::state::{Shared, TenantData};
use super::validate::{self, is_guid};

const PROFILES: &str = "deviceManagement/windowsAutopilotDeploymentProfiles";
const PROFILE_TYPE: &str = "microsoft.graph.windowsAutopilotDeploymentProfile";

/// Intune's fixed id for the "All users" virtual group.
const ALL_USERS_ID: &str = "acacacac-9df4-4c7d-9d50-4ef0226f57a9";

fn context(errors: &Errors<'_>, rest: &str) -> String {
    format!("http://{}/beta/$metadata#{PROFILES}{rest}", errors.ctx.host)
}

/// Whether the query asks for `$expand=assignments`; 400 for another expansion.
fn expand(errors: &Errors<'_>, query: &str) -> Result<bool, Answer> {
    let Some((_, value)) = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k.eq_ignore_ascii_case("$expand"))
    else {
        return Ok(false);
    };
    for name in value.split(',').map(str::trim) {
        if !name.eq_ignore_ascii_case("assignments") {
            return Err(errors.answer(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("Could not find a property named '{name}' on type '{PROFILE_TYPE}'."),
            ));
        }
    }
    Ok(true)
}

/// The profile a path names: 400 when not a GUID, 404 when there is none.
fn lookup(shared: &Shared, errors: &Errors<'_>, id: &str) -> Result<Profile, Answer> {
    if !is_guid(id) {
        return Err(errors.answer(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Invalid key: '{id}' is not a valid windowsAutopilotDeploymentProfile id."),
        ));
    }
    shared
        .entra
        .profile(&id.to_ascii_lowercase())
        .ok_or_else(|| {
            errors.answer(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                &format!("The windowsAutopilotDeploymentProfile '{id}' was not found."),
            )
        })
}

fn render(p: &Profile, data: &TenantData, expand: bool) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, value) in [
        (
            "@odata.type",
            json!("#microsoft.graph.azureADWindowsAutopilotDeploymentProfile"),
        ),
        ("id", json!(p.id)),
        ("displayName", json!(p.display_name)),
        ("description", json!("")),
        ("language", json!("os-default")),
        ("createdDateTime", json!("2026-01-01T00:00:00Z")),
        ("lastModifiedDateTime", json!("2026-01-01T00:00:00Z")),
        ("deviceNameTemplate", json!("")),
        ("deviceType", json!("windowsPc")),
        ("enableWhiteGlove", json!(false)),
        ("extractHardwareHash", json!(false)),
        ("roleScopeTagIds", json!(["0"])),
    ] {
        out.insert(name.into(), value);
    }
    if expand {
        out.insert("assignments".into(), json!(held(data, &p.id)));
    }
    out
}

fn held<'a>(data: &'a TenantData, profile: &str) -> &'a [Value] {
    data.entra
        .profile_assignments
        .get(profile)
        .map_or(&[], Vec::as_slice)
}

/// `GET …/windowsAutopilotDeploymentProfiles[?$expand=assignments]`: the configured profiles,
/// or without any, those the tenant has assigned.
pub(crate) fn list(shared: &Shared, data: &TenantData, errors: &Errors<'_>, query: &str) -> Answer {
    let expand = match expand(errors, query) {
        Ok(e) => e,
        Err(refused) => return refused,
    };
    let profiles: Vec<Profile> = if shared.entra.profiles().is_empty() {
        data.entra
            .profile_assignments
            .keys()
            .filter_map(|id| shared.entra.profile(id))
            .collect()
    } else {
        shared.entra.profiles().to_vec()
    };
    let value: Vec<Value> = profiles
        .iter()
        .map(|p| Value::Object(render(p, data, expand)))
        .collect();
    Answer::json(
        StatusCode::OK,
        json!({"@odata.context": context(errors, ""), "value": value}),
    )
}

/// `GET …/windowsAutopilotDeploymentProfiles/{id}[?$expand=assignments]`
pub(crate) fn get(
    shared: &Shared,
    data: &TenantData,
    errors: &Errors<'_>,
    id: &str,
    query: &str,
) -> Answer {
    let expand = match expand(errors, query) {
        Ok(e) => e,
        Err(refused) => return refused,
    };
    let profile = match lookup(shared, errors, id) {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(context(errors, "/$entity")));
    body.extend(render(&profile, data, expand));
    Answer::json(StatusCode::OK, Value::Object(body))
}

/// `GET …/windowsAutopilotDeploymentProfiles/{id}/assignments`
pub(crate) fn assignments(
    shared: &Shared,
    data: &TenantData,
    errors: &Errors<'_>,
    id: &str,
) -> Answer {
    let profile = match lookup(shared, errors, id) {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let context = context(errors, &format!("('{}')/assignments", profile.id));
    Answer::json(
        StatusCode::OK,
        json!({"@odata.context": context, "value": held(data, &profile.id)}),
    )
}

/// The key an assignment's target is held under (a group id, or a virtual group's), and the
/// group whose members it reaches. `None`: a target a profile cannot be assigned to.
fn target_key(target: &Value) -> Option<(String, Option<String>)> {
    let kind = target.get("@odata.type")?.as_str()?.trim_start_matches('#');
    let group = || target.get("groupId")?.as_str().map(str::to_ascii_lowercase);
    match kind {
        "microsoft.graph.groupAssignmentTarget" => group().map(|g| (g.clone(), Some(g))),
        "microsoft.graph.exclusionGroupAssignmentTarget" => group().map(|g| (g, None)),
        "microsoft.graph.allDevicesAssignmentTarget" => Some((ALL_DEVICES_ID.into(), None)),
        "microsoft.graph.allLicensedUsersAssignmentTarget" => Some((ALL_USERS_ID.into(), None)),
        _ => None,
    }
}

/// `POST …/windowsAutopilotDeploymentProfiles/{id}/assignments`: 201 with the assignment.
pub(crate) fn assign(
    shared: &Shared,
    data: &mut TenantData,
    errors: &Errors<'_>,
    id: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Answer {
    let profile = match lookup(shared, errors, id) {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let bad = |message: &str| errors.answer(StatusCode::BAD_REQUEST, "BadRequest", message);
    if !validate::is_json(content_type) {
        return bad(validate::UNREADABLE_JSON);
    }
    let mut stored = match validate::assignment(body) {
        Ok(stored) => stored,
        Err(message) => return bad(&message),
    };
    let target = stored.remove("target").unwrap_or_default();
    let Some((key, reaches)) = target_key(&target) else {
        return bad(
            "A deployment profile is assigned to a group, an exclusion group or all devices.",
        );
    };
    let assignment_id = format!("{}_{key}", profile.id);
    let list = data
        .entra
        .profile_assignments
        .entry(profile.id.clone())
        .or_default();
    if list.iter().any(|a| a["id"] == assignment_id.as_str()) {
        return errors.answer(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "The profile '{}' is already assigned to '{key}'.",
                profile.id
            ),
        );
    }
    let source_id = match stored.remove("sourceId") {
        Some(Value::String(s)) => json!(s),
        _ => json!(profile.id),
    };
    let assignment = json!({
        "@odata.type": validate::ASSIGNMENT_TYPE,
        "id": assignment_id,
        "target": target,
        "source": stored.remove("source").unwrap_or_else(|| json!("direct")),
        "sourceId": source_id,
    });
    list.push(assignment.clone());
    data.stats.profile_assignments_created += 1;
    if let Some(group) = reaches {
        let members: Vec<String> = data
            .entra
            .members
            .get(&group)
            .map(|m| m.ordered().to_vec())
            .unwrap_or_default();
        start_status(data, &members);
    }
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(context(
            errors,
            &format!("('{}')/assignments/$entity", profile.id)
        )),
    );
    if let Value::Object(fields) = assignment {
        body.extend(fields);
    }
    Answer::json(StatusCode::CREATED, Value::Object(body))
}

/// Members were added to `group`: if a profile is assigned to it, their identities' profile
/// status starts.
pub(crate) fn members_added(data: &mut TenantData, group: &str, objects: &[String]) {
    let target = ProfileTarget::Group(group.to_string());
    let assigned = data
        .entra
        .profile_assignments
        .iter()
        .any(|(profile, list)| {
            let id = profile_assignment(profile, &target)["id"].clone();
            list.iter().any(|a| a["id"] == id)
        });
    if assigned {
        start_status(data, objects);
    }
}

/// The identities of these device objects have a profile from now on (the first time only).
fn start_status(data: &mut TenantData, objects: &[String]) {
    for identity in objects.iter().filter_map(|o| identity_of_object(o)) {
        data.first_assigned
            .entry(identity)
            .or_insert_with(Assigned::now);
    }
}
