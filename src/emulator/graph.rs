//! One request to a Graph resource, top-level or inside a `$batch`, through one pipeline
//! whatever the resource (Intune's assignments, identities and profiles; Entra ID's devices,
//! groups and members), and handed to the module that serves it.
//!
//! Order for one request (top-level or inner):
//! 1. bearer check (top-level only; inner requests ride on the envelope's token),
//! 2. the timed outage: while Graph is down, 503 and nothing else happens (an assignment POST
//!    or a member write starts its clock),
//! 3. route and method,
//! 4. throttle: the request is counted, in its service's bucket (Intune or the directory);
//!    if over the window (or early after a Retry-After), 429 and nothing else happens,
//! 5. one seeded fault draw: 503/504 answer without executing; `drop` executes and then drops,
//! 6. validation (device GUID, known device, body, query options) and execution.

use std::time::SystemTime;

use tokio::time::Instant;

use axum::http::{Method, StatusCode};

use super::envelope::{Answer, Ctx, Errors};
use super::faults::Fault;
use super::routes::{self, Refusal, Route, Target};
use super::state::{Caller, Inner, Shared, TenantData};
use super::throttle::{Bucket, Verdict, retry_after};
use super::{
    Stats, assignments, devices, groups, identities, members, profiles, properties, records, sync,
};

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

/// The 400 or 405 Graph gives a request that names no resource it serves, before anything is
/// counted.
fn refused(shared: &Shared, ctx: &Ctx, path: &str, method: &Method, why: Refusal) -> Answer {
    let bad = |message: &str| {
        errors(shared, ctx, path).answer(StatusCode::BAD_REQUEST, "BadRequest", message)
    };
    match why {
        Refusal::MethodNotAllowed => method_not_allowed(shared, ctx, path, method),
        Refusal::NestedBatch => bad("A batch request cannot contain another batch."),
        Refusal::UnknownSegment(segment) => {
            bad(&format!("Resource not found for the segment '{segment}'."))
        }
    }
}

