//! Reads through a tenant's budget: the paged listing of its Autopilot identities, and single
//! read requests with their retries.
//!
//! Reads are requests against the same budget as the assignments: each page takes a window
//! slot and a quota cell, waits for the gate, and hands its answer to the budget, which decides
//! the pause. Used by serial-number resolution and by `status`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::budget::{Budget, Pause};
use crate::graph::answer::{Attempt, Failure, Page};
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

/// Consecutive pages that add no identity not given before, while still naming a next page,
/// before the listing is taken for a loop. A service that changes its `$skiptoken` each page
/// defeats the repeated-link check; this catches it repeating content or sending empty pages.
pub const MAX_BARREN_PAGES: u32 = 5;

/// Pages read at most when the service gives no `@odata.count`: two million identities at a
/// full page each, more than any tenant holds.
pub const MAX_PAGES: u64 = 20_000;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ReadError {
    /// The service's paging loops (or would never end): the reason says which way.
    #[error(
        "the identity listing loops: {0}; stopped instead of reading on (a known paging loop of \
         the service)"
    )]
    PagingLoop(String),
    #[error("{code}: {message}")]
    Failed { code: String, message: String },
    /// The budget (or the run) stopped: its reason is reported there.
    #[error("stopped")]
    Stopped,
}

impl ReadError {
    /// Why, without the words naming the identity listing: for a [`Pager`] of another list.
    pub fn reason(&self) -> String {
        match self {
            ReadError::PagingLoop(why) => why.clone(),
            other => other.to_string(),
        }
    }
}

/// Decides, page by page, whether a listing goes on. It ends on the first page without a next
/// link, on a next link already followed, after [`MAX_BARREN_PAGES`] pages in a row that add
/// no new identity id, or past a page cap (from `@odata.count` when given, else
/// [`MAX_PAGES`]). Ids are kept as hashes: a hostile listing costs 8 bytes an id, no more.
#[derive(Debug, Default, Clone)]
pub struct Pager {
    followed: HashSet<String>,
    seen: HashSet<u64>,
    hasher: std::hash::RandomState,
    barren: u32,
    pages: u64,
    count: Option<u64>,
    /// A cap below [`MAX_PAGES`] for a list known to be short (see [`Pager::at_most`]).
    most: Option<u64>,
}

/// Pages of one device's deployment profile assignments read at most: a device holds one or
/// two assignments, which Graph serves on one page.
pub const MAX_ASSIGNMENT_PAGES: u64 = 100;

impl Pager {
    /// A pager for a list that cannot rightly take more than `pages` pages.
    pub fn at_most(pages: u64) -> Pager {
        Pager {
            most: Some(pages),
            ..Pager::default()
        }
    }

    /// Take in one page read: the ids of its identities, its `@odata.count` and next link.
    /// `Ok(Some(link))`: read that page next; `Ok(None)`: the listing is complete.
    pub fn turn<'a>(
        &mut self,
        ids: impl IntoIterator<Item = &'a str>,
        count: Option<u64>,
        next: Option<String>,
    ) -> Result<Option<String>, ReadError> {
        use std::hash::BuildHasher;
        self.pages += 1;
        let mut fresh = false;
        for id in ids {
            fresh |= self.seen.insert(self.hasher.hash_one(id));
        }
        self.barren = if fresh { 0 } else { self.barren + 1 };
        self.count = self.count.max(count);
        let Some(link) = next else { return Ok(None) };
        if !self.followed.insert(link.clone()) {
            return Err(ReadError::PagingLoop(format!(
                "it gave again a next link it already gave ({link:.200})"
            )));
        }
        if self.barren >= MAX_BARREN_PAGES {
            return Err(ReadError::PagingLoop(format!(
                "{} pages in a row, each with a new next link, added no identity it had not \
                 already given",
                self.barren
            )));
        }
        let cap = self.cap();
        if self.pages >= cap {
            return Err(ReadError::PagingLoop(match self.count {
                _ if self.most == Some(cap) => format!(
                    "it still names a next page after {} pages, more than such a list holds",
                    self.pages
                ),
                Some(n) if cap < MAX_PAGES => format!(
                    "it still names a next page after {} pages, more than the {n} identities \
                     it counts could fill",
                    self.pages
                ),
                _ => format!(
                    "it still names a next page after {} pages, more than any tenant holds",
                    self.pages
                ),
            }));
        }
        Ok(Some(link))
    }

    /// Pages the listing may take: a tenant of `n` identities fills at most `n` pages that add
    /// one, and before each of them and after the last fewer than [`MAX_BARREN_PAGES`] barren
    /// ones may pass the loop check: `(n + 1) × MAX_BARREN_PAGES` at most. (A cap of `n` plus
    /// one run of barren pages refused an honest listing with empty pages here and there.)
    fn cap(&self) -> u64 {
        let most = self.most.unwrap_or(MAX_PAGES).min(MAX_PAGES);
        self.count.map_or(most, |n| {
            n.saturating_add(1)
                .saturating_mul(u64::from(MAX_BARREN_PAGES))
                .min(most)
        })
    }
}

