//! Deleting this run's import records as their devices settle, a few at a time, beside the
//! other stages.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::advice;
use super::reach::{LOST_ROUNDS, Reach};
use super::send::{self, Sent, Stopped};
use crate::graph::answer::ErrorInfo;

/// Delete queued records, a few at a time, as the run goes; what cannot be deleted is left
/// (and counted). A delete is safe to repeat: one whose answer was lost is sent again, and a
/// 404 then says the first one did it.
pub(super) async fn delete_all(
    reach: &Reach,
    rx: mpsc::UnboundedReceiver<Uuid>,
    concurrency: usize,
) {
    let queue = futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|id| (id, rx)) },
    );
    queue
        .for_each_concurrent(concurrency, |id| async move {
            match delete_one(reach, id).await {
                Ok(()) => reach.counts.records_deleted.inc(),
                Err(why) => {
                    reach.counts.records_left.inc();
                    if let Some(e) = why {
                        let message = format!(
                            "cannot delete import record {id}: {}: {}",
                            e.code, e.message
                        );
                        let message = crate::connect::named(reach.key.as_deref(), message);
                        tracing::warn!("{}", crate::output::printable(&message));
                    }
                }
            }
        })
        .await;
}

/// One record deleted (or found gone); `Err(None)`: stopped first.
async fn delete_one(reach: &Reach, id: Uuid) -> Result<(), Option<ErrorInfo>> {
    let (budget, graph, counts) = (&reach.budget, &reach.graph, &reach.counts);
    let mut attempts = 0;
    let mut backoff = budget.start_row();
    for round in 0..LOST_ROUNDS {
        if round > 0 {
            let pause = backoff.next_backoff().unwrap_or(Duration::from_secs(1));
            if !budget.wait(pause).await {
                return Err(None);
            }
        }
        let sent = send::write(budget, &mut attempts, |t| {
            counts.deletes.inc();
            async move { graph.delete_imported(&t, id).await }
        })
        .await
        .map_err(|Stopped| None)?;
        match sent {
            Sent::Done(())
            | Sent::Refused {
                http_status: Some(404),
                ..
            } => return Ok(()),
            Sent::Refused { error, .. } => return Err(Some(error)),
            Sent::Unknown(_) => {}
        }
    }
    Err(Some(ErrorInfo {
        code: advice::UNKNOWN.into(),
        message: format!("its answer was lost {LOST_ROUNDS} times"),
    }))
}
