//! HTTP plumbing: the router, the middleware that stamps Graph's headers, adds latency and
//! counts answers, and an accept loop of our own.
//!
//! The accept loop exists for one fault: "store the assignment, then drop the connection
//! without answering". An axum handler cannot close its connection, so each connection gets a
//! [`ConnHandle`] in its requests' extensions; the connection task races the hyper connection
//! against it and drops the connection when a handler fires it.
//! The same race against the server's shutdown token makes shutdown close keep-alive
//! connections instead of waiting for them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower_service::Service as _;

use super::conn::ConnHandle;
use super::envelope::{Ctx, Errors, ags_diagnostic};
use super::state::{Caller, Shared};
use super::{dispatch, tokens};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(tokens::token))
        .route("/_emulator/stats", get(stats))
        .route("/_emulator/assignments", get(assignments))
        .route("/beta", any(dispatch::handle))
        .route("/beta/{*rest}", any(dispatch::handle))
        .route("/v1.0", any(dispatch::handle))
        .route("/v1.0/{*rest}", any(dispatch::handle))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), stamp))
        .with_state(shared)
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(super::sync::stats(&shared)).into_response()
}

/// All assignments, or with `?tenant=NAME` one tenant's (404 for a tenant not accepted).
async fn assignments(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match query.get("tenant") {
        None => axum::Json(shared.assignments()).into_response(),
        Some(tenant) => match shared.tenant_assignments(tenant) {
            Some(assignments) => axum::Json(assignments).into_response(),
            None => (
                axum::http::StatusCode::NOT_FOUND,
                axum::Json(serde_json::json!({
                    "error": format!("The emulator has no tenant '{tenant}'.")
                })),
            )
                .into_response(),
        },
    }
}

async fn not_found(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let ctx = req
        .extensions()
        .get::<Ctx>()
        .cloned()
        .unwrap_or_else(|| Ctx::new(req.headers(), &shared.addr.to_string()));
    Errors {
        ctx: &ctx,
        intune: false,
        path: req.uri().path(),
    }
    .plain(
        axum::http::StatusCode::NOT_FOUND,
        "NotFound",
        &format!("The emulator has no resource at '{}'.", req.uri().path()),
    )
    .into_response()
}

/// Fix the request's ids before the handler runs (error bodies quote them), then on the way
/// out: Graph's headers and the seeded latency on Graph routes, and the status count on
/// everything but the emulator's own `/_emulator` routes (so polling stats does not change
/// them).
async fn stamp(State(shared): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let own = path.starts_with("/_emulator");
    let graph = dispatch::VERSIONS.iter().any(|v| {
        path.strip_prefix('/')
            .and_then(|p| p.strip_prefix(v))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    });
    let ctx = Ctx::new(req.headers(), &shared.addr.to_string());
    req.extensions_mut().insert(ctx.clone());
    let mut response = next.run(req).await;
    if graph {
        let delay = shared.lock().faults.latency();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let headers = response.headers_mut();
        for (name, value) in [
            ("request-id", ctx.request_id.as_str()),
            ("client-request-id", ctx.client_request_id.as_str()),
            ("x-ms-ags-diagnostic", ags_diagnostic()),
        ] {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        }
    }
    if !own {
        let caller = response.extensions().get::<Caller>();
        shared
            .lock()
            .stats_of(caller)
            .count_status(response.status().as_u16());
    }
    response
}

/// Accept connections until `shutdown` fires; then every open connection is closed.
pub(crate) async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connection tasks so the set stays as small as the open connections.
        while connections.try_join_next().is_some() {}
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!("emulator accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let kill = CancellationToken::new();
            let handle = ConnHandle::new(kill.clone());
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(handle.clone());
                let mut router = router.clone();
                async move { router.call(req).await }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = kill.cancelled() => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
    // Dropping the set aborts what is still open.
    connections.shutdown().await;
}
