//! `autopilot-bulk`: parse the command line and hand it to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match autopilot_bulk::cli::Cli::try_parse() {
        Ok(cli) => autopilot_bulk::app::main(cli),
        Err(e) => autopilot_bulk::app::command_line_error(e),
    }
}
