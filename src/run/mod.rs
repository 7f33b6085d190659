//! The bulk run, as a list of stages. Rows flow one way:
//!
//! ```text
//! input ─▶ reader ─▶ a queue per tenant ─▶ its workers (≤ its seats) ─▶ results queue ─▶ writer ─▶ results.csv
//!                                              │ ▲
//!                                              ▼ │ leave to send, pauses
//!                                    the tenant's budget (tokens, window, gate, breaker)
//! ```
//!
//! A run without `--tenants` has one tenant. Errors are data: a row that fails is a result,
//! not an `Err`. Only configuration, input-file and results-file errors end a run before it
//! starts ([`RunError`], exit 2); a rejected token or a tripped breaker ends it midway as
//! [`Summary::aborted`], with every finished row on disk (with several tenants, it ends only
//! that tenant, whose remaining rows are reported `failed`).

mod assigned;
mod dispatch;
mod group_lane;
mod groups;
mod lane;
mod plan;
pub mod preview;
mod resolve;
mod row;
mod seats;
mod tags;
mod tenants;
mod worker;
mod writer;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::halt::Halt;
use crate::input::{InputError, InputReader};
use crate::lock::{LockError, RunLock};
use crate::output::{Journal, OutputError, ResultsWriter, Status};
use crate::progress::Progress;
use crate::summary::{Outcome, ResolutionSummary, Summary};

pub use tenants::DIRECTORY_RATE;

use dispatch::{LaneWork, ReaderCounts, ReaderLane};
use plan::Resume;
use tenants::{Prepared, TenantRun};
use worker::Workers;
use writer::Tally;

