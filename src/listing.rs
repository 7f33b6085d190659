//! Reads through a tenant's budget: the paged listing of its Autopilot identities, and single
//! read requests with their retries.
//!
//! Reads are requests against the same budget as the assignments: each page takes a window
//! slot and a quota cell, waits for the gate, and hands its answer to the budget, which decides
//! the pause. Used by serial-number resolution and by `status`.

use std::collections::HashSet;
use std::sync::Arc;

use crate::budget::{Budget, Pause};
use crate::graph::answer::{Attempt, Failure};
use crate::graph::client::GraphClient;
use crate::graph::model::Identity;

/// Identities per page asked for (`$top`). Graph caps pages; 100 is what it serves by default
/// for this listing, so the request count is predictable: ⌈identities ÷ 100⌉.
pub const PAGE_SIZE: u32 = 100;

/// What a listing read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    pub pages: u64,
    pub identities: u64,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ReadError {
    /// A next link came back that was already followed: the service's paging loops.
    #[error(
        "the identity listing repeats a page it already gave ({0:.200}): a known paging loop of \
         the service; stopped instead of reading it again"
    )]
    PagingLoop(String),
    #[error("{code}: {message}")]
    Failed { code: String, message: String },
    /// The budget (or the run) stopped: its reason is reported there.
    #[error("stopped")]
    Stopped,
}

/// Read every page of the tenant's identities, handing each identity to `each`.
pub async fn each_identity(
    graph: &GraphClient,
    budget: &Budget,
    mut each: impl FnMut(Identity),
    mut on_page: impl FnMut(Listed),
) -> Result<Listed, ReadError> {
    let mut next: Option<String> = None;
    let mut followed = HashSet::new();
    let mut listed = Listed::default();
    loop {
        let link = next.clone();
        let page = read(budget, |token| {
            let link = link.clone();
            async move { graph.identities(&token, PAGE_SIZE, link.as_deref()).await }
        })
        .await?;
        listed.pages += 1;
        listed.identities += page.value.len() as u64;
        page.value.into_iter().for_each(&mut each);
        on_page(listed);
        match page.next_link {
            None => return Ok(listed),
            Some(link) if !followed.insert(link.clone()) => {
                return Err(ReadError::PagingLoop(link));
            }
            Some(link) => next = Some(link),
        }
    }
}

/// One read through the budget, retried as the budget decides; a 401 earns one fresh token.
pub async fn read<T, F, Fut>(budget: &Budget, send: F) -> Result<T, ReadError>
where
    F: Fn(Arc<str>) -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    let mut retry = budget.start_row();
    let mut attempts = 0;
    let mut refreshed = false;
    loop {
        let permit = budget.admit().await.ok_or(ReadError::Stopped)?;
        let token = budget.token().await.ok_or(ReadError::Stopped)?;
        attempts += 1;
        let attempt = send(token.clone()).await;
        let pause = budget.settle(permit, &attempt, &mut retry, attempts);
        let failure = match attempt.result {
            Ok(value) => return Ok(value),
            Err(f) => f,
        };
        match (&failure, pause) {
            (Failure::Unauthorized(e), _) if !refreshed => {
                refreshed = true;
                budget.token_refused(&token, &e.message).await;
            }
            (Failure::Retry { .. }, Pause::Retry(delay)) => {
                if !budget.wait(delay).await {
                    return Err(ReadError::Stopped);
                }
            }
            _ => {
                let e = failure.error();
                return Err(ReadError::Failed {
                    code: e.code.clone(),
                    message: e.message.clone(),
                });
            }
        }
    }
}
