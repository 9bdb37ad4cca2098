#!/usr/bin/env bash
# Scale-out on one machine: the same file sessionized by one process of W workers and by N processes
# of one worker each (a cluster over TCP on localhost), in turn, RUNS times each; prints one JSON
# line per run: wall, CPU of all processes, events/s and the largest process's peak RSS. Each
# process's stderr goes to the terminal.
# Usage: scripts/bench_scaling.sh [EVENTS] [USERS] [RUNS] [N]   (defaults: 5000000, EVENTS/100, 3, 2)
# BIN=path/to/sessionize measures another build; BENCH_DIR keeps the input between calls.
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-5000000}
users=${2:-$((events / 100))}
runs=${3:-3}
processes=${4:-2}
work=${BENCH_DIR:-$(mktemp -d)}
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=${CARGO_TARGET_DIR:-target}/release/sessionize
fi
input="$work/events-$events-$users.jsonl"
[ -f "$input" ] || "$BIN" generate --users "$users" --events "$events" --out "$input" >/dev/null 2>&1
python3 - "$BIN" "$input" "$work" "$runs" "$processes" <<'PY'
import json, os, resource, shutil, socket, subprocess, sys, time
bin, inp, work, runs, n = sys.argv[1:]
runs, n = int(runs), int(n)

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def measure(shape, commands):
    wh = os.path.join(work, "warehouse")
    shutil.rmtree(wh, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    procs = [subprocess.Popen(c + ["--warehouse", wh, "--log-level", "warn"], stdout=subprocess.PIPE, text=True)
             for c in commands]
    peak, outs = 0, []
    for p in procs:
        _, status, usage = os.wait4(p.pid, 0)
        if status != 0:
            sys.exit(f"{shape}: a process failed ({status})")
        peak = max(peak, usage.ru_maxrss)
        outs.append(p.stdout.read())
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    # Only process 0 prints a summary, and it counts the events process 0 read: with a file input
    # that is all of them (the file has one reader), which is what this script runs.
    events = json.loads(outs[0].strip().splitlines()[-1])["events_read"]
    print(json.dumps({"shape": shape, "events": events, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                      "events_per_s": round(events / wall), "peak_rss_mib": round(peak / 1024)}), flush=True)

for _ in range(runs):
    measure("-w 1", [[bin, "run", "--input", inp, "-w", "1"]])
    measure(f"-w {n}", [[bin, "run", "--input", inp, "-w", str(n)]])
    hosts = os.path.join(work, "hosts")
    with open(hosts, "w") as f:
        f.writelines(f"127.0.0.1:{free_port()}\n" for _ in range(n))
    measure(f"-n {n} -w 1", [[bin, "run", "--input", inp, "-w", "1", "-n", str(n), "-p", str(p), "-h", hosts]
                            for p in range(n)])
PY
