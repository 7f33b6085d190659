//! The local Graph emulator: a faithful stand-in for the slice of Microsoft Graph that
//! autopilot-bulk talks to (tokens, Autopilot profile assignments, `$batch`, throttling,
//! faults), built to `GRAPH-FACTS.md`. Users rehearse migrations on it; every test runs on it.
//!
//! PLACEHOLDER: the implementation lands with the emulator work (issue 2).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::RateSpec;

/// How a throttled answer states when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetryAfterMode {
    /// Whole seconds, as Graph documents (`Retry-After: 3`).
    #[default]
    Seconds,
    /// Fractional seconds, as older Graph pages show (`Retry-After: 2.128`).
    Fractional,
    /// An HTTP-date (`Retry-After: Sat, 28 Nov 2026 16:20:51 GMT`).
    Date,
    /// No header at all: Intune's frequent behaviour.
    None,
    /// One of the above, picked per answer.
    Mixed,
}

/// Everything the emulator can be told to do. `Default` is Intune's documented behaviour with
/// no faults.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Sliding-window write limit per tenant (default 100/20s).
    pub limit: RateSpec,
    pub retry_after: RetryAfterMode,
    pub token_ttl: Duration,
    /// When set, only this secret is accepted at the token endpoint.
    pub client_secret: Option<String>,
    /// When set, client assertions must be signed by this certificate's key.
    pub client_certificate: Option<PathBuf>,
    /// When set, only these device ids exist (lowercase GUIDs); others answer 404.
    pub devices: Option<HashSet<String>>,
    pub fault_503: f64,
    /// Retry-After seconds sent with injected 503s (none when `None`).
    pub fault_503_retry_after: Option<u64>,
    pub fault_504: f64,
    /// Store the assignment, then drop the connection without answering.
    pub fault_drop: f64,
    /// Mean of an exponentially distributed delay added to every Graph answer.
    pub latency: Option<Duration>,
    pub seed: u64,
    pub intune_envelope: bool,
    /// Requests arriving this soon after a 429 was sent are taken as already in flight, not
    /// as violations of its Retry-After.
    pub violation_grace: Duration,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            limit: RateSpec::default(),
            retry_after: RetryAfterMode::Seconds,
            token_ttl: Duration::from_secs(3599),
            client_secret: None,
            client_certificate: None,
            devices: None,
            fault_503: 0.0,
            fault_503_retry_after: None,
            fault_504: 0.0,
            fault_drop: 0.0,
            latency: None,
            seed: 0,
            intune_envelope: false,
            violation_grace: Duration::from_millis(250),
        }
    }
}

/// Counters served at `GET /_emulator/stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub requests_by_status: BTreeMap<String, u64>,
    pub assignments_created: u64,
    /// Devices holding more than one assignment.
    pub duplicate_devices: u64,
    pub violations: u64,
    pub token_requests: u64,
    pub expired_tokens: u64,
}

/// Device id → ids of the assignments it holds.
pub type Assignments = BTreeMap<String, Vec<String>>;

/// Read a device list: one id a line; blank lines and `#` comments ignored; ids lowercased.
pub fn read_device_list(path: &std::path::Path) -> std::io::Result<HashSet<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot read device list {}: {e}", path.display()),
        )
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_ascii_lowercase)
        .collect())
}
