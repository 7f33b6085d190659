//! `import`: hardware hashes registered end to end against the in-process emulator: batched,
//! read before write, errors named with advice, one sync, only this run's records deleted,
//! `--resume` after a stop never importing a device twice, and the import file as `run`'s
//! input.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use autopilot_bulk::config::{Config, Credentials};
use autopilot_bulk::emulator::{Emulator, EmulatorConfig, ImportRecordState};
use autopilot_bulk::import::{ImportConfig, ImportOutcome, ImportStatus, ImportSummary, Settings};
use tokio_util::sync::CancellationToken;

use crate::common::device;

/// A plausible hash (base64 of 48 bytes) for device `i`.
fn hash(i: u32) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = (0..48u32).map(|b| (b * 7 + i) as u8).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn serial(i: u32) -> String {
    format!("HX{i:05}")
}

/// A Get-WindowsAutopilotInfo file of devices `0..n` (with a group tag).
pub(crate) fn hashes(n: u32) -> String {
    let mut s = String::from("Device Serial Number,Windows Product ID,Hardware Hash,Group Tag\n");
    for i in 0..n {
        s.push_str(&format!("{},,{},Kiosk\n", serial(i), hash(i)));
    }
    s
}

fn write_input(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hashes.csv");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// Fast processing and syncs, so that a test takes seconds.
fn emulator_config() -> EmulatorConfig {
    EmulatorConfig {
        import_delay: Duration::from_millis(200),
        sync_duration: Duration::from_millis(300),
        ..EmulatorConfig::default()
    }
}

fn config_for(emulator: &Emulator, input: &Path) -> ImportConfig {
    let mut graph = Config::new(input, PathBuf::new());
    graph.graph_url = emulator.graph_url();
    graph.authority_url = emulator.authority_url();
    graph.credentials = Credentials::for_emulator();
    let mut c = ImportConfig::new(input, graph);
    c.settings = Settings {
        sync_interval: Duration::from_secs(600),
        ..Settings::default()
    };
    c
}

async fn import(config: ImportConfig) -> ImportSummary {
    autopilot_bulk::import::import(config, CancellationToken::new())
        .await
        .expect("import starts")
}

#[derive(Debug, Clone)]
struct Line {
    row: u64,
    serial: String,
    status: String,
    device_id: String,
    error_code: String,
    error_name: String,
    error_message: String,
}

fn read_lines(path: &Path) -> Vec<Line> {
    let mut rdr = csv::Reader::from_path(path).unwrap();
    let headers: Vec<String> = rdr.headers().unwrap().iter().map(str::to_string).collect();
    assert_eq!(headers, autopilot_bulk::import::HEADER);
    rdr.records()
        .map(|r| {
            let r = r.unwrap();
            Line {
                row: r[0].parse().unwrap(),
                serial: r[1].to_string(),
                status: r[2].to_string(),
                device_id: r[3].to_string(),
                error_code: r[5].to_string(),
                error_name: r[6].to_string(),
                error_message: r[7].to_string(),
            }
        })
        .collect()
}

fn by_status(lines: &[Line]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        *m.entry(l.status.clone()).or_insert(0) += 1;
    }
    m
}

