//! The token endpoint (`POST /{tenant}/oauth2/v2.0/token`, client credentials) and the bearer
//! check on Graph routes. Errors copy Entra ID's (AAD's) shapes and AADSTS codes, because
//! clients are expected to surface them, and the client's auth code is tested against them.
//!
//! Client assertions are decoded and their claims checked (type, `iss` = `sub` = client id,
//! `aud` = this token URL, `exp`). With `--client-certificate`, the header's `x5t` (or
//! `x5t#S256`) must be that certificate's thumbprint and the RS256/PS256 signature must verify
//! against its key (rustls-webpki over aws-lc-rs: no hand-rolled crypto).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use uuid::Uuid;

use super::envelope::{Answer, Ctx, Errors, new_guid};
use super::state::{Caller, IssuedToken, Shared};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An AAD error: HTTP status, `error`, AADSTS number and description.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AadError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    description: String,
}

impl AadError {
    fn new(status: StatusCode, error: &'static str, code: u32, description: String) -> Self {
        Self {
            status,
            error,
            code,
            description,
        }
    }

    fn missing(param: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{param}'."),
        )
    }

    /// The token URL names a tenant Entra ID does not know. It resolves the tenant before it
    /// reads the body, so this comes before every other check.
    fn unknown_tenant(tenant: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID \
                 and are signing into the correct cloud. Check with your subscription \
                 administrator, this may happen if there are no active subscriptions for the \
                 tenant."
            ),
        )
    }

    fn invalid_client(code: u32, description: String) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            code,
            description,
        )
    }

    /// AAD's body: description prefixed by its AADSTS code and followed by the trace ids.
    fn into_response(self) -> Response {
        let trace_id = new_guid();
        let correlation_id = new_guid();
        let timestamp = humantime::format_rfc3339_seconds(SystemTime::now())
            .to_string()
            .replace('T', " ");
        let body = json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}",
                self.code, self.description
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
        });
        (self.status, axum::Json(body)).into_response()
    }
}

/// `POST /{tenant}/oauth2/v2.0/token`. The answer carries its [`Caller`] in its extensions
/// (when the tenant is known), so that its status counts for that tenant.
pub(crate) async fn token(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let caller = shared.caller(&tenant);
    shared.lock().stats_of(caller.as_ref()).token_requests += 1;
    let Some(caller) = caller else {
        return AadError::unknown_tenant(&tenant).into_response();
    };
    let mut response = issue(&shared, &tenant, &caller, &headers, form);
    response.extensions_mut().insert(caller);
    response
}

/// The token endpoint for a tenant the emulator accepts.
fn issue(
    shared: &Shared,
    tenant: &str,
    caller: &Caller,
    headers: &HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    // A body that is not a form is, to AAD, a body without grant_type.
    let form = form.map(|Form(f)| f).unwrap_or_default();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| shared.addr.to_string());
    let auds = [
        format!("http://{host}/{tenant}/oauth2/v2.0/token"),
        format!("http://{}/{tenant}/oauth2/v2.0/token", shared.addr),
        format!(
            "http://localhost:{}/{tenant}/oauth2/v2.0/token",
            shared.addr.port()
        ),
    ];
    let policy = Policy {
        secret: shared.secret_for(tenant),
        certificate: shared.certificate.as_deref(),
    };
    match check_request(&form, policy, &auds) {
        Err(e) => e.into_response(),
        Ok(()) => {
            let client_id = form.get("client_id").map(String::as_str).unwrap_or("");
            // A configured tenant's token names it as configured, whatever the URL's case.
            let tid = if shared.tenants.is_empty() {
                tenant
            } else {
                &caller.tenant
            };
            let access_token = access_token(tid, client_id, &shared.config);
            let ttl = shared.config.token_ttl;
            {
                let mut inner = shared.lock();
                inner.tokens.insert(
                    access_token.clone(),
                    IssuedToken {
                        caller: caller.clone(),
                        // A ttl past what Instant can hold: never expires.
                        expires: tokio::time::Instant::now().checked_add(ttl),
                    },
                );
                inner.stats_of(Some(caller)).tokens_issued += 1;
            }
            axum::Json(json!({
                "token_type": "Bearer",
                "expires_in": ttl.as_secs(),
                "ext_expires_in": ttl.as_secs(),
                "access_token": access_token,
            }))
            .into_response()
        }
    }
}

