//! A ready bearer token handed to the run. Nothing can renew it, so the run has to know its
//! limits up front: warn when it will not last, refuse it once its `exp` has passed, and after
//! Graph rejects it end the run saying how to resume instead of sending it again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::{AuthError, jwt_expiry};

pub(super) struct StaticToken {
    token: Arc<str>,
    /// Its `exp` when it is a JWT; opaque tokens do not say.
    expires_at: Option<SystemTime>,
    /// Graph refused it, with Graph's message.
    rejected: Mutex<Option<String>>,
}

impl StaticToken {
    /// Surrounding whitespace (a trailing newline in a token file) is not part of the token.
    pub(super) fn new(token: &str) -> Self {
        let token = token.trim();
        Self {
            expires_at: jwt_expiry(token),
            token: token.into(),
            rejected: Mutex::new(None),
        }
    }

    pub(super) fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    fn rejected(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.rejected.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token, unless Graph refused it or its own `exp` has passed (sending it would only
    /// earn a 401).
    pub(super) fn token(&self, now: SystemTime) -> Result<Arc<str>, AuthError> {
        if let Some(why) = &*self.rejected() {
            return Err(AuthError::StaticTokenRejected(why.clone()));
        }
        if let Some(at) = self.expires_at.filter(|at| *at <= now) {
            return Err(AuthError::StaticTokenExpired(
                humantime::format_rfc3339_seconds(at).to_string(),
            ));
        }
        Ok(self.token.clone())
    }

    /// Graph answered 401 to `stale` (`why`: its message): every later call fails.
    pub(super) fn reject(&self, stale: &str, why: &str) {
        let mut rejected = self.rejected();
        if &*self.token == stale && rejected.is_none() {
            *rejected = Some(why.to_string());
        }
    }

    /// The warning to give before the run when the token will likely expire before the run
    /// ends (`expected_run`, if estimated, or within the hour) or its lifetime is unknown.
    pub(super) fn warning(
        &self,
        expected_run: Option<Duration>,
        now: SystemTime,
    ) -> Option<String> {
        let Some(at) = self.expires_at else {
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
}
