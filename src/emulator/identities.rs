//! The identity reads, once past bearer check, throttle and faults: the paged listing of
//! `windowsAutopilotDeviceIdentities` and the GET of one identity.
//!
//! Paging as Graph does it: pages of at most `min($top, page_size)` identities in a stable
//! order, each but the last with an absolute `@odata.nextLink` carrying an opaque
//! `$skiptoken` (and the query's other options). Two switches rehearse Graph's known
//! failures: any `$select` answering 500, and page 2 repeating page 1's next link.
//!
//! Every tenant lists the same configured identities, then those its own syncs registered
//! from import records; their profile status and properties are the caller's tenant's own.

use tokio::time::Instant;

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::directory::{Entry, assignment_status, properties, render};
use super::envelope::{Answer, Ctx, Errors};
use super::odata::{self, Query};
use super::state::{Shared, TenantData};
use super::validate::is_guid;

const IDENTITIES: &str = "deviceManagement/windowsAutopilotDeviceIdentities";

/// `GET /deviceManagement/windowsAutopilotDeviceIdentities?…`
pub(crate) fn list(
    shared: &Shared,
    data: &TenantData,
    errors: &Errors<'_>,
    ctx: &Ctx,
    query: &str,
) -> Answer {
    if let Some(failed) = select_failure(shared, errors, query) {
        return failed;
    }
    let q = match odata::parse(query) {
        Ok(q) => q,
        Err(refused) => return errors.answer(StatusCode::BAD_REQUEST, "BadRequest", &refused.0),
    };
    let matching: Vec<&Entry> = shared
        .directory
        .entries()
        .iter()
        .chain(data.registered.entries())
        .filter(|e| {
            q.serial
                .as_deref()
                .is_none_or(|s| e.serial.to_lowercase().contains(&s.to_lowercase()))
        })
        .collect();
    let cap = shared.config.page_size.max(1);
    let page_len = q.top.unwrap_or(cap).min(cap);
    let start = q.offset.min(matching.len());
    let end = start.saturating_add(page_len).min(matching.len());
    let now = Instant::now();
    let value: Vec<Value> = matching[start..end]
        .iter()
        .map(|e| identity(shared, data, e, q.select.as_deref(), now))
        .collect();

    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(context(ctx, &q.select)));
    // Page 2 is the one page 1's link leads to; the switch makes it lead there again.
    let next = if shared.config.repeat_next_link && start > 0 && start == page_len {
        Some(page_len)
    } else {
        (end < matching.len()).then_some(end)
    };
    if let Some(offset) = next {
        body.insert(
            "@odata.nextLink".into(),
            json!(next_link(shared, &q, offset)),
        );
    }
    body.insert("value".into(), Value::Array(value));
    let mut answer = Answer::json(StatusCode::OK, Value::Object(body));
    if let Some(delay) = shared.config.listing_delay.filter(|_| start > 0) {
        answer.delay_ms = u32::try_from(delay.as_millis()).unwrap_or(u32::MAX);
    }
    answer
}

/// `GET /deviceManagement/windowsAutopilotDeviceIdentities/{id}`
pub(crate) fn get(
    shared: &Shared,
    data: &TenantData,
    errors: &Errors<'_>,
    ctx: &Ctx,
    id: &str,
    query: &str,
) -> Answer {
    if let Some(failed) = select_failure(shared, errors, query) {
        return failed;
    }
    let select = match odata::select_only(query) {
        Ok(select) => select,
        Err(refused) => return errors.answer(StatusCode::BAD_REQUEST, "BadRequest", &refused.0),
    };
    if !is_guid(id) {
        return errors.answer(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "Invalid key: '{id}' is not a valid windowsAutopilotDeviceIdentity id (a GUID)."
            ),
        );
    }
    let Some(entry) = shared.identity(data, &id.to_ascii_lowercase()) else {
        return errors.answer(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!("The windowsAutopilotDeviceIdentity '{id}' was not found."),
        );
    };
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!("{}/$entity", context(ctx, &select))),
    );
    if let Value::Object(fields) = identity(shared, data, entry, select.as_deref(), Instant::now())
    {
        body.extend(fields);
    }
    Answer::json(StatusCode::OK, Value::Object(body))
}

/// The 500 Graph gives for `$select` on this resource, when the switch asks for it.
fn select_failure(shared: &Shared, errors: &Errors<'_>, query: &str) -> Option<Answer> {
    (shared.config.select_fails && odata::has_select(query)).then(|| {
        errors.answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "An internal server error has occurred",
        )
    })
}

fn identity(
    shared: &Shared,
    data: &TenantData,
    entry: &Entry,
    select: Option<&[String]>,
    now: Instant,
) -> Value {
    let first = data.first_assigned.get(&entry.id).copied();
    let (status, assigned_at) = assignment_status(first, shared.config.assign_delay, now);
    let mut props = properties(entry, status, &assigned_at);
    // The Entra device's id, under both of the names Graph's beta gives it.
    let device_id = json!(shared.entra.azure_ad_device_id(&entry.id));
    for (name, value) in &mut props {
        if matches!(*name, "azureActiveDirectoryDeviceId" | "azureAdDeviceId") {
            *value = device_id.clone();
        }
    }
    if let Some(imported) = data.registered.imported(&entry.id) {
        for (name, value) in &mut props {
            match *name {
                "groupTag" => *value = json!(imported.group_tag),
                "productKey" => *value = json!(imported.product_key),
                "userPrincipalName" => *value = json!(imported.upn),
                _ => {}
            }
        }
    }
    if let Some(updated) = data.updated.get(&entry.id) {
        for (name, value) in &mut props {
            if let Some(set) = updated.get(*name) {
                *value = set.clone();
            }
        }
    }
    render(props, select)
}

/// `…/$metadata#deviceManagement/windowsAutopilotDeviceIdentities`, with the selected
/// properties in parentheses as OData writes them.
fn context(ctx: &Ctx, select: &Option<Vec<String>>) -> String {
    let selected = select
        .as_ref()
        .map(|s| format!("({})", s.join(",")))
        .unwrap_or_default();
    format!("http://{}/beta/$metadata#{IDENTITIES}{selected}", ctx.host)
}

/// The absolute link to the page at `offset`, on the emulator's own base URL, repeating the
/// query's `$top`, `$filter` and `$select`.
fn next_link(shared: &Shared, q: &Query, offset: usize) -> String {
    let enc = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    let mut params = Vec::new();
    if let Some(top) = q.top {
        params.push(format!("$top={top}"));
    }
    if let Some(filter) = &q.raw_filter {
        params.push(format!("$filter={}", enc(filter)));
    }
    if let Some(select) = &q.raw_select {
        params.push(format!("$select={}", enc(select)));
    }
    params.push(format!("$skiptoken={}", odata::skiptoken_for(offset)));
    format!(
        "http://{}/beta/{IDENTITIES}?{}",
        shared.addr,
        params.join("&")
    )
}
