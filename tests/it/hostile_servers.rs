//! Small stand-in servers that answer the way real services sometimes do, and what the run
//! makes of each: never a lost row, never a duplicate assignment.

use crate::common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use autopilot_bulk::config::{Config, Credentials, RateSpec};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::{group_rows, input, read_results};

const ROUTE: &str =
    "/beta/deviceManagement/windowsAutopilotDeviceIdentities/{id}/deploymentProfile/assignments";

/// What the stand-in does with the first POST of a device.
#[derive(Clone, Copy)]
enum FirstPost {
    /// Stores it, then answers 504 as if the gateway gave up.
    StoredThen504,
    /// Stores it and answers 200 with the object (not Graph's 201).
    OkWithObject,
    /// Stores it, then answers 201 with an endless-looking body (20 MiB, chunked).
    StoredThenHugeBody,
    /// Stores it and answers 201 with a blank `id` (whitespace).
    StoredThenBlankId,
}

#[derive(Clone)]
struct Stand {
    first: FirstPost,
    base: Arc<Mutex<String>>,
    posts: Arc<AtomicU32>,
    stored: Arc<Mutex<Option<serde_json::Value>>>,
}

async fn post(State(s): State<Stand>, Json(mut body): Json<serde_json::Value>) -> Response {
    let n = s.posts.fetch_add(1, Ordering::SeqCst);
    body["id"] = format!("assignment-{n}").into();
    *s.stored.lock().unwrap() = Some(body.clone());
    match s.first {
        FirstPost::StoredThen504 if n == 0 => StatusCode::GATEWAY_TIMEOUT.into_response(),
        FirstPost::OkWithObject => (StatusCode::OK, Json(body)).into_response(),
        FirstPost::StoredThenHugeBody => {
            let chunks = (0..20).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1 << 20]));
            let body = axum::body::Body::from_stream(futures::stream::iter(chunks));
            (StatusCode::CREATED, body).into_response()
        }
        FirstPost::StoredThenBlankId => {
            let mut answer = body;
            answer["id"] = " ".into();
            (StatusCode::CREATED, Json(answer)).into_response()
        }
        _ => (StatusCode::CREATED, Json(body)).into_response(),
    }
}

