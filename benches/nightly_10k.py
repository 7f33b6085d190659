#!/usr/bin/env python3
"""Night 1 and night 2 of a 10,000-device export against `autopilot-bulk emulate` in its own
process: night 2 is the same export shuffled, 100 gone and 100 new (1 %). Prints each night's
time, rows and the emulator's request counters.

    cargo build --release
    cd $(mktemp -d) && python3 /path/to/benches/nightly_10k.py \
        /path/to/target/release/autopilot-bulk 100/1s 10ms 1000/1s   # --rate, --latency, --request-rate
"""
import json, os, random, subprocess, sys, time, urllib.request
BIN = sys.argv[1]
dev = lambda i: f"{i:08x}-0000-4000-8000-{i:012x}"
G = "5e7e0c2a-3b1d-4c8e-9f6a-0d1c2b3a4f5e"
open("devices.txt", "w").write("".join(dev(i) + "\n" for i in range(10200)))
def export(path, ids):
    with open(path, "w") as f:
        f.write("device_id,target_type,group_id\n")
        for i in ids:
            f.write(f"{dev(i)},group,{G}\n")
night1 = list(range(10000))
rng = random.Random(1)
kept = [i for i in night1 if i % 100 != 7]          # 100 gone
night2 = kept + list(range(10000, 10100))              # 100 new: 1 %
rng.shuffle(night2)
export("night1.csv", night1); export("night2.csv", night2)
emu = subprocess.Popen([BIN, "emulate", "--port", "0", "--limit", sys.argv[2], "--devices", "devices.txt",
                        "--latency", sys.argv[3]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
url = None
for line in emu.stdout:
    if "http://" in line:
        url = line[line.index("http://"):].split()[0].rstrip("/.,")
        break
base = url.split("/beta")[0]
env = dict(os.environ, AUTOPILOT_BULK_GRAPH_URL=f"{base}/beta", AUTOPILOT_BULK_AUTHORITY_URL=base,
           AZURE_TENANT_ID="t", AZURE_CLIENT_ID="c", AZURE_CLIENT_SECRET="s")
def stats():
    return json.load(urllib.request.urlopen(f"{base}/_emulator/stats"))
def window_seconds(rate):
    """The DURATION of COUNT/DURATION, e.g. 100/1s -> 1.0, 100/20s -> 20.0, 100/500ms -> 0.5."""
    per = rate.split("/", 1)[1]
    for unit, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if per.endswith(unit):
            return float(per[: -len(unit)] or 1) * factor
    return float(per)
for night in ("night1", "night2"):
    if night == "night2":
        # Nights are a day apart: night 1's last window must not count against night 2's first.
        time.sleep(2 * window_seconds(sys.argv[2]))
    before = stats()
    t = time.monotonic()
    p = subprocess.run([BIN, "run", f"{night}.csv", "-o", "results.csv", "--overwrite", "--rate", sys.argv[2],
                        "--request-rate", sys.argv[4], "-q", "--summary-json", f"{night}.json"], env=env,
                       capture_output=True, text=True)
    wall = time.monotonic() - t
    s = json.load(open(f"{night}.json")); after = stats()
    d = {k: after[k] - before.get(k, 0) for k in ("write_requests", "assignment_reads", "identity_reads", "assignments_created", "throttled") if isinstance(after.get(k), int)}
    rows = {k: s["rows"][k] for k in s["rows"] if s["rows"][k]} if isinstance(s.get("rows"), dict) else s.get("rows")
    print(f"{night}: exit {p.returncode} · {s.get('elapsed_seconds')} s (process {wall:.1f} s) · rows {rows} · {d} · duplicates {after.get('duplicate_devices')}", flush=True)
emu.terminate()
