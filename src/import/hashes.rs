//! The hardware-hash CSV `Get-WindowsAutopilotInfo` writes (`Device Serial Number`, `Windows
//! Product ID`, `Hardware Hash`, optional `Group Tag` and `Assigned User`), read with the input
//! rules of `run`: a BOM, `,` `;` or tab, header names in any case and spacing. A bad row is a
//! [`Bad`] naming the column, never an error that costs the other rows; a serial given twice is
//! refused on its second row. The hash is checked to be base64 here, before anything is sent,
//! and is never part of a reason.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;

use crate::config::Tenant;
use crate::graph::model::{IMPORTED_ODATA_TYPE, ImportRecord, normalize_word};

/// Longest serial number accepted (Graph's identities hold far shorter ones).
const MAX_SERIAL: usize = 128;
/// A hardware hash shorter than this (in bytes, decoded) is no hash: real ones are ~4 KB.
const MIN_HASH_BYTES: usize = 8;
/// Longest hash cell read (16 KB of base64 is four times a real hash).
const MAX_HASH: usize = 64 * 1024;

/// One device to register.
#[derive(Clone, PartialEq, Eq)]
pub struct HashRow {
    pub row: u64,
    pub serial: String,
    pub product_key: String,
    hash: String,
    pub group_tag: String,
    pub assigned_user: String,
    /// The tenants file's key the row's `tenant` cell names (with `--tenants`).
    pub tenant: Option<String>,
}

impl std::fmt::Debug for HashRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashRow")
            .field("row", &self.row)
            .field("serial", &self.serial)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl HashRow {
    /// The record Graph's import takes.
    pub fn record(&self) -> ImportRecord {
        ImportRecord {
            odata_type: IMPORTED_ODATA_TYPE,
            serial_number: self.serial.clone(),
            product_key: self.product_key.clone(),
            hardware_identifier: self.hash.clone(),
            group_tag: self.group_tag.clone(),
            assigned_user: self.assigned_user.clone(),
        }
    }
}

/// A row that will not be imported, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad {
    pub row: u64,
    /// The serial cell as written (may be empty).
    pub serial: String,
    pub tenant: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Row(HashRow),
    Bad(Bad),
}

/// The file cannot be read as a hash table at all.
#[derive(Debug, thiserror::Error)]
pub enum HashesError {
    #[error("cannot read {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Header { path: PathBuf, reason: String },
    #[error("{}: read error after row {row}: {source}", path.display())]
    Read {
        path: PathBuf,
        row: u64,
        source: csv::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Serial,
    ProductKey,
    Hash,
    GroupTag,
    User,
    Tenant,
}

impl Col {
    const ALL: [Col; 6] = [
        Col::Serial,
        Col::ProductKey,
        Col::Hash,
        Col::GroupTag,
        Col::User,
        Col::Tenant,
    ];

    /// The name `Get-WindowsAutopilotInfo` writes, used in reasons.
    fn name(self) -> &'static str {
        match self {
            Col::Serial => "Device Serial Number",
            Col::ProductKey => "Windows Product ID",
            Col::Hash => "Hardware Hash",
            Col::GroupTag => "Group Tag",
            Col::User => "Assigned User",
            Col::Tenant => "tenant",
        }
    }

    /// Accepted header names, normalised (lowercase, no `_`, `-` or spaces).
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Col::Serial => &["deviceserialnumber", "serialnumber", "serial"],
            Col::ProductKey => &["windowsproductid", "productkey", "productid"],
            Col::Hash => &["hardwarehash", "hardwareidentifier", "hash"],
            Col::GroupTag => &["grouptag"],
            Col::User => &[
                "assigneduser",
                "assigneduserprincipalname",
                "userprincipalname",
            ],
            Col::Tenant => &["tenant"],
        }
    }

    fn from_header(h: &str) -> Option<Col> {
        let n = normalize_word(h.trim());
        Col::ALL
            .into_iter()
            .find(|c| c.aliases().contains(&n.as_str()))
    }
}

/// Where the header puts each column.
#[derive(Debug, Default)]
struct Columns {
    at: HashMap<usize, Col>,
    unknown: Vec<String>,
}

impl Columns {
    fn index(&self, col: Col) -> Option<usize> {
        self.at.iter().find(|(_, c)| **c == col).map(|(i, _)| *i)
    }
}

