//! What an HTTP answer means for the row: each request's answer is classified once, here, into
//! a typed [`Attempt`], so the run decides on codes and flags, never on raw statuses or bodies.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::model::{GraphError, ReturnedAssignment};

/// Why an attempt did not succeed, in words a results file can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorInfo {
    /// Graph's `error.code` (programmed against), or our own code for transport failures.
    pub code: String,
    /// Readable message (Intune's JSON-inside-message unwrapped).
    pub message: String,
}

/// A request that did not succeed, and what that means for trying again.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Worth another attempt. `ambiguous`: the request may have been executed (the answer was
    /// lost or the gateway gave up), so the row must be reconciled before any new POST.
    Retry {
        retry_after: Option<Duration>,
        ambiguous: bool,
        error: ErrorInfo,
    },
    /// 401: the token was refused; a fresh one may help.
    Unauthorized(ErrorInfo),
    /// Will not succeed by retrying (400, 403, 404, 409, ...).
    Permanent(ErrorInfo),
}

impl Failure {
    pub fn error(&self) -> &ErrorInfo {
        match self {
            Failure::Retry { error, .. }
            | Failure::Unauthorized(error)
            | Failure::Permanent(error) => error,
        }
    }
}

/// One request's answer: what it yielded (`T`: the created id, the listed assignments) or why
/// not, with what the service said about it for the results file.
#[derive(Debug, Clone)]
pub struct Attempt<T> {
    pub result: Result<T, Failure>,
    pub http_status: Option<u16>,
    pub request_id: Option<String>,
    pub client_request_id: String,
}

impl<T> Attempt<T> {
    pub fn failure(&self) -> Option<&Failure> {
        self.result.as_ref().err()
    }

    /// The same answer without its value: what pacing and the results file need.
    pub fn meta(&self) -> Attempt<()> {
        Attempt {
            result: self.result.as_ref().map(|_| ()).map_err(Clone::clone),
            http_status: self.http_status,
            request_id: self.request_id.clone(),
            client_request_id: self.client_request_id.clone(),
        }
    }
}

/// An HTTP answer as received (top-level or inside a `$batch`), or the transport failure that
/// took its place.
#[derive(Debug, Clone)]
pub(crate) enum Raw {
    Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: Vec<u8>,
    },
    /// No HTTP answer: the [`Failure`] says whether the request may have been executed.
    Lost {
        failure: Failure,
        http_status: Option<u16>,
        request_id: Option<String>,
    },
}

impl Raw {
    /// Classify into a typed attempt; `ok` turns a success answer into its value.
    pub(crate) fn attempt<T>(
        self,
        client_request_id: String,
        ok: impl FnOnce(StatusCode, &[u8]) -> Option<Result<T, Failure>>,
    ) -> Attempt<T> {
        match self {
            Raw::Answer {
                status,
                headers,
                body,
            } => Attempt {
                result: ok(status, &body)
                    .unwrap_or_else(|| Err(classify_error(status, &headers, &body))),
                http_status: Some(status.as_u16()),
                request_id: header_str(&headers, "request-id"),
                client_request_id,
            },
            Raw::Lost {
                failure,
                http_status,
                request_id,
            } => Attempt {
                result: Err(failure),
                http_status,
                request_id,
                client_request_id,
            },
        }
    }
}

/// The id of a created assignment: any 2xx with a readable id (Graph answers 201; a proxy or a
/// variant may answer 200 with the object). A blank id is no id: recording it would report a
/// `created` row whose assignment nobody can find. `None` for other statuses.
pub(crate) fn created_id(status: StatusCode, body: &[u8]) -> Option<Result<String, Failure>> {
    if !status.is_success() {
        return None;
    }
    Some(
        match serde_json::from_slice::<ReturnedAssignment>(body)
            .ok()
            .and_then(|a| a.id)
            .filter(|id| !id.trim().is_empty())
        {
            Some(id) => Ok(id),
            // Accepted but no id to show for it: it may exist; read it back to learn its id.
            None => Err(Failure::Retry {
                retry_after: None,
                ambiguous: true,
                error: ErrorInfo {
                    code: "UnreadableCreatedResponse".into(),
                    message: format!("{status} without a readable assignment id"),
                },
            }),
        },
    )
}

/// Any 2xx, whatever its body (a 204 has none). `None` for other statuses.
pub(crate) fn no_content(status: StatusCode, _body: &[u8]) -> Option<Result<(), Failure>> {
    status.is_success().then_some(Ok(()))
}