/// The application roles a token carries unless `token_roles` says otherwise: the permission
/// the assignment and profile routes need, and the two static group membership needs
/// (reading devices, writing members).
pub const DEFAULT_ROLES: &[&str] = &[
    "DeviceManagementServiceConfig.ReadWrite.All",
    "GroupMember.ReadWrite.All",
    "Device.Read.All",
];

/// An unsigned JWT (`alg` none) with the claims of an app-only Graph token, so that clients
/// can read tenant, app and roles as they would from Entra ID's. No `exp`: the emulator judges
/// lifetimes itself (`token_ttl`), and clients learn them from `expires_in`; `uti` makes each
/// token unique.
fn access_token(tenant: &str, client_id: &str, config: &super::EmulatorConfig) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let roles: Vec<String> = match &config.token_roles {
        Some(roles) => roles.clone(),
        None => DEFAULT_ROLES.iter().map(|r| r.to_string()).collect(),
    };
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = json!({
        "aud": "https://graph.microsoft.com",
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "iat": iat,
        "nbf": iat,
        "app_displayname": "autopilot-bulk emulator",
        "appid": client_id,
        "idtyp": "app",
        "roles": roles,
        "tid": tenant,
        "uti": Uuid::new_v4().simple().to_string(),
        "ver": "1.0",
    });
    format!(
        "{}.{}.",
        b64.encode(r#"{"typ":"JWT","alg":"none"}"#),
        b64.encode(claims.to_string())
    )
}

/// What credentials the emulator insists on.
#[derive(Debug, Clone, Copy, Default)]
struct Policy<'a> {
    /// Only this client secret is accepted (any, when `None`).
    secret: Option<&'a str>,
    /// DER certificate whose key must have signed client assertions (unchecked when `None`).
    certificate: Option<&'a [u8]>,
}

/// The checks AAD makes, in its order: grant type, client id, scope, then the credential.
fn check_request(
    form: &HashMap<String, String>,
    policy: Policy<'_>,
    auds: &[String],
) -> Result<(), AadError> {
    let param = |name: &str| form.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let grant = param("grant_type").ok_or_else(|| AadError::missing("grant_type"))?;
    if grant != "client_credentials" {
        return Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant}'."),
        ));
    }
    let client_id = param("client_id").ok_or_else(|| AadError::missing("client_id"))?;
    let scope = param("scope").ok_or_else(|| AadError::missing("scope"))?;
    if !scope.split(' ').all(|s| s.ends_with("/.default")) {
        return Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows \
                 must have a scope value with /.default suffixed to the resource identifier \
                 (application ID URI)."
            ),
        ));
    }
    match (param("client_secret"), param("client_assertion")) {
        (Some(_), Some(_)) => Err(AadError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90015,
            "Requested query string is too long or ambiguous: give either client_secret or \
             client_assertion, not both."
                .into(),
        )),
        (Some(secret), None) => match policy.secret {
            Some(expected) if expected != secret => Err(AadError::invalid_client(
                7000215,
                format!(
                    "Invalid client secret provided. Ensure the secret being sent in the \
                     request is the client secret value, not the client secret ID, for a \
                     secret added to app '{client_id}'."
                ),
            )),
            _ => Ok(()),
        },
        (None, Some(assertion)) => {
            if param("client_assertion_type") != Some(JWT_BEARER) {
                return Err(AadError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    70002,
                    format!("The client_assertion_type must be '{JWT_BEARER}'."),
                ));
            }
            check_assertion(assertion, client_id, auds, SystemTime::now())?;
            match policy.certificate {
                Some(der) => check_signature(assertion, der),
                None => Ok(()),
            }
        }
        (None, None) => Err(AadError::invalid_client(
            7000216,
            "'client_assertion', 'client_secret' or 'request' is required for the \
             'client_credentials' grant type."
                .into(),
        )),
    }
}

fn decode_segment(segment: &str) -> Option<Value> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    value.is_object().then_some(value)
}

