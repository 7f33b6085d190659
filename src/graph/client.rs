//! The typed Graph client: [`GraphClient::post`] creates one assignment, [`GraphClient::list`]
//! reads a device's assignments. Each call is one request (alone or in a `$batch` envelope) and
//! one classified [`Attempt`]; the client never retries by itself, so that every attempt is
//! counted and paced by the run.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::answer::{self, Attempt, ErrorInfo, Failure, Page, Raw, transport_failure};
use super::batch::{self, MAX_BATCH, Seat};
use super::model::{
    Assignment, AutopilotSettings, DeploymentProfile, DirectoryDevice, DirectoryGroup, Identity,
    ImportRecord, ImportedBatch, ImportedIdentity, ReturnedAssignment, SyncAnswer,
};
use super::request::Request;
use reqwest::StatusCode;

/// The one HTTP client of a run (Graph and the token endpoint share its pool).
pub fn http_client(
    connect_timeout: Duration,
    request_timeout: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    with_proxies(reqwest::Client::builder())
        .connect_timeout(connect_timeout)
        .timeout(request_timeout)
        // A redirect would carry the bearer token somewhere we did not choose.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("autopilot-bulk/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Proxies from the environment, read as curl reads them (`HTTPS_PROXY`, `HTTP_PROXY`,
/// `ALL_PROXY`, `NO_PROXY`, upper or lower case), except that loopback is never proxied: the
/// emulator and local stand-ins live on this machine, and a corporate proxy cannot reach them.
fn with_proxies(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    let var = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
    };
    let bypass = match var(["NO_PROXY", "no_proxy"]) {
        Some(list) => format!("{list},localhost,127.0.0.0/8,::1"),
        None => "localhost,127.0.0.0/8,::1".to_string(),
    };
    type MakeProxy = fn(String) -> reqwest::Result<reqwest::Proxy>;
    let kinds: [(MakeProxy, [&str; 2]); 3] = [
        (reqwest::Proxy::https, ["HTTPS_PROXY", "https_proxy"]),
        (reqwest::Proxy::http, ["HTTP_PROXY", "http_proxy"]),
        (reqwest::Proxy::all, ["ALL_PROXY", "all_proxy"]),
    ];
    let mut builder = builder.no_proxy();
    for (proxy, names) in kinds {
        let Some(url) = var(names) else { continue };
        match proxy(url) {
            Ok(p) => builder = builder.proxy(p.no_proxy(reqwest::NoProxy::from_string(&bypass))),
            // The URL itself may carry credentials: name the variable, never its value.
            Err(_) => tracing::warn!("ignoring {}: not a proxy URL", names[0]),
        }
    }
    builder
}

/// An attempt refused before anything was sent.
fn unsent<T>(failure: Failure, client_request_id: String) -> Attempt<T> {
    Attempt {
        result: Err(failure),
        http_status: None,
        request_id: None,
        client_request_id,
    }
}

/// The Graph client: a shared connection pool, the base URL and, with `--batch`, the queue of
/// the envelope builder.
#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    graph_url: String,
    batch: Option<mpsc::Sender<Seat>>,
}

impl GraphClient {
    pub fn new(http: reqwest::Client, graph_url: &str) -> Self {
        Self {
            http,
            graph_url: graph_url.trim_end_matches('/').to_string(),
            batch: None,
        }
    }

    /// Send through `$batch` envelopes, at most `envelopes` in flight. Needs a Tokio runtime.
    pub fn batched(mut self, envelopes: usize) -> Self {
        let (tx, rx) = mpsc::channel(MAX_BATCH * envelopes.max(1));
        tokio::spawn(batch::batcher(
            self.http.clone(),
            self.graph_url.clone(),
            rx,
            envelopes,
        ));
        self.batch = Some(tx);
        self
    }

    /// POST one assignment; success is the created assignment's id.
    pub async fn post(&self, token: &Arc<str>, device: Uuid, body: &Assignment) -> Attempt<String> {
        let request = Request::Post {
            device,
            body: body.clone(),
        };
        let crid = Uuid::new_v4().to_string();
        self.send(token, request, &crid)
            .await
            .attempt(crid, answer::created_id)
    }

    /// GET one page of the device's assignments (to reconcile after an ambiguous failure):
    /// the first when `page` is `None`, else the `@odata.nextLink` a previous page gave.
    pub async fn list(
        &self,
        token: &Arc<str>,
        device: Uuid,
        page: Option<&str>,
    ) -> Attempt<Page<ReturnedAssignment>> {
        self.page_of(token, page, |page| Request::List { device, page })
            .await
    }

