//! `profiles`: which Autopilot deployment profile do the devices get? Lists the tenant's
//! profiles with the groups each is assigned to, and makes the one profile-to-group
//! assignment a group or tag run relies on (`profiles assign PROFILE --group G`), writing
//! nothing when it is already there. Profiles and groups may be named by id or display name;
//! a name two of them share is refused with both ids listed.

use std::collections::HashMap;
use std::fmt::Write as _;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::budget::Budget;
use crate::config::Config;
use crate::graph::client::GraphClient;
use crate::graph::model::DeploymentProfile;
use crate::listing::{self, ReadError};

/// What `profiles` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfilesCommand {
    List,
    /// Assign the profile (id or display name) to the group (id or display name).
    Assign {
        profile: String,
        group: String,
    },
}

/// `profiles` could not do what it was asked. Exit code 2 for names, 3 when Graph refused.
#[derive(Debug, thiserror::Error)]
pub enum ProfilesError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Graph(String),
}

impl ProfilesError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ProfilesError::Config(_) | ProfilesError::NotFound(_) => 2,
            ProfilesError::Graph(_) => 3,
        }
    }
}

/// Run `command` against the tenant `config` names; the text to print.
pub async fn profiles(
    config: Config,
    command: ProfilesCommand,
    shutdown: CancellationToken,
) -> Result<String, ProfilesError> {
    let c = crate::connect::connect(None, config, &shutdown).map_err(ProfilesError::Config)?;
    let listed = read_profiles(&c.graph, &c.budget).await?;
    match command {
        ProfilesCommand::List => Ok(render(&listed, &group_names(&listed, &c).await)),
        ProfilesCommand::Assign { profile, group } => {
            let profile = find_profile(&listed, &profile)?;
            let group = find_group(&c.graph, &c.budget, &group).await?;
            if profile.groups().contains(&group) {
                return Ok(format!(
                    "profile {} is already assigned to group {group}: nothing written\n",
                    name(profile)
                ));
            }
            let graph = &c.graph;
            let id = profile.id.as_str();
            listing::write(&c.budget, |token| async move {
                graph.assign_profile(&token, id, group).await
            })
            .await
            .map_err(|e| ProfilesError::Graph(format!("cannot assign the profile: {e}")))?;
            Ok(format!(
                "profile {} assigned to group {group}: devices that join the group get it\n",
                name(profile)
            ))
        }
    }
}

/// Every profile of the tenant, with its assignments.
pub async fn read_profiles(
    graph: &GraphClient,
    budget: &Budget,
) -> Result<Vec<DeploymentProfile>, ProfilesError> {
    let mut all = Vec::new();
    let mut next: Option<String> = None;
    let mut pager = listing::Pager::default();
    loop {
        let link = next.take();
        let page = listing::read(budget, |token| {
            let link = link.clone();
            async move { graph.profiles(&token, link.as_deref()).await }
        })
        .await
        .map_err(|e| ProfilesError::Graph(format!("cannot read the deployment profiles: {e}")))?;
        let turn = pager.turn(
            page.value.iter().map(|p| p.id.as_str()),
            page.count,
            page.next_link,
        );
        all.extend(page.value);
        match turn.map_err(|e| ProfilesError::Graph(e.to_string()))? {
            None => return Ok(all),
            Some(link) => next = Some(link),
        }
    }
}

