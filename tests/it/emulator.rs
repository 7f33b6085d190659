//! The Graph emulator, driven in-process over HTTP (port 0, reqwest), plus one run of the
//! `autopilot-bulk emulate` binary. Throttle tests use long windows (or none at all) so that
//! they assert counts, never wall-clock durations.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use crate::common;

use autopilot_bulk::emulator::{Emulator, EmulatorConfig, Limit, RetryAfterMode, Stats};
use common::{
    GraphEnv, SCOPE, SEED_BODY, assignments_url, fixture, header, token_at, token_request,
    unsigned_jwt,
};
use serde_json::{Value, json};

fn device() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn group_body(group: &str) -> String {
    json!({
        "@odata.type": "#microsoft.graph.windowsAutopilotDeploymentProfileAssignment",
        "target": {"@odata.type": "#microsoft.graph.groupAssignmentTarget", "groupId": group},
    })
    .to_string()
}

fn limit(count: u32, secs: u64) -> Limit {
    Limit::new(count, Duration::from_secs(secs))
}

/// Graph's error envelope, checked for shape; returns (code, message).
fn assert_envelope(body: &Value) -> (String, String) {
    let e = &body["error"];
    let inner = &e["innerError"];
    assert!(inner["date"].is_string(), "{body}");
    assert!(inner["request-id"].is_string(), "{body}");
    assert!(inner["client-request-id"].is_string(), "{body}");
    (
        e["code"].as_str().unwrap().to_string(),
        e["message"].as_str().unwrap().to_string(),
    )
}

async fn error_of(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    let (code, message) = assert_envelope(&body);
    (status, code, message)
}

async fn http_stats(env: &GraphEnv) -> Stats {
    env.http
        .get(format!("{}/_emulator/stats", env.emu.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn post_then_get_round_trip_with_graph_headers() {
    let env = GraphEnv::new(EmulatorConfig::default()).await;
    let dev = device();
    let r = env
        .http
        .post(env.assignments_url(&dev))
        .bearer_auth(&env.token)
        .header("content-type", "application/json")
        .header("client-request-id", "my-id-1")
        .body(SEED_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "client-request-id").as_deref(), Some("my-id-1"));
    assert!(header(&r, "request-id").is_some_and(|v| v.len() == 36));
    let diag = header(&r, "x-ms-ags-diagnostic").unwrap();
    assert!(serde_json::from_str::<Value>(&diag).is_ok(), "{diag}");
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert!(
        created["@odata.context"]
            .as_str()
            .unwrap()
            .contains("$metadata#")
    );
    assert_eq!(created["source"], "policySets");
    assert_eq!(created["sourceId"], "Source Id value");
    assert_eq!(
        created["target"]["deviceAndAppManagementAssignmentFilterId"],
        "Device And App Management Assignment Filter Id value"
    );

    // Without a client-request-id, a fresh one comes back.
    let r = env.get(&dev).await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "client-request-id").is_some_and(|v| v.len() == 36));
    let list: Value = r.json().await.unwrap();
    let value = list["value"].as_array().unwrap();
    assert_eq!(value.len(), 1);
    assert_eq!(value[0]["id"], id.as_str());

    // Upper-case device ids are the same device.
    assert_eq!(
        env.post(&dev.to_uppercase(), &group_body(&device()))
            .await
            .status(),
        201
    );
    let assignments = env.emu.assignments();
    assert_eq!(assignments[&dev].len(), 2);
    assert_eq!(assignments[&dev][0], id);
    let stats = env.emu.stats();
    assert_eq!(stats.assignments_created, 2);
    assert_eq!(stats.duplicate_devices, 1);
    assert_eq!(stats.devices_with_assignments, 1);
    assert_eq!(stats.requests_by_status["201"], 2);
    assert_eq!(stats.requests_by_status["200"], 2); // token + GET
    assert_eq!(stats.assignment_reads, 1);
    assert_eq!(stats.write_requests, 2);
    assert_eq!(stats.token_requests, 1);
    assert_eq!(stats.tokens_issued, 1);

    // The HTTP endpoints serve the same data, and are not counted themselves.
    assert_eq!(http_stats(&env).await, env.emu.stats());
    let over_http: Value = env
        .http
        .get(format!("{}/_emulator/assignments", env.emu.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http[&dev].as_array().unwrap().len(), 2);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn every_target_kind_is_accepted() {
    let env = GraphEnv::new(EmulatorConfig::default()).await;
    let g = device();
    let targets = [
        json!({"@odata.type": "#microsoft.graph.groupAssignmentTarget", "groupId": g}),
        json!({"@odata.type": "#microsoft.graph.exclusionGroupAssignmentTarget", "groupId": g}),
        json!({"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget"}),
        json!({"@odata.type": "#microsoft.graph.allLicensedUsersAssignmentTarget"}),
        json!({"@odata.type": "#microsoft.graph.configurationManagerCollectionAssignmentTarget", "collectionId": "SMS00001"}),
        json!({"@odata.type": "#microsoft.graph.deviceAndAppManagementAssignmentTarget",
               "deviceAndAppManagementAssignmentFilterId": g,
               "deviceAndAppManagementAssignmentFilterType": "exclude"}),
    ];
    for target in targets {
        let body = json!({"target": target.clone(), "source": "direct", "id": "ignored"});
        let r = env.post(&device(), &body.to_string()).await;
        assert_eq!(r.status(), 201, "{target}");
        let created: Value = r.json().await.unwrap();
        assert_ne!(created["id"], "ignored", "ids are always fresh");
    }
}

#[tokio::test]
async fn token_expires() {
    let env = GraphEnv::new(EmulatorConfig {
        token_ttl: Duration::from_secs(1),
        ..EmulatorConfig::default()
    })
    .await;
    let dev = device();
    assert_eq!(env.post(&dev, SEED_BODY).await.status(), 201);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, code, message) = error_of(env.post(&dev, SEED_BODY).await).await;
    assert_eq!((status, code.as_str()), (401, "InvalidAuthenticationToken"));
    assert!(message.contains("token is expired"), "{message}");
    assert_eq!(env.emu.stats().expired_tokens, 1);
}

#[tokio::test]
async fn token_endpoint_errors_have_aad_shapes() {
    let emu = Emulator::start(EmulatorConfig {
        client_secret: Some("right".into()),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let base = [
        ("grant_type", "client_credentials"),
        ("client_id", "app"),
        ("scope", SCOPE),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut f = base.to_vec();
        f.extend_from_slice(extra);
        f
    };
    let aad = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        for key in ["trace_id", "correlation_id", "timestamp"] {
            assert!(body[key].is_string(), "{key} missing in {body}");
        }
        let code = body["error_codes"][0].as_u64().unwrap();
        let description = body["error_description"].as_str().unwrap();
        assert!(
            description.starts_with(&format!("AADSTS{code}: ")),
            "{description}"
        );
        (status, body["error"].as_str().unwrap().to_string(), code)
    };
    let url = emu.authority_url();
    let ok = token_request(&http, &url, "t", &with(&[("client_secret", "right")])).await;
    assert_eq!(ok.status(), 200);
    let r = token_request(&http, &url, "t", &with(&[("client_secret", "wrong")])).await;
    assert_eq!(aad(r).await, (401, "invalid_client".into(), 7000215));
    let r = token_request(
        &http,
        &url,
        "t",
        &[
            ("grant_type", "password"),
            ("client_id", "app"),
            ("scope", SCOPE),
        ],
    )
    .await;
    assert_eq!(aad(r).await, (400, "unsupported_grant_type".into(), 70003));
    let r = token_request(
        &http,
        &url,
        "t",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "app"),
            ("scope", "https://graph.microsoft.com/User.Read"),
            ("client_secret", "right"),
        ],
    )
    .await;
    assert_eq!(aad(r).await, (400, "invalid_scope".into(), 1002012));
    let r = token_request(
        &http,
        &url,
        "t",
        &[("grant_type", "client_credentials"), ("scope", SCOPE)],
    )
    .await;
    assert_eq!(aad(r).await, (400, "invalid_request".into(), 900144));
    let r = token_request(&http, &url, "t", &with(&[])).await;
    assert_eq!(aad(r).await, (401, "invalid_client".into(), 7000216));
    assert_eq!(emu.stats().token_requests, 6);
    assert_eq!(emu.stats().tokens_issued, 1);
}

