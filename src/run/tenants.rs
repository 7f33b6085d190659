//! The tenants of a run, each with everything Graph lends it apart: a budget (token and its
//! refresh, window slots, adaptive pace, gate, breakers), a Graph client for its cloud, its
//! rows in flight, and what it read before the first write (serial numbers resolved, group
//! tags held). A 429, an outage, a rejected token or a tripped breaker in one tenant never
//! slows or stops another. A run without `--tenants` has one, keyed `None`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::budget::Budget;
use crate::config::Config;
use crate::graph::MAX_BATCH;
use crate::graph::client::GraphClient;
use crate::halt::Halt;
use crate::input::Action;
use crate::progress::Progress;
use crate::summary::TenantSummary;

use super::RunError;
use super::plan::Wanted;
use super::resolve::{self, Resolved};
use super::seats::Seats;
use super::tags::{self, Tags};

/// One tenant's share of the run.
pub struct TenantRun {
    /// The tenants file's key; `None` in a single-tenant run.
    pub key: Option<String>,
    pub budget: Arc<Budget>,
    pub graph: GraphClient,
    pub seats: Arc<Seats>,
    /// The tenant's configuration (its credentials, cloud, URLs and rate).
    pub config: Config,
}

/// Before the first write: the tenant's serial numbers resolved, and (tag runs) the tags its
/// devices already carry.
pub struct Prepared {
    pub resolved: Arc<Resolved>,
    pub tags: Arc<Tags>,
    /// Serial numbers wanted, and found.
    pub serials: (u64, u64),
}

/// A budget, a client and seats per tenant (see [`crate::connect`]).
pub fn connect_all(config: &Config, run: &Halt) -> Result<Vec<TenantRun>, RunError> {
    let connected = crate::connect::connect_all(config, run.token()).map_err(RunError::Config)?;
    Ok(connected
        .into_iter()
        .map(|c| {
            let mut graph = c.graph;
            if c.config.batch {
                graph = graph.batched(c.config.concurrency);
            }
            let seats = if c.config.adaptive_concurrency && !c.config.batch {
                Seats::adaptive()
            } else {
                Seats::fixed(rows_in_flight(&c.config))
            };
            TenantRun {
                key: c.key,
                budget: c.budget,
                graph,
                seats: Arc::new(seats),
                config: c.config,
            }
        })
        .collect())
}

/// With `--batch`, `--concurrency` counts envelopes in flight, each carrying up to 20 rows.
fn rows_in_flight(config: &Config) -> usize {
    if config.batch {
        config.concurrency * MAX_BATCH
    } else {
        config.concurrency
    }
}

impl TenantRun {
    /// Resolve the tenant's serial numbers and read its devices' tags, through its budget.
    pub async fn prepare(&self, wanted: &Wanted, progress: &Progress) -> Prepared {
        let resolved = resolve::resolve(&wanted.serials, &self.graph, &self.budget, progress).await;
        let tags = if self.config.defaults.action == Action::Tag {
            tags::read(&wanted.ids, &wanted.serials, &self.graph, &self.budget).await
        } else {
            Tags::default()
        };
        Prepared {
            serials: (wanted.serials.len() as u64, resolved.found() as u64),
            resolved: Arc::new(resolved),
            tags: Arc::new(tags),
        }
    }

    /// A static token cannot be refreshed: say so before the run when it will likely expire
    /// first (rows ÷ rate is how long the run may take).
    pub fn warn_short_static_token(&self, rows: Option<u64>) {
        let tokens = self.budget.tokens();
        if tokens.static_expiry().is_none() {
            return;
        }
        let rate = self.config.rate.per_second();
        let expected = rows.and_then(|n| Duration::try_from_secs_f64(n as f64 / rate).ok());
        if let Some(warning) = tokens.static_token_warning(expected, SystemTime::now()) {
            tracing::warn!("{}", crate::connect::named(self.key.as_deref(), warning));
        }
    }

    /// What the tenant did, for the summary; `rows` are its rows by status.
    pub fn summary(&self, key: &str, rows: [u64; 4]) -> TenantSummary {
        let stats = self.budget.stats();
        let [created, existing, failed, invalid] = rows;
        TenantSummary {
            tenant: key.to_string(),
            created,
            existing,
            failed,
            invalid,
            requests: stats.requests,
            throttled_responses: stats.throttled,
            throttled_time: stats.throttled_time,
            configured_rate: self.config.rate,
            final_rate: stats.final_rate,
            token_requests: stats.token_requests,
            concurrency: self.seats.current(),
            aborted: self.budget.halt().reason(),
        }
    }
}
