//! The flags of the commands that read a tenant before or after a run: `status`, `preflight`
//! and `profiles`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::{DefaultArgs, GraphArgs, NO_CREDENTIALS, load_tenants, tenants_path};
use crate::config::Config;
use crate::emulator::Emulator;
use crate::preflight::PreflightConfig;
use crate::status::{StatusConfig, Watch};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The results CSV of a run.
    pub results: PathBuf,
    /// Status CSV [default: RESULTS-STEM.status.csv beside the results].
    #[arg(help_heading = super::FILES, short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Replace an existing file at the status path that is not a status file. An earlier
    /// status file is replaced without it, with or without --watch: every reading replaces the
    /// whole file, so it only held an earlier reading.
    #[arg(help_heading = super::FILES, long)]
    pub overwrite: bool,
    /// Read again every --interval until every device is assigned or --timeout passes.
    #[arg(help_heading = super::OUTPUT, long)]
    pub watch: bool,
    /// Time between readings with --watch.
    #[arg(help_heading = super::PACE, long, default_value = "60s", value_parser = parse_interval, requires = "watch")]
    pub interval: Duration,
    /// Give up watching after this long (exit 1).
    #[arg(help_heading = super::PACE, long, default_value = "30m", value_parser = humantime::parse_duration, requires = "watch")]
    pub timeout: Duration,
    #[command(flatten)]
    pub graph: GraphArgs,
    /// The tenants file of the `run --tenants` that wrote RESULTS.csv: each row is read from
    /// the tenant its `tenant` column names. The single-tenant credentials are then optional.
    #[arg(help_heading = super::CREDENTIALS, long, env = "AUTOPILOT_BULK_TENANTS", value_name = "FILE")]
    pub tenants: Option<PathBuf>,
    /// Only errors on stderr: no progress, no line per --watch reading, no note on how it
    /// ended (timed out, stopped, nothing to read: the exit code says it). The counts still go
    /// to stdout and the status file is written.
    #[arg(help_heading = super::OUTPUT, short, long, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More detail on stderr (-vv for per-request lines).
    #[arg(help_heading = super::OUTPUT, short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[arg(help_heading = super::OUTPUT, long, value_enum, default_value_t = super::LogFormat::Text, help = super::LOG_FORMAT_HELP)]
    pub log_format: super::LogFormat,
}

#[derive(Debug, Args)]
pub struct PreflightArgs {
    /// The input CSV of the coming run: its first valid row is checked and shown [default:
    /// the route is checked with the first listed identity].
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub graph: GraphArgs,
    /// Start the emulator in-process and check against it; no credentials needed.
    #[arg(help_heading = super::CREDENTIALS, long)]
    pub emulator: bool,
    /// Device list for the in-process emulator (one id a line) [default:
    /// emulator-devices.txt beside the input, when present].
    #[arg(help_heading = super::CREDENTIALS, long, value_name = "PATH", requires = "emulator")]
    pub emulator_devices: Option<PathBuf>,
    /// TOML file of customer tenants, as for `run`: each tenant is checked, with the first
    /// valid row of INPUT.csv that names it. The single-tenant credentials are then optional.
    #[arg(help_heading = super::CREDENTIALS, long, env = "AUTOPILOT_BULK_TENANTS", value_name = "FILE")]
    pub tenants: Option<PathBuf>,
    /// Check for `import` instead of `run`: INPUT.csv is a hardware-hash file (read and
    /// counted, nothing of it sent); the import records and the tenant's last Autopilot sync
    /// are read.
    #[arg(help_heading = super::INPUT, long)]
    pub import: bool,
    #[command(flatten)]
    pub defaults: DefaultArgs,
}

