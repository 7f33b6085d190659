//! The hardware-hash import routes, once past bearer check, throttle and faults:
//! `POST …/importedWindowsAutopilotDeviceIdentities/import` (a batch, all or nothing), the
//! single-record POST, the paged listing, and GET and DELETE of one record. Processing itself
//! is in `imports`; the sync that registers records is in `sync`.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::envelope::{Answer, Errors};
use super::imports::{Fields, Record};
use super::odata;
use super::state::{Shared, TenantData};
use super::validate::{self, is_guid};

const RECORDS: &str = "deviceManagement/importedWindowsAutopilotDeviceIdentities";
const RECORD_TYPE: &str = "microsoft.graph.importedWindowsAutopilotDeviceIdentity";
const LIST_KEY: &str = "importedWindowsAutopilotDeviceIdentities";

fn bad(errors: &Errors<'_>, message: &str) -> Answer {
    errors.answer(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// The body as a JSON object, declared as JSON.
fn body_object(
    errors: &Errors<'_>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Map<String, Value>, Answer> {
    if !validate::is_json(content_type) {
        return Err(bad(errors, validate::UNREADABLE_JSON));
    }
    validate::json_object(body).map_err(|message| bad(errors, &message))
}

/// `POST …/import`: every record valid and within the batch limit, or none stored.
pub(crate) fn import(
    shared: &Shared,
    data: &mut TenantData,
    errors: &Errors<'_>,
    content_type: Option<&str>,
    body: &[u8],
) -> Answer {
    let body = match body_object(errors, content_type, body) {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let list = match body.get(LIST_KEY).and_then(Value::as_array) {
        Some(list) if !list.is_empty() => list,
        _ => {
            return bad(
                errors,
                &format!("The property '{LIST_KEY}' must be a non-empty array of records."),
            );
        }
    };
    let limit = shared.config.import_batch_limit;
    if list.len() > limit {
        return bad(
            errors,
            &format!(
                "The request has too many records: {} given, at most {limit} can be imported \
                 in one call.",
                list.len()
            ),
        );
    }
    let fields: Result<Vec<Fields>, String> =
        list.iter().enumerate().map(|(i, r)| fields(i, r)).collect();
    let fields = match fields {
        Ok(f) => f,
        Err(message) => return bad(errors, &message),
    };
    let value: Vec<Value> = fields
        .into_iter()
        .map(|f| store(shared, data, f).answer())
        .collect();
    let context = format!(
        "http://{}/beta/$metadata#Collection({RECORD_TYPE})",
        errors.ctx.host
    );
    Answer::json(
        StatusCode::OK,
        json!({"@odata.context": context, "value": value}),
    )
}

/// `POST …/importedWindowsAutopilotDeviceIdentities` with one record: 201.
pub(crate) fn create(
    shared: &Shared,
    data: &mut TenantData,
    errors: &Errors<'_>,
    content_type: Option<&str>,
    body: &[u8],
) -> Answer {
    let body = match body_object(errors, content_type, body) {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let fields = match fields(0, &Value::Object(body)) {
        Ok(f) => f,
        Err(message) => return bad(errors, &message),
    };
    let answer = store(shared, data, fields).answer();
    Answer::json(StatusCode::CREATED, entity(errors, answer))
}

fn store<'a>(shared: &Shared, data: &'a mut TenantData, fields: Fields) -> &'a Record {
    data.stats.records_imported += 1;
    let delay = shared.config.import_delay;
    data.imports.store(fields, Instant::now(), delay)
}

/// One record of a request. `index`: its place in the batch, for the message.
fn fields(index: usize, record: &Value) -> Result<Fields, String> {
    let Value::Object(record) = record else {
        return Err(format!("Record {index} is not an object."));
    };
    if let Some(kind) = record.get("@odata.type") {
        let ok = kind
            .as_str()
            .is_some_and(|t| t.trim_start_matches('#') == RECORD_TYPE);
        if !ok {
            return Err(format!(
                "Record {index}: a type named {kind} could not be resolved by the model; \
                 expected '#{RECORD_TYPE}'."
            ));
        }
    }
    let text = |name: &str| -> Result<String, String> {
        match record.get(name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!(
                "Record {index}: invalid value for property '{name}': {other} is not a string."
            )),
        }
    };
    let required = |name: &str| -> Result<String, String> {
        let value = text(name)?;
        if value.trim().is_empty() {
            return Err(format!(
                "Record {index}: the property '{name}' is required."
            ));
        }
        Ok(value)
    };
    Ok(Fields {
        serial: required("serialNumber")?,
        hash: required("hardwareIdentifier")?,
        product_key: text("productKey")?,
        group_tag: text("groupTag")?,
        upn: text("assignedUserPrincipalName")?,
    })
}

fn entity(errors: &Errors<'_>, answer: Value) -> Value {
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!(
            "http://{}/beta/$metadata#{RECORDS}/$entity",
            errors.ctx.host
        )),
    );
    if let Value::Object(fields) = answer {
        body.extend(fields);
    }
    Value::Object(body)
}