/// The one profile `wanted` names: its id, else its display name (case ignored).
fn find_profile<'a>(
    listed: &'a [DeploymentProfile],
    wanted: &str,
) -> Result<&'a DeploymentProfile, ProfilesError> {
    let wanted = wanted.trim();
    if let Some(p) = listed.iter().find(|p| p.id.eq_ignore_ascii_case(wanted)) {
        return Ok(p);
    }
    let named: Vec<&DeploymentProfile> = listed
        .iter()
        .filter(|p| {
            p.display_name
                .as_deref()
                .is_some_and(|n| n.trim().eq_ignore_ascii_case(wanted))
        })
        .collect();
    match named.as_slice() {
        [one] => Ok(one),
        [] => Err(ProfilesError::NotFound(format!(
            "no deployment profile has the id or name {wanted:?} (`autopilot-bulk profiles` \
             lists them)"
        ))),
        many => Err(ProfilesError::NotFound(format!(
            "{} deployment profiles are named {wanted:?} ({}): give the id",
            many.len(),
            many.iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The group `wanted` names: a GUID as it is, else the one group of that display name.
pub async fn find_group(
    graph: &GraphClient,
    budget: &Budget,
    wanted: &str,
) -> Result<Uuid, ProfilesError> {
    if let Ok(id) = Uuid::try_parse(wanted.trim()) {
        return Ok(id);
    }
    let name = wanted.trim();
    let page = listing::read(budget, |token| async move {
        graph.groups_named(&token, name).await
    })
    .await
    .map_err(|e| ProfilesError::Graph(format!("cannot look up group {name:?}: {e}")))?;
    let ids: Vec<Uuid> = page
        .value
        .iter()
        .filter_map(|g| Uuid::try_parse(g.id.trim()).ok())
        .collect();
    match ids.as_slice() {
        [one] => Ok(*one),
        [] => Err(ProfilesError::NotFound(format!(
            "no group of the tenant is named {name:?}"
        ))),
        many => Err(ProfilesError::NotFound(format!(
            "{} groups are named {name:?} ({}): give the id",
            many.len(),
            many.iter()
                .map(Uuid::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Display names of the groups the profiles target (a failed read leaves the id alone).
async fn group_names(
    listed: &[DeploymentProfile],
    c: &crate::connect::Connected,
) -> HashMap<Uuid, String> {
    let mut names = HashMap::new();
    for group in listed.iter().flat_map(DeploymentProfile::groups) {
        if names.contains_key(&group) {
            continue;
        }
        let graph = &c.graph;
        let read = listing::read(&c.budget, |token| async move {
            graph.group(&token, group).await
        });
        if let Ok(g) = read.await
            && let Some(n) = g.display_name
        {
            names.insert(group, n);
        }
    }
    names
}

fn name(p: &DeploymentProfile) -> String {
    match &p.display_name {
        Some(n) => format!("{:?} ({})", crate::output::printable(n), p.id),
        None => p.id.clone(),
    }
}

/// One profile a paragraph: its id and name, then each target.
fn render(listed: &[DeploymentProfile], names: &HashMap<Uuid, String>) -> String {
    let mut out = String::new();
    if listed.is_empty() {
        out.push_str("no Autopilot deployment profiles in this tenant\n");
    }
    for p in listed {
        let _ = writeln!(out, "{}", name(p));
        if p.all_devices() {
            let _ = writeln!(out, "  → All Devices");
        }
        for g in p.groups() {
            match names.get(&g) {
                Some(n) => {
                    let _ = writeln!(out, "  → group {g} ({})", crate::output::printable(n));
                }
                None => {
                    let _ = writeln!(out, "  → group {g}");
                }
            }
        }
        if p.groups().is_empty() && !p.all_devices() {
            let _ = writeln!(out, "  (not assigned: no device gets it)");
        }
    }
    out
}

/// Before a group run's first write with `--profile`: the profile must target each group the
/// rows name. `Err`: the reason, for exit 2.
pub async fn check_targets(
    graph: &GraphClient,
    budget: &Budget,
    profile: &str,
    groups: impl IntoIterator<Item = Uuid>,
) -> Result<(), String> {
    let listed = read_profiles(graph, budget)
        .await
        .map_err(|e| e.to_string())?;
    let p = find_profile(&listed, profile).map_err(|e| e.to_string())?;
    let missing: Vec<String> = groups
        .into_iter()
        .filter(|g| !p.groups().contains(g))
        .map(|g| g.to_string())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "profile {} does not target group {}: its devices would get no profile from it; \
         assign it first with `autopilot-bulk profiles assign {} --group {}`",
        name(p),
        missing.join(", "),
        p.id,
        missing[0]
    ))
}

impl From<ReadError> for ProfilesError {
    fn from(e: ReadError) -> Self {
        ProfilesError::Graph(e.to_string())
    }
}
