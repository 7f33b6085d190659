//! The group reads, once past bearer check, throttle (directory reads) and faults:
//! `GET /groups/{id}`, `GET /groups?$filter=displayName eq '…'` (names may repeat: zero, one or
//! several), and a group's members, paged (`/groups/{id}/members` and its
//! `microsoft.graph.device` cast). Also the lookup and the refusals the member writes share.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::devices::DEVICE;
use super::dirquery::{self, Resource, collection, page, render};
use super::entra::Group;
use super::envelope::{Answer, Errors};
use super::state::{Shared, TenantData};
use super::validate::is_guid;

/// Graph's `microsoft.graph.group`, as far as the emulator holds it.
const GROUP: Resource = Resource {
    type_name: "microsoft.graph.group",
    properties: &[
        "id",
        "description",
        "displayName",
        "groupTypes",
        "mailEnabled",
        "mailNickname",
        "membershipRule",
        "membershipRuleProcessingState",
        "securityEnabled",
    ],
    filterable: &["displayName"],
};

/// A group's members are devices only: their properties, no filter.
const MEMBER: Resource = Resource {
    filterable: &[],
    ..DEVICE
};

/// Entra ID's 404 for an object id it does not hold (a group, a member, a bound reference).
pub(crate) fn does_not_exist(id: &str) -> String {
    format!(
        "Resource '{id}' does not exist or one of its queried reference-property objects are not \
         present."
    )
}

/// Entra ID's 400 for an object id that is not a GUID.
pub(crate) fn invalid_id(errors: &Errors<'_>, id: &str) -> Answer {
    errors.answer(
        StatusCode::BAD_REQUEST,
        "Request_BadRequest",
        &format!("Invalid object identifier '{id}'."),
    )
}

/// The group a path names: 400 when not a GUID, 404 when the directory has none.
pub(crate) fn lookup(shared: &Shared, errors: &Errors<'_>, id: &str) -> Result<Group, Answer> {
    if !is_guid(id) {
        return Err(invalid_id(errors, id));
    }
    shared.entra.group(&id.to_ascii_lowercase()).ok_or_else(|| {
        errors.answer(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &does_not_exist(id),
        )
    })
}

fn properties(g: &Group) -> Vec<(&'static str, Value)> {
    let nickname: String = g
        .display_name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let (types, rule, state) = if g.dynamic {
        (
            json!(["DynamicMembership"]),
            json!(format!(
                "(device.devicePhysicalIds -any (_ -eq \"[OrderID]:{}\"))",
                g.display_name
            )),
            json!("On"),
        )
    } else {
        (json!([]), Value::Null, Value::Null)
    };
    vec![
        ("id", json!(g.id)),
        ("description", Value::Null),
        ("displayName", json!(g.display_name)),
        ("groupTypes", types),
        ("mailEnabled", json!(false)),
        ("mailNickname", json!(nickname)),
        ("membershipRule", rule),
        ("membershipRuleProcessingState", state),
        ("securityEnabled", json!(true)),
    ]
}

fn bad_query(errors: &Errors<'_>, r: dirquery::Refused) -> Answer {
    errors.answer(StatusCode::BAD_REQUEST, r.code, &r.message)
}

/// `GET /groups?…`: the configured groups, or those whose name is the filter's (ignoring
/// case). Without configured groups none are listed (though any GUID is one).
pub(crate) fn list(shared: &Shared, errors: &Errors<'_>, query: &str) -> Answer {
    let q = match dirquery::parse(query, &GROUP) {
        Ok(q) => q,
        Err(r) => return bad_query(errors, r),
    };
    let all: Vec<&Group> = shared
        .entra
        .groups()
        .iter()
        .filter(|g| {
            q.filter
                .as_ref()
                .is_none_or(|(_, name)| g.display_name.eq_ignore_ascii_case(name))
        })
        .collect();
    let (range, next) = page(&q, all.len(), shared.config.directory_page_size);
    let value = all[range]
        .iter()
        .map(|g| Value::Object(render(properties(g), q.select.as_deref())))
        .collect();
    let own = shared.addr.to_string();
    Answer::json(
        StatusCode::OK,
        collection(errors.ctx, &own, "groups", "groups", &q, next, value),
    )
}

/// `GET /groups/{id}?$select=…`
pub(crate) fn get(shared: &Shared, errors: &Errors<'_>, id: &str, query: &str) -> Answer {
    let select = match dirquery::select_only(query, &GROUP) {
        Ok(select) => select,
        Err(r) => return bad_query(errors, r),
    };
    let group = match lookup(shared, errors, id) {
        Ok(g) => g,
        Err(refused) => return refused,
    };
    let selected = select
        .as_ref()
        .map(|s| format!("({})", s.join(",")))
        .unwrap_or_default();
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!(
            "http://{}/{}/$metadata#groups{selected}/$entity",
            errors.ctx.host, errors.ctx.version
        )),
    );
    body.extend(render(properties(&group), select.as_deref()));
    Answer::json(StatusCode::OK, Value::Object(body))
}

/// `GET /groups/{id}/members[/microsoft.graph.device]?…`: the tenant's members of the group,
/// in the order they were added. The uncast collection types each member.
pub(crate) fn members(
    shared: &Shared,
    data: &TenantData,
    errors: &Errors<'_>,
    id: &str,
    cast: bool,
    query: &str,
) -> Answer {
    let q = match dirquery::parse(query, &MEMBER) {
        Ok(q) => q,
        Err(r) => return bad_query(errors, r),
    };
    let group = match lookup(shared, errors, id) {
        Ok(g) => g,
        Err(refused) => return refused,
    };
    let held = data
        .entra
        .members
        .get(&group.id)
        .map(|m| m.ordered())
        .unwrap_or_default();
    let (range, next) = page(&q, held.len(), shared.config.directory_page_size);
    let value = held[range]
        .iter()
        .filter_map(|oid| shared.device_by_object_id(data, oid))
        .map(|d| {
            let mut member = Map::new();
            if !cast {
                member.insert("@odata.type".into(), json!("#microsoft.graph.device"));
            }
            member.extend(render(d.properties(), q.select.as_deref()));
            Value::Object(member)
        })
        .collect();
    let (path, context) = if cast {
        (
            format!("groups/{}/members/microsoft.graph.device", group.id),
            "devices",
        )
    } else {
        (format!("groups/{}/members", group.id), "directoryObjects")
    };
    let own = shared.addr.to_string();
    Answer::json(
        StatusCode::OK,
        collection(errors.ctx, &own, &path, context, &q, next, value),
    )
}
