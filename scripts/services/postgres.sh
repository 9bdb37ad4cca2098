#!/usr/bin/env bash
# A throwaway PostgreSQL server (Debian's postgresql package) for tests.
#
#   scripts/services/postgres.sh start --dir DIR [--port P] [--host ADDR]
#       On the first start, initdb into DIR/pgdata (owned by the OS user postgres when run as
#       root, since the server refuses to run as root). Listens on 127.0.0.1:P only (a free port
#       when --port is left out; a restart in the same DIR reuses the previous port when it is
#       free), no Unix socket, trust authentication, fsync off. Creates the database iceberg,
#       waits until psql connects to it, then prints one line:
#         URL=postgres://postgres@127.0.0.1:P/iceberg PID=<pid> LOG=DIR/postgres.log DIR=DIR PORT=P JDBC_URL=jdbc:postgresql://127.0.0.1:P/iceberg
#       --host listens on ADDR instead of 127.0.0.1 (the line then names ADDR), e.g. a bridge's
#       address, and trusts clients on the networks the server's host is directly on (samenet).
#       Starting an instance that is already running only prints its line.
#   scripts/services/postgres.sh stop --dir DIR     (or: stop DIR) fast shutdown; no-op if not running.
#   scripts/services/postgres.sh status --dir DIR   prints the line, exit 0 if running.
#
# Env: POSTGRES_START_TIMEOUT (seconds, default 60). As root, DIR and its parents must be
# searchable by the postgres user: the script adds o+x (search, not read) where that is missing,
# e.g. on a `mktemp -d` directory, and says so on stderr.
# Needs scripts/services/install.sh to have run (or the postgresql package installed).
set -euo pipefail
SVC_NAME=postgres
. "$(dirname "$0")/lib.sh"