/// The case: 300 hashes with 5 × 806, 3 × 808, 2 bad hashes, 2 serials twice and 20
/// already registered; two import records of another run in the tenant.
#[tokio::test]
async fn three_hundred_hashes_register_once_each_with_errors_named_and_foreign_records_kept() {
    let mut text = hashes(296);
    text.push_str(&format!("{},,not base64!,Kiosk\n", serial(900)));
    text.push_str(&format!("{},,QUJD,Kiosk\n", serial(901)));
    text.push_str(&format!("{},,{},Kiosk\n", serial(3), hash(3)));
    text.push_str(&format!(
        "{},,{},Kiosk\n",
        serial(4).to_lowercase(),
        hash(4)
    ));
    let (_dir, input) = write_input(&text);
    let registered: Vec<(String, String)> = (100..120).map(|i| (device(i), serial(i))).collect();
    let emulator = Emulator::start(EmulatorConfig {
        identities: registered.clone(),
        import_errors: (200..205)
            .map(|i| (serial(i), 806))
            .chain((210..213).map(|i| (serial(i), 808)))
            .collect(),
        import_records: vec![
            ("FOREIGN-1".into(), ImportRecordState::Complete),
            ("FOREIGN-2".into(), ImportRecordState::Error),
        ],
        // A window of 1,000 writes a second: the 276 record deletions take no 20-second
        // windows of the test's time.
        limit: autopilot_bulk::emulator::Limit::new(1000, Duration::from_secs(1)),
        ..emulator_config()
    })
    .await
    .unwrap();
    let mut config = config_for(&emulator, &input);
    config.graph.rate = crate::common::rate(1000, 1000);
    let summary = import(config).await;
    let lines = read_lines(&summary.output);
    let rows: HashSet<u64> = lines.iter().map(|l| l.row).collect();
    assert_eq!((lines.len(), rows.len()), (300, 300), "one line a row");
    let counts = by_status(&lines);
    assert_eq!(counts.get("registered"), Some(&268), "{counts:?}");
    assert_eq!(counts.get("existing"), Some(&20));
    assert_eq!(counts.get("failed"), Some(&8));
    assert_eq!(counts.get("invalid"), Some(&4));
    assert_eq!(summary.exit_code(), 1);
    assert_eq!(summary.outcome, ImportOutcome::Completed);
    for l in lines.iter().filter(|l| l.status == "existing") {
        let id = registered
            .iter()
            .find(|(_, s)| *s == l.serial)
            .map(|(d, _)| d);
        assert_eq!(Some(&l.device_id), id, "{l:?}");
    }
    let other_tenant = lines
        .iter()
        .filter(|l| l.error_code == "808")
        .collect::<Vec<_>>();
    assert_eq!(other_tenant.len(), 3);
    assert!(
        other_tenant
            .iter()
            .all(|l| l.error_name == "ZtdDeviceAssignedToOtherTenant"
                && l.error_message.contains("deregistered there"))
    );
    assert_eq!(lines.iter().filter(|l| l.error_code == "806").count(), 5);
    let bad: Vec<&Line> = lines.iter().filter(|l| l.status == "invalid").collect();
    assert!(
        bad.iter()
            .any(|l| l.error_message.contains("also on row 4")),
        "{bad:?}"
    );
    assert!(bad.iter().all(|l| !l.error_message.contains("not base64!")));
    // Every registered device is an identity the tenant lists, under the id the file gives.
    let listed: HashSet<String> = lines
        .iter()
        .filter(|l| l.status == "registered")
        .map(|l| l.device_id.to_lowercase())
        .collect();
    assert_eq!(listed.len(), 268);
    let stats = emulator.stats();
    assert_eq!(
        stats.devices_registered,
        268 + 1,
        "ours and the foreign complete one"
    );
    assert_eq!(stats.records_imported, 276);
    assert_eq!(stats.serials_imported_twice, 0);
    assert!(
        stats.import_requests <= 3 + 2,
        "batched: {}",
        stats.import_requests
    );
    assert_eq!(stats.syncs, 1);
    assert_eq!((stats.foreign_records_deleted, stats.violations), (0, 0));
    assert_eq!(stats.import_records_deleted, 276, "ours, refused ones too");
    let left: Vec<String> = emulator
        .import_records(None)
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(left, ["FOREIGN-1", "FOREIGN-2"]);
    assert_eq!(summary.records_deleted, 276);
    emulator.shutdown().await;
}

/// A stop with imports sent and not settled leaves the journal; `--resume` finds the records
/// the stopped run created and watches them: no serial imported twice, each row once.
#[tokio::test]
async fn a_resume_after_a_stop_mid_import_imports_no_device_twice() {
    let (_dir, input) = write_input(&hashes(60));
    let emulator = Emulator::start(emulator_config()).await.unwrap();
    let mut config = config_for(&emulator, &input);
    config.settings.batch = 5;
    config.settings.concurrency = 1;
    config.graph.rate = crate::common::rate(4, 1000);
    let stop = CancellationToken::new();
    let first = tokio::spawn(autopilot_bulk::import::import(config.clone(), stop.clone()));
    while emulator.stats().records_imported < 10 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    let stopped = first.await.unwrap().unwrap();
    assert_eq!(stopped.outcome, ImportOutcome::Interrupted);
    assert_eq!(stopped.exit_code(), 130);
    let before = emulator.stats().records_imported;
    assert!(before < 60, "stopped mid-import: {before}");
    config.resume = true;
    config.graph.rate = crate::common::rate(100, 1000);
    let resumed = import(config).await;
    assert_eq!(resumed.outcome, ImportOutcome::Completed);
    let lines = read_lines(&resumed.output);
    let rows: HashSet<u64> = lines.iter().map(|l| l.row).collect();
    assert_eq!(
        (lines.len(), rows.len()),
        (60, 60),
        "{:?}",
        by_status(&lines)
    );
    assert!(lines.iter().all(|l| l.status == "registered"));
    let stats = emulator.stats();
    assert_eq!(stats.serials_imported_twice, 0);
    assert_eq!(stats.records_imported, 60);
    assert_eq!(stats.devices_registered, 60);
    assert!(
        emulator.import_records(None).is_empty(),
        "the stopped run's records too"
    );
    assert!(!autopilot_bulk::output::Journal::path_for(&resumed.output).exists());
    emulator.shutdown().await;
}

