#!/usr/bin/env bash
# End-to-end benchmark: generate N events, sessionize them file → Iceberg, report events/s, CPU and
# peak memory. Usage: scripts/bench_e2e.sh [EVENTS] [WORKERS] [RUN FLAGS...]   (defaults: 5000000, 2)
# BIN=path/to/sessionize compares another build (e.g. an older commit's) on the same input.
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-5000000}
workers=${2:-2}
shift $(( $# < 2 ? $# : 2 ))
work=${BENCH_DIR:-$(mktemp -d)}
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=${CARGO_TARGET_DIR:-target}/release/sessionize
fi
input="$work/events-$events.jsonl"
[ -f "$input" ] || "$BIN" generate --users $((events / 100)) --events "$events" --out "$input"
rm -rf "$work/warehouse"
# Peak resident memory and CPU from the kernel's accounting of the finished child.
python3 - "$BIN" "$input" "$work/warehouse" "$workers" "$@" <<'PY'
import json, resource, subprocess, sys, time
bin, inp, wh, workers, *flags = sys.argv[1:]
start = time.monotonic()
out = subprocess.run([bin, "run", "--input", inp, "--warehouse", wh, "-w", workers, "--log-level", "warn", *flags],
                     check=True, capture_output=True, text=True).stdout
wall = time.monotonic() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
summary = json.loads(out.strip().splitlines()[-1])
print(json.dumps({"events": summary["events_read"], "workers": int(workers), "wall_s": round(wall, 2),
                  "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                  "events_per_s": round(summary["events_read"] / wall), "peak_rss_mib": round(usage.ru_maxrss / 1024),
                  "sessions": summary["sessions"]}))
PY
