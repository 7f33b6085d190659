//! Many tenants in one run: each at its own limit, through its own token, window and breaker.
//! Each tenant here is its own in-process emulator, so every service-side counter is that
//! tenant's alone.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use autopilot_bulk::config::{Cloud, Config, Credentials, RateSpec, Tenant};
use autopilot_bulk::emulator::{Emulator, EmulatorConfig};
use common::*;

const KEYS: [&str; 4] = ["contoso", "fabrikam", "northwind", "tailspin"];

async fn service(limit: RateSpec, secret: Option<&str>) -> Emulator {
    Emulator::start(EmulatorConfig {
        client_secret: secret.map(str::to_string),
        ..emulator_config(limit)
    })
    .await
    .unwrap()
}

fn tenant(key: &str, emulator: &Emulator, rate: RateSpec, secret: &str) -> Tenant {
    Tenant {
        key: key.into(),
        credentials: Credentials::ClientSecret {
            tenant_id: format!("{key}.onmicrosoft.com"),
            client_id: "autopilot-bulk".into(),
            secret: secret.into(),
        },
        cloud: Cloud::Global,
        graph_url: emulator.graph_url(),
        authority_url: emulator.authority_url(),
        rate,
    }
}

/// `rows` rows for each tenant of `keys`, interleaved (`a, b, c, a, b, c, …`) or one tenant's
/// block after another; device `i` of tenant `t` is `device(t * 10_000 + i)`.
fn rows(keys: &[&str], rows: u32, interleaved: bool) -> String {
    let mut s = String::from("tenant,device_id,group_id\n");
    let mut line = |t: usize, i: u32| {
        let d = device(t as u32 * 10_000 + i);
        // Keys in any case: the file's spelling is what the results give.
        let key = if i.is_multiple_of(2) {
            keys[t].to_uppercase()
        } else {
            keys[t].to_string()
        };
        s.push_str(&format!("{key},{d},{GROUP}\n"));
    };
    if interleaved {
        (0..rows).for_each(|i| (0..keys.len()).for_each(|t| line(t, i)));
    } else {
        (0..keys.len()).for_each(|t| (0..rows).for_each(|i| line(t, i)));
    }
    s
}

fn config(input: &Path, tenants: Vec<Tenant>) -> Config {
    let mut c = Config::new(input, autopilot_bulk::config::default_output(input));
    c.tenants = tenants;
    c.concurrency = 4;
    c.initial_backoff = std::time::Duration::from_millis(50);
    c
}

/// The devices the results report `status` for, by tenant.
fn devices_by_tenant(results: &[ResultLine], status: &str) -> BTreeMap<String, HashSet<String>> {
    let mut by = BTreeMap::<String, HashSet<String>>::new();
    for r in results.iter().filter(|r| r.status == status) {
        by.entry(r.tenant.clone())
            .or_default()
            .insert(r.device_id.to_lowercase());
    }
    by
}

#[tokio::test]
async fn three_tenants_each_at_its_own_limit_every_row_once_where_it_belongs() {
    let limit = rate(20, 500);
    let mut services = Vec::new();
    for _ in 0..3 {
        services.push(service(limit, None).await);
    }
    let keys = &KEYS[..3];
    let (_dir, input) = input(&rows(keys, 40, true));
    let tenants = keys
        .iter()
        .zip(&services)
        .map(|(k, e)| tenant(k, e, limit, "emulator"))
        .collect();
    let summary = run(config(&input, tenants)).await;
    assert_eq!(summary.exit_code(), 0, "{summary:?}");
    assert_eq!(summary.created, 120);
    let results = read_results(&autopilot_bulk::config::default_output(&input));
    assert_each_row_once(&results, 120);
    let created = devices_by_tenant(&results, "created");
    for (t, (key, emulator)) in keys.iter().zip(&services).enumerate() {
        // Each tenant's devices went to its own service, and only there.
        let held: HashSet<String> = emulator.assignments().into_keys().collect();
        let expected: HashSet<String> = (0..40).map(|i| device(t as u32 * 10_000 + i)).collect();
        assert_eq!(held, expected, "tenant {key}");
        assert_eq!(created[*key], expected, "tenant {key}");
        let stats = emulator.stats();
        assert_eq!(stats.violations, 0, "tenant {key} ignored a Retry-After");
        assert_eq!(stats.duplicate_devices, 0, "tenant {key}");
        let s = summary.tenants.iter().find(|s| s.tenant == *key).unwrap();
        assert_eq!((s.created, s.failed, s.invalid), (40, 0, 0), "{s:?}");
        assert!(s.requests >= 40 && s.aborted.is_none(), "{s:?}");
    }
    let json = autopilot_bulk::summary::summary_json(&summary, 0);
    assert_eq!(json["tenants"]["fabrikam"]["rows"]["created"], 40);
    assert_eq!(json["tenants"]["northwind"]["outcome"], "completed");
}

