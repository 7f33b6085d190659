//! Judging an assignment body the way Graph does, on raw JSON. This deliberately does not
//! reuse the client's serde model: the emulator is an independent judge, so a bug in the
//! model cannot make both sides agree on a wrong body.

use serde_json::{Map, Value, json};

pub(crate) const ASSIGNMENT_TYPE: &str =
    "#microsoft.graph.windowsAutopilotDeploymentProfileAssignment";

const FILTER_ID: &str = "deviceAndAppManagementAssignmentFilterId";
const FILTER_TYPE: &str = "deviceAndAppManagementAssignmentFilterType";

/// What a target kind needs beyond the base type's filter properties.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Needs {
    Nothing,
    Group,
    Collection,
}

/// The six target kinds, without the leading `#` (the seed writes the base type without it;
/// Graph accepts both spellings).
const KINDS: [(&str, Needs); 6] = [
    (
        "microsoft.graph.deviceAndAppManagementAssignmentTarget",
        Needs::Nothing,
    ),
    ("microsoft.graph.groupAssignmentTarget", Needs::Group),
    (
        "microsoft.graph.exclusionGroupAssignmentTarget",
        Needs::Group,
    ),
    ("microsoft.graph.allDevicesAssignmentTarget", Needs::Nothing),
    (
        "microsoft.graph.allLicensedUsersAssignmentTarget",
        Needs::Nothing,
    ),
    (
        "microsoft.graph.configurationManagerCollectionAssignmentTarget",
        Needs::Collection,
    ),
];

/// A GUID the way Graph writes them in paths and ids: 8-4-4-4-12 hex digits.
pub(crate) fn is_guid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
}

fn unknown_property(name: &str, on: &str) -> String {
    format!(
        "The property '{name}' does not exist on type '{on}'. Make sure to only use property \
         names that are defined by the type."
    )
}

fn invalid(name: &str, value: &Value, why: &str) -> String {
    format!("Invalid value for property '{name}': {value} {why}.")
}

/// What Graph says of a payload it cannot read as JSON.
pub(crate) const UNREADABLE_JSON: &str = "Unable to read JSON request payload. Please ensure \
     Content-Type header is set and payload is of valid JSON format.";

/// A request body as Graph first reads it: JSON, and an object.
pub(crate) fn json_object(body: &[u8]) -> Result<Map<String, Value>, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("{UNREADABLE_JSON} ({e})"))?;
    let Value::Object(body) = value else {
        return Err("The request payload must be a JSON object.".into());
    };
    Ok(body)
}

/// Whether a `Content-Type` says JSON: Graph refuses a write body that is not declared so.
pub(crate) fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|t| {
        t.trim()
            .to_ascii_lowercase()
            .starts_with("application/json")
    })
}

/// Check a POST body; on success return the object to store (without `id`, which the caller
/// assigns), with `@odata.type` spellings normalised to `#microsoft.graph...`.
pub(crate) fn assignment(body: &[u8]) -> Result<Map<String, Value>, String> {
    let body = json_object(body)?;
    let this_type = &ASSIGNMENT_TYPE[1..];
    let mut out = Map::new();
    out.insert("@odata.type".into(), json!(ASSIGNMENT_TYPE));
    let mut target = None;
    for (name, value) in &body {
        match name.as_str() {
            "@odata.type" => {
                let ok = value
                    .as_str()
                    .is_some_and(|t| t.trim_start_matches('#') == this_type);
                if !ok {
                    return Err(format!(
                        "A type named {value} could not be resolved by the model; expected \
                         '{ASSIGNMENT_TYPE}'."
                    ));
                }
            }
            "id" => {
                if !(value.is_string() || value.is_null()) {
                    return Err(invalid(name, value, "is not a string"));
                }
            }
            "target" => target = Some(value),
            "source" => {
                if !matches!(value.as_str(), Some("direct" | "policySets")) {
                    return Err(invalid(name, value, "is not one of direct, policySets"));
                }
                out.insert(name.clone(), value.clone());
            }
            "sourceId" => {
                if !(value.is_string() || value.is_null()) {
                    return Err(invalid(name, value, "is not a string"));
                }
                out.insert(name.clone(), value.clone());
            }
            other => return Err(unknown_property(other, this_type)),
        }
    }
    let target = target.ok_or("The property 'target' is required.")?;
    out.insert("target".into(), Value::Object(self::target(target)?));
    out.entry("source").or_insert(json!("direct"));
    out.entry("sourceId").or_insert(Value::Null);
    Ok(out)
}

/// The properties `updateDeviceProperties` takes. Graph's action refuses any other name.
const DEVICE_PROPERTIES: [&str; 4] = [
    "groupTag",
    "displayName",
    "userPrincipalName",
    "addressableUserName",
];

/// Check an `updateDeviceProperties` body: a JSON object of known string properties (`null`
/// clears one). Returns the properties to store.
pub(crate) fn device_properties(body: &[u8]) -> Result<Map<String, Value>, String> {
    let body = json_object(body)?;
    let action = "microsoft.graph.windowsAutopilotDeviceIdentity.updateDeviceProperties";
    let mut out = Map::new();
    for (name, value) in body {
        if !DEVICE_PROPERTIES.contains(&name.as_str()) {
            return Err(unknown_property(&name, action));
        }
        match value {
            Value::String(_) => out.insert(name, value),
            Value::Null => out.insert(name, json!("")),
            other => return Err(invalid(&name, &other, "is not a string")),
        };
    }
    Ok(out)
}

