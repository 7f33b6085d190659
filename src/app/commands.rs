//! The bodies of the commands beside `run`: `status`, `undo`, `preflight`, `plan`, `import` and
//! `profiles`, each turning its flags into a configuration, running it and mapping the outcome
//! to an exit code.

use std::io::Write;

use tokio_util::sync::CancellationToken;

use super::{
    EXIT_USAGE, cancel_on_signal, fail, resume_command, runtime, start_emulator, write_summary_json,
};
use crate::cli::{PreflightArgs, StatusArgs};

/// `status`: the counts on stdout, how it ended on stderr. The first signal stops it (the status
/// file keeps the last complete reading): nothing is in flight that needs finishing.
pub(super) fn status_command(args: &StatusArgs) -> u8 {
    let config = match args.to_config() {
        Ok(c) => c,
        Err(e) => return fail(format!("{e:#}")),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let watch = config.watch;
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            crate::halt::signal().await;
            stop.cancel();
        });
        let report = match crate::status::status(config, shutdown).await {
            Ok(report) => report,
            Err(e) => return fail(e),
        };
        if report.readings > 0 {
            let _ = write!(std::io::stdout(), "{}", report.render());
        }
        if let Some(reason) = &report.aborted {
            note!("autopilot-bulk: error: aborted: {reason}");
        } else if args.quiet {
            // How it ended is the exit code's to say (-q: errors only).
        } else if report.interrupted {
            note!("autopilot-bulk: stopped; the status file holds the last complete reading");
        } else if report.rows == 0 {
            note!("autopilot-bulk: the results file reports no created or existing rows: nothing to read");
        } else if report.timed_out {
            let timeout = watch.map(|w| w.timeout).unwrap_or_default();
            note!(
                "autopilot-bulk: timed out after {}: {} of {} rows not assigned",
                humantime::format_duration(timeout),
                report.rows - report.assigned,
                report.rows
            );
        }
        report.exit_code()
    })
}

/// `undo`: the undo file, the summary on stderr; exit codes as `run`'s.
pub(super) fn undo_command(args: &crate::cli::UndoArgs) -> u8 {
    let summary_path = args.summary_json.clone();
    let config = match args.to_config() {
        Ok(c) => c,
        Err(e) => {
            let message = format!("{e:#}");
            let json = crate::summary::error_json(&message, EXIT_USAGE);
            write_summary_json(summary_path.as_deref(), &json);
            return fail(message);
        }
    };
    if args.dry_run {
        return undo_dry_run(&config.results);
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        cancel_on_signal(shutdown.clone(), summary_path.clone());
        match crate::undo::undo(config, shutdown).await {
            Ok(summary) => {
                let code = summary.exit_code();
                let json = summary.json(code);
                crate::notes::summary(&summary.render(), "undo finished", json.clone(), code);
                if summary.outcome != crate::undo::UndoOutcome::Completed {
                    note!("  to continue: {}", resume_command());
                }
                write_summary_json(summary_path.as_deref(), &json);
                code
            }
            Err(e) => {
                let message = e.to_string();
                let json = crate::summary::error_json(&message, EXIT_USAGE);
                write_summary_json(summary_path.as_deref(), &json);
                fail(message)
            }
        }
    })
}

/// `import`: the import file, the summary on stderr; exit codes as `run`'s.
pub(super) fn import_command(args: &crate::cli::ImportArgs) -> u8 {
    let summary_path = args.summary_json.clone();
    let refused = |message: String| {
        let json = crate::summary::error_json(&message, EXIT_USAGE);
        write_summary_json(summary_path.as_deref(), &json);
        fail(message)
    };
    // Checked before anything starts, so a bad flag is exit 2 at once.
    let first = match args.to_config(None) {
        Ok(c) => c,
        Err(e) => return refused(format!("{e:#}")),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        cancel_on_signal(shutdown.clone(), summary_path.clone());
        let emulator = if args.emulator {
            let devices = args.emulator_devices.as_deref();
            match start_emulator(Some(&args.input), devices, &first.graph.tenants).await {
                Ok(e) => Some(e),
                Err(message) => return refused(message),
            }
        } else {
            None
        };
        let code = match args.to_config(emulator.as_ref().map(|e| &e.emulator)) {
            Err(e) => refused(format!("{e:#}")),
            Ok(config) => match crate::import::import(config, shutdown).await {
                Ok(summary) => {
                    announce(emulator.as_ref());
                    let code = summary.exit_code();
                    let json = summary.json(code);
                    let text = summary.render();
                    crate::notes::summary(&text, "import finished", json.clone(), code);
                    if summary.outcome != crate::import::ImportOutcome::Completed {
                        note!("  to continue: {}", resume_command());
                    }
                    write_summary_json(summary_path.as_deref(), &json);
                    code
                }
                Err(e) => refused(e.to_string()),
            },
        };
        if let Some(e) = emulator {
            e.emulator.shutdown().await;
        }
        code
    })
}

