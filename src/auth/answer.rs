//! What the token endpoint said, or why it said nothing, turned into a token or an
//! [`AuthError`].
//!
//! Grants are read leniently: Entra's v2 endpoint sends `expires_in` as an integer, but the v1
//! endpoint, managed identity (IMDS) and several proxies send a string (`"3599"`) and some a
//! number with a fraction (`3.0`). A lifetime that cannot be used is not worth ending a run
//! over: the token is assumed to live [`ASSUMED_LIFETIME`] and the caller warns once.
//!
//! Nothing sent (secret, assertion) and no token is ever put into an error: reqwest's errors
//! name the URL and the cause, never the body, and a grant's fields are not echoed.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use super::AuthError;

/// The lifetime assumed when a grant does not give a usable one. Ten minutes is the shortest
/// access-token lifetime Entra can be configured to issue, so the token is renewed early
/// rather than late; if it still dies sooner, Graph's 401 drops it and a fresh one is fetched.
pub(super) const ASSUMED_LIFETIME: Duration = Duration::from_secs(600);

/// Longer lifetimes are cut to a day, so that an absurd answer cannot overflow an `Instant`.
const LONGEST_LIFETIME_SECS: f64 = 86_400.0;

/// A token from a successful answer.
pub(super) struct Granted {
    pub token: Arc<str>,
    pub lifetime: Duration,
    /// Why `lifetime` is [`ASSUMED_LIFETIME`] rather than the answer's own.
    pub assumed: Option<&'static str>,
    /// `ext_expires_in`: how long Entra would honour it during an outage. Only logged: relying
    /// on it would renew late.
    pub extended: Option<Duration>,
}

/// A 2xx answer's body. Without a usable `access_token` it is `Unavailable` (worth asking
/// again); a bad lifetime alone never fails it.
pub(super) fn granted(body: &[u8]) -> Result<Granted, AuthError> {
    let unreadable =
        |why: &str| AuthError::Unavailable(format!("unreadable token response: {why}"));
    let Ok(Value::Object(answer)) = serde_json::from_slice::<Value>(body) else {
        return Err(unreadable("not a JSON object"));
    };
    let token = match answer.get("access_token") {
        Some(Value::String(t)) if !t.trim().is_empty() => t,
        Some(Value::String(_)) => return Err(unreadable("empty access_token")),
        Some(_) => return Err(unreadable("access_token is not a string")),
        None => return Err(unreadable("no access_token")),
    };
    let (lifetime, assumed) = match read_lifetime(answer.get("expires_in")) {
        Ok(lifetime) => (lifetime, None),
        Err(why) => (ASSUMED_LIFETIME, Some(why)),
    };
    Ok(Granted {
        token: token.as_str().into(),
        lifetime,
        assumed,
        extended: read_lifetime(answer.get("ext_expires_in")).ok(),
    })
}

/// A lifetime in seconds, given as an integer, a number with a fraction or a numeric string
/// (spaces around it allowed). Under a second (zero, negative, NaN) is unusable: such a token
/// would be fetched again on every call.
fn read_lifetime(value: Option<&Value>) -> Result<Duration, &'static str> {
    let secs = match value {
        None | Some(Value::Null) => return Err("the answer has no expires_in"),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    }
    .ok_or("expires_in is not a number of seconds")?;
    if !secs.is_finite() {
        return Err("expires_in is not a finite number");
    }
    if secs < 1.0 {
        return Err("expires_in is under one second");
    }
    Ok(Duration::from_secs_f64(secs.min(LONGEST_LIFETIME_SECS)))
}

/// A non-2xx answer. 5xx and 429 are `Unavailable` (worth retrying); any other refusal is
/// `Rejected` with the service's `error` and `error_description`.
pub(super) fn refusal(token_url: &str, status: StatusCode, body: &[u8]) -> AuthError {
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return AuthError::Unavailable(format!("{token_url} answered {status}"));
    }
    let field = |answer: &Value, name| {
        answer
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    match serde_json::from_slice::<Value>(body) {
        Ok(answer) if !field(&answer, "error").is_empty() => AuthError::Rejected {
            code: field(&answer, "error"),
            description: field(&answer, "error_description"),
        },
        _ => AuthError::Rejected {
            code: status.as_str().to_string(),
            description: format!("{token_url} answered {status}"),
        },
    }
}

