//! `run --action group` end to end against the emulator's Entra directory: devices named by
//! serial, some already members, some without a directory object; twenty a request, exactly
//! once through lost answers, nothing written on a second run; `--profile` and `profiles`.

use crate::common;

use autopilot_bulk::action::Action;
use autopilot_bulk::emulator::{Emulator, EmulatorConfig, Group, Profile, ProfileTarget};
use common::*;

const G: &str = "6a1e8c2b-3d4f-4a5b-9c6d-7e8f9a0b1c2d";
const DYNAMIC: &str = "7b2f9d3c-4e5a-4b6c-8d7e-8f9a0b1c2d3e";
const PROFILE: &str = "0c9d8e7f-6a5b-4c3d-9e2f-1a0b9c8d7e6f";

fn serial(i: u32) -> String {
    format!("SER-{i:05}")
}

/// A tenant of `identities` Autopilot devices, one assigned group `G` (and a dynamic one).
fn tenant(identities: u32) -> EmulatorConfig {
    EmulatorConfig {
        devices: Some((0..identities).map(device).collect()),
        identities: (0..identities).map(|i| (device(i), serial(i))).collect(),
        groups: vec![
            Group::assigned(G, "Autopilot devices"),
            Group::dynamic(DYNAMIC, "Kiosks (rule)"),
        ],
        ..emulator_config(rate(1000, 1000))
    }
}

fn group_config(
    emulator: &Emulator,
    csv: &str,
) -> (tempfile::TempDir, autopilot_bulk::config::Config) {
    let (dir, path) = input(csv);
    let mut config = config_for(emulator, &path, rate(1000, 1000));
    config.defaults.action = Action::Group;
    config.defaults.group_id = Some(G.parse().unwrap());
    (dir, config)
}

