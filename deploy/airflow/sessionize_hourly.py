"""Hourly bounded sessionize run, then table maintenance, for Apache Airflow 2.4+ and 3.x.

Each run reads the topic from where the sessions table's newest snapshot says up to the end of the
run's data interval (`sessionize run ... --until-timestamp {{ data_interval_end }}`: it stops at each
partition's first record at or after that time), commits, and exits with a JSON summary that becomes
the task's XCom. A run that failed or was skipped loses nothing: the next one starts where the table
says. A bounded run closes every session still open when it ends (`end_reason` `end_of_input`), so a
session that spans the end of an interval is split in two; run the continuous pipeline
(deploy/k8s, docker-compose.yml) where that matters. Never run this DAG and a continuous pipeline on
the same tables: the catalog admits one writer and the other stops with exit code 4.

Where it runs: the Airflow worker runs the `sessionize` binary (install it there, or build an image
FROM the project's Dockerfile with Airflow in it) and must reach Kafka, the catalog and the warehouse
(a directory or an s3:// bucket), which keeps the checkpoints. On Kubernetes, the same command fits a
KubernetesPodOperator with the sessionize image (and the warehouse volume mounted, when the warehouse
is a directory); its exit codes mean the same.

Configuration, from the worker's environment (read when the task runs, not when the DAG is parsed):
  SESSIONIZE_BIN             the binary (default: sessionize, from PATH)
  SESSIONIZE_KAFKA_SERVERS   bootstrap servers (required)
  SESSIONIZE_KAFKA_TOPIC     default clickstream-events
  SESSIONIZE_WAREHOUSE       a directory or s3://BUCKET/PREFIX (default /warehouse); S3 settings
                             come as catalog options (SESSIONIZE_CATALOG_OPTION) or the AWS chain
  SESSIONIZE_CATALOG_URI     e.g. http://iceberg-rest:8181 or postgres://user@host/db (default: the
                             SQLite catalog in the warehouse)
  SESSIONIZE_WORKERS         worker threads (-w, default 2)
  SESSIONIZE_CATALOG_OPTION, SESSIONIZE_KAFKA_OPTION_<KEY>, PGPASSWORD: passed through; read by
                             sessionize itself (secrets stay out of the command line)

Retries, by exit code (README.md, "Failure and recovery"). A BashOperator retries every non-zero exit
alike; this task runs the binary itself so that it can tell them apart:
  0   done
  3   runtime error (storage, a commit the catalog kept refusing): retried
  5   a process of a cluster was lost: retried (a single-process run does not get it)
  70  internal error (a panic): retried, and worth a bug report
  killed by a signal (the OOM killer, a timeout): retried
  1   start-up error: an unreachable broker or catalog, a missing checkpoint, a replaced input. Not
      retried blindly: the message names the cause; fix it, then clear the task.
  2   bad flags: a deployment error, never retried
  4   another pipeline commits to the table: never retried; stop one of the two first
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from datetime import timedelta

import pendulum

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG

try:  # Airflow 3, or Airflow 2 with the standard provider
    from airflow.providers.standard.operators.python import PythonOperator
except ImportError:  # Airflow 2
    from airflow.operators.python import PythonOperator

try:  # Airflow 3
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
except ImportError:  # Airflow 2
    from airflow.exceptions import AirflowException, AirflowFailException

RETRIED = {
    3: "runtime error (storage or catalog); retrying resumes from the last commit",
    5: "a process of the cluster was lost; retrying",
    70: "internal error (a panic, please report it); retrying",
}
NOT_RETRIED = {
    1: "start-up error: fix what the message above names, then clear this task",
    2: "bad flags: fix the deployment (environment of the Airflow worker or this DAG)",
    4: "another pipeline commits to these tables: stop one of them, then clear this task",
}


def sessionize_args(until: str) -> list[str]:
    """The command line of one bounded run, up to `until` (RFC 3339)."""
    env = os.environ
    servers = env.get("SESSIONIZE_KAFKA_SERVERS")
    if not servers:
        raise AirflowFailException("SESSIONIZE_KAFKA_SERVERS is not set on the Airflow worker")
    args = [
        env.get("SESSIONIZE_BIN", "sessionize"),
        "run",
        "--kafka-servers", servers,
        "--kafka-topic", env.get("SESSIONIZE_KAFKA_TOPIC", "clickstream-events"),
        "--warehouse", env.get("SESSIONIZE_WAREHOUSE", "/warehouse"),
        "--until-timestamp", until,
        "-w", env.get("SESSIONIZE_WORKERS", "2"),
    ]
    if env.get("SESSIONIZE_CATALOG_URI"):
        args += ["--catalog-uri", env["SESSIONIZE_CATALOG_URI"]]
    return args


def maintain_args() -> list[str]:
    """The command line of `sessionize maintain` on the same tables."""
    env = os.environ
    args = [
        env.get("SESSIONIZE_BIN", "sessionize"),
        "maintain",
        "--warehouse", env.get("SESSIONIZE_WAREHOUSE", "/warehouse"),
        "--json",
    ]
    if env.get("SESSIONIZE_CATALOG_URI"):
        args += ["--catalog-uri", env["SESSIONIZE_CATALOG_URI"]]
    return args


def maintain_tables() -> list:
    """Compacts, expires and removes old orphans; returns what it did per table (the XCom).

    Each run already compacts what it wrote before it ends; this catches what it cannot (tables of
    older releases, runs with --compact-min-files 0) and removes orphan files older than 72 hours.
    A failure loses nothing and is retried: the next run's maintenance does the same work.
    """
    args = maintain_args()
    print("running:", " ".join(args), flush=True)
    done = subprocess.run(args, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise AirflowException(f"sessionize maintain exited with {done.returncode}; retrying")
    return json.loads(done.stdout)


def run_sessionize(until: str) -> dict:
    """Runs sessionize to `until` and returns its summary; maps exit codes to retry or fail."""
    with tempfile.TemporaryDirectory(prefix="sessionize-") as tmp:
        summary_path = os.path.join(tmp, "summary.json")
        args = sessionize_args(until) + ["--summary", summary_path]
        print("running:", " ".join(args), flush=True)
        # Output goes straight to the task log; the child is killed if the task is (a timeout, a
        # manual stop), so that no run outlives its task and meets the next one (exit code 4).
        process = subprocess.Popen(args)
        try:
            code = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        if code == 0:
            with open(summary_path, encoding="utf-8") as summary:
                return json.load(summary)
    if code in NOT_RETRIED:
        raise AirflowFailException(f"sessionize exited with {code}: {NOT_RETRIED[code]}")
    if code < 0:
        raise AirflowException(f"sessionize was killed by signal {-code}; retrying")
    reason = RETRIED.get(code, "unexpected exit code; retrying")
    raise AirflowException(f"sessionize exited with {code}: {reason}")


with DAG(
    dag_id="sessionize_hourly",
    description="Hourly bounded sessionize run: Kafka -> Iceberg sessions, exactly once",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    # A skipped interval loses nothing (the next run reads it), so no catch-up runs after downtime.
    catchup=False,
    # One writer per table: two runs at once would make one of them stop with exit code 4.
    max_active_runs=1,
    default_args={
        "owner": "data-platform",
        "retries": 3,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=20),
        # Longer than a normal hour's run, shorter than the next interval.
        "execution_timeout": timedelta(minutes=50),
    },
    tags=["sessionize", "iceberg"],
) as dag:
    run = PythonOperator(
        task_id="sessionize_run",
        python_callable=run_sessionize,
        # Rendered as RFC 3339, e.g. 2026-03-01T10:00:00+00:00.
        op_kwargs={"until": "{{ data_interval_end | ts }}"},
    )
    # After the run, never beside it in this DAG: its commits would only make the run retry.
    maintain = PythonOperator(task_id="sessionize_maintain", python_callable=maintain_tables)
    run >> maintain
