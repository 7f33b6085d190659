//! The emulator's shared state: issued tokens, throttle windows, seeded generators, the outage
//! clock, and per
//! tenant the stored assignments and counters, behind one mutex. Nothing awaits while holding
//! it, and the work done under it is tiny, so one lock is simpler than many and never the
//! bottleneck.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use tokio::time::Instant;

use serde_json::{Map, Value};

use axum::http::StatusCode;

use super::directory::{Assigned, Directory, Entry};
use super::entra::DeviceObject;
use super::entra::{Entra, EntraData};
use super::envelope::{Answer, Errors};
use super::faults::Faults;
use super::ids::{identity_of_device_id, identity_of_object};
use super::imports::{Imports, serial_key};
use super::outage::OutageClock;
use super::registered::Registered;
use super::sync_state::SyncState;
use super::throttle::Throttle;
use super::validate::is_guid;
use super::{Assignments, EmulatorConfig, Stats};

/// The data key of the one store every token shares when no `tenants` are configured.
const SHARED_STORE: &str = "";

/// An access token the emulator issued.
#[derive(Debug, Clone)]
pub(crate) struct IssuedToken {
    pub caller: Caller,
    /// `None`: a lifetime too long to count, never expires.
    pub expires: Option<Instant>,
}

/// The tenant a request is made as, in the two roles it plays. Also put in a response's
/// extensions, so that the status count can be attributed to the tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The throttle key: the tenant of the token URL, lowercased, or the configured tenant's
    /// name. Windows have always been per tenant, configured or not.
    pub tenant: String,
    /// Which [`TenantData`] the request reads, writes and counts in: the configured tenant's,
    /// or the one shared store when no `tenants` are configured.
    pub data: String,
}

/// What one tenant's requests stored, and their counters.
#[derive(Debug, Default)]
pub(crate) struct TenantData {
    /// Lowercase device id → its stored assignments, in creation order.
    pub store: HashMap<String, Vec<Value>>,
    /// Lowercase device id → when its first assignment was stored (its profile status).
    pub first_assigned: HashMap<String, Assigned>,
    /// Lowercase device id → the properties `updateDeviceProperties` set (`groupTag`, …),
    /// shown over the defaults by the listing and the single GET.
    pub updated: HashMap<String, Map<String, Value>>,
    /// The tenant's group members and profile assignments.
    pub entra: EntraData,
    /// The tenant's hardware-hash import records.
    pub imports: Imports,
    /// The identities its syncs registered from those records (its own, unlike the
    /// configured ones).
    pub registered: Registered,
    pub sync: SyncState,
    /// Assignments accepted but not stored yet (the `commit_lag`), in acceptance order.
    pub landing: Vec<Landing>,
    /// Counters; `duplicate_devices` and `devices_with_assignments` are derived from `store`
    /// when a snapshot is taken.
    pub stats: Stats,
}

/// An assignment on its way into the store.
#[derive(Debug)]
pub(crate) struct Landing {
    pub due: Instant,
    pub device: String,
    pub stored: Value,
}

