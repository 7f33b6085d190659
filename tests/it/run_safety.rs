//! One run per results file: a second run on a results file in use exits 2 at once, sends
//! nothing and changes nothing; a lock left by a killed process never blocks.

use crate::common;

use std::path::Path;

use autopilot_bulk::lock::RunLock;
use common::{bin, group_rows, input, read_results};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `run --emulator` on `input` into `results` with `extra` flags.
fn run(input: &Path, results: &Path, extra: &[&str]) -> std::process::Output {
    bin()
        .arg("run")
        .arg(input)
        .arg("-o")
        .arg(results)
        .args(["--emulator", "-q", "--rate", "1000/1s"])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn a_results_file_in_use_is_refused_with_and_without_resume_or_overwrite() {
    let (dir, csv) = input(&group_rows(5));
    let results = dir.path().join("out.csv");
    std::fs::write(&results, "precious earlier results\n").unwrap();
    // Another process holds it (this test process, from the binary's point of view).
    let held = RunLock::acquire(&results, "autopilot-bulk run nightly.csv").unwrap();
    for flags in [&[][..], &["--resume"], &["--overwrite"]] {
        let out = run(&csv, &results, flags);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(
            stderr.contains("in use by another autopilot-bulk run"),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("pid {}", std::process::id())),
            "the holder is named: {stderr}"
        );
        assert!(
            stderr.contains("command: autopilot-bulk run nightly.csv"),
            "{stderr}"
        );
        // Refused before anything was sent: no emulator lines around the error.
        assert!(!stderr.contains("emulator"), "{stderr}");
        assert_eq!(
            std::fs::read_to_string(&results).unwrap(),
            "precious earlier results\n",
            "{flags:?} changed the results file"
        );
        assert!(!dir.path().join("out.csv.journal").exists());
    }
    // The holder finished: the same command now runs, and every row is done once.
    drop(held);
    let out = run(&csv, &results, &["--overwrite"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(read_results(&results).len(), 5);
    assert!(!RunLock::path_for(&results).exists());
}

#[test]
fn a_lock_left_by_a_killed_run_does_not_block_resume() {
    let (dir, csv) = input(&group_rows(3));
    let results = dir.path().join("out.csv");
    // What `kill -9` leaves behind: the record, and no lock (the kernel released it).
    std::fs::write(
        RunLock::path_for(&results),
        "pid=4194000\nhost=elsewhere\nstarted=2026-11-28T01:30:00Z\ncommand=killed\n",
    )
    .unwrap();
    let out = run(&csv, &results, &["--resume"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(read_results(&results).len(), 3);
}

/// A real second process, and a real `kill -9`: the first run blocks opening its input (a
/// FIFO), which it does only after taking the lock, so once the FIFO has a reader the lock is
/// certainly held. No sleeps, no timing.
#[cfg(unix)]
#[test]
fn a_running_process_holds_the_lock_until_it_is_killed() {
    use std::io::Write;
    let (dir, csv) = input(&group_rows(4));
    let results = dir.path().join("out.csv");
    let fifo = dir.path().join("slow.csv");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let mut first = std::process::Command::new(assert_cmd::cargo::cargo_bin("autopilot-bulk"))
        .arg("run")
        .arg(&fifo)
        .arg("-o")
        .arg(&results)
        .args(["--emulator", "-q"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Opening the FIFO for writing returns once the first run opened it for reading.
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let out = run(&csv, &results, &["--resume"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", first.id())), "{stderr}");
    // kill -9: the kernel releases the lock; --resume then runs normally.
    first.kill().unwrap();
    first.wait().unwrap();
    let _ = writer.write_all(b"");
    drop(writer);
    let out = run(&csv, &results, &["--resume"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(read_results(&results).len(), 4);
}

/// The results file stops taking writes mid-run (the file-size limit, as a full disk would):
/// dispatch stops at once, exit 2, and `--resume` finishes every row exactly once.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_results_file_that_stops_taking_writes_stops_the_run_and_resume_recovers() {
    use autopilot_bulk::emulator::Emulator;
    use common::{assert_each_row_once, assert_ids_match_emulator, emulator_config, rate};
    let emulator = Emulator::start(emulator_config(rate(1000, 1000)))
        .await
        .unwrap();
    let (dir, csv) = input(&group_rows(300));
    let results = dir.path().join("out.csv");
    let command = |limited: bool| {
        // SIGXFSZ ignored, as a service manager may have it: writes past the limit fail EFBIG.
        let limit = if limited {
            "trap '' XFSZ; ulimit -f 8; "
        } else {
            ""
        };
        let mut c = common::without_credentials(assert_cmd::Command::new("sh"));
        c.arg("-c")
            .arg(format!("{limit}exec \"$0\" \"$@\""))
            .arg(assert_cmd::cargo::cargo_bin("autopilot-bulk"))
            .arg("run")
            .arg(&csv)
            .arg("-o")
            .arg(&results)
            // Four rows in flight at most, so "stopped at once" has a tight bound below.
            .args(["-q", "--rate", "1000/1s", "--resume", "--concurrency", "4"])
            // A resume waits this long for requests the stopped run left unanswered.
            .args(["--request-timeout", "3s"])
            .args(["--graph-url", &emulator.graph_url()])
            .args(["--authority-url", &emulator.authority_url()])
            .env("AZURE_TENANT_ID", "t")
            .env("AZURE_CLIENT_ID", "c")
            .env("AZURE_CLIENT_SECRET", "s");
        c
    };
    let mut first = command(true);
    let out = tokio::task::spawn_blocking(move || first.output().unwrap())
        .await
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot write results file"), "{stderr}");
    let sent = emulator.stats().assignments_created;
    let written = std::fs::read_to_string(&results).unwrap().lines().count() as u64;
    assert!(written < 300, "the limit did not bite");
    assert!(
        sent <= written + 8,
        "dispatch went on after the write error: {sent} sent, {written} lines written"
    );
    let mut second = command(false);
    let out = tokio::task::spawn_blocking(move || second.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines = read_results(&results);
    assert_each_row_once(&lines, 300);
    assert_ids_match_emulator(&lines, &emulator);
}

/// Under `ulimit -f` with SIGXFSZ at its default (kill), the binary still sees the write
/// fail: it stops with exit 2 and a summary instead of dying by the signal (exit 153).
#[cfg(unix)]
#[test]
fn the_file_size_limit_is_a_write_error_not_a_kill() {
    let (dir, csv) = input(&group_rows(200));
    let results = dir.path().join("out.csv");
    let summary = dir.path().join("summary.json");
    let out = common::without_credentials(assert_cmd::Command::new("sh"))
        .arg("-c")
        .arg("trap - XFSZ; ulimit -f 4; exec \"$0\" \"$@\"")
        .arg(assert_cmd::cargo::cargo_bin("autopilot-bulk"))
        .arg("run")
        .arg(&csv)
        .arg("-o")
        .arg(&results)
        .args(["--emulator", "-q", "--rate", "1000/1s", "--summary-json"])
        .arg(&summary)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{:?}: {stderr}", out.status);
    assert!(stderr.contains("cannot write results file"), "{stderr}");
    let text_on_disk = std::fs::read_to_string(&results).unwrap();
    let written = text_on_disk.lines().count();
    assert!(written < 200, "the limit did not bite");
    // Every line on disk is whole: the one the limit tore was cut.
    assert!(
        text_on_disk.ends_with('\n'),
        "a torn last line: {text_on_disk:?}"
    );
    let lines = read_results(&results);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(json["exit_code"], 2, "{json}");
    assert_eq!(json["outcome"], "error", "{json}");
    // A summary of what was done, not the could-not-start shape: the rows on disk counted.
    assert_eq!(
        json["rows"]["this_run"]["created"],
        lines.len() as u64,
        "{json}"
    );
    assert!(
        json["aborted_reason"]
            .as_str()
            .unwrap_or("")
            .contains("cannot write"),
        "{json}"
    );
}

/// A server that accepts and never answers costs each attempt the request timeout, no more,
/// and the row's error names that bound.
#[tokio::test]
async fn a_silent_server_is_bounded_by_the_request_timeout_and_named() {
    use autopilot_bulk::emulator::Emulator;
    use common::{config_for, emulator_config, rate};
    let emulator = Emulator::start(emulator_config(rate(1000, 1000)))
        .await
        .unwrap();
    // Accepts connections and holds them without a byte of answer.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}/beta", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let (_dir, csv) = input(&group_rows(2));
    let mut config = config_for(&emulator, &csv, rate(1000, 1000));
    config.graph_url = silent_url;
    config.request_timeout = std::time::Duration::from_millis(300);
    config.max_attempts = 2;
    config.initial_backoff = std::time::Duration::from_millis(10);
    let summary = common::run(config.clone()).await;
    assert_eq!(summary.failed, 2);
    let lines = read_results(&config.output);
    for l in &lines {
        assert_eq!(l.error_code, "Timeout", "{l:?}");
        assert!(l.error_message.contains("--request-timeout"), "{l:?}");
        assert_eq!(l.attempts, 2);
    }
}

/// `-o` naming the input, however spelled, would destroy it with `--overwrite` and read its
/// own results back as rows: refused, the input untouched.
#[cfg(unix)]
#[test]
fn results_naming_the_input_are_refused_however_spelled() {
    let (dir, csv) = input(&group_rows(3));
    let before = std::fs::read(&csv).unwrap();
    let sub = dir.path().join("a");
    std::fs::create_dir(&sub).unwrap();
    std::os::unix::fs::symlink(&csv, dir.path().join("link.csv")).unwrap();
    std::fs::hard_link(&csv, dir.path().join("hard.csv")).unwrap();
    let name = csv.file_name().unwrap().to_string_lossy().into_owned();
    for output in [
        csv.clone(),
        sub.join("..").join(&name),
        dir.path().join("link.csv"),
        dir.path().join("hard.csv"),
    ] {
        let out = run(&csv, &output, &["--overwrite"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", output.display());
        assert!(stderr.contains("is the input file"), "{stderr}");
        assert_eq!(std::fs::read(&csv).unwrap(), before, "input changed");
    }
    // The journal beside a results file would be the input: refused too.
    let journal_input = dir.path().join("x.csv.journal");
    std::fs::copy(&csv, &journal_input).unwrap();
    let out = run(&journal_input, &dir.path().join("x.csv"), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("the journal"),
        "{}",
        text(&out.stderr)
    );
}

/// A pipe whose reader is gone (`| head -1` after its line): every write fails with EPIPE.
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer
}

#[test]
fn a_closed_stdout_or_stderr_is_a_quiet_end_of_output() {
    let (dir, csv) = input(&group_rows(4));
    // --dry-run | head -1
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("autopilot-bulk"))
        .args(["run", "--dry-run", "--emulator"])
        .arg(&csv)
        .stdout(closed_pipe())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // run -vv 2>&1 >/dev/null | head -1: the run finishes and still leaves its summary.
    let results = dir.path().join("out.csv");
    let summary = dir.path().join("summary.json");
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("autopilot-bulk"))
        .arg("run")
        .arg(&csv)
        .arg("-o")
        .arg(&results)
        .args(["--emulator", "-vv", "--rate", "1000/1s", "--summary-json"])
        .arg(&summary)
        .stderr(closed_pipe())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(json["outcome"], "completed");
    assert_eq!(read_results(&results).len(), 4);
}

/// A proxy in the environment (a corporate default) never carries loopback traffic: the
/// emulator stays reachable.
#[test]
fn a_proxy_in_the_environment_is_not_used_for_loopback() {
    let (dir, csv) = input(&group_rows(3));
    let results = dir.path().join("out.csv");
    let out = bin()
        .arg("run")
        .arg(&csv)
        .arg("-o")
        .arg(&results)
        .args(["--emulator", "-q", "--rate", "1000/1s"])
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("ALL_PROXY", "http://127.0.0.1:9")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(read_results(&results).len(), 3);
}

/// `-vv` shows one line per request answered, as the README says.
#[test]
fn very_verbose_shows_each_request() {
    let (dir, csv) = input(&group_rows(3));
    let out = bin()
        .arg("run")
        .arg(&csv)
        .arg("-o")
        .arg(dir.path().join("out.csv"))
        .args(["--emulator", "-vv", "--rate", "1000/1s"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let answered = stderr.lines().filter(|l| l.contains("answered")).count();
    // Each row reads its device before writing (few rows: no listing): 3 GETs, 3 POSTs.
    assert_eq!(answered, 6, "{stderr}");
}
