//! Files → timely → Iceberg (real SQL catalog on SQLite, real warehouse directory), checked row for
//! row against a brute-force reference, for one worker, two workers and two processes.

mod common;

use std::collections::BTreeMap;

use common::{
    Boundaries, HOUR, MIN, OpenRow, Sessionize, assert_success, assert_tables_equal,
    default_reference, open_sessions_at, read_open_sessions, read_tables, reference,
    reference_with, spawn_cluster, workload, write_inputs,
};
use sessionize::sink::catalog::CatalogSettings;
use sessionize::sink::tables::user_bucket;

#[test]
fn sessions_match_the_reference_with_one_and_two_workers() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(7, 2);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);
    assert!(
        expected
            .sessions
            .iter()
            .any(|s| s.end_reason == "max_duration")
    );
    assert!(!expected.late.is_empty() && !expected.quarantined.is_empty());

    for workers in ["1", "2"] {
        let warehouse = dir.path().join(format!("warehouse-w{workers}"));
        let summary = Sessionize::run(&warehouse)
            .inputs(&inputs)
            .args(["-w", workers])
            .json();
        let actual = read_tables(&warehouse);
        assert_tables_equal(&actual, &expected, &format!("-w {workers}"));
        assert_eq!(summary["sessions"], expected.sessions.len() as u64);
        assert_eq!(summary["quarantined"], expected.quarantined.len() as u64);
        assert!(actual.epoch_summary.is_some());
    }
}

#[test]
fn tiny_chunks_and_ticks_change_nothing() {
    // Many chunks per partition and a fine watermark tick exercise reordering and stamping.
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(11, 2);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);
    let warehouse = dir.path().join("warehouse");
    Sessionize::run(&warehouse)
        .inputs(&inputs)
        .args(["-w", "2", "--watermark-tick", "1", "--chunk-bytes", "4096"])
        .success();
    let actual = read_tables(&warehouse);
    assert_eq!(actual.sessions, expected.sessions);
    assert_eq!(actual.late, expected.late);
}

#[test]
fn two_processes_write_the_same_tables() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(3, 2);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);
    let warehouse = dir.path().join("warehouse");
    let cluster = spawn_cluster(dir.path(), 2, |_| {
        Sessionize::run(&warehouse)
            .inputs(&inputs)
            .args(["-w", "1"])
    });
    for child in cluster {
        assert_success(
            &child.wait_with_output().unwrap(),
            "a process of the cluster",
        );
    }
    assert_tables_equal(&read_tables(&warehouse), &expected, "two processes");
}

#[test]
fn a_missing_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = Sessionize::run(dir.path())
        .inputs(["/nonexistent/events.jsonl"])
        .output();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/events.jsonl"), "{stderr}");
}

