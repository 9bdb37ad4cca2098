#!/usr/bin/env bash
# A throwaway S3 endpoint for tests: moto's server (PyPI `moto[server]`), which keeps buckets in
# memory and honours conditional writes.
#
#   scripts/services/s3.sh start --dir DIR [--port P] [--host ADDR]
#       Serves S3 on 127.0.0.1:P (a free port when --port is left out), creates the bucket
#       `lake`, then prints one line:
#         ENDPOINT=http://127.0.0.1:P BUCKET=lake PID=<pid> LOG=DIR/s3.log DIR=DIR
#       --host serves on ADDR instead of 127.0.0.1 (the line then names ADDR).
#       Any access key and secret are accepted; the region is us-east-1.
#   scripts/services/s3.sh stop --dir DIR
#   scripts/services/s3.sh status --dir DIR
#
# Env: S3_START_TIMEOUT (seconds, default 30). Needs scripts/services/install.sh to have run.
set -euo pipefail
SVC_NAME=s3
. "$(dirname "$0")/lib.sh"

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

svc_parse_args "$@"
[ -n "$SVC_DIR" ] || usage
[ ${#SVC_REST[@]} -eq 0 ] || svc_die "unknown argument '${SVC_REST[0]}'"

DIR=$SVC_DIR
# moto's command line does not name DIR; its name tells it from an unrelated process on a reused pid.
SVC_PID_MARKER=moto_server
PIDFILE=$DIR/s3.pid
LOG=$DIR/s3.log
ENVFILE=$DIR/s3.env

bucket_created() {
  curl -fsS -m 2 -o /dev/null -X PUT "http://$SVC_HOST:$1/lake" -H "Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0"
}

start() {
  if svc_pid_alive "$PIDFILE"; then
    svc_log "already running (pid $(cat "$PIDFILE"))"
    tr '\n' ' ' <"$ENVFILE" | sed 's/ $//'
    echo
    return
  fi
  command -v moto_server >/dev/null || svc_die "moto_server is missing: run scripts/services/install.sh"
  mkdir -p "$DIR"
  local port prev_port=""
  [ -f "$DIR/port" ] && prev_port=$(cat "$DIR/port")
  port=$(svc_pick_port "$SVC_PORT" "$prev_port")
  echo "$port" >"$DIR/port"
  svc_spawn "$PIDFILE" "$LOG" moto_server -H "$SVC_HOST" -p "$port"
  svc_wait_ready "$PIDFILE" "$LOG" "${S3_START_TIMEOUT:-30}" \
    "the bucket lake is created on $SVC_HOST:$port" bucket_created "$port"
  svc_emit "$ENVFILE" "ENDPOINT=http://$SVC_HOST:$port" "BUCKET=lake" "PID=$(cat "$PIDFILE")" \
    "LOG=$LOG" "DIR=$DIR"
}

case $SVC_CMD in
  start) start ;;
  stop) svc_stop_pidfile "$PIDFILE" "${S3_STOP_TIMEOUT:-10}"; rm -f "$ENVFILE" ;;
  status) svc_pid_alive "$PIDFILE" && tr '\n' ' ' <"$ENVFILE" || exit 1 ;;
  *) usage ;;
esac
