//! Exactly once under faults: the bulk run against the in-process emulator with every fault
//! turned on at once (503, 504, store-then-drop, Retry-After in all its forms, tokens that
//! expire every few seconds, latency, a client rate above the service's limit), over several
//! seeds. Whatever happens on the wire, every row is reported once, the ids reported are exactly
//! the ones the service holds, no device is assigned twice and no Retry-After is broken.
//!
//! Also: the ambiguity rules one at a time (many drops, a hung server, a refused connection).

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;

use autopilot_bulk::emulator::{Emulator, EmulatorConfig, RetryAfterMode};

/// Rows of the mixed-fault runs: valid known devices, then unknown devices, then invalid rows.
const VALID: u32 = 280;
const UNKNOWN: u32 = 8;
const INVALID: u32 = 8;

/// `VALID` known devices, `UNKNOWN` devices the tenant does not know (interleaved so they meet
/// faults too), and `INVALID` rows of different kinds. Returns the CSV and the known set.
fn mixed_input() -> (String, HashSet<String>, Vec<u64>, Vec<u64>) {
    let mut csv = String::from("device_id,target_type,group_id\n");
    let mut known = HashSet::new();
    let (mut unknown_rows, mut invalid_rows) = (Vec::new(), Vec::new());
    let mut row = 0u64;
    let (mut u, mut i) = (0u32, 0u32);
    for d in 0..VALID {
        row += 1;
        known.insert(device(d));
        csv.push_str(&format!("{},group,{GROUP}\n", device(d)));
        if d % 35 == 17 && u < UNKNOWN {
            row += 1;
            unknown_rows.push(row);
            csv.push_str(&format!("{},group,{GROUP}\n", device(100_000 + u)));
            u += 1;
        }
        if d % 35 == 29 && i < INVALID {
            row += 1;
            invalid_rows.push(row);
            let bad = match i % 4 {
                0 => format!("not-a-guid-{i},group,{GROUP}\n"),
                1 => format!("{},groups,{GROUP}\n", device(200_000 + i)),
                2 => format!("{},group,\n", device(200_000 + i)),
                _ => format!("{},group,{GROUP},extra\n", device(200_000 + i)),
            };
            csv.push_str(&bad);
            i += 1;
        }
    }
    assert_eq!((u, i), (UNKNOWN, INVALID));
    (csv, known, unknown_rows, invalid_rows)
}

/// One run with every fault on. The service allows 100 writes per second; the client is told
/// 130 per second, so the service throttles it too.
async fn faulty_run(seed: u64) {
    let (csv, known, unknown_rows, invalid_rows) = mixed_input();
    let rows = u64::from(VALID + UNKNOWN + INVALID);
    let emulator = Emulator::start(EmulatorConfig {
        devices: Some(known),
        retry_after: RetryAfterMode::Mixed,
        token_ttl: Duration::from_secs(2),
        fault_503: 0.05,
        fault_504: 0.02,
        fault_drop: 0.03,
        latency: Some(Duration::from_millis(3)),
        seed,
        ..emulator_config(rate(100, 1000))
    })
    .await
    .unwrap();
    let (_dir, path) = input(&csv);
    let mut config = config_for(&emulator, &path, rate(130, 1000));
    config.concurrency = 16;
    let output = config.output.clone();
    let summary = run(config).await;
    let results = read_results(&output);
    let stats = emulator.stats();
    eprintln!(
        "seed {seed}: rows {rows}, created {}, existing {}, failed {}, invalid {}, requests {}, \
         reconciliations {}, 429s {}, 503s {}, 504s {}, drops {}, expired tokens {}, token \
         requests {}, elapsed {:?}",
        summary.created,
        summary.existing,
        summary.failed,
        summary.invalid,
        summary.requests,
        summary.reconciliations,
        stats.throttled,
        stats.faults_503,
        stats.faults_504,
        stats.dropped_connections,
        stats.expired_tokens,
        summary.token_requests,
        summary.elapsed,
    );

    assert_each_row_once(&results, rows);
    assert_eq!(summary.rows, rows);
    assert_eq!(
        summary.exit_code(),
        1,
        "invalid and unknown rows make exit 1"
    );
    let by_row: HashMap<u64, &ResultLine> = results.iter().map(|r| (r.row, r)).collect();
    for row in &invalid_rows {
        let r = by_row[row];
        assert_eq!(r.status, "invalid", "row {row}: {r:?}");
        assert_eq!(r.attempts, 0);
        assert!(!r.error_message.is_empty());
    }
    for row in &unknown_rows {
        let r = by_row[row];
        assert_eq!(
            (
                r.status.as_str(),
                r.http_status.as_str(),
                r.error_code.as_str()
            ),
            ("failed", "404", "ResourceNotFound"),
            "row {row}: {r:?}"
        );
    }
    // No valid row fails because of injected faults: they are all within the retry budget.
    let failed_known: Vec<_> = results
        .iter()
        .filter(|r| r.status == "failed" && !unknown_rows.contains(&r.row))
        .collect();
    assert!(failed_known.is_empty(), "seed {seed}: {failed_known:#?}");
    assert_eq!(summary.created + summary.existing, u64::from(VALID));
    assert_eq!(
        (summary.failed, summary.invalid),
        (u64::from(UNKNOWN), u64::from(INVALID))
    );

    assert_ids_match_emulator(&results, &emulator);
    assert_eq!(stats.duplicate_devices, 0, "seed {seed}");
    assert_eq!(stats.violations, 0, "seed {seed}: Retry-After violated");
    assert_eq!(stats.devices_with_assignments, u64::from(VALID));

    // The faults did happen, and were handled the intended way.
    assert!(stats.faults_503 > 0, "seed {seed}: no 503 injected");
    assert!(stats.faults_504 > 0, "seed {seed}: no 504 injected");
    assert!(stats.dropped_connections > 0, "seed {seed}: no drop");
    assert!(
        summary.reconciliations > 0 && stats.assignment_reads > 0,
        "seed {seed}: ambiguous failures never reconciled"
    );
    assert!(
        summary.existing > 0 || summary.reconciliations > 0,
        "seed {seed}"
    );
    assert!(
        summary.token_requests >= 2,
        "seed {seed}: tokens never refreshed"
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_under_mixed_faults_seed_1() {
    faulty_run(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_under_mixed_faults_seed_2() {
    faulty_run(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_under_mixed_faults_seed_3() {
    faulty_run(3).await;
}
