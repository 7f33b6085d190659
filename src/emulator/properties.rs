//! `POST …/windowsAutopilotDeviceIdentities/{id}/updateDeviceProperties`, once past bearer
//! check, throttle (as a write) and faults: the body checked as Graph checks it, the
//! properties stored on the identity (the listing and the single GET show them), 204.

use axum::http::StatusCode;
use serde_json::Value;

use super::envelope::{Answer, Errors};
use super::state::{Shared, TenantData};
use super::validate;

/// Validate and carry out one property update, on the caller's tenant's identities.
pub(crate) fn update(
    shared: &Shared,
    data: &mut TenantData,
    errors: &Errors<'_>,
    device: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Answer {
    let device = match shared.device_key(data, errors, device) {
        Ok(d) => d,
        Err(refused) => return refused,
    };
    if !validate::is_json(content_type) {
        return errors.answer(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            validate::UNREADABLE_JSON,
        );
    }
    let set = match validate::device_properties(body) {
        Ok(set) => set,
        Err(message) => return errors.answer(StatusCode::BAD_REQUEST, "BadRequest", &message),
    };
    if set.contains_key("groupTag") {
        data.stats.group_tags_set += 1;
    }
    data.updated.entry(device).or_default().extend(set);
    Answer::json(StatusCode::NO_CONTENT, Value::Null)
}
