//! One row's undo through its tenant's budget: the journal entry before the first write, the
//! request with its retries, and what the answer means. A 404 is `gone` (already not there),
//! or `undone` when this undo's journal (or an earlier attempt whose answer was lost) says it
//! was this undo's own request that removed it.

use std::future::Future;
use std::sync::Arc;

use uuid::Uuid;

use super::sheet::UndoStatus;
use super::source::Step;
use crate::action::tag::carries;
use crate::budget::{Budget, Pause};
use crate::codes;
use crate::graph::answer::{Attempt, ErrorInfo, Failure};
use crate::graph::client::GraphClient;
use crate::output::Journal;

/// Where a tenant's requests go: Intune's budget, and the directory's for member removals.
pub struct Reach {
    pub budget: Arc<Budget>,
    pub graph: GraphClient,
    pub directory: Option<(Arc<Budget>, GraphClient)>,
}

/// How a row ended.
#[derive(Debug)]
pub struct Done {
    pub status: UndoStatus,
    pub http_status: Option<u16>,
    pub error: Option<ErrorInfo>,
    pub attempts: u32,
}

/// The budget (or the run) stopped before the row finished: `--resume` does it.
#[derive(Debug)]
pub struct Stopped;

/// The final answer to one request, after its retries.
struct Answer<T> {
    result: Result<T, Failure>,
    http_status: Option<u16>,
    /// An earlier attempt's answer was lost: it may have been carried out.
    maybe_done: bool,
}

/// One request through `budget`, retried as the budget decides; a 401 earns one fresh token.
async fn send<T, F, Fut>(budget: &Budget, attempts: &mut u32, send: F) -> Result<Answer<T>, Stopped>
where
    F: Fn(Arc<str>) -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    let mut retry = budget.start_row();
    let (mut refreshed, mut maybe_done) = (false, false);
    loop {
        let permit = budget.admit().await.ok_or(Stopped)?;
        let token = budget.token().await.ok_or(Stopped)?;
        *attempts += 1;
        let attempt = send(token.clone()).await;
        let pause = budget.settle(permit, &attempt, &mut retry, *attempts);
        match (&attempt.result, pause) {
            (Err(Failure::Unauthorized(e)), _) if !refreshed => {
                refreshed = true;
                budget.token_refused(&token, &e.message).await;
            }
            (Err(Failure::Retry { ambiguous, .. }), Pause::Retry(delay)) => {
                maybe_done |= *ambiguous;
                if !budget.wait(delay).await {
                    return Err(Stopped);
                }
            }
            _ => {
                return Ok(Answer {
                    result: attempt.result,
                    http_status: attempt.http_status,
                    maybe_done,
                });
            }
        }
    }
}

/// Carry out `step` for `row`. `journaled`: an earlier undo of this file may have sent it.
pub async fn perform(
    step: &Step,
    row: u64,
    reach: &Reach,
    journal: &Journal,
    journaled: bool,
) -> Result<Done, Stopped> {
    let mut attempts = 0;
    let record = |device: Uuid| async move {
        journal.record(row, device).await.map_err(|e| {
            tracing::error!("cannot write the journal: {e}");
            Stopped
        })
    };
    let (answer, journaled) = match step {
        Step::Skip { .. } => return Ok(skipped(None, 0)),
        Step::Delete { device, assignment } => {
            record(*device).await?;
            let (budget, graph) = (&reach.budget, &reach.graph);
            let a = send(budget, &mut attempts, |t| async move {
                graph.delete_assignment(&t, *device, assignment).await
            })
            .await?;
            (a, journaled)
        }
        Step::Remove {
            device,
            group,
            member,
        } => {
            record(*device).await?;
            let (budget, graph) = match &reach.directory {
                Some((budget, graph)) => (budget, graph),
                None => (&reach.budget, &reach.graph),
            };
            let a = send(budget, &mut attempts, |t| async move {
                graph.remove_member(&t, *group, *member).await
            })
            .await?;
            (a, journaled)
        }
        Step::Restore {
            device,
            set,
            previous,
        } => {
            return restore(
                *device,
                set,
                previous,
                reach,
                &mut attempts,
                record,
                journaled,
            )
            .await;
        }
    };
    Ok(finish(answer, attempts, journaled))
}

/// What a write's answer means for the row.
fn finish(a: Answer<()>, attempts: u32, journaled: bool) -> Done {
    let done = |status, error| Done {
        status,
        http_status: a.http_status,
        error,
        attempts,
    };
    match a.result {
        Ok(()) => done(UndoStatus::Undone, None),
        Err(Failure::Permanent(_)) if a.http_status == Some(404) && (journaled || a.maybe_done) => {
            let note = ErrorInfo {
                code: String::new(),
                message: "removed by an earlier attempt of this undo".into(),
            };
            done(UndoStatus::Undone, Some(note))
        }
        Err(Failure::Permanent(e)) if a.http_status == Some(404) => done(UndoStatus::Gone, Some(e)),
        Err(f) => done(UndoStatus::Failed, Some(f.error().clone())),
    }
}

fn skipped(error: Option<ErrorInfo>, attempts: u32) -> Done {
    Done {
        status: UndoStatus::Skipped,
        http_status: None,
        error,
        attempts,
    }
}

/// Read the identity's tag: still the one the run set → set it back; already the one before
/// → nothing to do; anything else → someone retagged it since: left as it is.
async fn restore<R, RF>(
    device: Uuid,
    set: &str,
    previous: &str,
    reach: &Reach,
    attempts: &mut u32,
    record: R,
    journaled: bool,
) -> Result<Done, Stopped>
where
    R: FnOnce(Uuid) -> RF,
    RF: Future<Output = Result<(), Stopped>>,
{
    let (budget, graph) = (&reach.budget, &reach.graph);
    let read = send(budget, attempts, |t| async move {
        graph.identity(&t, device).await
    })
    .await?;
    let current = match read.result {
        Ok(identity) => identity.group_tag.unwrap_or_default(),
        Err(e) => {
            let gone = read.http_status == Some(404);
            return Ok(Done {
                status: if gone {
                    UndoStatus::Gone
                } else {
                    UndoStatus::Failed
                },
                http_status: read.http_status,
                error: Some(e.error().clone()),
                attempts: *attempts,
            });
        }
    };
    if carries(Some(&current), previous) {
        let status = if journaled {
            UndoStatus::Undone
        } else {
            UndoStatus::Gone
        };
        let message = if journaled {
            "set back by an earlier attempt of this undo"
        } else {
            "it already carries the tag it had before the run"
        };
        let note = ErrorInfo {
            code: String::new(),
            message: message.into(),
        };
        return Ok(Done {
            status,
            http_status: read.http_status,
            error: Some(note),
            attempts: *attempts,
        });
    }
    if !carries(Some(&current), set) {
        let error = ErrorInfo {
            code: codes::RETAGGED.into(),
            message: format!(
                "retagged since the run: it carries {:?}, not {set:?} the run set; left as it is",
                crate::output::printable(&current)
            ),
        };
        return Ok(skipped(Some(error), *attempts));
    }
    record(device).await?;
    let a = send(budget, attempts, |t| async move {
        graph.set_group_tag(&t, device, previous).await
    })
    .await?;
    Ok(finish(a, *attempts, false))
}
