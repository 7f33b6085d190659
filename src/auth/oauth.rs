//! Tokens from the OAuth client-credentials grant (a client secret or a certificate
//! assertion), cached and shared by every worker.
//!
//! Migration runs outlive their first token (Entra tokens live 60–90 minutes), so a token is
//! renewed ahead of expiry without ever making every worker wait:
//!
//! - **fresh** (before `refresh_at`, three quarters of the lifetime): everyone uses it;
//! - **due** (after `refresh_at`, still valid): exactly one caller renews it (a `try_lock`),
//!   every other worker keeps using the valid token instead of queueing behind the request, so
//!   nobody blocks near expiry and there is no thundering herd; a transient failure here keeps
//!   the valid token and tries again a little later;
//! - **missing or expired**: callers queue on the same lock, one fetches (retrying outages
//!   with the run's backoff policy), the others take its result.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;
use tokio::time::Instant;

use super::answer::{self, Granted};
use super::{AuthError, ClientCertificate};
use crate::graph::answer::{capped_body, parse_retry_after};
use crate::retry::RetryPolicy;

/// How the app proves who it is to the token endpoint.
pub(super) enum ClientAuth {
    Secret(String),
    Certificate(ClientCertificate),
}

struct Cached {
    token: Arc<str>,
    /// From here one caller renews it while the others keep using it.
    refresh_at: Instant,
    /// After this it is not handed out any more: callers wait for a new one.
    usable_until: Instant,
}

#[derive(Default)]
struct State {
    cached: Option<Cached>,
    /// A fetch that ended the run: later callers get it at once instead of asking again.
    failed: Option<AuthError>,
}

enum Lookup {
    Fresh(Arc<str>),
    Due(Arc<str>),
    Missing,
}

/// A failed token request, with the endpoint's Retry-After when it gave one.
struct Failure {
    error: AuthError,
    retry_after: Option<Duration>,
}

impl From<AuthError> for Failure {
    fn from(error: AuthError) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

/// Renew this long before expiry: a quarter of the lifetime, at most five minutes, so a
/// 60-minute token is renewed at 55 minutes and a 2-second test token at 1.5 seconds.
fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 4).min(Duration::from_secs(300))
}

/// Stop handing a token out this long before expiry (a tenth of the lifetime, at most a
/// minute), so that a request does not arrive at Graph with a token that just expired.
fn expiry_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(60))
}

/// Retrying a token endpoint that is down: five attempts, 0.5 s doubling to 10 s (jittered),
/// and no more than a minute in all, during which every worker waits for the token.
fn retry_policy() -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_millis(500),
        max_interval: Duration::from_secs(10),
        ..RetryPolicy::new(5, Duration::from_secs(60))
    }
}

/// The client-credentials token source: one per run, shared by every worker.
pub(super) struct OAuthSource {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    scope: String,
    auth: ClientAuth,
    /// Held only for instants (no await inside).
    state: std::sync::Mutex<State>,
    /// Held across a token request: the single flight.
    fetching: tokio::sync::Mutex<()>,
    requests: AtomicU64,
    /// An answer without a usable lifetime was reported: later ones are not.
    lifetime_warned: AtomicBool,
}

impl OAuthSource {
    pub(super) fn new(
        http: reqwest::Client,
        authority_url: &str,
        tenant_id: &str,
        client_id: &str,
        scope: &str,
        auth: ClientAuth,
    ) -> Self {
        Self {
            http,
            token_url: format!(
                "{}/{}/oauth2/v2.0/token",
                authority_url.trim_end_matches('/'),
                tenant_id
            ),
            client_id: client_id.to_string(),
            scope: scope.to_string(),
            auth,
            state: Default::default(),
            fetching: Default::default(),
            requests: Default::default(),
            lifetime_warned: Default::default(),
        }
    }

    pub(super) fn token_url(&self) -> &str {
        &self.token_url
    }

    pub(super) fn client_id(&self) -> &str {
        &self.client_id
    }

    pub(super) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lookup(&self, now: Instant) -> Result<Lookup, AuthError> {
        let state = self.state();
        if let Some(e) = &state.failed {
            return Err(e.clone());
        }
        Ok(match &state.cached {
            Some(c) if now < c.refresh_at => Lookup::Fresh(c.token.clone()),
            Some(c) if now < c.usable_until => Lookup::Due(c.token.clone()),
            _ => Lookup::Missing,
        })
    }

    /// A valid token: cached, renewed by this caller, or waited for (see the module doc).
    pub(super) async fn token(&self) -> Result<Arc<str>, AuthError> {
        match self.lookup(Instant::now())? {
            Lookup::Fresh(token) => Ok(token),
            Lookup::Due(token) => self.renew(token).await,
            Lookup::Missing => {
                let _fetching = self.fetching.lock().await;
                // Whoever held the lock may have just fetched one.
                match self.lookup(Instant::now())? {
                    Lookup::Fresh(token) | Lookup::Due(token) => return Ok(token),
                    Lookup::Missing => {}
                }
                match self.fetch_with_retry().await {
                    Ok(fresh) => Ok(self.store(fresh)),
                    Err(e) => Err(self.fail(e)),
                }
            }
        }
    }

