#!/usr/bin/env python3
"""An independent Graph throttling simulator, to measure autopilot-bulk against a service
that is not the project's own emulator.

Nothing here is shared with `src/emulator`: different language, and the throttling decision
is made by a third-party limiter, the moving-window strategy of the `limits` library (the one
behind Flask-Limiter, `pip install limits`), unless `--limiter log` picks this file's own
timestamp log instead. The two differ in one way that matters to a client:

* `limits` (default): a throttled request is not counted; the window only holds accepted ones.
* `log`: every request is counted, throttled ones too, as Graph does (retrying before
  Retry-After has passed extends the throttle).

It serves just enough of Graph for a bulk assignment run:

* `POST {authority}/{tenant}/oauth2/v2.0/token` -> a bearer token (any credentials);
* `POST .../windowsAutopilotDeviceIdentities/{id}/deploymentProfile/assignments` -> 201, or 429
  with Graph's error body and, per `--retry-after`, a `Retry-After` in whole seconds, none,
  either at random (`mixed`), an HTTP-date (`date`), or any of the three at random
  (`mixed-date`);
* `GET` on the same path -> the device's assignments: a read, counted in the any-request
  window (ten times `--limit`, which every write takes a place in too), never the write one;
* `GET /_sim/stats` -> counters: requests, throttled, violations (requests that arrived while a
  stated Retry-After was still running, past `--grace-ms` for requests already in flight),
  duplicates (devices assigned more than once), assigned_devices (devices holding at least
  one assignment) and the most accepted requests seen in any window (never above the limit:
  that is the limiter's job); with faults, also the counters listed below.

Fault injection (all off by default; this logic is the project's own, written for this file,
only the limiter above is third-party). A request the limiter admitted then rolls for a fault,
so a faulted request has spent its place in the window. The roll is seeded (`--seed`) and
keyed by (method, device, how many such requests that device has sent), so a run is
reproducible whatever order the workers' requests interleave in:

* `--fault-503 P` -> 503 ServiceUnavailable, NOT executed, with `Retry-After:
  --fault-503-retry-after` seconds if given. That Retry-After is meant for that request
  alone: a later request for the SAME device before it has passed counts as a
  `fault_retry_after_violations` (kept apart from `violations`, which are about 429s).
  Applies to POSTs and GETs (`faults_503`).
* `--fault-504 P` -> 504 GatewayTimeout. Graph's 504 may have executed; here a POST's
  assignment IS stored before the 504 goes out, so a client that retries without reading
  back creates a duplicate. Applies to POSTs and GETs (a GET's 504 changes nothing)
  (`faults_504`).
* `--fault-drop P` -> a POST's assignment is stored, then the connection is closed with no
  answer at all. POSTs only (`faults_dropped`).
* `--outage-at S --outage-for D` -> from S seconds after the first assignment POST the
  simulator received, for D seconds, every Graph request is answered 503 (with
  `--fault-503-retry-after` if given, which then counts per device as above), before the
  limiter and without executing anything (`outage_requests`). The token endpoint (Entra, a
  different service) stays up.

Static group membership (`run --action group`), Entra ID's side, with its own throttle
bucket (`--directory-limit`, default 3000/150, the same `--limiter` kind; reads get ten times
the room, as identity reads get ten times `--limit`):

* `GET .../windowsAutopilotDeviceIdentities/{id}` -> the identity with `azureAdDeviceId`, and
  `GET .../windowsAutopilotDeviceIdentities` -> the `--identities N` identities (ids as
  `run.py` writes them), paged (`$top`, `@odata.nextLink` with `$skiptoken`). Any identity id
  exists. Its Entra ids are `uuid5(NAMESPACE_URL, "sim-device-id:" + id)` (the deviceId) and
  `uuid5(NAMESPACE_URL, "sim-object-id:" + id)` (the object id): nothing like the emulator's.
* `GET /devices?$filter=deviceId eq '...'` -> 0 or 1 device object; `GET /devices` -> the
  known ones (the `--identities` and every identity read so far), paged (`$top` <= 999).
* `GET /groups/{id}`: any GUID is an assigned security group, but `--dynamic-group ID`.
* `GET /groups/{id}/members[/microsoft.graph.device]`, paged.
* `PATCH /groups/{id}` with `members@odata.bind`: at most 20, all or nothing (one unknown or
  already-member reference refuses the whole request 400) -> 204; `POST .../members/$ref`
  (one), `DELETE .../members/{id}/$ref`. A dynamic group refuses 400.
* `GET /deviceManagement/windowsAutopilotDeploymentProfiles[?$expand=assignments]`, and
  `POST .../windowsAutopilotDeploymentProfiles/{id}/assignments` (a group target) -> 201, 409
  for a group already assigned. Any GUID is a profile.

Directory routes are served under `/v1.0` as under `/beta`. Faults apply to member writes as
to assignment POSTs (a dropped PATCH has added its members), and a member write starts the
outage clock as an assignment POST does. Counters: `group_writes`, `members_added`,
`duplicate_member_attempts`, `members_removed`, `directory_requests`,
`directory_throttled`, `directory_violations`, `profile_assignments_created`.

Hardware-hash import (`beta` only; the wire contract the product and its emulator follow too):
POST and DELETE spend Intune's write window (an assignment POST's), GETs the any-request one;
faults and the outage do not apply to these routes.

* `POST .../importedWindowsAutopilotDeviceIdentities/import` with
  `{"importedWindowsAutopilotDeviceIdentities": [...]}` -> 200, one answer per record, in
  order (the hash never echoed); 400 for a bad body, more than `--import-batch-limit` records
  ("too many") or a record without serial or hash (its index named); nothing stored then.
  `POST .../importedWindowsAutopilotDeviceIdentities` (one record) -> 201. One call, one write.
* `GET` of the collection (paged as the identity listing), `GET`/`DELETE .../{id}` (404 when
  unknown or deleted; a delete never unregisters a device).
* A record is `pending` for `--import-delay`, then, decided in creation order: `error` 802 if
  its hash is not standard base64 of at least 8 bytes; the `--import-error SERIAL=CODE` code
  (808 leaves it `unknown`); `error` 806 if the identity listing holds its serial or an
  earlier record of that serial is `complete`; else `complete` with a new
  `deviceRegistrationId`.
* `POST /deviceManagement/windowsAutopilotSettings/sync` -> 204; 409 while one runs
  (`--sync-duration`); 429 `TooManyRequests` with NO Retry-After within `--sync-interval` of
  the last accepted one (not a throttle: not in `throttled` nor `violations`). When it has
  run, every record `complete` at its start becomes an identity (id = its registration id,
  its serial, group tag, product key, user), listed after the others, with an Entra device.
  `GET /deviceManagement/windowsAutopilotSettings` -> last sync times and `syncStatus`.
* Counters: `import_requests`, `records_imported`, `import_reads`, `import_records_deleted`,
  `foreign_records_deleted` (of `--import-record` records), `syncs`, `syncs_refused`,
  `devices_registered`, `serials_imported_twice`, `settings_reads`, and
  `import_span_seconds` (first to last import or settings request).

Standard library apart from `limits`; HTTP/1.1 keep-alive, one thread per connection.
Usage: graph_sim.py --limit 100/2 --retry-after none [--latency-ms 10] [--port 0]
       [--fault-503 0.05 --fault-503-retry-after 1 --fault-504 0.02 --fault-drop 0.03 --seed 1]
       [--outage-at 4 --outage-for 6] [--directory-limit 3000/150 --identities 1000]
       [--import-batch-limit 500 --import-delay 1 --import-error SN1=808 --sync-interval 600
        --sync-duration 2 --last-sync-ago 60 --import-record SN2=complete]
The first line on stdout is `listening on PORT`.
"""

