//! `plan`: what `run` would do with each row, from the same reads and decisions, and no write.
//!
//! The run's own stages answer: its tenants and budgets, the input survey, the pre-write
//! reads (serials, tags, group members, the assignment status listing) and the reader's
//! decision per row. Where the run would read a device's assignments before its POST, the
//! plan reads them too and says whether the POST would go. Each row's answer goes to a plan
//! CSV (`row,device_id,serial_number,action,would,reason,tenant`), in input order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::action::Work;
use crate::config::Config;
use crate::graph::model::Assignment;
use crate::halt::Halt;
use crate::input::{InputReader, Parsed};
use crate::listing::{self, ReadError};
use crate::output::{RowResult, Status, neutralize};
use crate::progress::Progress;

use super::RunError;
use super::dispatch::{Decided, Known, decide};
use super::plan::Resume;
use super::tenants::{self, TenantRun};
use super::worker::WorkItem;

/// The plan file's columns, in order.
pub const PLAN_HEADER: [&str; 7] = [
    "row",
    "device_id",
    "serial_number",
    "action",
    "would",
    "reason",
    "tenant",
];

/// Rows whose device reads are in flight at once (each through its tenant's budget).
const READS_IN_FLIGHT: usize = 16;

/// What `run` would do with a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Would {
    /// Send the row's write.
    Write,
    /// Nothing: the device already holds what the row asks (`existing`).
    Skip,
    /// Fail it without a write (serial not found or ambiguous, device unknown, ...).
    Fail,
    /// Report it invalid (the row itself is wrong).
    Invalid,
}

impl Would {
    pub fn as_str(self) -> &'static str {
        match self {
            Would::Write => "write",
            Would::Skip => "skip",
            Would::Fail => "fail",
            Would::Invalid => "invalid",
        }
    }
}

/// What `plan` found.
#[derive(Debug, Clone)]
pub struct PlanReport {
    /// The plan file written.
    pub path: PathBuf,
    pub counts: BTreeMap<Would, u64>,
    /// Why a tenant (or the plan) stopped early: its token refused, its breaker tripped.
    pub aborted: Option<String>,
    pub interrupted: bool,
}

impl PlanReport {
    pub fn count(&self, w: Would) -> u64 {
        self.counts.get(&w).copied().unwrap_or(0)
    }

    /// As `run`'s: 0 every row would be written or skipped, 1 some would fail or are invalid,
    /// 3 aborted, 130 interrupted.
    pub fn exit_code(&self) -> u8 {
        if self.aborted.is_some() {
            3
        } else if self.interrupted {
            130
        } else if self.count(Would::Fail) + self.count(Would::Invalid) > 0 {
            1
        } else {
            0
        }
    }
}

/// One row's line of the plan file.
struct Line {
    row: u64,
    device_id: String,
    serial_number: String,
    action: &'static str,
    would: Would,
    reason: String,
    tenant: String,
}

/// Plan the run `config` describes: every read the run makes before writing, no write.
pub async fn plan(mut config: Config, shutdown: CancellationToken) -> Result<PlanReport, RunError> {
    config.defaults = config.row_defaults();
    config.read_before_write = true;
    config.batch = false;
    if same_file(&config.output, &config.input) {
        return Err(RunError::Config(format!(
            "the plan file {} is the input file: choose another -o",
            config.output.display()
        )));
    }
    if config.profile.is_some() && config.defaults.action != crate::input::Action::Group {
        return Err(RunError::Config(super::PROFILE_NEEDS_GROUP.into()));
    }
    let halt = Arc::new(Halt::child_of(&shutdown));
    let tenants = tenants::connect_all(&config, &halt)?;
    let mut wanted = super::plan::wanted(&config)?;
    // `--profile`: the run would be refused before any write, so the plan is too.
    super::check_profile(&config, &tenants, &wanted).await?;
    let progress = Arc::new(Progress::new(false));
    let (prepared, _) = super::prepare(&tenants, &mut wanted, &progress).await;
    // A plan decides every row from the whole listing (a run reads it beside its rows).
    let known = futures::future::join_all(tenants.iter().zip(prepared).map(|(t, p)| async move {
        let known = Known {
            resolved: p.resolved,
            tags: p.tags,
            memberships: p.memberships,
            assigned: p.assigned.complete().await,
        };
        (t.key.clone(), (known, t))
    }));
    let known: HashMap<Option<String>, (Known, &TenantRun)> = known.await.into_iter().collect();
    let reader = InputReader::open(&config.input, config.delimiter, config.defaults.clone())?;
    let resume = Resume::default();
    let lines = futures::stream::iter(reader)
        .take_until(halt.token().clone().cancelled_owned())
        .map(|item| {
            let (known, resume) = (&known, &resume);
            async move {
                let parsed = item?;
                Ok::<_, RunError>(line(parsed, known, resume).await)
            }
        })
        .buffered(READS_IN_FLIGHT);
    let counts = write_plan(&config.output, lines).await?;
    let aborted = halt.reason().or_else(|| super::tenant_aborts(&tenants));
    Ok(PlanReport {
        path: config.output.clone(),
        counts,
        interrupted: aborted.is_none() && shutdown.is_cancelled(),
        aborted,
    })
}

