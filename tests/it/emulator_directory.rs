//! The emulator's Entra directory, driven in-process over HTTP (port 0, reqwest): identities'
//! `azureAdDeviceId`, device objects paged and filtered, groups by id and name, member writes
//! (PATCH binds of up to 20, all or nothing; POST and DELETE of one `$ref`), deployment
//! profiles and their group assignments, the directory's own throttle bucket, faults, stats
//! and tenants. Windows are long (or absent) so that tests count, never time.

use std::collections::HashSet;
use std::time::Duration;

use crate::common;

use autopilot_bulk::emulator::{
    EmulatorConfig, Group, Limit, Outage, Profile, ProfileTarget, azure_ad_device_id,
    directory_object_id,
};
use common::{GraphEnv, SEED_BODY, device, header};
use reqwest::Method;
use serde_json::{Value, json};

const IDENTITIES: &str = "/deviceManagement/windowsAutopilotDeviceIdentities";
const PROFILES: &str = "/deviceManagement/windowsAutopilotDeploymentProfiles";
const GROUP: &str = "5e7e0c2a-3b1d-4c8e-9f6a-0d1c2b3a4f5e";
const OTHER_GROUP: &str = "6f8f1d3b-4c2e-4d9f-8a7b-1e2d3c4b5a6f";
const DYNAMIC: &str = "7a9a2e4c-5d3f-4e0a-9b8c-2f3e4d5c6b7a";
const PROFILE: &str = "0f0f0f0f-0000-4000-8000-000000000001";

const ALREADY: &str = "One or more added object references already exist for the following \
                       modified properties: 'members'.";

/// `n` identities `device(i)` with serials `SER-i`, known to the tenant (a device list).
fn identities(n: u32) -> EmulatorConfig {
    let identities: Vec<(String, String)> =
        (0..n).map(|i| (device(i), format!("SER-{i}"))).collect();
    EmulatorConfig {
        devices: Some(identities.iter().map(|(id, _)| id.clone()).collect()),
        identities,
        ..EmulatorConfig::default()
    }
}

fn object(i: u32) -> String {
    directory_object_id(&device(i)).unwrap()
}

fn reference(object: &str) -> String {
    format!("https://graph.microsoft.com/v1.0/directoryObjects/{object}")
}

/// Send below the Graph base (`{url}/beta`), or, for a path starting `http`, to that URL.
async fn send(env: &GraphEnv, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = if path.starts_with("http") {
        path.to_string()
    } else {
        format!("{}{path}", env.emu.graph_url())
    };
    let mut request = env.http.request(method, url).bearer_auth(&env.token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    };
    (status, body)
}

async fn get(env: &GraphEnv, path: &str) -> (u16, Value) {
    send(env, Method::GET, path, None).await
}

/// `PATCH /groups/{group}` binding these objects.
async fn bind(env: &GraphEnv, group: &str, objects: &[String]) -> (u16, Value) {
    let refs: Vec<String> = objects.iter().map(|o| reference(o)).collect();
    let body = json!({ "members@odata.bind": refs });
    send(env, Method::PATCH, &format!("/groups/{group}"), Some(body)).await
}

/// Follow a collection from `first` to its end: each page's values.
async fn pages(env: &GraphEnv, first: &str) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    let mut next = Some(first.to_string());
    while let Some(at) = next {
        let (status, body) = get(env, &at).await;
        assert_eq!(status, 200, "{body}");
        out.push(body["value"].as_array().unwrap().clone());
        next = body["@odata.nextLink"].as_str().map(str::to_string);
        assert!(out.len() < 100, "the collection does not end");
    }
    out
}