/// The 503 a Graph request arriving at `now` gets while Graph is down, counted in the
/// caller's `outage_requests`; `None` while it is up. `first_write`: the request is an
/// assignment POST or a member write, which starts the clock (and with `at` zero is itself
/// refused).
///
/// The body is Graph's own envelope, never Intune's form: with Graph down, Intune is not
/// reached (as with the 401s).
pub(crate) fn outage_refusal(
    shared: &Shared,
    ctx: &Ctx,
    path: &str,
    caller: &Caller,
    first_write: bool,
    now: Instant,
) -> Option<Answer> {
    let outage = shared.config.outage?;
    {
        let mut inner = shared.lock();
        if first_write {
            inner.outage.write_arrived(now);
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

/// One request to a Graph resource, top-level or inside a batch. `path` is below the version and
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
    let first_write = routes::starts_outage(&route, method);
    if let Some(refused) = outage_refusal(shared, ctx, path, caller, first_write, now) {
        return refused;
    }
    let target = match routes::target(route, method, path, ctx.version != "beta") {
        Ok(target) => target,
        Err(why) => return refused(shared, ctx, path, method, why),
    };
    let (bucket, write) = (target.bucket(), target.is_write());
    // Entra ID answers in Graph's own envelope: Intune's form is Intune's alone.
    let errors = Errors {
        intune: shared.config.intune_envelope && bucket == Bucket::Intune,
        ..errors(shared, ctx, path)
    };
    if let (true, Target::Assign(device) | Target::ReadAssignments(device)) =
        (shared.config.no_odata_route, target)
    {
        // Graph's router answers before authorization and before Intune is reached.
        return no_odata_route(&errors, device, write);
    }
    if shared.config.deny_permission && bucket == Bucket::Intune {
        // Graph authorizes before Intune counts the request against the tenant's window.
        return forbidden(&errors, write);
    }

    let mut inner = shared.lock();
    count(&mut inner.data(&caller.data).stats, target);
    let tenant = caller.tenant.as_str();
    let verdict = if write {
        inner.throttle.write(bucket, tenant, now)
    } else {
        inner.throttle.read(bucket, tenant, now)
    };
    if let Verdict::Throttled { wait, violation } = verdict {
        let episode = Episode {
            bucket,
            write,
            violation,
        };
        return throttled(shared, &mut inner, &errors, caller, now, wait, episode);
    }
    let fault = inner.faults.roll();
    let data = inner.data(&caller.data);
    if let Some(answer) = injected(shared, data, &errors, fault) {
        return answer;
    }
    // Records processed and syncs ended since the last request take effect first.
    sync::settle(shared, data, now);
    data.land_due(now);
    let query = path.split_once('?').map_or("", |(_, q)| q);
    let mut answer = execute(shared, data, &errors, target, query, content_type, body);
    answer.drop = fault == Fault::Drop;
    answer
}

/// Count a request that reached the throttle in its route's counter.
fn count(stats: &mut Stats, target: Target<'_>) {
    let counter = match target {
        // A property update is an Intune enrollment write like an assignment: same window.
        Target::Assign(_) | Target::DeleteAssignment(..) | Target::UpdateProperties(_) => {
            &mut stats.write_requests
        }
        Target::ReadAssignments(_) => &mut stats.assignment_reads,
        Target::ListIdentities | Target::ReadIdentity(_) => &mut stats.identity_reads,
        Target::ListProfiles
        | Target::ReadProfile(_)
        | Target::ReadProfileAssignments(_)
        | Target::AssignProfile(_) => &mut stats.profile_requests,
        Target::ListDevices
        | Target::ListGroups
        | Target::ReadGroup(_)
        | Target::ListMembers(..) => &mut stats.directory_reads,
        Target::BindMembers(_) | Target::AddMember(_) => &mut stats.group_writes,
        Target::ImportRecords | Target::CreateRecord => &mut stats.import_requests,
        Target::ListRecords | Target::ReadRecord(_) => &mut stats.import_reads,
        // Counted by outcome (`import_records_deleted`, `syncs`, `syncs_refused`).
        Target::RemoveMember(..)
        | Target::DeleteRecord(_)
        | Target::SyncAutopilot
        | Target::ReadAutopilotSettings => return,
    };
    *counter += 1;
}

/// Carry out a request that got past throttle and faults, on the caller's tenant's data.
fn execute(
    shared: &Shared,
    data: &mut TenantData,
    errors: &Errors<'_>,
    target: Target<'_>,
    query: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Answer {
    let ctx = errors.ctx;
    match target {
        Target::Assign(device) => {
            assignments::create(shared, data, errors, device, content_type, body)
        }
        Target::ReadAssignments(device) => assignments::read(shared, data, errors, device),
        Target::DeleteAssignment(device, id) => {
            assignments::delete(shared, data, errors, device, id)
        }
        Target::UpdateProperties(device) => {
            properties::update(shared, data, errors, device, content_type, body)
        }
        Target::ListIdentities => identities::list(shared, data, errors, ctx, query),
        Target::ReadIdentity(id) => identities::get(shared, data, errors, ctx, id, query),
        Target::ListProfiles => profiles::list(shared, data, errors, query),
        Target::ReadProfile(id) => profiles::get(shared, data, errors, id, query),
        Target::ReadProfileAssignments(id) => profiles::assignments(shared, data, errors, id),
        Target::AssignProfile(id) => profiles::assign(shared, data, errors, id, content_type, body),
        Target::ListDevices => devices::list(shared, data, errors, query),
        Target::ListGroups => groups::list(shared, errors, query),
        Target::ReadGroup(id) => groups::get(shared, errors, id, query),
        Target::ListMembers(id, cast) => groups::members(shared, data, errors, id, cast, query),
        Target::BindMembers(id) => members::bind(shared, data, errors, id, content_type, body),
        Target::AddMember(id) => members::add(shared, data, errors, id, content_type, body),
        Target::RemoveMember(id, member) => members::remove(shared, data, errors, id, member),
        Target::ImportRecords => records::import(shared, data, errors, content_type, body),
        Target::CreateRecord => records::create(shared, data, errors, content_type, body),
        Target::ListRecords => records::list(shared, data, errors, query),
        Target::ReadRecord(id) => records::get(data, errors, id),
        Target::DeleteRecord(id) => records::delete(data, errors, id),
        Target::SyncAutopilot => sync::trigger(shared, data, errors),
        Target::ReadAutopilotSettings => sync::settings(data, errors),
    }
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

/// What a 429 answers: the bucket and window that refused, and whether the request came
/// back too early.
#[derive(Debug, Clone, Copy)]
struct Episode {
    bucket: Bucket,
    write: bool,
    violation: bool,
}

/// The 429, with a Retry-After in the configured (or, for `mixed`, drawn) form. A write 429
/// that states a time becomes the tenant's promise, in that bucket, that violations are judged
/// against.
fn throttled(
    shared: &Shared,
    inner: &mut Inner,
    errors: &Errors<'_>,
    caller: &Caller,
    now: Instant,
    wait: std::time::Duration,
    episode: Episode,
) -> Answer {
    let stats = &mut inner.data(&caller.data).stats;
    stats.throttled += 1;
    if episode.violation {
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
            if episode.write {
                inner
                    .throttle
                    .promised(episode.bucket, &caller.tenant, now, stated);
            }
            answer.with_header("retry-after", value)
        }
        None => answer,
    }
}