/// The workload with business events in it: `payment` pages become `logout`, and `cart` pages
/// are also the start of a checkout (`event_details.event_name`). Other lines stay as they are.
fn with_business_events(partition: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in partition.split_inclusive(|b| *b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let mut value: serde_json::Value = match serde_json::from_slice(body) {
            Ok(value @ serde_json::Value::Object(_)) => value,
            _ => {
                out.extend_from_slice(line);
                continue;
            }
        };
        match value["page_name"].as_str() {
            Some("payment") => value["page_name"] = "logout".into(),
            Some("cart") if value["event_details"].is_object() => {
                value["event_details"]["event_name"] = "checkout_start".into()
            }
            _ => {}
        }
        out.extend_from_slice(value.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

#[test]
fn business_boundaries_cut_sessions_as_the_reference_does() {
    let dir = tempfile::tempdir().unwrap();
    let partitions: Vec<Vec<u8>> = workload(5, 2)
        .iter()
        .map(|p| with_business_events(p))
        .collect();
    let inputs = write_inputs(dir.path(), &partitions);
    let boundaries = Boundaries {
        end_on: vec![("page_name", "logout")],
        start_on: vec![("event_details.event_name", "checkout_start")],
    };
    let expected = reference_with(&partitions, 30 * MIN, 2 * HOUR, 10 * MIN, &boundaries);
    assert!(
        expected
            .sessions
            .iter()
            .filter(|s| s.end_reason == "boundary")
            .count()
            > 20
    );
    let flags = [
        "--end-session-on",
        "page_name=logout",
        "--start-session-on",
        "event_details.event_name=checkout_start",
    ];
    let warehouse = dir.path().join("warehouse");
    Sessionize::run(&warehouse)
        .inputs(&inputs)
        .args(["-w", "2"])
        .args(flags)
        .success();
    let actual = read_tables(&warehouse);
    assert_eq!(actual.sessions, expected.sessions);
    assert_eq!(actual.late, expected.late);
    assert!(
        actual.summary["sessionize.rules"].contains("page_name=logout"),
        "{:?}",
        actual.summary
    );

    // The same table under other rules is refused, unless the change is intended.
    let refused = Sessionize::run(&warehouse).inputs(&inputs[..1]).output();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--allow-rule-change"), "{stderr}");
    assert!(stderr.contains("page_name=logout"), "{stderr}");
    let inputs_again: Vec<_> = inputs.iter().rev().cloned().collect();
    Sessionize::run(&warehouse)
        .inputs(&inputs_again)
        .arg("--allow-rule-change")
        .success();
    Sessionize::run(&warehouse).inputs(&inputs_again).success();
    assert_eq!(read_tables(&warehouse).sessions, expected.sessions);
}

/// A run set up by a `--config` file and the environment, as a deployment sets it up, reads what
/// they say: the file names the inputs and the rules, the environment the warehouse and the
/// workers, and the command line overrides the file's inactivity timeout.
#[test]
fn flags_come_from_a_config_file_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(17, 2);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = reference(&partitions, 20 * MIN, 2 * HOUR, 10 * MIN);
    // The file's timeout would give other sessions.
    let under_file = reference(&partitions, 45 * MIN, 2 * HOUR, 10 * MIN);
    assert_ne!(under_file.sessions, expected.sessions);
    let warehouse = dir.path().join("warehouse");
    let quoted: Vec<String> = inputs
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    let config = dir.path().join("sessionize.toml");
    std::fs::write(
        &config,
        format!(
            "input = [{}]\ninactivity-timeout = \"45m\"\nmax-session-duration = 2\nbuckets = 4\n",
            quoted.join(", ")
        ),
    )
    .unwrap();
    Sessionize::new("run")
        .args(["--inactivity-timeout", "20m"])
        .env("SESSIONIZE_CONFIG", &config)
        .env("SESSIONIZE_WAREHOUSE", &warehouse)
        .env("SESSIONIZE_THREADS", "2")
        .success();
    let actual = read_tables(&warehouse);
    assert_eq!(actual.sessions, expected.sessions);
    assert_eq!(actual.quarantined, expected.quarantined);
    // Two workers wrote the checkpoint.
    let by_name = warehouse.join("_sessionize/sessions.user_sessions");
    let table_uuid = std::fs::read_dir(&by_name)
        .unwrap()
        .flatten()
        .next()
        .unwrap();
    let newest = std::fs::read_dir(table_uuid.path().join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .max()
        .unwrap();
    let mut parts: Vec<String> = std::fs::read_dir(newest)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("part-"))
        .collect();
    parts.sort();
    assert_eq!(parts, ["part-w0.v4.zst", "part-w1.v4.zst"]);
}

/// Everything a run writes under a local warehouse (Parquet files, metadata, the SQLite catalog,
/// checkpoints) is readable by its owner only: the tables hold user ids and raw events.
#[test]
fn a_runs_files_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let inputs = write_inputs(dir.path(), &workload(5, 1));
    let warehouse = dir.path().join("warehouse");
    Sessionize::run(&warehouse).inputs(&inputs).success();
    let mut pending = vec![warehouse];
    let mut seen = 0;
    while let Some(path) = pending.pop() {
        let metadata = std::fs::metadata(&path).unwrap();
        let mode = metadata.permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
        seen += 1;
        if metadata.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(seen > 10, "the run wrote its tables ({seen} entries)");
}

/// Two tables of one name in two catalogs, checkpointed to one location: each pipeline's cleanup
/// removes its own checkpoints only, so either restarts from where its table stands.
#[test]
fn tables_sharing_a_checkpoint_location_keep_their_checkpoints_apart() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("checkpoints");
    let run = |name: &str, partitions: &[Vec<u8>]| {
        let inputs = write_inputs(&dir.path().join(name), partitions);
        Sessionize::run(dir.path().join(name).join("warehouse"))
            .inputs(inputs)
            .small_epochs()
            .arg("--checkpoint-location")
            .arg(&shared)
            .args(["--keep-checkpoints", "1"])
    };
    let (first, second) = (workload(11, 2), workload(12, 1));
    for name in ["first", "second"] {
        std::fs::create_dir_all(dir.path().join(name)).unwrap();
    }
    run("first", &first).kill_at("after-cleanup:2");
    // Many epochs of the other table later, each followed by its cleanup.
    run("second", &second).success();
    run("first", &first).success();
    for (name, partitions) in [("first", &first), ("second", &second)] {
        let warehouse = dir.path().join(name).join("warehouse");
        assert_tables_equal(
            &read_tables(&warehouse),
            &default_reference(partitions),
            name,
        );
    }
}

/// The open-sessions table, killed mid-run: each worker's rows are the sessions the reference has
/// open at the watermark they were taken at, every such session of the worker's users is there,
/// and the restart (with another number of workers) replaces them all, leaving the table empty
/// once the input has ended, with its old snapshots expired.
#[test]
fn the_open_sessions_table_holds_the_sessions_open_at_its_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(23, 2);
    let inputs = write_inputs(dir.path(), &partitions);
    for (workers, restart) in [(1, "3"), (2, "1")] {
        let warehouse = dir.path().join(format!("warehouse-w{workers}"));
        let run = |workers: &str| {
            Sessionize::run(&warehouse)
                .inputs(&inputs)
                .small_epochs()
                .args(["-w", workers])
        };
        run(&workers.to_string()).kill_at("after-open-sessions-commit:2");
        let open = read_open_sessions(&CatalogSettings::default(), &warehouse);
        assert!(!open.rows.is_empty(), "-w {workers}: no open sessions");
        let worker_of = |user: &str| user_bucket(user, 16) as usize % workers;
        let mut by_worker: BTreeMap<(usize, i64), Vec<OpenRow>> = BTreeMap::new();
        for (watermark, row) in open.rows {
            let worker = worker_of(&row.user_id);
            by_worker.entry((worker, watermark)).or_default().push(row);
        }
        // Each worker's rows were taken at one watermark.
        assert!(by_worker.len() <= workers, "{:?}", by_worker.keys());
        for ((worker, watermark), rows) in by_worker {
            let expected: Vec<OpenRow> = open_sessions_at(&partitions, watermark as u64)
                .into_iter()
                .filter(|row| worker_of(&row.user_id) == worker)
                .collect();
            assert_eq!(
                rows, expected,
                "-w {workers}, worker {worker} at {watermark}"
            );
        }
        run(restart).success();
        assert_tables_equal(
            &read_tables(&warehouse),
            &default_reference(&partitions),
            &format!("-w {workers}, then -w {restart}"),
        );
        let open = read_open_sessions(&CatalogSettings::default(), &warehouse);
        assert!(open.rows.is_empty(), "{:?}", &open.rows[..1]);
        assert!(open.snapshots <= 4, "{} snapshots kept", open.snapshots);
    }
}

