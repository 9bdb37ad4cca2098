//! An independent reader agrees: pyiceberg reads the tables the pipeline committed, and
//! `scripts/check_tables.py` (the rules re-implemented in Python) finds them equal, row for row, to
//! what the generated input implies. `scripts/test.sh` installs pyiceberg before running this.

mod common;

use std::process::Command;

use common::{TOPIC, produce, run_files, sessionize};
use sessionize::broker::EmbeddedBroker;

#[test]
fn pyiceberg_reads_tables_equal_to_an_independent_reference() {
    let dir = tempfile::tempdir().unwrap();
    let mut inputs = Vec::new();
    for (partition, seed) in [(0, "1"), (1, "2")] {
        let path = dir.path().join(format!("events-{partition}.jsonl"));
        sessionize(&[
            "generate",
            "--users",
            "400",
            "--events",
            "80000",
            "--seed",
            seed,
            "--out",
            path.to_str().unwrap(),
        ]);
        inputs.push(path);
    }
    let warehouse = dir.path().join("warehouse");
    let run = run_files(&warehouse, &inputs, &["-w", "2"]);
    let summary: serde_json::Value = serde_json::from_str(run.trim()).unwrap();

    let checked = independent_check(&warehouse, &inputs, &[]);
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
    let mut inputs = Vec::new();
    let mut partitions = Vec::new();
    for seed in ["5", "6", "7"] {
        let path = dir.path().join(format!("partition-{seed}.jsonl"));
        sessionize(&[
            "generate",
            "--users",
            "200",
            "--events",
            "10000",
            "--seed",
            seed,
            "--out",
            path.to_str().unwrap(),
        ]);
        partitions.push(std::fs::read(&path).unwrap());
        inputs.push(path);
    }
    produce(broker.bootstrap_servers(), &partitions, None);
    let warehouse = dir.path().join("warehouse");
    let run = sessionize(&[
        "run",
        "--kafka-servers",
        broker.bootstrap_servers(),
        "--kafka-topic",
        TOPIC,
        "--warehouse",
        warehouse.to_str().unwrap(),
        "--commit-interval",
        "100ms",
        "--test-mode",
        "-w",
        "2",
    ]);
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&run.stdout).trim()).unwrap();

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
    assert!(
        output.status.success(),
        "the independent check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}
