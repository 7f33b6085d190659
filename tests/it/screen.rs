//! What an admin sees on stderr: `-q` is errors only (no end-of-run summary) for every command
//! that has it; `--log-format json` makes every line on stderr a JSON event.

use crate::common;

use autopilot_bulk::emulator::{Emulator, EmulatorConfig};
use common::*;

/// An emulator that knows devices 0..n and assigns at once.
async fn emulator(n: u32) -> Emulator {
    Emulator::start(EmulatorConfig {
        assign_delay: std::time::Duration::ZERO,
        client_secret: Some("s".into()),
        devices: Some((0..n).map(device).collect()),
        ..emulator_config(rate(1000, 1000))
    })
    .await
    .unwrap()
}

/// `command ARGS` against `emulator` with a working secret (`secret` to pick another):
/// (exit code, stdout, stderr).
async fn against(
    emulator: &Emulator,
    args: &[&str],
    secret: &str,
) -> (Option<i32>, String, String) {
    let mut cmd = bin();
    cmd.args(args)
        .args(["--graph-url", &emulator.graph_url()])
        .args(["--authority-url", &emulator.authority_url()])
        .env("AZURE_TENANT_ID", "contoso")
        .env("AZURE_CLIENT_ID", "app")
        .env("AZURE_CLIENT_SECRET", secret);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// Every line of `stderr` as a JSON event (`timestamp`, `level`, `fields.message`); panics
/// naming the first line that is not one.
fn events(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}\nin:\n{stderr}"));
            assert!(v["timestamp"].is_string(), "{l}");
            assert!(v["level"].is_string(), "{l}");
            assert!(v["fields"]["message"].is_string(), "{l}");
            v
        })
        .collect()
}

/// The event whose message is `message`, exactly one.
fn the_event<'a>(events: &'a [serde_json::Value], message: &str) -> &'a serde_json::Value {
    let found: Vec<_> = events
        .iter()
        .filter(|e| e["fields"]["message"] == message)
        .collect();
    assert_eq!(found.len(), 1, "{message}: {events:#?}");
    found[0]
}

