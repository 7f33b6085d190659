//! Credential files (`--client-secret-file`, `--access-token-file`, `--certificate` and the
//! tenants file's `client_secret_file`, `access_token_file`, `certificate`): only regular files
//! under a cap are read; anything else is one line naming the flag or key, exit 2, nothing
//! sent; and a value that names no file is never echoed (it may be a pasted secret).

use crate::common;

use std::path::Path;

use common::{bin, group_rows, input, text};

/// `run` with `flag path` (and the ids a secret or certificate needs) against a closed port:
/// if anything were sent, the error would be another one.
fn run_with(flag: &str, path: &Path) -> (Option<i32>, String) {
    let (dir, csv) = input(&group_rows(1));
    let out = bin()
        .current_dir(dir.path())
        .arg("run")
        .arg(&csv)
        .args(["--tenant-id", "t", "--client-id", "c"])
        .args(["--graph-url", "http://127.0.0.1:9/beta"])
        .arg(flag)
        .arg(path)
        .output()
        .unwrap();
    assert!(!csv.with_extension("results.csv").exists(), "a run started");
    (out.status.code(), text(&out.stderr))
}

fn one_error_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    lines[0]
}

#[test]
fn a_device_a_directory_or_a_huge_file_is_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge.pem");
    std::fs::write(&huge, vec![b'A'; 1024 * 1024 + 1]).unwrap();
    let long = dir.path().join("long.secret");
    std::fs::write(&long, vec![b'A'; 64 * 1024 + 1]).unwrap();
    let cases: Vec<(&str, &Path, &str)> = vec![
        ("--client-secret-file", Path::new("/dev/zero"), "a device"),
        ("--access-token-file", dir.path(), "a directory"),
        ("--client-secret-file", &long, "larger than 64 KiB"),
        ("--certificate", &huge, "larger than 1024 KiB"),
    ];
    for (flag, path, why) in cases {
        let (code, stderr) = run_with(flag, path);
        assert_eq!(code, Some(2), "{flag} {}: {stderr}", path.display());
        let line = one_error_line(&stderr);
        assert!(
            line.contains(&format!("cannot read the file given to {flag}")) && line.contains(why),
            "{line}"
        );
    }
}

/// A FIFO would block the run forever if opened for reading: it is refused unopened.
#[cfg(unix)]
#[test]
fn a_fifo_is_refused_without_waiting_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("secret");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let (code, stderr) = run_with("--client-secret-file", &fifo);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(one_error_line(&stderr).contains("not a regular file (a FIFO)"));
}

#[test]
fn a_secret_pasted_where_a_path_belongs_is_not_echoed() {
    let pasted = "Zx8Q~very.secret-value_0123456789";
    for flag in [
        "--client-secret-file",
        "--access-token-file",
        "--certificate",
    ] {
        let (code, stderr) = run_with(flag, Path::new(pasted));
        assert_eq!(code, Some(2), "{stderr}");
        assert_eq!(
            one_error_line(&stderr),
            format!("autopilot-bulk: error: cannot read the file given to {flag}: no such file")
        );
        assert!(!stderr.contains("Zx8Q"), "{stderr}");
    }
}

#[test]
fn a_tenants_file_key_naming_a_device_or_nothing_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (_input_dir, csv) = input(&group_rows(1));
    let ids = "tenant_id = \"t\"\nclient_id = \"c\"\n";
    for (key, value, why) in [
        (
            "client_secret_file",
            "/dev/zero",
            "not a regular file (a device)",
        ),
        ("access_token_file", "Zx8Q~pasted.secret", "no such file"),
        ("certificate", "/dev/zero", "not a regular file (a device)"),
    ] {
        let tenants = dir.path().join("tenants.toml");
        std::fs::write(&tenants, format!("[tenants.c]\n{ids}{key} = \"{value}\"\n")).unwrap();
        let out = bin()
            .env_remove("AUTOPILOT_BULK_TENANTS")
            .arg("run")
            .arg(&csv)
            .arg("--tenants")
            .arg(&tenants)
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("cannot read the file given to {key}"))
                && stderr.contains(why),
            "{stderr}"
        );
        assert!(!stderr.contains("Zx8Q"), "{stderr}");
    }
}

