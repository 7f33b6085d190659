//! A group run's writes: a tenant's rows, in twenties per group, added with one
//! `PATCH /groups/{id}` each through the directory's budget. A request Graph refuses with 400
//! (one ref already a member, or naming no object, refuses all) is split and its halves sent
//! again, down to the one row it is about; a request whose answer was lost is settled by
//! reading the group's members back, never by sending it blind. Every row of a request is in
//! the journal before the request leaves, so `--resume` after kill -9 reads the members first.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use crate::action::group::{MAX_MEMBERS, already_member, member_ref};
use crate::budget::{Budget, Pause};
use crate::graph::answer::{Attempt, ErrorInfo, Failure};
use crate::graph::client::GraphClient;
use crate::halt::Halt;
use crate::output::{Change, Journal, RowResult, Status};

use super::groups::{Memberships, group_members};
use super::lane::LaneRx;
use super::worker::WorkItem;

/// Requests in flight at most per tenant: enough that latency is not the limit (the directory's
/// window admits 500 writes at once; at 200 ms each, 32 in flight send them in about 3 s), few
/// enough for Entra's per-10-second resource units (32 at 200 ms is 1,600 writes per 10 s).
const IN_FLIGHT: usize = 32;

/// What a tenant's group writes share.
pub struct Adder {
    pub graph: GraphClient,
    pub budget: Arc<Budget>,
    pub journal: Arc<Journal>,
    pub halt: Arc<Halt>,
    pub memberships: Arc<Memberships>,
    pub graph_url: String,
}

/// One row on its way into a group.
struct Member {
    item: WorkItem,
    oid: String,
    attempts: u32,
    started: Instant,
}

/// How one request ended.
enum Sent {
    Added(Attempt<()>),
    Refused(ErrorInfo, Attempt<()>),
    /// The answer was lost: the members may have been added.
    Unknown(Attempt<()>),
    Failed(ErrorInfo, Attempt<()>),
    Stopped,
}

/// Take the tenant's rows until its queue is drained or it stops; rows stopped before their
/// request are left to `--resume` (the journal names those that may have been sent). A group's
/// rows go out twenty at a time as they come; the last partial twenty of each group once the
/// input is read (the reader is far quicker than the writes, and a timer would make the
/// request count depend on scheduling).
pub async fn work(mut queue: LaneRx, adder: Arc<Adder>, results: mpsc::Sender<RowResult>) {
    let mut pending: HashMap<Uuid, Vec<Member>> = HashMap::new();
    let mut in_flight: FuturesUnordered<Adding> = FuturesUnordered::new();
    let stop = adder.budget.halt().token().clone();
    let mut open = true;
    while open || !in_flight.is_empty() {
        if in_flight.len() >= IN_FLIGHT || !open {
            if let Some(done) = in_flight.next().await {
                report(&results, done).await;
            }
            continue;
        }
        tokio::select! {
            Some(done) = in_flight.next(), if !in_flight.is_empty() => report(&results, done).await,
            got = queue.recv() => match got {
                Ok(Some(item)) if !stop.is_cancelled() => {
                    let Some((group, member)) = adder.member(item) else { continue };
                    let batch = pending.entry(group).or_default();
                    batch.push(member);
                    if batch.len() == MAX_MEMBERS {
                        let batch = std::mem::take(batch);
                        in_flight.push(adder.clone().add(group, batch));
                    }
                }
                Ok(_) => {
                    open = false;
                    flush(&mut pending, &adder, &mut in_flight, &stop);
                }
                Err(e) => {
                    adder.halt.abort(format!("cannot read back a tenant's waiting rows: {e}"));
                    open = false;
                }
            },
        }
    }
}

/// A request's rows' results, once it is settled.
type Adding = std::pin::Pin<Box<dyn Future<Output = Vec<RowResult>> + Send>>;

/// Send every partial twenty waiting (none once the tenant stopped).
fn flush(
    pending: &mut HashMap<Uuid, Vec<Member>>,
    adder: &Arc<Adder>,
    in_flight: &mut FuturesUnordered<Adding>,
    stop: &tokio_util::sync::CancellationToken,
) {
    if stop.is_cancelled() {
        pending.clear();
        return;
    }
    for (group, batch) in pending.drain() {
        if !batch.is_empty() {
            in_flight.push(adder.clone().add(group, batch));
        }
    }
}

async fn report(results: &mpsc::Sender<RowResult>, done: Vec<RowResult>) {
    for r in done {
        // The writer only goes away on a write error, which has stopped the run.
        let _ = results.send(r).await;
    }
}

