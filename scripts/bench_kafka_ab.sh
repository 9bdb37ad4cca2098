#!/usr/bin/env bash
# Two builds of sessionize against each other on one topic of a real Apache Kafka broker
# (scripts/services/kafka.sh): N generated events are produced once to a topic of P partitions,
# then ROUNDS rounds run `sessionize run --test-mode -w W` of build A and then of build B, each
# into a fresh warehouse and timed from outside. Prints one line per run (build, records/s, peak
# RSS in MiB) and the medians. Where bench_kafka_real.sh compares us with Kafka's own consumer,
# whose speed moves with the machine, this measures a change.
# Usage: scripts/bench_kafka_ab.sh BIN_A BIN_B [ROUNDS] [EVENTS] [WORKERS] [PARTITIONS]
#        (defaults: 6 rounds, 2000000 events, 2 workers, 8 partitions)
# Needs scripts/services/install.sh to have run; the broker stops with this script.
set -euo pipefail
cd "$(dirname "$0")/.."
a=$1
b=$2
rounds=${3:-6}
events=${4:-2000000}
workers=${5:-2}
partitions=${6:-8}
work=$(mktemp -d)
# A heap large enough that the broker is not what limits the consumers.
broker=$(KAFKA_HEAP_OPTS="-Xms1g -Xmx1g" bash scripts/services/kafka.sh start --dir "$work/kafka" --stop-with $$)
servers=$(sed -n 's/.*BOOTSTRAP=\([^ ]*\).*/\1/p' <<<"$broker")
trap 'bash scripts/services/kafka.sh stop --dir "$work/kafka"; rm -rf "$work"' EXIT
topic=bench-events
bash scripts/services/kafka.sh run org.apache.kafka.tools.TopicCommand --bootstrap-server "$servers" \
  --create --topic "$topic" --partitions "$partitions" >/dev/null
"$a" produce --kafka-servers "$servers" --kafka-topic "$topic" --events "$events" --rate 0 \
  --num-users $((events / 100)) --start-time 2026-03-01T00:00:00Z --format json >/dev/null 2>&1
python3 - "$a" "$b" "$work" "$servers" "$topic" "$events" "$workers" "$rounds" <<'PY'
import os, statistics, subprocess, sys, time
a, b, work, servers, topic, events, workers, rounds = sys.argv[1:]
events, rounds = int(events), int(rounds)
results = {a: [], b: []}
for _ in range(rounds):
    for build in (a, b):
        subprocess.run(["rm", "-rf", f"{work}/warehouse"], check=True)
        start = time.monotonic()
        run = subprocess.Popen([build, "run", "--kafka-servers", servers, "--kafka-topic", topic,
                                "--warehouse", f"{work}/warehouse", "--test-mode", "-w", workers,
                                "--log-level", "warn"], stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(run.pid, 0)
        wall = time.monotonic() - start
        assert status == 0, f"{build} failed ({status})"
        results[build].append(events / wall)
        print(f"{build} {events / wall:.0f} records/s {usage.ru_maxrss // 1024} MiB", flush=True)
for build, rates in results.items():
    print(f"median {build} {statistics.median(rates):.0f} records/s")
print(f"A/B {statistics.median(results[a]) / statistics.median(results[b]):.3f}")
PY