/// Claims of a client assertion: `iss` = `sub` = client id, `aud` = the token URL, not
/// expired, not before its `nbf` (5 minutes of clock skew allowed, as AAD does).
fn check_assertion(
    jwt: &str,
    client_id: &str,
    auds: &[String],
    now: SystemTime,
) -> Result<(), AadError> {
    let malformed = || AadError::invalid_client(50027, "JWT token is invalid or malformed.".into());
    let mut parts = jwt.split('.');
    let (Some(h), Some(c), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let (Some(header), Some(claims)) = (decode_segment(h), decode_segment(c)) else {
        return Err(malformed());
    };
    if sig.is_empty() || !matches!(header["alg"].as_str(), Some("RS256" | "PS256")) {
        return Err(AadError::invalid_client(
            5002738,
            "The client assertion must be signed with RS256 or PS256.".into(),
        ));
    }
    if claims["iss"].as_str() != Some(client_id) || claims["sub"].as_str() != Some(client_id) {
        return Err(AadError::invalid_client(
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter: \
             'iss' and 'sub' must both be the client id."
                .into(),
        ));
    }
    let aud_ok = match &claims["aud"] {
        Value::String(a) => auds.contains(a),
        Value::Array(list) => list
            .iter()
            .any(|a| a.as_str().is_some_and(|a| auds.iter().any(|x| x == a))),
        _ => false,
    };
    if !aud_ok {
        return Err(AadError::invalid_client(
            700212,
            format!(
                "No matching federated identity record found for presented assertion audience \
                 {}: 'aud' must be the token URL.",
                claims["aud"]
            ),
        ));
    }
    let now = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let skew = Duration::from_secs(300).as_secs_f64();
    let exp = claims["exp"].as_f64();
    let nbf = claims["nbf"].as_f64();
    if exp.is_none_or(|exp| exp <= now) || nbf.is_some_and(|nbf| nbf > now + skew) {
        return Err(AadError::invalid_client(
            700024,
            "Client assertion is not within its valid time range.".into(),
        ));
    }
    Ok(())
}

/// Read the first certificate of a PEM file (it may also hold the private key) and check
/// that it parses, so that a bad `--client-certificate` fails at start, not per request.
pub(crate) fn load_certificate(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let invalid = |why: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("client certificate {}: {why}", path.display()),
        )
    };
    let pem = std::fs::read(path).map_err(|e| invalid(e.to_string()))?;
    let der = CertificateDer::pem_slice_iter(&pem)
        .next()
        .ok_or_else(|| invalid("no CERTIFICATE block".into()))?
        .map_err(|e| invalid(format!("{e:?}")))?;
    webpki::EndEntityCert::try_from(&der).map_err(|e| invalid(format!("{e:?}")))?;
    Ok(der.to_vec())
}

