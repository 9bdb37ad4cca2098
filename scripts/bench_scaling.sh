#!/usr/bin/env bash
# Scale-out on one machine: the same file sessionized by one process of W workers and by N processes
# of one worker each (a cluster over TCP on localhost), in turn, RUNS times each; prints one JSON
# line per run: wall, CPU of all processes, events/s, the largest process's peak RSS and the
# sessions written. The cluster must write as many sessions as the one process of N workers, or the
# script fails. Each process's stderr goes to the terminal.
# Usage: scripts/bench_scaling.sh [EVENTS] [USERS] [RUNS] [N]   (defaults: 5000000, EVENTS/100, 3, 2)
# BIN=path/to/sessionize measures another build; BENCH_DIR keeps the input between calls;
# ARGS="--correction-horizon 0" passes more options to every run.
# NETNS=1 (needs root and iproute2) runs the cluster across network namespaces instead of on
# localhost: process i in a namespace of its own, joined by a veth pair to a bridge in the root
# namespace, listening on its own address 10.214.X.(i+2) of a /24 that no interface uses (the
# bridge holds .1). The namespaces, veth pairs and bridge go away when the script exits, also on a
# failure, Ctrl-C or SIGTERM. The warehouse is a local directory: the namespaces share the file
# system.
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-5000000}
users=${2:-$((events / 100))}
runs=${3:-3}
processes=${4:-2}
work=${BENCH_DIR:-$(mktemp -d)}
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=${CARGO_TARGET_DIR:-target}/release/sessionize
fi
input="$work/events-$events-$users.jsonl"
[ -f "$input" ] || "$BIN" generate --users "$users" --events "$events" --out "$input" >/dev/null 2>&1

