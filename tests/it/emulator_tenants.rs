//! One emulator standing in for several customer tenants (`EmulatorConfig::tenants`): each
//! has its own throttle window, store and counters; unknown tenants and per-tenant secrets
//! are refused at the token endpoint as Entra ID refuses them. Windows are long (a minute), so
//! that the tests count answers and never depend on how fast they run.

use std::collections::HashMap;
use std::time::Duration;

use crate::common;

use autopilot_bulk::emulator::{Emulator, EmulatorConfig, Limit, Stats};
use common::{SCOPE, SEED_BODY, assignments_url, token_at, token_request};
use serde_json::{Value, json};

const A: &str = "contoso";
const B: &str = "fabrikam";

fn device() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Two tenants, `A` and `B`, with a window of 5 writes a minute each.
fn two_tenants() -> EmulatorConfig {
    EmulatorConfig {
        limit: Limit::new(5, Duration::from_secs(60)),
        tenants: vec![A.into(), B.into()],
        ..EmulatorConfig::default()
    }
}

struct Env {
    emu: Emulator,
    http: reqwest::Client,
}

impl Env {
    async fn new(config: EmulatorConfig) -> Env {
        Env {
            emu: Emulator::start(config).await.unwrap(),
            http: reqwest::Client::new(),
        }
    }

    async fn token(&self, tenant: &str) -> String {
        token_at(
            &self.http,
            &self.emu.authority_url(),
            tenant,
            "app",
            "s3cret",
        )
        .await
    }

