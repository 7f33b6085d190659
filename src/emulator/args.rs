//! The `autopilot-bulk emulate` command line: every flag, its default and meaning, and its
//! conversion into an [`EmulatorConfig`]. Part of the emulator so that the emulator is whole
//! on its own; the crate's command line only names it.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{EmulatorConfig, Limit, Outage, RetryAfterMode, read_device_identities};

#[derive(Debug, Args)]
pub struct EmulateArgs {
    /// Port on 127.0.0.1 (0 = any free port). The URL is the first line on stdout.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Sliding-window write limit per tenant.
    #[arg(long, default_value = "100/20s", value_name = "COUNT/DURATION")]
    pub limit: Limit,
    /// How 429 answers state Retry-After.
    #[arg(long, value_enum, default_value_t = RetryAfterMode::Seconds)]
    pub retry_after: RetryAfterMode,
    /// Lifetime of issued access tokens.
    #[arg(long, default_value = "3599s", value_parser = humantime::parse_duration)]
    pub token_ttl: Duration,
    /// Accept only this client secret at the token endpoint (any, when absent).
    #[arg(long, value_name = "VALUE")]
    pub client_secret: Option<String>,
    /// Stand in for this customer tenant (repeatable): each tenant given has its own throttle
    /// windows, assignments, group tags and counters (`tenants` in the stats); the token
    /// endpoint answers any other tenant 400 AADSTS90002. Names compare ignoring case.
    /// Without --tenant or --tenants, any tenant is accepted and all share one store.
    #[arg(long = "tenant", value_name = "ID", value_parser = parse_tenant_name, conflicts_with = "tenants")]
    pub tenant: Vec<String>,
    /// Stand in for N customer tenants named tenant-1 … tenant-N (as --tenant does for each).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub tenants: Option<u32>,
    /// This tenant accepts only this client secret, instead of --client-secret's
    /// (repeatable), e.g. to give one tenant a wrong secret.
    #[arg(long, value_name = "TENANT=VALUE", value_parser = parse_tenant_secret)]
    pub tenant_secret: Vec<(String, String)>,
    /// Verify client-assertion signatures against this PEM certificate.
    #[arg(long, value_name = "PEM")]
    pub client_certificate: Option<PathBuf>,
    /// Known devices, one a line: `id`, `id,serial` or `id serial` (a bare id gets the serial
    /// SN + its first 8 hex digits); other ids answer 404. Listed in file order.
    #[arg(long, value_name = "FILE")]
    pub devices: Option<PathBuf>,
    /// Most identities one listing page holds, whatever $top asks.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub page_size: u32,
    /// How long a device's profile status stays `pending` after its first assignment.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub assign_delay: Duration,
    /// Answer any $select on the identity routes 500, as Graph has been seen to.
    #[arg(long = "select-500")]
    pub select_500: bool,
    /// Make page 2 of the identity listing repeat page 1's nextLink (a paging loop).
    #[arg(long)]
    pub repeat_next_link: bool,
    /// Probability of answering 503.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    pub fault_503: f64,
    /// Retry-After seconds sent with injected 503s.
    #[arg(long, value_name = "SECONDS")]
    pub fault_503_retry_after: Option<u64>,
    /// Probability of answering 504.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    pub fault_504: f64,
    /// Probability of storing the assignment and then dropping the connection unanswered.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    pub fault_drop: f64,
    /// Mean of an exponential delay added to every Graph answer.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub latency: Option<Duration>,
    /// Start an outage this long after the first assignment POST [default: 0s, with
    /// --outage-for].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "outage_for")]
    pub outage_at: Option<Duration>,
    /// Outage: answer every Graph request (not the token endpoint) 503 ServiceUnavailable for
    /// this long, without executing or throttle-counting it.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub outage_for: Option<Duration>,
    /// Retry-After seconds sent with the outage's 503s (none when absent).
    #[arg(long, value_name = "SECONDS", requires = "outage_for")]
    pub outage_retry_after: Option<u64>,
    /// Seed for faults and latency, for repeatable runs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Error messages in Intune's JSON-inside-`message` form.
    #[arg(long)]
    pub intune_envelope: bool,
    /// Requests arriving this soon after the first 429 of a throttle episode count as
    /// already in flight, not as Retry-After violations.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    pub violation_grace: Duration,
    /// Answer every assignment request 403 Forbidden, as Graph does when the app lacks
    /// DeviceManagementServiceConfig.ReadWrite.All.
    #[arg(long)]
    pub deny_permission: bool,
    /// Answer the assignment route (POST and GET, also in $batch) 400 "No OData route exists…",
    /// as Graph has been reported to in production.
    #[arg(long)]
    pub no_odata_route: bool,
    /// The roles claim of issued tokens, comma-separated [default:
    /// DeviceManagementServiceConfig.ReadWrite.All]; an empty value: none.
    #[arg(long, value_name = "ROLES", value_delimiter = ',')]
    pub token_roles: Option<Vec<String>>,
}

/// A tenant name the token URL can carry: one path segment, not empty.
fn parse_tenant_name(s: &str) -> Result<String, String> {
    let name = s.trim();
    if name.is_empty() || name.contains(['/', '?', '#']) || name.contains(char::is_whitespace) {
        Err(format!(
            "{s:?} is not a tenant name (one path segment, e.g. a GUID or contoso.onmicrosoft.com)"
        ))
    } else {
        Ok(name.to_string())
    }
}

fn parse_tenant_secret(s: &str) -> Result<(String, String), String> {
    let (tenant, secret) = s
        .split_once('=')
        .ok_or_else(|| "expected TENANT=VALUE".to_string())?;
    Ok((parse_tenant_name(tenant)?, secret.to_string()))
}

fn parse_probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not a probability between 0 and 1"))
    }
}

impl EmulateArgs {
    pub fn to_config(&self) -> std::io::Result<EmulatorConfig> {
        let identities = self
            .devices
            .as_deref()
            .map(read_device_identities)
            .transpose()?;
        let devices = identities
            .as_ref()
            .map(|list| list.iter().map(|(id, _)| id.clone()).collect());
        Ok(EmulatorConfig {
            limit: self.limit,
            retry_after: self.retry_after,
            token_ttl: self.token_ttl,
            client_secret: self.client_secret.clone(),
            tenants: match self.tenants {
                Some(n) => (1..=n).map(|i| format!("tenant-{i}")).collect(),
                None => self.tenant.clone(),
            },
            tenant_secrets: self.tenant_secret.iter().cloned().collect(),
            client_certificate: self.client_certificate.clone(),
            devices,
            identities: identities.unwrap_or_default(),
            page_size: self.page_size as usize,
            select_fails: self.select_500,
            repeat_next_link: self.repeat_next_link,
            assign_delay: self.assign_delay,
            fault_503: self.fault_503,
            fault_503_retry_after: self.fault_503_retry_after,
            fault_504: self.fault_504,
            fault_drop: self.fault_drop,
            latency: self.latency,
            outage: self.outage_for.map(|length| Outage {
                at: self.outage_at.unwrap_or_default(),
                length,
                retry_after: self.outage_retry_after,
            }),
            seed: self.seed,
            intune_envelope: self.intune_envelope,
            violation_grace: self.violation_grace,
            deny_permission: self.deny_permission,
            no_odata_route: self.no_odata_route,
            token_roles: self.token_roles.as_ref().map(|roles| {
                roles
                    .iter()
                    .map(|r| r.trim().to_string())
                    .filter(|r| !r.is_empty())
                    .collect()
            }),
        })
    }
}
