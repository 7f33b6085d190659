//! `plan INPUT.csv`: the command line of [`crate::run::preview`]. The same flags as `run` for
//! what a row does and where it goes (action, targets, tenants, credentials, rates), none of
//! `run`'s about results files.

use std::path::PathBuf;

use clap::Args;

use super::{DefaultArgs, GraphArgs};
use crate::config::Config;
use crate::emulator::Emulator;

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The input CSV `run` would take.
    pub input: PathBuf,
    /// The plan CSV, replaced if it exists [default: <input stem>.plan.csv beside the input].
    #[arg(help_heading = super::FILES, short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub graph: GraphArgs,
    /// TOML file of customer tenants, as for `run`: each row is planned in its tenant.
    #[arg(help_heading = super::CREDENTIALS, long, env = "AUTOPILOT_BULK_TENANTS", value_name = "FILE")]
    pub tenants: Option<PathBuf>,
    /// Plan against the in-process emulator; no credentials needed.
    #[arg(help_heading = super::CREDENTIALS, long)]
    pub emulator: bool,
    /// Device list for the in-process emulator (one id a line) [default:
    /// emulator-devices.txt beside the input, when present].
    #[arg(help_heading = super::CREDENTIALS, long, value_name = "PATH", requires = "emulator")]
    pub emulator_devices: Option<PathBuf>,
    #[command(flatten)]
    pub defaults: DefaultArgs,
    /// With --action group: the deployment profile (id or display name) that must target
    /// every group the rows name, as for `run`: a plan whose run would be refused for it is
    /// refused the same way (exit 2), before any row is planned.
    #[arg(help_heading = super::INPUT, long, value_name = "PROFILE")]
    pub profile: Option<String>,
    /// Only errors on stderr. The plan's counts still go to stdout: they are what plan is for.
    #[arg(help_heading = super::OUTPUT, short, long, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More detail on stderr (-vv for per-request lines).
    #[arg(help_heading = super::OUTPUT, short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[arg(help_heading = super::OUTPUT, long, value_enum, default_value_t = super::LogFormat::Text, help = super::LOG_FORMAT_HELP)]
    pub log_format: super::LogFormat,
}

/// `<input stem>.plan.csv` beside the input.
pub fn default_plan_path(input: &std::path::Path) -> PathBuf {
    crate::config::beside(input, "plan")
}

impl PlanArgs {
    /// The configuration `run` would have with these flags; credentials as for `run` (none
    /// with the in-process `emulator`).
    pub fn to_config(&self, emulator: Option<&Emulator>) -> anyhow::Result<Config> {
        let output = self
            .output
            .clone()
            .unwrap_or_else(|| default_plan_path(&self.input));
        let mut config = Config::new(&self.input, output);
        config.delimiter = self.defaults.delimiter;
        config.defaults = self.defaults.to_defaults();
        config.profile = self.profile.clone();
        self.graph.apply(&mut config);
        let tenants = self
            .tenants
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty());
        if let Some(path) = tenants {
            config.tenants = super::load_tenants(path, &config, self.emulator)?;
        }
        self.graph
            .connect_to(&mut config, emulator, self.emulator)?;
        Ok(config)
    }
}
