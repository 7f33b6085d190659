//! The emulator's timed outage (`EmulatorConfig::outage`), driven in-process over HTTP (port
//! 0, reqwest). Timing is asserted only where it cannot flake: the assignment POST that starts
//! the clock of an outage at 0 is refused by construction, outages meant to be "still on" last
//! a minute, and "after" means after sleeping well past the end.

use std::time::Duration;

use crate::common;

use autopilot_bulk::emulator::{EmulatorConfig, Outage};
use common::{GraphEnv, SEED_BODY, header, token_at};
use serde_json::{Value, json};

const IDENTITIES: &str = "/deviceManagement/windowsAutopilotDeviceIdentities";

fn device() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn outage(at_ms: u64, length_ms: u64, retry_after: Option<u64>) -> Option<Outage> {
    Some(Outage {
        at: Duration::from_millis(at_ms),
        length: Duration::from_millis(length_ms),
        retry_after,
    })
}

/// Checks a refused request: 503, the Retry-After asked for, Graph's ids in the headers, and
/// Graph's own error envelope (never Intune's form: with Graph down, Intune is not reached).
async fn assert_refused(r: reqwest::Response, retry_after: Option<u64>, what: &str) {
    assert_eq!(r.status(), 503, "{what}");
    assert_eq!(
        header(&r, "retry-after"),
        retry_after.map(|s| s.to_string()),
        "{what}"
    );
    assert!(header(&r, "request-id").is_some(), "{what}");
    let body: Value = r.json().await.unwrap();
    assert_refused_body(&body, what);
}

fn assert_refused_body(body: &Value, what: &str) {
    let e = &body["error"];
    assert_eq!(e["code"], "ServiceUnavailable", "{what}: {body}");
    assert_eq!(
        e["message"], "The service is temporarily unavailable. Please retry later.",
        "{what}: {body}"
    );
    for id in ["date", "request-id", "client-request-id"] {
        assert!(e["innerError"][id].is_string(), "{what}: {body}");
    }
}

