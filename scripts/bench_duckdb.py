#!/usr/bin/env python3
"""sessionize against DuckDB on the same JSON-lines file, file to Parquet, in one sitting.

DuckDB runs the session rules as one SQL statement (below) and writes the sessions to a ZSTD
Parquet file; sessionize runs `sessionize run --input FILE -w WORKERS` into a fresh SQLite-catalog
warehouse (Iceberg, Parquet with ZSTD). The two alternate RUNS times; the script prints the
medians of wall time, CPU time and peak RSS of each, their ratio, and whether the two produced the
same number of sessions and events (the SQL is exact for inputs whose duplicates repeat an event
within the de-duplication window and whose late events are within the correction horizon, which
is what `sessionize generate` writes).

Usage: scripts/bench_duckdb.py FILE [--runs 5] [--workers 2] [--bin target/release/sessionize]
       [-- extra flags for sessionize run]
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

INACTIVITY_MS = 30 * 60_000
MAX_DURATION_MS = 2 * 3_600_000
DEDUP_MS = 10 * 60_000
MAX_FUTURE_SKEW_MS = 24 * 3_600_000

# The rules as the README states them, in set form:
# 1. valid events (string user and event ids, a timestamp of digits as a string or a number, at
#    most a day ahead of now; a string or null page, an object or null details);
# 2. a repeat of a user's event id within the de-duplication window is dropped;
# 3. a gap of more than the inactivity limit starts a new "gap session";
# 4. within a gap session an event more than the maximum duration after its session's first
#    event starts a new one. This is a sequential rule (each split moves the next limit), so it
#    runs as a recursive query, but only over the gap sessions longer than the limit;
# 5. one row per session: start, end, duration, events, the first 64 distinct pages in order of
#    first visit, an id derived from user and start, and the end reason.
SESSIONS_SQL = f"""
COPY (
WITH raw AS (
    SELECT uuid AS user_id, event_id, page_name->>'$' AS page_name,
           json_type(page_name) AS page_type, json_type(event_details) AS details_type,
           TRY_CAST(event_timestamp->>'$' AS BIGINT) AS ts
    FROM read_json('@INPUT@', format = 'newline_delimited', ignore_errors = true,
                   columns = {{'uuid': 'VARCHAR', 'event_id': 'VARCHAR', 'page_name': 'JSON',
                               'event_timestamp': 'JSON', 'event_details': 'JSON'}})
),
valid AS (
    SELECT user_id, event_id, page_name, ts FROM raw
    WHERE user_id <> '' AND event_id <> '' AND ts >= 0
      AND ts <= epoch_ms(now()) + {MAX_FUTURE_SKEW_MS}
      AND coalesce(page_type, 'NULL') IN ('VARCHAR', 'NULL')
      AND coalesce(details_type, 'NULL') IN ('OBJECT', 'NULL')
),
deduplicated AS (
    SELECT * EXCLUDE (previous) FROM (
        SELECT *, lag(ts) OVER (PARTITION BY user_id, event_id ORDER BY ts) AS previous
        FROM valid)
    WHERE previous IS NULL OR ts - previous > {DEDUP_MS}
),
gaps AS (
    SELECT *, sum(CASE WHEN gap IS NULL OR gap > {INACTIVITY_MS} THEN 1 ELSE 0 END)
                  OVER (PARTITION BY user_id ORDER BY ts, event_id) AS gap_session
    FROM (SELECT *, ts - lag(ts) OVER (PARTITION BY user_id ORDER BY ts, event_id) AS gap
          FROM deduplicated)
),
spans AS (
    SELECT user_id, gap_session, min(ts) AS first_ts, max(ts) AS last_ts
    FROM gaps GROUP BY ALL
),
long_events AS (
    SELECT g.user_id, g.gap_session, g.ts
    FROM gaps g JOIN spans s USING (user_id, gap_session)
    WHERE s.last_ts - s.first_ts > {MAX_DURATION_MS}
),
splits AS (
    WITH RECURSIVE starts(user_id, gap_session, start_ts) AS (
        SELECT user_id, gap_session, first_ts FROM spans
        WHERE last_ts - first_ts > {MAX_DURATION_MS}
        UNION ALL
        SELECT st.user_id, st.gap_session, min(e.ts)
        FROM starts st JOIN long_events e
          ON e.user_id = st.user_id AND e.gap_session = st.gap_session
         AND e.ts > st.start_ts + {MAX_DURATION_MS}
        GROUP BY st.user_id, st.gap_session, st.start_ts
    )
    SELECT * FROM starts
),
sessions AS (
    SELECT g.*, coalesce(
        (SELECT max(sp.start_ts) FROM splits sp
         WHERE sp.user_id = g.user_id AND sp.gap_session = g.gap_session AND sp.start_ts <= g.ts),
        s.first_ts) AS start_ts
    FROM gaps g JOIN spans s USING (user_id, gap_session)
),
first_visits AS (
    SELECT user_id, start_ts, page_name, min(ts) AS first_ts, min(event_id) AS first_id
    FROM sessions WHERE page_name IS NOT NULL GROUP BY ALL
),
pages AS (
    SELECT user_id, start_ts, list(page_name ORDER BY first_ts, first_id)[1:64] AS pages_visited
    FROM first_visits GROUP BY ALL
),
rows AS (
    SELECT user_id, start_ts, max(ts) AS end_ts, count(*) AS event_count,
           any_value(gap_session) AS gap_session
    FROM sessions GROUP BY ALL
),
ordered AS (
    SELECT r.*, lead(r.start_ts) OVER (PARTITION BY r.user_id ORDER BY r.start_ts) AS next_start,
           lead(r.gap_session) OVER (PARTITION BY r.user_id ORDER BY r.start_ts) AS next_gap
    FROM rows r
)
SELECT o.user_id,
       sha1(o.user_id || chr(31) || CAST(o.start_ts AS VARCHAR)) AS session_id,
       o.start_ts AS session_start_time_ms, o.end_ts AS session_end_time_ms,
       (o.end_ts - o.start_ts) // 1000 AS session_duration_seconds,
       o.event_count, coalesce(p.pages_visited, []) AS pages_visited,
       CASE WHEN o.next_start IS NULL THEN 'end_of_input'
            WHEN o.next_gap <> o.gap_session THEN 'inactivity'
            ELSE 'max_duration' END AS end_reason,
       CAST(to_timestamp(o.start_ts / 1000) AS DATE) AS session_date
FROM ordered o LEFT JOIN pages p USING (user_id, start_ts)
) TO '@OUTPUT@' (FORMAT parquet, COMPRESSION zstd)
"""

DUCKDB_RUN = """
import duckdb, json, sys
sql, output = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute("SET threads = {threads}")
con.execute(sql)
rows, events = con.execute(
    f"SELECT count(*), sum(event_count) FROM read_parquet('{{output}}')").fetchone()