impl Adder {
    /// A queued row as a member to add (its object id was found before the run).
    fn member(&self, item: WorkItem) -> Option<(Uuid, Member)> {
        let group = item.job.work.group()?;
        let oid = self.memberships.object(item.device)?.to_string();
        Some((
            group,
            Member {
                item,
                oid,
                attempts: 0,
                started: Instant::now(),
            },
        ))
    }

    /// Add `batch` to `group`, splitting what Graph refuses; every row's result, except rows
    /// the tenant's stop kept from an answer.
    fn add(self: Arc<Self>, group: Uuid, batch: Vec<Member>) -> Adding {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut todo = vec![batch];
            while let Some(mut batch) = todo.pop() {
                match self.send(group, &mut batch).await {
                    Sent::Added(last) => {
                        out.extend(
                            batch
                                .iter()
                                .map(|m| finish(m, Status::Created, None, &last)),
                        );
                    }
                    Sent::Refused(e, last) if batch.len() == 1 => {
                        let status = if already_member(&e) {
                            Status::Existing
                        } else {
                            Status::Failed
                        };
                        let error = (status == Status::Failed).then_some(e);
                        out.push(finish(&batch[0], status, error, &last));
                    }
                    Sent::Refused(..) => {
                        let second = batch.split_off(batch.len() / 2);
                        todo.push(second);
                        todo.push(batch);
                    }
                    Sent::Unknown(last) => match self.settle_lost(group, batch, &last).await {
                        Ok((added, again)) => {
                            out.extend(added);
                            if !again.is_empty() {
                                todo.push(again);
                            }
                        }
                        Err(failed) => out.extend(failed),
                    },
                    Sent::Failed(e, last) => {
                        out.extend(
                            batch
                                .iter()
                                .map(|m| finish(m, Status::Failed, Some(e.clone()), &last)),
                        );
                    }
                    Sent::Stopped => break,
                }
            }
            for r in &out {
                self.budget.row_finished(r);
            }
            out
        })
    }

    /// One request for `batch`, retried as the budget decides until Graph answers it.
    async fn send(&self, group: Uuid, batch: &mut [Member]) -> Sent {
        let refs: Vec<String> = batch
            .iter()
            .map(|m| member_ref(&self.graph_url, &m.oid))
            .collect();
        let mut retry = self.budget.start_row();
        let mut refreshed = false;
        for m in batch.iter() {
            // Durably note the intent before the request can reach the service.
            if let Err(e) = self.journal.record(m.item.job.row, m.item.device).await {
                self.halt.abort_as(
                    crate::codes::UNWRITABLE,
                    format!(
                        "cannot write the journal: {e}; --resume continues from what was written"
                    ),
                );
                return Sent::Stopped;
            }
        }
        let mut attempts = 0;
        loop {
            let Some(permit) = self.budget.admit().await else {
                return Sent::Stopped;
            };
            let Some(token) = self.budget.token().await else {
                return Sent::Stopped;
            };
            let Some((permit, out)) = self.budget.sending(permit, batch.len()) else {
                return Sent::Stopped;
            };
            attempts += 1;
            batch.iter_mut().for_each(|m| m.attempts += 1);
            let attempt = self.graph.add_members(&token, group, refs.clone()).await;
            drop(out);
            let pause = self.budget.settle(permit, &attempt, &mut retry, attempts);
            let last = attempt.meta();
            let failure = match attempt.result {
                Ok(()) => return Sent::Added(last),
                Err(f) => f,
            };
            match (failure, pause) {
                (
                    Failure::Retry {
                        ambiguous: true, ..
                    },
                    _,
                ) => return Sent::Unknown(last),
                (Failure::Unauthorized(e), _) if !refreshed => {
                    refreshed = true;
                    self.budget.token_refused(&token, &e.message).await;
                }
                (Failure::Retry { .. }, Pause::Retry(delay)) => {
                    if !self.budget.wait(delay).await {
                        return Sent::Stopped;
                    }
                }
                (Failure::Permanent(e), _) if last.http_status == Some(400) => {
                    return Sent::Refused(e, last);
                }
                (f, _) => return Sent::Failed(f.error().clone(), last),
            }
        }
    }

    /// After a lost answer: the members read back say which rows were added (`created`) and
    /// which must be sent again.
    async fn settle_lost(
        &self,
        group: Uuid,
        batch: Vec<Member>,
        last: &Attempt<()>,
    ) -> Result<(Vec<RowResult>, Vec<Member>), Vec<RowResult>> {
        match group_members(group, &self.graph, &self.budget).await {
            Ok(members) => {
                let held: HashSet<&String> = members.iter().collect();
                let (added, again): (Vec<Member>, Vec<Member>) =
                    batch.into_iter().partition(|m| held.contains(&m.oid));
                let added = added
                    .iter()
                    .map(|m| finish(m, Status::Created, None, last))
                    .collect();
                Ok((added, again))
            }
            Err(e) => Err(batch
                .iter()
                .map(|m| finish(m, Status::Failed, Some(e.clone()), last))
                .collect()),
        }
    }
}

