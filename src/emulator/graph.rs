//! The Graph routes: the assignment POST and GET, and `$batch`, which feeds each inner request
//! through exactly the same path as a top-level one.
//!
//! Order for one assignment request (top-level or inner):
//! 1. bearer check (top-level only; inner requests ride on the envelope's token),
//! 2. route and method,
//! 3. throttle: the request is counted; if over the window (or early after a Retry-After),
//!    429 and nothing else happens,
//! 4. one seeded fault draw: 503/504 answer without executing; `drop` executes and then drops,
//! 5. validation (device GUID, known device, body) and execution.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::conn::ConnHandle;
use super::envelope::{Answer, Ctx, Errors, new_guid};
use super::faults::Fault;
use super::state::{Inner, Shared};
use super::throttle::{Verdict, retry_after};
use super::tokens::authenticate;
use super::validate::{self, is_guid};

/// Graph's documented cap on requests in one `$batch`.
const MAX_BATCH: usize = 20;

/// A Graph path (below `/beta`) this emulator knows.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    /// `/deviceManagement/windowsAutopilotDeviceIdentities/{id}/deploymentProfile/assignments`
    Assignments(&'a str),
    Batch,
    Unknown,
}

/// Match a path below the version segment. Graph matches segment names case-insensitively.
fn route(path: &str) -> Route<'_> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let is = |s: &str, name: &str| s.eq_ignore_ascii_case(name);
    match segments.as_slice() {
        [b] if is(b, "$batch") || is(b, "%24batch") => Route::Batch,
        [dm, ids, id, dp, a]
            if is(dm, "deviceManagement")
                && is(ids, "windowsAutopilotDeviceIdentities")
                && is(dp, "deploymentProfile")
                && is(a, "assignments") =>
        {
            Route::Assignments(id)
        }
        _ => Route::Unknown,
    }
}

/// Every `/beta/...` request.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    Extension(ctx): Extension<Ctx>,
    conn: Option<Extension<ConnHandle>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tenant = match authenticate(&shared, &headers, &ctx) {
        Ok(tenant) => tenant,
        Err(answer) => return answer.into_response(),
    };
    let path = uri.path().get("/beta".len()..).unwrap_or("");
    let answer = match route(path) {
        Route::Batch if method == Method::POST => batch(&shared, &ctx, &tenant, &headers, &body),
        Route::Batch => method_not_allowed(&shared, &ctx, path, &method),
        r => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            single(
                &shared,
                &ctx,
                &tenant,
                &method,
                path,
                r,
                content_type,
                &body,
            )
        }
    };
    if answer.drop {
        if let Some(Extension(conn)) = conn {
            // The connection task drops the connection (and this future) on this signal.
            conn.drop_connection();
            std::future::pending::<()>().await;
        }
    }
    answer.into_response()
}

fn method_not_allowed(shared: &Shared, ctx: &Ctx, path: &str, method: &Method) -> Answer {
    errors(shared, ctx, path).answer(
        StatusCode::METHOD_NOT_ALLOWED,
        "BadRequest",
        &format!("The HTTP method '{method}' is not allowed on this resource."),
    )
}

fn errors<'a>(shared: &Shared, ctx: &'a Ctx, path: &'a str) -> Errors<'a> {
    Errors {
        ctx,
        intune: shared.config.intune_envelope,
        path,
    }
}

/// One request to a Graph resource, top-level or inside a batch.
#[allow(clippy::too_many_arguments)]
fn single(
    shared: &Shared,
    ctx: &Ctx,
    tenant: &str,
    method: &Method,
    path: &str,
    route: Route<'_>,
    content_type: Option<&str>,
    body: &[u8],
) -> Answer {
    let errors = errors(shared, ctx, path);
    let device = match route {
        Route::Assignments(device) => device,
        Route::Batch => {
            return errors.answer(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "A batch request cannot contain another batch.",
            );
        }
        Route::Unknown => {
            let segment = path.trim_matches('/').split('/').next().unwrap_or("");
            return errors.answer(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("Resource not found for the segment '{segment}'."),
            );
        }
    };
    let write = if *method == Method::POST {
        true
    } else if *method == Method::GET {
        false
    } else {
        return method_not_allowed(shared, ctx, path, method);
    };
    if shared.config.deny_permission {
        // Graph authorizes before Intune counts the request against the tenant's window.
        return forbidden(&errors, write);
    }

    let now = Instant::now();
    let mut inner = shared.lock();
    let verdict = if write {
        inner.stats.write_requests += 1;
        inner.throttle.write(tenant, now)
    } else {
        inner.stats.assignment_reads += 1;
        inner.throttle.read(tenant, now)
    };
    if let Verdict::Throttled { wait, violation } = verdict {
        return throttled(
            shared, &mut inner, &errors, tenant, now, wait, violation, write,
        );
    }
    let fault = inner.faults.roll();
    if let Some(answer) = injected(shared, &mut inner, &errors, fault) {
        return answer;
    }
    let mut answer = execute(
        shared,
        &mut inner,
        &errors,
        ctx,
        device,
        write,
        content_type,
        body,
    );
    answer.drop = fault == Fault::Drop;
    answer
}

