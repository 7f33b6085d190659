//! One request, one classified outcome. The client never retries by itself: the retry policy
//! and the throttle decide what happens next, so every attempt is counted and paced.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use uuid::Uuid;

use super::model::{Assignment, GraphError, ReturnedAssignment};

/// Why an attempt did not create the assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorInfo {
    /// Graph's `error.code` (programmed against), or our own code for transport failures.
    pub code: String,
    /// Readable message (Intune's JSON-inside-message unwrapped).
    pub message: String,
}

/// What one attempt means for the row.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 201 with the new assignment's id.
    Created { id: String },
    /// Worth another attempt. `ambiguous`: the request may have been executed (the answer was
    /// lost or the gateway gave up), so the row must be reconciled before any new POST.
    Retry {
        retry_after: Option<Duration>,
        ambiguous: bool,
        error: ErrorInfo,
    },
    /// 401: the token was refused; refresh once and retry.
    Unauthorized(ErrorInfo),
    /// Will not succeed by retrying (400, 403, 404, 409, ...).
    Permanent(ErrorInfo),
}

/// One attempt with what the service said about it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub outcome: Outcome,
    pub http_status: Option<u16>,
    pub request_id: Option<String>,
    pub client_request_id: String,
}

impl Attempt {
    pub fn throttled(&self) -> bool {
        self.http_status == Some(429)
    }
}

/// Parse a `Retry-After` value: whole seconds, fractional seconds (older Graph pages show
/// `2.128`) or an HTTP-date (relative to `now`; a date in the past means "now").
/// Values over a day are capped, garbage is `None` (then backoff applies).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    const CAP: Duration = Duration::from_secs(24 * 3600);
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = v.parse().ok()?;
        // Hundreds of digits parse as infinity: that is "very long", so the cap applies.
        if secs.is_nan() || secs < 0.0 {
            return None;
        }
        return Some(Duration::from_secs_f64(secs.min(CAP.as_secs_f64())));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO).min(CAP))
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The Graph client: a shared connection pool and the base URL.
#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    graph_url: String,
}