#[tokio::test]
async fn client_assertion_claims_are_checked() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let http = reqwest::Client::new();
    let url = emu.authority_url();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let aud = format!("{url}/t/oauth2/v2.0/token");
    let send = |claims: Value| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let assertion = unsigned_jwt(
                json!({"alg": "RS256", "typ": "JWT", "x5t": "dGh1bWI"}),
                claims,
            );
            token_request(
                &http,
                &url,
                "t",
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", "app"),
                    ("scope", SCOPE),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &assertion),
                ],
            )
            .await
        }
    };
    let good =
        json!({"iss": "app", "sub": "app", "aud": aud, "jti": "x", "nbf": now, "exp": now + 300});
    assert_eq!(send(good).await.status(), 200);
    let wrong_aud = json!({"iss": "app", "sub": "app", "aud": "https://login.microsoftonline.com/t/oauth2/v2.0/token", "exp": now + 300});
    assert_eq!(send(wrong_aud).await.status(), 401);
    let wrong_iss = json!({"iss": "other", "sub": "app", "aud": aud, "exp": now + 300});
    assert_eq!(send(wrong_iss).await.status(), 401);
    let expired = json!({"iss": "app", "sub": "app", "aud": aud, "exp": now - 10});
    let r = send(expired).await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
}

/// A client assertion signed with the fixture key, as a real client builds it.
fn signed_jwt(alg: &str, thumbprint_of: Option<(&str, &str)>, claims: Value) -> String {
    use aws_lc_rs::{digest, rand::SystemRandom, signature};
    use base64::Engine as _;
    use rustls_pki_types::pem::PemObject as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut header = json!({"alg": alg, "typ": "JWT"});
    if let Some((field, cert)) = thumbprint_of {
        let der = rustls_pki_types::CertificateDer::from_pem_file(fixture(cert)).unwrap();
        let alg = if field == "x5t" {
            &digest::SHA1_FOR_LEGACY_USE_ONLY
        } else {
            &digest::SHA256
        };
        header[field] = json!(b64.encode(digest::digest(alg, &der)));
    }
    let signed = format!(
        "{}.{}",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string())
    );
    let key = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_file(fixture("emulator-client.key"))
        .unwrap();
    let key = signature::RsaKeyPair::from_pkcs8(key.secret_pkcs8_der()).unwrap();
    let padding: &dyn signature::RsaEncoding = if alg == "PS256" {
        &signature::RSA_PSS_SHA256
    } else {
        &signature::RSA_PKCS1_SHA256
    };
    let mut sig = vec![0; key.public_modulus_len()];
    key.sign(padding, &SystemRandom::new(), signed.as_bytes(), &mut sig)
        .unwrap();
    format!("{signed}.{}", b64.encode(sig))
}

#[tokio::test]
async fn client_assertion_signatures_are_verified_with_a_certificate() {
    let start = |cert: &str| {
        Emulator::start(EmulatorConfig {
            client_certificate: Some(fixture(cert)),
            ..EmulatorConfig::default()
        })
    };
    let emu = start("emulator-client.crt").await.unwrap();
    let other = start("other.crt").await.unwrap();
    let http = reqwest::Client::new();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let send = |emu: &Emulator, assertion: String| {
        let http = http.clone();
        let url = emu.authority_url();
        async move {
            let r = token_request(
                &http,
                &url,
                "t",
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", "app"),
                    ("scope", SCOPE),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &assertion),
                ],
            )
            .await;
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (status, body["error_codes"][0].as_u64())
        }
    };
    let claims = |emu: &Emulator| {
        json!({"iss": "app", "sub": "app", "aud": format!("{}/t/oauth2/v2.0/token", emu.authority_url()),
               "jti": "j", "nbf": now, "exp": now + 300})
    };
    let rs = signed_jwt("RS256", Some(("x5t", "emulator-client.crt")), claims(&emu));
    assert_eq!(send(&emu, rs).await, (200, None));
    let ps = signed_jwt(
        "PS256",
        Some(("x5t#S256", "emulator-client.crt")),
        claims(&emu),
    );
    assert_eq!(send(&emu, ps).await, (200, None));
    // No thumbprint: AAD cannot find the key.
    let bare = signed_jwt("RS256", None, claims(&emu));
    assert_eq!(send(&emu, bare).await, (401, Some(700027)));
    // A signature over other claims.
    let good = signed_jwt("RS256", Some(("x5t", "emulator-client.crt")), claims(&emu));
    let forged_claims = {
        use base64::Engine as _;
        let mut c = claims(&emu);
        c["sub"] = json!("app");
        c["jti"] = json!("other");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c.to_string())
    };
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
    assert_eq!(send(&emu, forged).await, (401, Some(700027)));
    // Signed by a key that is not the configured certificate's (thumbprint names it anyway).
    let wrong_key = signed_jwt("RS256", Some(("x5t", "other.crt")), claims(&other));
    assert_eq!(send(&other, wrong_key).await, (401, Some(700027)));
    // A certificate that cannot be read stops the start.
    let err = start("missing.crt").await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn missing_and_unknown_bearer_are_401() {
    let env = GraphEnv::new(EmulatorConfig::default()).await;
    let url = env.assignments_url(&device());
    let r = env.http.get(&url).send().await.unwrap();
    assert!(header(&r, "request-id").is_some());
    assert!(header(&r, "www-authenticate").is_some());
    let (status, code, message) = error_of(r).await;
    assert_eq!((status, code.as_str()), (401, "InvalidAuthenticationToken"));
    assert_eq!(message, "Access token is empty.");
    let r = env
        .http
        .get(&url)
        .bearer_auth("made-up")
        .send()
        .await
        .unwrap();
    let (status, code, message) = error_of(r).await;
    assert_eq!((status, code.as_str()), (401, "InvalidAuthenticationToken"));
    assert!(message.contains("validation failed"), "{message}");
    assert_eq!(env.emu.stats().requests_by_status["401"], 2);
    assert_eq!(
        env.emu.stats().write_requests + env.emu.stats().assignment_reads,
        0
    );
}