/// The object ids of a group's members, all pages.
async fn members(env: &GraphEnv, group: &str) -> Vec<String> {
    let first =
        format!("/groups/{group}/members/microsoft.graph.device?$select=id,deviceId&$top=999");
    pages(env, &first)
        .await
        .concat()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

fn error(body: &Value) -> (&str, &str) {
    (
        body["error"]["code"].as_str().unwrap_or(""),
        body["error"]["message"].as_str().unwrap_or(""),
    )
}

#[tokio::test]
async fn identities_list_their_azure_ad_device_id() {
    let env = GraphEnv::new(EmulatorConfig {
        no_device_id: vec!["SER-1".into()],
        not_in_directory: vec![device(2)],
        ..identities(3)
    })
    .await;
    let (status, body) = get(
        &env,
        &format!("{IDENTITIES}?$select=serialNumber,azureAdDeviceId"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let listed: Vec<&str> = body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["azureAdDeviceId"].as_str().unwrap())
        .collect();
    let expected = [
        azure_ad_device_id(&device(0)).unwrap(),
        String::new(),
        azure_ad_device_id(&device(2)).unwrap(),
    ];
    assert_eq!(listed, expected);
    let (_, one) = get(&env, &format!("{IDENTITIES}/{}", device(0))).await;
    assert_eq!(one["azureAdDeviceId"], json!(expected[0]));
    assert_eq!(one["azureActiveDirectoryDeviceId"], json!(expected[0]));
    // The three ids of one device differ.
    let ids: HashSet<String> = [device(0), expected[0].clone(), object(0)].into();
    assert_eq!(ids.len(), 3);
    // Only device 0 is in the directory: 2 lists its device id but has no object.
    let (_, devices) = get(&env, "/devices").await;
    assert_eq!(devices["value"].as_array().unwrap().len(), 1);
    let filter = format!("/devices?$filter=deviceId eq '{}'", expected[2]);
    assert_eq!(get(&env, &filter).await.1["value"], json!([]));
}

#[tokio::test]
async fn devices_are_paged_and_selected() {
    let env = GraphEnv::new(EmulatorConfig {
        directory_page_size: 2,
        ..identities(5)
    })
    .await;
    let all = pages(&env, "/devices?$select=id,deviceId&$top=999").await;
    assert_eq!(all.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    let got: Vec<Value> = all.concat();
    let expected: Vec<Value> = (0..5)
        .map(|i| json!({"id": object(i), "deviceId": azure_ad_device_id(&device(i)).unwrap()}))
        .collect();
    assert_eq!(got, expected);
    // $top below the cap gives smaller pages; v1.0 serves them too and its links stay in v1.0.
    let (status, body) = get(&env, &format!("{}/v1.0/devices?$top=1", env.emu.url())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"][0]["displayName"], "SER-0");
    let next = body["@odata.nextLink"].as_str().unwrap();
    assert!(next.contains("/v1.0/devices?$top=1&$skiptoken="), "{next}");
    assert_eq!(pages(&env, next).await.len(), 4);
    for bad in [
        "/devices?$top=1000",
        "/devices?$top=0",
        "/devices?$select=serialNumber",
    ] {
        assert_eq!(get(&env, bad).await.0, 400, "{bad}");
    }
    assert_eq!(env.emu.stats().directory_reads, 3 + 1 + 4 + 3);
}

#[tokio::test]
async fn devices_filter_by_device_id_gives_zero_or_one() {
    let env = GraphEnv::new(identities(3)).await;
    let device_id = azure_ad_device_id(&device(1)).unwrap();
    let (status, body) = get(
        &env,
        &format!(
            "/devices?$filter=deviceId eq '{}'",
            device_id.to_uppercase()
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"].as_array().unwrap().len(), 1);
    assert_eq!(body["value"][0]["id"], json!(object(1)));
    assert_eq!(body["value"][0]["deviceId"], json!(device_id));
    // An unknown device id, or the identity id itself, finds nothing.
    for id in [azure_ad_device_id(&device(7)).unwrap(), device(1)] {
        let (status, body) = get(&env, &format!("/devices?$filter=deviceId eq '{id}'")).await;
        assert_eq!((status, body["value"].clone()), (200, json!([])));
    }
    let (status, body) = get(&env, "/devices?$filter=startswith(displayName,'SER')").await;
    assert_eq!((status, error(&body).0), (400, "Request_UnsupportedQuery"));
}

#[tokio::test]
async fn groups_by_id_and_by_name() {
    let env = GraphEnv::new(EmulatorConfig {
        groups: vec![
            Group::assigned(GROUP, "Kiosks"),
            Group::assigned(OTHER_GROUP, "kiosks"),
            Group::dynamic(DYNAMIC, "Sales devices"),
        ],
        ..identities(1)
    })
    .await;
    let (status, g) = get(
        &env,
        &format!(
            "/groups/{}?$select=id,displayName,groupTypes",
            GROUP.to_uppercase()
        ),
    )
    .await;
    assert_eq!(status, 200, "{g}");
    assert_eq!(g["id"], GROUP);
    assert_eq!(g["groupTypes"], json!([]));
    assert!(g.get("securityEnabled").is_none(), "{g}");
    let (_, d) = get(&env, &format!("/groups/{DYNAMIC}")).await;
    assert_eq!(d["groupTypes"], json!(["DynamicMembership"]));
    assert_eq!(d["securityEnabled"], true);
    assert!(d["membershipRule"].is_string());
    // Names repeat and compare ignoring case; quotes are doubled.
    let named = |name: &str| {
        format!(
            "/groups?$filter=displayName eq '{}'&$select=id",
            name.replace('\'', "''")
        )
    };
    let (_, two) = get(&env, &named("KIOSKS")).await;
    let ids: Vec<&str> = two["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [GROUP, OTHER_GROUP]);
    assert_eq!(get(&env, &named("O'Neil")).await.1["value"], json!([]));
    // Unknown: 404; not a GUID: 400.
    let (status, body) = get(&env, &format!("/groups/{}", device(9))).await;
    assert_eq!((status, error(&body).0), (404, "Request_ResourceNotFound"));
    let (status, body) = get(&env, "/groups/kiosks").await;
    assert_eq!((status, error(&body).0), (400, "Request_BadRequest"));
}

#[tokio::test]
async fn without_configured_groups_any_guid_is_an_assigned_group() {
    let env = GraphEnv::new(identities(2)).await;
    let (status, g) = get(&env, &format!("/groups/{GROUP}")).await;
    assert_eq!(status, 200, "{g}");
    assert_eq!(g["groupTypes"], json!([]));
    assert_eq!(bind(&env, GROUP, &[object(0)]).await.0, 204);
    assert_eq!(members(&env, GROUP).await, [object(0)]);
    assert_eq!(get(&env, "/groups").await.1["value"], json!([]));
}

#[tokio::test]
async fn a_patch_binds_up_to_20_and_refuses_21_whole() {
    let env = GraphEnv::new(EmulatorConfig {
        directory_page_size: 7,
        ..identities(41)
    })
    .await;
    let first: Vec<String> = (0..20).map(object).collect();
    let (status, body) = bind(&env, GROUP, &first).await;
    assert_eq!((status, body), (204, Value::Null));
    let held = members(&env, GROUP).await;
    assert_eq!(held, first);
    let too_many: Vec<String> = (20..41).map(object).collect();
    let (status, body) = bind(&env, GROUP, &too_many).await;
    assert_eq!(
        (status, error(&body).0),
        (400, "Request_BadRequest"),
        "{body}"
    );
    assert_eq!(members(&env, GROUP).await.len(), 20);
    let stats = env.emu.stats();
    assert_eq!((stats.group_writes, stats.members_added), (2, 20));
    assert_eq!(
        stats.write_requests, 0,
        "member writes are not Intune writes"
    );
}

#[tokio::test]
async fn one_duplicate_reference_refuses_the_whole_patch() {
    let env = GraphEnv::new(identities(5)).await;
    assert_eq!(bind(&env, GROUP, &[object(0)]).await.0, 204);
    let (status, body) = bind(&env, GROUP, &[object(1), object(0), object(2)]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error(&body), ("Request_BadRequest", ALREADY));
    // The same reference twice in one request is refused as well.
    let (status, body) = bind(&env, GROUP, &[object(3), object(3)]).await;
    assert_eq!((status, error(&body).1), (400, ALREADY));
    assert_eq!(members(&env, GROUP).await, [object(0)]);
    let stats = env.emu.stats();
    assert_eq!(
        (stats.members_added, stats.duplicate_member_attempts),
        (1, 2)
    );
}

#[tokio::test]
async fn one_unknown_reference_refuses_the_whole_patch() {
    let env = GraphEnv::new(EmulatorConfig {
        not_in_directory: vec!["SER-2".into()],
        ..identities(3)
    })
    .await;
    // A device the tenant does not know, and one whose Entra object is gone.
    for missing in [object(9), object(2)] {
        let (status, body) = bind(&env, GROUP, &[object(0), missing.clone(), object(1)]).await;
        assert_eq!(status, 400, "{body}");
        let (code, message) = error(&body);
        assert_eq!(code, "Request_BadRequest");
        assert!(
            message.starts_with(&format!("Resource '{missing}' does not exist")),
            "{message}"
        );
    }
    let (status, _) = send(
        &env,
        Method::PATCH,
        &format!("/groups/{GROUP}"),
        Some(json!({"members@odata.bind": ["https://graph.microsoft.com/v1.0/directoryObjects/nope"]})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(members(&env, GROUP).await, Vec::<String>::new());
    assert_eq!(env.emu.stats().members_added, 0);
}

#[tokio::test]
async fn a_dynamic_group_refuses_member_writes() {
    let env = GraphEnv::new(EmulatorConfig {
        groups: vec![Group::dynamic(DYNAMIC, "Sales devices")],
        members: vec![(DYNAMIC.into(), "SER-0".into())],
        ..identities(2)
    })
    .await;
    let (status, body) = bind(&env, DYNAMIC, &[object(1)]).await;
    assert_eq!(
        (status, error(&body).0),
        (400, "Request_BadRequest"),
        "{body}"
    );
    let add = json!({"@odata.id": reference(&object(1))});
    let path = format!("/groups/{DYNAMIC}/members/$ref");
    assert_eq!(send(&env, Method::POST, &path, Some(add)).await.0, 400);
    let path = format!("/groups/{DYNAMIC}/members/{}/$ref", object(0));
    assert_eq!(send(&env, Method::DELETE, &path, None).await.0, 400);
    // Its first member stays, none was added; other groups answer 404 once groups are given.
    assert_eq!(members(&env, DYNAMIC).await, [object(0)]);
    assert_eq!(bind(&env, GROUP, &[object(1)]).await.0, 404);
    assert_eq!(env.emu.stats().members_added, 0);
}

#[tokio::test]
async fn one_member_is_added_by_ref_and_removed() {
    let env = GraphEnv::new(identities(3)).await;
    let path = format!("/groups/{GROUP}/members/$ref");
    let add = |o: String| {
        // Any host and version: the last segment names the object.
        Some(json!({"@odata.id": format!("https://graph.microsoft.us/beta/directoryObjects/{o}")}))
    };
    assert_eq!(
        send(&env, Method::POST, &path, add(object(0).to_uppercase()))
            .await
            .0,
        204
    );
    let (status, body) = send(&env, Method::POST, &path, add(object(0))).await;
    assert_eq!((status, error(&body).1), (400, ALREADY));
    let (status, body) = send(&env, Method::POST, &path, add(object(8))).await;
    assert_eq!((status, error(&body).0), (404, "Request_ResourceNotFound"));
    assert_eq!(members(&env, GROUP).await, [object(0)]);
    let one = format!("/groups/{GROUP}/members/{}/$ref", object(0));
    assert_eq!(send(&env, Method::DELETE, &one, None).await.0, 204);
    let (status, body) = send(&env, Method::DELETE, &one, None).await;
    assert_eq!((status, error(&body).0), (404, "Request_ResourceNotFound"));
    assert_eq!(members(&env, GROUP).await, Vec::<String>::new());
    let stats = env.emu.stats();
    assert_eq!(
        (
            stats.group_writes,
            stats.members_added,
            stats.members_removed,
            stats.duplicate_member_attempts
        ),
        (3, 1, 1, 1)
    );
}

#[tokio::test]
async fn members_are_paged_and_typed_unless_cast() {
    let env = GraphEnv::new(EmulatorConfig {
        groups: vec![Group::assigned(GROUP, "Kiosks")],
        // By serial and by id.
        members: vec![(GROUP.into(), "SER-2".into()), (GROUP.into(), device(0))],
        directory_page_size: 100,
        ..identities(3)
    })
    .await;
    let cast = format!("/groups/{GROUP}/members/microsoft.graph.device?$select=id,deviceId&$top=1");
    let all = pages(&env, &cast).await;
    assert_eq!(all.len(), 2);
    assert_eq!(
        all[0][0],
        json!({"id": object(2), "deviceId": azure_ad_device_id(&device(2)).unwrap()})
    );
    let (_, plain) = get(&env, &format!("/groups/{GROUP}/members")).await;
    assert_eq!(plain["value"][1]["@odata.type"], "#microsoft.graph.device");
    assert_eq!(plain["value"][1]["id"], json!(object(0)));
    assert_eq!(plain["value"][1]["displayName"], "SER-0");
}

#[tokio::test]
async fn the_directory_throttles_apart_from_intune() {
    let env = GraphEnv::new(EmulatorConfig {
        limit: Limit::new(1, Duration::from_secs(3600)),
        directory_limit: Limit::new(2, Duration::from_secs(3600)),
        violation_grace: Duration::ZERO,
        ..identities(6)
    })
    .await;
    assert_eq!(env.post(&device(0), SEED_BODY).await.status(), 201);
    assert_eq!(env.post(&device(1), SEED_BODY).await.status(), 429);
    // Intune refusing the tenant leaves its directory alone.
    assert_eq!(bind(&env, GROUP, &[object(0)]).await.0, 204);
    assert_eq!(bind(&env, GROUP, &[object(1)]).await.0, 204);
    let refs = json!({"members@odata.bind": [reference(&object(2))]});
    let r = env
        .http
        .patch(format!("{}/groups/{GROUP}", env.emu.graph_url()))
        .bearer_auth(&env.token)
        .json(&refs)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!(wait > 60, "{wait}");
    // Coming back before the Retry-After is a violation, in the directory's bucket too.
    assert_eq!(bind(&env, GROUP, &[object(3)]).await.0, 429);
    // Directory reads have their own, larger window: not refused.
    assert_eq!(get(&env, "/devices").await.0, 200);
    assert_eq!(members(&env, GROUP).await, [object(0), object(1)]);
    let stats = env.emu.stats();
    assert_eq!((stats.throttled, stats.violations), (3, 1));
    assert_eq!((stats.group_writes, stats.members_added), (4, 2));
}

#[tokio::test]
async fn a_dropped_patch_has_added_its_members() {
    let env = GraphEnv::new(EmulatorConfig {
        fault_drop: 1.0,
        ..identities(2)
    })
    .await;
    let refs: Vec<String> = [object(0), object(1)]
        .iter()
        .map(|o| reference(o))
        .collect();
    let sent = env
        .http
        .patch(format!("{}/groups/{GROUP}", env.emu.graph_url()))
        .bearer_auth(&env.token)
        .json(&json!({ "members@odata.bind": refs }))
        .send()
        .await;
    assert!(
        sent.is_err(),
        "the connection should have been dropped: {sent:?}"
    );
    let stats = env.emu.stats();
    assert_eq!(
        (
            stats.group_writes,
            stats.members_added,
            stats.dropped_connections
        ),
        (1, 2, 1)
    );
}

#[tokio::test]
async fn a_member_write_starts_the_outage_clock() {
    let env = GraphEnv::new(EmulatorConfig {
        outage: Some(Outage {
            at: Duration::ZERO,
            length: Duration::from_secs(3600),
            retry_after: Some(7),
        }),
        ..identities(2)
    })
    .await;
    // Up until the first write, which (at zero) is itself refused, and everything after it.
    assert_eq!(get(&env, "/devices").await.0, 200);
    let (status, body) = bind(&env, GROUP, &[object(0)]).await;
    assert_eq!((status, error(&body).0), (503, "ServiceUnavailable"));
    assert_eq!(get(&env, &format!("/groups/{GROUP}/members")).await.0, 503);
    let stats = env.emu.stats();
    assert_eq!(
        (
            stats.outage_requests,
            stats.group_writes,
            stats.members_added
        ),
        (2, 0, 0)
    );
}

#[tokio::test]
async fn profiles_list_with_their_assignments_and_take_new_ones() {
    let env = GraphEnv::new(EmulatorConfig {
        profiles: vec![Profile {
            id: PROFILE.into(),
            display_name: "Kiosk".into(),
            assigned_to: vec![
                ProfileTarget::Group(OTHER_GROUP.into()),
                ProfileTarget::AllDevices,
            ],
        }],
        assign_delay: Duration::from_secs(3600),
        ..identities(2)
    })
    .await;
    let (status, list) = get(&env, &format!("{PROFILES}?$expand=assignments")).await;
    assert_eq!(status, 200, "{list}");
    let profile = &list["value"][0];
    assert_eq!(
        (profile["id"].as_str(), profile["displayName"].as_str()),
        (Some(PROFILE), Some("Kiosk"))
    );
    let targets: Vec<&str> = profile["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["target"]["@odata.type"].as_str().unwrap())
        .collect();
    assert_eq!(
        targets,
        [
            "#microsoft.graph.groupAssignmentTarget",
            "#microsoft.graph.allDevicesAssignmentTarget"
        ]
    );
    assert_eq!(profile["assignments"][0]["target"]["groupId"], OTHER_GROUP);
    assert!(
        get(&env, PROFILES).await.1["value"][0]
            .get("assignments")
            .is_none()
    );

    // A member of the group before the profile is assigned to it: its status starts then.
    assert_eq!(bind(&env, GROUP, &[object(0)]).await.0, 204);
    let env_ref = &env;
    let status_of = |i: u32| {
        let path = format!(
            "{IDENTITIES}/{}?$select=deploymentProfileAssignmentStatus",
            device(i)
        );
        async move { get(env_ref, &path).await.1["deploymentProfileAssignmentStatus"].clone() }
    };
    assert_eq!(status_of(0).await, "notAssigned");
    let body = json!({
        "@odata.type": "#microsoft.graph.windowsAutopilotDeploymentProfileAssignment",
        "target": {"@odata.type": "#microsoft.graph.groupAssignmentTarget", "groupId": GROUP},
    });
    let path = format!("{PROFILES}/{PROFILE}/assignments");
    let (status, created) = send(&env, Method::POST, &path, Some(body.clone())).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["id"], json!(format!("{PROFILE}_{GROUP}")));
    assert_eq!(created["target"]["groupId"], GROUP);
    assert_eq!(status_of(0).await, "pending");
    // A member added later gets it as well; a second assignment to the group is refused.
    assert_eq!(bind(&env, GROUP, &[object(1)]).await.0, 204);
    assert_eq!(status_of(1).await, "pending");
    let (status, again) = send(&env, Method::POST, &path, Some(body)).await;
    assert_eq!((status, error(&again).0), (409, "Conflict"));
    let (_, held) = get(&env, &path).await;
    assert_eq!(held["value"].as_array().unwrap().len(), 3);
    let (_, one) = get(&env, &format!("{PROFILES}/{PROFILE}?$expand=assignments")).await;
    assert_eq!(
        one["assignments"][2]["id"],
        json!(format!("{PROFILE}_{GROUP}"))
    );
    let (status, body) = get(&env, &format!("{PROFILES}/{}", device(5))).await;
    assert_eq!((status, error(&body).0), (404, "ResourceNotFound"));
    let stats = env.emu.stats();
    assert_eq!(
        (stats.profile_assignments_created, stats.write_requests),
        (1, 0)
    );
}

#[tokio::test]
async fn tenants_have_their_own_members_and_profile_assignments() {
    let config = EmulatorConfig {
        tenants: vec!["contoso".into(), "fabrikam".into()],
        members: vec![(GROUP.into(), "SER-0".into())],
        ..identities(3)
    };
    let a = GraphEnv::as_tenant(config, "contoso").await;
    let b_token =
        common::token_at(&a.http, &a.emu.authority_url(), "fabrikam", "app", "s3cret").await;
    assert_eq!(bind(&a, GROUP, &[object(1)]).await.0, 204);
    let assign = json!({
        "target": {"@odata.type": "#microsoft.graph.groupAssignmentTarget", "groupId": GROUP},
    });
    let path = format!("{PROFILES}/{PROFILE}/assignments");
    assert_eq!(send(&a, Method::POST, &path, Some(assign)).await.0, 201);
    // Fabrikam's token against the same emulator: its own members (the first one only) and
    // no profile assignments.
    let as_b = |path: String| {
        let (http, token, url) = (a.http.clone(), b_token.clone(), a.emu.graph_url());
        async move {
            let r = http
                .get(format!("{url}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    let held = as_b(format!("/groups/{GROUP}/members?$select=id")).await;
    assert_eq!(
        held["value"],
        json!([{"@odata.type": "#microsoft.graph.device", "id": object(0)}])
    );
    assert_eq!(as_b(PROFILES.to_string()).await["value"], json!([]));
    assert_eq!(members(&a, GROUP).await, [object(0), object(1)]);
    let stats = a.emu.stats();
    assert_eq!(stats.tenants["contoso"].members_added, 1);
    assert_eq!(stats.tenants["fabrikam"].members_added, 0);
    assert_eq!(stats.tenants["contoso"].profile_assignments_created, 1);
    assert_eq!(stats.members_added, 1);
}

#[tokio::test]
async fn member_writes_ride_in_batches_and_v1_serves_only_the_directory() {
    let env = GraphEnv::new(identities(2)).await;
    let r = env
        .batch(json!({"requests": [{
            "id": "1",
            "method": "PATCH",
            "url": format!("/groups/{GROUP}"),
            "headers": {"Content-Type": "application/json"},
            "body": {"members@odata.bind": [reference(&object(1))]},
        }]}))
        .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["responses"][0]["status"], 204, "{body}");
    assert_eq!(members(&env, GROUP).await, [object(1)]);
    let v1 = format!("{}/v1.0", env.emu.url());
    assert_eq!(
        get(&env, &format!("{v1}/groups/{GROUP}/members")).await.0,
        200
    );
    let (status, body) = get(&env, &format!("{v1}{IDENTITIES}")).await;
    assert_eq!((status, error(&body).0), (400, "BadRequest"));
}

#[tokio::test]
async fn a_directory_setup_naming_nothing_refuses_to_start() {
    let bad = [
        EmulatorConfig {
            members: vec![(GROUP.into(), "SER-9".into())],
            ..identities(1)
        },
        EmulatorConfig {
            groups: vec![Group::assigned("kiosks", "Kiosks")],
            ..identities(1)
        },
        EmulatorConfig {
            not_in_directory: vec![device(5)],
            ..identities(1)
        },
    ];
    for config in bad {
        let started = autopilot_bulk::emulator::Emulator::start(config).await;
        let e = started.expect_err("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    }
}

#[test]
fn emulate_flags_set_up_the_directory() {
    use clap::Parser as _;
    let cli = autopilot_bulk::cli::Cli::try_parse_from([
        "autopilot-bulk",
        "emulate",
        "--group",
        &format!("{GROUP}=Kiosks"),
        "--dynamic-group",
        DYNAMIC,
        "--member",
        &format!("{GROUP}=SER-1"),
        "--not-in-directory",
        "SER-2",
        "--no-device-id",
        "SER-3",
        "--profile",
        &format!("{PROFILE}=Kiosk:{GROUP},all-devices"),
        "--directory-limit",
        "30/150s",
        "--directory-page-size",
        "999",
    ])
    .unwrap();
    let autopilot_bulk::cli::Command::Emulate(args) = cli.command else {
        panic!("not emulate")
    };
    let c = args.to_config().unwrap();
    assert_eq!(
        c.groups,
        [
            Group::assigned(GROUP, "Kiosks"),
            Group::dynamic(DYNAMIC, "Group 7a9a2e4c")
        ]
    );
    assert_eq!(c.members, [(GROUP.to_string(), "SER-1".to_string())]);
    assert_eq!(
        (c.not_in_directory, c.no_device_id),
        (vec!["SER-2".to_string()], vec!["SER-3".to_string()])
    );
    assert_eq!(
        c.profiles[0].assigned_to,
        [
            ProfileTarget::Group(GROUP.into()),
            ProfileTarget::AllDevices
        ]
    );
    assert_eq!(c.directory_limit, Limit::new(30, Duration::from_secs(150)));
    assert_eq!(c.directory_page_size, 999);
    // The defaults: Entra ID's write limit, pages of 100, any group.
    let cli = autopilot_bulk::cli::Cli::try_parse_from(["autopilot-bulk", "emulate"]).unwrap();
    let autopilot_bulk::cli::Command::Emulate(args) = cli.command else {
        panic!("not emulate")
    };
    let c = args.to_config().unwrap();
    assert_eq!(
        (c.directory_limit, c.directory_page_size),
        (Limit::directory(), 100)
    );
    assert!(c.groups.is_empty() && c.profiles.is_empty());
    for bad in [
        ["--group", "kiosks"],
        ["--member", "SER-1"],
        ["--directory-page-size", "1000"],
    ] {
        let mut argv = vec!["autopilot-bulk", "emulate"];
        argv.extend(bad);
        assert!(
            autopilot_bulk::cli::Cli::try_parse_from(argv).is_err(),
            "{bad:?}"
        );
    }
}
