//! `--help`: flags grouped under headings, every flag described, examples in the long help
//! only, `-h` short.

use crate::common::*;

/// Every subcommand's path, as typed after `autopilot-bulk`.
const COMMANDS: [&[&str]; 10] = [
    &["run"],
    &["validate"],
    &["emulate"],
    &["status"],
    &["preflight"],
    &["profiles"],
    &["profiles", "assign"],
    &["undo"],
    &["plan"],
    &["import"],
];

const HEADINGS: [&str; 5] = [
    "Input and targets:",
    "Credentials and cloud:",
    "Pace:",
    "Files and resume:",
    "Output:",
];

fn help(command: &[&str], flag: &str) -> String {
    let out = bin().args(command).arg(flag).output().unwrap();
    assert!(out.status.success(), "{command:?} {flag}");
    text(&out.stdout)
}

/// The flags of a `--help` text listed with no description: a flag line followed by another
/// flag line, a heading or the end.
fn undescribed(help: &str) -> Vec<String> {
    let lines: Vec<&str> = help.lines().collect();
    let is_flag = |l: &str| {
        let t = l.trim_start();
        l.starts_with("  ") && !l.starts_with("          ") && t.starts_with('-')
    };
    (0..lines.len())
        .filter(|&i| is_flag(lines[i]))
        .filter(|&i| {
            // Short layout: the description beside the flag.
            let beside = lines[i].trim().contains("  ");
            let below = lines
                .get(i + 1)
                .is_some_and(|n| n.starts_with("          ") && !n.trim().is_empty());
            !beside && !below
        })
        .map(|i| lines[i].trim().to_string())
        .collect()
}

#[test]
fn run_help_groups_its_flags_under_the_five_headings() {
    let long = help(&["run"], "--help");
    let short = help(&["run"], "-h");
    for text in [&long, &short] {
        let at: Vec<usize> = HEADINGS
            .iter()
            .map(|h| {
                text.find(&format!("\n{h}\n"))
                    .unwrap_or_else(|| panic!("{h}\n{text}"))
            })
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "headings out of order");
        // Each heading lists flags of its own, e.g. the credentials under theirs.
        let section = |h: &str| {
            let start = text.find(&format!("\n{h}\n")).unwrap();
            let rest = &text[start + h.len() + 2..];
            // Up to the next heading: a line that is not indented.
            let end = rest
                .match_indices('\n')
                .map(|(i, _)| i + 1)
                .find(|&i| rest[i..].starts_with(|c: char| c.is_alphabetic()))
                .unwrap_or(rest.len());
            rest[..end].to_string()
        };
        assert!(section("Input and targets:").contains("--group-id"));
        assert!(section("Credentials and cloud:").contains("--tenant-id"));
        assert!(section("Pace:").contains("--rate"));
        assert!(section("Files and resume:").contains("--resume"));
        assert!(section("Output:").contains("--summary-json"));
    }
}

#[test]
fn every_flag_of_every_command_is_described() {
    for command in COMMANDS {
        let long = help(command, "--help");
        let missing = undescribed(&long);
        assert!(missing.is_empty(), "{command:?}: {missing:?}");
    }
    // The flags the issue named: described, in the long and in the short help.
    let long = help(&["run"], "--help");
    for flag in [
        "--group-id",
        "--collection-id",
        "--filter-id",
        "--source-id",
        "--tenant-id",
        "--client-id",
    ] {
        let line = long.lines().position(|l| l.contains(flag)).unwrap();
        let next = long.lines().nth(line + 1).unwrap();
        assert!(next.trim().len() > 20, "{flag}: {next:?}");
    }
}

#[test]
fn examples_are_in_the_long_help_and_the_short_help_stays_short() {
    for command in COMMANDS {
        let long = help(command, "--help");
        let short = help(command, "-h");
        assert!(long.contains("\nExamples:\n"), "{command:?}\n{long}");
        let examples = long.split("\nExamples:\n").nth(1).unwrap();
        let shown = examples
            .lines()
            .filter(|l| l.trim_start().starts_with("autopilot-bulk "))
            .count();
        assert!((2..=4).contains(&shown), "{command:?}: {shown} examples");
        assert!(!short.contains("Examples:"), "{command:?}\n{short}");
        // The short help: each flag's first sentence, without the examples.
        assert!(
            short.lines().count() * 10 < long.lines().count() * 6,
            "{command:?}: -h is {} lines, --help {}",
            short.lines().count(),
            long.lines().count()
        );
    }
    // -h: one line per flag, the first sentence of its help.
    let short = help(&["run"], "-h");
    assert!(!short.contains("Blind, every row is one write"), "{short}");
}
