#!/usr/bin/env bash
# End-to-end benchmark: generate N events, sessionize them file → Iceberg, report events/s and
# peak memory. Usage: scripts/bench_e2e.sh [EVENTS] [WORKERS]   (defaults: 5000000, 2)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-5000000}
workers=${2:-2}
work=${BENCH_DIR:-$(mktemp -d)}
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/sessionize
input="$work/events-$events.jsonl"
[ -f "$input" ] || "$bin" generate --users $((events / 100)) --events "$events" --out "$input"
rm -rf "$work/warehouse"
# Peak resident memory from the kernel's accounting of the finished child (no /usr/bin/time needed).
python3 - "$bin" "$input" "$work/warehouse" "$workers" <<'PY'
import json, resource, subprocess, sys, time
bin, inp, wh, workers = sys.argv[1:]
start = time.monotonic()
out = subprocess.run([bin, "run", "--input", inp, "--warehouse", wh, "-w", workers, "--log-level", "warn"],
                     check=True, capture_output=True, text=True).stdout
wall = time.monotonic() - start
summary = json.loads(out.strip().splitlines()[-1])
peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"events": summary["events_read"], "workers": int(workers), "wall_s": round(wall, 2),
                  "events_per_s": round(summary["events_read"] / wall), "peak_rss_mib": round(peak_mib),
                  "sessions": summary["sessions"]}))
PY
