//! Serial numbers in: a hardware-hash export runs as it is, every resolvable row is assigned
//! once to the right identity, and unknown or ambiguous serials fail with the reason.

use crate::common;

use std::time::Duration;

use autopilot_bulk::config::Config;
use autopilot_bulk::emulator::{Emulator, EmulatorConfig};
use common::*;

/// The tenant: `n` identities with serials `PF00000`…, plus a second identity holding
/// `PF00001` (an ambiguous serial).
fn tenant(n: u32) -> Vec<(String, String)> {
    let mut identities: Vec<(String, String)> =
        (0..n).map(|i| (device(i), format!("PF{i:05}"))).collect();
    identities.push((device(n + 1000), "PF00001".into()));
    identities
}

async fn emulator(identities: Vec<(String, String)>, page_size: usize) -> Emulator {
    Emulator::start(EmulatorConfig {
        identities,
        page_size,
        assign_delay: Duration::ZERO,
        ..emulator_config(rate(100_000, 1000))
    })
    .await
    .unwrap()
}

/// A `Get-WindowsAutopilotInfo` export naming `serials`, targets from flags.
fn hardware_hash_export(serials: &[String]) -> String {
    let hash = "T0EAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".repeat(90); // ~4 KB
    let mut csv = String::from("Device Serial Number,Windows Product ID,Hardware Hash,Group Tag\n");
    for s in serials {
        csv.push_str(&format!("{s},00330-80000-00000-AA000,{hash},Sales\n"));
    }
    csv
}

fn config(emulator: &Emulator, path: &std::path::Path) -> Config {
    let mut config = config_for(emulator, path, rate(100_000, 1000));
    config.defaults.group_id = Some(GROUP.parse().unwrap());
    config
}

