#!/usr/bin/env bash
# End-to-end latency: how long after a session could close is it visible in the table.
#
#   scripts/bench_latency.sh [--minutes M] [--users U] [--inactivity T] [CONFIG...]
#
# CONFIG is COMMIT_INTERVAL:ALLOWED_LATENESS (default: 30:10m 5:10m 30:5s 5:5s). Starts a real
# Apache Kafka broker (scripts/services/kafka.sh) and a topic of 4 partitions, one `sessionize run`
# per CONFIG (each its own warehouse, consumer group and --metrics-addr; all reading the same topic
# at the same time), then a live producer (scripts/bench_latency.py produce, through Kafka's
# ConsoleProducer) whose event time is the wall clock: U users (default 400), sessions of 1-12
# events 2-25 s apart, pauses of 70-180 s, ~13 events/s. After M minutes (default 16) it scrapes
# every run's /metrics, stops everything, and for each CONFIG prints the delay of every session
# from the table itself: the timestamp of the snapshot that added the session's data file minus
# the moment it could close (session_end_time_ms + inactivity timeout; event time = wall time).
# Sessions that could close in the last (lateness + 2 commit intervals + 30 s) are left out, as
# they may not be committed yet when the run stops; every session the producer finished before
# that must be in the table (truth_sessions_missing = 0).
#
# Flags of `run` other than the defaults: --inactivity-timeout (default here 1m, so that sessions
# close within the run), --allowed-lateness and --commit-interval from CONFIG, and
# --retain-snapshots 0 (every snapshot kept, so that each row's snapshot can be found).
# BENCH_DIR: where the broker, the warehouses and the logs go (default: a new temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=16
users=400
inactivity=1m
configs=()
while [ $# -gt 0 ]; do
  case $1 in
    --minutes) minutes=$2; shift 2 ;;
    --users) users=$2; shift 2 ;;
    --inactivity) inactivity=$2; shift 2 ;;
    -*) sed -n '2,22p' "$0" >&2; exit 2 ;;
    *) configs+=("$1"); shift ;;
  esac
done
[ ${#configs[@]} -gt 0 ] || configs=(30:10m 5:10m 30:5s 5:5s)
bin=${BIN:-${CARGO_TARGET_DIR:-target}/release/sessionize}
work=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$work"
topic=latency

# A duration of the form 90s, 10m, 1h (or bare seconds) in seconds.
seconds() {
  case $1 in
    *h) echo $((${1%h} * 3600)) ;;
    *m) echo $((${1%m} * 60)) ;;
    *s) echo "${1%s}" ;;
    *) echo "$1" ;;
  esac
}

pids=()
cleanup() {
  for pid in "${pids[@]+"${pids[@]}"}"; do
    kill "$pid" 2>/dev/null || true
  done
  [ -z "${producer_pid:-}" ] || kill -- "-$producer_pid" 2>/dev/null || true
  scripts/services/kafka.sh stop --dir "$work/kafka" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

line=$(scripts/services/kafka.sh start --dir "$work/kafka" | grep BOOTSTRAP=)
servers=$(sed 's/.*BOOTSTRAP=\([^ ]*\).*/\1/' <<<"$line")
echo "broker at $servers; work in $work" >&2
scripts/services/kafka.sh run org.apache.kafka.tools.TopicCommand --bootstrap-server "$servers" \
  --create --if-not-exists --topic "$topic" --partitions 4 --replication-factor 1 >&2

for i in "${!configs[@]}"; do
  interval=${configs[$i]%%:*}
  lateness=${configs[$i]#*:}
  rm -rf "$work/wh$i"
  "$bin" run --kafka-servers "$servers" --kafka-topic "$topic" --kafka-group "latency$i" \
    --warehouse "$work/wh$i" --commit-interval "$interval" --allowed-lateness "$lateness" \
    --inactivity-timeout "$inactivity" --retain-snapshots 0 \
    --metrics-addr "127.0.0.1:$((19460 + i))" >"$work/run$i.out" 2>"$work/run$i.log" &
  pids+=($!)
done
for i in "${!configs[@]}"; do
  for _ in $(seq 120); do
    curl -sf "127.0.0.1:$((19460 + i))/readyz" >/dev/null && break
    sleep 0.5
  done
done

rm -f "$work/truth.jsonl"
# The producer pipeline in its own process group, so that the cleanup stops all of it.
set -m
( python3 scripts/bench_latency.py produce --users "$users" --truth "$work/truth.jsonl" |
    scripts/services/kafka.sh run org.apache.kafka.tools.ConsoleProducer \
      --bootstrap-server "$servers" --topic "$topic" --reader-property parse.key=true \
      --command-property linger.ms=5 >"$work/producer.log" 2>&1 ) &
producer_pid=$!
set +m
start_s=$(date +%s)
echo "producing for $minutes minutes from $(date -u +%H:%M:%S) (configs: ${configs[*]})" >&2
sleep $((minutes * 60))

stop_ms=$(date +%s%3N)
for i in "${!configs[@]}"; do
  curl -sf "127.0.0.1:$((19460 + i))/metrics" >"$work/metrics$i.txt" || true
done
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
pids=()
kill -- "-$producer_pid" 2>/dev/null || true
echo "ran $(( $(date +%s) - start_s )) s" >&2

for i in "${!configs[@]}"; do
  interval=$(seconds "${configs[$i]%%:*}")
  lateness=$(seconds "$(sed 's/^[0-9]*$/&m/' <<<"${configs[$i]#*:}")")   # bare lateness: minutes
  python3 scripts/bench_latency.py analyze --warehouse "$work/wh$i" \
    --inactivity-s "$(seconds "$(sed 's/^[0-9]*$/&m/' <<<"$inactivity")")" \
    --stop-ms "$stop_ms" --margin-s $((lateness + 2 * interval + 30)) \
    --truth "$work/truth.jsonl" --metrics "$work/metrics$i.txt" \
    --label "commit-interval=${configs[$i]%%:*} allowed-lateness=${configs[$i]#*:}"
done