    /// GET one page of the tenant's Autopilot identities: the first (`top` per page) when
    /// `page` is `None`, else the `@odata.nextLink` a previous page gave.
    pub async fn identities(
        &self,
        token: &Arc<str>,
        top: u32,
        page: Option<&str>,
    ) -> Attempt<Page<Identity>> {
        self.page_of(token, page, |page| Request::Identities { top, page })
            .await
    }

    /// GET the identities whose serial number contains `serial` (one page: a serial is in few
    /// identities). The caller keeps exact matches.
    pub async fn identities_with_serial(
        &self,
        token: &Arc<str>,
        serial: &str,
    ) -> Attempt<Page<Identity>> {
        let crid = Uuid::new_v4().to_string();
        let request = Request::IdentitiesWithSerial {
            serial: serial.to_string(),
        };
        let route = route(&request);
        self.send(token, request, &crid)
            .await
            .attempt(crid, |s, b| answer::page_from(&route, s, b))
    }

    /// Set the device's group tag (`updateDeviceProperties`); any 2xx is success (Graph
    /// answers 204 with no body).
    pub async fn set_group_tag(&self, token: &Arc<str>, device: Uuid, tag: &str) -> Attempt<()> {
        let request = Request::UpdateDeviceProperties {
            device,
            group_tag: tag.to_string(),
        };
        let crid = Uuid::new_v4().to_string();
        self.send(token, request, &crid)
            .await
            .attempt(crid, answer::no_content)
    }

    /// GET one identity (to read its group tag back after an ambiguous tag write).
    pub async fn identity(&self, token: &Arc<str>, device: Uuid) -> Attempt<Identity> {
        let crid = Uuid::new_v4().to_string();
        self.send(token, Request::Identity { device }, &crid)
            .await
            .attempt(crid, answer::one)
    }

    /// GET a page of the directory's devices (first, or the next link a page gave).
    pub async fn devices(
        &self,
        token: &Arc<str>,
        page: Option<&str>,
    ) -> Attempt<Page<DirectoryDevice>> {
        self.page_of(token, page, |page| Request::Devices { page })
            .await
    }

    /// GET the directory device whose `deviceId` is `device_id` (none or one).
    pub async fn device_by_device_id(
        &self,
        token: &Arc<str>,
        device_id: Uuid,
    ) -> Attempt<Page<DirectoryDevice>> {
        let crid = Uuid::new_v4().to_string();
        let request = Request::DeviceByDeviceId { device_id };
        let route = route(&request);
        self.send(token, request, &crid)
            .await
            .attempt(crid, |s, b| answer::page_from(&route, s, b))
    }

    /// GET one group.
    pub async fn group(&self, token: &Arc<str>, group: Uuid) -> Attempt<DirectoryGroup> {
        let crid = Uuid::new_v4().to_string();
        self.send(token, Request::Group { group }, &crid)
            .await
            .attempt(crid, answer::one)
    }

    /// GET a page of a group's device members (first, or the next link a page gave).
    pub async fn members(
        &self,
        token: &Arc<str>,
        group: Uuid,
        page: Option<&str>,
    ) -> Attempt<Page<DirectoryDevice>> {
        self.page_of(token, page, |page| Request::Members { group, page })
            .await
    }

    /// PATCH a group with up to 20 member refs; any 2xx (Graph answers 204) adds them all.
    pub async fn add_members(
        &self,
        token: &Arc<str>,
        group: Uuid,
        refs: Vec<String>,
    ) -> Attempt<()> {
        let crid = Uuid::new_v4().to_string();
        self.send(token, Request::AddMembers { group, refs }, &crid)
            .await
            .attempt(crid, answer::no_content)
    }

    /// DELETE one assignment of a device (`undo`); any 2xx (Graph answers 204) removed it.
    /// An id that cannot be one path segment is refused unsent.
    pub async fn delete_assignment(
        &self,
        token: &Arc<str>,
        device: Uuid,
        assignment: &str,
    ) -> Attempt<()> {
        let crid = Uuid::new_v4().to_string();
        if !super::request::is_assignment_id(assignment) {
            return unsent(
                Failure::Permanent(ErrorInfo {
                    code: crate::codes::INVALID_ASSIGNMENT_ID.into(),
                    message: format!("{assignment:.100?} is not an assignment id"),
                }),
                crid,
            );
        }
        let request = Request::DeleteAssignment {
            device,
            assignment: assignment.to_string(),
        };
        self.send(token, request, &crid)
            .await
            .attempt(crid, answer::no_content)
    }

