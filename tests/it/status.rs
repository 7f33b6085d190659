//! `status` end to end, against a stand-in for Graph's identity listing (pages of two,
//! absolute next links, statuses that change between readings) and, for the binary, the
//! in-process emulator's token endpoint.

use crate::common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use autopilot_bulk::config::{Config, Credentials};
use autopilot_bulk::emulator::{Emulator, EmulatorConfig};
use autopilot_bulk::lock::RunLock;
use autopilot_bulk::status::{StatusConfig, StatusError, StatusReport, Watch};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::*;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const LISTING: &str = "/beta/deviceManagement/windowsAutopilotDeviceIdentities";
const RESULTS_HEADER: &str = "row,device_id,status,http_status,assignment_id,attempts,\
                              error_code,error_message,request_id,client_request_id,\
                              duration_ms,finished_at";
const TENANT: &str = "contoso";
const APP: &str = "11111111-2222-4333-8444-555555555555";
const SECRET: &str = "right";

/// The stand-in's identities: devices 0..=4 in the statuses below, then devices 10..13 that no
/// results file names. Device 5 is not listed.
fn identities() -> Vec<serde_json::Value> {
    let statuses = [
        "assignedInSync",
        "assignedUnkownSyncState",
        "assignedOutOfSync",
        "pending",
        "notAssigned",
    ];
    let mut all: Vec<_> = statuses
        .iter()
        .enumerate()
        .map(|(i, status)| {
            json!({
                "id": device(i as u32),
                "serialNumber": if i == 1 { serde_json::Value::Null } else { json!(format!("SN-{i}")) },
                "deploymentProfileAssignmentStatus": status,
                "deploymentProfileAssignmentDetailedStatus": "none",
                "deploymentProfileAssignedDateTime": "2026-01-02T03:04:05Z",
            })
        })
        .collect();
    all.extend(
        (10..14)
            .map(|i| json!({"id": device(i), "deploymentProfileAssignmentStatus": "notAssigned"})),
    );
    all
}

/// A stand-in for the identity listing.
struct Listing {
    identities: Vec<serde_json::Value>,
    /// From this reading on (1-based), `pending` identities are `assignedInSync`.
    flip_at: Option<u32>,
    /// First pages asked for: one per reading.
    readings: AtomicU32,
    pages: AtomicU32,
    /// A second reading began: the first one is written.
    second_reading: Notify,
}

impl Listing {
    fn new(flip_at: Option<u32>) -> Arc<Listing> {
        Arc::new(Listing {
            identities: identities(),
            flip_at,
            readings: AtomicU32::new(0),
            pages: AtomicU32::new(0),
            second_reading: Notify::new(),
        })
    }

    fn readings(&self) -> u32 {
        self.readings.load(Ordering::SeqCst)
    }

    fn pages(&self) -> u32 {
        self.pages.load(Ordering::SeqCst)
    }

    /// Serve it; the Graph base URL (with `/beta`).
    async fn serve(self: &Arc<Self>) -> String {
        let app = axum::Router::new()
            .route(LISTING, axum::routing::get(list))
            .with_state(self.clone());
        format!("{}/beta", serve(app).await)
    }
}

const PAGE: usize = 2;

async fn list(
    State(s): State<Arc<Listing>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() > "Bearer ".len() && v.starts_with("Bearer "));
    if !bearer {
        let body = json!({"error": {"code": "InvalidAuthenticationToken", "message": "no token"}});
        return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    }
    assert_eq!(q.get("$top").map(String::as_str), Some("100"), "{q:?}");
    let from: usize = match q.get("$skiptoken") {
        Some(t) => t.parse().unwrap(),
        None => {
            if s.readings.fetch_add(1, Ordering::SeqCst) == 1 {
                s.second_reading.notify_one();
            }
            0
        }
    };
    s.pages.fetch_add(1, Ordering::SeqCst);
    let flipped = s.flip_at.is_some_and(|at| s.readings() >= at);
    let value: Vec<_> = s.identities[from..(from + PAGE).min(s.identities.len())]
        .iter()
        .map(|i| {
            let mut i = i.clone();
            if flipped && i["deploymentProfileAssignmentStatus"] == "pending" {
                i["deploymentProfileAssignmentStatus"] = json!("assignedInSync");
            }
            i
        })
        .collect();
    let mut page = json!({ "value": value });
    if from + PAGE < s.identities.len() {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        page["@odata.nextLink"] = json!(format!(
            "http://{host}{LISTING}?$top=100&$skiptoken={}",
            from + PAGE
        ));
    }
    axum::Json(page).into_response()
}

