//! One record's cells to a [`Job`], or the reason the row cannot be one. Pure (no files, no
//! I/O) so that every rule about a row is testable with plain string slices, apart from the
//! CSV parsing and quote recovery around it.
//!
//! Each column has its own small helper; [`parse_row`] calls them in a fixed order, so a row
//! with several bad cells always reports the same one first. A new column is a new helper and
//! one more line there.

use csv::ByteRecord;
use uuid::Uuid;

use super::columns::{Column, ColumnMap};
use crate::action::{Action, Work};
use crate::graph::model::{Assignment, FilterType, Source, Target, TargetKind};

/// Defaults from flags for rows that leave target columns empty.
#[derive(Debug, Clone, Default)]
pub struct RowDefaults {
    pub target_type: Option<TargetKind>,
    pub group_id: Option<Uuid>,
    pub collection_id: Option<String>,
    pub filter_id: Option<Uuid>,
    pub filter_type: Option<FilterType>,
    pub source: Option<Source>,
    pub source_id: Option<String>,
    /// `--group-tag`: the tag of rows whose `group_tag` cell is empty.
    pub group_tag: Option<String>,
    /// What every row asks for.
    pub action: Action,
    /// With `--tenants`: the tenants file's keys, which every row's `tenant` cell must name
    /// (case ignored). `None`: one tenant, and a `tenant` column is an ignored column.
    pub tenants: Option<Vec<String>>,
}

/// One valid row, ready to send once its device is known.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Job {
    /// 1-based index of the data row (the header is not a row).
    pub row: u64,
    pub device: Device,
    /// What the row does to its device.
    pub work: Work,
    /// With `--tenants`: the tenant the row belongs to, spelled as the tenants file's key.
    pub tenant: Option<String>,
}

impl Job {
    /// The assignment an `assign` row sends (`None` for another action).
    pub fn assignment(&self) -> Option<&Assignment> {
        self.work.assignment()
    }
}

/// How a row names its device: by identity id, by serial number (resolved through the
/// tenant's identity listing before any assignment), or both (they must agree).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Device {
    Id(Uuid),
    Serial(String),
    Both(Uuid, String),
}

impl Device {
    pub fn id(&self) -> Option<Uuid> {
        match self {
            Device::Id(id) | Device::Both(id, _) => Some(*id),
            Device::Serial(_) => None,
        }
    }

    pub fn serial(&self) -> Option<&str> {
        match self {
            Device::Serial(s) | Device::Both(_, s) => Some(s),
            Device::Id(_) => None,
        }
    }
}

/// Parse a GUID in the forms Graph and Intune exports use (hyphenated, braced or bare).
pub(crate) fn parse_guid(s: &str) -> Result<Uuid, String> {
    let t = s.trim();
    Uuid::try_parse(t).map_err(|_| format!("{} is not a GUID", quote(t)))
}

/// Longest value quoted back in a reason: a 1 MB cell must not make a 1 MB error message.
const MAX_QUOTED: usize = 64;

/// Quote a cell value for a reason, shortened when huge.
pub(super) fn quote(s: &str) -> String {
    if s.chars().count() <= MAX_QUOTED {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX_QUOTED).collect();
        format!("{head:?}… ({} chars)", s.chars().count())
    }
}

/// One record's cells by input column index: a csv [`ByteRecord`] when reading a file, a
/// slice of strings in tests.
pub(super) trait Record {
    fn fields(&self) -> usize;
    fn field(&self, i: usize) -> Option<&[u8]>;
}

impl Record for ByteRecord {
    fn fields(&self) -> usize {
        self.len()
    }
    fn field(&self, i: usize) -> Option<&[u8]> {
        self.get(i)
    }
}

impl<S: AsRef<[u8]>> Record for [S] {
    fn fields(&self) -> usize {
        self.len()
    }
    fn field(&self, i: usize) -> Option<&[u8]> {
        self.get(i).map(AsRef::as_ref)
    }
}

