//! The local Graph emulator: a faithful stand-in for the slice of Microsoft Graph that
//! autopilot-bulk talks to (tokens, Autopilot profile assignments, `$batch`, throttling,
//! faults). Users rehearse migrations on it; every test runs on it.
//!
//! Self-contained: nothing here uses the rest of the crate, so the judge shares no code with
//! the client it judges. It keeps time on tokio's clock (`tokio::time::Instant`), so a test
//! with paused time can advance through throttle windows, outages and token lifetimes.
//!
//! Layout: `args` (the `emulate` command line), `foreground` (serving it until a signal),
//! `limit` (the `COUNT/DURATION` windows), `server` (accept loop, router, headers), `conn`
//! (the handle a handler drops its connection with), `tokens` (token endpoint, bearer check),
//! `dispatch` (every `/beta` and `/v1.0` request: bearer, then batch or single), `batch` (the
//! `$batch` envelope), `routes` (which resource a path and method name, and its throttle
//! bucket), `graph` (one request's pipeline), `assignments` (the seed's route), `properties`
//! (`updateDeviceProperties`), `identities` (the identity listing and reads), `odata` (their
//! query options), `directory` (the tenant's identities and their status), `entra` (the Entra
//! directory as configured: device objects, groups, profiles), `ids` (how an identity's Entra
//! ids derive from its id), `devices`, `groups` and `members` (Entra ID's device, group and
//! member routes), `dirquery` (their query options and paging), `profiles` (deployment
//! profiles and their group assignments), `validate` (body rules), `throttle` (windows per
//! service and Retry-After), `faults` (seeded faults and latency), `outage` (the timed
//! whole-service outage), `envelope` (answer shapes), `state` (shared state, the tenants'
//! stores and counters), `records` (the hardware-hash import routes), `imports` (import
//! records and their processing), `sync` (the Autopilot sync that registers them) and
//! `registered` (the identities a tenant's syncs registered, its own).
//!
//! The Entra directory (for `run --action group`): every identity lists an `azureAdDeviceId`
//! and has a directory device object (see [`azure_ad_device_id`] and [`directory_object_id`]
//! for the ids), unless configured out of the directory ([`EmulatorConfig::not_in_directory`],
//! [`EmulatorConfig::no_device_id`]). Groups ([`EmulatorConfig::groups`]) take members by
//! `PATCH /groups/{id}` (`members@odata.bind`, at most 20, all or nothing) or one `$ref` at a
//! time; deployment profiles ([`EmulatorConfig::profiles`]) are assigned to groups. Directory
//! requests spend their own throttle windows ([`EmulatorConfig::directory_limit`]), never
//! Intune's, and are served under `/v1.0` as under `/beta`.