/// One object, from a 200. `None` for other statuses.
pub(crate) fn one<T: serde::de::DeserializeOwned>(
    status: StatusCode,
    body: &[u8],
) -> Option<Result<T, Failure>> {
    if status != StatusCode::OK {
        return None;
    }
    Some(
        serde_json::from_slice::<T>(body).map_err(|e| Failure::Retry {
            retry_after: None,
            ambiguous: false,
            error: ErrorInfo {
                code: "UnreadableResponse".into(),
                message: format!("the object is not the JSON Graph sends: {e}"),
            },
        }),
    )
}

/// One page of a listing: its items, and the absolute URL of the next page, if any.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Page<T> {
    pub value: Vec<T>,
    #[serde(rename = "@odata.nextLink", default)]
    pub next_link: Option<String>,
    /// `@odata.count`, when the service gives it: how many items the whole listing holds. A
    /// value that is not a count is no count (it bounds paging; it is never trusted further).
    #[serde(rename = "@odata.count", default, deserialize_with = "lenient_count")]
    pub count: Option<u64>,
}

fn lenient_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v: serde_json::Value = serde::Deserialize::deserialize(d)?;
    Ok(v.as_u64())
}

/// One page of a listing, from a 200. `None` for other statuses.
#[cfg(test)]
pub(crate) fn page<T: serde::de::DeserializeOwned>(
    status: StatusCode,
    body: &[u8],
) -> Option<Result<Page<T>, Failure>> {
    page_from("the listing", status, body)
}

