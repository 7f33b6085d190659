//! `assign`: create a deployment profile assignment on the device (Graph beta's
//! `POST …/windowsAutopilotDeviceIdentities/{id}/deploymentProfile/assignments`). Whether the
//! device already holds it is read from the same path's GET (every page), compared with
//! [`Assignment::matches`].

use uuid::Uuid;

use crate::graph::model::Assignment;
use crate::graph::request::Request;

pub(crate) fn write(device: Uuid, assignment: &Assignment) -> Request {
    Request::Post {
        device,
        body: assignment.clone(),
    }
}

/// The first page of the device's assignments.
pub(crate) fn read(device: Uuid) -> Request {
    Request::List { device, page: None }
}
