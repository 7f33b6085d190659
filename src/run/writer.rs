//! The one task that owns the results file, and the tallies it keeps for the summary.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::halt::Halt;
use crate::output::{OutputError, ResultsWriter, RowResult, Status};
use crate::progress::Progress;
use crate::summary::Counts;

/// What the writer counted.
#[derive(Debug, Default)]
pub struct Tally {
    pub rows: u64,
    pub by_status: BTreeMap<Status, u64>,
    pub by_error_code: BTreeMap<String, u64>,
    /// With `--tenants`: rows by tenant (as the results name it) and status.
    pub by_tenant: BTreeMap<String, BTreeMap<Status, u64>>,
}

impl Tally {
    pub fn count(&self, s: Status) -> u64 {
        self.by_status.get(&s).copied().unwrap_or(0)
    }

    /// All rows by status.
    pub fn counts(&self) -> Counts {
        counts(Some(&self.by_status))
    }

    /// A tenant's rows by status.
    pub fn tenant(&self, key: &str) -> Counts {
        counts(self.by_tenant.get(key))
    }

    /// Count one row of `status`, of `tenant` when the run has several.
    pub fn add(&mut self, status: Status, tenant: Option<&str>) {
        self.rows += 1;
        *self.by_status.entry(status).or_default() += 1;
        if let Some(t) = tenant {
            *self
                .by_tenant
                .entry(t.to_string())
                .or_default()
                .entry(status)
                .or_default() += 1;
        }
    }
}

fn counts(by: Option<&BTreeMap<Status, u64>>) -> Counts {
    let n = |s| by.and_then(|b| b.get(&s)).copied().unwrap_or(0);
    Counts {
        created: n(Status::Created),
        existing: n(Status::Existing),
        failed: n(Status::Failed),
        invalid: n(Status::Invalid),
    }
}

/// Write every result as it arrives. A write error stops the whole run at once: a row whose
/// result cannot be recorded must not be followed by more requests. The line it tore is cut,
/// so every line on disk is whole, and the counts so far go to the summary.
pub async fn write_results(
    mut writer: ResultsWriter,
    mut results: mpsc::Receiver<RowResult>,
    progress: Arc<Progress>,
    halt: Arc<Halt>,
) -> Result<Tally, OutputError> {
    let mut tally = Tally::default();
    while let Some(r) = results.recv().await {
        // A row is a few hundred bytes: writing it inline is cheaper than a blocking hop.
        if let Err(e) = writer.write(&r) {
            let reason = format!("{e}; --resume continues from what was written");
            halt.abort_as(crate::codes::UNWRITABLE, reason);
            if matches!(e, OutputError::Gone(_)) {
                return Err(e);
            }
            let path = writer.path().to_path_buf();
            drop(writer); // its last flush may add to the torn line: cut after it
            if let Err(cut) = crate::output::cut_torn_tail(&path) {
                tracing::warn!("cannot cut the torn last line of {}: {cut}", path.display());
            }
            // The rest of the rows are not written: drain them so that no sender waits.
            while results.recv().await.is_some() {}
            return Ok(tally);
        }
        tally.add(r.status, r.tenant.as_deref());
        if r.status == Status::Failed {
            let code = r.error_code.clone().unwrap_or_else(|| "Unknown".into());
            *tally.by_error_code.entry(code).or_default() += 1;
        }
        progress.record(r.status);
    }
    Ok(tally)
}
