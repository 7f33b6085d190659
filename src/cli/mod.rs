//! Command-line definitions (clap) and their conversion into validated configuration.
//! Nothing here does work: `main.rs` hands the result to the library. `plan` and `undo` have
//! their flags in their own files; the flags they share with `run` are here.

mod examples;
mod import;
mod plan;
mod reads;
mod undo;

pub use import::ImportArgs;
pub use plan::{PlanArgs, default_plan_path};
pub use reads::{
    PreflightArgs, ProfileAssignArgs, ProfilesArgs, ProfilesSub, ProfilesTarget, StatusArgs,
};
pub use undo::UndoArgs;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use uuid::Uuid;

use crate::config::{Cloud, Config, Credentials, RateSpec, Tenant, default_output};
use crate::emulator::Emulator;
use crate::graph::model::{FilterType, Source, TargetKind};
use crate::input::{Action, RowDefaults};
use crate::tenants;

#[derive(Debug, Parser)]
#[command(name = "autopilot-bulk", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The command line, with `-h` kept short: each flag's and command's first sentence there,
/// the whole text under `--help`.
pub fn command() -> clap::Command {
    shorten(Cli::command())
}

/// Parse the process's arguments through [`command`].
pub fn parse() -> Result<Cli, clap::Error> {
    let matches = command().try_get_matches().map_err(explain)?;
    Cli::from_arg_matches(&matches)
}

/// A refused command line, with the tip an admin needs where clap's nearest spelling misleads:
/// `--tenant contoso` is a tenant's id (`--tenant-id`) far more often than a tenants file.
pub fn explain(mut e: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let tenant = matches!(
        e.get(ContextKind::InvalidArg),
        Some(ContextValue::String(arg)) if arg == "--tenant" || arg.starts_with("--tenant=")
    );
    if e.kind() == ErrorKind::UnknownArgument && tenant {
        e.remove(ContextKind::SuggestedArg);
        e.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![
                "the tenant's id or domain goes in '--tenant-id' (or AZURE_TENANT_ID); a TOML \
                 file of many tenants in '--tenants'"
                    .into(),
            ]),
        );
        e.remove(ContextKind::Usage);
    }
    e
}

fn shorten(cmd: clap::Command) -> clap::Command {
    let cmd = match cmd.get_about().map(|a| a.to_string()) {
        Some(about) if cmd.get_long_about().is_none() && summary(&about).is_some() => {
            let short = summary(&about).unwrap_or_default();
            cmd.about(short).long_about(about)
        }
        _ => cmd,
    };
    cmd.mut_args(|arg| match arg.get_help().map(|h| h.to_string()) {
        Some(help) if arg.get_long_help().is_none() && summary(&help).is_some() => {
            let short = summary(&help).unwrap_or_default();
            arg.help(short).long_help(help)
        }
        _ => arg,
    })
    .mut_subcommands(shorten)
}

/// A help text's first sentence, cut at its first clause (outside brackets) when that is
/// still long; `None` when the text is short already.
fn summary(text: &str) -> Option<String> {
    const SHORT: usize = 80;
    let text = text.trim_end_matches('.');
    if text.chars().count() <= SHORT {
        return None;
    }
    let mut short = first_sentence(text).to_string();
    for separators in [&["; ", ": "][..], &[", "][..], &[" ("][..]] {
        if short.chars().count() <= SHORT {
            break;
        }
        if let Some(at) = outside_brackets(&short, separators).filter(|&at| at >= 20) {
            short.truncate(at);
        }
    }
    if short.chars().count() > SHORT {
        // No clause to end on: the words that fit.
        let fit: String = short.chars().take(SHORT).collect();
        short = format!("{}…", fit.rsplit_once(' ').map_or(fit.as_str(), |(w, _)| w));
    }
    (short.len() < text.len()).then_some(short)
}

/// Up to the first ". " before a capital letter (so that "e.g. x" does not end it).
fn first_sentence(text: &str) -> &str {
    let mut from = 0;
    while let Some(at) = text[from..].find(". ").map(|i| from + i) {
        let abbreviation = text[..at].ends_with("e.g") || text[..at].ends_with("i.e");
        if !abbreviation && text[at + 2..].starts_with(|c: char| c.is_uppercase()) {
            return &text[..at];
        }
        from = at + 2;
    }
    text
}

