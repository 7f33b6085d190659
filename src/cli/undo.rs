//! `undo`'s command line, validated into an [`UndoConfig`].

use std::path::PathBuf;

use clap::Args;

use super::{GraphArgs, LogFormat, NO_CREDENTIALS, load_tenants, tenants_path};
use crate::config::Config;
use crate::undo::UndoConfig;

#[derive(Debug, Args)]
pub struct UndoArgs {
    /// The results CSV of the run to undo.
    pub results: PathBuf,
    /// Undo CSV [default: RESULTS-STEM.undo.csv beside the results].
    #[arg(help_heading = super::FILES, short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Continue an interrupted undo: rows its undo file reports finished are left, failed
    /// ones done again.
    #[arg(help_heading = super::FILES, long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Replace an existing undo file.
    #[arg(help_heading = super::FILES, long)]
    pub overwrite: bool,
    /// Show what would be undone, row by row; send nothing.
    #[arg(help_heading = super::INPUT, long)]
    pub dry_run: bool,
    /// Rows in flight at most.
    #[arg(help_heading = super::PACE, long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Machine-readable end-of-undo summary.
    #[arg(help_heading = super::OUTPUT, long, value_name = "PATH")]
    pub summary_json: Option<PathBuf>,
    #[command(flatten)]
    pub graph: GraphArgs,
    /// The tenants file of the `run --tenants` that wrote RESULTS.csv: each row is undone in
    /// the tenant its `tenant` column names.
    #[arg(help_heading = super::CREDENTIALS, long, env = "AUTOPILOT_BULK_TENANTS", value_name = "FILE")]
    pub tenants: Option<PathBuf>,
    /// Only errors on stderr: no progress and no end-of-undo summary, so that a nightly job
    /// that went well prints nothing. The counts are in --summary-json and the exit code; an
    /// undo that did not finish still prints its --resume command.
    #[arg(help_heading = super::OUTPUT, short, long, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More detail on stderr (-vv for per-request lines).
    #[arg(help_heading = super::OUTPUT, short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[arg(help_heading = super::OUTPUT, long, value_enum, default_value_t = super::LogFormat::Text, help = super::LOG_FORMAT_HELP)]
    pub log_format: super::LogFormat,
}

impl UndoArgs {
    /// Credentials and `--tenants` as for `run` (a dry run needs neither).
    pub fn to_config(&self) -> anyhow::Result<UndoConfig> {
        let mut graph = Config::new(&self.results, PathBuf::new());
        self.graph.apply(&mut graph);
        let tenants = tenants_path(self.tenants.as_ref());
        if let Some(path) = tenants {
            graph.tenants = load_tenants(path, &graph, false)?;
        }
        match self.graph.credentials()? {
            Some(credentials) => graph.credentials = credentials,
            None if tenants.is_some() || self.dry_run => {}
            None => anyhow::bail!(NO_CREDENTIALS),
        }
        let mut config = UndoConfig::new(&self.results, graph);
        if let Some(output) = &self.output {
            config.output = output.clone();
        }
        config.resume = self.resume;
        config.overwrite = self.overwrite;
        config.concurrency = usize::from(self.concurrency);
        // A bar redrawn between JSON lines would break them: none with --log-format json.
        config.progress = !self.quiet && self.log_format == LogFormat::Text;
        Ok(config)
    }
}