/// Every row of the hash file at `path`, in file order. `tenants`: with `--tenants`, each
/// row's `tenant` cell must name one of them. Header names that are not hash columns are
/// returned for one warning.
pub fn read(
    path: &Path,
    delimiter: Option<u8>,
    tenants: &[Tenant],
) -> Result<(Vec<Line>, Vec<String>), HashesError> {
    let bytes = std::fs::read(path).map_err(|source| HashesError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let header_err = |reason: String| HashesError::Header {
        path: path.to_path_buf(),
        reason,
    };
    if bytes
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(&bytes)
        .iter()
        .all(u8::is_ascii_whitespace)
    {
        return Err(header_err(
            "the file is empty: expected a header row naming Device Serial Number and Hardware \
             Hash (a Get-WindowsAutopilotInfo CSV)"
                .into(),
        ));
    }
    let sniffed = crate::input::sniff(&bytes, delimiter).map_err(header_err)?;
    let body = &bytes[sniffed.bom_len as usize..];
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(sniffed.delimiter)
        .flexible(true)
        .from_reader(body);
    let headers = reader
        .byte_headers()
        .map_err(|e| header_err(format!("cannot read the header row: {e}")))?;
    let columns = header(headers, !tenants.is_empty()).map_err(header_err)?;
    let mut lines = Vec::new();
    let mut first_of: HashMap<(String, String), u64> = HashMap::new();
    let mut record = csv::ByteRecord::new();
    let mut row = 0u64;
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(source) => {
                return Err(HashesError::Read {
                    path: path.to_path_buf(),
                    row,
                    source,
                });
            }
        }
        row += 1;
        if record.iter().all(|c| c.iter().all(u8::is_ascii_whitespace)) {
            row -= 1; // a blank line is no row
            continue;
        }
        let line = match parse(row, &record, &columns, tenants) {
            Ok(r) => {
                let key = (
                    r.serial.to_lowercase(),
                    r.tenant.clone().unwrap_or_default(),
                );
                match first_of.get(&key) {
                    Some(first) => Line::Bad(Bad {
                        row,
                        serial: r.serial.clone(),
                        tenant: r.tenant.clone(),
                        reason: format!(
                            "column Device Serial Number: {:?} is also on row {first}: a \
                             device is imported once",
                            r.serial
                        ),
                    }),
                    None => {
                        first_of.insert(key, row);
                        Line::Row(r)
                    }
                }
            }
            Err(bad) => Line::Bad(bad),
        };
        lines.push(line);
    }
    Ok((lines, columns.unknown))
}

/// Map the header; the serial and hash columns are required, a column named twice refused.
fn header(headers: &csv::ByteRecord, with_tenants: bool) -> Result<Columns, String> {
    let mut columns = Columns::default();
    for (i, raw) in headers.iter().enumerate() {
        let name = String::from_utf8_lossy(raw).trim().to_string();
        match Col::from_header(&name) {
            Some(Col::Tenant) if !with_tenants => columns.unknown.push(name),
            Some(col) => {
                if let Some(prev) = columns.index(col) {
                    return Err(format!(
                        "column {} appears twice in the header (columns {} and {})",
                        col.name(),
                        prev + 1,
                        i + 1
                    ));
                }
                columns.at.insert(i, col);
            }
            None if name.is_empty() => {}
            None => columns.unknown.push(name),
        }
    }
    for col in [Col::Serial, Col::Hash] {
        if columns.index(col).is_none() {
            return Err(format!(
                "no {} column: expected the header of a Get-WindowsAutopilotInfo CSV (Device \
                 Serial Number, Windows Product ID, Hardware Hash, …)",
                col.name()
            ));
        }
    }
    if with_tenants && columns.index(Col::Tenant).is_none() {
        return Err("no tenant column: with --tenants every row names its tenant".into());
    }
    Ok(columns)
}

/// One record's cells into a row, or why not (the column named).
fn parse(
    row: u64,
    record: &csv::ByteRecord,
    columns: &Columns,
    tenants: &[Tenant],
) -> Result<HashRow, Bad> {
    let cell = |col: Col| -> Result<String, String> {
        let Some(i) = columns.index(col) else {
            return Ok(String::new());
        };
        let raw = record.get(i).unwrap_or_default();
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(s.trim().to_string()),
            Err(_) => Err(format!(
                "column {}: not UTF-8 text (save the file as CSV UTF-8)",
                col.name()
            )),
        }
    };
    let serial_lossy = columns
        .index(Col::Serial)
        .and_then(|i| record.get(i))
        .map(|b| String::from_utf8_lossy(b).trim().to_string())
        .unwrap_or_default();
    let tenant_lossy = columns
        .index(Col::Tenant)
        .and_then(|i| record.get(i))
        .map(|b| String::from_utf8_lossy(b).trim().to_string());
    let bad = |reason: String| Bad {
        row,
        serial: serial_lossy.clone(),
        tenant: tenant_lossy.clone(),
        reason,
    };
    let get = |col| cell(col).map_err(bad);
    let serial = get(Col::Serial)?;
    check_serial(&serial).map_err(bad)?;
    let hash = get(Col::Hash)?;
    check_hash(&hash).map_err(bad)?;
    let product_key = get(Col::ProductKey)?;
    if product_key.chars().any(char::is_control) || product_key.len() > MAX_SERIAL {
        return Err(bad("column Windows Product ID: not a product id".into()));
    }
    let group_tag = get(Col::GroupTag)?;
    if group_tag.chars().any(char::is_control) {
        return Err(bad("column Group Tag: holds a control character".into()));
    }
    let assigned_user = get(Col::User)?;
    if !assigned_user.is_empty()
        && (!assigned_user.contains('@') || assigned_user.chars().any(char::is_whitespace))
    {
        return Err(bad(format!(
            "column Assigned User: {:?} is not a user principal name (name@domain)",
            crate::output::printable(&assigned_user)
        )));
    }
    let tenant = if tenants.is_empty() {
        None
    } else {
        let t = get(Col::Tenant)?;
        match crate::tenants::find(tenants, &t) {
            Some(found) => Some(found.key.clone()),
            None if t.is_empty() => return Err(bad("column tenant: empty".into())),
            None => {
                return Err(bad(format!(
                    "column tenant: {:?} is not a tenant of the tenants file",
                    crate::output::printable(&t)
                )));
            }
        }
    };
    Ok(HashRow {
        row,
        serial,
        product_key,
        hash,
        group_tag,
        assigned_user,
        tenant,
    })
}

