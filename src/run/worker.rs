//! A worker carries one row from its first request to its final answer: a seat, leave from
//! the budget, a token, the journal entry, the request, and the row's state machine deciding
//! what follows. A row waiting out its own retry delay gives its seat back meanwhile: seats
//! bound requests in flight, and a lone fault should delay its row, not the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use tokio::time::Instant;
use uuid::Uuid;

use crate::action::{Action, Work};
use crate::budget::{Budget, Permit};
use crate::graph::answer::Attempt;
use crate::graph::client::GraphClient;
use crate::halt::Halt;
use crate::input::Job;
use crate::output::{Change, Journal, RowResult};
use crate::retry::RowRetry;

use super::assigned::Assigned;
use super::row::{Finish, Next, Request, RowState};
use super::seats::Seats;

/// What every worker shares.
pub struct Workers {
    pub graph: GraphClient,
    pub budget: Arc<Budget>,
    pub journal: Arc<Journal>,
    /// The run's own stop (a journal that cannot be written stops every tenant).
    pub halt: Arc<Halt>,
    pub reconciliations: AtomicU64,
    /// The tags devices carried before the run (tag runs): recorded with each row for `undo`.
    pub tags: Arc<super::tags::Tags>,
    /// Assign runs: the devices the identity listing (read beside the rows) showed
    /// `notAssigned` so far.
    pub assigned: Arc<Assigned>,
}

/// A row on its way to a worker.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WorkItem {
    pub job: Job,
    /// The device's identity id (the row's own, or its serial number's).
    pub device: Uuid,
    /// Reconcile (GET) before the first POST: an earlier run may have sent it.
    pub reconcile: bool,
}

impl WorkItem {
    /// Whether the row reads its device before its first write: an earlier run may have sent
    /// it, or (assign) the identity listing has not shown the device `notAssigned`, so it may
    /// hold an identical assignment already. Asked when the row starts, not when it was read
    /// from the input: the listing goes on beside the rows.
    pub fn reads_first(&self, assigned: &Assigned) -> bool {
        self.reconcile
            || (self.job.work.action() == Action::Assign && assigned.must_look(self.device))
    }
}

/// A row its tenant or the run stopped before its final answer: what it had sent by then.
#[derive(Debug, Default)]
pub struct Unfinished {
    pub attempts: u32,
    /// The last answer (or transport failure), if a request was sent.
    pub last: Option<Attempt<()>>,
}

impl Workers {
    /// One row. `Err`: the run (or the row's tenant) stopped before the row finished; a single
    /// tenant's run leaves it out of the results so that `--resume` does it (the journal names
    /// it if a request may have gone).
    pub async fn process(&self, item: &WorkItem, seats: &Seats) -> Result<RowResult, Unfinished> {
        let reconcile = item.reads_first(&self.assigned);
        let WorkItem { job, device, .. } = item;
        let device = *device;
        let budget = &self.budget;
        let started = Instant::now();
        let mut retry = budget.start_row();
        let mut row = RowState::new(reconcile);
        let mut journaled = false;
        let mut sent: Option<Attempt<()>> = None;
        let unfinished = |row: &RowState, last: Option<Attempt<()>>| Unfinished {
            attempts: row.attempts(),
            last,
        };
        let change = match &job.work {
            Work::Tag(set) => {
                self.tags
                    .previous(device)
                    .map_or(Change::None, |previous| Change::Tag {
                        set: set.clone(),
                        previous,
                    })
            }
            Work::Assign(_) | Work::Group(_) => Change::None,
        };
        let result = |finish, last: &Attempt<()>, attempts| {
            let mut r = result(job, device, finish, last, attempts, started);
            r.change = change.clone();
            r
        };
        let mut seat = seats.take().await;
        loop {
            if seat.is_none() {
                seat = seats.take().await;
            }
            // A reconciling GET is a read: a request-quota cell, never a write slot.
            let permit = match row.request() {
                Request::Post => budget.admit().await,
                Request::Reconcile { .. } => budget.admit_read().await,
            };
            let Some(permit) = permit else {
                return Err(unfinished(&row, sent));
            };
            let Some(token) = budget.token().await else {
                return Err(unfinished(&row, sent));
            };
            if !journaled {
                // Durably note the intent before the first request can reach the service.
                if let Err(e) = self.journal.record(job.row, device).await {
                    self.halt.abort_as(
                    crate::codes::UNWRITABLE,
                    format!("cannot write the journal: {e}; --resume continues from what was written"),
                );
                    return Err(unfinished(&row, sent));
                }
                journaled = true;
            }
            // A stop while this row waited for its token or journal entry: never sent.
            let Some((permit, out)) = budget.sending(permit, 1) else {
                return Err(unfinished(&row, sent));
            };
            row.sending(&token);
            let answered = self
                .send(&mut row, &job.work, device, &token, permit, &mut retry)
                .await;
            drop(out);
            let Some((next, last)) = answered else {
                // Group rows are added in twenties by the tenant's group lane, never here.
                return Ok(result(internal_error(), &no_answer(), row.attempts()));
            };
            tracing::debug!(row = job.row, status = ?last.http_status, request_id = ?last.request_id, next = ?next, "answered");
            match next {
                Next::Finish(finish) => {
                    return Ok(result(finish, &last, row.attempts()));
                }
                Next::Refresh { why } => budget.token_refused(&token, &why).await,
                Next::Again(delay) => {
                    if !delay.is_zero() {
                        seat = None;
                    }
                    if !budget.wait(delay).await {
                        return Err(unfinished(&row, Some(last)));
                    }
                }
            }
            sent = Some(last);
        }
    }
}

