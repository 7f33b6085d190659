//! `preflight` against the in-process emulator: a working tenant, a route Graph does not
//! serve, a missing permission (refused, or absent from the token), a wrong secret; `run`
//! stopping early on the unserved route; and `--tenants`, each tenant its own emulator.

use crate::common;

use autopilot_bulk::config::{Cloud, Config, Credentials, Tenant};
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
        import: false,
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
        stdout.contains("route is not available in this tenant or cloud")
            && stdout.contains("check --cloud and --graph-url"),
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
    assert_eq!(summary.exit_code(), 3, "{:?}", summary.aborted());
    let reason = summary.aborted().unwrap_or_default();
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

// ---- --tenants ----

/// A tenant of a tenants file, pointed at `emulator`.
fn tenant(key: &str, emulator: &Emulator, secret: &str) -> Tenant {
    Tenant {
        key: key.into(),
        credentials: Credentials::ClientSecret {
            tenant_id: format!("{key}.onmicrosoft.com"),
            client_id: APP.into(),
            secret: secret.into(),
        },
        cloud: Cloud::Global,
        graph_url: emulator.graph_url(),
        authority_url: emulator.authority_url(),
        rate: rate(1000, 1000),
    }
}

/// The part of a report under `── tenant KEY ──`, through its verdict line.
fn section<'a>(report: &'a str, key: &str) -> &'a str {
    let head = format!("── tenant {key} ──\n");
    let start = report
        .find(&head)
        .unwrap_or_else(|| panic!("no {head:?} in:\n{report}"));
    let rest = &report[start..];
    let verdict = format!("\ntenant {key}: ");
    let end = rest.find(&verdict).map_or(rest.len(), |i| {
        i + verdict.len() + rest[i + verdict.len()..].find('\n').unwrap_or(0)
    });
    &rest[..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_is_checked_with_its_own_first_row_and_one_failing_fails_the_whole() {
    let contoso = start(EmulatorConfig::default()).await;
    let fabrikam = start(EmulatorConfig {
        no_odata_route: true,
        ..EmulatorConfig::default()
    })
    .await;
    // fabrikam's row first; contoso's first valid row is row 3 (row 2 names an unknown
    // tenant); northwind has no row at all.
    let csv = format!(
        "tenant,device_id,target_type,group_id\nfabrikam,{},group,{GROUP}\n\
         woodgrove,{},group,{GROUP}\nContoso,{},group,{GROUP}\ncontoso,{},group,{GROUP}\n",
        device(1),
        device(0),
        device(2),
        device(3)
    );
    let (_dir, path) = input(&csv);
    let mut graph = Config::new(&path, std::path::PathBuf::new());
    graph.tenants = vec![
        tenant("contoso", &contoso, "any"),
        tenant("fabrikam", &fabrikam, "any"),
        tenant("northwind", &contoso, "any"),
    ];
    let config = PreflightConfig {
        input: Some(path),
        graph,
        import: false,
    };
    let report = autopilot_bulk::preflight(config, CancellationToken::new())
        .await
        .expect("preflight starts");
    let text = report.render();
    assert_eq!(report.exit_code(), 1, "{text}");

    let c = section(&text, "contoso");
    assert!(
        c.contains(&format!("✓ first valid row: row 3, device {}", device(2))),
        "{c}"
    );
    assert!(
        c.contains(&format!(
            "row 3: POST {}",
            assignments_url(&contoso.graph_url(), &device(2))
        )),
        "{c}"
    );
    assert!(c.ends_with("tenant contoso: ok") && !c.contains('✗'), "{c}");

    let f = section(&text, "fabrikam");
    assert!(
        f.contains(&format!("✓ first valid row: row 1, device {}", device(1))),
        "{f}"
    );
    assert!(
        f.contains("400 BadRequest: No OData route exists") && f.contains("fix: the route is"),
        "{f}"
    );
    // The fix names the tenant's settings in the tenants file, not flags.
    assert!(
        f.contains("check cloud and graph_url under [tenants.fabrikam] in the tenants file")
            && !f.contains("--graph-url"),
        "{f}"
    );
    assert!(f.ends_with("tenant fabrikam: FAIL: 1 check failed"), "{f}");

    let n = section(&text, "northwind");
    assert!(
        n.contains(
            "· INPUT.csv has no valid row for this tenant: the assignment route is not checked"
        ),
        "{n}"
    );
    assert!(n.ends_with("tenant northwind: ok"), "{n}");

    assert!(
        text.ends_with("preflight: FAIL: 1 of 3 tenants failed (fabrikam); nothing was written\n"),
        "{text}"
    );
    // Contoso's route read once (northwind, without a row, read none); nothing written.
    assert_eq!(contoso.stats().assignment_reads, 1);
    no_writes(&contoso);
    no_writes(&fabrikam);
    contoso.shutdown().await;
    fabrikam.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_checks_every_tenant_of_the_file() {
    let contoso = start(EmulatorConfig::default()).await;
    let fabrikam = start(EmulatorConfig {
        client_secret: Some("right".into()),
        ..EmulatorConfig::default()
    })
    .await;
    let csv = format!(
        "tenant,device_id,target_type,group_id\ncontoso,{},group,{GROUP}\n\
         fabrikam,{},group,{GROUP}\n",
        device(0),
        device(1)
    );
    let (dir, path) = input(&csv);
    let toml = dir.path().join("tenants.toml");
    let mut file = String::new();
    for (key, e) in [("contoso", &contoso), ("fabrikam", &fabrikam)] {
        file.push_str(&format!(
            "[tenants.{key}]\ntenant_id = \"{key}.onmicrosoft.com\"\nclient_id = \"{APP}\"\n\
             client_secret_env = \"SECRET_{key}\"\ngraph_url = \"{}\"\nauthority_url = \"{}\"\n\n",
            e.graph_url(),
            e.authority_url()
        ));
    }
    std::fs::write(&toml, file).unwrap();
    let preflight = |fabrikam_secret: &str| {
        let mut cmd = bin();
        cmd.arg("preflight")
            .arg(&path)
            .arg("--tenants")
            .arg(&toml)
            .env("SECRET_contoso", "s3cr3t-contoso")
            .env("SECRET_fabrikam", fabrikam_secret);
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap();
            (out.status.code(), text(&out.stdout), text(&out.stderr))
        }
    };

    let (code, stdout, stderr) = preflight("right").await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    for (key, row, d) in [("contoso", 1, device(0)), ("fabrikam", 2, device(1))] {
        let s = section(&stdout, key);
        assert!(
            s.contains(&format!(
                "✓ token for tenant {key}.onmicrosoft.com, app {APP}"
            )),
            "{s}"
        );
        assert!(
            s.contains(&format!("✓ first valid row: row {row}, device {d}")),
            "{s}"
        );
        assert!(s.ends_with(&format!("tenant {key}: ok")), "{s}");
    }
    assert!(
        stdout.ends_with("preflight: ok: every check passed in 2 tenants; nothing was written\n"),
        "{stdout}"
    );

    // fabrikam's secret refused: exit 3, its section says where to fix it, contoso still ok.
    let (code, stdout, stderr) = preflight("wr0ng-value").await;
    assert_eq!(code, Some(3), "{stdout}\n{stderr}");
    let f = section(&stdout, "fabrikam");
    assert!(
        f.contains("✗ token: authentication failed") && f.contains("[tenants.fabrikam]"),
        "{f}"
    );
    assert!(section(&stdout, "contoso").ends_with("tenant contoso: ok"));
    assert!(
        stdout.contains("1 of 2 tenants failed (fabrikam)"),
        "{stdout}"
    );
    let all = format!("{stdout}{stderr}");
    assert!(!all.contains("wr0ng") && !all.contains("s3cr3t"), "{all}");
    no_writes(&contoso);
    no_writes(&fabrikam);
    contoso.shutdown().await;
    fabrikam.shutdown().await;
}