/// Turn row `row` into a job, or the reason it cannot be one.
pub(super) fn parse_row<R: Record + ?Sized>(
    row: u64,
    record: &R,
    columns: &ColumnMap,
    defaults: &RowDefaults,
) -> Result<Job, String> {
    check_shape(record, columns.width())?;
    let cells = Cells { record, columns };
    let device = device(&cells)?;
    let tenant = tenant(&cells, defaults)?;
    let work = match defaults.action {
        Action::Assign => Work::Assign(assignment(&cells, defaults)?),
        // A tag row needs no target: its target columns are not read.
        Action::Tag => Work::Tag(group_tag(&cells, defaults)?),
        // A group row's group is its `group_id`; its other target columns are not read.
        Action::Group => Work::Group(member_group(&cells, defaults)?),
    };
    Ok(Job {
        row,
        device,
        work,
        tenant,
    })
}

/// An `assign` row's assignment: its target, source, source id and optional id.
fn assignment<R: Record + ?Sized>(
    cells: &Cells<'_, R>,
    defaults: &RowDefaults,
) -> Result<Assignment, String> {
    let target = target(cells, defaults)?;
    let source = source(cells, defaults)?;
    let source_id = source_id(cells, defaults)?;
    let assignment_id = cells.text(Column::AssignmentId)?.map(str::to_string);
    Ok(Assignment::new(target, source, source_id, assignment_id))
}

/// The `device_id` cell as written, for an invalid row's report (it may not be a GUID).
pub(super) fn device_cell_lossy<R: Record + ?Sized>(record: &R, columns: &ColumnMap) -> String {
    cell_lossy(record, columns, Column::DeviceId)
}

/// The `tenant` cell as written, for an invalid row's report.
pub(super) fn tenant_cell_lossy<R: Record + ?Sized>(record: &R, columns: &ColumnMap) -> String {
    cell_lossy(record, columns, Column::Tenant)
}

/// The `serial_number` cell as written, for an invalid row's report.
pub(super) fn serial_cell_lossy<R: Record + ?Sized>(record: &R, columns: &ColumnMap) -> String {
    cell_lossy(record, columns, Column::SerialNumber)
}

fn cell_lossy<R: Record + ?Sized>(record: &R, columns: &ColumnMap, col: Column) -> String {
    columns
        .get(col)
        .and_then(|i| record.field(i))
        .map(|raw| String::from_utf8_lossy(raw).trim().to_string())
        .unwrap_or_default()
}

/// A row with no values at all, or not as many fields as the header, is refused whole.
fn check_shape<R: Record + ?Sized>(record: &R, width: usize) -> Result<(), String> {
    let fields = record.fields();
    if (0..fields).all(|i| record.field(i).is_none_or(|f| f.trim_ascii().is_empty())) {
        return Err("empty row: no values".into());
    }
    if fields != width {
        return Err(format!(
            "ragged row: {fields} fields where the header has {width}"
        ));
    }
    Ok(())
}

/// The cells of one record, looked up by contract column.
struct Cells<'a, R: ?Sized> {
    record: &'a R,
    columns: &'a ColumnMap,
}

impl<'a, R: Record + ?Sized> Cells<'a, R> {
    /// The trimmed text of `col`'s cell: `None` when the file has no such column or the cell
    /// is empty.
    fn text(&self, col: Column) -> Result<Option<&'a str>, String> {
        let Some(raw) = self.columns.get(col).and_then(|i| self.record.field(i)) else {
            return Ok(None);
        };
        let s = std::str::from_utf8(raw)
            .map_err(|_| {
                format!(
                    "{} {} is not UTF-8 text (save the file as CSV UTF-8)",
                    col.name(),
                    quote(&String::from_utf8_lossy(raw))
                )
            })?
            .trim();
        Ok((!s.is_empty()).then_some(s))
    }

    /// `col`'s cell as a GUID, if it has a value.
    fn guid(&self, col: Column) -> Result<Option<Uuid>, String> {
        self.text(col)?
            .map(|s| with_col(col, parse_guid(s)))
            .transpose()
    }
}

