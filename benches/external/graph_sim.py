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
  with Graph's error body and, per `--retry-after`, a `Retry-After` in whole seconds, none, or
  either at random (`mixed`);
* `GET` on the same path -> the device's assignments (also counted by the limiter);
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

Standard library apart from `limits`; HTTP/1.1 keep-alive, one thread per connection.
Usage: graph_sim.py --limit 100/2 --retry-after none [--latency-ms 10] [--port 0]
       [--fault-503 0.05 --fault-503-retry-after 1 --fault-504 0.02 --fault-drop 0.03 --seed 1]
       [--outage-at 4 --outage-for 6]
The first line on stdout is `listening on PORT`.
"""

import argparse
import collections
import json
import random
import socket
import sys
import threading
import time
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


class Sim:
    def __init__(self, args):
        count, per = args.limit.split("/")
        self.count, self.per = int(count), float(per)
        self.limiter = (LimitsLimiter if args.limiter == "limits" else LogLimiter)(
            self.count, self.per
        )
        self.retry_after = args.retry_after
        self.latency = args.latency_ms / 1000.0
        self.grace = args.grace_ms / 1000.0
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()
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

    def arrive(self, method, device):
        """At a Graph request's arrival: the per-device Retry-After check, the outage, and this
        request's fault roll. Returns (in_outage, roll)."""
        with self.lock:
            now = time.monotonic()
            if method == "POST" and self.first_post is None:
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

    def admit(self):
        """Count one request; None if accepted, else the Retry-After header value (or "")."""
        with self.lock:
            now = time.monotonic()
            self.stats["requests"] += 1
            if now < self.blocked_until and now > self.blocked_since + self.grace:
                self.stats["violations"] += 1
            allowed, wait = self.limiter.hit(now)
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
            state = self.retry_after
            if state == "mixed":
                state = self.rng.choice(["seconds", "none"])
            if state == "none":
                return ""
            seconds = max(1, int(wait + 0.999))
            self.blocked_since, self.blocked_until = now, now + seconds
            return str(seconds)


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
                return self.reply(404, {"error": {"code": "ResourceNotFound", "message": self.path}})
            if not self.headers.get("Authorization", "").startswith("Bearer "):
                return self.reply(401, {"error": {"code": "InvalidAuthenticationToken", "message": "no token"}})
            in_outage, roll = sim.arrive(method, device)
            time.sleep(sim.latency)
            if in_outage:
                return self.unavailable(device)
            verdict = sim.admit()
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

        def do_POST(self):
            if self.path.endswith("/oauth2/v2.0/token"):
                self.body()
                token = {"token_type": "Bearer", "expires_in": 3599, "access_token": uuid.uuid4().hex}
                return self.reply(200, token)
            self.graph("POST")

        def do_GET(self):
            if self.path == "/_sim/stats":
                with sim.lock:
                    stats = dict(sim.stats)
                    stats["assigned_devices"] = sum(1 for v in sim.assignments.values() if v)
                    return self.reply(200, stats)
            self.graph("GET")

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--limit", default="100/2", help="COUNT/SECONDS of the sliding window")
    p.add_argument("--retry-after", choices=["none", "seconds", "mixed"], default="none")
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
