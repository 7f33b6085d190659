//! `autopilot-bulk`: parse the command line and hand it to the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    match autopilot_bulk::cli::parse() {
        Ok(cli) => autopilot_bulk::app::main(cli),
        Err(e) => autopilot_bulk::app::command_line_error(e),
    }
}
