//! The binary's body: set up logging and the runtime, dispatch the subcommand, and map the
//! outcome to the exit-code contract. `main.rs` only parses and calls [`main`].

use std::io::Write;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, LogFormat, RunArgs, ValidateArgs};
use crate::emulator::{EmulateArgs, Emulator, EmulatorConfig};
use crate::input::{InputReader, Parsed};

/// A line on stderr (a JSON event with `--log-format json`: [`crate::notes`]). A closed stderr
/// (`… 2>&1 | head -1`) is a quiet end of output, never a panic: the run goes on and the summary
/// JSON is still written.
macro_rules! note {
    ($($arg:tt)*) => {{
        crate::notes::line(&format!($($arg)*));
    }};
}

/// A line on stdout, likewise (`--dry-run | head -1`).
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod commands;

use commands::{plan_command, preflight_command, profiles_command, status_command, undo_command};

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
        Command::Status(args) => {
            init_logging(args.quiet, args.verbose, args.log_format);
            ExitCode::from(status_command(&args))
        }
        Command::Profiles(args) => {
            init_logging(true, 0, LogFormat::Text);
            ExitCode::from(profiles_command(&args))
        }
        Command::Undo(args) => {
            init_logging(args.quiet, args.verbose, args.log_format);
            ExitCode::from(undo_command(&args))
        }
        Command::Plan(args) => {
            init_logging(args.quiet, args.verbose, args.log_format);
            ExitCode::from(plan_command(&args))
        }
        Command::Import(args) => {
            init_logging(args.quiet, args.verbose, args.log_format);
            ExitCode::from(commands::import_command(&args))
        }
        Command::Preflight(args) => {
            // Failures are in the report: the log would only repeat them.
            init_logging(true, 0, LogFormat::Text);
            ExitCode::from(preflight_command(&args))
        }
    }
}

/// A command line clap refuses: its message as clap writes it, or, when the command line asks
/// for `--log-format json`, as one JSON event (so that even a typo in a unit file reaches the
/// log shipper as JSON). `--help` and `--version` print as usual.
pub fn command_line_error(e: clap::Error) -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let json = args.iter().enumerate().any(|(i, a)| {
        a == "--log-format=json"
            || (a == "--log-format" && args.get(i + 1).is_some_and(|v| v == "json"))
    });
    if !json || !e.use_stderr() {
        e.exit();
    }
    let message = e.render().to_string();
    let line = crate::notes::event_json(
        crate::notes::Level::Error,
        message.trim_end(),
        serde_json::Map::new(),
    );
    let _ = writeln!(std::io::stderr(), "{line}");
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_USAGE))
}

fn init_logging(quiet: bool, verbose: u8, format: LogFormat) {
    crate::notes::set(format == LogFormat::Json, quiet);
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
        .with_writer(crate::progress::LogWriter)
        // Colour codes only for a person at a terminal, never into a scheduler's log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The async runtime, or the exit code (2) after saying why there is none.
fn runtime() -> Result<tokio::runtime::Runtime, u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async { crate::halt::survive_file_size_limit() });
    Ok(rt)
}

fn fail(message: impl std::fmt::Display) -> u8 {
    note!("autopilot-bulk: error: {message}");
    EXIT_USAGE
}

/// Cancel `token` on the first Ctrl-C, SIGTERM or SIGHUP (a closed terminal or a scheduler
/// stopping the job); quit at once on a second one, still leaving a summary JSON behind.
fn cancel_on_signal(token: CancellationToken, summary_path: Option<std::path::PathBuf>) {
    tokio::spawn(async move {
        crate::halt::signal().await;
        note!(
            "autopilot-bulk: stopping: no new rows; finishing rows in flight (Ctrl-C again to \
             quit at once, still safe to --resume)…"
        );
        token.cancel();
        // A second signal: leave now. Every finished row is on disk and the journal names
        // the rows in flight, so --resume neither loses nor repeats anything.
        crate::halt::signal().await;
        note!("autopilot-bulk: quitting at once; resume with --resume");
        write_summary_json(
            summary_path.as_deref(),
            &crate::summary::interrupted_json(
                "quit at once on a second signal; rows in flight are left to --resume",
            ),
        );
        std::process::exit(130);
    });
}