/// Prefix a cell error with its column's name.
fn with_col<T>(col: Column, r: Result<T, String>) -> Result<T, String> {
    r.map_err(|e| format!("{}: {e}", col.name()))
}

/// The device: a `device_id` GUID, a `serial_number`, or both; every row names one.
fn device<R: Record + ?Sized>(cells: &Cells<'_, R>) -> Result<Device, String> {
    let id = cells.guid(Column::DeviceId)?;
    let serial = cells.text(Column::SerialNumber)?.map(str::to_string);
    match (id, serial) {
        (Some(id), None) => Ok(Device::Id(id)),
        (None, Some(serial)) => Ok(Device::Serial(serial)),
        (Some(id), Some(serial)) => Ok(Device::Both(id, serial)),
        (None, None) if cells.columns.get(Column::DeviceId).is_some() => {
            Err("device_id is empty".into())
        }
        (None, None) => Err("serial_number is empty".into()),
    }
}

/// Whether two tenant names are the same tenant: surrounding spaces and case (Unicode) are
/// ignored. The one rule for the tenants file's keys and the input's `tenant` cells.
pub fn same_tenant(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    // Checked for every row against every key: ASCII names (the usual) without allocating.
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.to_lowercase() == b.to_lowercase()
    }
}

/// The tenant a row belongs to, with `--tenants`: a key of the tenants file (case ignored),
/// returned as the file spells it. Without `--tenants` there is none.
fn tenant<R: Record + ?Sized>(
    cells: &Cells<'_, R>,
    defaults: &RowDefaults,
) -> Result<Option<String>, String> {
    let Some(keys) = &defaults.tenants else {
        return Ok(None);
    };
    let named = || keys.join(", ");
    let Some(cell) = cells.text(Column::Tenant)? else {
        return Err(format!(
            "tenant is empty: with --tenants every row names its tenant (one of: {})",
            named()
        ));
    };
    keys.iter()
        .find(|k| same_tenant(k, cell))
        .map(|k| Some(k.clone()))
        .ok_or_else(|| {
            format!(
                "tenant {} is not in the tenants file (it names: {})",
                quote(cell),
                named()
            )
        })
}

/// The group a `group` row's device joins: the `group_id` cell, else `--group-id`.
fn member_group<R: Record + ?Sized>(
    cells: &Cells<'_, R>,
    defaults: &RowDefaults,
) -> Result<Uuid, String> {
    cells
        .guid(Column::GroupId)?
        .or(defaults.group_id)
        .ok_or_else(|| {
            "group_id is empty: --action group adds the device to a group (a group_id column \
             or --group-id)"
                .to_string()
        })
}

/// The group tag: the cell, else `--group-tag`; a tag row without one is invalid.
fn group_tag<R: Record + ?Sized>(
    cells: &Cells<'_, R>,
    defaults: &RowDefaults,
) -> Result<String, String> {
    cells
        .text(Column::GroupTag)?
        .map(str::to_string)
        .or_else(|| defaults.group_tag.clone())
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| "group_tag is empty".to_string())
}

/// The assignment target: its kind, the group or collection the kind needs, and the filter.
fn target<R: Record + ?Sized>(
    cells: &Cells<'_, R>,
    defaults: &RowDefaults,
) -> Result<Target, String> {
    let cell_kind = cells
        .text(Column::TargetType)?
        .map(TargetKind::parse)
        .transpose()?;
    let cell_group = cells.guid(Column::GroupId)?;
    let cell_collection = cells
        .text(Column::CollectionId)?
        .map(|s| with_col(Column::CollectionId, parse_collection_id(s)))
        .transpose()?;
    let kind = match cell_kind.or(defaults.target_type) {
        Some(kind) => kind,
        None => inferred_kind(
            cell_group.or(defaults.group_id).is_some(),
            cell_collection.is_some() || defaults.collection_id.is_some(),
            || Ok(filter(cells, defaults)?.0.is_some()),
        )?,
    };
    let group_id = group_for(kind, cell_group, defaults.group_id)?;
    let collection_id = collection_for(kind, cell_collection, defaults.collection_id.as_ref())?;
    let (filter_id, filter_type) = filter(cells, defaults)?;
    Ok(Target {
        kind,
        group_id,
        collection_id,
        filter_id,
        filter_type,
    })
}

