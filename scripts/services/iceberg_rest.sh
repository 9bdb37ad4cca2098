#!/usr/bin/env bash
# Apache Iceberg's REST catalog test fixture (what the apache/iceberg-rest-fixture image runs)
# for tests, with a JDBC catalog and a warehouse of its own.
#
#   scripts/services/iceberg_rest.sh start --dir DIR [--port P] [--host ADDR] [--warehouse URI] [--catalog-uri JDBC_URI] [--upstream]
#       Serves the catalog on 127.0.0.1:P (a free port when --port is left out; a restart in
#       the same DIR reuses the previous port when it is free; --host serves on ADDR instead,
#       and the line names ADDR), waits until GET /v1/config answers, then prints one line:
#         URI=http://127.0.0.1:P PID=<pid> LOG=DIR/iceberg_rest.log DIR=DIR WAREHOUSE=<uri> CATALOG_URI=<jdbc uri>
#       Defaults: the catalog in SQLite, jdbc:sqlite:DIR/catalog.db (in-process, kept across
#       restarts), and the warehouse file://DIR/warehouse. --catalog-uri can point it at
#       PostgreSQL instead (jdbc:postgresql://127.0.0.1:P/iceberg, user from CATALOG_JDBC_USER).
#       Every other CATALOG_* variable of the caller's environment is passed to the catalog the
#       fixture's way (CATALOG_IO__IMPL=x -> io-impl=x, CATALOG_S3_ENDPOINT=y -> s3.endpoint=y).
#       --upstream runs the fixture's own main class, org.apache.iceberg.rest.RESTCatalogServer,
#       which listens on every interface with SO_REUSEPORT; by default a small launcher of ours
#       (scripts/services/java/) serves the same catalog, adapter and servlet on 127.0.0.1 only.
#       Starting an instance that is already running only prints its line.
#   scripts/services/iceberg_rest.sh stop --dir DIR     (or: stop DIR) no-op if not running.
#   scripts/services/iceberg_rest.sh status --dir DIR   prints the line, exit 0 if running.
#
# Env: ICEBERG_REST_HEAP_OPTS (default -Xms64m -Xmx512m), ICEBERG_REST_JVM_OPTS (added),
#      ICEBERG_REST_START_TIMEOUT (seconds, default 60).
# Needs scripts/services/install.sh to have run.
set -euo pipefail
SVC_NAME=iceberg-rest
. "$(dirname "$0")/lib.sh"

usage() {
  sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

SVC_VALUE_OPTS="--warehouse --catalog-uri"
svc_parse_args "$@"
[ -n "$SVC_DIR" ] || usage
WAREHOUSE=
CATALOG_JDBC=
UPSTREAM=0
set -- "${SVC_REST[@]+"${SVC_REST[@]}"}"
while [ $# -gt 0 ]; do
  case $1 in
    --warehouse) WAREHOUSE=$2; shift 2 ;;
    --catalog-uri) CATALOG_JDBC=$2; shift 2 ;;
    --upstream) UPSTREAM=1; shift ;;
    *) svc_die "unknown argument '$1'" ;;
  esac
done

DIR=$SVC_DIR
SVC_PID_MARKER=$DIR/
PIDFILE=$DIR/iceberg_rest.pid
LOG=$DIR/iceberg_rest.log
ENVFILE=$DIR/iceberg_rest.env

running_line() {
  [ -s "$ENVFILE" ] || return 1
  tr '\n' ' ' <"$ENVFILE" | sed 's/ $//'
  echo
}

config_answers() { curl -fsS -m 2 -o /dev/null "http://$SVC_HOST:$1/v1/config"; }

start() {
  if svc_pid_alive "$PIDFILE"; then
    local port
    port=$(sed -n 's/^URI=.*://p' "$ENVFILE" 2>/dev/null)
    if [ -n "$SVC_PORT" ] && [ "$SVC_PORT" != "$port" ]; then
      svc_die "already running in $DIR on port $port, not $SVC_PORT: stop it first"
    fi
    svc_log "already running (pid $(cat "$PIDFILE"))"
    running_line
    return
  fi
  rm -f "$PIDFILE" "$ENVFILE"
  local cp helpers="$SVC_CACHE/iceberg-rest/helpers" main
  cp=$(svc_classpath iceberg-rest)
  if [ $UPSTREAM = 1 ]; then
    main=org.apache.iceberg.rest.RESTCatalogServer
  else
    [ -f "$helpers/org/apache/iceberg/rest/LoopbackRESTCatalogServer.class" ] ||
      svc_die "the launcher is not compiled: run scripts/services/install.sh"
    main=org.apache.iceberg.rest.LoopbackRESTCatalogServer
    cp="$helpers:$cp"
  fi

  mkdir -p "$DIR/warehouse" "$DIR/tmp"
  local prev_port="" port
  [ -f "$DIR/port" ] && prev_port=$(cat "$DIR/port")
  port=$(svc_pick_port "$SVC_PORT" "$prev_port")
  echo "$port" >"$DIR/port"
  WAREHOUSE=${WAREHOUSE:-file://$DIR/warehouse}
  CATALOG_JDBC=${CATALOG_JDBC:-jdbc:sqlite:$DIR/catalog.db}

  echo "=== start $(date -Is) port $port main $main" >>"$LOG"
  # shellcheck disable=SC2206 # the *_OPTS variables are word lists on purpose
  local cmd=(env
    "CATALOG_CATALOG__IMPL=${CATALOG_CATALOG__IMPL:-org.apache.iceberg.jdbc.JdbcCatalog}"
    "CATALOG_URI=$CATALOG_JDBC"
    "CATALOG_WAREHOUSE=$WAREHOUSE"
    "CATALOG_JDBC_USER=${CATALOG_JDBC_USER:-user}"
    "CATALOG_JDBC_PASSWORD=${CATALOG_JDBC_PASSWORD:-password}"
    "CATALOG_JDBC_STRICT__MODE=${CATALOG_JDBC_STRICT__MODE:-true}"
    "CATALOG_REST_PORT=$port" "REST_PORT=$port" "REST_HOST=$SVC_HOST"
    java ${ICEBERG_REST_HEAP_OPTS:--Xms64m -Xmx512m} -XX:+UseG1GC -Djava.awt.headless=true
    "-Djava.io.tmpdir=$DIR/tmp"
    -Dorg.slf4j.simpleLogger.showDateTime=true
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSS"
    ${ICEBERG_REST_JVM_OPTS:-} -cp "$cp" "$main")
  svc_spawn "$PIDFILE" "$LOG" "${cmd[@]}"
  svc_wait_ready "$PIDFILE" "$LOG" "${ICEBERG_REST_START_TIMEOUT:-60}" \
    "GET http://$SVC_HOST:$port/v1/config answers" config_answers "$port"
  svc_emit "$ENVFILE" "URI=http://$SVC_HOST:$port" "PID=$(cat "$PIDFILE")" "LOG=$LOG" "DIR=$DIR" \
    "WAREHOUSE=$WAREHOUSE" "CATALOG_URI=$CATALOG_JDBC"
}

case $SVC_CMD in
  start) start ;;
  stop) svc_stop_pidfile "$PIDFILE" "${ICEBERG_REST_STOP_TIMEOUT:-20}"; rm -f "$ENVFILE" ;;
  status) svc_pid_alive "$PIDFILE" && running_line || exit 1 ;;
  *) usage ;;
esac
