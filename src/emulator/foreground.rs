//! `autopilot-bulk emulate`: the emulator in the foreground, its address on stdout for scripts,
//! its setup on stderr, until a signal stops it.

use std::io::Write as _;

use super::directory::Directory;
use super::{Emulator, EmulatorConfig};

/// `autopilot-bulk emulate`: start, print the URL as the first stdout line (scripts read it),
/// describe the setup on stderr, and serve until Ctrl-C, SIGTERM or SIGHUP.
pub async fn serve_foreground(config: EmulatorConfig, port: u16) -> std::io::Result<()> {
    let description = describe(&config);
    let emulator = Emulator::start_on(config, port).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot start the emulator on 127.0.0.1:{port}: {e}"),
        )
    })?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", emulator.url())?;
        out.flush()?;
    }
    // A closed stderr is no reason to stop serving.
    let _ = writeln!(
        std::io::stderr(),
        "Graph emulator listening\n  graph url:     {}\n  authority url: {}\n  stats:         \
         {}/_emulator/stats\n  {description}\nCtrl-C to stop.",
        emulator.graph_url(),
        emulator.authority_url(),
        emulator.url()
    );
    shutdown_signal().await;
    let _ = writeln!(
        std::io::stderr(),
        "stopping; final stats: {}",
        serde_json::to_string(&emulator.stats()).unwrap_or_default()
    );
    emulator.shutdown().await;
    Ok(())
}

fn describe(config: &EmulatorConfig) -> String {
    let mut parts = vec![
        format!(
            "limit {} per tenant (directory {})",
            config.limit, config.directory_limit
        ),
        format!("retry-after {:?}", config.retry_after).to_lowercase(),
        format!("token ttl {}", humantime::format_duration(config.token_ttl)),
    ];
    if let [first, .., last] = config.tenants.as_slice() {
        let named = if config.tenants.len() <= 5 {
            config.tenants.join(", ")
        } else {
            format!("{first} … {last}")
        };
        parts.push(format!(
            "{} tenants ({named}), each with its own windows, assignments and counters",
            config.tenants.len()
        ));
    } else if let [only] = config.tenants.as_slice() {
        parts.push(format!("only tenant {only}"));
    }
    if !config.tenant_secrets.is_empty() {
        let mut names: Vec<&str> = config.tenant_secrets.keys().map(String::as_str).collect();
        names.sort_unstable();
        parts.push(format!("own client secrets for {}", names.join(", ")));
    }
    if let Some(cert) = &config.client_certificate {
        parts.push(format!("assertions verified against {}", cert.display()));
    }
    if let Some(devices) = &config.devices {
        parts.push(format!("{} known devices", devices.len()));
    }
    let listed = Directory::new(&config.identities, config.devices.as_ref()).len();
    parts.push(format!(
        "{listed} listed identities, pages of {}, profiles assigned {} after the first \
         assignment",
        config.page_size.max(1),
        humantime::format_duration(config.assign_delay)
    ));
    if config.select_fails {
        parts.push("any $select answered 500".into());
    }
    if config.repeat_next_link {
        parts.push("listing page 2 repeats page 1's next link".into());
    }
    for (name, p) in [
        ("503", config.fault_503),
        ("504", config.fault_504),
        ("drop", config.fault_drop),
    ] {
        if p > 0.0 {
            parts.push(format!("fault {name} {p}"));
        }
    }
    if let Some(latency) = config.latency {
        parts.push(format!("latency {}", humantime::format_duration(latency)));
    }
    if let Some(outage) = config.outage.filter(|o| !o.length.is_zero()) {
        parts.push(format!(
            "every Graph request answered 503 for {} from {} after the first assignment POST or member write{}",
            humantime::format_duration(outage.length),
            humantime::format_duration(outage.at),
            match outage.retry_after {
                Some(secs) => format!(" (Retry-After {secs})"),
                None => String::new(),
            }
        ));
    }
    if config.deny_permission {
        parts.push("every assignment request answered 403".into());
    }
    if config.no_odata_route {
        parts.push("the assignment route answered 400 No OData route".into());
    }
    if let Some(roles) = &config.token_roles {
        parts.push(format!("token roles [{}]", roles.join(", ")));
    }
    parts.push(directory(config));
    parts.push(format!("seed {}", config.seed));
    parts.join(", ")
}

/// The first Ctrl-C, SIGTERM or SIGHUP (a closed terminal, a scheduler stopping the job). The
/// emulator's own, so that it depends on nothing of the client's.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    }
    #[cfg(windows)]
    {
        // Ctrl-Break as well: what a console's owner (or a task scheduler's stop) may send.
        let Ok(mut brk) = tokio::signal::windows::ctrl_break() else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = brk.recv() => {}
        }
    }
    #[cfg(not(any(unix, windows)))]
    let _ = tokio::signal::ctrl_c().await;
}

/// The Entra directory's setup, in one part of the description.
fn directory(config: &EmulatorConfig) -> String {
    let groups = if config.groups.is_empty() {
        "any GUID an assigned group".to_string()
    } else {
        let dynamic = config.groups.iter().filter(|g| g.dynamic).count();
        format!("{} groups ({dynamic} dynamic)", config.groups.len())
    };
    let profiles = if config.profiles.is_empty() {
        "any GUID a profile".to_string()
    } else {
        format!("{} profiles", config.profiles.len())
    };
    format!(
        "directory: {groups}, {} first members, {} identities not in it, {} without a device          id, pages of {}; {profiles}",
        config.members.len(),
        config.not_in_directory.len(),
        config.no_device_id.len(),
        config.directory_page_size.max(1)
    )
}
