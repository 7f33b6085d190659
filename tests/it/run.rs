//! End to end: the bulk run against the in-process emulator.

use crate::common;

use common::*;

use autopilot_bulk::emulator::{Emulator, EmulatorConfig, RetryAfterMode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_reported_once_with_the_services_ids() {
    let unknown = "ffffffff-0000-4000-8000-000000000001";
    let known: std::collections::HashSet<String> = (0..40).map(device).collect();
    let emulator = Emulator::start(EmulatorConfig {
        devices: Some(known),
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap();
    let mut csv = group_rows(40); // rows 1..=40
    csv.push_str("not-a-guid,group,5e7e0c2a-3b1d-4c8e-9f6a-0d1c2b3a4f5e\n"); // 41
    csv.push_str(&format!("{},groups,{GROUP}\n", device(50))); // 42 unknown kind
    csv.push_str(&format!("{},group,\n", device(51))); // 43 missing group
    csv.push_str(&format!("{},group,{GROUP}\n", device(3))); // 44 duplicate of row 4
    csv.push_str(&format!("{unknown},group,{GROUP}\n")); // 45 unknown device
    let (_dir, path) = input(&csv);
    let config = config_for(&emulator, &path, rate(1000, 1000));
    let output = config.output.clone();
    let summary = run(config).await;
    let results = read_results(&output);

    assert_each_row_once(&results, 45);
    assert_eq!(summary.exit_code(), 1);
    assert_eq!(
        (summary.created, summary.failed, summary.invalid),
        (40, 1, 4)
    );
    let by_row = |row: u64| results.iter().find(|r| r.row == row).unwrap();
    assert!(by_row(41).error_message.contains("not-a-guid"));
    assert!(by_row(42).error_message.contains("groups"));
    assert!(by_row(43).error_message.contains("group_id is required"));
    assert_eq!(by_row(44).error_message, "duplicate of row 4");
    let missing = by_row(45);
    assert_eq!(
        (missing.status.as_str(), missing.http_status.as_str()),
        ("failed", "404")
    );
    assert_eq!(missing.error_code, "ResourceNotFound");
    for r in results.iter().filter(|r| r.status == "created") {
        assert_eq!(r.http_status, "201");
        assert_eq!(r.attempts, 1);
        assert!(!r.request_id.is_empty() && !r.client_request_id.is_empty());
    }
    assert_ids_match_emulator(&results, &emulator);
    assert_eq!(summary.by_error_code.get("ResourceNotFound"), Some(&1));
    emulator.shutdown().await;
}

/// The client's rate is twice the service's limit, so the service throttles; whatever form
/// Retry-After takes, no row fails, no request breaks a Retry-After, nothing is duplicated.
async fn throttled_run(mode: RetryAfterMode) {
    let emulator = Emulator::start(EmulatorConfig {
        retry_after: mode,
        seed: 7,
        ..emulator_config(rate(10, 1000))
    })
    .await
    .unwrap();
    let (_dir, path) = input(&group_rows(30));
    let mut config = config_for(&emulator, &path, rate(20, 1000));
    // Writes only: the service's write window is what this test throttles.
    config.read_before_write = false;
    let output = config.output.clone();
    let summary = run(config).await;
    let results = read_results(&output);
    assert_each_row_once(&results, 30);
    assert_eq!(summary.created, 30, "{mode:?}: {results:?}");
    assert!(
        summary.throttled_responses > 0,
        "{mode:?}: the service never throttled"
    );
    let stats = emulator.stats();
    assert_eq!(stats.violations, 0, "{mode:?}: Retry-After violated");
    assert_ids_match_emulator(&results, &emulator);
    assert_eq!(summary.exit_code(), 0);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_retry_after_seconds() {
    throttled_run(RetryAfterMode::Seconds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_retry_after_fractional() {
    throttled_run(RetryAfterMode::Fractional).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_retry_after_date() {
    throttled_run(RetryAfterMode::Date).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_retry_after_none() {
    throttled_run(RetryAfterMode::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_retry_after_mixed() {
    throttled_run(RetryAfterMode::Mixed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_body_reaches_the_service_as_written() {
    let emulator = Emulator::start(emulator_config(rate(1000, 1000)))
        .await
        .unwrap();
    let filter = "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d";
    let (_dir, path) = input(&format!(
        "device_id,filter_id,filter_type,source,source_id\n{},{filter},include,policySets,Source Id value\n",
        device(1)
    ));
    let config = config_for(&emulator, &path, rate(1000, 1000));
    let summary = run(config).await;
    assert_eq!(summary.created, 1);
    // Read it back through Graph's GET, as any client would.
    let http = reqwest::Client::new();
    let token = emulator_token(&emulator, "t", "c", "s").await;
    let list: serde_json::Value = http
        .get(assignments_url(&emulator.graph_url(), &device(1)))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let held = &list["value"][0];
    assert_eq!(held["source"], "policySets");
    assert_eq!(held["sourceId"], "Source Id value");
    assert_eq!(
        held["target"]["@odata.type"]
            .as_str()
            .map(|t| t.trim_start_matches('#')),
        Some("microsoft.graph.deviceAndAppManagementAssignmentTarget")
    );
    assert_eq!(
        held["target"]["deviceAndAppManagementAssignmentFilterId"],
        filter
    );
    assert_eq!(
        held["target"]["deviceAndAppManagementAssignmentFilterType"],
        "include"
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_results_file_is_refused_untouched() {
    let emulator = Emulator::start(emulator_config(rate(1000, 1000)))
        .await
        .unwrap();
    let (_dir, path) = input(&group_rows(3));
    let config = config_for(&emulator, &path, rate(1000, 1000));
    std::fs::write(&config.output, "precious").unwrap();
    let err = autopilot_bulk::run(config.clone(), Default::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(std::fs::read_to_string(&config.output).unwrap(), "precious");
    assert_eq!(emulator.stats().assignments_created, 0);

    let mut again = config;
    again.overwrite = true;
    let summary = run(again.clone()).await;
    assert_eq!(summary.created, 3);
    assert_each_row_once(&read_results(&again.output), 3);
    emulator.shutdown().await;
}

/// Without `--concurrency`, the rows in flight follow the latency: at 200 ms a window of 100
/// per second needs far more than the 16 seats a run starts with, up to the cap of 32 once
/// the service has taken a whole window at that pace (it is above Graph's published limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_follows_latency_unless_pinned() {
    let emulator = Emulator::start(EmulatorConfig {
        latency: Some(std::time::Duration::from_millis(200)),
        ..emulator_config(rate(100, 1000))
    })
    .await
    .unwrap();
    let (_dir, path) = input(&group_rows(200));
    let mut config = config_for(&emulator, &path, rate(100, 1000));
    config.adaptive_concurrency = true;
    let summary = run(config.clone()).await;
    assert_eq!(summary.created, 200);
    assert_eq!(summary.concurrency, 32, "{summary:?}");
    // Pinned: a few rows tell (at 4 in flight, 200 rows would take 10 s of latency).
    let (_dir, few) = input(&group_rows(12));
    let mut config = config_for(&emulator, &few, rate(100, 1000));
    config.adaptive_concurrency = false;
    let pinned = run(config).await;
    assert_eq!(pinned.concurrency, 4);
}
