//! Everything one Graph tenant lends a run, behind one value: its tokens, its write window
//! (slots, adaptive pace, gate), its quota on all requests, the retry policy and the circuit
//! breaker.
//!
//! Graph throttles per tenant and app, so these belong together: a 429 from one tenant says
//! nothing about another. Workers ask the budget for leave to send ([`Budget::admit`]) and hand
//! every answer back once ([`Budget::settle`]); the budget alone decides pauses: whether the
//! whole tenant waits (the gate) or only the row (its backoff).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;

use crate::auth::TokenProvider;
use crate::config::{Config, RateSpec, check_transport};
use crate::graph::answer::{Attempt, Failure};
use crate::graph::client::http_client;
use crate::halt::Halt;
use crate::output::{RowResult, Status};
use crate::retry::{GiveUp, RetryPolicy, RowRetry};
use crate::throttle::{Answer, Slot, Throttle};

/// How a tenant's budget is shaped.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Writes: `--rate`, enforced by window slots (reconciling reads take a slot too).
    pub rate: RateSpec,
    /// All requests of the app, reads and writes: `--request-rate`.
    pub request_rate: RateSpec,
    /// Learn the service's real budget from its 429s.
    pub adaptive: bool,
    pub retry: RetryPolicy,
    /// Stop the tenant when no request has had an HTTP answer for this long (and at least
    /// [`UNREACHABLE_ATTEMPTS`] in a row): the service is unreachable, and every row would
    /// only spend its whole retry budget.
    pub unreachable_after: Duration,
}

/// Recent answers the outage rule looks at, and how many of them must be faults (5xx or no
/// answer) for the service to count as down rather than failing a request here and there.
/// Eight of ten: at a 10 % rate of isolated faults, half of ten comes up about once per 1,000
/// answers by chance (and paused every row a second); eight of ten, about once per three
/// million. An outage fails every answer, so it is still seen after eight.
const RECENT_ANSWERS: usize = 10;
const OUTAGE_FAULTS: usize = 8;

/// The last [`RECENT_ANSWERS`] answers: fault or not.
#[derive(Debug, Default)]
struct Faults(std::sync::Mutex<std::collections::VecDeque<bool>>);

impl Faults {
    /// Record an answer; whether the service now looks down: at least [`OUTAGE_FAULTS`] of the
    /// last [`RECENT_ANSWERS`] answers were faults, this one among them.
    fn observe(&self, fault: bool) -> bool {
        let mut recent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_ANSWERS {
            recent.pop_front();
        }
        recent.push_back(fault);
        fault && recent.iter().filter(|f| **f).count() >= OUTAGE_FAULTS
    }
}

/// The service's answer time, smoothed (an exponentially weighted mean, a fifth per answer).
#[derive(Debug, Default)]
struct Latency(std::sync::Mutex<Option<Duration>>);

impl Latency {
    fn observe(&self, sample: Duration) {
        let mut mean = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *mean = Some(match *mean {
            Some(m) => m.mul_f64(0.8) + sample.mul_f64(0.2),
            None => sample,
        });
    }

    fn mean(&self) -> Option<Duration> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Rows in flight at most while a pace above Graph's published limit has not been seen to
/// hold: every request out when the first 429 comes back is refused too.
pub const UNPROVEN_IN_FLIGHT: usize = 16;

/// Requests in a row without an HTTP answer before the service can count as unreachable.
pub const UNREACHABLE_ATTEMPTS: u32 = 8;

/// The current run of requests without an HTTP answer.
#[derive(Debug, Default)]
struct Silence {
    attempts: u32,
    since: Option<tokio::time::Instant>,
}

/// Leave to send one request. Hand it back through [`Budget::settle`] with the answer;
/// dropped unsent, it frees its slot at once.
#[derive(Debug)]
pub struct Permit {
    /// A write's window slot; a read takes none.
    slot: Option<Slot>,
    sent: tokio::time::Instant,
}

/// Rows out with a request, counted by their budget until this drops.
#[derive(Debug)]
pub struct Sending<'a> {
    budget: &'a Budget,
    rows: usize,
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.budget.rows_out.fetch_sub(self.rows, Ordering::Relaxed);
    }
}

