//! Access tokens for Graph: one [`TokenProvider`] over three kinds of credential — a client
//! secret, a certificate (signed client assertion) or a static bearer token.
//!
//! Migration runs outlive their first token (Entra tokens live 60–90 minutes), so a fetched
//! token is cached, shared by every worker and renewed ahead of expiry:
//!
//! - **fresh** (before `refresh_at`, three quarters of the lifetime): everyone uses it;
//! - **due** (after `refresh_at`, still valid): exactly one caller renews it (a `try_lock`),
//!   every other worker keeps using the valid token instead of queueing behind the request, so
//!   nobody blocks near expiry and there is no thundering herd; a transient failure here keeps
//!   the valid token and tries again a little later;
//! - **missing or expired**: callers queue on the same lock, one fetches (retrying outages with
//!   backoff), the others take its result.
//!
//! Graph answering 401 drops the token ([`TokenProvider::invalidate`]) and the pipeline retries
//! once with a fresh one. A static token cannot be renewed: after a 401 every call fails with
//! [`AuthError::StaticTokenRejected`], which ends the run (exit 3).
//!
//! Secrets, assertions and tokens are never formatted into logs or errors: `Debug` of the
//! provider shows the token URL and client id only, and errors carry the service's `error`
//! and `error_description`, never what was sent.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::{digest, rand::SystemRandom, signature};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::Deserialize;
use tokio::time::Instant;

use crate::config::Credentials;

/// A token could not be had: the run ends with exit 3.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// The token endpoint refused the credentials: retrying cannot help. Ends the run.
    #[error("token request rejected: {code}: {description}")]
    Rejected { code: String, description: String },
    /// The token endpoint could not be reached or failed repeatedly.
    #[error("token endpoint unavailable: {0}")]
    Unavailable(String),
    /// Graph refused the static token (expired or revoked); there is nothing to refresh it with.
    #[error(
        "Graph rejected the static access token ({0}) and a static token cannot be refreshed: \
         rerun with a fresh token (GRAPH_ACCESS_TOKEN or --access-token-file); finished rows \
         are in the results file. Long runs are better served by a client secret or certificate"
    )]
    StaticTokenRejected(String),
    /// The static token's own `exp` claim has passed: sending it would only earn a 401.
    #[error(
        "the static access token expired at {0}: rerun with a fresh token (GRAPH_ACCESS_TOKEN \
         or --access-token-file); finished rows are in the results file"
    )]
    StaticTokenExpired(String),
    /// Signing the client assertion failed (should not happen with a key that loaded).
    #[error("cannot sign the client assertion")]
    Signing,
}

/// The configured credential cannot be used: a configuration error (exit 2, nothing sent).
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "no credentials: set AZURE_CLIENT_SECRET (or --client-secret-file), \
         AZURE_CLIENT_CERTIFICATE_PATH (or --certificate), or GRAPH_ACCESS_TOKEN \
         (or --access-token-file); or use --emulator"
    )]
    Missing,
    #[error("cannot read certificate file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate file {path}: {why}")]
    Certificate { path: PathBuf, why: String },
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

/// An app certificate ready to sign client assertions: the RSA key and the certificate's
/// thumbprints, which tell Entra which of the app's certificates to verify with.
pub struct ClientCertificate {
    key: signature::RsaKeyPair,
    /// base64url SHA-1 of the DER certificate (`x5t`, what Entra has always read).
    x5t: String,
    /// base64url SHA-256 of the DER certificate (`x5t#S256`, the newer header).
    x5t_s256: String,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("x5t", &self.x5t)
            .finish_non_exhaustive()
    }
}

