//! Nightly runs converge: the same export every night, a little changed (rows reordered, some
//! gone, new ones in the middle), with `--overwrite` on the same results file, writes only
//! what is missing: devices already holding the row's assignment (or tag) are `existing`.

use crate::common;

use std::collections::HashSet;

use autopilot_bulk::config::Config;
use autopilot_bulk::emulator::{Emulator, EmulatorConfig};
use autopilot_bulk::input::Action;
use common::*;

/// A tenant of `n` identities (the ones an export names and more), listed 100 to a page.
async fn tenant(n: u32) -> Emulator {
    Emulator::start(EmulatorConfig {
        devices: Some((0..n).map(device).collect::<HashSet<_>>()),
        page_size: 100,
        ..emulator_config(rate(100_000, 1000))
    })
    .await
    .unwrap()
}

/// Night 1's export: devices 0..300.
fn night_1() -> Vec<u32> {
    (0..300).collect()
}

/// Night 2's: night 1's shuffled (a fixed permutation), 25 gone, 50 new in the middle.
fn night_2() -> Vec<u32> {
    let mut kept: Vec<u32> = (0..300).filter(|i| i % 12 != 5).collect();
    assert_eq!(kept.len(), 275);
    let len = kept.len();
    kept = (0..len).map(|k| kept[(k * 97) % len]).collect(); // 97 is prime to 275
    let (head, tail) = kept.split_at(140);
    [head, &(300..350).collect::<Vec<_>>(), tail].concat()
}

fn export(devices: &[u32], column: &str, cell: &str) -> String {
    let mut csv = format!("device_id,{column}\n");
    for &i in devices {
        csv.push_str(&format!("{},{cell}\n", device(i)));
    }
    csv
}