#[tokio::test]
async fn bad_requests_are_400_with_graph_envelope() {
    let env = GraphEnv::new(EmulatorConfig::default()).await;
    let dev = device();
    let cases = [
        (dev.clone(), group_body("nope"), "groupId"),
        (dev.clone(), "{not json".to_string(), "JSON"),
        (
            dev.clone(),
            json!({"source": "direct"}).to_string(),
            "target",
        ),
        ("not-a-guid".to_string(), SEED_BODY.to_string(), "GUID"),
    ];
    for (device, body, needle) in cases {
        let r = env.post(&device, &body).await;
        let request_id = header(&r, "request-id").unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        let (code, message) = assert_envelope(&body);
        assert_eq!((status, code.as_str()), (400, "BadRequest"), "{body}");
        assert!(message.contains(needle), "{message} lacks {needle}");
        assert_eq!(
            body["error"]["innerError"]["request-id"],
            request_id.as_str()
        );
    }
    // A POST without a JSON content type is refused like Graph does.
    let r = env
        .http
        .post(env.assignments_url(&dev))
        .bearer_auth(&env.token)
        .body(SEED_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Unknown Graph paths are 400 too (Graph: "Resource not found for the segment").
    let r = env
        .http
        .get(format!("{}/me", env.emu.graph_url()))
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, 400);
    assert!(env.emu.assignments().is_empty());
}

#[tokio::test]
async fn unknown_device_is_404_with_a_device_list() {
    let known = device();
    let env = GraphEnv::new(EmulatorConfig {
        devices: Some(HashSet::from([known.clone()])),
        intune_envelope: true,
        ..EmulatorConfig::default()
    })
    .await;
    assert_eq!(env.post(&known, SEED_BODY).await.status(), 201);
    let (status, code, message) = error_of(env.post(&device(), SEED_BODY).await).await;
    assert_eq!((status, code.as_str()), (404, "ResourceNotFound"));
    // Intune's envelope: the message is itself JSON.
    let inner: Value = serde_json::from_str(&message).unwrap();
    assert_eq!(inner["_version"], 3);
    assert!(inner["Message"].as_str().unwrap().contains("was not found"));
    assert!(inner["Message"].as_str().unwrap().contains("Activity ID"));
    assert_eq!(error_of(env.get(&device()).await).await.0, 404);
}

async fn sixth_is_throttled(mode: RetryAfterMode) -> (Option<String>, Value) {
    let env = GraphEnv::new(EmulatorConfig {
        limit: limit(5, 60),
        retry_after: mode,
        ..EmulatorConfig::default()
    })
    .await;
    for _ in 0..5 {
        assert_eq!(env.post(&device(), SEED_BODY).await.status(), 201);
    }
    let r = env.post(&device(), SEED_BODY).await;
    assert_eq!(r.status(), 429);
    let retry_after = header(&r, "retry-after");
    let body: Value = r.json().await.unwrap();
    assert_eq!(assert_envelope(&body).0, "TooManyRequests");
    assert_eq!(env.emu.stats().throttled, 1);
    assert_eq!(env.emu.stats().assignments_created, 5);
    // Reads have their own, larger window.
    assert_eq!(env.get(&device()).await.status(), 200);
    (retry_after, body)
}

#[tokio::test]
async fn throttled_with_retry_after_in_seconds() {
    let (ra, _) = sixth_is_throttled(RetryAfterMode::Seconds).await;
    let secs: u64 = ra.unwrap().parse().unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
}

#[tokio::test]
async fn throttled_with_fractional_retry_after() {
    let (ra, _) = sixth_is_throttled(RetryAfterMode::Fractional).await;
    let ra = ra.unwrap();
    let (whole, frac) = ra.split_once('.').unwrap();
    assert_eq!(frac.len(), 3, "{ra}");
    assert!(whole.parse::<u64>().unwrap() <= 60);
}

#[tokio::test]
async fn throttled_with_date_retry_after() {
    let (ra, _) = sixth_is_throttled(RetryAfterMode::Date).await;
    let at = httpdate::parse_http_date(&ra.unwrap()).unwrap();
    assert!(at > SystemTime::now());
    assert!(at <= SystemTime::now() + Duration::from_secs(61));
}

#[tokio::test]
async fn throttled_without_retry_after() {
    let (ra, _) = sixth_is_throttled(RetryAfterMode::None).await;
    assert_eq!(ra, None);
}

/// The form of each 429's Retry-After under `mixed`.
async fn mixed_forms(seed: u64) -> Vec<&'static str> {
    let env = GraphEnv::new(EmulatorConfig {
        limit: limit(1, 60),
        retry_after: RetryAfterMode::Mixed,
        seed,
        violation_grace: Duration::from_secs(3600),
        ..EmulatorConfig::default()
    })
    .await;
    let mut forms = Vec::new();
    for i in 0..13 {
        let r = env.post(&device(), SEED_BODY).await;
        if i == 0 {
            assert_eq!(r.status(), 201);
            continue;
        }
        assert_eq!(r.status(), 429);
        forms.push(match header(&r, "retry-after") {
            None => "none",
            Some(v) if v.contains(',') => "date",
            Some(v) if v.contains('.') => "fractional",
            Some(_) => "seconds",
        });
    }
    forms
}

