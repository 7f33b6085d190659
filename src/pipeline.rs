//! The bulk run: reader → bounded channel → dispatcher → workers (≤ concurrency) → results
//! channel → writer. One way, no back-edges; only the throttle gate is shared backwards.
//!
//! Errors are data: a row that fails is a [`RowResult`], not an `Err`. Only configuration,
//! input-file and results-file errors end a run before it starts ([`RunError`]); a rejected
//! token ends it midway as [`Summary::aborted`], with every finished row already on disk.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::TokenProvider;
use crate::config::{Config, RateSpec};
use crate::graph::client::{Attempt, Call, ErrorInfo, GraphClient, MAX_BATCH, Outcome, Reply};
use crate::input::{InputError, InputReader, Job, Parsed};
use crate::output::{
    Journal, OutputError, PriorResults, ResultsWriter, RowResult, Status, device_fingerprint,
};
use crate::progress::Progress;
use crate::retry::{GiveUp, RetryPolicy};
use crate::throttle::{Answer, Throttle};

/// A run could not start (nothing was sent). Exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("cannot use the journal {path}: {source}")]
    Journal {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a run did, for the summary, `--summary-json` and the exit code.
#[derive(Debug, Clone)]
pub struct Summary {
    pub input: PathBuf,
    pub output: PathBuf,
    /// Rows reported in the results file by this run.
    pub rows: u64,
    /// Rows skipped because an earlier run already reported them (`--resume`).
    pub skipped: u64,
    pub created: u64,
    pub existing: u64,
    pub failed: u64,
    pub invalid: u64,
    /// Failed rows by Graph error code (or our transport code).
    pub by_error_code: BTreeMap<String, u64>,
    /// HTTP requests made to Graph (POSTs and reconciling GETs).
    pub requests: u64,
    pub throttled_responses: u64,
    pub reconciliations: u64,
    pub throttled_time: Duration,
    /// The pace in force at the end (below the configured rate if the service throttled).
    pub final_rate: RateSpec,
    pub token_requests: u64,
    pub configured_rate: RateSpec,
    pub started_at: SystemTime,
    pub finished_at: SystemTime,
    pub elapsed: Duration,
    /// Why the run stopped early (token rejected, ...): exit code 3.
    pub aborted: Option<String>,
    /// Stopped by the caller's shutdown token (Ctrl-C): exit code 130.
    pub interrupted: bool,
}

impl Summary {
    /// Requests per second actually sent.
    pub fn effective_rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        }
    }

    /// The exit code contract: 0 all created/existing, 1 some failed or invalid, 3 aborted,
    /// 130 interrupted.
    pub fn exit_code(&self) -> u8 {
        if self.aborted.is_some() {
            3
        } else if self.interrupted {
            130
        } else if self.failed > 0 || self.invalid > 0 {
            1
        } else {
            0
        }
    }
}

/// Refuse to send a bearer token over plain http to anything but loopback.
pub fn check_transport(url: &str, what: &str) -> Result<(), RunError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| RunError::Config(format!("{what} {url:?} is not a URL: {e}")))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match parsed.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                Err(RunError::Config(format!(
                    "{what} {url} uses plain http: a bearer token is only ever sent over https \
                     (plain http is allowed to loopback addresses only)"
                )))
            }
        }
        other => Err(RunError::Config(format!(
            "{what} {url}: unsupported scheme {other:?} (use https)"
        ))),
    }
}

/// One request waiting for a seat in a `$batch` envelope.
struct Batched {
    call: Call,
    token: Arc<str>,
    reply: tokio::sync::oneshot::Sender<Reply>,
}