fn check_serial(serial: &str) -> Result<(), String> {
    if serial.is_empty() {
        return Err("column Device Serial Number: empty".into());
    }
    if serial.len() > MAX_SERIAL || serial.chars().any(char::is_control) {
        return Err(format!(
            "column Device Serial Number: {:?} is not a serial number",
            crate::output::printable(&serial.chars().take(40).collect::<String>())
        ));
    }
    Ok(())
}

/// The hash must be standard base64 of a plausible length. The value itself never appears in
/// the reason: it identifies the device's hardware.
fn check_hash(hash: &str) -> Result<(), String> {
    if hash.is_empty() {
        return Err("column Hardware Hash: empty".into());
    }
    if hash.len() > MAX_HASH {
        return Err(format!(
            "column Hardware Hash: {} characters, more than a hardware hash holds",
            hash.len()
        ));
    }
    if let Some(at) = hash
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')))
    {
        return Err(format!(
            "column Hardware Hash: not base64 (a character that base64 does not use at \
             position {})",
            at + 1
        ));
    }
    match base64::engine::general_purpose::STANDARD.decode(hash) {
        Ok(bytes) if bytes.len() >= MIN_HASH_BYTES => Ok(()),
        Ok(bytes) => Err(format!(
            "column Hardware Hash: {} bytes, too short for a hardware hash",
            bytes.len()
        )),
        Err(_) => Err("column Hardware Hash: not base64 (its length or padding is wrong)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "T0gCAQAcAAAACgAAAAAAAA==";

    fn read_text(text: &str) -> Vec<Line> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.csv");
        std::fs::write(&p, text).unwrap();
        read(&p, None, &[]).unwrap().0
    }

    fn reason(l: &Line) -> &str {
        match l {
            Line::Bad(b) => &b.reason,
            Line::Row(r) => panic!("row {} is valid", r.row),
        }
    }

    #[test]
    fn a_get_windows_autopilot_info_file_is_read_with_its_optional_columns() {
        let text = format!(
            "\u{feff}Device Serial Number;Windows Product ID;Hardware Hash;Group Tag;Assigned User\n\
             PF1;00330-1;{HASH};Kiosk;a@contoso.com\nPF2;;{HASH};;\n"
        );
        let lines = read_text(&text);
        let Line::Row(r) = &lines[0] else {
            panic!("{lines:?}")
        };
        assert_eq!(
            (
                r.serial.as_str(),
                r.product_key.as_str(),
                r.group_tag.as_str()
            ),
            ("PF1", "00330-1", "Kiosk")
        );
        assert_eq!(r.record().hardware_identifier, HASH);
        assert!(matches!(&lines[1], Line::Row(r) if r.row == 2 && r.group_tag.is_empty()));
    }

    #[test]
    fn bad_rows_name_their_column_and_never_the_hash() {
        let text = format!(
            "Device Serial Number,Hardware Hash,Assigned User\n\
             ,{HASH},\nPF2,not*base64,\nPF3,QUJD,\nPF4,{HASH},nobody\nPF5,{HASH},\npf5,{HASH},\n"
        );
        let lines = read_text(&text);
        assert!(reason(&lines[0]).contains("Device Serial Number: empty"));
        assert!(reason(&lines[1]).contains("Hardware Hash: not base64"));
        assert!(!reason(&lines[1]).contains("not*base64"));
        assert!(reason(&lines[2]).contains("too short"));
        assert!(reason(&lines[3]).contains("Assigned User"));
        assert!(matches!(lines[4], Line::Row(_)));
        assert!(
            reason(&lines[5]).contains("also on row 5"),
            "{:?}",
            lines[5]
        );
    }

    #[test]
    fn a_file_without_the_hash_column_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.csv");
        std::fs::write(&p, "device_id,serial_number\nx,y\n").unwrap();
        let e = read(&p, None, &[]).unwrap_err().to_string();
        assert!(e.contains("no Hardware Hash column"), "{e}");
        std::fs::write(&p, "").unwrap();
        let e = read(&p, None, &[]).unwrap_err().to_string();
        assert!(e.contains("empty") && e.contains("h.csv"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn no_cell_panics(serial in ".{0,20}", hash in ".{0,40}", user in ".{0,10}") {
            let text = format!("Device Serial Number,Hardware Hash,Assigned User\n\"{}\",\"{}\",\"{}\"\n",
                serial.replace('"', ""), hash.replace('"', ""), user.replace('"', ""));
            let _ = read_text(&text);
        }
    }
}
