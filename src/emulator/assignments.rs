//! The seed's route, once past bearer check, throttle and faults: `POST` and `GET` on
//! `…/windowsAutopilotDeviceIdentities/{id}/deploymentProfile/assignments`, and `DELETE` of
//! one assignment below it (what `undo` sends), on the caller's tenant's store.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::directory::Assigned;
use super::envelope::{Answer, Errors, new_guid};
use super::state::{Landing, Shared, TenantData};
use super::validate;
use tokio::time::Instant;

fn context(errors: &Errors<'_>, device: &str) -> String {
    format!(
        "http://{}/beta/$metadata#deviceManagement/windowsAutopilotDeviceIdentities('{device}')/deploymentProfile/assignments",
        errors.ctx.host
    )
}

/// `GET`: the device's assignments.
pub(crate) fn read(
    shared: &Shared,
    data: &TenantData,
    errors: &Errors<'_>,
    device: &str,
) -> Answer {
    let device = match shared.device_key(data, errors, device) {
        Ok(d) => d,
        Err(refused) => return refused,
    };
    let value = data.store.get(&device).cloned().unwrap_or_default();
    Answer::json(
        StatusCode::OK,
        json!({"@odata.context": context(errors, &device), "value": value}),
    )
}

/// `POST`: validate the body and store the assignment under a fresh id.
pub(crate) fn create(
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
    let context = context(errors, &device);
    if !validate::is_json(content_type) {
        return errors.answer(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            validate::UNREADABLE_JSON,
        );
    }
    let mut stored = match validate::assignment(body) {
        Ok(stored) => stored,
        Err(message) => return errors.answer(StatusCode::BAD_REQUEST, "BadRequest", &message),
    };
    // Always a fresh id, whatever the body says: a client must not rely on its own.
    let id = new_guid();
    let mut ordered = Map::new();
    ordered.insert(
        "@odata.type".into(),
        stored.remove("@odata.type").unwrap_or_default(),
    );
    ordered.insert("id".into(), json!(id));
    ordered.extend(stored);
    let stored = Value::Object(ordered);
    data.stats.assignments_created += 1;
    let lag = shared.config.commit_lag;
    match lag {
        Some(lag) => data.landing.push(Landing {
            due: Instant::now() + lag,
            device,
            stored: stored.clone(),
        }),
        None => {
            data.first_assigned
                .entry(device.clone())
                .or_insert_with(Assigned::now);
            data.store.entry(device).or_default().push(stored.clone());
        }
    }
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(format!("{context}/$entity")));
    if let Value::Object(fields) = stored {
        body.extend(fields);
    }
    let mut answer = Answer::json(StatusCode::CREATED, Value::Object(body));
    answer.delay_ms = lag.map_or(0, |l| u32::try_from(l.as_millis()).unwrap_or(u32::MAX));
    answer
}

/// `DELETE …/assignments/{id}`: 204 when the device held it, 404 when not (an id is matched
/// without case, as Graph matches keys).
pub(crate) fn delete(
    shared: &Shared,
    data: &mut TenantData,
    errors: &Errors<'_>,
    device: &str,
    id: &str,
) -> Answer {
    let device = match shared.device_key(data, errors, device) {
        Ok(d) => d,
        Err(refused) => return refused,
    };
    let held = data.store.get_mut(&device);
    let at = held.as_ref().and_then(|held| {
        held.iter().position(|a| {
            a.get("id")
                .and_then(Value::as_str)
                .is_some_and(|a| a.eq_ignore_ascii_case(id))
        })
    });
    let (Some(held), Some(at)) = (held, at) else {
        return errors.answer(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!(
                "The assignment '{id}' of windowsAutopilotDeviceIdentity '{device}' was not found."
            ),
        );
    };
    held.remove(at);
    if held.is_empty() {
        data.store.remove(&device);
    }
    data.stats.assignments_deleted += 1;
    Answer::json(StatusCode::NO_CONTENT, Value::Null)
}