    /// `current` is due for renewal but still valid: renew it unless someone else is, and
    /// keep using it through a transient failure.
    async fn renew(&self, current: Arc<str>) -> Result<Arc<str>, AuthError> {
        let Ok(_renewing) = self.fetching.try_lock() else {
            return Ok(current);
        };
        if let Lookup::Fresh(renewed) = self.lookup(Instant::now())? {
            return Ok(renewed);
        }
        match self.fetch().await {
            Ok(fresh) => Ok(self.store(fresh)),
            Err(Failure {
                error: e @ AuthError::Unavailable(_),
                retry_after,
            }) => {
                tracing::warn!(error = %crate::output::printable(&e.to_string()), "token renewal failed; using the current token and retrying shortly");
                let mut state = self.state();
                if let Some(c) = state.cached.as_mut() {
                    let now = Instant::now();
                    let left = c.usable_until.saturating_duration_since(now);
                    // Not sooner than the endpoint asked, nor than our own pause.
                    let wait = (left / 4)
                        .min(Duration::from_secs(10))
                        .max(retry_after.unwrap_or_default());
                    c.refresh_at = now + wait.min(left);
                }
                Ok(current)
            }
            Err(f) => Err(self.fail(f.error)),
        }
    }

    fn store(&self, fresh: Cached) -> Arc<str> {
        let token = fresh.token.clone();
        self.state().cached = Some(fresh);
        token
    }

    /// The error ends the run: remember it so waiting workers do not ask again.
    fn fail(&self, e: AuthError) -> AuthError {
        self.state().failed = Some(e.clone());
        e
    }

    /// Graph refused `stale`: drop it so the next call fetches a new one, unless another
    /// worker already replaced it.
    pub(super) fn invalidate(&self, stale: &str) {
        let mut state = self.state();
        if state.cached.as_ref().is_some_and(|c| &*c.token == stale) {
            state.cached = None;
        }
    }