/// A batch over the service's limit is refused whole: it is split until it fits, and still no
/// device goes twice.
#[tokio::test]
async fn a_refused_batch_is_split_until_it_fits() {
    let (_dir, input) = write_input(&hashes(90));
    let emulator = Emulator::start(EmulatorConfig {
        import_batch_limit: 30,
        ..emulator_config()
    })
    .await
    .unwrap();
    let summary = import(config_for(&emulator, &input)).await;
    assert_eq!(summary.count(ImportStatus::Registered), 90);
    let stats = emulator.stats();
    // 90 refused, 45 refused, then four of at most 23: seven calls.
    assert!(stats.import_requests <= 8, "{}", stats.import_requests);
    assert_eq!(
        (stats.records_imported, stats.serials_imported_twice),
        (90, 0)
    );
    emulator.shutdown().await;
}

/// A sync within the service's interval of the last one would be refused (429, no
/// Retry-After): the import reads the tenant's last sync time, waits out the interval and
/// syncs once, never refused, never throttled.
#[tokio::test]
async fn a_sync_refused_for_the_interval_is_asked_again_when_allowed() {
    let (_dir, input) = write_input(&hashes(12));
    let emulator = Emulator::start(EmulatorConfig {
        sync_interval: Duration::from_secs(2),
        last_sync_ago: Some(Duration::from_millis(500)),
        import_delay: Duration::ZERO,
        ..emulator_config()
    })
    .await
    .unwrap();
    let mut config = config_for(&emulator, &input);
    config.settings.sync_interval = Duration::from_secs(2);
    let summary = import(config).await;
    assert_eq!(
        summary.count(ImportStatus::Registered),
        12,
        "{}",
        summary.render()
    );
    let stats = emulator.stats();
    assert_eq!((stats.syncs, stats.syncs_refused), (1, 0));
    assert_eq!((stats.throttled, stats.violations), (0, 0));
    assert_eq!(summary.exit_code(), 0);
    emulator.shutdown().await;
}

/// `import → run --action group`: the import file is a `run` input as it is.
#[tokio::test]
async fn the_import_file_is_the_input_of_a_group_run() {
    let (_dir, input) = write_input(&hashes(8));
    let emulator = Emulator::start(emulator_config()).await.unwrap();
    let summary = import(config_for(&emulator, &input)).await;
    assert_eq!(summary.count(ImportStatus::Registered), 8);
    let mut run =
        crate::common::config_for(&emulator, &summary.output, crate::common::rate(100, 1000));
    run.defaults.action = autopilot_bulk::input::Action::Group;
    run.defaults.group_id = Some(crate::common::GROUP.parse().unwrap());
    let ran = crate::common::run(run).await;
    assert_eq!(ran.created, 8, "{ran:?}");
    assert_eq!(emulator.stats().members_added, 8);
    emulator.shutdown().await;
}

/// The command line: `import --emulator` writes the import file and its summary.
#[test]
fn the_command_imports_into_the_in_process_emulator() {
    let (dir, input) = write_input(&hashes(3));
    let summary = dir.path().join("summary.json");
    let out = crate::common::bin()
        .args(["import", "-q", "--emulator", "--summary-json"])
        .arg(&summary)
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::common::text(&out.stderr)
    );
    let lines = read_lines(&dir.path().join("hashes.import.csv"));
    assert_eq!(lines.len(), 3);
    assert!(
        lines
            .iter()
            .all(|l| l.status == "registered" && !l.device_id.is_empty())
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(
        (json["registered"].as_u64(), json["command"].as_str()),
        (Some(3), Some("import"))
    );
    assert_eq!(json["requests"]["sync"].as_u64(), Some(1));
    let again = crate::common::bin()
        .args(["import", "-q", "--emulator"])
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(
        again.status.code(),
        Some(2),
        "an existing import file is refused"
    );
    assert!(crate::common::text(&again.stderr).contains("hashes.import.csv"));
}

