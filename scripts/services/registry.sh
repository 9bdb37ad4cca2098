#!/usr/bin/env bash
# A Confluent-compatible schema registry for tests: Apicurio Registry (Maven Central's
# io.apicurio:apicurio-registry-app, a Quarkus application), its storage in memory.
#
#   scripts/services/registry.sh start --dir DIR [--port P] [--host ADDR] [--user U --password W]
#                                      [--stop-with PID]
#       Serves the registry on 127.0.0.1:P (a free port when --port is left out), waits until it
#       is ready, then prints one line:
#         URL=http://127.0.0.1:P/apis/ccompat/v7 PID=<pid> LOG=DIR/registry.log DIR=DIR
#       URL is what --schema-registry-url takes. With --user and --password every request must
#       carry them as HTTP basic authentication (sent up front: a 401 names no challenge).
#       --host serves on ADDR instead of 127.0.0.1 (the line then names ADDR).
#       --stop-with PID: the registry stops itself once process PID is gone (a test that dies).
#   scripts/services/registry.sh stop --dir DIR
#   scripts/services/registry.sh status --dir DIR
#
# Env: REGISTRY_START_TIMEOUT (seconds, default 90). Needs `scripts/services/install.sh registry`.
set -euo pipefail
SVC_NAME=registry
SVC_VALUE_OPTS="--user --password --stop-with"
. "$(dirname "$0")/lib.sh"

usage() {
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

svc_parse_args "$@"
[ -n "$SVC_DIR" ] || usage
USER_NAME=
PASSWORD=
STOP_WITH=
set -- "${SVC_REST[@]+"${SVC_REST[@]}"}"
while [ $# -gt 0 ]; do
  case $1 in
    --user) USER_NAME=$2; shift 2 ;;
    --password) PASSWORD=$2; shift 2 ;;
    --stop-with) STOP_WITH=$2; shift 2 ;;
    *) svc_die "unknown argument '$1'" ;;
  esac
done
if { [ -n "$USER_NAME" ] && [ -z "$PASSWORD" ]; } || { [ -z "$USER_NAME" ] && [ -n "$PASSWORD" ]; }; then
  svc_die "--user and --password go together"
fi
[ -z "$STOP_WITH" ] || svc_check_stop_with "$STOP_WITH"
[[ $USER_NAME =~ ^[A-Za-z0-9_]*$ ]] || svc_die "--user must be letters, digits and underscores, got '$USER_NAME'"

DIR=$SVC_DIR
SVC_PID_MARKER="$DIR/"
PIDFILE=$DIR/registry.pid
LOG=$DIR/registry.log
ENVFILE=$DIR/registry.env
CACHE=$SVC_CACHE/registry

ready() {
  curl -fsS -m 2 -o /dev/null "http://$SVC_HOST:$1/health/ready"
}

start() {
  if svc_pid_alive "$PIDFILE"; then
    svc_log "already running (pid $(cat "$PIDFILE"))"
    tr '\n' ' ' <"$ENVFILE" | sed 's/ $//'
    echo
    return
  fi
  local version java_home
  version=$(cat "$CACHE/version" 2>/dev/null) && java_home=$(cat "$CACHE/java_home") &&
    [ -f "$CACHE/apicurio-$version/quarkus-run.jar" ] ||
    svc_die "Apicurio Registry is missing: run scripts/services/install.sh registry"
  mkdir -p "$DIR/work"
  local port prev_port="" management
  [ -f "$DIR/port" ] && prev_port=$(cat "$DIR/port")
  port=$(svc_pick_port "$SVC_PORT" "$prev_port")
  echo "$port" >"$DIR/port"
  management=$(svc_free_port)
  local auth=()
  if [ -n "$USER_NAME" ]; then
    # Quarkus's embedded users: basic authentication with no identity provider to run.
    auth=(-Dquarkus.http.auth.basic=true -Dquarkus.security.users.embedded.plain-text=true
      "-Dquarkus.security.users.embedded.users.$USER_NAME=$PASSWORD")
  fi
  # The working directory and Vert.x's cache live in DIR (the marker svc_pid_alive looks for);
  # nothing is written to /tmp.
  (cd "$DIR/work" && svc_spawn "$PIDFILE" "$LOG" "$java_home/bin/java" -Xms32m -Xmx256m \
    -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData \
    "-Dvertx.cacheDirBase=$DIR/work/vertx" \
    "-Dquarkus.http.host=$SVC_HOST" "-Dquarkus.http.port=$port" \
    "-Dquarkus.management.host=127.0.0.1" "-Dquarkus.management.port=$management" \
    "${auth[@]+"${auth[@]}"}" \
    -jar "$CACHE/apicurio-$version/quarkus-run.jar")
  svc_wait_ready "$PIDFILE" "$LOG" "${REGISTRY_START_TIMEOUT:-90}" \
    "the registry is ready on $SVC_HOST:$port" ready "$management"
  [ -z "$STOP_WITH" ] || svc_watchdog "$STOP_WITH" "$PIDFILE" "$LOG" "$SVC_SCRIPTS/registry.sh" stop --dir "$DIR"
  svc_emit "$ENVFILE" "URL=http://$SVC_HOST:$port/apis/ccompat/v7" "PID=$(cat "$PIDFILE")" \
    "LOG=$LOG" "DIR=$DIR"
}

case $SVC_CMD in
  start) start ;;
  stop) svc_stop_pidfile "$PIDFILE" "${REGISTRY_STOP_TIMEOUT:-10}"; rm -f "$ENVFILE" ;;
  status) svc_pid_alive "$PIDFILE" && tr '\n' ' ' <"$ENVFILE" || exit 1 ;;
  *) usage ;;
esac
