//! `preflight` against the in-process emulator: a working tenant, a route Graph does not
//! serve, a missing permission (refused, or absent from the token), a wrong secret; and `run`
//! stopping early on the unserved route.

mod common;

use autopilot_bulk::emulator::{Emulator, EmulatorConfig};
use autopilot_bulk::preflight::{PreflightConfig, Report};
use common::*;
use tokio_util::sync::CancellationToken;

const TENANT: &str = "0f1e2d3c-4b5a-4697-8877-665544332211";
const APP: &str = "a1b2c3d4-0000-4000-8000-00000000cafe";

async fn start(config: EmulatorConfig) -> Emulator {
    Emulator::start(EmulatorConfig {
        devices: Some((0..5).map(device).collect()),
        identities: (0..5).map(|i| (device(i), format!("SER-{i}"))).collect(),
        ..config
    })
    .await
    .unwrap()
}

async fn preflight(emulator: &Emulator, csv: &str) -> Report {
    let (_dir, path) = input(csv);
    let graph = config_for(emulator, &path, rate(1000, 1000));
    let config = PreflightConfig {
        input: Some(path),
        graph,
    };
    autopilot_bulk::preflight(config, CancellationToken::new())
        .await
        .expect("preflight starts")
}

/// The binary's `preflight` against `emulator` with a client secret.
async fn preflight_bin(
    emulator: &Emulator,
    path: &std::path::Path,
    secret: &str,
) -> (Option<i32>, String, String) {
    let mut cmd = bin();
    cmd.arg("preflight")
        .arg(path)
        .args(["--graph-url", &emulator.graph_url()])
        .args(["--authority-url", &emulator.authority_url()])
        .env("AZURE_TENANT_ID", TENANT)
        .env("AZURE_CLIENT_ID", APP)
        .env("AZURE_CLIENT_SECRET", secret);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

fn no_writes(emulator: &Emulator) {
    let stats = emulator.stats();
    assert_eq!(
        (stats.write_requests, stats.assignments_created),
        (0, 0),
        "preflight wrote: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_working_tenant_passes_and_nothing_is_written() {
    let emulator = start(EmulatorConfig::default()).await;
    let (_dir, path) = input(&group_rows(3));
    let (code, stdout, stderr) = preflight_bin(&emulator, &path, "any").await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    for expected in [
        format!("✓ token for tenant {TENANT}, app {APP}"),
        "✓ permission DeviceManagementServiceConfig.ReadWrite.All granted".into(),
        "✓ identity listing answers: 5 identities on the first page, no more pages".into(),
        format!("{}  serial SER-0", device(0)),
        format!("✓ first valid row: row 1, device {}", device(0)),
        "/deploymentProfile/assignments answers 200 (0 assignments held)".into(),
        format!(
            "row 1: POST {}",
            assignments_url(&emulator.graph_url(), &device(0))
        ),
        GROUP.into(),
        "preflight: ok".into(),
    ] {
        assert!(stdout.contains(&expected), "no {expected:?} in:\n{stdout}");
    }
    assert!(!stdout.contains('✗'), "{stdout}");
    assert!(
        stdout.lines().count() <= 25,
        "more than a screen:\n{stdout}"
    );
    no_writes(&emulator);
    assert_eq!(emulator.stats().assignment_reads, 1);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_row_is_resolved_before_the_route_is_read() {
    let emulator = start(EmulatorConfig::default()).await;
    let report = preflight(
        &emulator,
        &format!("serial_number,group_id\n ser-2 ,{GROUP}\n"),
    )
    .await;
    let text = report.render();
    assert_eq!(report.exit_code(), 0, "{text}");
    assert!(
        text.contains(&format!("serial \"ser-2\" is device {}", device(2))),
        "{text}"
    );
    assert!(text.contains(&assignments_url(&emulator.graph_url(), &device(2))));
    let report = preflight(
        &emulator,
        &format!("serial_number,group_id\nNOPE,{GROUP}\n"),
    )
    .await;
    let text = report.render();
    assert_eq!(report.exit_code(), 1, "{text}");
    assert!(
        text.contains("no Autopilot identity of the tenant holds serial \"NOPE\""),
        "{text}"
    );
    assert!(text.contains("{id of serial \"NOPE\"}"), "{text}");
    no_writes(&emulator);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_graph_does_not_serve_fails_with_its_message_verbatim() {
    let emulator = start(EmulatorConfig {
        no_odata_route: true,
        ..EmulatorConfig::default()
    })
    .await;
    let (_dir, path) = input(&group_rows(3));
    let (code, stdout, stderr) = preflight_bin(&emulator, &path, "any").await;
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let verbatim = format!(
        "400 BadRequest: No OData route exists that match template \
         ~/singleton/navigation/key/navigation with http verb GET for request \
         /DeviceEnrollmentFE/StatelessDeviceEnrollmentFEService/deviceManagement/\
         windowsAutopilotDeviceIdentities('{}')/deploymentProfile/assignments.",
        device(0)
    );
    assert!(stdout.contains(&verbatim), "{stdout}");
    assert!(
        stdout.contains("route is not available in this tenant or cloud"),
        "{stdout}"
    );
    assert!(
        stdout.contains("preflight: FAIL: 1 check failed"),
        "{stdout}"
    );
    no_writes(&emulator);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_permission_fails_naming_403() {
    let emulator = start(EmulatorConfig {
        deny_permission: true,
        ..EmulatorConfig::default()
    })
    .await;
    let report = preflight(&emulator, &group_rows(1)).await;
    let text = report.render();
    assert_eq!(report.exit_code(), 1, "{text}");
    assert!(
        text.contains("→ 403 Forbidden: Application is not authorized"),
        "{text}"
    );
    assert!(text.contains("with admin consent"), "{text}");
    no_writes(&emulator);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_the_role_fails_saying_it_is_missing() {
    let emulator = start(EmulatorConfig {
        token_roles: Some(vec!["Device.Read.All".into()]),
        ..EmulatorConfig::default()
    })
    .await;
    let report = preflight(&emulator, &group_rows(1)).await;
    let text = report.render();
    assert_eq!(report.exit_code(), 1, "{text}");
    assert!(
        text.contains(
            "✗ permission DeviceManagementServiceConfig.ReadWrite.All missing from the token's \
             application roles (roles: Device.Read.All)"
        ),
        "{text}"
    );
    assert!(text.contains("application permission"), "{text}");
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_exits_3_without_leaking_it() {
    let emulator = start(EmulatorConfig {
        client_secret: Some("right".into()),
        ..EmulatorConfig::default()
    })
    .await;
    let (_dir, path) = input(&group_rows(1));
    let (code, stdout, stderr) = preflight_bin(&emulator, &path, "wr0ng-value").await;
    assert_eq!(code, Some(3), "{stdout}\n{stderr}");
    assert!(stdout.contains("AADSTS7000215"), "{stdout}");
    assert!(!stdout.contains("wr0ng-value") && !stderr.contains("wr0ng-value"));
    assert_eq!(emulator.stats().identity_reads, 0);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_stops_early_on_a_route_graph_does_not_serve() {
    let emulator = Emulator::start(EmulatorConfig {
        no_odata_route: true,
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap();
    let (_dir, path) = input(&group_rows(50));
    let config = config_for(&emulator, &path, rate(1000, 1000));
    let output = config.output.clone();
    let summary = run(config).await;
    assert_eq!(summary.exit_code(), 3, "{:?}", summary.aborted);
    let reason = summary.aborted.clone().unwrap_or_default();
    assert!(
        reason.contains("No OData route") && reason.contains("preflight"),
        "{reason}"
    );
    let results = read_results(&output);
    assert!(
        (10..=20).contains(&results.len()),
        "{} rows recorded",
        results.len()
    );
    assert!(
        results
            .iter()
            .all(|r| r.status == "failed" && r.http_status == "400")
    );
    assert_eq!(emulator.stats().assignments_created, 0);
    emulator.shutdown().await;
}