/// Why a row with no target at all is refused: a base target without a filter reaches every
/// device the profile applies to, so it is never a default (a serial-only export and a
/// forgotten `--group-id` would otherwise all be sent as such).
const NO_TARGET: &str = "no target: give group_id, collection_id, filter_id or --target-type";

/// The kind of a row that names none: what its group, collection or filter implies. A filter
/// alone is a `base` target with that filter; nothing at all is refused ([`NO_TARGET`]): a
/// bare `base` target must be asked for (`--target-type base` or a `target_type` cell).
/// `has_filter` is asked only when there is neither group nor collection, so that a bad
/// filter cell is still reported where [`target`] reads the filter.
fn inferred_kind(
    has_group: bool,
    has_collection: bool,
    has_filter: impl FnOnce() -> Result<bool, String>,
) -> Result<TargetKind, String> {
    if has_group {
        Ok(TargetKind::Group)
    } else if has_collection {
        Ok(TargetKind::ConfigurationManagerCollection)
    } else if has_filter()? {
        Ok(TargetKind::Base)
    } else {
        Err(NO_TARGET.to_string())
    }
}

/// The `groupId` for `kind`: required by the group kinds; refused by the others when the row
/// sets one (a flag default that does not apply is simply unused).
fn group_for(
    kind: TargetKind,
    cell: Option<Uuid>,
    default: Option<Uuid>,
) -> Result<Option<Uuid>, String> {
    if kind.needs_group() {
        cell.or(default)
            .map(Some)
            .ok_or_else(|| format!("group_id is required for target_type {}", kind.as_str()))
    } else if cell.is_some() {
        Err(format!(
            "group_id is set but target_type {} takes no group",
            kind.as_str()
        ))
    } else {
        Ok(None)
    }
}

/// The `collectionId` for `kind`, by the same rule as [`group_for`].
fn collection_for(
    kind: TargetKind,
    cell: Option<String>,
    default: Option<&String>,
) -> Result<Option<String>, String> {
    if kind == TargetKind::ConfigurationManagerCollection {
        cell.or_else(|| default.cloned()).map(Some).ok_or_else(|| {
            "collection_id is required for target_type configuration_manager_collection".to_string()
        })
    } else if cell.is_some() {
        Err(format!(
            "collection_id is set but target_type {} takes no collection",
            kind.as_str()
        ))
    } else {
        Ok(None)
    }
}

/// ConfigMgr collection ids look like `SMS00001` (site code + 5 hex digits); accept any
/// printable token so that nothing valid is refused, but catch obvious garbage.
fn parse_collection_id(s: &str) -> Result<String, String> {
    if s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{} is not a collection id (e.g. SMS00001)",
            quote(s)
        ))
    }
}

/// The filter id and type. A filter id alone means `include`; `include` or `exclude` without a
/// filter id is refused.
fn filter<R: Record + ?Sized>(
    cells: &Cells<'_, R>,
    defaults: &RowDefaults,
) -> Result<(Option<Uuid>, Option<FilterType>), String> {
    let filter_id = cells.guid(Column::FilterId)?.or(defaults.filter_id);
    let filter_type = cells
        .text(Column::FilterType)?
        .map(FilterType::parse)
        .transpose()?
        .or(defaults.filter_type)
        .or(filter_id.map(|_| FilterType::Include));
    let word = match filter_type {
        Some(FilterType::Include) => "include",
        Some(FilterType::Exclude) => "exclude",
        Some(FilterType::None) | None => return Ok((filter_id, filter_type)),
    };
    match filter_id {
        Some(_) => Ok((filter_id, filter_type)),
        None => Err(format!("filter_type {word} needs a filter_id")),
    }
}

/// The assignment's source: the cell, else the flag, else `direct`.
fn source<R: Record + ?Sized>(
    cells: &Cells<'_, R>,
    defaults: &RowDefaults,
) -> Result<Source, String> {
    Ok(cells
        .text(Column::Source)?
        .map(Source::parse)
        .transpose()?
        .or(defaults.source)
        .unwrap_or(Source::Direct))
}

