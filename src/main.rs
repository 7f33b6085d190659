use clap::Parser;

fn main() {
    let _cli = autopilot_bulk::cli::Cli::parse();
}
