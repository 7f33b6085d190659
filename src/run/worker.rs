//! A worker carries one row from its first request to its final answer: leave from the
//! budget, a token, the journal entry, the request, and the row's state machine deciding what
//! follows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use tokio::time::Instant;
use uuid::Uuid;

use crate::budget::Budget;
use crate::graph::answer::Attempt;
use crate::graph::client::GraphClient;
use crate::halt::Halt;
use crate::input::Job;
use crate::output::{Journal, RowResult};

use super::row::{Finish, Next, Request, RowState};

/// What every worker shares.
pub struct Workers {
    pub graph: GraphClient,
    pub budget: Arc<Budget>,
    pub journal: Arc<Journal>,
    /// The run's own stop (a journal that cannot be written stops every tenant).
    pub halt: Arc<Halt>,
    pub reconciliations: AtomicU64,
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

impl Workers {
    /// One row. `None`: the run stopped before the row finished; it is left out of the results
    /// so that `--resume` does it (the journal names it if a request may have gone).
    pub async fn process(&self, item: &WorkItem) -> Option<RowResult> {
        let WorkItem {
            job,
            device,
            reconcile,
        } = item;
        let (device, reconcile) = (*device, *reconcile);
        let budget = &self.budget;
        let started = Instant::now();
        let mut retry = budget.start_row();
        let mut row = RowState::new(reconcile);
        let mut journaled = false;
        loop {
            let permit = budget.admit().await?;
            let token = budget.token().await?;
            if !journaled {
                // Durably note the intent before the first request can reach the service.
                if let Err(e) = self.journal.record(job.row, device).await {
                    self.halt.abort(format!("cannot write the journal: {e}"));
                    return None;
                }
                journaled = true;
            }
            row.sending(&token);
            let (next, last) = match (row.request(), job.tag.as_deref()) {
                (Request::Post, Some(tag)) => {
                    let a = self.graph.set_group_tag(&token, device, tag).await;
                    let pause = budget.settle(permit, &a, &mut retry, row.attempts());
                    (row.tagged(&a, pause, &token), a.meta())
                }
                (Request::Reconcile { .. }, Some(tag)) => {
                    self.reconciliations.fetch_add(1, Ordering::Relaxed);
                    let a = self.graph.identity(&token, device).await;
                    let pause = budget.settle(permit, &a, &mut retry, row.attempts());
                    (row.read_back(&a, tag, pause, &token), a.meta())
                }
                (Request::Post, None) => {
                    let a = self.graph.post(&token, device, &job.assignment).await;
                    let pause = budget.settle(permit, &a, &mut retry, row.attempts());
                    (row.posted(&a, pause, &token), a.meta())
                }
                (Request::Reconcile { page }, None) => {
                    self.reconciliations.fetch_add(1, Ordering::Relaxed);
                    let page = page.map(str::to_string);
                    let a = self.graph.list(&token, device, page.as_deref()).await;
                    let pause = budget.settle(permit, &a, &mut retry, row.attempts());
                    (row.listed(&a, &job.assignment, pause, &token), a.meta())
                }
            };
            tracing::debug!(row = job.row, status = ?last.http_status, request_id = ?last.request_id, next = ?next, "answered");
            match next {
                Next::Finish(finish) => {
                    return Some(result(job, device, finish, &last, row.attempts(), started));
                }
                Next::Refresh { why } => budget.token_refused(&token, &why).await,
                Next::Again(delay) => {
                    if !budget.wait(delay).await {
                        return None;
                    }
                }
            }
        }
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
    }
}