/// The assertion's `x5t`/`x5t#S256` must name the configured certificate, and its signature
/// must verify with that certificate's key. AAD answers both failures with AADSTS700027.
fn check_signature(jwt: &str, der: &[u8]) -> Result<(), AadError> {
    use aws_lc_rs::digest;
    let reject = |why: &str| {
        AadError::invalid_client(
            700027,
            format!("Client assertion failed signature validation. [Reason - {why}]"),
        )
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let Some((signed, signature)) = jwt.rsplit_once('.') else {
        return Err(reject("The assertion is malformed."));
    };
    let header = signed
        .split('.')
        .next()
        .and_then(decode_segment)
        .ok_or_else(|| reject("The assertion is malformed."))?;
    let thumbprint = |alg| b64.encode(digest::digest(alg, der));
    let named = header["x5t"]
        .as_str()
        .map(|t| t == thumbprint(&digest::SHA1_FOR_LEGACY_USE_ONLY))
        .or_else(|| {
            header["x5t#S256"]
                .as_str()
                .map(|t| t == thumbprint(&digest::SHA256))
        });
    if named != Some(true) {
        return Err(reject(
            "The key was not found: x5t does not name the configured certificate.",
        ));
    }
    let algorithm = match header["alg"].as_str() {
        Some("RS256") => webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
        Some("PS256") => webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        _ => return Err(reject("Unsupported signing algorithm.")),
    };
    let signature = b64
        .decode(signature.trim_end_matches('='))
        .map_err(|_| reject("The signature is not base64url."))?;
    let der = rustls_pki_types::CertificateDer::from(der);
    let cert = webpki::EndEntityCert::try_from(&der)
        .map_err(|_| reject("The configured certificate cannot be parsed."))?;
    cert.verify_signature(algorithm, signed.as_bytes(), &signature)
        .map_err(|_| reject("The signature does not match the certificate's key."))
}

/// The bearer check on Graph routes. On success, the caller the token was issued for; on
/// failure the 401, and the caller when the token names one (an expired token).
pub(crate) fn authenticate(
    shared: &Shared,
    headers: &HeaderMap,
    ctx: &Ctx,
) -> Result<Caller, (Answer, Option<Caller>)> {
    let errors = Errors {
        ctx,
        intune: false,
        path: "",
    };
    let reject = |message: &str| {
        errors
            .plain(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", message)
            .with_header(
                "www-authenticate",
                "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"".into(),
            )
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("");
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ if value.is_empty() => "",
        _ => {
            return Err((
                reject(
                    "Access token validation failed: the Authorization header is not a Bearer \
                     token.",
                ),
                None,
            ));
        }
    };
    if token.is_empty() {
        return Err((reject("Access token is empty."), None));
    }
    let mut inner = shared.lock();
    match inner.tokens.get(token).cloned() {
        None => Err((
            reject("Access token validation failed: the token was not issued by this emulator."),
            None,
        )),
        Some(t)
            if t.expires
                .is_some_and(|at| tokio::time::Instant::now() >= at) =>
        {
            inner.stats_of(Some(&t.caller)).expired_tokens += 1;
            Err((
                reject("Lifetime validation failed, the token is expired."),
                Some(t.caller),
            ))
        }
        Some(t) => Ok(t.caller),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(header: Value, claims: Value) -> String {
        let e = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.c2ln", e(&header), e(&claims))
    }

    const AUD: &str = "http://127.0.0.1:1/t/oauth2/v2.0/token";

    fn now_secs() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn good_assertion_passes_and_bad_claims_fail() {
        let auds = [AUD.to_string()];
        let h = json!({"alg": "RS256", "x5t": "abc"});
        let good = json!({"iss": "c", "sub": "c", "aud": AUD, "exp": now_secs() + 300});
        assert_eq!(
            check_assertion(&jwt(h.clone(), good.clone()), "c", &auds, SystemTime::now()),
            Ok(())
        );
        let cases = [
            (
                json!({"iss": "x", "sub": "c", "aud": AUD, "exp": now_secs() + 300}),
                700021,
            ),
            (
                json!({"iss": "c", "sub": "c", "aud": "http://elsewhere/", "exp": now_secs() + 300}),
                700212,
            ),
            (
                json!({"iss": "c", "sub": "c", "aud": AUD, "exp": now_secs() - 1}),
                700024,
            ),
            (json!({"iss": "c", "sub": "c", "aud": AUD}), 700024),
        ];
        for (claims, code) in cases {
            let err = check_assertion(
                &jwt(h.clone(), claims.clone()),
                "c",
                &auds,
                SystemTime::now(),
            )
            .expect_err(&claims.to_string());
            assert_eq!(err.code, code, "{claims}");
        }
        let none_alg = jwt(json!({"alg": "none"}), good);
        assert_eq!(
            check_assertion(&none_alg, "c", &auds, SystemTime::now())
                .unwrap_err()
                .code,
            5002738
        );
        for junk in ["", "a.b", "a.b.c.d", "!!.??.x"] {
            assert_eq!(
                check_assertion(junk, "c", &auds, SystemTime::now())
                    .unwrap_err()
                    .code,
                50027
            );
        }
    }

    #[test]
    fn request_checks_follow_aad_order() {
        let form = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        let ok = [
            ("grant_type", "client_credentials"),
            ("client_id", "c"),
            ("scope", "https://graph.microsoft.com/.default"),
            ("client_secret", "s"),
        ];
        let secret = |s| Policy {
            secret: s,
            certificate: None,
        };
        assert_eq!(check_request(&form(&ok), secret(None), &[]), Ok(()));
        assert_eq!(check_request(&form(&ok), secret(Some("s")), &[]), Ok(()));
        let code =
            |f: &[(&str, &str)], s| check_request(&form(f), secret(s), &[]).unwrap_err().code;
        assert_eq!(code(&ok, Some("other")), 7000215);
        assert_eq!(code(&ok[1..], None), 900144);
        assert_eq!(code(&[("grant_type", "password")], None), 70003);
        assert_eq!(
            code(
                &[
                    ok[0],
                    ok[1],
                    ("scope", "https://graph.microsoft.com/User.Read"),
                    ok[3]
                ],
                None
            ),
            1002012
        );
        assert_eq!(code(&ok[..3], None), 7000216);
    }
}
