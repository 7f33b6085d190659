//! Property tests over the two parsers that read what others wrote: the input row parser and
//! the Retry-After parser. Case counts stay modest so the suite runs in seconds.

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use autopilot_bulk::graph::answer::parse_retry_after;
use autopilot_bulk::graph::model::TargetKind;
use autopilot_bulk::input::{InputReader, Parsed, RowDefaults};
use proptest::prelude::*;
use uuid::Uuid;

const HEADER: &str = "device_id,target_type,group_id,filter_id,source,source_id\n";

/// 256 cases a property, or `PROPTEST_CASES` when set (a longer run).
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Parse `content` as an input file. `Err` is the file-level error's text.
fn parse(content: &[u8]) -> Result<Vec<Parsed>, String> {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(content).unwrap();
    f.flush().unwrap();
    let reader =
        InputReader::open(f.path(), None, RowDefaults::default()).map_err(|e| e.to_string())?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

fn assert_consecutive(rows: &[Parsed]) -> Result<(), TestCaseError> {
    for (i, p) in rows.iter().enumerate() {
        prop_assert_eq!(p.row(), i as u64 + 1);
    }
    Ok(())
}

/// One valid input row, and what it must parse to.
#[derive(Debug, Clone)]
struct Row {
    device: Uuid,
    kind: TargetKind,
    group: Option<Uuid>,
    filter: Option<Uuid>,
    policy_sets: bool,
    source_id: String,
}

impl Row {
    fn cells(&self) -> [String; 6] {
        [
            self.device.to_string(),
            self.kind.as_str().to_string(),
            self.group.map(|g| g.to_string()).unwrap_or_default(),
            self.filter.map(|g| g.to_string()).unwrap_or_default(),
            if self.policy_sets {
                "policySets"
            } else {
                "direct"
            }
            .to_string(),
            self.source_id.clone(),
        ]
    }
}

/// Valid rows with distinct devices (the `i`-th device carries `i` in its top bits, so the
/// duplicate rule never fires).
fn rows() -> impl Strategy<Value = Vec<Row>> {
    prop::collection::vec(
        (
            any::<u128>(),
            prop::sample::select(vec![
                TargetKind::Group,
                TargetKind::ExclusionGroup,
                TargetKind::AllDevices,
                TargetKind::AllLicensedUsers,
                TargetKind::Base,
            ]),
            any::<u128>(),
            prop::option::of(any::<u128>()),
            any::<bool>(),
            "[A-Za-z0-9 ._-]{0,12}",
        ),
        1..30,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (d, kind, g, f, policy_sets, source_id))| Row {
                device: Uuid::from_u128(((i as u128) << 96) | (d & ((1 << 96) - 1))),
                kind,
                group: kind.needs_group().then(|| Uuid::from_u128(g)),
                filter: f.map(Uuid::from_u128),
                policy_sets,
                source_id: source_id.trim().to_string(),
            })
            .collect()
    })
}

