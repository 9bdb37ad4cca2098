"""Ingestion time of a bounded run with and without a set of flags, runs alternated: the time from
the start to the run's last commit (its last "committed" log line), which leaves out what a
bounded run does after its input (the last compaction round), and the whole run's time.

    python3 scripts/bench_ingest.py INPUT RUNS "FLAGS OF B" [FLAGS OF BOTH...]
    e.g. python3 scripts/bench_ingest.py events.jsonl 3 "--compact-min-files 0" -w 2 --commit-interval 1s

BIN (default target/release/sessionize, or under CARGO_TARGET_DIR) is the binary; each run writes a
fresh warehouse under BENCH_DIR (default a temporary directory).
"""
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def timed_run(binary, warehouse, flags):
    shutil.rmtree(warehouse, ignore_errors=True)
    start = time.time()
    run = subprocess.run(
        [binary, "run", "--warehouse", warehouse, "--log-format", "json", "--log-level", "info"]
        + flags,
        capture_output=True, text=True, check=True)
    end = time.time()
    last = None
    for line in run.stderr.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("fields", {}).get("message") == "committed":
            last = datetime.datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
    assert last is not None, "the run made no commit"
    return last.timestamp() - start, end - start


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    path, runs, b_flags, *both = sys.argv[1:]
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    binary = os.environ.get("BIN", f"{target}/release/sessionize")
    work = os.environ.get("BENCH_DIR") or tempfile.mkdtemp()
    flags = {"A": ["--input", path] + both, "B": ["--input", path] + both + b_flags.split()}
    times = {"A": [], "B": []}
    for _ in range(int(runs)):
        for name in ("A", "B"):
            times[name].append(timed_run(binary, f"{work}/warehouse-{name}", flags[name]))
    for name in ("A", "B"):
        ingestion = statistics.median(t[0] for t in times[name])
        whole = statistics.median(t[1] for t in times[name])
        print(json.dumps({"run": name, "flags": flags[name], "ingestion_s": round(ingestion, 2),
                          "whole_s": round(whole, 2), "runs": len(times[name])}))


if __name__ == "__main__":
    main()