#[tokio::test]
async fn a_tenant_with_a_wrong_secret_fails_its_rows_and_the_others_complete() {
    let limit = rate(50, 500);
    let mut services = Vec::new();
    for _ in 0..4 {
        services.push(service(limit, Some("right")).await);
    }
    let (_dir, input) = input(&rows(&KEYS, 15, true));
    let tenants = KEYS
        .iter()
        .zip(&services)
        .map(|(k, e)| {
            let secret = if *k == "tailspin" { "wrong" } else { "right" };
            tenant(k, e, limit, secret)
        })
        .collect();
    let summary = run(config(&input, tenants)).await;
    assert_eq!(summary.exit_code(), 3, "{summary:?}");
    let aborted = summary.aborted().unwrap_or_default();
    assert!(
        aborted.starts_with("tenant tailspin: authentication failed"),
        "{aborted}"
    );
    let results = read_results(&autopilot_bulk::config::default_output(&input));
    assert_each_row_once(&results, 60);
    for r in &results {
        if r.tenant == "tailspin" {
            assert_eq!(r.status, "failed", "{r:?}");
            assert_eq!(r.error_code, "AuthenticationFailed", "{r:?}");
            assert!(r.error_message.contains("authentication failed"), "{r:?}");
            assert!(
                !r.error_message.contains("wrong"),
                "the secret leaked: {r:?}"
            );
        } else {
            assert_eq!(r.status, "created", "{r:?}");
        }
    }
    assert_eq!(services[3].stats().assignments_created, 0);
    for e in &services[..3] {
        assert_eq!(e.stats().assignments_created, 15);
    }
    let tailspin = summary
        .tenants
        .iter()
        .find(|s| s.tenant == "tailspin")
        .unwrap();
    assert_eq!((tailspin.failed, tailspin.created), (15, 0));
    assert!(tailspin.aborted.is_some());
    let json = autopilot_bulk::summary::summary_json(&summary, 3);
    assert_eq!(json["tenants"]["tailspin"]["outcome"], "aborted");
    assert_eq!(json["tenants"]["contoso"]["outcome"], "completed");

    // Fixed, the failed rows are done by --resume, and nothing twice.
    let tenants = KEYS
        .iter()
        .zip(&services)
        .map(|(k, e)| tenant(k, e, limit, "right"))
        .collect();
    let mut again = config(&input, tenants);
    again.resume = true;
    let summary = run(again).await;
    assert_eq!(summary.exit_code(), 0, "{summary:?}");
    assert_eq!((summary.created, summary.skipped), (15, 45));
    let results = read_results(&autopilot_bulk::config::default_output(&input));
    assert_each_row_once(&results, 60);
    assert!(results.iter().all(|r| r.status == "created"));
    for e in &services {
        assert_eq!(e.stats().assignments_created, 15);
        assert_eq!(e.stats().duplicate_devices, 0);
    }
}

