#!/usr/bin/env bash
# A single-node Apache Kafka 4.x (KRaft: broker + controller in one JVM) for tests.
#
#   scripts/services/kafka.sh start --dir DIR [--port P] [--host ADDR] [--set KEY=VALUE]...
#                                   [--stop-with PID]
#       Formats DIR/data on the first start (random cluster id), starts the broker bound to
#       127.0.0.1:P (a free port when --port is left out; a restart in the same DIR reuses the
#       previous ports when they are free), waits until a client can create a topic, produce with
#       an idempotent producer and commit a transaction, then prints one line:
#         BOOTSTRAP=127.0.0.1:P PID=<pid> LOG=DIR/kafka.log DIR=DIR CONTROLLER=127.0.0.1:C
#       --host binds (and advertises) ADDR instead of 127.0.0.1, e.g. a bridge's address that
#       clients in other network namespaces reach; the line then names ADDR.
#       --set appends broker settings (e.g. --set num.partitions=4). Starting an instance that
#       is already running only prints its line. Readiness creates the topic __sessionize_ready.
#       --stop-with PID: the broker stops itself once process PID is gone (a watchdog in its own
#       session checks every second), e.g. a test process that cannot stop it (a Rust static is
#       never dropped); also when the start finds it already running (then whichever of the
#       processes named goes first stops it). Each start arms its own watchdog.
#   scripts/services/kafka.sh stop --dir DIR      (or: stop DIR) stops it; no-op if not running.
#   scripts/services/kafka.sh status --dir DIR    prints the line and exits 0 if running, else 1.
#   scripts/services/kafka.sh run MAIN_CLASS ARGS...
#       runs a Kafka tool with the broker's classpath, e.g.
#       run org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:P --list
#
# Env: KAFKA_HEAP_OPTS (default -Xms256m -Xmx512m), KAFKA_JVM_OPTS (added), KAFKA_START_TIMEOUT
#      (seconds, default 90), SESSIONIZE_SERVICES_CACHE (default /var/tmp/sessionize-services).
# Needs scripts/services/install.sh to have run.
set -euo pipefail
SVC_NAME=kafka
. "$(dirname "$0")/lib.sh"