/// Until the first assignment POST Graph is up; that POST starts the clock and, with the
/// outage at 0, is itself refused; from then on every Graph route is refused, the token
/// endpoint still answers, and nothing refused is executed, throttle-counted or drawn a
/// fault for.
#[tokio::test]
async fn an_outage_refuses_every_graph_request_but_not_the_token_endpoint() {
    for retry_after in [Some(2), None] {
        let dev = device();
        let env = GraphEnv::new(EmulatorConfig {
            outage: outage(0, 60_000, retry_after),
            identities: vec![(dev.clone(), "SER1".into())],
            devices: Some([dev.clone()].into()),
            intune_envelope: true,
            ..EmulatorConfig::default()
        })
        .await;
        let own_assignments = format!("{IDENTITIES}/{dev}/deploymentProfile/assignments");
        // Reads before any assignment POST: the clock has not started.
        assert_eq!(env.get_path(IDENTITIES).await.status(), 200);
        assert_eq!(env.get_path(&own_assignments).await.status(), 200);

        assert_refused(env.post(&dev, SEED_BODY).await, retry_after, "first POST").await;
        assert_refused(env.post(&dev, SEED_BODY).await, retry_after, "second POST").await;
        assert_refused(env.get_path(&own_assignments).await, retry_after, "GET").await;
        assert_refused(env.get_path(IDENTITIES).await, retry_after, "listing").await;
        assert_refused(
            env.get_path(&format!("{IDENTITIES}/{dev}")).await,
            retry_after,
            "identity",
        )
        .await;
        let update = env
            .http
            .post(format!(
                "{}{IDENTITIES}/{dev}/updateDeviceProperties",
                env.emu.graph_url()
            ))
            .bearer_auth(&env.token)
            .json(&json!({"groupTag": "Kiosk"}))
            .send()
            .await
            .unwrap();
        assert_refused(update, retry_after, "updateDeviceProperties").await;
        let batch = env
            .batch(json!({"requests": [{"id": "1", "method": "GET", "url": own_assignments}]}))
            .await;
        assert_refused(batch, retry_after, "$batch envelope").await;

        // Entra ID is not Graph: a new token is issued, and its Graph requests refused.
        let token = token_at(
            &env.http,
            &env.emu.authority_url(),
            "contoso",
            "app",
            "s3cret",
        )
        .await;
        let with_new_token = env
            .http
            .get(format!("{}{own_assignments}", env.emu.graph_url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_refused(with_new_token, retry_after, "new token").await;
        // The bearer check comes first: a bad token is still a 401, not an outage answer.
        let bad_token = env
            .http
            .get(format!("{}{own_assignments}", env.emu.graph_url()))
            .bearer_auth("not-a-token")
            .send()
            .await
            .unwrap();
        assert_eq!(bad_token.status(), 401);

        let stats = env.emu.stats();
        assert_eq!(stats.outage_requests, 8, "{stats:?}");
        assert_eq!(stats.requests_by_status.get("503"), Some(&8), "{stats:?}");
        assert_eq!(stats.token_requests, 2);
        assert_eq!(
            (
                stats.write_requests,
                stats.assignment_reads,
                stats.identity_reads
            ),
            (0, 1, 1),
            "only the reads before the outage reached the throttle: {stats:?}"
        );
        assert_eq!(
            (
                stats.throttled,
                stats.faults_503,
                stats.batch_requests,
                stats.assignments_created,
                stats.group_tags_set
            ),
            (0, 0, 0, 0, 0),
            "{stats:?}"
        );
        assert!(env.emu.assignments().is_empty());
        env.emu.shutdown().await;
    }
}

/// A `$batch` whose inner POST is the first assignment POST: the envelope got in while Graph
/// was up, but its inner requests from that POST on are refused, each with its own
/// Retry-After; a later envelope is refused whole.
#[tokio::test]
async fn inner_requests_of_a_batch_are_refused_too() {
    let env = GraphEnv::new(EmulatorConfig {
        outage: outage(0, 60_000, Some(1)),
        ..EmulatorConfig::default()
    })
    .await;
    let dev = device();
    let path = format!("{IDENTITIES}/{dev}/deploymentProfile/assignments");
    let r = env
        .batch(json!({"requests": [
            {"id": "a", "method": "POST", "url": path, "body": serde_json::from_str::<Value>(SEED_BODY).unwrap(), "headers": {"Content-Type": "application/json"}},
            {"id": "b", "method": "GET", "url": path},
        ]}))
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let responses = body["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 2, "{body}");
    for response in responses {
        assert_eq!(response["status"], 503, "{body}");
        assert_eq!(response["headers"]["Retry-After"], "1", "{body}");
        assert_refused_body(&response["body"], "inner request");
    }
    assert_refused(
        env.batch(json!({"requests": [{"id": "1", "method": "GET", "url": path}]}))
            .await,
        Some(1),
        "second envelope",
    )
    .await;
    let stats = env.emu.stats();
    assert_eq!(stats.outage_requests, 3, "{stats:?}");
    assert_eq!(stats.batch_requests, 1, "{stats:?}");
    assert_eq!(stats.inner_requests_by_status.get("503"), Some(&2));
    assert_eq!(stats.write_requests, 0);
    assert!(env.emu.assignments().is_empty());
}

/// After the outage, requests are served again; the refused POST was never counted by the
/// throttle (with a window of one, it would have left no room), while the window itself works.
#[tokio::test]
async fn after_the_outage_requests_succeed_and_the_refused_ones_left_the_window_alone() {
    let env = GraphEnv::new(EmulatorConfig {
        limit: autopilot_bulk::emulator::Limit::new(1, Duration::from_secs(60)),
        outage: outage(0, 300, Some(1)),
        ..EmulatorConfig::default()
    })
    .await;
    let dev = device();
    assert_refused(env.post(&dev, SEED_BODY).await, Some(1), "during").await;
    // Well past the end of the outage.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = env.post(&dev, SEED_BODY).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_eq!(env.post(&device(), SEED_BODY).await.status(), 429);
    let stats = env.emu.stats();
    assert_eq!(stats.outage_requests, 1, "{stats:?}");
    assert_eq!(stats.write_requests, 2, "{stats:?}");
    assert_eq!(stats.assignments_created, 1);
    assert_eq!(env.emu.assignments()[&dev].len(), 1);
}

/// The clock starts at the first assignment POST, not when the emulator starts, and the
/// outage begins `at` after it.
#[tokio::test]
async fn the_outage_begins_at_after_the_first_assignment_post() {
    let env = GraphEnv::new(EmulatorConfig {
        outage: outage(200, 60_000, None),
        ..EmulatorConfig::default()
    })
    .await;
    // Longer than `at` since the start, but no assignment POST yet: still up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.get_path(IDENTITIES).await.status(), 200);
    let first = device();
    assert_eq!(env.post(&first, SEED_BODY).await.status(), 201);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_refused(env.post(&device(), SEED_BODY).await, None, "after `at`").await;
    let stats = env.emu.stats();
    assert_eq!(
        (stats.outage_requests, stats.assignments_created),
        (1, 1),
        "{stats:?}"
    );
}

/// One outage for the whole emulator: one tenant's POST starts it for every tenant, and each
/// tenant counts its own refused requests.
#[tokio::test]
async fn one_outage_for_every_tenant_counted_per_tenant() {
    let env = GraphEnv::as_tenant(
        EmulatorConfig {
            tenants: vec!["a".into(), "b".into()],
            outage: outage(0, 60_000, None),
            ..EmulatorConfig::default()
        },
        "a",
    )
    .await;
    let b = token_at(&env.http, &env.emu.authority_url(), "b", "app", "s3cret").await;
    assert_refused(env.post(&device(), SEED_BODY).await, None, "tenant a").await;
    let r = env
        .http
        .get(format!("{}{IDENTITIES}", env.emu.graph_url()))
        .bearer_auth(b)
        .send()
        .await
        .unwrap();
    assert_refused(r, None, "tenant b").await;
    let stats = env.emu.stats();
    assert_eq!(stats.outage_requests, 2);
    assert_eq!(stats.tenants["a"].outage_requests, 1);
    assert_eq!(stats.tenants["b"].outage_requests, 1);
}

/// Without an outage nothing changes, and the counter is still served (as 0).
#[tokio::test]
async fn no_outage_by_default() {
    let env = GraphEnv::new(EmulatorConfig::default()).await;
    assert_eq!(env.post(&device(), SEED_BODY).await.status(), 201);
    let stats: Value = env
        .http
        .get(format!("{}/_emulator/stats", env.emu.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["outage_requests"], 0, "{stats}");
    assert_eq!(stats["assignments_created"], 1, "{stats}");
}

/// `emulate --outage-at/--outage-for/--outage-retry-after` build the config; `--outage-for`
/// alone means at 0, and the other two need it.
#[test]
fn outage_flags_build_the_config() {
    use autopilot_bulk::cli::{Cli, Command};
    use clap::Parser as _;
    let parse = |extra: &[&str]| {
        let mut args = vec!["autopilot-bulk", "emulate"];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args).map(|cli| match cli.command {
            Command::Emulate(e) => e.to_config().unwrap().outage,
            _ => unreachable!(),
        })
    };
    assert_eq!(parse(&[]).unwrap(), None);
    assert_eq!(
        parse(&["--outage-for", "4s", "--outage-retry-after", "1"]).unwrap(),
        outage(0, 4000, Some(1))
    );
    assert_eq!(
        parse(&["--outage-at", "2s", "--outage-for", "500ms"]).unwrap(),
        outage(2000, 500, None)
    );
    for bad in [
        &["--outage-at", "2s"][..],
        &["--outage-retry-after", "1"],
        &["--outage-for", "soon"],
        &["--outage-for", "1s", "--outage-retry-after", "-1"],
    ] {
        assert!(parse(bad).is_err(), "{bad:?} accepted");
    }
}
