//! The checks themselves, each a read through the tenant's budget (so a 429 or a 503 is
//! retried as in a run) that adds its lines to the report. None of them writes.

use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::claims::{Claims, GROUP_NEEDS, NEEDED};
use super::report::Report;
use crate::action::Action;
use crate::budget::{Budget, is_no_odata_route};
use crate::graph::answer::{Attempt, Page};
use crate::graph::client::GraphClient;
use crate::graph::model::Identity;
use crate::input::{Device, Job};
use crate::listing::{PAGE_SIZE, ReadError};

/// Identities shown from the listing page.
const SAMPLE: usize = 3;

const GRANT: &str = "grant the app registration the Microsoft Graph application permission \
     DeviceManagementServiceConfig.ReadWrite.All with admin consent (Entra ID → App \
     registrations → API permissions), then run preflight again";

/// What the checks read through.
pub(super) struct Tenant {
    /// The tenants file's key, with `--tenants`: its credentials are fixed there, not in flags.
    pub key: Option<String>,
    pub graph: GraphClient,
    pub graph_url: String,
    pub budget: Arc<Budget>,
    /// The action `run` would take (`--action`), for a check without an input row.
    pub action: Action,
    /// `--group-id`: the group of rows that name none.
    pub group: Option<Uuid>,
}

/// Which device the route is checked with, and the one the first row names (when known).
pub(super) struct DeviceChoice {
    pub route: Option<Uuid>,
    pub row_id: Option<Uuid>,
}

/// Which read failed, for the fix to suggest.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    Listing,
    Route(Uuid),
    Group(Uuid),
}

impl Tenant {
    /// Get a token and report what it grants. `false`: no token, nothing more to check.
    pub async fn token_check(&self, report: &mut Report) -> bool {
        let Some(token) = self.budget.token().await else {
            report.auth_failed = true;
            let why = self.budget.halt().reason();
            let fix = match &self.key {
                None => "check --tenant-id, --client-id, the client secret or certificate, and \
                         --cloud (the authority must be the tenant's)"
                    .to_string(),
                Some(key) => format!(
                    "check tenant_id, client_id, the secret or certificate it names, and cloud \
                     under [tenants.{key}] in the tenants file (the authority must be the \
                     tenant's)"
                ),
            };
            report.fail(
                format!(
                    "token: {}",
                    why.as_deref().unwrap_or("authentication failed")
                ),
                fix,
            );
            return false;
        };
        let Some(claims) = Claims::read(&token) else {
            report.note(
                "token obtained; its claims cannot be read (not a JWT): tenant, app and \
                 permissions are not checked here, the route check below shows what Graph allows",
            );
            return true;
        };
        report.ok(format!(
            "token for tenant {}, app {}{}",
            claims.tenant.as_deref().unwrap_or("(no tid claim)"),
            claims.app.as_deref().unwrap_or("(no appid claim)"),
            claims
                .app_name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        ));
        let delegated = claims.scopes.is_some() && claims.roles.is_empty();
        let kind = if delegated { "scp" } else { "roles" };
        if self.action == Action::Group {
            for needs in GROUP_NEEDS {
                if claims.grants_any(needs) {
                    report.ok(format!("permission {} granted", needs[0]));
                } else {
                    report.fail(
                        format!(
                            "permission {} missing from the token ({kind}: {}): a group run \
                             reads devices and adds members in Entra ID",
                            needs[0],
                            claims.permissions()
                        ),
                        format!(
                            "grant the app registration the Microsoft Graph application \
                             permission {} with admin consent, then run preflight again",
                            needs[0]
                        ),
                    );
                }
            }
        }
        // A group run only reads Intune (the identities); the others write there.
        let intune = match self.action {
            Action::Group => claims.grants_any(&["DeviceManagementServiceConfig.Read.All", NEEDED]),
            _ => claims.grants_needed(),
        };
        if intune {
            report.ok(format!(
                "permission {NEEDED} granted ({kind}: {})",
                claims.permissions()
            ));
        } else if delegated {
            report.fail(
                format!(
                    "permission {NEEDED} missing from the token's delegated scopes (scp: {})",
                    claims.permissions()
                ),
                "consent the delegated permission for the signed-in user, or better use an app \
                 registration: grant it the application permission with admin consent",
            );
        } else {
            report.fail(
                format!(
                    "permission {NEEDED} missing from the token's application roles (roles: {})",
                    claims.permissions()
                ),
                GRANT,
            );
        }
        true
    }