import argparse
import base64
import collections
import email.utils
import json
import math
import random
import re
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LogLimiter:
    """Sliding window over every request's arrival time, throttled ones included."""

    def __init__(self, count, per):
        self.count, self.per = count, per
        self.times = collections.deque()

    def hit(self, now):
        while self.times and self.times[0] <= now - self.per:
            self.times.popleft()
        allowed = len(self.times) < self.count
        self.times.append(now)
        return allowed, self.times[0] + self.per - now


class LimitsLimiter:
    """The `limits` library's moving window (throttled requests are not counted)."""

    def __init__(self, count, per):
        from limits import RateLimitItemPerSecond
        from limits.storage import MemoryStorage
        from limits.strategies import MovingWindowRateLimiter

        self.item = RateLimitItemPerSecond(count, per)
        self.strategy = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, now):
        if self.strategy.hit(self.item, "app"):
            return True, 0.0
        stats = self.strategy.get_window_stats(self.item, "app")
        return False, max(0.0, stats.reset_time - time.time())


class Bucket:
    """One service's throttle for the tenant: a write window, a read window ten times as large,
    and the last Retry-After it stated (for violations)."""

    def __init__(self, kind, count, per):
        make = LimitsLimiter if kind == "limits" else LogLimiter
        self.writes = make(count, per)
        self.reads = LogLimiter(count * 10, per)
        self.blocked_until = 0.0
        self.blocked_since = 0.0


