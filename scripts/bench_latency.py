#!/usr/bin/env python3
"""Helper of scripts/bench_latency.sh: a live clickstream whose event time is the wall clock, and
the end-to-end delay of every session measured from the table itself.

  bench_latency.py produce --users U --truth FILE [--seed S]
      Writes `key<TAB>json` lines to standard output, paced in real time (for Kafka's
      ConsoleProducer), until killed. Each user alternates sessions of 1-12 events 2-25 s apart
      with pauses of 70-180 s, so with a 1-minute inactivity timeout every session the producer
      means is exactly one session of the rules. Each event's time is the wall clock when it is
      sent minus up to 1 s (delivery delay, in order per user). FILE gets one JSON line per session
      as its last event is sent: user, start_ms, end_ms, events.

  bench_latency.py analyze --warehouse W --inactivity-s T --max-duration-s D --stop-ms MS
                           --margin-s M [--truth FILE] [--metrics FILE] [--label L]
      For every row of sessions.user_sessions: delay = timestamp of the snapshot that added its
      data file - the moment the session could close (session_end_time_ms + T, or for
      max_duration sessions session_start_time_ms + D when that comes first). Rows whose close
      moment is later than MS - M are left out (those sessions may still be uncommitted when the
      run was stopped, so only the fast ones would count); end_of_input rows are left out. With
      --truth, every session the producer finished that could close by then must be in the table.
      Prints one JSON object.
"""
import argparse
import heapq
import json
import random
import sys
import time
import uuid


def produce(args):
    rng = random.Random(args.seed)
    users = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(args.users)]
    truth = open(args.truth, "a", buffering=1)
    now = time.time()
    due = [(now + rng.uniform(0, 150), u) for u in range(args.users)]
    heapq.heapify(due)
    state = {}  # user -> [remaining events, session start ms, last ms, events]
    pages = ["home", "search", "results", "hotel_details", "checkout", "confirmation"]
    seq = 0
    out = sys.stdout
    while True:
        at, u = heapq.heappop(due)
        wait = at - time.time()
        if wait > 0:
            time.sleep(wait)
        st = state.get(u)
        if st is None:
            st = state[u] = [rng.randint(1, 12), None, 0, 0]
        ts = max(int(time.time() * 1000) - rng.randint(0, 1000), st[2] + 1)
        if st[1] is None:
            st[1] = ts
        st[2] = ts
        st[3] += 1
        st[0] -= 1
        seq += 1
        event = {
            "event_id": f"lat-{args.seed}-{seq}",
            "page_name": rng.choice(pages),
            "event_timestamp": ts,
            "booking_details": None,
            "uuid": users[u],
            "event_details": {"event_name": "page_loaded", "event_type": "page_view",
                              "event_value": None},
        }
        out.write(users[u] + "\t" + json.dumps(event, separators=(",", ":")) + "\n")
        out.flush()
        if st[0] == 0:
            truth.write(json.dumps({"user": users[u], "start_ms": st[1], "end_ms": ts,
                                    "events": st[3]}) + "\n")
            del state[u]
            heapq.heappush(due, (time.time() + rng.uniform(70, 180), u))
        else:
            heapq.heappush(due, (time.time() + rng.uniform(2, 25), u))


def percentile(sorted_values, p):
    """Nearest-rank percentile."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(-(-p * len(sorted_values) // 100)) - 1))
    return sorted_values[k]


def parse_metrics(path):
    values = {}
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                pass
    return values


def hist_quantile(metrics, name, q):
    """A quantile from a Prometheus histogram's buckets (upper bound of the bucket it falls in)."""
    buckets = []
    for key, value in metrics.items():
        if key.startswith(name + "_bucket{"):
            le = key.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), value))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return None
    target = q * buckets[-1][1]
    for le, count in buckets:
        if count >= target:
            return le
    return None


