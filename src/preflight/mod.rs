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

use futures::future::join_all;
use tokio_util::sync::CancellationToken;

use crate::action::Action;
use crate::config::Config;
use crate::input::{InputError, InputReader, Job, Parsed};

pub use checks::shown_request;
pub use claims::{Claims, NEEDED};
pub use report::{Check, Mark, Report, TenantReport};

/// Everything `preflight` needs.
#[derive(Debug, Clone)]
pub struct PreflightConfig {
    /// The input whose first valid row is checked and shown; without it, the route is checked
    /// with the first listed identity.
    pub input: Option<PathBuf>,
    /// How to reach the tenant (credentials, cloud, URLs, timeouts, retries), and how to read
    /// the input (delimiter, defaults). Its output and run-only fields are not used.
    pub graph: Config,
    /// Check for `import`: the input is a hardware-hash file; the import records and the last
    /// sync are read instead of a device's route.
    pub import: bool,
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
    #[error(transparent)]
    Hashes(#[from] crate::import::hashes::HashesError),
}

/// Run every check against the tenant `config.graph` names, or against each of its `tenants`
/// (all at once: each is a few requests through its own budget). `shutdown` stops it early.
pub async fn preflight(
    config: PreflightConfig,
    shutdown: CancellationToken,
) -> Result<Report, PreflightError> {
    if config.import {
        return preflight_import(&config, &shutdown).await;
    }
    if !config.graph.tenants.is_empty() {
        return preflight_tenants(&config, &shutdown).await;
    }
    // The input first: a broken file is exit 2 before anything is sent.
    let first = match &config.input {
        Some(path) => First::Row(Box::new(first_job(path, &config.graph)?)),
        None => First::NoInput,
    };
    let tenant = connect(None, config.graph.clone(), &shutdown).map_err(PreflightError::Config)?;
    Ok(check(&tenant, &first).await)
}

/// Each tenant of `config.graph.tenants` checked as one tenant is, with the first valid row of
/// the input that names it; one section each, in the tenants file's order.
async fn preflight_tenants(
    config: &PreflightConfig,
    shutdown: &CancellationToken,
) -> Result<Report, PreflightError> {
    let tenants = &config.graph.tenants;
    let firsts = match &config.input {
        Some(path) => first_jobs(path, &config.graph)?,
        None => tenants.iter().map(|_| First::NoInput).collect(),
    };
    let checked = tenants
        .iter()
        .map(|t| {
            connect(Some(t), config.graph.for_tenant(t), shutdown).map_err(PreflightError::Config)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let reports = join_all(checked.iter().zip(&firsts).map(|(t, f)| check(t, f))).await;
    Ok(Report {
        tenants: tenants
            .iter()
            .zip(reports)
            .map(|(t, report)| TenantReport {
                tenant: t.key.clone(),
                report,
            })
            .collect(),
        ..Report::default()
    })
}

/// `preflight --import`: the hash file read (a broken one is exit 2 before anything is sent),
/// then each tenant's token, listing, import records and last sync.
async fn preflight_import(
    config: &PreflightConfig,
    shutdown: &CancellationToken,
) -> Result<Report, PreflightError> {
    let tenants = &config.graph.tenants;
    let counted = match &config.input {
        Some(path) => {
            let (lines, _) = crate::import::hashes::read(path, config.graph.delimiter, tenants)?;
            let valid = lines
                .iter()
                .filter(|l| matches!(l, crate::import::hashes::Line::Row(_)))
                .count();
            Some((lines.len(), valid))
        }
        None => None,
    };
    let check_one = |tenant: checks::Tenant| async move {
        let mut report = Report::default();
        if tenant.token_check(&mut report).await {
            tenant.listing_check(&mut report).await;
            if !report.auth_failed {
                tenant.import_check(&mut report).await;
            }
        }
        report
    };
    let mut report = if tenants.is_empty() {
        let tenant =
            connect(None, config.graph.clone(), shutdown).map_err(PreflightError::Config)?;
        check_one(tenant).await
    } else {
        let connected = tenants
            .iter()
            .map(|t| {
                connect(Some(t), config.graph.for_tenant(t), shutdown)
                    .map_err(PreflightError::Config)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let reports = join_all(connected.into_iter().map(check_one)).await;
        Report {
            tenants: tenants
                .iter()
                .zip(reports)
                .map(|(t, report)| TenantReport {
                    tenant: t.key.clone(),
                    report,
                })
                .collect(),
            ..Report::default()
        }
    };
    if let Some((rows, valid)) = counted {
        let text = format!(
            "hash file: {rows} rows, {valid} valid (`import` writes the others `invalid`, with \
             the column named)"
        );
        if valid == 0 {
            report.fail(text, "fix the hash file: no row of it can be imported");
        } else {
            report.ok(text);
        }
    }
    Ok(report)
}

/// The row a tenant's route is checked with.
enum First {
    /// No INPUT.csv: the route is checked with a listed identity.
    NoInput,
    Row(Box<Job>),
    /// INPUT.csv has no valid row for the tenant: there is nothing of it to check the route for.
    NoRow,
}

/// The tenant connected (see [`crate::connect`]), with what its checks need.
fn connect(
    tenant: Option<&crate::config::Tenant>,
    config: Config,
    shutdown: &CancellationToken,
) -> Result<checks::Tenant, String> {
    let action = config.defaults.action;
    let c = crate::connect::connect(tenant, config, shutdown)?;
    Ok(checks::Tenant {
        graph_url: c.config.graph_url.clone(),
        key: c.key,
        graph: c.graph,
        budget: c.budget,
        action,
        group: c.config.defaults.group_id,
    })
}

/// Every check of one tenant, each only when the ones before it leave something to check.
async fn check(tenant: &checks::Tenant, first: &First) -> Report {
    let mut report = Report::default();
    if !tenant.token_check(&mut report).await {
        return report;
    }
    let page = tenant.listing_check(&mut report).await;
    if report.auth_failed {
        return report;
    }
    let job = match first {
        First::NoInput => None,
        First::Row(job) => Some(job.as_ref()),
        First::NoRow => {
            report.note(
                "INPUT.csv has no valid row for this tenant: the assignment route is not checked",
            );
            return report;
        }
    };
    if tenant.action == Action::Group {
        match job.and_then(|j| j.work.group()).or(tenant.group) {
            Some(group) => tenant.group_check(group, &mut report).await,
            None => drop(report.fail(
                "no group to check: --action group adds devices to a group",
                "give --group-id, or an INPUT.csv whose rows name their group_id",
            )),
        }
    }
    let device = tenant.device_check(job, page.as_ref(), &mut report).await;
    if let Some(device) = device.route {
        let action = job.map_or(tenant.action, |j| j.work.action());
        tenant.route_check(device, action, &mut report).await;
    }
    if let Some(job) = job {
        report.request = Some(tenant.request_for(job, device.row_id));
    }
    report
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

/// The first valid row of each tenant of `config.tenants`, by the input's `tenant` column read
/// as `run` reads it (rows naming no tenant of the file are invalid, so skipped). Reading
/// stops once every tenant has its row. No valid row at all is the input's error.
fn first_jobs(path: &Path, config: &Config) -> Result<Vec<First>, PreflightError> {
    let mut defaults = config.defaults.clone();
    defaults.tenants = Some(config.tenants.iter().map(|t| t.key.clone()).collect());
    let reader = InputReader::open(path, config.delimiter, defaults)?;
    let mut firsts: Vec<First> = config.tenants.iter().map(|_| First::NoRow).collect();
    let mut missing = firsts.len();
    for item in reader {
        let Parsed::Job(job) = item? else { continue };
        let at = job
            .tenant
            .as_deref()
            .and_then(|name| config.tenants.iter().position(|t| t.key == name));
        if let Some(slot) = at.and_then(|i| firsts.get_mut(i))
            && matches!(slot, First::NoRow)
        {
            *slot = First::Row(Box::new(job));
            missing -= 1;
            if missing == 0 {
                break;
            }
        }
    }
    if missing == firsts.len() {
        return Err(PreflightError::NoValidRow(path.to_path_buf()));
    }
    Ok(firsts)
}
