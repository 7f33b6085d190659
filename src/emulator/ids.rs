//! The ids that tie an Autopilot identity to its Entra device, derived rather than stored:
//!
//! - `azureAdDeviceId` (the Entra device's `deviceId`) = the identity id XOR
//!   `a5a5a5a5-a5a5-05a5-25a5-a5a5a5a5a5a5`;
//! - the device's directory object `id` (what a group holds as a member) = the identity id XOR
//!   `3c3c3c3c-3c3c-0c3c-1c3c-3c3c3c3c3c3c`.
//!
//! Both masks leave the version nibble and the variant bits alone, so a v4 identity id gives
//! v4-looking ids; they differ from each other and are not zero, so the three ids of one
//! device always differ. XOR undoes itself: from a `deviceId` or an object id the emulator
//! finds the identity again, which lets it answer for devices it was never told about when no
//! device list is given (as the assignment routes accept any id then).
//!
//! Clients must never derive these: they read `azureAdDeviceId` from the identity and the
//! object id from `/devices`. Tests may, through [`azure_ad_device_id`] and
//! [`directory_object_id`].

use uuid::Uuid;

use super::validate::is_guid;

const DEVICE_ID_MASK: u128 = 0xa5a5a5a5_a5a5_05a5_25a5_a5a5a5a5a5a5;
const OBJECT_ID_MASK: u128 = 0x3c3c3c3c_3c3c_0c3c_1c3c_3c3c3c3c3c3c;

fn xor(guid: &str, mask: u128) -> Option<String> {
    if !is_guid(guid) {
        return None;
    }
    let id = Uuid::try_parse(guid).ok()?;
    Some(Uuid::from_u128(id.as_u128() ^ mask).to_string())
}

/// The `azureAdDeviceId` the emulator gives the identity `identity` (a GUID, any case), in
/// lower case; `None` when `identity` is not a GUID.
pub fn azure_ad_device_id(identity: &str) -> Option<String> {
    xor(identity, DEVICE_ID_MASK)
}

/// The directory object id of the identity's Entra device (the id group members are bound
/// by), in lower case; `None` when `identity` is not a GUID.
pub fn directory_object_id(identity: &str) -> Option<String> {
    xor(identity, OBJECT_ID_MASK)
}

/// The identity whose Entra device has this `deviceId`.
pub(crate) fn identity_of_device_id(device_id: &str) -> Option<String> {
    xor(device_id, DEVICE_ID_MASK)
}

/// The identity whose Entra device has this object id.
pub(crate) fn identity_of_object(object_id: &str) -> Option<String> {
    xor(object_id, OBJECT_ID_MASK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fixed_distinct_and_invertible() {
        let identity = "00000001-0000-4000-8000-000000000a12";
        let device_id = azure_ad_device_id(identity).unwrap();
        let object_id = directory_object_id(identity).unwrap();
        assert_eq!(device_id, "a5a5a5a4-a5a5-45a5-a5a5-a5a5a5a5afb7");
        assert_eq!(object_id, "3c3c3c3d-3c3c-4c3c-9c3c-3c3c3c3c362e");
        assert_ne!(device_id, object_id);
        // Any case in, lower case out; v4 stays v4.
        assert_eq!(
            azure_ad_device_id(&identity.to_uppercase()).as_deref(),
            Some(device_id.as_str())
        );
        assert_eq!(Uuid::parse_str(&device_id).unwrap().get_version_num(), 4);
        assert_eq!(identity_of_device_id(&device_id).as_deref(), Some(identity));
        assert_eq!(identity_of_object(&object_id).as_deref(), Some(identity));
        assert_eq!(azure_ad_device_id("not-a-guid"), None);
        assert_eq!(directory_object_id(""), None);
    }
}