    /// One page of the tenant's identities: how many, whether more follow, a sample.
    pub async fn listing_check(&self, report: &mut Report) -> Option<Page<Identity>> {
        let graph = &self.graph;
        let (result, status) = self
            .read(|token| async move { graph.identities(&token, PAGE_SIZE, None).await })
            .await;
        let page = match result {
            Ok(page) => page,
            Err(e) => {
                self.failed(report, "identity listing".into(), Read::Listing, status, e);
                return None;
            }
        };
        let check = report.ok(format!(
            "identity listing answers: {} identit{} on the first page, {}",
            page.value.len(),
            if page.value.len() == 1 { "y" } else { "ies" },
            if page.next_link.is_some() {
                "more pages follow"
            } else {
                "no more pages"
            }
        ));
        check.details = page
            .value
            .iter()
            .take(SAMPLE)
            .map(|i| {
                format!(
                    "{}  serial {}",
                    i.id,
                    i.serial_number.as_deref().unwrap_or("-")
                )
            })
            .collect();
        Some(page)
    }

    /// The device of the first valid row (a serial resolved through the listing page or one
    /// lookup); the first listed identity checks the route when there is no row to use.
    pub async fn device_check(
        &self,
        first: Option<&Job>,
        page: Option<&Page<Identity>>,
        report: &mut Report,
    ) -> DeviceChoice {
        let listed = page
            .into_iter()
            .flat_map(|p| &p.value)
            .find_map(|i| Uuid::parse_str(&i.id).ok());
        let row_id = match first {
            None => None,
            Some(job) => match &job.device {
                Device::Id(id) | Device::Both(id, _) => {
                    report.ok(format!("first valid row: row {}, device {id}", job.row));
                    Some(*id)
                }
                Device::Serial(serial) => self.resolve(job.row, serial, page, report).await,
            },
        };
        if report.auth_failed {
            return DeviceChoice {
                route: None,
                row_id,
            };
        }
        let route = row_id.or(listed);
        match (row_id, route, first) {
            (Some(_), _, _) => {}
            (None, Some(id), None) => {
                report.note(format!(
                    "no INPUT.csv: the route is checked with listed device {id}"
                ));
            }
            (None, Some(id), Some(_)) => {
                report.note(format!(
                    "the route is checked with listed device {id} instead"
                ));
            }
            (None, None, _) => {
                report.fail(
                    "no device to check the assignment route with",
                    "give an INPUT.csv whose first valid row names a device of the tenant",
                );
            }
        }
        DeviceChoice { route, row_id }
    }

