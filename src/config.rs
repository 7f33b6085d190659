//! Run configuration: clouds and their hosts, and the `COUNT/DURATION` rate notation.
//!
//! Kept apart from `cli` so that tests and the library API build a [`Config`] directly,
//! without going through clap.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::input::RowDefaults;

/// A limit stated the way Graph states its own: at most `count` requests in any window of `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    pub count: u32,
    pub per: Duration,
}

impl RateSpec {
    pub const fn new(count: u32, per: Duration) -> Self {
        Self { count, per }
    }

    /// Never more than `limit` allows: no more per window, no more per second.
    pub fn within(&self, limit: RateSpec) -> bool {
        self.count <= limit.count && self.per_second() <= limit.per_second()
    }

    /// Requests per second this limit allows on average.
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) / self.per.as_secs_f64()
    }
}

impl Default for RateSpec {
    /// Intune's documented write limit: 100 per 20 s per app per tenant.
    fn default() -> Self {
        Self::new(100, Duration::from_secs(20))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid rate {input:?}: {reason} (expected COUNT/DURATION, e.g. 100/20s, 5/s, 10/500ms)")]
pub struct RateSpecError {
    input: String,
    reason: String,
}

impl FromStr for RateSpec {
    type Err = RateSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| RateSpecError {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let (count, per) = s.trim().split_once('/').ok_or_else(|| err("missing '/'"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| err("COUNT is not a whole number"))?;
        if count == 0 {
            return Err(err("COUNT must be at least 1"));
        }
        let per = per.trim();
        // `5/s` means "5 per second": a bare unit is one of that unit.
        let per = if per.starts_with(|c: char| c.is_ascii_digit()) {
            humantime::parse_duration(per)
        } else {
            humantime::parse_duration(&format!("1{per}"))
        }
        .map_err(|e| err(&format!("DURATION: {e}")))?;
        if per.is_zero() {
            return Err(err("DURATION must be longer than zero"));
        }
        Ok(Self { count, per })
    }
}

impl fmt::Display for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, humantime::format_duration(self.per))
    }
}

/// Microsoft's national clouds. Each has its own authority, Graph host and token scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Cloud {
    #[default]
    Global,
    Usgov,
    UsgovDod,
    China,
}

impl Cloud {
    pub fn authority(self) -> &'static str {
        match self {
            Cloud::Global => "https://login.microsoftonline.com",
            Cloud::Usgov | Cloud::UsgovDod => "https://login.microsoftonline.us",
            Cloud::China => "https://login.chinacloudapi.cn",
        }
    }

    pub fn graph_host(self) -> &'static str {
        match self {
            Cloud::Global => "https://graph.microsoft.com",
            Cloud::Usgov => "https://graph.microsoft.us",
            Cloud::UsgovDod => "https://dod-graph.microsoft.us",
            Cloud::China => "https://microsoftgraph.chinacloudapi.cn",
        }
    }

    /// Graph base URL including the API version the assignment endpoint lives in.
    pub fn graph_url(self) -> String {
        format!("{}/beta", self.graph_host())
    }

    /// The client-credentials scope. It follows the cloud even when `--graph-url` points
    /// elsewhere (the emulator), because the token is for the cloud's Graph.
    pub fn scope(self) -> String {
        format!("{}/.default", self.graph_host())
    }
}

/// Credentials the run authenticates with. Secrets live only here and in the token
/// provider, never in argv, logs or results.
#[derive(Clone, Default)]
pub enum Credentials {
    /// No credentials configured: only valid with `--emulator`.
    #[default]
    None,
    ClientSecret {
        tenant_id: String,
        client_id: String,
        secret: String,
    },
    /// A client assertion signed with the app's certificate key: what enterprises require
    /// instead of secrets. The PEM is read when the run starts, so a bad file is exit 2.
    Certificate {
        tenant_id: String,
        client_id: String,
        /// PEM holding the certificate and its RSA private key.
        pem_path: PathBuf,
    },
    /// A ready bearer token. It cannot be refreshed: a 401 ends the run.
    StaticToken(String),
}

impl Credentials {
    /// The tenant these credentials sign in to, when they name one (a static token does not).
    pub fn tenant_id(&self) -> Option<&str> {
        match self {
            Credentials::ClientSecret { tenant_id, .. }
            | Credentials::Certificate { tenant_id, .. } => Some(tenant_id),
            Credentials::None | Credentials::StaticToken(_) => None,
        }
    }