/// Night 1, then night 2 over the changed export with `--overwrite` on the same results
/// file: night 2's summary and what the emulator counted during it.
async fn two_nights(
    emulator: &Emulator,
    column: &str,
    cell: &str,
    setup: impl Fn(&mut Config),
) -> (
    autopilot_bulk::Summary,
    autopilot_bulk::emulator::Stats,
    Config,
) {
    let (_dir, path) = input(&export(&night_1(), column, cell));
    let mut config = config_for(emulator, &path, rate(100_000, 1000));
    setup(&mut config);
    let first = run(config.clone()).await;
    assert_eq!((first.created, first.exit_code()), (300, 0), "{first:?}");
    std::fs::write(&path, export(&night_2(), column, cell)).unwrap();
    let before = emulator.stats();
    config.overwrite = true;
    let second = run(config.clone()).await;
    let mut during = emulator.stats();
    during.write_requests -= before.write_requests;
    during.assignment_reads -= before.assignment_reads;
    during.identity_reads -= before.identity_reads;
    // The results file is night 2's alone, one line per row.
    let lines = read_results(&config.output);
    assert_each_row_once(&lines, 325);
    for line in &lines {
        let new = u32::from_str_radix(&line.device_id[..8], 16).unwrap() >= 300;
        let want = if new { "created" } else { "existing" };
        assert_eq!(line.status, want, "{line:?}");
    }
    std::mem::forget(_dir); // the caller may still read the results
    (second, during, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn night_2_assigns_only_the_new_devices_and_finds_the_others_existing() {
    let emulator = tenant(400).await;
    let csv = "target_type,group_id";
    let cell = format!("group,{GROUP}");
    let (second, during, config) = two_nights(&emulator, csv, &cell, |_| {}).await;
    assert_eq!(
        (
            second.existing,
            second.created,
            second.failed,
            second.exit_code()
        ),
        (275, 50, 0, 0),
        "{second:?}"
    );
    let stats = emulator.stats();
    assert_eq!(stats.duplicate_devices, 0);
    assert_eq!(stats.assignments_created, 350);
    // One write per new device; one read per device the listing showed assigned; at most the
    // listing's 4 pages (400 identities, 100 a page). A new device is read only when its row
    // started before the listing's page showed it (the listing goes on beside the rows; see
    // `rows_go_while_the_listing_is_read`): then its row made two requests.
    let lines = read_results(&config.output);
    let read_first = lines
        .iter()
        .filter(|l| l.status == "created" && l.attempts == 2)
        .count() as u64;
    assert_eq!(during.write_requests, 50);
    assert_eq!(during.assignment_reads, 275 + read_first);
    assert!(during.identity_reads <= 4, "{during:?}");
    // Each row reports the one assignment its device holds (the gone devices keep theirs).
    let held = emulator.assignments();
    for line in read_results(&config.output) {
        let ids = &held[&line.device_id.to_lowercase()];
        assert_eq!(ids, &vec![line.assignment_id.clone()], "{line:?}");
    }
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blind_night_2_duplicates_what_night_1_assigned() {
    // What --no-read-before-write costs on a tenant that is not empty: the old rows again.
    let emulator = tenant(400).await;
    let (_dir, path) = input(&export(
        &night_1()[..40],
        "target_type,group_id",
        &format!("group,{GROUP}"),
    ));
    let mut config = config_for(&emulator, &path, rate(100_000, 1000));
    config.read_before_write = false;
    assert_eq!(run(config.clone()).await.created, 40);
    config.overwrite = true;
    let second = run(config.clone()).await;
    assert_eq!(second.created, 40);
    let stats = emulator.stats();
    assert_eq!(stats.duplicate_devices, 40);
    assert_eq!(stats.assignment_reads + stats.identity_reads, 0);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_rows_are_read_one_by_one_without_the_listing() {
    let emulator = tenant(400).await;
    let (_dir, path) = input(&export(
        &night_1()[..10],
        "target_type,group_id",
        &format!("group,{GROUP}"),
    ));
    let config = config_for(&emulator, &path, rate(100_000, 1000));
    assert_eq!(run(config.clone()).await.created, 10);
    let mut again = config.clone();
    again.overwrite = true;
    let second = run(again).await;
    assert_eq!((second.existing, second.created), (10, 0));
    let stats = emulator.stats();
    // Ten reads before night 1's ten writes, ten on night 2; never a listing page.
    assert_eq!((stats.identity_reads, stats.assignment_reads), (0, 20));
    assert_eq!(stats.duplicate_devices, 0);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn night_2_tags_only_the_new_devices() {
    let emulator = tenant(400).await;
    let (second, during, _config) = two_nights(&emulator, "group_tag", "Kiosk", |c| {
        c.defaults.action = Action::Tag;
    })
    .await;
    assert_eq!(
        (second.existing, second.created, second.exit_code()),
        (275, 50, 0),
        "{second:?}"
    );
    assert_eq!(during.write_requests, 50);
    assert_eq!(emulator.stats().group_tags_set, 350);
    emulator.shutdown().await;
}

/// A run started the moment the last one ended meets a service window still full of the last
/// one's requests: its first 429 comes after next to none were accepted. The count it measured
/// there must climb back to the service's within a window or two (each step's first request
/// beyond the old count goes alone), not crawl at 5 % per ten windows for the whole run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_started_into_a_window_the_last_run_filled_climbs_back_to_the_services_count() {
    let limit = rate(40, 1000);
    let emulator = Emulator::start(EmulatorConfig {
        devices: Some((0..400).map(device).collect::<HashSet<_>>()),
        ..emulator_config(limit)
    })
    .await
    .unwrap();
    let night = |first: u32| {
        let devices: Vec<u32> = (first..first + 200).collect();
        export(&devices, "target_type,group_id", &format!("group,{GROUP}"))
    };
    let (_one, first_input) = input(&night(0));
    let first = run(config_for(&emulator, &first_input, limit)).await;
    assert_eq!(first.created, 200, "{first:?}");
    let (_two, second_input) = input(&night(200));
    let second = run(config_for(&emulator, &second_input, limit)).await;
    assert_eq!((second.created, second.exit_code()), (200, 0), "{second:?}");
    assert!(
        second.throttled_responses > 0,
        "the second run did not meet the first one's window: {second:?}"
    );
    // Before, the count measured at the first 429 (a handful) doubled once a window up to a
    // quarter of the rate and then grew 5 % per ten windows: 200 rows ended below 20.
    assert!(
        second.final_rate.count >= 36,
        "the pace did not climb back: {}",
        second.final_rate
    );
    let stats = emulator.stats();
    assert_eq!(
        (stats.violations, stats.duplicate_devices),
        (0, 0),
        "{stats:?}"
    );
}

/// A run reads the identity listing beside its rows, not before them: a tenant's listing is
/// one round trip a page (each names the next), 20 s for 10,000 identities at Graph's 200 ms,
/// while the rows' reads and writes could already go. Here every page after the first is held
/// an hour: the run still ends, rows whose device the first page showed `notAssigned` are
/// POSTed without a read, the others read their device first, and night 2 finds every device
/// assigned without a duplicate, the listing still held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_go_while_the_listing_is_read() {
    let emulator = Emulator::start(EmulatorConfig {
        devices: Some((0..300).map(device).collect::<HashSet<_>>()),
        page_size: 100,
        listing_delay: Some(std::time::Duration::from_secs(3600)),
        ..emulator_config(rate(100_000, 1000))
    })
    .await
    .unwrap();
    // 30 devices of the first page (0..30), 30 of the third (200..230).
    let devices: Vec<u32> = (0..30).chain(200..230).collect();
    let (_dir, path) = input(&export(
        &devices,
        "target_type,group_id",
        &format!("group,{GROUP}"),
    ));
    let config = config_for(&emulator, &path, rate(100_000, 1000));
    let first = run(config.clone()).await;
    assert_eq!((first.created, first.exit_code()), (60, 0), "{first:?}");
    for line in read_results(&config.output) {
        let on_first_page = u32::from_str_radix(&line.device_id[..8], 16).unwrap() < 100;
        let attempts = if on_first_page { 1 } else { 2 };
        assert_eq!(line.attempts, attempts, "{line:?}");
    }
    assert_eq!(emulator.stats().assignment_reads, 30);
    let mut again = config.clone();
    again.overwrite = true;
    let second = run(again).await;
    assert_eq!((second.existing, second.created), (60, 0), "{second:?}");
    let stats = emulator.stats();
    assert_eq!(
        (stats.duplicate_devices, stats.assignments_created),
        (0, 60)
    );
    emulator.shutdown().await;
}
