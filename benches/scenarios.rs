//! Scenario runner: the bulk run against the in-process emulator, measured the way that
//! matters for this job — how close to the throttle's theoretical minimum it finishes.
//!
//! `cargo bench --bench scenarios` runs every scenario; `cargo bench --bench scenarios -- NAME`
//! runs those whose name contains NAME. For each it prints completion time ÷ theoretical
//! minimum ((⌈requests/COUNT⌉ − 1) × DURATION for a sliding window of COUNT per DURATION), the
//! share of requests answered 429, Retry-After violations, CPU time per row and peak RSS (both
//! for the whole process, emulator included).

use std::time::{Duration, Instant};

use autopilot_bulk::config::{Config, RateSpec};
use autopilot_bulk::emulator::{Emulator, EmulatorConfig, Limit, Outage, RetryAfterMode};

use tokio_util::sync::CancellationToken;

struct Scenario {
    name: &'static str,
    rows: u32,
    /// The service's sliding window.
    limit: RateSpec,
    /// The client's configured `--rate`.
    rate: RateSpec,
    retry_after: RetryAfterMode,
    /// `--concurrency`; `None`: the default, following the latency.
    concurrency: Option<usize>,
    /// Mean of the emulator's (exponentially distributed) answer time.
    latency: Duration,
    /// `--batch`: `$batch` envelopes of up to 20 assignments.
    batch: bool,
    /// Rows name serial numbers of a tenant of this many identities (resolved by listing).
    tenant: Option<u32>,
    /// Isolated faults: 5 % 503 with `Retry-After: 1`, 2 % 504, 3 % dropped after commit.
    faults: bool,
    /// Graph down for a stretch: every request 503 (see [`Outage`]).
    outage: Option<Outage>,
    /// `--action tag --group-tag Sales`: set each device's group tag instead of assigning.
    tag: bool,
}

/// 1,000 rows against 100 per 2 s at 10 ms, the client's rate matched, 8 in flight: what
/// most scenarios change one thing of.
fn base(name: &'static str) -> Scenario {
    let window = RateSpec::new(100, Duration::from_secs(2));
    Scenario {
        name,
        rows: 1000,
        limit: window,
        rate: window,
        retry_after: RetryAfterMode::Seconds,
        concurrency: Some(8),
        latency: Duration::from_millis(10),
        batch: false,
        tenant: None,
        faults: false,
        outage: None,
        tag: false,
    }
}

fn scenarios() -> Vec<Scenario> {
    let unthrottled = RateSpec::new(100_000_000, Duration::from_secs(1));
    let four_x = RateSpec::new(200, Duration::from_secs(1));
    vec![
        base("window-100/2s-retry-after-seconds"),
        Scenario {
            retry_after: RetryAfterMode::None,
            ..base("window-100/2s-retry-after-none")
        },
        Scenario {
            retry_after: RetryAfterMode::Mixed,
            ..base("window-100/2s-retry-after-mixed")
        },
        // The configured --rate is 4× the service's real limit (200/1 s against 100/2 s): the
        // case the adaptive pace exists for, with and without Retry-After.
        Scenario {
            rate: four_x,
            ..base("adaptive-rate-4x-too-high-retry-after-seconds")
        },
        Scenario {
            rate: four_x,
            retry_after: RetryAfterMode::None,
            ..base("adaptive-rate-4x-too-high-retry-after-none")
        },
        // The same at the default flags: rows in flight follow the latency.
        Scenario {
            rate: four_x,
            retry_after: RetryAfterMode::None,
            concurrency: None,
            ..base("default-flags-rate-4x-too-high-retry-after-none")
        },
        Scenario {
            concurrency: Some(2),
            batch: true,
            ..base("batch-window-100/2s-retry-after-seconds")
        },
        // Group tags instead of assignments: the same pace, plus one listing read of the tenant
        // (10 pages) to skip devices already tagged.
        Scenario {
            tag: true,
            ..base("tag-window-100/2s")
        },
        // Isolated faults, each meant for its own request: a lone 503 with Retry-After should
        // delay its row, not pause every worker. The minimum is for the requests sent.
        Scenario {
            faults: true,
            ..base("isolated-faults-window-100/2s")
        },
        // Graph down for 6 s, 4 s after the first assignment, no Retry-After, at the default
        // flags: the minimum is for the requests answered outside the outage, plus the outage.
        // The client should probe it one request at a time, not resend every row in flight.
        Scenario {
            retry_after: RetryAfterMode::None,
            concurrency: None,
            outage: Some(Outage {
                at: Duration::from_secs(4),
                length: Duration::from_secs(6),
                retry_after: None,
            }),
            ..base("outage-6s-window-100/2s")
        },
        // Intune's documented shape at the default flags: 100 writes per 20 s, answers in
        // 200 ms on average, no Retry-After. Slow on purpose (minimum 180 s).
        Scenario {
            limit: RateSpec::default(),
            rate: RateSpec::default(),
            retry_after: RetryAfterMode::None,
            concurrency: None,
            latency: Duration::from_millis(200),
            ..base("intune-shape-default-flags")
        },
        // Serial numbers in: 1,000 rows of a hardware-hash export against a tenant of 4,000
        // identities (pages of 100): the resolution's requests and seconds, then the
        // assignments. The client paces its reads through the same window as its writes, so
        // the minimum counts both.
        Scenario {
            tenant: Some(4000),
            ..base("serials-1000-of-4000-identities")
        },
        // Raw engine cost: no throttle to speak of, no added latency, so CPU per row and RSS are
        // the client's (plus the in-process emulator's, which keeps every assignment it stores).
        Scenario {
            rows: 100_000,
            limit: unthrottled,
            rate: unthrottled,
            concurrency: Some(16),
            latency: Duration::ZERO,
            ..base("unthrottled-100k")
        },
    ]
}

