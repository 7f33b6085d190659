//! The `autopilot-bulk emulate` command line: every flag, its default and meaning, and its
//! conversion into an [`EmulatorConfig`]. Part of the emulator so that the emulator is whole
//! on its own; the crate's command line only names it.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{
    EmulatorConfig, Group, ImportRecordState, Limit, Outage, Profile, ProfileTarget,
    RetryAfterMode, read_device_identities,
};

#[derive(Debug, Args)]
pub struct EmulateArgs {
    /// Port on 127.0.0.1 (0 = any free port). The URL is the first line on stdout.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Sliding-window write limit per tenant.
    #[arg(long, default_value = "100/20s", value_name = "COUNT/DURATION")]
    pub limit: Limit,
    /// How 429 answers state Retry-After.
    #[arg(long, value_enum, default_value_t = RetryAfterMode::Seconds)]
    pub retry_after: RetryAfterMode,
    /// Lifetime of issued access tokens.
    #[arg(long, default_value = "3599s", value_parser = humantime::parse_duration)]
    pub token_ttl: Duration,
    /// Accept only this client secret at the token endpoint (any, when absent).
    #[arg(long, value_name = "VALUE")]
    pub client_secret: Option<String>,
    /// Stand in for this customer tenant (repeatable): each tenant given has its own throttle
    /// windows, assignments, group tags and counters (`tenants` in the stats); the token
    /// endpoint answers any other tenant 400 AADSTS90002. Names compare ignoring case.
    /// Without --tenant or --tenants, any tenant is accepted and all share one store.
    #[arg(long = "tenant", value_name = "ID", value_parser = parse_tenant_name, conflicts_with = "tenants")]
    pub tenant: Vec<String>,
    /// Stand in for N customer tenants named tenant-1 … tenant-N (as --tenant does for each).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub tenants: Option<u32>,
    /// This tenant accepts only this client secret, instead of --client-secret's
    /// (repeatable), e.g. to give one tenant a wrong secret.
    #[arg(long, value_name = "TENANT=VALUE", value_parser = parse_tenant_secret)]
    pub tenant_secret: Vec<(String, String)>,
    /// Verify client-assertion signatures against this PEM certificate.
    #[arg(long, value_name = "PEM")]
    pub client_certificate: Option<PathBuf>,
    /// Known devices, one a line: `id`, `id,serial` or `id serial` (a bare id gets the serial
    /// SN + its first 8 hex digits); other ids answer 404. Listed in file order.
    #[arg(long, value_name = "FILE")]
    pub devices: Option<PathBuf>,
    /// Most identities one listing page holds, whatever $top asks.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub page_size: u32,
    /// How long a device's profile status stays `pending` after its first assignment.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub assign_delay: Duration,
    /// Answer any $select on the identity routes 500, as Graph has been seen to.
    #[arg(long = "select-500")]
    pub select_500: bool,
    /// Make page 2 of the identity listing repeat page 1's nextLink (a paging loop).
    #[arg(long)]
    pub repeat_next_link: bool,
    /// Probability of answering 503.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    pub fault_503: f64,
    /// Retry-After seconds sent with injected 503s.
    #[arg(long, value_name = "SECONDS")]
    pub fault_503_retry_after: Option<u64>,
    /// Probability of answering 504.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    pub fault_504: f64,
    /// Probability of storing the assignment and then dropping the connection unanswered.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    pub fault_drop: f64,
    /// Mean of an exponential delay added to every Graph answer.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub latency: Option<Duration>,
    /// Start an outage this long after the first assignment POST or group member write
    /// [default: 0s, with --outage-for].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "outage_for")]
    pub outage_at: Option<Duration>,
    /// Outage: answer every Graph request (not the token endpoint) 503 ServiceUnavailable for
    /// this long, without executing or throttle-counting it.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub outage_for: Option<Duration>,
    /// Retry-After seconds sent with the outage's 503s (none when absent).
    #[arg(long, value_name = "SECONDS", requires = "outage_for")]
    pub outage_retry_after: Option<u64>,
    /// Seed for faults and latency, for repeatable runs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Error messages in Intune's JSON-inside-`message` form.
    #[arg(long)]
    pub intune_envelope: bool,
    /// Requests arriving this soon after the first 429 of a throttle episode count as
    /// already in flight, not as Retry-After violations.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    pub violation_grace: Duration,
    /// Answer every assignment request 403 Forbidden, as Graph does when the app lacks
    /// DeviceManagementServiceConfig.ReadWrite.All.
    #[arg(long)]
    pub deny_permission: bool,
    /// Answer the assignment route (POST and GET, also in $batch) 400 "No OData route exists…",
    /// as Graph has been reported to in production.
    #[arg(long)]
    pub no_odata_route: bool,
    /// An assignment POST becomes visible to reads (and is answered) only this long after it
    /// was accepted, as a store that replicates: rehearses a resume racing a killed run's
    /// last requests.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub commit_lag: Option<Duration>,
    /// Answer every identity listing page after the first this much later, as a large
    /// tenant's slow listing: rehearses a run reading it beside its rows.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub listing_delay: Option<Duration>,
    /// The roles claim of issued tokens, comma-separated [default:
    /// DeviceManagementServiceConfig.ReadWrite.All,GroupMember.ReadWrite.All,Device.Read.All];
    /// an empty value: none.
    #[arg(long, value_name = "ROLES", value_delimiter = ',')]
    pub token_roles: Option<Vec<String>>,
    /// Sliding-window write limit per tenant of the directory (Entra ID): group member writes
    /// (PATCH, POST and DELETE on /groups) spend it, never --limit's; directory reads have ten
    /// times the room, also apart.
    #[arg(long, default_value = "3000/150s", value_name = "COUNT/DURATION")]
    pub directory_limit: Limit,
    /// Most objects one directory page (/devices, /groups, a group's members) holds, whatever
    /// $top asks.
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=999))]
    pub directory_page_size: u32,
    /// An assigned (static) Entra security group, ID a GUID (repeatable); NAME defaults to "Group" and
    /// the id's first 8 hex digits, and may repeat. Without --group and --dynamic-group any
    /// GUID is an assigned group, so that `run --emulator --action group` works out of the
    /// box; once one is given, other groups answer 404.
    #[arg(long = "group", value_name = "ID[=NAME]", value_parser = parse_group)]
    pub group: Vec<(String, String)>,
    /// A dynamic security group (repeatable): it refuses member writes 400.
    #[arg(long = "dynamic-group", value_name = "ID[=NAME]", value_parser = parse_group)]
    pub dynamic_group: Vec<(String, String)>,
    /// A member every tenant's GROUP starts with (repeatable); DEVICE is an identity id or a
    /// serial number (every identity with it).
    #[arg(long = "member", value_name = "GROUP=DEVICE", value_parser = parse_member)]
    pub member: Vec<(String, String)>,
    /// An identity (id or serial) that lists its azureAdDeviceId but has no Entra device
    /// object, as a device deleted from Entra ID (repeatable).
    #[arg(long = "not-in-directory", value_name = "DEVICE")]
    pub not_in_directory: Vec<String>,
    /// An identity (id or serial) that lists an empty azureAdDeviceId, and so has no Entra
    /// device object either (repeatable).
    #[arg(long = "no-device-id", value_name = "DEVICE")]
    pub no_device_id: Vec<String>,
    /// An Autopilot deployment profile (repeatable), assigned at start to TARGETS:
    /// comma-separated group ids or `all-devices`. Without any, any GUID is a profile.
    #[arg(long = "profile", value_name = "ID=NAME[:TARGETS]", value_parser = parse_profile)]
    pub profile: Vec<Profile>,
    /// Most records one hardware-hash import call takes; more are refused 400.
    #[arg(long, default_value_t = 500, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub import_batch_limit: u32,
    /// How long an import record stays `pending` before it is processed.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub import_delay: Duration,
    /// Import records of this serial end with this error code (repeatable): 806
    /// ZtdDeviceAlreadyAssigned, 808 (left `unknown`: the device is another tenant's), or any
    /// other code.
    #[arg(long = "import-error", value_name = "SERIAL=CODE", value_parser = parse_import_error)]
    pub import_error: Vec<(String, u16)>,
    /// An import record another run left, present from the start (repeatable); STATE is
    /// `complete` (the default: it registers at the next sync) or `error` (806).
    #[arg(long = "import-record", value_name = "SERIAL[=STATE]", value_parser = parse_import_record)]
    pub import_record: Vec<(String, ImportRecordState)>,
    /// Least time between two accepted Autopilot syncs; one sooner is refused 429 without
    /// Retry-After.
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub sync_interval: Duration,
    /// How long an accepted sync runs (another meanwhile is 409) before it registers the
    /// records complete when it started.
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub sync_duration: Duration,
    /// A sync already happened this long before start (a sync within --sync-interval of it
    /// is refused 429).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub last_sync_ago: Option<Duration>,
}