usage() {
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

svc_parse_args "$@"
[ -n "$SVC_DIR" ] || usage
[ ${#SVC_REST[@]} -eq 0 ] || svc_die "unknown argument '${SVC_REST[0]}'"

DIR=$SVC_DIR
SVC_PID_MARKER=$DIR/
DATA=$DIR/pgdata
PIDFILE=$DIR/postgres.pid
LOG=$DIR/postgres.log
ENVFILE=$DIR/postgres.env

BIN=
for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
  [ -x "$d/postgres" ] && { BIN=$d; break; }
done
[ -n "$BIN" ] || svc_die "no PostgreSQL server in /usr/lib/postgresql/*/bin: run scripts/services/install.sh"

# as_pg CMD...: runs CMD as the postgres OS user when we are root, else as ourselves.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

running_line() {
  [ -s "$ENVFILE" ] || return 1
  tr '\n' ' ' <"$ENVFILE" | sed 's/ $//'
  echo
}

# Refreshes DIR/postgres.pid from the server's own pid file.
sync_pidfile() {
  if [ -s "$DATA/postmaster.pid" ]; then
    head -n1 "$DATA/postmaster.pid" >"$PIDFILE"
  else
    rm -f "$PIDFILE"
  fi
}

psql_ok() {
  "$BIN/psql" -X -q -h "$SVC_HOST" -p "$1" -U postgres -d "$2" -tAc 'select 1' 2>/dev/null | grep -qx 1
}

start() {
  sync_pidfile
  if svc_pid_alive "$PIDFILE"; then
    local port host
    port=$(sed -n 's/^PORT=//p' "$ENVFILE" 2>/dev/null)
    host=$(sed -n 's/^URL=.*@\(.*\):.*/\1/p' "$ENVFILE" 2>/dev/null)
    if [ -n "$SVC_PORT" ] && [ "$SVC_PORT" != "$port" ]; then
      svc_die "already running in $DIR on port $port, not $SVC_PORT: stop it first"
    fi
    if [ -n "$host" ] && [ "$SVC_HOST" != "$host" ]; then
      svc_die "already running in $DIR on $host, not $SVC_HOST: stop it first"
    fi
    svc_log "already running (pid $(cat "$PIDFILE"))"
    running_line
    return
  fi
  rm -f "$ENVFILE"
  mkdir -p "$DIR"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || svc_die "there is no OS user postgres (it comes with the postgresql package)"
    mkdir -p "$DATA"
    chown postgres: "$DATA"
    chmod 700 "$DATA"
    touch "$LOG"
    chown postgres: "$LOG"
    if ! as_pg test -w "$DATA"; then
      # e.g. DIR inside a `mktemp -d` directory (mode 700): let others search (not list) the
      # directories on the way, which is what the server needs.
      local d=$DIR
      while [ "$d" != / ] && [ -n "$d" ]; do
        if ! as_pg test -x "$d"; then
          chmod o+x "$d" && svc_log "chmod o+x $d (so that the postgres user can reach $DATA)"
        fi
        d=$(dirname "$d")
      done
      as_pg test -w "$DATA" ||
        svc_die "the postgres user cannot reach $DATA: make $DIR and its parent directories searchable (chmod o+x)"
    fi
  fi

  if [ ! -s "$DATA/PG_VERSION" ]; then
    svc_log "initdb $DATA"
    if ! as_pg "$BIN/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --no-locale --no-sync \
      >"$DIR/initdb.log" 2>&1; then
      cat "$DIR/initdb.log" >&2
      svc_die "initdb failed"
    fi
    echo "include_if_exists = 'sessionize.conf'" >>"$DATA/postgresql.conf"
  fi

  local prev_port="" port
  [ -f "$DIR/port" ] && prev_port=$(cat "$DIR/port")
  port=$(svc_pick_port "$SVC_PORT" "$prev_port")
  echo "$port" >"$DIR/port"
  cat >"$DATA/sessionize.conf" <<EOF
# Written by scripts/services/postgres.sh on every start: a test server, durability off.
listen_addresses = '$SVC_HOST'
port = $port
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 64MB
max_connections = 100
hba_file = '$DATA/sessionize_hba.conf'
EOF
  # initdb's pg_hba.conf trusts loopback only; clients of another --host come from its networks.
  {
    echo "# Written by scripts/services/postgres.sh on every start."
    echo "local all all trust"
    echo "host all all 127.0.0.1/32 trust"
    echo "host all all ::1/128 trust"
    [ "$SVC_HOST" = 127.0.0.1 ] || echo "host all all samenet trust"
  } >"$DATA/sessionize_hba.conf"
  [ "$(id -u)" = 0 ] && chown postgres: "$DATA/sessionize.conf" "$DATA/sessionize_hba.conf"
  rm -f "$DATA/postmaster.pid" # a stale one from a killed server would block the start

  echo "=== start $(date -Is) port $port" >>"$LOG"
  if ! as_pg "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -W start >/dev/null 2>>"$LOG"; then
    svc_fail_start "$PIDFILE" "$LOG" "pg_ctl start failed"
  fi
  # the server writes its pid file a moment after pg_ctl returns
  local i
  for ((i = 0; i < 100; i++)); do
    [ -s "$DATA/postmaster.pid" ] && break
    sleep 0.1
  done
  sync_pidfile
  [ -s "$PIDFILE" ] || svc_fail_start "$PIDFILE" "$LOG" "the server did not write $DATA/postmaster.pid"
  svc_wait_ready "$PIDFILE" "$LOG" "${POSTGRES_START_TIMEOUT:-60}" "psql connects to $SVC_HOST:$port" \
    psql_ok "$port" postgres
  if ! "$BIN/psql" -X -q -h "$SVC_HOST" -p "$port" -U postgres -d postgres -tAc \
    "select 1 from pg_database where datname = 'iceberg'" | grep -qx 1; then
    "$BIN/psql" -X -q -h "$SVC_HOST" -p "$port" -U postgres -d postgres -c 'create database iceberg' >/dev/null ||
      svc_fail_start "$PIDFILE" "$LOG" "could not create the database iceberg"
  fi
  psql_ok "$port" iceberg || svc_fail_start "$PIDFILE" "$LOG" "psql cannot connect to the database iceberg"
  svc_emit "$ENVFILE" "URL=postgres://postgres@$SVC_HOST:$port/iceberg" "PID=$(cat "$PIDFILE")" \
    "LOG=$LOG" "DIR=$DIR" "PORT=$port" "JDBC_URL=jdbc:postgresql://$SVC_HOST:$port/iceberg"
}

stop() {
  sync_pidfile
  if svc_pid_alive "$PIDFILE"; then
    as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w -t "${POSTGRES_STOP_TIMEOUT:-30}" stop >/dev/null 2>>"$LOG" || true
  fi
  svc_stop_pidfile "$PIDFILE" 10 # in case pg_ctl could not stop it
  rm -f "$ENVFILE"
}

case $SVC_CMD in
  start) start ;;
  stop) stop ;;
  status) sync_pidfile; svc_pid_alive "$PIDFILE" && running_line || exit 1 ;;
  *) usage ;;
esac