/// Values that name no file, as a pasted secret or token would: a short secret, one with a
/// slash, one below a file, and a token longer than a file name may be (the system answers
/// "file name too long", not "no such file").
fn pasted_values(dir: &Path) -> Vec<String> {
    let file = dir.join("a-file");
    std::fs::write(&file, "x").unwrap();
    vec![
        "Qx8~vT3pL.secretvalue".into(),
        "Qx8~vT3pL/secret.value".into(),
        format!("{}/Qx8~vT3pL.secretvalue", file.display()),
        format!("eyJ0eXAiOiJKV1Qi.{}.c2ln", "QUJD".repeat(600)),
    ]
}

/// The part of a pasted value that must not be shown (a file's own folder may be).
fn secret_part(value: &str) -> &str {
    value.rsplit('/').next().unwrap_or(value)
}

#[test]
fn a_pasted_value_is_echoed_neither_on_stderr_nor_in_the_summary() {
    let scratch = tempfile::tempdir().unwrap();
    for value in pasted_values(scratch.path()) {
        for flag in [
            "--client-secret-file",
            "--access-token-file",
            "--certificate",
        ] {
            for dry in [false, true] {
                let (dir, csv) = input(&group_rows(1));
                let summary = dir.path().join("summary.json");
                let out = bin()
                    .arg("run")
                    .arg(&csv)
                    .args(["--tenant-id", "t", "--client-id", "c"])
                    .args(["--graph-url", "http://127.0.0.1:9/beta"])
                    .arg(flag)
                    .arg(&value)
                    .arg("--summary-json")
                    .arg(&summary)
                    .args(dry.then_some("--dry-run"))
                    .output()
                    .unwrap();
                let stderr = text(&out.stderr);
                let json = std::fs::read_to_string(&summary).unwrap();
                assert_eq!(out.status.code(), Some(2), "{flag} {dry}: {stderr}");
                assert!(
                    one_error_line(&stderr).starts_with(&format!(
                        "autopilot-bulk: error: cannot read the file given to {flag}: "
                    )),
                    "{stderr}"
                );
                let secret = secret_part(&value);
                assert!(!stderr.contains(secret), "{flag} echoed: {stderr}");
                assert!(
                    !json.contains(secret),
                    "{flag} echoed in the summary: {json}"
                );
                assert!(json.contains(flag), "{json}");
            }
        }
    }
}

#[test]
fn a_pasted_value_in_a_tenants_file_key_is_not_echoed() {
    let scratch = tempfile::tempdir().unwrap();
    let (_input_dir, csv) = input(&group_rows(1));
    let ids = "tenant_id = \"t\"\nclient_id = \"c\"\n";
    for value in pasted_values(scratch.path()) {
        for key in ["client_secret_file", "access_token_file", "certificate"] {
            let dir = tempfile::tempdir().unwrap();
            let tenants = dir.path().join("tenants.toml");
            std::fs::write(&tenants, format!("[tenants.c]\n{ids}{key} = \"{value}\"\n")).unwrap();
            let summary = dir.path().join("summary.json");
            let out = bin()
                .env_remove("AUTOPILOT_BULK_TENANTS")
                .arg("run")
                .arg(&csv)
                .arg("--tenants")
                .arg(&tenants)
                .arg("--summary-json")
                .arg(&summary)
                .output()
                .unwrap();
            let stderr = text(&out.stderr);
            let json = std::fs::read_to_string(&summary).unwrap();
            assert_eq!(out.status.code(), Some(2), "{stderr}");
            assert!(
                stderr.contains(&format!("cannot read the file given to {key}")),
                "{stderr}"
            );
            let secret = secret_part(&value);
            assert!(!stderr.contains(secret), "{key} echoed: {stderr}");
            assert!(
                !json.contains(secret),
                "{key} echoed in the summary: {json}"
            );
        }
    }
}
