//! One request of the import through its tenant's budget, apart from what it means: the write
//! is tried again only when the service surely did not carry it out (a 429, a 503 before
//! processing); an answer lost in flight comes back as [`Sent::Unknown`], so that the caller
//! reads the records before sending a device again. Importing a hash twice is what this
//! module exists to prevent.

use std::future::Future;
use std::sync::Arc;

use crate::budget::{Budget, Pause};
use crate::graph::answer::{Attempt, ErrorInfo, Failure};

/// The budget (or the run) stopped first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// How a write ended.
#[derive(Debug)]
pub enum Sent<T> {
    Done(T),
    /// Refused for good (or given up after its retries): it was not carried out.
    Refused {
        http_status: Option<u16>,
        error: ErrorInfo,
    },
    /// The answer was lost: it may have been carried out.
    Unknown(ErrorInfo),
}

/// Send a write until it is answered, retrying only what cannot have been carried out; a 401
/// earns one fresh token. `attempts` counts every request sent.
pub async fn write<T, F, Fut>(
    budget: &Budget,
    attempts: &mut u32,
    send: F,
) -> Result<Sent<T>, Stopped>
where
    F: Fn(Arc<str>) -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    let mut retry = budget.start_row();
    let mut refreshed = false;
    loop {
        let permit = budget.admit().await.ok_or(Stopped)?;
        let token = budget.token().await.ok_or(Stopped)?;
        *attempts += 1;
        let attempt = send(token.clone()).await;
        let pause = budget.settle(permit, &attempt, &mut retry, *attempts);
        let failure = match attempt.result {
            Ok(value) => return Ok(Sent::Done(value)),
            Err(f) => f,
        };
        match (failure, pause) {
            (Failure::Unauthorized(e), _) if !refreshed => {
                refreshed = true;
                budget.token_refused(&token, &e.message).await;
            }
            (
                Failure::Retry {
                    ambiguous: true,
                    error,
                    ..
                },
                _,
            ) => return Ok(Sent::Unknown(error)),
            (Failure::Retry { .. }, Pause::Retry(delay)) => {
                if !budget.wait(delay).await {
                    return Err(Stopped);
                }
            }
            (f, _) => {
                return Ok(Sent::Refused {
                    http_status: attempt.http_status,
                    error: f.error().clone(),
                });
            }
        }
    }
}

/// One read (no write slot), retried as the budget decides; `Err(Some)`: it failed for good.
pub async fn read<T, F, Fut>(budget: &Budget, send: F) -> Result<T, Option<ErrorInfo>>
where
    F: Fn(Arc<str>) -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    use crate::listing::ReadError;
    crate::listing::read(budget, send)
        .await
        .map_err(|e| match e {
            ReadError::Stopped => None,
            ReadError::Failed { code, message } => Some(ErrorInfo { code, message }),
            ReadError::PagingLoop(m) => Some(ErrorInfo {
                code: "PagingLoop".into(),
                message: m,
            }),
        })
}