impl GraphClient {
    pub fn new(
        graph_url: &str,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(request_timeout)
            // A redirect would carry the bearer token somewhere we did not choose.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("autopilot-bulk/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            graph_url: graph_url.trim_end_matches('/').to_string(),
        })
    }

    fn assignments_url(&self, device: Uuid) -> String {
        format!(
            "{}/deviceManagement/windowsAutopilotDeviceIdentities/{device}/deploymentProfile/assignments",
            self.graph_url
        )
    }

    /// POST one assignment. Each attempt carries a fresh `client-request-id`.
    pub async fn post_assignment(&self, token: &str, device: Uuid, body: &Assignment) -> Attempt {
        match self
            .call(
                token,
                &Call::Post {
                    device,
                    body: body.clone(),
                },
            )
            .await
        {
            Reply::Posted(a) | Reply::Listed(_, a) => a,
        }
    }

    /// GET the device's assignments (used to reconcile after an ambiguous failure).
    /// `Err` carries the classified failure of the GET itself.
    pub async fn list_assignments(
        &self,
        token: &str,
        device: Uuid,
    ) -> (Result<Vec<ReturnedAssignment>, Outcome>, Attempt) {
        match self.call(token, &Call::List { device }).await {
            Reply::Listed(r, a) => (r, a),
            Reply::Posted(a) => (Err(a.outcome.clone()), a),
        }
    }

    /// One request on its own.
    pub async fn call(&self, token: &str, call: &Call) -> Reply {
        let client_request_id = Uuid::new_v4().to_string();
        let request = match call {
            Call::Post { device, body } => self.http.post(self.assignments_url(*device)).json(body),
            Call::List { device } => self.http.get(self.assignments_url(*device)),
        };
        let sent = request
            .bearer_auth(token)
            .header("Accept", "application/json")
            .header("client-request-id", &client_request_id)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return call.failed(transport_failure(&e, client_request_id)),
        };
        let status = response.status();
        let headers = response.headers().clone();
        match response.bytes().await {
            Ok(body) => call.reply(status, &headers, &body, client_request_id),
            Err(e) => call.failed(transport_failure(&e, client_request_id)),
        }
    }

    /// Up to [`MAX_BATCH`] requests in one `$batch` envelope. Each inner request gets its own
    /// reply, matched by id (Graph may answer in any order); an inner request without an
    /// answer, or an envelope that failed as a whole, gives every affected request the
    /// envelope's outcome — ambiguous when the envelope may have been executed, so that no
    /// row is ever re-POSTed blindly.
    pub async fn call_batch(&self, token: &str, calls: &[Call]) -> Vec<Reply> {
        let ids: Vec<String> = (0..calls.len())
            .map(|_| Uuid::new_v4().to_string())
            .collect();
        let base = self.graph_url.len();
        let requests: Vec<serde_json::Value> = calls
            .iter()
            .zip(&ids)
            .map(|(call, crid)| {
                let (method, device, body) = match call {
                    Call::Post { device, body } => ("POST", device, Some(body)),
                    Call::List { device } => ("GET", device, None),
                };
                let url = self.assignments_url(*device)[base..].to_string();
                let mut r = serde_json::json!({
                    "id": crid,
                    "method": method,
                    "url": url,
                    "headers": {"Accept": "application/json", "client-request-id": crid},
                });
                if let Some(body) = body {
                    r["body"] = serde_json::to_value(body).unwrap_or_default();
                    r["headers"]["Content-Type"] = "application/json".into();
                }
                r
            })
            .collect();
        let envelope_id = Uuid::new_v4().to_string();
        let sent = self
            .http
            .post(format!("{}/$batch", self.graph_url))
            .bearer_auth(token)
            .header("Accept", "application/json")
            .header("client-request-id", &envelope_id)
            .json(&serde_json::json!({ "requests": requests }))
            .send()
            .await;
        let whole = |attempt: Attempt| -> Vec<Reply> {
            calls
                .iter()
                .zip(&ids)
                .map(|(c, crid)| {
                    c.failed(Attempt {
                        client_request_id: crid.clone(),
                        ..attempt.clone()
                    })
                })
                .collect()
        };
        let response = match sent {
            Ok(r) => r,
            Err(e) => return whole(transport_failure(&e, envelope_id)),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return whole(transport_failure(&e, envelope_id)),
        };
        if status != StatusCode::OK {
            return whole(Attempt {
                outcome: classify_error(status, &headers, &body),
                http_status: Some(status.as_u16()),
                request_id: header_str(&headers, "request-id"),
                client_request_id: envelope_id,
            });
        }
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
        let mut answers: std::collections::HashMap<String, Inner> =
            match serde_json::from_slice::<Answers>(&body) {
                Ok(a) => a.responses.into_iter().map(|r| (r.id.clone(), r)).collect(),
                Err(_) => Default::default(),
            };
        calls
            .iter()
            .zip(&ids)
            .map(|(call, crid)| match answers.remove(crid) {
                Some(inner) => {
                    let mut h = HeaderMap::new();
                    for (k, v) in &inner.headers {
                        if let (Ok(name), Some(Ok(value))) = (
                            reqwest::header::HeaderName::from_bytes(k.as_bytes()),
                            v.as_str().map(reqwest::header::HeaderValue::from_str),
                        ) {
                            h.insert(name, value);
                        }
                    }
                    let status =
                        StatusCode::from_u16(inner.status).unwrap_or(StatusCode::BAD_GATEWAY);
                    let body = serde_json::to_vec(&inner.body).unwrap_or_default();
                    call.reply(status, &h, &body, crid.clone())
                }
                None => call.failed(Attempt {
                    outcome: Outcome::Retry {
                        retry_after: None,
                        ambiguous: true,
                        error: ErrorInfo {
                            code: "MissingBatchResponse".into(),
                            message: "the $batch answer has no response for this request".into(),
                        },
                    },
                    http_status: Some(status.as_u16()),
                    request_id: header_str(&headers, "request-id"),
                    client_request_id: crid.clone(),
                }),
            })
            .collect()
    }
}

/// Graph's cap on requests in one `$batch`.
pub const MAX_BATCH: usize = 20;

/// One request to the assignment resource.
#[derive(Debug, Clone)]
pub enum Call {
    Post { device: Uuid, body: Assignment },
    List { device: Uuid },
}

/// The answer to a [`Call`].
#[derive(Debug, Clone)]
pub enum Reply {
    Posted(Attempt),
    Listed(Result<Vec<ReturnedAssignment>, Outcome>, Attempt),
}

impl Reply {
    pub fn attempt(&self) -> &Attempt {
        match self {
            Reply::Posted(a) | Reply::Listed(_, a) => a,
        }
    }
}

