//! The binary's body: set up logging and the runtime, dispatch the subcommand, and map the
//! outcome to the exit-code contract. `main.rs` only parses and calls [`main`].

use std::io::Write;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, EmulateArgs, LogFormat, RunArgs, ValidateArgs};
use crate::config::Credentials;
use crate::emulator::{Emulator, EmulatorConfig};
use crate::input::{InputReader, Parsed};
use crate::pipeline::{self, RunError};

/// Exit code for usage, configuration and input-file errors (nothing sent).
const EXIT_USAGE: u8 = 2;

pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run(args) => {
            init_logging(args.quiet, args.verbose, args.log_format);
            ExitCode::from(run_command(*args))
        }
        Command::Validate(args) => {
            init_logging(false, 0, LogFormat::Text);
            ExitCode::from(validate_command(&args))
        }
        Command::Emulate(args) => {
            init_logging(false, 0, LogFormat::Text);
            ExitCode::from(emulate_command(&args))
        }
    }
}

fn init_logging(quiet: bool, verbose: u8, format: LogFormat) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("AUTOPILOT_BULK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("autopilot_bulk={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn runtime() -> Result<tokio::runtime::Runtime, std::io::Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn fail(message: impl std::fmt::Display) -> u8 {
    eprintln!("autopilot-bulk: error: {message}");
    EXIT_USAGE
}

/// Cancel `token` on Ctrl-C or SIGTERM.
fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("autopilot-bulk: stopping: finishing rows in flight…");
        token.cancel();
    });
}

fn run_command(args: RunArgs) -> u8 {
    let mut config = match args.to_config() {
        Ok(c) => c,
        Err(e) => return fail(format!("{e:#}")),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        cancel_on_signal(shutdown.clone());
        let emulator = if args.emulator {
            let devices_path = args.emulator_devices.clone().or_else(|| {
                let beside = args.input.with_file_name("emulator-devices.txt");
                beside.exists().then_some(beside)
            });
            let devices = match devices_path.as_deref().map(crate::emulator::read_device_list) {
                Some(Err(e)) => return fail(e),
                Some(Ok(d)) => Some(d),
                None => None,
            };
            let emulator = match Emulator::start(EmulatorConfig {
                devices,
                ..EmulatorConfig::default()
            })
            .await
            {
                Ok(e) => e,
                Err(e) => return fail(format!("cannot start the emulator: {e}")),
            };
            eprintln!(
                "autopilot-bulk: running against the in-process emulator at {} (limit {}{})",
                emulator.url(),
                crate::config::RateSpec::default(),
                match &devices_path {
                    Some(p) => format!(", devices from {}", p.display()),
                    None => String::new(),
                }
            );
            config.graph_url = emulator.graph_url();
            config.authority_url = emulator.authority_url();
            config.credentials = emulator_credentials();
            Some(emulator)
        } else {
            None
        };
        let outcome = pipeline::run(config, shutdown).await;
        let code = match outcome {
            Ok(summary) => {
                eprint!("{}", crate::progress::render_summary(&summary));
                summary.exit_code()
            }
            Err(e @ (RunError::Config(_) | RunError::Input(_) | RunError::Output(_))) => fail(e),
        };
        if let Some(emulator) = emulator {
            let stats = emulator.stats();
            eprintln!(
                "  emulator: {} assignments created · {} devices with more than one · {} Retry-After violations",
                stats.assignments_created, stats.duplicate_devices, stats.violations
            );
            emulator.shutdown().await;
        }
        code
    })
}

/// Any secret works against the emulator; these only name the run in its logs.
pub fn emulator_credentials() -> Credentials {
    Credentials::ClientSecret {
        tenant_id: "emulator-tenant".into(),
        client_id: "autopilot-bulk".into(),
        secret: "emulator".into(),
    }
}

fn validate_command(args: &ValidateArgs) -> u8 {
    let defaults = match args.defaults.to_defaults() {
        Ok(d) => d,
        Err(e) => return fail(format!("{e:#}")),
    };
    let reader = match InputReader::open(&args.input, args.defaults.delimiter, defaults) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if !reader.unknown_columns().is_empty() {
        eprintln!(
            "autopilot-bulk: warning: ignoring columns that are not input columns: {}",
            reader.unknown_columns().join(", ")
        );
    }
    let (mut valid, mut invalid) = (0u64, 0u64);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for item in reader {
        match item {
            Ok(Parsed::Job(_)) => valid += 1,
            Ok(Parsed::Invalid(i)) => {
                invalid += 1;
                let _ = writeln!(out, "row {}: {}", i.row, i.reason);
            }
            Err(e) => return fail(e),
        }
    }
    let _ = writeln!(
        out,
        "{}: {} rows · {valid} valid · {invalid} invalid",
        args.input.display(),
        valid + invalid
    );
    if invalid == 0 { 0 } else { 1 }
}

fn emulate_command(args: &EmulateArgs) -> u8 {
    let config = match args.to_config() {
        Ok(c) => c,
        Err(e) => return fail(format!("{e:#}")),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    match rt.block_on(crate::emulator::serve_foreground(config, args.port)) {
        Ok(()) => 0,
        Err(e) => fail(format!("{e:#}")),
    }
}
