//! `run --tenants FILE`: a bad file is exit 2 before anything is sent, naming the tenant and
//! the key and never a secret; a good one becomes `Config::tenants`.

use crate::common;

use std::path::{Path, PathBuf};

use autopilot_bulk::cli::{Cli, Command, RunArgs};
use autopilot_bulk::config::{Cloud, Credentials};
use autopilot_bulk::emulator::{Emulator, EmulatorConfig};
use clap::Parser;
use common::{bin, text};

/// A variable no test sets: a secret that is missing.
const UNSET: &str = "AUTOPILOT_BULK_TEST_TENANTS_UNSET_7F3A";
const SECRET: &str = "s3cr3t-value-never-shown";

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("devices.csv"),
            format!(
                "device_id,tenant,group_id\n00000000-0000-4000-8000-000000000a11,contoso,{}\n",
                common::GROUP
            ),
        )
        .expect("write input");
        Self { dir }
    }

    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write file");
        path
    }

    fn input(&self) -> PathBuf {
        self.dir.path().join("devices.csv")
    }

    /// `run INPUT --tenants FILE` and `extra`, with no credential from the environment.
    fn run(&self, tenants: &Path, extra: &[&str]) -> assert_cmd::Command {
        let mut cmd = bin();
        cmd.env_remove("AUTOPILOT_BULK_TENANTS")
            .env_remove(UNSET)
            .arg("run")
            .arg(self.input())
            .arg("--tenants")
            .arg(tenants)
            .args(extra);
        cmd
    }
}

fn contoso(extra: &str) -> String {
    format!(
        "[tenants.contoso]\ntenant_id = \"contoso.onmicrosoft.com\"\n\
         client_id = \"00000000-0000-0000-0000-000000000000\"\n{extra}"
    )
}

/// Exit 2 with nothing written, and the stderr for more checks.
fn refused(cmd: &mut assert_cmd::Command, case: &Case) -> String {
    let out = cmd.output().expect("runs");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains(SECRET), "secret in stderr: {stderr}");
    assert!(!text(&out.stdout).contains(SECRET));
    assert!(
        !case.dir.path().join("devices.results.csv").exists(),
        "a results file was written"
    );
    assert!(stderr.contains("tenants file"), "{stderr}");
    stderr
}

#[test]
fn malformed_toml_is_exit_2_with_its_line() {
    let case = Case::new();
    let path = case.file("tenants.toml", "[tenants.contoso]\ntenant_id = \"x\n");
    for extra in [&[][..], &["--dry-run"]] {
        let stderr = refused(&mut case.run(&path, extra), &case);
        assert!(stderr.contains("tenants.toml: line 2, column"), "{stderr}");
    }
}

#[test]
fn an_unknown_key_is_exit_2_naming_tenant_and_key_but_not_its_value() {
    let case = Case::new();
    let path = case.file(
        "tenants.toml",
        &contoso(&format!(
            "client_secret_env = \"CONTOSO_SECRET\"\nclient_secret = \"{SECRET}\"\n"
        )),
    );
    let stderr = refused(
        case.run(&path, &[]).env("CONTOSO_SECRET", "anything"),
        &case,
    );
    assert!(stderr.contains("[tenants.contoso]"), "{stderr}");
    assert!(stderr.contains("`client_secret`"), "{stderr}");
}

#[test]
fn a_missing_secret_variable_is_exit_2_even_in_a_dry_run() {
    let case = Case::new();
    let path = case.file(
        "tenants.toml",
        &contoso(&format!("client_secret_env = \"{UNSET}\"\n")),
    );
    for extra in [&[][..], &["--dry-run"]] {
        let stderr = refused(&mut case.run(&path, extra), &case);
        for part in ["[tenants.contoso] client_secret_env", UNSET, "not set"] {
            assert!(stderr.contains(part), "{part} missing: {stderr}");
        }
    }
}

#[test]
fn a_later_mistake_does_not_show_a_secret_already_read() {
    let case = Case::new();
    let path = case.file(
        "tenants.toml",
        &format!(
            "{}\n[tenants.fabrikam]\naccess_token_file = \"token\"\nrate = \"fast\"\n",
            contoso("client_secret_env = \"CONTOSO_SECRET\"\n")
        ),
    );
    case.file("token", SECRET);
    let stderr = refused(
        case.run(&path, &["--dry-run"])
            .env("CONTOSO_SECRET", SECRET),
        &case,
    );
    assert!(stderr.contains("[tenants.fabrikam] rate"), "{stderr}");
}

