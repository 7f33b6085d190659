//! Rows flow one way: a reader thread → each tenant's queue → at most its seats of workers →
//! the results queue. The reader is ahead of the workers by at most the queues' capacity (a
//! tenant's overflow waits on disk, see [`super::lane`]), so memory stays flat whatever the
//! input's size.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::graph::answer::ErrorInfo;
use crate::input::{InputError, InputReader, Job, Parsed};
use crate::output::{RowResult, Status};
use crate::progress::Progress;

use super::assigned::Assigned;
use super::groups::{Membership, Memberships};
use super::lane::{LaneRx, LaneTx};
use super::plan::{Resume, RowPlan};
use super::resolve::{Resolution, Resolved};
use super::seats::Seats;
use super::tags::Tags;
use super::worker::{Unfinished, WorkItem, Workers};
use super::writer::Tally;

/// What the reader saw.
#[derive(Debug, Default)]
pub struct ReaderCounts {
    /// Rows an earlier run already finished (`--resume`).
    pub skipped: u64,
    /// The skipped rows by the status the earlier run reported, and by tenant.
    pub earlier: Tally,
    /// Rows an earlier run reported that this run does again.
    pub redone: u64,
    /// The whole input was read.
    pub finished: bool,
}

/// Why the reader stopped before the end of the input.
#[derive(Debug, thiserror::Error)]
pub enum ReadStop {
    #[error("input stopped being readable: {0}")]
    Input(#[from] InputError),
    #[error("cannot keep a tenant's waiting rows in a temporary file: {0}")]
    Spill(std::io::Error),
}

/// What the reader needs of one tenant: where its rows go, and what was read before the run.
pub struct ReaderLane {
    pub key: Option<String>,
    pub known: Known,
    pub queue: LaneTx,
}

/// What was read of one tenant before the first write (the identity listing goes on beside
/// the rows: `assigned` fills as its pages come).
pub struct Known {
    pub resolved: Arc<Resolved>,
    pub tags: Arc<Tags>,
    pub memberships: Arc<Memberships>,
    pub assigned: Arc<Assigned>,
}

/// The reader, on a blocking thread: valid rows to their tenant's queue, invalid and
/// unresolvable ones straight to the results, rows an earlier run finished skipped.
pub fn spawn_reader(
    reader: InputReader,
    resume: Arc<Resume>,
    mut lanes: Vec<ReaderLane>,
    results: mpsc::Sender<RowResult>,
    progress: Arc<Progress>,
) -> JoinHandle<Result<ReaderCounts, ReadStop>> {
    tokio::task::spawn_blocking(move || {
        let mut counts = ReaderCounts::default();
        // Rows carry their tenant as the file spells its key: an exact lookup.
        let lane_of: std::collections::HashMap<Option<String>, usize> = lanes
            .iter()
            .enumerate()
            .map(|(i, l)| (l.key.clone(), i))
            .collect();
        for item in reader {
            let parsed = item?;
            let (device, tenant) = match &parsed {
                Parsed::Job(job) => (job.device.id(), job.tenant.as_deref()),
                Parsed::Invalid(i) => (None, Some(i.tenant.as_str()).filter(|t| !t.is_empty())),
            };
            let (reconcile, redo) = match resume.decide(parsed.row(), device) {
                RowPlan::Do { reconcile, redo } => (reconcile, redo),
                RowPlan::Skip(status) => {
                    counts.skipped += 1;
                    counts.earlier.add(status, tenant);
                    progress.advance(1);
                    continue;
                }
            };
            counts.redone += u64::from(redo);
            let sent = match parsed {
                Parsed::Job(job) => {
                    let lane = lane_of.get(&job.tenant).map(|&i| &mut lanes[i]);
                    // The input checks tenants against the file: never `None`.
                    let Some(lane) = lane else {
                        let reason = "the row's tenant has no budget".to_string();
                        if results.blocking_send(invalid(&job, reason)).is_err() {
                            return Ok(counts);
                        }
                        continue;
                    };
                    match decide(&lane.known, job, reconcile, &resume) {
                        Decided::Done(r) => results.blocking_send(r).is_ok(),
                        Decided::Send(item) => lane.queue.send(item).map_err(ReadStop::Spill)?,
                    }
                }
                Parsed::Invalid(i) => {
                    let mut r = RowResult::invalid(i.row, i.device_id, i.reason);
                    r.serial_number = Some(i.serial_number).filter(|s| !s.is_empty());
                    r.tenant = Some(i.tenant).filter(|s| !s.is_empty());
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

/// What the reader does with a valid row: finish it at once (done already, unresolvable,
/// a member already) or send it to its tenant's workers. `plan` asks the same question.
pub enum Decided {
    Done(RowResult),
    Send(WorkItem),
}

/// The reader's decision for `job`, from what was read of its tenant before the run.
/// `reconcile`: the resume says an earlier run may have sent it.
pub fn decide(lane: &Known, job: Job, reconcile: bool, resume: &Resume) -> Decided {
    match lane.resolved.device(&job) {
        Resolution::Device(device)
            if job
                .work
                .group_tag()
                .is_some_and(|t| lane.tags.carries(device, t)) =>
        {
            Decided::Done(tagged(&job, device))
        }
        Resolution::Device(device) if job.work.group().is_some() => {
            let group = job.work.group().unwrap_or_default();
            let journaled = reconcile || resume.started_device(device);
            match lane.memberships.decide(device, group) {
                // A member the journal names was added by an earlier run.
                Membership::Member => {
                    let mut r = member(&job, device, journaled);
                    if let Some(oid) = lane.memberships.object(device) {
                        r.change = crate::output::Change::Member {
                            group,
                            member: oid.to_string(),
                        };
                    }
                    Decided::Done(r)
                }
                Membership::Failed(e) => {
                    let mut r = failed(&job, e);
                    r.device_id = device.to_string();
                    Decided::Done(r)
                }
                Membership::Add(_) => Decided::Send(WorkItem {
                    job,
                    device,
                    reconcile: journaled,
                }),
            }
        }
        Resolution::Device(device) => {
            // A serial's device may be one the journal names. (An assign row also reads its
            // device first unless the listing shows it unassigned by the time the row starts:
            // see [`WorkItem::reads_first`].)
            let reconcile = reconcile || resume.started_device(device);
            Decided::Send(WorkItem {
                job,
                device,
                reconcile,
            })
        }
        Resolution::Failed(e) => Decided::Done(failed(&job, e)),
        Resolution::Invalid(reason) => Decided::Done(invalid(&job, reason)),
    }
}

/// A tag row whose device already carries its tag: `existing`, with no write sent.
fn tagged(job: &Job, device: uuid::Uuid) -> RowResult {
    let mut r = invalid(job, String::new());
    r.device_id = device.to_string();
    r.status = Status::Existing;
    r.error_message = None;
    r
}

/// A group row whose device is already a member: `existing`, or `created` when the journal says
/// an earlier run of this results file sent it.
fn member(job: &Job, device: uuid::Uuid, journaled: bool) -> RowResult {
    let mut r = tagged(job, device);
    if journaled {
        r.status = Status::Created;
        r.error_message = Some("added by an earlier run of this results file".into());
    }
    r
}

/// A row whose device id and serial number disagree: never sent.
fn invalid(job: &Job, reason: String) -> RowResult {
    let device = job.device.id().map(|d| d.to_string()).unwrap_or_default();
    let mut r = RowResult::invalid(job.row, device, reason);
    r.serial_number = job.device.serial().map(str::to_string);
    r.tenant = job.tenant.clone();
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

/// One tenant's dispatch: its queue, its workers and seats.
pub struct LaneWork {
    pub queue: LaneRx,
    pub workers: Arc<Workers>,
    pub seats: Arc<Seats>,
    /// Several tenants: rows of this tenant left when it stops on its own (its token
    /// rejected, its breaker tripped) are reported `failed` with the reason, while the others
    /// go on. With one tenant they are left to `--resume`, as after any abort.
    pub report_stop: bool,
}

/// Run a tenant's workers until its queue is drained or it stops. After a stop of the run,
/// rows in flight get `grace` to finish; then they are abandoned to the next `--resume`, which
/// finds them in the journal and reconciles them. A tenant that stops while the others go on
/// lets its rows in flight finish (each request is bounded by the request timeout), so that
/// every one of its rows is reported.
pub async fn work(lane: LaneWork, results: mpsc::Sender<RowResult>, grace_period: Duration) {
    let LaneWork {
        mut queue,
        workers,
        seats,
        report_stop,
    } = lane;
    let halt = workers.budget.halt();
    let run = workers.halt.clone();
    // The tenant stopped and the run did not: its rows are reported, not left.
    let stopped_alone = || report_stop && halt.is_stopped() && !run.is_stopped();
    let rows = futures::stream::unfold(&mut queue, |q| async {
        match q.recv().await {
            Ok(item) => item.map(|i| (i, q)),
            Err(e) => {
                run.abort(format!("cannot read back a tenant's waiting rows: {e}"));
                None
            }
        }
    })
    .take_until(halt.token().clone().cancelled_owned());
    let dispatch = rows.for_each_concurrent(seats.started_most(), |item| {
        let (workers, results, seats) = (workers.clone(), results.clone(), seats.clone());
        async move {
            let result = match workers.process(&item, &seats).await {
                Ok(result) => result,
                Err(sent) if stopped_alone() => stopped(&item, workers.budget.halt(), sent),
                Err(_) => return,
            };
            workers.budget.row_finished(&result);
            // The writer only goes away on a write error, which has stopped the run.
            let _ = results.send(result).await;
        }
    });
    let grace = async {
        if report_stop {
            run.stopped().await;
        } else {
            halt.stopped().await;
        }
        tokio::time::sleep(grace_period).await;
    };
    tokio::select! {
        () = dispatch => {}
        () = grace => tracing::warn!(
            "rows still in flight after {grace_period:?} were abandoned; --resume will reconcile them"
        ),
    }
    // Every row the stopped tenant still has waiting: failed, with the reason.
    while stopped_alone() {
        let Ok(Some(item)) = queue.recv().await else {
            break;
        };
        let r = stopped(&item, halt, Unfinished::default());
        if results.send(r).await.is_err() {
            break;
        }
    }
}

/// A row its tenant's stop kept from finishing: failed with the stop's code and reason, and
/// what it had sent by then.
fn stopped(item: &WorkItem, halt: &crate::halt::Halt, sent: Unfinished) -> RowResult {
    let mut message = halt.reason().unwrap_or_else(|| "the tenant stopped".into());
    if sent.attempts > 0 {
        message.push_str(&format!(
            " ({} request(s) for this row were sent before the stop: --resume reads it back \
             before sending again)",
            sent.attempts
        ));
    }
    let code = halt.code().unwrap_or("TenantStopped").to_string();
    let mut r = failed(&item.job, ErrorInfo { code, message });
    r.device_id = item.device.to_string();
    r.attempts = sent.attempts;
    if let Some(last) = sent.last {
        r.http_status = last.http_status;
        r.request_id = last.request_id;
        r.client_request_id = Some(last.client_request_id);
    }
    r
}
