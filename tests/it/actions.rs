//! The action is part of the row: `--dry-run` and `preflight` show and probe the request the
//! action really sends, also where another action's route is refused.

use crate::common;

use autopilot_bulk::action::Action;
use autopilot_bulk::emulator::{Emulator, EmulatorConfig};
use autopilot_bulk::preflight::PreflightConfig;
use common::*;
use tokio_util::sync::CancellationToken;

const TENANT: &str = "0f1e2d3c-4b5a-4697-8877-665544332211";
const APP: &str = "a1b2c3d4-0000-4000-8000-00000000cafe";

/// An emulator whose assignment route answers 400 "No OData route exists…", as Graph has been
/// reported to: only the tag route works.
async fn assignment_route_refused() -> Emulator {
    Emulator::start(EmulatorConfig {
        devices: Some((0..3).map(device).collect()),
        identities: (0..3).map(|i| (device(i), format!("SER-{i}"))).collect(),
        no_odata_route: true,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap()
}

#[test]
fn a_tag_dry_run_shows_the_update_it_sends_not_an_assignment() {
    let csv = format!(
        "device_id,serial_number,group_tag\n{},,Kiosk\n,SER-9,Lab\n",
        device(1)
    );
    let (_dir, path) = input(&csv);
    let out = bin()
        .arg("run")
        .arg(&path)
        .args(["--action", "tag", "--dry-run"])
        .args(["--graph-url", "https://graph.example/beta"])
        // A dry run loads the credentials the run would use (never sending them).
        .args(["--tenant-id", "t", "--client-id", "c"])
        .env("AZURE_CLIENT_SECRET", "s")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let first = format!(
        "row 1: POST https://graph.example/beta/deviceManagement/windowsAutopilotDeviceIdentities/{}/updateDeviceProperties",
        device(1)
    );
    assert!(stdout.contains(&first), "{stdout}");
    assert!(
        stdout.contains(
            "row 2: POST https://graph.example/beta/deviceManagement/windowsAutopilotDeviceIdentities/{id of serial \"SER-9\"}/updateDeviceProperties"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("\"groupTag\": \"Kiosk\""), "{stdout}");
    assert!(stdout.contains("\"groupTag\": \"Lab\""), "{stdout}");
    assert!(!stdout.contains("deploymentProfile"), "{stdout}");
    assert!(!stdout.contains("@odata.type"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_for_tags_probes_the_tag_route_and_passes_where_assignments_are_refused() {
    let emulator = assignment_route_refused().await;
    let (_dir, path) = input(&format!("device_id,group_tag\n{},Kiosk\n", device(2)));
    let check = |action: Action| {
        let mut graph = config_for(&emulator, &path, rate(1000, 1000));
        graph.defaults.action = action;
        let config = PreflightConfig {
            input: Some(path.clone()),
            graph,
            import: false,
        };
        autopilot_bulk::preflight(config, CancellationToken::new())
    };
    let tag = check(Action::Tag).await.unwrap();
    let text = tag.render();
    assert_eq!(tag.exit_code(), 0, "{text}");
    let route = format!(
        "tag route: GET {}/deviceManagement/windowsAutopilotDeviceIdentities/{} answers 200",
        emulator.graph_url(),
        device(2)
    );
    assert!(text.contains(&route), "{text}");
    assert!(text.contains("/updateDeviceProperties"), "{text}");
    assert!(text.contains("\"groupTag\": \"Kiosk\""), "{text}");
    assert!(!text.contains("assignment route"), "{text}");
    // The same tenant fails an assign run's check: the refusal is real.
    let (_d2, assign_input) = input(&group_rows(1));
    let mut graph = config_for(&emulator, &assign_input, rate(1000, 1000));
    graph.defaults.action = Action::Assign;
    let assign = autopilot_bulk::preflight(
        PreflightConfig {
            input: Some(assign_input.clone()),
            graph,
            import: false,
        },
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(assign.exit_code(), 1, "{}", assign.render());
    let rendered = assign.render();
    assert!(rendered.contains("No OData route exists"), "{rendered}");
    // The fix names the routes that work.
    assert!(
        rendered.contains("--action group") && rendered.contains("--action tag"),
        "{rendered}"
    );
    let stats = emulator.stats();
    assert_eq!((stats.write_requests, stats.group_tags_set), (0, 0));
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binarys_preflight_takes_action_tag_without_an_input() {
    let emulator = assignment_route_refused().await;
    let mut cmd = bin();
    cmd.arg("preflight")
        .args(["--action", "tag"])
        .args(["--graph-url", &emulator.graph_url()])
        .args(["--authority-url", &emulator.authority_url()])
        .env("AZURE_TENANT_ID", TENANT)
        .env("AZURE_CLIENT_ID", APP)
        .env("AZURE_CLIENT_SECRET", "any");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("✓ tag route: GET"), "{stdout}");
    assert!(stdout.contains("preflight: ok"), "{stdout}");
    emulator.shutdown().await;
}

/// Two tag rows for one device: the second is refused, and the reason says a different tag
/// conflicts (only the first row's tag is set), not merely "duplicate".
#[test]
fn a_second_tag_for_a_device_is_named_a_conflict() {
    let d = crate::common::device(1);
    let (_dir, input) =
        crate::common::input(&format!("device_id,group_tag\n{d},Kiosk\n{d},Sales\n"));
    let out = crate::common::bin()
        .args(["validate", "--action", "tag"])
        .arg(&input)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        crate::common::text(&out.stdout),
        crate::common::text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("row 2: duplicate of row 1"), "{text}");
    assert!(
        text.contains("\"Sales\" is not set") && text.contains("conflict"),
        "{text}"
    );
}

/// A tag run whose rows all name serials reads the listing once: the pass that resolves the
/// serials shows their tags too. A second night finds every tag set and writes nothing.
#[tokio::test]
async fn a_tag_run_by_serial_reads_the_listing_once() {
    let emulator = Emulator::start(EmulatorConfig {
        identities: (0..30).map(|i| (device(i), format!("TS-{i}"))).collect(),
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap();
    let mut csv = String::from("serial_number,group_tag\n");
    for i in 0..30 {
        csv.push_str(&format!("TS-{i},Kiosk\n"));
    }
    let (_dir, path) = input(&csv);
    let mut config = config_for(&emulator, &path, rate(1000, 1000));
    config.defaults.action = Action::Tag;
    let night = run(config.clone()).await;
    assert_eq!(night.created, 30, "{night:?}");
    assert_eq!(emulator.stats().identity_reads, 1, "one pass of one page");
    config.overwrite = true;
    let again = run(config).await;
    assert_eq!((again.created, again.existing), (0, 30), "{again:?}");
    let stats = emulator.stats();
    assert_eq!((stats.identity_reads, stats.group_tags_set), (2, 30));
    emulator.shutdown().await;
}