    /// The one identity holding `serial` (case and spaces ignored), from the page or a lookup.
    async fn resolve(
        &self,
        row: u64,
        serial: &str,
        page: Option<&Page<Identity>>,
        report: &mut Report,
    ) -> Option<Uuid> {
        let key = serial.trim().to_lowercase();
        let holds = |i: &Identity| {
            i.serial_number
                .as_deref()
                .is_some_and(|s| s.trim().to_lowercase() == key)
        };
        let mut holders: Vec<Identity> = page
            .into_iter()
            .flat_map(|p| &p.value)
            .filter(|i| holds(i))
            .cloned()
            .collect();
        if holders.is_empty() {
            let graph = &self.graph;
            let (result, status) = self
                .read(|token| async move { graph.identities_with_serial(&token, serial).await })
                .await;
            match result {
                Ok(found) => holders = found.value.into_iter().filter(|i| holds(i)).collect(),
                Err(e) => {
                    let what = format!("row {row}: looking up serial {serial:?}");
                    self.failed(report, what, Read::Listing, status, e);
                    return None;
                }
            }
        }
        let ids: Vec<Uuid> = holders
            .iter()
            .filter_map(|i| Uuid::parse_str(&i.id).ok())
            .collect();
        match ids.as_slice() {
            [id] => {
                report.ok(format!(
                    "first valid row: row {row}, serial {serial:?} is device {id}"
                ));
                Some(*id)
            }
            [] => {
                report.fail(
                    format!(
                        "row {row}: no Autopilot identity of the tenant holds serial {serial:?}"
                    ),
                    "check the serial number (and the tenant), or name the device by device_id",
                );
                None
            }
            many => {
                let list: Vec<String> = many.iter().map(Uuid::to_string).collect();
                report.fail(
                    format!(
                        "row {row}: serial {serial:?} is held by {} identities ({})",
                        many.len(),
                        list.join(", ")
                    ),
                    "add a device_id column naming the device for this row",
                );
                None
            }
        }
    }

    /// The harmless read on the route the action writes to: the GET of the device's
    /// assignments (assign), or of the identity whose tag the write sets (tag).
    pub async fn route_check(&self, device: Uuid, action: Action, report: &mut Report) {
        let graph = &self.graph;
        let Some(request) = action.read(device) else {
            return; // a group's route is the group: see group_check
        };
        let (shown, _) = crate::action::shown(&request, &self.graph_url, None);
        let what = match action {
            Action::Tag => format!("tag route: {shown}"),
            _ => format!("assignment route: {shown}"),
        };
        match action {
            Action::Group => {}
            Action::Assign => {
                let (result, status) = self
                    .read(|token| async move { graph.list(&token, device, None).await })
                    .await;
                match result {
                    Ok(page) => {
                        report.ok(format!(
                            "{what} answers {} ({} assignment{} held)",
                            status.unwrap_or(200),
                            page.value.len(),
                            if page.value.len() == 1 { "" } else { "s" }
                        ));
                    }
                    Err(e) => self.failed(report, what, Read::Route(device), status, e),
                }
            }
            Action::Tag => {
                let (result, status) = self
                    .read(|token| async move { graph.identity(&token, device).await })
                    .await;
                match result {
                    Ok(identity) => {
                        let tag = identity.group_tag.as_deref().filter(|t| !t.is_empty());
                        report.ok(format!(
                            "{what} answers {} (group tag {})",
                            status.unwrap_or(200),
                            tag.map_or("none".to_string(), |t| format!("{t:?}"))
                        ));
                    }
                    Err(e) => self.failed(report, what, Read::Route(device), status, e),
                }
            }
        }
    }

    /// What `import` reads and writes besides the listing: the import records (how many wait
    /// there, from earlier imports) and the tenant's Autopilot settings (its last sync: the
    /// service takes one every ten minutes).
    pub async fn import_check(&self, report: &mut Report) {
        let graph = &self.graph;
        let (result, status) = self
            .read(|token| async move { graph.imported(&token, None).await })
            .await;
        match result {
            Ok(page) => {
                let pending = page
                    .value
                    .iter()
                    .filter(|r| r.progress() == crate::graph::model::ImportProgress::Pending)
                    .count();
                report.ok(format!(
                    "import records answer: {} on the first page ({pending} still processing), {}",
                    page.value.len(),
                    if page.next_link.is_some() {
                        "more pages follow"
                    } else {
                        "no more pages"
                    }
                ));
            }
            Err(e) => {
                let what = "import records".to_string();
                self.failed(report, what, Read::Listing, status, e);
                return;
            }
        }
        let (result, _) = self
            .read(|token| async move { graph.autopilot_settings(&token).await })
            .await;
        match result {
            Ok(s) => {
                let last = s.last_manual_sync.or(s.last_sync).unwrap_or_default();
                let never = last.is_empty() || last.starts_with("0001-");
                report.ok(format!(
                    "Autopilot sync: last {}, status {} (one sync per ten minutes; `import` \
                     waits for its turn)",
                    if never { "never".to_string() } else { last },
                    s.sync_status.as_deref().unwrap_or("unknown")
                ));
            }
            Err(e) => {
                report.note(format!(
                    "Autopilot settings not readable ({e}): `import` asks for its sync and \
                     waits when refused"
                ));
            }
        }
    }

