//! What an assign row targets, as the binary sees it: a row that names no target is `invalid`
//! in `validate`, `--dry-run`, `preflight` and `run` alike (a bare `base` target is sent only
//! when asked for), and a `Group Tag` column an assign run does not read is named in the
//! warning of ignored columns.

use crate::common;

use common::*;

const NO_TARGET: &str = "no target: give group_id, collection_id, filter_id or --target-type";
const BASE_TARGET: &str = "microsoft.graph.deviceAndAppManagementAssignmentTarget";

/// Three devices by id and nothing else: a serial-only export's shape, or a forgotten
/// `--group-id`.
fn bare_rows() -> String {
    let mut s = String::from("device_id\n");
    for i in 0..3 {
        s.push_str(&format!("{}\n", device(i)));
    }
    s
}

fn output(cmd: &mut assert_cmd::Command) -> (Option<i32>, String, String) {
    let out = cmd.output().unwrap();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn a_row_without_a_target_is_invalid_in_every_command() {
    let (dir, path) = input(&bare_rows());
    let (code, stdout, stderr) = output(bin().arg("validate").arg(&path));
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    for row in 1..=3 {
        assert!(
            stdout.contains(&format!("row {row}: {NO_TARGET}")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("3 rows · 0 valid · 3 invalid"), "{stdout}");

    let (code, stdout, stderr) = output(
        bin()
            .arg("run")
            .arg(&path)
            .args(["--dry-run", "--emulator"]),
    );
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("row 1: {NO_TARGET}")), "{stdout}");
    assert!(
        !stdout.contains("POST") && !stdout.contains(BASE_TARGET),
        "a body was shown: {stdout}"
    );

    let (code, stdout, stderr) = output(bin().arg("preflight").arg(&path).arg("--emulator"));
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("has no valid row"), "{stderr}");

    let summary = dir.path().join("summary.json");
    let (code, stdout, stderr) = output(
        bin()
            .arg("run")
            .arg(&path)
            .args(["--emulator", "-q", "--summary-json"])
            .arg(&summary),
    );
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("0 assignments created"),
        "the emulator saw writes: {stderr}"
    );
    let results = read_results(&path.with_file_name("devices.results.csv"));
    assert_eq!(results.len(), 3);
    for r in &results {
        assert_eq!(r.status, "invalid", "{r:?}");
        assert_eq!(r.error_message, NO_TARGET, "{r:?}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(json["rows"]["created"], 0, "{json}");
    assert_eq!(json["rows"]["invalid"], 3, "{json}");
}

/// A base target without a filter is one the admin asks for: by flag or by cell.
#[test]
fn a_base_target_is_sent_when_asked_for() {
    let (_dir, path) = input(&bare_rows());
    let (code, stdout, stderr) = output(
        bin()
            .arg("validate")
            .arg(&path)
            .args(["--target-type", "base"]),
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("3 rows · 3 valid · 0 invalid"), "{stdout}");
    let (code, stdout, stderr) = output(bin().arg("run").arg(&path).args([
        "--dry-run",
        "--emulator",
        "--target-type",
        "base",
    ]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains(BASE_TARGET), "{stdout}");

    let (_dir, path) = input(&format!(
        "device_id,target_type,filter_id\n{},base,\n{},,3b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d\n{},,\n",
        device(0),
        device(1),
        device(2)
    ));
    let (code, stdout, stderr) = output(bin().arg("validate").arg(&path));
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    // The `base` cell and the filter alone are targets; the empty row is not.
    assert!(stdout.contains(&format!("row 3: {NO_TARGET}")), "{stdout}");
    assert!(stdout.contains("3 rows · 2 valid · 1 invalid"), "{stdout}");
}

/// Tag and group rows need no assignment target.
#[test]
fn tag_and_group_rows_need_no_target() {
    let (_dir, path) = input(&format!(
        "device_id,group_tag\n{},Kiosk\n{},Lab\n",
        device(0),
        device(1)
    ));
    let (code, stdout, stderr) = output(bin().arg("validate").arg(&path).args(["--action", "tag"]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("2 rows · 2 valid · 0 invalid"), "{stdout}");
    let (code, stdout, stderr) =
        output(
            bin()
                .arg("validate")
                .arg(&path)
                .args(["--action", "group", "--group-id", GROUP]),
        );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("2 rows · 2 valid · 0 invalid"), "{stdout}");
}

const TAGGED: &str = "Group Tag (read only with --action tag)";

/// An export's `Group Tag` column sets nothing in an assign run: the warning of ignored
/// columns names it, in `validate`, `--dry-run` and `run`; a tag run reads it.
#[test]
fn a_group_tag_column_in_an_assign_run_is_named_as_ignored() {
    let (_dir, path) = input(&format!(
        "device_id,Group Tag,Hardware Hash\n{},Kiosk,AAAA\n{},Kiosk,BBBB\n",
        device(0),
        device(1)
    ));
    let (code, _, stderr) = output(bin().arg("validate").arg(&path).args(["--group-id", GROUP]));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "ignoring columns this run does not read: Hardware Hash, {TAGGED}"
        )),
        "{stderr}"
    );
    let (code, _, stderr) =
        output(
            bin()
                .arg("run")
                .arg(&path)
                .args(["--dry-run", "--emulator", "--group-id", GROUP]),
        );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains(TAGGED), "{stderr}");
    let (code, _, stderr) =
        output(
            bin()
                .arg("run")
                .arg(&path)
                .args(["--emulator", "--group-id", GROUP]),
        );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains(TAGGED), "{stderr}");
    assert!(stderr.contains("Hardware Hash"), "{stderr}");

    let (code, _, stderr) = output(bin().arg("validate").arg(&path).args(["--action", "tag"]));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("Hardware Hash"), "{stderr}");
    assert!(!stderr.contains("Group Tag"), "{stderr}");
}