    async fn post(&self, token: &str, device: &str) -> u16 {
        self.http
            .post(assignments_url(&self.emu.graph_url(), device))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(SEED_BODY)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn get_json(&self, token: &str, url: &str) -> Value {
        let r = self.http.get(url).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// The token endpoint's answer for `tenant` with client secret `secret`.
    async fn token_answer(&self, tenant: &str, secret: &str) -> (u16, Value) {
        let r = token_request(
            &self.http,
            &self.emu.authority_url(),
            tenant,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "app"),
                ("scope", SCOPE),
                ("client_secret", secret),
            ],
        )
        .await;
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn http_stats(&self) -> Value {
        self.http
            .get(format!("{}/_emulator/stats", self.emu.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn by_status(pairs: &[(&str, u64)]) -> std::collections::BTreeMap<String, u64> {
    pairs.iter().map(|(s, n)| (s.to_string(), *n)).collect()
}

#[tokio::test]
async fn each_tenant_has_its_own_window_and_counters() {
    let env = Env::new(two_tenants()).await;
    let (a, b) = (env.token(A).await, env.token(B).await);
    for _ in 0..5 {
        assert_eq!(env.post(&a, &device()).await, 201);
    }
    assert_eq!(env.post(&a, &device()).await, 429);
    // A's full window is not B's.
    assert_eq!(env.post(&b, &device()).await, 201);
    // The tenant in the token URL is matched ignoring case: still A, still throttled.
    let a_upper = env.token("CONTOSO").await;
    assert_eq!(env.post(&a_upper, &device()).await, 429);

    let stats = env.emu.stats();
    let (sa, sb) = (&stats.tenants[A], &stats.tenants[B]);
    assert_eq!(stats.tenants.len(), 2);
    assert_eq!(
        sa.requests_by_status,
        by_status(&[("200", 2), ("201", 5), ("429", 2)])
    );
    assert_eq!(sb.requests_by_status, by_status(&[("200", 1), ("201", 1)]));
    assert_eq!((sa.assignments_created, sb.assignments_created), (5, 1));
    assert_eq!((sa.throttled, sb.throttled), (2, 0));
    assert_eq!((sa.write_requests, sb.write_requests), (7, 1));
    assert_eq!((sa.tokens_issued, sb.tokens_issued), (2, 1));
    assert!(sa.tenants.is_empty() && sb.tenants.is_empty());
    // The totals are what they always were: sums over the tenants.
    assert_eq!(
        stats.requests_by_status,
        by_status(&[("200", 3), ("201", 6), ("429", 2)])
    );
    assert_eq!(stats.assignments_created, 6);
    assert_eq!(stats.throttled, 2);
    assert_eq!(stats.token_requests, 3);

    // The same document over HTTP, with each tenant under `tenants`.
    let json = env.http_stats().await;
    assert_eq!(json["assignments_created"], 6);
    assert_eq!(json["tenants"][A]["assignments_created"], 5);
    assert_eq!(json["tenants"][B]["requests_by_status"]["201"], 1);
    assert!(json["tenants"][A].get("tenants").is_none(), "{json}");
    let parsed: Stats = serde_json::from_value(json).unwrap();
    assert_eq!(parsed, env.emu.stats());
}

#[tokio::test]
async fn retry_after_violations_count_for_the_tenant_that_made_them() {
    let env = Env::new(EmulatorConfig {
        limit: Limit::new(1, Duration::from_secs(60)),
        // No in-flight grace: any write before the stated time is a violation.
        violation_grace: Duration::ZERO,
        ..two_tenants()
    })
    .await;
    let (a, b) = (env.token(A).await, env.token(B).await);
    assert_eq!(env.post(&a, &device()).await, 201);
    assert_eq!(env.post(&a, &device()).await, 429);
    assert_eq!(env.post(&a, &device()).await, 429);
    assert_eq!(env.post(&b, &device()).await, 201);
    let stats = env.emu.stats();
    assert_eq!(stats.tenants[A].violations, 1);
    assert_eq!(stats.tenants[B].violations, 0);
    assert_eq!(stats.violations, 1);
}

#[tokio::test]
async fn assignments_and_duplicates_are_per_tenant() {
    let env = Env::new(two_tenants()).await;
    let (a, b) = (env.token(A).await, env.token(B).await);
    let shared = device();
    assert_eq!(env.post(&a, &shared).await, 201);
    assert_eq!(env.post(&a, &shared).await, 201);
    assert_eq!(env.post(&b, &shared).await, 201);
    let url = assignments_url(&env.emu.graph_url(), &shared);
    assert_eq!(
        env.get_json(&a, &url).await["value"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        env.get_json(&b, &url).await["value"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let stats = env.emu.stats();
    assert_eq!(stats.tenants[A].duplicate_devices, 1);
    assert_eq!(stats.tenants[B].duplicate_devices, 0);
    assert_eq!(stats.duplicate_devices, 1);
    assert_eq!(stats.devices_with_assignments, 2);
    assert_eq!(stats.tenants[A].assignment_reads, 1);

    let of = |t: &str| env.emu.tenant_assignments(t).unwrap()[&shared].len();
    assert_eq!((of(A), of("FABRIKAM")), (2, 1));
    assert!(env.emu.tenant_assignments("northwind").is_none());
    // All of them together: the device holds the three assignments.
    assert_eq!(env.emu.assignments()[&shared].len(), 3);
    let over_http: Value = env
        .http
        .get(format!(
            "{}/_emulator/assignments?tenant={B}",
            env.emu.url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http[&shared].as_array().unwrap().len(), 1);
    let unknown = env
        .http
        .get(format!(
            "{}/_emulator/assignments?tenant=northwind",
            env.emu.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn group_tags_and_profile_status_are_per_tenant() {
    let known = device();
    let env = Env::new(EmulatorConfig {
        identities: vec![(known.clone(), "SN-1".into())],
        assign_delay: Duration::ZERO,
        ..two_tenants()
    })
    .await;
    let (a, b) = (env.token(A).await, env.token(B).await);
    let r = env
        .http
        .post(format!(
            "{}/deviceManagement/windowsAutopilotDeviceIdentities/{known}/updateDeviceProperties",
            env.emu.graph_url()
        ))
        .bearer_auth(&a)
        .json(&json!({"groupTag": "Sales"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(env.post(&a, &known).await, 201);

    let url = format!(
        "{}/deviceManagement/windowsAutopilotDeviceIdentities/{known}",
        env.emu.graph_url()
    );
    let in_a = env.get_json(&a, &url).await;
    let in_b = env.get_json(&b, &url).await;
    assert_eq!(in_a["groupTag"], "Sales");
    assert_eq!(in_a["deploymentProfileAssignmentStatus"], "assignedInSync");
    // Both tenants list the same identity, but B never tagged nor assigned it.
    assert_eq!(in_b["groupTag"], "");
    assert_eq!(in_b["deploymentProfileAssignmentStatus"], "notAssigned");
    let stats = env.emu.stats();
    assert_eq!(
        (
            stats.tenants[A].group_tags_set,
            stats.tenants[B].group_tags_set
        ),
        (1, 0)
    );
    assert_eq!(
        (
            stats.tenants[A].identity_reads,
            stats.tenants[B].identity_reads
        ),
        (1, 1)
    );
}

#[tokio::test]
async fn batch_inner_answers_count_for_the_envelope_tenant() {
    let env = Env::new(two_tenants()).await;
    let b = env.token(B).await;
    let inner = |id: &str| {
        json!({
            "id": id,
            "method": "POST",
            "url": format!("/deviceManagement/windowsAutopilotDeviceIdentities/{}/deploymentProfile/assignments", device()),
            "headers": {"Content-Type": "application/json"},
            "body": serde_json::from_str::<Value>(SEED_BODY).unwrap(),
        })
    };
    let requests: Vec<Value> = (1..=6).map(|i| inner(&i.to_string())).collect();
    let r = env
        .http
        .post(format!("{}/$batch", env.emu.graph_url()))
        .bearer_auth(&b)
        .json(&json!({ "requests": requests }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let stats = env.emu.stats();
    let sb = &stats.tenants[B];
    assert_eq!(sb.batch_requests, 1);
    assert_eq!(
        sb.inner_requests_by_status,
        by_status(&[("201", 5), ("429", 1)])
    );
    assert_eq!(sb.requests_by_status, by_status(&[("200", 2)]));
    assert_eq!(stats.tenants[A].batch_requests, 0);
    assert!(stats.tenants[A].inner_requests_by_status.is_empty());
}

#[tokio::test]
async fn an_unknown_tenant_is_refused_as_entra_id_refuses_it() {
    let env = Env::new(two_tenants()).await;
    let (status, body) = env.token_answer("northwind", "s3cret").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(body["error_codes"], json!([90002]));
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(
            "AADSTS90002: Tenant 'northwind' not found. Check to make sure you have the correct \
             tenant ID and are signing into the correct cloud."
        ),
        "{description}"
    );
    for field in ["timestamp", "trace_id", "correlation_id"] {
        assert!(body[field].is_string(), "{field}: {body}");
    }
    // Counted in the totals, for no tenant.
    let stats = env.emu.stats();
    assert_eq!(stats.token_requests, 1);
    assert_eq!(stats.requests_by_status, by_status(&[("400", 1)]));
    assert!(stats.tenants.values().all(|t| t == &Stats::default()));
}

#[tokio::test]
async fn a_tenant_with_its_own_secret_refuses_the_others() {
    let env = Env::new(EmulatorConfig {
        client_secret: Some("s3cret".into()),
        tenant_secrets: HashMap::from([("FABRIKAM".to_string(), "other".to_string())]),
        ..two_tenants()
    })
    .await;
    assert_eq!(env.token_answer(A, "s3cret").await.0, 200);
    let (status, body) = env.token_answer(B, "s3cret").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"], json!([7000215]));
    assert_eq!(env.token_answer(B, "other").await.0, 200);
    assert_eq!(env.token_answer(A, "other").await.0, 401);
    let stats = env.emu.stats();
    assert_eq!(
        stats.tenants[B].requests_by_status,
        by_status(&[("200", 1), ("401", 1)])
    );
    assert_eq!(stats.tenants[B].token_requests, 2);
    assert_eq!(stats.tenants[B].tokens_issued, 1);
}

#[tokio::test]
async fn an_expired_token_counts_for_its_tenant() {
    let env = Env::new(EmulatorConfig {
        token_ttl: Duration::ZERO,
        ..two_tenants()
    })
    .await;
    let a = env.token(A).await;
    assert_eq!(env.post(&a, &device()).await, 401);
    assert_eq!(env.post("not-a-token", &device()).await, 401);
    let stats = env.emu.stats();
    assert_eq!(stats.tenants[A].expired_tokens, 1);
    assert_eq!(
        stats.tenants[A].requests_by_status,
        by_status(&[("200", 1), ("401", 1)])
    );
    // The token the emulator never issued names no tenant: totals only.
    assert_eq!(stats.requests_by_status["401"], 2);
}

#[tokio::test]
async fn without_tenants_any_tenant_shares_one_store() {
    let env = Env::new(EmulatorConfig::default()).await;
    let (a, b) = (env.token(A).await, env.token("any-other").await);
    let dev = device();
    assert_eq!(env.post(&a, &dev).await, 201);
    // Another tenant's token sees (and duplicates) the same assignment.
    let url = assignments_url(&env.emu.graph_url(), &dev);
    assert_eq!(
        env.get_json(&b, &url).await["value"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(env.post(&b, &dev).await, 201);
    let stats = env.emu.stats();
    assert!(stats.tenants.is_empty());
    assert_eq!(stats.duplicate_devices, 1);
    assert_eq!(stats.assignments_created, 2);
    assert_eq!(
        env.emu.tenant_assignments("whatever").unwrap()[&dev].len(),
        2
    );
    // The stats document has no `tenants` key: unchanged for single-tenant scripts.
    let json = env.http_stats().await;
    assert!(json.get("tenants").is_none(), "{json}");
}
