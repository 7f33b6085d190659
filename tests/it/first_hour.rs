//! The first hour of a new admin: recipes as the README writes them must work as written.

use crate::common;

use autopilot_bulk::emulator::{Emulator, EmulatorConfig};
use common::*;

/// A Kubernetes secret made with `printf '%s\n'` (or any secret file) hands the variable its
/// trailing line break; Entra ID would refuse the secret with it, so it is not part of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_from_the_environment_loses_its_trailing_newline() {
    let emulator = Emulator::start(EmulatorConfig {
        client_secret: Some("Qx8~vT3pL".into()),
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap();
    let (_dir, path) = input(&group_rows(2));
    let run = |secret: &str| {
        let mut cmd = bin();
        cmd.arg("run")
            .arg(&path)
            .args(["--graph-url", &emulator.graph_url()])
            .args(["--authority-url", &emulator.authority_url()])
            .args(["-q", "--overwrite"])
            .env("AZURE_TENANT_ID", "contoso")
            .env("AZURE_CLIENT_ID", "app")
            .env("AZURE_CLIENT_SECRET", secret);
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap();
            (out.status.code(), text(&out.stderr))
        }
    };
    let (code, stderr) = run("Qx8~vT3pL\n").await;
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = run("Qx8~vT3pL\r\n").await;
    assert_eq!(code, Some(0), "{stderr}");
    // Other characters are the secret's own: a wrong one is still refused.
    let (code, stderr) = run("Qx8~vT3pL \n").await;
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        !stderr.contains("Qx8~vT3pL"),
        "the secret was echoed: {stderr}"
    );
    emulator.shutdown().await;
}

/// The README's cron line reads a plain `KEY=VALUE` file (the systemd `EnvironmentFile=`
/// format) with `set -a`, so that what it sets reaches the binary; without `set -a` it would
/// export nothing (`no credentials`, exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cron_recipe_exports_a_plain_environment_file() {
    let emulator = Emulator::start(EmulatorConfig {
        client_secret: Some("from-the-file".into()),
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap();
    let (dir, path) = input(&group_rows(2));
    let env = dir.path().join("autopilot-bulk.env");
    std::fs::write(
        &env,
        "AZURE_TENANT_ID=contoso\nAZURE_CLIENT_ID=app\nAZURE_CLIENT_SECRET=from-the-file\n",
    )
    .unwrap();
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_autopilot-bulk"));
    let line = |prefix: &str| {
        format!(
            "{prefix}. '{}' && {}{} run '{}' -q --overwrite --graph-url {} --authority-url {}",
            env.display(),
            if prefix.is_empty() { "" } else { "set +a && " },
            binary.display(),
            path.display(),
            emulator.graph_url(),
            emulator.authority_url()
        )
    };
    let sh = |script: String| async move {
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("sh")
                .args(["-c", &script])
                .env_remove("AZURE_TENANT_ID")
                .env_remove("AZURE_CLIENT_ID")
                .env_remove("AZURE_CLIENT_SECRET")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        (out.status.code(), text(&out.stderr))
    };
    let (code, stderr) = sh(line("set -a && ")).await;
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = sh(line("")).await;
    assert_eq!(
        code,
        Some(2),
        "without set -a nothing is exported: {stderr}"
    );
    assert!(stderr.contains("no credentials"), "{stderr}");
    emulator.shutdown().await;
}

/// Every reading replaces the status file whole, so an earlier status file (the last watch's or
/// the last single reading's) is replaced, with `--watch` and without; a file that is not a
/// status file (`-o` naming the input by mistake) is refused by both unless `--overwrite`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_replaces_an_earlier_status_file_and_refuses_any_other() {
    let emulator = Emulator::start(EmulatorConfig {
        assign_delay: std::time::Duration::ZERO,
        devices: Some((0..3).map(device).collect()),
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap();
    let (dir, path) = input(&group_rows(3));
    let config = config_for(&emulator, &path, rate(1000, 1000));
    let results = config.output.clone();
    assert_eq!(run(config).await.created, 3);
    let sheet = dir.path().join("devices.results.status.csv");
    let earlier = format!(
        "{}\n1,{},,pending,,,\n",
        autopilot_bulk::status::HEADER.join(","),
        device(0)
    );
    let status = |extra: &[&str]| {
        let mut cmd = bin();
        cmd.arg("status")
            .arg(&results)
            .args(extra)
            .args(["-q", "--graph-url", &emulator.graph_url()])
            .args(["--authority-url", &emulator.authority_url()])
            .env("AZURE_TENANT_ID", "contoso")
            .env("AZURE_CLIENT_ID", "app")
            .env("AZURE_CLIENT_SECRET", "any");
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap();
            (out.status.code(), text(&out.stderr))
        }
    };
    let watch = ["--watch", "--interval", "50ms", "--timeout", "60s"];
    for extra in [&[][..], &watch[..]] {
        std::fs::write(&sheet, &earlier).unwrap();
        let (code, stderr) = status(extra).await;
        assert_eq!(code, Some(0), "{extra:?}: {stderr}");
        let written = std::fs::read_to_string(&sheet).unwrap();
        assert!(!written.contains("pending"), "{extra:?}: {written}");
        assert_eq!(written.lines().count(), 4, "{extra:?}: {written}");
    }
    // The input named as the status file: refused, untouched, with --watch too.
    let input_text = std::fs::read_to_string(&path).unwrap();
    for extra in [&[][..], &watch[..]] {
        let mut args = extra.to_vec();
        args.extend(["-o", path.to_str().unwrap()]);
        let (code, stderr) = status(&args).await;
        assert_eq!(code, Some(2), "{extra:?}: {stderr}");
        assert!(
            stderr.contains("is not a status file") && stderr.contains("--overwrite"),
            "{stderr}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), input_text);
    }
    emulator.shutdown().await;
}

/// `dir` holding `devices.csv` with `csv`, and the in-process emulator's device list naming
/// the first `known` of [`device`].
fn emulated_input(csv: &str, known: u32) -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, path) = input(csv);
    let devices: String = (0..known).map(|i| device(i) + "\n").collect();
    std::fs::write(dir.path().join("emulator-devices.txt"), devices).unwrap();
    (dir, path)
}

