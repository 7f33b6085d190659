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
  duplicates (devices assigned more than once) and the most accepted requests seen in any
  window (never above the limit: that is the limiter's job).

Standard library apart from `limits`; HTTP/1.1 keep-alive, one thread per connection.
Usage: graph_sim.py --limit 100/2 --retry-after none [--latency-ms 10] [--port 0]
The first line on stdout is `listening on PORT`.
"""

import argparse
import collections
import json
import random
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

        def graph(self, method):
            device = device_of(self.path)
            raw = self.body()
            if device is None:
                return self.reply(404, {"error": {"code": "ResourceNotFound", "message": self.path}})
            if not self.headers.get("Authorization", "").startswith("Bearer "):
                return self.reply(401, {"error": {"code": "InvalidAuthenticationToken", "message": "no token"}})
            time.sleep(sim.latency)
            verdict = sim.admit()
            if verdict is not None:
                return self.throttled(verdict)
            with sim.lock:
                if method == "GET":
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
                    return self.reply(200, dict(sim.stats))
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
    args = p.parse_args()
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