/// Where the first of `separators` stands outside parentheses and square brackets.
fn outside_brackets(text: &str, separators: &[&str]) -> Option<usize> {
    let mut depth = 0i32;
    for (i, c) in text.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            _ if depth == 0 && separators.iter().any(|s| text[i..].starts_with(s)) => {
                return Some(i);
            }
            _ => {}
        }
    }
    None
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Assign deployment profiles for every row of INPUT.csv and write a results CSV.
    #[command(after_long_help = examples::RUN)]
    Run(Box<RunArgs>),
    /// Read and validate every row of INPUT.csv; send nothing.
    #[command(after_long_help = examples::VALIDATE)]
    Validate(ValidateArgs),
    /// Run the local Graph emulator in the foreground.
    #[command(after_long_help = examples::EMULATE)]
    Emulate(Box<crate::emulator::EmulateArgs>),
    /// Read the profile assignment status of every device RESULTS.csv reports created or
    /// existing, from the tenant's identity listing (each row's own tenant's, with --tenants),
    /// into a status CSV.
    #[command(after_long_help = examples::STATUS)]
    Status(Box<StatusArgs>),
    /// Check in seconds, sending no write, whether the tenant, the app registration and the
    /// assignment route will take `run`: the token's permissions, one listing page, one GET on
    /// the route for the first valid row of INPUT.csv, and the POST `run` would send first.
    /// With --tenants, every tenant of the file, each with its own first row.
    #[command(after_long_help = examples::PREFLIGHT)]
    Preflight(Box<PreflightArgs>),
    /// Autopilot deployment profiles: list them with the groups each targets (which profile do
    /// the devices get?), or assign one to a group (`profiles assign PROFILE --group G`).
    #[command(after_long_help = examples::PROFILES)]
    Profiles(Box<ProfilesArgs>),
    /// Put back every device RESULTS.csv reports created: delete the assignment, set the tag
    /// back (unless retagged since), remove the group member; into RESULTS-STEM.undo.csv.
    #[command(after_long_help = examples::UNDO)]
    Undo(Box<undo::UndoArgs>),
    /// Read what `run` would write, skip or fail for every row of INPUT.csv, with the same
    /// reads and the same flags, and write nothing to the tenant: a plan CSV and the counts.
    #[command(after_long_help = examples::PLAN)]
    Plan(Box<plan::PlanArgs>),
    /// Register devices with Autopilot from a hardware-hash CSV (Get-WindowsAutopilotInfo's):
    /// batched imports, the records watched until processed, one sync, the identity listing
    /// read until they appear; into INPUT-STEM.import.csv, which `run` takes as input.
    #[command(after_long_help = examples::IMPORT)]
    Import(Box<import::ImportArgs>),
}

/// `--help` groups: where each flag is listed.
pub(crate) const INPUT: &str = "Input and targets";
pub(crate) const CREDENTIALS: &str = "Credentials and cloud";
pub(crate) const PACE: &str = "Pace";
pub(crate) const FILES: &str = "Files and resume";
pub(crate) const OUTPUT: &str = "Output";