/// `GET …/importedWindowsAutopilotDeviceIdentities?$top=…&$skiptoken=…` (a `$filter` is
/// ignored: every record is listed).
pub(crate) fn list(shared: &Shared, data: &TenantData, errors: &Errors<'_>, query: &str) -> Answer {
    let (top, offset) = match paging(query) {
        Ok(p) => p,
        Err(message) => return bad(errors, &message),
    };
    let live = data.imports.live();
    let cap = shared.config.page_size.max(1);
    let page_len = top.unwrap_or(cap).min(cap);
    let start = offset.min(live.len());
    let end = start.saturating_add(page_len).min(live.len());
    let value: Vec<Value> = live[start..end].iter().map(|r| r.answer()).collect();
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!(
            "http://{}/beta/$metadata#{RECORDS}",
            errors.ctx.host
        )),
    );
    if end < live.len() {
        body.insert("@odata.nextLink".into(), json!(next_link(shared, top, end)));
    }
    body.insert("value".into(), Value::Array(value));
    Answer::json(StatusCode::OK, Value::Object(body))
}

/// `$top` (a positive number) and the offset of the emulator's own `$skiptoken`.
fn paging(query: &str) -> Result<(Option<usize>, usize), String> {
    let (mut top, mut offset) = (None, 0);
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if key.eq_ignore_ascii_case("$top") {
            let n: usize = value
                .trim()
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("Invalid value '{value}' for $top query option found."))?;
            top = Some(n);
        } else if key.eq_ignore_ascii_case("$skiptoken") {
            offset = odata::skiptoken_offset(&value)
                .ok_or_else(|| "The $skiptoken is not valid.".to_string())?;
        }
    }
    Ok((top, offset))
}

fn next_link(shared: &Shared, top: Option<usize>, offset: usize) -> String {
    let top = top.map(|t| format!("$top={t}&")).unwrap_or_default();
    format!(
        "http://{}/beta/{RECORDS}?{top}$skiptoken={}",
        shared.addr,
        odata::skiptoken_for(offset)
    )
}

/// The record a path names: 400 when not a GUID, 404 when unknown or deleted.
fn key(errors: &Errors<'_>, id: &str) -> Result<String, Answer> {
    if !is_guid(id) {
        return Err(bad(
            errors,
            &format!("Invalid key: '{id}' is not a valid {RECORD_TYPE} id (a GUID)."),
        ));
    }
    Ok(id.to_ascii_lowercase())
}

fn not_found(errors: &Errors<'_>, id: &str) -> Answer {
    errors.answer(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!("The importedWindowsAutopilotDeviceIdentity '{id}' was not found."),
    )
}

/// `GET …/importedWindowsAutopilotDeviceIdentities/{id}`
pub(crate) fn get(data: &TenantData, errors: &Errors<'_>, id: &str) -> Answer {
    let id = match key(errors, id) {
        Ok(id) => id,
        Err(refused) => return refused,
    };
    match data.imports.get(&id) {
        Some(record) => Answer::json(StatusCode::OK, entity(errors, record.answer())),
        None => not_found(errors, &id),
    }
}

/// `DELETE …/importedWindowsAutopilotDeviceIdentities/{id}`: the record goes; a device it
/// registered stays.
pub(crate) fn delete(data: &mut TenantData, errors: &Errors<'_>, id: &str) -> Answer {
    let id = match key(errors, id) {
        Ok(id) => id,
        Err(refused) => return refused,
    };
    let Some(foreign) = data.imports.delete(&id) else {
        return not_found(errors, &id);
    };
    data.stats.import_records_deleted += 1;
    if foreign {
        data.stats.foreign_records_deleted += 1;
    }
    Answer::json(StatusCode::NO_CONTENT, Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_needs_its_serial_and_hash_and_strings() {
        let ok = json!({
            "@odata.type": "#microsoft.graph.importedWindowsAutopilotDeviceIdentity",
            "serialNumber": "S-1", "hardwareIdentifier": "AAECAwQFBgcICQ==",
            "productKey": "", "groupTag": "Kiosk", "assignedUserPrincipalName": null,
        });
        let f = fields(0, &ok).unwrap();
        assert_eq!((f.serial.as_str(), f.group_tag.as_str()), ("S-1", "Kiosk"));
        for (bad, needle) in [
            (json!({"hardwareIdentifier": "x"}), "'serialNumber'"),
            (
                json!({"serialNumber": " ", "hardwareIdentifier": "x"}),
                "'serialNumber'",
            ),
            (json!({"serialNumber": "S"}), "'hardwareIdentifier'"),
            (
                json!({"serialNumber": "S", "hardwareIdentifier": "x", "groupTag": 1}),
                "'groupTag'",
            ),
            (
                json!({"@odata.type": "#x", "serialNumber": "S", "hardwareIdentifier": "x"}),
                "type",
            ),
            (json!([]), "not an object"),
        ] {
            let message = fields(7, &bad).unwrap_err();
            assert!(message.starts_with("Record 7"), "{message}");
            assert!(message.contains(needle), "{message}");
        }
    }

    #[test]
    fn paging_reads_top_and_the_emulators_skiptoken() {
        let token = odata::skiptoken_for(40);
        assert_eq!(paging(""), Ok((None, 0)));
        assert_eq!(
            paging(&format!(
                "$top=5&$skiptoken={token}&$filter=importId%20eq%20'x'"
            )),
            Ok((Some(5), 40))
        );
        assert!(paging("$top=0").is_err());
        assert!(paging("$skiptoken=nope").is_err());
    }
}
