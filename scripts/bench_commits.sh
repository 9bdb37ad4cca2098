#!/usr/bin/env bash
# Commit time and memory over many commits of a live run: a real Apache Kafka broker
# (scripts/services/kafka.sh), a producer at RATE events/s whose event time runs hours per minute
# (so that sessions close at every commit), and `sessionize run` committing every INTERVAL until
# it has made COMMITS commits. Prints, per tenth of the commits: commit time (mean, p95, max) and
# the run's resident memory (max), then the sessions table's shape (scripts/table_shape.py).
# Usage: scripts/bench_commits.sh [COMMITS] [INTERVAL] [RATE] [RUN FLAGS...]
#        (defaults: 1000, 300ms, 3000; e.g. --compact-min-files 0 for a run without compaction)
#        USERS (default 1000) sets how fast event time runs: about RATE × 2 min / USERS per second.
# Needs scripts/services/install.sh to have run; the broker stops with this script.
set -euo pipefail
cd "$(dirname "$0")/.."
commits=${1:-1000}
interval=${2:-300ms}
rate=${3:-3000}
shift $(($# < 3 ? $# : 3))
work=${BENCH_DIR:-$(mktemp -d)}
bin=${BIN:-${CARGO_TARGET_DIR:-target}/release/sessionize}
[ -n "${BIN:-}" ] || cargo build --release --quiet
rm -rf "$work/warehouse" "$work/kafka"
broker=$(bash scripts/services/kafka.sh start --dir "$work/kafka" --stop-with $$)
servers=$(sed -n 's/.*BOOTSTRAP=\([^ ]*\).*/\1/p' <<<"$broker")
trap 'bash scripts/services/kafka.sh stop --dir "$work/kafka"' EXIT
bash scripts/services/kafka.sh run org.apache.kafka.tools.TopicCommand --bootstrap-server "$servers" \
  --create --topic clickstream-events --partitions 4 >/dev/null
python3 - "$bin" "$work" "$servers" "$commits" "$interval" "$rate" "$@" <<'PY'
import json, os, socket, statistics, subprocess, sys, time, urllib.request
bin, work, servers, commits, interval, rate, *flags = sys.argv[1:]
commits = int(commits)
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    addr = f"127.0.0.1:{s.getsockname()[1]}"
producer = subprocess.Popen(
    [bin, "produce", "--kafka-servers", servers, "--rate", rate, "--num-users", os.environ.get("USERS", "1000"),
     "--start-time", "2026-03-01T00:00:00Z", "--duration", "3h"],
    stdout=subprocess.DEVNULL, stderr=open(f"{work}/produce.log", "w"))
run = subprocess.Popen(
    [bin, "run", "--kafka-servers", servers, "--warehouse", f"{work}/warehouse",
     "--commit-interval", interval, "--metrics-addr", addr,
     "--log-level", "warn"] + flags,
    stdout=subprocess.DEVNULL, stderr=open(f"{work}/run.log", "w"))

def memory_mib():
    """The run's resident memory now and its peak so far (the kernel's high-water mark)."""
    fields = {}
    with open(f"/proc/{run.pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value
    return tuple(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))

seen = {}          # epoch -> (duration_s, (RSS, peak RSS) in MiB when it was seen)
started = time.monotonic()
try:
    while len(seen) < commits:
        assert run.poll() is None, f"the run stopped ({run.returncode}): see {work}/run.log"
        assert time.monotonic() - started < 3600, f"{len(seen)} commits in an hour"
        try:
            with urllib.request.urlopen(f"http://{addr}/status", timeout=5) as r:
                status = json.load(r)
        except OSError:
            status = {"commits": []}
        memory = memory_mib()
        for commit in status["commits"]:
            seen.setdefault(commit["epoch"], (commit["duration_s"], memory))
        time.sleep(0.1)   # a sampling period, not a synchronisation
    wall = time.monotonic() - started
finally:
    run.terminate()
    producer.terminate()
    run.wait()
    producer.wait()
epochs = sorted(seen)[:commits]
window = max(1, commits // 10)
print(f"{commits} commits in {wall:.0f} s (interval {interval}, {rate} events/s, flags {flags})")
print("| commits | commit mean (s) | p95 (s) | max (s) | RSS max (MiB) | peak RSS so far (MiB) |")
print("|---|---|---|---|---|---|")
for i in range(0, len(epochs), window):
    part = [seen[e] for e in epochs[i:i + window]]
    durations = sorted(d for d, _ in part)
    p95 = durations[min(len(durations) - 1, int(len(durations) * 0.95))]
    print(f"| {i + 1}–{i + len(part)} | {statistics.mean(durations):.3f} | {p95:.3f} | "
          f"{durations[-1]:.3f} | {max(m[0] for _, m in part):.0f} | {part[-1][1][1]:.0f} |")
PY
python3 scripts/table_shape.py "$work/warehouse"
