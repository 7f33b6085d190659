#!/usr/bin/env python3
"""Run autopilot-bulk (the release binary, as a user would) against graph_sim.py and print,
per scenario, completion ÷ theoretical minimum, share of 429s, violations and duplicates.

    pip install limits==5.8.0
    cargo build --release
    python3 benches/external/run.py [--repeat 3] [NAME ...]

The theoretical minimum for N requests against a sliding window of COUNT per DURATION is
(ceil(N/COUNT) - 1) * DURATION: 1,000 rows against 100 per 2 s need 18 s.

`tenants-3` runs three simulators, one per tenant, each with its own window, and one input of
1,000 rows per tenant through `--tenants`: its minimum is one tenant's (they run side by side).

Fault scenarios (`faults-isolated`, `outage-6s`, `outage-6s-retry-after`) use the simulator's
fault injection. Their minimum is for the writes the run SENT, as the simulator counted them
(retries included; reads, such as read-backs, have their own ten times larger window):
(ceil(writes/COUNT) - 1) * DURATION; for an outage, the writes answered outside it, plus the
outage's length.

`import` (only when named) runs `autopilot-bulk import` over a generated Get-WindowsAutopilotInfo
CSV of `--hashes N` random ~4 KB hashes against one simulator (window COUNT per `--window`,
import delay 1 s, sync 2 s) and prints the simulator's requests by kind and the wall time. The
command does not exist yet: `import_command` below is the one place its command line is built.

    python3 benches/external/run.py import --hashes 1000 [--bin target/release/autopilot-bulk]
"""

import argparse
import base64
import csv
import json
import math
import os
import pathlib
import random
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent

# name, sim limiter, Retry-After mode, client --rate as (count, fraction of the window):
# "matched" is the service's own limit, "4x" twice the count in half the window.
SCENARIOS = [
    ("matched-none", "limits", "none", (100, 1.0)),
    ("matched-seconds", "limits", "seconds", (100, 1.0)),
    ("matched-mixed", "limits", "mixed", (100, 1.0)),
    ("4x-none", "limits", "none", (200, 0.5)),
    ("4x-seconds", "limits", "seconds", (200, 0.5)),
    ("4x-mixed", "limits", "mixed", (200, 0.5)),
    ("4x-date", "limits", "date", (200, 0.5)),
    ("4x-mixed-date", "limits", "mixed-date", (200, 0.5)),
    ("4x-date-count-throttled", "log", "date", (200, 0.5)),
    ("4x-none-count-throttled", "log", "none", (200, 0.5)),
    ("4x-seconds-count-throttled", "log", "seconds", (200, 0.5)),
    # Faults (simulator flags after the name's tuple): isolated 503s with their own Retry-After,
    # 504s that executed, dropped connections that executed; and a 6 s outage 4 s in.
    ("faults-isolated", "limits", "none", (100, 1.0),
     ["--fault-503", "0.05", "--fault-503-retry-after", "1", "--fault-504", "0.02",
      "--fault-drop", "0.03", "--seed", "1"]),
    ("outage-6s", "limits", "none", (100, 1.0), ["--outage-at", "4", "--outage-for", "6"]),
    ("outage-6s-retry-after", "limits", "none", (100, 1.0),
     ["--outage-at", "4", "--outage-for", "6", "--fault-503-retry-after", "1"]),
]
ROWS, COUNT, LATENCY_MS = 1000, 100, 10.0
# The service's window in seconds (--window): 2 s keeps a run near 20 s; Intune's is 20 s.
PER = 2.0


def write_input(path, first=0):
    with open(path, "w") as f:
        f.write("device_id,target_type,group_id\n")
        for i in range(first, first + ROWS):
            f.write(f"{i:08x}-0000-4000-8000-{i:012x},group,5e7e0c2a-3b1d-4c8e-9f6a-0d1c2b3a4f5e\n")


def sim_env(base):
    return dict(os.environ,
                AUTOPILOT_BULK_GRAPH_URL=f"{base}/beta",
                AUTOPILOT_BULK_AUTHORITY_URL=base,
                AZURE_TENANT_ID="sim-tenant", AZURE_CLIENT_ID="sim-client",
                AZURE_CLIENT_SECRET="sim-secret")