mod args;
mod assignments;
mod batch;
mod conn;
mod devices;
mod directory;
mod dirquery;
mod dispatch;
mod entra;
mod envelope;
mod faults;
mod foreground;
mod graph;
mod groups;
mod identities;
mod ids;
mod imports;
mod limit;
mod members;
mod odata;
mod outage;
mod profiles;
mod properties;
mod records;
mod registered;
mod routes;
mod server;
mod state;
mod sync;
mod sync_state;
mod throttle;
mod tokens;
mod validate;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use args::EmulateArgs;
pub use entra::{Group, Profile, ProfileTarget};
pub use foreground::serve_foreground;
pub use ids::{azure_ad_device_id, directory_object_id};
pub use limit::{Limit, LimitError};
pub use outage::Outage;
use state::Shared;

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
    pub limit: Limit,
    pub retry_after: RetryAfterMode,
    pub token_ttl: Duration,
    /// When set, only this secret is accepted at the token endpoint (of a tenant without its
    /// own in `tenant_secrets`).
    pub client_secret: Option<String>,
    /// The customer tenants one emulator stands in for, so that a multi-tenant run can be
    /// rehearsed: each has its own throttle windows, assignments, group tags, profile status
    /// and counters (`Stats::tenants`); the identities (`devices`, `identities`) are the same
    /// in each. The token endpoint answers any other tenant 400 AADSTS90002, as Entra ID
    /// does. Names compare ignoring ASCII case; empty names and repeats are ignored.
    /// Empty: any tenant is accepted and all share one store and one set of counters (the
    /// throttle windows are still per tenant of the token URL).
    pub tenants: Vec<String>,
    /// Tenant name (ignoring case) → the only client secret its token endpoint accepts, so
    /// that one tenant can be given a wrong secret (401 AADSTS7000215 for it alone). A tenant
    /// not named here uses `client_secret`.
    pub tenant_secrets: HashMap<String, String>,
    /// When set, client assertions must be signed by this certificate's key.
    pub client_certificate: Option<PathBuf>,
    /// When set, only these device ids (lowercase GUIDs) and the `identities` exist; others
    /// answer 404. Those not in `identities` are listed too, sorted by id, with an invented
    /// serial (`SN` and the id's first 8 hex digits in upper case). When unset, any id may
    /// be assigned (only `identities` are listed).
    pub devices: Option<HashSet<String>>,
    /// The tenant's identities as (device id, serial number), listed in this order before the
    /// other `devices`. Two ids may share a serial (an ambiguous serial).
    pub identities: Vec<(String, String)>,
    /// Most identities one listing page holds, whatever `$top` asks (Graph's cap).
    pub page_size: usize,
    /// Answer any `$select` on the identity routes 500, as Graph has been seen to.
    pub select_fails: bool,
    /// Page 2 of the identity listing gives page 1's `@odata.nextLink` again: a paging loop.
    pub repeat_next_link: bool,
    /// How long a device's profile status stays `pending` after its first assignment before
    /// it turns `assignedInSync`. Default 5 s, so polling clients meet `pending`; tests that
    /// want the end state set zero.
    pub assign_delay: Duration,
    pub fault_503: f64,
    /// Retry-After seconds sent with injected 503s (none when `None`).
    pub fault_503_retry_after: Option<u64>,
    pub fault_504: f64,
    /// Store the assignment, then drop the connection without answering.
    pub fault_drop: f64,
    /// Mean of an exponentially distributed delay added to every Graph answer.
    pub latency: Option<Duration>,
    /// Every Graph request answered 503 for a stretch of time (see [`Outage`]); none by
    /// default.
    pub outage: Option<Outage>,
    pub seed: u64,
    pub intune_envelope: bool,
    /// Requests arriving this soon after a 429 was sent are taken as already in flight, not
    /// as violations of its Retry-After.
    pub violation_grace: Duration,
    /// Answer every assignment request 403 `Forbidden`, as Graph does when the app lacks
    /// `DeviceManagementServiceConfig.ReadWrite.All` (tests the client's circuit breaker).
    pub deny_permission: bool,
    /// Answer the assignment route (POST and GET, also inside `$batch`) 400 "No OData route
    /// exists…", as Graph has been reported to in production: rehearses a tenant where the
    /// route `run` needs is not served.
    pub no_odata_route: bool,
    /// An assignment POST is stored (visible to reads and listings) only this long after it
    /// was accepted, and answered then: Graph is not read-your-writes, so a read sent while
    /// another client's POST is in flight may miss it. `None` (the default): at once.
    pub commit_lag: Option<Duration>,
    /// Every page of the identity listing after the first is answered this much later: a
    /// large tenant's listing is slow, and a run reads it beside its rows. `None`: at once.
    pub listing_delay: Option<Duration>,
    /// The `roles` claim of issued tokens; `None`: `DeviceManagementServiceConfig.ReadWrite.All`,
    /// `GroupMember.ReadWrite.All` and `Device.Read.All`.
    /// Rehearses an app registration without the permission (the route itself still answers).
    pub token_roles: Option<Vec<String>>,
    /// The directory's (Entra ID's identity-and-access service's) write limit per tenant
    /// (default 3000/150s): group member writes (PATCH, POST and DELETE on `/groups`) spend
    /// it, never Intune's `limit`; directory reads have ten times the room, also apart.
    pub directory_limit: Limit,
    /// Most objects one directory page (`/devices`, `/groups`, members) holds, whatever
    /// `$top` asks (Graph's default page is 100; `$top` may ask up to 999).
    pub directory_page_size: usize,
    /// The Entra security groups. Empty: any GUID names an existing assigned group (so that
    /// `run --emulator --action group` works out of the box); once any are given, others
    /// answer 404. Ids are GUIDs, compared ignoring case; names may repeat.
    pub groups: Vec<Group>,
    /// Members every tenant's groups start with, as (group id, device): the device by
    /// identity id or serial number (every identity with that serial).
    pub members: Vec<(String, String)>,
    /// Identities (by id or serial) that list an `azureAdDeviceId` but have no directory
    /// device: stale or deleted in Entra ID.
    pub not_in_directory: Vec<String>,
    /// Identities (by id or serial) that list an empty `azureAdDeviceId`, and so have no
    /// directory device either.
    pub no_device_id: Vec<String>,
    /// Autopilot deployment profiles with their first assignments. Empty: any GUID names a
    /// profile (with none assigned at start).
    pub profiles: Vec<Profile>,
    /// Most records one hardware-hash import call takes (Intune's documented batch is 500).
    pub import_batch_limit: usize,
    /// How long an import record stays `pending` before it is processed (default 1 s).
    pub import_delay: Duration,
    /// Serial → the error code its import records end with (806, 808 (left at `unknown`), or
    /// any other), to rehearse the failures a real tenant gives. Serials compare ignoring case.
    pub import_errors: Vec<(String, u16)>,
    /// Import records of another run, present in every tenant from the start (serial, state):
    /// a client must leave them alone (`foreign_records_deleted`).
    pub import_records: Vec<(String, ImportRecordState)>,
    /// Least time between two accepted Autopilot syncs (Intune: 10 minutes).
    pub sync_interval: Duration,
    /// How long an accepted sync runs before it registers the completed records.
    pub sync_duration: Duration,
    /// A sync already happened this long before start, so that a sync right away may meet
    /// the interval's 429.
    pub last_sync_ago: Option<Duration>,
}

