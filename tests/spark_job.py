"""The Spark job's documented queries, on the sessions table sessionize wrote and on Spark's own
computation of the job's columns from the reference sessions, for tests/spark_job.rs.

Usage: python3 tests/spark_job.py CATALOG_URI S3_ENDPOINT REFERENCE.json OUT.json

REFERENCE.json holds the reference sessions (`sessions`: [user_id, session_start_time_ms] pairs)
and the dates the queries ask for (`from`, `to`, `day`). The reference's columns are the job's
own: `date_format(session_start, 'yyyy-MM-dd')` and `abs(hash(uuid)) % 100`, in a UTC session.
OUT.json has each query's rows on both sides, and how many data files pyiceberg plans for a
one-day filter on `session_date` against all of them (per-file statistics prune the rest).
"""

import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import readers  # noqa: E402

# The job's three documented queries, with the dates of the data.
QUERIES = {
    "daily_counts": "SELECT CAST(session_date AS STRING) AS day, COUNT(*) AS sessions FROM {t} "
    "WHERE session_date BETWEEN '{from}' AND '{to}' GROUP BY session_date ORDER BY day",
    "cohort_sample": "SELECT user_hash_bucket, user_id, COUNT(*) AS sessions FROM {t} "
    "WHERE user_hash_bucket IN (10, 25, 50, 75) GROUP BY user_hash_bucket, user_id "
    "ORDER BY user_hash_bucket, user_id",
    "day_and_bucket": "SELECT user_id, session_start_time_ms FROM {t} "
    "WHERE session_date = '{day}' AND user_hash_bucket = 42 "
    "ORDER BY user_id, session_start_time_ms",
}


def run_queries(spark, table, dates):
    return {
        name: [list(row) for row in spark.sql(query.format(t=table, **dates)).collect()]
        for name, query in QUERIES.items()
    }


def main():
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    catalog = readers.Catalog(sys.argv[1], sys.argv[2])
    with open(sys.argv[3]) as f:
        reference = json.load(f)
    dates = {key: reference[key] for key in ("from", "to", "day")}
    jars, _ = readers.check_installed()
    result = {}
    with tempfile.TemporaryDirectory(prefix="spark-job-") as scratch:
        spark, name = readers.spark_session(catalog, jars, scratch, "sessionize-spark-job")
        try:
            ours = f"`{name}`.{readers.NAMESPACE}.{readers.TABLE}"
            result["ours"] = run_queries(spark, ours, dates)
            rows = [(user, start) for user, start in reference["sessions"]]
            spark.createDataFrame(rows, "user_id string, session_start_time_ms long").selectExpr(
                "user_id",
                "session_start_time_ms",
                "date_format(timestamp_millis(session_start_time_ms), 'yyyy-MM-dd') "
                "AS session_date",
                "abs(hash(user_id)) % 100 AS user_hash_bucket",
            ).createOrReplaceTempView("job")
            result["spark_job"] = run_queries(spark, "job", dates)
        finally:
            spark.stop()
    from pyiceberg.expressions import EqualTo

    table = readers.open_pyiceberg(catalog).load_table(f"{readers.NAMESPACE}.{readers.TABLE}")
    result["files"] = {
        "all": len(list(table.scan().plan_files())),
        "one_day": len(list(table.scan(row_filter=EqualTo("session_date", dates["day"])).plan_files())),
    }
    with open(sys.argv[4], "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