print(json.dumps({{"sessions": rows, "session_events": int(events)}}))
"""


def timed(command):
    """Runs a child; returns its stdout's last line, wall seconds, CPU seconds and peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    # Peak RSS of one child needs a fresh child accounting: wrap in /usr/bin/time's format.
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *command], check=True,
                          capture_output=True, text=True)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak_kib = int(done.stderr.strip().splitlines()[-1])
    return done.stdout.strip().splitlines()[-1], wall, cpu, peak_kib / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bin", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "release", "sessionize"))
    argv = sys.argv[1:]
    # Everything after `--` goes to `sessionize run` as it is.
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.flags = argv[split + 1:]
    work = tempfile.mkdtemp(prefix="bench-duckdb-")
    output = os.path.join(work, "sessions.parquet")
    sql = SESSIONS_SQL.replace("@INPUT@", os.path.abspath(args.input)).replace("@OUTPUT@", output)
    duck_cmd = [sys.executable, "-c", DUCKDB_RUN.format(threads=args.workers), sql, output]
    ours_wh = os.path.join(work, "warehouse")
    ours_cmd = [args.bin, "run", "--input", args.input, "--warehouse", ours_wh,
                "-w", str(args.workers), "--log-level", "warn", *args.flags]
    results = {"duckdb": [], "sessionize": []}
    counts = {}
    try:
        for _ in range(args.runs):
            for name, command in (("duckdb", duck_cmd), ("sessionize", ours_cmd)):
                shutil.rmtree(ours_wh, ignore_errors=True)
                if os.path.exists(output):
                    os.remove(output)
                line, wall, cpu, rss = timed(command)
                summary = json.loads(line)
                if "session_events" not in summary:  # sessionize's run summary
                    summary["session_events"] = (
                        summary["valid"] - summary["duplicates"] - summary["late"])
                counts[name] = (summary["sessions"], summary["session_events"])
                results[name].append((wall, cpu, rss))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"input": args.input, "runs": args.runs, "workers": args.workers}
    for name, samples in results.items():
        report[name] = {
            "wall_s": round(statistics.median(s[0] for s in samples), 2),
            "cpu_s": round(statistics.median(s[1] for s in samples), 2),
            "peak_rss_mib": round(statistics.median(s[2] for s in samples)),
            "walls": [round(s[0], 2) for s in samples],
            "sessions": counts[name][0], "session_events": counts[name][1],
        }
    report["duckdb_over_sessionize"] = round(
        report["duckdb"]["wall_s"] / report["sessionize"]["wall_s"], 2)
    report["same_sessions"] = counts["duckdb"] == counts["sessionize"]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