#[tokio::test]
async fn mixed_retry_after_is_seeded() {
    let a = mixed_forms(11).await;
    assert_eq!(a, mixed_forms(11).await);
    let distinct: HashSet<_> = a.iter().collect();
    assert!(distinct.len() >= 3, "{a:?}");
}

#[tokio::test]
async fn early_retries_are_violations_but_in_flight_ones_are_not() {
    for (grace, expected) in [(Duration::ZERO, 2), (Duration::from_secs(3600), 0)] {
        let env = GraphEnv::new(EmulatorConfig {
            limit: limit(1, 60),
            violation_grace: grace,
            ..EmulatorConfig::default()
        })
        .await;
        assert_eq!(env.post(&device(), SEED_BODY).await.status(), 201);
        // First 429: nothing promised yet, so not a violation.
        assert_eq!(env.post(&device(), SEED_BODY).await.status(), 429);
        // Two more before the Retry-After: violations unless within the grace.
        for _ in 0..2 {
            assert_eq!(env.post(&device(), SEED_BODY).await.status(), 429);
        }
        let stats = env.emu.stats();
        assert_eq!(stats.violations, expected, "grace {grace:?}");
        assert_eq!(stats.throttled, 3);
        assert_eq!(stats.requests_by_status["429"], 3);
    }
}

#[tokio::test]
async fn honouring_retry_after_gets_through() {
    let env = GraphEnv::new(EmulatorConfig {
        limit: limit(1, 1),
        ..EmulatorConfig::default()
    })
    .await;
    assert_eq!(env.post(&device(), SEED_BODY).await.status(), 201);
    let r = env.post(&device(), SEED_BODY).await;
    assert_eq!(r.status(), 429);
    let secs: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    assert_eq!(env.post(&device(), SEED_BODY).await.status(), 201);
    assert_eq!(env.emu.stats().violations, 0);
}

#[tokio::test]
async fn tenants_are_throttled_separately() {
    let env = GraphEnv::new(EmulatorConfig {
        limit: limit(1, 60),
        ..EmulatorConfig::default()
    })
    .await;
    assert_eq!(env.post(&device(), SEED_BODY).await.status(), 201);
    assert_eq!(env.post(&device(), SEED_BODY).await.status(), 429);
    let other = token_at(
        &env.http,
        &env.emu.authority_url(),
        "fabrikam",
        "app",
        "s3cret",
    )
    .await;
    let r = env
        .http
        .post(env.assignments_url(&device()))
        .bearer_auth(other)
        .header("content-type", "application/json")
        .body(SEED_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

fn inner_post(id: &str, device: &str, body: &str) -> Value {
    json!({
        "id": id,
        "method": "POST",
        "url": format!("/deviceManagement/windowsAutopilotDeviceIdentities/{device}/deploymentProfile/assignments"),
        "headers": {"Content-Type": "application/json"},
        "body": serde_json::from_str::<Value>(body).unwrap(),
    })
}

#[tokio::test]
async fn batch_answers_each_inner_request_on_its_own() {
    let known = [device(), device(), device()];
    let env = GraphEnv::new(EmulatorConfig {
        limit: limit(4, 60),
        devices: Some(known.iter().cloned().collect()),
        ..EmulatorConfig::default()
    })
    .await;
    let r = env
        .batch(json!({"requests": [
            inner_post("1", &known[0], SEED_BODY),
            inner_post("2", &known[1], &group_body("nope")),
            inner_post("3", &device(), SEED_BODY),
            inner_post("4", &known[1], SEED_BODY),
            inner_post("5", &known[2], SEED_BODY),
            {"id": "6", "method": "GET", "url": format!("/deviceManagement/windowsAutopilotDeviceIdentities/{}/deploymentProfile/assignments", known[0])},
        ]}))
        .await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "request-id").is_some());
    let body: Value = r.json().await.unwrap();
    let responses = body["responses"].as_array().unwrap();
    let by_id = |id: &str| {
        responses
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no response {id}"))
    };
    assert_eq!(by_id("1")["status"], 201);
    assert!(by_id("1")["body"]["id"].is_string());
    assert_eq!(by_id("2")["status"], 400);
    assert_eq!(assert_envelope(&by_id("2")["body"]).0, "BadRequest");
    assert_eq!(by_id("3")["status"], 404);
    assert_eq!(assert_envelope(&by_id("3")["body"]).0, "ResourceNotFound");
    assert_eq!(by_id("4")["status"], 201);
    // The fifth write in a 4/60s window (the 400 and 404 counted too).
    assert_eq!(by_id("5")["status"], 429);
    let ra = by_id("5")["headers"]["Retry-After"].as_str().unwrap();
    assert!(ra.parse::<u64>().is_ok(), "{ra}");
    assert_eq!(by_id("6")["status"], 200);
    assert_eq!(by_id("6")["body"]["value"].as_array().unwrap().len(), 1);

    let stats = env.emu.stats();
    assert_eq!(stats.batch_requests, 1);
    assert_eq!(stats.write_requests, 5);
    assert_eq!(stats.assignments_created, 2);
    assert_eq!(stats.inner_requests_by_status["429"], 1);
    assert_eq!(stats.inner_requests_by_status["201"], 2);
    assert_eq!(stats.requests_by_status.get("429"), None);
    assert_eq!(stats.throttled, 1);
}

#[tokio::test]
async fn malformed_batches_are_400() {
    let env = GraphEnv::new(EmulatorConfig::default()).await;
    let twenty_one: Vec<Value> = (0..21)
        .map(|i| inner_post(&i.to_string(), &device(), SEED_BODY))
        .collect();
    let bad = [
        json!({"requests": twenty_one}),
        json!({"nothing": []}),
        json!({"requests": [inner_post("1", &device(), SEED_BODY), inner_post("1", &device(), SEED_BODY)]}),
        json!({"requests": [{"id": "1", "method": "POST", "url": "/x", "body": {}}]}),
    ];
    for body in bad {
        let (status, code, _) = error_of(env.batch(body.clone()).await).await;
        assert_eq!((status, code.as_str()), (400, "BadRequest"), "{body}");
    }
    let r = env
        .http
        .post(format!("{}/$batch", env.emu.graph_url()))
        .bearer_auth(&env.token)
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(env.emu.assignments().is_empty());
    // Exactly 20 is fine.
    let twenty: Vec<Value> = (0..20)
        .map(|i| inner_post(&i.to_string(), &device(), SEED_BODY))
        .collect();
    assert_eq!(env.batch(json!({ "requests": twenty })).await.status(), 200);
}