/// The command line that continues this run: the same arguments, `--resume` instead of
/// `--overwrite`.
fn resume_command() -> String {
    let mut args: Vec<String> = std::env::args()
        .filter(|a| a != "--overwrite" && a != "--resume")
        .collect();
    args.push("--resume".into());
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Write `--summary-json`; a failure to write it is reported but does not change the exit code.
fn write_summary_json(path: Option<&std::path::Path>, value: &serde_json::Value) {
    let Some(path) = path else { return };
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    if let Err(e) = std::fs::write(path, text + "\n") {
        note!(
            "autopilot-bulk: warning: cannot write summary {}: {e}",
            path.display()
        );
    }
}

fn run_command(args: RunArgs) -> u8 {
    let summary_path = args.summary_json.clone();
    // Checked before anything starts, so a bad flag is exit 2 at once.
    let config = match args.to_config(None) {
        Ok(c) => c,
        Err(e) => {
            let message = format!("{e:#}");
            write_summary_json(
                summary_path.as_deref(),
                &crate::summary::error_json(&message, EXIT_USAGE),
            );
            return fail(message);
        }
    };
    if args.dry_run {
        return dry_run(&config, args.emulator, summary_path.as_deref());
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        cancel_on_signal(shutdown.clone(), summary_path.clone());
        let (config, emulator) = if args.emulator {
            let devices = args.emulator_devices.as_deref();
            let e = match start_emulator(Some(&args.input), devices, &config.tenants).await {
                Ok(e) => e,
                Err(message) => return fail(message),
            };
            match args.to_config(Some(&e.emulator)) {
                Ok(c) => (c, Some(e)),
                Err(message) => return fail(message),
            }
        } else {
            (config, None)
        };
        let action = config.defaults.action;
        let started = crate::run(config, shutdown).await;
        // An early error (nothing sent) is the one line: no emulator lines around it.
        let emulator = match (emulator, &started) {
            (Some(e), Ok(_)) => Some(e),
            (Some(e), Err(_)) => {
                e.emulator.shutdown().await;
                None
            }
            (None, _) => None,
        };
        if let Some(e) = &emulator {
            note!("{}", e.banner);
        }
        let code = match started {
            Ok(summary) => {
                let code = summary.exit_code();
                let json = crate::summary::summary_json(&summary, code);
                let text = crate::summary::render_summary(&summary);
                crate::notes::summary(&text, "run finished", json.clone(), code);
                if summary.outcome != crate::summary::Outcome::Completed {
                    note!("  to continue: {}", resume_command());
                }
                write_summary_json(summary_path.as_deref(), &json);
                code
            }
            Err(e) => {
                let message = e.to_string();
                write_summary_json(
                    summary_path.as_deref(),
                    &crate::summary::error_json(&message, EXIT_USAGE),
                );
                fail(message)
            }
        };
        if let Some(InProcess { emulator, .. }) = emulator {
            let stats = emulator.stats();
            note!("  emulator: {}", emulator_line(&stats, action));
            for (tenant, s) in &stats.tenants {
                note!("  emulator tenant {tenant}: {}", emulator_line(s, action));
            }
            emulator.shutdown().await;
        }
        code
    })
}

/// What the emulator saw of the run's writes: what the run's `action` wrote (assignments,
/// tags or members, never another action's zero), what would be a duplicate, and Retry-After
/// violations.
fn emulator_line(s: &crate::emulator::Stats, action: crate::input::Action) -> String {
    use crate::input::Action;
    let wrote = match action {
        Action::Assign => format!(
            "{} assignments created · {} devices with more than one",
            s.assignments_created, s.duplicate_devices
        ),
        Action::Tag => format!("{} group tags set", s.group_tags_set),
        Action::Group => format!(
            "{} members added in {} group writes · {} refs already members",
            s.members_added, s.group_writes, s.duplicate_member_attempts
        ),
    };
    format!(
        "{wrote} · {} 429s · {} Retry-After violations",
        s.throttled, s.violations
    )
}

/// The in-process emulator a command started, and the line that says so: printed once the
/// command got going, never around an error that stopped it before anything was sent.
pub(super) struct InProcess {
    pub(super) emulator: Emulator,
    pub(super) banner: String,
}

