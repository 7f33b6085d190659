//! Hostile input: every file in `tests/data/` (and a few generated ones too big to commit)
//! gives either a clear per-row `invalid` whose reason names the column and value, or a clear
//! file error with exit code 2. Never a panic, and never a lost valid row: valid rows mixed
//! into a hostile file still come out valid, under their own row numbers.

use crate::common;

use std::path::{Path, PathBuf};

use autopilot_bulk::input::{InputError, InputReader, Parsed, RowDefaults};
use autopilot_bulk::output::{ResultsWriter, RowResult};
use common::{GROUP, ResultLine, bin, device, read_results};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn parse(path: &Path) -> Result<Vec<Parsed>, InputError> {
    InputReader::open(path, None, RowDefaults::default())?.collect()
}

/// (row number, device id or reason) pairs.
type Numbered = Vec<(u64, String)>;

/// Row number → device id of the valid rows; row number → reason of the invalid ones.
fn split(rows: &[Parsed]) -> (Numbered, Numbered) {
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    for p in rows {
        match p {
            Parsed::Job(j) => valid.push((
                j.row,
                j.device.id().map(|d| d.to_string()).unwrap_or_default(),
            )),
            Parsed::Invalid(i) => invalid.push((i.row, i.reason.clone())),
        }
    }
    (valid, invalid)
}

/// Rows are numbered 1, 2, 3, ... with none missing.
fn assert_consecutive(rows: &[Parsed]) {
    let numbers: Vec<u64> = rows.iter().map(Parsed::row).collect();
    assert_eq!(numbers, (1..=rows.len() as u64).collect::<Vec<_>>());
}

