//! The bulk run, as a list of stages. Rows flow one way:
//!
//! ```text
//! input ─▶ reader ─▶ bounded queue ─▶ workers (≤ in flight) ─▶ results queue ─▶ writer ─▶ results.csv
//!                                        │ ▲
//!                                        ▼ │ leave to send, pauses
//!                                      budget (tokens, window, gate, breaker)
//! ```
//!
//! Errors are data: a row that fails is a result, not an `Err`. Only configuration, input-file
//! and results-file errors end a run before it starts ([`RunError`], exit 2); a rejected token
//! or a tripped breaker ends it midway as [`Summary::aborted`], with every finished row on disk.

mod dispatch;
mod plan;
mod resolve;
mod row;
mod seats;
mod tags;
mod worker;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::budget::Budget;
use crate::config::Config;
use crate::graph::MAX_BATCH;
use crate::graph::client::GraphClient;
use crate::halt::Halt;
use crate::input::{InputError, InputReader};
use crate::lock::{LockError, RunLock};
use crate::output::{Journal, OutputError, ResultsWriter, Status};
use crate::progress::Progress;
use crate::summary::{ResolutionSummary, Summary};

use dispatch::ReaderCounts;
use plan::Resume;
use resolve::Resolved;
use seats::Seats;
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
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<Summary, RunError> {
    let progress = Arc::new(Progress::new(config.progress));
    let result = stages(&config, &shutdown, &progress).await;
    progress.finish();
    result
}

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
    let _lock = RunLock::acquire(&config.output, &command.join(" "))?;
    // 1. Where to send and as whom.
    let http = crate::budget::connect(config).map_err(RunError::Config)?;
    let budget = Arc::new(
        Budget::from_config(config, http.clone(), halt.token()).map_err(RunError::Config)?,
    );
    // 2. What to do: the input, an earlier run's results, the journal.
    let plan = plan::prepare(config)?;
    let rows = count_rows(config, plan.rows, &budget).await;
    if let Some(n) = rows {
        progress.set_total(n);
    }
    warn_short_static_token(config, &budget, rows);
    let resume = Arc::new(plan.resume);
    let mut graph = GraphClient::new(http, &config.graph_url);
    if config.batch {
        graph = graph.batched(config.concurrency);
    }
    // 3. Serial numbers to identity ids, through the same budget.
    let resolving = Instant::now();
    let resolved = Arc::new(resolve::resolve(&plan.wanted, &graph, &budget, progress).await);
    // 3b. A tag run: which devices already carry their tag, by one listing.
    let tags = Arc::new(if config.defaults.action == crate::input::Action::Tag {
        tags::read(&plan.wanted_ids, &plan.wanted, &graph, &budget).await
    } else {
        tags::Tags::default()
    });
    let resolution = (!plan.wanted.is_empty()).then(|| ResolutionSummary {
        serials: plan.wanted.len() as u64,
        found: resolved.found() as u64,
        requests: resolved.requests,
        elapsed: resolving.elapsed(),
    });
    // 4. Rows flow: reader → workers → writer.
    let (tally, counts, reconciliations, concurrency) = flow(
        config,
        plan.reader,
        plan.writer,
        Flow {
            budget: budget.clone(),
            journal: plan.journal.clone(),
            resume: resume.clone(),
            resolved,
            tags,
            halt: halt.clone(),
            progress: progress.clone(),
            graph,
        },
    )
    .await?;
    // 5. Complete: every input row has its line.
    let aborted = halt.reason().or_else(|| budget.halt().reason());
    let interrupted = aborted.is_none() && shutdown.is_cancelled();
    if counts.finished && aborted.is_none() && !interrupted {
        plan::complete(config, &resume, counts.redone, &plan.journal)?;
    }
    // 6. The summary.
    let stats = budget.stats();
    Ok(Summary {
        input: config.input.clone(),
        output: config.output.clone(),
        rows: tally.rows,
        skipped: counts.skipped,
        created: tally.count(Status::Created),
        existing: tally.count(Status::Existing),
        failed: tally.count(Status::Failed),
        invalid: tally.count(Status::Invalid),
        by_error_code: tally.by_error_code,
        requests: stats.requests,
        throttled_responses: stats.throttled,
        reconciliations,
        throttled_time: stats.throttled_time,
        final_rate: stats.final_rate,
        token_requests: stats.token_requests,
        configured_rate: config.rate,
        started_at,
        finished_at: SystemTime::now(),
        elapsed: started.elapsed(),
        interrupted,
        aborted,
        resolution,
        concurrency,
    })
}