/// No answer: the cause first, as Graph errors name it (timed out, connection refused, TLS
/// or proxy-tunnel failure), then reqwest's error and its source chain.
pub(super) fn unreachable(token_url: &str, e: reqwest::Error) -> AuthError {
    let cause = cause(&e);
    let e = e.without_url();
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    AuthError::Unavailable(format!("{token_url}: {cause} ({chain})"))
}

fn cause(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        return "timed out";
    }
    let (mut refused, mut tunnel, mut invalid_data) = (false, false, false);
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        // An I/O error may wrap another (hyper-rustls wraps rustls's) whose kind says more.
        let mut io = s.downcast_ref::<std::io::Error>();
        while let Some(e) = io {
            refused |= e.kind() == std::io::ErrorKind::ConnectionRefused;
            // tokio-rustls reports a failed handshake or certificate check so.
            invalid_data |= e.kind() == std::io::ErrorKind::InvalidData;
            io = e.get_ref().and_then(|inner| inner.downcast_ref());
        }
        // hyper-util's proxy CONNECT errors all begin so.
        tunnel |= s.to_string().starts_with("tunnel error");
        source = s.source();
    }
    if tunnel {
        "proxy tunnel failure"
    } else if refused {
        "connection refused"
    } else if e.is_connect() && invalid_data {
        "TLS failure"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "connection lost"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: crate::jsonish::cases(256),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Whatever the token endpoint answers, it is read without a panic: a grant holds a
        /// token and a lifetime from a second to a day, anything else is worth asking again.
        #[test]
        fn any_token_answer_is_read_and_never_panics(
            body in crate::jsonish::body(),
            status in 100u16..1000,
        ) {
            match granted(&body) {
                Ok(g) => {
                    prop_assert!(!g.token.trim().is_empty());
                    prop_assert!(g.lifetime >= Duration::from_secs(1));
                    prop_assert!(g.lifetime <= Duration::from_secs(86_400));
                }
                Err(e) => prop_assert!(matches!(e, AuthError::Unavailable(_)), "{e}"),
            }
            if let Ok(status) = StatusCode::from_u16(status) {
                let _ = refusal("https://login/t/oauth2/v2.0/token", status, &body).to_string();
            }
        }

        /// A grant's token is never put into an error, however the answer around it is
        /// broken (cut short, fields mistyped).
        #[test]
        fn a_token_in_a_broken_answer_is_never_echoed(
            extra in crate::jsonish::json(),
            cut in any::<prop::sample::Index>(),
        ) {
            const TOKEN: &str = "eyJ-never-shown-7c1f";
            let mut answer = serde_json::json!({"access_token": TOKEN, "expires_in": extra.clone()});
            answer["ext_expires_in"] = extra;
            let mut body = answer.to_string().into_bytes();
            body.truncate(cut.index(body.len() + 1));
            if let Err(e) = granted(&body) {
                prop_assert!(!e.to_string().contains("never-shown"), "{e}");
            }
        }
    }

    fn lifetime_of(answer: &str) -> (Duration, Option<&'static str>) {
        let g = granted(answer.as_bytes()).unwrap();
        assert_eq!(&*g.token, "t");
        (g.lifetime, g.assumed)
    }

    #[test]
    fn expires_in_as_integer_fraction_or_numeric_string() {
        for (expires_in, secs) in [
            ("3599", 3599.0),
            ("3.0", 3.0),
            ("1.5", 1.5),
            (r#""3599""#, 3599.0),
            (r#"" 3599 ""#, 3599.0),
            (r#""3.0""#, 3.0),
            (r#""\t86399\n""#, 86_399.0),
        ] {
            let answer = format!(r#"{{"access_token":"t","expires_in":{expires_in}}}"#);
            assert_eq!(
                lifetime_of(&answer),
                (Duration::from_secs_f64(secs), None),
                "{expires_in}"
            );
        }
    }

    #[test]
    fn unusable_expires_in_assumes_the_safe_lifetime() {
        for expires_in in [
            None,
            Some("null"),
            Some("-5"),
            Some("0"),
            Some("0.5"),
            Some(r#""-1""#),
            Some(r#""NaN""#),
            Some(r#""inf""#),
            Some(r#""""#),
            Some(r#""soon""#),
            Some("true"),
            Some("[3599]"),
            Some(r#"{"s":3599}"#),
        ] {
            let answer = match expires_in {
                Some(v) => format!(r#"{{"access_token":"t","expires_in":{v}}}"#),
                None => r#"{"access_token":"t","token_type":"Bearer"}"#.to_string(),
            };
            let (lifetime, assumed) = lifetime_of(&answer);
            assert_eq!(lifetime, ASSUMED_LIFETIME, "{expires_in:?}");
            assert!(assumed.is_some(), "{expires_in:?}");
        }
    }

    #[test]
    fn absurd_lifetimes_are_cut_to_a_day() {
        for expires_in in ["1e300", "18446744073709551615", r#""99999999999""#] {
            let answer = format!(r#"{{"access_token":"t","expires_in":{expires_in}}}"#);
            assert_eq!(
                lifetime_of(&answer),
                (Duration::from_secs(86_400), None),
                "{expires_in}"
            );
        }
    }

    #[test]
    fn ext_expires_in_is_read_leniently_and_never_fails_a_grant() {
        let g = granted(br#"{"access_token":"t","expires_in":"3599","ext_expires_in":"7199"}"#)
            .unwrap();
        assert_eq!(g.extended, Some(Duration::from_secs(7199)));
        let g =
            granted(br#"{"access_token":"t","expires_in":3599,"ext_expires_in":7199.0}"#).unwrap();
        assert_eq!(g.extended, Some(Duration::from_secs(7199)));
        let g = granted(br#"{"access_token":"t","expires_in":3599,"ext_expires_in":"x"}"#).unwrap();
        assert_eq!((g.lifetime, g.extended), (Duration::from_secs(3599), None));
    }

    #[test]
    fn a_grant_without_a_token_is_worth_asking_again_and_echoes_nothing() {
        for body in [
            &b"<html>proxy login</html>"[..],
            b"[]",
            br#"{"expires_in":3599}"#,
            br#"{"access_token":"","expires_in":3599}"#,
            br#"{"access_token":42}"#,
        ] {
            let e = granted(body).err().unwrap();
            assert!(matches!(e, AuthError::Unavailable(_)), "{e}");
            assert!(e.to_string().contains("unreadable token response"), "{e}");
        }
    }

    #[test]
    fn refusals_carry_the_service_code_and_outages_are_unavailable() {
        let url = "https://login/t/oauth2/v2.0/token";
        let e = refusal(
            url,
            StatusCode::UNAUTHORIZED,
            br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#,
        );
        assert_eq!(
            e,
            AuthError::Rejected {
                code: "invalid_client".into(),
                description: "AADSTS7000215: Invalid client secret provided.".into()
            }
        );
        let e = refusal(url, StatusCode::BAD_REQUEST, b"nope");
        assert!(
            matches!(&e, AuthError::Rejected { code, .. } if code == "400"),
            "{e}"
        );
        for status in [
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            let e = refusal(url, status, b"{}");
            assert!(matches!(e, AuthError::Unavailable(_)), "{e}");
        }
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap()
    }

    async fn error_reaching(url: String) -> String {
        let e = client()
            .post(&url)
            .form(&[("client_secret", "s3cr3t-in-the-form")])
            .send()
            .await
            .unwrap_err();
        let text = unreachable(&url, e).to_string();
        assert!(text.contains(&url), "{text}");
        assert!(!text.contains("s3cr3t-in-the-form"), "{text}");
        text
    }

    #[tokio::test]
    async fn transport_failures_name_their_cause() {
        // A port nobody listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let text = error_reaching(format!("http://127.0.0.1:{port}/t/oauth2/v2.0/token")).await;
        assert!(text.contains("connection refused"), "{text}");
        assert!(text.contains("os error"), "no source chain: {text}");

        // Accepts, never answers; and answers TLS with plain text.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_at = silent.local_addr().unwrap();
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain_at = plain.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            while let Ok((mut s, _)) = plain.accept().await {
                let _ = s
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let text = error_reaching(format!("http://{silent_at}/t/oauth2/v2.0/token")).await;
        assert!(text.contains("timed out"), "{text}");
        let text = error_reaching(format!("https://{plain_at}/t/oauth2/v2.0/token")).await;
        assert!(text.contains("TLS failure"), "{text}");
    }
}
