//! Long and nightly runs: crash-safe resume (kill -9), Ctrl-C, torn lines, foreign results
//! files, dry-run and the summary JSON.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use autopilot_bulk::config::Config;
use autopilot_bulk::emulator::{Emulator, EmulatorConfig};
use common::*;

/// The binary pointed at `emulator`, with credentials in the environment (never argv).
fn bin_against(emulator: &Emulator) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin!("autopilot-bulk"));
    c.env("AUTOPILOT_BULK_GRAPH_URL", emulator.graph_url())
        .env("AUTOPILOT_BULK_AUTHORITY_URL", emulator.authority_url())
        .env("AZURE_TENANT_ID", "contoso")
        .env("AZURE_CLIENT_ID", "app")
        .env("AZURE_CLIENT_SECRET", "s3cret")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Wait (polling the emulator, bounded) until it has stored at least `n` assignments.
async fn until_created(emulator: &Emulator, n: u64) {
    for _ in 0..4000 {
        if emulator.stats().assignments_created >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the emulator never reached {n} assignments");
}

/// `run INPUT` with `flags`, and `--resume` when `resume`.
fn run_args(input: &std::path::Path, flags: &[&str], resume: bool) -> Vec<String> {
    let mut a = vec!["run".to_string(), input.display().to_string()];
    a.extend(flags.iter().map(|f| f.to_string()));
    if resume {
        a.push("--resume".into());
    }
    a
}

/// Wait for the child off the async threads: the emulator it talks to runs on them.
async fn wait(child: Child) -> (Option<i32>, String) {
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_twice_with_sigkill_then_resumed_assigns_every_device_exactly_once() {
    let emulator = Emulator::start(EmulatorConfig {
        // Requests spend time in flight, so a kill lands between "stored" and "reported".
        latency: Some(Duration::from_millis(40)),
        seed: 3,
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap();
    let rows = 240;
    let (dir, path) = input(&group_rows(rows));
    let results = dir.path().join("devices.results.csv");
    // A resume waits this long after the kill for the dead run's requests to land.
    let args = |resume: bool| {
        run_args(
            &path,
            &[
                "--rate",
                "1000/1s",
                "--concurrency",
                "8",
                "-q",
                "--request-timeout",
                "3s",
            ],
            resume,
        )
    };

    for (resume, kill_at) in [(false, 40), (true, 130)] {
        let mut child = bin_against(&emulator).args(args(resume)).spawn().unwrap();
        until_created(&emulator, kill_at).await;
        child.kill().unwrap(); // SIGKILL: no cleanup of any kind
        let (code, _) = wait(child).await;
        assert_eq!(code, None, "the run ended before it was killed");
    }
    assert!(
        autopilot_bulk::output::Journal::path_for(&results).exists(),
        "a killed run leaves its journal"
    );

    let child = bin_against(&emulator).args(args(true)).spawn().unwrap();
    let (code, stderr) = wait(child).await;
    assert_eq!(code, Some(0), "{stderr}");

    let lines = read_results(&results);
    assert_each_row_once(&lines, u64::from(rows));
    assert!(
        lines
            .iter()
            .all(|r| r.status == "created" || r.status == "existing")
    );
    assert_ids_match_emulator(&lines, &emulator);
    assert_eq!(emulator.assignments().len(), rows as usize);
    assert!(emulator.assignments().values().all(|ids| ids.len() == 1));
    assert!(
        !autopilot_bulk::output::Journal::path_for(&results).exists(),
        "a completed run removes its journal"
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_130_with_rows_on_disk_and_resume_completes() {
    stopped_by_a_signal_then_resumed("-INT").await;
}

/// A closed terminal or a scheduler's stop: SIGHUP and SIGTERM stop the run as Ctrl-C does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_sigterm_stop_like_ctrl_c() {
    stopped_by_a_signal_then_resumed("-HUP").await;
    stopped_by_a_signal_then_resumed("-TERM").await;
}

/// Stop a run with `signal` after 20 rows: exit 130, rows on disk, the summary JSON says
/// `interrupted`, and `--resume` completes every row exactly once.
async fn stopped_by_a_signal_then_resumed(signal: &str) {
    // The service takes far more than the first run sends: the resume, at its own pace, is
    // quick; the first run is slow enough to be stopped midway.
    let emulator = Emulator::start(emulator_config(rate(1000, 1000)))
        .await
        .unwrap();
    let (dir, path) = input(&group_rows(120));
    let results = dir.path().join("devices.results.csv");
    let summary = dir.path().join("summary.json");
    let base = [path.to_str().unwrap(), "-q"];
    let child = bin_against(&emulator)
        .arg("run")
        .args(base)
        .args(["--rate", "40/1s"])
        .arg("--summary-json")
        .arg(&summary)
        .spawn()
        .unwrap();
    until_created(&emulator, 20).await;
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (code, stderr) = wait(child).await;
    assert_eq!(code, Some(130), "{signal}: {stderr}");
    assert!(
        stderr.contains("--resume"),
        "no resume command in: {stderr}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(json["outcome"], "interrupted", "{json}");
    // Every request was answered before the exit: the journal says so, and the resume
    // does not wait for anything to land.
    let journal =
        std::fs::read_to_string(autopilot_bulk::output::Journal::path_for(&results)).unwrap();
    assert_eq!(journal.lines().last(), Some("settled"), "{signal}");
    let done = read_results(&results);
    assert!(
        done.len() >= 20 && done.len() < 120,
        "{} rows on disk",
        done.len()
    );

    // Not -q: the summary's "skipped" line is checked (-q prints no summary).
    let child = bin_against(&emulator)
        .arg("run")
        .arg(&path)
        .args(["--rate", "1000/1s", "--resume"])
        .spawn()
        .unwrap();
    let (code, stderr) = wait(child).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("skipped {} rows", done.len())),
        "{stderr}"
    );
    let lines = read_results(&results);
    assert_each_row_once(&lines, 120);
    assert_ids_match_emulator(&lines, &emulator);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_line_is_cut_and_its_row_redone() {
    let emulator = Emulator::start(emulator_config(rate(1000, 1000)))
        .await
        .unwrap();
    let (_dir, path) = input(&group_rows(10));
    let mut config = config_for(&emulator, &path, rate(1000, 1000));
    let first = run(config.clone()).await;
    assert_eq!(first.created, 10);
    // Simulate a crash mid-write of the last line: keep 6 complete lines, tear the 7th.
    let text = std::fs::read_to_string(&config.output).unwrap();
    let mut kept: Vec<&str> = text.lines().take(7).collect();
    let torn = &text.lines().nth(7).unwrap()[..20];
    let torn_row: u64 = torn.split(',').next().unwrap().parse().unwrap();
    kept.push(torn);
    std::fs::write(&config.output, kept.join("\n")).unwrap();
    // A crash leaves the journal of started rows behind (a completed run removed it).
    let journal = autopilot_bulk::output::Journal::path_for(&config.output);
    let started: String = (1..=10).map(|r| format!("{r}\n")).collect();
    std::fs::write(&journal, started).unwrap();
    let before = emulator.stats().assignments_created;

    config.resume = true;
    let summary = run(config.clone()).await;
    assert_eq!(summary.skipped, 6);
    let lines = read_results(&config.output);
    assert_each_row_once(&lines, 10);
    // The rows whose lines were lost were reconciled (they had been created), not re-POSTed.
    assert_eq!(emulator.stats().assignments_created, before);
    assert_eq!(summary.existing, 4);
    assert!(
        lines
            .iter()
            .any(|r| r.row == torn_row && r.status == "existing")
    );
    assert_ids_match_emulator(&lines, &emulator);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_results_file_of_another_input_is_refused_untouched() {
    let emulator = Emulator::start(emulator_config(rate(1000, 1000)))
        .await
        .unwrap();
    let (_dir, path) = input(&group_rows(5));
    let config = config_for(&emulator, &path, rate(1000, 1000));
    run(config.clone()).await;
    let before = std::fs::read(&config.output).unwrap();
    // Same file name, other devices.
    let mut other = String::from("device_id,target_type,group_id\n");
    for i in 100..105 {
        other.push_str(&format!("{},group,{GROUP}\n", device(i)));
    }
    std::fs::write(&path, other).unwrap();
    let mut again = config.clone();
    again.resume = true;
    let err = autopilot_bulk::run(again, Default::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not belong"), "{err}");
    assert!(err.to_string().contains("row 1"), "{err}");
    assert_eq!(std::fs::read(&config.output).unwrap(), before);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_redoes_failed_rows_skips_invalid_and_keeps_one_line_per_row() {
    let known = (0..8).map(device).collect();
    let emulator = Emulator::start(EmulatorConfig {
        devices: Some(known),
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap();
    let mut csv = group_rows(10); // devices 8 and 9 unknown: 404
    csv.push_str("bogus,group,\n");
    let (_dir, path) = input(&csv);
    let mut config = config_for(&emulator, &path, rate(1000, 1000));
    let first = run(config.clone()).await;
    assert_eq!((first.created, first.failed, first.invalid), (8, 2, 1));
    config.resume = true;
    let second = run(config.clone()).await;
    assert_eq!((second.skipped, second.rows, second.failed), (9, 2, 2));
    assert_eq!(second.exit_code(), 1);
    let lines = read_results(&config.output);
    assert_each_row_once(&lines, 11);
    assert_ids_match_emulator(&lines, &emulator);
    emulator.shutdown().await;
}

#[test]
fn dry_run_shows_bodies_sends_and_writes_nothing() {
    let (dir, path) = input(&format!(
        "device_id,filter_id,source,source_id\n{},9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d,policySets,S1\nnope,,,\n",
        device(1)
    ));
    // The credentials are loaded as the run would (a dry run checks what the run checks).
    let out = crate::common::bin()
        .args(["run", path.to_str().unwrap(), "--dry-run"])
        .args(["--tenant-id", "t", "--client-id", "c"])
        .env("AZURE_CLIENT_SECRET", "s")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("POST https://graph.microsoft.com/beta/deviceManagement/windowsAutopilotDeviceIdentities/"), "{stdout}");
    assert!(stdout.contains("\"deviceAndAppManagementAssignmentFilterType\": \"include\""));
    assert!(stdout.contains("row 2: device_id"), "{stdout}");
    assert!(stdout.contains("nothing was sent"));
    assert!(!dir.path().join("devices.results.csv").exists());
}

#[test]
fn summary_json_has_the_documented_fields() {
    let (dir, path) = input(&group_rows(6));
    let summary = dir.path().join("summary.json");
    let out = Command::new(assert_cmd::cargo::cargo_bin!("autopilot-bulk"))
        .args([
            "run",
            path.to_str().unwrap(),
            "--emulator",
            "-q",
            "--summary-json",
        ])
        .arg(&summary)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["outcome"], "completed");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["rows"]["created"], 6);
    assert_eq!(v["rows"]["failed"], 0);
    // Each row reads its device before its write (few rows: one GET each, no listing).
    assert_eq!(v["requests"], 12);
    assert_eq!(v["reconciliations"], 6);
    assert_eq!(v["throttled_responses"], 0);
    assert_eq!(v["configured_rate"], "100/20s");
    for field in [
        "started_at",
        "finished_at",
        "elapsed_seconds",
        "errors_by_code",
        "throttled_seconds",
        "effective_rate_per_second",
        "input",
        "results",
        "token_requests",
    ] {
        assert!(!v[field].is_null(), "{field} missing");
    }

    // A run that cannot start still leaves a summary for the scheduler.
    let out = Command::new(assert_cmd::cargo::cargo_bin!("autopilot-bulk"))
        .args(["run", "no/such.csv", "--emulator", "-q", "--summary-json"])
        .arg(&summary)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(
        (v["outcome"].as_str(), v["exit_code"].as_u64()),
        (Some("error"), Some(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_invalid_takes_a_corrected_device_id() {
    let emulator = Emulator::start(emulator_config(rate(1000, 1000)))
        .await
        .unwrap();
    let mut csv = group_rows(3);
    csv.push_str("not-a-guid,group,\n");
    let (_dir, path) = input(&csv);
    let mut config = config_for(&emulator, &path, rate(1000, 1000));
    let first = run(config.clone()).await;
    assert_eq!((first.created, first.invalid), (3, 1));
    // The admin fixes row 4: another (now valid) device id at the same row.
    let mut fixed = group_rows(3);
    fixed.push_str(&format!("{},group,{GROUP}\n", device(77)));
    std::fs::write(&path, fixed).unwrap();
    config.resume = true;
    config.retry_invalid = true;
    let second = run(config.clone()).await;
    assert_eq!((second.skipped, second.created), (3, 1));
    assert_eq!(second.exit_code(), 0);
    let lines = read_results(&config.output);
    assert_each_row_once(&lines, 4);
    assert_eq!(
        lines.iter().find(|l| l.row == 4).unwrap().device_id,
        device(77)
    );
    assert_ids_match_emulator(&lines, &emulator);
    emulator.shutdown().await;
}

/// An emulator, an input of `rows` rows and a completed run over it.
async fn completed_run(rows: u32) -> (Emulator, tempfile::TempDir, std::path::PathBuf, Config) {
    let emulator = Emulator::start(emulator_config(rate(1000, 1000)))
        .await
        .unwrap();
    let (dir, path) = input(&group_rows(rows));
    let config = config_for(&emulator, &path, rate(1000, 1000));
    run(config.clone()).await;
    (emulator, dir, path, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_without_its_results_file_is_read_back_not_dropped() {
    let (emulator, _dir, _path, mut config) = completed_run(5).await;
    // A crash after every row was sent, then the results file lost: only the journal is left.
    std::fs::remove_file(&config.output).unwrap();
    let journal = autopilot_bulk::output::Journal::path_for(&config.output);
    std::fs::write(&journal, "1\n2\n3\n4\n5\n").unwrap();
    config.resume = true;
    let second = run(config.clone()).await;
    assert_eq!((second.existing, second.created), (5, 0));
    let lines = read_results(&config.output);
    assert_each_row_once(&lines, 5);
    assert_ids_match_emulator(&lines, &emulator);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_inserted_after_a_crash_does_not_hide_a_row_in_flight() {
    let (emulator, _dir, path, mut config) = completed_run(5).await;
    // The state a kill -9 leaves: rows 1-2 reported, rows 3-5 sent (the journal names them
    // with their devices) but not reported.
    let text = std::fs::read_to_string(&config.output).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, l)| *i == 0 || l.starts_with("1,") || l.starts_with("2,"))
        .map(|(_, l)| l)
        .collect();
    std::fs::write(&config.output, kept.join("\n") + "\n").unwrap();
    let journal = autopilot_bulk::output::Journal::path_for(&config.output);
    let started: String = (3..=5)
        .map(|r| format!("{r} {}\n", device(r as u32 - 1)))
        .collect();
    std::fs::write(&journal, started).unwrap();
    // The admin inserts a device above row 3: the rows in flight move down one.
    let mut edited: Vec<String> = group_rows(5).lines().map(str::to_string).collect();
    edited.insert(3, format!("{},group,{GROUP}", device(50)));
    std::fs::write(&path, edited.join("\n") + "\n").unwrap();
    config.resume = true;
    let second = run(config.clone()).await;
    assert_eq!((second.skipped, second.created, second.existing), (2, 1, 3));
    let lines = read_results(&config.output);
    assert_each_row_once(&lines, 6);
    assert_ids_match_emulator(&lines, &emulator);
    emulator.shutdown().await;
}

/// Wait (polling the file, bounded) until `path` holds at least `n` result lines.
async fn until_lines(path: &std::path::Path, n: usize) {
    for _ in 0..4000 {
        let lines = std::fs::read_to_string(path).map_or(0, |t| t.lines().count());
        if lines > n {
            return; // the header, then n results
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{} never held {n} results", path.display());
}

/// A nightly wrapper reads the exit code: a `--resume` after a kill -9 over a file holding
/// an earlier run's `invalid` rows exits 1, and the summary counts the whole file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_after_sigkill_reports_the_whole_file_and_its_earlier_invalid_rows() {
    let emulator = Emulator::start(emulator_config(rate(1000, 1000)))
        .await
        .unwrap();
    // Six invalid rows first: the reader reports them before any worker's row.
    let mut csv = String::from("device_id,target_type,group_id\n");
    for i in 0..6 {
        csv.push_str(&format!("bogus-{i},group,\n"));
    }
    csv.push_str(group_rows(120).split_once('\n').unwrap().1);
    let (dir, path) = input(&csv);
    let results = dir.path().join("devices.results.csv");
    let summary = dir.path().join("summary.json");
    let mut child = bin_against(&emulator)
        .arg("run")
        .args([
            path.to_str().unwrap(),
            "-q",
            "--rate",
            "40/1s",
            "--request-timeout",
            "3s",
        ])
        .spawn()
        .unwrap();
    until_lines(&results, 20).await;
    child.kill().unwrap(); // SIGKILL: no summary, no cleanup
    let (code, _) = wait(child).await;
    assert_eq!(code, None, "the run ended before it was killed");
    let on_disk = read_results(&results).len() as u64;

    let child = bin_against(&emulator)
        .arg("run")
        // Not -q: the summary's lines are what is checked (-q prints no summary).
        .args([path.to_str().unwrap(), "--rate", "1000/1s", "--resume"])
        .args(["--request-timeout", "3s"])
        .arg("--summary-json")
        .arg(&summary)
        .spawn()
        .unwrap();
    let (code, stderr) = wait(child).await;
    assert_eq!(code, Some(1), "the file holds invalid rows: {stderr}");
    assert!(stderr.contains("whole results file: "), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let rows = &v["rows"];
    assert_eq!(v["exit_code"], 1);
    assert_eq!(rows["invalid"], 6, "{v}");
    assert_eq!(rows["earlier"]["invalid"], 6, "{v}");
    assert_eq!(rows["this_run"]["invalid"], 0, "{v}");
    let n = |f: &str| rows[f].as_u64().unwrap();
    assert_eq!(n("created") + n("existing"), 120, "{v}");
    assert_eq!(n("skipped") + n("reported"), 126, "{v}");
    assert!(n("skipped") >= 20 && n("skipped") <= on_disk, "{v}");
    let earlier = &rows["earlier"];
    let e = |f: &str| earlier[f].as_u64().unwrap();
    assert_eq!(e("created") + e("existing") + e("invalid"), n("skipped"));
    let lines = read_results(&results);
    assert_each_row_once(&lines, 126);
    assert_eq!(lines.iter().filter(|l| l.status == "invalid").count(), 6);
    assert_ids_match_emulator(&lines, &emulator);
    emulator.shutdown().await;
}

/// A run killed while Graph's Retry-After holds it (kept in its journal as it is given): the
/// resume sends nothing before that time, so the service sees no request come back early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_honours_the_retry_after_the_killed_run_was_given() {
    // 10 writes per 3 s, with Retry-After: the run's 100/1s meets a 429 in its first second.
    let emulator = Emulator::start(emulator_config(rate(10, 3000)))
        .await
        .unwrap();
    let (dir, path) = input(&group_rows(40));
    let results = dir.path().join("devices.results.csv");
    let args = |resume: bool| {
        run_args(
            &path,
            &["--rate", "100/1s", "--request-timeout", "1s"],
            resume,
        )
    };
    let mut child = bin_against(&emulator).args(args(false)).spawn().unwrap();
    let journal = autopilot_bulk::output::Journal::path_for(&results);
    let kept = || {
        std::fs::read_to_string(&journal).is_ok_and(|j| j.lines().any(|l| l.starts_with("gate ")))
    };
    let mut polls = 0;
    // Once the run has taken in the 429, its journal keeps the Retry-After.
    while !kept() {
        polls += 1;
        assert!(polls < 4000, "no Retry-After kept: {:?}", emulator.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL while the gate is closed
    let _ = wait(child).await;
    let violations = emulator.stats().violations;
    let child = bin_against(&emulator).args(args(true)).spawn().unwrap();
    let (code, stderr) = wait(child).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("Retry-After"), "{stderr}");
    assert_eq!(
        emulator.stats().violations,
        violations,
        "the resume came back early"
    );
    assert_each_row_once(&read_results(&results), 40);
    emulator.shutdown().await;
}

/// A run killed with POSTs in flight, resumed at once, against a store whose writes become
/// visible only a moment after they are accepted (Graph is not read-your-writes): the resume
/// must not read back before the dead run's requests can no longer land, or it reads "no
/// assignment" for them and assigns those devices a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_right_after_sigkill_waits_until_the_dead_runs_posts_have_landed() {
    let emulator = Emulator::start(EmulatorConfig {
        commit_lag: Some(Duration::from_millis(1500)),
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap();
    let (dir, path) = input(&group_rows(8));
    let results = dir.path().join("devices.results.csv");
    let args = |resume: bool| {
        run_args(
            &path,
            &[
                "--rate",
                "1000/1s",
                "--concurrency",
                "8",
                "--request-timeout",
                "3s",
            ],
            resume,
        )
    };
    let mut child = bin_against(&emulator).args(args(false)).spawn().unwrap();
    // A POST accepted: stored 1.5 s from now, answered then.
    until_created(&emulator, 1).await;
    child.kill().unwrap(); // SIGKILL with every accepted POST still unanswered
    let _ = wait(child).await;
    let child = bin_against(&emulator).args(args(true)).spawn().unwrap();
    let (code, stderr) = wait(child).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("moments ago"),
        "no wait for landing: {stderr}"
    );
    let stats = emulator.stats();
    assert_eq!(stats.duplicate_devices, 0, "assigned twice: {stats:?}");
    assert_eq!(stats.devices_with_assignments, 8, "{stats:?}");
    assert_each_row_once(&read_results(&results), 8);
    emulator.shutdown().await;
}
