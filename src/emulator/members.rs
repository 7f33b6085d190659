//! The member writes, once past bearer check, throttle (directory writes) and faults, as
//! Entra ID does them:
//!
//! - `PATCH /groups/{id}` with `members@odata.bind`: at most 20 references, all or nothing.
//!   One reference that names no device object, or one already a member (or named twice),
//!   refuses the whole request 400 and adds none; else 204 and all are added.
//! - `POST /groups/{id}/members/$ref` with one `@odata.id`: 204; 400 when already a member,
//!   404 when it names no device object.
//! - `DELETE /groups/{id}/members/{id}/$ref`: 204; 404 when not a member.
//!
//! A dynamic group refuses every member write 400. References may carry any host and version
//! (`https://graph.microsoft.com/v1.0/directoryObjects/{id}`): the last path segment is the id.

use std::collections::HashSet;

use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::entra::Group;
use super::envelope::{Answer, Errors};
use super::groups::{does_not_exist, invalid_id, lookup};
use super::profiles;
use super::state::{Shared, TenantData};
use super::validate::{self, is_guid};

/// Graph's cap on references in one `members@odata.bind`.
pub(crate) const MAX_BIND: usize = 20;

/// Graph's message for a write that would add an existing member.
pub(crate) const ALREADY_MEMBERS: &str = "One or more added object references already exist for \
     the following modified properties: 'members'.";

const BIND: &str = "members@odata.bind";

fn bad(errors: &Errors<'_>, message: &str) -> Answer {
    errors.answer(StatusCode::BAD_REQUEST, "Request_BadRequest", message)
}

/// The request body as a JSON object, or Graph's 400.
fn body_object(
    errors: &Errors<'_>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Map<String, Value>, Answer> {
    if !validate::is_json(content_type) {
        return Err(errors.answer(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            validate::UNREADABLE_JSON,
        ));
    }
    validate::json_object(body)
        .map_err(|message| errors.answer(StatusCode::BAD_REQUEST, "BadRequest", &message))
}

/// The group a write names, refusing a dynamic one.
fn writable(shared: &Shared, errors: &Errors<'_>, id: &str) -> Result<Group, Answer> {
    let group = lookup(shared, errors, id)?;
    if group.dynamic {
        return Err(bad(
            errors,
            &format!(
                "Members of the dynamic group '{}' cannot be added or removed: its membership \
                 is computed from its membershipRule.",
                group.id
            ),
        ));
    }
    Ok(group)
}

/// The object id a reference URL names: its last path segment (also `…/directoryObjects('id')`),
/// lower case; `None` when that is no GUID.
pub(crate) fn object_id(reference: &str) -> Option<String> {
    let path = reference.split(['?', '#']).next().unwrap_or("");
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let id = match last.split_once('(') {
        Some((_, key)) => key.trim_end_matches(')').trim_matches('\''),
        None => last,
    };
    is_guid(id).then(|| id.to_ascii_lowercase())
}

