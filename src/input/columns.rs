//! The columns of the input contract and where a file puts them. Kept apart from the header
//! reading and the row parsing because both look columns up, and neither should depend on the
//! other.

use crate::graph::model::normalize_word;

/// The columns of the input contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Column {
    DeviceId,
    TargetType,
    GroupId,
    CollectionId,
    FilterId,
    FilterType,
    Source,
    SourceId,
    AssignmentId,
    SerialNumber,
    GroupTag,
    Tenant,
}

impl Column {
    const ALL: [Column; 12] = [
        Column::DeviceId,
        Column::TargetType,
        Column::GroupId,
        Column::CollectionId,
        Column::FilterId,
        Column::FilterType,
        Column::Source,
        Column::SourceId,
        Column::AssignmentId,
        Column::SerialNumber,
        Column::GroupTag,
        Column::Tenant,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Column::DeviceId => "device_id",
            Column::TargetType => "target_type",
            Column::GroupId => "group_id",
            Column::CollectionId => "collection_id",
            Column::FilterId => "filter_id",
            Column::FilterType => "filter_type",
            Column::Source => "source",
            Column::SourceId => "source_id",
            Column::AssignmentId => "assignment_id",
            Column::SerialNumber => "serial_number",
            Column::GroupTag => "group_tag",
            Column::Tenant => "tenant",
        }
    }

    /// Accepted header names, already normalised (lowercase, no `_`, `-` or spaces).
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Column::DeviceId => &[
                "deviceid",
                "autopilotdeviceid",
                "windowsautopilotdeviceidentityid",
            ],
            Column::TargetType => &["targettype"],
            Column::GroupId => &["groupid"],
            Column::CollectionId => &["collectionid"],
            Column::FilterId => &["filterid"],
            Column::FilterType => &["filtertype"],
            Column::Source => &["source"],
            Column::SourceId => &["sourceid"],
            Column::AssignmentId => &["assignmentid"],
            // `Device Serial Number` is how Get-WindowsAutopilotInfo exports name it.
            Column::SerialNumber => &["serialnumber", "serial", "deviceserialnumber"],
            // `Group Tag` is how Get-WindowsAutopilotInfo exports name it.
            Column::GroupTag => &["grouptag"],
            Column::Tenant => &["tenant"],
        }
    }

    /// Position in [`Column::ALL`], to index a [`ColumnMap`].
    fn index(self) -> usize {
        self as usize
    }

    /// The column a header name stands for (case, `_`, `-` and spaces ignored).
    pub(super) fn from_header(h: &str) -> Option<Column> {
        let n = normalize_word(h.trim());
        Column::ALL
            .into_iter()
            .find(|c| c.aliases().contains(&n.as_str()))
    }
}

/// Input column index of each contract column present, and how many fields the header has.
/// An array indexed by [`Column`] rather than a hash map: it is looked up nine times per row,
/// and hashing the key cost more than the rest of the lookup.
#[derive(Debug, Clone, Copy)]
pub(super) struct ColumnMap {
    at: [Option<usize>; Column::ALL.len()],
    width: usize,
}

impl ColumnMap {
    /// A map of a header of `width` fields, none of them a contract column yet.
    pub(super) fn new(width: usize) -> Self {
        Self {
            at: [None; Column::ALL.len()],
            width,
        }
    }

    pub(super) fn get(&self, col: Column) -> Option<usize> {
        self.at[col.index()]
    }

    /// Set `col` to input column `i`, returning the column it already had.
    pub(super) fn insert(&mut self, col: Column, i: usize) -> Option<usize> {
        self.at[col.index()].replace(i)
    }

    /// Forget `col`: its cells are not read (an ignored column), returning where it was.
    pub(super) fn remove(&mut self, col: Column) -> Option<usize> {
        self.at[col.index()].take()
    }

    /// Fields in the header row: a row with another count is ragged.
    pub(super) fn width(&self) -> usize {
        self.width
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_match_aliases_loosely() {
        assert_eq!(
            Column::from_header(" Autopilot Device ID "),
            Some(Column::DeviceId)
        );
        assert_eq!(Column::from_header("Target-Type"), Some(Column::TargetType));
        assert_eq!(Column::from_header("GROUP_ID"), Some(Column::GroupId));
        assert_eq!(
            Column::from_header("Device Serial Number"),
            Some(Column::SerialNumber)
        );
        assert_eq!(Column::from_header("serial"), Some(Column::SerialNumber));
        assert_eq!(Column::from_header("Group Tag"), Some(Column::GroupTag));
        assert_eq!(Column::from_header("group_tag"), Some(Column::GroupTag));
        assert_eq!(Column::from_header("Hardware Hash"), None);
        assert_eq!(Column::from_header(""), None);
    }

    #[test]
    fn map_remembers_the_first_position() {
        let mut map = ColumnMap::new(3);
        assert_eq!(map.insert(Column::DeviceId, 2), None);
        assert_eq!(map.insert(Column::DeviceId, 0), Some(2));
        assert_eq!(map.get(Column::DeviceId), Some(0));
        assert_eq!(map.get(Column::GroupId), None);
        assert_eq!(map.width(), 3);
    }
}
