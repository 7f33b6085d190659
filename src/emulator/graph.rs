//! One request to a Graph resource, top-level or inside a `$batch`: the assignment POST and
//! GET and the identity reads, through the same pipeline.
//!
//! Order for one request (top-level or inner):
//! 1. bearer check (top-level only; inner requests ride on the envelope's token),
//! 2. the timed outage: while Graph is down, 503 and nothing else happens (an assignment POST
//!    starts its clock),
//! 3. route and method,
//! 4. throttle: the request is counted; if over the window (or early after a Retry-After),
//!    429 and nothing else happens,
//! 5. one seeded fault draw: 503/504 answer without executing; `drop` executes and then drops,
//! 6. validation (device GUID, known device, body, query options) and execution.

use std::time::SystemTime;

use tokio::time::Instant;

use axum::http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::directory::Assigned;
use super::envelope::{Answer, Ctx, Errors, new_guid};
use super::faults::Fault;
use super::identities;
use super::properties;
use super::state::{Caller, Inner, Shared, TenantData};
use super::throttle::{Verdict, retry_after};
use super::validate;

/// A Graph path (below `/beta`) this emulator knows.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// `/deviceManagement/windowsAutopilotDeviceIdentities/{id}/deploymentProfile/assignments`
    Assignments(&'a str),
    /// `/deviceManagement/windowsAutopilotDeviceIdentities/{id}/updateDeviceProperties`
    UpdateDeviceProperties(&'a str),
    /// `/deviceManagement/windowsAutopilotDeviceIdentities`
    Identities,
    /// `/deviceManagement/windowsAutopilotDeviceIdentities/{id}`
    Identity(&'a str),
    Batch,
    Unknown,
}

/// Match a path below the version segment (a query is ignored). Graph matches segment names
/// case-insensitively.
pub(crate) fn route(path: &str) -> Route<'_> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let is = |s: &str, name: &str| s.eq_ignore_ascii_case(name);
    let identities = |dm: &str, ids: &str| {
        is(dm, "deviceManagement") && is(ids, "windowsAutopilotDeviceIdentities")
    };
    match segments.as_slice() {
        [b] if is(b, "$batch") || is(b, "%24batch") => Route::Batch,
        [dm, ids] if identities(dm, ids) => Route::Identities,
        [dm, ids, id] if identities(dm, ids) => Route::Identity(id),
        [dm, ids, id, u] if identities(dm, ids) && is(u, "updateDeviceProperties") => {
            Route::UpdateDeviceProperties(id)
        }
        [dm, ids, id, dp, a]
            if identities(dm, ids) && is(dp, "deploymentProfile") && is(a, "assignments") =>
        {
            Route::Assignments(id)
        }
        _ => Route::Unknown,
    }
}

pub(crate) fn method_not_allowed(
    shared: &Shared,
    ctx: &Ctx,
    path: &str,
    method: &Method,
) -> Answer {
    errors(shared, ctx, path).answer(
        StatusCode::METHOD_NOT_ALLOWED,
        "BadRequest",
        &format!("The HTTP method '{method}' is not allowed on this resource."),
    )
}

pub(crate) fn errors<'a>(shared: &Shared, ctx: &'a Ctx, path: &'a str) -> Errors<'a> {
    Errors {
        ctx,
        intune: shared.config.intune_envelope,
        path,
    }
}

/// What a request with a known route and an allowed method does.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    Assign(&'a str),
    UpdateProperties(&'a str),
    ReadAssignments(&'a str),
    ListIdentities,
    ReadIdentity(&'a str),
}

/// The target of a route and method, or the 400 (unknown or nested-batch path) or 405 that
/// Graph gives before anything is counted.
fn target<'a>(
    shared: &Shared,
    ctx: &Ctx,
    path: &str,
    route: Route<'a>,
    method: &Method,
) -> Result<Target<'a>, Answer> {
    let bad = |message: &str| {
        errors(shared, ctx, path).answer(StatusCode::BAD_REQUEST, "BadRequest", message)
    };
    let get = *method == Method::GET;
    match route {
        Route::Assignments(device) if *method == Method::POST => Ok(Target::Assign(device)),
        Route::Assignments(device) if get => Ok(Target::ReadAssignments(device)),
        Route::UpdateDeviceProperties(device) if *method == Method::POST => {
            Ok(Target::UpdateProperties(device))
        }
        Route::Identities if get => Ok(Target::ListIdentities),
        Route::Identity(id) if get => Ok(Target::ReadIdentity(id)),
        Route::Assignments(_)
        | Route::UpdateDeviceProperties(_)
        | Route::Identities
        | Route::Identity(_) => Err(method_not_allowed(shared, ctx, path, method)),
        Route::Batch => Err(bad("A batch request cannot contain another batch.")),
        Route::Unknown => {
            let path = path.split(['?', '#']).next().unwrap_or("");
            let segment = path.trim_matches('/').split('/').next().unwrap_or("");
            Err(bad(&format!(
                "Resource not found for the segment '{segment}'."
            )))
        }
    }
}

/// The 503 a Graph request arriving at `now` gets while Graph is down, counted in the
/// caller's `outage_requests`; `None` while it is up. `assignment_post`: the request is an
/// assignment POST, which starts the clock (and with `at` zero is itself refused).
///
/// The body is Graph's own envelope, never Intune's form: with Graph down, Intune is not
/// reached (as with the 401s).
pub(crate) fn outage_refusal(
    shared: &Shared,
    ctx: &Ctx,
    path: &str,
    caller: &Caller,
    assignment_post: bool,
    now: Instant,
) -> Option<Answer> {
    let outage = shared.config.outage?;
    {
        let mut inner = shared.lock();
        if assignment_post {
            inner.outage.assignment_posted(now);
        }
        if !inner.outage.down(now) {
            return None;
        }
        inner.data(&caller.data).stats.outage_requests += 1;
    }
    let errors = Errors {
        ctx,
        intune: false,
        path,
    };
    Some(errors.unavailable(outage.retry_after))
}

/// One request to a Graph resource, top-level or inside a batch. `path` is below `/beta` and
/// may carry a query.
#[allow(clippy::too_many_arguments)]
pub(crate) fn single(
    shared: &Shared,
    ctx: &Ctx,
    caller: &Caller,
    method: &Method,
    path: &str,
    route: Route<'_>,
    content_type: Option<&str>,
    body: &[u8],
) -> Answer {
    let now = Instant::now();
    let assignment_post = matches!(route, Route::Assignments(_)) && *method == Method::POST;
    if let Some(refused) = outage_refusal(shared, ctx, path, caller, assignment_post, now) {
        return refused;
    }
    let target = match target(shared, ctx, path, route, method) {
        Ok(target) => target,
        Err(answer) => return answer,
    };
    let errors = errors(shared, ctx, path);
    let write = matches!(target, Target::Assign(_) | Target::UpdateProperties(_));
    if let (true, Target::Assign(device) | Target::ReadAssignments(device)) =
        (shared.config.no_odata_route, target)
    {
        // Graph's router answers before authorization and before Intune is reached.
        return no_odata_route(&errors, device, write);
    }
    if shared.config.deny_permission {
        // Graph authorizes before Intune counts the request against the tenant's window.
        return forbidden(&errors, write);
    }

    let mut inner = shared.lock();
    let tenant = caller.tenant.as_str();
    let verdict = match target {
        // A property update is an Intune enrollment write like an assignment: same window.
        Target::Assign(_) | Target::UpdateProperties(_) => {
            inner.data(&caller.data).stats.write_requests += 1;
            inner.throttle.write(tenant, now)
        }
        Target::ReadAssignments(_) => {
            inner.data(&caller.data).stats.assignment_reads += 1;
            inner.throttle.read(tenant, now)
        }
        Target::ListIdentities | Target::ReadIdentity(_) => {
            inner.data(&caller.data).stats.identity_reads += 1;
            inner.throttle.read(tenant, now)
        }
    };
    if let Verdict::Throttled { wait, violation } = verdict {
        return throttled(
            shared, &mut inner, &errors, caller, now, wait, violation, write,
        );
    }
    let fault = inner.faults.roll();
    let data = inner.data(&caller.data);
    if let Some(answer) = injected(shared, data, &errors, fault) {
        return answer;
    }
    let query = path.split_once('?').map_or("", |(_, q)| q);
    let mut answer = match target {
        Target::Assign(device) | Target::ReadAssignments(device) => execute(
            shared,
            data,
            &errors,
            ctx,
            device,
            write,
            content_type,
            body,
        ),
        Target::UpdateProperties(device) => {
            properties::update(shared, data, &errors, device, content_type, body)
        }
        Target::ListIdentities => identities::list(shared, data, &errors, ctx, query),
        Target::ReadIdentity(id) => identities::get(shared, data, &errors, ctx, id, query),
    };
    answer.drop = fault == Fault::Drop;
    answer
}

/// The 400 Graph's router has been reported to give for the assignment navigation, in its own
/// (never Intune's) envelope.
fn no_odata_route(errors: &Errors<'_>, device: &str, write: bool) -> Answer {
    errors.plain(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        &format!(
            "No OData route exists that match template ~/singleton/navigation/key/navigation \
             with http verb {} for request /DeviceEnrollmentFE/StatelessDeviceEnrollmentFEService/\
             deviceManagement/windowsAutopilotDeviceIdentities('{device}')/deploymentProfile/\
             assignments.",
            if write { "POST" } else { "GET" }
        ),
    )
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
    data: &mut TenantData,
    errors: &Errors<'_>,
    fault: Fault,
) -> Option<Answer> {
    match fault {
        Fault::Unavailable => {
            data.stats.faults_503 += 1;
            Some(errors.unavailable(shared.config.fault_503_retry_after))
        }
        Fault::GatewayTimeout => {
            data.stats.faults_504 += 1;
            Some(errors.answer(
                StatusCode::GATEWAY_TIMEOUT,
                "GatewayTimeout",
                "The gateway did not receive a timely response from the upstream service.",
            ))
        }
        Fault::Drop => {
            data.stats.dropped_connections += 1;
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
    caller: &Caller,
    now: Instant,
    wait: std::time::Duration,
    violation: bool,
    write: bool,
) -> Answer {
    let stats = &mut inner.data(&caller.data).stats;
    stats.throttled += 1;
    if violation {
        stats.violations += 1;
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
                inner.throttle.promised(&caller.tenant, now, stated);
            }
            answer.with_header("retry-after", value)
        }
        None => answer,
    }
}

/// Validate and carry out an assignment request that got past throttle and faults, on the
/// caller's tenant's store.
#[allow(clippy::too_many_arguments)]
fn execute(
    shared: &Shared,
    data: &mut TenantData,
    errors: &Errors<'_>,
    ctx: &Ctx,
    device: &str,
    write: bool,
    content_type: Option<&str>,
    body: &[u8],
) -> Answer {
    let device = match shared.device_key(errors, device) {
        Ok(d) => d,
        Err(refused) => return refused,
    };
    let context = format!(
        "http://{}/beta/$metadata#deviceManagement/windowsAutopilotDeviceIdentities('{device}')/deploymentProfile/assignments",
        ctx.host
    );
    if !write {
        let value = data.store.get(&device).cloned().unwrap_or_default();
        return Answer::json(
            StatusCode::OK,
            json!({"@odata.context": context, "value": value}),
        );
    }
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
    data.first_assigned
        .entry(device.clone())
        .or_insert_with(Assigned::now);
    data.store.entry(device).or_default().push(stored.clone());
    data.stats.assignments_created += 1;
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(format!("{context}/$entity")));
    if let Value::Object(fields) = stored {
        body.extend(fields);
    }
    Answer::json(StatusCode::CREATED, Value::Object(body))
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
        assert_eq!(
            route("/deviceManagement/windowsAutopilotDeviceIdentities?$top=5"),
            Route::Identities
        );
        assert_eq!(
            route("/devicemanagement/windowsautopilotdeviceidentities/abc"),
            Route::Identity("abc")
        );
        assert_eq!(route("/me"), Route::Unknown);
        assert_eq!(route(""), Route::Unknown);
    }
}
