//! `run --dry-run` checks everything `run` checks before it sends: the credentials are loaded
//! (never used), the results-file rule holds, the lock is free. A clean dry run means the run
//! will start; a refusal is the run's own, exit 2, and the dry run writes nothing.

use crate::common;

use std::path::{Path, PathBuf};

use autopilot_bulk::emulator::{Emulator, EmulatorConfig};
use common::*;

/// `run INPUT --dry-run` with `args`, and `env` set; exit code, stdout and stderr.
fn dry_run(input: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = bin();
    cmd.arg("run").arg(input).arg("--dry-run").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

const IDS: [&str; 4] = ["--tenant-id", "t", "--client-id", "c"];
const SECRET: (&str, &str) = ("AZURE_CLIENT_SECRET", "dry-run-secret");

/// What a dry run must leave behind: nothing beside the input.
fn assert_nothing_written(dir: &Path) {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.retain(|p| p.file_name().is_some_and(|n| n != "devices.csv"));
    assert!(names.is_empty(), "the dry run wrote {names:?}");
}

#[test]
fn a_dry_run_refuses_what_the_run_refuses_about_credentials() {
    let (dir, path) = input(&group_rows(2));
    let summary = dir.path().join("summary.json");
    let summary_arg = summary.to_str().unwrap();
    let (code, stdout, stderr) = dry_run(&path, &["--summary-json", summary_arg], &[]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("no credentials"), "{stderr}");
    assert!(!stdout.contains("POST"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(json["exit_code"], 2, "{json}");
    assert!(
        json["error"].as_str().unwrap().contains("no credentials"),
        "{json}"
    );
    std::fs::remove_file(&summary).unwrap();

    let (code, stdout, stderr) = dry_run(&path, &IDS, &[SECRET, ("GRAPH_ACCESS_TOKEN", "tok")]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("more than one credential"), "{stderr}");

    // A secret needs the ids, as in the run.
    let (code, _, stderr) = dry_run(&path, &[], &[SECRET]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--tenant-id"), "{stderr}");

    // A certificate is loaded, not only named: a file that holds none is refused.
    let pem = tempfile::tempdir().unwrap();
    let not_pem = pem.path().join("app.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let mut args = IDS.to_vec();
    args.extend(["--certificate", not_pem.to_str().unwrap()]);
    let (code, _, stderr) = dry_run(&path, &args, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("CERTIFICATE"), "{stderr}");

    // With one good credential: the rows and the bodies, exit 0, and no secret on screen.
    let (code, stdout, stderr) = dry_run(&path, &IDS, &[SECRET]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("POST") && stdout.contains("nothing was sent"),
        "{stdout}"
    );
    assert!(
        !stdout.contains(SECRET.1) && !stderr.contains(SECRET.1),
        "{stdout}{stderr}"
    );
    assert_nothing_written(dir.path());
}

#[test]
fn a_dry_run_refuses_an_existing_results_file_and_a_held_lock() {
    let (dir, path) = input(&group_rows(2));
    let results = dir.path().join("devices.results.csv");
    std::fs::write(&results, "an earlier run's results\n").unwrap();
    let (code, stdout, stderr) = dry_run(&path, &IDS, &[SECRET]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    assert!(stderr.contains("the run would not start"), "{stderr}");
    assert!(!stdout.contains("POST"), "{stdout}");
    // --emulator needs no credentials, and still refuses it: its run writes there too.
    let (code, _, stderr) = dry_run(&path, &["--emulator"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    // --overwrite would replace it: the dry run passes, and leaves it as it was.
    let mut overwrite = IDS.to_vec();
    overwrite.push("--overwrite");
    let (code, stdout, stderr) = dry_run(&path, &overwrite, &[SECRET]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(
        std::fs::read_to_string(&results).unwrap(),
        "an earlier run's results\n"
    );
    std::fs::remove_file(&results).unwrap();

    // Another run holds the results file's lock.
    let lock =
        autopilot_bulk::lock::RunLock::acquire(&results, "autopilot-bulk run (test)").unwrap();
    let (code, stdout, stderr) = dry_run(&path, &IDS, &[SECRET]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("in use by another autopilot-bulk run"),
        "{stderr}"
    );
    drop(lock);
    let (code, stdout, stderr) = dry_run(&path, &IDS, &[SECRET]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_nothing_written(dir.path());
}

#[test]
fn an_emulator_dry_run_needs_no_credentials() {
    let (dir, path) = input(&group_rows(2));
    let (code, stdout, stderr) = dry_run(&path, &["--emulator"], &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("POST"), "{stdout}");
    assert_nothing_written(dir.path());
}

/// A clean dry run means the run starts: the same command line without --dry-run runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_dry_run_is_followed_by_a_run_that_starts() {
    let emulator = Emulator::start(EmulatorConfig {
        client_secret: Some(SECRET.1.into()),
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap();
    let (dir, path) = input(&group_rows(3));
    let graph = emulator.graph_url();
    let authority = emulator.authority_url();
    let run = |dry: bool| {
        let mut cmd = bin();
        cmd.arg("run")
            .arg(&path)
            .args(IDS)
            .args(["--graph-url", &graph, "--authority-url", &authority, "-q"])
            .env(SECRET.0, SECRET.1);
        if dry {
            cmd.arg("--dry-run");
        }
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap();
            (out.status.code(), text(&out.stderr))
        }
    };
    let (code, stderr) = run(true).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(emulator.stats().assignments_created, 0);
    assert_eq!(
        emulator.stats().token_requests,
        0,
        "the dry run asked for a token"
    );
    assert_nothing_written(dir.path());
    let (code, stderr) = run(false).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(emulator.stats().assignments_created, 3);
    emulator.shutdown().await;
}