/// The binary's exit code and stderr for `run INPUT --emulator ARGS`.
fn run_emulated(path: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let out = bin()
        .arg("run")
        .arg(path)
        .arg("--emulator")
        .args(args)
        .output()
        .unwrap();
    (out.status.code(), text(&out.stderr))
}

#[test]
fn a_missing_results_folder_is_named_and_no_emulator_line_surrounds_the_error() {
    let (dir, path) = emulated_input(&group_rows(2), 2);
    let missing = dir.path().join("no-such-folder");
    let output = missing.join("r.csv");
    let (code, stderr) = run_emulated(&path, &["-o", output.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the results folder {} does not exist",
            missing.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains(".lock"), "{stderr}");
    // The one error line: the in-process emulator is not mentioned around it.
    assert!(!stderr.contains("emulator"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn a_utf16_input_names_powershell_and_the_fix_and_nothing_else() {
    let (dir, path) = emulated_input("", 0);
    let mut bytes = vec![0xFF, 0xFE];
    for unit in "device_id,group_id\r\n".encode_utf16() {
        bytes.extend(unit.to_le_bytes());
    }
    std::fs::write(&path, bytes).unwrap();
    let (code, stderr) = run_emulated(&path, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    for says in [
        "UTF-16",
        "PowerShell 5.1",
        "`Out-File`",
        "Export-Csv -Encoding UTF8",
        "Out-File -Encoding utf8",
    ] {
        assert!(stderr.contains(says), "{says}: {stderr}");
    }
    assert!(!stderr.contains("emulator"), "{stderr}");
    drop(dir);
}

#[test]
fn tenant_is_answered_with_tenant_id_and_the_tenants_file() {
    let (_dir, path) = input(&group_rows(1));
    for typed in [&["--tenant", "contoso"][..], &["--tenant=contoso"][..]] {
        let out = bin().arg("run").arg(&path).args(typed).output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("'--tenant-id'"), "{stderr}");
        assert!(stderr.contains("AZURE_TENANT_ID"), "{stderr}");
        assert!(
            stderr.contains("file of many tenants in '--tenants'"),
            "{stderr}"
        );
        assert!(!stderr.contains("a similar argument exists"), "{stderr}");
    }
    // The emulator's own --tenant is left alone.
    let out = bin()
        .args(["emulate", "--tenant", "contoso", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

/// The emulator's line counts what the run's action writes: a tag run's tags (also when it set
/// none), never "0 assignments created".
#[test]
fn the_emulator_line_counts_the_runs_own_action() {
    let mut csv = String::from("device_id,group_tag\n");
    for i in 0..4 {
        csv.push_str(&format!("{},Kiosk\n", device(i)));
    }
    // Three devices known: three tags set, the fourth row fails (404).
    let (_dir, path) = emulated_input(&csv, 3);
    let (code, stderr) = run_emulated(&path, &["--action", "tag"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("emulator: 3 group tags set ·"), "{stderr}");
    assert!(!stderr.contains("assignments created"), "{stderr}");
    assert!(
        stderr.contains("ran against the in-process emulator"),
        "{stderr}"
    );
    // None known: nothing set, and said so in the action's own words.
    let (_dir, path) = emulated_input(&csv, 0);
    let (_, stderr) = run_emulated(&path, &["--action", "tag"]);
    assert!(stderr.contains("emulator: 0 group tags set ·"), "{stderr}");
    assert!(!stderr.contains("assignments created"), "{stderr}");
}

/// The README's four-line rehearsal against a separate `emulate`, line by line, in a copy of
/// `samples/`: the port is the emulator's own (0, read from its first stdout line, instead of
/// 8080) and the pace Intune's window made short (so that it takes a second, not twenty); the
/// second run (with `--overwrite`, as the comment says) finds every row `existing` and writes
/// nothing.
#[test]
fn the_readmes_rehearsal_against_a_separate_emulator_runs_as_written() {
    use std::io::BufRead;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = readme
        .split("### Rehearse against a separate emulator")
        .nth(1)
        .expect("the rehearsal section");
    let block = section
        .split("```console\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .unwrap();
    let lines: Vec<&str> = block.lines().collect();
    assert_eq!(lines.len(), 4, "{block}");
    let emulate = lines[0].trim_end_matches('&').trim();
    assert_eq!(
        emulate,
        "autopilot-bulk emulate --port 8080 --devices samples/emulator-devices.txt"
    );
    let exports: Vec<(String, String)> = lines[1..3]
        .iter()
        .flat_map(|l| l.trim_start_matches("export ").split(' '))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(exports.len(), 5, "{exports:?}");
    let run = lines[3].split('#').next().unwrap().trim();
    assert_eq!(run, "autopilot-bulk run samples/devices.csv");

    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples");
    std::fs::create_dir(&samples).unwrap();
    for name in ["devices.csv", "emulator-devices.txt"] {
        std::fs::copy(root.join("samples").join(name), samples.join(name)).unwrap();
    }
    let binary = env!("CARGO_BIN_EXE_autopilot-bulk");
    let mut server = Stopped(
        std::process::Command::new(binary)
            .current_dir(dir.path())
            .args(
                emulate
                    .split(' ')
                    .skip(1)
                    .map(|w| if w == "8080" { "0" } else { w }),
            )
            .args(["--limit", "1000/1s"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut url = String::new();
    std::io::BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    let url = url.trim().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let run = |extra: &[&str]| {
        let mut cmd = bin();
        cmd.current_dir(dir.path())
            .args(run.split(' ').skip(1))
            .args(["--rate", "1000/1s", "-q"])
            .args(extra);
        for (k, v) in &exports {
            cmd.env(k, v.replace("http://127.0.0.1:8080", &url));
        }
        let out = cmd.output().unwrap();
        (out.status.code(), text(&out.stderr))
    };
    // 146 rows assigned; four invalid and one unknown device on purpose: exit 1.
    let (code, stderr) = run(&[]);
    assert_eq!(code, Some(1), "{stderr}");
    let results = read_results(&samples.join("devices.results.csv"));
    assert_eq!(
        results.iter().filter(|r| r.status == "created").count(),
        146
    );
    let (code, stderr) = run(&["--overwrite"]);
    assert_eq!(code, Some(1), "{stderr}");
    let results = read_results(&samples.join("devices.results.csv"));
    assert_eq!(
        results.iter().filter(|r| r.status == "existing").count(),
        146
    );
    assert_eq!(results.iter().filter(|r| r.status == "created").count(), 0);
}

/// A child process stopped when this drops, also when an assertion fails first.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
