//! The tenants of a run, each with everything Graph lends it apart: a budget (token and its
//! refresh, window slots, adaptive pace, gate, breakers), a Graph client for its cloud, its
//! rows in flight, and what it read before the first write (serial numbers resolved, group
//! tags held). A 429, an outage, a rejected token or a tripped breaker in one tenant never
//! slows or stops another. A run without `--tenants` has one, keyed `None`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::action::Action;
use crate::budget::Budget;
use crate::config::{Config, RateSpec};
use crate::graph::MAX_BATCH;
use crate::graph::client::GraphClient;
use crate::halt::Halt;
use crate::progress::Progress;
use crate::summary::{Counts, TenantSummary};

use super::RunError;
use super::assigned::{self, Listing};
use super::groups::{self, Memberships};
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
    /// Group runs: the directory's own budget (its bucket is Entra's, not Intune's) and a
    /// client that sends alone (directory requests never go in Intune's `$batch`).
    pub directory: Option<(Arc<Budget>, GraphClient)>,
}

/// Entra's directory write limit: 3,000 per 150 s per app per tenant.
pub const DIRECTORY_RATE: RateSpec = RateSpec::new(3000, Duration::from_secs(150));

/// Before the first write: the tenant's serial numbers resolved, and (tag runs) the tags its
/// devices already carry.
pub struct Prepared {
    pub resolved: Arc<Resolved>,
    pub tags: Arc<Tags>,
    /// Group runs: the devices' directory objects and the groups' members.
    pub memberships: Arc<Memberships>,
    /// Assign runs: which devices are read before their POST, as the listing beside the rows
    /// tells.
    pub assigned: Listing,
    /// Serial numbers wanted, and found.
    pub serials: (u64, u64),
}

/// A budget, a client and seats per tenant (see [`crate::connect`]).
pub fn connect_all(config: &Config, run: &Halt) -> Result<Vec<TenantRun>, RunError> {
    let connected = crate::connect::connect_all(config, run.token()).map_err(RunError::Config)?;
    connected
        .into_iter()
        .map(|c| {
            let directory = (c.config.defaults.action == Action::Group)
                .then(|| directory(&c, run))
                .transpose()?;
            let mut graph = c.graph;
            if c.config.batch {
                graph = graph.batched(c.config.concurrency);
            }
            let seats = if c.config.adaptive_concurrency && !c.config.batch {
                Seats::adaptive()
            } else {
                Seats::fixed(rows_in_flight(&c.config))
            };
            Ok(TenantRun {
                key: c.key,
                budget: c.budget,
                graph,
                seats: Arc::new(seats),
                config: c.config,
                directory,
            })
        })
        .collect()
}

/// The tenant's directory budget and client.
fn directory(
    c: &crate::connect::Connected,
    run: &Halt,
) -> Result<(Arc<Budget>, GraphClient), RunError> {
    let mut config = c.config.clone();
    config.rate = DIRECTORY_RATE;
    let tenant = c
        .key
        .as_ref()
        .and_then(|k| c.config.tenants.iter().find(|t| &t.key == k));
    let d = crate::connect::connect(tenant, config, run.token()).map_err(RunError::Config)?;
    Ok((d.budget, d.graph))
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
        let resolved = resolve::resolve(
            &wanted.serials,
            &wanted.spelled,
            &self.graph,
            &self.budget,
            progress,
        )
        .await;
        let tags = match self.config.defaults.action {
            // Rows by serial only, resolved through the whole listing: it showed their tags.
            Action::Tag if wanted.ids.is_empty() && resolved.whole_listing => {
                Tags::from_resolution(resolved.tags())
            }
            Action::Tag => {
                tags::read(&wanted.ids, &wanted.serials, &self.graph, &self.budget).await
            }
            _ => Tags::default(),
        };
        let assigned = match self.config.defaults.action {
            Action::Assign if self.config.read_before_write => {
                assigned::follow(&wanted.ids, &resolved, &self.graph, &self.budget).await
            }
            _ => Listing::blind(),
        };
        let memberships = match &self.directory {
            Some((directory, graph)) => {
                let wanted = groups::Wanted {
                    ids: &wanted.ids,
                    serials: &wanted.serials,
                    groups: &wanted.groups,
                    known: resolved.azure_ids(),
                };
                groups::read(wanted, graph, &self.budget, directory).await
            }
            None => Memberships::default(),
        };
        Prepared {
            memberships: Arc::new(memberships),
            assigned,
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

    /// The tenant's requests, both budgets together (the Intune one's pace).
    pub fn stats(&self) -> crate::budget::BudgetStats {
        let mut stats = self.budget.stats();
        if let Some((directory, _)) = &self.directory {
            let d = directory.stats();
            stats.requests += d.requests;
            stats.throttled += d.throttled;
            stats.throttled_time = stats.throttled_time.max(d.throttled_time);
            stats.token_requests += d.token_requests;
        }
        stats
    }

    /// Why the tenant stopped on its own, if it did (either budget).
    pub fn stopped(&self) -> Option<String> {
        let directory = self.directory.as_ref().and_then(|(d, _)| d.halt().reason());
        self.budget.halt().reason().or(directory)
    }

    /// What the tenant did, for the summary; `rows` are its rows by status.
    pub fn summary(&self, key: &str, rows: Counts, earlier: Counts) -> TenantSummary {
        let stats = self.stats();
        TenantSummary {
            tenant: key.to_string(),
            created: rows.created,
            existing: rows.existing,
            failed: rows.failed,
            invalid: rows.invalid,
            earlier,
            requests: stats.requests,
            throttled_responses: stats.throttled,
            throttled_time: stats.throttled_time,
            configured_rate: self.config.rate,
            final_rate: stats.final_rate,
            token_requests: stats.token_requests,
            concurrency: self.seats.current(),
            aborted: self.stopped(),
        }
    }
}
