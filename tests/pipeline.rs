//! Files → timely → Iceberg (real SQL catalog on SQLite, real warehouse directory), checked row for
//! row against a brute-force reference, for one worker, two workers and two processes.

mod common;

use std::net::TcpListener;
use std::process::{Command, Stdio};

use common::{MIN, read_tables, reference, run_files, write_inputs};

const HOUR: u64 = 60 * MIN;
const BASE: u64 = 1_772_323_200_000; // 2026-03-01T00:00:00Z

/// A small deterministic random source, so the workload needs nothing from the crate under test.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn event(user: &str, id: &str, time: u64, page: &str, as_string: bool) -> String {
    let ts = if as_string {
        format!("\"{time}\"")
    } else {
        time.to_string()
    };
    format!(
        r#"{{"event_id":"{id}","page_name":"{page}","event_timestamp":{ts},"booking_details":null,"uuid":"{user}","event_details":{{"event_name":"view","event_type":"page","event_value":1}}}}"#
    )
}

/// Two partitions of events with the hard cases: gaps of exactly 30 min and 30 min + 1 ms, users
/// active for hours without a pause, duplicates, disorder of minutes, events hours late, and
/// malformed lines of many kinds.
fn workload(seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Lcg(seed);
    let pages = [
        "home", "search", "results", "details", "cart", "checkout", "payment",
    ];
    let mut events: Vec<(u64, String)> = Vec::new();
    for user in 0..40 {
        let user_id = format!("user-{user:03}");
        let mut time = BASE + rng.below(HOUR);
        let continuous = user % 7 == 0;
        for n in 0..(20 + rng.below(60)) {
            let gap = match (continuous, rng.below(12)) {
                (true, _) => rng.below(25 * MIN),
                (false, 0) => 30 * MIN,
                (false, 1) => 30 * MIN + 1,
                (false, 2) => 2 * HOUR,
                (false, 3) => 0,
                _ => rng.below(10 * MIN),
            };
            time += gap;
            let page = pages[rng.below(pages.len() as u64) as usize];
            let line = event(&user_id, &format!("{user_id}-{n}"), time, page, n % 2 == 0);
            if rng.below(20) == 0 {
                events.push((time + rng.below(MIN), line.clone())); // a duplicate
            }
            events.push((time, line));
        }
    }
    // Arrival order: event time plus up to 3 minutes of disorder.
    let mut arrivals: Vec<(u64, String)> = events
        .into_iter()
        .map(|(time, line)| (time + rng.below(3 * MIN), line))
        .collect();
    arrivals.sort();
    let malformed = [
        "{not json".to_string(),
        r#"{"event_id":"x1","uuid":"user-001","event_timestamp":"#.to_string(),
        r#"{"event_id":"x2","event_timestamp":1772323200000}"#.to_string(),
        r#"{"event_id":"x3","uuid":"","event_timestamp":1772323200000}"#.to_string(),
        r#"{"event_id":"x4","uuid":"user-002","event_timestamp":"soon"}"#.to_string(),
        r#"{"event_id":"x5","uuid":"user-002","event_timestamp":-5}"#.to_string(),
        r#"{"event_id":"x6","uuid":"user-002","event_timestamp":4102444800000}"#.to_string(),
        r#"{"event_id":"x7","uuid":"user-002","event_timestamp":1772323200000,"event_details":"oops"}"#
            .to_string(),
        "[1,2,3]".to_string(),
    ];
    let mut partitions = vec![Vec::new(), Vec::new()];
    for (i, (arrival, line)) in arrivals.iter().enumerate() {
        let partition = &mut partitions[i % 2];
        partition.extend_from_slice(line.as_bytes());
        partition.push(b'\n');
        if i % 97 == 13 {
            let bad = &malformed[i % malformed.len()];
            partition.extend_from_slice(bad.as_bytes());
            partition.push(b'\n');
        }
        if i % 89 == 5 {
            // Invalid UTF-8, and an event hours behind the stream.
            partition.extend_from_slice(
                b"{\"uuid\":\"user-\xff\",\"event_id\":\"y\",\"event_timestamp\":1}\n",
            );
            let late = event(
                "user-late",
                &format!("late-{i}"),
                arrival - 3 * HOUR,
                "home",
                true,
            );
            partition.extend_from_slice(late.as_bytes());
            partition.extend_from_slice(b"\n\n");
        }
    }
    partitions
}

#[test]
fn sessions_match_the_reference_with_one_and_two_workers() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(7);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = reference(&partitions, 30 * MIN, 2 * HOUR, 10 * MIN);
    assert!(
        expected
            .sessions
            .iter()
            .any(|s| s.end_reason == "max_duration")
    );
    assert!(!expected.late.is_empty() && !expected.quarantined.is_empty());

    for workers in ["1", "2"] {
        let warehouse = dir.path().join(format!("warehouse-w{workers}"));
        let summary = run_files(&warehouse, &inputs, &["-w", workers]);
        let summary: serde_json::Value = serde_json::from_str(summary.trim()).unwrap();
        let actual = read_tables(&warehouse);
        assert_eq!(actual.quarantined, expected.quarantined, "-w {workers}");
        assert_eq!(actual.late, expected.late, "-w {workers}");
        assert_eq!(
            actual.sessions.len(),
            expected.sessions.len(),
            "-w {workers}"
        );
        assert_eq!(actual.sessions, expected.sessions, "-w {workers}");
        assert_eq!(summary["sessions"], expected.sessions.len() as u64);
        assert_eq!(summary["quarantined"], expected.quarantined.len() as u64);
        assert!(actual.epoch_summary.is_some());
    }
}

#[test]
fn tiny_chunks_and_ticks_change_nothing() {
    // Many chunks per partition and a fine watermark tick exercise reordering and stamping.
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(11);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = reference(&partitions, 30 * MIN, 2 * HOUR, 10 * MIN);
    let warehouse = dir.path().join("warehouse");
    run_files(
        &warehouse,
        &inputs,
        &["-w", "2", "--watermark-tick", "1", "--chunk-bytes", "4096"],
    );
    let actual = read_tables(&warehouse);
    assert_eq!(actual.sessions, expected.sessions);
    assert_eq!(actual.late, expected.late);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn two_processes_write_the_same_tables() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(3);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = reference(&partitions, 30 * MIN, 2 * HOUR, 10 * MIN);
    let hostfile = dir.path().join("hosts");
    std::fs::write(
        &hostfile,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .unwrap();
    let warehouse = dir.path().join("warehouse");
    let spawn = |process: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sessionize"));
        command.arg("run");
        for input in &inputs {
            command.arg("--input").arg(input);
        }
        command
            .arg("--warehouse")
            .arg(&warehouse)
            .args([
                "--commit-interval",
                "200ms",
                "-w",
                "1",
                "-n",
                "2",
                "-p",
                process,
                "-h",
            ])
            .arg(&hostfile)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn("0");
    let second = spawn("1");
    for child in [first, second] {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let actual = read_tables(&warehouse);
    assert_eq!(actual.sessions, expected.sessions);
    assert_eq!(actual.quarantined, expected.quarantined);
    assert_eq!(actual.late, expected.late);
}

#[test]
fn a_missing_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sessionize"))
        .args(["run", "--input", "/nonexistent/events.jsonl", "--warehouse"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/events.jsonl"), "{stderr}");
}
