//! Files planted beside the results (a symbolic link at the lock or journal path, a folder
//! anyone can write to) and a lock file removed mid-run: each is refused with exit 2 naming
//! the path, and nothing outside the run's own files is written.

use crate::common;

use std::path::Path;

use autopilot_bulk::lock::RunLock;
use common::{bin, group_rows, input, read_results, text};

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

#[cfg(unix)]
#[test]
fn a_symlink_at_the_lock_or_journal_path_is_refused_and_its_target_untouched() {
    for suffix in [".lock", ".journal"] {
        let (dir, csv) = input(&group_rows(2));
        let results = dir.path().join("out.csv");
        let target = dir.path().join("precious.txt");
        std::fs::write(&target, "precious\n").unwrap();
        let planted = dir.path().join(format!("out.csv{suffix}"));
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        let out = run(&csv, &results, &[]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{suffix}: {stderr}");
        assert!(
            stderr.contains(&planted.display().to_string()) && stderr.contains("symbolic link"),
            "{stderr}"
        );
        // Refused before anything was sent: the error alone, no emulator lines around it.
        assert!(stderr.contains("nothing was sent"), "{stderr}");
        assert!(!stderr.contains("emulator"), "{stderr}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
        assert!(std::fs::symlink_metadata(&planted).unwrap().is_symlink());
        assert!(!results.exists(), "{suffix}: the results file was created");
    }
}

/// A link planted at the results path itself: with `--overwrite` it would truncate its target,
/// with `--resume` append to it. Refused in one line naming the path, exit 2, target untouched.
#[cfg(unix)]
#[test]
fn a_symlink_at_the_results_path_is_refused_and_its_target_untouched() {
    for extra in [&[][..], &["--overwrite"], &["--resume"]] {
        let (dir, csv) = input(&group_rows(2));
        let results = dir.path().join("out.csv");
        let target = dir.path().join("precious.txt");
        std::fs::write(&target, "precious\n").unwrap();
        std::os::unix::fs::symlink(&target, &results).unwrap();
        let out = run(&csv, &results, extra);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        let refusal: Vec<_> = stderr
            .lines()
            .filter(|l| l.contains("symbolic link"))
            .collect();
        assert_eq!(refusal.len(), 1, "{extra:?}: {stderr}");
        assert!(
            refusal[0].contains(&results.display().to_string()),
            "{extra:?}: {stderr}"
        );
        // An early refusal is the whole of stderr: no emulator lines around it.
        assert!(!stderr.contains("emulator"), "{extra:?}: {stderr}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
        assert!(std::fs::symlink_metadata(&results).unwrap().is_symlink());
    }
}

#[cfg(unix)]
#[test]
fn a_results_folder_anyone_can_write_is_refused_unless_sticky() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, csv) = input(&group_rows(2));
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let results = shared.join("out.csv");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = run(&csv, &results, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("results folder {}", shared.display())),
        "{stderr}"
    );
    assert!(!results.exists());
    // /tmp's way: sticky, so only a file's owner may remove or rename it.
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = run(&csv, &results, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(read_results(&results).len(), 2);
}

/// A real first run holds the lock (blocked opening its input, a FIFO, after locking); its
/// lock file is removed; a second run is still refused: the first holds the results file.
#[cfg(unix)]
#[test]
fn removing_the_lock_file_of_a_running_run_does_not_admit_a_second() {
    use std::io::Write;
    let (dir, csv) = input(&group_rows(3));
    let results = dir.path().join("out.csv");
    // An earlier run's results, so the first run below locks the results file at once.
    let out = run(&csv, &results, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let before = std::fs::read_to_string(&results).unwrap();
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
        .args(["--emulator", "-q", "--resume"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Opening the FIFO for writing returns once the first run opened it for reading.
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    std::fs::remove_file(RunLock::path_for(&results)).unwrap();
    let out = run(&csv, &results, &["--resume"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("it holds the results file"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&results).unwrap(), before);
    first.kill().unwrap();
    first.wait().unwrap();
    let _ = writer.write_all(b"");
}

/// A journal that cannot be read (not text: a torn disk block, a stray binary) stops a resume
/// with one line naming it and what to do; doing that (moving it aside) lets the resume go on.
#[test]
fn an_unreadable_journal_is_named_with_how_to_continue() {
    let (dir, csv) = input(&group_rows(3));
    let results = dir.path().join("out.csv");
    let out = run(&csv, &results, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let journal = dir.path().join("out.csv.journal");
    std::fs::write(&journal, b"1,\xff\xfe\x00garbage\n").unwrap();
    let out = run(&csv, &results, &["--resume"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let named: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains(&journal.display().to_string()))
        .collect();
    assert_eq!(named.len(), 1, "{stderr}");
    assert!(
        named[0].contains("move it aside") && named[0].contains("--resume"),
        "{stderr}"
    );
    assert!(named[0].contains("applied twice"), "{stderr}");
    std::fs::rename(&journal, dir.path().join("out.csv.journal.unreadable")).unwrap();
    let out = run(&csv, &results, &["--resume"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(read_results(&results).len(), 3);
}