    /// The app these credentials sign in as, when they name one.
    pub fn client_id(&self) -> Option<&str> {
        match self {
            Credentials::ClientSecret { client_id, .. }
            | Credentials::Certificate { client_id, .. } => Some(client_id),
            Credentials::None | Credentials::StaticToken(_) => None,
        }
    }

    /// Any secret works against the emulator; these only name the run in its logs.
    pub fn for_emulator() -> Self {
        Credentials::ClientSecret {
            tenant_id: "emulator-tenant".into(),
            client_id: "autopilot-bulk".into(),
            secret: "emulator".into(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::ClientSecret {
                tenant_id,
                client_id,
                ..
            } => f
                .debug_struct("ClientSecret")
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .field("secret", &"<redacted>")
                .finish(),
            Credentials::Certificate {
                tenant_id,
                client_id,
                pem_path,
            } => f
                .debug_struct("Certificate")
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .field("pem_path", pem_path)
                .finish(),
            Credentials::StaticToken(_) => f.write_str("StaticToken(<redacted>)"),
        }
    }
}

/// One customer tenant of a `--tenants` file: as whom, where and how fast. Every field is
/// already resolved (the file's optional keys fall back to the command line's values), and the
/// secret was read from its environment variable or file, never from the file itself.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// The file's key (`[tenants.KEY]`): what the input's `tenant` column names.
    pub key: String,
    pub credentials: Credentials,
    pub cloud: Cloud,
    pub graph_url: String,
    pub authority_url: String,
    /// This tenant's write limit (`rate = "100/20s"`), else `--rate`.
    pub rate: RateSpec,
}

/// Everything `run` needs, already validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub input: PathBuf,
    pub output: PathBuf,
    pub overwrite: bool,
    /// Continue an existing results file: skip rows it already reports done.
    pub resume: bool,
    /// With `resume`: also redo rows reported `invalid` (after the input was fixed).
    pub retry_invalid: bool,
    /// Before a row's first write, read whether the device already holds what the row asks
    /// (assign: an identical assignment); such rows are `existing` with no write.
    pub read_before_write: bool,
    /// After a stop (Ctrl-C), how long rows in flight may take to finish before they are
    /// left to the next `--resume` (the journal names them).
    pub shutdown_grace: Duration,
    pub delimiter: Option<u8>,
    pub defaults: RowDefaults,
    pub concurrency: usize,
    /// Follow the measured latency instead of keeping `concurrency` (see `run::seats`); the
    /// command line sets it when `--concurrency` is not given.
    pub adaptive_concurrency: bool,
    pub rate: RateSpec,
    /// All requests of the app, reads and writes (Intune: 1,000 per 20 s beside 100 writes).
    pub request_rate: RateSpec,
    /// Lower the pace when the service throttles below `rate`, and climb back.
    pub adaptive: bool,
    /// Send assignments in `$batch` envelopes of up to 20.
    pub batch: bool,
    /// `--profile`: the deployment profile (id or display name) a group run's groups must be
    /// targeted by; checked before the first write.
    pub profile: Option<String>,
    pub max_attempts: u32,
    pub max_retry_time: Duration,
    /// First delay of the jittered exponential backoff used when the service gives no
    /// Retry-After (drops, timeouts, 504s, Intune's bare 429s). One second suits Graph; tests
    /// shorten it so that fault-heavy runs finish in seconds.
    pub initial_backoff: Duration,
    /// No HTTP answer to any request for this long (8 at least) stops the run (exit 3).
    pub unreachable_after: Duration,
    pub cloud: Cloud,
    pub graph_url: String,
    pub authority_url: String,
    pub credentials: Credentials,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Show the progress bar (it is hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// `--tenants FILE`: one budget per tenant, rows routed by their `tenant` column. Empty:
    /// one tenant, as `credentials`, `cloud`, the URLs and `rate` say.
    pub tenants: Vec<Tenant>,
    /// Rows each tenant's queue holds in memory before the rest wait on disk (several
    /// tenants only); tests make it small.
    pub tenant_queue: usize,
}

