//! Rows flow one way: a reader thread → a bounded queue → at most `in_flight` workers → the
//! results queue. The reader is ahead of the workers by at most the queue's capacity, so memory
//! stays flat whatever the input's size.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::graph::answer::ErrorInfo;
use crate::input::{InputError, InputReader, Job, Parsed};
use crate::output::{RowResult, Status};
use crate::progress::Progress;

use super::plan::{Resume, RowPlan};
use super::resolve::{Resolution, Resolved};
use super::seats::Seats;
use super::tags::Tags;
use super::worker::{WorkItem, Workers};

/// What the reader saw.
#[derive(Debug, Default)]
pub struct ReaderCounts {
    /// Rows an earlier run already finished (`--resume`).
    pub skipped: u64,
    /// Rows an earlier run reported that this run does again.
    pub redone: u64,
    /// The whole input was read.
    pub finished: bool,
}

/// The reader, on a blocking thread: valid rows to the workers, invalid and unresolvable ones
/// straight to the results, rows an earlier run finished skipped.
pub fn spawn_reader(
    reader: InputReader,
    resume: Arc<Resume>,
    resolved: Arc<Resolved>,
    tags: Arc<Tags>,
    jobs: mpsc::Sender<WorkItem>,
    results: mpsc::Sender<RowResult>,
    progress: Arc<Progress>,
) -> JoinHandle<Result<ReaderCounts, InputError>> {
    tokio::task::spawn_blocking(move || {
        let mut counts = ReaderCounts::default();
        for item in reader {
            let parsed = item?;
            let device = match &parsed {
                Parsed::Job(job) => job.device.id(),
                Parsed::Invalid(_) => None,
            };
            let RowPlan::Do { reconcile, redo } = resume.decide(parsed.row(), device) else {
                counts.skipped += 1;
                progress.advance(1);
                continue;
            };
            counts.redone += u64::from(redo);
            let sent = match parsed {
                Parsed::Job(job) => match resolved.device(&job) {
                    Resolution::Device(device)
                        if job.tag.as_deref().is_some_and(|t| tags.carries(device, t)) =>
                    {
                        results.blocking_send(tagged(&job, device)).is_ok()
                    }
                    Resolution::Device(device) => {
                        // A serial's device may be one the journal names.
                        let reconcile = reconcile || resume.started_device(device);
                        let item = WorkItem {
                            job,
                            device,
                            reconcile,
                        };
                        jobs.blocking_send(item).is_ok()
                    }
                    Resolution::Failed(e) => results.blocking_send(failed(&job, e)).is_ok(),
                    Resolution::Invalid(reason) => {
                        results.blocking_send(invalid(&job, reason)).is_ok()
                    }
                },
                Parsed::Invalid(i) => {
                    let mut r = RowResult::invalid(i.row, i.device_id, i.reason);
                    r.serial_number = Some(i.serial_number).filter(|s| !s.is_empty());
                    results.blocking_send(r).is_ok()
                }
            };
            if !sent {
                return Ok(counts); // dispatch stopped
            }
        }
        counts.finished = true;
        Ok(counts)
    })
}

/// A tag row whose device already carries its tag: `existing`, with no write sent.
fn tagged(job: &Job, device: uuid::Uuid) -> RowResult {
    let mut r = invalid(job, String::new());
    r.device_id = device.to_string();
    r.status = Status::Existing;
    r.error_message = None;
    r
}

/// A row whose device id and serial number disagree: never sent.
fn invalid(job: &Job, reason: String) -> RowResult {
    let device = job.device.id().map(|d| d.to_string()).unwrap_or_default();
    let mut r = RowResult::invalid(job.row, device, reason);
    r.serial_number = job.device.serial().map(str::to_string);
    r
}

/// A row whose serial number resolves to no single device (not found, held twice, or the
/// listing failed): failed with the reason, never guessed.
fn failed(job: &Job, e: ErrorInfo) -> RowResult {
    let mut r = invalid(job, e.message);
    r.status = Status::Failed;
    r.error_code = Some(e.code);
    r
}

/// Run the workers until the queue is drained or the run stops. After a stop, rows in flight
/// get `grace` to finish; then they are abandoned to the next `--resume`, which finds them in
/// the journal and reconciles them.
pub async fn work(
    mut jobs: mpsc::Receiver<WorkItem>,
    workers: Arc<Workers>,
    results: mpsc::Sender<RowResult>,
    seats: Arc<Seats>,
    grace_period: Duration,
) {
    let halt = workers.budget.halt();
    // The stream owns the receiver: when dispatch ends, dropping it releases a reader blocked
    // on a full queue.
    let queue = futures::stream::poll_fn(move |cx| jobs.poll_recv(cx))
        .take_until(halt.token().clone().cancelled_owned());
    let dispatch = queue.for_each_concurrent(seats.most(), |item| {
        let (workers, results, seats) = (workers.clone(), results.clone(), seats.clone());
        async move {
            let _seat = seats.take().await;
            if let Some(result) = workers.process(item).await {
                workers.budget.row_finished(&result);
                // The writer only goes away on a write error, which has stopped the run.
                let _ = results.send(result).await;
            }
        }
    });
    let grace = async {
        halt.stopped().await;
        tokio::time::sleep(grace_period).await;
    };
    tokio::select! {
        () = dispatch => {}
        () = grace => tracing::warn!(
            "rows still in flight after {grace_period:?} were abandoned; --resume will reconcile them"
        ),
    }
}