/// Two pages: the first empty with a next link, the second holding what was stored.
async fn list(
    State(s): State<Stand>,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Json<serde_json::Value> {
    if q.get("$skiptoken").map(String::as_str) == Some("2") {
        let stored = s.stored.lock().unwrap().clone();
        return Json(serde_json::json!({ "value": stored.into_iter().collect::<Vec<_>>() }));
    }
    let base = s.base.lock().unwrap().clone();
    Json(serde_json::json!({
        "value": [],
        "@odata.nextLink": format!(
            "{base}/beta/deviceManagement/windowsAutopilotDeviceIdentities/{id}/deploymentProfile/assignments?$skiptoken=2"
        ),
    }))
}

async fn stand_in(first: FirstPost) -> (String, Stand) {
    let stand = Stand {
        first,
        base: Default::default(),
        posts: Default::default(),
        stored: Default::default(),
    };
    let app = axum::Router::new()
        .route(ROUTE, axum::routing::post(post).get(list))
        .with_state(stand.clone());
    let base = common::serve(app).await;
    *stand.base.lock().unwrap() = base.clone();
    (base, stand)
}

fn config(base: &str, csv: &std::path::Path) -> Config {
    let mut c = Config::new(csv, autopilot_bulk::config::default_output(csv));
    c.graph_url = format!("{base}/beta");
    c.credentials = Credentials::StaticToken("stand-in-token".into());
    c.rate = RateSpec::new(1000, std::time::Duration::from_secs(1));
    c.initial_backoff = std::time::Duration::from_millis(10);
    // The stand-ins answer a POST first: what follows an odd answer is what is tested.
    c.read_before_write = false;
    c
}

#[tokio::test]
async fn a_reconciling_read_follows_every_page_before_posting_again() {
    let (base, stand) = stand_in(FirstPost::StoredThen504).await;
    let (_dir, csv) = input(&group_rows(1));
    let config = config(&base, &csv);
    let summary = common::run(config.clone()).await;
    let lines = read_results(&config.output);
    assert_eq!(lines[0].status, "existing", "{lines:?}");
    assert_eq!(lines[0].assignment_id, "assignment-0");
    assert_eq!(stand.posts.load(Ordering::SeqCst), 1, "posted again");
    assert_eq!(summary.reconciliations, 2, "two pages read");
}

#[tokio::test]
async fn a_post_answered_200_with_the_object_is_created() {
    let (base, stand) = stand_in(FirstPost::OkWithObject).await;
    let (_dir, csv) = input(&group_rows(2));
    let config = config(&base, &csv);
    let summary = common::run(config.clone()).await;
    assert_eq!(summary.created, 2);
    let lines = read_results(&config.output);
    assert!(
        lines
            .iter()
            .all(|l| l.status == "created" && l.http_status == "200")
    );
    assert_eq!(stand.posts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_oversized_answer_is_cut_off_and_the_row_read_back() {
    let (base, stand) = stand_in(FirstPost::StoredThenHugeBody).await;
    let (_dir, csv) = input(&group_rows(1));
    let config = config(&base, &csv);
    common::run(config.clone()).await;
    let lines = read_results(&config.output);
    assert_eq!(lines[0].status, "existing", "{lines:?}");
    assert_eq!(stand.posts.load(Ordering::SeqCst), 1, "posted again");
}

#[tokio::test]
async fn a_created_answer_with_a_blank_id_is_read_back_not_recorded() {
    let (base, stand) = stand_in(FirstPost::StoredThenBlankId).await;
    let (_dir, csv) = input(&group_rows(1));
    let config = config(&base, &csv);
    common::run(config.clone()).await;
    let lines = read_results(&config.output);
    assert_eq!(lines[0].status, "existing", "{lines:?}");
    assert_eq!(lines[0].assignment_id, "assignment-0");
    assert_eq!(stand.posts.load(Ordering::SeqCst), 1, "posted again");
}

/// Every request refused at the transport level: the run stops as a whole (exit 3) instead of
/// letting every row spend its retry budget, and rows not finished stay for --resume.
#[tokio::test]
async fn an_unreachable_service_stops_the_run() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed); // connections are refused from now on
    let (_dir, csv) = input(&group_rows(20));
    let mut config = config(&base, &csv);
    config.max_attempts = 1000;
    config.unreachable_after = std::time::Duration::from_millis(200);
    let summary = common::run(config.clone()).await;
    assert_eq!(summary.exit_code(), 3, "{summary:?}");
    let reason = summary.aborted().expect("aborted");
    assert!(reason.contains("Graph unreachable"), "{reason}");
    assert!(reason.contains("ConnectionFailed"), "{reason}");
    assert!(summary.rows < 20, "every row spent its budget: {summary:?}");
}

const LISTING: &str = "/beta/deviceManagement/windowsAutopilotDeviceIdentities";

/// An identity listing that never ends: each page names a next one with a fresh `$skiptoken`,
/// and repeats the same two identities (or, `empty`, holds none).
async fn endless_listing(empty: bool) -> (String, Arc<AtomicU32>) {
    let pages = Arc::new(AtomicU32::new(0));
    let served = pages.clone();
    let app = axum::Router::new().route(
        LISTING,
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let n = served.fetch_add(1, Ordering::SeqCst);
            async move {
                let host = headers
                    .get(axum::http::header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let value = if empty {
                    vec![]
                } else {
                    (0..2)
                        .map(|i| {
                            serde_json::json!({"id": common::device(i), "serialNumber": format!("S{i}")})
                        })
                        .collect()
                };
                Json(serde_json::json!({
                    "value": value,
                    "@odata.nextLink": format!("http://{host}{LISTING}?$top=100&$skiptoken=t{n}"),
                }))
            }
        }),
    );
    (common::serve(app).await, pages)
}

