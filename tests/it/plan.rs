//! `plan INPUT`: the run's reads and decisions, no write: a plan CSV with what each row would
//! do (`write`, `skip`, `fail`, `invalid`), the counts, and `run`'s exit codes.

use crate::common;

use std::collections::HashSet;
use std::path::Path;

use autopilot_bulk::config::{Cloud, Config, Credentials, Tenant};
use autopilot_bulk::emulator::{Emulator, EmulatorConfig};
use autopilot_bulk::run::preview::{PlanReport, Would};
use common::*;

const UNKNOWN: &str = "ffffffff-0000-4000-8000-000000000001";

/// One plan file line: (row, device_id, serial_number, action, would, reason, tenant).
type PlanLine = (u64, String, String, String, String, String, String);

fn read_plan(path: &Path) -> Vec<PlanLine> {
    let mut rdr = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        [
            "row",
            "device_id",
            "serial_number",
            "action",
            "would",
            "reason",
            "tenant"
        ]
    );
    rdr.records()
        .map(|r| {
            let r = r.unwrap();
            let c = |i: usize| r[i].to_string();
            (r[0].parse().unwrap(), c(1), c(2), c(3), c(4), c(5), c(6))
        })
        .collect()
}

async fn plan(config: Config) -> PlanReport {
    autopilot_bulk::run::preview::plan(config, Default::default())
        .await
        .expect("plan starts")
}

