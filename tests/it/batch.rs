//! `--batch`: JSON batching gives the same results as one request per row, with each inner
//! request paced and retried on its own.

use crate::common;

use autopilot_bulk::emulator::{Emulator, EmulatorConfig, RetryAfterMode};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_run_reports_like_an_unbatched_one() {
    let unknown = "ffffffff-0000-4000-8000-000000000001";
    let emulator = Emulator::start(EmulatorConfig {
        devices: Some((0..50).map(device).collect()),
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap();
    let mut csv = group_rows(50);
    csv.push_str(&format!("{unknown},group,{GROUP}\n")); // 51: 404
    csv.push_str("nope,group,\n"); // 52: invalid
    let (_dir, path) = input(&csv);
    let mut config = config_for(&emulator, &path, rate(1000, 1000));
    config.batch = true;
    config.concurrency = 2;
    // Counts envelopes of writes alone: no read before them.
    config.read_before_write = false;
    let output = config.output.clone();
    let summary = run(config).await;
    let results = read_results(&output);
    assert_each_row_once(&results, 52);
    assert_eq!(
        (summary.created, summary.failed, summary.invalid),
        (50, 1, 1)
    );
    let missing = results.iter().find(|r| r.row == 51).unwrap();
    assert_eq!(
        (missing.http_status.as_str(), missing.error_code.as_str()),
        ("404", "ResourceNotFound")
    );
    assert_ids_match_emulator(&results, &emulator);
    let stats = emulator.stats();
    // 51 POSTs in envelopes of up to 20: a handful of envelopes, not 51 requests.
    assert!(
        stats.batch_requests >= 3 && stats.batch_requests <= 20,
        "{stats:?}"
    );
    assert_eq!(stats.write_requests, 51);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_inner_requests_are_retried_alone_without_violations() {
    let emulator = Emulator::start(EmulatorConfig {
        retry_after: RetryAfterMode::Mixed,
        seed: 11,
        ..emulator_config(rate(10, 1000))
    })
    .await
    .unwrap();
    let (_dir, path) = input(&group_rows(40));
    let mut config = config_for(&emulator, &path, rate(25, 1000));
    config.batch = true;
    let output = config.output.clone();
    let summary = run(config).await;
    let results = read_results(&output);
    assert_each_row_once(&results, 40);
    assert_eq!(summary.created, 40);
    assert!(
        summary.throttled_responses > 0,
        "the service never throttled"
    );
    let stats = emulator.stats();
    assert_eq!(stats.violations, 0);
    assert_ids_match_emulator(&results, &emulator);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_envelope_is_reconciled_not_replayed() {
    let emulator = Emulator::start(EmulatorConfig {
        fault_drop: 0.1,
        seed: 5,
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap();
    let (_dir, path) = input(&group_rows(60));
    let mut config = config_for(&emulator, &path, rate(1000, 1000));
    config.batch = true;
    config.initial_backoff = std::time::Duration::from_millis(20);
    let output = config.output.clone();
    let summary = run(config).await;
    let results = read_results(&output);
    assert_each_row_once(&results, 60);
    assert!(
        emulator.stats().dropped_connections > 0,
        "no envelope was dropped"
    );
    assert!(summary.existing > 0, "no row was reconciled as existing");
    assert_eq!(summary.created + summary.existing, 60);
    assert_ids_match_emulator(&results, &emulator);
    emulator.shutdown().await;
}
