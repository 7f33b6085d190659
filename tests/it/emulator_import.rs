//! The emulator's hardware-hash import, driven in-process over HTTP (port 0, reqwest): the
//! import action and its batch limit, record processing (pending, then complete, 802, 806,
//! 808 at unknown), the Autopilot sync (204, 409 while running, 429 without Retry-After within
//! the interval), registration of completed records into the tenant's identity listing, record
//! deletes, and the counters. Time is tokio's paused clock, advanced by hand.

use std::time::Duration;

use autopilot_bulk::emulator::{EmulatorConfig, ImportRecordState};
use common::{GROUP, SEED_BODY, device, header, token_at};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common;

const RECORDS: &str = "/deviceManagement/importedWindowsAutopilotDeviceIdentities";
const IDENTITIES: &str = "/deviceManagement/windowsAutopilotDeviceIdentities";
const SYNC: &str = "/deviceManagement/windowsAutopilotSettings/sync";
const SETTINGS: &str = "/deviceManagement/windowsAutopilotSettings";
const HASH: &str = "AAECAwQFBgcICQoLDA0ODw==";

struct Env {
    emu: autopilot_bulk::emulator::Emulator,
    http: reqwest::Client,
    token: String,
}

/// One configured identity, `device(0)` with serial `SER-0`, known to the tenant.
async fn env(config: EmulatorConfig) -> Env {
    let identities = vec![(device(0), "SER-0".to_string())];
    let config = EmulatorConfig {
        devices: Some(identities.iter().map(|(id, _)| id.clone()).collect()),
        identities,
        token_ttl: Duration::from_secs(30 * 24 * 3600),
        ..config
    };
    let emu = autopilot_bulk::emulator::Emulator::start(config)
        .await
        .unwrap();
    // A connection per request: none idles in a pool while the clock jumps.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let token = token_at(&http, &emu.authority_url(), "contoso", "app", "s3cret").await;
    Env { emu, http, token }
}

impl Env {
    async fn raw(&self, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.emu.graph_url())
        };
        let mut request = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let r = self.raw(method, path, body).await;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (status, body)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(Method::GET, path, None).await
    }

    async fn import(&self, records: Vec<Value>) -> (u16, Value) {
        let body = json!({ "importedWindowsAutopilotDeviceIdentities": records });
        self.send(Method::POST, &format!("{RECORDS}/import"), Some(body))
            .await
    }

    async fn sync(&self) -> reqwest::Response {
        self.raw(Method::POST, SYNC, None).await
    }

    /// Every record of the listing, following its next links.
    async fn records(&self) -> Vec<Value> {
        let mut all = Vec::new();
        let mut next = Some(RECORDS.to_string());
        while let Some(path) = next {
            let (status, body) = self.get(&path).await;
            assert_eq!(status, 200, "{body}");
            all.extend(body["value"].as_array().unwrap().iter().cloned());
            next = body["@odata.nextLink"].as_str().map(str::to_string);
        }
        all
    }
}

fn record(serial: &str, hash: &str) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.importedWindowsAutopilotDeviceIdentity",
        "serialNumber": serial,
        "productKey": "",
        "hardwareIdentifier": hash,
        "groupTag": "Kiosk",
        "assignedUserPrincipalName": "",
    })
}

fn state(r: &Value) -> (&str, i64) {
    (
        r["state"]["deviceImportStatus"].as_str().unwrap(),
        r["state"]["deviceErrorCode"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn a_batch_over_the_limit_or_with_a_bad_record_stores_nothing() {
    let e = env(EmulatorConfig {
        import_batch_limit: 2,
        ..EmulatorConfig::default()
    })
    .await;
    let three = vec![record("A", HASH), record("B", HASH), record("C", HASH)];
    let (status, body) = e.import(three).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "BadRequest");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("too many"), "{message}");
    let no_hash = json!({"serialNumber": "B"});
    let (status, body) = e.import(vec![record("A", HASH), no_hash]).await;
    assert_eq!(status, 400);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("Record 1"), "{message}");
    assert_eq!(e.import(vec![]).await.0, 400);
    let (status, _) = e
        .send(Method::POST, RECORDS, Some(json!({"serialNumber": "A"})))
        .await;
    assert_eq!(status, 400);
    assert!(e.records().await.is_empty());
    let stats = e.emu.stats();
    assert_eq!((stats.import_requests, stats.records_imported), (4, 0));
}