/// Write each line as it comes, in input order; the counts per `would`.
async fn write_plan(
    path: &std::path::Path,
    lines: impl futures::Stream<Item = Result<Line, RunError>>,
) -> Result<BTreeMap<Would, u64>, RunError> {
    let io = |e: csv::Error| RunError::Config(format!("cannot write {}: {e}", path.display()));
    let mut w = csv::Writer::from_path(path).map_err(io)?;
    w.write_record(PLAN_HEADER).map_err(io)?;
    let mut counts = BTreeMap::new();
    futures::pin_mut!(lines);
    while let Some(line) = lines.next().await {
        let l = line?;
        *counts.entry(l.would).or_default() += 1;
        let row = l.row.to_string();
        let cells = [
            row.as_str(),
            &l.device_id,
            &l.serial_number,
            l.action,
            l.would.as_str(),
            &l.reason,
            &l.tenant,
        ];
        w.write_record(cells.map(|c| neutralize(c).into_owned()))
            .map_err(io)?;
    }
    w.flush()
        .map_err(|e| RunError::Config(format!("cannot write {}: {e}", path.display())))?;
    Ok(counts)
}

/// What the run would do with one input row.
async fn line(
    parsed: Parsed,
    known: &HashMap<Option<String>, (Known, &TenantRun)>,
    resume: &Resume,
) -> Line {
    let job = match parsed {
        Parsed::Job(job) => job,
        Parsed::Invalid(i) => {
            return Line {
                row: i.row,
                device_id: i.device_id,
                serial_number: i.serial_number,
                action: "",
                would: Would::Invalid,
                reason: i.reason,
                tenant: i.tenant,
            };
        }
    };
    let mut l = Line {
        row: job.row,
        device_id: job.device.id().map(|d| d.to_string()).unwrap_or_default(),
        serial_number: job.device.serial().unwrap_or_default().to_string(),
        action: job.work.action().as_str(),
        would: Would::Invalid,
        reason: String::new(),
        tenant: job.tenant.clone().unwrap_or_default(),
    };
    let Some((known, tenant)) = known.get(&job.tenant) else {
        l.reason = "the row's tenant has no budget".into();
        return l;
    };
    match decide(known, job, false, resume) {
        Decided::Done(r) => finished(&mut l, &r),
        Decided::Send(mut item) => {
            l.device_id = item.device.to_string();
            item.reconcile = item.reads_first(&known.assigned);
            let (would, reason) = sent(&item, tenant).await;
            (l.would, l.reason) = (would, reason);
        }
    }
    l
}

/// A row the reader finishes without a worker: existing (skip), failed or invalid.
fn finished(l: &mut Line, r: &RowResult) {
    if !r.device_id.is_empty() {
        l.device_id = r.device_id.clone();
    }
    let message = r.error_message.clone().unwrap_or_default();
    (l.would, l.reason) = match r.status {
        Status::Created | Status::Existing => (Would::Skip, already(l.action)),
        Status::Failed => (
            Would::Fail,
            match &r.error_code {
                Some(code) => format!("{code}: {message}"),
                None => message,
            },
        ),
        Status::Invalid => (Would::Invalid, message),
    };
}

fn already(action: &str) -> String {
    match action {
        "tag" => "the device carries the tag already".into(),
        "group" => "the device is a member already".into(),
        _ => "the device holds an identical assignment already".into(),
    }
}

/// A row the reader would send to a worker: written, unless the read the worker would make
/// first finds an identical assignment.
async fn sent(item: &WorkItem, tenant: &TenantRun) -> (Would, String) {
    match &item.job.work {
        Work::Assign(assignment) if item.reconcile => {
            match identical(item.device, assignment, tenant).await {
                Ok(Some(id)) => (
                    Would::Skip,
                    format!("the device holds an identical assignment already ({id})"),
                ),
                Ok(None) => (
                    Would::Write,
                    "the device holds no identical assignment".into(),
                ),
                Err(e) => (Would::Fail, format!("reading its assignments failed: {e}")),
            }
        }
        Work::Assign(_) => (
            Would::Write,
            "the identity listing shows the device notAssigned".into(),
        ),
        Work::Tag(_) => (
            Would::Write,
            "the device carries another tag, or none".into(),
        ),
        Work::Group(_) => (Would::Write, "the device is not a member".into()),
    }
}

/// The id of an assignment the device holds that is identical to `wanted`, reading every
/// page of its assignments as the worker's reconcile does (a page link given twice stops).
async fn identical(
    device: Uuid,
    wanted: &Assignment,
    tenant: &TenantRun,
) -> Result<Option<String>, ReadError> {
    let mut page: Option<String> = None;
    let mut followed = HashSet::new();
    loop {
        let link = page.clone();
        let got = listing::read(&tenant.budget, |token| {
            let link = link.clone();
            async move { tenant.graph.list(&token, device, link.as_deref()).await }
        })
        .await?;
        if let Some(found) = got.value.iter().find(|a| wanted.matches(a)) {
            return Ok(Some(found.id.clone().unwrap_or_default()));
        }
        match got.next_link {
            Some(next) if followed.insert(next.clone()) => page = Some(next),
            Some(_) => {
                return Err(ReadError::PagingLoop(
                    "the assignment list repeats a page it already gave".into(),
                ));
            }
            None => return Ok(None),
        }
    }
}

/// The same file, however spelled (the plan must never overwrite the input).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The counts per `would`, as printed on stdout.
pub fn render(report: &PlanReport) -> String {
    let n = |w| report.count(w);
    format!(
        "plan: write {} · skip {} · fail {} · invalid {}\n  plan file: {}\n",
        n(Would::Write),
        n(Would::Skip),
        n(Would::Fail),
        n(Would::Invalid),
        report.path.display()
    )
}