impl Call {
    /// The reply for an HTTP answer (top-level or inner).
    fn reply(&self, status: StatusCode, headers: &HeaderMap, body: &[u8], crid: String) -> Reply {
        let request_id = header_str(headers, "request-id");
        match self {
            Call::Post { .. } => {
                let outcome = if status == StatusCode::CREATED {
                    match serde_json::from_slice::<ReturnedAssignment>(body)
                        .ok()
                        .and_then(|a| a.id)
                    {
                        Some(id) => Outcome::Created { id },
                        // Created but unreadable: it exists; reconcile to learn its id.
                        None => Outcome::Retry {
                            retry_after: None,
                            ambiguous: true,
                            error: ErrorInfo {
                                code: "UnreadableCreatedResponse".into(),
                                message: "201 Created without a readable id".into(),
                            },
                        },
                    }
                } else {
                    classify_error(status, headers, body)
                };
                Reply::Posted(Attempt {
                    outcome,
                    http_status: Some(status.as_u16()),
                    request_id,
                    client_request_id: crid,
                })
            }
            Call::List { .. } => {
                #[derive(serde::Deserialize)]
                struct List {
                    value: Vec<ReturnedAssignment>,
                }
                let result = if status == StatusCode::OK {
                    serde_json::from_slice::<List>(body)
                        .map(|l| l.value)
                        .map_err(|e| Outcome::Retry {
                            retry_after: None,
                            ambiguous: false,
                            error: ErrorInfo {
                                code: "UnreadableResponse".into(),
                                message: format!("assignment list is not JSON: {e}"),
                            },
                        })
                } else {
                    Err(classify_error(status, headers, body))
                };
                let attempt = Attempt {
                    outcome: match &result {
                        Ok(_) => Outcome::Created { id: String::new() },
                        Err(o) => o.clone(),
                    },
                    http_status: Some(status.as_u16()),
                    request_id,
                    client_request_id: crid,
                };
                Reply::Listed(result, attempt)
            }
        }
    }

    /// The reply for a request that got no HTTP answer of its own.
    pub fn failed(&self, attempt: Attempt) -> Reply {
        match self {
            Call::Post { .. } => Reply::Posted(attempt),
            Call::List { .. } => Reply::Listed(Err(attempt.outcome.clone()), attempt),
        }
    }
}

/// Classify a non-success answer. 429/503 were not executed; 500/502/504 may have been.
pub fn classify_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Outcome {
    let error = match GraphError::from_body(body) {
        Some(e) => ErrorInfo {
            code: if e.code.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("Error")
                    .replace(' ', "")
            } else {
                e.code.clone()
            },
            message: e.readable_message(),
        },
        None => ErrorInfo {
            code: status
                .canonical_reason()
                .unwrap_or("Error")
                .replace(' ', ""),
            message: String::from_utf8_lossy(&body[..body.len().min(300)])
                .trim()
                .to_string(),
        },
    };
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    match status.as_u16() {
        429 | 503 => Outcome::Retry {
            retry_after,
            ambiguous: false,
            error,
        },
        500 | 502 | 504 => Outcome::Retry {
            retry_after,
            ambiguous: true,
            error,
        },
        401 => Outcome::Unauthorized(error),
        _ => Outcome::Permanent(error),
    }
}

/// A request that got no HTTP answer. A failure to connect means nothing was sent; anything
/// later (reset, timeout, truncated answer) may have reached the service.
fn transport_failure(e: &reqwest::Error, client_request_id: String) -> Attempt {
    let not_sent = e.is_connect() || e.is_builder();
    let code = if e.is_timeout() {
        "Timeout"
    } else if e.is_connect() {
        "ConnectionFailed"
    } else {
        "ConnectionLost"
    };
    // reqwest's Display never includes headers, so the token cannot leak through it.
    let mut message = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        message.push_str(": ");
        message.push_str(&s.to_string());
        src = s.source();
    }
    Attempt {
        outcome: Outcome::Retry {
            retry_after: None,
            ambiguous: !not_sent,
            error: ErrorInfo {
                code: code.into(),
                message,
            },
        },
        http_status: None,
        request_id: None,
        client_request_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(" 2.128 ", now),
            Some(Duration::from_millis(2128))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(7)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        for bad in ["", "soon", "-1", "1.2.3", "NaN"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
        assert_eq!(
            parse_retry_after("99999999999", now),
            Some(Duration::from_secs(24 * 3600))
        );
    }

    #[test]
    fn classifies_statuses() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "2".parse().unwrap());
        let body = br#"{"error":{"code":"TooManyRequests","message":"slow down"}}"#;
        assert_eq!(
            classify_error(StatusCode::TOO_MANY_REQUESTS, &h, body),
            Outcome::Retry {
                retry_after: Some(Duration::from_secs(2)),
                ambiguous: false,
                error: ErrorInfo {
                    code: "TooManyRequests".into(),
                    message: "slow down".into()
                }
            }
        );
        assert!(matches!(
            classify_error(StatusCode::GATEWAY_TIMEOUT, &HeaderMap::new(), b""),
            Outcome::Retry {
                ambiguous: true,
                ..
            }
        ));
        assert!(matches!(
            classify_error(StatusCode::UNAUTHORIZED, &HeaderMap::new(), b""),
            Outcome::Unauthorized(_)
        ));
        let Outcome::Permanent(e) = classify_error(
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
            b"<html>nope</html>",
        ) else {
            panic!()
        };
        assert_eq!(e.code, "NotFound");
        assert_eq!(e.message, "<html>nope</html>");
    }
}