impl Config {
    /// A configuration with the documented defaults, for `input` and `output`.
    pub fn new(input: impl Into<PathBuf>, output: impl Into<PathBuf>) -> Self {
        let cloud = Cloud::default();
        Self {
            input: input.into(),
            output: output.into(),
            overwrite: false,
            resume: false,
            retry_invalid: false,
            read_before_write: true,
            shutdown_grace: Duration::from_secs(3),
            delimiter: None,
            defaults: RowDefaults::default(),
            concurrency: 4,
            adaptive_concurrency: false,
            rate: RateSpec::default(),
            request_rate: RateSpec::new(1000, Duration::from_secs(20)),
            adaptive: true,
            batch: false,
            profile: None,
            max_attempts: 10,
            max_retry_time: Duration::from_secs(15 * 60),
            initial_backoff: Duration::from_secs(1),
            unreachable_after: Duration::from_secs(60),
            cloud,
            graph_url: cloud.graph_url(),
            authority_url: cloud.authority().to_string(),
            credentials: Credentials::None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(100),
            progress: false,
            tenants: Vec::new(),
            tenant_queue: 256,
        }
    }
}

impl Config {
    /// How rows are read: the flags' defaults and, with `--tenants`, the tenant keys every
    /// row's `tenant` cell must name.
    pub fn row_defaults(&self) -> RowDefaults {
        let mut defaults = self.defaults.clone();
        if !self.tenants.is_empty() {
            defaults.tenants = Some(self.tenants.iter().map(|t| t.key.clone()).collect());
        }
        defaults
    }

    /// The configuration one tenant of a `--tenants` run runs under: this one, with the
    /// tenant's credentials, cloud, URLs and rate.
    pub fn for_tenant(&self, tenant: &Tenant) -> Config {
        Config {
            credentials: tenant.credentials.clone(),
            cloud: tenant.cloud,
            graph_url: tenant.graph_url.clone(),
            authority_url: tenant.authority_url.clone(),
            rate: tenant.rate,
            tenants: Vec::new(),
            ..self.clone()
        }
    }
}

/// `<input stem>.results.csv` beside the input: the default results path.
pub fn default_output(input: &std::path::Path) -> PathBuf {
    beside(input, "results")
}

/// `<stem>.<what>.csv` beside `file`: where each command's own file goes by default
/// (results, plan, import, undo).
pub fn beside(file: &std::path::Path, what: &str) -> PathBuf {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "input".to_string());
    file.with_file_name(format!("{stem}.{what}.csv"))
}

/// Refuse to send a bearer token over plain http to anything but loopback.
pub fn check_transport(url: &str, what: &str) -> Result<(), String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("{what} {url:?} is not a URL: {e}"))?;
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
                Err(format!(
                    "{what} {url} uses plain http: a bearer token is only ever sent over https \
                     (plain http is allowed to loopback addresses only)"
                ))
            }
        }
        other => Err(format!(
            "{what} {url}: unsupported scheme {other:?} (use https)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates_the_way_graph_states_them() {
        assert_eq!(
            "100/20s".parse::<RateSpec>(),
            Ok(RateSpec::new(100, Duration::from_secs(20)))
        );
        assert_eq!(
            "5/s".parse::<RateSpec>(),
            Ok(RateSpec::new(5, Duration::from_secs(1)))
        );
        assert_eq!(
            "10/500ms".parse::<RateSpec>(),
            Ok(RateSpec::new(10, Duration::from_millis(500)))
        );
        assert_eq!(
            "3/min".parse::<RateSpec>(),
            Ok(RateSpec::new(3, Duration::from_secs(60)))
        );
    }

    #[test]
    fn rejects_malformed_rates() {
        for bad in ["", "100", "0/1s", "x/1s", "10/0s", "10/abc", "-1/1s"] {
            assert!(bad.parse::<RateSpec>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn default_output_sits_beside_the_input() {
        assert_eq!(
            default_output(std::path::Path::new("/data/devices.csv")),
            PathBuf::from("/data/devices.results.csv")
        );
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(check_transport("https://graph.microsoft.com/beta", "Graph URL").is_ok());
        assert!(check_transport("http://127.0.0.1:8080/beta", "Graph URL").is_ok());
        assert!(check_transport("http://[::1]:8080/beta", "Graph URL").is_ok());
        assert!(check_transport("http://localhost:1/beta", "Graph URL").is_ok());
        let e = check_transport("http://graph.example.com/beta", "Graph URL").unwrap_err();
        assert!(e.contains("plain http"), "{e}");
        assert!(check_transport("http://10.0.0.1/beta", "Graph URL").is_err());
        assert!(check_transport("ftp://x/beta", "Graph URL").is_err());
    }

    #[test]
    fn secret_is_redacted_in_debug() {
        let c = Credentials::ClientSecret {
            tenant_id: "t".into(),
            client_id: "c".into(),
            secret: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        let t = Credentials::StaticToken("eyJ.secret-token.sig".into());
        assert!(!format!("{t:?}").contains("secret-token"));
    }
}