    /// The group a group run adds devices to: it must exist and take members (assigned, not
    /// dynamic).
    pub async fn group_check(&self, group: Uuid, report: &mut Report) {
        let graph = &self.graph;
        let (shown, _) =
            crate::action::shown(&crate::action::group::read(group), &self.graph_url, None);
        let what = format!("group: {shown}");
        let (result, status) = self
            .read(|token| async move { graph.group(&token, group).await })
            .await;
        match result {
            Ok(g) if g.is_dynamic() => drop(report.fail(
                format!(
                    "{what}: {} is a dynamic group: its members come from its rule",
                    g.display_name.as_deref().unwrap_or("the group")
                ),
                "give an assigned group, or steer the devices with --action tag and the \
                 group's rule",
            )),
            Ok(g) => {
                report.ok(format!(
                    "{what} answers {}: {} (assigned{})",
                    status.unwrap_or(200),
                    g.display_name
                        .as_deref()
                        .unwrap_or("unnamed")
                        .escape_debug(),
                    if g.security_enabled == Some(false) {
                        ", not a security group"
                    } else {
                        ", security"
                    }
                ));
                self.profile_check(group, report).await;
            }
            Err(e) => self.failed(report, what, Read::Group(group), status, e),
        }
    }

    /// Whether a deployment profile targets `group`: if none does, the devices would join a
    /// group that gives them no profile.
    async fn profile_check(&self, group: Uuid, report: &mut Report) {
        let profiles = match crate::profiles::read_profiles(&self.graph, &self.budget).await {
            Ok(p) => p,
            Err(e) => {
                report.note(format!(
                    "deployment profiles not read ({e}): which profile the group gives is not \
                     checked"
                ));
                return;
            }
        };
        let targeting: Vec<String> = profiles
            .iter()
            .filter(|p| p.groups().contains(&group))
            .map(|p| {
                crate::output::printable(p.display_name.as_deref().unwrap_or(&p.id)).into_owned()
            })
            .collect();
        if targeting.is_empty() {
            report.fail(
                format!(
                    "no Autopilot deployment profile targets group {group}: the devices would \
                     join a group that gives them no profile"
                ),
                format!(
                    "assign one first: `autopilot-bulk profiles` lists them, `autopilot-bulk \
                     profiles assign PROFILE --group {group}` makes the assignment"
                ),
            );
        } else {
            report.ok(format!(
                "deployment profile {} targets the group",
                targeting.join(", ")
            ));
        }
    }

    /// The write `run` would send for `job`, and its body.
    pub fn request_for(&self, job: &Job, id: Option<Uuid>) -> (String, String) {
        shown_request(job, id, &self.graph_url)
    }

    /// One read through the budget (retried as in a run), with the HTTP status of its last
    /// answer, which the fix depends on.
    async fn read<T, F, Fut>(&self, send: F) -> (Result<T, ReadError>, Option<u16>)
    where
        F: Fn(Arc<str>) -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        let last = Mutex::new(None);
        let seen = &last;
        let result = crate::listing::read(&self.budget, |token| {
            let sent = send(token);
            async move {
                let attempt = sent.await;
                *seen.lock().unwrap_or_else(|p| p.into_inner()) = attempt.http_status;
                attempt
            }
        })
        .await;
        (result, last.into_inner().unwrap_or_else(|p| p.into_inner()))
    }

    /// Report a read that failed: Graph's code and message verbatim, and the fix.
    fn failed(
        &self,
        report: &mut Report,
        what: String,
        read: Read,
        status: Option<u16>,
        e: ReadError,
    ) {
        let (code, message) = match e {
            ReadError::Failed { code, message } => (code, message),
            ReadError::Stopped | ReadError::PagingLoop(_) => {
                let why = self.budget.halt().reason().unwrap_or_else(|| e.to_string());
                report.auth_failed |= why.starts_with("authentication failed");
                report.fail(format!("{what}: {why}"), "run preflight again");
                return;
            }
        };
        report.auth_failed |= status == Some(401);
        let answered = match status {
            Some(s) => format!("{s} {code}"),
            None => format!("no answer ({code})"),
        };
        let fix = fix(read, status, &message, self.key.as_deref());
        report.fail(format!("{what} → {answered}: {message}"), fix);
    }
}

