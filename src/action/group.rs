//! `group`: make the device a member of a static (assigned) Entra security group, which a
//! deployment profile targets. Entra takes up to 20 members in one `PATCH /groups/{id}` (the
//! `members@odata.bind` list), in the directory's own throttle bucket (3,000 writes per
//! 150 s per app per tenant, far above Intune's 100 per 20 s): 10,000 devices are 500 writes.
//!
//! The member is the device's directory object, found from the identity's `azureAdDeviceId`
//! (the Entra device's `deviceId`). One ref that is already a member, or names no object, fails
//! the whole request with 400: the request is split and its halves sent again, so one bad
//! device costs a few requests and never fails the others.

use uuid::Uuid;

use crate::graph::answer::ErrorInfo;
use crate::graph::request::Request;

/// Most members one PATCH adds (Entra's limit).
pub const MAX_MEMBERS: usize = 20;

/// The PATCH adding the directory objects `oids` to `group`.
pub(crate) fn write<S: AsRef<str>>(group: Uuid, oids: &[S], graph_url: &str) -> Request {
    Request::AddMembers {
        group,
        refs: oids
            .iter()
            .map(|o| member_ref(graph_url, o.as_ref()))
            .collect(),
    }
}

/// The `directoryObjects` URL Entra binds a member by, on the Graph host `graph_url` names
/// (`https://graph.microsoft.com/beta` → `https://graph.microsoft.com/v1.0/directoryObjects/…`):
/// national clouds have their own host.
pub fn member_ref(graph_url: &str, oid: &str) -> String {
    let origin = url::Url::parse(graph_url)
        .ok()
        .map(|u| u.origin().ascii_serialization())
        .filter(|o| o != "null")
        .unwrap_or_else(|| "https://graph.microsoft.com".to_string());
    format!("{origin}/v1.0/directoryObjects/{oid}")
}

/// The group, to check that it exists and takes members.
pub(crate) fn read(group: Uuid) -> Request {
    Request::Group { group }
}

/// Whether Graph's 400 says a ref is already a member ("One or more added object references
/// already exist for the following modified properties: 'members'.").
pub fn already_member(e: &ErrorInfo) -> bool {
    e.message.to_ascii_lowercase().contains("already exist")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_are_on_the_clouds_graph_host() {
        assert_eq!(
            member_ref("https://graph.microsoft.us/beta", "o1"),
            "https://graph.microsoft.us/v1.0/directoryObjects/o1"
        );
        assert_eq!(
            member_ref("http://127.0.0.1:4000/beta", "o2"),
            "http://127.0.0.1:4000/v1.0/directoryObjects/o2"
        );
        let Request::AddMembers { refs, group } = write(Uuid::nil(), &["a", "b"], "https://g/beta")
        else {
            panic!("not a member add")
        };
        assert_eq!((refs.len(), group), (2, Uuid::nil()));
    }

    #[test]
    fn graphs_duplicate_member_message_is_recognised() {
        let e = ErrorInfo {
            code: "Request_BadRequest".into(),
            message: "One or more added object references already exist for the following \
                      modified properties: 'members'."
                .into(),
        };
        assert!(already_member(&e));
        let other = ErrorInfo {
            message: "Resource 'x' does not exist".into(),
            ..e
        };
        assert!(!already_member(&other));
    }
}