fn by_status(lines: &[ResultLine], status: &str) -> Vec<u64> {
    lines
        .iter()
        .filter(|l| l.status == status)
        .map(|l| l.row)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_serials_join_in_twenties_members_kept_and_a_second_run_writes_nothing() {
    // Rows 1..=1000 name devices 0..1000 by serial: 50 already members (0..50), 5 without a
    // directory object (50..55), 5 without an azureAdDeviceId (55..60).
    let emulator = Emulator::start(EmulatorConfig {
        members: (0..50).map(|i| (G.to_string(), device(i))).collect(),
        not_in_directory: (50..55).map(device).collect(),
        no_device_id: (55..60).map(device).collect(),
        ..tenant(3000)
    })
    .await
    .unwrap();
    let mut csv = String::from("serial_number\n");
    for i in 0..1000 {
        csv.push_str(&format!("{}\n", serial(i)));
    }
    let (_dir, config) = group_config(&emulator, &csv);
    let output = config.output.clone();
    let summary = run(config.clone()).await;
    let lines = read_results(&output);
    assert_each_row_once(&lines, 1000);
    assert_eq!(by_status(&lines, "existing"), (1..=50).collect::<Vec<_>>());
    let failed: Vec<&ResultLine> = lines.iter().filter(|l| l.status == "failed").collect();
    assert_eq!(failed.len(), 10, "{failed:?}");
    assert!(
        failed
            .iter()
            .all(|l| l.error_code == "DeviceNotInDirectory"),
        "{failed:?}"
    );
    assert_eq!(by_status(&lines, "created").len(), 940);
    // Each created row is its own device, a member now.
    let created = lines.iter().find(|l| l.status == "created").unwrap();
    assert_eq!(created.device_id, device(created.row as u32 - 1));
    let stats = emulator.stats();
    assert_eq!(stats.members_added, 940, "{stats:?}");
    assert_eq!(stats.duplicate_member_attempts, 0);
    assert!(stats.group_writes <= 940_u64.div_ceil(20) + 10, "{stats:?}");
    assert_eq!((stats.write_requests, stats.assignments_created), (0, 0));
    assert_eq!(summary.exit_code(), 1, "10 rows failed");

    // Night 2: the same file; everything is already there.
    let mut again = config;
    again.overwrite = true;
    let writes = emulator.stats().group_writes;
    let second = run(again).await;
    let lines = read_results(&output);
    assert_eq!(by_status(&lines, "existing").len(), 990);
    assert_eq!(by_status(&lines, "failed").len(), 10);
    assert_eq!(
        emulator.stats().group_writes,
        writes,
        "the second run wrote"
    );
    assert_eq!(second.created, 0);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_are_settled_by_reading_the_members_back_never_resent_blind() {
    let emulator = Emulator::start(EmulatorConfig {
        fault_drop: 0.25,
        seed: 7,
        ..tenant(200)
    })
    .await
    .unwrap();
    let mut csv = String::from("device_id\n");
    for i in 0..200 {
        csv.push_str(&format!("{}\n", device(i)));
    }
    let (_dir, mut config) = group_config(&emulator, &csv);
    config.initial_backoff = std::time::Duration::from_millis(20);
    let output = config.output.clone();
    let summary = run(config).await;
    let lines = read_results(&output);
    assert_each_row_once(&lines, 200);
    assert_eq!(summary.created, 200, "{summary:?}");
    let stats = emulator.stats();
    assert!(
        stats.dropped_connections > 0,
        "no answer was lost: {stats:?}"
    );
    assert_eq!(stats.members_added, 200);
    assert_eq!(
        stats.duplicate_member_attempts, 0,
        "a member was sent twice"
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_dynamic_groups_fail_their_rows_without_a_write() {
    let emulator = Emulator::start(tenant(10)).await.unwrap();
    let unknown = "1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b";
    let csv = format!(
        "device_id,group_id\n{},{G}\n{},{unknown}\n{},{DYNAMIC}\n",
        device(1),
        device(2),
        device(3)
    );
    let (_dir, config) = group_config(&emulator, &csv);
    let output = config.output.clone();
    let summary = run(config).await;
    let lines = read_results(&output);
    let code = |row: u64| {
        lines
            .iter()
            .find(|l| l.row == row)
            .unwrap()
            .error_code
            .clone()
    };
    assert_eq!(lines.iter().find(|l| l.row == 1).unwrap().status, "created");
    assert_eq!(code(2), "GroupNotFound");
    assert_eq!(code(3), "DynamicGroup");
    assert!(
        lines
            .iter()
            .find(|l| l.row == 3)
            .unwrap()
            .error_message
            .contains("--action tag"),
        "{lines:?}"
    );
    assert_eq!(summary.exit_code(), 1);
    assert_eq!(emulator.stats().group_writes, 1);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_must_target_the_group_before_any_write() {
    let other = "2a3b4c5d-6e7f-4a8b-9c0d-1e2f3a4b5c6d";
    let emulator = Emulator::start(EmulatorConfig {
        profiles: vec![
            Profile {
                id: PROFILE.into(),
                display_name: "Kiosk profile".into(),
                assigned_to: vec![ProfileTarget::Group(G.into())],
            },
            Profile {
                id: other.into(),
                display_name: "Unassigned".into(),
                assigned_to: vec![],
            },
        ],
        ..tenant(10)
    })
    .await
    .unwrap();
    let csv = format!("device_id\n{}\n{}\n", device(1), device(2));
    let (_dir, mut config) = group_config(&emulator, &csv);
    config.profile = Some("Unassigned".into());
    let refused = autopilot_bulk::run(config.clone(), Default::default()).await;
    let e = refused.expect_err("a profile that does not target the group is refused");
    assert!(e.to_string().contains("does not target group"), "{e}");
    assert!(e.to_string().contains("profiles assign"), "{e}");
    assert_eq!(emulator.stats().group_writes, 0);
    // `plan --profile` is refused the same way, before a row is planned.
    let mut planned = config.clone();
    planned.output = planned.output.with_extension("plan.csv");
    let plan = autopilot_bulk::run::preview::plan(planned.clone(), Default::default()).await;
    let e = plan.expect_err("the plan of a refused run is refused");
    assert!(e.to_string().contains("does not target group"), "{e}");
    assert!(!planned.output.exists(), "a plan file was written");
    planned.profile = Some("kiosk PROFILE".into());
    let report = autopilot_bulk::run::preview::plan(planned, Default::default())
        .await
        .expect("a profile that targets the group plans");
    assert_eq!(report.exit_code(), 0, "{report:?}");
    config.profile = Some("kiosk PROFILE".into());
    config.overwrite = true;
    let summary = run(config).await;
    assert_eq!(summary.created, 2);
    assert_eq!(emulator.stats().group_writes, 1);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_lists_and_assigns_once() {
    let emulator = Emulator::start(EmulatorConfig {
        profiles: vec![Profile {
            id: PROFILE.into(),
            display_name: "Kiosk profile".into(),
            assigned_to: vec![],
        }],
        ..tenant(3)
    })
    .await
    .unwrap();
    let profiles = |args: &[&str]| {
        let mut cmd = bin();
        cmd.arg("profiles")
            .args(args)
            .args(["--graph-url", &emulator.graph_url()])
            .args(["--authority-url", &emulator.authority_url()])
            .env("AZURE_TENANT_ID", "contoso")
            .env("AZURE_CLIENT_ID", "app")
            .env("AZURE_CLIENT_SECRET", "any");
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap();
            (out.status.code(), text(&out.stdout), text(&out.stderr))
        }
    };
    let (code, stdout, stderr) = profiles(&[]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("\"Kiosk profile\""), "{stdout}");
    assert!(stdout.contains("not assigned"), "{stdout}");
    let assign = ["assign", "Kiosk profile", "--group", "Autopilot devices"];
    let (code, stdout, stderr) = profiles(&assign).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("assigned to group {G}")),
        "{stdout}"
    );
    assert_eq!(emulator.stats().profile_assignments_created, 1);
    let (code, listed, _) = profiles(&[]).await;
    assert_eq!(code, Some(0));
    assert!(
        listed.contains(&format!("→ group {G} (Autopilot devices)")),
        "{listed}"
    );
    // Again, by ids: already there, nothing written.
    let (code, stdout, _) = profiles(&["assign", PROFILE, "--group", G]).await;
    assert_eq!(code, Some(0));
    assert!(stdout.contains("already assigned"), "{stdout}");
    assert_eq!(emulator.stats().profile_assignments_created, 1);
    // A group name no group has: exit 2, nothing written.
    let (code, _, stderr) = profiles(&["assign", PROFILE, "--group", "Nope"]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("no group of the tenant is named \"Nope\""),
        "{stderr}"
    );
    emulator.shutdown().await;
}

/// The samples' group rehearsal as the samples README gives it: the hardware-hash export by
/// serial number into a group, on the in-process emulator.
#[test]
fn the_samples_group_rehearsal_adds_every_found_device_in_two_writes() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["AutopilotHWID.csv", "emulator-devices.txt"] {
        let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("samples")
            .join(name);
        std::fs::copy(from, dir.path().join(name)).unwrap();
    }
    let out = bin()
        .arg("run")
        .arg(dir.path().join("AutopilotHWID.csv"))
        .args(["--emulator", "--action", "group", "--group-id", G, "-q"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("emulator: 29 members added in 2 group writes · 0 refs already members"),
        "{stderr}"
    );
    let lines = read_results(&dir.path().join("AutopilotHWID.results.csv"));
    assert_eq!(by_status(&lines, "created").len(), 29);
}

/// `preflight --action group`: the group is read (assigned, not dynamic), the token holds the
/// directory permissions, and a deployment profile must target the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_for_a_group_run_checks_the_group_and_its_profile() {
    let check = |emulator: &Emulator, group: &str| {
        let (dir, path) = input(&format!("device_id,group_id\n{},{group}\n", device(1)));
        let mut graph = config_for(emulator, &path, rate(1000, 1000));
        graph.defaults.action = Action::Group;
        let config = autopilot_bulk::preflight::PreflightConfig {
            input: Some(path),
            graph,
            import: false,
        };
        async move {
            let report = autopilot_bulk::preflight(config, Default::default())
                .await
                .unwrap();
            drop(dir);
            (report.exit_code(), report.render())
        }
    };
    let emulator = Emulator::start(EmulatorConfig {
        profiles: vec![Profile {
            id: PROFILE.into(),
            display_name: "Kiosk profile".into(),
            assigned_to: vec![ProfileTarget::Group(G.into())],
        }],
        ..tenant(5)
    })
    .await
    .unwrap();
    let (code, text) = check(&emulator, G).await;
    assert_eq!(code, 0, "{text}");
    for expected in [
        "permission GroupMember.ReadWrite.All granted",
        "permission Device.Read.All granted",
        "(assigned, security)",
        "deployment profile Kiosk profile targets the group",
        &format!("PATCH {}/groups/{G}", emulator.graph_url()),
        "members@odata.bind",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    let (code, text) = check(&emulator, DYNAMIC).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("is a dynamic group"), "{text}");
    assert_eq!(emulator.stats().group_writes, 0);
    emulator.shutdown().await;

    // A group no profile targets: the devices would get nothing from it.
    let bare = Emulator::start(tenant(5)).await.unwrap();
    let (code, text) = check(&bare, G).await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("no Autopilot deployment profile targets group"),
        "{text}"
    );
    assert!(text.contains("profiles assign"), "{text}");
    bare.shutdown().await;
}

/// `status` reads a group run's results as an assign run's: each device's profile status from
/// the identity listing, which turns assigned once the device is in a group the profile targets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_a_group_runs_devices_as_assigned_through_the_groups_profile() {
    let emulator = Emulator::start(EmulatorConfig {
        profiles: vec![Profile {
            id: PROFILE.into(),
            display_name: "Kiosk profile".into(),
            assigned_to: vec![ProfileTarget::Group(G.into())],
        }],
        assign_delay: std::time::Duration::ZERO,
        ..tenant(6)
    })
    .await
    .unwrap();
    let mut csv = String::from("serial_number\n");
    for i in 0..4 {
        csv.push_str(&format!("{}\n", serial(i)));
    }
    let (_dir, config) = group_config(&emulator, &csv);
    let results = config.output.clone();
    let graph = config.clone();
    assert_eq!(run(config).await.created, 4);
    let status = autopilot_bulk::status::StatusConfig::new(&results, graph);
    let report = autopilot_bulk::status(status, Default::default())
        .await
        .unwrap();
    assert_eq!(
        (report.rows, report.assigned),
        (4, 4),
        "{:?}",
        report.counts
    );
    emulator.shutdown().await;
}