/// The state an `EmulatorConfig::import_records` record starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImportRecordState {
    /// Processed: its device registers at the next sync.
    #[default]
    Complete,
    /// Refused with 806 `ZtdDeviceAlreadyAssigned`.
    Error,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            limit: Limit::default(),
            retry_after: RetryAfterMode::Seconds,
            token_ttl: Duration::from_secs(3599),
            client_secret: None,
            tenants: Vec::new(),
            tenant_secrets: HashMap::new(),
            client_certificate: None,
            devices: None,
            identities: Vec::new(),
            page_size: 100,
            select_fails: false,
            repeat_next_link: false,
            assign_delay: Duration::from_secs(5),
            fault_503: 0.0,
            fault_503_retry_after: None,
            fault_504: 0.0,
            fault_drop: 0.0,
            latency: None,
            outage: None,
            seed: 0,
            intune_envelope: false,
            violation_grace: Duration::from_millis(250),
            deny_permission: false,
            no_odata_route: false,
            commit_lag: None,
            listing_delay: None,
            token_roles: None,
            directory_limit: Limit::directory(),
            directory_page_size: 100,
            groups: Vec::new(),
            members: Vec::new(),
            not_in_directory: Vec::new(),
            no_device_id: Vec::new(),
            profiles: Vec::new(),
            import_batch_limit: 500,
            import_delay: Duration::from_secs(1),
            import_errors: Vec::new(),
            import_records: Vec::new(),
            sync_interval: Duration::from_secs(600),
            sync_duration: Duration::from_secs(2),
            last_sync_ago: None,
        }
    }
}