/// A tenant name the token URL can carry: one path segment, not empty.
fn parse_tenant_name(s: &str) -> Result<String, String> {
    let name = s.trim();
    if name.is_empty() || name.contains(['/', '?', '#']) || name.contains(char::is_whitespace) {
        Err(format!(
            "{s:?} is not a tenant name (one path segment, e.g. a GUID or contoso.onmicrosoft.com)"
        ))
    } else {
        Ok(name.to_string())
    }
}

fn parse_tenant_secret(s: &str) -> Result<(String, String), String> {
    let (tenant, secret) = s
        .split_once('=')
        .ok_or_else(|| "expected TENANT=VALUE".to_string())?;
    Ok((parse_tenant_name(tenant)?, secret.to_string()))
}

fn guid(s: &str, what: &str) -> Result<String, String> {
    let s = s.trim();
    if s.len() == 36 && uuid::Uuid::try_parse(s).is_ok() {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!("{s:?} is not a {what} id (a GUID)"))
    }
}

/// `ID[=NAME]`.
fn parse_group(s: &str) -> Result<(String, String), String> {
    let (id, name) = s.split_once('=').unwrap_or((s, ""));
    let id = guid(id, "group")?;
    let name = match name.trim() {
        "" => Group::default_name(&id),
        name => name.to_string(),
    };
    Ok((id, name))
}