/// The 403 Graph gives an app without the assignment permission; a read also names the
/// read-only scope that would do.
fn forbidden(errors: &Errors<'_>, write: bool) -> Answer {
    errors.answer(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &format!(
            "Application is not authorized to perform this operation. Application must have \
             one of the following scopes: DeviceManagementServiceConfig.ReadWrite.All{}",
            if write {
                ""
            } else {
                ", DeviceManagementServiceConfig.Read.All"
            }
        ),
    )
}

/// The answer an injected 503 or 504 gives instead of executing the request, counted. `None`
/// when the request executes: no fault, or `drop`, which executes before the connection goes.
fn injected(
    shared: &Shared,
    inner: &mut Inner,
    errors: &Errors<'_>,
    fault: Fault,
) -> Option<Answer> {
    match fault {
        Fault::Unavailable => {
            inner.stats.faults_503 += 1;
            let answer = errors.answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The service is temporarily unavailable. Please retry later.",
            );
            Some(match shared.config.fault_503_retry_after {
                Some(secs) => answer.with_header("retry-after", secs.to_string()),
                None => answer,
            })
        }
        Fault::GatewayTimeout => {
            inner.stats.faults_504 += 1;
            Some(errors.answer(
                StatusCode::GATEWAY_TIMEOUT,
                "GatewayTimeout",
                "The gateway did not receive a timely response from the upstream service.",
            ))
        }
        Fault::Drop => {
            inner.stats.dropped_connections += 1;
            None
        }
        Fault::None => None,
    }
}

/// The 429, with a Retry-After in the configured (or, for `mixed`, drawn) form. A write 429
/// that states a time becomes the tenant's promise that violations are judged against.
#[allow(clippy::too_many_arguments)]
fn throttled(
    shared: &Shared,
    inner: &mut Inner,
    errors: &Errors<'_>,
    tenant: &str,
    now: Instant,
    wait: std::time::Duration,
    violation: bool,
    write: bool,
) -> Answer {
    inner.stats.throttled += 1;
    if violation {
        inner.stats.violations += 1;
    }
    let form = inner.faults.retry_form(shared.config.retry_after);
    let answer = errors.answer(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        "Too many requests have been sent for this tenant. Please retry later.",
    );
    match retry_after(form, wait, SystemTime::now()) {
        Some((value, stated)) => {
            if write {
                inner.throttle.promised(tenant, now, stated);
            }
            answer.with_header("retry-after", value)
        }
        None => answer,
    }
}

/// Validate and carry out an assignment request that got past throttle and faults.
#[allow(clippy::too_many_arguments)]
fn execute(
    shared: &Shared,
    inner: &mut Inner,
    errors: &Errors<'_>,
    ctx: &Ctx,
    device: &str,
    write: bool,
    content_type: Option<&str>,
    body: &[u8],
) -> Answer {
    if !is_guid(device) {
        return errors.answer(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "Invalid key: '{device}' is not a valid windowsAutopilotDeviceIdentity id (a GUID)."
            ),
        );
    }
    let device = device.to_ascii_lowercase();
    if let Some(devices) = &shared.config.devices {
        if !devices.contains(&device) {
            return errors.answer(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                &format!("The windowsAutopilotDeviceIdentity '{device}' was not found."),
            );
        }
    }
    let context = format!(
        "http://{}/beta/$metadata#deviceManagement/windowsAutopilotDeviceIdentities('{device}')/deploymentProfile/assignments",
        ctx.host
    );
    if !write {
        let value = inner.store.get(&device).cloned().unwrap_or_default();
        return Answer::json(
            StatusCode::OK,
            json!({"@odata.context": context, "value": value}),
        );
    }
    let json_type = content_type.is_some_and(|t| {
        t.trim()
            .to_ascii_lowercase()
            .starts_with("application/json")
    });
    if !json_type {
        return errors.answer(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Unable to read JSON request payload. Please ensure Content-Type header is set and \
             payload is of valid JSON format.",
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
    inner.store.entry(device).or_default().push(stored.clone());
    inner.stats.assignments_created += 1;
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(format!("{context}/$entity")));
    if let Value::Object(fields) = stored {
        body.extend(fields);
    }
    Answer::json(StatusCode::CREATED, Value::Object(body))
}