class Sim:
    def __init__(self, args):
        count, per = args.limit.split("/")
        self.count, self.per = int(count), float(per)
        self.limiter = (LimitsLimiter if args.limiter == "limits" else LogLimiter)(
            self.count, self.per
        )
        # Intune's identity reads, and Entra ID's own bucket (see the module's doc).
        self.intune_reads = LogLimiter(self.count * 10, self.per)
        dcount, dper = args.directory_limit.split("/")
        self.directory = Bucket(args.limiter, int(dcount), float(dper))
        self.dynamic_groups = {g.lower() for g in args.dynamic_group}
        self.members = collections.defaultdict(dict)  # group -> {object id: None}, in order
        self.profiles = collections.defaultdict(list)  # profile -> assignments
        self.known = {}  # identity id -> None, in order: the directory's listed devices
        self.by_device_id, self.by_object_id = {}, {}
        self.identities = args.identities
        self.retry_after = args.retry_after
        self.latency = args.latency_ms / 1000.0
        self.grace = args.grace_ms / 1000.0
        self.rng = random.Random(args.seed)
        # Reentrant: registering an imported device (under the lock) goes through identity().
        self.lock = threading.RLock()
        self.assignments = collections.defaultdict(list)
        self.accepted_times = collections.deque()
        self.stats = collections.Counter(max_in_window=0)
        # Until when the last stated Retry-After asks the client to wait, and when it was said.
        self.blocked_until = 0.0
        self.blocked_since = 0.0
        self.trace = open(args.trace, "w") if args.trace else None
        self.t0 = time.monotonic()
        # Faults: probabilities, the 503's Retry-After, the outage's span (relative to the
        # first assignment POST), each device's own Retry-After deadline, per-device counts.
        self.seed = args.seed
        self.p503, self.p504, self.pdrop = args.fault_503, args.fault_504, args.fault_drop
        self.fault_retry_after = args.fault_503_retry_after
        self.outage_at, self.outage_for = args.outage_at, args.outage_for
        self.first_post = None
        self.device_blocked_until = {}
        self.sent = collections.Counter()
        # Hardware-hash import (see the module's doc): records by id in creation order, the
        # first not yet processed, serials the identity listing holds or a complete record
        # claims, the imported identities, and the sync's clock (monotonic).
        self.batch_limit, self.import_delay = args.import_batch_limit, args.import_delay
        self.import_errors = dict(args.import_error)
        self.records, self.order, self.unprocessed = {}, [], 0
        self.listed_serials, self.complete_serials = set(), set()
        self.imported = {}  # identity id -> its record
        self.created_serials = collections.Counter()
        self.sync_interval, self.sync_duration = args.sync_interval, args.sync_duration
        self.sync_started = None if args.last_sync_ago is None else self.t0 - args.last_sync_ago
        self.sync_batch, self.sync_done = [], self.sync_started
        self.import_span = None  # (first, last) import-route request
        for serial, state in args.import_record:
            rec = self.new_record({"serialNumber": serial, "hardwareIdentifier": ""}, foreign=True)
            self.process(rec, 802 if state == "error" else None)
        for i in range(self.identities):
            self.identity(f"{i:08x}-0000-4000-8000-{i:012x}")

    def identity(self, identity):
        """The identity's Entra ids (deviceId, object id), remembered so that the directory
        finds its device from either."""
        identity = identity.lower()
        device_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "sim-device-id:" + identity))
        object_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "sim-object-id:" + identity))
        with self.lock:
            if identity not in self.known:
                self.known[identity] = None
                self.listed_serials.add(self.serial(identity).upper())
                self.by_device_id[device_id] = identity
                self.by_object_id[object_id] = identity
        return device_id, object_id

    def serial(self, identity):
        rec = self.imported.get(identity)
        return rec["serial"] if rec else serial_of(identity)

    def device(self, identity):
        device_id, object_id = self.identity(identity)
        return {"id": object_id, "deviceId": device_id, "displayName": self.serial(identity),
                "accountEnabled": True, "operatingSystem": "Windows"}

    def stated(self, wait):
        """The Retry-After for a request the window refused with `wait` seconds until it has
        room, per `--retry-after`, and the seconds it tells the client to stay away: whole
        seconds rounded up, an HTTP-date (whole seconds of the wall clock, rounded up, so the
        instant named is never before the room), none (""), or per request at random among
        seconds and none (`mixed`) or all three (`mixed-date`)."""
        state = self.retry_after
        if state == "mixed":
            state = self.rng.choice(["seconds", "none"])
        elif state == "mixed-date":
            state = self.rng.choice(["seconds", "none", "date"])
        if state == "none":
            return "", 0.0
        if state == "date":
            wall = time.time()
            at = math.ceil(wall + wait)
            return email.utils.formatdate(at, usegmt=True), at - wall
        seconds = max(1, int(wait + 0.999))
        return str(seconds), float(seconds)

    def admit_bucket(self, bucket, write):
        """Count one directory request; None if accepted, else the Retry-After value (or "")."""
        with self.lock:
            now = time.monotonic()
            self.stats["directory_requests"] += 1
            if write and now < bucket.blocked_until and now > bucket.blocked_since + self.grace:
                self.stats["directory_violations"] += 1
            allowed, wait = (bucket.writes if write else bucket.reads).hit(now)
            if allowed:
                return None
            self.stats["directory_throttled"] += 1
            header, seconds = self.stated(wait)
            if write and header:
                bucket.blocked_since, bucket.blocked_until = now, now + seconds
            return header

    def arrive(self, method, device, starts_clock=None):
        """At a Graph request's arrival: the per-device Retry-After check, the outage, and this
        request's fault roll. Returns (in_outage, roll). `starts_clock`: whether it is a write
        that starts the outage clock (default: a POST)."""
        with self.lock:
            now = time.monotonic()
            if starts_clock is None:
                starts_clock = method == "POST"
            if starts_clock and self.first_post is None:
                self.first_post = now
            until = self.device_blocked_until.get(device)
            if until is not None and now < until:
                self.stats["fault_retry_after_violations"] += 1
            in_outage = (
                self.outage_for > 0
                and self.first_post is not None
                and self.first_post + self.outage_at <= now < self.first_post + self.outage_at + self.outage_for
            )
            if in_outage:
                self.stats["requests"] += 1
                self.stats["outage_requests"] += 1
            n = self.sent[(method, device)]
            self.sent[(method, device)] = n + 1
            roll = random.Random(f"{self.seed}:{method}:{device}:{n}").random()
            return in_outage, roll

    def block_device(self, device):
        """A 503 with Retry-After is going out now for this device: its deadline."""
        if self.fault_retry_after is not None:
            with self.lock:
                self.device_blocked_until[device] = time.monotonic() + self.fault_retry_after

    def fault(self, method, device, roll):
        """The fault this admitted request gets: None, "503", "504" or "drop"."""
        if roll < self.p503:
            with self.lock:
                self.stats["faults_503"] += 1
            return "503"
        if roll < self.p503 + self.p504:
            with self.lock:
                self.stats["faults_504"] += 1
            return "504"
        if method == "POST" and roll < self.p503 + self.p504 + self.pdrop:
            with self.lock:
                self.stats["faults_dropped"] += 1
            return "drop"
        return None

    def admit(self, write=True, read_kind="assignment_reads"):
        """Count one request; None if accepted, else the Retry-After header value (or "").
        A write takes a place in the write window and in the any-request window (ten times
        larger); a read (a device's assignments GET, counted as `read_kind`) only in the
        latter."""
        with self.lock:
            now = time.monotonic()
            self.stats["requests"] += 1
            if not write:
                self.stats[read_kind] += 1
                allowed, wait = self.intune_reads.hit(now)
                if allowed:
                    return None
                self.stats["read_throttled"] += 1
                return self.stated(wait)[0]
            if now < self.blocked_until and now > self.blocked_since + self.grace:
                self.stats["violations"] += 1
            allowed, wait = self.limiter.hit(now)
            any_allowed, any_wait = self.intune_reads.hit(now)
            if allowed and not any_allowed:
                allowed, wait = False, any_wait
            if self.trace:
                self.trace.write(f"{now - self.t0:.4f} {'ok' if allowed else '429'}\n")
                self.trace.flush()
            if allowed:
                self.accepted_times.append(now)
                while self.accepted_times[0] <= now - self.per:
                    self.accepted_times.popleft()
                self.stats["max_in_window"] = max(
                    self.stats["max_in_window"], len(self.accepted_times)
                )
                return None
            self.stats["throttled"] += 1
            header, seconds = self.stated(wait)
            if header:
                self.blocked_since, self.blocked_until = now, now + seconds
            return header


    # Hardware-hash import. Every method below is called with the lock held.

    def new_record(self, body, foreign=False):
        """Store one import record (validated by the caller); its processing comes later."""
        rec = {"id": str(uuid.uuid4()), "serial": body["serialNumber"].strip(),
               "productKey": str(body.get("productKey") or ""), "groupTag": str(body.get("groupTag") or ""),
               "upn": str(body.get("assignedUserPrincipalName") or ""),
               "hash": body["hardwareIdentifier"], "stored": time.monotonic(), "state": "pending",
               "code": 0, "registration": "", "deleted": False, "foreign": foreign, "registered": False}
        self.records[rec["id"]] = rec
        self.order.append(rec)
        if not foreign:
            self.stats["records_imported"] += 1
            self.created_serials[rec["serial"].upper()] += 1
            if self.created_serials[rec["serial"].upper()] == 2:
                self.stats["serials_imported_twice"] += 1
        return rec

    def process(self, rec, code):
        """A pending record's outcome: complete (code None) or the error code."""
        rec["code"] = code or 0
        if code is None:
            rec["state"], rec["registration"] = "complete", str(uuid.uuid4())
            self.complete_serials.add(rec["serial"].upper())
        else:
            rec["state"] = "unknown" if code == 808 else "error"

    def settle(self):
        """Bring processing and registration up to now: records past `--import-delay` are
        decided in creation order (so a serial's second record sees its first's outcome), and
        a finished sync registers the records that were complete when it started."""
        now = time.monotonic()
        while self.unprocessed < len(self.order):
            rec = self.order[self.unprocessed]
            if rec["state"] != "pending":
                self.unprocessed += 1
                continue
            if now < rec["stored"] + self.import_delay:
                break
            serial = rec["serial"].upper()
            code = None
            if not valid_hash(rec["hash"]):
                code = 802
            elif serial in self.import_errors:
                code = self.import_errors[serial]
            elif serial in self.listed_serials or serial in self.complete_serials:
                code = 806
            self.process(rec, code)
            self.unprocessed += 1
        if self.sync_batch and now >= self.sync_started + self.sync_duration:
            for rec in self.sync_batch:
                rec["registered"] = True
                self.imported[rec["registration"]] = rec
                self.identity(rec["registration"])
                self.stats["devices_registered"] += 1
            self.sync_batch = []
        if self.sync_started is not None and now >= self.sync_started + self.sync_duration:
            self.sync_done = self.sync_started + self.sync_duration

    def answer(self, rec):
        return {"id": rec["id"], "serialNumber": rec["serial"], "productKey": rec["productKey"],
                "groupTag": rec["groupTag"], "assignedUserPrincipalName": rec["upn"],
                "hardwareIdentifier": None, "importId": "",
                "state": {"deviceImportStatus": rec["state"], "deviceRegistrationId": rec["registration"],
                          "deviceErrorCode": rec["code"], "deviceErrorName": ERROR_NAMES.get(
                              rec["code"], "UnknownError") if rec["code"] else ""}}

    def sync(self):
        """A sync request past the throttle: None if accepted, else (status, code, message)."""
        now = time.monotonic()
        if self.sync_started is not None and now < self.sync_started + self.sync_duration:
            self.stats["syncs_refused"] += 1
            return 409, "Conflict", "A sync is already in progress"
        if self.sync_started is not None and now < self.sync_started + self.sync_interval:
            self.stats["syncs_refused"] += 1
            return 429, "TooManyRequests", "Sync can only be triggered once every 10 minutes"
        self.stats["syncs"] += 1
        self.sync_started = now
        self.sync_batch = [r for r in self.records.values() if r["state"] == "complete" and not r["registered"]]
        return None

    def settings(self):
        now = time.monotonic()
        status = "unknown" if self.sync_started is None else (
            "inProgress" if now < self.sync_started + self.sync_duration else "completed")
        return {"id": "sim-autopilot-settings", "lastSyncDateTime": rfc3339(self.sync_done),
                "lastManualSyncTriggerDateTime": rfc3339(self.sync_started), "syncStatus": status}