/// `GROUP=DEVICE`.
fn parse_member(s: &str) -> Result<(String, String), String> {
    let (group, device) = s
        .split_once('=')
        .ok_or_else(|| "expected GROUP=DEVICE".to_string())?;
    let device = device.trim();
    if device.is_empty() {
        return Err("expected GROUP=DEVICE, DEVICE an identity id or serial number".into());
    }
    Ok((guid(group, "group")?, device.to_string()))
}

/// `ID=NAME[:TARGETS]`: the part after the last `:` is TARGETS when every comma-separated
/// item is a GUID or `all-devices`; otherwise it belongs to NAME.
fn parse_profile(s: &str) -> Result<Profile, String> {
    let (id, rest) = s
        .split_once('=')
        .ok_or_else(|| "expected ID=NAME[:TARGETS]".to_string())?;
    let id = guid(id, "profile")?;
    let targets = |list: &str| -> Option<Vec<ProfileTarget>> {
        list.split(',')
            .map(str::trim)
            .map(|t| match t.to_ascii_lowercase().as_str() {
                "all-devices" | "alldevices" => Some(ProfileTarget::AllDevices),
                g => guid(g, "group").ok().map(ProfileTarget::Group),
            })
            .collect()
    };
    let (name, assigned_to) = match rest.rsplit_once(':') {
        Some((name, list)) => match targets(list) {
            Some(t) => (name, t),
            None => (rest, Vec::new()),
        },
        None => (rest, Vec::new()),
    };
    let name = name.trim();
    if name.is_empty() {
        return Err("expected ID=NAME[:TARGETS] with a NAME".into());
    }
    Ok(Profile {
        id,
        display_name: name.to_string(),
        assigned_to,
    })
}

/// A serial as the import flags take it: not blank.
fn serial(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("expected a serial number".into());
    }
    Ok(s.to_string())
}

/// `SERIAL=CODE`, CODE a positive number; split at the last `=` (a serial may hold one).
fn parse_import_error(s: &str) -> Result<(String, u16), String> {
    let (serial_part, code) = s
        .rsplit_once('=')
        .ok_or_else(|| "expected SERIAL=CODE".to_string())?;
    let code: u16 = code
        .trim()
        .parse()
        .ok()
        .filter(|&c| c > 0)
        .ok_or_else(|| format!("{code:?} is not an error code (e.g. 806 or 808)"))?;
    Ok((serial(serial_part)?, code))
}

/// `SERIAL[=STATE]`, STATE `complete` or `error`.
fn parse_import_record(s: &str) -> Result<(String, ImportRecordState), String> {
    let (serial_part, state) = match s.rsplit_once('=') {
        Some((serial, state)) => (serial, Some(state.trim().to_ascii_lowercase())),
        None => (s, None),
    };
    let state = match state.as_deref() {
        None | Some("complete") => ImportRecordState::Complete,
        Some("error") => ImportRecordState::Error,
        Some(other) => return Err(format!("{other:?} is not a state (complete or error)")),
    };
    Ok((serial(serial_part)?, state))
}

fn parse_probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not a probability between 0 and 1"))
    }
}