    /// DELETE a directory object's membership of a group (`undo`); any 2xx removed it.
    pub async fn remove_member(&self, token: &Arc<str>, group: Uuid, member: Uuid) -> Attempt<()> {
        let crid = Uuid::new_v4().to_string();
        self.send(token, Request::RemoveMember { group, member }, &crid)
            .await
            .attempt(crid, answer::no_content)
    }

    /// GET a page of the tenant's Autopilot deployment profiles with their assignments.
    pub async fn profiles(
        &self,
        token: &Arc<str>,
        page: Option<&str>,
    ) -> Attempt<Page<DeploymentProfile>> {
        self.page_of(token, page, |page| Request::Profiles { page })
            .await
    }

    /// Assign `profile` to `group`; success is the assignment's answer (any 2xx).
    pub async fn assign_profile(
        &self,
        token: &Arc<str>,
        profile: &str,
        group: Uuid,
    ) -> Attempt<()> {
        let crid = Uuid::new_v4().to_string();
        let request = Request::AssignProfile {
            profile: profile.to_string(),
            group,
        };
        self.send(token, request, &crid)
            .await
            .attempt(crid, answer::no_content)
    }

    /// GET the groups whose display name is `name`.
    pub async fn groups_named(
        &self,
        token: &Arc<str>,
        name: &str,
    ) -> Attempt<Page<DirectoryGroup>> {
        let crid = Uuid::new_v4().to_string();
        let request = Request::GroupsNamed {
            name: name.to_string(),
        };
        let route = route(&request);
        self.send(token, request, &crid)
            .await
            .attempt(crid, |s, b| answer::page_from(&route, s, b))
    }

    /// Register `records` in one request; success is the records created, in request order.
    pub async fn import(
        &self,
        token: &Arc<str>,
        records: Vec<ImportRecord>,
    ) -> Attempt<Vec<ImportedIdentity>> {
        let crid = Uuid::new_v4().to_string();
        self.send(token, Request::Import { records }, &crid)
            .await
            .attempt(crid, |status, body| {
                answer::one::<ImportedBatch>(
                    if status.is_success() {
                        StatusCode::OK
                    } else {
                        status
                    },
                    body,
                )
                .map(|r| r.map(|b| b.value))
            })
    }

    /// Register one record; success is the record created.
    pub async fn import_one(
        &self,
        token: &Arc<str>,
        record: ImportRecord,
    ) -> Attempt<ImportedIdentity> {
        let crid = Uuid::new_v4().to_string();
        self.send(token, Request::ImportOne { record }, &crid)
            .await
            .attempt(crid, |status, body| {
                let ok = if status.is_success() {
                    StatusCode::OK
                } else {
                    status
                };
                answer::one(ok, body)
            })
    }

    /// GET a page of the tenant's import records (first, or the next link a page gave).
    pub async fn imported(
        &self,
        token: &Arc<str>,
        page: Option<&str>,
    ) -> Attempt<Page<ImportedIdentity>> {
        self.page_of(token, page, |page| Request::ImportedIdentities { page })
            .await
    }

    /// GET one import record.
    pub async fn imported_one(&self, token: &Arc<str>, id: Uuid) -> Attempt<ImportedIdentity> {
        let crid = Uuid::new_v4().to_string();
        self.send(token, Request::ImportedIdentity { id }, &crid)
            .await
            .attempt(crid, answer::one)
    }

    /// DELETE one import record; any 2xx deleted it.
    pub async fn delete_imported(&self, token: &Arc<str>, id: Uuid) -> Attempt<()> {
        let crid = Uuid::new_v4().to_string();
        self.send(token, Request::DeleteImported { id }, &crid)
            .await
            .attempt(crid, answer::no_content)
    }