/// Defaults for rows that leave target columns empty, checked by the same parsers as cells so
/// that a bad flag fails before any row is read.
#[derive(Debug, Args, Default, Clone)]
pub struct DefaultArgs {
    /// Target kind for rows with an empty target_type. A row with no group_id, collection_id
    /// or filter_id needs one (`base` for the filterless base target, never implied).
    #[arg(help_heading = INPUT, long, value_name = "KIND", value_parser = TargetKind::parse)]
    pub target_type: Option<TargetKind>,
    /// Entra ID group (object id) for rows with an empty group_id: the target of a `group` or
    /// `exclusion_group` assignment; with --action group, the group each device joins.
    #[arg(help_heading = INPUT, long, value_name = "GUID", value_parser = crate::input::parse_guid)]
    pub group_id: Option<Uuid>,
    /// Configuration Manager collection id (e.g. SMS00001) for rows with an empty
    /// collection_id: the target of a `configuration_manager_collection` assignment.
    #[arg(help_heading = INPUT, long, value_name = "ID")]
    pub collection_id: Option<String>,
    /// Assignment filter id for rows with an empty filter_id (optional; alone, the row's
    /// target is `base` with that filter).
    #[arg(help_heading = INPUT, long, value_name = "GUID", value_parser = crate::input::parse_guid)]
    pub filter_id: Option<Uuid>,
    /// How the filter applies: none, include or exclude [default: include with a filter].
    #[arg(help_heading = INPUT, long, value_name = "TYPE", value_parser = FilterType::parse)]
    pub filter_type: Option<FilterType>,
    /// Where the assignment comes from: direct or policySets [default: direct].
    #[arg(help_heading = INPUT, long, value_name = "SOURCE", value_parser = Source::parse)]
    pub source: Option<Source>,
    /// The assignment's sourceId for rows with an empty source_id (optional, e.g. the policy
    /// set's id with --source policySets).
    #[arg(help_heading = INPUT, long, value_name = "ID")]
    pub source_id: Option<String>,
    /// assign (a deployment profile, the default) or tag (set each device's group tag).
    #[arg(help_heading = INPUT, long, value_name = "ACTION", default_value = "assign", value_parser = Action::parse)]
    pub action: Action,
    /// Group tag for rows with an empty group_tag (with --action tag).
    #[arg(help_heading = INPUT, long, value_name = "TAG")]
    pub group_tag: Option<String>,
    /// Field delimiter of the input; detected from the header when absent.
    #[arg(help_heading = INPUT, long, value_parser = parse_delimiter)]
    pub delimiter: Option<u8>,
}

impl DefaultArgs {
    pub fn to_defaults(&self) -> RowDefaults {
        RowDefaults {
            target_type: self.target_type,
            group_id: self.group_id,
            collection_id: self.collection_id.clone(),
            filter_id: self.filter_id,
            filter_type: self.filter_type,
            source: self.source,
            source_id: self.source_id.clone(),
            group_tag: self.group_tag.clone(),
            action: self.action,
            tenants: None,
        }
    }
}

pub(super) fn parse_delimiter(s: &str) -> Result<u8, String> {
    match s {
        "," | "comma" => Ok(b','),
        ";" | "semicolon" => Ok(b';'),
        "\t" | "\\t" | "tab" => Ok(b'\t'),
        "|" | "pipe" => Ok(b'|'),
        _ => Err(format!("unsupported delimiter {s:?} (use , ; tab or |)")),
    }
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The input CSV.
    pub input: PathBuf,
    #[command(flatten)]
    pub defaults: DefaultArgs,
    /// The tenants file `run --tenants` will use: every row's `tenant` cell must name one of
    /// its tenants. Only the names are needed: secret variables need not be set here.
    #[arg(help_heading = CREDENTIALS, long, value_name = "FILE", env = "AUTOPILOT_BULK_TENANTS")]
    pub tenants: Option<PathBuf>,
}

