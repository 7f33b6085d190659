//! `preflight`: before sending thousands of assignments, find out in seconds whether this
//! tenant, app registration and route will take them. It gets a token and reads what it grants,
//! reads one page of the identity listing, resolves the first valid row of the input, sends
//! one harmless GET on the assignment route that row would POST to, and shows that POST.
//!
//! Nothing is written to Graph: every request here is a GET (and the token request). Retries
//! are few and short, so that a broken tenant is reported in seconds, not minutes.

mod checks;
mod claims;
mod report;

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::budget::Budget;
use crate::config::Config;
use crate::graph::client::GraphClient;
use crate::input::{InputError, InputReader, Job, Parsed};

pub use claims::{Claims, NEEDED};
pub use report::{Check, Mark, Report};

/// Everything `preflight` needs.
#[derive(Debug, Clone)]
pub struct PreflightConfig {
    /// The input whose first valid row is checked and shown; without it, the route is checked
    /// with the first listed identity.
    pub input: Option<PathBuf>,
    /// How to reach the tenant (credentials, cloud, URLs, timeouts, retries), and how to read
    /// the input (delimiter, defaults). Its output and run-only fields are not used.
    pub graph: Config,
}

/// `preflight` could not start: a configuration or input-file error. Exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{} has no valid row: `autopilot-bulk validate` lists what is wrong", .0.display())]
    NoValidRow(PathBuf),
}

/// Run every check against the tenant `config.graph` names. `shutdown` stops it early.
pub async fn preflight(
    config: PreflightConfig,
    shutdown: CancellationToken,
) -> Result<Report, PreflightError> {
    // The input first: a broken file is exit 2 before anything is sent.
    let first = match &config.input {
        Some(path) => Some(first_job(path, &config.graph)?),
        None => None,
    };
    let http = crate::budget::connect(&config.graph).map_err(PreflightError::Config)?;
    let budget = Budget::from_config(&config.graph, http.clone(), &shutdown)
        .map_err(PreflightError::Config)?;
    let tenant = checks::Tenant {
        graph: GraphClient::new(http, &config.graph.graph_url),
        graph_url: config.graph.graph_url.clone(),
        budget,
    };
    let mut report = Report::default();
    if !tenant.token_check(&mut report).await {
        return Ok(report);
    }
    let page = tenant.listing_check(&mut report).await;
    if report.auth_failed {
        return Ok(report);
    }
    let device = tenant
        .device_check(first.as_ref(), page.as_ref(), &mut report)
        .await;
    if let Some(device) = device.route {
        tenant.route_check(device, &mut report).await;
    }
    if let Some(job) = &first {
        report.request = Some(tenant.request_for(job, device.row_id));
    }
    Ok(report)
}

/// The first valid row of `path`, read with the run's own reader; invalid rows before it are
/// skipped (`validate` reports them).
fn first_job(path: &Path, config: &Config) -> Result<Job, PreflightError> {
    let reader = InputReader::open(path, config.delimiter, config.defaults.clone())?;
    for item in reader {
        if let Parsed::Job(job) = item? {
            return Ok(job);
        }
    }
    Err(PreflightError::NoValidRow(path.to_path_buf()))
}
