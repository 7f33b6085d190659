//! `run --action tag`: each row's group tag set once through `updateDeviceProperties`, rows
//! whose device already carries the tag `existing` without a write, an ambiguous write read
//! back before it is sent again; and the emulator's route as Graph answers it.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use autopilot_bulk::config::Config;
use autopilot_bulk::emulator::{Emulator, EmulatorConfig};
use autopilot_bulk::input::Action;
use common::*;
use serde_json::{Value, json};

const IDS: &str = "/deviceManagement/windowsAutopilotDeviceIdentities";

/// A tenant of `n` identities with serials `PF00000`…, listed 20 to a page.
async fn emulator(n: u32, extra: EmulatorConfig) -> Emulator {
    Emulator::start(EmulatorConfig {
        identities: (0..n).map(|i| (device(i), format!("PF{i:05}"))).collect(),
        devices: Some((0..n).map(device).collect::<HashSet<_>>()),
        page_size: 20,
        assign_delay: Duration::ZERO,
        ..extra
    })
    .await
    .unwrap()
}

fn tag_config(emulator: &Emulator, path: &std::path::Path) -> Config {
    let mut config = config_for(emulator, path, rate(100_000, 1000));
    config.defaults.action = Action::Tag;
    config
}

fn by_row(lines: &[ResultLine], row: u64) -> &ResultLine {
    lines.iter().find(|l| l.row == row).expect("row reported")
}

async fn token(emulator: &Emulator) -> String {
    emulator_token(emulator, "t", "c", "s").await
}

/// POST an `updateDeviceProperties` body; the status and body text.
async fn update(emulator: &Emulator, device: &str, body: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!(
            "{}{IDS}/{device}/updateDeviceProperties",
            emulator.graph_url()
        ))
        .bearer_auth(token(emulator).await)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Every identity's group tag, from the emulator's listing.