/// Write rows with the given delimiter and line ending; quote cells at random.
fn render(rows: &[Row], delimiter: char, eol: &str, bom: bool, quote_mask: u64) -> String {
    let mut s = String::new();
    if bom {
        s.push('\u{feff}');
    }
    s.push_str(&HEADER.trim_end().replace(',', &delimiter.to_string()));
    s.push_str(eol);
    for (i, r) in rows.iter().enumerate() {
        let cells: Vec<String> = r
            .cells()
            .into_iter()
            .enumerate()
            .map(|(j, c)| {
                if quote_mask >> ((i * 6 + j) % 64) & 1 == 1 {
                    format!("\"{c}\"")
                } else {
                    c
                }
            })
            .collect();
        s.push_str(&cells.join(&delimiter.to_string()));
        s.push_str(eol);
    }
    s
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes after a valid header: no panic, and the rows that come out are numbered
    /// 1, 2, 3, ... with none missing or repeated.
    #[test]
    fn arbitrary_bytes_after_a_header_never_panic(body in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut content = HEADER.as_bytes().to_vec();
        content.extend_from_slice(&body);
        let rows = parse(&content).expect("a valid header always opens");
        assert_consecutive(&rows)?;
    }

    /// Arbitrary text (quotes, delimiters, line breaks of every kind, non-ASCII) after a header.
    #[test]
    fn arbitrary_text_after_a_header_never_panics(
        body in "[a-f0-9,;\"\t\r\n =+@-]{0,300}|\\PC{0,100}",
    ) {
        let content = format!("{HEADER}{body}");
        let rows = parse(content.as_bytes()).expect("a valid header always opens");
        assert_consecutive(&rows)?;
    }

    /// Anything at all as the whole file: a file error or rows, never a panic.
    #[test]
    fn arbitrary_files_never_panic(content in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(rows) = parse(&content) {
            assert_consecutive(&rows)?;
        }
    }

    /// Valid rows, written with any delimiter, line ending, BOM and quoting, come back as jobs
    /// with the same device, target and source, under their own row numbers.
    #[test]
    fn valid_rows_round_trip(
        rows in rows(),
        delimiter in prop::sample::select(vec![',', ';', '\t']),
        eol in prop::sample::select(vec!["\n", "\r\n", "\r"]),
        bom in any::<bool>(),
        quote_mask in any::<u64>(),
    ) {
        let text = render(&rows, delimiter, eol, bom, quote_mask);
        let parsed = parse(text.as_bytes()).map_err(TestCaseError::fail)?;
        prop_assert_eq!(parsed.len(), rows.len());
        for (p, r) in parsed.iter().zip(&rows) {
            let Parsed::Job(job) = p else {
                return Err(TestCaseError::fail(format!("{p:?} from {r:?} in {text:?}")));
            };
            prop_assert_eq!(job.device.id(), Some(r.device));
            prop_assert_eq!(job.assignment().unwrap().target.kind, r.kind);
            prop_assert_eq!(job.assignment().unwrap().target.group_id, r.group);
            prop_assert_eq!(job.assignment().unwrap().target.filter_id, r.filter);
            let source_id = (!r.source_id.is_empty()).then(|| r.source_id.clone());
            prop_assert_eq!(&job.assignment().unwrap().source_id, &source_id);
        }
        assert_consecutive(&parsed)?;
    }

    /// A stray quote at the start of one cell costs at most that row: every other valid row
    /// still comes out valid, under its own number.
    #[test]
    fn a_stray_quote_costs_at_most_one_row(
        rows in rows(),
        pick in any::<prop::sample::Index>(),
        column in 0usize..6,
        trailing_eol in any::<bool>(),
    ) {
        let bad = pick.index(rows.len());
        let mut text = String::from(HEADER);
        for (i, r) in rows.iter().enumerate() {
            let mut cells = r.cells();
            if i == bad {
                cells[column].insert(0, '"');
            }
            text.push_str(&cells.join(","));
            if trailing_eol || i + 1 < rows.len() {
                text.push('\n');
            }
        }
        let parsed = parse(text.as_bytes()).map_err(TestCaseError::fail)?;
        prop_assert_eq!(parsed.len(), rows.len(), "{:?}", parsed);
        assert_consecutive(&parsed)?;
        for (i, (p, r)) in parsed.iter().zip(&rows).enumerate() {
            match p {
                // The quoted row itself may still be valid when the quote changes nothing
                // (it opens the very last cell of the file), but then with its own device.
                Parsed::Job(job) => prop_assert_eq!(job.device.id(), Some(r.device)),
                Parsed::Invalid(inv) => prop_assert!(i == bad, "row {} lost: {:?}", i + 1, inv),
            }
        }
    }

    /// Retry-After: no input panics.
    #[test]
    fn retry_after_never_panics(value in "\\PC{0,40}|[0-9.]{0,400}") {
        let _ = parse_retry_after(&value, SystemTime::now());
    }

    /// Whole seconds mean that many seconds, capped at a day.
    #[test]
    fn retry_after_integer_seconds(n in 0u64..200_000, padded in any::<bool>()) {
        let v = if padded { format!("  {n} ") } else { n.to_string() };
        prop_assert_eq!(
            parse_retry_after(&v, SystemTime::now()),
            Some(Duration::from_secs(n.min(86_400)))
        );
    }

    /// Fractional seconds (`2.128`) mean about that long.
    #[test]
    fn retry_after_fractional_seconds(whole in 0u64..100_000, millis in 0u32..1000) {
        let v = format!("{whole}.{millis:03}");
        let got = parse_retry_after(&v, SystemTime::now()).expect("parses");
        let want = (whole as f64 + f64::from(millis) / 1000.0).min(86_400.0);
        prop_assert!((got.as_secs_f64() - want).abs() < 1e-6, "{} → {:?}", v, got);
    }

    /// An HTTP-date means the time until then (zero when past), capped at a day.
    #[test]
    fn retry_after_http_date(now_secs in 1_600_000_000u64..2_000_000_000, delta in -100_000i64..200_000) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now_secs);
        let at = if delta >= 0 {
            now + Duration::from_secs(delta as u64)
        } else {
            now - Duration::from_secs(delta.unsigned_abs())
        };
        let got = parse_retry_after(&httpdate::fmt_http_date(at), now).expect("parses");
        let want = Duration::from_secs(delta.clamp(0, 86_400) as u64);
        prop_assert_eq!(got, want);
    }

    /// Huge numbers are capped, not rejected.
    #[test]
    fn retry_after_huge_numbers_are_capped(digits in "[1-9][0-9]{6,400}") {
        prop_assert_eq!(
            parse_retry_after(&digits, SystemTime::now()),
            Some(Duration::from_secs(86_400))
        );
    }
}