impl TenantData {
    /// Store the assignments whose commit lag has passed, as the store would have by `now`.
    pub(crate) fn land_due(&mut self, now: Instant) {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.landing)
            .into_iter()
            .partition(|l| l.due <= now);
        self.landing = later;
        for l in due {
            self.first_assigned
                .entry(l.device.clone())
                .or_insert_with(super::directory::Assigned::now);
            self.store.entry(l.device).or_default().push(l.stored);
        }
    }

    /// Device → how many assignments it holds, those still landing included: what the
    /// tenant will hold once every accepted write is stored.
    fn held(&self) -> HashMap<&str, usize> {
        let mut held: HashMap<&str, usize> = HashMap::new();
        for (device, list) in &self.store {
            *held.entry(device).or_default() += list.len();
        }
        for l in &self.landing {
            *held.entry(&l.device).or_default() += 1;
        }
        held
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let mut stats = self.stats.clone();
        let held = self.held();
        stats.duplicate_devices = held.values().filter(|n| **n > 1).count() as u64;
        stats.devices_with_assignments = held.values().filter(|n| **n > 0).count() as u64;
        stats.serials_imported_twice = self.imports.serials_imported_twice();
        stats
    }

    fn assignments(&self, into: &mut Assignments) {
        let landing = self.landing.iter().map(|l| (&l.device, &l.stored));
        let stored = self
            .store
            .iter()
            .flat_map(|(device, list)| list.iter().map(move |a| (device, a)));
        for (device, a) in stored.chain(landing) {
            if let Some(id) = a.get("id").and_then(Value::as_str) {
                into.entry(device.clone()).or_default().push(id.to_string());
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub tokens: HashMap<String, IssuedToken>,
    pub throttle: Throttle,
    pub faults: Faults,
    /// When the timed outage is (one for the whole emulator).
    pub outage: OutageClock,
    /// Counters of what no tenant can be named for (an unknown token, an unknown tenant at
    /// the token endpoint). Totals add every tenant's to these.
    pub unattributed: Stats,
    /// Data key ([`Caller::data`]) → that tenant's data. Only configured tenants (or the
    /// shared store) ever get an entry, so outside input cannot grow this map.
    pub tenants: BTreeMap<String, TenantData>,
}

impl Inner {
    /// The data of `key` ([`Caller::data`]). Every key is created at start; creating one
    /// here is only a fallback that keeps this total.
    pub(crate) fn data(&mut self, key: &str) -> &mut TenantData {
        self.tenants.entry(key.to_string()).or_default()
    }

    /// The counters of `caller`'s tenant, or the unattributed ones.
    pub(crate) fn stats_of(&mut self, caller: Option<&Caller>) -> &mut Stats {
        match caller {
            Some(c) => &mut self.data(&c.data).stats,
            None => &mut self.unattributed,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub config: EmulatorConfig,
    pub addr: SocketAddr,
    /// DER of `config.client_certificate`, loaded and parsed once at start.
    pub certificate: Option<Vec<u8>>,
    /// The identities, built once from `config.identities` and `config.devices`; every
    /// tenant has the same.
    pub directory: Directory,
    /// The Entra directory as configured (devices, groups, profiles); every tenant starts
    /// from it.
    pub entra: Entra,
    /// `config.tenants` without empty names and case-insensitive repeats (the first spelling
    /// is kept). Empty: any tenant is accepted, and all share one store.
    pub tenants: Vec<String>,
    /// Serial keys of the configured identities: an import of one ends 806.
    pub listed_serials: HashSet<String>,
    /// `config.import_errors` by serial key (the first code given for a serial wins).
    pub import_errors: HashMap<String, u16>,
    inner: Mutex<Inner>,
}

impl Shared {
    /// A configuration the directory cannot be built from (a group or device it names that
    /// does not exist) is an error.
    pub(crate) fn new(
        config: EmulatorConfig,
        addr: SocketAddr,
        certificate: Option<Vec<u8>>,
    ) -> Result<Self, String> {
        let mut tenants: Vec<String> = Vec::new();
        for name in &config.tenants {
            let name = name.trim();
            if !name.is_empty() && !tenants.iter().any(|t| t.eq_ignore_ascii_case(name)) {
                tenants.push(name.to_string());
            }
        }
        let directory = Directory::new(&config.identities, config.devices.as_ref());
        let entra = Entra::new(&config, &directory)?;
        let data = if tenants.is_empty() {
            vec![SHARED_STORE.to_string()]
        } else {
            tenants.clone()
        };
        let (now, wall) = (Instant::now(), std::time::SystemTime::now());
        let inner = Inner {
            tokens: HashMap::new(),
            throttle: Throttle::new(config.limit, config.directory_limit, config.violation_grace),
            faults: Faults::new(
                config.seed,
                config.fault_503,
                config.fault_504,
                config.fault_drop,
                config.latency,
            ),
            outage: OutageClock::new(config.outage),
            unattributed: Stats::default(),
            tenants: data
                .into_iter()
                .map(|key| {
                    let data = TenantData {
                        entra: entra.first_data(),
                        imports: Imports::with_foreign(&config.import_records, now),
                        sync: SyncState::new(&config, now, wall),
                        ..TenantData::default()
                    };
                    (key, data)
                })
                .collect(),
        };
        let listed_serials = directory
            .entries()
            .iter()
            .map(|e| serial_key(&e.serial))
            .collect();
        let mut import_errors = HashMap::new();
        for (serial, code) in &config.import_errors {
            import_errors.entry(serial_key(serial)).or_insert(*code);
        }
        Ok(Self {
            config,
            addr,
            certificate,
            directory,
            entra,
            tenants,
            listed_serials,
            import_errors,
            inner: Mutex::new(inner),
        })
    }

    /// The state. A panic while holding the lock cannot leave it half-updated in a way that
    /// matters more than losing the emulator, so a poisoned lock is simply taken over.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The caller a token for `tenant` (as the token URL names it) acts as; `None` when
    /// tenants are configured and this is none of them (names compare ignoring case, as
    /// Entra ID's do).
    pub(crate) fn caller(&self, tenant: &str) -> Option<Caller> {
        if self.tenants.is_empty() {
            return Some(Caller {
                tenant: tenant.to_ascii_lowercase(),
                data: SHARED_STORE.to_string(),
            });
        }
        self.tenants
            .iter()
            .find(|t| t.eq_ignore_ascii_case(tenant))
            .map(|t| Caller {
                tenant: t.clone(),
                data: t.clone(),
            })
    }

    /// The client secret the token endpoint insists on for `tenant`: its own from
    /// `tenant_secrets` (names compare ignoring case), else `client_secret`.
    pub(crate) fn secret_for(&self, tenant: &str) -> Option<&str> {
        self.config
            .tenant_secrets
            .iter()
            .find(|(t, _)| t.trim().eq_ignore_ascii_case(tenant))
            .map(|(_, s)| s.as_str())
            .or(self.config.client_secret.as_deref())
    }

    /// Whether a device id (lowercase) exists for the assignment routes: any id without a
    /// `devices` list (the permissive default), else the listed ones, the identities and
    /// those the tenant's syncs registered.
    pub(crate) fn knows(&self, data: &TenantData, device: &str) -> bool {
        self.config.devices.as_ref().is_none_or(|d| {
            d.contains(device)
                || self.directory.get(device).is_some()
                || data.registered.get(device).is_some()
        })
    }

    /// The device key of an identity route, lowercased: 400 when it is not a GUID, 404 when
    /// the tenant does not know it, as Graph answers.
    pub(crate) fn device_key(
        &self,
        data: &TenantData,
        errors: &Errors<'_>,
        device: &str,
    ) -> Result<String, Answer> {
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
        if !self.knows(data, &device) {
            return Err(errors.answer(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                &format!("The windowsAutopilotDeviceIdentity '{device}' was not found."),
            ));
        }
        Ok(device)
    }

    // Lookups across the configured directory and the tenant's registered identities.

    /// The tenant's identity with this (lowercase) id: configured or registered.
    pub(crate) fn identity<'a>(&'a self, data: &'a TenantData, id: &str) -> Option<&'a Entry> {
        self.directory.get(id).or_else(|| data.registered.get(id))
    }

    /// The device object with this object id (any case): a registered device's, else the
    /// configured directory's.
    pub(crate) fn device_by_object_id(
        &self,
        data: &TenantData,
        object_id: &str,
    ) -> Option<DeviceObject> {
        identity_of_object(object_id)
            .and_then(|id| data.registered.device(&id))
            .or_else(|| self.entra.device_by_object_id(object_id, &self.directory))
    }

    /// The device object with this `deviceId` (any case), as [`device_by_object_id`].
    pub(crate) fn device_by_device_id(
        &self,
        data: &TenantData,
        device_id: &str,
    ) -> Option<DeviceObject> {
        identity_of_device_id(device_id)
            .and_then(|id| data.registered.device(&id))
            .or_else(|| self.entra.device_by_device_id(device_id, &self.directory))
    }

    /// Every tenant's assignments together (a device id two tenants hold lists both's).
    pub(crate) fn assignments(&self) -> Assignments {
        let mut all = Assignments::new();
        for data in self.lock().tenants.values() {
            data.assignments(&mut all);
        }
        all
    }

    /// One tenant's assignments; `None` for a tenant the emulator does not accept.
    pub(crate) fn tenant_assignments(&self, tenant: &str) -> Option<Assignments> {
        let caller = self.caller(tenant)?;
        let mut all = Assignments::new();
        if let Some(data) = self.lock().tenants.get(&caller.data) {
            data.assignments(&mut all);
        }
        Some(all)
    }
}

impl Stats {
    /// Add `other`'s counters to these (`tenants` aside). Destructured in full so that a new
    /// counter cannot be left out of the totals.
    pub(crate) fn add(&mut self, other: &Stats) {
        let Stats {
            requests_by_status,
            inner_requests_by_status,
            assignments_created,
            assignments_deleted,
            group_tags_set,
            duplicate_devices,
            devices_with_assignments,
            violations,
            throttled,
            write_requests,
            assignment_reads,
            identity_reads,
            batch_requests,
            faults_503,
            faults_504,
            dropped_connections,
            outage_requests,
            token_requests,
            tokens_issued,
            expired_tokens,
            group_writes,
            directory_reads,
            members_added,
            duplicate_member_attempts,
            members_removed,
            profile_requests,
            profile_assignments_created,
            import_requests,
            records_imported,
            import_reads,
            import_records_deleted,
            foreign_records_deleted,
            syncs,
            syncs_refused,
            devices_registered,
            serials_imported_twice,
            tenants: _,
        } = other;
        for (status, n) in requests_by_status {
            *self.requests_by_status.entry(status.clone()).or_default() += n;
        }
        for (status, n) in inner_requests_by_status {
            *self
                .inner_requests_by_status
                .entry(status.clone())
                .or_default() += n;
        }
        self.assignments_created += assignments_created;
        self.assignments_deleted += assignments_deleted;
        self.group_tags_set += group_tags_set;
        self.duplicate_devices += duplicate_devices;
        self.devices_with_assignments += devices_with_assignments;
        self.violations += violations;
        self.throttled += throttled;
        self.write_requests += write_requests;
        self.assignment_reads += assignment_reads;
        self.identity_reads += identity_reads;
        self.batch_requests += batch_requests;
        self.faults_503 += faults_503;
        self.faults_504 += faults_504;
        self.dropped_connections += dropped_connections;
        self.outage_requests += outage_requests;
        self.token_requests += token_requests;
        self.tokens_issued += tokens_issued;
        self.expired_tokens += expired_tokens;
        self.group_writes += group_writes;
        self.directory_reads += directory_reads;
        self.members_added += members_added;
        self.duplicate_member_attempts += duplicate_member_attempts;
        self.members_removed += members_removed;
        self.profile_requests += profile_requests;
        self.profile_assignments_created += profile_assignments_created;
        self.import_requests += import_requests;
        self.records_imported += records_imported;
        self.import_reads += import_reads;
        self.import_records_deleted += import_records_deleted;
        self.foreign_records_deleted += foreign_records_deleted;
        self.syncs += syncs;
        self.syncs_refused += syncs_refused;
        self.devices_registered += devices_registered;
        self.serials_imported_twice += serials_imported_twice;
    }

    /// Count one answer to a top-level request (the `$batch` envelope counts as its own 200).
    pub(crate) fn count_status(&mut self, status: u16) {
        *self
            .requests_by_status
            .entry(status.to_string())
            .or_default() += 1;
    }

    /// Count one inner answer of a `$batch`.
    pub(crate) fn count_inner_status(&mut self, status: u16) {
        *self
            .inner_requests_by_status
            .entry(status.to_string())
            .or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(config: EmulatorConfig) -> Shared {
        Shared::new(config, SocketAddr::from(([127, 0, 0, 1], 1)), None).unwrap()
    }

    #[test]
    fn configured_tenants_are_matched_ignoring_case_and_keep_their_spelling() {
        let s = shared(EmulatorConfig {
            tenants: vec!["Contoso".into(), "contoso".into(), " ".into(), "b".into()],
            client_secret: Some("all".into()),
            tenant_secrets: HashMap::from([("B".to_string(), "own".to_string())]),
            ..EmulatorConfig::default()
        });
        assert_eq!(s.tenants, ["Contoso", "b"]);
        let c = s.caller("CONTOSO").unwrap();
        assert_eq!((c.tenant.as_str(), c.data.as_str()), ("Contoso", "Contoso"));
        assert!(s.caller("northwind").is_none());
        assert_eq!(s.secret_for("b"), Some("own"));
        assert_eq!(s.secret_for("contoso"), Some("all"));
        assert_eq!(
            crate::emulator::sync::stats(&s)
                .tenants
                .keys()
                .collect::<Vec<_>>(),
            ["Contoso", "b"]
        );
    }

    #[test]
    fn without_tenants_every_tenant_shares_one_store_but_not_one_window() {
        let s = shared(EmulatorConfig::default());
        let (a, b) = (s.caller("A").unwrap(), s.caller("b").unwrap());
        assert_eq!((a.tenant.as_str(), b.tenant.as_str()), ("a", "b"));
        assert_eq!(a.data, b.data);
        assert!(crate::emulator::sync::stats(&s).tenants.is_empty());
    }
}