    /// POST the Autopilot sync. Its refusals are answers, not failures: 409 (a sync is
    /// running) and 429 (one ran in the last ten minutes) say when to ask again, and are not
    /// the app's throttle.
    pub async fn sync(&self, token: &Arc<str>) -> Attempt<SyncAnswer> {
        let crid = Uuid::new_v4().to_string();
        self.send(token, Request::Sync, &crid)
            .await
            .attempt(crid, |status, _| match status.as_u16() {
                200..=299 => Some(Ok(SyncAnswer::Started)),
                409 => Some(Ok(SyncAnswer::Running)),
                429 => Some(Ok(SyncAnswer::TooSoon)),
                _ => None,
            })
    }

    /// GET the tenant's Autopilot settings (when it last synced).
    pub async fn autopilot_settings(&self, token: &Arc<str>) -> Attempt<AutopilotSettings> {
        let crid = Uuid::new_v4().to_string();
        self.send(token, Request::AutopilotSettings, &crid)
            .await
            .attempt(crid, answer::one)
    }

    /// One page of a listing: the first (`page` is `None`), or the `@odata.nextLink` a
    /// previous page gave, which is followed only below the Graph base URL.
    async fn page_of<T: serde::de::DeserializeOwned>(
        &self,
        token: &Arc<str>,
        page: Option<&str>,
        request: impl FnOnce(Option<String>) -> Request,
    ) -> Attempt<Page<T>> {
        let crid = Uuid::new_v4().to_string();
        let page = match page.map(|link| self.below_base(link)).transpose() {
            Ok(page) => page,
            Err(failure) => return unsent(failure, crid),
        };
        let request = request(page);
        let route = route(&request);
        self.send(token, request, &crid)
            .await
            .attempt(crid, |s, b| answer::page_from(&route, s, b))
    }

    /// A next link is followed only below the Graph base URL it came from: the bearer token
    /// goes nowhere else, whatever a page says.
    fn below_base(&self, link: &str) -> Result<String, Failure> {
        match link.strip_prefix(&self.graph_url) {
            Some(rest) if rest.starts_with('/') => Ok(rest.to_string()),
            _ => Err(Failure::Permanent(ErrorInfo {
                code: "UntrustedNextLink".into(),
                message: format!(
                    "the next page is not below {}: {link:.200} (not followed)",
                    self.graph_url
                ),
            })),
        }
    }

    /// One request, alone or in an envelope. Each attempt carries a fresh `client-request-id`.
    async fn send(&self, token: &Arc<str>, request: Request, crid: &str) -> Raw {
        match &self.batch {
            None => self.send_alone(token, &request, crid).await,
            Some(queue) => {
                // If the envelope task ends without an answer, the request may have been sent.
                let lost = || {
                    batch::lost_in_envelope(
                        "ConnectionLost",
                        "the $batch envelope ended without an answer",
                        None,
                    )
                };
                let (reply, answer) = oneshot::channel();
                let seat = Seat {
                    request,
                    client_request_id: crid.to_string(),
                    token: token.clone(),
                    reply,
                };
                if queue.send(seat).await.is_err() {
                    return lost();
                }
                answer.await.unwrap_or_else(|_| lost())
            }
        }
    }

    async fn send_alone(&self, token: &str, request: &Request, crid: &str) -> Raw {
        let url = format!("{}{}", self.graph_url, request.path());
        let builder = match request {
            Request::Post { body, .. } => self.http.post(url).json(body),
            Request::UpdateDeviceProperties { .. }
            | Request::AddMembers { .. }
            | Request::AssignProfile { .. }
            | Request::Import { .. }
            | Request::ImportOne { .. }
            | Request::Sync => {
                let method = match request.method() {
                    "PATCH" => reqwest::Method::PATCH,
                    _ => reqwest::Method::POST,
                };
                let body = request.body().unwrap_or_default();
                self.http.request(method, url).json(&body)
            }
            Request::DeleteAssignment { .. }
            | Request::RemoveMember { .. }
            | Request::DeleteImported { .. } => self.http.delete(url),
            _ => self.http.get(url),
        };
        let sent = builder
            .bearer_auth(token)
            .header("Accept", "application/json")
            .header("client-request-id", crid)
            .send()
            .await;
        match sent {
            Ok(response) => answer::read_answer(response).await,
            Err(e) => transport_failure(&e),
        }
    }
}

/// How a request is named where its answer cannot be read: `GET` and its path, without the
/// query (a next link's `$skiptoken`, a filter's serial), at most 200 characters.
fn route(request: &Request) -> String {
    let path = request.path();
    let path = path.split('?').next().unwrap_or_default();
    format!("GET {}", path.chars().take(200).collect::<String>())
}