/// `autopilot-bulk validate FILE`: exit code, stdout, stderr.
fn validate(path: &Path) -> (i32, String, String) {
    let out = bin().arg("validate").arg(path).output().unwrap();
    (
        out.status.code().expect("exited, not killed by a signal"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A copy of a corpus file in a temp dir, so that `run` writes its results there.
fn copy_to_temp(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::copy(data(name), &path).unwrap();
    (dir, path)
}

/// `autopilot-bulk run FILE --emulator -q`: exit code and stderr.
fn run_emulated(path: &Path) -> (i32, String) {
    let out = bin()
        .arg("run")
        .arg(path)
        .args(["--emulator", "-q"])
        .output()
        .unwrap();
    (
        out.status.code().expect("exited, not killed by a signal"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A file error: exit 2, one message that names the file and says what is wrong.
fn assert_file_error(name: &str, says: &str) {
    let path = data(name);
    let (code, stdout, stderr) = validate(&path);
    assert_eq!(code, 2, "{name}: {stdout}{stderr}");
    assert!(
        stderr.contains(path.to_str().unwrap()),
        "{name}: file not named: {stderr}"
    );
    assert!(stderr.contains(says), "{name}: {stderr}");
    assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    assert!(stderr.len() < 600, "{name}: message too long: {stderr}");
    match parse(&path) {
        Err(InputError::Header { .. }) => {}
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn unreadable_files_are_file_errors_with_exit_2() {
    assert_file_error("empty.csv", "the file is empty");
    assert_file_error("blank_lines.csv", "the file is empty");
    assert_file_error("no_header.csv", "the header row is missing");
    assert_file_error("no_header.csv", "device_id");
    assert_file_error("binary.bin", "not CSV text");
    assert_file_error("utf16.csv", "UTF-16");
    assert_file_error("duplicate_headers.csv", "device_id appears twice");
    let missing = data("does-not-exist.csv");
    let (code, _, stderr) = validate(&missing);
    assert_eq!(code, 2);
    assert!(stderr.contains("does-not-exist.csv"), "{stderr}");
}

#[test]
fn run_refuses_unreadable_files_before_sending_or_writing() {
    for name in ["no_header.csv", "binary.bin", "utf16.csv"] {
        let (dir, path) = copy_to_temp(name);
        let (code, stderr) = run_emulated(&path);
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(stderr.contains(name), "{name}: {stderr}");
        // No results file: nothing was started.
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1, "{name}: {files:?}");
    }
}

#[test]
fn header_only_is_zero_rows_and_success() {
    assert!(parse(&data("header_only.csv")).unwrap().is_empty());
    let (code, stdout, _) = validate(&data("header_only.csv"));
    assert_eq!(code, 0);
    assert!(stdout.contains("0 rows"), "{stdout}");
}

#[test]
fn non_utf8_cells_are_invalid_rows_naming_column_and_value() {
    let rows = parse(&data("latin1.csv")).unwrap();
    assert_consecutive(&rows);
    let (valid, invalid) = split(&rows);
    assert_eq!(
        valid,
        [(1, device(1)), (4, device(4))],
        "valid rows keep their numbers"
    );
    assert_eq!(invalid.len(), 2);
    assert_eq!(invalid[0].0, 2);
    assert!(
        invalid[0].1.contains("source_id") && invalid[0].1.contains("B\u{fffd}ro M\u{fffd}nchen"),
        "{invalid:?}"
    );
    assert!(invalid[0].1.contains("UTF-8"), "{invalid:?}");
    assert_eq!(invalid[1].0, 3);
    assert!(
        invalid[1].1.contains("device_id") && invalid[1].1.contains("Ger\u{fffd}t-7"),
        "{invalid:?}"
    );
    assert_eq!(validate(&data("latin1.csv")).0, 1);
}

#[test]
fn ragged_and_blank_rows_are_invalid_and_blank_lines_skipped() {
    let rows = parse(&data("ragged.csv")).unwrap();
    assert_consecutive(&rows);
    let (valid, invalid) = split(&rows);
    // The empty line between rows 3 and 4 is not a row; the whitespace-only one is row 4.
    assert_eq!(valid, [(1, device(1)), (5, device(5))]);
    let reasons: Vec<(u64, &str)> = invalid.iter().map(|(r, s)| (*r, s.as_str())).collect();
    assert_eq!(
        reasons[0],
        (2, "ragged row: 2 fields where the header has 3")
    );
    assert_eq!(
        reasons[1],
        (3, "ragged row: 5 fields where the header has 3")
    );
    assert_eq!(reasons[2], (4, "empty row: no values"));
    assert_eq!(
        reasons[3],
        (6, "ragged row: 1 fields where the header has 3")
    );
}

#[test]
fn a_quote_left_open_costs_one_row_not_the_rest_of_the_file() {
    let rows = parse(&data("open_quote.csv")).unwrap();
    assert_consecutive(&rows);
    let (valid, invalid) = split(&rows);
    assert_eq!(valid, [(1, device(1)), (3, device(3)), (4, device(4))]);
    assert_eq!(invalid.len(), 1);
    assert_eq!(invalid[0].0, 2);
    assert!(
        invalid[0].1.contains("quote") && invalid[0].1.contains("group_id"),
        "{invalid:?}"
    );

    // Left open in an ignored column; a closed multi-line value in the last row is kept.
    let rows = parse(&data("open_quote_notes.csv")).unwrap();
    assert_consecutive(&rows);
    let (valid, invalid) = split(&rows);
    assert_eq!(valid, [(1, device(1)), (3, device(3)), (4, device(4))]);
    assert_eq!(invalid.len(), 1);
    assert!(invalid[0].1.contains("notes (column 4)"), "{invalid:?}");
}

#[test]
fn an_open_quote_after_a_bom_with_cr_line_ends_resumes_on_the_right_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bom-cr.csv");
    let text = format!(
        "\u{feff}device_id;group_id\r{};{GROUP}\r{};\"{GROUP}\r{};{GROUP}\r\n{};{GROUP}",
        device(1),
        device(2),
        device(3),
        device(4)
    );
    std::fs::write(&path, text).unwrap();
    let rows = parse(&path).unwrap();
    assert_consecutive(&rows);
    let (valid, invalid) = split(&rows);
    assert_eq!(valid, [(1, device(1)), (3, device(3)), (4, device(4))]);
    assert_eq!(invalid[0].0, 2);
}

#[test]
fn line_endings_bom_and_delimiters() {
    let rows = parse(&data("line_endings.csv")).unwrap();
    let (valid, invalid) = split(&rows);
    assert!(invalid.is_empty(), "{invalid:?}");
    assert_eq!(
        valid,
        (1..=5).map(|i| (i, device(i as u32))).collect::<Vec<_>>()
    );

    let rows = parse(&data("bom_semicolon.csv")).unwrap();
    let (valid, invalid) = split(&rows);
    assert_eq!(valid, [(1, device(1)), (3, device(3))]);
    assert_eq!(
        invalid,
        [(2, r#"group_id: "nope" is not a GUID"#.to_string())]
    );

    let rows = parse(&data("tab.tsv")).unwrap();
    let (valid, invalid) = split(&rows);
    assert_eq!(valid, [(1, device(1))]);
    assert_eq!(invalid[0].0, 2);
    assert!(invalid[0].1.contains("\"group,x\""), "{invalid:?}");
}

#[test]
fn duplicate_unknown_headers_are_ignored() {
    let rows = parse(&data("duplicate_unknown_headers.csv")).unwrap();
    assert_eq!(split(&rows).0, [(1, device(1))]);
}

#[test]
fn excel_formulas_are_invalid_and_neutralised_in_the_results() {
    let rows = parse(&data("formulas.csv")).unwrap();
    assert_consecutive(&rows);
    let (valid, invalid) = split(&rows);
    assert_eq!(valid, [(8, device(8))]);
    assert_eq!(invalid.len(), 7);
    assert!(invalid[0].1.starts_with("device_id:") && invalid[0].1.contains("=cmd|' /C calc'!A0"));
    assert!(invalid[1].1.starts_with("group_id:") && invalid[1].1.contains("=cmd|' /C calc'!A0"));
    assert!(invalid[6].1.contains("target_type") && invalid[6].1.contains("=HYPERLINK"));

    // The whole job against the emulator: exit 1, and the results file re-parses row for row
    // with nothing a spreadsheet would run.
    let (_dir, path) = copy_to_temp("formulas.csv");
    let (code, stderr) = run_emulated(&path);
    assert_eq!(code, 1, "{stderr}");
    let results = read_results(&path.with_file_name("formulas.results.csv"));
    common::assert_each_row_once(&results, 8);
    assert_neutralised(&results);
    let by_row = |r: u64| results.iter().find(|l| l.row == r).unwrap();
    assert_eq!(by_row(1).device_id, "'=cmd|' /C calc'!A0");
    assert_eq!(by_row(3).device_id, "'@SUM(1+1)");
    assert_eq!(by_row(8).status, "created");
}

/// No free-text field starts with a character a spreadsheet takes as a formula.
fn assert_neutralised(results: &[ResultLine]) {
    for r in results {
        for field in [
            &r.device_id,
            &r.error_code,
            &r.error_message,
            &r.assignment_id,
        ] {
            assert!(
                !field.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "row {}: {field:?}",
                r.row
            );
        }
    }
}

#[test]
fn a_one_megabyte_field_is_quoted_back_shortened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.csv");
    let huge = "A".repeat(1 << 20);
    let text = format!(
        "device_id,target_type,group_id,notes\n{huge},group,{GROUP},x\n{},group,{GROUP},{huge}\n{},group,\"{huge}\n",
        device(2),
        device(3)
    );
    std::fs::write(&path, text).unwrap();
    let rows = parse(&path).unwrap();
    assert_consecutive(&rows);
    let (valid, invalid) = split(&rows);
    assert_eq!(valid, [(2, device(2))], "a huge ignored cell is fine");
    assert_eq!(invalid.len(), 2);
    assert!(
        invalid[0].1.starts_with("device_id:"),
        "{}",
        &invalid[0].1[..80]
    );
    assert!(invalid[0].1.contains("(1048576 chars)"));
    for (_, reason) in &invalid {
        assert!(reason.len() < 400, "reason of {} bytes", reason.len());
    }
    assert_eq!(validate(&path).0, 1);
}

#[test]
fn ten_thousand_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wide.csv");
    let mut header: Vec<String> = (0..10_000).map(|i| format!("c{i}")).collect();
    header[5_000] = "device_id".into();
    header[7_777] = "group_id".into();
    let mut text = header.join(",");
    text.push('\n');
    for d in 1..=3 {
        let mut cells = vec![String::new(); 10_000];
        cells[5_000] = device(d);
        cells[7_777] = GROUP.into();
        text.push_str(&cells.join(","));
        text.push('\n');
    }
    text.push_str(&format!("{},{GROUP}\n", device(4))); // ragged
    std::fs::write(&path, text).unwrap();

    let reader = InputReader::open(&path, None, RowDefaults::default()).unwrap();
    // The warning about ignored columns stays short.
    let unknown = reader.unknown_columns();
    assert!(unknown.len() <= 21, "{}", unknown.len());
    assert_eq!(unknown.last().unwrap(), "… and 9978 more");
    let rows: Vec<Parsed> = reader.collect::<Result<_, _>>().unwrap();
    let (valid, invalid) = split(&rows);
    assert_eq!(valid, [(1, device(1)), (2, device(2)), (3, device(3))]);
    assert_eq!(invalid[0].0, 4);
    assert!(invalid[0].1.contains("10000"), "{invalid:?}");
    let (code, _, stderr) = validate(&path);
    assert_eq!(code, 1);
    assert!(stderr.len() < 1000, "warning of {} bytes", stderr.len());
}

#[test]
fn results_from_hostile_rows_reparse_with_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.csv");
    let hostile = [
        "=cmd|' /C calc'!A0",
        "+1",
        "-2",
        "@SUM(A1)",
        "\t=1",
        "\r=1",
        "a,b\"c\nd",
        "\"quoted\"",
        "",
        "B\u{fffd}ro",
        "line\r\nbreak",
    ];
    let mut w = ResultsWriter::create(&out, false).unwrap();
    for (i, h) in hostile.iter().enumerate() {
        w.write(&RowResult::invalid(
            i as u64 + 1,
            (*h).to_string(),
            format!("{h}: is not a GUID"),
        ))
        .unwrap();
    }
    drop(w);
    let results = read_results(&out);
    common::assert_each_row_once(&results, hostile.len() as u64);
    assert_neutralised(&results);
    for (r, h) in results.iter().zip(hostile) {
        // The value is kept, behind a `'` when it would be a formula.
        assert!(r.device_id.ends_with(h), "{:?} vs {h:?}", r.device_id);
        assert_eq!(r.status, "invalid");
    }
}

#[test]
fn hostile_files_through_the_whole_run() {
    for (name, rows, exit) in [
        ("latin1.csv", 4, 1),
        ("open_quote.csv", 4, 1),
        ("ragged.csv", 6, 1),
        ("line_endings.csv", 5, 0),
        ("bom_semicolon.csv", 3, 1),
    ] {
        let (_dir, path) = copy_to_temp(name);
        let (code, stderr) = run_emulated(&path);
        assert_eq!(code, exit, "{name}: {stderr}");
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let results = read_results(&path.with_file_name(format!("{stem}.results.csv")));
        common::assert_each_row_once(&results, rows);
        assert_neutralised(&results);
        for r in &results {
            assert!(
                matches!(r.status.as_str(), "created" | "invalid"),
                "{name} row {}: {r:?}",
                r.row
            );
        }
    }
}