/// [`page`], naming the route that answered (`GET /path`) when the answer is not a page: an
/// assignment route's garbage is not the identity listing's.
pub(crate) fn page_from<T: serde::de::DeserializeOwned>(
    route: &str,
    status: StatusCode,
    body: &[u8],
) -> Option<Result<Page<T>, Failure>> {
    if status != StatusCode::OK {
        return None;
    }
    Some(
        serde_json::from_slice::<Page<T>>(body).map_err(|e| Failure::Retry {
            retry_after: None,
            ambiguous: false,
            error: ErrorInfo {
                code: "UnreadableResponse".into(),
                message: format!("{route} answered a page that is not the JSON Graph sends: {e}"),
            },
        }),
    )
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

pub(crate) fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Classify a non-success answer. 429/503 were not executed; 500/502/504 may have been.
pub fn classify_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Failure {
    let fallback_code = || {
        status
            .canonical_reason()
            .unwrap_or("Error")
            .replace(' ', "")
    };
    let error = match GraphError::from_body(body) {
        Some(e) => ErrorInfo {
            code: if e.code.is_empty() {
                fallback_code()
            } else {
                e.code.clone()
            },
            message: e.readable_message(),
        },
        None => ErrorInfo {
            code: fallback_code(),
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
        429 | 503 => Failure::Retry {
            retry_after,
            ambiguous: false,
            error,
        },
        500 | 502 | 504 => Failure::Retry {
            retry_after,
            ambiguous: true,
            error,
        },
        401 => Failure::Unauthorized(error),
        _ => Failure::Permanent(error),
    }
}

/// The most read from one answer. Graph's answers here are a few kilobytes (a `$batch`
/// envelope of 20, a page of a listing); a server that sends more is broken or hostile, and
/// reading on would only cost memory.
pub(crate) const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// An answer's body, or `Ok(None)` when it is longer than `limit` (reading stops there).
pub(crate) async fn capped_body(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// Read an answer's body, at most [`MAX_ANSWER_BYTES`] of it.
pub(crate) async fn read_answer(response: reqwest::Response) -> Raw {
    let status = response.status();
    let headers = response.headers().clone();
    let too_large = |status: StatusCode, headers: &HeaderMap| Raw::Lost {
        // The request was answered, so it may have been executed: read it back, never resend.
        failure: Failure::Retry {
            retry_after: None,
            ambiguous: true,
            error: ErrorInfo {
                code: "ResponseTooLarge".into(),
                message: format!(
                    "the answer ({status}) is larger than {} MiB; not read further",
                    MAX_ANSWER_BYTES / (1024 * 1024)
                ),
            },
        },
        http_status: Some(status.as_u16()),
        request_id: header_str(headers, "request-id"),
    };
    match capped_body(response, MAX_ANSWER_BYTES).await {
        Ok(Some(body)) => Raw::Answer {
            status,
            headers,
            body,
        },
        Ok(None) => too_large(status, &headers),
        Err(e) => transport_failure(&e),
    }
}

/// A request that got no HTTP answer. A failure to connect means nothing was sent; anything
/// later (reset, timeout, truncated answer) may have reached the service.
pub(crate) fn transport_failure(e: &reqwest::Error) -> Raw {
    let not_sent = e.is_connect() || e.is_builder();
    let code = if e.is_timeout() {
        "Timeout"
    } else if e.is_connect() {
        "ConnectionFailed"
    } else {
        "ConnectionLost"
    };
    // reqwest's Display never includes headers, so the token cannot leak through it.
    let mut message = if e.is_timeout() {
        // Name the bound: a server that accepts and never answers, or trickles, ends here.
        format!("no complete answer within --request-timeout: {e}")
    } else {
        e.to_string()
    };
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        message.push_str(": ");
        message.push_str(&s.to_string());
        src = s.source();
    }
    Raw::Lost {
        failure: Failure::Retry {
            retry_after: None,
            ambiguous: !not_sent,
            error: ErrorInfo {
                code: code.into(),
                message,
            },
        },
        http_status: None,
        request_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::model::Identity;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: crate::jsonish::cases(256),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Whatever a service answers, with any status and any Retry-After, it is classified
        /// without a panic, as the status decides, with a code to report; a created id is
        /// never blank.
        #[test]
        fn any_answer_is_classified_and_never_panics(
            body in crate::jsonish::body(),
            status in 100u16..1000,
            retry_after in "[ -~]{0,24}",
        ) {
            let Ok(status) = StatusCode::from_u16(status) else { return Ok(()) };
            let mut headers = HeaderMap::new();
            if let Ok(v) = retry_after.parse() {
                headers.insert(RETRY_AFTER, v);
            }
            let _ = GraphError::from_body(&body).map(|e| e.readable_message());
            let failure = classify_error(status, &headers, &body);
            prop_assert!(!failure.error().code.is_empty());
            let kind_ok = match status.as_u16() {
                429 | 503 => matches!(failure, Failure::Retry { ambiguous: false, .. }),
                500 | 502 | 504 => matches!(failure, Failure::Retry { ambiguous: true, .. }),
                401 => matches!(failure, Failure::Unauthorized(_)),
                _ => matches!(failure, Failure::Permanent(_)),
            };
            prop_assert!(kind_ok, "{status}: {failure:?}");
            if let Some(Ok(id)) = created_id(status, &body) {
                prop_assert!(!id.trim().is_empty());
            }
            let _ = page::<ReturnedAssignment>(status, &body);
            let _ = page::<Identity>(status, &body);
            let _ = one::<Identity>(status, &body);
            let raw = Raw::Answer { status, headers, body };
            let attempt = raw.attempt("crid".into(), created_id);
            prop_assert_eq!(attempt.http_status, Some(status.as_u16()));
        }
    }

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
            Failure::Retry {
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
            Failure::Retry {
                ambiguous: true,
                ..
            }
        ));
        assert!(matches!(
            classify_error(StatusCode::UNAUTHORIZED, &HeaderMap::new(), b""),
            Failure::Unauthorized(_)
        ));
        let Failure::Permanent(e) = classify_error(
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
            b"<html>nope</html>",
        ) else {
            panic!()
        };
        assert_eq!(e.code, "NotFound");
        assert_eq!(e.message, "<html>nope</html>");
    }

    #[test]
    fn a_created_answer_needs_its_id_and_a_list_its_value() {
        assert_eq!(
            created_id(StatusCode::CREATED, br#"{"id":"a1"}"#),
            Some(Ok("a1".to_string()))
        );
        assert!(matches!(
            created_id(StatusCode::CREATED, b"{}"),
            Some(Err(Failure::Retry {
                ambiguous: true,
                ..
            }))
        ));
        assert_eq!(
            created_id(StatusCode::OK, br#"{"id":"a2"}"#),
            Some(Ok("a2".to_string()))
        );
        assert!(matches!(
            created_id(StatusCode::NO_CONTENT, b""),
            Some(Err(Failure::Retry {
                ambiguous: true,
                ..
            }))
        ));
        for blank in [&br#"{"id":""}"#[..], br#"{"id":"  \t"}"#, br#"{"id":null}"#] {
            assert!(
                matches!(
                    created_id(StatusCode::CREATED, blank),
                    Some(Err(Failure::Retry {
                        ambiguous: true,
                        ..
                    }))
                ),
                "{}",
                String::from_utf8_lossy(blank)
            );
        }
        assert_eq!(created_id(StatusCode::CONFLICT, b"{}"), None);
        assert!(
            matches!(page::<ReturnedAssignment>(StatusCode::OK, br#"{"value":[]}"#), Some(Ok(p)) if p.value.is_empty() && p.next_link.is_none())
        );
        let paged = page::<ReturnedAssignment>(
            StatusCode::OK,
            br#"{"value":[],"@odata.nextLink":"https://graph.microsoft.com/beta/x?$skiptoken=2"}"#,
        );
        assert!(
            matches!(paged, Some(Ok(p)) if p.next_link.as_deref() == Some("https://graph.microsoft.com/beta/x?$skiptoken=2"))
        );
        assert!(matches!(
            page::<ReturnedAssignment>(StatusCode::OK, b"nope"),
            Some(Err(Failure::Retry {
                ambiguous: false,
                ..
            }))
        ));
    }
}