def sim_stats(base):
    with urllib.request.urlopen(f"{base}/_sim/stats") as r:
        return json.load(r)


def run_back_to_back(binary, retry_after, concurrency, limiter="limits", trace=None):
    """Two runs of ROWS new devices each on one simulator, the second started the instant the
    first ended, at the service's own rate: the second meets a window still holding the first
    one's last requests (the night before, another admin's job, a `--resume` after a stop).
    Prints the second run's time against its own minimum, and its 429s."""
    sim = subprocess.Popen(
        [sys.executable, str(HERE / "graph_sim.py"), "--limit", f"{COUNT}/{PER:g}",
         "--limiter", limiter, "--retry-after", retry_after, "--latency-ms", str(LATENCY_MS),
         "--identities", str(2 * ROWS)] + (["--trace", trace] if trace else []),
        stdout=subprocess.PIPE, text=True,
    )
    try:
        base = f"http://127.0.0.1:{int(sim.stdout.readline().split()[-1])}"
        pinned = ["--concurrency", str(concurrency)] if concurrency > 0 else []
        rate = f"{COUNT}/{int(PER * 1000)}ms"
        summaries, stats = [], []
        with tempfile.TemporaryDirectory() as d:
            d = pathlib.Path(d)
            for night in (1, 2):
                write_input(d / f"in{night}.csv", first=(night - 1) * ROWS)
                proc = subprocess.run(
                    [binary, "run", str(d / f"in{night}.csv"), "--output", str(d / f"out{night}.csv"),
                     "--rate", rate, "--request-rate", f"{10 * COUNT}/{int(PER * 1000)}ms", *pinned, "-q", "--summary-json", str(d / f"s{night}.json")],
                    env=sim_env(base), capture_output=True, text=True,
                )
                if not (d / f"s{night}.json").exists():
                    sys.exit(f"back-to-back: no summary (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
                summaries.append(json.loads((d / f"s{night}.json").read_text()))
                stats.append(sim_stats(base))
    finally:
        sim.terminate()
        sim.wait()
    minimum = (math.ceil(ROWS / COUNT) - 1) * PER
    second = summaries[1]["elapsed_seconds"]
    throttled = stats[1].get("throttled", 0) - stats[0].get("throttled", 0)
    requests = stats[1].get("requests", 0) - stats[0].get("requests", 0)
    print(f"{f'back-to-back-{retry_after}' + ('-count-throttled' if limiter == 'log' else ''):<28} "
          f"first {summaries[0]['elapsed_seconds']:6.2f} s · second {second:6.2f} s / {minimum:.0f} s"
          f" = {second / minimum:.3f}× · its 429s {throttled}/{requests} · violations "
          f"{stats[1].get('violations', 0)} · duplicates {stats[1].get('duplicates', 0)} · "
          f"second's final rate {summaries[1].get('final_rate')}", flush=True)


def run(binary, name, limiter, retry_after, rate, concurrency, trace=None, faults=()):
    sim = subprocess.Popen(
        [sys.executable, str(HERE / "graph_sim.py"), "--limit", f"{COUNT}/{PER:g}",
         "--limiter", limiter, "--retry-after", retry_after, "--latency-ms", str(LATENCY_MS),
         "--identities", str(2 * ROWS)]
        + (["--trace", trace] if trace else []) + list(faults),
        stdout=subprocess.PIPE, text=True,
    )
    try:
        port = int(sim.stdout.readline().split()[-1])
        base = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as d:
            d = pathlib.Path(d)
            write_input(d / "in.csv")
            env = dict(os.environ,
                       AUTOPILOT_BULK_GRAPH_URL=f"{base}/beta",
                       AUTOPILOT_BULK_AUTHORITY_URL=base,
                       AZURE_TENANT_ID="sim-tenant", AZURE_CLIENT_ID="sim-client",
                       AZURE_CLIENT_SECRET="sim-secret")
            started = time.monotonic()
            # --concurrency 0: leave it to the binary's default (it follows the latency).
            pinned = ["--concurrency", str(concurrency)] if concurrency > 0 else []
            proc = subprocess.run(
                [binary, "run", str(d / "in.csv"), "--output", str(d / "out.csv"),
                 "--rate", rate, "--request-rate", f"{10 * COUNT}/{int(PER * 1000)}ms", *pinned, "-q",
                 "--summary-json", str(d / "summary.json")],
                env=env, capture_output=True, text=True,
            )
            wall = time.monotonic() - started
            if not (d / "summary.json").exists():
                sys.exit(f"{name}: no summary (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
            summary = json.loads((d / "summary.json").read_text())
        with urllib.request.urlopen(f"{base}/_sim/stats") as r:
            stats = json.load(r)
    finally:
        sim.terminate()
        sim.wait()
    if faults:
        return report_faults(name, faults, proc, wall, summary, stats)
    minimum = (math.ceil(ROWS / COUNT) - 1) * PER
    elapsed = summary["elapsed_seconds"]
    share = stats.get("throttled", 0) / max(1, stats.get("requests", 1))
    print(f"{name:<28} exit {proc.returncode} · {elapsed:6.2f} s (process {wall:6.2f} s) / "
          f"{minimum:.0f} s = {elapsed / minimum:.3f}× · 429s {share * 100:5.2f}% "
          f"({stats.get('throttled', 0)}/{stats.get('requests', 0)}) · violations "
          f"{stats.get('violations', 0)} · created {stats.get('created', 0)} · duplicates "
          f"{stats.get('duplicates', 0)} · max in window {stats.get('max_in_window', 0)} · "
          f"final rate {summary.get('final_rate')}", flush=True)
    if trace:
        # From the first write the service saw to the last: the run less its start-up (the
        # token and the identity listing, about a second here).
        times = [float(line.split()[0]) for line in open(trace) if line.strip()]
        if times:
            span = times[-1] - times[0]
            print(f"{'':<28} writes span {span:6.2f} s = {span / minimum:.3f}×", flush=True)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)


def run_tenants(binary, tenants, concurrency):
    """`tenants` simulators, one per tenant, each with its own window of COUNT per PER; one input
    of ROWS rows per tenant, interleaved; one run with --tenants. The minimum is one tenant's:
    they run side by side."""
    sims = []
    try:
        for _ in range(tenants):
            sims.append(subprocess.Popen(
                [sys.executable, str(HERE / "graph_sim.py"), "--limit", f"{COUNT}/{PER:g}",
                 "--retry-after", "seconds", "--latency-ms", str(LATENCY_MS)],
                stdout=subprocess.PIPE, text=True,
            ))
        bases = [f"http://127.0.0.1:{int(s.stdout.readline().split()[-1])}" for s in sims]
        with tempfile.TemporaryDirectory() as d:
            d = pathlib.Path(d)
            with open(d / "in.csv", "w") as f:
                f.write("tenant,device_id,target_type,group_id\n")
                for i in range(ROWS):
                    for t in range(tenants):
                        f.write(f"t{t},{i:08x}-0000-4000-8000-{t:04x}{i:08x},group,"
                                "5e7e0c2a-3b1d-4c8e-9f6a-0d1c2b3a4f5e\n")
            with open(d / "tenants.toml", "w") as f:
                for t, base in enumerate(bases):
                    f.write(f'[tenants.t{t}]\ntenant_id = "sim-tenant-{t}"\n'
                            f'client_id = "sim-client"\nclient_secret_env = "SIM_SECRET"\n'
                            f'graph_url = "{base}/beta"\nauthority_url = "{base}"\n'
                            f'rate = "{COUNT}/{int(PER * 1000)}ms"\n\n')
            env = dict(os.environ, SIM_SECRET="sim-secret")
            pinned = ["--concurrency", str(concurrency)] if concurrency > 0 else []
            started = time.monotonic()
            proc = subprocess.run(
                [binary, "run", str(d / "in.csv"), "--output", str(d / "out.csv"),
                 "--tenants", str(d / "tenants.toml"), *pinned, "-q",
                 "--summary-json", str(d / "summary.json")],
                env=env, capture_output=True, text=True,
            )
            wall = time.monotonic() - started
            if not (d / "summary.json").exists():
                sys.exit(f"tenants: no summary (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
            summary = json.loads((d / "summary.json").read_text())
        stats = []
        for base in bases:
            with urllib.request.urlopen(f"{base}/_sim/stats") as r:
                stats.append(json.load(r))
    finally:
        for s in sims:
            s.terminate()
            s.wait()
    minimum = (math.ceil(ROWS / COUNT) - 1) * PER
    elapsed = summary["elapsed_seconds"]
    total = lambda key: sum(s.get(key, 0) for s in stats)
    print(f"{f'tenants-{tenants}x{ROWS}':<28} exit {proc.returncode} · {elapsed:6.2f} s "
          f"(process {wall:6.2f} s) / one tenant's {minimum:.0f} s = {elapsed / minimum:.3f}× "
          f"(one after another: {minimum * tenants:.0f} s) · 429s {total('throttled')}/"
          f"{total('requests')} · violations {total('violations')} · created {total('created')} · "
          f"duplicates {total('duplicates')} · created per tenant "
          f"{[s.get('created', 0) for s in stats]}", flush=True)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)


def report_faults(name, faults, proc, wall, summary, stats):
    requests = stats.get("requests", 0)
    outage = stats.get("outage_requests", 0)
    outage_for = float(faults[faults.index("--outage-for") + 1]) if "--outage-for" in faults else 0.0
    # The writes the run sent, outside the outage (those never reached the limiter). Reads
    # (a device's assignments, listing pages) have their own, ten times larger window: they
    # take no place among the writes.
    reads = stats.get("assignment_reads", 0) + stats.get("identity_reads", 0)
    sent = requests - outage - reads
    minimum = (math.ceil(sent / COUNT) - 1) * PER + outage_for
    elapsed = summary["elapsed_seconds"]
    share = stats.get("throttled", 0) / max(1, requests)
    rows = {k: v for k, v in summary.items() if isinstance(v, int) and not isinstance(v, bool)}
    print(f"{name:<28} exit {proc.returncode} · {elapsed:6.2f} s (process {wall:6.2f} s) / "
          f"minimum {minimum:.0f} s ({sent} writes"
          f"{f' + {outage_for:g} s outage' if outage_for else ''}) = {elapsed / minimum:.3f}× "
          f"(+{elapsed - minimum:.2f} s) · 429s {share * 100:5.2f}% "
          f"({stats.get('throttled', 0)}/{requests}) · 429 violations {stats.get('violations', 0)}"
          f" · 503 Retry-After violations {stats.get('fault_retry_after_violations', 0)} · "
          f"outage requests {outage} · faults 503/504/drop {stats.get('faults_503', 0)}/"
          f"{stats.get('faults_504', 0)}/{stats.get('faults_dropped', 0)} · created "
          f"{stats.get('created', 0)} · devices assigned {stats.get('assigned_devices', 0)}/{ROWS}"
          f" · duplicates {stats.get('duplicates', 0)} · max in window "
          f"{stats.get('max_in_window', 0)} · summary {rows}", flush=True)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)


