//! A tenant connected: its settings, a budget (token and refresh, window, pace, gate,
//! breakers) and a Graph client for its cloud. `run`, `status` and `preflight` connect here, so
//! a tenant is reached the same way and a failure to connect is worded the same way by each.
//! A configuration without a tenants file is a list of one tenant, keyed `None`.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::budget::Budget;
use crate::config::{Config, Tenant};
use crate::graph::client::GraphClient;

/// One tenant, ready to send.
pub struct Connected {
    /// The tenants file's key; `None` for the one tenant of a run without `--tenants`.
    pub key: Option<String>,
    /// The tenant's settings: the command's, with the tenant's credentials, cloud, URLs, rate.
    pub config: Config,
    pub budget: Arc<Budget>,
    pub graph: GraphClient,
}

/// `tenant KEY: message`, or `message` for the one tenant.
pub fn named(key: Option<&str>, message: impl std::fmt::Display) -> String {
    match key {
        Some(k) => format!("tenant {k}: {message}"),
        None => message.to_string(),
    }
}

/// The tenants `config` names: each of its tenants file's, or `config` itself as the one.
pub fn tenants(config: &Config) -> Vec<(Option<&Tenant>, Config)> {
    if config.tenants.is_empty() {
        vec![(None, config.clone())]
    } else {
        config
            .tenants
            .iter()
            .map(|t| (Some(t), config.for_tenant(t)))
            .collect()
    }
}

/// Connect one tenant. Credentials are loaded here, so a missing certificate or a plain-http
/// Graph URL is a configuration error (exit 2) before anything is sent; the error names the
/// tenant. `stop` ends the tenant's waits.
pub fn connect(
    tenant: Option<&Tenant>,
    config: Config,
    stop: &CancellationToken,
) -> Result<Connected, String> {
    let key = tenant.map(|t| t.key.clone());
    let fail = |e: String| named(key.as_deref(), e);
    let http = crate::budget::connect(&config).map_err(fail)?;
    let budget = Budget::from_config(&config, http.clone(), stop).map_err(fail)?;
    let graph = GraphClient::new(http, &config.graph_url);
    Ok(Connected {
        key,
        config,
        budget: Arc::new(budget),
        graph,
    })
}

/// Connect every tenant `config` names, in order.
pub fn connect_all(config: &Config, stop: &CancellationToken) -> Result<Vec<Connected>, String> {
    tenants(config)
        .into_iter()
        .map(|(tenant, config)| connect(tenant, config, stop))
        .collect()
}