/// `POST /beta/$batch`: each inner request handled as the single request would be, answered
/// in request order. An inner `drop` fault stores that assignment, lets the other inner
/// requests run, then drops the whole connection.
fn batch(shared: &Shared, ctx: &Ctx, tenant: &str, headers: &HeaderMap, body: &[u8]) -> Answer {
    shared.lock().stats.batch_requests += 1;
    let errors = errors(shared, ctx, "/$batch");
    let bad = |message: &str| errors.answer(StatusCode::BAD_REQUEST, "BadRequest", message);
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !json_type {
        return bad("Invalid batch payload format: Content-Type must be application/json.");
    }
    let requests = match parse_batch(body) {
        Ok(requests) => requests,
        Err(message) => return bad(&message),
    };
    let mut responses = Vec::with_capacity(requests.len());
    let mut drop = false;
    for r in requests {
        let ctx = ctx.inner(r.client_request_id.as_deref());
        let answer = inner_request(shared, &ctx, tenant, &r);
        drop |= answer.drop;
        shared.lock().count_inner_status(answer.status.as_u16());
        let mut response = Map::new();
        response.insert("id".into(), json!(r.id));
        response.insert("status".into(), json!(answer.status.as_u16()));
        response.insert("headers".into(), answer.inner_headers());
        response.insert("body".into(), answer.body);
        responses.push(Value::Object(response));
    }
    let mut answer = Answer::json(StatusCode::OK, json!({ "responses": responses }));
    answer.drop = drop;
    answer
}

/// One inner request of a batch, checked as far as the envelope's rules go.
struct InnerRequest {
    id: String,
    method: Method,
    url: String,
    content_type: Option<String>,
    client_request_id: Option<String>,
    body: Option<Vec<u8>>,
}

fn parse_batch(body: &[u8]) -> Result<Vec<InnerRequest>, String> {
    let envelope: Value =
        serde_json::from_slice(body).map_err(|e| format!("Invalid batch payload format: {e}"))?;
    let list = envelope
        .get("requests")
        .and_then(Value::as_array)
        .ok_or("Invalid batch payload format: 'requests' must be an array.")?;
    if list.is_empty() {
        return Err("Invalid batch payload format: 'requests' is empty.".into());
    }
    if list.len() > MAX_BATCH {
        return Err(format!(
            "Number of batch request steps exceeds the maximum of {MAX_BATCH}."
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        let field = |name: &str| {
            item.get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let id = field("id")
            .ok_or("Invalid batch payload format: every request needs a string 'id'.")?;
        if !seen.insert(id.to_string()) {
            return Err(format!(
                "Batch request ids must be unique: '{id}' appears twice."
            ));
        }
        let method = field("method")
            .and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
            .ok_or_else(|| {
                format!("Invalid batch payload format: request '{id}' needs a 'method'.")
            })?;
        let url = field("url").ok_or_else(|| {
            format!("Invalid batch payload format: request '{id}' needs a 'url'.")
        })?;
        let headers = match item.get("headers") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(h)) => h.clone(),
            Some(_) => {
                return Err(format!(
                    "Invalid batch payload format: 'headers' of request '{id}' must be an object."
                ));
            }
        };
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.as_str())
                .map(str::to_string)
        };
        let body = match item.get("body") {
            None | Some(Value::Null) => None,
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| e.to_string())?),
        };
        let content_type = header("content-type");
        if body.is_some() && content_type.is_none() {
            return Err(format!(
                "Invalid batch payload format: request '{id}' has a body but no Content-Type header."
            ));
        }
        out.push(InnerRequest {
            id: id.to_string(),
            method,
            url: url.to_string(),
            content_type,
            client_request_id: header("client-request-id"),
            body,
        });
    }
    Ok(out)
}

fn inner_request(shared: &Shared, ctx: &Ctx, tenant: &str, r: &InnerRequest) -> Answer {
    // Inner URLs are relative to the version: `/deviceManagement/...`.
    if r.url.contains("://") {
        return errors(shared, ctx, &r.url).answer(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Batch request urls must be relative (e.g. /deviceManagement/...).",
        );
    }
    let path = if r.url.starts_with('/') {
        r.url.clone()
    } else {
        format!("/{}", r.url)
    };
    single(
        shared,
        ctx,
        tenant,
        &r.method,
        &path,
        route(&path),
        r.content_type.as_deref(),
        r.body.as_deref().unwrap_or_default(),
    )
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
        assert_eq!(route("/me"), Route::Unknown);
        assert_eq!(route(""), Route::Unknown);
    }

    #[test]
    fn batch_envelope_rules() {
        let ok = json!({"requests": [{"id": "1", "method": "GET", "url": "/x"}]});
        assert!(parse_batch(ok.to_string().as_bytes()).is_ok());
        let bad = [
            json!({}),
            json!({"requests": []}),
            json!({"requests": [{"method": "GET", "url": "/x"}]}),
            json!({"requests": [{"id": "1", "method": "GET", "url": "/x"}, {"id": "1", "method": "GET", "url": "/x"}]}),
            json!({"requests": [{"id": "1", "method": "POST", "url": "/x", "body": {}}]}),
            json!({"requests": (0..21).map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/x"})).collect::<Vec<_>>()}),
        ];
        for b in bad {
            assert!(parse_batch(b.to_string().as_bytes()).is_err(), "{b}");
        }
        assert!(parse_batch(b"nope").is_err());
    }
}