/// How to reach a tenant's Graph and as whom: credentials, cloud, URLs, pace and timeouts.
/// Shared by every command that talks to Graph, so a flag means the same everywhere.
#[derive(Debug, Args, Clone)]
pub struct GraphArgs {
    /// National cloud: picks authority, Graph host and scope.
    #[arg(help_heading = CREDENTIALS, long, value_enum, default_value_t = Cloud::Global)]
    pub cloud: Cloud,
    /// Graph base URL including version; overrides the cloud's.
    #[arg(help_heading = CREDENTIALS, long, env = "AUTOPILOT_BULK_GRAPH_URL", value_name = "URL")]
    pub graph_url: Option<String>,
    /// Token authority; overrides the cloud's.
    #[arg(help_heading = CREDENTIALS, long, env = "AUTOPILOT_BULK_AUTHORITY_URL", value_name = "URL")]
    pub authority_url: Option<String>,
    /// The customer tenant (directory) id or its domain, e.g. contoso.onmicrosoft.com: needed
    /// with a client secret or a certificate.
    #[arg(help_heading = CREDENTIALS, long, env = "AZURE_TENANT_ID", value_name = "ID")]
    pub tenant_id: Option<String>,
    /// The app registration's application (client) id: needed with a client secret or a
    /// certificate.
    #[arg(help_heading = CREDENTIALS, long, env = "AZURE_CLIENT_ID", value_name = "ID")]
    pub client_id: Option<String>,
    /// File holding the client secret (or set AZURE_CLIENT_SECRET); never a command-line value.
    #[arg(help_heading = CREDENTIALS, long, value_name = "PATH")]
    pub client_secret_file: Option<PathBuf>,
    /// PEM file with the app's certificate and its RSA private key (unencrypted).
    #[arg(help_heading = CREDENTIALS, long, env = "AZURE_CLIENT_CERTIFICATE_PATH", value_name = "PATH")]
    pub certificate: Option<PathBuf>,
    /// File holding a ready access token (or set GRAPH_ACCESS_TOKEN); it cannot be refreshed.
    #[arg(help_heading = CREDENTIALS, long, value_name = "PATH")]
    pub access_token_file: Option<PathBuf>,
    /// Client-side limit: never more than COUNT requests in any DURATION window (per tenant;
    /// a tenants file's `rate` overrides it for its tenant).
    #[arg(help_heading = PACE, long, default_value = "100/20s", value_name = "COUNT/DURATION")]
    pub rate: RateSpec,
    /// Client-side limit on all requests of the app, reads (reconciling GETs) and writes
    /// alike, as Intune caps them beside its writes.
    #[arg(
        long,
        default_value = "1000/20s",
        value_name = "COUNT/DURATION",
        env = "AUTOPILOT_BULK_REQUEST_RATE",
        help_heading = PACE
    )]
    pub request_rate: RateSpec,
    /// Time allowed to open a connection.
    #[arg(help_heading = PACE, long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Time allowed for one request, from send to the whole answer.
    #[arg(help_heading = PACE, long, default_value = "100s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
}