/// The source id: the cell, else the flag, else none.
fn source_id<R: Record + ?Sized>(
    cells: &Cells<'_, R>,
    defaults: &RowDefaults,
) -> Result<Option<String>, String> {
    Ok(cells
        .text(Column::SourceId)?
        .map(str::to_string)
        .or_else(|| defaults.source_id.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::model::normalize_word;

    const D1: &str = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
    const D2: &str = "1b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
    const G1: &str = "2b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";

    /// Parse one row under a header, as the reader would.
    fn parse<S: AsRef<[u8]>>(
        header: &[&str],
        cells: &[S],
        defaults: &RowDefaults,
    ) -> Result<Job, String> {
        let mut columns = ColumnMap::new(header.len());
        for (i, h) in header.iter().enumerate() {
            if let Some(col) = Column::from_header(h) {
                columns.insert(col, i);
            }
        }
        parse_row(1, cells, &columns, defaults)
    }

    fn reason(r: Result<Job, String>) -> String {
        match r {
            Err(reason) => reason,
            Ok(job) => panic!("unexpectedly valid: {job:?}"),
        }
    }

    #[test]
    fn bad_cells_name_column_and_value() {
        let header = [
            "device_id",
            "target_type",
            "group_id",
            "filter_type",
            "source",
        ];
        let d = &RowDefaults::default();
        let bad = |cells: &[&str]| reason(parse(&header, cells, d));
        let r = bad(&["nope", "", "", "", ""]);
        assert!(r.contains("device_id") && r.contains("nope"), "{r}");
        let r = bad(&[D1, "groups", "", "", ""]);
        assert!(r.contains("target_type") && r.contains("groups"), "{r}");
        assert!(bad(&[D1, "group", "", "", ""]).contains("group_id is required"));
        let r = bad(&[D1, "", "", "sideways", ""]);
        assert!(r.contains("filter_type") && r.contains("sideways"), "{r}");
        let r = bad(&[D1, "all_devices", "", "", "indirect"]);
        assert!(r.contains("source") && r.contains("indirect"), "{r}");
        // No target at all is a reason of its own, not a base target.
        assert_eq!(bad(&[D1, "", "", "", ""]), NO_TARGET);
        assert_eq!(bad(&[D1, "", "", "", "policySets"]), NO_TARGET);
        assert!(bad(&[D2, "all_devices", G1, "", ""]).contains("takes no group"));
        assert!(bad(&[D1, "base"]).contains("ragged"));
    }

    #[test]
    fn tag_rows_need_a_tag_and_no_target() {
        let tag = RowDefaults {
            action: Action::Tag,
            ..RowDefaults::default()
        };
        let header = [
            "Device Serial Number",
            "Group Tag",
            "target_type",
            "group_id",
        ];
        // A target that would be refused in an assign run is not read.
        let job = parse(&header, &["SN1", " Kiosk ", "group", ""], &tag).unwrap();
        assert_eq!(job.work.group_tag(), Some("Kiosk"));
        assert_eq!(job.device, Device::Serial("SN1".into()));
        assert_eq!(job.assignment(), None);
        assert_eq!(
            reason(parse(&header, &["SN1", "", "", ""], &tag)),
            "group_tag is empty"
        );
        let flag = RowDefaults {
            group_tag: Some("Lab".into()),
            ..tag.clone()
        };
        let job = parse(&header, &["SN1", "", "", ""], &flag).unwrap();
        assert_eq!(job.work.group_tag(), Some("Lab"));
        let job = parse(&header, &["SN1", "Kiosk", "", ""], &flag).unwrap();
        assert_eq!(job.work.group_tag(), Some("Kiosk"));
        // Without the action, the tag column is not read and the row is an assignment, which
        // needs a target like any other.
        let header = ["device_id", "grouptag"];
        let job = parse(&header, &[D1, "Kiosk"], &RowDefaults::default());
        assert_eq!(reason(job), NO_TARGET);
        let to_group = RowDefaults {
            group_id: Some(G1.parse().unwrap()),
            ..RowDefaults::default()
        };
        let job = parse(&header, &[D1, "Kiosk"], &to_group).unwrap();
        assert_eq!(job.work.group_tag(), None);
        assert_eq!(job.assignment().unwrap().target.kind, TargetKind::Group);
        assert_eq!(Action::parse(" TAG "), Ok(Action::Tag));
        assert!(Action::parse("label").is_err());
    }

    #[test]
    fn whole_row_problems() {
        let d = &RowDefaults::default();
        let header = ["device_id", "note"];
        assert_eq!(
            reason(parse(&header, &[" ", "\t"], d)),
            "empty row: no values"
        );
        assert_eq!(
            reason(parse(&header, &[D1, "a", "b"], d)),
            "ragged row: 3 fields where the header has 2"
        );
        assert_eq!(reason(parse(&header, &["", "a"], d)), "device_id is empty");
        let r = reason(parse(&header, &[&b"\xFFabc"[..], b"a"], d));
        assert!(
            r.starts_with("device_id ") && r.contains("not UTF-8"),
            "{r}"
        );
        // An ignored column may hold anything.
        let to_group = RowDefaults {
            group_id: Some(G1.parse().unwrap()),
            ..RowDefaults::default()
        };
        assert!(parse(&header, &[D1.as_bytes(), b"\xFF"], &to_group).is_ok());
    }

    #[test]
    fn kind_inferred_from_group_or_collection() {
        let d = &RowDefaults::default();
        let header = ["device_id", "group_id", "collection_id"];
        let kind =
            |cells: &[&str]| parse(&header, cells, d).map(|j| j.assignment().unwrap().target.kind);
        assert_eq!(kind(&[D1, G1, ""]), Ok(TargetKind::Group));
        assert_eq!(
            kind(&[D1, "", "SMS00001"]),
            Ok(TargetKind::ConfigurationManagerCollection)
        );
        // Neither: no target, unless base is asked for (a flag or a cell).
        assert_eq!(kind(&[D1, "", ""]), Err(NO_TARGET.to_string()));
        let base = RowDefaults {
            target_type: Some(TargetKind::Base),
            ..RowDefaults::default()
        };
        let job = parse(&header, &[D1, "", ""], &base).unwrap();
        assert_eq!(job.assignment().unwrap().target.kind, TargetKind::Base);
        assert_eq!(job.assignment().unwrap().target.filter_id, None);
        let job = parse(&["device_id", "target_type"], &[D1, "base"], d).unwrap();
        assert_eq!(job.assignment().unwrap().target.kind, TargetKind::Base);
        let r = reason(parse(&header, &[D1, G1, "SMS00001"], d));
        assert!(r.contains("takes no collection"), "{r}");
        let r = reason(parse(&header, &[D1, "", "SMS 1"], d));
        assert!(
            r.starts_with("collection_id: ") && r.contains("SMS 1"),
            "{r}"
        );
        let r = reason(parse(
            &["device_id", "target_type"],
            &[D1, "configuration_manager_collection"],
            d,
        ));
        assert!(r.contains("collection_id is required"), "{r}");
    }

    #[test]
    fn filter_id_implies_include_and_include_needs_an_id() {
        let d = &RowDefaults::default();
        let header = ["device_id", "filter_id", "filter_type"];
        let filter = "3b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
        let job = parse(&header, &[D1, filter, ""], d).unwrap();
        assert_eq!(
            job.assignment().unwrap().target.filter_type,
            Some(FilterType::Include)
        );
        assert_eq!(
            reason(parse(&header, &[D1, "", "exclude"], d)),
            "filter_type exclude needs a filter_id"
        );
        // `none` names no filter, so it is no target either; with base asked for it is sent.
        assert_eq!(reason(parse(&header, &[D1, "", "none"], d)), NO_TARGET);
        let base = RowDefaults {
            target_type: Some(TargetKind::Base),
            ..RowDefaults::default()
        };
        let job = parse(&header, &[D1, "", "none"], &base).unwrap();
        assert_eq!(
            job.assignment().unwrap().target.filter_type,
            Some(FilterType::None)
        );
        // A filter alone is a base target with that filter.
        let job = parse(&header, &[D1, filter, "exclude"], d).unwrap();
        let target = &job.assignment().unwrap().target;
        assert_eq!(target.kind, TargetKind::Base);
        assert_eq!(target.filter_type, Some(FilterType::Exclude));
    }

    #[test]
    fn flag_defaults_fill_empty_cells() {
        let defaults = RowDefaults {
            group_id: Some(G1.parse().unwrap()),
            source: Some(Source::PolicySets),
            ..RowDefaults::default()
        };
        let header = ["device_id", "source"];
        let a = parse(&header, &[D1, ""], &defaults).unwrap();
        let b = parse(&header, &[D2, "direct"], &defaults).unwrap();
        assert_eq!(a.assignment().unwrap().target.kind, TargetKind::Group);
        assert_eq!(a.assignment().unwrap().source, Source::PolicySets);
        assert_eq!(b.assignment().unwrap().source, Source::Direct);
    }

    #[test]
    fn seed_row_builds_the_seed_body() {
        let filter = "3b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
        let job = parse(
            &[
                "device_id",
                "filter_id",
                "filter_type",
                "source",
                "source_id",
            ],
            &[D1, filter, "include", "policySets", "Source Id value"],
            &RowDefaults::default(),
        )
        .unwrap();
        assert_eq!(job.row, 1);
        assert_eq!(job.device, Device::Id(D1.parse().unwrap()));
        assert_eq!(
            serde_json::to_value(job.assignment().unwrap()).unwrap(),
            serde_json::json!({
              "@odata.type": "#microsoft.graph.windowsAutopilotDeploymentProfileAssignment",
              "target": {
                "@odata.type": "microsoft.graph.deviceAndAppManagementAssignmentTarget",
                "deviceAndAppManagementAssignmentFilterId": filter,
                "deviceAndAppManagementAssignmentFilterType": "include"
              },
              "source": "policySets",
              "sourceId": "Source Id value"
            })
        );
    }

    /// `TargetKind::parse` compares words in place, without allocating; it must accept and
    /// refuse exactly what comparing [`normalize_word`] outputs does.
    #[test]
    fn target_type_cells_match_as_normalised_words() {
        let reference = |s: &str| {
            let norm = normalize_word(s);
            TargetKind::ALL
                .into_iter()
                .find(|k| normalize_word(k.as_str()) == norm)
                .or_else(|| TargetKind::from_odata_type(s.trim()))
                .ok_or_else(|| {
                    format!(
                        "unknown target_type {s:?} (expected one of: {})",
                        TargetKind::ALL.map(TargetKind::as_str).join(", ")
                    )
                })
        };
        for cell in [
            "group",
            "Group",
            "GROUP",
            "exclusion_group",
            "Exclusion-Group",
            "all devices",
            "ALL_LICENSED_USERS",
            "configuration_manager_collection",
            "base",
            "#microsoft.graph.groupAssignmentTarget",
            "microsoft.graph.allDevicesAssignmentTarget",
            "microsoft.graph.deviceAndAppManagementAssignmentTarget",
            "groups",
            "grou",
            "",
            "_-_",
            "gröup",
            "\u{212A}",           // KELVIN SIGN lowercases to ASCII k
            "B\u{0130}ase",       // İ lowercases to i + combining dot
            "all\u{00A0}devices", // no-break space is not ignored
            "ＧＲＯＵＰ",
        ] {
            assert_eq!(TargetKind::parse(cell), reference(cell), "{cell:?}");
        }
    }

    #[test]
    fn huge_values_are_quoted_short() {
        let long = "x".repeat(1000);
        let q = quote(&long);
        assert!(q.len() < 100 && q.ends_with("(1000 chars)"), "{q}");
        assert_eq!(quote("ab"), "\"ab\"");
        assert!(parse_guid(&long).unwrap_err().len() < 120);
    }
}
