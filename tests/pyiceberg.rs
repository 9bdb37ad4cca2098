//! An independent reader agrees: pyiceberg reads the tables the pipeline committed, and
//! `scripts/check_tables.py` (the rules re-implemented in Python) finds them equal, row for row, to
//! what the generated input implies. `scripts/test.sh` installs pyiceberg before running this.

mod common;

use std::process::Command;

use common::{
    Sessionize, TOPIC, assert_success, assert_tables_equal, default_reference, generated, produce,
    pyiceberg, read_tables, workload, write_inputs,
};
use sessionize::workload::EmbeddedBroker;

#[test]
fn pyiceberg_reads_tables_equal_to_an_independent_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, _) = generated(dir.path(), 400, 80_000, &[1, 2]);
    let warehouse = dir.path().join("warehouse");
    // The generator's hours-late events lag 2 to 6 hours: a horizon of 4 corrects the sessions
    // of some and sends the others to the late events.
    let summary = Sessionize::run(&warehouse)
        .inputs(&inputs)
        .args(["-w", "2", "--correction-horizon", "4"])
        .json();

    let checked = independent_check(
        &warehouse,
        &inputs,
        &["--correction-horizon-ms", "14400000"],
    );
    assert_eq!(checked["ok"], true);
    assert_eq!(checked["sessions"], summary["sessions"]);
    assert_eq!(checked["quarantined"], summary["quarantined"]);
    assert_eq!(checked["late"], summary["late"]);
    assert!(
        summary["late"].as_u64().unwrap() > 0,
        "the workload has hours-late events"
    );
    assert!(summary["quarantined"].as_u64().unwrap() > 0);
}

#[test]
fn pyiceberg_agrees_on_tables_read_from_kafka() {
    let broker = EmbeddedBroker::start(None).unwrap();
    broker.create_topic(TOPIC, 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (inputs, partitions) = generated(dir.path(), 200, 10_000, &[5, 6, 7]);
    produce(broker.bootstrap_servers(), &partitions, None);
    let warehouse = dir.path().join("warehouse");
    let summary = Sessionize::run(&warehouse)
        .kafka(broker.bootstrap_servers(), TOPIC)
        .args(["--test-mode", "-w", "2"])
        .json();

    let checked = independent_check(&warehouse, &inputs, &["--kafka-records"]);
    assert_eq!(checked["ok"], true);
    assert_eq!(checked["sessions"], summary["sessions"]);
    assert!(summary["quarantined"].as_u64().unwrap() > 0);
}

/// Runs `scripts/check_tables.py` (the rules in Python, reading with pyiceberg) on the warehouse
/// and its inputs; returns its JSON summary, failing the test with its report if it disagrees.
fn independent_check(
    warehouse: &std::path::Path,
    inputs: &[std::path::PathBuf],
    extra: &[&str],
) -> serde_json::Value {
    let mut check = Command::new("python3");
    check
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/check_tables.py"
        ))
        .args(extra)
        .arg("--warehouse")
        .arg(warehouse);
    for input in inputs {
        check.arg("--input").arg(input);
    }
    let output = check
        .output()
        .expect("python3 runs (scripts/test.sh installs pyiceberg)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_success(&output, &format!("the independent check:\n{stdout}"));
    serde_json::from_str(stdout.trim()).unwrap()
}

/// The sessions table as a release before `end_reason` created it, with a column an analyst
/// added and `event_count` of the given Iceberg type; with a `LongType` count, also a commit of
/// that release (one row, and its mark in the snapshot summary).
fn older_release_table(warehouse: &std::path::Path, event_count_type: &str) {
    std::fs::create_dir_all(warehouse).unwrap();
    pyiceberg(
        warehouse,
        &format!(
            "import pyarrow as pa\n\
             from pyiceberg.schema import Schema\n\
             from pyiceberg.types import *\n\
             from pyiceberg.partitioning import PartitionSpec, PartitionField\n\
             from pyiceberg.transforms import DayTransform, BucketTransform\n\
             catalog.create_namespace('sessions')\n\
             schema = Schema(\n\
             \x20   NestedField(1, 'user_id', StringType(), required=True),\n\
             \x20   NestedField(2, 'session_id', StringType(), required=True),\n\
             \x20   NestedField(3, 'session_start', TimestamptzType(), required=True),\n\
             \x20   NestedField(4, 'session_start_time_ms', LongType(), required=True),\n\
             \x20   NestedField(5, 'session_end_time_ms', LongType(), required=True),\n\
             \x20   NestedField(6, 'session_duration_seconds', LongType(), required=True),\n\
             \x20   NestedField(7, 'event_count', {event_count_type}(), required=True),\n\
             \x20   NestedField(8, 'pages_visited', ListType(10, StringType(), element_required=False), required=True),\n\
             \x20   NestedField(11, 'analyst_note', StringType(), required=False))\n\
             spec = PartitionSpec(\n\
             \x20   PartitionField(3, 1000, DayTransform(), 'session_start_day'),\n\
             \x20   PartitionField(1, 1001, BucketTransform(16), 'user_id_bucket'))\n\
             table = catalog.create_table('sessions.user_sessions', schema, partition_spec=spec)\n\
             if '{event_count_type}' == 'LongType':\n\
             \x20   import datetime\n\
             \x20   row = dict(user_id='old-user', session_id='old-session',\n\
             \x20       session_start=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),\n\
             \x20       session_start_time_ms=1767225600000, session_end_time_ms=1767225660000,\n\
             \x20       session_duration_seconds=60, event_count=2, pages_visited=['home'],\n\
             \x20       analyst_note='kept')\n\
             \x20   table.append(pa.Table.from_pylist([row], schema=table.schema().as_arrow()),\n\
             \x20       snapshot_properties={{'sessionize.epoch': '1', 'sessionize.run-id': 'older'}})\n"
        ),
    );
}

