//! What one tenant's import shares between its stages: the tenant connected, the counts of
//! what was sent, the records being watched, and the writing of finished rows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use uuid::Uuid;

use super::Shared;
use super::advice;
use super::send::Stopped;
use super::sheet::{ImportLine, ImportStatus};
use crate::budget::Budget;
use crate::graph::answer::ErrorInfo;
use crate::graph::client::GraphClient;

/// Times a request whose answer was lost is followed up (an import read back and sent again
/// for the devices it did not create, a delete sent again), each after a backoff step,
/// before giving up on it.
pub(super) const LOST_ROUNDS: u32 = 8;

/// A counter of requests of one kind.
#[derive(Debug, Default)]
pub struct Count(AtomicU64);

impl Count {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Requests by kind, and what became of the records.
#[derive(Debug, Default)]
pub struct Counts {
    pub imports: Count,
    pub reads: Count,
    pub syncs: Count,
    pub deletes: Count,
    pub records_created: Count,
    pub records_deleted: Count,
    pub records_left: Count,
}

/// One tenant, ready to send.
pub struct Reach {
    pub key: Option<String>,
    pub budget: Arc<Budget>,
    pub graph: GraphClient,
    pub counts: Counts,
}

/// A device sent (or found sent by an earlier attempt) whose record is watched.
#[derive(Debug, Clone)]
pub(super) struct Watched {
    pub(super) row: u64,
    pub(super) serial: String,
    pub(super) record: Uuid,
    /// This run created it (its journal says so): it is deleted once settled.
    pub(super) ours: bool,
    pub(super) attempts: u32,
    /// The identity id the record names once complete.
    pub(super) registration: Option<String>,
}

/// One tenant's import under way.
pub(super) struct Flow<'a> {
    pub(super) reach: &'a Reach,
    pub(super) shared: &'a Shared<'a>,
    /// Rows given their line.
    pub(super) written: &'a AtomicU64,
    /// The records to delete.
    pub(super) deletes: mpsc::UnboundedSender<Uuid>,
}

impl Flow<'_> {
    /// Queue a record of this run for deletion (unless records are kept).
    pub(super) fn delete(&self, record: Uuid) {
        if self.shared.settings.keep_records {
            self.reach.counts.records_left.inc();
        } else {
            let _ = self.deletes.send(record);
        }
    }

    pub(super) fn line(&self, row: u64, serial: &str, status: ImportStatus) -> ImportLine {
        ImportLine::new(row, serial, status, self.reach.key.as_deref())
    }

    pub(super) fn fail_one(&self, w: &Watched, e: &ErrorInfo) -> Result<(), Stopped> {
        let mut line = self.line(w.row, &w.serial, ImportStatus::Failed);
        line.import_id = w.record.to_string();
        line.error_code = e.code.clone();
        line.error_message = e.message.clone();
        line.attempts = w.attempts;
        self.write(line)
    }

    pub(super) fn fail_all<'s>(
        &self,
        rows: impl Iterator<Item = (u64, &'s String)>,
        e: &ErrorInfo,
        attempts: u32,
    ) -> Result<(), Stopped> {
        for (row, serial) in rows {
            let mut line = self.line(row, serial, ImportStatus::Failed);
            line.error_code = e.code.clone();
            line.error_message = e.message.clone();
            line.attempts = attempts;
            self.write(line)?;
        }
        Ok(())
    }

    pub(super) fn write(&self, line: ImportLine) -> Result<(), Stopped> {
        self.shared.write(&line)?;
        self.written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub(super) fn named(&self, message: String) -> String {
        crate::connect::named(self.reach.key.as_deref(), message)
    }
}

pub(super) fn unreadable(what: &str, e: &ErrorInfo) -> ErrorInfo {
    ErrorInfo {
        code: advice::UNREADABLE.into(),
        message: format!("cannot read {what}: {}: {}", e.code, e.message),
    }
}