impl ClientCertificate {
    pub fn from_pem_file(path: &Path) -> Result<Self, CredentialError> {
        let pem = std::fs::read(path).map_err(|source| CredentialError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_pem(&pem).map_err(|why| CredentialError::Certificate {
            path: path.to_path_buf(),
            why,
        })
    }

    /// A PEM holding the certificate (the first CERTIFICATE block) and its RSA private key,
    /// PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`). Encrypted keys are refused with
    /// a hint: aws-lc-rs does not decrypt them, and a password crate is not worth its weight.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        use rustls_pki_types::pem::PemObject as _;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let cert = CertificateDer::pem_slice_iter(pem)
            .next()
            .ok_or("no CERTIFICATE block (the file must hold the certificate and its key)")?
            .map_err(|e| format!("unreadable CERTIFICATE block: {e:?}"))?;
        let parsed = webpki::EndEntityCert::try_from(&cert)
            .map_err(|e| format!("the certificate does not parse: {e:?}"))?;
        if pem
            .windows(b"ENCRYPTED PRIVATE KEY".len())
            .any(|w| w == b"ENCRYPTED PRIVATE KEY")
            || pem
                .windows(b"Proc-Type: 4,ENCRYPTED".len())
                .any(|w| w == b"Proc-Type: 4,ENCRYPTED")
        {
            return Err("the private key is encrypted, which is not supported \
                 (AZURE_CLIENT_CERTIFICATE_PASSWORD is not read); export it unencrypted, e.g. \
                 `openssl pkcs8 -topk8 -nocrypt -in key.pem`, and keep the file readable only \
                 by the account that runs autopilot-bulk"
                .into());
        }
        let key = match PrivateKeyDer::from_pem_slice(pem) {
            Ok(PrivateKeyDer::Pkcs8(k)) => signature::RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            Ok(PrivateKeyDer::Pkcs1(k)) => signature::RsaKeyPair::from_der(k.secret_pkcs1_der()),
            Ok(_) => return Err("the private key is not an RSA key (Entra needs RSA)".into()),
            Err(_) => return Err("no PRIVATE KEY or RSA PRIVATE KEY block".into()),
        }
        .map_err(|e| format!("the private key is not a usable RSA key: {e}"))?;

        // Sign and verify a probe, so that a key from another certificate is a clear error
        // at start rather than an AADSTS700027 from the service.
        let probe = b"autopilot-bulk key check";
        let signature = sign(&key, probe).map_err(|_| "cannot sign with the private key")?;
        parsed
            .verify_signature(
                webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
                probe,
                &signature,
            )
            .map_err(|_| "the private key does not belong to the certificate".to_string())?;

        let thumbprint = |alg| B64URL.encode(digest::digest(alg, cert.as_ref()));
        Ok(Self {
            key,
            x5t: thumbprint(&digest::SHA1_FOR_LEGACY_USE_ONLY),
            x5t_s256: thumbprint(&digest::SHA256),
        })
    }

    /// A client assertion for one token request (GRAPH-FACTS.md): RS256, both thumbprints,
    /// `aud` = token URL, `iss` = `sub` = client id, a fresh `jti`, valid for 10 minutes.
    pub fn assertion(
        &self,
        client_id: &str,
        token_url: &str,
        now: SystemTime,
    ) -> Result<String, AuthError> {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let header = serde_json::json!({
            "alg": "RS256",
            "typ": "JWT",
            "x5t": self.x5t,
            "x5t#S256": self.x5t_s256,
        });
        let claims = serde_json::json!({
            "aud": token_url,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now,
            "iat": now,
            "exp": now + 600,
        });
        let signing_input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let signature = sign(&self.key, signing_input.as_bytes())?;
        Ok(format!("{signing_input}.{}", B64URL.encode(signature)))
    }
}

fn sign(key: &signature::RsaKeyPair, message: &[u8]) -> Result<Vec<u8>, AuthError> {
    let mut out = vec![0; key.public_modulus_len()];
    key.sign(
        &signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        message,
        &mut out,
    )
    .map_err(|_| AuthError::Signing)?;
    Ok(out)
}