fn finish(m: &Member, status: Status, error: Option<ErrorInfo>, last: &Attempt<()>) -> RowResult {
    let job = &m.item.job;
    RowResult {
        row: job.row,
        device_id: m.item.device.to_string(),
        status,
        http_status: last.http_status,
        assignment_id: None,
        attempts: m.attempts,
        error_code: error.as_ref().map(|e| e.code.clone()),
        error_message: error.map(|e| e.message),
        request_id: last.request_id.clone(),
        client_request_id: Some(last.client_request_id.clone()),
        duration_ms: u64::try_from(m.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        finished_at: SystemTime::now(),
        serial_number: job.device.serial().map(str::to_string),
        tenant: job.tenant.clone(),
        change: job
            .work
            .group()
            .map_or(Change::None, |group| Change::Member {
                group,
                member: m.oid.clone(),
            }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::action::Work;
    use crate::config::{Config, Credentials};
    use crate::emulator::{Emulator, EmulatorConfig, Group, directory_object_id};
    use crate::input::{Device, Job};

    fn device(i: u32) -> Uuid {
        Uuid::from_u128(0x0a11_0000_0000_4000_8000_0000_0000_0000 + u128::from(i))
    }

    /// One ref already a member (the pre-read missed it: someone added it since) refuses its
    /// whole request: the halves are sent again, down to that row, and the other 19 are added.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_bad_ref_costs_a_few_requests_and_fails_no_other_row() {
        let group: Uuid = "6a1e8c2b-3d4f-4a5b-9c6d-7e8f9a0b1c2d".parse().unwrap();
        let ids: Vec<String> = (0..20).map(|i| device(i).to_string()).collect();
        let emulator = Emulator::start(EmulatorConfig {
            devices: Some(ids.iter().cloned().collect()),
            groups: vec![Group::assigned(&group.to_string(), "G")],
            members: vec![(group.to_string(), ids[7].clone())],
            ..EmulatorConfig::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(dir.path().join("in.csv"), dir.path().join("r.csv"));
        config.graph_url = emulator.graph_url();
        config.authority_url = emulator.authority_url();
        config.credentials = Credentials::for_emulator();
        let stop = tokio_util::sync::CancellationToken::new();
        let c = crate::connect::connect(None, config, &stop).unwrap();
        let objects: HashMap<Uuid, Option<String>> = ids
            .iter()
            .map(|id| (id.parse().unwrap(), directory_object_id(id)))
            .collect();
        // The pre-read saw no member.
        let memberships = Memberships::given(objects, HashMap::from([(group, Ok(HashSet::new()))]));
        let (journal, _) = Journal::open(&dir.path().join("r.csv"), true).unwrap();
        let adder = Arc::new(Adder {
            graph: c.graph,
            budget: c.budget,
            journal: Arc::new(journal),
            halt: Arc::new(Halt::child_of(&stop)),
            memberships: Arc::new(memberships),
            graph_url: emulator.graph_url(),
        });
        let (mut tx, rx) = super::super::lane::lane(32, None);
        let (res_tx, mut res_rx) = mpsc::channel(64);
        tokio::task::spawn_blocking(move || {
            for (i, id) in ids.iter().enumerate() {
                let job = Job {
                    row: i as u64 + 1,
                    device: Device::Id(id.parse().unwrap()),
                    work: Work::Group(group),
                    tenant: None,
                };
                let item = WorkItem {
                    job,
                    device: id.parse().unwrap(),
                    reconcile: false,
                };
                assert!(tx.send(item).unwrap());
            }
        })
        .await
        .unwrap();
        work(rx, adder, res_tx).await;
        let mut results = Vec::new();
        while let Some(r) = res_rx.recv().await {
            results.push(r);
        }
        assert_eq!(results.len(), 20);
        let status = |s: Status| results.iter().filter(|r| r.status == s).count();
        assert_eq!((status(Status::Created), status(Status::Existing)), (19, 1));
        assert_eq!(
            results
                .iter()
                .find(|r| r.status == Status::Existing)
                .map(|r| r.row),
            Some(8)
        );
        let stats = emulator.stats();
        assert_eq!(stats.members_added, 19);
        // 1 whole + at most 2 per halving down to one row (20 → 10 → 5 → 3 → 2 → 1).
        assert!(stats.group_writes <= 11, "{stats:?}");
        emulator.shutdown().await;
    }
}
