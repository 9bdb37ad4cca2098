#!/usr/bin/env bash
# The cost of corrections. A generated file (EVENTS lines of USERS users: about 17 hours of event
# time for the defaults) and copies of it in which a share of the events (SHARES, per mille)
# arrive LAG lines later (the default is about 45 minutes of event time: past the allowed
# lateness, and past the close of most sessions they belong to, so that committed rows are
# replaced). Each file runs RUNS times, alternating, with the default --correction-horizon and
# with 0 (late events go to the late-events table), committing every INTERVAL. Prints the medians
# of wall time, CPU time and peak RSS, and the corrections committed (rows replaced, table files
# rewritten, from the log).
# Usage: scripts/bench_corrections.sh [RUNS]   (env: EVENTS USERS SHARES LAG INTERVAL BIN BENCH_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
events=${EVENTS:-2000000}
users=${USERS:-20000}
shares=${SHARES:-"1 10"}
lag=${LAG:-86000}
interval=${INTERVAL:-500ms}
work=${BENCH_DIR:-$(mktemp -d)}
bin=${BIN:-${CARGO_TARGET_DIR:-target}/release/sessionize}
[ -n "${BIN:-}" ] || cargo build --release --quiet
mkdir -p "$work"
[ -s "$work/events.jsonl" ] || "$bin" generate --users "$users" --events "$events" \
  --out "$work/events.jsonl" 2>/dev/null
for share in $shares; do
  python3 - "$work/events.jsonl" "$work/late-$share.jsonl" "$share" "$lag" <<'PY'
import sys
source, target, per_mille, lag = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lines = open(source, "rb").readlines()
delayed = {}
with open(target, "wb") as out:
    for i, line in enumerate(lines):
        # Every (1000 / per_mille)-th line, spread evenly, goes out `lag` lines later.
        if (i * per_mille) % 1000 < per_mille and i + lag < len(lines):
            delayed.setdefault(i + lag, []).append(line)
        else:
            out.write(line)
        out.writelines(delayed.pop(i, []))
PY
done
python3 - "$bin" "$work" "$runs" "$interval" $shares <<'PY'
import json, statistics, subprocess, sys
bin, work, runs, interval, *shares = sys.argv[1:]
files = [("on time", "events.jsonl")] + [(f"{int(s) / 10:g}% late", f"late-{s}.jsonl") for s in shares]
results = {}
for _ in range(int(runs)):
    for name, file in files:
        for horizon in ["24", "0"]:
            warehouse = f"{work}/warehouse"
            subprocess.run(["rm", "-rf", warehouse], check=True)
            timed = subprocess.run(
                ["/usr/bin/time", "-f", "%e %U %S %M", bin, "run", "--input", f"{work}/{file}",
                 "--warehouse", warehouse, "-w", "2", "--commit-interval", interval,
                 "--correction-horizon", horizon, "--log-format", "json"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True)
            lines = timed.stderr.strip().splitlines()
            wall, user, system, rss = lines[-1].split()
            retracted = rewritten = late = 0
            for line in lines[:-1]:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                fields = record.get("fields", {})
                if fields.get("message") == "rewrote the files holding corrected sessions":
                    retracted += int(fields["retracted"])
                    rewritten += int(fields["files_rewritten"])
            results.setdefault((name, horizon), []).append(
                (float(wall), float(user) + float(system), int(rss) / 1024, retracted, rewritten))
print(f"{'input':<12} {'horizon':>8} {'wall s':>8} {'CPU s':>8} {'RSS MiB':>8} {'replaced':>9} {'rewritten':>9}")
for (name, horizon), rows in results.items():
    median = lambda k: statistics.median(r[k] for r in rows)
    print(f"{name:<12} {horizon + ' h':>8} {median(0):>8.2f} {median(1):>8.2f} {median(2):>8.0f} "
          f"{median(3):>9.0f} {median(4):>9.0f}")
PY