ERROR_NAMES = {802: "InvalidZtdHardwareHash", 806: "ZtdDeviceAlreadyAssigned",
               808: "ZtdDeviceAssignedToOtherTenant"}


def valid_hash(text):
    """Standard base64 (padding included) of at least 8 bytes."""
    try:
        return len(base64.b64decode(text, validate=True)) >= 8
    except (ValueError, TypeError):
        return False


def rfc3339(monotonic):
    """A monotonic instant as UTC RFC 3339, Graph's "0001-01-01T00:00:00Z" for None."""
    if monotonic is None:
        return "0001-01-01T00:00:00Z"
    wall = time.time() - (time.monotonic() - monotonic)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


def serial_of(identity):
    return "SN" + re.sub(r"[^0-9a-zA-Z]", "", identity)[:8].upper()


def skiptoken(offset):
    return base64.urlsafe_b64encode(f"sim:{offset}".encode()).decode().rstrip("=")


def offset_of(token):
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        return int(text.split(":", 1)[1]) if text.startswith("sim:") else None
    except (ValueError, IndexError):
        return None


GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
ALREADY = ("One or more added object references already exist for the following modified "
           "properties: 'members'.")


def does_not_exist(oid):
    return (f"Resource '{oid}' does not exist or one of its queried reference-property objects "
            "are not present.")