#[tokio::test]
async fn fault_503_with_and_without_retry_after() {
    for retry_after in [Some(7), None] {
        let env = GraphEnv::new(EmulatorConfig {
            fault_503: 1.0,
            fault_503_retry_after: retry_after,
            ..EmulatorConfig::default()
        })
        .await;
        let r = env.post(&device(), SEED_BODY).await;
        assert_eq!(r.status(), 503);
        assert_eq!(
            header(&r, "retry-after"),
            retry_after.map(|s| s.to_string())
        );
        assert_eq!(error_of(r).await.1, "ServiceUnavailable");
        assert!(env.emu.assignments().is_empty());
        assert_eq!(env.emu.stats().faults_503, 1);
    }
}

#[tokio::test]
async fn fault_504_does_not_store() {
    let env = GraphEnv::new(EmulatorConfig {
        fault_504: 1.0,
        ..EmulatorConfig::default()
    })
    .await;
    let (status, code, _) = error_of(env.post(&device(), SEED_BODY).await).await;
    assert_eq!((status, code.as_str()), (504, "GatewayTimeout"));
    assert!(env.emu.assignments().is_empty());
    assert_eq!(env.emu.stats().faults_504, 1);
}

#[tokio::test]
async fn fault_drop_stores_then_closes_the_connection() {
    let env = GraphEnv::new(EmulatorConfig {
        fault_drop: 1.0,
        ..EmulatorConfig::default()
    })
    .await;
    let dev = device();
    let sent = env
        .http
        .post(env.assignments_url(&dev))
        .bearer_auth(&env.token)
        .header("content-type", "application/json")
        .body(SEED_BODY)
        .send()
        .await;
    assert!(sent.is_err(), "expected a connection error, got {sent:?}");
    assert_eq!(env.emu.assignments()[&dev].len(), 1);
    // Inside a batch: the inner assignment is stored, the whole connection dropped.
    let dev2 = device();
    let sent = env
        .http
        .post(format!("{}/$batch", env.emu.graph_url()))
        .bearer_auth(&env.token)
        .json(&json!({"requests": [inner_post("a", &dev2, SEED_BODY)]}))
        .send()
        .await;
    assert!(sent.is_err(), "expected a connection error, got {sent:?}");
    assert_eq!(env.emu.assignments()[&dev2].len(), 1);
    let stats = env.emu.stats();
    assert_eq!(stats.dropped_connections, 2);
    assert_eq!(stats.assignments_created, 2);
    // Nothing was answered, so nothing is counted as an answer.
    assert_eq!(stats.requests_by_status.get("201"), None);
}

async fn statuses_under(seed: u64) -> Vec<u16> {
    let env = GraphEnv::new(EmulatorConfig {
        fault_503: 0.3,
        fault_504: 0.2,
        latency: Some(Duration::from_millis(1)),
        seed,
        ..EmulatorConfig::default()
    })
    .await;
    let mut out = Vec::new();
    for _ in 0..30 {
        out.push(env.post(&device(), SEED_BODY).await.status().as_u16());
    }
    out
}

#[tokio::test]
async fn faults_repeat_under_a_seed() {
    let a = statuses_under(42).await;
    assert_eq!(a, statuses_under(42).await);
    for status in [201, 503, 504] {
        assert!(a.contains(&status), "{status} missing from {a:?}");
    }
    assert_ne!(a, statuses_under(43).await);
}

#[tokio::test]
async fn shutdown_closes_keep_alive_connections() {
    let env = GraphEnv::new(EmulatorConfig::default()).await;
    // The client keeps its connection open in its pool.
    assert_eq!(env.get(&device()).await.status(), 200);
    tokio::time::timeout(Duration::from_secs(5), env.emu.shutdown())
        .await
        .expect("shutdown hung on a keep-alive connection");
    let after = env
        .http
        .get(assignments_url("http://127.0.0.1:1/beta", "x"))
        .send()
        .await;
    assert!(after.is_err());
}