#[tokio::test]
async fn a_tenant_waiting_for_its_window_never_holds_back_another() {
    // The slow tenant's rows all come first, far more than its queue holds in memory: the
    // reader must go past them (they wait on disk) to reach the fast tenant's rows.
    let (slow_limit, fast_limit) = (rate(5, 500), rate(10_000, 1000));
    let slow = service(slow_limit, None).await;
    let fast = service(fast_limit, None).await;
    let (_dir, input) = input(&rows(&KEYS[..2], 40, false));
    let mut c = config(
        &input,
        vec![
            tenant(KEYS[0], &slow, slow_limit, "emulator"),
            tenant(KEYS[1], &fast, fast_limit, "emulator"),
        ],
    );
    c.tenant_queue = 4;
    c.adaptive_concurrency = false;
    c.concurrency = 2;
    let summary = run(c).await;
    assert_eq!(summary.exit_code(), 0, "{summary:?}");
    let results = read_results(&autopilot_bulk::config::default_output(&input));
    assert_each_row_once(&results, 80);
    // Results are in completion order. Had the reader waited for the slow tenant's queue, the
    // fast tenant could only have started once 40 - 4 - 2 = 34 slow rows were done.
    let fast_done = results.iter().rposition(|r| r.tenant == KEYS[1]).unwrap();
    let slow_before = results[..fast_done]
        .iter()
        .filter(|r| r.tenant == KEYS[0])
        .count();
    assert!(
        slow_before < 20,
        "{slow_before} slow rows finished before the fast tenant's last"
    );
    assert_eq!(slow.stats().violations, 0);
    assert_eq!(slow.stats().assignments_created, 40);
    assert_eq!(fast.stats().assignments_created, 40);
}

#[tokio::test]
async fn rows_without_a_known_tenant_are_invalid_and_named() {
    let limit = rate(100, 1000);
    let e = service(limit, None).await;
    let csv = format!(
        "device_id,group_id,Tenant\n{},{GROUP},contoso\n{},{GROUP},\n{},{GROUP},woodgrove\n",
        device(1),
        device(2),
        device(3)
    );
    let (_dir, input) = input(&csv);
    let summary = run(config(
        &input,
        vec![tenant("contoso", &e, limit, "emulator")],
    ))
    .await;
    assert_eq!(summary.exit_code(), 1);
    let results = read_results(&autopilot_bulk::config::default_output(&input));
    assert_each_row_once(&results, 3);
    let by_row: BTreeMap<u64, &ResultLine> = results.iter().map(|r| (r.row, r)).collect();
    assert_eq!(
        (by_row[&1].status.as_str(), by_row[&1].tenant.as_str()),
        ("created", "contoso")
    );
    assert_eq!(by_row[&2].status, "invalid");
    assert!(
        by_row[&2].error_message.contains("tenant is empty"),
        "{:?}",
        by_row[&2]
    );
    assert_eq!(by_row[&3].status, "invalid");
    assert_eq!(by_row[&3].tenant, "woodgrove");
    assert!(
        by_row[&3]
            .error_message
            .contains("\"woodgrove\" is not in the tenants file (it names: contoso)"),
        "{:?}",
        by_row[&3]
    );
}

#[tokio::test]
async fn without_tenants_a_tenant_column_is_ignored() {
    let e = service(rate(100, 1000), None).await;
    let csv = format!("device_id,group_id,tenant\n{},{GROUP},contoso\n", device(1));
    let (_dir, input) = input(&csv);
    let summary = run(config_for(&e, &input, rate(100, 1000))).await;
    assert_eq!(summary.exit_code(), 0);
    assert!(summary.tenants.is_empty());
    let results = read_results(&autopilot_bulk::config::default_output(&input));
    assert_eq!(results.len(), 1);
    assert_eq!(
        (results[0].status.as_str(), results[0].tenant.as_str()),
        ("created", "")
    );
}