def analyze(args):
    import pyarrow.parquet as pq
    from pyiceberg.catalog.sql import SqlCatalog

    import os
    wh = os.path.abspath(args.warehouse)
    catalog = SqlCatalog("default", uri=f"sqlite:///{wh}/catalog.db", warehouse=f"file://{wh}")
    table = catalog.load_table("sessions.user_sessions")
    snapshots = {s.snapshot_id: s.timestamp_ms for s in table.snapshots()}
    entries = table.inspect.entries().to_pylist()
    cutoff = args.stop_ms - args.margin_s * 1000
    delays, rows, late_rows, reasons, keys = [], 0, 0, {}, set()
    missing_snapshot = 0
    for entry in entries:
        if entry["status"] == 2:  # deleted
            continue
        snapshot_ms = snapshots.get(entry["snapshot_id"])
        path = entry["data_file"]["file_path"]
        data = pq.read_table(path.removeprefix("file://"),
                             columns=["user_id", "session_start_time_ms", "session_end_time_ms",
                                      "end_reason"]).to_pylist()
        for row in data:
            rows += 1
            reason = row["end_reason"]
            reasons[reason] = reasons.get(reason, 0) + 1
            keys.add((row["user_id"], row["session_start_time_ms"]))
            if reason == "end_of_input":
                continue
            close = row["session_end_time_ms"] + args.inactivity_s * 1000
            if reason == "max_duration":
                close = min(close, row["session_start_time_ms"] + args.max_duration_s * 1000)
            if close > cutoff:
                late_rows += 1
                continue
            if snapshot_ms is None:
                missing_snapshot += 1
                continue
            delays.append((snapshot_ms - close) / 1000)
    delays.sort()
    result = {
        "label": args.label,
        "rows": rows,
        "end_reasons": reasons,
        "snapshots": len(snapshots),
        "measured": len(delays),
        "left_out_closing_after_cutoff": late_rows,
        "rows_without_snapshot": missing_snapshot,
    }
    for p in (50, 90, 99):
        result[f"p{p}_s"] = round(percentile(delays, p), 1) if delays else None
    result["max_s"] = round(delays[-1], 1) if delays else None
    result["min_s"] = round(delays[0], 1) if delays else None
    if args.truth:
        expected = missing = 0
        with open(args.truth) as f:
            for line in f:
                s = json.loads(line)
                if s["end_ms"] + args.inactivity_s * 1000 > cutoff:
                    continue
                expected += 1
                missing += (s["user"], s["start_ms"]) not in keys
        result["truth_sessions_closable"] = expected
        result["truth_sessions_missing"] = missing
    if args.metrics:
        m = parse_metrics(args.metrics)
        count = m.get("sessionize_session_visible_delay_seconds_count", 0)
        result["visible_delay_count"] = int(count)
        result["visible_delay_mean_s"] = (
            round(m["sessionize_session_visible_delay_seconds_sum"] / count, 1) if count else None)
        result["visible_delay_p50_bucket_s"] = hist_quantile(
            m, "sessionize_session_visible_delay_seconds", 0.5)
        result["visible_delay_p99_bucket_s"] = hist_quantile(
            m, "sessionize_session_visible_delay_seconds", 0.99)
        result["watermark_lag_s"] = m.get("sessionize_watermark_lag_seconds")
        commits = m.get("sessionize_commit_duration_seconds_count", 0)
        result["commits"] = int(commits)
        result["commit_duration_mean_s"] = (
            round(m["sessionize_commit_duration_seconds_sum"] / commits, 3) if commits else None)
    print(json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("produce")
    p.add_argument("--users", type=int, default=400)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--truth", required=True)
    p.set_defaults(func=produce)
    a = sub.add_parser("analyze")
    a.add_argument("--warehouse", required=True)
    a.add_argument("--inactivity-s", type=float, required=True)
    a.add_argument("--max-duration-s", type=float, default=7200)
    a.add_argument("--stop-ms", type=int, required=True)
    a.add_argument("--margin-s", type=float, required=True)
    a.add_argument("--truth")
    a.add_argument("--metrics")
    a.add_argument("--label", default="")
    a.set_defaults(func=analyze)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
