//! `status` on the results file of a `--tenants` run: each tenant is its own in-process
//! emulator holding only its own devices, so a row read from the wrong tenant would show
//! `notFound`, and each emulator's counters are that tenant's alone.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use autopilot_bulk::config::{Cloud, Config, Credentials, Tenant, default_output};
use autopilot_bulk::emulator::{Emulator, EmulatorConfig};
use autopilot_bulk::status::{StatusConfig, StatusError, StatusReport, TenantStatus, Watch};
use common::*;
use tokio_util::sync::CancellationToken;

const KEYS: [&str; 2] = ["contoso", "fabrikam"];
const ROWS: u32 = 6;
const SECRET: &str = "right";

/// Device `i` of tenant `t`.
fn tenant_device(t: usize, i: u32) -> String {
    device(t as u32 * 10_000 + i)
}

/// A tenant's service: it lists only its own devices, and takes only [`SECRET`].
async fn service(t: usize, assign_delay: Duration) -> Emulator {
    Emulator::start(EmulatorConfig {
        identities: (0..ROWS)
            .map(|i| (tenant_device(t, i), format!("SN-{t}-{i}")))
            .collect(),
        client_secret: Some(SECRET.into()),
        assign_delay,
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap()
}

fn tenant(key: &str, emulator: &Emulator, secret: &str) -> Tenant {
    Tenant {
        key: key.into(),
        credentials: Credentials::ClientSecret {
            tenant_id: format!("{key}.onmicrosoft.com"),
            client_id: "autopilot-bulk".into(),
            secret: secret.into(),
        },
        cloud: Cloud::Global,
        graph_url: emulator.graph_url(),
        authority_url: emulator.authority_url(),
        rate: rate(1000, 1000),
    }
}

/// Both tenants' rows, interleaved, the tenant cell in upper case on even rows (the results
/// give the file's spelling).
fn rows() -> String {
    let mut s = String::from("tenant,device_id,group_id\n");
    for i in 0..ROWS {
        for (t, key) in KEYS.iter().enumerate() {
            let key = if i % 2 == 0 {
                key.to_uppercase()
            } else {
                key.to_string()
            };
            s.push_str(&format!("{key},{},{GROUP}\n", tenant_device(t, i)));
        }
    }
    s
}

/// Two tenants, each its own service, and the results file of a `--tenants` run on them.
struct Fixture {
    _dir: tempfile::TempDir,
    services: Vec<Emulator>,
    results: PathBuf,
}

/// `assign_delay`: each tenant's, in [`KEYS`] order.
async fn fixture(assign_delay: [Duration; 2]) -> Fixture {
    let mut services = Vec::new();
    for (t, delay) in assign_delay.into_iter().enumerate() {
        services.push(service(t, delay).await);
    }
    let (dir, input) = input(&rows());
    let mut config = Config::new(&input, default_output(&input));
    config.tenants = tenants(&services, &[SECRET, SECRET]);
    let summary = run(config).await;
    assert_eq!(summary.exit_code(), 0, "{summary:?}");
    Fixture {
        _dir: dir,
        services,
        results: default_output(&input),
    }
}

fn tenants(services: &[Emulator], secrets: &[&str]) -> Vec<Tenant> {
    KEYS.iter()
        .zip(services)
        .zip(secrets)
        .map(|((key, e), secret)| tenant(key, e, secret))
        .collect()
}

fn status_config(results: &Path, tenants: Vec<Tenant>) -> StatusConfig {
    let mut graph = Config::new(results, PathBuf::new());
    graph.tenants = tenants;
    StatusConfig::new(results, graph)
}

async fn status(config: StatusConfig) -> Result<StatusReport, StatusError> {
    autopilot_bulk::status(config, CancellationToken::new()).await
}

/// One status line.
#[derive(Debug)]
struct Line {
    row: u64,
    device_id: String,
    assignment_status: String,
    detailed_status: String,
    tenant: String,
}

fn status_lines(path: &Path) -> Vec<Line> {
    let mut rdr = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header.last().map(String::as_str),
        Some("tenant"),
        "{header:?}"
    );
    rdr.records()
        .map(|r| {
            let r = r.unwrap();
            Line {
                row: r[0].parse().unwrap(),
                device_id: r[1].to_lowercase(),
                assignment_status: r[3].to_string(),
                detailed_status: r[5].to_string(),
                tenant: r[6].to_string(),
            }
        })
        .collect()
}

/// The tenant a row of [`rows`] belongs to, and its device.
fn expected(row: u64) -> (&'static str, String) {
    let i = (row - 1) as usize;
    let t = i % KEYS.len();
    (KEYS[t], tenant_device(t, (i / KEYS.len()) as u32))
}

fn identity_reads(services: &[Emulator]) -> Vec<u64> {
    services.iter().map(|e| e.stats().identity_reads).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenants_rows_are_read_from_its_own_listing() {
    let f = fixture([Duration::ZERO; 2]).await;
    let before = identity_reads(&f.services);
    let report = status(status_config(
        &f.results,
        tenants(&f.services, &[SECRET, SECRET]),
    ))
    .await
    .unwrap();
    assert_eq!(report.exit_code(), 0, "{report:?}");
    let rows = u64::from(ROWS) * 2;
    assert_eq!(
        (report.rows, report.assigned, report.readings),
        (rows, rows, 1)
    );
    // One listing page from each tenant, for that reading.
    let after = identity_reads(&f.services);
    assert_eq!(
        after
            .iter()
            .zip(&before)
            .map(|(a, b)| a - b)
            .collect::<Vec<_>>(),
        [1, 1]
    );
    assert_eq!(
        report.tenants,
        KEYS.map(|k| TenantStatus {
            tenant: k.into(),
            rows: u64::from(ROWS),
            assigned: u64::from(ROWS),
            failed: None,
        })
    );
    let text = report.render();
    for key in KEYS {
        assert!(
            text.contains(&format!("tenant {key}: {ROWS} rows · {ROWS} assigned")),
            "{text}"
        );
    }
    let lines = status_lines(&report.output);
    assert_eq!(
        lines.iter().map(|l| l.row).collect::<Vec<_>>(),
        (1..=rows).collect::<Vec<_>>()
    );
    for l in &lines {
        let (tenant, device) = expected(l.row);
        assert_eq!(
            (l.tenant.as_str(), l.device_id.as_str()),
            (tenant, device.as_str())
        );
        assert_eq!(l.assignment_status, "assignedInSync", "{l:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_reads_every_tenant_until_all_are_assigned() {
    let f = fixture([Duration::from_millis(300); 2]).await;
    let mut config = status_config(&f.results, tenants(&f.services, &[SECRET, SECRET]));
    config.watch = Some(Watch {
        interval: Duration::from_millis(20),
        timeout: Duration::from_secs(300),
    });
    let report = status(config).await.unwrap();
    assert_eq!(report.exit_code(), 0, "{report:?}");
    assert!(!report.timed_out);
    // Every reading read each tenant once.
    for reads in identity_reads(&f.services) {
        assert_eq!(reads, u64::from(report.readings));
    }
    assert!(
        status_lines(&report.output)
            .iter()
            .all(|l| l.assignment_status == "assignedInSync")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_times_out_on_the_tenant_still_pending_and_counts_each_apart() {
    let f = fixture([Duration::ZERO, Duration::from_secs(3600)]).await;
    let mut config = status_config(&f.results, tenants(&f.services, &[SECRET, SECRET]));
    config.watch = Some(Watch {
        interval: Duration::from_millis(10),
        timeout: Duration::from_millis(50),
    });
    let report = status(config).await.unwrap();
    assert!(report.timed_out, "{report:?}");
    assert_eq!(report.exit_code(), 1);
    assert_eq!(
        report
            .tenants
            .iter()
            .map(|t| (t.tenant.as_str(), t.assigned))
            .collect::<Vec<_>>(),
        [("contoso", u64::from(ROWS)), ("fabrikam", 0)]
    );
    for reads in identity_reads(&f.services) {
        assert_eq!(reads, u64::from(report.readings));
    }
    for l in status_lines(&report.output) {
        let want = if l.tenant == "contoso" {
            "assignedInSync"
        } else {
            "pending"
        };
        assert_eq!(l.assignment_status, want, "{l:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_whose_token_is_refused_is_not_read_and_the_other_is() {
    let f = fixture([Duration::ZERO; 2]).await;
    let before = identity_reads(&f.services);
    let report = status(status_config(
        &f.results,
        tenants(&f.services, &[SECRET, "wr0ng-value"]),
    ))
    .await
    .unwrap();
    assert_eq!(report.exit_code(), 3, "{report:?}");
    let aborted = report.aborted.clone().unwrap_or_default();
    assert!(
        aborted.starts_with("tenant fabrikam: authentication failed"),
        "{aborted}"
    );
    assert!(!aborted.contains("contoso"), "{aborted}");
    assert_eq!(report.readings, 1);
    assert_eq!(report.assigned, u64::from(ROWS));
    assert_eq!(report.counts["notRead"], u64::from(ROWS));
    let after = identity_reads(&f.services);
    assert_eq!((after[0] - before[0], after[1] - before[1]), (1, 0));
    let fabrikam = &report.tenants[1];
    assert_eq!((fabrikam.assigned, fabrikam.rows), (0, u64::from(ROWS)));
    assert!(fabrikam.failed.is_some());
    assert!(
        report
            .render()
            .contains(&format!("tenant fabrikam: {ROWS} rows · not read")),
        "{}",
        report.render()
    );
    let text = std::fs::read_to_string(&report.output).unwrap();
    assert!(!text.contains("wr0ng"), "the secret leaked: {text}");
    for l in status_lines(&report.output) {
        if l.tenant == "fabrikam" {
            assert_eq!(l.assignment_status, "notRead", "{l:?}");
            assert!(
                l.detailed_status.starts_with("authentication failed"),
                "{l:?}"
            );
        } else {
            assert_eq!(l.assignment_status, "assignedInSync", "{l:?}");
        }
    }

    // Watching: the failed tenant is not waited for; once the other is all assigned, done.
    let mut watching = status_config(&f.results, tenants(&f.services, &[SECRET, "wr0ng-value"]));
    watching.overwrite = true;
    watching.watch = Some(Watch {
        interval: Duration::from_millis(10),
        timeout: Duration::from_secs(300),
    });
    let report = status(watching).await.unwrap();
    assert_eq!(report.exit_code(), 3, "{report:?}");
    assert_eq!(report.readings, 1);
    assert!(!report.timed_out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_results_file_naming_tenants_is_refused_without_its_tenants_file() {
    let f = fixture([Duration::ZERO; 2]).await;
    let before = identity_reads(&f.services);
    let mut single = status_config(&f.results, Vec::new());
    single.graph.graph_url = f.services[0].graph_url();
    single.graph.authority_url = f.services[0].authority_url();
    single.graph.credentials = tenant(KEYS[0], &f.services[0], SECRET).credentials;
    let output = single.output.clone();
    match status(single).await {
        Err(e @ StatusError::TenantsNeeded { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("\"contoso\", \"fabrikam\"") && text.contains("--tenants"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A tenants file without one of the results' tenants.
    let only = status_config(&f.results, tenants(&f.services[..1], &[SECRET]));
    match status(only).await {
        Err(e @ StatusError::UnknownTenant { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("\"fabrikam\"") && text.contains("it names: contoso"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(identity_reads(&f.services), before, "something was read");
    assert!(!output.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_landed_row_without_a_tenant_is_refused_with_tenants() {
    let f = fixture([Duration::ZERO; 2]).await;
    // A single-tenant line appended to the tenants run's results: whose is it?
    let mut text = std::fs::read_to_string(&f.results).unwrap();
    text.push_str(&format!(
        "99,{},created,201,a,1,,,,,5,2026-01-01T00:00:00Z,,,assign,,,,\n",
        device(42)
    ));
    std::fs::write(&f.results, text).unwrap();
    let config = status_config(&f.results, tenants(&f.services, &[SECRET, SECRET]));
    match status(config).await {
        Err(e @ StatusError::NoTenant { .. }) => {
            assert!(e.to_string().contains("row 99"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

// ---- the binary ----

/// A tenants file pointing each tenant at its service, its secret in `SECRET_<KEY>`.
fn tenants_file(dir: &Path, services: &[Emulator]) -> PathBuf {
    let mut text = String::new();
    for (key, e) in KEYS.iter().zip(services) {
        text.push_str(&format!(
            "[tenants.{key}]\ntenant_id = \"{key}.onmicrosoft.com\"\nclient_id = \
             \"00000000-0000-0000-0000-000000000000\"\nclient_secret_env = \"SECRET_{key}\"\n\
             graph_url = \"{}\"\nauthority_url = \"{}\"\n\n",
            e.graph_url(),
            e.authority_url()
        ));
    }
    let path = dir.join("tenants.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn output(mut cmd: assert_cmd::Command) -> (Option<i32>, String, String) {
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reads_each_tenant_with_the_tenants_file() {
    let f = fixture([Duration::ZERO; 2]).await;
    let dir = f.results.parent().unwrap().to_path_buf();
    let toml = tenants_file(&dir, &f.services);

    // Without it: exit 2 naming the tenants, with or without single-tenant credentials.
    let (code, _, stderr) = output({
        let mut c = bin();
        c.arg("status").arg(&f.results);
        c
    })
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("names tenants (\"contoso\", \"fabrikam\")")
            && stderr.contains("--tenants"),
        "{stderr}"
    );
    let (code, _, stderr) = output({
        let mut c = bin();
        c.arg("status")
            .arg(&f.results)
            .args(["--graph-url", &f.services[0].graph_url()])
            .args(["--authority-url", &f.services[0].authority_url()])
            .env("AZURE_TENANT_ID", "contoso.onmicrosoft.com")
            .env("AZURE_CLIENT_ID", "app")
            .env("AZURE_CLIENT_SECRET", SECRET);
        c
    })
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("pass the same --tenants file"), "{stderr}");
    assert_eq!(f.services[0].stats().identity_reads, 0);

    // With it (here from the environment, as a scheduler would set it).
    let (code, stdout, stderr) = output({
        let mut c = bin();
        c.arg("status")
            .arg(&f.results)
            .env("AUTOPILOT_BULK_TENANTS", &toml)
            .env("SECRET_contoso", SECRET)
            .env("SECRET_fabrikam", SECRET);
        c
    })
    .await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    for key in KEYS {
        assert!(
            stdout.contains(&format!("tenant {key}: {ROWS} rows · {ROWS} assigned")),
            "{stdout}"
        );
    }
    let lines = status_lines(&f.results.with_file_name("devices.results.status.csv"));
    assert_eq!(lines.len(), ROWS as usize * 2);
    assert!(
        lines
            .iter()
            .all(|l| l.assignment_status == "assignedInSync")
    );

    // One tenant's secret refused: its rows not read, exit 3, the secret nowhere.
    let (code, stdout, stderr) = output({
        let mut c = bin();
        c.arg("status")
            .arg(&f.results)
            .arg("--tenants")
            .arg(&toml)
            .arg("--overwrite")
            .env("SECRET_contoso", "wr0ng-value")
            .env("SECRET_fabrikam", SECRET);
        c
    })
    .await;
    assert_eq!(code, Some(3), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("aborted: tenant contoso: authentication failed"),
        "{stderr}"
    );
    assert!(
        stdout.contains(&format!("tenant contoso: {ROWS} rows · not read"))
            && stdout.contains(&format!("tenant fabrikam: {ROWS} rows · {ROWS} assigned")),
        "{stdout}"
    );
    assert!(!format!("{stdout}{stderr}").contains("wr0ng"));
}