/// What a row does after a failed attempt, as the budget decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// The answer asks for no pause (success, a permanent refusal, a refused token).
    None,
    /// Try again after this delay (zero when the gate already holds everyone back).
    Retry(Duration),
    /// The row's retry budget is spent.
    GiveUp(GiveUp),
}

/// Consecutive rows refused with 401/403, or failed with the 400 "No OData route", that stop
/// the tenant: a missing permission or a route the tenant does not serve fails every row the
/// same way, and thousands of identical failures help nobody.
const BREAKER_ROWS: u32 = 10;

/// How Graph's router begins the 400 it gives for a route it does not serve.
pub const NO_ODATA_ROUTE: &str = "No OData route";

/// Whether a failed row's answer is Graph's 400 for a route it does not serve.
pub fn is_no_odata_route(http_status: Option<u16>, message: Option<&str>) -> bool {
    http_status == Some(400) && message.is_some_and(|m| m.trim_start().starts_with(NO_ODATA_ROUTE))
}

/// Counters for the summary.
#[derive(Debug, Clone)]
pub struct BudgetStats {
    pub requests: u64,
    pub throttled: u64,
    pub throttled_time: Duration,
    pub final_rate: RateSpec,
    pub token_requests: u64,
}

pub struct Budget {
    tokens: TokenProvider,
    window: Throttle,
    /// Intune caps all requests of an app (1,000 per 20 s) beside its writes: a GCRA quota
    /// every request takes a cell of.
    quota: DefaultDirectRateLimiter,
    retry: RetryPolicy,
    unreachable_after: Duration,
    silence: std::sync::Mutex<Silence>,
    faults: Faults,
    latency: Latency,
    halt: Halt,
    refused_in_a_row: AtomicU32,
    unrouted_in_a_row: AtomicU32,
    /// Rows whose request is out now ([`Budget::sending`]): what a tripped breaker still
    /// reports after it stopped sending.
    rows_out: AtomicUsize,
    requests: AtomicU64,
    /// Writes let go (permits with a window slot), and those answered. A write dropped
    /// between the two (stopped mid-flight) may still be carried out; a read lands nothing,
    /// so a read dropped mid-flight (the identity listing beside a run that ended) is neither.
    admitted: AtomicU64,
    answered: AtomicU64,
    throttled: AtomicU64,
    /// Where a 429's "come back at" is kept, so that a resume after a kill honours it.
    gate_kept_in: std::sync::OnceLock<Arc<crate::output::Journal>>,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("tokens", &self.tokens)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

/// The request quota as a GCRA (governor): a burst of `b` cells, then one each `T`. Any
/// window of `DURATION` then holds at most `b + DURATION / T` cells, so a burst of the whole
/// COUNT with its refill beside it would let twice COUNT into one of the service's windows.
/// Every window's cells go to the burst, to the refill, and to a fortieth of COUNT left
/// unspent for requests that leave later than their cell (a journal entry first, a token) and
/// bunch on arrival, so that the service never meets more than COUNT. The burst is a
/// twentieth: every cell of burst is one less of refill on a night that is all reads, yet
/// every write spends a cell too, and a window's burst of writes (Intune's 100 of its 1,000)
/// must mostly go at once, or the first 429 measures a blurred window. BENCHMARKS.md has the
/// figures behind both.
fn quota(rate: RateSpec) -> Quota {
    let count = rate.count.max(1);
    let burst = NonZeroU32::new(count / 20).unwrap_or(NonZeroU32::MIN);
    let refill = count.saturating_sub(burst.get() + count / 40).max(1);
    let period = (rate.per / refill).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

/// The one HTTP client of a run, after refusing to send a bearer token over plain http to
/// anything but loopback.
pub fn connect(config: &Config) -> Result<reqwest::Client, String> {
    check_transport(&config.graph_url, "Graph URL")?;
    check_transport(&config.authority_url, "authority URL")?;
    http_client(config.connect_timeout, config.request_timeout)
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

impl Budget {
    /// The budget of the tenant `config` names. Credentials are loaded here: a missing or
    /// unreadable certificate is a configuration error before anything is read or sent.
    pub fn from_config(
        config: &Config,
        http: reqwest::Client,
        run: &CancellationToken,
    ) -> Result<Budget, String> {
        let tokens = TokenProvider::from_credentials(
            http,
            &config.authority_url,
            &config.cloud.scope(),
            &config.credentials,
        )
        .map_err(|e| e.to_string())?;
        let limits = Limits {
            rate: config.rate,
            request_rate: config.request_rate,
            adaptive: config.adaptive,
            retry: RetryPolicy {
                initial: config.initial_backoff,
                ..RetryPolicy::new(config.max_attempts, config.max_retry_time)
            },
            unreachable_after: config.unreachable_after,
        };
        Ok(Budget::new(tokens, limits, run))
    }

    /// A budget that stops when `run` is cancelled, or on its own when its tenant fails.
    pub fn new(tokens: TokenProvider, limits: Limits, run: &CancellationToken) -> Self {
        Self {
            tokens,
            window: Throttle::new(limits.rate, limits.adaptive),
            quota: RateLimiter::direct(quota(limits.request_rate)),
            retry: limits.retry,
            unreachable_after: limits.unreachable_after,
            silence: Default::default(),
            faults: Faults::default(),
            latency: Latency::default(),
            halt: Halt::child_of(run),
            refused_in_a_row: AtomicU32::new(0),
            unrouted_in_a_row: AtomicU32::new(0),
            rows_out: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            gate_kept_in: std::sync::OnceLock::new(),
        }
    }

    pub fn tokens(&self) -> &TokenProvider {
        &self.tokens
    }

    pub fn halt(&self) -> &Halt {
        &self.halt
    }

    /// A fresh retry budget for one row.
    pub fn start_row(&self) -> RowRetry {
        self.retry.start()
    }

    /// Wait for leave to send one request: the gate open, a window slot, a cell of the request
    /// quota. `None` once the budget (or the run) has stopped.
    pub async fn admit(&self) -> Option<Permit> {
        let admitted = async {
            let slot = self.window.acquire().await;
            self.quota.until_ready().await;
            // The gate may have closed while the quota was waited for.
            self.window.gate().wait().await;
            slot
        };
        let permit = tokio::select! {
            biased;
            _ = self.halt.stopped() => None,
            slot = admitted => Some(Permit {
                slot: Some(slot),
                sent: tokio::time::Instant::now(),
            }),
        };
        self.admitted
            .fetch_add(u64::from(permit.is_some()), Ordering::Relaxed);
        permit
    }

    /// Keep every "come back at" a 429 gives in `journal` (the run's), from now on.
    pub fn keep_gate_in(&self, journal: Arc<crate::output::Journal>) {
        let _ = self.gate_kept_in.set(journal);
    }

    /// Writes let go and never answered: sent when the run stopped (or dropped before their
    /// answer came). Zero after an orderly stop means nothing of this budget's can land later.
    pub fn unanswered(&self) -> u64 {
        let admitted = self.admitted.load(Ordering::Relaxed);
        admitted.saturating_sub(self.answered.load(Ordering::Relaxed))
    }

    /// Leave to send one read (a listing page, a reconciling or pre-write GET): the gate open
    /// and a cell of the request quota, never a write slot. Intune allows 100 writes but 1,000
    /// requests of any kind per 20 s: a read spent from the write window is a write lost.
    pub async fn admit_read(&self) -> Option<Permit> {
        let admitted = async {
            self.quota.until_ready().await;
            self.window.gate().wait().await;
        };
        // During an outage (also one that began while this read waited at the gate), reads
        // go one probe at a time through the window, as writes do.
        if self.window.outage_on() {
            return self.admit().await;
        }
        tokio::select! {
            biased;
            _ = self.halt.stopped() => return None,
            () = admitted => {}
        }
        if self.window.outage_on() {
            return self.admit().await;
        }
        Some(Permit {
            slot: None,
            sent: tokio::time::Instant::now(),
        })
    }

    /// A valid token. `None`: authentication failed and this budget has stopped.
    pub async fn token(&self) -> Option<Arc<str>> {
        match self.tokens.token().await {
            Ok(t) => Some(t),
            Err(e) => {
                self.halt.abort_as(
                    "AuthenticationFailed",
                    format!("authentication failed: {e}"),
                );
                None
            }
        }
    }

    /// Graph refused `token` with a 401: the next [`Budget::token`] fetches a new one.
    pub async fn token_refused(&self, token: &str, why: &str) {
        self.tokens.invalidate(token, why).await;
    }

    /// Hand an answer back. Teaches the window what the service said and decides the pause:
    /// a 429 closes the gate for every worker (the app is over its budget); so does any fault
    /// while faults cluster (8 of the last 10 answers: an outage), for its Retry-After or a
    /// short backoff, and then one request at a time tests whether the service is back. A
    /// lone fault delays only its own row.
    pub fn settle<T>(
        &self,
        permit: Permit,
        attempt: &Attempt<T>,
        row: &mut RowRetry,
        attempts: u32,
    ) -> Pause {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.latency.observe(permit.sent.elapsed());
        let retry_after = match attempt.failure() {
            Some(Failure::Retry { retry_after, .. }) => Some(*retry_after),
            _ => None,
        };
        // A 429 the request's own reading took as its answer (the Autopilot sync's
        // once-per-ten-minutes rule) is the service speaking of that request, not of the app's
        // throttle.
        let throttled = attempt.http_status == Some(429) && attempt.result.is_err();
        // Only writes teach the write window; a read's 429 still closes the gate below.
        if let Some(slot) = permit.slot {
            self.answered.fetch_add(1, Ordering::Relaxed);
            slot.answered(match attempt.http_status {
                Some(429) if throttled => Answer::Throttled {
                    retry_after: retry_after.flatten(),
                },
                Some(s) if s < 500 => Answer::Accepted,
                _ => Answer::Other,
            });
        }
        self.observe_transport(attempt);
        let outage = self
            .faults
            .observe(attempt.http_status.is_none_or(|s| s >= 500));
        if outage {
            self.window.outage();
        }
        let Some(retry_after) = retry_after else {
            return Pause::None;
        };
        if throttled {
            self.throttled.fetch_add(1, Ordering::Relaxed);
        }
        // A 429 without Retry-After (Intune's usual answer): while the service's window is
        // still unknown, until the instant it has room if its window is the next likely
        // length; later, the backoff schedule, capped so that the pause never overshoots the
        // window by much. The window's single probe then finds out whether there is room. An
        // outage without Retry-After is probed the same capped way.
        let capped = |row: &mut RowRetry| {
            row.next_backoff()
                .map(|d| d.min(self.window.probe_interval()))
        };
        let room = if throttled {
            self.window.room_in()
        } else {
            None
        };
        let pause = match (retry_after, throttled) {
            (None, true) => self
                .window
                .first_probe_in()
                .or(room)
                .or_else(|| capped(row)),
            (None, false) if outage => capped(row),
            (ra, _) => ra,
        };
        // A 429 speaks for the whole app; a fault speaks for its own request, unless faults
        // cluster (an outage): then everyone waits.
        match row.next_delay(attempts, pause) {
            Ok(delay) if throttled => {
                self.window.gate().close_for(delay);
                if let Some(journal) = self.gate_kept_in.get() {
                    journal.keep_gate(std::time::SystemTime::now() + delay);
                }
                Pause::Retry(Duration::ZERO)
            }
            Ok(delay) if outage => {
                // Everyone waits; this row longer (its own backoff), so that the next probe
                // is another row's: no row spends all its attempts on one outage.
                self.window.gate().close_for(delay);
                let own = row.next_backoff().unwrap_or(delay);
                Pause::Retry(own.max(delay))
            }
            Ok(delay) => Pause::Retry(delay),
            Err(why) => Pause::GiveUp(why),
        }
    }

    /// The unreachable-service breaker: every request of the last `unreachable_after` (at least
    /// [`UNREACHABLE_ATTEMPTS`] of them) failed without an HTTP answer (refused, timed out,
    /// reset). Any answer, even an error, resets it.
    fn observe_transport<T>(&self, attempt: &Attempt<T>) {
        let mut s = self.silence.lock().unwrap_or_else(|p| p.into_inner());
        let Some(Failure::Retry { error, .. }) =
            attempt.failure().filter(|_| attempt.http_status.is_none())
        else {
            *s = Silence::default();
            return;
        };
        let now = tokio::time::Instant::now();
        s.attempts += 1;
        let since = *s.since.get_or_insert(now);
        if s.attempts >= UNREACHABLE_ATTEMPTS && now - since >= self.unreachable_after {
            self.halt.abort_as("GraphUnreachable", format!(
                "Graph unreachable: the last {} requests, over {}, got no answer (last: {}: {}); \
                 check the network, proxy and --graph-url, then rerun with --resume (finished \
                 rows are in the results file)",
                s.attempts,
                humantime::format_duration(Duration::from_secs((now - since).as_secs())),
                error.code,
                error.message
            ));
        }
    }

    /// Sleep `d` unless the budget stops first (`false`).
    pub async fn wait(&self, d: Duration) -> bool {
        if d.is_zero() {
            return !self.halt.is_stopped();
        }
        tokio::select! {
            biased;
            _ = self.halt.stopped() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// Send `permit`'s request for `rows`: they count as out until the guard drops. `None`
    /// once the budget has stopped, so that a row admitted before a stop is never sent after
    /// it; the permit is then handed back unsent (it is no request that may still land).
    pub fn sending(&self, permit: Permit, rows: usize) -> Option<(Permit, Sending<'_>)> {
        if self.halt.is_stopped() {
            if permit.slot.is_some() {
                self.admitted.fetch_sub(1, Ordering::Relaxed);
            }
            drop(permit);
            return None;
        }
        self.rows_out.fetch_add(rows, Ordering::Relaxed);
        Some((permit, Sending { budget: self, rows }))
    }

    /// Rows whose request is out now.
    pub fn rows_out(&self) -> usize {
        self.rows_out.load(Ordering::Relaxed)
    }

    /// Count a finished row for the circuit breaker; trip it at [`BREAKER_ROWS`] refusals in
    /// a row (401 after the one refresh, or 403), or as many 400 "No OData route" answers in a
    /// row. From then on nothing more is sent; rows already out still finish and are written,
    /// and the reason says how many they are.
    pub fn row_finished(&self, r: &RowResult) {
        let failed = r.status == Status::Failed;
        let unrouted = failed && is_no_odata_route(r.http_status, r.error_message.as_deref());
        if !unrouted {
            self.unrouted_in_a_row.store(0, Ordering::Relaxed);
        } else if self.unrouted_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 == BREAKER_ROWS {
            self.halt.abort_as("CircuitBreakerOpen", format!(
                "circuit breaker: Graph answered {BREAKER_ROWS} rows in a row with 400 {}: {} — \
                 the assignment route is not available in this tenant or cloud (run \
                 `autopilot-bulk preflight` to check it); {} (finished rows are in the results \
                 file)",
                r.error_code.as_deref().unwrap_or("BadRequest"),
                r.error_message.as_deref().unwrap_or(""),
                self.after_trip()
            ));
        }
        let refused = failed && matches!(r.http_status, Some(401 | 403));
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
            self.halt.abort_as(
                "CircuitBreakerOpen",
                format!(
                    "circuit breaker: Graph refused {BREAKER_ROWS} rows in a row with {} {code}: \
                 {message} — {hint}; {}; fix it and rerun (finished rows are in the results file)",
                    r.http_status.unwrap_or(0),
                    self.after_trip()
                ),
            );
        }
    }

    /// What a tripped breaker still lets finish: the rows already out.
    fn after_trip(&self) -> String {
        match self.rows_out() {
            0 => "nothing more is sent".into(),
            n => format!(
                "nothing more is sent; {n} row(s) already sent when it tripped are reported as \
                 they answer"
            ),
        }
    }

    /// Rows in flight that send the pace's COUNT requests within a fortieth of its DURATION at
    /// the measured latency (the window's burst then takes little of the window), at most
    /// [`UNPROVEN_IN_FLIGHT`] while the service has not shown that it takes the pace. `None`
    /// before any answer.
    pub fn wanted_in_flight(&self) -> Option<usize> {
        let latency = self.latency.mean()?;
        let pace = self.window.current_rate();
        let burst = pace.per.as_secs_f64() / 40.0;
        let wanted = f64::from(pace.count) * latency.as_secs_f64() / burst.max(1e-3);
        let wanted = wanted.ceil().min(1e6) as usize;
        Some(if self.window.proven() {
            wanted
        } else {
            wanted.min(UNPROVEN_IN_FLIGHT)
        })
    }

    /// What the progress line shows: the pause left, the pace, whether every slot is out.
    pub fn pace(&self) -> (Option<Duration>, RateSpec, bool) {
        (
            self.window.gate().remaining(),
            self.window.current_rate(),
            self.window.at_limit(),
        )
    }

    pub fn stats(&self) -> BudgetStats {
        BudgetStats {
            requests: self.requests.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            throttled_time: self.window.gate().closed_total(),
            final_rate: self.window.current_rate(),
            token_requests: self.tokens.requests(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Credentials;
    use crate::graph::answer::ErrorInfo;

    fn budget() -> Budget {
        let tokens = TokenProvider::from_credentials(
            reqwest::Client::new(),
            "https://login.microsoftonline.com",
            "https://graph.microsoft.com/.default",
            &Credentials::StaticToken("token".into()),
        )
        .unwrap();
        let limits = Limits {
            rate: RateSpec::new(100, Duration::from_secs(1)),
            // Room for a burst of 500 (a twentieth of the quota): the tests here are of the
            // write window and the gate, not of the request quota.
            request_rate: RateSpec::new(10_000, Duration::from_secs(20)),
            adaptive: true,
            retry: RetryPolicy::new(10, Duration::from_secs(900)),
            unreachable_after: Duration::from_secs(60),
        };
        Budget::new(tokens, limits, &CancellationToken::new())
    }

    fn answer(status: u16, retry_after: Option<u64>) -> Attempt<()> {
        Attempt {
            result: if status < 300 {
                Ok(())
            } else {
                Err(Failure::Retry {
                    retry_after: retry_after.map(Duration::from_secs),
                    ambiguous: false,
                    error: ErrorInfo {
                        code: status.to_string(),
                        message: String::new(),
                    },
                })
            },
            http_status: Some(status),
            request_id: None,
            client_request_id: String::new(),
        }
    }

    async fn settle(b: &Budget, status: u16, retry_after: Option<u64>) -> Pause {
        let permit = b.admit().await.expect("admitted");
        b.settle(permit, &answer(status, retry_after), &mut b.start_row(), 1)
    }

    #[tokio::test(start_paused = true)]
    async fn reads_take_no_write_slot_and_writes_wait_for_theirs() {
        let b = budget(); // 100 writes per 1 s, 10,000 requests per 20 s
        let start = tokio::time::Instant::now();
        // A full window of writes, answered: the write window is full for a second.
        for _ in 0..100 {
            assert_eq!(settle(&b, 201, None).await, Pause::None);
        }
        // 400 reads still go at once: they spend the request quota, not write slots.
        for _ in 0..400 {
            let permit = b.admit_read().await.expect("admitted");
            b.settle(permit, &answer(200, None), &mut b.start_row(), 1);
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "a read waited for a write slot"
        );
        // The next write waits for the window.
        let _ = b.admit().await.expect("admitted");
        assert!(
            start.elapsed() >= Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn no_window_of_the_quota_holds_more_than_its_count() {
        for (count, secs) in [(1000, 20), (100, 20), (10, 1), (3, 1), (1, 1)] {
            let rate = RateSpec::new(count, Duration::from_secs(secs));
            let q = quota(rate);
            // A window opening on a full burst holds it, and the refills due strictly within.
            let refills = rate.per.as_nanos() / q.replenish_interval().as_nanos();
            let burst = u128::from(q.burst_size().get());
            let most = burst + refills - 1;
            let spare = u128::from(count / 40);
            assert!(
                most + spare <= u128::from(count),
                "{rate}: {most} in a window"
            );
            // And the sustained rate is COUNT less the burst and that fortieth: nothing else
            // is given up.
            assert!(
                refills + burst + spare >= u128::from(count),
                "{rate}: {refills} a window"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_its_request_took_as_an_answer_is_no_throttle() {
        let b = budget();
        let (_, rate, _) = b.pace();
        // The Autopilot sync's "once per ten minutes": a 429 whose reading is a success.
        for _ in 0..5 {
            let permit = b.admit().await.expect("admitted");
            let mut a = answer(200, None);
            a.http_status = Some(429);
            assert_eq!(b.settle(permit, &a, &mut b.start_row(), 1), Pause::None);
        }
        assert_eq!(b.stats().throttled, 0);
        assert_eq!(
            b.pace(),
            (None, rate, false),
            "the pace learned no throttle"
        );
        // A real 429 does.
        let _ = settle(&b, 429, None).await;
        assert_eq!(b.stats().throttled, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn during_an_outage_reads_go_one_probe_at_a_time_too() {
        let b = budget();
        for _ in 0..10 {
            let _ = settle(&b, 503, Some(1)).await;
        }
        assert!(b.window.outage_on(), "ten faults in a row are an outage");
        let probe = b.admit_read().await.expect("admitted");
        // While the probe is out, another read waits for it.
        let second = tokio::time::timeout(Duration::from_secs(60), b.admit_read()).await;
        assert!(second.is_err(), "a second read went out beside the probe");
        b.settle(probe, &answer(200, None), &mut b.start_row(), 1);
        assert!(!b.window.outage_on(), "an answer ends the outage");
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_429_a_read_never_takes_the_write_windows_probe() {
        let b = budget();
        let _ = settle(&b, 201, None).await;
        let _ = settle(&b, 429, Some(1)).await;
        // Reads have their own budget: once the gate opens they go, without a window slot,
        // and the first write after the pause is still the probe that ends it.
        let read = b.admit_read().await.expect("admitted");
        assert!(read.slot.is_none(), "a read took a write slot as the probe");
        b.settle(read, &answer(200, None), &mut b.start_row(), 1);
        let probe = b.admit().await.expect("admitted");
        let second = tokio::time::timeout(Duration::from_millis(100), b.admit()).await;
        assert!(second.is_err(), "a write went out beside the probe");
        b.settle(probe, &answer(201, None), &mut b.start_row(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_503_delays_its_row_an_outage_closes_the_gate() {
        let b = budget();
        for _ in 0..3 {
            assert_eq!(settle(&b, 201, None).await, Pause::None);
        }
        // One 503 among successes speaks for its own request: only its row waits.
        assert_eq!(
            settle(&b, 503, Some(1)).await,
            Pause::Retry(Duration::from_secs(1))
        );
        assert!(b.pace().0.is_none(), "a lone 503 paused everyone");
        // Even the seventh fault of ten is no outage.
        for _ in 0..6 {
            assert!(matches!(settle(&b, 504, None).await, Pause::Retry(_)));
        }
        assert!(b.pace().0.is_none(), "7 faults of 10 paused everyone");
        // Faults cluster (8 of the last 10 answers): the service is down, everyone waits.
        let own = settle(&b, 503, Some(1)).await;
        assert!(
            matches!(own, Pause::Retry(d) if d >= Duration::from_secs(1)),
            "{own:?}"
        );
        assert!(b.pace().0.is_some(), "an outage did not close the gate");
    }

    /// Rows count as out while their request is; after a stop an admitted permit is handed
    /// back unsent, so nothing counts as a request that may still land.
    #[tokio::test(start_paused = true)]
    async fn rows_out_count_while_sent_and_a_stop_hands_an_admitted_permit_back() {
        let b = budget();
        let permit = b.admit().await.unwrap();
        let (permit, out) = b.sending(permit, 20).unwrap();
        assert_eq!((b.rows_out(), b.unanswered()), (20, 1));
        drop(out);
        assert_eq!(b.rows_out(), 0);
        drop(permit);
        // A read dropped before its answer (the listing beside a run that ended) lands nothing.
        drop(b.admit_read().await.unwrap());
        assert_eq!(b.unanswered(), 1);
        let permit = b.admit().await.unwrap();
        b.halt().abort("stopped".into());
        assert!(b.sending(permit, 1).is_none());
        assert_eq!(
            (b.rows_out(), b.unanswered()),
            (0, 1),
            "only the first is unanswered"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rows_in_flight_follow_latency_within_the_cap_until_the_pace_is_proven() {
        let b = budget(); // 100 per 1 s: above Graph's published limit.
        assert_eq!(b.wanted_in_flight(), None, "no latency known");
        let permit = b.admit().await.expect("admitted");
        tokio::time::sleep(Duration::from_millis(100)).await;
        b.settle(permit, &answer(201, None), &mut b.start_row(), 1);
        // 100 requests in 25 ms at 100 ms each want 400 in flight; unproven, 16.
        assert_eq!(b.wanted_in_flight(), Some(UNPROVEN_IN_FLIGHT));
        // The rest of the window's count, accepted together: the pace is proven.
        let mut permits = Vec::new();
        for _ in 0..99 {
            permits.push(b.admit().await.expect("admitted"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        for permit in permits {
            b.settle(permit, &answer(201, None), &mut b.start_row(), 1);
        }
        assert_eq!(b.wanted_in_flight(), Some(400));
    }

    #[tokio::test(start_paused = true)]
    async fn in_an_outage_one_request_at_a_time_finds_out_when_the_service_is_back() {
        let b = budget();
        for _ in 0..2 {
            assert_eq!(settle(&b, 201, None).await, Pause::None);
        }
        for _ in 0..7 {
            assert!(matches!(settle(&b, 503, None).await, Pause::Retry(d) if !d.is_zero()));
        }
        // The eighth fault of the last ten, without Retry-After: everyone waits a capped pause,
        // the row that met it its own (longer) backoff.
        let own = settle(&b, 503, None).await;
        let paused = b.pace().0.expect("the gate is closed");
        assert!(paused <= b.window.probe_interval(), "{paused:?}");
        assert!(matches!(own, Pause::Retry(d) if d >= paused), "{own:?}");
        // Then one request alone; it fails, and so on.
        let probe = b.admit().await.expect("admitted");
        let beside = tokio::time::timeout(Duration::from_secs(5), b.admit()).await;
        assert!(
            beside.is_err(),
            "a second request went out during the outage"
        );
        let pause = b.settle(probe, &answer(503, Some(1)), &mut b.start_row(), 1);
        assert!(matches!(pause, Pause::Retry(d) if d >= Duration::from_secs(1)));
        assert_eq!(b.pace().0, Some(Duration::from_secs(1)));
        let probe = b.admit().await.expect("admitted");
        b.settle(probe, &answer(201, None), &mut b.start_row(), 1);
        // Back: requests go side by side again.
        let (first, second) = (b.admit().await, b.admit().await);
        assert!(first.is_some() && second.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_always_closes_the_gate() {
        let b = budget();
        assert_eq!(settle(&b, 201, None).await, Pause::None);
        assert_eq!(settle(&b, 429, Some(2)).await, Pause::Retry(Duration::ZERO));
        let (paused, _, _) = b.pace();
        assert!(
            paused.is_some_and(|d| d > Duration::from_secs(1)),
            "{paused:?}"
        );
        assert_eq!(b.stats().throttled, 1);
    }
}