impl EmulateArgs {
    pub fn to_config(&self) -> std::io::Result<EmulatorConfig> {
        let identities = self
            .devices
            .as_deref()
            .map(read_device_identities)
            .transpose()?;
        let devices = identities
            .as_ref()
            .map(|list| list.iter().map(|(id, _)| id.clone()).collect());
        Ok(EmulatorConfig {
            limit: self.limit,
            retry_after: self.retry_after,
            token_ttl: self.token_ttl,
            client_secret: self.client_secret.clone(),
            tenants: match self.tenants {
                Some(n) => (1..=n).map(|i| format!("tenant-{i}")).collect(),
                None => self.tenant.clone(),
            },
            tenant_secrets: self.tenant_secret.iter().cloned().collect(),
            client_certificate: self.client_certificate.clone(),
            devices,
            identities: identities.unwrap_or_default(),
            page_size: self.page_size as usize,
            select_fails: self.select_500,
            repeat_next_link: self.repeat_next_link,
            assign_delay: self.assign_delay,
            fault_503: self.fault_503,
            fault_503_retry_after: self.fault_503_retry_after,
            fault_504: self.fault_504,
            fault_drop: self.fault_drop,
            latency: self.latency,
            outage: self.outage_for.map(|length| Outage {
                at: self.outage_at.unwrap_or_default(),
                length,
                retry_after: self.outage_retry_after,
            }),
            seed: self.seed,
            intune_envelope: self.intune_envelope,
            violation_grace: self.violation_grace,
            deny_permission: self.deny_permission,
            no_odata_route: self.no_odata_route,
            commit_lag: self.commit_lag,
            listing_delay: self.listing_delay,
            token_roles: self.token_roles.as_ref().map(|roles| {
                roles
                    .iter()
                    .map(|r| r.trim().to_string())
                    .filter(|r| !r.is_empty())
                    .collect()
            }),
            directory_limit: self.directory_limit,
            directory_page_size: self.directory_page_size as usize,
            groups: self.groups(),
            members: self.member.clone(),
            not_in_directory: self.not_in_directory.clone(),
            no_device_id: self.no_device_id.clone(),
            profiles: self.profile.clone(),
            import_batch_limit: self.import_batch_limit as usize,
            import_delay: self.import_delay,
            import_errors: self.import_error.clone(),
            import_records: self.import_record.clone(),
            sync_interval: self.sync_interval,
            sync_duration: self.sync_duration,
            last_sync_ago: self.last_sync_ago,
        })
    }
}

impl EmulateArgs {
    /// `--group` then `--dynamic-group`, in the order given.
    fn groups(&self) -> Vec<Group> {
        let assigned = self.group.iter().map(|(id, n)| Group::assigned(id, n));
        let dynamic = self
            .dynamic_group
            .iter()
            .map(|(id, n)| Group::dynamic(id, n));
        assigned.chain(dynamic).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: &str = "5e7e0c2a-3b1d-4c8e-9f6a-0d1c2b3a4f5e";
    const P: &str = "0f0f0f0f-0000-4000-8000-000000000001";

    #[test]
    fn import_flags_parse() {
        assert_eq!(parse_import_error("PF-1=808"), Ok(("PF-1".into(), 808)));
        assert_eq!(parse_import_error("A=B=806"), Ok(("A=B".into(), 806)));
        assert!(parse_import_error("PF-1").is_err());
        assert!(parse_import_error("PF-1=0").is_err());
        assert!(parse_import_error("=806").is_err());
        assert_eq!(
            parse_import_record(" PF-2 "),
            Ok(("PF-2".into(), ImportRecordState::Complete))
        );
        assert_eq!(
            parse_import_record("PF-2=Error"),
            Ok(("PF-2".into(), ImportRecordState::Error))
        );
        assert!(parse_import_record("PF-2=pending").is_err());
    }

    #[test]
    fn groups_members_and_profiles_parse() {
        assert_eq!(
            parse_group(&G.to_uppercase()),
            Ok((G.into(), "Group 5e7e0c2a".into()))
        );
        assert_eq!(
            parse_group(&format!("{G}=Kiosks")),
            Ok((G.into(), "Kiosks".into()))
        );
        assert!(parse_group("kiosks").is_err());
        assert_eq!(
            parse_member(&format!("{G}=SER 1")),
            Ok((G.into(), "SER 1".into()))
        );
        assert!(parse_member(G).is_err());
        assert!(parse_member(&format!("{G}=")).is_err());
        let p = parse_profile(&format!("{P}=Kiosk: Floor 2:{G}, all-devices")).unwrap();
        assert_eq!(p.display_name, "Kiosk: Floor 2");
        assert_eq!(
            p.assigned_to,
            [ProfileTarget::Group(G.into()), ProfileTarget::AllDevices]
        );
        // A last part that is no list of targets is part of the name.
        let p = parse_profile(&format!("{P}=Kiosk: Floor 2")).unwrap();
        assert_eq!(
            (p.display_name.as_str(), p.assigned_to.len()),
            ("Kiosk: Floor 2", 0)
        );
        assert!(parse_profile(&format!("{P}=")).is_err());
        assert!(parse_profile("nope=Kiosk").is_err());
    }
}
