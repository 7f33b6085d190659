//! The requests the run makes, in the shape both a lone request and a `$batch` envelope need
//! (method, path below the Graph base URL, JSON body).

use uuid::Uuid;

use super::model::Assignment;

const IDENTITIES: &str = "/deviceManagement/windowsAutopilotDeviceIdentities";

/// One request to Graph.
#[derive(Debug, Clone)]
pub(crate) enum Request {
    /// Create one assignment of a device.
    Post { device: Uuid, body: Assignment },
    /// A page of a device's assignments: the first, or a later one (`page`: the
    /// `@odata.nextLink` below the base URL).
    List { device: Uuid, page: Option<String> },
    /// A page of the tenant's Autopilot identities: the first (`top` per page), or a later one.
    Identities { top: u32, page: Option<String> },
    /// The identities whose serial number contains `serial` (`contains` is a substring match:
    /// the caller keeps exact matches).
    IdentitiesWithSerial { serial: String },
    /// Set one identity's group tag (answered 204 No Content).
    UpdateDeviceProperties { device: Uuid, group_tag: String },
    /// One identity, to read its group tag back after an ambiguous tag write.
    Identity { device: Uuid },
}

impl Request {
    pub(crate) fn method(&self) -> &'static str {
        match self {
            Request::Post { .. } | Request::UpdateDeviceProperties { .. } => "POST",
            _ => "GET",
        }
    }

    /// The path below the Graph base URL (what `$batch` wants).
    pub(crate) fn path(&self) -> String {
        match self {
            Request::List {
                page: Some(page), ..
            }
            | Request::Identities {
                page: Some(page), ..
            } => page.clone(),
            Request::Post { device, .. } | Request::List { device, .. } => {
                format!("{IDENTITIES}/{device}/deploymentProfile/assignments")
            }
            Request::UpdateDeviceProperties { device, .. } => {
                format!("{IDENTITIES}/{device}/updateDeviceProperties")
            }
            Request::Identity { device } => format!("{IDENTITIES}/{device}"),
            Request::Identities { top, page: None } => format!("{IDENTITIES}?$top={top}"),
            Request::IdentitiesWithSerial { serial } => {
                // An OData string literal doubles its quotes; the filter is then percent-encoded.
                let filter = format!("contains(serialNumber,'{}')", serial.replace('\'', "''"));
                let encoded: String =
                    url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
                format!("{IDENTITIES}?$filter={encoded}")
            }
        }
    }

    /// The device the request is about, if it is about one.
    pub(crate) fn device(&self) -> Option<Uuid> {
        match self {
            Request::Post { device, .. }
            | Request::List { device, .. }
            | Request::UpdateDeviceProperties { device, .. }
            | Request::Identity { device } => Some(*device),
            Request::Identities { .. } | Request::IdentitiesWithSerial { .. } => None,
        }
    }

    pub(crate) fn body(&self) -> Option<serde_json::Value> {
        match self {
            Request::Post { body, .. } => serde_json::to_value(body).ok(),
            Request::UpdateDeviceProperties { group_tag, .. } => {
                Some(serde_json::json!({ "groupTag": group_tag }))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_below_the_base() {
        let first = Request::Identities {
            top: 100,
            page: None,
        };
        assert_eq!(first.path(), format!("{IDENTITIES}?$top=100"));
        let serial = Request::IdentitiesWithSerial {
            serial: "O'Brien 7".into(),
        };
        assert_eq!(
            serial.path(),
            format!("{IDENTITIES}?$filter=contains%28serialNumber%2C%27O%27%27Brien+7%27%29")
        );
    }

    #[test]
    fn a_group_tag_is_a_post_with_its_body() {
        let device = Uuid::nil();
        let tag = Request::UpdateDeviceProperties {
            device,
            group_tag: "Kiosk".into(),
        };
        assert_eq!(tag.method(), "POST");
        assert_eq!(
            tag.path(),
            format!("{IDENTITIES}/{device}/updateDeviceProperties")
        );
        assert_eq!(tag.body(), Some(serde_json::json!({"groupTag": "Kiosk"})));
        let read = Request::Identity { device };
        assert_eq!((read.method(), read.body()), ("GET", None));
        assert_eq!(read.path(), format!("{IDENTITIES}/{device}"));
    }
}