#[tokio::test]
async fn a_listing_with_a_fresh_skiptoken_each_page_stops_serial_resolution() {
    for empty in [false, true] {
        let (base, pages) = endless_listing(empty).await;
        // 30 serial rows: more than are looked up one by one, so the listing is read.
        let mut csv = String::from("serial_number,group_id\n");
        for i in 0..30 {
            csv.push_str(&format!("S{i},{}\n", common::GROUP));
        }
        let (_dir, path) = input(&csv);
        let config = config(&base, &path);
        let summary = common::run(config.clone()).await;
        assert_eq!(summary.failed, 30, "{summary:?}");
        let lines = read_results(&config.output);
        assert!(
            lines.iter().all(|l| l.error_code == "PagingLoop"),
            "{lines:?}"
        );
        let message = &lines[0].error_message;
        assert!(
            message.contains("identity listing loops") && message.contains("5 pages in a row"),
            "{message}"
        );
        // The first page brings the two identities (empty: nothing); then five barren ones.
        let expected = if empty { 5 } else { 6 };
        assert_eq!(pages.load(Ordering::SeqCst), expected, "empty: {empty}");
    }
}

#[tokio::test]
async fn a_listing_with_a_fresh_skiptoken_each_page_stops_status() {
    let (base, pages) = endless_listing(false).await;
    let dir = tempfile::tempdir().unwrap();
    let results = one_landed_row(dir.path());
    let mut graph = Config::new(&results, std::path::PathBuf::new());
    graph.graph_url = format!("{base}/beta");
    graph.credentials = Credentials::StaticToken("stand-in-token".into());
    let status = autopilot_bulk::status::StatusConfig::new(&results, graph);
    let report = autopilot_bulk::status(status, tokio_util::sync::CancellationToken::new())
        .await
        .expect("status starts");
    assert_eq!(report.exit_code(), 3, "{report:?}");
    let reason = report.aborted.unwrap_or_default();
    assert!(
        reason.contains("identity listing loops") && reason.contains("5 pages in a row"),
        "{reason}"
    );
    assert_eq!(pages.load(Ordering::SeqCst), 6);
}

/// Text a hostile service controls (a token's claims, Graph's error messages) reaches the
/// terminal printable: no escape sequence, no carriage return, no forged line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_shows_server_text_without_control_characters() {
    const HOSTILE: &str = "denied\u{1b}]0;owned\u{7}\u{1b}[2J\r\n✓ preflight: ok\u{9b}31m";
    let app = axum::Router::new().route(
        LISTING,
        axum::routing::get(|| async {
            let body =
                serde_json::json!({"error": {"code": "Forbidden\u{1b}[5m", "message": HOSTILE}});
            (StatusCode::FORBIDDEN, Json(body))
        }),
    );
    let base = common::serve(app).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    let claims = serde_json::json!({
        "tid": "t\u{1b}[31m", "appid": "a\r\n✓ forged", "app_displayname": HOSTILE,
        "roles": ["DeviceManagementServiceConfig.ReadWrite.All"],
        "exp": 4_000_000_000u64,
    });
    let jwt = common::unsigned_jwt(serde_json::json!({"alg": "none"}), claims);
    std::fs::write(&token, jwt).unwrap();
    let mut cmd = common::bin();
    cmd.arg("preflight")
        .args(["--graph-url", &format!("{base}/beta")])
        .arg("--access-token-file")
        .arg(&token);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = common::text(&out.stdout);
    let stderr = common::text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("denied"),
        "Graph's message is shown: {stdout}"
    );
    assert!(stdout.contains("owned"), "the claims are shown: {stdout}");
    for raw in ['\u{1b}', '\r', '\u{7}', '\u{9b}'] {
        assert!(!stdout.contains(raw), "{raw:?} raw in:\n{stdout:?}");
        assert!(!stderr.contains(raw), "{raw:?} raw in:\n{stderr:?}");
    }
    assert!(
        !stdout
            .lines()
            .any(|l| l.starts_with("✓ preflight") || l.starts_with("✓ forged")),
        "a forged line:\n{stdout}"
    );
    assert!(
        stdout
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("preflight: FAIL"))
    );
}