/// What the flow of rows shares with the run.
struct Flow {
    budget: Arc<Budget>,
    journal: Arc<Journal>,
    resume: Arc<Resume>,
    resolved: Arc<Resolved>,
    tags: Arc<tags::Tags>,
    halt: Arc<Halt>,
    progress: Arc<Progress>,
    graph: GraphClient,
}

/// Reader → workers → writer, until the input is done or the run stops; then what the writer
/// tallied, what the reader saw, and how many reconciling reads were made.
async fn flow(
    config: &Config,
    reader: InputReader,
    writer: ResultsWriter,
    f: Flow,
) -> Result<(Tally, ReaderCounts, u64, usize), RunError> {
    let workers = Arc::new(Workers {
        graph: f.graph,
        budget: f.budget.clone(),
        journal: f.journal,
        halt: f.halt.clone(),
        reconciliations: Default::default(),
    });
    let capacity = (config.concurrency * 4).max(64);
    let (job_tx, job_rx) = mpsc::channel(capacity);
    let (res_tx, res_rx) = mpsc::channel(capacity);
    let reader = dispatch::spawn_reader(
        reader,
        f.resume,
        f.resolved,
        f.tags,
        job_tx,
        res_tx.clone(),
        f.progress.clone(),
    );
    let writer = tokio::spawn(writer::write_results(
        writer,
        res_rx,
        f.progress.clone(),
        f.halt.clone(),
    ));
    let seats = Arc::new(if config.adaptive_concurrency && !config.batch {
        Seats::adaptive()
    } else {
        Seats::fixed(rows_in_flight(config))
    });
    let ticker = spawn_ticker(f.budget, f.progress, seats.clone());
    dispatch::work(
        job_rx,
        workers.clone(),
        res_tx,
        seats.clone(),
        config.shutdown_grace,
    )
    .await;
    ticker.abort();
    let tally = writer
        .await
        .map_err(|e| RunError::Task("results writer", e.to_string()))??;
    let counts = match reader.await {
        Ok(Ok(counts)) => counts,
        Ok(Err(e)) => {
            f.halt.abort(format!("input stopped being readable: {e}"));
            ReaderCounts::default()
        }
        Err(e) => {
            f.halt.abort(format!("input reader failed: {e}"));
            ReaderCounts::default()
        }
    };
    Ok((
        tally,
        counts,
        workers.reconciliations.load(Ordering::Relaxed),
        seats.current(),
    ))
}

/// The input's row count, for the progress bar and the static token's warning: from the
/// planning pass when it read the input, else one quick count when someone needs it.
async fn count_rows(config: &Config, known: Option<u64>, budget: &Budget) -> Option<u64> {
    if known.is_some() {
        return known;
    }
    if !config.progress && budget.tokens().static_expiry().is_none() {
        return None;
    }
    let (path, delimiter) = (config.input.clone(), config.delimiter);
    tokio::task::spawn_blocking(move || crate::input::count_rows(&path, delimiter))
        .await
        .ok()
        .flatten()
}

/// A static token cannot be refreshed: say so before the run when it will likely expire first
/// (rows ÷ rate is how long the run may take).
fn warn_short_static_token(config: &Config, budget: &Budget, rows: Option<u64>) {
    if budget.tokens().static_expiry().is_none() {
        return;
    }
    let expected =
        rows.and_then(|n| Duration::try_from_secs_f64(n as f64 / config.rate.per_second()).ok());
    if let Some(warning) = budget
        .tokens()
        .static_token_warning(expected, SystemTime::now())
    {
        tracing::warn!("{warning}");
    }
}

/// With `--batch`, `--concurrency` counts envelopes in flight, each carrying up to 20 rows.
fn rows_in_flight(config: &Config) -> usize {
    if config.batch {
        config.concurrency * MAX_BATCH
    } else {
        config.concurrency
    }
}

/// Every 200 ms: seats follow the latency, and the progress line shows the pace.
fn spawn_ticker(
    budget: Arc<Budget>,
    progress: Arc<Progress>,
    seats: Arc<Seats>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Some(wanted) = budget.wanted_in_flight() {
                seats.follow(wanted);
            }
            let (paused, rate, at_limit) = budget.pace();
            progress.tick(paused, rate, at_limit, seats.current());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}