#[test]
fn the_binary_rehearses_a_tenants_file_on_the_emulator() {
    let (dir, input) = input(&rows(&KEYS[..2], 10, true));
    let toml = dir.path().join("tenants.toml");
    let mut file = String::new();
    for key in &KEYS[..2] {
        file.push_str(&format!(
            "[tenants.{key}]\ntenant_id = \"{key}.onmicrosoft.com\"\nclient_id = \
             \"00000000-0000-0000-0000-000000000000\"\nclient_secret_env = \"SECRET_{key}\"\n\n"
        ));
    }
    std::fs::write(&toml, file).unwrap();
    let summary = dir.path().join("summary.json");
    let out = bin()
        .arg("run")
        .arg(&input)
        .arg("--tenants")
        .arg(&toml)
        .arg("--emulator")
        .arg("--summary-json")
        .arg(&summary)
        .arg("-q")
        .env("SECRET_contoso", "s3cr3t-contoso")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let results = read_results(&autopilot_bulk::config::default_output(&input));
    assert_each_row_once(&results, 20);
    let by_tenant = devices_by_tenant(&results, "created");
    assert_eq!(
        (by_tenant["contoso"].len(), by_tenant["fabrikam"].len()),
        (10, 10)
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(v["tenants"]["contoso"]["rows"]["created"], 10);
    assert_eq!(v["tenants"]["fabrikam"]["outcome"], "completed");
    // The emulator stood in for each tenant, each with its own store.
    let stderr = text(&out.stderr);
    for key in &KEYS[..2] {
        let line = format!("emulator tenant {key}.onmicrosoft.com: 10 assignments created");
        assert!(stderr.contains(&line), "{stderr}");
    }
    let all = format!("{}{}{v}", text(&out.stdout), text(&out.stderr));
    assert!(!all.contains("s3cr3t"), "the secret leaked: {all}");
}

#[tokio::test]
async fn a_tripped_breaker_stops_only_its_tenant_and_names_itself_on_every_row_left() {
    let limit = rate(1000, 1000);
    let good = service(limit, None).await;
    let denied = Emulator::start(EmulatorConfig {
        deny_permission: true,
        ..emulator_config(limit)
    })
    .await
    .unwrap();
    let (_dir, input) = input(&rows(&KEYS[..2], 40, true));
    let mut c = config(
        &input,
        vec![
            tenant(KEYS[0], &good, limit, "emulator"),
            tenant(KEYS[1], &denied, limit, "emulator"),
        ],
    );
    c.adaptive_concurrency = false;
    c.concurrency = 2;
    let summary = run(c).await;
    assert_eq!(summary.exit_code(), 3, "{summary:?}");
    let results = read_results(&autopilot_bulk::config::default_output(&input));
    assert_each_row_once(&results, 80);
    let denied_rows: Vec<&ResultLine> = results.iter().filter(|r| r.tenant == KEYS[1]).collect();
    assert!(
        denied_rows.iter().all(|r| r.status == "failed"),
        "{denied_rows:?}"
    );
    let forbidden = denied_rows
        .iter()
        .filter(|r| r.http_status == "403")
        .count();
    let stopped = denied_rows
        .iter()
        .filter(|r| r.error_code == "CircuitBreakerOpen")
        .count();
    // About ten rows meet the 403 themselves; every other row is failed by the breaker.
    assert!(
        (10..=12).contains(&forbidden),
        "{forbidden} rows answered 403"
    );
    assert_eq!(forbidden + stopped, 40, "{denied_rows:?}");
    assert!(
        denied_rows
            .iter()
            .filter(|r| r.error_code == "CircuitBreakerOpen")
            .all(|r| r.error_message.contains("circuit breaker")),
        "{denied_rows:?}"
    );
    assert!(
        results
            .iter()
            .filter(|r| r.tenant == KEYS[0])
            .all(|r| r.status == "created")
    );
    assert_eq!(good.stats().assignments_created, 40);
}

#[test]
fn validate_and_dry_run_check_every_rows_tenant_without_the_secrets() {
    let csv = format!(
        "tenant,device_id,group_id\ncontoso,{},{GROUP}\nwoodgrove,{},{GROUP}\n,{},{GROUP}\n",
        device(1),
        device(2),
        device(3)
    );
    let (dir, input) = input(&csv);
    let toml = dir.path().join("tenants.toml");
    std::fs::write(
        &toml,
        "[tenants.Contoso]\ntenant_id = \"contoso.onmicrosoft.com\"\nclient_id = \
         \"00000000-0000-0000-0000-000000000000\"\nclient_secret_env = \"NOT_SET_HERE\"\n",
    )
    .unwrap();
    let out = bin()
        .arg("validate")
        .arg(&input)
        .arg("--tenants")
        .arg(&toml)
        .output()
        .unwrap();
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("\"woodgrove\" is not in the tenants file (it names: Contoso)"),
        "{said}"
    );
    assert!(said.contains("tenant is empty"), "{said}");
    assert!(
        !said.contains("row 1:"),
        "row 1 names Contoso in another case: {said}"
    );
    // A dry run checks the same, and needs the secret (it is the run's own check).
    let out = bin()
        .arg("run")
        .arg(&input)
        .arg("--tenants")
        .arg(&toml)
        .arg("--dry-run")
        .env("NOT_SET_HERE", "s")
        .output()
        .unwrap();
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("is not in the tenants file"), "{said}");
}