/// Text with every way a hostile service might break a log line: ESC sequences, a bell, a
/// carriage return and a line break before a forged line.
const HOSTILE_MESSAGE: &str = "down\u{1b}]0;owned\u{7}\u{1b}[2J\r\n✓ status: all assigned";

/// An identity listing that answers its first `failing` requests 503 (Retry-After 0) with
/// [`HOSTILE_MESSAGE`], then one page holding device 0, assigned (in sync).
async fn failing_listing(failing: u32) -> (String, Arc<AtomicU32>) {
    let requests = Arc::new(AtomicU32::new(0));
    let counted = requests.clone();
    let app = axum::Router::new().route(
        LISTING,
        axum::routing::get(move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < failing {
                    let body = serde_json::json!({
                        "error": {"code": "ServiceUnavailable", "message": HOSTILE_MESSAGE}
                    });
                    let headers = [(axum::http::header::RETRY_AFTER, "0")];
                    return (StatusCode::SERVICE_UNAVAILABLE, headers, Json(body)).into_response();
                }
                Json(serde_json::json!({"value": [{
                    "id": common::device(0),
                    "deploymentProfileAssignmentStatus": "assignedInSync",
                }]}))
                .into_response()
            }
        }),
    );
    (common::serve(app).await, requests)
}

/// A results file with device 0 created.
fn one_landed_row(dir: &std::path::Path) -> std::path::PathBuf {
    let results = dir.join("devices.results.csv");
    std::fs::write(
        &results,
        format!(
            "row,device_id,status,http_status,assignment_id,attempts,error_code,error_message,\
             request_id,client_request_id,duration_ms,finished_at\n\
             1,{},created,201,a-1,1,,,,,5,2026-01-01T00:00:00Z\n",
            common::device(0)
        ),
    )
    .unwrap();
    results
}

/// `status` on a listing that keeps failing gives up within the retry budget, saying on what
/// and after how many attempts.
#[tokio::test]
async fn status_on_a_failing_listing_gives_up_saying_why() {
    let (base, requests) = failing_listing(u32::MAX).await;
    let dir = tempfile::tempdir().unwrap();
    let results = one_landed_row(dir.path());
    let mut graph = Config::new(&results, std::path::PathBuf::new());
    graph.graph_url = format!("{base}/beta");
    graph.credentials = Credentials::StaticToken("stand-in-token".into());
    graph.max_attempts = 3;
    let status = autopilot_bulk::status::StatusConfig::new(&results, graph);
    let report = autopilot_bulk::status(status, tokio_util::sync::CancellationToken::new())
        .await
        .expect("status starts");
    assert_eq!(report.exit_code(), 3, "{report:?}");
    let reason = report.aborted.unwrap_or_default();
    assert!(
        reason.contains("gave up on the identity listing after 3 attempts"),
        "{reason}"
    );
    assert!(
        !reason.contains(['\u{1b}', '\r', '\n', '\u{7}']),
        "{reason:?}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 3);
}

/// Each retry round of `status` says what it waits for, on one printable line: the service's
/// message without its control characters, no forged line; then the reading completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_each_retry_on_one_printable_line() {
    let (base, requests) = failing_listing(3).await;
    let dir = tempfile::tempdir().unwrap();
    let results = one_landed_row(dir.path());
    let mut cmd = common::bin();
    cmd.arg("status")
        .arg(&results)
        .args(["--graph-url", &format!("{base}/beta")])
        .env("GRAPH_ACCESS_TOKEN", "stand-in-token");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stderr = common::text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let rounds: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains("the identity listing: HTTP 503, ServiceUnavailable: down"))
        .collect();
    assert_eq!(rounds.len(), 3, "{stderr}");
    assert!(
        rounds[0].contains("(attempt 1); asking again in"),
        "{stderr}"
    );
    for raw in ['\u{1b}', '\r', '\u{7}'] {
        assert!(!stderr.contains(raw), "{raw:?} raw in:\n{stderr:?}");
    }
    assert!(
        !stderr.lines().any(|l| l.starts_with('✓')),
        "a forged line:\n{stderr}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 4);
}

