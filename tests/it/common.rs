//! Shared helpers for the end-to-end tests: write an input file, run against an in-process
//! emulator on port 0, read the results back.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use autopilot_bulk::Summary;
use autopilot_bulk::config::{Config, RateSpec};
use autopilot_bulk::emulator::{Emulator, EmulatorConfig, Limit};
use tokio_util::sync::CancellationToken;

/// A deterministic device GUID for index `i`.
pub fn device(i: u32) -> String {
    format!("{i:08x}-0000-4000-8000-{:012x}", 0xa11u64 + u64::from(i))
}

pub const GROUP: &str = "5e7e0c2a-3b1d-4c8e-9f6a-0d1c2b3a4f5e";

/// One parsed results line.
#[derive(Debug, Clone)]
pub struct ResultLine {
    pub row: u64,
    pub device_id: String,
    pub status: String,
    pub http_status: String,
    pub assignment_id: String,
    pub attempts: u32,
    pub error_code: String,
    pub error_message: String,
    pub request_id: String,
    pub client_request_id: String,
    pub serial_number: String,
    pub tenant: String,
}

pub fn read_results(path: &Path) -> Vec<ResultLine> {
    let mut rdr = csv::Reader::from_path(path).expect("results file readable");
    let headers: Vec<String> = rdr.headers().unwrap().iter().map(str::to_string).collect();
    assert_eq!(
        headers,
        [
            "row",
            "device_id",
            "status",
            "http_status",
            "assignment_id",
            "attempts",
            "error_code",
            "error_message",
            "request_id",
            "client_request_id",
            "duration_ms",
            "finished_at",
            "serial_number",
            "tenant",
            "action",
            "group_tag",
            "previous_group_tag",
            "group_id",
            "member_id"
        ]
    );
    rdr.records()
        .map(|r| {
            let r = r.expect("results row");
            ResultLine {
                row: r[0].parse().unwrap(),
                device_id: r[1].to_string(),
                status: r[2].to_string(),
                http_status: r[3].to_string(),
                assignment_id: r[4].to_string(),
                attempts: r[5].parse().unwrap(),
                error_code: r[6].to_string(),
                error_message: r[7].to_string(),
                request_id: r[8].to_string(),
                client_request_id: r[9].to_string(),
                serial_number: r[12].to_string(),
                tenant: r[13].to_string(),
            }
        })
        .collect()
}

/// A temp dir with `devices.csv` holding `csv`.
pub fn input(csv: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devices.csv");
    std::fs::write(&path, csv).unwrap();
    (dir, path)
}

/// `n` group rows for devices 0..n.
pub fn group_rows(n: u32) -> String {
    let mut s = String::from("device_id,target_type,group_id\n");
    for i in 0..n {
        s.push_str(&format!("{},group,{GROUP}\n", device(i)));
    }
    s
}

/// A configuration pointed at `emulator`.
pub fn config_for(emulator: &Emulator, input: &Path, rate: RateSpec) -> Config {
    let mut c = Config::new(input, autopilot_bulk::config::default_output(input));
    c.graph_url = emulator.graph_url();
    c.authority_url = emulator.authority_url();
    c.credentials = autopilot_bulk::config::Credentials::for_emulator();
    c.rate = rate;
    // Intune's pairing: ten times the write window for requests of any kind (100 writes and
    // 1,000 requests per 20 s), so that a test's reads keep pace with its writes.
    c.request_rate = autopilot_bulk::config::RateSpec::new(rate.count.saturating_mul(10), rate.per);
    c.concurrency = 4;
    c
}

pub async fn run(config: Config) -> Summary {
    autopilot_bulk::run(config, CancellationToken::new())
        .await
        .expect("run starts")
}

/// Every input row 1..=rows appears exactly once.
pub fn assert_each_row_once(results: &[ResultLine], rows: u64) {
    let mut seen = BTreeMap::new();
    for r in results {
        *seen.entry(r.row).or_insert(0) += 1;
    }
    assert_eq!(seen.len() as u64, rows, "rows reported: {seen:?}");
    assert!(
        seen.values().all(|&n| n == 1),
        "a row reported twice: {seen:?}"
    );
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (1..=rows).collect::<Vec<_>>()
    );
}

/// The ids the results report as created/existing are exactly the emulator's, one to one.
pub fn assert_ids_match_emulator(results: &[ResultLine], emulator: &Emulator) {
    let reported: HashSet<(String, String)> = results
        .iter()
        .filter(|r| r.status == "created" || r.status == "existing")
        .map(|r| (r.device_id.to_lowercase(), r.assignment_id.clone()))
        .collect();
    let held: HashSet<(String, String)> = emulator
        .assignments()
        .into_iter()
        .flat_map(|(d, ids)| ids.into_iter().map(move |id| (d.clone(), id)))
        .collect();
    assert_eq!(reported, held, "reported ids differ from the emulator's");
    assert_eq!(emulator.stats().duplicate_devices, 0);
}

