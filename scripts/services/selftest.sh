#!/usr/bin/env bash
# End-to-end check of scripts/services/: installs, then for each service starts it in a fresh
# state directory, uses it for real, stops it, starts it again in the same directory (and checks
# the data survived), and stops it. Prints the time of each start and ends with
# "N passed, N failed". Uses only what install.sh brings, curl and psql; the Iceberg append and
# read-back also need pyiceberg[pyarrow] and are skipped (with a note) without it.
#
# Usage: scripts/services/selftest.sh [kafka|iceberg-rest|postgres]...   (default: all three)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(mktemp -d /tmp/sessionize-services-selftest.XXXXXX)
PASS=0
FAIL=0
STARTED=()

ok() { PASS=$((PASS + 1)); echo "ok   $*"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL $*"; }
check() { # check NAME CMD...
  local name=$1
  shift
  if "$@"; then ok "$name"; else bad "$name"; fi
}
quiet() { "$@" >/dev/null; }
cleanup() {
  local s
  for s in "${STARTED[@]+"${STARTED[@]}"}"; do "$HERE/${s%%:*}.sh" stop --dir "${s#*:}" >/dev/null 2>&1; done
  rm -rf "$ROOT"
}
trap cleanup EXIT

# timed_start SCRIPT DIR [ARGS...]: runs `SCRIPT start --dir DIR ARGS`, evals its line into the
# shell, prints the time taken.
timed_start() {
  local script=$1 dir=$2 t0 line
  shift 2
  t0=$(date +%s.%N)
  if ! line=$("$HERE/$script.sh" start --dir "$dir" "$@"); then
    bad "$script start in $dir"
    return 1
  fi
  STARTED+=("$script:$dir")
  printf 'time %-13s start %5.1fs  %s\n' "$script" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{print b-a}')" "$line"
  eval "$line"
  ok "$script start prints its line"
}

want=("$@")
[ ${#want[@]} -eq 0 ] && want=(kafka iceberg-rest postgres)

t0=$(date +%s)
"$HERE/install.sh" || { echo "install failed"; exit 1; }
echo "time install $(($(date +%s) - t0))s"

kafka_round() { # kafka_round ROUND DIR
  local round=$1 dir=$2 topic=selftest out
  timed_start kafka "$dir" || return
  if [ "$round" = 1 ]; then
    check "kafka create topic" quiet "$HERE/kafka.sh" run org.apache.kafka.tools.TopicCommand \
      --bootstrap-server "$BOOTSTRAP" --create --topic "$topic" --partitions 2
    printf 'one\ntwo\n' | "$HERE/kafka.sh" run org.apache.kafka.tools.ConsoleProducer \
      --bootstrap-server "$BOOTSTRAP" --topic "$topic"
    check "kafka produce" test $? = 0
  fi
  out=$("$HERE/kafka.sh" run org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$BOOTSTRAP" \
    --topic "$topic" --from-beginning --max-messages 2 --timeout-ms 30000 2>/dev/null | sort | tr '\n' ' ')
  check "kafka consume (round $round): '$out'" test "$out" = "one two "
  check "kafka transactional produce (round $round)" quiet java -cp \
    "$(cat "${SESSIONIZE_SERVICES_CACHE:-/var/tmp/sessionize-services}/kafka/classpath.txt"):${SESSIONIZE_SERVICES_CACHE:-/var/tmp/sessionize-services}/kafka/helpers" \
    -Dlog4j2.level=ERROR KafkaReadyProbe "$BOOTSTRAP" txn 30
  check "kafka status" quiet "$HERE/kafka.sh" status --dir "$dir"
  check "kafka stop" "$HERE/kafka.sh" stop --dir "$dir"
  check "kafka stopped" test "$("$HERE/kafka.sh" status --dir "$dir" >/dev/null 2>&1; echo $?)" = 1
}

iceberg_round() { # iceberg_round ROUND DIR
  local round=$1 dir=$2
  timed_start iceberg_rest "$dir" || return
  check "iceberg GET /v1/config" curl -fsS -o /dev/null "$URI/v1/config"
  if [ "$round" = 1 ]; then
    check "iceberg create namespace" curl -fsS -o /dev/null -X POST "$URI/v1/namespaces" \
      -H 'content-type: application/json' -d '{"namespace":["selftest"],"properties":{}}'
    check "iceberg create table" curl -fsS -o /dev/null -X POST "$URI/v1/namespaces/selftest/tables" \
      -H 'content-type: application/json' -d '{"name":"t","schema":{"type":"struct","schema-id":0,
      "fields":[{"id":1,"name":"id","required":true,"type":"long"},{"id":2,"name":"s","required":false,"type":"string"}]}}'
  fi
  check "iceberg load table (round $round)" curl -fsS -o /dev/null "$URI/v1/namespaces/selftest/tables/t"
  if python3 -c 'import pyiceberg, pyarrow' 2>/dev/null; then
    check "iceberg pyiceberg append + read back (round $round)" python3 - "$URI" "$round" <<'EOF'
import sys
import pyarrow as pa
from pyiceberg.catalog.rest import RestCatalog
uri, round_ = sys.argv[1], int(sys.argv[2])
t = RestCatalog("selftest", uri=uri).load_table("selftest.t")
schema = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("s", pa.string())])
t.append(pa.table({"id": [round_], "s": [f"round {round_}"]}, schema=schema))
ids = sorted(r["id"] for r in t.refresh().scan().to_arrow().to_pylist())
sys.exit(0 if ids == list(range(1, round_ + 1)) else f"ids {ids}")
EOF
  else
    echo "note: pyiceberg[pyarrow] not importable: skipped the append/read-back check"
  fi
  check "iceberg stop" "$HERE/iceberg_rest.sh" stop --dir "$dir"
}

postgres_round() { # postgres_round ROUND DIR
  local round=$1 dir=$2 n
  timed_start postgres "$dir" || return
  check "postgres write (round $round)" psql -X -q "$URL" -c "set client_min_messages = warning; create table if not exists selftest(round int); insert into selftest values ($round)"
  n=$(psql -X -tA "$URL" -c 'select count(*) from selftest')
  check "postgres read (round $round): $n rows" test "$n" = "$round"
  check "postgres stop" "$HERE/postgres.sh" stop --dir "$dir"
}

for w in "${want[@]}"; do
  case $w in
    kafka) kafka_round 1 "$ROOT/kafka" && kafka_round 2 "$ROOT/kafka" ;;
    iceberg-rest) iceberg_round 1 "$ROOT/iceberg" && iceberg_round 2 "$ROOT/iceberg" ;;
    postgres) postgres_round 1 "$ROOT/postgres" && postgres_round 2 "$ROOT/postgres" ;;
    *) echo "unknown service $w"; exit 2 ;;
  esac
done

echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