#[tokio::test(start_paused = true)]
async fn records_go_pending_then_complete_802_806_or_unknown_808() {
    let e = env(EmulatorConfig {
        import_errors: vec![("PF-808".into(), 808)],
        ..EmulatorConfig::default()
    })
    .await;
    let batch = vec![
        record("PF-OK", HASH),
        record("PF-BAD", "not base64!"),
        record("ser-0", HASH),
        record("PF-808", HASH),
    ];
    let (status, body) = e.import(batch).await;
    assert_eq!(status, 200, "{body}");
    let answers = body["value"].as_array().unwrap();
    assert_eq!(answers.len(), 4);
    assert!(answers.iter().all(|r| state(r) == ("pending", 0)));
    assert_eq!(answers[0]["serialNumber"], "PF-OK");
    assert_eq!(answers[0]["hardwareIdentifier"], Value::Null);
    let (status, single) = e
        .send(Method::POST, RECORDS, Some(record("PF-ONE", HASH)))
        .await;
    assert_eq!((status, state(&single)), (201, ("pending", 0)));

    tokio::time::advance(Duration::from_secs(1)).await;
    let listed = e.records().await;
    let states: Vec<(&str, i64)> = listed.iter().map(state).collect();
    assert_eq!(
        states,
        [
            ("complete", 0),
            ("error", 802),
            ("error", 806),
            ("unknown", 808),
            ("complete", 0)
        ]
    );
    assert_eq!(
        listed[1]["state"]["deviceErrorName"],
        "InvalidZtdHardwareHash"
    );
    assert_eq!(
        listed[2]["state"]["deviceErrorName"],
        "ZtdDeviceAlreadyAssigned"
    );
    let registration = listed[0]["state"]["deviceRegistrationId"].as_str().unwrap();
    assert_eq!(registration.len(), 36);
    let id = listed[3]["id"].as_str().unwrap();
    let (status, one) = e.get(&format!("{RECORDS}/{id}")).await;
    assert_eq!((status, state(&one)), (200, ("unknown", 808)));
    assert_eq!(e.get(&format!("{RECORDS}/nope")).await.0, 400);
    let held = e.emu.import_records(None);
    assert_eq!(held[0].0, "PF-OK");
    assert_eq!(held[3].2, "unknown");
    let stats = e.emu.stats();
    assert_eq!((stats.import_requests, stats.records_imported), (2, 5));
    assert!(stats.import_reads >= 2, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn a_sync_registers_completed_records_then_refuses_409_and_429() {
    let e = env(EmulatorConfig {
        import_records: vec![("FOREIGN-1".into(), ImportRecordState::Error)],
        ..EmulatorConfig::default()
    })
    .await;
    let (_, body) = e.import(vec![record("PF-NEW", HASH)]).await;
    let id = body["value"][0]["id"].as_str().unwrap().to_string();
    tokio::time::advance(Duration::from_secs(1)).await;
    let (_, settings) = e.get(SETTINGS).await;
    assert_eq!(settings["syncStatus"], "unknown");
    assert_eq!(settings["lastSyncDateTime"], "0001-01-01T00:00:00Z");

    assert_eq!(e.sync().await.status(), 204);
    let busy = e.sync().await;
    assert_eq!(busy.status(), 409);
    assert_eq!(e.get(SETTINGS).await.1["syncStatus"], "inProgress");
    // Not yet registered while the sync runs.
    let (_, identities) = e.get(IDENTITIES).await;
    assert_eq!(identities["value"].as_array().unwrap().len(), 1);

    tokio::time::advance(Duration::from_secs(2)).await;
    let soon = e.sync().await;
    assert_eq!(soon.status(), 429);
    assert_eq!(header(&soon, "retry-after"), None);
    let body: Value = soon.json().await.unwrap();
    assert_eq!(body["error"]["code"], "TooManyRequests");
    assert_eq!(
        body["error"]["message"],
        "Sync can only be triggered once every 10 minutes"
    );
    assert_eq!(e.get(SETTINGS).await.1["syncStatus"], "completed");

    let (_, one) = e.get(&format!("{RECORDS}/{id}")).await;
    let registration = one["state"]["deviceRegistrationId"].as_str().unwrap();
    let (_, identities) = e.get(IDENTITIES).await;
    let listed = identities["value"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["serialNumber"], "SER-0");
    assert_eq!(listed[1]["serialNumber"], "PF-NEW");
    assert_eq!(listed[1]["id"], registration);
    assert_eq!(listed[1]["groupTag"], "Kiosk");
    assert_eq!(
        listed[1]["deploymentProfileAssignmentStatus"],
        "notAssigned"
    );
    let (status, _) = e.get(&format!("{IDENTITIES}/{registration}")).await;
    assert_eq!(status, 200);
    // Assignable and taggable like a configured identity.
    let assign = format!("{IDENTITIES}/{registration}/deploymentProfile/assignments");
    let seed: Value = serde_json::from_str(SEED_BODY).unwrap();
    assert_eq!(e.send(Method::POST, &assign, Some(seed)).await.0, 201);
    let tag = format!("{IDENTITIES}/{registration}/updateDeviceProperties");
    let body = json!({"groupTag": "Lab"});
    assert_eq!(e.send(Method::POST, &tag, Some(body)).await.0, 204);
    let (_, one) = e.get(&format!("{IDENTITIES}/{registration}")).await;
    assert_eq!(one["groupTag"], "Lab");
    // Its Entra device exists: found by deviceId and bound into a group.
    let device_id = listed[1]["azureAdDeviceId"].as_str().unwrap();
    let filter = format!("/devices?$filter=deviceId%20eq%20'{device_id}'");
    let (_, devices) = e.get(&filter).await;
    let object = devices["value"][0]["id"].as_str().unwrap();
    let bind = json!({"members@odata.bind": [
        format!("https://graph.microsoft.com/v1.0/directoryObjects/{object}")
    ]});
    let (status, _) = e
        .send(Method::PATCH, &format!("/groups/{GROUP}"), Some(bind))
        .await;
    assert_eq!(status, 204);

    // Deleting the record leaves the device registered.
    let path = format!("{RECORDS}/{id}");
    assert_eq!(e.send(Method::DELETE, &path, None).await.0, 204);
    assert_eq!(e.send(Method::DELETE, &path, None).await.0, 404);
    assert_eq!(e.get(&path).await.0, 404);
    let (_, identities) = e.get(IDENTITIES).await;
    assert_eq!(identities["value"].as_array().unwrap().len(), 2);

    let stats = e.emu.stats();
    assert_eq!((stats.syncs, stats.syncs_refused), (1, 2));
    assert_eq!(stats.devices_registered, 1);
    assert_eq!(stats.import_records_deleted, 1);
    assert_eq!(stats.foreign_records_deleted, 0);
    assert_eq!((stats.throttled, stats.violations), (0, 0));
    assert_eq!(stats.members_added, 1);
    assert_eq!(stats.requests_by_status.get("429"), Some(&1));
}

#[tokio::test(start_paused = true)]
async fn registration_is_the_tenants_own_and_a_sync_long_ago_still_counts() {
    let e = env(EmulatorConfig {
        tenants: vec!["contoso".into(), "fabrikam".into()],
        last_sync_ago: Some(Duration::from_secs(9 * 60)),
        import_delay: Duration::ZERO,
        sync_duration: Duration::ZERO,
        ..EmulatorConfig::default()
    })
    .await;
    e.import(vec![record("PF-1", HASH)]).await;
    e.import(vec![record("PF-1", HASH)]).await;
    let (_, settings) = e.get(SETTINGS).await;
    assert_eq!(settings["syncStatus"], "completed");
    assert_eq!(e.sync().await.status(), 429);
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(e.sync().await.status(), 204);
    let listed = e.records().await;
    assert_eq!(
        listed.iter().map(state).collect::<Vec<_>>(),
        [("complete", 0), ("error", 806)]
    );
    let (_, identities) = e.get(IDENTITIES).await;
    assert_eq!(identities["value"].as_array().unwrap().len(), 2);
    assert!(e.emu.import_records(Some("FABRIKAM")).is_empty());

    let other = token_at(&e.http, &e.emu.authority_url(), "fabrikam", "app", "s3cret").await;
    let theirs = e
        .http
        .get(format!("{}{IDENTITIES}", e.emu.graph_url()))
        .bearer_auth(other)
        .send()
        .await
        .unwrap();
    let theirs: Value = theirs.json().await.unwrap();
    assert_eq!(theirs["value"].as_array().unwrap().len(), 1);
    let stats = e.emu.stats();
    assert_eq!(stats.tenants["contoso"].serials_imported_twice, 1);
    assert_eq!(stats.tenants["contoso"].devices_registered, 1);
    assert_eq!(stats.tenants["fabrikam"].syncs, 0);
}
