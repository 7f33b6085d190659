use clap::Parser;

fn main() {
    let cli = autopilot_bulk::cli::Cli::parse();
    match cli.command {
        autopilot_bulk::cli::Command::Emulate(args) => {
            let result = args.to_config().and_then(|config| {
                tokio::runtime::Runtime::new()?.block_on(
                    autopilot_bulk::emulator::serve_foreground(config, args.port),
                )
            });
            if let Err(e) = result {
                eprintln!("error: {e:#}");
                std::process::exit(2);
            }
        }
        // Placeholders until the bulk run lands (the other engineer's main.rs replaces this).
        autopilot_bulk::cli::Command::Run(_) | autopilot_bulk::cli::Command::Validate(_) => {
            eprintln!("not implemented yet");
            std::process::exit(2);
        }
    }
}