/// Read every page of the tenant's identities, handing each identity to `each`.
pub async fn each_identity(
    graph: &GraphClient,
    budget: &Budget,
    each: impl FnMut(Identity),
    mut on_page: impl FnMut(Listed),
) -> Result<Listed, ReadError> {
    let go_on = move |listed| {
        on_page(listed);
        true
    };
    each_identity_while(graph, budget, each, go_on).await
}

/// [`each_identity`], stopping after any page for which `go_on` says `false` (a run that
/// reads the listing beside its rows and no longer needs the rest of it).
pub async fn each_identity_while(
    graph: &GraphClient,
    budget: &Budget,
    each: impl FnMut(Identity),
    go_on: impl FnMut(Listed) -> bool,
) -> Result<Listed, ReadError> {
    let fetch = |link: Option<String>| async move {
        read_of(budget, "the identity listing", |token| {
            let link = link.clone();
            async move { graph.identities(&token, PAGE_SIZE, link.as_deref()).await }
        })
        .await
    };
    walk(fetch, each, go_on).await
}

/// The paging loop, apart from how a page is fetched (`None`: the first page): every
/// identity of every page read reaches `each`, also on the page that stops the listing.
async fn walk<F, Fut>(
    mut fetch: F,
    mut each: impl FnMut(Identity),
    mut go_on: impl FnMut(Listed) -> bool,
) -> Result<Listed, ReadError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page<Identity>, ReadError>>,
{
    let mut next: Option<String> = None;
    let mut pager = Pager::default();
    let mut listed = Listed::default();
    loop {
        let page = fetch(next.take()).await?;
        listed.pages += 1;
        listed.identities += page.value.len() as u64;
        let turn = pager.turn(
            page.value.iter().map(|i| i.id.as_str()),
            page.count,
            page.next_link,
        );
        page.value.into_iter().for_each(&mut each);
        if !go_on(listed) {
            return Ok(listed);
        }
        match turn? {
            None => return Ok(listed),
            Some(link) => next = Some(link),
        }
    }
}

/// One read through the budget (a request-quota cell, no write slot), retried as the budget
/// decides; a 401 earns one fresh token.
pub async fn read<T, F, Fut>(budget: &Budget, send: F) -> Result<T, ReadError>
where
    F: Fn(Arc<str>) -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    request(budget, "a read", send, false).await
}

/// [`read`], naming what is read (`the identity listing`) in the warning each retry gives and
/// in the reason it gives up with.
pub async fn read_of<T, F, Fut>(budget: &Budget, what: &str, send: F) -> Result<T, ReadError>
where
    F: Fn(Arc<str>) -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    request(budget, what, send, false).await
}

/// One write sent alone (not a row's: `profiles assign`), retried as [`read`] is, through a
/// write slot.
pub async fn write<T, F, Fut>(budget: &Budget, send: F) -> Result<T, ReadError>
where
    F: Fn(Arc<str>) -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    request(budget, "a write", send, true).await
}

