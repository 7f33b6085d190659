//! `GET /devices`, once past bearer check, throttle (a directory read) and faults: Entra ID's
//! device objects, paged, or the one whose `deviceId` is an identity's `azureAdDeviceId`
//! (`$filter=deviceId eq '…'`, zero or one): how a client finds the object id a group binds.
//! The tenant's registered identities' devices are listed after the configured ones.

use axum::http::StatusCode;
use serde_json::Value;

use super::dirquery::{self, Resource, collection, page, render};
use super::entra::DeviceObject;
use super::envelope::{Answer, Errors};
use super::state::{Shared, TenantData};

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
pub(crate) fn list(shared: &Shared, data: &TenantData, errors: &Errors<'_>, query: &str) -> Answer {
    let q = match dirquery::parse(query, &DEVICE) {
        Ok(q) => q,
        Err(r) => return errors.answer(StatusCode::BAD_REQUEST, r.code, &r.message),
    };
    let mut listed: Vec<DeviceObject> = shared.entra.devices().to_vec();
    listed.extend(data.registered.devices());
    let all: Vec<DeviceObject> = match &q.filter {
        Some(("deviceId", id)) => shared.device_by_device_id(data, id).into_iter().collect(),
        Some((_, name)) => listed
            .into_iter()
            .filter(|d| d.display_name.eq_ignore_ascii_case(name))
            .collect(),
        None => listed,
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
