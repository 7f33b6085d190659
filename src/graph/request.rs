//! The requests the run makes to a device's assignments, in the shape both a lone request and a
//! `$batch` envelope need (method, path below the Graph base URL, JSON body).

use uuid::Uuid;

use super::model::Assignment;

/// One request to a device's assignments.
#[derive(Debug, Clone)]
pub(crate) enum Request {
    Post {
        device: Uuid,
        body: Assignment,
    },
    /// The first page, or a later one: `page` is the `@odata.nextLink` below the base URL.
    List {
        device: Uuid,
        page: Option<String>,
    },
}

impl Request {
    pub(crate) fn method(&self) -> &'static str {
        match self {
            Request::Post { .. } => "POST",
            Request::List { .. } => "GET",
        }
    }

    /// The path below the Graph base URL (what `$batch` wants).
    pub(crate) fn path(&self) -> String {
        let device = match self {
            Request::List {
                page: Some(page), ..
            } => return page.clone(),
            Request::Post { device, .. } | Request::List { device, .. } => device,
        };
        format!(
            "/deviceManagement/windowsAutopilotDeviceIdentities/{device}/deploymentProfile/assignments"
        )
    }

    pub(crate) fn body(&self) -> Option<serde_json::Value> {
        match self {
            Request::Post { body, .. } => serde_json::to_value(body).ok(),
            Request::List { .. } => None,
        }
    }
}