async fn request<T, F, Fut>(
    budget: &Budget,
    what: &str,
    send: F,
    write: bool,
) -> Result<T, ReadError>
where
    F: Fn(Arc<str>) -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    let mut retry = budget.start_row();
    let started = tokio::time::Instant::now();
    let mut attempts = 0;
    let mut refreshed = false;
    loop {
        let permit = if write {
            budget.admit().await
        } else {
            budget.admit_read().await
        };
        let permit = permit.ok_or(ReadError::Stopped)?;
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
                warn_retry(what, attempt.http_status, failure.error(), attempts, delay);
                if !budget.wait(delay).await {
                    return Err(ReadError::Stopped);
                }
            }
            (Failure::Retry { .. }, Pause::GiveUp(_)) => {
                let e = failure.error();
                return Err(ReadError::Failed {
                    code: e.code.clone(),
                    message: format!(
                        "{} (gave up on {what} after {attempts} attempts in {})",
                        e.message,
                        humantime::format_duration(Duration::from_secs(
                            started.elapsed().as_secs()
                        ))
                    ),
                });
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

/// What a retried request waits for, one warning a round: without it, a service answering
/// 500 or garbage looks like a hang for minutes. The service's words are made printable.
fn warn_retry(
    what: &str,
    status: Option<u16>,
    e: &crate::graph::answer::ErrorInfo,
    attempts: u32,
    delay: Duration,
) {
    let status = status.map_or_else(|| "no answer".to_string(), |s| format!("HTTP {s}"));
    tracing::warn!(
        "{}",
        crate::output::printable(&format!(
            "{what}: {status}, {}: {} (attempt {attempts}); asking again in {}",
            e.code,
            e.message.chars().take(300).collect::<String>(),
            humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
        ))
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn identity(id: &str) -> Identity {
        serde_json::from_value(serde_json::json!({ "id": id })).unwrap()
    }

    /// How a generated page names its next one.
    #[derive(Debug, Clone)]
    enum Next {
        End,
        /// A link never given before (a fresh `$skiptoken`).
        Fresh,
        /// The link of an earlier page (that many pages back, if there were that many).
        Repeat(usize),
    }

    fn next() -> impl Strategy<Value = Next> {
        prop_oneof![
            1 => Just(Next::End),
            8 => Just(Next::Fresh),
            1 => (1usize..4).prop_map(Next::Repeat),
        ]
    }

    /// A server playing `pages` (ids, count, next) in a cycle, forever unless a page ends it.
    /// The walk, what it handed out, and what the server sent.
    fn play(
        pages: &[(Vec<u8>, Option<u64>, Next)],
    ) -> (Result<Listed, ReadError>, Vec<String>, Vec<String>, u64) {
        let mut served = 0usize;
        let mut sent = Vec::new();
        let mut handed = Vec::new();
        let fetch = |_link: Option<String>| {
            let (ids, count, next) = &pages[served % pages.len()];
            served += 1;
            let page = Page {
                value: ids.iter().map(|i| identity(&format!("id-{i}"))).collect(),
                count: *count,
                next_link: match next {
                    Next::End => None,
                    Next::Fresh => Some(format!("https://graph/x?$skiptoken={served}")),
                    Next::Repeat(back) => Some(format!(
                        "https://graph/x?$skiptoken={}",
                        served.saturating_sub(*back).max(1)
                    )),
                },
            };
            sent.extend(page.value.iter().map(|i| i.id.clone()));
            // An endless walk is the bug: cut it off where the test can see it.
            let result = if served > 100_000 {
                Err(ReadError::Stopped)
            } else {
                Ok(page)
            };
            std::future::ready(result)
        };
        let result = futures::executor::block_on(walk(fetch, |i| handed.push(i.id), |_| true));
        (result, handed, sent, served as u64)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::jsonish::cases(64)))]

        /// Whatever a server sends, the walk ends (never by the cut-off), within the pages the
        /// distinct ids can justify, and every identity sent reached `each`.
        #[test]
        fn any_page_sequence_ends_and_loses_nothing(
            pages in prop::collection::vec(
                (prop::collection::vec(0u8..20, 0..4), prop::option::of(0u64..30), next()),
                1..12,
            )
        ) {
            let (result, handed, sent, read) = play(&pages);
            prop_assert!(!matches!(result, Err(ReadError::Stopped)), "did not end");
            prop_assert_eq!(&handed, &sent);
            let distinct = sent.iter().collect::<HashSet<_>>().len() as u64;
            let bound = (distinct + 1) * u64::from(MAX_BARREN_PAGES);
            prop_assert!(read <= bound.max(1), "{read} pages for {distinct} ids: {result:?}");
        }

        /// An honest listing (distinct ids, fresh links, a few empty pages between, a true
        /// count or none) is read to its end, every identity handed out.
        #[test]
        fn an_honest_listing_is_read_to_its_end(
            sizes in prop::collection::vec(0usize..4, 1..40),
            counted in any::<bool>(),
        ) {
            // At most MAX_BARREN_PAGES - 1 empty pages in a row.
            let mut sizes = sizes;
            let mut empty = 0;
            for s in &mut sizes {
                empty = if *s == 0 { empty + 1 } else { 0 };
                if empty >= MAX_BARREN_PAGES as usize {
                    *s = 1;
                    empty = 0;
                }
            }
            let total: usize = sizes.iter().sum();
            let mut id = 0u8;
            let pages: Vec<_> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let ids = (0..n).map(|_| { id = id.wrapping_add(1); id }).collect();
                    let last = i + 1 == sizes.len();
                    (ids, counted.then_some(total as u64), if last { Next::End } else { Next::Fresh })
                })
                .collect();
            prop_assume!(total < 256);
            let (result, handed, sent, _) = play(&pages);
            prop_assert_eq!(result.map(|l| l.pages), Ok(pages.len() as u64));
            prop_assert_eq!(handed.len(), total);
            prop_assert_eq!(handed, sent);
        }
    }

    /// Found by a long proptest run: one identity among seven empty pages, counted, is an
    /// honest listing (the count bounds pages adding one, not the empty ones between).
    #[test]
    fn empty_pages_here_and_there_in_a_counted_listing_are_no_loop() {
        let mut p = Pager::default();
        let fresh = |n: u32| Some(format!("https://graph/x?$skiptoken={n}"));
        for n in 0..7u32 {
            let ids: &[&str] = if n == 4 { &["a"] } else { &[] };
            assert_eq!(
                p.turn(ids.iter().copied(), Some(1), fresh(n)),
                Ok(fresh(n)),
                "page {n}"
            );
        }
        assert_eq!(p.turn([], Some(1), None), Ok(None));
    }

    #[test]
    fn each_way_of_looping_is_named() {
        let mut p = Pager::default();
        let link = || Some("https://graph/x?$skiptoken=1".to_string());
        assert_eq!(p.turn(["a"], None, link()), Ok(link()));
        let Err(e) = p.turn(["b"], None, link()) else {
            panic!()
        };
        assert!(e.to_string().contains("already gave"), "{e}");

        let mut p = Pager::default();
        let fresh = |n: u32| Some(format!("https://graph/x?$skiptoken={n}"));
        assert!(p.turn(["a"], None, fresh(0)).is_ok());
        for n in 1..MAX_BARREN_PAGES {
            assert!(p.turn(["a"], None, fresh(n)).is_ok());
        }
        let Err(e) = p.turn([], None, fresh(99)) else {
            panic!()
        };
        assert!(e.to_string().contains("5 pages in a row"), "{e}");

        // A new id every page, but past what the count allows.
        let mut p = Pager::default();
        let ids: Vec<String> = (0..40).map(|i| i.to_string()).collect();
        let stopped = (0..40u32)
            .map(|n| p.turn([ids[n as usize].as_str()], Some(3), fresh(n)))
            .position(|r| r.is_err());
        assert_eq!(stopped, Some((3 + 1) * MAX_BARREN_PAGES as usize - 1));
        assert!(p.turn([], None, None).is_ok(), "a page without a link ends");
    }
}