    async fn fetch_with_retry(&self) -> Result<Cached, AuthError> {
        let mut retry = retry_policy().start();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let failure = match self.fetch().await {
                Ok(c) => return Ok(c),
                Err(f) if matches!(f.error, AuthError::Unavailable(_)) => f,
                Err(f) => return Err(f.error),
            };
            let Ok(delay) = retry.next_delay(attempts, failure.retry_after) else {
                return Err(failure.error);
            };
            tracing::warn!(attempt = attempts, error = %crate::output::printable(&failure.error.to_string()), retry_in = ?delay, "token request failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// One token request: a grant, or why not (with Retry-After on a 429 or 503).
    async fn fetch(&self) -> Result<Cached, Failure> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let assertion;
        let mut form = vec![
            ("client_id", self.client_id.as_str()),
            ("scope", self.scope.as_str()),
            ("grant_type", "client_credentials"),
        ];
        match &self.auth {
            ClientAuth::Secret(secret) => form.push(("client_secret", secret)),
            ClientAuth::Certificate(cert) => {
                assertion = cert.assertion(&self.client_id, &self.token_url, SystemTime::now())?;
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ));
                form.push(("client_assertion", &assertion));
            }
        }
        let started = Instant::now();
        let unreachable = |e| answer::unreachable(&self.token_url, e);
        let response = self
            .http
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let retry_after = match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now())),
            _ => None,
        };
        // A token answer is a few kilobytes: a larger one is a broken or hostile endpoint.
        const MAX_TOKEN_ANSWER: usize = 1024 * 1024;
        let body = capped_body(response, MAX_TOKEN_ANSWER)
            .await
            .map_err(unreachable)?
            .ok_or_else(|| {
                AuthError::Unavailable(format!(
                    "{}: the answer is larger than 1 MiB; not read further",
                    self.token_url
                ))
            })?;
        if !status.is_success() {
            return Err(Failure {
                error: answer::refusal(&self.token_url, status, &body),
                retry_after,
            });
        }
        let granted = answer::granted(&body)?;
        self.report_lifetime(&granted);
        let lifetime = granted.lifetime;
        Ok(Cached {
            token: granted.token,
            refresh_at: started + lifetime - refresh_margin(lifetime),
            usable_until: started + lifetime - expiry_margin(lifetime),
        })
    }

    /// One warning per run for a grant without a usable lifetime, however often it recurs.
    fn report_lifetime(&self, granted: &Granted) {
        match granted.assumed {
            Some(why) if !self.lifetime_warned.swap(true, Ordering::Relaxed) => {
                tracing::warn!(
                    assumed = ?granted.lifetime,
                    "{why}: the token endpoint did not give a usable lifetime, so the token \
                     is renewed as if it lived {}",
                    humantime::format_duration(granted.lifetime)
                );
            }
            Some(why) => tracing::debug!(assumed = ?granted.lifetime, "{why}"),
            None => tracing::debug!(
                lifetime = ?granted.lifetime,
                extended = ?granted.extended,
                "access token obtained"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins_scale_with_lifetime() {
        assert_eq!(
            refresh_margin(Duration::from_secs(3599)),
            Duration::from_secs(300)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(
            expiry_margin(Duration::from_secs(3599)),
            Duration::from_secs(60)
        );
        assert_eq!(
            expiry_margin(Duration::from_secs(2)),
            Duration::from_millis(200)
        );
    }

    use axum::http::StatusCode as Code;
    use axum::response::{IntoResponse as _, Response};
    use std::sync::atomic::AtomicUsize;

    /// A stand-in token endpoint on port 0 giving `answer(n)` to its n-th request (from 0).
    async fn endpoint(answer: impl Fn(usize) -> Response + Send + Sync + 'static) -> OAuthSource {
        let seen = Arc::new(AtomicUsize::new(0));
        let answer = Arc::new(answer);
        let app = axum::Router::new().route(
            "/{tenant}/oauth2/v2.0/token",
            axum::routing::post(move || {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let answer = answer.clone();
                async move { answer(n) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        OAuthSource::new(
            reqwest::Client::new(),
            &url,
            "contoso",
            "app",
            "https://graph.microsoft.com/.default",
            ClientAuth::Secret("s3cr3t".into()),
        )
    }

    fn grant(body: &'static str) -> Response {
        ([("content-type", "application/json")], body).into_response()
    }

    fn busy(status: Code, retry_after: &'static str) -> Response {
        (status, [("retry-after", retry_after)], "busy").into_response()
    }

    #[tokio::test]
    async fn retry_after_from_the_token_endpoint_is_honoured() {
        let source = endpoint(|n| match n {
            0 => busy(Code::TOO_MANY_REQUESTS, "1"),
            _ => grant(r#"{"access_token":"t1","expires_in":"3599"}"#),
        })
        .await;
        let started = Instant::now();
        assert_eq!(&*source.token().await.unwrap(), "t1");
        // The backoff alone would have waited at most 0.75 s.
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(source.requests(), 2);
    }

    #[tokio::test]
    async fn an_outage_is_retried_five_times_then_ends_the_run() {
        let source = endpoint(|_| busy(Code::SERVICE_UNAVAILABLE, "0")).await;
        let e = source.token().await.unwrap_err();
        assert!(matches!(e, AuthError::Unavailable(_)), "{e}");
        assert!(e.to_string().contains("503"), "{e}");
        assert_eq!(source.requests(), 5);
        // Remembered: later callers do not ask again.
        assert_eq!(source.token().await.unwrap_err(), e);
        assert_eq!(source.requests(), 5);
    }

    #[tokio::test]
    async fn a_retry_after_beyond_the_budget_is_not_waited_for() {
        let source = endpoint(|_| busy(Code::TOO_MANY_REQUESTS, "120")).await;
        let started = Instant::now();
        assert!(matches!(
            source.token().await,
            Err(AuthError::Unavailable(_))
        ));
        assert_eq!(source.requests(), 1);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_refusal_is_not_retried() {
        let source = endpoint(|_| {
            (
                Code::UNAUTHORIZED,
                [("content-type", "application/json")],
                r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#,
            )
                .into_response()
        })
        .await;
        let e = source.token().await.unwrap_err();
        assert!(
            matches!(&e, AuthError::Rejected { code, .. } if code == "invalid_client"),
            "{e}"
        );
        assert_eq!(source.requests(), 1);
    }

    /// Log lines, as the binary would print them.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_grant_without_a_lifetime_is_used_and_warned_about_once() {
        let logs = Captured::default();
        let writer = logs.clone();
        let _subscriber = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish(),
        );
        let source = endpoint(|n| match n {
            0 => grant(r#"{"access_token":"token-one","token_type":"Bearer"}"#),
            _ => grant(r#"{"access_token":"token-two","expires_in":"NaN"}"#),
        })
        .await;
        let first = source.token().await.unwrap();
        assert_eq!(&*first, "token-one");
        // Ten minutes assumed: handed out until 9 minutes from now.
        let usable_until = source.state().cached.as_ref().unwrap().usable_until;
        let left = usable_until - Instant::now();
        assert!(left > Duration::from_secs(500) && left <= Duration::from_secs(540));
        source.invalidate(&first);
        assert_eq!(&*source.token().await.unwrap(), "token-two");

        let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let warnings: Vec<&str> = logs.lines().filter(|l| l.contains("WARN")).collect();
        assert_eq!(warnings.len(), 1, "{logs}");
        assert!(
            warnings[0].contains("usable lifetime") && warnings[0].contains("10m"),
            "{logs}"
        );
        assert!(
            !logs.contains("token-one") && !logs.contains("token-two"),
            "{logs}"
        );
        assert!(!logs.contains("s3cr3t"), "{logs}");
    }
}