def object_of(reference):
    """The object id a reference URL names: its last path segment."""
    last = reference.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    if "(" in last:
        last = last.split("(", 1)[1].rstrip(")").strip("'")
    return last.lower() if GUID.match(last) else None


def device_of(path):
    parts = path.split("?")[0].strip("/").split("/")
    try:
        i = parts.index("windowsAutopilotDeviceIdentities")
    except ValueError:
        return None
    if parts[i + 2 : i + 4] != ["deploymentProfile", "assignments"]:
        return None
    return parts[i + 1]


def make_handler(sim):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: without this, Nagle + delayed ACK add 40 ms.
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def reply(self, status, body, headers=()):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("request-id", str(uuid.uuid4()))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def throttled(self, retry_after):
            error = {
                "error": {
                    "code": "TooManyRequests",
                    "message": "Too many requests from the app. Please try again later.",
                    "innerError": {
                        "request-id": str(uuid.uuid4()),
                        "client-request-id": self.headers.get("client-request-id", ""),
                    },
                }
            }
            headers = [("Retry-After", retry_after)] if retry_after else []
            self.reply(429, error, headers)

        def failed(self, status, code, message, retry_after=None):
            error = {
                "error": {
                    "code": code,
                    "message": message,
                    "innerError": {
                        "request-id": str(uuid.uuid4()),
                        "client-request-id": self.headers.get("client-request-id", ""),
                    },
                }
            }
            headers = [("Retry-After", f"{retry_after:g}")] if retry_after is not None else []
            self.reply(status, error, headers)

        def unavailable(self, device):
            sim.block_device(device)
            self.failed(503, "ServiceUnavailable", "The service is temporarily unavailable.",
                        sim.fault_retry_after)

        def graph(self, method):
            device = device_of(self.path)
            raw = self.body()
            if device is None:
                return self.directory(method, raw)
            if not self.headers.get("Authorization", "").startswith("Bearer "):
                return self.reply(401, {"error": {"code": "InvalidAuthenticationToken", "message": "no token"}})
            in_outage, roll = sim.arrive(method, device)
            time.sleep(sim.latency)
            if in_outage:
                return self.unavailable(device)
            verdict = sim.admit(write=method != "GET")
            if verdict is not None:
                return self.throttled(verdict)
            fault = sim.fault(method, device, roll)
            if fault == "503":
                return self.unavailable(device)
            with sim.lock:
                if method == "GET":
                    if fault == "504":
                        return self.failed(504, "GatewayTimeout", "The gateway timed out.")
                    return self.reply(200, {"value": list(sim.assignments[device])})
                try:
                    assignment = json.loads(raw)
                except ValueError:
                    return self.reply(400, {"error": {"code": "BadRequest", "message": "body is not JSON"}})
                assignment["id"] = f"{device}_{uuid.uuid4()}"
                sim.assignments[device].append(assignment)
                if len(sim.assignments[device]) == 2:
                    sim.stats["duplicates"] += 1
                sim.stats["created"] += 1
            if fault == "504":
                # Stored above: Graph's 504 may have executed the request.
                return self.failed(504, "GatewayTimeout", "The gateway timed out.")
            if fault == "drop":
                # Stored above; now close the connection without a word.
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            self.reply(201, assignment)

        def page(self, items, top_cap, link_path, query):
            """A collection page: `$top` (1..top_cap, pages of at most 100), `$skiptoken`, an
            absolute next link; None for an invalid `$top` or `$skiptoken`."""
            top = int(query.get("$top", [str(top_cap)])[0] or top_cap)
            if not 1 <= top <= top_cap:
                return None
            start = 0
            if "$skiptoken" in query:
                start = offset_of(query["$skiptoken"][0])
                if start is None:
                    return None
            chunk = items[start:start + min(top, 100)]
            body = {"value": chunk}
            end = start + len(chunk)
            if end < len(items):
                rest = {k: v[0] for k, v in query.items() if k != "$skiptoken"}
                rest["$skiptoken"] = skiptoken(end)
                host = self.headers.get("Host", "127.0.0.1")
                body["@odata.nextLink"] = (f"http://{host}/{link_path}?"
                                           + urllib.parse.urlencode(rest, safe="$',"))
            return body

        def directory(self, method, raw):
            """Everything but the assignment route: identities, Entra ID, profiles."""
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
            if not parts or parts[0] not in ("beta", "v1.0"):
                return self.failed(404, "NotFound", self.path)
            version, rest = parts[0], parts[1:]
            if not self.headers.get("Authorization", "").startswith("Bearer "):
                return self.reply(401, {"error": {"code": "InvalidAuthenticationToken", "message": "no token"}})
            low = [p.lower() for p in rest]
            with sim.lock:
                sim.settle()
            if low[:2] == ["devicemanagement", "windowsautopilotdeviceidentities"] and version == "beta":
                return self.identities(method, rest[2:], query)
            if low[:2] == ["devicemanagement", "importedwindowsautopilotdeviceidentities"] and version == "beta":
                return self.imports(method, rest[2:], query, raw)
            if low[:2] == ["devicemanagement", "windowsautopilotsettings"] and version == "beta":
                return self.autopilot_settings(method, rest[2:])
            if low[:2] == ["devicemanagement", "windowsautopilotdeploymentprofiles"] and version == "beta":
                return self.profiles(method, rest[2:], query, raw)
            if low[:1] in (["devices"], ["groups"]):
                return self.entra(method, version, rest, low, query, raw)
            return self.failed(400, "BadRequest", f"Resource not found for the segment '{rest[0] if rest else ''}'.")

        def identities(self, method, rest, query):
            if method != "GET" or len(rest) > 1:
                return self.failed(405, "BadRequest", "method not allowed")
            with sim.lock:
                sim.stats["identity_reads"] += 1
                allowed, _ = sim.intune_reads.hit(time.monotonic())
            if not allowed:
                return self.throttled("1" if sim.retry_after != "none" else "")
            def shown(identity):
                device_id, _ = sim.identity(identity)
                shown = {"id": identity.lower(), "serialNumber": sim.serial(identity.lower()),
                         "azureAdDeviceId": device_id, "azureActiveDirectoryDeviceId": device_id,
                         "deploymentProfileAssignmentStatus":
                             "assignedInSync" if sim.assignments.get(identity.lower()) else "notAssigned"}
                rec = sim.imported.get(identity.lower())
                if rec:
                    shown.update(groupTag=rec["groupTag"], productKey=rec["productKey"],
                                 userPrincipalName=rec["upn"])
                return shown
            if rest:
                if not GUID.match(rest[0]):
                    return self.failed(400, "BadRequest", f"Invalid key: '{rest[0]}'")
                return self.reply(200, shown(rest[0]))
            with sim.lock:
                ids = list(sim.known)
            body = self.page([shown(i) for i in ids], 1000,
                             "beta/deviceManagement/windowsAutopilotDeviceIdentities", query)
            if body is None:
                return self.failed(400, "BadRequest", "Invalid $top or $skiptoken.")
            return self.reply(200, body)

        def entra(self, method, version, rest, low, query, raw):
            write = method in ("PATCH", "POST", "DELETE")
            in_outage, roll = sim.arrive(method, "/".join(low), starts_clock=write and len(low) >= 2)
            time.sleep(sim.latency)
            if in_outage:
                return self.unavailable("/".join(low))
            if write:
                with sim.lock:
                    sim.stats["group_writes"] += method != "DELETE"
            verdict = sim.admit_bucket(sim.directory, write)
            if verdict is not None:
                return self.throttled(verdict)
            fault = sim.fault("POST" if write else "GET", "/".join(low), roll)
            if fault == "503":
                return self.unavailable("/".join(low))
            if fault == "504" and not write:
                return self.failed(504, "GatewayTimeout", "The gateway timed out.")
            status, body = self.entra_execute(method, version, rest, low, query, raw)
            if fault == "504":
                return self.failed(504, "GatewayTimeout", "The gateway timed out.")
            if fault == "drop":
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if status == 204:
                self.send_response(204)
                self.send_header("request-id", str(uuid.uuid4()))
                self.end_headers()
                return
            if status >= 400:
                return self.failed(status, body[0], body[1])
            return self.reply(status, body)

        def entra_execute(self, method, version, rest, low, query, raw):
            """(status, body) of a directory request that got past throttle and faults; an
            error's body is (code, message)."""
            if low == ["devices"] and method == "GET":
                flt = query.get("$filter", [None])[0]
                if flt:
                    m = re.fullmatch(r"\s*deviceId\s+eq\s+'([^']*)'\s*", flt, re.I)
                    if not m:
                        return 400, ("Request_UnsupportedQuery", "Unsupported Query.")
                    with sim.lock:
                        identity = sim.by_device_id.get(m.group(1).lower())
                    return 200, {"value": [sim.device(identity)] if identity else []}
                with sim.lock:
                    ids = list(sim.known)
                body = self.page([sim.device(i) for i in ids], 999, f"{version}/devices", query)
                return (200, body) if body is not None else (400, ("Request_BadRequest", "Invalid page size."))
            group = rest[1].lower() if len(rest) > 1 else ""
            if low[0] != "groups" or not GUID.match(group):
                return 400, ("Request_BadRequest", f"Invalid object identifier '{group}'.")
            dynamic = group in sim.dynamic_groups
            if len(low) == 2 and method == "GET":
                return 200, {"id": group, "displayName": f"Group {group[:8]}", "securityEnabled": True,
                             "groupTypes": ["DynamicMembership"] if dynamic else [], "mailEnabled": False}
            if len(low) in (3, 4) and low[2] == "members" and method == "GET" and low[3:] in ([], ["microsoft.graph.device"]):
                with sim.lock:
                    held = [sim.by_object_id.get(o) for o in sim.members[group]]
                items = [{k: v for k, v in sim.device(i).items() if k in ("id", "deviceId", "displayName")}
                         for i in held if i]
                body = self.page(items, 999, f"{version}/" + "/".join(rest), query)
                return (200, body) if body is not None else (400, ("Request_BadRequest", "Invalid page size."))
            if dynamic and method in ("PATCH", "POST", "DELETE"):
                return 400, ("Request_BadRequest", "Members of a dynamic group cannot be changed.")
            try:
                payload = json.loads(raw) if raw else {}
            except ValueError:
                return 400, ("BadRequest", "Unable to read JSON request payload.")
            if len(low) == 2 and method == "PATCH":
                refs = payload.get("members@odata.bind", [])
                if not isinstance(refs, list) or len(refs) > 20:
                    return 400, ("Request_BadRequest", "At most 20 references in members@odata.bind.")
                return self.add_members(group, refs, 400)
            if low[2:] == ["members", "$ref"] and method == "POST":
                return self.add_members(group, [payload.get("@odata.id", "")], 404)
            if len(low) == 5 and low[2] == "members" and low[4] == "$ref" and method == "DELETE":
                oid = low[3]
                with sim.lock:
                    if oid in sim.members[group]:
                        del sim.members[group][oid]
                        sim.stats["members_removed"] += 1
                        return 204, None
                return 404, ("Request_ResourceNotFound", does_not_exist(oid))
            return 405, ("BadRequest", "method not allowed")

        def add_members(self, group, refs, missing_status):
            """All or none: every reference a known device object, none a member yet."""
            oids = [object_of(r) if isinstance(r, str) else None for r in refs]
            if any(o is None for o in oids):
                return 400, ("Request_BadRequest", "Invalid URL format specified in @odata.bind for members")
            with sim.lock:
                held = sim.members[group]
                dups = sum(1 for i, o in enumerate(oids) if o in held or o in oids[:i])
                sim.stats["duplicate_member_attempts"] += dups
                unknown = next((o for o in oids if o not in sim.by_object_id), None)
                if unknown:
                    code = "Request_ResourceNotFound" if missing_status == 404 else "Request_BadRequest"
                    return missing_status, (code, does_not_exist(unknown))
                if dups:
                    return 400, ("Request_BadRequest", ALREADY)
                for o in oids:
                    held[o] = None
                sim.stats["members_added"] += len(oids)
            return 204, None

        def profiles(self, method, rest, query, raw):
            with sim.lock:
                allowed, _ = sim.intune_reads.hit(time.monotonic()) if method == "GET" else sim.limiter.hit(time.monotonic())
            if not allowed:
                return self.throttled("1" if sim.retry_after != "none" else "")
            def shown(pid):
                p = {"id": pid, "displayName": f"Profile {pid[:8]}"}
                if "assignments" in query.get("$expand", [""])[0].lower():
                    p["assignments"] = list(sim.profiles[pid])
                return p
            if not rest and method == "GET":
                with sim.lock:
                    body = {"value": [shown(p) for p in list(sim.profiles)]}
                return self.reply(200, body)
            pid = rest[0].lower() if rest else ""
            if not GUID.match(pid):
                return self.failed(400, "BadRequest", f"Invalid key: '{pid}'")
            if len(rest) == 1 and method == "GET":
                with sim.lock:
                    body = shown(pid)
                return self.reply(200, body)
            if rest[1:] == ["assignments"] and method == "POST":
                try:
                    target = json.loads(raw)["target"]
                    group = target["groupId"].lower()
                except (ValueError, KeyError, TypeError, AttributeError):
                    return self.failed(400, "BadRequest", "expected a groupAssignmentTarget")
                assignment = {"id": f"{pid}_{group}", "target": target, "source": "direct", "sourceId": pid}
                with sim.lock:
                    if any(a["id"] == assignment["id"] for a in sim.profiles[pid]):
                        return self.failed(409, "Conflict", "already assigned to this group")
                    sim.profiles[pid].append(assignment)
                    sim.stats["profile_assignments_created"] += 1
                return self.reply(201, assignment)
            return self.failed(405, "BadRequest", "method not allowed")

        def intune(self, write, read_kind):
            """Latency, then Intune's throttle (a write: the write window; a read: the
            any-request one). True if admitted; else the 429 has been sent."""
            with sim.lock:
                now = time.monotonic()
                sim.import_span = (sim.import_span or (now,))[:1] + (now,)
            time.sleep(sim.latency)
            verdict = sim.admit(write=write, read_kind=read_kind)
            if verdict is not None:
                self.throttled(verdict)
                return False
            return True

        def imports(self, method, rest, query, raw):
            """importedWindowsAutopilotDeviceIdentities: import, POST one, list, GET, DELETE."""
            route = "{id}" if len(rest) == 1 and rest[0].lower() != "import" else "/".join(rest).lower()
            if (method, route) not in (("POST", ""), ("POST", "import"), ("GET", ""), ("GET", "{id}"),
                                       ("DELETE", "{id}")):
                return self.failed(405, "BadRequest", "method not allowed")
            many = route == "import"
            if method == "POST":
                with sim.lock:
                    sim.stats["import_requests"] += 1
            if not self.intune(method != "GET", "import_reads"):
                return
            if method == "POST":
                try:
                    body = json.loads(raw)
                except ValueError:
                    return self.failed(400, "BadRequest", "Unable to read JSON request payload.")
                items = body.get("importedWindowsAutopilotDeviceIdentities") if many and isinstance(body, dict) else [body]
                if not isinstance(items, list) or not items:
                    return self.failed(400, "BadRequest", "importedWindowsAutopilotDeviceIdentities: expected a non-empty array")
                if len(items) > sim.batch_limit:
                    return self.failed(400, "BadRequest", f"too many records: {len(items)} (at most {sim.batch_limit})")
                for i, item in enumerate(items):
                    fields = [item.get(k) if isinstance(item, dict) else None for k in ("serialNumber", "hardwareIdentifier")]
                    if not all(isinstance(f, str) and f.strip() for f in fields):
                        return self.failed(400, "BadRequest", f"record {i}: serialNumber and hardwareIdentifier are required")
                with sim.lock:
                    answers = [sim.answer(sim.new_record(item)) for item in items]
                if not many:
                    return self.reply(201, answers[0])
                host = self.headers.get("Host", "127.0.0.1")
                return self.reply(200, {"@odata.context": f"http://{host}/beta/$metadata#Collection("
                                        "microsoft.graph.importedWindowsAutopilotDeviceIdentity)", "value": answers})
            if not rest:
                with sim.lock:
                    sim.settle()
                    items = [sim.answer(r) for r in sim.order if not r["deleted"]]
                body = self.page(items, 1000, "beta/deviceManagement/importedWindowsAutopilotDeviceIdentities", query)
                if body is None:
                    return self.failed(400, "BadRequest", "Invalid $top or $skiptoken.")
                return self.reply(200, body)
            if not GUID.match(rest[0]):
                return self.failed(400, "BadRequest", f"Invalid key: '{rest[0]}'")
            with sim.lock:
                sim.settle()
                rec = sim.records.get(rest[0].lower())
                if rec is None or rec["deleted"]:
                    return self.failed(404, "ResourceNotFound", f"No importedWindowsAutopilotDeviceIdentity '{rest[0]}'")
                if method == "GET":
                    return self.reply(200, sim.answer(rec))
                rec["deleted"] = True
                sim.stats["foreign_records_deleted" if rec["foreign"] else "import_records_deleted"] += 1
            self.send_response(204)
            self.send_header("request-id", str(uuid.uuid4()))
            self.end_headers()

        def autopilot_settings(self, method, rest):
            """windowsAutopilotSettings: GET, and POST .../sync (its own 409/429, no Retry-After)."""
            if (method, rest) not in (("GET", []), ("POST", ["sync"])):
                return self.failed(405, "BadRequest", "method not allowed")
            if not self.intune(method == "POST", "settings_reads"):
                return
            with sim.lock:
                sim.settle()
                if method == "GET":
                    return self.reply(200, sim.settings())
                refused = sim.sync()
            if refused:
                return self.failed(*refused)
            self.send_response(204)
            self.send_header("request-id", str(uuid.uuid4()))
            self.end_headers()

        def do_PATCH(self):
            self.graph("PATCH")

        def do_DELETE(self):
            self.graph("DELETE")

        def do_POST(self):
            if self.path.endswith("/oauth2/v2.0/token"):
                self.body()
                token = {"token_type": "Bearer", "expires_in": 3599, "access_token": uuid.uuid4().hex}
                return self.reply(200, token)
            self.graph("POST")

        def do_GET(self):
            if self.path == "/_sim/stats":
                with sim.lock:
                    sim.settle()
                    stats = dict(sim.stats)
                    if sim.import_span:
                        stats["import_span_seconds"] = round(sim.import_span[-1] - sim.import_span[0], 3)
                    stats["assigned_devices"] = sum(1 for v in sim.assignments.values() if v)
                    return self.reply(200, stats)
            self.graph("GET")

    return Handler