/// A file whose last line is still being written: the fragment is left unread, and read whole
/// once the line is finished; a fragment that a later run finds unchanged is quarantined, once.
#[test]
fn a_last_line_cut_midway_is_read_when_it_is_finished() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = (0..20)
        .map(|i| {
            let time = 1_772_323_200_000 + i * 3 * HOUR;
            common::event("user-1", &format!("e{i}"), time, "home", i % 2 == 0)
        })
        .collect();
    // A last line complete but for its newline is read at once.
    let complete_last = common::event("user-2", "f0", 1_772_323_200_000 + 60 * HOUR, "home", true);
    lines.push(complete_last.clone());
    let text = |lines: &[String]| lines.join("\n");
    let whole = text(&lines);
    let cut = whole.len() - complete_last.len() - 40;
    let input = dir.path().join("events.jsonl");
    let warehouse = dir.path().join("warehouse");
    let run = || Sessionize::run(&warehouse).inputs([&input]).success();
    let events = |warehouse: &std::path::Path| {
        let read = read_tables(warehouse);
        let count: i64 = read.sessions.iter().map(|s| s.event_count).sum();
        (count, read.quarantined)
    };

    std::fs::write(&input, &whole[..cut]).unwrap();
    run();
    assert_eq!(events(&warehouse), (19, vec![]), "before the line ends");
    // Run again while the writer is still at it: nothing quarantined, nothing read twice.
    std::fs::write(&input, &whole[..cut + 10]).unwrap();
    run();
    assert_eq!(
        events(&warehouse),
        (19, vec![]),
        "while the line is written"
    );
    std::fs::write(&input, &whole).unwrap();
    run();
    assert_eq!(
        events(&warehouse),
        (21, vec![]),
        "once the line is finished"
    );
    // Sessions three hours apart do not depend on where the runs stopped (but for the end reason
    // of the one a run's end closed).
    let spans = |sessions: Vec<common::SessionRow>| -> Vec<(String, String, i64, i64)> {
        let spans = sessions.into_iter();
        spans
            .map(|s| (s.user_id, s.session_id, s.start_ms, s.event_count))
            .collect()
    };
    assert_eq!(
        spans(read_tables(&warehouse).sessions),
        spans(default_reference(&[whole.clone().into_bytes()]).sessions)
    );

    // A writer that died mid-line: the second run finds the fragment unchanged.
    let dead = dir.path().join("dead.jsonl");
    std::fs::write(&dead, &whole[..cut]).unwrap();
    let warehouse = dir.path().join("dead-warehouse");
    for _ in 0..3 {
        Sessionize::run(&warehouse).inputs([&dead]).success();
    }
    assert_eq!(events(&warehouse), (19, vec![(0, 20)]), "quarantined once");
}

