//! `autopilot-bulk`: parse the command line and hand it to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    autopilot_bulk::app::main(autopilot_bulk::cli::Cli::parse())
}
