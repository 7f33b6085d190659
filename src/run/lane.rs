//! One tenant's queue of rows. With several tenants the input is read once, in order, and each
//! row goes to its tenant's queue; a tenant waiting for its window must never hold the reader
//! back from the rows of a tenant with room. So the reader never blocks on a tenant's full
//! queue: the queue holds a few hundred rows (`Config::tenant_queue`), and once it overflows, that tenant's later rows
//! wait in a temporary file (a line of JSON each, a few hundred bytes) that its workers read on
//! after the in-memory rows. Memory stays bounded whatever the input's size or order; an input
//! sorted by tenant costs disk, not memory.
//!
//! With one tenant there is nobody to hold back: the queue simply makes the reader wait.
//!
//! The files go beside the results file, not to the system's temporary folder: that is often
//! a RAM disk, where waiting rows would cost memory after all. They are removed when the run
//! ends; one a killed run left behind is removed by the next run on the same results file
//! (under its lock, so never one in use).

use std::path::{Path, PathBuf};

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use super::worker::WorkItem;

/// The reader's end of a tenant's queue.
pub struct LaneTx {
    memory: Option<mpsc::Sender<WorkItem>>,
    /// Several tenants: where to overflow to disk instead of waiting.
    spill_to: Option<Spill>,
    /// Once set, every later row of the tenant goes to disk, so that rows stay in order.
    disk: Option<BufWriter<tempfile::NamedTempFile>>,
    shared: Arc<Shared>,
}

/// The workers' end of a tenant's queue.
pub struct LaneRx {
    memory: Option<mpsc::Receiver<WorkItem>>,
    disk: Option<BufReader<File>>,
    written: watch::Receiver<Spilled>,
    read: u64,
    shared: Arc<Shared>,
}

/// How far the reader has written to disk, and whether it will write more.
#[derive(Debug, Clone, Copy, Default)]
struct Spilled {
    rows: u64,
    closed: bool,
}

struct Shared {
    /// The reading end of the temporary file, handed over before the in-memory queue closes.
    handoff: Mutex<Option<BufReader<File>>>,
    spilled: watch::Sender<Spilled>,
}

/// Where a queue's overflow goes: a file in `dir` whose name starts with `prefix`.
#[derive(Debug, Clone)]
pub struct Spill {
    pub dir: PathBuf,
    pub prefix: String,
}

