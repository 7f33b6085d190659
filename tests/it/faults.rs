//! Exactly once under faults: the bulk run against the in-process emulator with every fault
//! turned on at once (503, 504, store-then-drop, Retry-After in all its forms, tokens that
//! expire every few seconds, latency, a client rate above the service's limit), over several
//! seeds. Whatever happens on the wire, every row is reported once, the ids reported are exactly
//! the ones the service holds, no device is assigned twice and no Retry-After is broken.
//!
//! Also: the ambiguity rules one at a time (many drops, a hung server, a refused connection).

use crate::common;

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

/// Half the requests (POSTs and reconciling GETs alike) are executed and then lose their
/// answer. A blind re-POST would assign most devices twice; reading back first finds the
/// stored assignment and reports it as `existing` with the service's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_the_answers_dropped_nothing_duplicated() {
    let rows = 40;
    let emulator = Emulator::start(EmulatorConfig {
        fault_drop: 0.5,
        seed: 11,
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap();
    let (_dir, path) = input(&group_rows(rows));
    let mut config = config_for(&emulator, &path, rate(1000, 1000));
    config.concurrency = 8;
    // The point here is the reconciling, not the budget: enough attempts that no row runs
    // out, and a short backoff so the run takes a second, not minutes.
    config.max_attempts = 40;
    config.initial_backoff = Duration::from_millis(10);
    let output = config.output.clone();
    let summary = run(config).await;
    let results = read_results(&output);
    let stats = emulator.stats();
    eprintln!(
        "drop 0.5: created {}, existing {}, reconciliations {}, drops {}, POSTs {}, GETs {}",
        summary.created,
        summary.existing,
        summary.reconciliations,
        stats.dropped_connections,
        stats.write_requests,
        stats.assignment_reads
    );

    assert_each_row_once(&results, u64::from(rows));
    assert_eq!(summary.exit_code(), 0, "{results:#?}");
    assert_eq!(summary.created + summary.existing, u64::from(rows));
    assert!(summary.existing > 0, "no dropped POST was found again");
    assert_eq!(stats.duplicate_devices, 0);
    assert_eq!(stats.assignments_created, u64::from(rows));
    // `existing` rows carry the id the service holds for that device.
    assert_ids_match_emulator(&results, &emulator);
    let held = emulator.assignments();
    for r in results.iter().filter(|r| r.status == "existing") {
        assert_eq!(
            held.get(&r.device_id.to_lowercase()),
            Some(&vec![r.assignment_id.clone()]),
            "row {}",
            r.row
        );
        assert!(r.attempts >= 2, "row {}: existing after one attempt", r.row);
        assert_eq!(r.http_status, "200", "row {}: answered by the GET", r.row);
    }
    emulator.shutdown().await;
}

/// A service that takes seconds to answer while the client waits 200 ms: every timed-out POST
/// may have been executed (here it was), so it is read back before any new POST. The run ends
/// promptly; each row is `created`, `existing` (found by a read that beat the timeout) or
/// `failed` with `Timeout`, and no device holds two assignments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_service_times_out_without_stalling_or_duplicating() {
    let rows = 6;
    let emulator = Emulator::start(EmulatorConfig {
        latency: Some(Duration::from_secs(2)),
        seed: 5,
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap();
    let (_dir, path) = input(&group_rows(rows));
    let mut config = config_for(&emulator, &path, rate(1000, 1000));
    config.concurrency = 6;
    config.request_timeout = Duration::from_millis(200);
    config.max_attempts = 4;
    config.initial_backoff = Duration::from_millis(20);
    let output = config.output.clone();
    let summary = run(config).await;
    let results = read_results(&output);
    let stats = emulator.stats();
    eprintln!(
        "slow service: created {}, existing {}, failed {}, reconciliations {}, POSTs {}, GETs {}",
        summary.created,
        summary.existing,
        summary.failed,
        summary.reconciliations,
        stats.write_requests,
        stats.assignment_reads
    );

    assert_each_row_once(&results, u64::from(rows));
    assert!(summary.reconciliations > 0, "a timeout was not reconciled");
    assert_eq!(stats.duplicate_devices, 0);
    // One POST per device at most: after the first timed-out POST, only reads follow unless a
    // read came back empty-handed (it cannot here: the POST was stored on arrival).
    assert!(stats.assignments_created <= u64::from(rows), "{stats:?}");
    let held = emulator.assignments();
    for r in &results {
        match r.status.as_str() {
            "created" | "existing" => assert_eq!(
                held.get(&r.device_id.to_lowercase()),
                Some(&vec![r.assignment_id.clone()]),
                "row {}",
                r.row
            ),
            "failed" => {
                assert_eq!(r.error_code, "Timeout", "row {}: {r:?}", r.row);
                assert!(r.attempts <= 4);
            }
            other => panic!("row {}: status {other}", r.row),
        }
    }
    emulator.shutdown().await;
}

/// A Graph endpoint that accepts connections and never says a word: every attempt times out,
/// each timed-out POST is followed by reads (never a second POST), and the run still ends with
/// every row `failed` as `Timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_cannot_stall_the_run() {
    let emulator = Emulator::start(emulator_config(rate(1000, 1000)))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung = listener.local_addr().unwrap();
    let posts = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let gets = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (p, g) = (posts.clone(), gets.clone());
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (p, g) = (p.clone(), g.clone());
            // Read the request line to count it, then keep the connection open, silent.
            held.push(tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 8];
                if socket.read_exact(&mut buf).await.is_ok() {
                    let counter = if buf.starts_with(b"POST") { &p } else { &g };
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                std::future::pending::<()>().await;
                drop(socket);
            }));
        }
    });

    let rows = 3;
    let (_dir, path) = input(&group_rows(rows));
    let mut config = config_for(&emulator, &path, rate(1000, 1000));
    config.graph_url = format!("http://{hung}/beta");
    // Counts the reads that follow a timed-out POST: none before it.
    config.read_before_write = false;
    config.request_timeout = Duration::from_millis(150);
    config.max_attempts = 3;
    config.initial_backoff = Duration::from_millis(10);
    let output = config.output.clone();
    let summary = run(config).await;
    let results = read_results(&output);
    server.abort();

    assert_each_row_once(&results, u64::from(rows));
    assert_eq!(summary.exit_code(), 1);
    for r in &results {
        assert_eq!(
            (r.status.as_str(), r.error_code.as_str(), r.attempts),
            ("failed", "Timeout", 3),
            "{r:?}"
        );
        assert!(r.http_status.is_empty());
    }
    // One POST per row, then reads only: never a blind re-POST after a timeout.
    assert_eq!(posts.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(gets.load(std::sync::atomic::Ordering::Relaxed), 6);
    assert_eq!(summary.reconciliations, 6);
    emulator.shutdown().await;
}

/// Nothing listens on the Graph port: the connection is refused, so the request was never
/// sent. That is "not executed": retry the POST, no reconciling read is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried_without_reconciling() {
    let emulator = Emulator::start(emulator_config(rate(1000, 1000)))
        .await
        .unwrap();
    // A port that was just free: bind, note it, close it.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let rows = 2;
    let (_dir, path) = input(&group_rows(rows));
    let mut config = config_for(&emulator, &path, rate(1000, 1000));
    config.graph_url = format!("http://{closed}/beta");
    // A refused POST needs no read back; none is made before it either.
    config.read_before_write = false;
    config.max_attempts = 3;
    config.initial_backoff = Duration::from_millis(10);
    let output = config.output.clone();
    let summary = run(config).await;
    let results = read_results(&output);

    assert_each_row_once(&results, u64::from(rows));
    assert_eq!(summary.reconciliations, 0);
    for r in &results {
        assert_eq!(
            (r.status.as_str(), r.error_code.as_str(), r.attempts),
            ("failed", "ConnectionFailed", 3),
            "{r:?}"
        );
    }
    emulator.shutdown().await;
}
