//! Access tokens: fetched with the client-credentials grant, cached and shared by every
//! worker, refreshed ahead of expiry, and once more when Graph answers 401.
//!
//! The cache sits behind an async mutex that is held while a token is fetched, so however many
//! workers find the token stale at once, exactly one request goes to the token endpoint and the
//! others wait for its answer (no thundering herd).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// The token endpoint refused the credentials: retrying cannot help. Ends the run.
    #[error("token request rejected: {code}: {description}")]
    Rejected { code: String, description: String },
    /// The token endpoint could not be reached or failed repeatedly.
    #[error("token endpoint unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct TokenErrorResponse {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

struct Cached {
    token: Arc<str>,
    refresh_at: Instant,
}

/// A client-secret token provider for one tenant and app.
pub struct TokenProvider {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    secret: String,
    scope: String,
    cache: Mutex<Option<Cached>>,
    requests: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProvider")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// Refresh this long before expiry: a quarter of the lifetime, at most five minutes, so a
/// 60-minute token is renewed at 55 minutes and a 6-second test token at 4.5 seconds.
fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 4).min(Duration::from_secs(300))
}

impl TokenProvider {
    pub fn client_secret(
        http: reqwest::Client,
        authority_url: &str,
        tenant_id: &str,
        client_id: &str,
        secret: &str,
        scope: &str,
    ) -> Self {
        Self {
            http,
            token_url: format!(
                "{}/{}/oauth2/v2.0/token",
                authority_url.trim_end_matches('/'),
                tenant_id
            ),
            client_id: client_id.to_string(),
            secret: secret.to_string(),
            scope: scope.to_string(),
            cache: Mutex::new(None),
            requests: Default::default(),
        }
    }

    /// Token requests made so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A valid token, from the cache or freshly fetched.
    pub async fn token(&self) -> Result<Arc<str>, AuthError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref() {
            if Instant::now() < c.refresh_at {
                return Ok(c.token.clone());
            }
        }
        let fresh = self.fetch_with_retry().await?;
        let token = fresh.token.clone();
        *cache = Some(fresh);
        Ok(token)
    }

    /// Graph refused `stale` (401): drop it, unless another worker already replaced it.
    pub async fn invalidate(&self, stale: &str) {
        let mut cache = self.cache.lock().await;
        if cache.as_ref().is_some_and(|c| &*c.token == stale) {
            *cache = None;
        }
    }

    async fn fetch_with_retry(&self) -> Result<Cached, AuthError> {
        const ATTEMPTS: u32 = 5;
        let mut delay = Duration::from_millis(500);
        let mut last = None;
        for attempt in 1..=ATTEMPTS {
            match self.fetch().await {
                Ok(c) => return Ok(c),
                Err(e @ AuthError::Rejected { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "token request failed; retrying");
                    last = Some(e);
                }
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
        Err(last.unwrap_or_else(|| AuthError::Unavailable("no attempt made".into())))
    }

    async fn fetch(&self) -> Result<Cached, AuthError> {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let form = [
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.secret.as_str()),
            ("scope", self.scope.as_str()),
            ("grant_type", "client_credentials"),
        ];
        let started = Instant::now();
        let response = self
            .http
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| AuthError::Unavailable(format!("{}: {e}", self.token_url)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| AuthError::Unavailable(format!("{}: {e}", self.token_url)))?;
        if status.is_success() {
            let t: TokenResponse = serde_json::from_slice(&body)
                .map_err(|e| AuthError::Unavailable(format!("unreadable token response: {e}")))?;
            let lifetime = Duration::from_secs(t.expires_in.unwrap_or(3599));
            tracing::debug!(lifetime = ?lifetime, "access token obtained");
            return Ok(Cached {
                token: t.access_token.into(),
                refresh_at: started + lifetime - refresh_margin(lifetime),
            });
        }
        let err: Option<TokenErrorResponse> = serde_json::from_slice(&body).ok();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(AuthError::Unavailable(format!(
                "{} answered {status}",
                self.token_url
            )));
        }
        Err(match err {
            Some(e) if !e.error.is_empty() => AuthError::Rejected {
                code: e.error,
                description: e.error_description,
            },
            _ => AuthError::Rejected {
                code: status.as_str().to_string(),
                description: format!("{} answered {status}", self.token_url),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_margin_scales_with_lifetime() {
        assert_eq!(
            refresh_margin(Duration::from_secs(3599)),
            Duration::from_secs(300)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(6)),
            Duration::from_millis(1500)
        );
    }
}