/// Counters served at `GET /_emulator/stats`.
///
/// "Top-level" answers are answers to HTTP requests (token endpoint and Graph routes; the
/// emulator's own `/_emulator` routes are not counted). A `$batch` counts once there, as its
/// 200; its inner answers are counted in `inner_requests_by_status`. A dropped connection has
/// no answer: it counts in `dropped_connections` only.
///
/// Every field is a total over all tenants; with `EmulatorConfig::tenants` set, `tenants`
/// holds each tenant's own counters. A request no tenant can be named for (a token the
/// emulator did not issue, an unknown tenant at the token endpoint) counts in the totals only.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Stats {
    /// Top-level answers by status code (`"201"`, `"429"`, ...).
    pub requests_by_status: BTreeMap<String, u64>,
    /// Inner `$batch` answers by status code.
    pub inner_requests_by_status: BTreeMap<String, u64>,
    pub assignments_created: u64,
    /// Assignments deleted (`DELETE …/deploymentProfile/assignments/{id}` answered 204).
    pub assignments_deleted: u64,
    /// `updateDeviceProperties` requests that set a `groupTag` (answered 204).
    pub group_tags_set: u64,
    /// Devices holding more than one assignment.
    pub duplicate_devices: u64,
    /// Devices holding at least one assignment.
    pub devices_with_assignments: u64,
    /// Write requests that came back before a sent Retry-After had passed (beyond the
    /// in-flight grace). Each was answered 429 again.
    pub violations: u64,
    /// 429 answers of the throttle, top-level and inner (not a sync's 429: `syncs_refused`).
    pub throttled: u64,
    /// Intune writes (assignment POSTs and DELETEs, `updateDeviceProperties`) that reached the
    /// throttle (inner batch requests each count; 429s too).
    pub write_requests: u64,
    /// Assignment GETs (reconciling reads) that reached the throttle.
    pub assignment_reads: u64,
    /// Identity listing pages and single identity GETs that reached the throttle.
    pub identity_reads: u64,
    /// `$batch` envelopes received with a valid token (outside an outage: an envelope refused
    /// by one counts in `outage_requests` only).
    pub batch_requests: u64,
    /// Injected 503s.
    pub faults_503: u64,
    /// Injected 504s.
    pub faults_504: u64,
    /// Connections dropped after executing a request (the `fault_drop` fault).
    pub dropped_connections: u64,
    /// Graph requests answered 503 by the timed outage ([`EmulatorConfig::outage`]), top-level
    /// and inner: not executed, not counted by the throttle (nor in `write_requests` and the
    /// read counters), no fault drawn for them.
    pub outage_requests: u64,
    pub token_requests: u64,
    pub tokens_issued: u64,
    /// Graph requests that presented an expired token.
    pub expired_tokens: u64,
    /// Group member writes (`PATCH /groups/{id}` binds, `POST …/members/$ref`) that reached
    /// the directory's throttle (429s too).
    pub group_writes: u64,
    /// Directory reads (`/devices`, `/groups`, members) that reached the directory's throttle.
    pub directory_reads: u64,
    /// Members added by those writes (a refused write adds none).
    pub members_added: u64,
    /// References in member writes that were already members (each refused its whole write).
    pub duplicate_member_attempts: u64,
    /// Members removed (`DELETE …/members/{id}/$ref` answered 204).
    pub members_removed: u64,
    /// Deployment profile requests (reads and assignment POSTs) that reached the throttle.
    pub profile_requests: u64,
    /// Deployment profile assignments created (`POST …/windowsAutopilotDeploymentProfiles/{id}/assignments`).
    pub profile_assignments_created: u64,
    /// Hardware-hash import calls (the `import` action and the single-record POST) that
    /// reached the throttle (429s too).
    pub import_requests: u64,
    /// Import records those calls stored.
    pub records_imported: u64,
    /// Import record reads (listing pages, single GETs) that reached the throttle.
    pub import_reads: u64,
    /// Import records deleted (answered 204), `foreign_records_deleted` among them.
    pub import_records_deleted: u64,
    /// Deletes of records another run left ([`EmulatorConfig::import_records`]): a client
    /// should never make one.
    pub foreign_records_deleted: u64,
    /// Autopilot syncs accepted (204).
    pub syncs: u64,
    /// Autopilot syncs refused: 409 (one running) and 429 (within the interval). Those 429s
    /// are the sync's own rule, not the throttle's: not in `throttled` nor `violations`.
    pub syncs_refused: u64,
    /// Identities that syncs registered from completed import records.
    pub devices_registered: u64,
    /// Serials more than one record was created for through the import routes (derived when
    /// a snapshot is taken).
    pub serials_imported_twice: u64,
    /// Configured tenant (as `EmulatorConfig::tenants` spells it) → its own counters, with the
    /// same meanings (its `tenants` is empty). Every configured tenant is listed, from the
    /// start. Absent from the JSON when no tenants are configured, so that the single-tenant
    /// document is unchanged.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tenants: BTreeMap<String, Stats>,
}

