//! Authentication end to end, against the in-process emulator (port 0): token refresh under
//! short lifetimes, certificate assertions with a throwaway key, static tokens, rejections,
//! the 401/403 circuit breaker, national-cloud scopes, plain-http refusal and secret hygiene.

use crate::common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autopilot_bulk::config::{Cloud, Credentials};
use autopilot_bulk::emulator::{Emulator, EmulatorConfig};
use autopilot_bulk::output::Status;
use common::*;

const TENANT: &str = "contoso";
const APP: &str = "11111111-2222-4333-8444-555555555555";

/// A throwaway RSA key and a self-signed certificate for it, as one PEM file in `dir`.
fn certificate_pem(dir: &Path, name: &str) -> PathBuf {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["autopilot-bulk test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
    path
}

/// An unsigned JWT-shaped token with the given `exp` (seconds since the epoch).
fn jwt_expiring_at(exp: u64) -> String {
    unsigned_jwt(
        serde_json::json!({"alg": "RS256", "typ": "JWT"}),
        serde_json::json!({"aud": "https://graph.microsoft.com", "exp": exp}),
    )
}

fn graph_requests(emulator: &Emulator) -> u64 {
    let stats = emulator.stats();
    stats.write_requests + stats.assignment_reads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_second_tokens_are_renewed_about_once_per_lifetime_and_no_row_fails() {
    let ttl = Duration::from_secs(2);
    let emulator = Emulator::start(EmulatorConfig {
        token_ttl: ttl,
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap();
    let (_dir, path) = input(&group_rows(360));
    let config = config_for(&emulator, &path, rate(60, 1000));
    let output = config.output.clone();
    let summary = run(config).await;

    assert_eq!(summary.exit_code(), 0, "{:?}", summary.aborted());
    assert_eq!(summary.created, 360);
    assert_each_row_once(&read_results(&output), 360);
    // Renewed at three quarters of each lifetime by one worker: about one request per TTL,
    // never one per worker or per row.
    let bound = summary.elapsed.as_secs_f64() / ttl.as_secs_f64() * 1.5 + 2.0;
    assert!(
        summary.token_requests >= 2 && summary.token_requests as f64 <= bound,
        "{} token requests in {:?} (bound {bound:.1})",
        summary.token_requests,
        summary.elapsed
    );
    assert_eq!(emulator.stats().tokens_issued, summary.token_requests);
    eprintln!(
        "2 s tokens: {} token requests over {:.1} s, {} requests with an expired token",
        summary.token_requests,
        summary.elapsed.as_secs_f64(),
        emulator.stats().expired_tokens
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_assertions_are_accepted_and_a_foreign_key_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let registered = certificate_pem(dir.path(), "app.pem");
    let foreign = certificate_pem(dir.path(), "foreign.pem");
    let emulator = Emulator::start(EmulatorConfig {
        client_certificate: Some(registered.clone()),
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap();
    let (_input_dir, path) = input(&group_rows(20));

    let mut config = config_for(&emulator, &path, rate(1000, 1000));
    config.credentials = Credentials::Certificate {
        tenant_id: TENANT.into(),
        client_id: APP.into(),
        pem_path: registered,
    };
    let summary = run(config.clone()).await;
    assert_eq!(summary.exit_code(), 0, "{:?}", summary.aborted());
    assert_eq!((summary.created, summary.token_requests), (20, 1));

    config.credentials = Credentials::Certificate {
        tenant_id: TENANT.into(),
        client_id: APP.into(),
        pem_path: foreign,
    };
    config.overwrite = true;
    let before = graph_requests(&emulator);
    let summary = run(config.clone()).await;
    assert_eq!(summary.exit_code(), 3);
    let reason = summary.aborted().unwrap();
    assert!(
        reason.contains("invalid_client") && reason.contains("AADSTS700027"),
        "{reason}"
    );
    // A rejection is not retried, and nothing reaches Graph.
    assert_eq!(summary.token_requests, 1);
    assert_eq!(graph_requests(&emulator), before);
    assert!(read_results(&config.output).is_empty());
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_aborts_with_one_token_request_and_no_row() {
    let emulator = Emulator::start(EmulatorConfig {
        client_secret: Some("the-right-one".into()),
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap();
    let (_dir, path) = input(&group_rows(200));
    let mut config = config_for(&emulator, &path, rate(1000, 1000));
    config.concurrency = 8;
    config.credentials = Credentials::ClientSecret {
        tenant_id: TENANT.into(),
        client_id: APP.into(),
        secret: "wr0ng".into(),
    };
    let output = config.output.clone();
    let summary = run(config).await;
    assert_eq!(summary.exit_code(), 3);
    assert!(summary.aborted().unwrap().contains("AADSTS7000215"));
    // Eight workers waited for the same token; the rejection was asked for once.
    assert_eq!(summary.token_requests, 1);
    assert_eq!(summary.requests, 0);
    assert!(read_results(&output).is_empty());
    assert_eq!(emulator.stats().assignments_created, 0);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_token_runs_and_a_refused_or_expired_one_aborts_saying_how_to_resume() {
    let emulator = Emulator::start(emulator_config(rate(1000, 1000)))
        .await
        .unwrap();
    let (_dir, path) = input(&group_rows(10));
    let mut config = config_for(&emulator, &path, rate(1000, 1000));
    config.credentials =
        Credentials::StaticToken(emulator_token(&emulator, TENANT, APP, "any").await);
    let summary = run(config.clone()).await;
    assert_eq!(summary.exit_code(), 0, "{:?}", summary.aborted());
    assert_eq!((summary.created, summary.token_requests), (10, 0));

    // Unknown to Graph: the first 401 ends the run, no row is recorded (resume does them).
    config.overwrite = true;
    config.credentials = Credentials::StaticToken("not-issued-by-this-tenant".into());
    let summary = run(config.clone()).await;
    assert_eq!(summary.exit_code(), 3);
    let reason = summary.aborted().unwrap();
    assert!(
        reason.contains("static access token")
            && reason.contains("rerun with a fresh token")
            && reason.contains("results file"),
        "{reason}"
    );
    assert!(!reason.contains("not-issued-by-this-tenant"), "{reason}");
    assert!(read_results(&config.output).is_empty());

    // Its own exp has passed: not even sent.
    let before = graph_requests(&emulator);
    config.credentials = Credentials::StaticToken(jwt_expiring_at(1_600_000_000));
    let summary = run(config).await;
    assert_eq!(summary.exit_code(), 3);
    assert!(summary.aborted().unwrap().contains("expired at 2020-09-13"));
    assert_eq!(graph_requests(&emulator), before);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_storm_trips_the_breaker_after_about_ten_rows() {
    let emulator = Emulator::start(EmulatorConfig {
        deny_permission: true,
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap();
    let (_dir, path) = input(&group_rows(500));
    let mut config = config_for(&emulator, &path, rate(1000, 1000));
    // Forbidden writes, each row's first request: no read before it.
    config.read_before_write = false;
    let output = config.output.clone();
    let summary = run(config).await;

    assert_eq!(summary.exit_code(), 3);
    let reason = summary.aborted().unwrap();
    assert!(
        reason.contains("403 Forbidden")
            && reason.contains("DeviceManagementServiceConfig.ReadWrite.All")
            && reason.contains("admin consent"),
        "{reason}"
    );
    let forbidden = emulator
        .stats()
        .requests_by_status
        .get("403")
        .copied()
        .unwrap_or(0);
    assert!(
        (10..=14).contains(&forbidden),
        "{forbidden} POSTs answered 403"
    );
    eprintln!("403 storm: breaker after {forbidden} POSTs of 500 rows");
    // Every row that got its 403 is reported failed; rows never started are absent.
    let results = read_results(&output);
    assert_eq!(results.len() as u64, forbidden);
    assert!(
        results
            .iter()
            .all(|r| r.status == Status::Failed.as_str() && r.error_code == "Forbidden")
    );
    emulator.shutdown().await;
}

/// The rows a tripped breaker's reason says were still out: 0 when it names none.
fn rows_out_named(reason: &str) -> u64 {
    reason
        .split_once("nothing more is sent; ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .map_or(0, |n| n.parse().expect("a count of rows"))
}

/// With the adaptive seats (16 rows out at the start), the breaker stops sending at the 10th
/// refusal in a row: every row Graph answered after it was already out, as many as the reason
/// says, and each of them is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tripped_breaker_sends_nothing_more_and_names_the_rows_still_out() {
    for (deny_permission, no_odata_route, status) in [(true, false, "403"), (false, true, "400")] {
        let emulator = Emulator::start(EmulatorConfig {
            deny_permission,
            no_odata_route,
            ..emulator_config(rate(1000, 1000))
        })
        .await
        .unwrap();
        let (_dir, path) = input(&group_rows(500));
        let mut config = config_for(&emulator, &path, rate(1000, 1000));
        config.read_before_write = false;
        config.adaptive_concurrency = true;
        let output = config.output.clone();
        let summary = run(config).await;

        assert_eq!(summary.exit_code(), 3);
        let reason = summary.aborted().unwrap();
        assert!(reason.contains("nothing more is sent"), "{reason}");
        let out = rows_out_named(reason);
        let answered = emulator
            .stats()
            .requests_by_status
            .get(status)
            .copied()
            .unwrap_or(0);
        let results = read_results(&output);
        assert_eq!(
            results.len() as u64,
            answered,
            "every answered row is reported"
        );
        assert!(
            (10..=10 + out).contains(&answered),
            "{answered} rows answered {status}, the reason names {out} out: {reason}"
        );
        eprintln!("breaker ({status}): {answered} rows answered, {out} named as out");
        emulator.shutdown().await;
    }
}

/// A stand-in authority in front of the emulator's: records every token request's form,
/// answers the first `outages` with 503, then passes requests through.
async fn recording_authority(
    emulator: &Emulator,
    outages: usize,
) -> (String, Arc<Mutex<Vec<HashMap<String, String>>>>) {
    use axum::extract::{Form, Path as UrlPath, State};
    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    #[derive(Clone)]
    struct Fake {
        upstream: String,
        outages: usize,
        seen: Arc<Mutex<Vec<HashMap<String, String>>>>,
    }
    async fn token(
        State(fake): State<Fake>,
        UrlPath(tenant): UrlPath<String>,
        Form(form): Form<HashMap<String, String>>,
    ) -> axum::response::Response {
        let n = {
            let mut seen = fake.seen.lock().unwrap();
            seen.push(form.clone());
            seen.len()
        };
        if n <= fake.outages {
            return (StatusCode::SERVICE_UNAVAILABLE, "try later").into_response();
        }
        let answer = reqwest::Client::new()
            .post(format!("{}/{tenant}/oauth2/v2.0/token", fake.upstream))
            .form(&form)
            .send()
            .await
            .unwrap();
        let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
        let body = answer.bytes().await.unwrap();
        (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/{tenant}/oauth2/v2.0/token", axum::routing::post(token))
        .with_state(Fake {
            upstream: emulator.authority_url(),
            outages,
            seen: seen.clone(),
        });
    (serve(app).await, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scope_follows_the_cloud_and_token_outages_are_retried() {
    let emulator = Emulator::start(emulator_config(rate(1000, 1000)))
        .await
        .unwrap();
    let (authority, seen) = recording_authority(&emulator, 2).await;
    let (_dir, path) = input(&group_rows(5));
    let mut config = config_for(&emulator, &path, rate(1000, 1000));
    config.cloud = Cloud::China;
    config.authority_url = authority;
    let summary = run(config).await;

    assert_eq!(summary.exit_code(), 0, "{:?}", summary.aborted());
    assert_eq!(summary.created, 5);
    // Two 503s, retried with backoff, then the token.
    assert_eq!(summary.token_requests, 3);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    for form in seen.iter() {
        assert_eq!(
            form.get("scope").map(String::as_str),
            Some("https://microsoftgraph.chinacloudapi.cn/.default")
        );
    }
    emulator.shutdown().await;
}

/// A stand-in authority that gets its tokens from the emulator's and answers with
/// `expires_in` replaced by `expires_in` (left out when `None`), as Entra's v1 endpoint,
/// managed identity and some proxies send it.
async fn rewriting_authority(emulator: &Emulator, expires_in: Option<serde_json::Value>) -> String {
    use axum::extract::{Form, Path as UrlPath, State};

    #[derive(Clone)]
    struct Fake {
        upstream: String,
        expires_in: Option<serde_json::Value>,
    }
    async fn token(
        State(fake): State<Fake>,
        UrlPath(tenant): UrlPath<String>,
        Form(form): Form<HashMap<String, String>>,
    ) -> axum::Json<serde_json::Value> {
        let mut answer: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/{tenant}/oauth2/v2.0/token", fake.upstream))
            .form(&form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let fields = answer.as_object_mut().unwrap();
        assert!(fields.contains_key("access_token"), "{fields:?}");
        match fake.expires_in {
            Some(v) => fields.insert("expires_in".into(), v),
            None => fields.remove("expires_in"),
        };
        axum::Json(answer)
    }
    let app = axum::Router::new()
        .route("/{tenant}/oauth2/v2.0/token", axum::routing::post(token))
        .with_state(Fake {
            upstream: emulator.authority_url(),
            expires_in,
        });
    serve(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_in_as_a_string_a_fraction_or_absent_is_tolerated() {
    use serde_json::json;
    // (expires_in, rows, rows per second, token requests): "3599" lasts the run; absent
    // assumes ten minutes, which lasts it too; 3.0 is three seconds, renewed during a
    // four-second run.
    for (expires_in, rows, per_second, tokens) in [
        (Some(json!("3599")), 40, 1000, 1..=1),
        (Some(json!(" 3599 ")), 40, 1000, 1..=1),
        (None, 40, 1000, 1..=1),
        (Some(json!(3.0)), 160, 40, 2..=6),
    ] {
        let emulator = Emulator::start(emulator_config(rate(1000, 1000)))
            .await
            .unwrap();
        let (_dir, path) = input(&group_rows(rows));
        let mut config = config_for(&emulator, &path, rate(per_second, 1000));
        config.authority_url = rewriting_authority(&emulator, expires_in.clone()).await;
        let output = config.output.clone();
        let summary = run(config).await;

        assert_eq!(
            summary.exit_code(),
            0,
            "expires_in {expires_in:?}: {:?}",
            summary.aborted()
        );
        assert_eq!(
            summary.created,
            u64::from(rows),
            "expires_in {expires_in:?}"
        );
        assert_each_row_once(&read_results(&output), u64::from(rows));
        assert!(
            tokens.contains(&summary.token_requests),
            "expires_in {expires_in:?}: {} token requests",
            summary.token_requests
        );
        emulator.shutdown().await;
    }
}

#[test]
fn cloud_picks_hosts_and_overrides_keep_its_scope() {
    use autopilot_bulk::cli::{Cli, Command as Sub};
    use clap::Parser as _;
    let config = |extra: &[&str]| {
        let mut args = vec!["autopilot-bulk", "run", "devices.csv", "--emulator"];
        args.extend_from_slice(extra);
        match Cli::try_parse_from(args).unwrap().command {
            Sub::Run(run) => run.to_config(None).unwrap(),
            _ => unreachable!(),
        }
    };
    let dod = config(&[
        "--cloud",
        "usgov-dod",
        "--graph-url",
        "https://dod-graph.microsoft.us/beta",
    ]);
    assert_eq!(dod.authority_url, "https://login.microsoftonline.us");
    assert_eq!(dod.cloud.scope(), "https://dod-graph.microsoft.us/.default");
    let china = config(&[
        "--cloud",
        "china",
        "--graph-url",
        "http://127.0.0.1:9/beta/",
        "--authority-url",
        "http://127.0.0.1:9",
    ]);
    assert_eq!(china.graph_url, "http://127.0.0.1:9/beta");
    assert_eq!(china.authority_url, "http://127.0.0.1:9");
    assert_eq!(
        china.cloud.scope(),
        "https://microsoftgraph.chinacloudapi.cn/.default"
    );
}

// ---- the binary: exit codes, messages, and nothing secret in any output ----

/// Run the binary off the async runtime, so the in-process emulator keeps serving.
async fn run_bin(mut cmd: assert_cmd::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_and_tokens_appear_in_no_output_even_at_trace() {
    const SECRET: &str = "Zq8~s3cr3t-value-that-must-not-leak";
    let emulator = Emulator::start(EmulatorConfig {
        client_secret: Some(SECRET.into()),
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap();
    let (dir, path) = input(&group_rows(12));
    let output = dir.path().join("out.csv");
    let mut cmd = bin();
    cmd.arg("run")
        .arg(&path)
        .arg("-o")
        .arg(&output)
        .args(["-vv", "--graph-url", &emulator.graph_url()])
        .args(["--authority-url", &emulator.authority_url()])
        .env("AZURE_TENANT_ID", TENANT)
        .env("AZURE_CLIENT_ID", APP)
        .env("AZURE_CLIENT_SECRET", SECRET);
    let out = run_bin(cmd).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let results = std::fs::read_to_string(&output).unwrap();
    assert_eq!(read_results(&output).len(), 12);
    for (name, s) in [
        ("stdout", &stdout),
        ("stderr", &stderr),
        ("results", &results),
    ] {
        assert!(!s.contains(SECRET), "the secret leaked into {name}");
    }

    // A static token at trace level, every crate's logs included.
    let token = emulator_token(&emulator, TENANT, APP, SECRET).await;
    let mut cmd = bin();
    cmd.arg("run")
        .arg(&path)
        .arg("-o")
        .arg(&output)
        .args(["--overwrite", "--graph-url", &emulator.graph_url()])
        .env("AUTOPILOT_BULK_LOG", "trace")
        .env("GRAPH_ACCESS_TOKEN", &token);
    let out = run_bin(cmd).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("not a JWT"),
        "no static-token warning: {stderr}"
    );
    let results = std::fs::read_to_string(&output).unwrap();
    for (name, s) in [
        ("stdout", &text(&out.stdout)),
        ("stderr", &stderr),
        ("results", &results),
    ] {
        assert!(!s.contains(&token), "the token leaked into {name}");
    }
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_3_on_a_wrong_secret_and_on_a_refused_static_token() {
    let emulator = Emulator::start(EmulatorConfig {
        client_secret: Some("right".into()),
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap();
    let (dir, path) = input(&group_rows(50));
    let output = dir.path().join("out.csv");

    let mut cmd = bin();
    cmd.arg("run")
        .arg(&path)
        .arg("-o")
        .arg(&output)
        .args(["--graph-url", &emulator.graph_url()])
        .args(["--authority-url", &emulator.authority_url()])
        .env("AZURE_TENANT_ID", TENANT)
        .env("AZURE_CLIENT_ID", APP)
        .env("AZURE_CLIENT_SECRET", "wr0ng-value");
    let out = run_bin(cmd).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("invalid_client") && stderr.contains("AADSTS7000215"),
        "{stderr}"
    );
    assert!(!stderr.contains("wr0ng-value"));
    assert_eq!(emulator.stats().assignments_created, 0);

    let mut cmd = bin();
    cmd.arg("run")
        .arg(&path)
        .arg("-o")
        .arg(&output)
        .args(["--overwrite", "--graph-url", &emulator.graph_url()])
        .env("GRAPH_ACCESS_TOKEN", "stale-token-value");
    let out = run_bin(cmd).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("rerun with a fresh token"), "{stderr}");
    assert!(!stderr.contains("stale-token-value"));
    emulator.shutdown().await;
}

/// A serial run whose token is refused while it resolves the serials: each row and the
/// summary name the refusal (AADSTS7000215), not a bare "stopped".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_run_whose_token_is_refused_names_the_refusal_on_every_row() {
    let emulator = Emulator::start(EmulatorConfig {
        client_secret: Some("right".into()),
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap();
    let (dir, path) = input("serial_number\nPF00001\nPF00002\nPF00003\n");
    let output = dir.path().join("out.csv");
    let mut cmd = bin();
    cmd.arg("run")
        .arg(&path)
        .arg("-o")
        .arg(&output)
        .args(["--group-id", GROUP])
        .args(["--graph-url", &emulator.graph_url()])
        .args(["--authority-url", &emulator.authority_url()])
        .env("AZURE_TENANT_ID", TENANT)
        .env("AZURE_CLIENT_ID", APP)
        .env("AZURE_CLIENT_SECRET", "wr0ng-value");
    let out = run_bin(cmd).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let results = read_results(&output);
    assert_eq!(results.len(), 3, "{stderr}");
    for r in &results {
        assert_eq!(r.error_code, "AuthenticationFailed", "{r:?}");
        assert!(
            r.error_message.contains("AADSTS7000215") && !r.error_message.contains("wr0ng"),
            "{r:?}"
        );
    }
    assert!(stderr.contains("AuthenticationFailed 3"), "{stderr}");
    assert!(!stderr.contains("Stopped"), "{stderr}");
    emulator.shutdown().await;
}

#[test]
fn plain_http_to_a_remote_host_is_refused_before_connecting() {
    let (_dir, path) = input(&group_rows(3));
    for (flag, url) in [
        ("--graph-url", "http://graph.invalid/beta"),
        ("--authority-url", "http://login.invalid"),
    ] {
        let out = bin()
            .arg("run")
            .arg(&path)
            .args([flag, url])
            .env("AZURE_TENANT_ID", TENANT)
            .env("AZURE_CLIENT_ID", APP)
            .env("AZURE_CLIENT_SECRET", "s")
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(stderr.contains("plain http"), "{stderr}");
    }
    let out = bin()
        .arg("run")
        .arg(&path)
        .args(["--graph-url", "http://graph.invalid/beta"])
        .env("GRAPH_ACCESS_TOKEN", "t")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!path.with_file_name("devices.results.csv").exists());
}

#[test]
fn credential_flags_are_files_or_environment_never_values() {
    let (dir, path) = input(&group_rows(1));
    let help = text(&bin().args(["run", "--help"]).output().unwrap().stdout);
    for flag in [
        "--certificate",
        "--access-token-file",
        "--client-secret-file",
    ] {
        assert!(help.contains(flag), "{flag} missing from run --help");
    }
    for flag in ["--client-secret", "--access-token"] {
        let out = bin()
            .arg("run")
            .arg(&path)
            .args([flag, "value"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} accepted");
    }
    // Two kinds at once is ambiguous.
    let out = bin()
        .arg("run")
        .arg(&path)
        .env("AZURE_CLIENT_SECRET", "s")
        .env("GRAPH_ACCESS_TOKEN", "t")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("more than one credential"));
    // A certificate file without a key: exit 2 naming the problem, nothing written.
    let pem = dir.path().join("cert-only.pem");
    std::fs::write(&pem, std::fs::read(fixture("emulator-client.crt")).unwrap()).unwrap();
    let out = bin()
        .arg("run")
        .arg(&path)
        .arg("--certificate")
        .arg(&pem)
        .env("AZURE_TENANT_ID", TENANT)
        .env("AZURE_CLIENT_ID", APP)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("PRIVATE KEY"), "{stderr}");
    assert!(!path.with_file_name("devices.results.csv").exists());
}

/// A Graph front for one unlucky device: 401 on the first token it is shown, 429 (Retry-After
/// 1 s) on the second for as long as that one comes back, 401 on the third, 201 from the fourth
/// on; with `refuse_all`, 401 on every token. Returns its Graph URL and the distinct tokens it
/// saw.
async fn token_rotating_graph(refuse_all: bool) -> (String, Arc<Mutex<Vec<String>>>) {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;

    async fn assign(
        axum::extract::State((seen, refuse_all)): axum::extract::State<(
            Arc<Mutex<Vec<String>>>,
            bool,
        )>,
        headers: HeaderMap,
    ) -> axum::response::Response {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let nth = {
            let mut seen = seen.lock().unwrap();
            match seen.iter().position(|t| *t == token) {
                Some(i) => i,
                None => {
                    seen.push(token);
                    seen.len() - 1
                }
            }
        };
        let json = [(header::CONTENT_TYPE, "application/json")];
        match nth {
            _ if refuse_all => (
                StatusCode::UNAUTHORIZED,
                json,
                r#"{"error":{"code":"InvalidAuthenticationToken","message":"Access token validation failure."}}"#,
            )
                .into_response(),
            0 | 2 => (
                StatusCode::UNAUTHORIZED,
                json,
                r#"{"error":{"code":"InvalidAuthenticationToken","message":"Access token has expired or is not yet valid."}}"#,
            )
                .into_response(),
            1 => (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::CONTENT_TYPE, "application/json"), (header::RETRY_AFTER, "1")],
                r#"{"error":{"code":"TooManyRequests","message":"Too many requests"}}"#,
            )
                .into_response(),
            _ => (
                StatusCode::CREATED,
                json,
                r##"{"@odata.type":"#microsoft.graph.windowsAutopilotDeploymentProfileAssignment","id":"assignment-after-two-refreshes","source":"direct"}"##,
            )
                .into_response(),
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route(
            "/beta/deviceManagement/windowsAutopilotDeviceIdentities/{id}/deploymentProfile/assignments",
            axum::routing::post(assign),
        )
        .with_state((seen.clone(), refuse_all));
    (format!("{}/beta", serve(app).await), seen)
}

/// One row against [`token_rotating_graph`], tokens from the emulator living `token_ttl`:
/// the summary, the results and how many distinct tokens Graph was shown.
async fn one_row_against_rotating_graph(
    refuse_all: bool,
    token_ttl: Duration,
) -> (autopilot_bulk::Summary, Vec<ResultLine>, usize) {
    let emulator = Emulator::start(EmulatorConfig {
        token_ttl,
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap();
    let (graph, seen) = token_rotating_graph(refuse_all).await;
    let (_dir, path) = input(&group_rows(1));
    let mut config = config_for(&emulator, &path, rate(1000, 1000));
    config.graph_url = graph;
    // The stand-in serves the write alone: this test is about writing, not reading first.
    config.read_before_write = false;
    let output = config.output.clone();
    let summary = run(config).await;
    emulator.shutdown().await;
    let tokens = seen.lock().unwrap().len();
    (summary, read_results(&output), tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_outlives_two_tokens_refreshes_for_each() {
    // 2 s tokens: while the row waits out its 429s, the background refresh brings a third
    // token, which Graph refuses too. One refresh per row would fail the row there.
    let (summary, rows, tokens) =
        one_row_against_rotating_graph(false, Duration::from_secs(2)).await;
    assert_eq!(summary.created, 1, "{rows:?}");
    assert_eq!(rows[0].assignment_id, "assignment-after-two-refreshes");
    assert_eq!(tokens, 4, "four distinct tokens");
    assert!(rows[0].attempts >= 4, "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_on_the_token_its_own_refresh_brought_fails_the_row() {
    // Graph refuses every token: one refresh, then the row fails; no loop on 401s.
    let (summary, rows, tokens) =
        one_row_against_rotating_graph(true, Duration::from_secs(3599)).await;
    assert_eq!(summary.failed, 1, "{rows:?}");
    assert_eq!(rows[0].error_code, "InvalidAuthenticationToken");
    assert_eq!(rows[0].attempts, 2, "{rows:?}");
    assert_eq!(tokens, 2, "the first token and one fresh one");
}