#[test]
fn the_tenants_sample_rehearses_on_the_emulator() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("tenants.results.csv");
    let out = bin()
        .args([
            "run",
            "samples/tenants.csv",
            "--tenants",
            "samples/tenants.toml",
            "--emulator",
        ])
        .arg("-o")
        .arg(&results)
        .arg("-q")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let lines = read_results(&results);
    assert_each_row_once(&lines, 42);
    let created = devices_by_tenant(&lines, "created");
    let counts: Vec<usize> = ["contoso", "fabrikam", "northwind"]
        .iter()
        .map(|t| created[*t].len())
        .collect();
    assert_eq!(counts, [20, 12, 8]);
    let invalid: Vec<u64> = lines
        .iter()
        .filter(|r| r.status == "invalid")
        .map(|r| r.row)
        .collect();
    assert_eq!(invalid, [41, 42]);
}

#[tokio::test]
async fn an_unreachable_tenant_reports_what_its_rows_had_sent_and_the_other_completes() {
    let limit = rate(1000, 1000);
    let good = service(limit, None).await;
    // A port nothing listens on: every request to it is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (_dir, input) = input(&rows(&KEYS[..2], 20, true));
    let mut unreachable = tenant(KEYS[1], &good, limit, "emulator");
    unreachable.graph_url = format!("{gone}/beta");
    let mut c = config(
        &input,
        vec![tenant(KEYS[0], &good, limit, "emulator"), unreachable],
    );
    c.unreachable_after = std::time::Duration::from_millis(200);
    c.adaptive_concurrency = false;
    c.concurrency = 2;
    let summary = run(c).await;
    assert_eq!(summary.exit_code(), 3, "{summary:?}");
    let results = read_results(&autopilot_bulk::config::default_output(&input));
    assert_each_row_once(&results, 40);
    let cut: Vec<&ResultLine> = results.iter().filter(|r| r.tenant == KEYS[1]).collect();
    assert!(
        cut.iter()
            .all(|r| r.status == "failed" && r.error_code == "GraphUnreachable"),
        "{cut:?}"
    );
    // Rows that were retrying when the tenant stopped say so, and that --resume reads them back.
    let sent: Vec<&&ResultLine> = cut.iter().filter(|r| r.attempts > 0).collect();
    assert!(!sent.is_empty(), "{cut:?}");
    assert!(
        sent.iter()
            .all(|r| r.error_message.contains("--resume reads it back")),
        "{sent:?}"
    );
    assert!(
        cut.iter()
            .filter(|r| r.attempts == 0)
            .all(|r| !r.error_message.contains("were sent"))
    );
    assert!(
        results
            .iter()
            .filter(|r| r.tenant == KEYS[0])
            .all(|r| r.status == "created")
    );
}

#[tokio::test]
async fn batch_envelopes_go_to_each_tenant_apart() {
    let limit = rate(40, 500);
    let (a, b) = (service(limit, None).await, service(limit, None).await);
    let (_dir, input) = input(&rows(&KEYS[..2], 50, true));
    let mut c = config(
        &input,
        vec![
            tenant(KEYS[0], &a, limit, "emulator"),
            tenant(KEYS[1], &b, limit, "emulator"),
        ],
    );
    c.batch = true;
    c.adaptive_concurrency = false;
    c.concurrency = 2;
    let summary = run(c).await;
    assert_eq!(summary.exit_code(), 0, "{summary:?}");
    let results = read_results(&autopilot_bulk::config::default_output(&input));
    assert_each_row_once(&results, 100);
    let created = devices_by_tenant(&results, "created");
    for (t, (key, e)) in KEYS.iter().zip([&a, &b]).enumerate() {
        let held: HashSet<String> = e.assignments().into_keys().collect();
        let expected: HashSet<String> = (0..50).map(|i| device(t as u32 * 10_000 + i)).collect();
        assert_eq!(
            (&held, &created[*key]),
            (&expected, &expected),
            "tenant {key}"
        );
        let stats = e.stats();
        assert!(stats.batch_requests > 0, "tenant {key} got no envelope");
        assert_eq!(
            (stats.violations, stats.duplicate_devices),
            (0, 0),
            "tenant {key}"
        );
    }
}