/// `--batch`: collects the requests workers hand it into `$batch` envelopes of up to
/// [`MAX_BATCH`], at most `envelopes` in flight. Each inner request has already taken its own
/// window slot, so batching changes the number of HTTP round trips, never the pace.
async fn batcher(client: GraphClient, mut queue: mpsc::Receiver<Batched>, envelopes: usize) {
    // Requests arrive together when window slots open; a few milliseconds fill an envelope.
    const LINGER: Duration = Duration::from_millis(5);
    let seats = Arc::new(tokio::sync::Semaphore::new(envelopes.max(1)));
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        let deadline = Instant::now() + LINGER;
        while group.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, queue.recv()).await {
                Ok(Some(next)) => group.push(next),
                _ => break,
            }
        }
        let Ok(seat) = seats.clone().acquire_owned().await else {
            return;
        };
        let client = client.clone();
        tokio::spawn(async move {
            let token = group[0].token.clone();
            let calls: Vec<Call> = group.iter().map(|b| b.call.clone()).collect();
            let replies = client.call_batch(&token, &calls).await;
            for (b, reply) in group.into_iter().zip(replies) {
                let _ = b.reply.send(reply);
            }
            drop(seat);
        });
    }
}

/// State every worker shares.
struct Shared {
    client: GraphClient,
    /// `--batch`: requests go through the batcher instead of one by one.
    batch: Option<mpsc::Sender<Batched>>,
    auth: TokenProvider,
    throttle: Throttle,
    policy: RetryPolicy,
    journal: Arc<Journal>,
    /// Cancelled on shutdown or abort: no new row starts, no new attempt is sent.
    stop: CancellationToken,
    abort: Mutex<Option<String>>,
    requests: AtomicU64,
    throttled: AtomicU64,
    reconciliations: AtomicU64,
    /// Rows in a row (completion order) that Graph refused with 401/403: the circuit breaker.
    refused_in_a_row: AtomicU32,
}

/// Consecutive rows refused with 401/403 that stop the run: a missing permission fails every
/// row the same way, and thousands of identical failures help nobody.
const BREAKER_ROWS: u32 = 10;

impl Shared {
    /// Send one request, alone or in a `$batch` envelope.
    async fn send(&self, token: &Arc<str>, call: Call) -> Reply {
        let Some(queue) = &self.batch else {
            return self.client.call(token, &call).await;
        };
        // If the envelope task ends without an answer, the request may have been sent.
        let lost = Attempt {
            outcome: Outcome::Retry {
                retry_after: None,
                ambiguous: true,
                error: ErrorInfo {
                    code: "ConnectionLost".into(),
                    message: "the $batch envelope ended without an answer".into(),
                },
            },
            http_status: None,
            request_id: None,
            client_request_id: String::new(),
        };
        let fallback = call.failed(lost);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let item = Batched {
            call,
            token: token.clone(),
            reply: tx,
        };
        if queue.send(item).await.is_err() {
            return fallback;
        }
        rx.await.unwrap_or(fallback)
    }

    /// Count a finished row for the circuit breaker; trip it at [`BREAKER_ROWS`] refusals in
    /// a row (401 after the one refresh, or 403). Rows in flight still finish and are written.
    fn observe(&self, r: &RowResult) {
        let refused = r.status == Status::Failed && matches!(r.http_status, Some(401 | 403));
        if !refused {
            self.refused_in_a_row.store(0, Ordering::Relaxed);
            return;
        }
        if self.refused_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 == BREAKER_ROWS {
            let code = r.error_code.as_deref().unwrap_or("Unknown");
            let message = r.error_message.as_deref().unwrap_or("");
            let hint = if r.http_status == Some(403) {
                "the app registration needs the Microsoft Graph application permission \
                 DeviceManagementServiceConfig.ReadWrite.All with admin consent"
            } else {
                "Graph does not accept the tokens: check that the tenant, the app and --cloud \
                 match the Graph URL"
            };
            self.abort(format!(
                "circuit breaker: Graph refused {BREAKER_ROWS} rows in a row with {} {code}: \
                 {message} — {hint}; fix it and rerun (finished rows are in the results file)",
                r.http_status.unwrap_or(0)
            ));
        }
    }

    fn abort(&self, reason: String) {
        let mut a = self.abort.lock().unwrap_or_else(|p| p.into_inner());
        if a.is_none() {
            tracing::error!("{reason}");
            *a = Some(reason);
        }
        self.stop.cancel();
    }
}