/// `PATCH /groups/{id}`. A body without `members@odata.bind` changes nothing here (204).
pub(crate) fn bind(
    shared: &Shared,
    data: &mut TenantData,
    errors: &Errors<'_>,
    group: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Answer {
    let group = match lookup(shared, errors, group) {
        Ok(g) => g,
        Err(refused) => return refused,
    };
    let body = match body_object(errors, content_type, body) {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let Some(refs) = body.get(BIND) else {
        return Answer::json(StatusCode::NO_CONTENT, Value::Null);
    };
    let refs: Option<Vec<&str>> = refs
        .as_array()
        .and_then(|list| list.iter().map(Value::as_str).collect());
    let Some(refs) = refs else {
        return bad(
            errors,
            "Invalid value for 'members@odata.bind': expected an array of directory object URLs.",
        );
    };
    if refs.len() > MAX_BIND {
        return bad(
            errors,
            &format!(
                "The request has {} references in 'members@odata.bind'; at most {MAX_BIND} can \
                 be added in one request.",
                refs.len()
            ),
        );
    }
    if let Err(refused) = writable(shared, errors, &group.id) {
        return refused;
    }
    let mut objects = Vec::with_capacity(refs.len());
    for r in refs {
        match object_id(r) {
            Some(id) => objects.push(id),
            None => {
                return bad(
                    errors,
                    "Invalid URL format specified in @odata.bind for members",
                );
            }
        }
    }
    add_all(
        shared,
        data,
        errors,
        &group,
        &objects,
        StatusCode::BAD_REQUEST,
    )
}

/// `POST /groups/{id}/members/$ref` with `{"@odata.id": "…/directoryObjects/{id}"}`.
pub(crate) fn add(
    shared: &Shared,
    data: &mut TenantData,
    errors: &Errors<'_>,
    group: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Answer {
    let group = match writable(shared, errors, group) {
        Ok(g) => g,
        Err(refused) => return refused,
    };
    let body = match body_object(errors, content_type, body) {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let Some(object) = body
        .get("@odata.id")
        .and_then(Value::as_str)
        .and_then(object_id)
    else {
        return bad(
            errors,
            "Invalid request body: '@odata.id' must be the URL of a directory object.",
        );
    };
    add_all(
        shared,
        data,
        errors,
        &group,
        &[object],
        StatusCode::NOT_FOUND,
    )
}

/// Add every object or none: each must be a device object of the directory and not yet a
/// member (nor named twice). `missing`: the status for an object the directory has not (the
/// PATCH says 400, the single POST 404).
fn add_all(
    shared: &Shared,
    data: &mut TenantData,
    errors: &Errors<'_>,
    group: &Group,
    objects: &[String],
    missing: StatusCode,
) -> Answer {
    let held = data.entra.members.get(&group.id);
    let mut named = HashSet::new();
    let duplicates = objects
        .iter()
        .filter(|o| !named.insert(o.as_str()) || held.is_some_and(|m| m.contains(o)))
        .count();
    data.stats.duplicate_member_attempts += duplicates as u64;
    let unknown = objects
        .iter()
        .find(|o| shared.device_by_object_id(data, o).is_none());
    if let Some(unknown) = unknown {
        let code = if missing == StatusCode::NOT_FOUND {
            "Request_ResourceNotFound"
        } else {
            "Request_BadRequest"
        };
        return errors.answer(missing, code, &does_not_exist(unknown));
    }
    if duplicates > 0 {
        return bad(errors, ALREADY_MEMBERS);
    }
    let members = data.entra.members.entry(group.id.clone()).or_default();
    for o in objects {
        members.insert(o);
    }
    data.stats.members_added += objects.len() as u64;
    profiles::members_added(data, &group.id, objects);
    Answer::json(StatusCode::NO_CONTENT, Value::Null)
}

/// `DELETE /groups/{id}/members/{member}/$ref`.
pub(crate) fn remove(
    shared: &Shared,
    data: &mut TenantData,
    errors: &Errors<'_>,
    group: &str,
    member: &str,
) -> Answer {
    let group = match writable(shared, errors, group) {
        Ok(g) => g,
        Err(refused) => return refused,
    };
    if !is_guid(member) {
        return invalid_id(errors, member);
    }
    let member = member.to_ascii_lowercase();
    let removed = data
        .entra
        .members
        .get_mut(&group.id)
        .is_some_and(|m| m.remove(&member));
    if !removed {
        return errors.answer(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &does_not_exist(&member),
        );
    }
    data.stats.members_removed += 1;
    Answer::json(StatusCode::NO_CONTENT, Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_their_last_segment() {
        let id = "3C3C3C3D-3C3C-4C3C-9C3C-3C3C3C3C362E";
        let lower = id.to_ascii_lowercase();
        for r in [
            format!("https://graph.microsoft.com/v1.0/directoryObjects/{id}"),
            format!("https://graph.microsoft.us/beta/devices/{id}/"),
            format!("http://127.0.0.1:1/v1.0/directoryObjects('{id}')"),
            format!("directoryObjects/{id}?x=1"),
            id.to_string(),
        ] {
            assert_eq!(object_id(&r).as_deref(), Some(lower.as_str()), "{r}");
        }
        for bad in [
            "",
            "https://graph.microsoft.com/v1.0/directoryObjects/",
            "x/not-a-guid",
        ] {
            assert_eq!(object_id(bad), None, "{bad}");
        }
    }
}