/// A log line carrying a service's error message (a tag run that cannot read the devices'
/// tags says why) reaches stderr without the message's ESC, CR, LF or bell: no forged line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_service_error_reaches_stderr_without_control_characters() {
    let app = axum::Router::new().route(
        LISTING,
        axum::routing::get(|| async {
            let body = serde_json::json!({
                "error": {"code": "BadRequest\u{1b}[5m", "message": HOSTILE_MESSAGE}
            });
            (StatusCode::BAD_REQUEST, Json(body))
        }),
    );
    let base = common::serve(app).await;
    let (_dir, csv) = input(&format!(
        "device_id,group_tag\n{},Kiosk\n",
        common::device(0)
    ));
    let mut cmd = common::bin();
    cmd.arg("run")
        .arg(&csv)
        .args(["--action", "tag", "--graph-url", &format!("{base}/beta")])
        .args(["--max-attempts", "1"])
        .env("GRAPH_ACCESS_TOKEN", "stand-in-token");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stderr = common::text(&out.stderr);
    let warned: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains("cannot read the devices' group tags"))
        .collect();
    assert_eq!(warned.len(), 1, "{stderr}");
    assert!(warned[0].contains("down") && warned[0].contains("every row is written"));
    for raw in ['\u{1b}', '\r', '\u{7}'] {
        assert!(!stderr.contains(raw), "{raw:?} raw in:\n{stderr:?}");
    }
    assert!(
        !stderr.lines().any(|l| l.starts_with('✓')),
        "a forged line:\n{stderr}"
    );
}

/// The assignment route answering a 200 that is no page (an HTML error page from a proxy):
/// preflight names that route as what answered, not "the listing" (which answered fine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_names_the_route_that_answered_garbage() {
    let app = axum::Router::new()
        .route(
            LISTING,
            axum::routing::get(|| async {
                Json(
                    serde_json::json!({"value": [{"id": common::device(0), "serialNumber": "S0"}]}),
                )
            }),
        )
        .route(
            ROUTE,
            axum::routing::get(|| async { (StatusCode::OK, "<html>proxy error</html>") }),
        );
    let base = common::serve(app).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    let claims = serde_json::json!({
        "tid": "t", "appid": "a",
        "roles": ["DeviceManagementServiceConfig.ReadWrite.All"],
        "exp": 4_000_000_000u64,
    });
    std::fs::write(
        &token,
        common::unsigned_jwt(serde_json::json!({"alg": "none"}), claims),
    )
    .unwrap();
    let mut cmd = common::bin();
    cmd.arg("preflight")
        .args(["--graph-url", &format!("{base}/beta")])
        .arg("--access-token-file")
        .arg(&token);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = common::text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let route = format!(
        "GET /deviceManagement/windowsAutopilotDeviceIdentities/{}/deploymentProfile/assignments \
         answered a page that is not the JSON Graph sends",
        common::device(0)
    );
    let failed: Vec<_> = stdout
        .lines()
        .filter(|l| l.contains("UnreadableResponse"))
        .collect();
    assert_eq!(failed.len(), 1, "{stdout}");
    assert!(failed[0].contains(&route), "{stdout}");
    assert!(!failed[0].contains("the listing"), "{stdout}");
}

