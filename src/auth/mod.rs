//! Access tokens for Graph, from one of two sources that behave differently: a static bearer
//! token (given, never renewed: once Graph refuses it the run ends, exit 3) and an OAuth
//! client-credentials source (client secret or certificate) that fetches, caches and renews.
//! Workers see only [`TokenProvider`]: `token()` before a request, `invalidate()` after a 401.
//!
//! Secrets, assertions and tokens are never formatted into logs or errors: `Debug` shows the
//! token URL and client id only, and errors carry the service's `error` and
//! `error_description` or the transport's cause, never what was sent.

mod answer;
mod certificate;
pub(crate) mod file;
mod oauth;
mod static_token;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use certificate::{ClientCertificate, jwt_expiry};
use oauth::{ClientAuth, OAuthSource};
use static_token::StaticToken;

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
    /// The certificate file is missing, not a regular file, or too large: the line says
    /// which, naming the path only when it exists.
    #[error("{0}")]
    Read(String),
    #[error("certificate file {path}: {why}")]
    Certificate { path: PathBuf, why: String },
}

/// The token source for a run: one per run, shared by every worker.
pub struct TokenProvider {
    source: Source,
}

enum Source {
    Static(StaticToken),
    /// Boxed: it is several times the size of a static token.
    OAuth(Box<OAuthSource>),
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::Static(s) => f
                .debug_struct("TokenProvider::Static")
                .field("expires_at", &s.expires_at())
                .finish_non_exhaustive(),
            Source::OAuth(o) => f
                .debug_struct("TokenProvider")
                .field("token_url", &o.token_url())
                .field("client_id", &o.client_id())
                .finish_non_exhaustive(),
        }
    }
}

impl TokenProvider {
    /// The provider for configured credentials. `scope` is the cloud's Graph scope (it
    /// follows `--cloud` even when `--graph-url` points elsewhere); a static token needs
    /// neither it nor `authority_url`.
    pub fn from_credentials(
        http: reqwest::Client,
        authority_url: &str,
        scope: &str,
        credentials: &Credentials,
    ) -> Result<Self, CredentialError> {
        let oauth = |tenant_id: &str, client_id: &str, auth| {
            Source::OAuth(Box::new(OAuthSource::new(
                http.clone(),
                authority_url,
                tenant_id,
                client_id,
                scope,
                auth,
            )))
        };
        let source = match credentials {
            Credentials::None => return Err(CredentialError::Missing),
            Credentials::ClientSecret {
                tenant_id,
                client_id,
                secret,
            } => oauth(tenant_id, client_id, ClientAuth::Secret(secret.clone())),
            Credentials::Certificate {
                tenant_id,
                client_id,
                pem_path,
            } => oauth(
                tenant_id,
                client_id,
                ClientAuth::Certificate(ClientCertificate::from_pem_file(pem_path)?),
            ),
            Credentials::StaticToken(token) => Source::Static(StaticToken::new(token)),
        };
        Ok(Self { source })
    }

    /// Token requests made so far (none for a static token).
    pub fn requests(&self) -> u64 {
        match &self.source {
            Source::Static(_) => 0,
            Source::OAuth(o) => o.requests(),
        }
    }

    /// `Some` for a static token: when it expires, if it says (`Some(None)`: it does not).
    pub fn static_expiry(&self) -> Option<Option<SystemTime>> {
        match &self.source {
            Source::Static(s) => Some(s.expires_at()),
            Source::OAuth(_) => None,
        }
    }

    /// The warning to give before a static-token run: the token cannot be refreshed, so say
    /// so when it will likely expire before the run ends (`expected_run`, if estimated, or
    /// within the hour) or when its lifetime is unknown. `None` for OAuth sources.
    pub fn static_token_warning(
        &self,
        expected_run: Option<Duration>,
        now: SystemTime,
    ) -> Option<String> {
        match &self.source {
            Source::Static(s) => s.warning(expected_run, now),
            Source::OAuth(_) => None,
        }
    }

    /// A valid token. A static token fails with [`AuthError::StaticTokenRejected`] after a
    /// 401 and with [`AuthError::StaticTokenExpired`] once its `exp` has passed.
    pub async fn token(&self) -> Result<Arc<str>, AuthError> {
        match &self.source {
            Source::Static(s) => s.token(SystemTime::now()),
            Source::OAuth(o) => o.token().await,
        }
    }

    /// Graph refused `stale` with a 401 (`why`: its message): drop it so the next call fetches
    /// a new one, unless another worker already replaced it. A static token is marked
    /// rejected instead: there is no new one to get.
    pub async fn invalidate(&self, stale: &str, why: &str) {
        match &self.source {
            Source::Static(s) => s.reject(stale, why),
            Source::OAuth(o) => o.invalidate(stale),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::certificate::tests::jwt_with;
    use super::*;
    use std::time::UNIX_EPOCH;

    fn static_token(token: &str) -> TokenProvider {
        TokenProvider::from_credentials(
            reqwest::Client::new(),
            "",
            "",
            &Credentials::StaticToken(token.into()),
        )
        .unwrap()
    }

    #[test]
    fn static_token_warns_when_it_will_not_last() {
        let now = SystemTime::now();
        let exp = |secs: u64| {
            jwt_with(serde_json::json!({
                "exp": (now + Duration::from_secs(secs)).duration_since(UNIX_EPOCH).unwrap().as_secs()
            }))
        };
        let soon = static_token(&exp(600));
        let w = soon.static_token_warning(None, now).unwrap();
        assert!(w.contains("cannot be refreshed"), "{w}");
        assert!(!w.contains("sig"), "{w}");
        let later = static_token(&exp(7200));
        assert!(later.static_token_warning(None, now).is_none());
        assert!(
            later
                .static_token_warning(Some(Duration::from_secs(3 * 3600)), now)
                .is_some()
        );
        let opaque = static_token("opaque");
        assert!(opaque.static_token_warning(None, now).is_some());
    }

    #[tokio::test]
    async fn static_token_is_refused_after_a_401_and_after_its_exp() {
        let p = static_token(" opaque-token \n");
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
        let p = static_token(&expired);
        assert!(matches!(
            p.token().await,
            Err(AuthError::StaticTokenExpired(_))
        ));
        assert_eq!(p.requests(), 0);
    }

    #[test]
    fn missing_credentials_are_a_configuration_error_and_debug_shows_no_secret() {
        let http = reqwest::Client::new();
        assert!(matches!(
            TokenProvider::from_credentials(http.clone(), "", "", &Credentials::None),
            Err(CredentialError::Missing)
        ));
        let p = TokenProvider::from_credentials(
            http,
            "https://login.example/",
            "https://graph.example/.default",
            &Credentials::ClientSecret {
                tenant_id: "contoso".into(),
                client_id: "app".into(),
                secret: "s3cr3t".into(),
            },
        )
        .unwrap();
        let debug = format!("{p:?}");
        assert!(
            debug.contains("https://login.example/contoso/oauth2/v2.0/token")
                && debug.contains("app"),
            "{debug}"
        );
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert!(p.static_expiry().is_none());
        assert!(p.static_token_warning(None, SystemTime::now()).is_none());
        let debug = format!("{:?}", static_token("opaque-token"));
        assert!(!debug.contains("opaque-token"), "{debug}");
    }
}