/// Tallies kept by the writer.
#[derive(Debug, Default)]
struct Tally {
    rows: u64,
    by_status: BTreeMap<Status, u64>,
    by_error_code: BTreeMap<String, u64>,
}

/// Run the whole job. `shutdown` stops dispatching new rows; rows in flight finish.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<Summary, RunError> {
    let progress = Arc::new(Progress::new(config.progress));
    let result = run_with_progress(config, shutdown, progress.clone()).await;
    progress.finish();
    result
}

async fn run_with_progress(
    config: Config,
    shutdown: CancellationToken,
    progress: Arc<Progress>,
) -> Result<Summary, RunError> {
    check_transport(&config.graph_url, "Graph URL")?;
    check_transport(&config.authority_url, "authority URL")?;
    // Credentials before the input: a missing or unreadable certificate creates no results file.
    let token_http = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| RunError::Config(format!("cannot build the HTTP client: {e}")))?;
    let auth = TokenProvider::from_credentials(
        token_http,
        &config.authority_url,
        &config.cloud.scope(),
        &config.credentials,
    )
    .map_err(|e| RunError::Config(e.to_string()))?;
    let started_at = SystemTime::now();
    let started = Instant::now();

    // Input first: a file that is not a table fails before a results file is created.
    let reader = InputReader::open(&config.input, config.delimiter, config.defaults.clone())?;
    if !reader.unknown_columns().is_empty() {
        tracing::warn!(
            columns = %reader.unknown_columns().join(", "),
            "ignoring columns that are not input columns"
        );
    }
    let journal_err = |source| RunError::Journal {
        path: Journal::path_for(&config.output),
        source,
    };
    let (writer, prior, journal, started_rows) = if config.resume && config.output.exists() {
        let prior = crate::output::read_prior(&config.output)?;
        check_belongs(&config, &prior)?;
        let writer = if prior.valid_len == 0 {
            ResultsWriter::create(&config.output, true)?
        } else {
            ResultsWriter::append(&config.output, prior.valid_len)?
        };
        let (journal, started) = Journal::open(&config.output, false).map_err(journal_err)?;
        tracing::info!(
            done = prior.rows.len(),
            started_before = started.len(),
            "resuming {}",
            config.output.display()
        );
        (writer, prior, journal, started)
    } else {
        let writer = ResultsWriter::create(&config.output, config.overwrite || config.resume)?;
        let (journal, _) = Journal::open(&config.output, true).map_err(journal_err)?;
        (writer, PriorResults::default(), journal, Vec::new())
    };
    let journal = Arc::new(journal);

    let client = GraphClient::new(
        &config.graph_url,
        config.connect_timeout,
        config.request_timeout,
    )
    .map_err(|e| RunError::Config(format!("cannot build the HTTP client: {e}")))?;
    if auth.static_expiry().is_some() {
        // Rows ÷ rate: how long the run will likely take, to compare with the token's life.
        let (path, delimiter) = (config.input.clone(), config.delimiter);
        let rows = tokio::task::spawn_blocking(move || crate::input::count_rows(&path, delimiter))
            .await
            .ok()
            .flatten();
        let expected = rows
            .and_then(|n| Duration::try_from_secs_f64(n as f64 / config.rate.per_second()).ok());
        if let Some(warning) = auth.static_token_warning(expected, SystemTime::now()) {
            tracing::warn!("{warning}");
        }
    }
    let batch = config.batch.then(|| {
        let (tx, rx) = mpsc::channel(MAX_BATCH * config.concurrency);
        tokio::spawn(batcher(client.clone(), rx, config.concurrency));
        tx
    });
    let shared = Arc::new(Shared {
        client,
        batch,
        auth,
        throttle: Throttle::new(config.rate, config.adaptive),
        policy: RetryPolicy {
            initial: config.initial_backoff,
            ..RetryPolicy::new(config.max_attempts, config.max_retry_time)
        },
        journal: journal.clone(),
        stop: shutdown.child_token(),
        abort: Mutex::new(None),
        requests: AtomicU64::new(0),
        throttled: AtomicU64::new(0),
        reconciliations: AtomicU64::new(0),
        refused_in_a_row: AtomicU32::new(0),
    });

    if config.progress {
        let (path, delimiter, p) = (config.input.clone(), config.delimiter, progress.clone());
        tokio::task::spawn_blocking(move || {
            if let Some(n) = crate::input::count_rows(&path, delimiter) {
                p.set_total(n);
            }
        });
    }

    let capacity = (config.concurrency * 4).max(64);
    let (job_tx, mut job_rx) = mpsc::channel::<WorkItem>(capacity);
    let (res_tx, res_rx) = mpsc::channel::<RowResult>(capacity);

    // Reader: a blocking thread; valid rows to the dispatcher, invalid ones straight to results,
    // rows an earlier run finished skipped.
    let reader_results = res_tx.clone();
    let reader_progress = progress.clone();
    let retry_invalid = config.retry_invalid;
    let started_rows: std::collections::HashSet<u64> = started_rows.into_iter().collect();
    let prior_rows = prior.rows;
    let reader_task = tokio::task::spawn_blocking(move || -> Result<ReaderCounts, InputError> {
        let mut counts = ReaderCounts::default();
        for item in reader {
            let parsed = item?;
            let earlier = prior_rows.get(&parsed.row());
            if let Some(p) = earlier {
                if p.status.is_success() || (p.status == Status::Invalid && !retry_invalid) {
                    counts.skipped += 1;
                    reader_progress.advance(1);
                    continue;
                }
                counts.redone += 1;
            }
            match parsed {
                Parsed::Job(job) => {
                    // Started before and not finished well: its POST may have been executed.
                    let reconcile = earlier.is_some() || started_rows.contains(&job.row);
                    if job_tx.blocking_send(WorkItem { job, reconcile }).is_err() {
                        break; // dispatch stopped
                    }
                }
                Parsed::Invalid(i) => {
                    if reader_results
                        .blocking_send(RowResult::invalid(i.row, i.device_id, i.reason))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        counts.finished = true;
        Ok(counts)
    });

    let writer_task = tokio::spawn(write_results(writer, res_rx, progress.clone()));

    let ticker = {
        let (shared, progress) = (shared.clone(), progress.clone());
        tokio::spawn(async move {
            loop {
                progress.tick(
                    shared.throttle.gate().remaining(),
                    shared.throttle.current_rate(),
                    shared.throttle.at_limit(),
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Dispatcher: at most `concurrency` rows in flight; stops pulling rows when told to stop.
    // The stream owns the receiver: when dispatch ends, dropping it releases a reader blocked
    // on a full channel.
    let jobs = futures::stream::poll_fn(move |cx| job_rx.poll_recv(cx))
        .take_until(shared.stop.clone().cancelled_owned());
    // With --batch, `concurrency` counts envelopes in flight, each carrying up to 20 rows.
    let rows_in_flight = if config.batch {
        config.concurrency * MAX_BATCH
    } else {
        config.concurrency
    };
    let dispatch = jobs.for_each_concurrent(rows_in_flight, |item| {
        let shared = shared.clone();
        let res_tx = res_tx.clone();
        async move {
            if let Some(result) = process_row(&shared, item).await {
                shared.observe(&result);
                // The writer only goes away on a write error, reported below.
                let _ = res_tx.send(result).await;
            }
        }
    });
    // After a stop, rows in flight get a grace period to finish; then they are abandoned to
    // the next --resume, which finds them in the journal and reconciles them.
    let grace = async {
        shared.stop.cancelled().await;
        tokio::time::sleep(config.shutdown_grace).await;
    };
    tokio::select! {
        () = dispatch => {}
        () = grace => tracing::warn!(
            "rows still in flight after {:?} were abandoned; --resume will reconcile them",
            config.shutdown_grace
        ),
    }
    drop(res_tx);

    let reader_outcome = reader_task.await;
    let tally = writer_task
        .await
        .map_err(|e| RunError::Config(format!("results writer task failed: {e}")))??;
    ticker.abort();

    let counts = match reader_outcome {
        Ok(Ok(counts)) => counts,
        Ok(Err(e)) => {
            shared.abort(format!("input stopped being readable: {e}"));
            ReaderCounts::default()
        }
        Err(e) => {
            shared.abort(format!("input reader failed: {e}"));
            ReaderCounts::default()
        }
    };

    let aborted = shared
        .abort
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let interrupted = aborted.is_none() && shutdown.is_cancelled();
    // Complete: every row of the input has its line. Then the journal has served its purpose,
    // and rows a resume redid are folded to one line each.
    if counts.finished && aborted.is_none() && !interrupted {
        if prior.has_repeats || counts.redone > 0 {
            crate::output::compact(&config.output)?;
        }
        journal.remove().map_err(journal_err)?;
    }
    let count = |s: Status| tally.by_status.get(&s).copied().unwrap_or(0);
    Ok(Summary {
        input: config.input.clone(),
        output: config.output.clone(),
        rows: tally.rows,
        skipped: counts.skipped,
        created: count(Status::Created),
        existing: count(Status::Existing),
        failed: count(Status::Failed),
        invalid: count(Status::Invalid),
        by_error_code: tally.by_error_code,
        requests: shared.requests.load(Ordering::Relaxed),
        throttled_responses: shared.throttled.load(Ordering::Relaxed),
        reconciliations: shared.reconciliations.load(Ordering::Relaxed),
        throttled_time: shared.throttle.gate().closed_total(),
        final_rate: shared.throttle.current_rate(),
        token_requests: shared.auth.requests(),
        configured_rate: config.rate,
        started_at,
        finished_at: SystemTime::now(),
        elapsed: started.elapsed(),
        interrupted,
        aborted,
    })
}

/// The one task that owns the results file.
async fn write_results(
    mut writer: ResultsWriter,
    mut results: mpsc::Receiver<RowResult>,
    progress: Arc<Progress>,
) -> Result<Tally, RunError> {
    let mut tally = Tally::default();
    while let Some(r) = results.recv().await {
        // A row is a few hundred bytes: writing it inline is cheaper than a blocking hop.
        writer.write(&r)?;
        tally.rows += 1;
        *tally.by_status.entry(r.status).or_default() += 1;
        if r.status == Status::Failed {
            let code = r.error_code.clone().unwrap_or_else(|| "Unknown".into());
            *tally.by_error_code.entry(code).or_default() += 1;
        }
        progress.record(r.status);
    }
    Ok(tally)
}

/// What an attempt tells the throttle about the service's budget.
fn pacing_answer(attempt: &Attempt) -> Answer {
    match attempt.http_status {
        Some(429) => Answer::Throttled {
            retry_after: match attempt.outcome {
                Outcome::Retry { retry_after, .. } => retry_after,
                _ => None,
            },
        },
        Some(s) if s < 500 => Answer::Accepted,
        _ => Answer::Other,
    }
}

/// A row on its way to a worker.
struct WorkItem {
    job: Job,
    /// Reconcile (GET) before the first POST: an earlier run may have sent it.
    reconcile: bool,
}

/// What the reader saw.
#[derive(Debug, Default)]
struct ReaderCounts {
    /// Rows an earlier run already finished (`--resume`).
    skipped: u64,
    /// Rows an earlier run reported that this run does again.
    redone: u64,
    /// The whole input was read.
    finished: bool,
}

/// `--resume`: the results file must belong to this input. Every row it reports must be the
/// same device at the same row number; checked before anything is sent.
fn check_belongs(config: &Config, prior: &PriorResults) -> Result<(), RunError> {
    let mismatch = |reason: String| {
        RunError::Output(OutputError::Resume {
            path: config.output.clone(),
            reason: format!("it does not belong to {}: {reason}", config.input.display()),
        })
    };
    let reader = InputReader::open(&config.input, config.delimiter, config.defaults.clone())?;
    let mut rows = 0;
    for item in reader {
        let parsed = item?;
        rows = parsed.row();
        let Some(p) = prior.rows.get(&rows) else {
            continue;
        };
        let device = match &parsed {
            Parsed::Job(j) => device_fingerprint(&j.device_id.to_string()),
            Parsed::Invalid(i) => device_fingerprint(&i.device_id),
        };
        let raw = match &parsed {
            Parsed::Job(j) => j.device_id.to_string(),
            Parsed::Invalid(i) => i.device_id.clone(),
        };
        if device != p.device && device_fingerprint(&raw) != p.device {
            return Err(mismatch(format!(
                "row {rows} is device {raw:?} in the input but another device in the results"
            )));
        }
    }
    if let Some(beyond) = prior.rows.keys().copied().filter(|&r| r > rows).min() {
        return Err(mismatch(format!(
            "the results report row {beyond}, the input has {rows} rows"
        )));
    }
    Ok(())
}

/// What to do after a failed attempt.
enum Next {
    /// Try again after this delay; `gate` closes it for every worker (a throttled answer).
    Retry { delay: Duration, gate: bool },
    /// Record the row as failed with this error.
    Fail(ErrorInfo),
}

/// One row from first attempt to final answer. `None`: the run stopped before the row
/// finished; it is left out of the results so that `--resume` does it.
async fn process_row(shared: &Shared, item: WorkItem) -> Option<RowResult> {
    let WorkItem { job, reconcile } = item;
    let first_attempt = Instant::now();
    let mut retry = shared.policy.start();
    let mut attempts: u32 = 0;
    // A 401 earns one fresh token per token, not per row: a row that outlives two tokens may
    // refresh twice, but a 401 on the very token its own refresh brought is final.
    let mut refresh_pending = false;
    let mut fresh: Option<Arc<str>> = None;
    // Set after an ambiguous failure (or when an earlier run may have sent the row): the POST
    // may have been executed, so look before sending it again. Never re-POST blindly.
    let mut reconcile = reconcile;
    let mut journaled = false;

    let finish = |status: Status,
                  id: Option<String>,
                  error: Option<ErrorInfo>,
                  last: Option<&Attempt>,
                  attempts: u32| {
        RowResult {
            row: job.row,
            device_id: job.device_id.to_string(),
            status,
            http_status: last.and_then(|a| a.http_status),
            assignment_id: id,
            attempts,
            error_code: error.as_ref().map(|e| e.code.clone()),
            error_message: error.map(|e| e.message),
            request_id: last.and_then(|a| a.request_id.clone()),
            client_request_id: last.map(|a| a.client_request_id.clone()),
            duration_ms: u64::try_from(first_attempt.elapsed().as_millis()).unwrap_or(u64::MAX),
            finished_at: SystemTime::now(),
        }
    };

    loop {
        let slot = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => return None,
            slot = shared.throttle.acquire() => slot,
        };
        let token = match shared.auth.token().await {
            Ok(t) => t,
            Err(e) => {
                shared.abort(format!("authentication failed: {e}"));
                return None;
            }
        };
        if std::mem::take(&mut refresh_pending) {
            fresh = Some(token.clone());
        }
        if !journaled {
            // Durably note the intent before the first request can reach the service.
            if let Err(e) = shared.journal.record(job.row).await {
                shared.abort(format!("cannot write the journal: {e}"));
                return None;
            }
            journaled = true;
        }
        attempts += 1;
        shared.requests.fetch_add(1, Ordering::Relaxed);

        let attempt = if reconcile {
            shared.reconciliations.fetch_add(1, Ordering::Relaxed);
            let (listed, attempt) = match shared
                .send(
                    &token,
                    Call::List {
                        device: job.device_id,
                    },
                )
                .await
            {
                Reply::Listed(listed, attempt) => (listed, attempt),
                Reply::Posted(attempt) => (Err(attempt.outcome.clone()), attempt),
            };
            slot.answered(pacing_answer(&attempt));
            match listed {
                Ok(held) => {
                    if let Some(found) = held.iter().find(|a| job.assignment.matches(a)) {
                        tracing::debug!(row = job.row, "ambiguous attempt had succeeded");
                        return Some(finish(
                            Status::Existing,
                            found.id.clone(),
                            None,
                            Some(&attempt),
                            attempts,
                        ));
                    }
                    // Not there: the earlier POST was not executed; send it now, no delay.
                    reconcile = false;
                    continue;
                }
                Err(_) => attempt,
            }
        } else {
            let reply = shared
                .send(
                    &token,
                    Call::Post {
                        device: job.device_id,
                        body: job.assignment.clone(),
                    },
                )
                .await;
            let attempt = reply.attempt().clone();
            slot.answered(pacing_answer(&attempt));
            attempt
        };

        let next = match &attempt.outcome {
            Outcome::Created { id } => {
                return Some(finish(
                    Status::Created,
                    Some(id.clone()),
                    None,
                    Some(&attempt),
                    attempts,
                ));
            }
            Outcome::Permanent(e) => Next::Fail(e.clone()),
            Outcome::Unauthorized(e) => {
                if fresh.as_deref() == Some(&*token) {
                    Next::Fail(e.clone())
                } else {
                    // The token may have expired early or been revoked: one fresh token.
                    refresh_pending = true;
                    shared.auth.invalidate(&token, &e.message).await;
                    Next::Retry {
                        delay: Duration::ZERO,
                        gate: false,
                    }
                }
            }
            Outcome::Retry {
                retry_after,
                ambiguous,
                error,
            } => {
                reconcile |= *ambiguous;
                let throttled = attempt.throttled();
                if throttled {
                    shared.throttled.fetch_add(1, Ordering::Relaxed);
                }
                // A 429 without Retry-After (Intune's usual answer): the backoff schedule,
                // capped so that the pause never overshoots the window by much; the throttle's
                // single probe then finds out whether the service has room again.
                let pause = match (*retry_after, throttled) {
                    (None, true) => retry
                        .next_backoff()
                        .map(|d| d.min(shared.throttle.probe_interval())),
                    (ra, _) => ra,
                };
                match retry.next_delay(attempts, pause) {
                    Ok(delay) => Next::Retry {
                        delay,
                        // A 429, or a 503 that says when to return, speaks for the whole app.
                        gate: throttled || retry_after.is_some(),
                    },
                    Err(why) => Next::Fail(ErrorInfo {
                        code: error.code.clone(),
                        message: format!(
                            "{} ({})",
                            error.message,
                            match why {
                                GiveUp::Attempts => format!("gave up after {attempts} attempts"),
                                GiveUp::Time => "gave up: --max-retry-time reached".to_string(),
                            }
                        ),
                    }),
                }
            }
        };
        match next {
            Next::Fail(error) => {
                return Some(finish(
                    Status::Failed,
                    None,
                    Some(error),
                    Some(&attempt),
                    attempts,
                ));
            }
            Next::Retry { delay, gate } => {
                tracing::debug!(row = job.row, ?delay, gate, status = ?attempt.http_status, "retrying");
                if gate {
                    shared.throttle.gate().close_for(delay);
                } else if !delay.is_zero() {
                    tokio::select! {
                        biased;
                        _ = shared.stop.cancelled() => return None,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(check_transport("https://graph.microsoft.com/beta", "Graph URL").is_ok());
        assert!(check_transport("http://127.0.0.1:8080/beta", "Graph URL").is_ok());
        assert!(check_transport("http://[::1]:8080/beta", "Graph URL").is_ok());
        assert!(check_transport("http://localhost:1/beta", "Graph URL").is_ok());
        let e = check_transport("http://graph.example.com/beta", "Graph URL").unwrap_err();
        assert!(e.to_string().contains("plain http"), "{e}");
        assert!(check_transport("http://10.0.0.1/beta", "Graph URL").is_err());
        assert!(check_transport("ftp://x/beta", "Graph URL").is_err());
    }
}
