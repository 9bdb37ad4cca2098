# shellcheck shell=bash disable=SC2034
# Shared helpers for the scripts in scripts/services/ (sourced, not run).
#
# Conventions every service script follows:
#   - all state of one service instance lives in the directory given with --dir;
#   - downloads are cached: Maven artifacts in ~/.m2, everything else under $SVC_CACHE;
#   - the service binds to 127.0.0.1 only, or to the one address given with --host ADDR (e.g. a
#     bridge's address, for clients in other network namespaces), which it also advertises;
#   - stdout carries exactly one line of machine-readable KEY=VALUE pairs separated by single
#     spaces (values never contain spaces), so `eval "$(scripts/services/x.sh start ...)"` works;
#     everything human-readable goes to stderr;
#   - the same pairs are written one per line to DIR/<service>.env.

SVC_CACHE=${SESSIONIZE_SERVICES_CACHE:-/var/tmp/sessionize-services}
SVC_HOST=127.0.0.1
SVC_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

svc_log() { printf '%s: %s\n' "${SVC_NAME:-service}" "$*" >&2; }
svc_die() { svc_log "error: $*"; exit 1; }

# svc_abs PATH: absolute path of PATH (which need not exist yet).
svc_abs() {
  case $1 in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$(pwd)" "$1" ;;
  esac
}

# svc_check_dir DIR: rejects paths the KEY=VALUE output or the configs cannot carry.
svc_check_dir() {
  case $1 in
    *[[:space:]]* | *[\'\"\\\$\`]*) svc_die "--dir must not contain spaces, quotes, backslashes, \$ or backticks: '$1'" ;;
    '') svc_die "--dir is required" ;;
  esac
}

# svc_port_busy PORT: true when something listens on PORT (on any address).
svc_port_busy() {
  local out
  out=$(ss -Htln "sport = :$1" 2>/dev/null) || return 1
  [ -n "$out" ]
}

# svc_free_port: prints a TCP port that is free on $SVC_HOST right now.
svc_free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket, sys
s = socket.socket()
s.bind((sys.argv[1], 0))
print(s.getsockname()[1])
s.close()' "$SVC_HOST"
    return
  fi
  local p i
  for i in $(seq 1 200); do
    p=$((20000 + RANDOM % 40000))
    svc_port_busy "$p" || { echo "$p"; return; }
  done
  svc_die "found no free port"
}

# svc_pick_port WANTED REMEMBERED: the port to use. WANTED (from --port) wins and must be free;
# else REMEMBERED (from an earlier start in the same DIR) if it is still free; else a free port.
svc_pick_port() {
  local wanted=$1 remembered=$2
  if [ -n "$wanted" ]; then
    case $wanted in '' | *[!0-9]*) svc_die "--port must be a number, got '$wanted'" ;; esac
    svc_port_busy "$wanted" && svc_die "port $wanted on $SVC_HOST is already in use"
    echo "$wanted"
  elif [ -n "$remembered" ] && ! svc_port_busy "$remembered"; then
    echo "$remembered"
  else
    svc_free_port
  fi
}

# svc_pid_alive PIDFILE: true when PIDFILE names a live process (not a zombie) whose command
# line contains $SVC_PID_MARKER (each script sets it to "DIR/"), so that a pid reused by an
# unrelated process does not count.
svc_pid_alive() {
  local pid state
  [ -s "$1" ] || return 1
  pid=$(head -n1 "$1")
  case $pid in '' | *[!0-9]*) return 1 ;; esac
  kill -0 "$pid" 2>/dev/null || return 1
  if [ -r "/proc/$pid/stat" ]; then
    state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
    [ "$state" = Z ] && return 1
    if [ -n "${SVC_PID_MARKER:-}" ]; then
      tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$SVC_PID_MARKER" || return 1
    fi
  fi
  return 0
}

# svc_emit ENVFILE KEY=VALUE...: writes the pairs to ENVFILE (one a line) and prints one line.
svc_emit() {
  local envfile=$1
  shift
  printf '%s\n' "$@" >"$envfile"
  local IFS=' '
  printf '%s\n' "$*"
}

# svc_fail_start PIDFILE LOG MESSAGE: reports a failed start with the log's tail, stops what was
# started, and exits 1.
svc_fail_start() {
  local pidfile=$1 log=$2 msg=$3
  svc_log "error: $msg"
  if [ -f "$log" ]; then
    svc_log "last 40 lines of $log:"
    tail -n 40 "$log" | sed 's/^/    /' >&2
  fi
  svc_stop_pidfile "$pidfile" 10 >/dev/null 2>&1 || true
  exit 1
}

# svc_wait_ready PIDFILE LOG TIMEOUT_SECONDS WHAT CMD...: polls CMD (every 0.5 s) until it
# succeeds; fails (see svc_fail_start) if the process dies or TIMEOUT_SECONDS pass.
svc_wait_ready() {
  local pidfile=$1 log=$2 timeout=$3 what=$4
  shift 4
  local deadline=$((SECONDS + timeout))
  while :; do
    if ! svc_pid_alive "$pidfile"; then
      svc_fail_start "$pidfile" "$log" "the process exited before $what"
    fi
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      svc_fail_start "$pidfile" "$log" "timed out after ${timeout}s waiting until $what"
    fi
    sleep 0.5
  done
}

