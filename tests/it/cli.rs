//! The binary's contracts: exit codes, messages, and the `--emulator` main job.

use crate::common;

use common::*;

#[test]
fn version_and_help() {
    let out = bin().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(text(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = bin().args(["run", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = text(&out.stdout);
    for flag in [
        "--rate",
        "--concurrency",
        "--max-attempts",
        "--emulator",
        "--cloud",
    ] {
        assert!(help.contains(flag), "{flag} missing from run --help");
    }
    assert!(
        !help.contains("--client-secret "),
        "a secret must never be a flag value"
    );
}

#[test]
fn validate_names_the_bad_rows_of_the_sample() {
    let out = bin()
        .args(["validate", "samples/devices.csv"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    for row in [
        "row 21:",
        "row 56: duplicate of row 4",
        "row 81:",
        "row 102:",
    ] {
        assert!(stdout.contains(row), "{row} missing from:\n{stdout}");
    }
    assert!(
        stdout.contains("151 rows · 147 valid · 4 invalid"),
        "{stdout}"
    );
}

#[test]
fn unreadable_input_is_exit_2_naming_the_file() {
    let out = bin()
        .args(["validate", "no/such/file.csv"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no/such/file.csv"));
    let out = bin()
        .args(["run", "no/such/file.csv", "--emulator"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn emulator_run_end_to_end_then_existing_results_refused() {
    let (dir, path) = input(&group_rows(12));
    let out = bin()
        .args(["run", path.to_str().unwrap(), "--emulator"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let results_path = dir.path().join("devices.results.csv");
    let results = read_results(&results_path);
    assert_each_row_once(&results, 12);
    assert!(results.iter().all(|r| r.status == "created"));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("created 12"), "{stderr}");

    let before = std::fs::read(&results_path).unwrap();
    let out = bin()
        .args(["run", path.to_str().unwrap(), "--emulator"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("already exists"));
    assert_eq!(
        std::fs::read(&results_path).unwrap(),
        before,
        "results file touched"
    );
}

#[test]
fn missing_credentials_and_plain_http_are_refused_before_sending() {
    let (_dir, path) = input(&group_rows(1));
    let out = bin()
        .args(["run", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("AZURE_CLIENT_SECRET"));

    let out = bin()
        .args([
            "run",
            path.to_str().unwrap(),
            "--graph-url",
            "http://graph.example.com/beta",
        ])
        .env("AZURE_TENANT_ID", "t")
        .env("AZURE_CLIENT_ID", "c")
        .env("AZURE_CLIENT_SECRET", "sup3r-s3cret")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("plain http"), "{stderr}");
    assert!(!stderr.contains("sup3r-s3cret"));
}
