#!/usr/bin/env bash
# Kafka → Iceberg against a real Apache Kafka broker (scripts/services/kafka.sh), beside Kafka's
# own consumer on the same topic: N generated events are produced once to a topic of P partitions,
# then ROUNDS rounds alternate Kafka's ConsumerPerformance (consume only, a fresh group each time)
# and `sessionize run --test-mode -w W` into a fresh warehouse. Prints one JSON line per run
# (records/s, and for ours wall time and peak RSS) and the ratio of the medians.
# Usage: scripts/bench_kafka_real.sh [EVENTS] [WORKERS] [PARTITIONS] [ROUNDS] [RUN FLAGS...]
#        (defaults: 2000000, 2, 8, 3)
# FORMAT=avro produces and reads plain Avro datums (schemas/clickstream_event.avsc) instead of JSON.
# Needs scripts/services/install.sh to have run; the broker stops with this script.
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-2000000}
workers=${2:-2}
partitions=${3:-8}
rounds=${4:-3}
shift $(($# < 4 ? $# : 4))
work=${BENCH_DIR:-$(mktemp -d)}
bin=${BIN:-${CARGO_TARGET_DIR:-target}/release/sessionize}
[ -n "${BIN:-}" ] || cargo build --release --quiet
rm -rf "$work/warehouse" "$work/kafka"
# A heap large enough that the broker is not what limits the consumers.
broker=$(KAFKA_HEAP_OPTS="-Xms1g -Xmx1g" bash scripts/services/kafka.sh start --dir "$work/kafka" --stop-with $$)
servers=$(sed -n 's/.*BOOTSTRAP=\([^ ]*\).*/\1/p' <<<"$broker")
trap 'bash scripts/services/kafka.sh stop --dir "$work/kafka"' EXIT
topic=bench-events
bash scripts/services/kafka.sh run org.apache.kafka.tools.TopicCommand --bootstrap-server "$servers" \
  --create --topic "$topic" --partitions "$partitions" >/dev/null
"$bin" produce --kafka-servers "$servers" --kafka-topic "$topic" --events "$events" --rate 0 \
  --num-users $((events / 100)) --start-time 2026-03-01T00:00:00Z --format "${FORMAT:-json}" >/dev/null 2>&1
[ "${FORMAT:-json}" = json ] || set -- --format avro --avro-schema schemas/clickstream_event.avsc "$@"
python3 - "$bin" "$work" "$servers" "$topic" "$events" "$workers" "$rounds" "$@" <<'PY'
import json, os, statistics, subprocess, sys, time
bin, work, servers, topic, events, workers, rounds, *flags = sys.argv[1:]
events, rounds = int(events), int(rounds)

def kafka_consumer(attempt):
    """Kafka's ConsumerPerformance: its nMsg.sec over the whole consume, start-up excluded."""
    out = subprocess.run(
        ["bash", "scripts/services/kafka.sh", "run", "org.apache.kafka.tools.ConsumerPerformance",
         "--bootstrap-server", servers, "--topic", topic, "--messages", str(events),
         "--group", f"perf-{attempt}-{time.time_ns()}", "--timeout", "60000"],
        check=True, capture_output=True, text=True).stdout.strip().splitlines()
    # The header is the first line naming the columns (log lines may come before it).
    out = out[next(i for i, line in enumerate(out) if "nMsg.sec" in line):]
    header = [h.strip() for h in out[0].split(",")]
    row = dict(zip(header, (v.strip() for v in out[-1].split(","))))
    return {"side": "ConsumerPerformance", "records": int(row["data.consumed.in.nMsg"]),
            "records_per_s": round(float(row["nMsg.sec"]))}

def sessionize(attempt):
    """Our bounded run, start-up, sessionizing and the Iceberg commit included."""
    subprocess.run(["rm", "-rf", f"{work}/warehouse"], check=True)
    start = time.monotonic()
    run = subprocess.Popen([bin, "run", "--kafka-servers", servers, "--kafka-topic", topic,
                            "--warehouse", f"{work}/warehouse", "--test-mode", "-w", workers,
                            "--log-level", "warn"] + flags, stdout=subprocess.PIPE, text=True)
    out = run.stdout.read()
    _, status, usage = os.wait4(run.pid, 0)
    wall = time.monotonic() - start
    assert status == 0, f"the run failed ({status})"
    summary = json.loads(out.strip().splitlines()[-1])
    return {"side": "sessionize", "records": summary["events_read"], "wall_s": round(wall, 2),
            "records_per_s": round(summary["events_read"] / wall),
            "peak_rss_mib": round(usage.ru_maxrss / 1024), "sessions": summary["sessions"]}

results = {"ConsumerPerformance": [], "sessionize": []}
for attempt in range(rounds):
    for measure in (kafka_consumer, sessionize):
        result = measure(attempt)
        assert result["records"] == events, f"read {result['records']} of {events}"
        print(json.dumps(result), flush=True)
        results[result["side"]].append(result["records_per_s"])
ours, theirs = (statistics.median(results[k]) for k in ("sessionize", "ConsumerPerformance"))
print(json.dumps({"median_records_per_s": {"sessionize": ours, "ConsumerPerformance": theirs},
                  "ratio": round(ours / theirs, 2), "flags": flags}))
PY
