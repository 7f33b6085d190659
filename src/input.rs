//! Input CSV reading.

use uuid::Uuid;

use crate::graph::model::{FilterType, Source, TargetKind};

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
}

/// Parse a GUID in the forms Graph and Intune exports use (hyphenated, braced or bare).
pub fn parse_guid(s: &str) -> Result<Uuid, String> {
    let t = s.trim();
    Uuid::try_parse(t).map_err(|_| format!("{t:?} is not a GUID"))
}