/// CPU seconds used by this process so far (user + system), from /proc.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10)) // USER_HZ is 100 on Linux
}

/// Peak resident set size of this process, in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn device(i: u32) -> String {
    format!("{i:08x}-0000-4000-8000-{:012x}", u64::from(i))
}

/// Serial number of identity `i` of a scenario's tenant.
fn serial(i: u32) -> String {
    format!("PF{i:06}")
}

/// The input: device ids, or (with a tenant) the serials of every fourth identity, as a
/// hardware-hash export names them.
fn input_file(dir: &std::path::Path, rows: u32, by_serial: bool) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("bench.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create input"));
    let column = if by_serial {
        "Device Serial Number"
    } else {
        "device_id"
    };
    writeln!(f, "{column},target_type,group_id").expect("write");
    for i in 0..rows {
        let device = if by_serial { serial(i * 4) } else { device(i) };
        writeln!(f, "{device},group,5e7e0c2a-3b1d-4c8e-9f6a-0d1c2b3a4f5e").expect("write");
    }
    path
}

async fn run(s: &Scenario) {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = input_file(dir.path(), s.rows, s.tenant.is_some());
    // A tag run reads the tenant's listing: its rows' devices are the tenant.
    let tenant = s.tenant.unwrap_or(if s.tag { s.rows } else { 0 });
    let identities = (0..tenant).map(|i| (device(i), serial(i))).collect();
    let emulator = Emulator::start(EmulatorConfig {
        identities,
        limit: Limit::new(s.limit.count, s.limit.per),
        retry_after: s.retry_after,
        latency: (!s.latency.is_zero()).then_some(s.latency),
        fault_503: if s.faults { 0.05 } else { 0.0 },
        fault_503_retry_after: s.faults.then_some(1),
        fault_504: if s.faults { 0.02 } else { 0.0 },
        fault_drop: if s.faults { 0.03 } else { 0.0 },
        outage: s.outage,
        seed: 1,
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts");
    let mut config = Config::new(&input, dir.path().join("bench.results.csv"));
    config.graph_url = emulator.graph_url();
    config.authority_url = emulator.authority_url();
    config.credentials = autopilot_bulk::config::Credentials::for_emulator();
    config.rate = s.rate;
    match s.concurrency {
        Some(n) => config.concurrency = n,
        None => config.adaptive_concurrency = true,
    }
    config.batch = s.batch;
    if s.tag {
        config.defaults.action = autopilot_bulk::input::Action::Tag;
        config.defaults.group_tag = Some("Sales".into());
    }

    let cpu_before = cpu_time();
    let started = Instant::now();
    let summary = autopilot_bulk::run(config, CancellationToken::new())
        .await
        .expect("run starts");
    let elapsed = started.elapsed();
    let cpu = cpu_time().zip(cpu_before).map(|(a, b)| a.saturating_sub(b));
    let stats = emulator.stats();
    emulator.shutdown().await;

    // The minimum is for the requests the run had to send: its rows, its listing reads and,
    // with faults, the retries and read-backs the faults called for.
    let reads = summary.resolution.map_or(0, |r| r.requests);
    let requests = if s.faults || s.tag {
        summary.requests
    } else if s.outage.is_some() {
        // Those refused by the outage never reached the throttle.
        summary.requests.saturating_sub(stats.outage_requests)
    } else {
        u64::from(s.rows) + reads
    };
    let windows = requests.div_ceil(u64::from(s.limit.count));
    let minimum = s.limit.per * (windows.saturating_sub(1) as u32)
        + s.outage.map_or(Duration::ZERO, |o| o.length);
    // An unthrottled scenario has no minimum (one window holds every request): report the
    // rows per second instead of a ratio to zero.
    let ratio = if minimum.is_zero() {
        format!("{:.0} rows/s", f64::from(s.rows) / elapsed.as_secs_f64())
    } else {
        format!("{:.3}×", elapsed.as_secs_f64() / minimum.as_secs_f64())
    };
    let share_429 = summary.throttled_responses as f64 / summary.requests.max(1) as f64;
    println!(
        "{:<38} rows {:>7} · {:>6.2}s / min {:>5.1}s = {} · 429s {:.2}% · violations {} · \
         created {} · writes {} · in flight {} · outage requests {} · CPU {:.1} µs/row · \
         peak RSS {:.1} MiB",
        s.name,
        s.rows,
        elapsed.as_secs_f64(),
        minimum.as_secs_f64(),
        ratio,
        share_429 * 100.0,
        stats.violations,
        summary.created,
        stats.assignments_created + stats.group_tags_set,
        summary.concurrency,
        stats.outage_requests,
        cpu.map(|c| c.as_secs_f64() * 1e6 / f64::from(s.rows))
            .unwrap_or(f64::NAN),
        peak_rss_mib().unwrap_or(f64::NAN),
    );
    if let Some(r) = summary.resolution {
        println!(
            "{:<38} resolution: {} of {} serials found with {} listing requests in {:.2}s; \
             assignments {:.2}s",
            "",
            r.found,
            r.serials,
            r.requests,
            r.elapsed.as_secs_f64(),
            elapsed.as_secs_f64() - r.elapsed.as_secs_f64()
        );
    }
}

/// `tenants` tenants of `rows` rows each, interleaved in one input, each with its own window
/// of 100 per 2 s in the emulator: completion ÷ one tenant's theoretical minimum (the tenants run side
/// by side, so the whole run should take about as long as the largest one alone). `wrong`:
/// one more tenant whose secret its service refuses: its rows fail, the others must not care.
async fn run_tenants(tenants: u32, rows: u32, wrong: bool) {
    let all = tenants + u32::from(wrong);
    let window = RateSpec::new(100, Duration::from_secs(2));
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("tenants.csv");
    let mut text = String::from("tenant,device_id,target_type,group_id\n");
    for i in 0..rows {
        for t in 0..all {
            let d = device(t * 1_000_000 + i);
            text.push_str(&format!(
                "t{t},{d},group,5e7e0c2a-3b1d-4c8e-9f6a-0d1c2b3a4f5e\n"
            ));
        }
    }
    std::fs::write(&input, text).expect("write input");
    // One emulator standing in for every tenant, a window, store and counters each; the
    // extra tenant accepts only a secret it is not given.
    let names: Vec<String> = (0..all).map(|t| format!("tenant-{t}")).collect();
    let emulator = Emulator::start(EmulatorConfig {
        tenants: names.clone(),
        tenant_secrets: names
            .iter()
            .skip(tenants as usize)
            .map(|n| (n.clone(), "another".to_string()))
            .collect(),
        limit: Limit::new(window.count, window.per),
        retry_after: RetryAfterMode::Seconds,
        latency: Some(Duration::from_millis(10)),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts");
    let mut config = Config::new(&input, dir.path().join("tenants.results.csv"));
    config.tenants = names
        .iter()
        .enumerate()
        .map(|(t, name)| autopilot_bulk::config::Tenant {
            key: format!("t{t}"),
            credentials: autopilot_bulk::config::Credentials::ClientSecret {
                tenant_id: name.clone(),
                client_id: "autopilot-bulk".into(),
                secret: "emulator".into(),
            },
            cloud: autopilot_bulk::config::Cloud::Global,
            graph_url: emulator.graph_url(),
            authority_url: emulator.authority_url(),
            rate: window,
        })
        .collect();
    config.adaptive_concurrency = true;
    let started = Instant::now();
    let summary = autopilot_bulk::run(config, CancellationToken::new())
        .await
        .expect("run starts");
    let elapsed = started.elapsed();
    let minimum = window.per * (u64::from(rows).div_ceil(100).saturating_sub(1) as u32);
    let stats = emulator.stats();
    let (violations, created, duplicates) = (
        stats.violations,
        stats.assignments_created,
        stats.duplicate_devices,
    );
    let per_tenant: Vec<u64> = stats
        .tenants
        .values()
        .map(|s| s.assignments_created)
        .collect();
    emulator.shutdown().await;
    let name = format!(
        "tenants-{tenants}x{rows}{}",
        if wrong { "+1-wrong-secret" } else { "" }
    );
    println!(
        "{name:<38} rows {:>7} · {:>6.2}s / one tenant's min {:>5.1}s = {:.3}× (one after another: \
         {:.0}s) · 429s {} · violations {violations} · created {created} · duplicates {duplicates} \
         · failed {} {:?} · exit {} · created per tenant {per_tenant:?}",
        summary.rows,
        elapsed.as_secs_f64(),
        minimum.as_secs_f64(),
        elapsed.as_secs_f64() / minimum.as_secs_f64(),
        minimum.as_secs_f64() * f64::from(tenants),
        summary.throttled_responses,
        summary.failed,
        summary.by_error_code,
        summary.exit_code(),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; anything else is a name filter.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for s in scenarios() {
        if filter.is_empty() || filter.iter().any(|f| s.name.contains(f.as_str())) {
            runtime.block_on(run(&s));
        }
    }
    for wrong in [false, true] {
        if filter.is_empty() || filter.iter().any(|f| "tenants-3x1000".contains(f.as_str())) {
            runtime.block_on(run_tenants(3, 1000, wrong));
        }
    }
}