/// Device id → ids of the assignments it holds.
pub type Assignments = BTreeMap<String, Vec<String>>;

/// Read a device file: one device a line, `id`, `id,serial` or `id serial` (the serial is the
/// rest of the line); blank lines and `#` comments ignored; ids lowercased; a bare id gets the
/// invented serial (`SN` and its first 8 hex digits in upper case). In file order.
pub fn read_device_identities(path: &std::path::Path) -> std::io::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot read device list {}: {e}", path.display()),
        )
    })?;
    Ok(text
        .lines()
        .filter_map(directory::parse_device_line)
        .collect())
}

/// The ids of a device file (see [`read_device_identities`]), without their serials.
pub fn read_device_list(path: &std::path::Path) -> std::io::Result<HashSet<String>> {
    Ok(read_device_identities(path)?
        .into_iter()
        .map(|(id, _)| id)
        .collect())
}

/// A running emulator. Dropping it stops the server too; [`Emulator::shutdown`] also waits
/// for the server task to end.
#[derive(Debug)]
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Bind 127.0.0.1 on any free port and serve in the background (a tokio task).
    pub async fn start(config: EmulatorConfig) -> std::io::Result<Emulator> {
        Self::start_on(config, 0).await
    }

    /// Same on a given port (0 = any). Loopback only: the emulator is for rehearsals and
    /// tests, never for the network.
    /// A `client_certificate` that cannot be read or parsed, and a directory setup naming a
    /// group or device that does not exist, are `InvalidInput` errors.
    pub async fn start_on(config: EmulatorConfig, port: u16) -> std::io::Result<Emulator> {
        let certificate = config
            .client_certificate
            .as_deref()
            .map(tokens::load_certificate)
            .transpose()?;
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
        let addr = listener.local_addr()?;
        let shared = Shared::new(config, addr, certificate)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let shared = Arc::new(shared);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(server::serve(
            listener,
            server::router(shared.clone()),
            cancel.clone(),
        ));
        Ok(Emulator {
            addr,
            shared,
            cancel,
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graph base including the version: `{url}/beta`.
    pub fn graph_url(&self) -> String {
        format!("{}/beta", self.url())
    }

    /// Token authority: `{url}` (token path `/{tenant}/oauth2/v2.0/token`).
    pub fn authority_url(&self) -> String {
        self.url()
    }

    /// A snapshot of the counters, the same data as `GET /_emulator/stats`.
    pub fn stats(&self) -> Stats {
        sync::stats(&self.shared)
    }

    /// Device id (lowercase) → ids of its assignments, as `GET /_emulator/assignments`. With
    /// several tenants, all of theirs together.
    pub fn assignments(&self) -> Assignments {
        self.shared.assignments()
    }

    /// One tenant's assignments, as `GET /_emulator/assignments?tenant=NAME` (the name
    /// compared ignoring case). `None` for a tenant the emulator does not accept; without
    /// configured tenants every name gives the one shared store.
    pub fn tenant_assignments(&self, tenant: &str) -> Option<Assignments> {
        self.shared.tenant_assignments(tenant)
    }

    /// The tenant's import records that are not deleted, as (serial, id,
    /// `deviceImportStatus`), in creation order (those of `import_records` first). `None`:
    /// every tenant's, tenant by tenant; a tenant the emulator does not accept has none.
    pub fn import_records(&self, tenant: Option<&str>) -> Vec<(String, String, String)> {
        sync::import_records(&self.shared, tenant)
    }

    /// Stop accepting, close open (also keep-alive) connections, and wait for the server task.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
