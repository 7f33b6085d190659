//! `import`'s command line, validated into an [`ImportConfig`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{GraphArgs, LogFormat, load_tenants, tenants_path};
use crate::config::Config;
use crate::emulator::Emulator;
use crate::import::{ImportConfig, Settings};

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The hardware-hash CSV (Get-WindowsAutopilotInfo's: Device Serial Number, Windows
    /// Product ID, Hardware Hash, optional Group Tag and Assigned User).
    pub input: PathBuf,
    /// Import CSV [default: INPUT-STEM.import.csv beside the input]; a `run` input as it is.
    #[arg(help_heading = super::FILES, short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Continue an interrupted import: devices its import file reports registered or existing
    /// are left, devices an earlier attempt sent are watched (never imported twice), failed
    /// ones imported again.
    #[arg(help_heading = super::FILES, long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Replace an existing import file.
    #[arg(help_heading = super::FILES, long)]
    pub overwrite: bool,
    /// Devices per import request (Graph documents no limit; a refused batch is split down to
    /// single devices).
    #[arg(help_heading = super::PACE, long, default_value_t = crate::import::DEFAULT_BATCH as u16,
          value_parser = clap::value_parser!(u16).range(1..=500))]
    pub batch_size: u16,
    /// Import requests (and record deletions) in flight at most, per tenant.
    #[arg(help_heading = super::PACE, long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Longest wait for the records to be processed and the devices to be listed; devices
    /// not listed by then are failed with their record kept (`--resume` looks again).
    #[arg(help_heading = super::PACE, long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Leave this run's import records in place (by default each is deleted once its device is
    /// listed or refused; records of other imports are never touched). Deleting costs one
    /// write per device at Intune's 100 writes per 20 s.
    #[arg(help_heading = super::FILES, long)]
    pub keep_import_records: bool,
    /// Field delimiter of the input; detected from the header when absent.
    #[arg(help_heading = super::INPUT, long, value_parser = super::parse_delimiter)]
    pub delimiter: Option<u8>,
    /// Machine-readable end-of-import summary.
    #[arg(help_heading = super::OUTPUT, long, value_name = "PATH")]
    pub summary_json: Option<PathBuf>,
    #[command(flatten)]
    pub graph: GraphArgs,
    /// TOML file of customer tenants, as for `run`: each row is imported into the tenant its
    /// `tenant` column names, each tenant with its own import and sync.
    #[arg(help_heading = super::CREDENTIALS, long, env = "AUTOPILOT_BULK_TENANTS", value_name = "FILE")]
    pub tenants: Option<PathBuf>,
    /// Import into the in-process emulator; no credentials needed.
    #[arg(help_heading = super::CREDENTIALS, long)]
    pub emulator: bool,
    /// Device list for the in-process emulator (one id a line: the devices already
    /// registered) [default: emulator-devices.txt beside the input, when present].
    #[arg(help_heading = super::CREDENTIALS, long, value_name = "PATH", requires = "emulator")]
    pub emulator_devices: Option<PathBuf>,
    /// Only errors on stderr: no progress and no end-of-import summary, so that a nightly job
    /// that went well prints nothing. The counts are in --summary-json and the exit code; an
    /// import that did not finish still prints its --resume command.
    #[arg(help_heading = super::OUTPUT, short, long, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More detail on stderr (-vv for per-request lines).
    #[arg(help_heading = super::OUTPUT, short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[arg(help_heading = super::OUTPUT, long, value_enum, default_value_t = super::LogFormat::Text, help = super::LOG_FORMAT_HELP)]
    pub log_format: super::LogFormat,
}

impl ImportArgs {
    /// Credentials and `--tenants` as for `run` (none with the in-process `emulator`).
    pub fn to_config(&self, emulator: Option<&Emulator>) -> anyhow::Result<ImportConfig> {
        let mut graph = Config::new(&self.input, PathBuf::new());
        self.graph.apply(&mut graph);
        graph.delimiter = self.delimiter;
        if let Some(path) = tenants_path(self.tenants.as_ref()) {
            graph.tenants = load_tenants(path, &graph, self.emulator)?;
        }
        self.graph.connect_to(&mut graph, emulator, self.emulator)?;
        let mut config = ImportConfig::new(&self.input, graph);
        if let Some(output) = &self.output {
            config.output = output.clone();
        }
        config.resume = self.resume;
        config.overwrite = self.overwrite;
        config.settings = Settings {
            batch: usize::from(self.batch_size),
            concurrency: usize::from(self.concurrency),
            timeout: self.timeout,
            keep_records: self.keep_import_records,
            ..Settings::default()
        };
        // A bar redrawn between JSON lines would break them: none with --log-format json.
        config.progress = !self.quiet && self.log_format == LogFormat::Text;
        Ok(config)
    }
}