async fn tags(emulator: &Emulator) -> HashMap<String, String> {
    let http = reqwest::Client::new();
    let token = token(emulator).await;
    let mut out = HashMap::new();
    let mut next = Some(format!("{}{IDS}?$top=100", emulator.graph_url()));
    while let Some(url) = next {
        let page: Value = http
            .get(url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for identity in page["value"].as_array().unwrap() {
            out.insert(
                identity["id"].as_str().unwrap().to_string(),
                identity["groupTag"].as_str().unwrap().to_string(),
            );
        }
        next = page["@odata.nextLink"].as_str().map(str::to_string);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_sets_the_tag_as_graph_does() {
    let emulator = emulator(3, emulator_config(rate(100_000, 1000))).await;
    let d = device(1);
    assert_eq!(
        update(&emulator, &d, r#"{"groupTag":"Kiosk"}"#).await,
        (204, String::new())
    );
    // Unknown property, malformed JSON, wrong type: 400 with Graph's error envelope.
    for body in [
        r#"{"orderIdentifier":"x"}"#,
        "{not json",
        r#"{"groupTag":7}"#,
    ] {
        let (status, text) = update(&emulator, &d, body).await;
        assert_eq!(status, 400, "{body}");
        let e: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(e["error"]["code"], "BadRequest", "{text}");
    }
    let (status, _) = update(&emulator, &device(99), r#"{"groupTag":"Kiosk"}"#).await;
    assert_eq!(status, 404);
    // Visible in the listing and in the single GET.
    assert_eq!(tags(&emulator).await[&d], "Kiosk");
    let one: Value = reqwest::Client::new()
        .get(format!("{}{IDS}/{d}", emulator.graph_url()))
        .bearer_auth(token(&emulator).await)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["groupTag"], "Kiosk");
    let stats = emulator.stats();
    assert_eq!(stats.group_tags_set, 1);
    // Every POST reached the write window, refused ones too.
    assert_eq!(stats.write_requests, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_is_throttled_as_a_write() {
    let emulator = emulator(3, emulator_config(rate(2, 60_000))).await;
    let body = r#"{"groupTag":"Kiosk"}"#;
    assert_eq!(update(&emulator, &device(0), body).await.0, 204);
    assert_eq!(update(&emulator, &device(1), body).await.0, 204);
    assert_eq!(update(&emulator, &device(2), body).await.0, 429);
    assert_eq!(emulator.stats().group_tags_set, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tag_is_set_once_and_tagged_devices_get_no_write() {
    let emulator = emulator(50, emulator_config(rate(100_000, 1000))).await;
    // Devices 0..10 already carry the tag (one in another case), device 10 another one.
    for i in 0..10 {
        let tag = if i == 3 { "KIOSK" } else { "Kiosk" };
        let body = json!({ "groupTag": tag }).to_string();
        assert_eq!(update(&emulator, &device(i), &body).await.0, 204);
    }
    assert_eq!(
        update(&emulator, &device(10), r#"{"groupTag":"Lab"}"#)
            .await
            .0,
        204
    );
    let before = emulator.stats();
    // Ids for 0..40 (the cell, or --group-tag when empty), serials for 40..50, one row
    // without a tag cell and target columns that an assign run would refuse.
    let mut csv = String::from("device_id,Device Serial Number,Group Tag,target_type\n");
    for i in 0..40 {
        let cell = if i % 2 == 0 { "Kiosk" } else { "" };
        csv.push_str(&format!("{},,{cell},group\n", device(i)));
    }
    for i in 40..50 {
        csv.push_str(&format!(",PF{i:05},Kiosk,\n"));
    }
    let (_dir, path) = input(&csv);
    let mut config = tag_config(&emulator, &path);
    config.defaults.group_tag = Some("Kiosk".into());
    let summary = run(config.clone()).await;
    assert_eq!(
        (
            summary.created,
            summary.existing,
            summary.failed,
            summary.invalid
        ),
        (40, 10, 0, 0),
        "{summary:?}"
    );
    let lines = read_results(&config.output);
    assert_each_row_once(&lines, 50);
    for line in &lines {
        assert!(line.assignment_id.is_empty(), "{line:?}");
        let want = if line.row <= 10 {
            "existing"
        } else {
            "created"
        };
        assert_eq!(line.status, want, "{line:?}");
    }
    let serial_row = by_row(&lines, 46);
    assert_eq!(serial_row.serial_number, "PF00045");
    assert_eq!(serial_row.device_id, device(45));
    let stats = emulator.stats();
    // One write per untagged device, none for the tagged ones; no assignment at all.
    assert_eq!(stats.group_tags_set - before.group_tags_set, 40);
    assert_eq!(stats.write_requests - before.write_requests, 40);
    assert_eq!(stats.assignments_created, 0);
    let tags = tags(&emulator).await;
    for i in 0..50 {
        let want = if i == 3 { "KIOSK" } else { "Kiosk" };
        assert_eq!(tags[&device(i)], want, "device {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_write_is_read_back_and_never_sent_twice() {
    let faults = EmulatorConfig {
        fault_drop: 0.25,
        seed: 7,
        ..emulator_config(rate(100_000, 1000))
    };
    let emulator = emulator(50, faults).await;
    let mut csv = String::from("device_id,group_tag\n");
    for i in 0..50 {
        csv.push_str(&format!("{},Kiosk\n", device(i)));
    }
    let (_dir, path) = input(&csv);
    let config = tag_config(&emulator, &path);
    let summary = run(config.clone()).await;
    let stats = emulator.stats();
    assert!(stats.dropped_connections > 0, "{stats:?}");
    assert!(summary.reconciliations > 0, "{summary:?}");
    assert_eq!(summary.failed + summary.invalid, 0, "{summary:?}");
    assert_eq!(summary.created + summary.existing, 50, "{summary:?}");
    assert_each_row_once(&read_results(&config.output), 50);
    // A write whose answer was lost was read back, found, and not sent again.
    assert_eq!(stats.group_tags_set, 50, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_without_a_tag_is_invalid_and_assign_ignores_the_tag_column() {
    let emulator = emulator(3, emulator_config(rate(100_000, 1000))).await;
    let csv = format!(
        "device_id,group_tag,group_id\n{},Kiosk,{GROUP}\n{},,{GROUP}\n",
        device(0),
        device(1)
    );
    let (_dir, path) = input(&csv);
    let config = tag_config(&emulator, &path);
    let summary = run(config.clone()).await;
    assert_eq!((summary.created, summary.invalid), (1, 1), "{summary:?}");
    let lines = read_results(&config.output);
    assert_eq!(by_row(&lines, 2).status, "invalid");
    assert_eq!(by_row(&lines, 2).error_message, "group_tag is empty");
    // The same file as an assignment run: both rows assigned, no tag written.
    let mut assign = config_for(&emulator, &path, rate(100_000, 1000));
    assign.overwrite = true;
    let summary = run(assign.clone()).await;
    assert_eq!((summary.created, summary.invalid), (2, 0), "{summary:?}");
    assert_ids_match_emulator(&read_results(&assign.output), &emulator);
    assert_eq!(emulator.stats().group_tags_set, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_go_through_batch_envelopes_too() {
    let emulator = emulator(30, emulator_config(rate(100_000, 1000))).await;
    let mut csv = String::from("device_id\n");
    for i in 0..30 {
        csv.push_str(&format!("{}\n", device(i)));
    }
    let (_dir, path) = input(&csv);
    let mut config = tag_config(&emulator, &path);
    config.defaults.group_tag = Some("Lab".into());
    config.batch = true;
    let summary = run(config.clone()).await;
    assert_eq!(summary.created, 30, "{summary:?}");
    let stats = emulator.stats();
    assert!(stats.batch_requests > 0, "{stats:?}");
    assert_eq!(stats.group_tags_set, 30);
    assert!(tags(&emulator).await.values().all(|t| t == "Lab"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_finds_tags_already_set_without_writing_them_again() {
    let emulator = emulator(20, emulator_config(rate(100_000, 1000))).await;
    let mut csv = String::from("device_id,group_tag\n");
    for i in 0..20 {
        csv.push_str(&format!("{},Kiosk\n", device(i)));
    }
    let (_dir, path) = input(&csv);
    let config = tag_config(&emulator, &path);
    assert_eq!(run(config.clone()).await.created, 20);
    // Lose the last 5 result lines, as if the run had stopped before writing them.
    let text = std::fs::read_to_string(&config.output).unwrap();
    let kept: Vec<&str> = text.lines().take(16).collect();
    std::fs::write(&config.output, kept.join("\n") + "\n").unwrap();
    let mut resume = config.clone();
    resume.resume = true;
    let summary = run(resume).await;
    assert_eq!((summary.skipped, summary.existing), (15, 5), "{summary:?}");
    assert_each_row_once(&read_results(&config.output), 20);
    assert_eq!(emulator.stats().group_tags_set, 20);
}