/// `undo --dry-run`: each row and what would put it back, on stdout; nothing is sent.
fn undo_dry_run(results: &std::path::Path) -> u8 {
    let entries = match crate::undo::plan(results) {
        Ok(entries) => entries,
        Err(e) => return fail(e),
    };
    let mut would = 0;
    for e in &entries {
        let device = crate::output::printable(&e.device_id);
        match (crate::undo::describe(&e.step), &e.step) {
            (Some(request), _) => {
                would += 1;
                out!("row {} {device}: {request}", e.row);
            }
            (None, crate::undo::Step::Skip { reason, .. }) => {
                out!(
                    "row {} {device}: skipped: {}",
                    e.row,
                    crate::output::printable(reason)
                );
            }
            (None, _) => {}
        }
    }
    note!(
        "dry run: {would} of {} rows would be undone; nothing was sent",
        entries.len()
    );
    0
}

/// `preflight`: the report on stdout; exit 0 ready, 1 something would fail, 2 usage or input,
/// 3 authentication failed.
pub(super) fn preflight_command(args: &PreflightArgs) -> u8 {
    // Checked before anything starts, so a bad flag is exit 2 at once.
    let config = match args.to_config(None) {
        Ok(c) => c,
        Err(e) => return fail(format!("{e:#}")),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            crate::halt::signal().await;
            stop.cancel();
        });
        let (config, emulator) = if args.emulator {
            let started =
                start_emulator(args.input.as_deref(), args.emulator_devices.as_deref(), &[]).await;
            let e = match started {
                Ok(e) => e,
                Err(message) => return fail(message),
            };
            match args.to_config(Some(&e.emulator)) {
                Ok(c) => (c, Some(e)),
                Err(message) => return fail(format!("{message:#}")),
            }
        } else {
            (config, None)
        };
        let code = match crate::preflight(config, shutdown).await {
            Ok(report) => {
                announce(emulator.as_ref());
                let _ = write!(std::io::stdout(), "{}", report.render());
                report.exit_code()
            }
            Err(e) => fail(e),
        };
        if let Some(e) = emulator {
            e.emulator.shutdown().await;
        }
        code
    })
}

/// `plan`: the counts on stdout, the plan file beside the input; exit codes as `run`'s.
pub(super) fn plan_command(args: &crate::cli::PlanArgs) -> u8 {
    // Checked before anything starts, so a bad flag is exit 2 at once.
    let first = match args.to_config(None) {
        Ok(c) => c,
        Err(e) => return fail(format!("{e:#}")),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        cancel_on_signal(shutdown.clone(), None);
        let emulator = if args.emulator {
            let devices = args.emulator_devices.as_deref();
            match start_emulator(Some(&args.input), devices, &first.tenants).await {
                Ok(e) => Some(e),
                Err(message) => return fail(message),
            }
        } else {
            None
        };
        let code = match args.to_config(emulator.as_ref().map(|e| &e.emulator)) {
            Err(e) => fail(format!("{e:#}")),
            Ok(config) => match crate::run::preview::plan(config, shutdown).await {
                Ok(report) => {
                    announce(emulator.as_ref());
                    let _ = write!(
                        std::io::stdout(),
                        "{}",
                        crate::run::preview::render(&report)
                    );
                    if let Some(reason) = &report.aborted {
                        note!(
                            "autopilot-bulk: error: aborted: {}",
                            crate::output::printable(reason)
                        );
                    }
                    report.exit_code()
                }
                Err(e) => fail(e),
            },
        };
        if let Some(e) = emulator {
            e.emulator.shutdown().await;
        }
        code
    })
}

pub(super) fn profiles_command(args: &crate::cli::ProfilesArgs) -> u8 {
    let (command, target) = args.command();
    if let Err(e) = target.to_config(None) {
        return fail(format!("{e:#}"));
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let emulator = if target.emulator {
            match start_emulator(None, None, &[]).await {
                Ok(e) => Some(e),
                Err(message) => return fail(message),
            }
        } else {
            None
        };
        let config = match target.to_config(emulator.as_ref().map(|e| &e.emulator)) {
            Ok(c) => c,
            Err(e) => return fail(format!("{e:#}")),
        };
        let code = match crate::profiles::profiles(config, command, CancellationToken::new()).await
        {
            Ok(text) => {
                announce(emulator.as_ref());
                let _ = write!(std::io::stdout(), "{text}");
                0
            }
            Err(e) => {
                let code = e.exit_code();
                let _ = fail(e);
                code
            }
        };
        if let Some(e) = emulator {
            e.emulator.shutdown().await;
        }
        code
    })
}

/// Say which in-process emulator a command that got going used (see [`super::InProcess`]).
fn announce(emulator: Option<&super::InProcess>) {
    if let Some(e) = emulator {
        note!("{}", e.banner);
    }
}