/// A run could not start (nothing was sent), or its results could not be written. Exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Locked(#[from] LockError),
    #[error("cannot use the journal {path}: {source}")]
    Journal {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A task of the run ended without its answer (a bug, never bad input).
    #[error("the {0} task failed: {1}")]
    Task(&'static str, String),
}

/// Run the whole job. `shutdown` stops dispatching new rows; rows in flight finish.
pub async fn run(mut config: Config, shutdown: CancellationToken) -> Result<Summary, RunError> {
    // Every row must name one of the file's tenants.
    config.defaults = config.row_defaults();
    let progress = Arc::new(Progress::new(config.progress));
    let result = stages(&config, &shutdown, &progress).await;
    progress.finish();
    result
}

/// Everything [`run`] checks before it reads a row or sends anything, checked without
/// sending or writing, so that a clean `--dry-run` means the run will start: the results, lock
/// and journal paths; the lock (taken and let go at once); the results file (an existing one
/// needs `--overwrite` or `--resume`); `--profile`'s action; and, unless the in-process
/// emulator is to stand in for the tenant (`emulator`), every tenant's credentials loaded into
/// the client that would send (a certificate parsed, a plain-http URL refused), none used.
/// Call it inside the runtime.
pub fn check_startable(config: &Config, emulator: bool) -> Result<(), RunError> {
    let mut config = config.clone();
    config.defaults = config.row_defaults();
    plan::check_paths(&config)?;
    let command: Vec<String> = std::env::args().collect();
    drop(RunLock::acquire(&config.output, &command.join(" "))?);
    plan::check_results_file(&config)?;
    if config.profile.is_some() && config.defaults.action != crate::input::Action::Group {
        return Err(RunError::Config(PROFILE_NEEDS_GROUP.into()));
    }
    if !emulator {
        let halt = Halt::child_of(&CancellationToken::new());
        drop(tenants::connect_all(&config, &halt)?);
    }
    Ok(())
}

/// Why `--profile` is refused outside a group run.
const PROFILE_NEEDS_GROUP: &str =
    "--profile checks the groups of --action group: give --action group";

async fn stages(
    config: &Config,
    shutdown: &CancellationToken,
    progress: &Arc<Progress>,
) -> Result<Summary, RunError> {
    let (started_at, started) = (SystemTime::now(), Instant::now());
    let halt = Arc::new(Halt::child_of(shutdown));
    // 0. One run per results file, before anything is read, created or sent.
    plan::check_paths(config)?;
    let command: Vec<String> = std::env::args().collect();
    let mut lock = RunLock::acquire(&config.output, &command.join(" "))?;
    // 1. Where to send and as whom: a budget per tenant.
    let tenants = tenants::connect_all(config, &halt)?;
    // 2. What to do: the input, an earlier run's results, the journal.
    let mut plan = plan::prepare(config)?;
    lock.cover_results()?; // the results file exists now
    let rows = count_rows(config, plan.rows, &tenants).await;
    if let Some(n) = rows {
        progress.set_total(n);
    }
    for t in &tenants {
        t.warn_short_static_token(rows);
    }
    check_profile(config, &tenants, &plan.wanted).await?;
    let resume = Arc::new(plan.resume);
    if let Some(until) = resume.may_land_until() {
        crate::output::wait_for_landing(until, halt.token()).await;
    }
    // A stopped run's last Retry-After, kept in its journal, is honoured before anything goes.
    if let Some(at) = plan.journal.come_back_at() {
        crate::output::wait_for_gate(at, halt.token()).await;
    }
    for t in &tenants {
        t.budget.keep_gate_in(plan.journal.clone());
        if let Some((d, _)) = &t.directory {
            d.keep_gate_in(plan.journal.clone());
        }
    }
    // 3. Serial numbers to identity ids, and (tag runs) the tags devices carry.
    let (prepared, resolution) = prepare(&tenants, &mut plan.wanted, progress).await;
    // 4. Rows flow: reader → tenants' workers → writer.
    let (tally, counts, reconciliations) = flow(
        config,
        plan.reader,
        plan.writer,
        Flow {
            tenants: &tenants,
            prepared,
            journal: plan.journal.clone(),
            resume: resume.clone(),
            halt: halt.clone(),
            progress: progress.clone(),
        },
    )
    .await?;
    // 5. Complete: every input row has its line.
    let aborted = halt.reason().or_else(|| tenant_aborts(&tenants));
    let interrupted = aborted.is_none() && shutdown.is_cancelled();
    if counts.finished && aborted.is_none() && !interrupted {
        plan::complete(config, &resume, counts.redone, &plan.journal, &mut lock)?;
    } else if tenants.iter().all(|t| {
        let directory = t.directory.as_ref().map_or(0, |(d, _)| d.unanswered());
        t.budget.unanswered() + directory == 0
    }) {
        // Stopped with nothing in flight: a resume need not wait for anything to land.
        if let Err(e) = plan.journal.settled() {
            tracing::warn!("cannot write the journal: {e}");
        }
    }
    // 6. The summary: totals, and each tenant's share.
    let stats: Vec<_> = tenants.iter().map(|t| t.stats()).collect();
    let tenant_summaries = tenants
        .iter()
        .filter_map(|t| {
            let key = t.key.as_deref()?;
            Some(t.summary(key, tally.tenant(key), counts.earlier.tenant(key)))
        })
        .collect();
    Ok(Summary {
        input: config.input.clone(),
        output: config.output.clone(),
        rows: tally.rows,
        skipped: counts.skipped,
        earlier: counts.earlier.counts(),
        created: tally.count(Status::Created),
        existing: tally.count(Status::Existing),
        failed: tally.count(Status::Failed),
        invalid: tally.count(Status::Invalid),
        by_error_code: tally.by_error_code,
        requests: stats.iter().map(|s| s.requests).sum(),
        throttled_responses: stats.iter().map(|s| s.throttled).sum(),
        reconciliations,
        throttled_time: stats
            .iter()
            .map(|s| s.throttled_time)
            .max()
            .unwrap_or_default(),
        final_rate: stats.first().map_or(config.rate, |s| s.final_rate),
        token_requests: stats.iter().map(|s| s.token_requests).sum(),
        configured_rate: config.rate,
        started_at,
        finished_at: SystemTime::now(),
        elapsed: started.elapsed(),
        outcome: match (aborted, interrupted) {
            (Some(reason), _) if halt.code() == Some(crate::codes::UNWRITABLE) => {
                Outcome::Unwritable(reason)
            }
            (Some(reason), _) => Outcome::Aborted(reason),
            (None, true) => Outcome::Interrupted,
            (None, false) => Outcome::Completed,
        },
        resolution,
        concurrency: tenants.iter().map(|t| t.seats.current()).sum(),
        tenants: tenant_summaries,
    })
}

/// Every tenant's reads before the first write, all at once, each through its own budget; and
/// what resolving serial numbers cost, when rows named any.
async fn prepare(
    tenants: &[TenantRun],
    wanted: &mut HashMap<Option<String>, plan::Wanted>,
    progress: &Arc<Progress>,
) -> (Vec<Prepared>, Option<ResolutionSummary>) {
    let resolving = Instant::now();
    let prepared: Vec<Prepared> = futures::future::join_all(tenants.iter().map(|t| {
        let wanted = wanted.remove(&t.key).unwrap_or_default();
        let progress = progress.clone();
        async move { t.prepare(&wanted, &progress).await }
    }))
    .await;
    let resolution = prepared
        .iter()
        .any(|p| p.serials.0 > 0)
        .then(|| ResolutionSummary {
            serials: prepared.iter().map(|p| p.serials.0).sum(),
            found: prepared.iter().map(|p| p.serials.1).sum(),
            requests: prepared.iter().map(|p| p.resolved.requests).sum(),
            elapsed: resolving.elapsed(),
        });
    (prepared, resolution)
}

/// `--profile` with a group run: before the first write, every tenant's profile must target
/// the groups its rows name (else exit 2, nothing written).
async fn check_profile(
    config: &Config,
    tenants: &[TenantRun],
    wanted: &HashMap<Option<String>, plan::Wanted>,
) -> Result<(), RunError> {
    let Some(profile) = &config.profile else {
        return Ok(());
    };
    for t in tenants {
        let Some((_, graph)) = &t.directory else {
            return Err(RunError::Config(PROFILE_NEEDS_GROUP.into()));
        };
        let groups = wanted
            .get(&t.key)
            .map(|w| w.groups.clone())
            .unwrap_or_default();
        crate::profiles::check_targets(graph, &t.budget, profile, groups)
            .await
            .map_err(|e| RunError::Config(crate::connect::named(t.key.as_deref(), e)))?;
    }
    Ok(())
}

/// Why tenants stopped on their own, one after another (`None`: none did).
fn tenant_aborts(tenants: &[TenantRun]) -> Option<String> {
    let reasons: Vec<String> = tenants
        .iter()
        .filter_map(|t| {
            let reason = t.stopped()?;
            Some(crate::connect::named(t.key.as_deref(), reason))
        })
        .collect();
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

/// What the flow of rows shares with the run.
struct Flow<'a> {
    tenants: &'a [TenantRun],
    prepared: Vec<Prepared>,
    journal: Arc<Journal>,
    resume: Arc<Resume>,
    halt: Arc<Halt>,
    progress: Arc<Progress>,
}

/// Reader → tenants' workers → writer, until the input is done or the run stops; then what
/// the writer tallied, what the reader saw, and how many reconciling reads were made.
async fn flow(
    config: &Config,
    reader: InputReader,
    writer: ResultsWriter,
    f: Flow<'_>,
) -> Result<(Tally, ReaderCounts, u64), RunError> {
    // Several tenants: a queue that overflows waits beside the results file.
    let spill = (f.tenants.len() > 1).then(|| lane::Spill::beside(&config.output));
    if let Some(s) = &spill {
        s.remove_stale(); // under the run lock: nobody else's
    }
    let (res_tx, res_rx) = mpsc::channel(256);
    let mut reader_lanes = Vec::new();
    let mut lanes = Vec::new();
    let mut group_lanes = Vec::new();
    let mut listings = Vec::new();
    for (t, prepared) in f.tenants.iter().zip(f.prepared) {
        let (tx, rx) = lane::lane(config.tenant_queue, spill.clone());
        let tags = prepared.tags.clone();
        let assigned = prepared.assigned.assigned();
        listings.push(prepared.assigned);
        reader_lanes.push(ReaderLane {
            key: t.key.clone(),
            known: dispatch::Known {
                resolved: prepared.resolved,
                tags: prepared.tags,
                memberships: prepared.memberships.clone(),
                assigned: assigned.clone(),
            },
            queue: tx,
        });
        if let Some((budget, graph)) = &t.directory {
            let adder = group_lane::Adder {
                graph: graph.clone(),
                budget: budget.clone(),
                journal: f.journal.clone(),
                halt: f.halt.clone(),
                memberships: prepared.memberships,
                graph_url: t.config.graph_url.clone(),
            };
            group_lanes.push(group_lane::work(rx, Arc::new(adder), res_tx.clone()));
            continue;
        }
        lanes.push(LaneWork {
            queue: rx,
            workers: Arc::new(Workers {
                graph: t.graph.clone(),
                budget: t.budget.clone(),
                journal: f.journal.clone(),
                halt: f.halt.clone(),
                reconciliations: Default::default(),
                tags,
                assigned,
            }),
            seats: t.seats.clone(),
            report_stop: spill.is_some(),
        });
    }
    let reader = dispatch::spawn_reader(
        reader,
        f.resume,
        reader_lanes,
        res_tx.clone(),
        f.progress.clone(),
    );
    let writer = tokio::spawn(writer::write_results(
        writer,
        res_rx,
        f.progress.clone(),
        f.halt.clone(),
    ));
    let ticker = spawn_ticker(f.tenants, f.progress);
    let workers: Vec<Arc<Workers>> = lanes.iter().map(|l| l.workers.clone()).collect();
    futures::future::join(
        futures::future::join_all(
            lanes
                .into_iter()
                .map(|lane| dispatch::work(lane, res_tx.clone(), config.shutdown_grace)),
        ),
        futures::future::join_all(group_lanes),
    )
    .await;
    // A short run may end before the identity listing beside it.
    futures::future::join_all(listings.into_iter().map(|l| l.finish())).await;
    drop(res_tx);
    ticker.abort();
    let tally = writer
        .await
        .map_err(|e| RunError::Task("results writer", e.to_string()))??;
    let counts = match reader.await {
        Ok(Ok(counts)) => counts,
        Ok(Err(e)) => {
            f.halt.abort(e.to_string());
            ReaderCounts::default()
        }
        Err(e) => {
            f.halt.abort(format!("input reader failed: {e}"));
            ReaderCounts::default()
        }
    };
    let reconciliations = workers
        .iter()
        .map(|w| w.reconciliations.load(Ordering::Relaxed))
        .sum();
    Ok((tally, counts, reconciliations))
}

/// The input's row count, for the progress bar and the static token's warning: from the
/// planning pass when it read the input, else one quick count when someone needs it.
async fn count_rows(config: &Config, known: Option<u64>, tenants: &[TenantRun]) -> Option<u64> {
    if known.is_some() {
        return known;
    }
    let static_token = tenants
        .iter()
        .any(|t| t.budget.tokens().static_expiry().is_some());
    if !config.progress && !static_token {
        return None;
    }
    let (path, delimiter) = (config.input.clone(), config.delimiter);
    tokio::task::spawn_blocking(move || crate::input::count_rows(&path, delimiter))
        .await
        .ok()
        .flatten()
}

/// Every 50 ms each tenant's seats follow its latency (the first window's burst is paid once
/// more at the end, so its seats should grow as soon as the first answers tell the latency);
/// every 200 ms the progress line shows the pace (summed over the tenants).
fn spawn_ticker(tenants: &[TenantRun], progress: Arc<Progress>) -> tokio::task::JoinHandle<()> {
    let tenants: Vec<_> = tenants
        .iter()
        .map(|t| (t.budget.clone(), t.seats.clone()))
        .collect();
    tokio::spawn(async move {
        for tick in 0u64.. {
            for (budget, seats) in &tenants {
                if let Some(wanted) = budget.wanted_in_flight() {
                    seats.follow(wanted);
                }
            }
            if tick % 4 == 0 {
                show_pace(&tenants, &progress);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

fn show_pace(tenants: &[(Arc<crate::budget::Budget>, Arc<seats::Seats>)], progress: &Progress) {
    let paces: Vec<_> = tenants
        .iter()
        .map(|(budget, seats)| (budget.pace(), seats.current()))
        .collect();
    // Paused only while every tenant is; the pace in the first tenant's window.
    let paused = paces.iter().map(|((p, _, _), _)| *p).min().flatten();
    let at_limit = paces.iter().all(|((_, _, limit), _)| *limit);
    let seats = paces.iter().map(|(_, s)| s).sum();
    if let Some(((_, first, _), _)) = paces.first() {
        let per = first.per.as_secs_f64();
        let count = paces
            .iter()
            .map(|((_, r, _), _)| r.per_second() * per)
            .sum::<f64>();
        let rate = crate::config::RateSpec::new(count.round() as u32, first.per);
        progress.tick(paused, rate, at_limit, seats);
    }
}