def import_command(binary, hashes, results, summary, base, rate, concurrency):
    """`autopilot-bulk import`'s command line, mirroring `run`'s (see run()): `-o` the results."""
    pinned = ["--concurrency", str(concurrency)] if concurrency > 0 else []
    return [binary, "import", str(hashes), "-o", str(results), "--graph-url", f"{base}/beta",
            "--authority-url", base, "--rate", rate, "--request-rate", f"{10 * COUNT}/{int(PER * 1000)}ms", *pinned, "-q", "--summary-json", str(summary)]


def write_hashes(path, n, seed=1):
    """A Get-WindowsAutopilotInfo CSV: n serials, random 3,000-byte hashes (4,000 base64 chars)."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["Device Serial Number", "Windows Product ID", "Hardware Hash", "Group Tag"])
        for i in range(n):
            out.writerow([f"SIM{i:08d}", "", base64.b64encode(rng.randbytes(3000)).decode(), ""])


IMPORT_KINDS = ["import_requests", "records_imported", "import_reads", "import_records_deleted",
                "foreign_records_deleted", "syncs", "syncs_refused", "settings_reads",
                "devices_registered", "serials_imported_twice", "identity_reads",
                "directory_requests", "throttled", "read_throttled", "violations"]


def run_import(binary, n, concurrency, keep=False):
    sim = subprocess.Popen(
        [sys.executable, str(HERE / "graph_sim.py"), "--limit", f"{COUNT}/{PER:g}",
         "--retry-after", "seconds", "--latency-ms", str(LATENCY_MS)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        base = f"http://127.0.0.1:{int(sim.stdout.readline().split()[-1])}"
        with tempfile.TemporaryDirectory() as d:
            d = pathlib.Path(d)
            write_hashes(d / "hashes.csv", n)
            env = dict(os.environ, AZURE_TENANT_ID="sim-tenant", AZURE_CLIENT_ID="sim-client",
                       AZURE_CLIENT_SECRET="sim-secret")
            command = import_command(binary, d / "hashes.csv", d / "results.csv", d / "summary.json",
                                     base, f"{COUNT}/{int(PER * 1000)}ms", concurrency)
            if keep:
                command.append("--keep-import-records")
            started = time.monotonic()
            try:
                proc = subprocess.run(command, env=env, capture_output=True, text=True)
            except OSError as e:
                sys.exit(f"import: cannot run {binary}: {e}")
            wall = time.monotonic() - started
            summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else None
        with urllib.request.urlopen(f"{base}/_sim/stats") as r:
            stats = json.load(r)
    finally:
        sim.terminate()
        sim.wait()
    kinds = " · ".join(f"{k} {stats.get(k, 0)}" for k in IMPORT_KINDS)
    elapsed = f"summary elapsed {summary.get('elapsed_ms', 0) / 1000:.2f} s" if summary else "no summary"
    print(f"{f'import-{n}':<28} exit {proc.returncode} · process {wall:6.2f} s · {elapsed} · "
          f"import routes {stats.get('import_span_seconds', 0):.2f} s (first to last) · "
          f"requests {stats.get('requests', 0)}: {kinds}", flush=True)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("names", nargs="*")
    p.add_argument("--bin", default=str(ROOT / "target/release/autopilot-bulk"))
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=8,
                   help="rows in flight; 0 leaves the binary's default (follows latency)")
    p.add_argument("--window", type=float, default=2.0, help="the service's window, seconds")
    p.add_argument("--latency-ms", type=float, default=10.0)
    p.add_argument("--rows", type=int, default=1000,
                   help="rows per run (1,000: exactly ten windows, so one place lost to a 429 "
                        "costs a whole window; 1,050 leaves half a window spare)")
    p.add_argument("--trace", help="the simulator writes each request's arrival and verdict here")
    p.add_argument("--hashes", type=int, default=1000, help="rows of the `import` scenario's CSV")
    p.add_argument("--keep-import-records", action="store_true",
                   help="`import` leaves its records (no deletes)")
    args = p.parse_args()
    global PER, LATENCY_MS, ROWS
    PER, LATENCY_MS, ROWS = args.window, args.latency_ms, args.rows
    for _ in range(args.repeat):
        for name, limiter, ra, (count, fraction), *faults in SCENARIOS:
            rate = f"{count}/{int(PER * fraction * 1000)}ms"
            if not args.names or any(n in name for n in args.names):
                run(args.bin, name, limiter, ra, rate, args.concurrency, args.trace,
                    faults[0] if faults else ())
        if not args.names or any(n in "tenants-3" for n in args.names):
            run_tenants(args.bin, 3, args.concurrency)
        for ra, limiter in (("none", "limits"), ("seconds", "limits"), ("date", "log")):
            name = f"back-to-back-{ra}" + ("-count-throttled" if limiter == "log" else "")
            if not args.names or any(n in name for n in args.names):
                run_back_to_back(args.bin, ra, args.concurrency, limiter, args.trace)
        if "import" in args.names:
            run_import(args.bin, args.hashes, args.concurrency, args.keep_import_records)


if __name__ == "__main__":
    main()
