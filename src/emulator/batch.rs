//! `POST /beta/$batch`: the envelope's rules (1 to 20 requests, unique ids, relative urls, a
//! `Content-Type` with every body), then each inner request fed through exactly the same
//! path as a top-level one.

use axum::http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Map, Value, json};

use super::envelope::{Answer, Ctx};
use super::graph::{errors, single};
use super::routes::route;
use super::state::{Caller, Shared};

/// Graph's documented cap on requests in one `$batch`.
const MAX_BATCH: usize = 20;

/// `POST /beta/$batch`: each inner request handled as the single request would be, answered
/// in request order. An inner `drop` fault stores that assignment, lets the other inner
/// requests run, then drops the whole connection.
pub(crate) fn batch(
    shared: &Shared,
    ctx: &Ctx,
    caller: &Caller,
    headers: &HeaderMap,
    body: &[u8],
) -> Answer {
    shared.lock().stats_of(Some(caller)).batch_requests += 1;
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
        let answer = inner_request(shared, &ctx, caller, &r);
        drop |= answer.drop;
        shared
            .lock()
            .stats_of(Some(caller))
            .count_inner_status(answer.status.as_u16());
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

fn inner_request(shared: &Shared, ctx: &Ctx, caller: &Caller, r: &InnerRequest) -> Answer {
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
        caller,
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