/// Answers lost after the service acted (dropped connections) and gateway timeouts on every
/// route: a lost import is read back before anything is sent again, so no device is imported
/// twice, and every record of the run is still deleted.
#[tokio::test]
async fn lost_answers_never_import_a_device_twice() {
    let (_dir, input) = write_input(&hashes(120));
    let emulator = Emulator::start(EmulatorConfig {
        fault_drop: 0.15,
        fault_504: 0.1,
        seed: 7,
        limit: autopilot_bulk::emulator::Limit::new(1000, Duration::from_secs(1)),
        ..emulator_config()
    })
    .await
    .unwrap();
    let mut config = config_for(&emulator, &input);
    config.settings.batch = 10;
    config.graph.rate = crate::common::rate(1000, 1000);
    config.graph.request_timeout = Duration::from_secs(5);
    config.graph.initial_backoff = Duration::from_millis(50);
    let summary = import(config).await;
    let stats = emulator.stats();
    assert!(
        stats.dropped_connections + stats.faults_504 > 0,
        "faults were drawn"
    );
    assert_eq!(stats.serials_imported_twice, 0);
    assert_eq!(
        summary.count(ImportStatus::Registered),
        120,
        "{}",
        summary.render()
    );
    let left = emulator.import_records(None);
    assert!(left.is_empty(), "{left:?} {}", summary.render());
    assert_eq!(summary.records_left, 0, "{}", summary.render());
    emulator.shutdown().await;
}

/// `kill -9` with imports in flight, twice, then `--resume`: the journal names every device
/// sent, the resume finds their records and watches them, and no device is imported twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_sigkill_mid_import_then_resumed_imports_each_device_once() {
    use std::process::{Command, Stdio};
    let emulator = Emulator::start(EmulatorConfig {
        // Requests spend time in flight, so a kill lands between "stored" and "answered".
        latency: Some(Duration::from_millis(40)),
        seed: 5,
        ..emulator_config()
    })
    .await
    .unwrap();
    let (dir, input) = write_input(&hashes(80));
    let output = dir.path().join("hashes.import.csv");
    let spawn = |resume: bool| {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin!("autopilot-bulk"));
        c.env("AUTOPILOT_BULK_GRAPH_URL", emulator.graph_url())
            .env("AUTOPILOT_BULK_AUTHORITY_URL", emulator.authority_url())
            .env("AZURE_TENANT_ID", "contoso")
            .env("AZURE_CLIENT_ID", "app")
            .env("AZURE_CLIENT_SECRET", "s3cret")
            .args(["import", "--batch-size", "5", "--concurrency", "2"])
            // A resume waits this long after the kill for the dead run's requests to land.
            .args(["--request-timeout", "3s"])
            .arg(&input)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if resume {
            c.arg("--resume");
        }
        c.spawn().unwrap()
    };
    for (resume, kill_at) in [(false, 15), (true, 40)] {
        let mut child = spawn(resume);
        let mut polls = 0;
        while emulator.stats().records_imported < kill_at {
            polls += 1;
            assert!(polls < 4000, "the emulator never reached {kill_at} records");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        child.kill().unwrap(); // SIGKILL: no cleanup of any kind
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            out.status.code(),
            None,
            "the import ended before it was killed"
        );
    }
    assert!(emulator.stats().records_imported < 80, "killed mid-import");
    let child = spawn(true);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines = read_lines(&output);
    let rows: HashSet<u64> = lines.iter().map(|l| l.row).collect();
    assert_eq!(
        (lines.len(), rows.len()),
        (80, 80),
        "{:?}",
        by_status(&lines)
    );
    assert!(
        lines.iter().all(|l| l.status == "registered"),
        "{:?}",
        by_status(&lines)
    );
    let stats = emulator.stats();
    assert_eq!(stats.serials_imported_twice, 0);
    assert_eq!((stats.records_imported, stats.devices_registered), (80, 80));
    assert!(
        emulator.import_records(None).is_empty(),
        "every record of the killed runs deleted"
    );
    assert!(!stderr.contains("s3cret"));
    emulator.shutdown().await;
}