fn plan_config(emulator: &Emulator, input: &Path) -> Config {
    let mut c = config_for(emulator, input, rate(100_000, 1000));
    c.output = input.with_file_name("devices.plan.csv");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_tells_write_skip_fail_and_invalid_and_writes_nothing() {
    let emulator = Emulator::start(EmulatorConfig {
        identities: (0..60).map(|i| (device(i), format!("PF{i:05}"))).collect(),
        devices: Some((0..60).map(device).collect::<HashSet<_>>()),
        ..emulator_config(rate(100_000, 1000))
    })
    .await
    .unwrap();
    // Night 1 assigned devices 0..30.
    let (_dir, path) = input(&group_rows(30));
    assert_eq!(
        run(config_for(&emulator, &path, rate(100_000, 1000)))
            .await
            .created,
        30
    );
    let before = emulator.stats();

    let mut csv = String::from("device_id,serial_number,target_type,group_id\n");
    for i in 0..40 {
        csv.push_str(&format!("{},,group,{GROUP}\n", device(i)));
    }
    csv.push_str(&format!("{UNKNOWN},,group,{GROUP}\n")); // 41: no such device
    csv.push_str(&format!(",NOPE1,group,{GROUP}\n")); // 42: no identity holds it
    csv.push_str(&format!("bogus,,group,{GROUP}\n")); // 43: invalid
    std::fs::write(&path, csv).unwrap();
    let config = plan_config(&emulator, &path);
    let report = plan(config.clone()).await;

    let counts = [Would::Write, Would::Skip, Would::Fail, Would::Invalid].map(|w| report.count(w));
    assert_eq!(counts, [10, 30, 2, 1], "{report:?}");
    assert_eq!(report.exit_code(), 1);
    let lines = read_plan(&config.output);
    assert_eq!(lines.len(), 43);
    assert_eq!(
        lines.iter().map(|l| l.0).collect::<Vec<_>>(),
        (1..=43).collect::<Vec<_>>()
    );
    for l in &lines[..30] {
        assert_eq!((l.3.as_str(), l.4.as_str()), ("assign", "skip"), "{l:?}");
    }
    for l in &lines[30..40] {
        assert_eq!(l.4, "write", "{l:?}");
        assert!(l.5.contains("notAssigned"), "{l:?}");
    }
    assert_eq!(lines[40].4, "fail");
    assert!(
        lines[40].5.contains("ResourceNotFound") || lines[40].5.contains("404"),
        "{:?}",
        lines[40]
    );
    assert_eq!(
        (lines[41].2.as_str(), lines[41].4.as_str()),
        ("NOPE1", "fail")
    );
    assert!(lines[41].5.contains("SerialNotFound"), "{:?}", lines[41]);
    assert_eq!(lines[42].4, "invalid");

    // Reads only: no write, and a read per device the listing did not show notAssigned.
    let stats = emulator.stats();
    assert_eq!(stats.write_requests, before.write_requests);
    assert_eq!(stats.assignments_created, 30);
    assert_eq!(stats.assignment_reads - before.assignment_reads, 31);
    assert!(!path.with_file_name("devices.results.csv.journal").exists());
    emulator.shutdown().await;
}

fn tenant(key: &str, emulator: &Emulator) -> Tenant {
    Tenant {
        key: key.into(),
        credentials: Credentials::ClientSecret {
            tenant_id: format!("{key}.onmicrosoft.com"),
            client_id: "autopilot-bulk".into(),
            secret: "s3cret".into(),
        },
        cloud: Cloud::Global,
        graph_url: emulator.graph_url(),
        authority_url: emulator.authority_url(),
        rate: rate(100_000, 1000),
    }
}

fn tenant_rows(rows: u32) -> String {
    let mut s = String::from("tenant,device_id,group_id\n");
    for i in 0..rows {
        for (t, key) in ["contoso", "fabrikam"].iter().enumerate() {
            s.push_str(&format!(
                "{key},{},{GROUP}\n",
                device(t as u32 * 10_000 + i)
            ));
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_reads_each_row_in_its_own_tenant() {
    let (a, b) = (
        Emulator::start(emulator_config(rate(100_000, 1000)))
            .await
            .unwrap(),
        Emulator::start(emulator_config(rate(100_000, 1000)))
            .await
            .unwrap(),
    );
    let (_dir, path) = input(&tenant_rows(5));
    let mut config = Config::new(&path, autopilot_bulk::config::default_output(&path));
    config.tenants = vec![tenant("contoso", &a), tenant("fabrikam", &b)];
    let first = run(config.clone()).await;
    assert_eq!(first.created, 10, "{first:?}");
    std::fs::write(&path, tenant_rows(8)).unwrap();
    let writes = (a.stats().write_requests, b.stats().write_requests);
    config.output = path.with_file_name("devices.plan.csv");
    let report = plan(config.clone()).await;
    assert_eq!(
        (report.count(Would::Skip), report.count(Would::Write)),
        (10, 6)
    );
    assert_eq!(report.exit_code(), 0);
    for l in read_plan(&config.output) {
        let index = u32::from_str_radix(&l.1[..8], 16).unwrap();
        let (tenant, i) = (index / 10_000, index % 10_000);
        assert_eq!(l.6, ["contoso", "fabrikam"][tenant as usize], "{l:?}");
        assert_eq!(l.4, if i < 5 { "skip" } else { "write" }, "{l:?}");
    }
    assert_eq!((a.stats().write_requests, b.stats().write_requests), writes);
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn the_plan_command_prints_counts_writes_the_plan_file_and_exits_as_run() {
    let (dir, path) = input(&group_rows(4));
    let out = bin()
        .arg("plan")
        .arg(&path)
        .arg("--emulator")
        .arg("-q")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains("plan: write 4 · skip 0 · fail 0 · invalid 0"),
        "{stdout}"
    );
    let lines = read_plan(&dir.path().join("devices.plan.csv"));
    assert!(lines.iter().all(|l| l.4 == "write"), "{lines:?}");
    assert!(!dir.path().join("devices.results.csv").exists());

    // An invalid row: exit 1; -o names the plan file.
    let mut csv = group_rows(2);
    csv.push_str("bogus,group,\n");
    std::fs::write(&path, csv).unwrap();
    let other = dir.path().join("tonight.csv");
    let out = bin()
        .arg("plan")
        .arg(&path)
        .arg("-o")
        .arg(&other)
        .args(["--emulator", "-q"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("write 2 · skip 0 · fail 0 · invalid 1"));
    assert_eq!(read_plan(&other).len(), 3);

    // No input: exit 2; no credentials: exit 2.
    let out = bin()
        .args(["plan", "no/such.csv", "--emulator", "-q"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = bin().arg("plan").arg(&path).arg("-q").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_plan_tells_members_devices_without_a_directory_object_and_new_members() {
    use autopilot_bulk::emulator::Group;
    const G: &str = "6a1e8c2b-3d4f-4a5b-9c6d-7e8f9a0b1c2d";
    let emulator = Emulator::start(EmulatorConfig {
        devices: Some((0..20).map(device).collect()),
        identities: (0..20)
            .map(|i| (device(i), format!("SER-{i:05}")))
            .collect(),
        groups: vec![Group::assigned(G, "Autopilot devices")],
        members: (0..5).map(|i| (G.to_string(), device(i))).collect(),
        not_in_directory: vec![device(5)],
        ..emulator_config(rate(100_000, 1000))
    })
    .await
    .unwrap();
    let mut csv = String::from("serial_number\n");
    for i in 0..10 {
        csv.push_str(&format!("SER-{i:05}\n"));
    }
    let (_dir, path) = input(&csv);
    let mut config = plan_config(&emulator, &path);
    config.defaults.action = autopilot_bulk::action::Action::Group;
    config.defaults.group_id = Some(G.parse().unwrap());
    let report = plan(config.clone()).await;
    let counts = [Would::Write, Would::Skip, Would::Fail, Would::Invalid].map(|w| report.count(w));
    assert_eq!(counts, [4, 5, 1, 0], "{report:?}");
    assert_eq!(report.exit_code(), 1);
    let lines = read_plan(&config.output);
    assert!(lines.iter().all(|l| l.3 == "group"), "{lines:?}");
    assert!(
        lines[5].5.contains("DeviceNotInDirectory"),
        "{:?}",
        lines[5]
    );
    let stats = emulator.stats();
    assert_eq!((stats.group_writes, stats.members_added), (0, 0));
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_secret_aborts_the_plan_with_exit_3() {
    let emulator = Emulator::start(EmulatorConfig {
        client_secret: Some("the-real-one".into()),
        ..emulator_config(rate(100_000, 1000))
    })
    .await
    .unwrap();
    let (_dir, path) = input(&group_rows(3));
    let report = plan(plan_config(&emulator, &path)).await;
    assert!(report.aborted.is_some(), "{report:?}");
    assert_eq!(report.exit_code(), 3);
    emulator.shutdown().await;
}