/// `--emulator`: the emulator in-process with its defaults (Intune's 100/20s window) and the
/// device list from `--emulator-devices` or `emulator-devices.txt` beside the input; with
/// `tenants` (a tenants file being rehearsed), it answers as each of them, with a window, store
/// and counters each.
async fn start_emulator(
    input: Option<&std::path::Path>,
    emulator_devices: Option<&std::path::Path>,
    tenants: &[crate::config::Tenant],
) -> Result<InProcess, String> {
    let tenants: Vec<String> = tenants
        .iter()
        .filter_map(|t| t.credentials.tenant_id().map(str::to_string))
        .collect();
    let devices_path = emulator_devices.map(Into::into).or_else(|| {
        let beside = input?.with_file_name("emulator-devices.txt");
        beside.exists().then_some(beside)
    });
    let identities = devices_path
        .as_deref()
        .map(crate::emulator::read_device_identities)
        .transpose()
        .map_err(|e| e.to_string())?;
    // The devices the tenant knows (others answer 404), listed with their serial numbers.
    let config = EmulatorConfig {
        devices: identities
            .as_ref()
            .map(|ids| ids.iter().map(|(id, _)| id.clone()).collect()),
        identities: identities.unwrap_or_default(),
        tenants,
        ..EmulatorConfig::default()
    };
    let limit = config.limit;
    let emulator = Emulator::start(config)
        .await
        .map_err(|e| format!("cannot start the emulator: {e}"))?;
    let banner = format!(
        "autopilot-bulk: ran against the in-process emulator at {} (limit {limit}{})",
        emulator.url(),
        match &devices_path {
            Some(p) => format!(", devices from {}", p.display()),
            None => String::new(),
        }
    );
    Ok(InProcess { emulator, banner })
}

/// `run --dry-run`: everything `run` checks before it sends (credentials loaded, not used;
/// the results file; the lock: [`crate::run::check_startable`]), everything `validate` does,
/// and the first request bodies as they would be sent. No network, no results file.
fn dry_run(
    config: &crate::config::Config,
    emulator: bool,
    summary_path: Option<&std::path::Path>,
) -> u8 {
    const SHOWN: usize = 3;
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    if let Err(e) = rt.block_on(async { crate::run::check_startable(config, emulator) }) {
        let message = e.to_string();
        write_summary_json(
            summary_path,
            &crate::summary::error_json(&message, EXIT_USAGE),
        );
        return fail(format!("{message} (the run would not start)"));
    }
    let reader = match InputReader::open(&config.input, config.delimiter, config.row_defaults()) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let mut shown = 0;
    let code = report_rows(&config.input, reader, |job| {
        if shown < SHOWN {
            shown += 1;
            let (line, body) = crate::preflight::shown_request(job, None, &config.graph_url);
            out!("{line}\n{body}");
        }
    });
    out!(
        "dry run: nothing was sent; results would go to {}",
        config.output.display()
    );
    code
}

fn validate_command(args: &ValidateArgs) -> u8 {
    let mut defaults = args.defaults.to_defaults();
    if let Some(path) = &args.tenants {
        // The names are what rows are checked against; a stand-in for each secret variable
        // lets an admin validate without the secrets (the run checks them).
        let base = crate::config::Config::new(&args.input, &args.input);
        let stand_in = |_: &str| Some("validate".to_string());
        match crate::tenants::load_with(path, &base, &stand_in) {
            Ok(tenants) => defaults.tenants = Some(tenants.into_iter().map(|t| t.key).collect()),
            Err(e) => return fail(e),
        }
    }
    match InputReader::open(&args.input, args.defaults.delimiter, defaults) {
        Ok(reader) => report_rows(&args.input, reader, |_| {}),
        Err(e) => fail(e),
    }
}

/// Read every row with the run's own reader, print each invalid one and the counts, hand each
/// valid one to `on_job`. Exit 0 if all rows are valid, 1 if not, 2 if the file breaks off.
fn report_rows(
    input: &std::path::Path,
    reader: InputReader,
    mut on_job: impl FnMut(&crate::input::Job),
) -> u8 {
    if !reader.unknown_columns().is_empty() {
        note!(
            "autopilot-bulk: warning: ignoring columns this run does not read: {}",
            reader.unknown_columns().join(", ")
        );
    }
    let (mut valid, mut invalid) = (0u64, 0u64);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for item in reader {
        match item {
            Ok(Parsed::Job(job)) => {
                valid += 1;
                on_job(&job);
            }
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
        input.display(),
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
        Err(code) => return code,
    };
    match rt.block_on(crate::emulator::serve_foreground(config, args.port)) {
        Ok(()) => 0,
        Err(e) => fail(format!("{e:#}")),
    }
}