fn target(value: &Value) -> Result<Map<String, Value>, String> {
    let Value::Object(target) = value else {
        return Err(invalid("target", value, "is not an object"));
    };
    let kind = target
        .get("@odata.type")
        .and_then(Value::as_str)
        .ok_or("The target must carry '@odata.type' naming its kind.")?;
    let bare = kind.trim_start_matches('#');
    let (type_name, needs) = KINDS
        .iter()
        .find(|(name, _)| *name == bare)
        .copied()
        .ok_or_else(|| {
            format!(
                "A type named '{kind}' could not be resolved by the model. When a model is \
                 available, each type name must resolve to a valid type."
            )
        })?;
    let mut out = Map::new();
    out.insert("@odata.type".into(), json!(format!("#{type_name}")));
    for (name, value) in target {
        match name.as_str() {
            "@odata.type" => continue,
            FILTER_ID => {
                if !(value.is_null() || value.as_str().is_some_and(|s| !s.is_empty())) {
                    return Err(invalid(name, value, "is not a non-empty string"));
                }
            }
            FILTER_TYPE => {
                if !(value.is_null()
                    || matches!(value.as_str(), Some("none" | "include" | "exclude")))
                {
                    return Err(invalid(name, value, "is not one of none, include, exclude"));
                }
            }
            "groupId" if needs == Needs::Group => {
                if !value.as_str().is_some_and(is_guid) {
                    return Err(invalid(name, value, "is not a valid GUID"));
                }
            }
            "collectionId" if needs == Needs::Collection => {
                if value.as_str().is_none_or(|s| s.trim().is_empty()) {
                    return Err(invalid(name, value, "is not a non-empty string"));
                }
            }
            other => return Err(unknown_property(other, type_name)),
        }
        out.insert(name.clone(), value.clone());
    }
    match needs {
        Needs::Group if !out.contains_key("groupId") => {
            return Err(format!(
                "The property 'groupId' is required on '{type_name}'."
            ));
        }
        Needs::Collection if !out.contains_key("collectionId") => {
            return Err(format!(
                "The property 'collectionId' is required on '{type_name}'."
            ));
        }
        _ => {}
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Graph's example request body for the assignment POST.
    const SEED: &str = include_str!("../../tests/fixtures/seed_body.json");

    const G: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

    fn check(v: Value) -> Result<Map<String, Value>, String> {
        assignment(v.to_string().as_bytes())
    }

    #[test]
    fn seed_body_is_accepted_and_normalised() {
        let out = assignment(SEED.as_bytes()).unwrap();
        assert_eq!(
            out["target"]["@odata.type"],
            "#microsoft.graph.deviceAndAppManagementAssignmentTarget"
        );
        assert_eq!(out["source"], "policySets");
    }

    #[test]
    fn every_kind_with_what_it_needs_is_accepted() {
        let ok = [
            json!({"@odata.type": "#microsoft.graph.groupAssignmentTarget", "groupId": G}),
            json!({"@odata.type": "microsoft.graph.exclusionGroupAssignmentTarget", "groupId": G}),
            json!({"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget"}),
            json!({"@odata.type": "#microsoft.graph.allLicensedUsersAssignmentTarget",
                   "deviceAndAppManagementAssignmentFilterId": G,
                   "deviceAndAppManagementAssignmentFilterType": "exclude"}),
            json!({"@odata.type": "#microsoft.graph.configurationManagerCollectionAssignmentTarget",
                   "collectionId": "SMS00001"}),
        ];
        for t in ok {
            check(json!({"target": t.clone()})).unwrap_or_else(|e| panic!("{t}: {e}"));
        }
    }

    #[test]
    fn bad_bodies_are_rejected() {
        let bad = [
            json!({}),
            json!([]),
            json!({"target": {"@odata.type": "#microsoft.graph.groupAssignmentTarget", "groupId": "nope"}}),
            json!({"target": {"@odata.type": "#microsoft.graph.groupAssignmentTarget"}}),
            json!({"target": {"@odata.type": "#microsoft.graph.configurationManagerCollectionAssignmentTarget"}}),
            json!({"target": {"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget", "groupId": G}}),
            json!({"target": {"@odata.type": "#microsoft.graph.userTarget"}}),
            json!({"target": {"groupId": G}}),
            json!({"target": "x"}),
            json!({"target": {"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget",
                              "deviceAndAppManagementAssignmentFilterType": "maybe"}}),
            json!({"target": {"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget",
                              "deviceAndAppManagementAssignmentFilterId": ""}}),
            json!({"target": {"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget"}, "source": "other"}),
            json!({"target": {"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget"}, "sourceId": 3}),
            json!({"target": {"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget"}, "extra": 1}),
            json!({"@odata.type": "#microsoft.graph.other", "target": {"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget"}}),
        ];
        for b in bad {
            assert!(check(b.clone()).is_err(), "{b} accepted");
        }
        assert!(assignment(b"{not json").is_err());
        assert!(assignment(b"").is_err());
    }

    #[test]
    fn guids_are_hyphenated() {
        assert!(is_guid(G));
        assert!(!is_guid("0f8fad5bd9cb469fa16570867728950e"));
        assert!(!is_guid("nope"));
    }
}
