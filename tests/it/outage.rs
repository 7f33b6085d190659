//! End to end: a run rides through a Graph outage (the emulator's timed `outage`).

use crate::common;

use std::time::Duration;

use common::*;

use autopilot_bulk::emulator::{Emulator, EmulatorConfig, Outage};

/// Graph goes down the moment the first assignment arrives and stays down for 3 s (every
/// answer 503 with `Retry-After: 1`), while a run of 100 rows has 32 in flight. The run must
/// come out whole and without harm done: every row created exactly once, no row failed
/// (a 3 s outage must not use up the default `max_attempts`), the results' ids exactly the
/// emulator's, no duplicate assignment. And it must not hammer a service that is down: once
/// half of its last answers were faults the client probes the outage with one request at a
/// time, so the outage meets the 32 requests already in flight and about one probe per
/// Retry-After second (34–41 seen, by scheduling), within 45; a client whose rows each retried
/// on their own backoff sent 66, one that resent every row after each Retry-After about 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_rides_through_an_outage_probing_it_alone() {
    let emulator = Emulator::start(EmulatorConfig {
        outage: Some(Outage {
            at: Duration::ZERO,
            length: Duration::from_secs(3),
            retry_after: Some(1),
        }),
        ..emulator_config(rate(100, 1000))
    })
    .await
    .unwrap();
    let (_dir, path) = input(&group_rows(100));
    let mut config = config_for(&emulator, &path, rate(100, 1000));
    config.adaptive_concurrency = false;
    config.concurrency = 32;
    // The writes meet the outage as they did before reads came first: the count above is of
    // rows in flight with their POSTs.
    config.read_before_write = false;
    let output = config.output.clone();
    let summary = run(config).await;
    let results = read_results(&output);

    assert_each_row_once(&results, 100);
    assert_eq!(
        (summary.created, summary.failed),
        (100, 0),
        "{summary:?}\n{results:?}"
    );
    assert_ids_match_emulator(&results, &emulator);
    let stats = emulator.stats();
    assert!(
        stats.outage_requests > 0,
        "the outage never struck: {stats:?}"
    );
    assert!(
        stats.outage_requests <= 45,
        "{} requests sent into the outage (at most 45 expected): {stats:?}",
        stats.outage_requests
    );
    assert_eq!(stats.assignments_created, 100, "{stats:?}");
    assert_eq!(summary.exit_code(), 0);
    emulator.shutdown().await;
}
