"""Another writer on the sessions table while a pipeline commits to it, for tests/readers.rs:
Spark runs Iceberg's table maintenance (rewrite_data_files, then expire_snapshots) round after
round, through the same catalog, until told to stop; then it reads the table.

Usage: python3 tests/other_writer.py CATALOG_URI S3_ENDPOINT SIGNALS_DIR OUT.json

CATALOG_URI and S3_ENDPOINT are as for tests/readers.py. The script writes SIGNALS_DIR/rounds (the
number of rounds finished so far) after each round, and stops after the round that starts once
SIGNALS_DIR/stop exists. A round's commit that another writer's commit refuses (a rewrite whose
files were compacted or rewritten meanwhile) is counted as refused, as a Spark job sees it, and
the rounds go on. OUT.json: the rounds, the rewrites committed and refused, the files the expiry
deleted, our newest epoch at the start of each round, and a final validation: Spark's row count
and sessions per user, and the row count of every snapshot left (each one read in full, so a data
file that one of the writers deleted too early fails the read).
"""

import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone

from readers import NAMESPACE, TABLE, Catalog, check_installed, spark_session

EPOCH = "sessionize.epoch"


def newest_epoch(spark, table):
    """Our epoch mark on the newest snapshot that has one (None before our first commit)."""
    rows = spark.sql(
        f"SELECT summary['{EPOCH}'] AS epoch FROM {table}.snapshots "
        f"WHERE summary['{EPOCH}'] IS NOT NULL ORDER BY committed_at DESC LIMIT 1"
    ).collect()
    return int(rows[0]["epoch"]) if rows else None


def exists(spark, table):
    try:
        spark.sql(f"REFRESH TABLE {table}")
        return True
    except Exception:
        return False


def refusal(error):
    """The first line of a commit refused by the other writer's (which Spark reports as a failed
    commit or a failed validation); any other error is raised."""
    text = str(error).strip()
    if "commit" not in text.lower() and "validation" not in text.lower():
        raise error
    lines = text.splitlines()
    return next((line for line in lines if "Exception" in line), lines[0]).strip(": ")[:300]


def maintain(spark, catalog_name, table, report):
    """One round: rewrite every data file (so there is always something to rewrite, and to
    conflict with), then expire every snapshot but the last two."""
    ident = f"{NAMESPACE}.{TABLE}"
    try:
        row = spark.sql(
            f"CALL `{catalog_name}`.system.rewrite_data_files(table => '{ident}', "
            "options => map('rewrite-all', 'true', 'min-input-files', '2'))"
        ).collect()[0]
        if row["rewritten_data_files_count"] > 0:
            report["rewrites"] += 1
            report["rewritten_files"] += row["rewritten_data_files_count"]
    except Exception as error:  # a conflict is refused as Spark refuses it: the job fails
        report["refused"].append(refusal(error))
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    try:
        row = spark.sql(
            f"CALL `{catalog_name}`.system.expire_snapshots(table => '{ident}', "
            f"older_than => TIMESTAMP '{now}', retain_last => 2)"
        ).collect()[0]
        report["expired_data_files"] += row["deleted_data_files_count"]
        report["expired_manifests"] += row["deleted_manifest_files_count"]
    except Exception as error:
        report["refused"].append(refusal(error))


def validate(spark, table):
    rows = spark.table(table)
    per_user = {r["user_id"]: r["count"] for r in rows.groupBy("user_id").count().collect()}
    snapshots = {}
    for row in spark.sql(f"SELECT snapshot_id FROM {table}.snapshots").collect():
        snapshot = row["snapshot_id"]
        read = spark.read.option("snapshot-id", snapshot).table(table)
        snapshots[str(snapshot)] = read.count()
    return {"rows": rows.count(), "per_user": per_user, "snapshot_rows": snapshots}


def main():
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    catalog = Catalog(sys.argv[1], sys.argv[2])
    signals, out = sys.argv[3], sys.argv[4]
    jars, _ = check_installed()
    report = {
        "rounds": 0,
        "rewrites": 0,
        "rewritten_files": 0,
        "refused": [],
        "expired_data_files": 0,
        "expired_manifests": 0,
        "epochs_seen": [],
    }
    with tempfile.TemporaryDirectory(prefix="other-writer-spark-") as scratch:
        spark, name = spark_session(catalog, jars, scratch, "sessionize-other-writer")
        table = f"`{name}`.{NAMESPACE}.{TABLE}"
        try:
            # The pipeline creates the table at its start, which may come after Spark's.
            waited = time.monotonic()
            while not exists(spark, table):
                if time.monotonic() - waited > 300:
                    sys.exit("the sessions table never appeared")
                time.sleep(0.2)
            while True:
                last = os.path.exists(os.path.join(signals, "stop"))
                spark.sql(f"REFRESH TABLE {table}")
                report["epochs_seen"].append(newest_epoch(spark, table))
                maintain(spark, name, table, report)
                report["rounds"] += 1
                progress = os.path.join(signals, "rounds")
                with open(progress + ".tmp", "w") as f:
                    f.write(str(report["rounds"]))
                os.replace(progress + ".tmp", progress)
                if last:
                    break
            spark.sql(f"REFRESH TABLE {table}")
            report["validation"] = validate(spark, table)
        finally:
            spark.stop()
    with open(out, "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