#[test]
fn a_good_file_passes_and_a_dry_run_needs_no_single_tenant_credentials() {
    let case = Case::new();
    let path = case.file(
        "tenants.toml",
        &contoso("client_secret_env = \"CONTOSO_SECRET\"\n"),
    );
    let out = case
        .run(&path, &["--dry-run"])
        .env("CONTOSO_SECRET", SECRET)
        .output()
        .expect("runs");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains(SECRET) && !text(&out.stdout).contains(SECRET));
    // The flag's variable works as the flag does.
    let out = case
        .run(&path, &["--dry-run"])
        .env("AUTOPILOT_BULK_TENANTS", &path)
        .env("CONTOSO_SECRET", SECRET)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

fn run_args(args: &[&str]) -> RunArgs {
    let cli = Cli::try_parse_from(args).expect("parses");
    match cli.command {
        Command::Run(args) => *args,
        other => panic!("not run: {other:?}"),
    }
}

#[test]
fn to_config_fills_tenants_without_single_tenant_credentials() {
    let case = Case::new();
    case.file("contoso.secret", &format!("{SECRET}\n"));
    let path = case.file(
        "tenants.toml",
        &format!(
            "{}cloud = \"china\"\n",
            contoso("client_secret_file = \"contoso.secret\"\n")
        ),
    );
    let input = case.input();
    let args = run_args(&[
        "autopilot-bulk",
        "run",
        &input.to_string_lossy(),
        "--tenants",
        &path.to_string_lossy(),
        "--rate",
        "10/s",
    ]);
    let config = args.to_config(None).expect("a valid tenants file");
    assert_eq!(config.tenants.len(), 1);
    let tenant = &config.tenants[0];
    assert_eq!(tenant.key, "contoso");
    assert_eq!(tenant.cloud, Cloud::China);
    assert_eq!(tenant.graph_url, Cloud::China.graph_url());
    assert_eq!(tenant.rate, config.rate, "rate falls back to --rate");
    assert!(
        matches!(&tenant.credentials, Credentials::ClientSecret { secret, .. } if secret == SECRET)
    );
    assert!(!format!("{config:?}").contains(SECRET));
}

#[tokio::test]
async fn under_the_emulator_tenants_go_to_it_and_a_missing_secret_is_a_placeholder() {
    let case = Case::new();
    let path = case.file(
        "tenants.toml",
        &contoso(&format!(
            "client_secret_env = \"{UNSET}\"\ngraph_url = \"https://graph.example.com/beta\"\n"
        )),
    );
    let input = case.input();
    let args = run_args(&[
        "autopilot-bulk",
        "run",
        &input.to_string_lossy(),
        "--tenants",
        &path.to_string_lossy(),
        "--emulator",
    ]);
    // Checked before the emulator starts, then again with it.
    let config = args.to_config(None).expect("placeholder secret");
    assert!(matches!(
        &config.tenants[0].credentials,
        Credentials::ClientSecret { tenant_id, .. } if tenant_id == "contoso.onmicrosoft.com"
    ));
    let emulator = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    let config = args.to_config(Some(&emulator)).expect("config");
    assert_eq!(config.tenants[0].graph_url, emulator.graph_url());
    assert_eq!(config.tenants[0].authority_url, emulator.authority_url());
    emulator.shutdown().await;
}

/// A scheduler's environment left with a single-tenant secret (and no tenant id) does not stop
/// a `--tenants` run: each tenant's credentials come from the file, as `validate` and
/// `--dry-run` already assumed; the left-over is named in one warning, never echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_left_over_single_tenant_secret_is_ignored_with_tenants() {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let case = Case::new();
    case.file("contoso.secret", &format!("{SECRET}\n"));
    let tenants = case.file(
        "tenants.toml",
        &contoso(&format!(
            "client_secret_file = \"contoso.secret\"\ngraph_url = \"{}\"\nauthority_url = \"{}\"\n",
            emulator.graph_url(),
            emulator.authority_url()
        )),
    );
    let mut cmd = case.run(&tenants, &[]);
    cmd.env("AZURE_CLIENT_SECRET", "left-over-from-another-job")
        .env_remove("AZURE_TENANT_ID")
        .env_remove("AZURE_CLIENT_ID");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("single-tenant credentials"), "{stderr}");
    assert!(!stderr.contains("left-over-from-another-job"), "{stderr}");
    assert_eq!(emulator.stats().assignments_created, 1);
    emulator.shutdown().await;
}
