//! `--batch`: requests collected into `$batch` envelopes of up to [`MAX_BATCH`].
//!
//! Each inner request counts against the service's throttle on its own and has already taken
//! its own window slot, so batching changes the number of round trips, never the pace. Every
//! inner request gets its own answer, matched by id (Graph may answer in any order); an inner
//! request without an answer, or an envelope that failed as a whole, is ambiguous when the
//! envelope may have been executed, so no row is ever re-POSTed blindly and no envelope is
//! ever replayed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::answer::{
    ErrorInfo, Failure, Raw, classify_error, header_str, read_answer, transport_failure,
};
use super::request::Request;

/// Graph's cap on requests in one `$batch`.
pub const MAX_BATCH: usize = 20;

/// One request waiting for a seat in an envelope.
pub(crate) struct Seat {
    pub request: Request,
    pub client_request_id: String,
    pub token: Arc<str>,
    pub reply: oneshot::Sender<Raw>,
}

/// What an inner request gets when its envelope ended without a word about it.
pub(crate) fn lost_in_envelope(code: &str, message: &str, status: Option<u16>) -> Raw {
    Raw::Lost {
        failure: Failure::Retry {
            retry_after: None,
            ambiguous: true,
            error: ErrorInfo {
                code: code.into(),
                message: message.into(),
            },
        },
        http_status: status,
        request_id: None,
    }
}

/// Collect the requests workers hand in into envelopes, at most `envelopes` in flight.
pub(crate) async fn batcher(
    http: reqwest::Client,
    graph_url: String,
    mut queue: mpsc::Receiver<Seat>,
    envelopes: usize,
) {
    // Requests arrive together when window slots open; a few milliseconds fill an envelope.
    const LINGER: Duration = Duration::from_millis(5);
    let in_flight = Arc::new(Semaphore::new(envelopes.max(1)));
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        let deadline = Instant::now() + LINGER;
        while group.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, queue.recv()).await {
                Ok(Some(next)) => group.push(next),
                _ => break,
            }
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let (http, graph_url) = (http.clone(), graph_url.clone());
        tokio::spawn(async move {
            let answers = send_envelope(&http, &graph_url, &group).await;
            for (seat, raw) in group.into_iter().zip(answers) {
                let _ = seat.reply.send(raw);
            }
            drop(permit);
        });
    }
}

/// One envelope: one raw answer per seat, in the seats' order.
async fn send_envelope(http: &reqwest::Client, graph_url: &str, seats: &[Seat]) -> Vec<Raw> {
    let requests: Vec<serde_json::Value> = seats
        .iter()
        .map(|s| {
            let mut r = serde_json::json!({
                "id": s.client_request_id,
                "method": s.request.method(),
                "url": s.request.path(),
                "headers": {"Accept": "application/json", "client-request-id": s.client_request_id},
            });
            if let Some(body) = s.request.body() {
                r["body"] = body;
                r["headers"]["Content-Type"] = "application/json".into();
            }
            r
        })
        .collect();
    let whole = |raw: Raw| vec![raw; seats.len()];
    let Some(token) = seats.first().map(|s| s.token.clone()) else {
        return Vec::new();
    };
    let sent = http
        .post(format!("{graph_url}/$batch"))
        .bearer_auth(&*token)
        .header("Accept", "application/json")
        .header("client-request-id", uuid::Uuid::new_v4().to_string())
        .json(&serde_json::json!({ "requests": requests }))
        .send()
        .await;
    let (status, headers, body) = match sent {
        Err(e) => return whole(transport_failure(&e)),
        Ok(response) => match read_answer(response).await {
            Raw::Answer {
                status,
                headers,
                body,
            } => (status, headers, body),
            lost => return whole(lost),
        },
    };
    if status != StatusCode::OK {
        return whole(Raw::Lost {
            failure: classify_error(status, &headers, &body),
            http_status: Some(status.as_u16()),
            request_id: header_str(&headers, "request-id"),
        });
    }
    let mut answers = inner_answers(&body);
    seats
        .iter()
        .map(|s| {
            answers.remove(&s.client_request_id).unwrap_or_else(|| {
                lost_in_envelope(
                    "MissingBatchResponse",
                    "the $batch answer has no response for this request",
                    Some(status.as_u16()),
                )
            })
        })
        .collect()
}

/// The envelope's inner answers by request id; an unreadable envelope has none.
fn inner_answers(body: &[u8]) -> HashMap<String, Raw> {
    #[derive(serde::Deserialize)]
    struct Inner {
        id: String,
        status: u16,
        #[serde(default)]
        headers: serde_json::Map<String, serde_json::Value>,
        #[serde(default)]
        body: serde_json::Value,
    }
    #[derive(serde::Deserialize)]
    struct Answers {
        responses: Vec<Inner>,
    }
    let Ok(answers) = serde_json::from_slice::<Answers>(body) else {
        return HashMap::new();
    };
    answers
        .responses
        .into_iter()
        .map(|inner| {
            let mut headers = HeaderMap::new();
            for (k, v) in &inner.headers {
                if let (Ok(name), Some(Ok(value))) = (
                    HeaderName::from_bytes(k.as_bytes()),
                    v.as_str().map(HeaderValue::from_str),
                ) {
                    headers.insert(name, value);
                }
            }
            let raw = Raw::Answer {
                status: StatusCode::from_u16(inner.status).unwrap_or(StatusCode::BAD_GATEWAY),
                headers,
                body: serde_json::to_vec(&inner.body).unwrap_or_default(),
            };
            (inner.id, raw)
        })
        .collect()
}
