//! What a row does to its device. [`Work`] is the action with what it needs, carried by every
//! row ([`crate::input::Job`]); everything that depends on the action (the request dry-run and
//! preflight show, the read that tells whether the write is already done, what makes two rows
//! duplicates, the worker's requests) matches on it, so a new action is a new variant, a new
//! file here and the match arms the compiler then asks for.
//!
//! - [`assign`]: a deployment profile assignment on the device (the seed's route).
//! - [`tag`]: the device's group tag, which a dynamic group rule turns into a profile.
//! - [`group`]: the device's membership of a static Entra group that a profile targets.

pub mod assign;
pub mod group;
pub mod tag;

use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::graph::model::Assignment;
use crate::graph::request::Request;

/// What a run does to each row's device (`--action`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Action {
    /// Assign a deployment profile (`POST …/deploymentProfile/assignments`).
    #[default]
    Assign,
    /// Set the device's group tag (`POST …/updateDeviceProperties`).
    Tag,
    /// Add the device to a static Entra group (`PATCH /groups/{id}`, 20 devices a request).
    Group,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Assign, Action::Tag, Action::Group];

    /// The word `--action` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Assign => "assign",
            Action::Tag => "tag",
            Action::Group => "group",
        }
    }

    /// The read that tells whether the action's write has been done on `device`: what a row
    /// reconciles with, and what `preflight` probes the action's route with.
    /// `None` for a group: its read is of the group, not of a device.
    pub(crate) fn read(self, device: Uuid) -> Option<Request> {
        match self {
            Action::Assign => Some(assign::read(device)),
            Action::Tag => Some(tag::read(device)),
            Action::Group => None,
        }
    }

    pub fn parse(s: &str) -> Result<Action, String> {
        let word = s.trim().to_ascii_lowercase();
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == word)
            .ok_or_else(|| format!("unknown action {s:?} (use assign, tag or group)"))
    }
}

/// One row's work on its device.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Work {
    /// Create this assignment on the device.
    Assign(Assignment),
    /// Set this group tag on the device.
    Tag(String),
    /// Make the device a member of this static Entra group.
    Group(Uuid),
}

impl Work {
    pub fn action(&self) -> Action {
        match self {
            Work::Assign(_) => Action::Assign,
            Work::Tag(_) => Action::Tag,
            Work::Group(_) => Action::Group,
        }
    }

    /// The assignment an `assign` row sends.
    pub fn assignment(&self) -> Option<&Assignment> {
        match self {
            Work::Assign(a) => Some(a),
            _ => None,
        }
    }

    /// The group tag a `tag` row sets.
    pub fn group_tag(&self) -> Option<&str> {
        match self {
            Work::Tag(t) => Some(t),
            _ => None,
        }
    }

    /// The group a `group` row adds its device to.
    pub fn group(&self) -> Option<Uuid> {
        match self {
            Work::Group(g) => Some(*g),
            _ => None,
        }
    }

    /// The write this work sends for `device` (a group's member is the device's directory
    /// object: `member` names it, as far as it is known). `graph_url` gives a member ref's host.
    pub(crate) fn write(&self, device: Uuid, member: &str, graph_url: &str) -> Request {
        match self {
            Work::Assign(a) => assign::write(device, a),
            Work::Tag(t) => tag::write(device, t),
            Work::Group(g) => group::write(*g, &[member], graph_url),
        }
    }

    /// Feed what makes two rows of one device duplicates into `h`: an assignment's target
    /// (two targets on one device are two assignments); for a tag, nothing (a device has one
    /// tag, so a second row of it is a duplicate whatever it asks).
    pub(crate) fn hash_duplicate_key<H: Hasher>(&self, h: &mut H) {
        self.action().as_str().hash(h);
        match self {
            Work::Assign(a) => a.target.hash(h),
            Work::Tag(_) => {}
            Work::Group(g) => g.hash(h),
        }
    }
}

/// A request as `--dry-run` and `preflight` show it: `METHOD URL` and the pretty JSON body.
/// `device` is the identity id when known, else what stands for it (a serial's placeholder).
pub(crate) fn shown(request: &Request, graph_url: &str, device: Option<&str>) -> (String, String) {
    let mut path = request.path();
    let mut body = request
        .body()
        .and_then(|b| serde_json::to_string_pretty(&b).ok())
        .unwrap_or_default();
    if let (Some(label), Some(id)) = (device, request.device()) {
        path = path.replace(&id.to_string(), label);
        body = body.replace(&id.to_string(), label);
    }
    (format!("{} {graph_url}{path}", request.method()), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse_case_blind_and_name_the_choices() {
        assert_eq!(Action::parse(" TAG "), Ok(Action::Tag));
        assert_eq!(Action::parse("assign"), Ok(Action::Assign));
        let e = Action::parse("groups").unwrap_err();
        assert!(e.contains("assign, tag or group"), "{e}");
    }

    #[test]
    fn a_tag_is_shown_as_the_update_it_sends() {
        let work = Work::Tag("Kiosk".into());
        let device = Uuid::from_u128(7);
        let (line, body) = shown(
            &work.write(device, "", "https://g/beta"),
            "https://g/beta",
            Some("{id}"),
        );
        assert_eq!(
            line,
            "POST https://g/beta/deviceManagement/windowsAutopilotDeviceIdentities/{id}/updateDeviceProperties"
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({"groupTag": "Kiosk"})
        );
    }
}