def serial_code(text):
    serial, _, code = text.partition("=")
    if not serial or not code.isdigit():
        raise argparse.ArgumentTypeError(f"expected SERIAL=CODE, got {text!r}")
    return serial.upper(), int(code)


def serial_state(text):
    serial, _, state = text.partition("=")
    if not serial or state not in ("", "complete", "error"):
        raise argparse.ArgumentTypeError(f"expected SERIAL[=complete|error], got {text!r}")
    return serial, state or "complete"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--limit", default="100/2", help="COUNT/SECONDS of the sliding window")
    p.add_argument("--retry-after", choices=["none", "seconds", "mixed", "date", "mixed-date"], default="none")
    p.add_argument("--limiter", choices=["limits", "log"], default="limits")
    p.add_argument("--latency-ms", type=float, default=10.0)
    p.add_argument("--grace-ms", type=float, default=200.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--trace", help="write each request's arrival time and verdict here")
    p.add_argument("--fault-503", type=float, default=0.0, metavar="P",
                   help="chance of a 503 (not executed) on an admitted POST or GET")
    p.add_argument("--fault-503-retry-after", type=float, default=None, metavar="SECONDS",
                   help="Retry-After on 503s (faults and the outage), meant for that device")
    p.add_argument("--fault-504", type=float, default=0.0, metavar="P",
                   help="chance of a 504 on an admitted POST (stored) or GET")
    p.add_argument("--fault-drop", type=float, default=0.0, metavar="P",
                   help="chance an admitted POST is stored and its connection dropped unanswered")
    p.add_argument("--outage-at", type=float, default=0.0, metavar="SECONDS",
                   help="outage start, after the first assignment POST")
    p.add_argument("--outage-for", type=float, default=0.0, metavar="SECONDS",
                   help="outage length: every Graph request answered 503 (0: no outage)")
    p.add_argument("--directory-limit", default="3000/150", metavar="COUNT/SECONDS",
                   help="Entra ID's own write window (member writes); reads get 10x")
    p.add_argument("--identities", type=int, default=0, metavar="N",
                   help="identities (and their Entra devices) listed from the start")
    p.add_argument("--dynamic-group", action="append", default=[], metavar="ID",
                   help="a dynamic group (member writes refused); any other GUID is assigned")
    p.add_argument("--import-batch-limit", type=int, default=500, metavar="N",
                   help="most records one import POST takes (more: 400, nothing stored)")
    p.add_argument("--import-delay", type=float, default=1.0, metavar="SECONDS",
                   help="how long a stored import record stays pending")
    p.add_argument("--import-error", type=serial_code, action="append", default=[],
                   metavar="SERIAL=CODE", help="that serial's records end in this error (808: unknown)")
    p.add_argument("--import-record", type=serial_state, action="append", default=[],
                   metavar="SERIAL[=STATE]", help="a record of another run, there from the start "
                   "(complete, or error 802); deleting it counts in foreign_records_deleted")
    p.add_argument("--sync-interval", type=float, default=600.0, metavar="SECONDS",
                   help="a sync within this long after the last accepted one: 429, no Retry-After")
    p.add_argument("--sync-duration", type=float, default=2.0, metavar="SECONDS",
                   help="how long a sync runs (409 meanwhile); it then registers devices")
    p.add_argument("--last-sync-ago", type=float, default=None, metavar="SECONDS",
                   help="a sync already started this long before the simulator did")
    args = p.parse_args()
    # A listen backlog of 128, not socketserver's 5: with 5, a client opening a few dozen
    # connections at once has some of them wait a TCP retransmission (200 ms) to be accepted,
    # which no real front end does.
    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(Sim(args)))
    server.daemon_threads = True
    print(f"listening on {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
