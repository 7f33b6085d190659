//! Engine throughput, with no network involved: rows parsed and validated per second, request
//! bodies serialised per second, results rows written per second.
//!
//! `cargo bench --bench engine [-- FILTER]`. The bulk run's real limit is Graph's throttle
//! (100 writes per 20 s), so these figures only need to stay orders of magnitude above it; they
//! exist to catch a regression that would make the engine, not the service, the bottleneck on
//! an unthrottled or batched run, and to size `validate` on million-row files.

use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use autopilot_bulk::graph::model::{Assignment, FilterType, Source, Target, TargetKind};
use autopilot_bulk::input::{InputReader, Parsed, RowDefaults};
use autopilot_bulk::output::{ResultsWriter, RowResult, Status};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use uuid::Uuid;

/// Rows in the generated input: large enough that the dedupe map's growth is part of the cost.
const INPUT_ROWS: u64 = 100_000;
/// Assignments serialised, and results rows written, per iteration.
const BATCH: u64 = 1_000;

/// A CSV like a real export: device, explicit target type, group, and an optional filter on
/// every fourth row (so both body shapes are parsed).
fn write_input(path: &Path, rows: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create input"));
    writeln!(f, "device_id,target_type,group_id,filter_id,filter_type").expect("write");
    for i in 0..rows {
        let filter = if i % 4 == 0 {
            "3b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d,include"
        } else {
            ","
        };
        writeln!(
            f,
            "{:08x}-0000-4000-8000-{i:012x},group,5e7e0c2a-3b1d-4c8e-9f6a-0d1c2b3a4f5e,{filter}",
            i as u32
        )
        .expect("write");
    }
    f.flush().expect("flush input");
}

fn parse_and_validate(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("input.csv");
    write_input(&path, INPUT_ROWS);
    let mut g = c.benchmark_group("input");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(INPUT_ROWS));
    g.bench_function("parse_validate_100k_rows", |b| {
        b.iter(|| {
            let reader =
                InputReader::open(&path, None, RowDefaults::default()).expect("open input");
            let mut jobs = 0u64;
            for item in reader {
                if let Parsed::Job(j) = item.expect("readable") {
                    jobs += 1;
                    black_box(&j);
                }
            }
            assert_eq!(jobs, INPUT_ROWS);
        })
    });
    g.finish();
}

fn assignments(n: u64) -> Vec<Assignment> {
    (0..n)
        .map(|i| {
            let filtered = i % 4 == 0;
            let target = Target {
                kind: TargetKind::Group,
                group_id: Some(Uuid::from_u128(0x5e7e0c2a_3b1d_4c8e_9f6a_0d1c2b3a4f5e)),
                collection_id: None,
                filter_id: filtered.then(|| Uuid::from_u128(u128::from(i))),
                filter_type: filtered.then_some(FilterType::Include),
            };
            Assignment::new(target, Source::Direct, None, None)
        })
        .collect()
}

fn serialise_bodies(c: &mut Criterion) {
    let bodies = assignments(BATCH);
    let mut g = c.benchmark_group("request");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(BATCH));
    g.bench_function("serialise_assignment_body", |b| {
        b.iter(|| {
            for a in &bodies {
                black_box(serde_json::to_vec(black_box(a)).expect("serialise"));
            }
        })
    });
    g.finish();
}

fn result_row(row: u64) -> RowResult {
    RowResult {
        row,
        device_id: format!("{:08x}-0000-4000-8000-{row:012x}", row as u32),
        status: Status::Created,
        http_status: Some(201),
        assignment_id: Some(format!("{:08x}-0000-4000-8000-000000000001", row as u32)),
        attempts: 1,
        error_code: None,
        error_message: None,
        request_id: Some("7d9a3c1e-2b4f-4e6a-8c0d-1f2e3d4c5b6a".into()),
        client_request_id: Some("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".into()),
        duration_ms: 187,
        finished_at: SystemTime::now(),
        serial_number: None,
        tenant: None,
        change: Default::default(),
    }
}

fn write_results(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("results.csv");
    let rows: Vec<RowResult> = (1..=BATCH).map(result_row).collect();
    let mut g = c.benchmark_group("results");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(BATCH));
    // As the run writes: one flush (one write(2)) per row, so that an interrupted run leaves
    // every finished row on disk. Each iteration starts a fresh file so it does not grow
    // without bound; the create is amortised over BATCH rows.
    g.bench_function("write_row_flushed", |b| {
        b.iter(|| {
            let mut w = ResultsWriter::create(&path, true).expect("create results");
            for r in &rows {
                w.write(r).expect("write row");
            }
        })
    });
    // Reference, not the product: the same fields through a buffered csv writer with no
    // per-row flush, to show what the per-row flush costs.
    g.bench_function("write_row_buffered_reference", |b| {
        b.iter(|| {
            let file = std::fs::File::create(&path).expect("create results");
            let mut w = csv::Writer::from_writer(std::io::BufWriter::new(file));
            for r in &rows {
                let fields = [
                    r.row.to_string(),
                    r.device_id.clone(),
                    r.status.as_str().to_string(),
                    r.http_status.map(|s| s.to_string()).unwrap_or_default(),
                    r.assignment_id.clone().unwrap_or_default(),
                    r.attempts.to_string(),
                    String::new(),
                    String::new(),
                    r.request_id.clone().unwrap_or_default(),
                    r.client_request_id.clone().unwrap_or_default(),
                    r.duration_ms.to_string(),
                    humantime::format_rfc3339_millis(r.finished_at).to_string(),
                ];
                w.write_record(&fields).expect("write row");
            }
            w.flush().expect("flush");
        })
    });
    g.finish();
}

criterion_group!(benches, parse_and_validate, serialise_bodies, write_results);
criterion_main!(benches);
