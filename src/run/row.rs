//! One row's decisions from first attempt to final answer, as a pure state machine: given what
//! an attempt answered and the pause the budget decided, what comes next. No I/O here, so every
//! path is unit-tested without HTTP.

use std::sync::Arc;
use std::time::Duration;

use crate::action::tag::carries;
use crate::budget::Pause;
use crate::codes;
use crate::graph::answer::{Attempt, ErrorInfo, Failure, Page};
use crate::graph::model::{Assignment, Identity, ReturnedAssignment};
use crate::output::Status;
use crate::retry::GiveUp;

/// The request a row sends next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    Post,
    /// GET the device's assignments (`page`: a later page's link): an earlier POST may have
    /// been executed.
    Reconcile {
        page: Option<&'a str>,
    },
}

/// What follows an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Send [`RowState::request`] after this delay.
    Again(Duration),
    /// Graph refused the token (`why`): drop it, then send again with a fresh one.
    Refresh { why: String },
    /// The row is done.
    Finish(Finish),
}

/// A row's final answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    pub status: Status,
    pub assignment_id: Option<String>,
    pub error: Option<ErrorInfo>,
}

impl Finish {
    fn failed(error: ErrorInfo) -> Next {
        Next::Finish(Finish {
            status: Status::Failed,
            assignment_id: None,
            error: Some(error),
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct RowState {
    /// Look before sending: after an ambiguous failure (or when an earlier run may have sent
    /// the row) the POST may have been executed. Never re-POST blindly.
    reconcile: bool,
    /// The next page of the device's assignments to read, and the pager that decides whether
    /// the list goes on: the bound the identity listing has (a link that comes back, pages
    /// that add no assignment, more pages than any device holds), so that a looping service
    /// cannot keep a row reading for ever.
    page: Option<String>,
    pager: crate::listing::Pager,
    /// A 401 earns one fresh token per token, not per row: a row that outlives two tokens may
    /// refresh twice, but a 401 on the very token its own refresh brought is final.
    refresh_pending: bool,
    fresh: Option<Arc<str>>,
    attempts: u32,
}

/// The bound on one reconciling read of a device's assignments.
fn assignment_pager() -> crate::listing::Pager {
    crate::listing::Pager::at_most(crate::listing::MAX_ASSIGNMENT_PAGES)
}

impl RowState {
    pub fn new(reconcile: bool) -> Self {
        Self {
            reconcile,
            pager: assignment_pager(),
            ..Self::default()
        }
    }

    pub fn request(&self) -> Request<'_> {
        if self.reconcile {
            Request::Reconcile {
                page: self.page.as_deref(),
            }
        } else {
            Request::Post
        }
    }

    /// HTTP attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// A request is about to go with `token`.
    pub fn sending(&mut self, token: &Arc<str>) {
        self.attempts += 1;
        if std::mem::take(&mut self.refresh_pending) {
            self.fresh = Some(token.clone());
        }
    }

    /// The POST's answer.
    pub fn posted(&mut self, attempt: &Attempt<String>, pause: Pause, token: &str) -> Next {
        match &attempt.result {
            Ok(id) => Next::Finish(Finish {
                status: Status::Created,
                assignment_id: Some(id.clone()),
                error: None,
            }),
            Err(f) => self.failed(f, pause, token),
        }
    }

    /// A reconciling GET's answer: an identical assignment on any page means the earlier POST
    /// was executed; none on the last page means it was not, so the POST goes now, without
    /// delay.
    pub fn listed(
        &mut self,
        attempt: &Attempt<Page<ReturnedAssignment>>,
        wanted: &Assignment,
        pause: Pause,
        token: &str,
    ) -> Next {
        let page = match &attempt.result {
            Ok(page) => page,
            Err(f) => return self.failed(f, pause, token),
        };
        if let Some(found) = page.value.iter().find(|a| wanted.matches(a)) {
            return Next::Finish(Finish {
                status: Status::Existing,
                assignment_id: found.id.clone(),
                error: None,
            });
        }
        let ids = page.value.iter().filter_map(|a| a.id.as_deref());
        match self.pager.turn(ids, page.count, page.next_link.clone()) {
            Err(e) => Finish::failed(ErrorInfo {
                code: codes::PAGING_LOOP.into(),
                message: format!(
                    "the assignment list loops: {}; not followed further, and not assigned \
                     blindly",
                    e.reason()
                ),
            }),
            Ok(Some(next)) => {
                self.page = Some(next);
                Next::Again(Duration::ZERO)
            }
            Ok(None) => {
                self.reconcile = false;
                self.page = None;
                self.pager = assignment_pager();
                Next::Again(Duration::ZERO)
            }
        }
    }

    /// A group tag write's answer: any 2xx means the tag is set (`created`, no assignment id).
    pub fn tagged(&mut self, attempt: &Attempt<()>, pause: Pause, token: &str) -> Next {
        match &attempt.result {
            Ok(()) => Next::Finish(Finish {
                status: Status::Created,
                assignment_id: None,
                error: None,
            }),
            Err(f) => self.failed(f, pause, token),
        }
    }

    /// A tag row's reading of its identity (after an ambiguous write, or when an earlier run
    /// may have sent it): already carrying the tag is `existing`; otherwise the write goes now.
    pub fn read_back(
        &mut self,
        attempt: &Attempt<Identity>,
        wanted: &str,
        pause: Pause,
        token: &str,
    ) -> Next {
        match &attempt.result {
            Ok(identity) if carries(identity.group_tag.as_deref(), wanted) => {
                Next::Finish(Finish {
                    status: Status::Existing,
                    assignment_id: None,
                    error: None,
                })
            }
            Ok(_) => {
                self.reconcile = false;
                Next::Again(Duration::ZERO)
            }
            Err(f) => self.failed(f, pause, token),
        }
    }

    fn failed(&mut self, failure: &Failure, pause: Pause, token: &str) -> Next {
        match failure {
            Failure::Permanent(e) => Finish::failed(e.clone()),
            Failure::Unauthorized(e) if self.fresh.as_deref() == Some(token) => {
                Finish::failed(e.clone())
            }
            Failure::Unauthorized(e) => {
                // The token may have expired early or been revoked: one fresh token.
                self.refresh_pending = true;
                Next::Refresh {
                    why: e.message.clone(),
                }
            }
            Failure::Retry {
                ambiguous, error, ..
            } => {
                self.reconcile |= *ambiguous;
                match pause {
                    Pause::Retry(delay) => Next::Again(delay),
                    // The budget sees every retryable answer; without a verdict, go again.
                    Pause::None => Next::Again(Duration::ZERO),
                    Pause::GiveUp(why) => Finish::failed(ErrorInfo {
                        code: error.code.clone(),
                        message: format!(
                            "{} ({})",
                            error.message,
                            match why {
                                GiveUp::Attempts =>
                                    format!("gave up after {} attempts", self.attempts),
                                GiveUp::Time => "gave up: --max-retry-time reached".to_string(),
                            }
                        ),
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::model::{Source, Target, TargetKind};

    fn attempt<T>(result: Result<T, Failure>) -> Attempt<T> {
        Attempt {
            result,
            http_status: None,
            request_id: None,
            client_request_id: "crid".into(),
        }
    }

    fn error(code: &str) -> ErrorInfo {
        ErrorInfo {
            code: code.into(),
            message: format!("{code} happened"),
        }
    }

    fn lost(ambiguous: bool) -> Failure {
        Failure::Retry {
            retry_after: None,
            ambiguous,
            error: error("ConnectionLost"),
        }
    }

    fn page(value: Vec<ReturnedAssignment>, next: Option<&str>) -> Page<ReturnedAssignment> {
        Page {
            value,
            next_link: next.map(str::to_string),
            count: None,
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: crate::jsonish::cases(64),
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Whatever pages a service plays (in a cycle: assignment ids from a few, links fresh,
        /// repeated or absent), a reconciling row leaves the list within the cap: it posts
        /// (the list ended) or fails naming the loop, never reads on.
        #[test]
        fn any_assignment_page_sequence_ends_within_the_cap(
            pages in proptest::collection::vec(
                (
                    proptest::collection::vec(0u8..6, 0..3),
                    proptest::option::of(0u64..10),
                    proptest::option::of(0u8..4),
                ),
                1..8,
            )
        ) {
            let mut row = RowState::new(true);
            let mut turns = 0u64;
            while row.request() != Request::Post {
                let (ids, count, next) = &pages[turns as usize % pages.len()];
                turns += 1;
                proptest::prop_assert!(turns <= crate::listing::MAX_ASSIGNMENT_PAGES, "read on");
                let value = ids
                    .iter()
                    .map(|i| ReturnedAssignment {
                        id: Some(format!("a{i}")),
                        target: None,
                        source: None,
                        source_id: None,
                    })
                    .collect();
                // 0: a link fresh each turn; else one of three fixed ones (it may come back).
                let link = next.map(|n| if n == 0 { format!("p{turns}") } else { format!("q{n}") });
                let answer = Page { value, next_link: link, count: *count };
                match row.listed(&attempt(Ok(answer)), &wanted(), Pause::None, "t") {
                    Next::Again(_) => {}
                    Next::Finish(f) => {
                        proptest::prop_assert_eq!(f.error.map(|e| e.code), Some("PagingLoop".into()));
                        break;
                    }
                    other => proptest::prop_assert!(false, "{other:?}"),
                }
            }
        }
    }

    #[test]
    fn every_page_is_read_before_posting_and_a_repeated_page_stops() {
        let mut row = RowState::new(true);
        let t = "t";
        let next = row.listed(
            &attempt(Ok(page(vec![], Some("p2")))),
            &wanted(),
            Pause::None,
            t,
        );
        assert_eq!(next, Next::Again(Duration::ZERO));
        assert_eq!(row.request(), Request::Reconcile { page: Some("p2") });
        row.listed(
            &attempt(Ok(page(vec![], Some("p3")))),
            &wanted(),
            Pause::None,
            t,
        );
        assert_eq!(row.request(), Request::Reconcile { page: Some("p3") });
        // A transient failure retries the same page.
        row.listed(
            &attempt(Err(lost(false))),
            &wanted(),
            Pause::Retry(Duration::ZERO),
            t,
        );
        assert_eq!(row.request(), Request::Reconcile { page: Some("p3") });
        let Next::Finish(f) = row.listed(
            &attempt(Ok(page(vec![], Some("p2")))),
            &wanted(),
            Pause::None,
            t,
        ) else {
            panic!("a paging loop must end the row")
        };
        assert_eq!(f.status, Status::Failed);
        assert_eq!(f.error.map(|e| e.code).as_deref(), Some("PagingLoop"));
        // The last page without a match: the POST goes.
        let mut row = RowState::new(true);
        row.listed(&attempt(Ok(page(vec![], None))), &wanted(), Pause::None, t);
        assert_eq!(row.request(), Request::Post);
    }

    fn wanted() -> Assignment {
        let target = Target {
            kind: TargetKind::AllDevices,
            group_id: None,
            collection_id: None,
            filter_id: None,
            filter_type: None,
        };
        Assignment::new(target, Source::Direct, None, None)
    }

    #[test]
    fn an_ambiguous_failure_reconciles_before_the_next_post() {
        let token: Arc<str> = "t1".into();
        let mut row = RowState::new(false);
        row.sending(&token);
        assert_eq!(row.request(), Request::Post);
        let next = row.posted(
            &attempt(Err(lost(true))),
            Pause::Retry(Duration::from_secs(1)),
            "t1",
        );
        assert_eq!(next, Next::Again(Duration::from_secs(1)));
        assert_eq!(row.request(), Request::Reconcile { page: None });
        // The GET finds nothing: the POST goes again at once.
        row.sending(&token);
        let next = row.listed(
            &attempt(Ok(page(vec![], None))),
            &wanted(),
            Pause::None,
            "t1",
        );
        assert_eq!(next, Next::Again(Duration::ZERO));
        assert_eq!(row.request(), Request::Post);
        row.sending(&token);
        let Next::Finish(f) = row.posted(&attempt(Ok("a1".into())), Pause::None, "t1") else {
            panic!("not finished")
        };
        assert_eq!(
            (f.status, f.assignment_id.as_deref()),
            (Status::Created, Some("a1"))
        );
        assert_eq!(row.attempts(), 3);
    }

    #[test]
    fn a_failure_that_was_not_executed_posts_again() {
        let mut row = RowState::new(false);
        row.sending(&"t".into());
        row.posted(
            &attempt(Err(lost(false))),
            Pause::Retry(Duration::ZERO),
            "t",
        );
        assert_eq!(row.request(), Request::Post);
    }

    #[test]
    fn an_identical_assignment_found_is_existing() {
        let mut row = RowState::new(true);
        row.sending(&"t".into());
        let held: ReturnedAssignment = serde_json::from_value(serde_json::json!({
            "id": "held-1",
            "target": {"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget"},
            "source": "direct"
        }))
        .unwrap();
        let Next::Finish(f) = row.listed(
            &attempt(Ok(page(vec![held], None))),
            &wanted(),
            Pause::None,
            "t",
        ) else {
            panic!("not finished")
        };
        assert_eq!(f.status, Status::Existing);
        assert_eq!(f.assignment_id.as_deref(), Some("held-1"));
    }

    #[test]
    fn a_401_refreshes_once_per_token_and_is_final_on_the_fresh_one() {
        let mut row = RowState::new(false);
        let refused = Failure::Unauthorized(error("InvalidAuthenticationToken"));
        row.sending(&"old".into());
        assert!(matches!(
            row.posted(&attempt(Err(refused.clone())), Pause::None, "old"),
            Next::Refresh { .. }
        ));
        row.sending(&"new".into());
        let Next::Finish(f) = row.posted(&attempt(Err(refused.clone())), Pause::None, "new") else {
            panic!("a 401 on the fresh token must be final")
        };
        assert_eq!(f.status, Status::Failed);
        assert_eq!(
            f.error.map(|e| e.code).as_deref(),
            Some("InvalidAuthenticationToken")
        );
    }

    #[test]
    fn a_401_on_a_later_token_earns_another_refresh() {
        let mut row = RowState::new(false);
        let refused = Failure::Unauthorized(error("InvalidAuthenticationToken"));
        row.sending(&"a".into());
        row.posted(&attempt(Err(refused.clone())), Pause::None, "a");
        row.sending(&"b".into());
        // The fresh token was accepted for a while (a 503), then expired mid-row.
        row.posted(
            &attempt(Err(lost(false))),
            Pause::Retry(Duration::ZERO),
            "b",
        );
        row.sending(&"b".into());
        row.posted(&attempt(Err(refused.clone())), Pause::None, "b");
        row.sending(&"c".into());
        assert!(matches!(
            row.posted(&attempt(Err(refused)), Pause::None, "d"),
            Next::Refresh { .. }
        ));
    }

    #[test]
    fn a_spent_budget_fails_the_row_saying_why() {
        let mut row = RowState::new(false);
        for _ in 0..3 {
            row.sending(&"t".into());
        }
        let Next::Finish(f) = row.posted(
            &attempt(Err(lost(false))),
            Pause::GiveUp(GiveUp::Attempts),
            "t",
        ) else {
            panic!("not finished")
        };
        assert_eq!(f.status, Status::Failed);
        let e = f.error.expect("an error");
        assert_eq!(e.code, "ConnectionLost");
        assert!(
            e.message.ends_with("(gave up after 3 attempts)"),
            "{}",
            e.message
        );
        let mut row = RowState::new(false);
        let Next::Finish(f) = row.posted(
            &attempt(Err(Failure::Permanent(error("BadRequest")))),
            Pause::None,
            "t",
        ) else {
            panic!("a permanent failure is final")
        };
        assert_eq!(f.error.map(|e| e.code).as_deref(), Some("BadRequest"));
    }

    fn identity(tag: Option<&str>) -> Identity {
        serde_json::from_value(serde_json::json!({"id": "d1", "groupTag": tag})).unwrap()
    }

    #[test]
    fn a_tag_write_is_created_without_an_assignment_id() {
        let mut row = RowState::new(false);
        row.sending(&"t".into());
        assert_eq!(row.request(), Request::Post);
        let Next::Finish(f) = row.tagged(&attempt(Ok(())), Pause::None, "t") else {
            panic!("not finished")
        };
        assert_eq!((f.status, f.assignment_id), (Status::Created, None));
    }

    #[test]
    fn an_ambiguous_tag_write_is_read_back_before_it_is_sent_again() {
        let mut row = RowState::new(false);
        row.sending(&"t".into());
        let next = row.tagged(&attempt(Err(lost(true))), Pause::Retry(Duration::ZERO), "t");
        assert_eq!(next, Next::Again(Duration::ZERO));
        assert_eq!(row.request(), Request::Reconcile { page: None });
        // The write landed: the identity carries the tag (in another case).
        let Next::Finish(f) = row.read_back(
            &attempt(Ok(identity(Some("KIOSK")))),
            "kiosk",
            Pause::None,
            "t",
        ) else {
            panic!("a carried tag must finish the row")
        };
        assert_eq!((f.status, f.assignment_id), (Status::Existing, None));
        // It did not: the write goes again at once.
        let mut row = RowState::new(true);
        let next = row.read_back(
            &attempt(Ok(identity(Some("Other")))),
            "Kiosk",
            Pause::None,
            "t",
        );
        assert_eq!(next, Next::Again(Duration::ZERO));
        assert_eq!(row.request(), Request::Post);
        // A failed read retries the read, never the write.
        let mut row = RowState::new(true);
        row.read_back(
            &attempt(Err(lost(false))),
            "Kiosk",
            Pause::Retry(Duration::ZERO),
            "t",
        );
        assert_eq!(row.request(), Request::Reconcile { page: None });
    }

    #[test]
    fn carrying_a_tag_ignores_case_and_spaces() {
        assert!(carries(Some(" Kiosk "), "kiosk"));
        assert!(!carries(Some("Kiosk2"), "Kiosk"));
        assert!(!carries(None, "Kiosk"));
        assert!(!carries(Some(""), "Kiosk"));
    }
}