/// The `exp` claim of a JWT access token; `None` for opaque tokens.
pub fn jwt_expiry(token: &str) -> Option<SystemTime> {
    let mut parts = token.split('.');
    let (Some(_), Some(claims), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let bytes = B64URL.decode(claims.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    // Up to year 9999: beyond, Duration and RFC 3339 formatting would fail on our own data.
    const LAST_SECOND: f64 = 253_402_300_799.0;
    (0.0..=LAST_SECOND)
        .contains(&exp)
        .then(|| UNIX_EPOCH + Duration::from_secs_f64(exp))
}

enum Credential {
    Secret(String),
    Certificate(ClientCertificate),
    Static {
        token: Arc<str>,
        expires_at: Option<SystemTime>,
    },
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
    /// Graph refused the static token, with its message.
    static_rejected: Option<String>,
}

enum Lookup {
    Fresh(Arc<str>),
    Due(Arc<str>),
    Missing,
}

/// The token source for a run: one per run, shared by every worker.
pub struct TokenProvider {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    scope: String,
    credential: Credential,
    /// Held only for instants (no await inside).
    state: std::sync::Mutex<State>,
    /// Held across a token request: the single flight.
    fetching: tokio::sync::Mutex<()>,
    requests: AtomicU64,
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProvider")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
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

impl TokenProvider {
    fn new(
        http: reqwest::Client,
        authority_url: &str,
        tenant_id: &str,
        client_id: &str,
        scope: &str,
        credential: Credential,
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
            credential,
            state: Default::default(),
            fetching: Default::default(),
            requests: Default::default(),
        }
    }

    /// The provider for configured credentials. `scope` is the cloud's Graph scope (it
    /// follows `--cloud` even when `--graph-url` points elsewhere).
    pub fn from_credentials(
        http: reqwest::Client,
        authority_url: &str,
        scope: &str,
        credentials: &Credentials,
    ) -> Result<Self, CredentialError> {
        Ok(match credentials {
            Credentials::None => return Err(CredentialError::Missing),
            Credentials::ClientSecret {
                tenant_id,
                client_id,
                secret,
            } => Self::client_secret(http, authority_url, tenant_id, client_id, secret, scope),
            Credentials::Certificate {
                tenant_id,
                client_id,
                pem_path,
            } => Self::new(
                http,
                authority_url,
                tenant_id,
                client_id,
                scope,
                Credential::Certificate(ClientCertificate::from_pem_file(pem_path)?),
            ),
            Credentials::StaticToken(token) => Self::static_token(http, token),
        })
    }

    pub fn client_secret(
        http: reqwest::Client,
        authority_url: &str,
        tenant_id: &str,
        client_id: &str,
        secret: &str,
        scope: &str,
    ) -> Self {
        Self::new(
            http,
            authority_url,
            tenant_id,
            client_id,
            scope,
            Credential::Secret(secret.to_string()),
        )
    }

    pub fn certificate(
        http: reqwest::Client,
        authority_url: &str,
        tenant_id: &str,
        client_id: &str,
        certificate: ClientCertificate,
        scope: &str,
    ) -> Self {
        Self::new(
            http,
            authority_url,
            tenant_id,
            client_id,
            scope,
            Credential::Certificate(certificate),
        )
    }

    /// A ready token; its `exp` is read when it is a JWT.
    pub fn static_token(http: reqwest::Client, token: &str) -> Self {
        let token = token.trim();
        Self::new(
            http,
            "",
            "",
            "",
            "",
            Credential::Static {
                expires_at: jwt_expiry(token),
                token: token.into(),
            },
        )
    }

    /// Token requests made so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// `Some` for a static token: when it expires, if it says (`Some(None)`: it does not).
    pub fn static_expiry(&self) -> Option<Option<SystemTime>> {
        match &self.credential {
            Credential::Static { expires_at, .. } => Some(*expires_at),
            _ => None,
        }
    }

    /// The warning to give before a static-token run: the token cannot be refreshed, so say
    /// so when it will likely expire before the run ends (`expected_run`, if estimated, or
    /// within the hour) or when its lifetime is unknown.
    pub fn static_token_warning(
        &self,
        expected_run: Option<Duration>,
        now: SystemTime,
    ) -> Option<String> {
        let expires_at = self.static_expiry()?;
        let Some(at) = expires_at else {
            return Some(
                "the static access token is not a JWT with a readable exp, so its expiry is \
                 unknown; it cannot be refreshed, and the run stops at the first 401"
                    .into(),
            );
        };
        let left = at.duration_since(now).unwrap_or_default();
        let horizon = expected_run
            .unwrap_or_default()
            .max(Duration::from_secs(3600));
        (left < horizon).then(|| {
            format!(
                "the static access token expires in {} ({}){}; it cannot be refreshed, so the \
                 run stops with exit 3 when Graph rejects it: rerun with a fresh token (finished \
                 rows are in the results file), or use a client secret or certificate",
                humantime::format_duration(Duration::from_secs(left.as_secs())),
                humantime::format_rfc3339_seconds(at),
                match expected_run {
                    Some(d) => format!(
                        ", and the run may take about {}",
                        humantime::format_duration(Duration::from_secs(d.as_secs()))
                    ),
                    None => String::new(),
                }
            )
        })
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
    pub async fn token(&self) -> Result<Arc<str>, AuthError> {
        if let Credential::Static { token, expires_at } = &self.credential {
            if let Some(why) = &self.state().static_rejected {
                return Err(AuthError::StaticTokenRejected(why.clone()));
            }
            if let Some(at) = expires_at.filter(|at| *at <= SystemTime::now()) {
                return Err(AuthError::StaticTokenExpired(
                    humantime::format_rfc3339_seconds(at).to_string(),
                ));
            }
            return Ok(token.clone());
        }
        match self.lookup(Instant::now())? {
            Lookup::Fresh(token) => Ok(token),
            Lookup::Due(token) => {
                // Someone else is renewing: the current token is still good.
                let Ok(_renewing) = self.fetching.try_lock() else {
                    return Ok(token);
                };
                if let Lookup::Fresh(renewed) = self.lookup(Instant::now())? {
                    return Ok(renewed);
                }
                match self.fetch().await {
                    Ok(fresh) => Ok(self.store(fresh)),
                    Err(e @ AuthError::Unavailable(_)) => {
                        tracing::warn!(error = %e, "token renewal failed; using the current token and retrying shortly");
                        let mut state = self.state();
                        if let Some(c) = state.cached.as_mut() {
                            let left = c.usable_until.saturating_duration_since(Instant::now());
                            c.refresh_at = Instant::now() + (left / 4).min(Duration::from_secs(10));
                        }
                        Ok(token)
                    }
                    Err(e) => Err(self.fail(e)),
                }
            }
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

    /// Graph refused `stale` with a 401 (`why`: its message): drop it so the next call fetches
    /// a new one, unless another worker already replaced it. A static token is marked
    /// rejected instead: there is no new one to get.
    pub async fn invalidate(&self, stale: &str, why: &str) {
        let mut state = self.state();
        if let Credential::Static { token, .. } = &self.credential {
            if &**token == stale && state.static_rejected.is_none() {
                state.static_rejected = Some(why.to_string());
            }
            return;
        }
        if state.cached.as_ref().is_some_and(|c| &*c.token == stale) {
            state.cached = None;
        }
    }

    async fn fetch_with_retry(&self) -> Result<Cached, AuthError> {
        const ATTEMPTS: u32 = 5;
        let mut delay = Duration::from_millis(500);
        let mut last = None;
        for attempt in 1..=ATTEMPTS {
            match self.fetch().await {
                Ok(c) => return Ok(c),
                Err(e @ AuthError::Unavailable(_)) => {
                    tracing::warn!(attempt, error = %e, "token request failed; retrying");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
        Err(last.unwrap_or_else(|| AuthError::Unavailable("no attempt made".into())))
    }

    /// One token request. 5xx, 429 and transport failures are `Unavailable` (worth retrying);
    /// any other refusal is `Rejected` with the service's `error` and `error_description`.
    async fn fetch(&self) -> Result<Cached, AuthError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let assertion;
        let mut form = vec![
            ("client_id", self.client_id.as_str()),
            ("scope", self.scope.as_str()),
            ("grant_type", "client_credentials"),
        ];
        match &self.credential {
            Credential::Secret(secret) => form.push(("client_secret", secret)),
            Credential::Certificate(cert) => {
                assertion = cert.assertion(&self.client_id, &self.token_url, SystemTime::now())?;
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ));
                form.push(("client_assertion", &assertion));
            }
            Credential::Static { .. } => {
                return Err(AuthError::Unavailable(
                    "a static token has no token endpoint".into(),
                ));
            }
        }
        let started = Instant::now();
        // reqwest's error Display names the URL and the cause, never the form body.
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
            // Bounded so that odd answers neither overflow an Instant nor make every call
            // fetch again (a lifetime of 0).
            let lifetime = Duration::from_secs(t.expires_in.unwrap_or(3599).clamp(1, 86_400));
            tracing::debug!(lifetime = ?lifetime, "access token obtained");
            return Ok(Cached {
                token: t.access_token.into(),
                refresh_at: started + lifetime - refresh_margin(lifetime),
                usable_until: started + lifetime - expiry_margin(lifetime),
            });
        }
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(AuthError::Unavailable(format!(
                "{} answered {status}",
                self.token_url
            )));
        }
        let err: Option<TokenErrorResponse> = serde_json::from_slice(&body).ok();
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

    fn jwt_with(claims: serde_json::Value) -> String {
        format!(
            "{}.{}.sig",
            B64URL.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
            B64URL.encode(claims.to_string())
        )
    }

    #[test]
    fn reads_exp_of_jwts_only() {
        let t = jwt_with(serde_json::json!({"exp": 1_700_000_000u64, "aud": "x"}));
        assert_eq!(
            jwt_expiry(&t),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(jwt_expiry("0123456789abcdef"), None);
        assert_eq!(jwt_expiry("a.b.c"), None);
        assert_eq!(jwt_expiry(&jwt_with(serde_json::json!({"aud": "x"}))), None);
        for absurd in [
            serde_json::json!(-1),
            serde_json::json!(1e300),
            serde_json::json!("x"),
        ] {
            assert_eq!(
                jwt_expiry(&jwt_with(serde_json::json!({"exp": absurd}))),
                None
            );
        }
    }

    #[test]
    fn static_token_warns_when_it_will_not_last() {
        let http = reqwest::Client::new();
        let now = SystemTime::now();
        let exp = |secs: u64| {
            jwt_with(serde_json::json!({
                "exp": (now + Duration::from_secs(secs)).duration_since(UNIX_EPOCH).unwrap().as_secs()
            }))
        };
        let soon = TokenProvider::static_token(http.clone(), &exp(600));
        let w = soon.static_token_warning(None, now).unwrap();
        assert!(w.contains("cannot be refreshed"), "{w}");
        assert!(!w.contains("sig"), "{w}");
        let later = TokenProvider::static_token(http.clone(), &exp(7200));
        assert!(later.static_token_warning(None, now).is_none());
        assert!(
            later
                .static_token_warning(Some(Duration::from_secs(3 * 3600)), now)
                .is_some()
        );
        let opaque = TokenProvider::static_token(http, "opaque");
        assert!(opaque.static_token_warning(None, now).is_some());
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn certificate_pem_with_pkcs8_or_pkcs1_key_signs_assertions() {
        let cert = fixture("emulator-client.crt");
        for key in ["emulator-client.key", "emulator-client.pkcs1.key"] {
            let pem = [cert.clone(), fixture(key)].concat();
            let c = ClientCertificate::from_pem(&pem).unwrap_or_else(|e| panic!("{key}: {e}"));
            let jwt = c
                .assertion(
                    "app",
                    "https://login/t/oauth2/v2.0/token",
                    SystemTime::now(),
                )
                .unwrap();
            let parts: Vec<&str> = jwt.split('.').collect();
            assert_eq!(parts.len(), 3);
            let header: serde_json::Value =
                serde_json::from_slice(&B64URL.decode(parts[0]).unwrap()).unwrap();
            let claims: serde_json::Value =
                serde_json::from_slice(&B64URL.decode(parts[1]).unwrap()).unwrap();
            assert_eq!(header["alg"], "RS256");
            assert_eq!(header["x5t"].as_str().unwrap().len(), 27); // 20 bytes, base64url
            assert_eq!(claims["iss"], "app");
            assert_eq!(claims["sub"], "app");
            assert_eq!(claims["aud"], "https://login/t/oauth2/v2.0/token");
            assert_eq!(
                claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
                600
            );
            let again = c.assertion("app", "x", SystemTime::now()).unwrap();
            let jti = |j: &str| {
                let c = j.split('.').nth(1).unwrap();
                serde_json::from_slice::<serde_json::Value>(&B64URL.decode(c).unwrap()).unwrap()
                    ["jti"]
                    .clone()
            };
            assert_ne!(jti(&jwt), jti(&again), "jti must be fresh");
        }
    }

    #[test]
    fn certificate_pem_problems_are_named() {
        let cert = fixture("emulator-client.crt");
        let err = |pem: &[u8]| ClientCertificate::from_pem(pem).unwrap_err();
        assert!(err(b"").contains("CERTIFICATE"));
        assert!(err(&cert).contains("PRIVATE KEY"));
        let encrypted = [
            cert.clone(),
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
                .to_vec(),
        ]
        .concat();
        assert!(err(&encrypted).contains("encrypted"));
        // other.crt is a different certificate: its key is not the fixture key.
        let mismatched = [fixture("other.crt"), fixture("emulator-client.key")].concat();
        assert!(err(&mismatched).contains("does not belong"));
    }

    #[tokio::test]
    async fn static_token_is_refused_after_a_401_and_after_its_exp() {
        let http = reqwest::Client::new();
        let p = TokenProvider::static_token(http.clone(), " opaque-token \n");
        assert_eq!(&*p.token().await.unwrap(), "opaque-token");
        p.invalidate(
            "opaque-token",
            "Lifetime validation failed, the token is expired.",
        )
        .await;
        let e = p.token().await.unwrap_err();
        assert!(matches!(e, AuthError::StaticTokenRejected(_)), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("fresh token") && text.contains("results file"),
            "{text}"
        );
        assert!(!text.contains("opaque-token"));

        let expired = jwt_with(serde_json::json!({"exp": 1_000_000_000u64}));
        let p = TokenProvider::static_token(http, &expired);
        assert!(matches!(
            p.token().await,
            Err(AuthError::StaticTokenExpired(_))
        ));
        assert_eq!(p.requests(), 0);
    }
}