/// One results line.
fn line(row: u64, device: &str, status: &str) -> String {
    format!("{row},{device},{status},201,a-{row},1,,,,,5,2026-01-01T00:00:00Z\n")
}

/// `devices.results.csv` in a temp dir with `lines` after the header.
fn results(lines: &[String]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devices.results.csv");
    std::fs::write(&path, format!("{RESULTS_HEADER}\n{}", lines.concat())).unwrap();
    (dir, path)
}

/// The results of devices 0..n, all created.
fn created(n: u32) -> Vec<String> {
    (0..n)
        .map(|i| line(u64::from(i) + 1, &device(i), "created"))
        .collect()
}

fn config(results: &Path, graph_url: &str) -> StatusConfig {
    let mut graph = Config::new(results, PathBuf::new());
    graph.graph_url = graph_url.to_string();
    graph.credentials = Credentials::StaticToken("stand-in-token".into());
    StatusConfig::new(results, graph)
}

async fn status(config: StatusConfig) -> StatusReport {
    autopilot_bulk::status(config, CancellationToken::new())
        .await
        .expect("status starts")
}

/// The status file as (row, device_id, serial_number, assignment_status) tuples.
fn status_lines(path: &Path) -> Vec<(String, String, String, String)> {
    let mut rdr = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        [
            "row",
            "device_id",
            "serial_number",
            "assignment_status",
            "assigned_at",
            "detailed_status",
            "tenant"
        ]
    );
    rdr.records()
        .map(|r| {
            let r = r.unwrap();
            (
                r[0].to_string(),
                r[1].to_string(),
                r[2].to_string(),
                r[3].to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn each_landed_row_gets_graphs_status_verbatim_through_every_page() {
    let listing = Listing::new(None);
    let graph = listing.serve().await;
    let upper = device(1).to_uppercase();
    // With the optional serial_number column: the tenant's serial wins, the results' fills in.
    let serial = |l: String, sn: &str| l.replace('\n', &format!(",{sn}\n"));
    let lines = [
        serial(line(1, &device(0), "created"), "OURS"),
        serial(line(2, &upper, "existing"), ""),
        serial(line(3, &device(2), "created"), ""),
        serial(line(4, &device(3), "failed"), ""),
        serial(line(5, &device(4), "invalid"), ""),
        serial(line(6, &device(5), "created"), "SN-FROM-RESULTS"),
        serial(line(7, &device(10), "created"), ""),
        // A resumed run appends: the last line of a row wins.
        serial(line(4, &device(3), "created"), ""),
        serial(line(7, &device(10), "failed"), ""),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devices.results.csv");
    std::fs::write(
        &path,
        format!("{RESULTS_HEADER},serial_number\n{}", lines.concat()),
    )
    .unwrap();

    let report = status(config(&path, &graph)).await;

    assert_eq!(report.exit_code(), 1, "{report:?}");
    assert_eq!((report.rows, report.assigned, report.readings), (5, 3, 1));
    let counts: Vec<(&str, u64)> = report
        .counts
        .iter()
        .map(|(s, n)| (s.as_str(), *n))
        .collect();
    assert_eq!(
        counts,
        [
            ("assignedInSync", 1),
            ("assignedOutOfSync", 1),
            ("assignedUnkownSyncState", 1),
            ("notFound", 1),
            ("pending", 1)
        ]
    );
    // Nine identities in pages of two: five requests, one reading.
    assert_eq!((listing.pages(), listing.readings()), (5, 1));
    assert_eq!((report.listed.pages, report.listed.identities), (5, 9));
    let output = path.with_file_name("devices.results.status.csv");
    assert_eq!(report.output, output);
    let s = |v: &str| v.to_string();
    assert_eq!(
        status_lines(&output),
        [
            (s("1"), device(0), s("SN-0"), s("assignedInSync")),
            (s("2"), upper, s(""), s("assignedUnkownSyncState")),
            (s("3"), device(2), s("SN-2"), s("assignedOutOfSync")),
            (s("4"), device(3), s("SN-3"), s("pending")),
            (s("6"), device(5), s("SN-FROM-RESULTS"), s("notFound")),
        ]
    );
    let text = std::fs::read_to_string(&output).unwrap();
    assert!(
        // The tenant column last, empty without --tenants.
        text.contains(",assignedInSync,2026-01-02T03:04:05Z,none,\n"),
        "{text}"
    );
}

#[tokio::test]
async fn every_row_assigned_is_exit_0() {
    let listing = Listing::new(None);
    let graph = listing.serve().await;
    let (_dir, path) = results(&created(3));
    let report = status(config(&path, &graph)).await;
    assert_eq!(report.exit_code(), 0, "{report:?}");
    assert_eq!((report.rows, report.assigned), (3, 3));
    assert!(
        report
            .render()
            .contains("3 rows · 3 assigned · 0 not assigned")
    );
}

#[tokio::test]
async fn no_landed_rows_is_exit_1_without_a_request() {
    let listing = Listing::new(None);
    let graph = listing.serve().await;
    let (_dir, path) = results(&[line(1, &device(0), "failed"), line(2, "x", "invalid")]);
    let report = status(config(&path, &graph)).await;
    assert_eq!(report.exit_code(), 1);
    assert_eq!(report.rows, 0);
    assert_eq!(listing.pages(), 0);
    assert!(status_lines(&path.with_file_name("devices.results.status.csv")).is_empty());
}

#[tokio::test]
async fn watch_stops_at_its_timeout_with_exit_1() {
    let listing = Listing::new(None);
    let graph = listing.serve().await;
    let (_dir, path) = results(&created(4));
    let mut c = config(&path, &graph);
    c.watch = Some(Watch {
        interval: Duration::from_millis(10),
        timeout: Duration::from_millis(60),
    });
    let report = status(c).await;
    assert!(report.timed_out, "{report:?}");
    assert_eq!(report.exit_code(), 1);
    assert!(report.readings >= 2, "{report:?}");
    assert_eq!(listing.readings(), report.readings);
}

#[tokio::test]
async fn a_stop_while_watching_keeps_the_last_reading_and_is_130() {
    let listing = Listing::new(None);
    let graph = listing.serve().await;
    let (_dir, path) = results(&created(4));
    let mut c = config(&path, &graph);
    c.watch = Some(Watch {
        interval: Duration::from_millis(10),
        timeout: Duration::from_secs(3600),
    });
    let output = c.output.clone();
    let shutdown = CancellationToken::new();
    let watching = tokio::spawn(autopilot_bulk::status(c, shutdown.clone()));
    listing.second_reading.notified().await;
    shutdown.cancel();
    let report = watching.await.unwrap().unwrap();
    assert!(report.interrupted);
    assert_eq!(report.exit_code(), 130);
    assert_eq!(status_lines(&output).len(), 4);
    assert!(!RunLock::path_for(&output).exists(), "lock left behind");
}

#[tokio::test]
async fn a_second_status_on_one_output_is_refused_while_the_first_holds_it() {
    let listing = Listing::new(None);
    let graph = listing.serve().await;
    let (_dir, path) = results(&created(1));
    let c = config(&path, &graph);
    let held = RunLock::acquire(&c.output, "autopilot-bulk status").unwrap();
    match autopilot_bulk::status(c.clone(), CancellationToken::new()).await {
        Err(e @ StatusError::Locked { .. }) => assert!(e.to_string().contains("in use"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(!c.output.exists());
    assert_eq!(listing.pages(), 0);
    drop(held);
    assert_eq!(status(c).await.exit_code(), 0);
}

// ---- the binary ----

/// Run the binary off the async runtime, so the stand-ins keep serving.
async fn run_bin(mut cmd: assert_cmd::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// `status RESULTS` against `graph`, with the emulator's token endpoint and `secret`, and
/// nothing from the developer's environment.
fn status_cmd(
    results: &Path,
    graph: &str,
    emulator: &Emulator,
    secret: &str,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin!("autopilot-bulk"));
    for v in [
        "AZURE_CLIENT_CERTIFICATE_PATH",
        "GRAPH_ACCESS_TOKEN",
        "AUTOPILOT_BULK_GRAPH_URL",
        "AUTOPILOT_BULK_AUTHORITY_URL",
        "AUTOPILOT_BULK_LOG",
        "AUTOPILOT_BULK_REQUEST_RATE",
    ] {
        cmd.env_remove(v);
    }
    cmd.arg("status")
        .arg(results)
        .args(["--graph-url", graph])
        .args(["--authority-url", &emulator.authority_url()])
        .env("AZURE_TENANT_ID", TENANT)
        .env("AZURE_CLIENT_ID", APP)
        .env("AZURE_CLIENT_SECRET", secret);
    cmd
}

fn status_bin(
    results: &Path,
    graph: &str,
    emulator: &Emulator,
    secret: &str,
) -> assert_cmd::Command {
    assert_cmd::Command::from_std(status_cmd(results, graph, emulator, secret))
}

async fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig {
        client_secret: Some(SECRET.into()),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_counts_per_status_and_refuses_to_overwrite() {
    let (emulator, listing) = (emulator().await, Listing::new(None));
    let graph = listing.serve().await;
    let (_dir, path) = results(&created(5));
    let out = run_bin(status_bin(&path, &graph, &emulator, SECRET)).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let output = path.with_file_name("devices.results.status.csv");
    assert!(
        stdout.contains("5 rows · 3 assigned · 2 not assigned"),
        "{stdout}"
    );
    for (status, count) in [
        ("assignedUnkownSyncState", 1),
        ("pending", 1),
        ("notAssigned", 1),
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().eq([status, &count.to_string()])),
            "{status} {count} missing from:\n{stdout}"
        );
    }
    assert_eq!(status_lines(&output).len(), 5);

    // Again: the status file exists, so it is refused, untouched, before any request.
    std::fs::write(&output, "keep me\n").unwrap();
    let pages = listing.pages();
    let out = run_bin(status_bin(&path, &graph, &emulator, SECRET)).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--overwrite") && stderr.contains("devices.results.status.csv"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "keep me\n");
    assert_eq!(listing.pages(), pages);

    let mut cmd = status_bin(&path, &graph, &emulator, SECRET);
    cmd.arg("--overwrite");
    assert_eq!(run_bin(cmd).await.status.code(), Some(1));
    assert_eq!(status_lines(&output).len(), 5);

    // A second status on the same output while one holds it.
    let held = RunLock::acquire(&output, "autopilot-bulk status (first)").unwrap();
    let mut cmd = status_bin(&path, &graph, &emulator, SECRET);
    cmd.arg("--overwrite");
    let out = run_bin(cmd).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("in use") && stderr.contains("(first)"),
        "{stderr}"
    );
    drop(held);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_exits_0_once_every_device_is_assigned() {
    let (emulator, listing) = (emulator().await, Listing::new(Some(3)));
    let graph = listing.serve().await;
    // Devices 0..=3: device 3 is pending until the third reading.
    let (dir, path) = results(&created(4));
    let output = dir.path().join("watched.csv");
    let mut cmd = status_bin(&path, &graph, &emulator, SECRET);
    cmd.args(["--watch", "--interval", "10ms", "--timeout", "5m", "-o"])
        .arg(&output);
    let out = run_bin(cmd).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(listing.readings(), 3);
    // Not a terminal: a plain line per reading.
    for n in 1..=3 {
        assert!(
            stderr.contains(&format!("status reading {n}: ")),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains("3/4 assigned") && stderr.contains("4/4 assigned"),
        "{stderr}"
    );
    assert!(
        status_lines(&output)
            .iter()
            .all(|l| l.3.starts_with("assigned"))
    );
    assert!(!RunLock::path_for(&output).exists());
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_secret_is_exit_3_and_nothing_is_read() {
    let (emulator, listing) = (emulator().await, Listing::new(None));
    let graph = listing.serve().await;
    let (_dir, path) = results(&created(2));
    let out = run_bin(status_bin(&path, &graph, &emulator, "wr0ng-value")).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("invalid_client"), "{stderr}");
    assert!(!stderr.contains("wr0ng-value"));
    assert_eq!(listing.pages(), 0);
    assert!(!path.with_file_name("devices.results.status.csv").exists());
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_results_file_is_exit_2_naming_file_and_line() {
    let (emulator, listing) = (emulator().await, Listing::new(None));
    let graph = listing.serve().await;
    let mut lines = created(2);
    lines.push(format!("3,{},maybe,201,a,1,,,,,5,x\n", device(2)));
    let (_dir, path) = results(&lines);
    let out = run_bin(status_bin(&path, &graph, &emulator, SECRET)).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("devices.results.csv line 4") && stderr.contains("\"maybe\""),
        "{stderr}"
    );
    assert_eq!(listing.pages(), 0);

    let out = run_bin(status_bin(
        &path.with_file_name("absent.csv"),
        &graph,
        &emulator,
        SECRET,
    ))
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("absent.csv"));
    emulator.shutdown().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_while_watching_is_exit_130_with_the_last_reading_on_disk() {
    let (emulator, listing) = (emulator().await, Listing::new(None));
    let graph = listing.serve().await;
    let (_dir, path) = results(&created(4));
    let mut cmd = status_cmd(&path, &graph, &emulator, SECRET);
    let child = cmd
        .args(["--watch", "--interval", "10ms", "-q"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    listing.second_reading.notified().await;
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let output = path.with_file_name("devices.results.status.csv");
    assert_eq!(status_lines(&output).len(), 4);
    emulator.shutdown().await;
}
