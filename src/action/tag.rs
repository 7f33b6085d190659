//! `tag`: set the device's group tag (`POST …/windowsAutopilotDeviceIdentities/{id}/updateDeviceProperties`
//! with `{"groupTag": …}`, answered 204). The write is idempotent; whether it is done is read
//! from the identity itself (its `groupTag`), compared with [`carries`].

use uuid::Uuid;

use crate::graph::request::Request;

pub(crate) fn write(device: Uuid, tag: &str) -> Request {
    Request::UpdateDeviceProperties {
        device,
        group_tag: tag.to_string(),
    }
}

/// The identity, whose `groupTag` tells whether the write is done.
pub(crate) fn read(device: Uuid) -> Request {
    Request::Identity { device }
}

/// Whether a device's `held` group tag is `wanted`. Case and surrounding spaces are ignored:
/// dynamic group rules compare `[OrderID]:` values without case, so `Kiosk` and `kiosk` steer
/// a device into the same group and rewriting one as the other would change nothing.
pub fn carries(held: Option<&str>, wanted: &str) -> bool {
    held.is_some_and(|h| h.trim().to_lowercase() == wanted.trim().to_lowercase())
}