/// Where settings are given: flags for one tenant; the tenant's section of the tenants file
/// (`key`) for many, where `--graph-url` is spelled `graph_url`.
fn settings(key: Option<&str>, flags: &[&str]) -> String {
    match key {
        None => flags
            .iter()
            .map(|f| format!("--{f}"))
            .collect::<Vec<_>>()
            .join(" and "),
        Some(key) => format!(
            "{} under [tenants.{key}] in the tenants file",
            flags
                .iter()
                .map(|f| f.replace('-', "_"))
                .collect::<Vec<_>>()
                .join(" and ")
        ),
    }
}

/// How to fix a failed read, by what was read and what Graph answered; `key` names the tenant
/// of a tenants file.
fn fix(read: Read, status: Option<u16>, message: &str, key: Option<&str>) -> String {
    match (status, read) {
        (Some(400), _) if is_no_odata_route(status, Some(message)) => format!(
            "the route is not available in this tenant or cloud, and `run` would fail every row \
             the same way: check {} (`run` needs Graph beta); if they are right, Graph does not \
             serve this route for the tenant: steer the devices through a group the profile \
             targets instead (`--action group`: static membership, 20 devices a request; or \
             `--action tag` with a dynamic group's rule), or open a Microsoft support case with \
             this message",
            settings(key, &["cloud", "graph-url"])
        ),
        (Some(401), _) => format!(
            "Graph does not accept the token: check that the tenant, the app and {} match the \
             Graph URL",
            settings(key, &["cloud"])
        ),
        (Some(403), _) => GRANT.into(),
        (Some(404), Read::Route(device)) => format!(
            "device {device} is not an Autopilot identity of this tenant: check the row's \
             device_id, and that the token's tenant is the one the devices are in"
        ),
        (Some(404), Read::Group(group)) => format!(
            "group {group} is not a group of this tenant: check --group-id or the group_id \
             column, and that the token's tenant is the one the group is in"
        ),
        (Some(429) | Some(500..), _) => "Graph is busy or failing: run preflight again in a few \
                                         minutes (`run` would retry these)"
            .into(),
        (None, _) => format!(
            "no answer from Graph: check the network, the proxy and {}",
            settings(key, &["graph-url"])
        ),
        _ => format!(
            "Graph refused the request: check {} (`run` needs Graph beta) and the message above",
            settings(key, &["graph-url"])
        ),
    }
}

/// The write `run` sends for `job` (`id`: its device, when a serial was resolved), as
/// `row N: METHOD URL` and the pretty JSON body: what `--dry-run` and `preflight` show.
pub fn shown_request(job: &Job, id: Option<Uuid>, graph_url: &str) -> (String, String) {
    let (device, label) = match (id, &job.device) {
        (Some(id), _) => (id, None),
        (None, Device::Id(id) | Device::Both(id, _)) => (*id, None),
        (None, Device::Serial(s)) => (Uuid::nil(), Some(format!("{{id of serial {s:?}}}"))),
    };
    let member = format!(
        "{{directory object of device {}}}",
        label.clone().unwrap_or_else(|| device.to_string())
    );
    let request = job.work.write(device, &member, graph_url);
    let (line, body) = crate::action::shown(&request, graph_url, label.as_deref());
    (format!("row {}: {line}", job.row), body)
}
