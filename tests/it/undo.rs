//! `undo RESULTS.csv` end to end against the emulator: a run's created assignments deleted and
//! nobody else's, tags set back (a device retagged since left alone), the members it added
//! removed; an undo again sends nothing; a crash between a request and its line, resumed,
//! undoes each row exactly once.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use autopilot_bulk::action::Action;
use autopilot_bulk::emulator::{Emulator, EmulatorConfig, Group};
use autopilot_bulk::undo::{self, UndoConfig, UndoSummary};
use common::*;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const IDS: &str = "/deviceManagement/windowsAutopilotDeviceIdentities";
const G: &str = "6a1e8c2b-3d4f-4a5b-9c6d-7e8f9a0b1c2d";

async fn emulator(n: u32, extra: EmulatorConfig) -> Emulator {
    Emulator::start(EmulatorConfig {
        identities: (0..n).map(|i| (device(i), format!("UN{i:05}"))).collect(),
        devices: Some((0..n).map(device).collect::<HashSet<_>>()),
        assign_delay: Duration::ZERO,
        ..extra
    })
    .await
    .unwrap()
}

fn undo_config(emulator: &Emulator, results: &Path) -> UndoConfig {
    let c = config_for(emulator, results, rate(100_000, 1000));
    let mut u = UndoConfig::new(results, c);
    u.concurrency = 8;
    u
}

async fn undo_run(config: UndoConfig) -> UndoSummary {
    undo::undo(config, CancellationToken::new())
        .await
        .expect("undo starts")
}

/// The undo file: row → (status, error_code).
fn undo_lines(path: &Path) -> Vec<(u64, String, String)> {
    let mut rdr = csv::Reader::from_path(path).unwrap();
    assert_eq!(
        rdr.headers().unwrap().iter().collect::<Vec<_>>(),
        undo::HEADER
    );
    rdr.records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].parse().unwrap(), r[4].to_string(), r[6].to_string())
        })
        .collect()
}

fn statuses(lines: &[(u64, String, String)]) -> BTreeMap<String, u64> {
    let mut by = BTreeMap::new();
    for (_, s, _) in lines {
        *by.entry(s.clone()).or_default() += 1;
    }
    by
}