impl PreflightArgs {
    /// Build the preflight configuration; credentials as for `run` (none with the in-process
    /// `emulator`). A few short retries: preflight answers in seconds.
    pub fn to_config(&self, emulator: Option<&Emulator>) -> anyhow::Result<PreflightConfig> {
        let mut graph = Config::new(self.input.clone().unwrap_or_default(), PathBuf::new());
        self.graph.apply(&mut graph);
        graph.delimiter = self.defaults.delimiter;
        graph.defaults = self.defaults.to_defaults();
        graph.max_attempts = 3;
        graph.max_retry_time = Duration::from_secs(30);
        let tenants = tenants_path(self.tenants.as_ref());
        if let Some(path) = tenants {
            graph.tenants = load_tenants(path, &graph, self.emulator)?;
        }
        self.graph.connect_to(&mut graph, emulator, self.emulator)?;
        Ok(PreflightConfig {
            input: self.input.clone(),
            graph,
            import: self.import,
        })
    }
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("the interval must be longer than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

impl StatusArgs {
    /// Build the status configuration; credentials and `--tenants` as for `run`. Without
    /// either, a results file that names tenants is the error to report: credentials alone
    /// would not read it right.
    pub fn to_config(&self) -> anyhow::Result<StatusConfig> {
        let mut graph = Config::new(&self.results, PathBuf::new());
        self.graph.apply(&mut graph);
        let tenants = tenants_path(self.tenants.as_ref());
        if let Some(path) = tenants {
            graph.tenants = load_tenants(path, &graph, false)?;
        }
        match self.graph.credentials()? {
            Some(credentials) => graph.credentials = credentials,
            None if tenants.is_some() => {}
            None => {
                crate::status::single_tenant(&self.results)?;
                anyhow::bail!(NO_CREDENTIALS);
            }
        }
        let mut config = StatusConfig::new(&self.results, graph);
        if let Some(output) = &self.output {
            config.output = output.clone();
        }
        config.overwrite = self.overwrite;
        config.watch = self.watch.then_some(Watch {
            interval: self.interval,
            timeout: self.timeout,
        });
        // Not quiet: a bar on a terminal, else (or with JSON logs) a line per reading.
        config.progress = !self.quiet;
        Ok(config)
    }
}

/// `profiles`: list, or `profiles assign`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ProfilesArgs {
    #[command(subcommand)]
    pub command: Option<ProfilesSub>,
    #[command(flatten)]
    pub target: ProfilesTarget,
}

#[derive(Debug, Subcommand)]
pub enum ProfilesSub {
    /// Assign PROFILE (id or display name) to a group; nothing is written when it already is.
    #[command(after_long_help = super::examples::PROFILES_ASSIGN)]
    Assign(ProfileAssignArgs),
}

#[derive(Debug, Args)]
pub struct ProfileAssignArgs {
    /// The deployment profile: its id or display name.
    pub profile: String,
    /// The group: its id or display name (a name two groups share is refused).
    #[arg(help_heading = super::INPUT, long, value_name = "GROUP")]
    pub group: String,
    #[command(flatten)]
    pub target: ProfilesTarget,
}

/// The tenant `profiles` reads.
#[derive(Debug, Args)]
pub struct ProfilesTarget {
    #[command(flatten)]
    pub graph: GraphArgs,
    /// Start the emulator in-process and use it; no credentials needed.
    #[arg(help_heading = super::CREDENTIALS, long)]
    pub emulator: bool,
}

impl ProfilesArgs {
    /// What to do, and where.
    pub fn command(&self) -> (crate::profiles::ProfilesCommand, &ProfilesTarget) {
        match &self.command {
            None => (crate::profiles::ProfilesCommand::List, &self.target),
            Some(ProfilesSub::Assign(a)) => (
                crate::profiles::ProfilesCommand::Assign {
                    profile: a.profile.clone(),
                    group: a.group.clone(),
                },
                &a.target,
            ),
        }
    }
}

impl ProfilesTarget {
    pub fn to_config(&self, emulator: Option<&Emulator>) -> anyhow::Result<Config> {
        let mut config = Config::new(PathBuf::new(), PathBuf::new());
        self.graph.apply(&mut config);
        config.max_attempts = 3;
        config.max_retry_time = Duration::from_secs(30);
        self.graph
            .connect_to(&mut config, emulator, self.emulator)?;
        Ok(config)
    }
}