/// What to say when no credential is set.
pub const NO_CREDENTIALS: &str = "no credentials: set AZURE_CLIENT_SECRET (or \
     --client-secret-file), AZURE_CLIENT_CERTIFICATE_PATH (or --certificate), or \
     GRAPH_ACCESS_TOKEN (or --access-token-file), with --tenant-id/AZURE_TENANT_ID and \
     --client-id/AZURE_CLIENT_ID for the first two";

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The input CSV: one row per device (see README for the columns).
    pub input: PathBuf,
    #[command(flatten)]
    pub defaults: DefaultArgs,
    /// Check everything the run checks before sending (credentials loaded but not used, the
    /// results file, the lock), validate every row and show the first request bodies; send
    /// nothing, write nothing.
    #[arg(help_heading = INPUT, long)]
    pub dry_run: bool,
    /// Write without first reading whether the device already holds the assignment. By
    /// default a run reads before it writes, so a rerun over the same or a changed export
    /// writes only what is missing: one identity listing (⌈identities ÷ 100⌉ reads) tells
    /// which devices hold no assignment, and each other device costs one read (an identical
    /// assignment is `existing`, no write). Blind, every row is one write: for a first
    /// migration into a tenant known to be empty; a device already assigned gets a duplicate.
    #[arg(help_heading = INPUT, long)]
    pub no_read_before_write: bool,
    /// With --action group: the deployment profile (id or display name) that must target
    /// every group the rows name; the run is refused (exit 2) before any write when one is
    /// not (`autopilot-bulk profiles assign` makes the assignment).
    #[arg(help_heading = INPUT, long, value_name = "PROFILE")]
    pub profile: Option<String>,
    #[command(flatten)]
    pub graph: GraphArgs,
    /// TOML file of customer tenants, one [tenants.NAME] table each (ids, where the secret
    /// is, cloud, rate); rows name theirs in the input's tenant column. The single-tenant
    /// credentials are then optional. See README.
    #[arg(help_heading = CREDENTIALS, long, env = "AUTOPILOT_BULK_TENANTS", value_name = "FILE")]
    pub tenants: Option<PathBuf>,
    /// Start the emulator in-process and run against it; no credentials needed.
    #[arg(help_heading = CREDENTIALS, long)]
    pub emulator: bool,
    /// Device list for the in-process emulator (one id a line) [default:
    /// emulator-devices.txt beside the input, when present].
    #[arg(help_heading = CREDENTIALS, long, value_name = "PATH")]
    pub emulator_devices: Option<PathBuf>,
    /// Rows in flight at most, per tenant [default: 16 at the start, then following the
    /// measured latency, 4 to 32, so that a window's requests go out in a fortieth of the
    /// window (at most 16 while a --rate above Graph's published limit is unproven); with
    /// --batch, 4 envelopes].
    #[arg(help_heading = PACE, long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: Option<u32>,
    /// Keep the pace at --rate even when the service throttles below it (by default the pace
    /// drops to what the service accepts and climbs back).
    #[arg(help_heading = PACE, long)]
    pub no_adaptive: bool,
    /// JSON batching: up to 20 assignments per $batch request (each still counted by the
    /// rate limit; inner failures retried one by one). --concurrency then counts envelopes.
    #[arg(help_heading = PACE, long)]
    pub batch: bool,
    /// Attempts per row before it is recorded failed.
    #[arg(help_heading = PACE, long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// Time per row spent retrying before it is failed.
    #[arg(help_heading = PACE, long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub max_retry_time: Duration,
    /// Results CSV [default: <input stem>.results.csv beside the input].
    #[arg(help_heading = FILES, short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Replace an existing results file.
    #[arg(help_heading = FILES, long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Continue an existing results file: rows it reports created/existing (and invalid) are
    /// skipped, rows in flight at a crash are reconciled, the rest are done and appended.
    #[arg(help_heading = FILES, long)]
    pub resume: bool,
    /// With --resume: also redo rows reported invalid (after fixing the input).
    #[arg(help_heading = FILES, long, requires = "resume")]
    pub retry_invalid: bool,
    /// Write a machine-readable end-of-run summary (JSON) here.
    #[arg(help_heading = OUTPUT, long, value_name = "PATH")]
    pub summary_json: Option<PathBuf>,
    /// Only errors on stderr: no progress bar and no end-of-run summary, so that a nightly job
    /// that went well prints nothing (cron mails nothing) and one that did not prints why. The
    /// counts are in --summary-json and the exit code; a run that did not finish still prints
    /// its --resume command, and --emulator the emulator's counts.
    #[arg(help_heading = OUTPUT, short, long, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More detail on stderr (-vv for per-request lines).
    #[arg(help_heading = OUTPUT, short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[arg(help_heading = OUTPUT, long, value_enum, default_value_t = LogFormat::Text, help = LOG_FORMAT_HELP)]
    pub log_format: LogFormat,
}

/// `--log-format`'s help, the same for every command that has it.
pub(crate) const LOG_FORMAT_HELP: &str = "Format of every line on stderr: text, or json (one \
    JSON object a line, as journald and log shippers read it: log events, errors, and the \
    end-of-run summary as one event carrying the summary JSON's fields; no progress bar)";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl RunArgs {
    /// Build the run configuration. Secrets come from the environment or a file, never argv.
    /// `emulator`: the in-process emulator `--emulator` started, which then is the service and
    /// needs no credentials.
    pub fn to_config(&self, emulator: Option<&Emulator>) -> anyhow::Result<Config> {
        let output = self
            .output
            .clone()
            .unwrap_or_else(|| default_output(&self.input));
        let mut config = Config::new(&self.input, output);
        config.overwrite = self.overwrite;
        config.resume = self.resume;
        config.retry_invalid = self.retry_invalid;
        config.read_before_write = !self.no_read_before_write;
        config.delimiter = self.defaults.delimiter;
        config.defaults = self.defaults.to_defaults();
        config.concurrency = self.concurrency.map_or(4, |n| n as usize);
        config.adaptive_concurrency = self.concurrency.is_none();
        config.adaptive = !self.no_adaptive;
        config.batch = self.batch;
        config.profile = self.profile.clone();
        config.max_attempts = self.max_attempts;
        config.max_retry_time = self.max_retry_time;
        self.graph.apply(&mut config);
        // A bar redrawn between JSON lines would break them: none with --log-format json.
        config.progress = !self.quiet && self.log_format == LogFormat::Text;
        let tenants = self
            .tenants
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty());
        if let Some(path) = tenants {
            // A dry run loads it too: it should catch a bad tenants file.
            config.tenants = self.load_tenants(path, &config)?;
        }
        // A dry run loads the credentials as the run would (it checks what the run checks);
        // under --emulator none are needed.
        self.graph
            .connect_to(&mut config, emulator, self.emulator)?;
        Ok(config)
    }

    fn load_tenants(&self, path: &Path, base: &Config) -> anyhow::Result<Vec<Tenant>> {
        load_tenants(path, base, self.emulator)
    }
}

