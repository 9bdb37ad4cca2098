#!/usr/bin/env bash
# Kafka → Iceberg benchmark: an embedded broker (`sessionize broker`), N events produced to it,
# then a bounded run (`--test-mode`) that reads them all; reports events/s and peak memory.
# Usage: scripts/bench_kafka.sh [EVENTS] [WORKERS] [PARTITIONS]   (defaults: 2000000, 2, 32)
# FORMAT=avro produces and reads plain Avro datums (schemas/clickstream_event.avsc) instead of JSON.
# The embedded broker keeps the newest 5 MiB per partition (librdkafka's mock cluster), so keep
# EVENTS below about 60k per partition; the run's summary shows whether every event was read.
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-2000000}
workers=${2:-2}
partitions=${3:-32}
work=${BENCH_DIR:-$(mktemp -d)}
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/sessionize
rm -rf "$work/warehouse"   # a warehouse from an earlier run would resume, not start afresh
python3 - "$bin" "$work" "$events" "$workers" "$partitions" "${FORMAT:-json}" <<'PY'
import json, os, subprocess, sys, time
bin, work, events, workers, partitions, format = sys.argv[1:]
avro_schema = ["--avro-schema", "schemas/clickstream_event.avsc"] if format == "avro" else []
broker = subprocess.Popen([bin, "broker", "--partitions", partitions], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
try:
    servers = broker.stdout.readline().strip()
    subprocess.run([bin, "produce", "--kafka-servers", servers, "--events", events, "--rate", "0",
                    "--num-users", str(int(events) // 100), "--start-time", "2026-03-01T00:00:00Z",
                    "--format", format],
                   check=True, capture_output=True)
    start = time.monotonic()
    run = subprocess.Popen([bin, "run", "--kafka-servers", servers, "--warehouse", f"{work}/warehouse",
                            "--test-mode", "-w", workers, "--log-level", "warn",
                            "--format", format] + avro_schema,
                           stdout=subprocess.PIPE, text=True)
    out = run.stdout.read()
    # The run's own peak memory (not the producer's), from the kernel's accounting of it.
    _, status, usage = os.wait4(run.pid, 0)
    wall = time.monotonic() - start
    assert status == 0, f"the run failed ({status})"
finally:
    broker.kill()
summary = json.loads(out.strip().splitlines()[-1])
peak_mib = usage.ru_maxrss / 1024
print(json.dumps({"format": format, "events": summary["events_read"], "produced": int(events), "workers": int(workers),
                  "partitions": int(partitions), "wall_s": round(wall, 2),
                  "events_per_s": round(summary["events_read"] / wall),
                  "peak_rss_mib": round(peak_mib), "sessions": summary["sessions"]}))
PY