impl Spill {
    /// Beside the results file `output`, named after it: `.NAME.rows-…`.
    pub fn beside(output: &Path) -> Spill {
        let dir = match output.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "results".into());
        Spill {
            dir,
            prefix: format!(".{name}.rows-"),
        }
    }

    /// Remove the files a killed run left. Call only under the results file's run lock.
    pub fn remove_stale(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(&self.prefix)
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// A tenant's queue of `in_memory` rows; with `spill_to`, overflow to disk there rather than
/// make the reader wait.
pub fn lane(in_memory: usize, spill_to: Option<Spill>) -> (LaneTx, LaneRx) {
    let (tx, rx) = mpsc::channel(in_memory.max(1));
    let (spilled, written) = watch::channel(Spilled::default());
    let shared = Arc::new(Shared {
        handoff: Mutex::new(None),
        spilled,
    });
    (
        LaneTx {
            memory: Some(tx),
            spill_to,
            disk: None,
            shared: shared.clone(),
        },
        LaneRx {
            memory: Some(rx),
            disk: None,
            written,
            read: 0,
            shared,
        },
    )
}

impl LaneTx {
    /// Queue a row (from a blocking thread). `Ok(false)`: the workers are gone (the run
    /// stopped). An error: the temporary file could not be written.
    pub fn send(&mut self, item: WorkItem) -> std::io::Result<bool> {
        if self.disk.is_none() {
            let Some(memory) = &self.memory else {
                return Ok(false);
            };
            if self.spill_to.is_none() {
                return Ok(memory.blocking_send(item).is_ok());
            }
            match memory.try_send(item) {
                Ok(()) => return Ok(true),
                Err(mpsc::error::TrySendError::Closed(_)) => return Ok(false),
                Err(mpsc::error::TrySendError::Full(item)) => {
                    self.start_spill()?;
                    return self.spill(&item);
                }
            }
        }
        self.spill(&item)
    }

    /// Open the temporary file, hand its reading end over, then close the in-memory queue:
    /// the workers read it to its end and go on with the file.
    fn start_spill(&mut self) -> std::io::Result<()> {
        let Some(spill) = &self.spill_to else {
            return Err(std::io::Error::other("no place for waiting rows"));
        };
        let file = tempfile::Builder::new()
            .prefix(&spill.prefix)
            .tempfile_in(&spill.dir)?;
        let reading = BufReader::new(file.reopen()?);
        *self
            .shared
            .handoff
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(reading);
        self.disk = Some(BufWriter::new(file));
        self.memory = None;
        Ok(())
    }

    fn spill(&mut self, item: &WorkItem) -> std::io::Result<bool> {
        if self.shared.spilled.is_closed() {
            return Ok(false); // the workers are gone
        }
        let Some(disk) = self.disk.as_mut() else {
            return Ok(false);
        };
        serde_json::to_writer(&mut *disk, item)?;
        disk.write_all(b"\n")?;
        disk.flush()?;
        self.shared.spilled.send_modify(|s| s.rows += 1);
        Ok(true)
    }
}

impl Drop for LaneTx {
    /// The reader is done (or stopped): the workers end after the last row written.
    fn drop(&mut self) {
        self.shared.spilled.send_modify(|s| s.closed = true);
    }
}

impl LaneRx {
    /// The tenant's next row, in input order: the in-memory ones, then those on disk. `None`
    /// once the reader is done and every row was taken. An error: a row on disk could not be
    /// read back (the run stops; the journal and `--resume` cover the rows not done).
    pub async fn recv(&mut self) -> std::io::Result<Option<WorkItem>> {
        if let Some(memory) = &mut self.memory {
            if let Some(item) = memory.recv().await {
                return Ok(Some(item));
            }
            self.memory = None;
            self.disk = self
                .shared
                .handoff
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
        }
        let Some(disk) = self.disk.as_mut() else {
            return Ok(None);
        };
        loop {
            let spilled = *self.written.borrow_and_update();
            if self.read < spilled.rows {
                self.read += 1;
                // A short read of a local file the reader has flushed: not worth a thread hop.
                let mut line = String::new();
                disk.read_line(&mut line)?;
                return serde_json::from_str(&line)
                    .map(Some)
                    .map_err(std::io::Error::other);
            }
            if spilled.closed || self.written.changed().await.is_err() {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Work;
    use crate::graph::model::{Assignment, Source, Target, TargetKind};
    use crate::input::{Device, Job};

    const IN_MEMORY: usize = 16;

    fn spill(dir: &tempfile::TempDir) -> Spill {
        Spill::beside(&dir.path().join("r.csv"))
    }

    fn item(row: u64) -> WorkItem {
        WorkItem {
            job: Job {
                row,
                device: Device::Both(uuid::Uuid::from_u64_pair(1, row), format!("SN-{row}")),
                work: if row.is_multiple_of(2) {
                    Work::Tag("Kiosk".to_string())
                } else {
                    let target = Target {
                        kind: TargetKind::AllDevices,
                        group_id: None,
                        collection_id: None,
                        filter_id: None,
                        filter_type: None,
                    };
                    Work::Assign(Assignment::new(target, Source::Direct, None, None))
                },
                tenant: Some("contoso".into()),
            },
            device: uuid::Uuid::from_u64_pair(1, row),
            reconcile: row.is_multiple_of(3),
        }
    }

    #[tokio::test]
    async fn a_full_queue_overflows_to_disk_in_order_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let (mut tx, mut rx) = lane(IN_MEMORY, Some(spill(&dir)));
        let n = IN_MEMORY as u64 * 3;
        // Nobody takes rows yet: every send must return at once.
        let sender = tokio::task::spawn_blocking(move || {
            for row in 1..=n {
                assert!(tx.send(item(row)).unwrap());
            }
        });
        sender.await.unwrap();
        for row in 1..=n {
            assert_eq!(rx.recv().await.unwrap(), Some(item(row)));
        }
        assert_eq!(rx.recv().await.unwrap(), None);
    }

    #[tokio::test]
    async fn rows_written_to_disk_while_the_workers_wait_reach_them() {
        let dir = tempfile::tempdir().unwrap();
        let (mut tx, mut rx) = lane(IN_MEMORY, Some(spill(&dir)));
        let total = IN_MEMORY as u64 + 10;
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let sender = tokio::task::spawn_blocking(move || {
            for row in 1..=IN_MEMORY as u64 + 5 {
                tx.send(item(row)).unwrap();
            }
            // The workers catch up with the file, then more rows arrive.
            go_rx.recv().unwrap();
            for row in IN_MEMORY as u64 + 6..=total {
                tx.send(item(row)).unwrap();
            }
        });
        for row in 1..=IN_MEMORY as u64 + 5 {
            assert_eq!(rx.recv().await.unwrap().map(|i| i.job.row), Some(row));
        }
        go_tx.send(()).unwrap();
        for row in IN_MEMORY as u64 + 6..=total {
            assert_eq!(rx.recv().await.unwrap().map(|i| i.job.row), Some(row));
        }
        assert_eq!(rx.recv().await.unwrap(), None);
        sender.await.unwrap();
    }

    #[tokio::test]
    async fn gone_workers_stop_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let (mut tx, rx) = lane(IN_MEMORY, Some(spill(&dir)));
        drop(rx);
        let sent = tokio::task::spawn_blocking(move || {
            (1..=IN_MEMORY as u64 + 1).all(|row| tx.send(item(row)).unwrap())
        });
        assert!(!sent.await.unwrap());
    }

    #[tokio::test]
    async fn waiting_rows_sit_beside_the_results_and_go_with_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(".r.csv.rows-left-by-a-killed-run");
        std::fs::write(&stale, "{}").unwrap();
        std::fs::write(dir.path().join("r.csv"), "kept").unwrap();
        spill(&dir).remove_stale();
        assert!(!stale.exists());
        let spilled = |dir: &tempfile::TempDir| {
            std::fs::read_dir(dir.path())
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(".r.csv.rows-"))
                .count()
        };
        let (mut tx, mut rx) = lane(IN_MEMORY, Some(spill(&dir)));
        let sender = tokio::task::spawn_blocking(move || {
            for row in 1..=IN_MEMORY as u64 + 1 {
                tx.send(item(row)).unwrap();
            }
            tx
        });
        let tx = sender.await.unwrap();
        assert_eq!(spilled(&dir), 1, "the overflow is beside the results");
        drop(tx);
        while rx.recv().await.unwrap().is_some() {}
        drop(rx);
        assert_eq!(spilled(&dir), 0, "removed when the queue is done");
        assert!(dir.path().join("r.csv").exists());
    }
}