usage() {
  sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

[ $# -ge 1 ] || usage

if [ "$1" = run ]; then
  shift
  [ $# -ge 1 ] || usage
  exec java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Dlog4j2.level=WARN \
    -cp "$(svc_classpath kafka)" "$@"
fi

SVC_VALUE_OPTS="--set --stop-with"
svc_parse_args "$@"
[ -n "$SVC_DIR" ] || usage
EXTRA_SETTINGS=()
STOP_WITH=
set -- "${SVC_REST[@]+"${SVC_REST[@]}"}"
while [ $# -gt 0 ]; do
  case $1 in
    --set) EXTRA_SETTINGS+=("$2"); shift 2 ;;
    --stop-with) STOP_WITH=$2; shift 2 ;;
    *) svc_die "unknown argument '$1'" ;;
  esac
done
[ -z "$STOP_WITH" ] || svc_check_stop_with "$STOP_WITH"

DIR=$SVC_DIR
SVC_PID_MARKER=$DIR/
PIDFILE=$DIR/kafka.pid
LOG=$DIR/kafka.log
ENVFILE=$DIR/kafka.env

running_line() {
  [ -s "$ENVFILE" ] || return 1
  tr '\n' ' ' <"$ENVFILE" | sed 's/ $//'
  echo
}

tcp_open() { (exec 3<>"/dev/tcp/$SVC_HOST/$1") 2>/dev/null; }

# kafka_java MAIN ARGS...: prints nothing, sets JAVA_CMD to the java command line for MAIN.
kafka_java() {
  # shellcheck disable=SC2206 # the *_OPTS variables are word lists on purpose
  JAVA_CMD=(java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true "-Djava.io.tmpdir=$DIR/tmp"
    "-Dlog4j2.configurationFile=$DIR/log4j2.properties" "-Dkafka.logs.dir=$DIR/logs"
    ${KAFKA_JVM_OPTS:-} -cp "$CP" "$@")
}

# With --stop-with, a watchdog stops the broker once that process is gone.
arm_watchdog() {
  [ -z "$STOP_WITH" ] || svc_watchdog "$STOP_WITH" "$PIDFILE" "$LOG" "$SVC_SCRIPTS/kafka.sh" stop --dir "$DIR"
}

start() {
  if svc_pid_alive "$PIDFILE"; then
    local port host
    port=$(sed -n 's/^BOOTSTRAP=.*://p' "$ENVFILE" 2>/dev/null)
    host=$(sed -n 's/^BOOTSTRAP=\(.*\):.*/\1/p' "$ENVFILE" 2>/dev/null)
    if [ -n "$SVC_PORT" ] && [ "$SVC_PORT" != "$port" ]; then
      svc_die "already running in $DIR on port $port, not $SVC_PORT: stop it first"
    fi
    if [ -n "$host" ] && [ "$SVC_HOST" != "$host" ]; then
      svc_die "already running in $DIR on $host, not $SVC_HOST: stop it first"
    fi
    svc_log "already running (pid $(cat "$PIDFILE"))"
    arm_watchdog
    running_line
    return
  fi
  rm -f "$PIDFILE" "$ENVFILE"
  CP=$(svc_classpath kafka)
  local probe_dir="$SVC_CACHE/kafka/helpers"
  [ -f "$probe_dir/KafkaReadyProbe.class" ] || svc_die "$probe_dir/KafkaReadyProbe.class missing: run scripts/services/install.sh"
  mkdir -p "$DIR/data" "$DIR/logs" "$DIR/tmp"

  local prev_port="" prev_cport="" port cport
  if [ -f "$DIR/ports" ]; then
    read -r prev_port prev_cport <"$DIR/ports" || true
  fi
  port=$(svc_pick_port "$SVC_PORT" "$prev_port")
  cport=$(svc_pick_port "" "$prev_cport")
  while [ "$cport" = "$port" ]; do cport=$(svc_free_port); done
  echo "$port $cport" >"$DIR/ports"

  cat >"$DIR/server.properties" <<EOF
# Generated by scripts/services/kafka.sh on every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$SVC_HOST:$cport
listeners=PLAINTEXT://$SVC_HOST:$port,CONTROLLER://$SVC_HOST:$cport
advertised.listeners=PLAINTEXT://$SVC_HOST:$port
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$DIR/data
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
  if [ ${#EXTRA_SETTINGS[@]} -gt 0 ]; then
    printf '%s\n' "# from --set" "${EXTRA_SETTINGS[@]}" >>"$DIR/server.properties"
  fi

  cat >"$DIR/log4j2.properties" <<'EOF'
# Generated by scripts/services/kafka.sh: everything to stdout, which goes to DIR/kafka.log.
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
logger.raft.name = org.apache.kafka.raft
logger.raft.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
EOF

  if [ ! -f "$DIR/data/meta.properties" ]; then
    local cluster_id
    cluster_id=$(python3 -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')
    echo "$cluster_id" >"$DIR/cluster.id"
    svc_log "formatting $DIR/data (cluster id $cluster_id)"
    kafka_java kafka.tools.StorageTool format --config "$DIR/server.properties" --cluster-id="$cluster_id"
    if ! "${JAVA_CMD[@]}" >"$DIR/format.log" 2>&1; then
      cat "$DIR/format.log" >&2
      svc_die "formatting the storage failed"
    fi
  fi

  echo "=== start $(date -Is) port $port controller $cport" >>"$LOG"
  kafka_java kafka.Kafka "$DIR/server.properties"
  svc_spawn "$PIDFILE" "$LOG" "${JAVA_CMD[@]}"
  arm_watchdog
  local deadline=$((SECONDS + ${KAFKA_START_TIMEOUT:-90}))
  svc_wait_ready "$PIDFILE" "$LOG" "${KAFKA_START_TIMEOUT:-90}" "it accepts connections on $SVC_HOST:$port" tcp_open "$port"
  local left=$((deadline - SECONDS))
  [ "$left" -lt 10 ] && left=10
  if ! java -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Dlog4j2.level=ERROR \
    -cp "$CP:$probe_dir" KafkaReadyProbe "$SVC_HOST:$port" txn "$left" >"$DIR/probe.log" 2>&1; then
    tail -n 5 "$DIR/probe.log" | sed 's/^/    probe: /' >&2
    svc_fail_start "$PIDFILE" "$LOG" "no topic creation, produce and transaction commit within ${KAFKA_START_TIMEOUT:-90}s"
  fi
  svc_emit "$ENVFILE" "BOOTSTRAP=$SVC_HOST:$port" "PID=$(cat "$PIDFILE")" "LOG=$LOG" "DIR=$DIR" \
    "CONTROLLER=$SVC_HOST:$cport"
}

case $SVC_CMD in
  start) start ;;
  stop) svc_stop_pidfile "$PIDFILE" "${KAFKA_STOP_TIMEOUT:-30}"; rm -f "$ENVFILE" ;;
  status) svc_pid_alive "$PIDFILE" && running_line || exit 1 ;;
  *) usage ;;
esac