impl Workers {
    /// The request the row's state asks for, for its action, and what follows its answer.
    /// `None` for an action this worker does not send (a group row).
    async fn send(
        &self,
        row: &mut RowState,
        work: &Work,
        device: Uuid,
        token: &Arc<str>,
        permit: Permit,
        retry: &mut RowRetry,
    ) -> Option<(Next, Attempt<()>)> {
        let budget = &self.budget;
        match (row.request(), work) {
            (Request::Post, Work::Tag(tag)) => {
                let a = self.graph.set_group_tag(token, device, tag).await;
                let pause = budget.settle(permit, &a, retry, row.attempts());
                Some((row.tagged(&a, pause, token), a.meta()))
            }
            (Request::Reconcile { .. }, Work::Tag(tag)) => {
                self.reconciliations.fetch_add(1, Ordering::Relaxed);
                let a = self.graph.identity(token, device).await;
                let pause = budget.settle(permit, &a, retry, row.attempts());
                Some((row.read_back(&a, tag, pause, token), a.meta()))
            }
            (Request::Post, Work::Assign(assignment)) => {
                let a = self.graph.post(token, device, assignment).await;
                let pause = budget.settle(permit, &a, retry, row.attempts());
                Some((row.posted(&a, pause, token), a.meta()))
            }
            (Request::Reconcile { page }, Work::Assign(assignment)) => {
                self.reconciliations.fetch_add(1, Ordering::Relaxed);
                let page = page.map(str::to_string);
                let a = self.graph.list(token, device, page.as_deref()).await;
                let pause = budget.settle(permit, &a, retry, row.attempts());
                Some((row.listed(&a, assignment, pause, token), a.meta()))
            }
            (_, Work::Group(_)) => None,
        }
    }
}

/// A row that reached a stage that is not its action's: a bug, reported as data.
fn internal_error() -> Finish {
    Finish {
        status: crate::output::Status::Failed,
        assignment_id: None,
        error: Some(crate::graph::answer::ErrorInfo {
            code: crate::codes::INTERNAL.into(),
            message: "a group row reached the one-row worker".into(),
        }),
    }
}

/// The answer of a request never sent.
fn no_answer() -> Attempt<()> {
    Attempt {
        result: Ok(()),
        http_status: None,
        request_id: None,
        client_request_id: String::new(),
    }
}

fn result(
    job: &Job,
    device: Uuid,
    f: Finish,
    last: &Attempt<()>,
    attempts: u32,
    started: Instant,
) -> RowResult {
    RowResult {
        row: job.row,
        device_id: device.to_string(),
        status: f.status,
        http_status: last.http_status,
        assignment_id: f.assignment_id,
        attempts,
        error_code: f.error.as_ref().map(|e| e.code.clone()),
        error_message: f.error.map(|e| e.message),
        request_id: last.request_id.clone(),
        client_request_id: Some(last.client_request_id.clone()),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        finished_at: SystemTime::now(),
        serial_number: job.device.serial().map(str::to_string),
        tenant: job.tenant.clone(),
        change: Change::None,
    }
}