/// `--tenants`: each row imported into the tenant its `tenant` column names, each tenant with
/// its own import and sync; the import file carries the tenant.
#[test]
fn a_tenants_file_imports_each_row_into_its_tenant() {
    let mut text = String::from("Device Serial Number,Hardware Hash,tenant\n");
    for i in 0..6 {
        let tenant = if i % 2 == 0 { "contoso" } else { "fabrikam" };
        text.push_str(&format!("{},{},{tenant}\n", serial(i), hash(i)));
    }
    text.push_str(&format!("{},{},nowhere\n", serial(9), hash(9)));
    let (dir, input) = write_input(&text);
    let toml = dir.path().join("tenants.toml");
    let mut file = String::new();
    for key in ["contoso", "fabrikam"] {
        file.push_str(&format!(
            "[tenants.{key}]\ntenant_id = \"{key}.onmicrosoft.com\"\nclient_id = \
             \"00000000-0000-0000-0000-000000000000\"\nclient_secret_env = \"SECRET_{key}\"\n\n"
        ));
    }
    std::fs::write(&toml, file).unwrap();
    let summary = dir.path().join("summary.json");
    let out = crate::common::bin()
        .args(["import", "-q", "--emulator", "--tenants"])
        .arg(&toml)
        .arg("--summary-json")
        .arg(&summary)
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        crate::common::text(&out.stderr)
    );
    let mut rdr = csv::Reader::from_path(dir.path().join("hashes.import.csv")).unwrap();
    let headers: Vec<String> = rdr.headers().unwrap().iter().map(str::to_string).collect();
    assert_eq!(headers.last().map(String::as_str), Some("tenant"));
    let mut by_tenant: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in rdr.records() {
        let r = r.unwrap();
        by_tenant
            .entry(r[10].to_string())
            .or_default()
            .push(r[2].to_string());
    }
    assert_eq!(by_tenant["contoso"], ["registered"; 3]);
    assert_eq!(by_tenant["fabrikam"], ["registered"; 3]);
    assert_eq!(by_tenant["nowhere"], ["invalid"]);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(
        json["requests"]["sync"].as_u64(),
        Some(2),
        "one sync a tenant: {json}"
    );
}

/// `preflight --import`: the hash file counted, the import records and the last sync read;
/// nothing written.
#[test]
fn preflight_for_import_reads_the_records_and_the_last_sync() {
    let mut text = hashes(4);
    text.push_str(&format!("{},,nope,\n", serial(50)));
    let (_dir, input) = write_input(&text);
    let out = crate::common::bin()
        .args(["preflight", "--import", "--emulator"])
        .arg(&input)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        crate::common::text(&out.stdout),
        crate::common::text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("hash file: 5 rows, 4 valid"), "{all}");
    assert!(
        all.contains("import records answer: 0 on the first page"),
        "{all}"
    );
    assert!(all.contains("Autopilot sync: last never"), "{all}");
    assert!(!all.contains("assignment route"), "{all}");
}

/// A stop while the run deletes its records (every device already registered): `--resume`
/// has nothing to import, and deletes the records the stop left.
#[tokio::test]
async fn a_resume_deletes_the_records_a_stop_left_behind() {
    let (_dir, input) = write_input(&hashes(20));
    let emulator = Emulator::start(emulator_config()).await.unwrap();
    let mut config = config_for(&emulator, &input);
    config.settings.concurrency = 1;
    config.graph.rate = crate::common::rate(4, 1000);
    let stop = CancellationToken::new();
    let first = tokio::spawn(autopilot_bulk::import::import(config.clone(), stop.clone()));
    while emulator.stats().import_records_deleted < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    let stopped = first.await.unwrap().unwrap();
    assert!(stopped.records_left > 0, "{}", stopped.render());
    assert!(!emulator.import_records(None).is_empty());
    config.resume = true;
    config.graph.rate = crate::common::rate(100, 1000);
    let resumed = import(config).await;
    assert_eq!(resumed.earlier.get(&ImportStatus::Registered), Some(&20));
    assert_eq!(resumed.requests.imports, 0);
    assert_eq!(resumed.exit_code(), 0);
    assert!(
        emulator.import_records(None).is_empty(),
        "{}",
        resumed.render()
    );
    assert_eq!(emulator.stats().serials_imported_twice, 0);
    emulator.shutdown().await;
}