/// A secret from the environment variable `name` (`None` when unset or blank), without the line
/// break a secret store's file often ends with (`printf '%s\n'`, a Kubernetes secret made from a
/// file): Entra ID would refuse the secret with it (AADSTS7000215), as it is no part of it.
fn env_secret(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
        .filter(|s| !s.trim().is_empty())
}

/// The `--tenants` file, its optional keys falling back to `base`. Under `--emulator` a
/// tenant whose secret variable is not set gets the emulator's placeholder secret, so that
/// a rehearsal needs no real secrets; everywhere else that is an error.
pub(crate) fn load_tenants(
    path: &Path,
    base: &Config,
    emulator: bool,
) -> anyhow::Result<Vec<Tenant>> {
    let env = env_secret;
    let tenants = if emulator {
        tenants::load_with(path, base, &|name| env(name).or_else(emulator_secret))?
    } else {
        tenants::load_with(path, base, &env)?
    };
    Ok(tenants)
}

/// A `--tenants` value that names a file (an empty `AUTOPILOT_BULK_TENANTS` names none).
pub(crate) fn tenants_path(path: Option<&PathBuf>) -> Option<&Path> {
    path.map(PathBuf::as_path)
        .filter(|p| !p.as_os_str().is_empty())
}

/// The secret of [`Credentials::for_emulator`]: the in-process emulator takes any secret.
fn emulator_secret() -> Option<String> {
    match Credentials::for_emulator() {
        Credentials::ClientSecret { secret, .. } => Some(secret),
        _ => None,
    }
}

impl GraphArgs {
    /// Where `config` sends and as whom, the one rule for every command: the in-process
    /// `emulator` when one was started (it takes any credentials; each tenant of a tenants
    /// file is sent there too); else nothing yet while `--emulator` is still to start it;
    /// else the credentials of the flags and environment, which a tenants file may leave out
    /// (each of its tenants brings its own).
    pub fn connect_to(
        &self,
        config: &mut Config,
        emulator: Option<&Emulator>,
        emulator_wanted: bool,
    ) -> anyhow::Result<()> {
        if let Some(e) = emulator {
            config.graph_url = e.graph_url();
            config.authority_url = e.authority_url();
            config.credentials = Credentials::for_emulator();
            for tenant in &mut config.tenants {
                tenant.graph_url = e.graph_url();
                tenant.authority_url = e.authority_url();
            }
            return Ok(());
        }
        if emulator_wanted {
            return Ok(());
        }
        if !config.tenants.is_empty() {
            // Each tenant of the file brings its own: the single-tenant ones, left in a
            // scheduler's environment, are not read (as validate and --dry-run never did).
            if self.single_tenant_credentials_given() {
                tracing::warn!(
                    "with --tenants, each tenant's credentials come from the tenants file: the \
                     single-tenant credentials in the environment or flags are ignored"
                );
            }
            return Ok(());
        }
        match self.credentials()? {
            Some(credentials) => config.credentials = credentials,
            None => anyhow::bail!("{NO_CREDENTIALS}; or use --emulator"),
        }
        Ok(())
    }

