//! Every `/beta/...` and `/v1.0/...` request: the bearer check, the timed outage (which refuses a `$batch`
//! envelope whole), then `$batch` or a single request, and the connection drop the `drop`
//! fault asks for (the answer is computed, then never sent). The response carries the token's
//! [`Caller`], so that its status counts for that tenant.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};

use super::batch::batch;
use super::conn::ConnHandle;
use super::envelope::Ctx;
use super::graph::{method_not_allowed, outage_refusal, single};
use super::routes::{Route, route, starts_outage};
use super::state::{Caller, Shared};
use super::tokens::authenticate;

/// The API versions served, as the path's first segment: Intune's Autopilot resources are
/// beta only, Entra ID's (devices, groups) are in both.
pub(crate) const VERSIONS: [&str; 2] = ["beta", "v1.0"];

/// Every `/beta/...` or `/v1.0/...` request.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    Extension(mut ctx): Extension<Ctx>,
    conn: Option<Extension<ConnHandle>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = match authenticate(&shared, &headers, &ctx) {
        Ok(caller) => caller,
        Err((answer, caller)) => return attributed(answer.into_response(), caller),
    };
    // The query goes along: the identity listing reads its options from it.
    let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let version = VERSIONS
        .into_iter()
        .find(|v| target.get(1..=v.len()) == Some(v))
        .unwrap_or("beta");
    ctx.version = version;
    let path = target.get(1 + version.len()..).unwrap_or("");
    let route = route(path);
    let first_write = starts_outage(&route, &method);
    if let Some(refused) = outage_refusal(
        &shared,
        &ctx,
        path,
        &caller,
        first_write,
        tokio::time::Instant::now(),
    ) {
        return attributed(refused.into_response(), Some(caller));
    }
    let answer = match route {
        Route::Batch if method == Method::POST => batch(&shared, &ctx, &caller, &headers, &body),
        Route::Batch => method_not_allowed(&shared, &ctx, path, &method),
        r => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            single(
                &shared,
                &ctx,
                &caller,
                &method,
                path,
                r,
                content_type,
                &body,
            )
        }
    };
    if answer.delay_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(answer.delay_ms.into())).await;
    }
    if answer.drop
        && let Some(Extension(conn)) = conn
    {
        // The connection task drops the connection (and this future) on this signal.
        conn.drop_connection();
        std::future::pending::<()>().await;
    }
    attributed(answer.into_response(), Some(caller))
}

fn attributed(mut response: Response, caller: Option<Caller>) -> Response {
    if let Some(caller) = caller {
        response.extensions_mut().insert(caller);
    }
    response
}