fn by_row(lines: &[ResultLine], row: u64) -> &ResultLine {
    lines.iter().find(|l| l.row == row).expect("row reported")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hardware_hash_export_resolves_through_the_paged_listing() {
    let emulator = emulator(tenant(450), 100).await;
    // 40 serials: more than are looked up one by one, so the listing is read (5 pages).
    let mut serials: Vec<String> = (0..38).map(|i| format!("PF{:05}", i * 11)).collect();
    serials[3] = format!("  {}  ", serials[3].to_lowercase()); // case and spaces ignored
    serials.push("PF00001".into()); // held twice
    serials.push("NOPE-1".into()); // held by none (and hyphenated)
    let (_dir, path) = input(&hardware_hash_export(&serials));
    let config = config(&emulator, &path);
    let summary = run(config.clone()).await;
    assert_eq!((summary.created, summary.failed), (38, 2), "{summary:?}");
    let r = summary.resolution.expect("a resolution phase");
    assert_eq!((r.serials, r.found, r.requests), (40, 39, 5));
    let lines = read_results(&config.output);
    assert_each_row_once(&lines, 40);
    assert_ids_match_emulator(&lines, &emulator);
    // Each created row holds its serial's identity, and says which serial it came from.
    assert_eq!(by_row(&lines, 2).device_id, device(11));
    assert_eq!(by_row(&lines, 2).serial_number, "PF00011");
    assert_eq!(by_row(&lines, 4).device_id, device(33));
    let ambiguous = by_row(&lines, 39);
    assert_eq!(ambiguous.error_code, "AmbiguousSerial");
    assert!(
        ambiguous.error_message.contains(&device(1)),
        "{ambiguous:?}"
    );
    assert!(
        ambiguous.error_message.contains(&device(1450)),
        "{ambiguous:?}"
    );
    assert_eq!(by_row(&lines, 40).error_code, "SerialNotFound");
    assert_eq!(by_row(&lines, 40).serial_number, "NOPE-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn few_serials_are_looked_up_one_by_one() {
    let emulator = emulator(tenant(450), 100).await;
    let serials: Vec<String> = ["PF00007", "pf00100", "PF99999"].map(String::from).into();
    let (_dir, path) = input(&hardware_hash_export(&serials));
    let config = config(&emulator, &path);
    let summary = run(config.clone()).await;
    assert_eq!((summary.created, summary.failed), (2, 1));
    let r = summary.resolution.expect("a resolution phase");
    // One lookup each, not five listing pages; `contains` also matched PF000070… (none here)
    // and PF001000…: only exact matches count.
    assert_eq!(r.requests, 3);
    let lines = read_results(&config.output);
    assert_eq!(by_row(&lines, 1).device_id, device(7));
    assert_eq!(by_row(&lines, 2).device_id, device(100));
    assert_eq!(by_row(&lines, 3).error_code, "SerialNotFound");
    assert_ids_match_emulator(&lines, &emulator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_id_beside_a_serial_must_agree() {
    let emulator = emulator(tenant(10), 100).await;
    let csv = format!(
        "device_id,serial_number,group_id\n{},PF00002,{GROUP}\n{},PF00003,{GROUP}\n{},,{GROUP}\n",
        device(2),
        device(4),
        device(5)
    );
    let (_dir, path) = input(&csv);
    let config = config(&emulator, &path);
    let summary = run(config.clone()).await;
    assert_eq!((summary.created, summary.invalid), (2, 1));
    let lines = read_results(&config.output);
    assert!(
        by_row(&lines, 2)
            .error_message
            .contains("name different devices")
    );
    assert_eq!(by_row(&lines, 3).serial_number, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paging_loop_fails_the_serial_rows_and_never_spins() {
    let emulator = Emulator::start(EmulatorConfig {
        identities: tenant(450),
        page_size: 100,
        repeat_next_link: true,
        ..emulator_config(rate(100_000, 1000))
    })
    .await
    .unwrap();
    // 29 serial rows, and one row that names its device by id only: it goes on.
    let mut csv = format!(
        "Device Serial Number,Hardware Hash,device_id\n,AAAA,{}\n",
        device(0)
    );
    for i in 1..30 {
        csv.push_str(&format!("PF{i:05},AAAA,\n"));
    }
    let (_dir, path) = input(&csv);
    let config = config(&emulator, &path);
    let summary = run(config.clone()).await;
    assert_eq!((summary.created, summary.failed), (1, 29), "{summary:?}");
    let lines = read_results(&config.output);
    assert_eq!(by_row(&lines, 2).error_code, "PagingLoop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_resolves_only_the_serials_still_to_do() {
    let emulator = emulator(tenant(450), 100).await;
    let serials: Vec<String> = (0..40).map(|i| format!("PF{i:05}")).collect();
    let (_dir, path) = input(&hardware_hash_export(&serials));
    let mut config = config(&emulator, &path);
    let first = run(config.clone()).await;
    assert_eq!((first.created, first.failed), (39, 1)); // PF00001 is ambiguous
    // Keep only the header and rows 1-10, as an interrupted run leaves them.
    let text = std::fs::read_to_string(&config.output).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, l)| {
            *i == 0
                || l.split(',')
                    .next()
                    .and_then(|r| r.parse::<u32>().ok())
                    .is_some_and(|r| r <= 10)
        })
        .map(|(_, l)| l)
        .collect();
    std::fs::write(&config.output, kept.join("\n") + "\n").unwrap();
    std::fs::write(
        autopilot_bulk::output::Journal::path_for(&config.output),
        (11..=40)
            .map(|r| format!("{r} {}\n", device(r - 1)))
            .collect::<String>(),
    )
    .unwrap();
    config.resume = true;
    let second = run(config.clone()).await;
    assert_eq!(second.skipped, 9, "{second:?}"); // rows 1-10 but the failed row 2
    let r = second.resolution.expect("a resolution phase");
    assert_eq!(r.serials, 31, "only rows still to do");
    // Rows 11-40 were sent before: read back, found, not assigned twice.
    assert_eq!(second.existing, 30);
    let lines = read_results(&config.output);
    assert_each_row_once(&lines, 40);
    assert_ids_match_emulator(&lines, &emulator);
}

/// The whole migration: serials in, assignments made, then `status --watch` until the service
/// reports every landed device assigned (the emulator turns them `pending`, then assigned).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_ends_once_the_service_reports_every_device_assigned() {
    use autopilot_bulk::status::{StatusConfig, Watch};
    let emulator = Emulator::start(EmulatorConfig {
        identities: tenant(120),
        page_size: 50,
        assign_delay: Duration::from_millis(300),
        ..emulator_config(rate(100_000, 1000))
    })
    .await
    .unwrap();
    let serials: Vec<String> = (0..40).map(|i| format!("PF{:05}", i * 3)).collect();
    let (dir, path) = input(&hardware_hash_export(&serials));
    let config = config(&emulator, &path);
    let summary = run(config.clone()).await;
    assert_eq!(summary.created, 40);

    let mut status = StatusConfig::new(&config.output, config.clone());
    status.watch = Some(Watch {
        interval: Duration::from_millis(50),
        timeout: Duration::from_secs(600),
    });
    let report = autopilot_bulk::status(status.clone(), Default::default())
        .await
        .unwrap();
    assert_eq!(report.exit_code(), 0, "{report:?}");
    assert_eq!((report.rows, report.assigned), (40, 40));
    assert_eq!(report.counts.get("assignedInSync"), Some(&40));
    // Three pages of 50 for 121 identities: the listing, not a request per device.
    assert_eq!(report.listed.pages, 3);
    let sheet = std::fs::read_to_string(&status.output).unwrap();
    let mut lines = sheet.lines();
    assert_eq!(
        lines.next(),
        Some("row,device_id,serial_number,assignment_status,assigned_at,detailed_status,tenant")
    );
    assert_eq!(lines.filter(|l| l.contains(",assignedInSync,")).count(), 40);
    drop(dir);
}