/// A relative --checkpoint-location is under the working directory; one that cannot be created
/// stops the start with one line, before anything is read.
#[test]
fn the_checkpoint_location_is_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = write_inputs(dir.path(), &workload(3, 1));
    let relative = Sessionize::run("warehouse")
        .inputs(&inputs)
        .args(["--checkpoint-location", "state/checkpoints"])
        .command()
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_success(&relative, "a relative checkpoint location");
    assert!(
        dir.path()
            .join("state/checkpoints/sessions.user_sessions")
            .is_dir()
    );

    let not_a_directory = inputs[0].join("checkpoints");
    let output = Sessionize::run(dir.path().join("other"))
        .inputs(&inputs)
        .arg("--checkpoint-location")
        .arg(&not_a_directory)
        .output();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let line = stderr.lines().last().unwrap_or_default();
    assert!(line.contains("--checkpoint-location"), "{stderr}");
    assert!(!stderr.contains("committed"), "{stderr}");
}

#[test]
fn an_epoch_ends_when_its_buffered_output_reaches_a_limit() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(23, 2);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);
    let rows = (expected.sessions.len() + expected.late.len() + expected.quarantined.len()) as u64;
    let run = |name: &str, limits: &[&str]| {
        let warehouse = dir.path().join(name);
        // An interval longer than the run and no record limit: only the output ends an epoch.
        // A small read-ahead lets output flow while the input is still being stamped.
        let summary = Sessionize::run(&warehouse)
            .inputs(&inputs)
            .commit_interval("1h")
            .args(["--max-epoch-records", "0", "--idle-commit-interval", "0"])
            .args(["--chunk-bytes", "4096", "--read-ahead-bytes", "8192"])
            .args(limits)
            .json();
        assert_tables_equal(&read_tables(&warehouse), &expected, name);
        summary["epochs"].as_u64().unwrap()
    };
    assert_eq!(
        run(
            "unlimited",
            &["--commit-max-bytes", "0", "--commit-max-rows", "0"]
        ),
        1
    );
    let max_rows = 20;
    let by_rows = run("by-rows", &["--commit-max-rows", &max_rows.to_string()]);
    assert!(
        by_rows > 2 && by_rows >= rows / (4 * max_rows),
        "{by_rows} epochs for {rows} rows at most {max_rows} each"
    );
    let by_bytes = run("by-bytes", &["--commit-max-bytes", "8000"]);
    println!("{rows} rows: {by_rows} epochs of at most {max_rows} rows, {by_bytes} of 8000 bytes");
    assert!(by_bytes > 2, "{by_bytes} epochs");
}
