#!/usr/bin/env python3
"""Self-check of graph_sim.py's hardware-hash import routes: starts the simulator on a free
port and drives each behaviour of the wire contract with plain HTTP, asserting the answers.

    python3 benches/external/check_import.py      # prints "ok" and the stats, or fails
"""

import base64
import contextlib
import json
import pathlib
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
IMPORTED = "/beta/deviceManagement/importedWindowsAutopilotDeviceIdentities"
SETTINGS = "/beta/deviceManagement/windowsAutopilotSettings"
HASH = base64.b64encode(bytes(range(64))).decode()
DELAY, DURATION, INTERVAL = 0.3, 0.5, 1.5


@contextlib.contextmanager
def simulator(*flags):
    sim = subprocess.Popen([sys.executable, str(HERE / "graph_sim.py"), "--latency-ms", "0", *flags],
                           stdout=subprocess.PIPE, text=True)
    try:
        yield f"http://127.0.0.1:{int(sim.stdout.readline().split()[-1])}"
    finally:
        sim.terminate()
        sim.wait()


def call(base, method, path, body=None, token=True):
    """(status, headers, JSON body or None); `path` may be an absolute next link."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(path if path.startswith("http") else base + path, data=data, method=method)
    if token:
        req.add_header("Authorization", "Bearer x")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req) as r:
            status, headers, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, headers, raw = e.code, e.headers, e.read()
    return status, headers, json.loads(raw) if raw else None


def record(serial, hardware=HASH, **extra):
    return {"@odata.type": "#microsoft.graph.importedWindowsAutopilotDeviceIdentity", "serialNumber": serial,
            "productKey": "", "hardwareIdentifier": hardware, "groupTag": "", "assignedUserPrincipalName": "",
            **extra}


def imports(*records):
    return {"importedWindowsAutopilotDeviceIdentities": list(records)}


def state(base, rid):
    status, _, body = call(base, "GET", f"{IMPORTED}/{rid}")
    assert status == 200, status
    return body["state"]


def check_routes():
    flags = ["--identities", "2", "--import-batch-limit", "3", "--import-delay", str(DELAY),
             "--sync-duration", str(DURATION), "--sync-interval", str(INTERVAL),
             "--import-error", "SN808=808", "--import-error", "SN900=900", "--import-record", "FOREIGN1"]
    with simulator(*flags) as base:
        c = lambda *a, **k: call(base, *a, **k)
        assert c("GET", SETTINGS, token=False)[0] == 401
        s, _, settings = c("GET", SETTINGS)
        assert s == 200 and settings["syncStatus"] == "unknown", settings
        assert settings["lastSyncDateTime"] == "0001-01-01T00:00:00Z"

        # Refused imports store nothing.
        for body, words in [(b"{not json", ""), (imports(), ""), ({"value": []}, ""),
                            (imports(*[record(f"SNX{i}") for i in range(4)]), "too many"),
                            (imports(record("SNA"), record("SNB", hardware="  ")), "1"),
                            (imports(record("SNA"), {"hardwareIdentifier": HASH}), "1")]:
            s, _, err = c("POST", f"{IMPORTED}/import", body)
            assert s == 400 and err["error"]["code"] == "BadRequest" and words in err["error"]["message"], (s, err)
        assert c("POST", IMPORTED, record("", HASH))[0] == 400
        assert [r["serialNumber"] for r in c("GET", IMPORTED)[2]["value"]] == ["FOREIGN1"]

        # The import action: one answer per record, in order, pending, no hash.
        s, _, body = c("POST", f"{IMPORTED}/import", imports(record("GOOD1", groupTag="tag", productKey="PK"),
                                                             record("BAD", hardware="not base64!"),
                                                             record("SN808")))
        assert s == 200 and "@odata.context" in body, (s, body)
        answers = body["value"]
        assert [a["serialNumber"] for a in answers] == ["GOOD1", "BAD", "SN808"]
        assert all(a["hardwareIdentifier"] is None and a["importId"] == "" for a in answers)
        assert answers[0]["groupTag"] == "tag" and answers[0]["productKey"] == "PK"
        assert answers[0]["state"] == {"deviceImportStatus": "pending", "deviceRegistrationId": "",
                                       "deviceErrorCode": 0, "deviceErrorName": ""}
        short = base64.b64encode(b"1234567").decode()  # valid base64, 7 bytes
        ids = {a["serialNumber"]: a["id"] for a in answers}
        for serial, hardware in [("SN00000000", HASH), ("SN900", HASH), ("GOOD1", HASH), ("SHORT", short)]:
            s, _, one = c("POST", IMPORTED, record(serial, hardware))
            assert s == 201 and one["state"]["deviceImportStatus"] == "pending", (s, one)
            ids[serial if serial not in ids else "GOOD1-again"] = one["id"]
        assert state(base, ids["GOOD1"])["deviceImportStatus"] == "pending"
        assert c("GET", f"{IMPORTED}/not-a-guid")[0] == 400
        assert c("GET", f"{IMPORTED}/00000000-0000-4000-8000-00000000abcd")[2]["error"]["code"] == "ResourceNotFound"

        # Processing, after the delay.
        time.sleep(DELAY + 0.1)
        got = {k: state(base, v) for k, v in ids.items()}
        assert got["GOOD1"]["deviceImportStatus"] == "complete" and got["GOOD1"]["deviceRegistrationId"]
        for key, status, code, name in [("BAD", "error", 802, "InvalidZtdHardwareHash"),
                                        ("SHORT", "error", 802, "InvalidZtdHardwareHash"),
                                        ("SN808", "unknown", 808, "ZtdDeviceAssignedToOtherTenant"),
                                        ("SN00000000", "error", 806, "ZtdDeviceAlreadyAssigned"),
                                        ("GOOD1-again", "error", 806, "ZtdDeviceAlreadyAssigned"),
                                        ("SN900", "error", 900, "UnknownError")]:
            assert (got[key]["deviceImportStatus"], got[key]["deviceErrorCode"], got[key]["deviceErrorName"]) \
                == (status, code, name), (key, got[key])

        # Paged listing: absolute next links with $skiptoken, every record once.
        listed, link = [], f"{IMPORTED}?$top=3"
        while link:
            s, _, page = c("GET", link)
            assert s == 200 and len(page["value"]) <= 3
            listed += page["value"]
            link = page.get("@odata.nextLink")
            assert link is None or (link.startswith("http://") and "$skiptoken=" in link), link
        assert len(listed) == 8 and len({r["id"] for r in listed}) == 8
        foreign = next(r for r in listed if r["serialNumber"] == "FOREIGN1")
        s, _, page = c("GET", f"{IMPORTED}?$filter=importId%20eq%20'x'")  # may be ignored
        assert s == 200 and len(page["value"]) == 8

        # DELETE: 204, then 404; the record's device still registers at the next sync.
        assert c("DELETE", f"{IMPORTED}/{ids['GOOD1']}")[0] == 204
        assert c("DELETE", f"{IMPORTED}/{ids['GOOD1']}")[0] == 404
        assert c("GET", f"{IMPORTED}/{ids['GOOD1']}")[0] == 404
        assert c("DELETE", f"{IMPORTED}/{foreign['id']}")[0] == 204

        # Sync: 204, 409 while it runs, registration when done, 429 without Retry-After after.
        assert c("POST", f"{SETTINGS}/sync")[0] == 204
        s, _, err = c("POST", f"{SETTINGS}/sync")
        assert s == 409 and err["error"]["message"] == "A sync is already in progress", err
        assert c("GET", SETTINGS)[2]["syncStatus"] == "inProgress"
        s, _, late = c("POST", IMPORTED, record("GOOD2"))  # complete after the sync started
        time.sleep(DURATION + 0.1)
        settings = c("GET", SETTINGS)[2]
        assert settings["syncStatus"] == "completed" and settings["lastSyncDateTime"].startswith("20"), settings
        s, headers, err = c("POST", f"{SETTINGS}/sync")
        assert s == 429 and err["error"]["code"] == "TooManyRequests" and "Retry-After" not in headers, (s, err)
        identities = c("GET", "/beta/deviceManagement/windowsAutopilotDeviceIdentities")[2]["value"]
        serials = [i["serialNumber"] for i in identities]
        assert serials[:2] == ["SN00000000", "SN00000001"] and sorted(serials[2:]) == ["FOREIGN1", "GOOD1"], serials
        good = next(i for i in identities if i["serialNumber"] == "GOOD1")
        assert good["id"] == got["GOOD1"]["deviceRegistrationId"] and good["groupTag"] == "tag"
        assert good["deploymentProfileAssignmentStatus"] == "notAssigned" and good["productKey"] == "PK"
        s, _, one = c("GET", f"/beta/deviceManagement/windowsAutopilotDeviceIdentities/{good['id']}")
        assert s == 200 and one["serialNumber"] == "GOOD1"
        s, _, devices = c("GET", f"/v1.0/devices?$filter=deviceId%20eq%20'{good['azureAdDeviceId']}'")
        assert s == 200 and len(devices["value"]) == 1, devices

        # A record completed after the sync started waits for the next one.
        assert state(base, late["id"])["deviceImportStatus"] == "complete"
        time.sleep(INTERVAL - DURATION)
        assert c("POST", f"{SETTINGS}/sync")[0] == 204
        time.sleep(DURATION + 0.1)
        serials = [i["serialNumber"] for i in c("GET", "/beta/deviceManagement/windowsAutopilotDeviceIdentities")[2]["value"]]
        assert serials[-1] == "GOOD2" and len(serials) == 5, serials

        s, _, stats = c("GET", "/_sim/stats")
        expected = {"import_requests": 6 + 1 + 1 + 4 + 1, "records_imported": 3 + 4 + 1,
                    "import_records_deleted": 1, "foreign_records_deleted": 1, "syncs": 2,
                    "syncs_refused": 2, "devices_registered": 3, "serials_imported_twice": 1}
        assert {k: stats.get(k, 0) for k in expected} == expected, stats
        assert stats["import_reads"] >= 15 and stats.get("throttled", 0) == 0 and stats.get("violations", 0) == 0
        return stats


def check_throttle():
    """Import writes spend the write window; GETs the any-request one (ten times larger)."""
    with simulator("--limit", "2/30", "--retry-after", "seconds") as base:
        answers = [call(base, "POST", IMPORTED, record(f"T{i}"))[0] for i in range(2)]
        answers.append(call(base, "POST", f"{IMPORTED}/import", imports(record("T2"), record("T3")))[0])
        answers.append(call(base, "DELETE", f"{IMPORTED}/00000000-0000-4000-8000-00000000abcd")[0])
        s, headers, err = call(base, "POST", f"{SETTINGS}/sync")
        assert answers == [201, 201, 429, 429] and s == 429 and headers.get("Retry-After"), (answers, s)
        assert err["error"]["message"].startswith("Too many requests")
        assert [call(base, "GET", IMPORTED)[0] for _ in range(10)] == [200] * 10
        stats = call(base, "GET", "/_sim/stats")[2]
        assert stats["throttled"] == 3 and stats["records_imported"] == 2 and stats.get("syncs", 0) == 0, stats


def main():
    stats = check_routes()
    check_throttle()
    print("ok", json.dumps({k: v for k, v in sorted(stats.items())}))


if __name__ == "__main__":
    main()
