//! The emulator's shared state: issued tokens, stored assignments, throttle windows, seeded
//! generators and counters, behind one mutex. Nothing awaits while holding it, and the work
//! done under it is tiny, so one lock is simpler than many and never the bottleneck.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use serde_json::{Map, Value};

use axum::http::StatusCode;

use super::directory::{Assigned, Directory};
use super::envelope::{Answer, Errors};
use super::faults::Faults;
use super::throttle::Throttle;
use super::validate::is_guid;
use super::{Assignments, EmulatorConfig, Stats};

/// An access token the emulator issued.
#[derive(Debug, Clone)]
pub(crate) struct IssuedToken {
    pub tenant: String,
    pub expires: Instant,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub tokens: HashMap<String, IssuedToken>,
    /// Lowercase device id → its stored assignments, in creation order.
    pub store: HashMap<String, Vec<Value>>,
    /// Lowercase device id → when its first assignment was stored (its profile status).
    pub first_assigned: HashMap<String, Assigned>,
    /// Lowercase device id → the properties `updateDeviceProperties` set (`groupTag`, …),
    /// shown over the defaults by the listing and the single GET.
    pub updated: HashMap<String, Map<String, Value>>,
    pub throttle: Throttle,
    pub faults: Faults,
    /// Counters; `duplicate_devices` is derived from `store` when a snapshot is taken.
    pub stats: Stats,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub config: EmulatorConfig,
    pub addr: SocketAddr,
    /// DER of `config.client_certificate`, loaded and parsed once at start.
    pub certificate: Option<Vec<u8>>,
    /// The tenant's identities, built once from `config.identities` and `config.devices`.
    pub directory: Directory,
    inner: Mutex<Inner>,
}

impl Shared {
    pub(crate) fn new(
        config: EmulatorConfig,
        addr: SocketAddr,
        certificate: Option<Vec<u8>>,
    ) -> Self {
        let inner = Inner {
            tokens: HashMap::new(),
            store: HashMap::new(),
            first_assigned: HashMap::new(),
            updated: HashMap::new(),
            throttle: Throttle::new(config.limit, config.violation_grace),
            faults: Faults::new(
                config.seed,
                config.fault_503,
                config.fault_504,
                config.fault_drop,
                config.latency,
            ),
            stats: Stats::default(),
        };
        let directory = Directory::new(&config.identities, config.devices.as_ref());
        Self {
            config,
            addr,
            certificate,
            directory,
            inner: Mutex::new(inner),
        }
    }

    /// The state. A panic while holding the lock cannot leave it half-updated in a way that
    /// matters more than losing the emulator, so a poisoned lock is simply taken over.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a device id (lowercase) exists for the assignment routes: any id without a
    /// `devices` list (the permissive default), else the listed ones and the identities.
    pub(crate) fn knows(&self, device: &str) -> bool {
        self.config
            .devices
            .as_ref()
            .is_none_or(|d| d.contains(device) || self.directory.get(device).is_some())
    }

    /// The device key of an identity route, lowercased: 400 when it is not a GUID, 404 when
    /// the tenant does not know it, as Graph answers.
    pub(crate) fn device_key(&self, errors: &Errors<'_>, device: &str) -> Result<String, Answer> {
        if !is_guid(device) {
            return Err(errors.answer(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!(
                    "Invalid key: '{device}' is not a valid windowsAutopilotDeviceIdentity id \
                     (a GUID)."
                ),
            ));
        }
        let device = device.to_ascii_lowercase();
        if !self.knows(&device) {
            return Err(errors.answer(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                &format!("The windowsAutopilotDeviceIdentity '{device}' was not found."),
            ));
        }
        Ok(device)
    }

    pub(crate) fn stats(&self) -> Stats {
        let inner = self.lock();
        let mut stats = inner.stats.clone();
        stats.duplicate_devices = inner.store.values().filter(|v| v.len() > 1).count() as u64;
        stats.devices_with_assignments =
            inner.store.values().filter(|v| !v.is_empty()).count() as u64;
        stats
    }

    pub(crate) fn assignments(&self) -> Assignments {
        self.lock()
            .store
            .iter()
            .map(|(device, list)| {
                let ids = list
                    .iter()
                    .filter_map(|a| a.get("id").and_then(Value::as_str).map(str::to_string))
                    .collect();
                (device.clone(), ids)
            })
            .collect()
    }
}

impl Inner {
    /// Count one answer to a top-level request (the `$batch` envelope counts as its own 200).
    pub(crate) fn count_status(&mut self, status: u16) {
        *self
            .stats
            .requests_by_status
            .entry(status.to_string())
            .or_default() += 1;
    }

    /// Count one inner answer of a `$batch`.
    pub(crate) fn count_inner_status(&mut self, status: u16) {
        *self
            .stats
            .inner_requests_by_status
            .entry(status.to_string())
            .or_default() += 1;
    }
}
