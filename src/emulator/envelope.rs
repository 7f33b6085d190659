//! The shapes Graph answers in: the per-request ids, the error envelope (optionally with
//! Intune's JSON-inside-`message`), and the headers every answer carries.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use uuid::Uuid;

/// Ids of one request (or one inner request of a batch), fixed before it is handled so that
/// error bodies and headers agree.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub request_id: String,
    pub client_request_id: String,
    /// `host:port` the client addressed, for `@odata.context` and Intune's `Url`.
    pub host: String,
    /// The API version the client addressed (`beta` or `v1.0`), for contexts and next links.
    pub version: &'static str,
}

impl Ctx {
    /// Echo the client's `client-request-id` (Graph does; clients log it per row), else a
    /// fresh GUID.
    pub(crate) fn new(headers: &HeaderMap, fallback_host: &str) -> Self {
        let client_request_id = headers
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.trim().is_empty())
            .map(str::to_string)
            .unwrap_or_else(new_guid);
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or(fallback_host)
            .to_string();
        Self {
            request_id: new_guid(),
            client_request_id,
            host,
            version: "beta",
        }
    }

    /// The context of one inner request of a batch: own request id, its own
    /// `client-request-id` header if it carried one, else the envelope's.
    pub(crate) fn inner(&self, client_request_id: Option<&str>) -> Self {
        Self {
            request_id: new_guid(),
            client_request_id: client_request_id
                .filter(|v| !v.trim().is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| self.client_request_id.clone()),
            host: self.host.clone(),
            version: self.version,
        }
    }
}

pub(crate) fn new_guid() -> String {
    Uuid::new_v4().to_string()
}

/// `2026-03-01T12:34:56` — the form of `innerError.date`.
pub(crate) fn graph_date() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .trim_end_matches('Z')
        .to_string()
}

/// What real Graph's front door reports about itself; clients keep it per row.
pub(crate) fn ags_diagnostic() -> &'static str {
    r#"{"ServerInfo":{"DataCenter":"Emulator","Slice":"E","Ring":"0","ScaleUnit":"000","RoleInstance":"EMU-127-0-0-1","ADSiteName":"LOC"}}"#
}

/// One answer before it becomes an HTTP response or an inner batch response.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    /// Extra headers (`Retry-After`, `WWW-Authenticate`, ...).
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
    /// Drop the connection instead of answering (the request was executed).
    pub drop: bool,
    /// Answer only after this many milliseconds (a write that commits after a lag answers
    /// once it has); 0: at once. Milliseconds keep the answer small: it is passed by value.
    pub delay_ms: u32,
}

impl Answer {
    pub(crate) fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body,
            drop: false,
            delay_ms: 0,
        }
    }

    pub(crate) fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The headers of this answer as a batch inner response carries them.
    pub(crate) fn inner_headers(&self) -> Value {
        let mut map = serde_json::Map::new();
        map.insert("Content-Type".into(), json!("application/json"));
        for (name, value) in &self.headers {
            map.insert(inner_header_name(name).into(), json!(value));
        }
        Value::Object(map)
    }
}

fn inner_header_name(name: &str) -> &str {
    match name {
        "retry-after" => "Retry-After",
        "www-authenticate" => "WWW-Authenticate",
        "location" => "Location",
        other => other,
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        // A 204 has no body at all (an inner batch 204 carries none either).
        let mut response = if self.status == StatusCode::NO_CONTENT {
            self.status.into_response()
        } else {
            (self.status, axum::Json(self.body)).into_response()
        };
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        response
    }
}

/// Builds Graph error envelopes for one request.
pub(crate) struct Errors<'a> {
    pub ctx: &'a Ctx,
    /// Intune's JSON-inside-`message` form.
    pub intune: bool,
    /// The request path (for Intune's `Url`).
    pub path: &'a str,
}

impl Errors<'_> {
    /// `{"error":{"code","message","innerError":{date, request-id, client-request-id}}}`.
    pub(crate) fn answer(&self, status: StatusCode, code: &str, message: &str) -> Answer {
        let message = if self.intune {
            self.intune_message(message)
        } else {
            message.to_string()
        };
        Answer::json(status, self.body(code, &message))
    }

    /// Same envelope, never in Intune's form: authentication is Graph's front door, which
    /// answers before Intune is reached.
    pub(crate) fn plain(&self, status: StatusCode, code: &str, message: &str) -> Answer {
        Answer::json(status, self.body(code, message))
    }

    /// 503 `ServiceUnavailable`, with `Retry-After` when given: the answer of a service that
    /// did nothing and may work later (an injected fault, the timed outage).
    pub(crate) fn unavailable(&self, retry_after: Option<u64>) -> Answer {
        let answer = self.answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The service is temporarily unavailable. Please retry later.",
        );
        match retry_after {
            Some(secs) => answer.with_header("retry-after", secs.to_string()),
            None => answer,
        }
    }

    fn body(&self, code: &str, message: &str) -> Value {
        json!({
            "error": {
                "code": code,
                "message": message,
                "innerError": {
                    "date": graph_date(),
                    "request-id": self.ctx.request_id,
                    "client-request-id": self.ctx.client_request_id,
                }
            }
        })
    }

    fn intune_message(&self, message: &str) -> String {
        json!({
            "_version": 3,
            "Message": format!(
                "{message} - Operation ID (for customer support): {} - Activity ID: {} - Url: http://{}/beta{}",
                new_guid(),
                self.ctx.client_request_id,
                self.ctx.host,
                self.path,
            ),
            "CustomApiErrorPhrase": "",
            "RetryAfter": null,
            "ErrorSourceService": "",
            "HttpHeaders": "{}",
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx {
        Ctx {
            request_id: "r".into(),
            client_request_id: "c".into(),
            host: "127.0.0.1:1".into(),
            version: "beta",
        }
    }

    #[test]
    fn error_envelope_has_inner_error_ids() {
        let ctx = ctx();
        let e = Errors {
            ctx: &ctx,
            intune: false,
            path: "/x",
        };
        let a = e.answer(StatusCode::BAD_REQUEST, "BadRequest", "nope");
        assert_eq!(a.body["error"]["code"], "BadRequest");
        assert_eq!(a.body["error"]["message"], "nope");
        assert_eq!(a.body["error"]["innerError"]["request-id"], "r");
        assert_eq!(a.body["error"]["innerError"]["client-request-id"], "c");
    }

    #[test]
    fn intune_envelope_wraps_the_message_in_json() {
        let ctx = ctx();
        let e = Errors {
            ctx: &ctx,
            intune: true,
            path: "/x",
        };
        let a = e.answer(StatusCode::BAD_REQUEST, "BadRequest", "nope");
        let inner: Value =
            serde_json::from_str(a.body["error"]["message"].as_str().unwrap()).unwrap();
        assert_eq!(inner["_version"], 3);
        let m = inner["Message"].as_str().unwrap();
        assert!(
            m.starts_with("nope - Operation ID (for customer support): "),
            "{m}"
        );
        assert!(m.ends_with("Url: http://127.0.0.1:1/beta/x"), "{m}");
        assert_eq!(inner["RetryAfter"], Value::Null);
    }
}