    /// Whether a single-tenant credential is set (flag or environment), without reading it.
    fn single_tenant_credentials_given(&self) -> bool {
        let set = |name: &str| env_secret(name).is_some();
        self.client_secret_file.is_some()
            || self.access_token_file.is_some()
            || self.certificate.is_some()
            || set("AZURE_CLIENT_SECRET")
            || set("GRAPH_ACCESS_TOKEN")
    }

    /// Set what these flags decide in `config`: pace, timeouts, cloud and URLs (credentials are
    /// read apart, by [`GraphArgs::credentials`], only when something will be sent).
    pub fn apply(&self, config: &mut Config) {
        config.rate = self.rate;
        config.request_rate = self.request_rate;
        config.connect_timeout = self.connect_timeout;
        config.request_timeout = self.request_timeout;
        config.cloud = self.cloud;
        config.graph_url = self
            .graph_url
            .clone()
            .unwrap_or_else(|| self.cloud.graph_url())
            .trim_end_matches('/')
            .to_string();
        config.authority_url = self
            .authority_url
            .clone()
            .unwrap_or_else(|| self.cloud.authority().to_string())
            .trim_end_matches('/')
            .to_string();
    }

    /// Exactly one kind of credential: a client secret, a certificate or a static token;
    /// `None` when none is set (the caller says what else would do). Secrets and tokens come
    /// from the environment or a file, never from argv.
    pub fn credentials(&self) -> anyhow::Result<Option<Credentials>> {
        let read_file = |flag: &str, path: &PathBuf| -> anyhow::Result<String> {
            crate::auth::file::read_secret(path)
                .map_err(|e| anyhow::anyhow!(e.describe(&format!("--{flag}"), path)))
        };
        let env = env_secret;
        let secret = match &self.client_secret_file {
            Some(path) => Some(read_file("client-secret-file", path)?),
            None => env("AZURE_CLIENT_SECRET"),
        };
        let token = match &self.access_token_file {
            Some(path) => Some(read_file("access-token-file", path)?),
            None => env("GRAPH_ACCESS_TOKEN").map(|t| t.trim().to_string()),
        };
        let certificate = self
            .certificate
            .clone()
            .filter(|p| !p.as_os_str().is_empty());
        if let Some(path) = &certificate {
            crate::auth::file::read_capped(path, crate::auth::file::PEM_CAP)
                .map_err(|e| anyhow::anyhow!(e.describe("--certificate", path)))?;
        }
        let given: Vec<&str> = [
            secret.is_some().then_some("a client secret"),
            certificate.is_some().then_some("a certificate"),
            token.is_some().then_some("an access token"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if given.len() > 1 {
            anyhow::bail!(
                "more than one credential is set ({}): keep only one of AZURE_CLIENT_SECRET/\
                 --client-secret-file, AZURE_CLIENT_CERTIFICATE_PATH/--certificate and \
                 GRAPH_ACCESS_TOKEN/--access-token-file",
                given.join(", ")
            );
        }
        if let Some(token) = token {
            if token.is_empty() {
                anyhow::bail!("the access token file is empty");
            }
            return Ok(Some(Credentials::StaticToken(token)));
        }
        enum Kind {
            Secret(String),
            Certificate(PathBuf),
        }
        let (kind, label) = match (secret, certificate) {
            (Some(secret), _) => (Kind::Secret(secret), "a client secret"),
            (None, Some(path)) => (Kind::Certificate(path), "a certificate"),
            (None, None) => return Ok(None),
        };
        let tenant_id = self
            .tenant_id
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!("--tenant-id (or AZURE_TENANT_ID) is required with {label}")
            })?;
        let client_id = self
            .client_id
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!("--client-id (or AZURE_CLIENT_ID) is required with {label}")
            })?;
        Ok(Some(match kind {
            Kind::Secret(secret) => Credentials::ClientSecret {
                tenant_id,
                client_id,
                secret,
            },
            Kind::Certificate(pem_path) => Credentials::Certificate {
                tenant_id,
                client_id,
                pem_path,
            },
        }))
    }
}