/// A serial is looked up as the row wrote it (how Graph's `contains` treats case is not
/// documented), and still matched without regard to case: the tenant spells it otherwise.
#[tokio::test]
async fn a_serial_is_looked_up_as_written_and_matched_ignoring_case() {
    let filters = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = filters.clone();
    let (base, stand) = stand_in(FirstPost::OkWithObject).await;
    let app = axum::Router::new()
        .route(
            LISTING,
            axum::routing::get(
                move |Query(q): Query<std::collections::HashMap<String, String>>| async move {
                    seen.lock().unwrap().extend(q.get("$filter").cloned());
                    Json(serde_json::json!({"value": [
                        {"id": common::device(0), "serialNumber": "PFMIXED01"}
                    ]}))
                },
            ),
        )
        .fallback(move |req: axum::extract::Request| {
            // Everything else goes to the assignment stand-in.
            let base = base.clone();
            async move {
                let url = format!("{base}{}", req.uri());
                let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                    .await
                    .unwrap();
                let answer = reqwest::Client::new()
                    .post(url)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
                (status, answer.bytes().await.unwrap()).into_response()
            }
        });
    let front = common::serve(app).await;
    let (_dir, csv) = input(&format!(
        "serial_number,group_id\n PfMixed01 ,{}\n",
        common::GROUP
    ));
    let config = config(&front, &csv);
    let summary = common::run(config.clone()).await;
    assert_eq!(
        filters.lock().unwrap().as_slice(),
        ["contains(serialNumber,'PfMixed01')"]
    );
    let lines = read_results(&config.output);
    assert_eq!(lines[0].status, "created", "{lines:?}");
    assert_eq!(lines[0].device_id, common::device(0));
    assert_eq!(summary.created, 1);
    assert_eq!(stand.posts.load(Ordering::SeqCst), 1);
}

/// An assignment route whose POST always answers 504 (so every row reconciles) and whose
/// list never ends: each page names a fresh `$skiptoken`, and holds nothing (`empty`) or a new
/// assignment of another target. The base URL, and the GETs served.
async fn endless_assignments(empty: bool) -> (String, Arc<AtomicU32>) {
    let gets = Arc::new(AtomicU32::new(0));
    let served = gets.clone();
    let list = move |headers: axum::http::HeaderMap, uri: axum::http::Uri| {
        let n = served.fetch_add(1, Ordering::SeqCst);
        async move {
            let host = headers
                .get(axum::http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let value = if empty {
                vec![]
            } else {
                vec![serde_json::json!({
                    "id": format!("other-{n}"),
                    "target": {"@odata.type": "#microsoft.graph.groupAssignmentTarget",
                               "groupId": common::device(9)},
                })]
            };
            Json(serde_json::json!({
                "value": value,
                "@odata.nextLink": format!("http://{host}{}?$skiptoken=t{n}", uri.path()),
            }))
        }
    };
    let app = axum::Router::new().route(
        ROUTE,
        axum::routing::post(|| async { StatusCode::GATEWAY_TIMEOUT }).get(list),
    );
    (common::serve(app).await, gets)
}

/// A reconciling read of a device's assignments that would page for ever stops, as the
/// identity listing does: after five pages that add nothing, or after a cap of pages that each
/// add something; the row fails saying so, and is never posted blindly.
#[tokio::test]
async fn an_endless_assignment_list_stops_the_row_with_a_reason() {
    for (empty, pages, why) in [
        (true, 5, "5 pages in a row"),
        (false, 100, "more than such a list holds"),
    ] {
        let (base, gets) = endless_assignments(empty).await;
        let (_dir, csv) = input(&group_rows(1));
        let mut config = config(&base, &csv);
        config.max_attempts = 2;
        let summary = common::run(config.clone()).await;
        let lines = read_results(&config.output);
        assert_eq!(summary.failed, 1, "{summary:?}");
        assert_eq!(lines[0].error_code, "PagingLoop", "{lines:?}");
        let message = &lines[0].error_message;
        assert!(
            message.contains("the assignment list loops") && message.contains(why),
            "{message}"
        );
        assert_eq!(gets.load(Ordering::SeqCst), pages, "empty: {empty}");
    }
}