/// Kills the child process however the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `autopilot-bulk emulate --port 0 ARGS`, and the URL of its first stdout line.
fn spawn_emulate(args: &[&str]) -> (Killed, String) {
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_autopilot-bulk"))
            .args(["emulate", "--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line.trim().to_string();
    let port: u16 = url
        .strip_prefix("http://127.0.0.1:")
        .unwrap_or_else(|| panic!("first line {url:?}"))
        .parse()
        .unwrap();
    assert_ne!(port, 0);
    (child, url)
}

/// The binary end to end: its first line, a 5/2s limit, seed bodies, GET, 400, 401, stats.
#[tokio::test]
async fn emulate_binary_done_when_scenario() {
    let (_child, url) = spawn_emulate(&["--limit", "5/2s"]);

    let http = reqwest::Client::new();
    let graph = format!("{url}/beta");
    let token = token_at(&http, &url, "contoso", "app", "s3cret").await;
    let dev = device();
    let post = |token: String, body: String| {
        let http = http.clone();
        let url = assignments_url(&graph, &dev);
        async move {
            http.post(url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..5 {
        assert_eq!(post(token.clone(), SEED_BODY.into()).await.status(), 201);
    }
    let sixth = post(token.clone(), SEED_BODY.into()).await;
    assert_eq!(sixth.status(), 429);
    assert!(header(&sixth, "retry-after").is_some());
    let list: Value = http
        .get(assignments_url(&graph, &dev))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["value"].as_array().unwrap().len(), 5);
    // Another tenant has its own window, so its bad body is judged, not throttled.
    let other = token_at(&http, &url, "fabrikam", "app", "s3cret").await;
    assert_eq!(post(other, group_body("nope")).await.status(), 400);
    assert_eq!(post("unknown".into(), SEED_BODY.into()).await.status(), 401);
    let stats: Value = http
        .get(format!("{url}/_emulator/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["assignments_created"], 5);
    assert_eq!(stats["requests_by_status"]["429"], 1);
    assert_eq!(stats["duplicate_devices"], 1);
}

/// `emulate --tenants 2`: tenant-1 and tenant-2 (any case) with their own windows, others
/// refused at the token endpoint, each tenant's counters in the stats.
#[tokio::test]
async fn emulate_binary_with_tenants() {
    let (_child, url) = spawn_emulate(&["--tenants", "2", "--limit", "1/60s"]);
    let http = reqwest::Client::new();
    let unknown = token_request(
        &http,
        &url,
        "tenant-3",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "app"),
            ("scope", SCOPE),
            ("client_secret", "s3cret"),
        ],
    )
    .await;
    assert_eq!(unknown.status(), 400);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error_codes"], json!([90002]));
    let one = token_at(&http, &url, "TENANT-1", "app", "s3cret").await;
    let two = token_at(&http, &url, "tenant-2", "app", "s3cret").await;
    let post = |token: &str| {
        http.post(assignments_url(&format!("{url}/beta"), &device()))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(SEED_BODY)
            .send()
    };
    assert_eq!(post(&one).await.unwrap().status(), 201);
    assert_eq!(post(&one).await.unwrap().status(), 429);
    assert_eq!(post(&two).await.unwrap().status(), 201);
    let stats: Value = http
        .get(format!("{url}/_emulator/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["assignments_created"], 2);
    assert_eq!(stats["tenants"]["tenant-1"]["requests_by_status"]["429"], 1);
    assert_eq!(stats["tenants"]["tenant-2"]["assignments_created"], 1);
}

#[test]
fn emulate_tenant_flags_are_checked() {
    let help = common::bin().args(["emulate", "--help"]).assert().success();
    let help = common::text(&help.get_output().stdout);
    for flag in [
        "--tenant <ID>",
        "--tenants <N>",
        "--tenant-secret <TENANT=VALUE>",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    for args in [
        &["--tenant", "a", "--tenants", "2"][..],
        &["--tenants", "0"],
        &["--tenant", "a/b"],
        &["--tenant-secret", "no-equals-sign"],
    ] {
        common::bin()
            .arg("emulate")
            .args(args)
            .assert()
            .failure()
            .code(2);
    }
}

// ---- The identity listing and reads ----

const IDENTITIES: &str = "/deviceManagement/windowsAutopilotDeviceIdentities";

/// What Graph shows for a date it has not set.
const NO_DATE: &str = "0001-01-01T00:00:00Z";

/// `n` identities with serials `SER000`, `SER001`, ...
fn numbered(n: usize) -> Vec<(String, String)> {
    (0..n).map(|i| (device(), format!("SER{i:03}"))).collect()
}

fn with_identities(identities: Vec<(String, String)>, page_size: usize) -> EmulatorConfig {
    EmulatorConfig {
        identities,
        page_size,
        ..EmulatorConfig::default()
    }
}

/// The client's encoding of `?$filter=contains(serialNumber,'…')`: quotes doubled, then
/// percent-encoded.
fn serial_filter(serial: &str) -> String {
    let filter = format!("contains(serialNumber,'{}')", serial.replace('\'', "''"));
    let encoded: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
    format!("{IDENTITIES}?$filter={encoded}")
}

impl GraphEnv {
    /// GET an absolute URL with the token: status and JSON body.
    async fn read_url(&self, url: &str) -> (u16, Value) {
        let r = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// GET a path (with query) below the Graph base.
    async fn read(&self, path: &str) -> (u16, Value) {
        self.read_url(&format!("{}{path}", self.emu.graph_url()))
            .await
    }

    /// Follow the listing from `first` to its end: every page's value, and its next link.
    async fn pages(&self, first: &str) -> Vec<(Vec<Value>, Option<String>)> {
        let mut out = Vec::new();
        let (status, mut body) = self.read(first).await;
        loop {
            assert_eq!(status, 200, "{body}");
            let next = body["@odata.nextLink"].as_str().map(str::to_string);
            out.push((body["value"].as_array().unwrap().clone(), next.clone()));
            let Some(next) = next else { return out };
            assert!(out.len() < 100, "the listing does not end");
            body = self.read_url(&next).await.1;
        }
    }
}

fn ids(values: &[Value]) -> Vec<String> {
    values
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn identity_listing_pages_in_order_without_repeats() {
    let given = numbered(25);
    let env = GraphEnv::new(with_identities(given.clone(), 10)).await;
    let pages = env.pages(IDENTITIES).await;
    let sizes: Vec<usize> = pages.iter().map(|(v, _)| v.len()).collect();
    assert_eq!(sizes, [10, 10, 5]);
    for (_, next) in &pages[..2] {
        let next = next.as_deref().unwrap();
        assert!(
            next.starts_with(&format!("{}{IDENTITIES}?", env.emu.graph_url())),
            "{next}"
        );
        assert!(next.contains("$skiptoken="), "{next}");
    }
    assert_eq!(pages[2].1, None);
    let listed: Vec<String> = pages.iter().flat_map(|(v, _)| ids(v)).collect();
    let expected: Vec<String> = given.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(listed, expected, "stable order, each identity once");
    let first = &pages[0].0[0];
    assert_eq!(first["serialNumber"], "SER000");
    assert_eq!(
        first["@odata.type"],
        "#microsoft.graph.windowsAutopilotDeviceIdentity"
    );
    assert_eq!(first["deploymentProfileAssignmentStatus"], "notAssigned");
    assert_eq!(first["deploymentProfileAssignmentDetailedStatus"], "none");
    assert_eq!(first["deploymentProfileAssignedDateTime"], NO_DATE);

    // $top is the page size below the cap, and the next links keep it.
    let pages = env.pages(&format!("{IDENTITIES}?$top=4")).await;
    let sizes: Vec<usize> = pages.iter().map(|(v, _)| v.len()).collect();
    assert_eq!(sizes, [4, 4, 4, 4, 4, 4, 1]);
    let listed: Vec<String> = pages.iter().flat_map(|(v, _)| ids(v)).collect();
    assert_eq!(listed, expected);
    assert_eq!(env.emu.stats().identity_reads, 3 + 7);
    assert_eq!(env.emu.stats().assignment_reads, 0);
}

#[tokio::test]
async fn top_outside_1_to_1000_is_400_and_1000_is_capped() {
    let env = GraphEnv::new(with_identities(numbered(12), 5)).await;
    for bad in ["0", "1001", "x", "-1", ""] {
        let r = env
            .http
            .get(format!("{}{IDENTITIES}?$top={bad}", env.emu.graph_url()))
            .bearer_auth(&env.token)
            .send()
            .await
            .unwrap();
        let (status, code, _) = error_of(r).await;
        assert_eq!((status, code.as_str()), (400, "BadRequest"), "$top={bad}");
    }
    let pages = env.pages(&format!("{IDENTITIES}?$top=1000")).await;
    let sizes: Vec<usize> = pages.iter().map(|(v, _)| v.len()).collect();
    assert_eq!(sizes, [5, 5, 2], "pages never exceed the cap");
}

#[tokio::test]
async fn serial_filter_is_a_case_insensitive_substring_and_refuses_hyphens() {
    let (twin_a, twin_b, quoted, lower) = (device(), device(), device(), device());
    let env = GraphEnv::new(with_identities(
        vec![
            (twin_a.clone(), "5CD333527Z".into()),
            (quoted.clone(), "O'Brien 7".into()),
            (twin_b.clone(), "5CD333527Z".into()),
            (lower.clone(), "5cd3335".into()),
            (device(), "PF-3X9".into()),
        ],
        100,
    ))
    .await;
    let found = |serial: &'static str| {
        let env = &env;
        async move {
            let (status, body) = env.read(&serial_filter(serial)).await;
            assert_eq!(status, 200, "{serial}: {body}");
            assert!(body.get("@odata.nextLink").is_none());
            ids(body["value"].as_array().unwrap())
        }
    };
    // One serial, two identities: the ambiguity a client must report.
    assert_eq!(found("5CD333527Z").await, [twin_a.clone(), twin_b.clone()]);
    assert_eq!(found("5cd333527z").await, [twin_a.clone(), twin_b.clone()]);
    assert_eq!(found("5CD3335").await, [twin_a, twin_b, lower]);
    assert_eq!(found("O'Brien 7").await, [quoted]);
    assert!(found("NOPE").await.is_empty());

    for refused in [
        serial_filter("PF-3X9"),
        format!("{IDENTITIES}?$filter=serialNumber%20eq%20%275CD333527Z%27"),
        format!("{IDENTITIES}?$filter=startswith(serialNumber,%275CD%27)"),
    ] {
        let r = env
            .http
            .get(format!("{}{refused}", env.emu.graph_url()))
            .bearer_auth(&env.token)
            .send()
            .await
            .unwrap();
        let (status, code, message) = error_of(r).await;
        assert_eq!((status, code.as_str()), (400, "BadRequest"), "{refused}");
        assert!(message.starts_with("An error has occurred"), "{message}");
    }
}

#[tokio::test]
async fn select_trims_properties_unless_the_switch_makes_it_500() {
    let (id, _) = numbered(1).remove(0);
    let env = GraphEnv::new(with_identities(vec![(id.clone(), "S1".into())], 100)).await;
    let (status, body) = env
        .read(&format!(
            "{IDENTITIES}?$select=serialNumber,deploymentProfileAssignmentStatus"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["value"][0],
        json!({"id": id, "serialNumber": "S1", "deploymentProfileAssignmentStatus": "notAssigned"})
    );
    let (status, _) = env.read(&format!("{IDENTITIES}?$select=nope")).await;
    assert_eq!(status, 400);

    let env = GraphEnv::new(EmulatorConfig {
        select_fails: true,
        ..with_identities(vec![(id.clone(), "S1".into())], 100)
    })
    .await;
    for path in [
        format!("{IDENTITIES}?$select=serialNumber"),
        format!("{IDENTITIES}/{id}?$select=serialNumber"),
    ] {
        let r = env
            .http
            .get(format!("{}{path}", env.emu.graph_url()))
            .bearer_auth(&env.token)
            .send()
            .await
            .unwrap();
        let (status, code, _) = error_of(r).await;
        assert_eq!(
            (status, code.as_str()),
            (500, "InternalServerError"),
            "{path}"
        );
    }
    let (status, body) = env.read(IDENTITIES).await;
    assert_eq!(status, 200);
    assert_eq!(body["value"][0]["serialNumber"], "S1");
}

#[tokio::test]
async fn repeat_next_link_makes_page_two_point_back() {
    let env = GraphEnv::new(EmulatorConfig {
        repeat_next_link: true,
        ..with_identities(numbered(25), 10)
    })
    .await;
    let (_, page1) = env.read(IDENTITIES).await;
    let link1 = page1["@odata.nextLink"].as_str().unwrap().to_string();
    let (status, page2) = env.read_url(&link1).await;
    assert_eq!(status, 200);
    assert_eq!(page2["value"].as_array().unwrap().len(), 10);
    assert_eq!(page2["@odata.nextLink"].as_str(), Some(link1.as_str()));
}

/// `deploymentProfileAssignmentStatus` and `deploymentProfileAssignedDateTime` of one identity.
async fn status_of(env: &GraphEnv, id: &str) -> (String, String) {
    let (status, body) = env.read(&format!("{IDENTITIES}/{id}")).await;
    assert_eq!(status, 200, "{body}");
    let text = |name: &str| body[name].as_str().unwrap().to_string();
    (
        text("deploymentProfileAssignmentStatus"),
        text("deploymentProfileAssignedDateTime"),
    )
}

#[tokio::test]
async fn profile_status_moves_from_not_assigned_to_pending_to_assigned() {
    let given = numbered(2);
    let (now_id, later_id) = (given[0].0.clone(), given[1].0.clone());
    // No delay: assigned as soon as the first assignment is stored.
    let env = GraphEnv::new(EmulatorConfig {
        assign_delay: Duration::ZERO,
        ..with_identities(given.clone(), 100)
    })
    .await;
    let (status, at) = status_of(&env, &now_id).await;
    assert_eq!((status.as_str(), at.as_str()), ("notAssigned", NO_DATE));
    assert_eq!(env.post(&now_id, SEED_BODY).await.status(), 201);
    let (status, at) = status_of(&env, &now_id).await;
    assert_eq!(status, "assignedInSync");
    assert_ne!(at, NO_DATE);
    assert!(humantime::parse_rfc3339(&at).is_ok(), "{at}");
    let (_, list) = env.read(IDENTITIES).await;
    assert_eq!(
        list["value"][0]["deploymentProfileAssignmentStatus"],
        "assignedInSync"
    );
    assert_eq!(
        list["value"][1]["deploymentProfileAssignmentStatus"],
        "notAssigned"
    );

    // A delay far longer than the test: pending, with no date yet.
    let env = GraphEnv::new(EmulatorConfig {
        assign_delay: Duration::from_secs(3600),
        ..with_identities(given, 100)
    })
    .await;
    assert_eq!(env.post(&later_id, SEED_BODY).await.status(), 201);
    let (status, at) = status_of(&env, &later_id).await;
    assert_eq!((status.as_str(), at.as_str()), ("pending", NO_DATE));
}

#[tokio::test]
async fn one_identity_by_id_and_404_for_unknown() {
    let given = numbered(3);
    let env = GraphEnv::new(with_identities(given.clone(), 100)).await;
    let (id, serial) = &given[1];
    let (status, body) = env
        .read(&format!("{IDENTITIES}/{}", id.to_uppercase()))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], json!(id));
    assert_eq!(body["serialNumber"], json!(serial));
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("windowsAutopilotDeviceIdentities/$entity")
    );
    let r = env
        .http
        .get(format!("{}{IDENTITIES}/{}", env.emu.graph_url(), device()))
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_of(r).await;
    assert_eq!((status, code.as_str()), (404, "ResourceNotFound"));
    let (status, _) = env.read(&format!("{IDENTITIES}/not-a-guid")).await;
    assert_eq!(status, 400);
    let r = env
        .http
        .post(format!("{}{IDENTITIES}", env.emu.graph_url()))
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(env.emu.stats().identity_reads, 3);
}

#[tokio::test]
async fn devices_are_listed_with_invented_serials_and_no_list_means_empty() {
    let known = "ab12cd34-0000-4000-8000-000000000000".to_string();
    let env = GraphEnv::new(EmulatorConfig {
        devices: Some(HashSet::from([known.clone()])),
        ..EmulatorConfig::default()
    })
    .await;
    let (_, body) = env.read(IDENTITIES).await;
    assert_eq!(body["value"][0]["id"], json!(known));
    assert_eq!(body["value"][0]["serialNumber"], "SNAB12CD34");

    // Without a device list nothing is listed, yet any device may be assigned.
    let env = GraphEnv::new(EmulatorConfig::default()).await;
    let (status, body) = env.read(IDENTITIES).await;
    assert_eq!(status, 200);
    assert_eq!(body["value"], json!([]));
    assert_eq!(env.post(&device(), SEED_BODY).await.status(), 201);
}

#[tokio::test]
async fn identity_reads_share_the_read_window() {
    // A write limit of 1 gives reads a window of 10.
    let env = GraphEnv::new(EmulatorConfig {
        limit: limit(1, 3600),
        ..with_identities(numbered(3), 100)
    })
    .await;
    for _ in 0..10 {
        assert_eq!(env.read(IDENTITIES).await.0, 200);
    }
    let r = env
        .http
        .get(format!("{}{IDENTITIES}", env.emu.graph_url()))
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    assert!(header(&r, "retry-after").is_some());
    let (status, code, _) = error_of(r).await;
    assert_eq!((status, code.as_str()), (429, "TooManyRequests"));
    let stats = env.emu.stats();
    assert_eq!(stats.identity_reads, 11);
    assert_eq!(stats.throttled, 1);
    assert_eq!(http_stats(&env).await.identity_reads, 11);
}

#[tokio::test]
async fn identity_listing_inside_a_batch_links_absolutely() {
    let env = GraphEnv::new(with_identities(numbered(3), 100)).await;
    let r = env
        .batch(json!({"requests": [
            {"id": "1", "method": "GET", "url": format!("{IDENTITIES}?$top=2")},
        ]}))
        .await;
    let body: Value = r.json().await.unwrap();
    let inner = &body["responses"][0];
    assert_eq!(inner["status"], 200, "{body}");
    assert_eq!(inner["body"]["value"].as_array().unwrap().len(), 2);
    let next = inner["body"]["@odata.nextLink"].as_str().unwrap();
    let (status, page2) = env.read_url(next).await;
    assert_eq!(status, 200);
    assert_eq!(page2["value"].as_array().unwrap().len(), 1);
}

#[test]
fn device_file_gives_serials_beside_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devices.txt");
    let (a, b, c) = (
        "AB12CD34-0000-4000-8000-000000000000",
        "bb000000-0000-4000-8000-000000000000",
        "cc000000-0000-4000-8000-000000000000",
    );
    std::fs::write(
        &path,
        format!("# tenant\n{a},5CD333527Z\n\n{b} O'Brien 7\n{c}\n"),
    )
    .unwrap();
    let list = autopilot_bulk::emulator::read_device_identities(&path).unwrap();
    assert_eq!(
        list,
        [
            (a.to_lowercase(), "5CD333527Z".to_string()),
            (b.to_string(), "O'Brien 7".to_string()),
            (c.to_string(), "SNCC000000".to_string()),
        ]
    );
    let ids = autopilot_bulk::emulator::read_device_list(&path).unwrap();
    assert_eq!(ids.len(), 3);
    assert!(ids.contains(&a.to_lowercase()));
}

/// The binary's identity flags: a device file with serials, the page size, the delay and the
/// paging-loop switch.
#[tokio::test]
async fn emulate_binary_lists_the_device_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devices.txt");
    let given = numbered(5);
    let lines: Vec<String> = given.iter().map(|(id, s)| format!("{id},{s}")).collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    let (_child, url) = spawn_emulate(&[
        "--devices",
        path.to_str().unwrap(),
        "--page-size",
        "2",
        "--assign-delay",
        "0s",
        "--repeat-next-link",
    ]);
    let http = reqwest::Client::new();
    let token = token_at(&http, &url, "contoso", "app", "s3cret").await;
    let read = |link: String| {
        let (http, token) = (http.clone(), token.clone());
        async move {
            let r = http.get(link).bearer_auth(token).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(
        http.post(assignments_url(&format!("{url}/beta"), &given[0].0))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(SEED_BODY)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let page1 = read(format!("{url}/beta{IDENTITIES}")).await;
    let ids1 = ids(page1["value"].as_array().unwrap());
    assert_eq!(ids1, [given[0].0.clone(), given[1].0.clone()]);
    assert_eq!(page1["value"][0]["serialNumber"], json!(given[0].1));
    assert_eq!(
        page1["value"][0]["deploymentProfileAssignmentStatus"],
        "assignedInSync"
    );
    let link1 = page1["@odata.nextLink"].as_str().unwrap().to_string();
    let page2 = read(link1.clone()).await;
    assert_eq!(page2["@odata.nextLink"].as_str(), Some(link1.as_str()));
}

/// The emulator keeps time on tokio's clock: with the clock paused, a window that refused a
/// write frees once the clock is advanced past its Retry-After, with no real waiting (an hour
/// of wall clock otherwise).
#[tokio::test(start_paused = true)]
async fn a_throttled_window_frees_when_paused_time_is_advanced() {
    let emu = Emulator::start(EmulatorConfig {
        limit: limit(1, 3600),
        token_ttl: Duration::from_secs(30 * 24 * 3600),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    // A connection per request: none idles in a pool while the clock jumps.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let token = token_at(&http, &emu.authority_url(), "contoso", "app", "s3cret").await;
    let post = || {
        http.post(assignments_url(&emu.graph_url(), &device()))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(SEED_BODY)
            .send()
    };
    assert_eq!(post().await.unwrap().status(), 201);
    let refused = post().await.unwrap();
    assert_eq!(refused.status(), 429);
    let wait: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert!(wait > 60, "the window is an hour long: {wait}");
    // Still refused a minute in: only the advance below can free it.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(post().await.unwrap().status(), 429);
    tokio::time::advance(Duration::from_secs(wait)).await;
    assert_eq!(post().await.unwrap().status(), 201);
    let stats = emu.stats();
    assert_eq!((stats.assignments_created, stats.throttled), (2, 2));
}