/// An emulator whose write window is `limit` (the client's notation, as the tests hold it).
pub fn emulator_config(limit: RateSpec) -> EmulatorConfig {
    EmulatorConfig {
        limit: Limit::new(limit.count, limit.per),
        ..EmulatorConfig::default()
    }
}

pub fn rate(count: u32, millis: u64) -> RateSpec {
    RateSpec::new(count, Duration::from_millis(millis))
}

/// The binary with nothing from the developer's environment that could change a run:
/// credentials, token, certificate and URLs are cleared.
pub fn bin() -> assert_cmd::Command {
    without_credentials(assert_cmd::Command::cargo_bin("autopilot-bulk").unwrap())
}

/// `c` with the variables [`bin`] clears cleared.
pub fn without_credentials(mut c: assert_cmd::Command) -> assert_cmd::Command {
    for v in [
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_CLIENT_CERTIFICATE_PATH",
        "AZURE_CLIENT_CERTIFICATE_PASSWORD",
        "GRAPH_ACCESS_TOKEN",
        "AUTOPILOT_BULK_GRAPH_URL",
        "AUTOPILOT_BULK_AUTHORITY_URL",
        "AUTOPILOT_BULK_LOG",
        "AUTOPILOT_BULK_REQUEST_RATE",
    ] {
        c.env_remove(v);
    }
    c
}

/// Graph's example request body for the assignment POST, as its documentation gives it.
pub const SEED_BODY: &str = include_str!("../fixtures/seed_body.json");

/// The scope a client-credentials token request asks for on the global cloud.
pub const SCOPE: &str = "https://graph.microsoft.com/.default";

/// A file under `tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Process output, lossily, for asserting on.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A JWT-shaped token with a dummy signature: enough for code that reads its claims and
/// never checks the signature.
pub fn unsigned_jwt(header: serde_json::Value, claims: serde_json::Value) -> String {
    use base64::Engine as _;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    format!("{}.{}.c2lnbmF0dXJl", b64(header), b64(claims))
}

/// The assignments collection of `device`, below `graph` (the base including the version).
pub fn assignments_url(graph: &str, device: &str) -> String {
    format!(
        "{graph}/deviceManagement/windowsAutopilotDeviceIdentities/{device}/deploymentProfile/assignments"
    )
}

/// POST `form` to the token endpoint of `tenant` below `authority`.
pub async fn token_request(
    http: &reqwest::Client,
    authority: &str,
    tenant: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    http.post(format!("{authority}/{tenant}/oauth2/v2.0/token"))
        .form(form)
        .send()
        .await
        .unwrap()
}

/// A client-credentials token from the token endpoint below `authority`, checked to be a 200
/// with a bearer token.
pub async fn token_at(
    http: &reqwest::Client,
    authority: &str,
    tenant: &str,
    app: &str,
    secret: &str,
) -> String {
    let r = token_request(
        http,
        authority,
        tenant,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", app),
            ("scope", SCOPE),
            ("client_secret", secret),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    body["access_token"].as_str().unwrap().to_string()
}

/// A token issued by `emulator`, obtained the way any client would.
pub async fn emulator_token(emulator: &Emulator, tenant: &str, app: &str, secret: &str) -> String {
    token_at(
        &reqwest::Client::new(),
        &emulator.authority_url(),
        tenant,
        app,
        secret,
    )
    .await
}

/// Serve `app` on 127.0.0.1, port 0, in the background; its base URL.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A running emulator, a client and a bearer token for one tenant: for the tests that speak
/// Graph's HTTP to the emulator directly.
pub struct GraphEnv {
    pub emu: Emulator,
    pub http: reqwest::Client,
    pub token: String,
}

impl GraphEnv {
    /// Tenant "contoso", app "app", secret "s3cret".
    pub async fn new(config: EmulatorConfig) -> GraphEnv {
        Self::as_tenant(config, "contoso").await
    }

    pub async fn as_tenant(config: EmulatorConfig, tenant: &str) -> GraphEnv {
        let emu = Emulator::start(config).await.unwrap();
        let http = reqwest::Client::new();
        let token = token_at(&http, &emu.authority_url(), tenant, "app", "s3cret").await;
        GraphEnv { emu, http, token }
    }

    pub fn assignments_url(&self, device: &str) -> String {
        assignments_url(&self.emu.graph_url(), device)
    }

    pub async fn post(&self, device: &str, body: &str) -> reqwest::Response {
        self.http
            .post(self.assignments_url(device))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    /// GET a device's assignments.
    pub async fn get(&self, device: &str) -> reqwest::Response {
        self.get_path(&assignments_url("", device)).await
    }

    /// GET a path below the Graph base URL.
    pub async fn get_path(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.emu.graph_url()))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    pub async fn batch(&self, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(format!("{}/$batch", self.emu.graph_url()))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

/// A response header as text.
pub fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}