# Network namespaces: names carry this shell's pid (interface names have at most 15 characters).
namespaces=()
addresses=()
bridge=""
veths=()
py=""
# shellcheck disable=SC2317  # called by the EXIT trap
clean_up() {
  local ns pid veth
  if [ -n "$py" ]; then
    # The measuring script and the processes it started, if a signal or a failure stopped us.
    for pid in $(ps -o pid= --ppid "$py" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    kill -KILL "$py" 2>/dev/null || true
    wait "$py" 2>/dev/null || true
  fi
  for ns in "${namespaces[@]}"; do
    # Only processes this script started can be in its namespaces.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  for veth in "${veths[@]}"; do ip link del "$veth" 2>/dev/null || true; done
  [ -z "$bridge" ] || ip link del "$bridge" 2>/dev/null || true
}
trap clean_up EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if [ "${NETNS:-0}" = 1 ]; then
  [ "$processes" -le 26 ] || { echo "NETNS=1 takes at most 26 processes" >&2; exit 1; }
  used=$(ip -o -4 addr show; ip -4 route show)
  prefix=""
  for n in $(seq 0 253); do
    candidate="10.214.$(( ($$ + n) % 254 + 1 ))"
    if ! grep -qF " $candidate." <<<"$used" && ! grep -qF "$candidate.0/" <<<"$used"; then
      prefix=$candidate
      break
    fi
  done
  [ -n "$prefix" ] || { echo "no free /24 in 10.214.0.0/16" >&2; exit 1; }
  bridge="szs$$br"
  letters=abcdefghijklmnopqrstuvwxyz
  ip link add "$bridge" type bridge
  ip addr add "$prefix.1/24" dev "$bridge"
  ip link set "$bridge" up
  for i in $(seq 0 $((processes - 1))); do
    letter=${letters:i:1}
    ns="szs-$$-$letter"
    namespaces+=("$ns")
    veths+=("szs$$${letter}0")
    addresses+=("$prefix.$((i + 2))")
    ip netns add "$ns"
    ip link add "szs$$${letter}0" type veth peer name "szs$$${letter}1" netns "$ns"
    ip link set "szs$$${letter}0" master "$bridge"
    ip link set "szs$$${letter}0" up
    ip -n "$ns" addr add "$prefix.$((i + 2))/24" dev "szs$$${letter}1"
    ip -n "$ns" link set "szs$$${letter}1" up
    ip -n "$ns" link set lo up
  done
  echo "namespaces ${namespaces[*]} on $prefix.0/24 (bridge $bridge)" >&2
fi

# In the background, so that a signal reaches the traps at once rather than when it ends.
NAMESPACES="${namespaces[*]}" ADDRESSES="${addresses[*]}" \
python3 - "$BIN" "$input" "$work" "$runs" "$processes" <<'PY' &
import json, os, resource, shutil, socket, subprocess, sys, threading, time
bin, inp, work, runs, n = sys.argv[1:]
runs, n = int(runs), int(n)
extra = os.environ.get("ARGS", "").split()
namespaces = os.environ["NAMESPACES"].split()
addresses = os.environ["ADDRESSES"].split()

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def in_namespace(pid, ns, found):
    """Waits until `ip netns pids NS` lists PID (once `ip netns exec` has entered it), at most 10 s."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        if str(pid) in pids:
            found.append(ns)
            return
        time.sleep(0.02)

def measure(shape, commands, netns=()):
    wh = os.path.join(work, "warehouse")
    shutil.rmtree(wh, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    procs = [subprocess.Popen(c + ["--warehouse", wh, "--log-level", "warn"] + extra, stdout=subprocess.PIPE, text=True)
             for c in commands]
    # `ip netns exec` execs the binary: the child's pid is the process that must be in the namespace.
    found = []
    checks = [threading.Thread(target=in_namespace, args=(p.pid, ns, found)) for p, ns in zip(procs, netns)]
    for t in checks:
        t.start()
    peak, outs = 0, []
    for p in procs:
        _, status, usage = os.wait4(p.pid, 0)
        if status != 0:
            for q in procs:
                q.kill()
            sys.exit(f"{shape}: a process failed ({status})")
        peak = max(peak, usage.ru_maxrss)
        outs.append(p.stdout.read())
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    for t in checks:
        t.join()
    if sorted(found) != sorted(netns):
        sys.exit(f"{shape}: processes not seen in namespaces {sorted(set(netns) - set(found))}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    # Only process 0 prints a summary, and it counts the events process 0 read: with a file input
    # that is all of them (the file has one reader), which is what this script runs. The sessions
    # it counts are the whole cluster's.
    summary = json.loads(outs[0].strip().splitlines()[-1])
    events = summary["events_read"]
    print(json.dumps({"shape": shape, "events": events, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                      "events_per_s": round(events / wall), "peak_rss_mib": round(peak / 1024),
                      "sessions": summary["sessions"]}), flush=True)
    return summary["sessions"]

for _ in range(runs):
    measure("-w 1", [[bin, "run", "--input", inp, "-w", "1"]])
    expected = measure(f"-w {n}", [[bin, "run", "--input", inp, "-w", str(n)]])
    hosts = os.path.join(work, "hosts")
    cluster = lambda p: [bin, "run", "--input", inp, "-w", "1", "-n", str(n), "-p", str(p), "-h", hosts]
    if namespaces:
        with open(hosts, "w") as f:
            f.writelines(f"{a}:24100\n" for a in addresses)
        sessions = measure(f"-n {n} -w 1 netns", [["ip", "netns", "exec", ns] + cluster(p)
                                                  for p, ns in enumerate(namespaces)], namespaces)
    else:
        with open(hosts, "w") as f:
            f.writelines(f"127.0.0.1:{free_port()}\n" for _ in range(n))
        sessions = measure(f"-n {n} -w 1", [cluster(p) for p in range(n)])
    if sessions != expected:
        sys.exit(f"-n {n} -w 1 wrote {sessions} sessions, -w {n} {expected}")
PY
py=$!
status=0
wait "$py" || status=$?
py=""
exit "$status"