#[test]
fn a_table_of_an_older_release_is_evolved_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, _) = generated(dir.path(), 50, 5_000, &[42]);
    let warehouse = dir.path().join("warehouse");
    older_release_table(&warehouse, "LongType");
    let summary = Sessionize::run(&warehouse).inputs(&inputs).json();

    let read = pyiceberg(
        &warehouse,
        "import json\n\
         table = catalog.load_table('sessions.user_sessions')\n\
         rows = table.scan().to_arrow().to_pylist()\n\
         old = [r for r in rows if r['user_id'] == 'old-user']\n\
         new = [r for r in rows if r['user_id'] != 'old-user']\n\
         print(json.dumps(dict(\n\
         \x20   columns=[f.name for f in table.schema().fields],\n\
         \x20   old=old,\n\
         \x20   new=len(new),\n\
         \x20   new_with_reason=sum(r['end_reason'] is not None for r in new),\n\
         \x20   new_with_spark_columns=sum(r['session_date'] is not None and r['user_hash_bucket'] is not None for r in new),\n\
         \x20   new_with_note=sum(r['analyst_note'] is not None for r in new)), default=str))\n",
    );
    let read: serde_json::Value = serde_json::from_str(read.trim()).unwrap();
    let columns = read["columns"].as_array().unwrap();
    assert!(columns.contains(&"end_reason".into()), "{read}");
    assert!(columns.contains(&"analyst_note".into()), "{read}");
    assert_eq!(read["old"][0]["analyst_note"], "kept");
    assert_eq!(read["old"][0]["end_reason"], serde_json::Value::Null);
    // The Spark job's columns are added too: null for rows written before, set for new ones.
    for column in ["session_date", "user_hash_bucket"] {
        assert!(columns.contains(&column.into()), "{read}");
        assert_eq!(read["old"][0][column], serde_json::Value::Null);
    }
    assert_eq!(read["new_with_spark_columns"], summary["sessions"]);
    assert_eq!(read["new"], summary["sessions"]);
    assert_eq!(read["new_with_reason"], summary["sessions"]);
    assert_eq!(read["new_with_note"], 0);
}

#[test]
fn a_table_whose_column_conflicts_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    older_release_table(&warehouse, "StringType");
    let input = dir.path().join("events.jsonl");
    std::fs::write(
        &input,
        r#"{"uuid":"u","event_id":"e","event_timestamp":1772323200000}"#,
    )
    .unwrap();
    let output = Sessionize::run(&warehouse).inputs([&input]).output();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`event_count`"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// Python that rolls table `name` back to the parent of its oldest sessionize commit after
/// `epoch` in the current lineage, and prints whether there was any.
fn roll_back_after(name: &str, epoch: &str) -> String {
    format!(
        "table = catalog.load_table('sessions.{name}')\n\
         snapshot, target, ahead = table.current_snapshot(), None, False\n\
         while snapshot is not None:\n\
         \x20   epoch = snapshot.summary.get('sessionize.epoch')\n\
         \x20   if epoch is not None and int(epoch) <= {epoch}:\n\
         \x20       break\n\
         \x20   if epoch is not None:\n\
         \x20       ahead, target = True, snapshot.parent_snapshot_id\n\
         \x20   snapshot = table.snapshot_by_id(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id else None\n\
         if ahead:\n\
         \x20   table.manage_snapshots().rollback_to_snapshot(target).commit()\n\
         print('{name}', ahead)\n"
    )
}

#[test]
fn a_table_rolled_back_reads_again_what_the_rollback_removed() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(97, 2);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);
    let warehouse = dir.path().join("warehouse");
    let run = || {
        Sessionize::run(&warehouse)
            .inputs(&inputs)
            .small_epochs()
            .args(["-w", "2"])
    };
    run().kill_at("after-cleanup:3");
    // Iceberg's rollback_to_snapshot of the sessions table, two of our commits back: its
    // properties still name the newest commit.
    let epoch = pyiceberg(
        &warehouse,
        "table = catalog.load_table('sessions.user_sessions')\n\
         ours, snapshot = [], table.current_snapshot()\n\
         while snapshot is not None:\n\
         \x20   if snapshot.summary.get('sessionize.epoch') is not None:\n\
         \x20       ours.append(snapshot)\n\
         \x20   snapshot = table.snapshot_by_id(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id else None\n\
         table.manage_snapshots().rollback_to_snapshot(ours[2].snapshot_id).commit()\n\
         print(ours[2].summary['sessionize.epoch'])\n",
    );
    let epoch = epoch.trim();
    assert!(
        read_tables(&warehouse).sessions.len() < expected.sessions.len(),
        "the rollback removed no rows"
    );

    // The side tables still hold rows of the commits rolled back: the restart would write them
    // again, so it stops and says which snapshot to roll them back to.
    let refused = run().output();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    let line = stderr.lines().last().unwrap_or_default();
    assert!(
        line.contains("was rolled back") && line.contains("roll") && line.contains("snapshot"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let side = pyiceberg(
        &warehouse,
        &(roll_back_after("user_sessions_quarantine", epoch)
            + &roll_back_after("user_sessions_late_events", epoch)),
    );
    assert!(side.contains("True"), "no side table was ahead: {side}");

    run().success();
    assert_tables_equal(
        &read_tables(&warehouse),
        &expected,
        "a restart after the rollback",
    );
}