async fn send(
    emulator: &Emulator,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let token = emulator_token(emulator, "t", "c", "s").await;
    let mut r = reqwest::Client::new()
        .request(method, format!("{}{path}", emulator.graph_url()))
        .bearer_auth(token);
    if let Some(body) = body {
        r = r.json(&body);
    }
    let r = r.send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

fn group_target() -> Value {
    json!({"target": {"@odata.type": "#microsoft.graph.groupAssignmentTarget", "groupId": G}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assign_run_undone_deletes_its_assignments_only_and_again_sends_nothing() {
    let emulator = emulator(1000, emulator_config(rate(100_000, 1000))).await;
    // 100 devices already hold the identical assignment before the run.
    for i in 0..100 {
        let path = format!("{IDS}/{}/deploymentProfile/assignments", device(i));
        send(
            &emulator,
            reqwest::Method::POST,
            &path,
            Some(group_target()),
        )
        .await;
    }
    let before: HashSet<(String, String)> = held(&emulator);
    let mut csv = String::from("device_id,group_id\n");
    for i in 0..1000 {
        csv.push_str(&format!("{},{G}\n", device(i)));
    }
    let (_dir, path) = input(&csv);
    let config = config_for(&emulator, &path, rate(100_000, 1000));
    let results = config.output.clone();
    let summary = run(config).await;
    // Read before write: the 100 devices holding the identical assignment are `existing`.
    assert_eq!((summary.created, summary.existing), (900, 100));
    let created = read_results(&results);
    assert_eq!(
        created.iter().filter(|l| l.status == "created").count(),
        900
    );

    let undo_config = undo_config(&emulator, &results);
    let output = undo_config.output.clone();
    assert!(output.ends_with("devices.results.undo.csv"), "{output:?}");
    let done = undo_run(undo_config.clone()).await;
    assert_eq!(done.exit_code(), 0, "{}", done.render());
    let lines = undo_lines(&output);
    assert_eq!(
        statuses(&lines),
        BTreeMap::from([("skipped".into(), 100), ("undone".into(), 900)])
    );
    assert_eq!(emulator.stats().assignments_deleted, 900);
    assert_eq!(
        held(&emulator),
        before,
        "exactly the run's assignments went"
    );

    // Again, resumed: every row is done, nothing is sent.
    let requests = emulator.stats().requests_by_status.values().sum::<u64>();
    let again = undo_run(UndoConfig {
        resume: true,
        ..undo_config.clone()
    })
    .await;
    assert_eq!((again.requests, again.earlier), (0, 1000));
    assert_eq!(
        emulator.stats().requests_by_status.values().sum::<u64>(),
        requests
    );
    // Again from scratch: everything is already gone, nothing is deleted.
    let fresh = undo_run(UndoConfig {
        overwrite: true,
        ..undo_config
    })
    .await;
    assert_eq!(fresh.count(undo::UndoStatus::Gone), 900);
    assert_eq!(emulator.stats().assignments_deleted, 900);
    assert_eq!(held(&emulator), before);
    emulator.shutdown().await;
}

/// Every (device, assignment id) the emulator holds.
fn held(emulator: &Emulator) -> HashSet<(String, String)> {
    emulator
        .assignments()
        .into_iter()
        .flat_map(|(d, ids)| ids.into_iter().map(move |id| (d.clone(), id)))
        .collect()
}

async fn tag_of(emulator: &Emulator, i: u32) -> String {
    let identity = send(
        emulator,
        reqwest::Method::GET,
        &format!("{IDS}/{}", device(i)),
        None,
    )
    .await;
    identity["groupTag"].as_str().unwrap_or("").to_string()
}

async fn set_tag(emulator: &Emulator, i: u32, tag: &str) {
    let path = format!("{IDS}/{}/updateDeviceProperties", device(i));
    send(
        emulator,
        reqwest::Method::POST,
        &path,
        Some(json!({"groupTag": tag})),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_run_undone_restores_each_tag_and_leaves_a_retagged_device() {
    let emulator = emulator(40, emulator_config(rate(100_000, 1000))).await;
    for i in 0..10 {
        set_tag(&emulator, i, "Old").await;
    }
    let mut csv = String::from("device_id,group_tag\n");
    for i in 0..30 {
        csv.push_str(&format!("{},Kiosk\n", device(i)));
    }
    let (_dir, path) = input(&csv);
    let mut config = config_for(&emulator, &path, rate(100_000, 1000));
    config.defaults.action = Action::Tag;
    let results = config.output.clone();
    assert_eq!(run(config).await.created, 30);
    // Someone retags device 5 after the run.
    set_tag(&emulator, 5, "Manual").await;

    let done = undo_run(undo_config(&emulator, &results)).await;
    let lines = undo_lines(&undo::default_output(&results));
    let by: BTreeMap<u64, (String, String)> =
        lines.into_iter().map(|(r, s, c)| (r, (s, c))).collect();
    assert_eq!(by[&6], ("skipped".into(), "RetaggedSinceRun".into()));
    assert_eq!(done.count(undo::UndoStatus::Undone), 29);
    assert_eq!(done.exit_code(), 1, "a row could not be undone");
    for i in 0..30 {
        let want = match i {
            5 => "Manual",
            0..10 => "Old",
            _ => "",
        };
        assert_eq!(tag_of(&emulator, i).await, want, "device {i}");
    }
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_run_undone_removes_exactly_the_members_it_added() {
    let emulator = emulator(
        30,
        EmulatorConfig {
            groups: vec![Group::assigned(G, "Autopilot devices")],
            members: (0..10).map(|i| (G.to_string(), device(i))).collect(),
            ..emulator_config(rate(100_000, 1000))
        },
    )
    .await;
    let (_dir, path) = input(&group_rows(30).replace(GROUP, G));
    let mut config = config_for(&emulator, &path, rate(100_000, 1000));
    config.defaults.action = Action::Group;
    let results = config.output.clone();
    let summary = run(config).await;
    assert_eq!((summary.created, summary.existing), (20, 10));

    let done = undo_run(undo_config(&emulator, &results)).await;
    assert_eq!(done.count(undo::UndoStatus::Undone), 20);
    assert_eq!(done.count(undo::UndoStatus::Skipped), 10);
    assert_eq!(done.exit_code(), 0);
    assert_eq!(emulator.stats().members_removed, 20);
    let members = send(
        &emulator,
        reqwest::Method::GET,
        &format!("/groups/{G}/members/microsoft.graph.device?$select=id,deviceId"),
        None,
    )
    .await;
    assert_eq!(members["value"].as_array().unwrap().len(), 10);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undo_cut_off_after_its_requests_resumes_each_row_exactly_once() {
    let emulator = emulator(50, emulator_config(rate(100_000, 1000))).await;
    let mut csv = String::from("device_id,group_id\n");
    for i in 0..50 {
        csv.push_str(&format!("{},{G}\n", device(i)));
    }
    let (_dir, path) = input(&csv);
    let config = config_for(&emulator, &path, rate(100_000, 1000));
    let results = config.output.clone();
    assert_eq!(run(config).await.created, 50);
    let created = read_results(&results);

    // The state a kill -9 leaves: rows 1..=35 deleted, 1..=30 written, 31..=35 named by the
    // journal only (sent, their answers never written).
    let config = undo_config(&emulator, &results);
    let output = config.output.clone();
    let mut text = undo::HEADER.join(",") + "\n";
    let mut journal = String::new();
    for l in created.iter().filter(|l| l.row <= 35) {
        let path = format!(
            "{IDS}/{}/deploymentProfile/assignments/{}",
            l.device_id, l.assignment_id
        );
        send(&emulator, reqwest::Method::DELETE, &path, None).await;
        if l.row <= 30 {
            text.push_str(&format!(
                "{},{},,assign,undone,204,,,1,2026-01-01T00:00:00.000Z,\n",
                l.row, l.device_id
            ));
        } else {
            journal.push_str(&format!("{} {}\n", l.row, l.device_id));
        }
    }
    text.push_str("31,0000"); // the torn line the kill left
    std::fs::write(&output, text).unwrap();
    std::fs::write(format!("{}.journal", output.display()), journal).unwrap();
    let deleted = emulator.stats().assignments_deleted;

    let resumed = undo_run(UndoConfig {
        resume: true,
        ..config
    })
    .await;
    assert_eq!(resumed.earlier, 30);
    assert_eq!(resumed.exit_code(), 0, "{}", resumed.render());
    let lines = undo_lines(&output);
    let rows: Vec<u64> = lines.iter().map(|l| l.0).collect();
    assert_eq!(rows.len(), 50, "each row once");
    assert_eq!(rows.iter().collect::<HashSet<_>>().len(), 50);
    // The journaled rows' 404s were this undo's own doing: undone, not gone.
    assert_eq!(statuses(&lines), BTreeMap::from([("undone".into(), 50)]));
    // The rows never sent are deleted once; the journaled ones are not deleted again.
    assert_eq!(emulator.stats().assignments_deleted - deleted, 15);
    assert!(emulator.assignments().is_empty());
    assert!(!Path::new(&format!("{}.journal", output.display())).exists());
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undo_file_is_not_undone_and_a_dry_run_sends_nothing() {
    let emulator = emulator(3, emulator_config(rate(100_000, 1000))).await;
    let mut csv = String::from("device_id,group_id\n");
    for i in 0..3 {
        csv.push_str(&format!("{},{G}\n", device(i)));
    }
    let (dir, path) = input(&csv);
    let config = config_for(&emulator, &path, rate(100_000, 1000));
    let results = config.output.clone();
    run(config).await;
    let out = bin()
        .args(["undo", "--dry-run"])
        .arg(&results)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.matches("DELETE ").count(), 3, "{stdout}");
    assert_eq!(emulator.stats().assignments_deleted, 0);
    // An undo file given as the results to undo: refused, exit 2.
    let undo_file = dir.path().join("u.csv");
    std::fs::write(&undo_file, undo::HEADER.join(",") + "\n").unwrap();
    let out = bin()
        .args(["undo", "--dry-run"])
        .arg(&undo_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("undoing an undo is refused"));
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_with_another_action_is_refused_before_anything_is_sent() {
    let emulator = emulator(3, emulator_config(rate(100_000, 1000))).await;
    let mut csv = String::from("device_id,group_id,group_tag\n");
    for i in 0..3 {
        csv.push_str(&format!("{},{G},Kiosk\n", device(i)));
    }
    let (_dir, path) = input(&csv);
    let config = config_for(&emulator, &path, rate(100_000, 1000));
    run(config.clone()).await;
    let mut tag = config;
    tag.resume = true;
    tag.defaults.action = Action::Tag;
    let e = autopilot_bulk::run(tag, CancellationToken::new())
        .await
        .expect_err("another action is refused");
    assert!(
        e.to_string().contains("--action assign, not --action tag"),
        "{e}"
    );
    assert_eq!(emulator.stats().group_tags_set, 0);
    emulator.shutdown().await;
}
