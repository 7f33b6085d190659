//! One run per results file: a second run on a results file in use exits 2 at once, sends
//! nothing and changes nothing; a lock left by a killed process never blocks.

mod common;

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
        assert!(stderr.contains("in use by another autopilot-bulk run"), "{stderr}");
        assert!(
            stderr.contains(&format!("pid {}", std::process::id())),
            "the holder is named: {stderr}"
        );
        assert!(stderr.contains("command: autopilot-bulk run nightly.csv"), "{stderr}");
        assert!(stderr.contains("emulator: 0 assignments created"), "{stderr}");
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