/// A nightly job that went well prints nothing with -q: no summary from run, undo, import or
/// status; without -q the summary is there. A run that fails still says why under -q.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_is_errors_only_for_every_command_that_has_it() {
    let emulator = emulator(3).await;
    let (dir, path) = input(&group_rows(3));
    let input = path.to_str().unwrap();
    let summary = dir.path().join("summary.json");
    let summary_arg = summary.to_str().unwrap();

    let (code, _, stderr) = against(
        &emulator,
        &["run", input, "-q", "--summary-json", summary_arg],
        "s",
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stderr, "", "run -q printed more than errors");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(
        v["rows"]["created"], 3,
        "the counts are in --summary-json: {v}"
    );

    let (code, _, stderr) = against(&emulator, &["run", input, "--overwrite"], "s").await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("rows in") && stderr.contains("existing 3"),
        "{stderr}"
    );
    // A run of milliseconds is a burst inside one window of 100/20s, not a rate.
    assert!(stderr.contains("rate: within one window"), "{stderr}");
    assert!(
        !stderr.contains("req/s") && !stderr.contains("in flight"),
        "{stderr}"
    );

    let results = dir.path().join("devices.results.csv");
    let results = results.to_str().unwrap();
    let (code, stdout, stderr) = against(&emulator, &["status", results, "-q"], "s").await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stderr, "", "status -q printed more than errors");
    assert!(
        stdout.contains("3 rows · 3 assigned"),
        "the counts stay on stdout: {stdout}"
    );

    let (code, _, stderr) = against(&emulator, &["undo", results, "-q"], "s").await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stderr, "", "undo -q printed more than errors");

    // A run that cannot authenticate: exit 3, and -q still says why.
    let (code, _, stderr) = against(&emulator, &["run", input, "-q", "--overwrite"], "wrong").await;
    assert_eq!(code, Some(3), "{stderr}");
    assert!(!stderr.trim().is_empty(), "an aborted -q run said nothing");
    assert!(!stderr.contains("rows in"), "{stderr}");
    assert!(stderr.contains("to continue:"), "{stderr}");
    emulator.shutdown().await;

    // import: the summary only without -q.
    let (dir, path) = input_named(&crate::import::hashes(1), "hashes.csv");
    let out = bin()
        .args(["import", "-q", "--emulator"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains("import: "),
        "import -q printed its summary: {stderr}"
    );
    std::fs::remove_file(dir.path().join("hashes.import.csv")).unwrap();
    let out = bin()
        .args(["import", "--emulator"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(stderr.contains("import: 1 rows"), "{stderr}");
}

fn input_named(text: &str, name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// With --log-format json every line on stderr is a JSON event: log events (-vv), the summary
/// as one event with the summary JSON's fields, the hint to continue, the emulator's lines,
/// errors before a run and a command line clap refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_format_makes_every_line_on_stderr_json() {
    let emulator = emulator(3).await;
    let mut csv = group_rows(3);
    csv.push_str("not-a-guid,group,\n");
    let (dir, path) = input(&csv);
    let input = path.to_str().unwrap();

    let (code, _, stderr) = against(
        &emulator,
        &["run", input, "-vv", "--log-format", "json"],
        "s",
    )
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    let all = events(&stderr);
    let summary = the_event(&all, "run finished");
    assert_eq!(summary["level"], "WARN", "exit 1 is a warning: {summary}");
    let fields = &summary["fields"];
    assert_eq!(fields["exit_code"], 1);
    assert_eq!(fields["outcome"], "completed");
    assert_eq!(fields["rows"]["created"], 3);
    assert_eq!(fields["rows"]["invalid"], 1);
    assert!(all.len() > 1, "-vv gives log events too: {stderr}");

    let results = dir.path().join("devices.results.csv");
    let results = results.to_str().unwrap();
    // status --watch without a terminal: a line per reading, each an event.
    let watch = [
        "--watch",
        "--interval",
        "10ms",
        "--log-format",
        "json",
        "--overwrite",
    ];
    let (code, _, stderr) = against(
        &emulator,
        &[&["status", results][..], &watch[..]].concat(),
        "s",
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let all = events(&stderr);
    let first = all[0]["fields"]["message"].as_str().unwrap_or_default();
    assert!(
        first.starts_with("status reading 1: 3/3 assigned"),
        "{stderr}"
    );

    let (code, _, stderr) =
        against(&emulator, &["undo", results, "--log-format", "json"], "s").await;
    assert_eq!(code, Some(0), "{stderr}");
    let all = events(&stderr);
    assert_eq!(the_event(&all, "undo finished")["fields"]["undone"], 3);

    // An aborted run: the error, the summary and the hint to continue, all events.
    let (code, _, stderr) = against(
        &emulator,
        &["run", input, "--overwrite", "--log-format", "json"],
        "wrong",
    )
    .await;
    assert_eq!(code, Some(3), "{stderr}");
    let all = events(&stderr);
    assert!(all.iter().any(|e| e["level"] == "ERROR"), "{stderr}");
    assert_eq!(
        the_event(&all, "run finished")["fields"]["outcome"],
        "aborted"
    );
    assert!(
        all.iter().any(|e| e["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("to continue: "))),
        "{stderr}"
    );
    emulator.shutdown().await;

    // The in-process emulator's lines; an error before the run; a refused command line.
    let out = bin()
        .args([
            "run",
            input,
            "--emulator",
            "--overwrite",
            "--log-format",
            "json",
        ])
        .output()
        .unwrap();
    let all = events(&text(&out.stderr));
    assert!(all.iter().any(|e| {
        e["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("emulator: "))
    }));
    let out = bin()
        .args(["run", "no/such.csv", "--log-format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let all = events(&text(&out.stderr));
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["level"], "ERROR");
    let out = bin()
        .args(["run", input, "--log-format=json", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let all = events(&text(&out.stderr));
    assert!(
        all[0]["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--no-such-flag"))
    );
    // -q with json: errors only, no summary event.
    let out = bin()
        .args([
            "run",
            input,
            "--emulator",
            "--overwrite",
            "-q",
            "--log-format",
            "json",
        ])
        .output()
        .unwrap();
    let all = events(&text(&out.stderr));
    assert!(
        all.iter().all(|e| e["fields"]["message"] != "run finished"),
        "{all:#?}"
    );
}