# svc_stop_pidfile PIDFILE [GRACE_SECONDS]: SIGTERM to the process group started for the
# service (each service is started with setsid, so its pid is its group id), SIGKILL after the
# grace period; removes PIDFILE. Succeeds when nothing was running.
svc_stop_pidfile() {
  local pidfile=$1 grace=${2:-30} pid i
  if ! svc_pid_alive "$pidfile"; then
    rm -f "$pidfile"
    return 0
  fi
  pid=$(head -n1 "$pidfile")
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    svc_pid_alive "$pidfile" || break
    sleep 0.1
  done
  if svc_pid_alive "$pidfile"; then
    svc_log "pid $pid did not stop within ${grace}s; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$pidfile"
}

# svc_spawn PIDFILE LOG CMD...: starts CMD in its own session in the background, stdout and
# stderr appended to LOG, stdin from /dev/null, and records its pid.
svc_spawn() {
  local pidfile=$1 log=$2
  shift 2
  setsid "$@" </dev/null >>"$log" 2>&1 &
  echo $! >"$pidfile"
}

# svc_proc_alive PID: true when PID is a live process (not a zombie).
svc_proc_alive() {
  local state
  case $1 in '' | *[!0-9]*) return 1 ;; esac
  kill -0 "$1" 2>/dev/null || return 1
  if [ -r "/proc/$1/stat" ]; then
    state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
    [ "$state" = Z ] && return 1
  fi
  return 0
}

# svc_check_stop_with PID: rejects a `--stop-with` value that is not a live process.
svc_check_stop_with() {
  case $1 in '' | *[!0-9]*) svc_die "--stop-with needs a process id, got '$1'" ;; esac
  svc_proc_alive "$1" || svc_die "--stop-with $1: no such process"
}

# svc_watchdog WATCHED_PID PIDFILE LOG CMD... (`--stop-with`): starts, in its own session and
# detached from the caller's stdout and stderr, a loop that checks every second whether
# WATCHED_PID is still alive and, once it is gone, runs CMD (the script's `stop`), noting it in
# LOG. The loop ends by itself when the service it was started for (the pid PIDFILE names now)
# stops or is replaced, so a restart in the same DIR arms a watchdog of its own.
svc_watchdog() {
  local watched=$1 pidfile=$2 log=$3 service
  shift 3
  service=$(head -n1 "$pidfile")
  # shellcheck disable=SC2016 # expanded by the watchdog's shell
  setsid bash -c '. "$1" && shift && svc_watch_loop "$@"' svc-watchdog "$SVC_SCRIPTS/lib.sh" \
    "$watched" "$pidfile" "$service" "$@" </dev/null >>"$log" 2>&1 &
}

# svc_watch_loop WATCHED_PID PIDFILE SERVICE_PID CMD...: the loop of svc_watchdog.
svc_watch_loop() {
  local watched=$1 pidfile=$2 service=$3
  shift 3
  while svc_proc_alive "$watched"; do
    if [ "$(head -n1 "$pidfile" 2>/dev/null)" != "$service" ] || ! svc_proc_alive "$service"; then
      return 0
    fi
    sleep 1
  done
  echo "=== watchdog $(date -Is): process $watched is gone, stopping pid $service"
  exec "$@"
}

# svc_classpath NAME: the classpath resolved by install.sh for NAME (kafka, iceberg-rest).
svc_classpath() {
  local f="$SVC_CACHE/$1/classpath.txt"
  [ -s "$f" ] || svc_die "$f is missing: run scripts/services/install.sh first"
  cat "$f"
}

# svc_check_host ADDR: rejects anything but a dotted IPv4 address (the configs and the KEY=VALUE
# output carry it as is).
svc_check_host() {
  [[ $1 =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || svc_die "--host must be an IPv4 address, got '$1'"
}

# svc_parse_args "$@": sets SVC_CMD, SVC_DIR, SVC_PORT and SVC_HOST from
# `CMD [--dir DIR | DIR] [--port P] [--host ADDR]` and leaves any other arguments in SVC_REST
# (an array).
svc_parse_args() {
  SVC_CMD=${1:-}
  [ $# -gt 0 ] && shift
  SVC_DIR=
  SVC_PORT=
  SVC_REST=()
  while [ $# -gt 0 ]; do
    case $1 in
      --dir) SVC_DIR=${2:-}; shift 2 || svc_die "--dir needs a value" ;;
      --dir=*) SVC_DIR=${1#--dir=}; shift ;;
      --port) SVC_PORT=${2:-}; shift 2 || svc_die "--port needs a value" ;;
      --port=*) SVC_PORT=${1#--port=}; shift ;;
      --host) SVC_HOST=${2:-}; shift 2 || svc_die "--host needs a value" ;;
      --host=*) SVC_HOST=${1#--host=}; shift ;;
      -*)
        # options of the calling script that take a value are listed in SVC_VALUE_OPTS
        if [[ " ${SVC_VALUE_OPTS:-} " == *" $1 "* ]]; then
          [ $# -ge 2 ] || svc_die "$1 needs a value"
          SVC_REST+=("$1" "$2")
          shift 2
        else
          SVC_REST+=("$1")
          shift
        fi
        ;;
      *)
        if [ -z "$SVC_DIR" ]; then SVC_DIR=$1; else SVC_REST+=("$1"); fi
        shift
        ;;
    esac
  done
  svc_check_host "$SVC_HOST"
  if [ -n "$SVC_DIR" ]; then
    svc_check_dir "$SVC_DIR"
    SVC_DIR=$(svc_abs "$SVC_DIR")
    SVC_DIR=${SVC_DIR%/}
  fi
}
