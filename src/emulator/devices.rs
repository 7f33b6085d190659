//! `GET /devices`, once past bearer check, throttle (a directory read) and faults: Entra ID's
//! device objects, paged, or the one whose `deviceId` is an identity's `azureAdDeviceId`
//! (`$filter=deviceId eq '…'`, zero or one): how a client finds the object id a group binds.

use axum::http::StatusCode;
use serde_json::Value;

use super::dirquery::{self, Resource, collection, page, render};
use super::entra::DeviceObject;
use super::envelope::{Answer, Errors};
use super::state::Shared;

/// Graph's `microsoft.graph.device`, as far as the emulator holds it.
pub(crate) const DEVICE: Resource = Resource {
    type_name: "microsoft.graph.device",
    properties: &[
        "id",
        "accountEnabled",
        "deviceId",
        "displayName",
        "operatingSystem",
        "trustType",
    ],
    filterable: &["deviceId", "displayName"],
};

/// `GET /devices?…`
pub(crate) fn list(shared: &Shared, errors: &Errors<'_>, query: &str) -> Answer {
    let q = match dirquery::parse(query, &DEVICE) {
        Ok(q) => q,
        Err(r) => return errors.answer(StatusCode::BAD_REQUEST, r.code, &r.message),
    };
    let found: Vec<DeviceObject> = match &q.filter {
        Some(("deviceId", id)) => shared
            .entra
            .device_by_device_id(id, &shared.directory)
            .into_iter()
            .collect(),
        Some((_, name)) => shared
            .entra
            .devices()
            .iter()
            .filter(|d| d.display_name.eq_ignore_ascii_case(name))
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    let all = if q.filter.is_some() {
        &found
    } else {
        shared.entra.devices()
    };
    let (range, next) = page(&q, all.len(), shared.config.directory_page_size);
    let value = all[range]
        .iter()
        .map(|d| Value::Object(render(d.properties(), q.select.as_deref())))
        .collect();
    let own = shared.addr.to_string();
    let body = collection(errors.ctx, &own, "devices", "devices", &q, next, value);
    Answer::json(StatusCode::OK, body)
}
