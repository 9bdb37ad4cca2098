//! Failure paths, from files into a real SQL catalog on SQLite: kills at every step of the commit
//! protocol and at random instants, clusters that restart with other shapes, concurrent
//! pipelines on one table, other writers of the table, and hostile input. After each, the tables
//! must equal the brute-force reference row for row.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{
    BASE, HOUR, Lcg, MIN, Sessionize, assert_success, assert_tables_equal, default_reference,
    event, hostfile, losers_of_concurrent_runs, pyiceberg, read_tables, spawn_cluster, workload,
    write_inputs,
};

/// The run of these tests: in small epochs, so that there are many to be killed in.
fn run(warehouse: &Path, inputs: &[PathBuf]) -> Sessionize {
    Sessionize::run(warehouse).inputs(inputs).small_epochs()
}

#[test]
fn a_kill_at_every_step_of_the_commit_protocol_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(31, 3);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);
    for point in [
        "after-checkpoint-parts",
        "after-side-files",
        "after-sessions-commit",
        "between-side-commits",
        "after-cleanup",
    ] {
        for pass in ["1", "3"] {
            let warehouse = dir.path().join(format!("warehouse-{point}-{pass}"));
            let what = format!("{point}:{pass}");
            run(&warehouse, &inputs).args(["-w", "2"]).kill_at(&what);
            run(&warehouse, &inputs).args(["-w", "3"]).success();
            assert_tables_equal(&read_tables(&warehouse), &expected, &what);
        }
    }
}

/// Corrections rewrite files before the commit point: a kill after the rewrite (the files are
/// written, the catalog does not name them) or after the commit loses and doubles nothing. One
/// partition, so that the late events within the horizon always find their sessions committed
/// (with several, the slowest partition can hold the watermark back so far that they are simply
/// on time for it).
#[test]
fn a_kill_while_corrections_replace_rows_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(31, 1);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);
    for point in ["after-correction-files:1", "after-correction-files:2"] {
        let warehouse = dir.path().join(format!("warehouse-{point}"));
        run(&warehouse, &inputs).args(["-w", "2"]).kill_at(point);
        run(&warehouse, &inputs).args(["-w", "3"]).success();
        assert_tables_equal(&read_tables(&warehouse), &expected, point);
    }
}

/// At the end of the input the sessions close a slice at a time, and the last checkpoint waits
/// for the last slice: a kill between slices loses and doubles nothing, and a run after the
/// last commit finds no session left open to close again.
#[test]
fn a_kill_while_the_end_of_input_closes_sessions_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Every session still open at the end, more of them per worker than a slice closes (16,384).
    let users = 40_000;
    let lines: String = (0..users)
        .map(|u| {
            let (user, id) = (format!("user-{u}"), format!("event-{u}"));
            event(&user, &id, BASE + u * 7, "home", false) + "\n"
        })
        .collect();
    let partitions = vec![lines.into_bytes()];
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);
    assert_eq!(expected.sessions.len() as u64, users);
    let warehouse = dir.path().join("warehouse");
    let run = || {
        Sessionize::run(&warehouse)
            .inputs(&inputs)
            .args(["-w", "2"])
    };
    run().kill_at("between-end-slices:2");
    run().success();
    assert_tables_equal(&read_tables(&warehouse), &expected, "killed between slices");
    run().success();
    assert_tables_equal(
        &read_tables(&warehouse),
        &expected,
        "run again after the end",
    );
}

/// Starts `processes` processes of one cluster with `threads` workers each.
fn start_cluster(
    warehouse: &Path,
    inputs: &[PathBuf],
    threads: &str,
    processes: usize,
    dir: &Path,
) -> Vec<Child> {
    spawn_cluster(dir, processes, |_| {
        run(warehouse, inputs).args(["-w", threads])
    })
}

#[test]
fn sigkills_at_random_instants_with_other_cluster_shapes_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(41, 4);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);
    let warehouse = dir.path().join("warehouse");
    let shapes = [("2", 2), ("1", 1), ("1", 2), ("3", 1), ("2", 1)];
    let mut rng = Lcg(7);
    let mut killed = 0;
    for round in 0..20 {
        let (threads, processes) = shapes[round % shapes.len()];
        let mut cluster = start_cluster(&warehouse, &inputs, threads, processes, dir.path());
        std::thread::sleep(Duration::from_millis(100 + rng.below(900)));
        let mut all_done = true;
        for child in &mut cluster {
            if child.try_wait().unwrap().is_none() {
                all_done = false;
                let _ = child.kill();
            }
        }
        for mut child in cluster {
            let _ = child.wait();
        }
        if all_done {
            break;
        }
        killed += 1;
    }
    assert!(
        killed > 0,
        "no run was ever killed: the workload is too small"
    );
    // A last run with a shape of its own finishes what is left.
    for child in start_cluster(&warehouse, &inputs, "2", 2, dir.path()) {
        assert_success(&child.wait_with_output().unwrap(), "the final run");
    }
    let what = format!("after {killed} kills");
    assert_tables_equal(&read_tables(&warehouse), &expected, &what);
}

#[test]
fn a_two_process_run_restarts_with_the_same_or_another_shape() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(43, 4);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);
    for (threads, processes) in [("1", 2), ("3", 1)] {
        let warehouse = dir.path().join(format!("warehouse-{threads}-{processes}"));
        // Process 0 dies after its second commit; process 1 loses its peer and stops too.
        let outputs: Vec<Output> = spawn_cluster(dir.path(), 2, |process| {
            let command = run(&warehouse, &inputs).args(["-w", "2"]);
            match process {
                0 => command.env("SESSIONIZE_FAIL_AT", "after-cleanup:2"),
                _ => command,
            }
        })
        .into_iter()
        .map(|child| child.wait_with_output().unwrap())
        .collect();
        assert!(!outputs[0].status.success());
        assert_eq!(
            outputs[1].status.code(),
            Some(5),
            "the surviving process ends with the peer-lost code: {}",
            String::from_utf8_lossy(&outputs[1].stderr)
        );
        let stderr = String::from_utf8_lossy(&outputs[1].stderr);
        assert!(stderr.contains("restart every process"), "{stderr}");
        assert!(!stderr.contains("stack backtrace"), "{stderr}");

        for child in start_cluster(&warehouse, &inputs, threads, processes, dir.path()) {
            assert_success(&child.wait_with_output().unwrap(), "the restart");
        }
        let what = format!("restart -w {threads} -n {processes}");
        assert_tables_equal(&read_tables(&warehouse), &expected, &what);
    }
}

#[test]
fn concurrent_pipelines_on_one_table_never_double_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(47, 2);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);
    let mut conflicts = 0;
    for attempt in 0..6 {
        let warehouse = dir.path().join(format!("warehouse-{attempt}"));
        std::fs::create_dir_all(&warehouse).unwrap();
        let children: Vec<Child> = (0..2)
            .map(|_| run(&warehouse, &inputs).args(["-w", "2"]).spawn())
            .collect();
        conflicts += losers_of_concurrent_runs(children);
        // Whatever happened, a restart finishes, and no row is doubled.
        run(&warehouse, &inputs).success();
        let what = format!("attempt {attempt}");
        assert_tables_equal(&read_tables(&warehouse), &expected, &what);
    }
    assert!(conflicts > 0, "the two pipelines never overlapped");
}

#[test]
fn other_writers_rewrite_and_delete_and_the_pipeline_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(53, 2);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);
    let warehouse = dir.path().join("warehouse");
    run(&warehouse, &inputs)
        .args(["-w", "2"])
        .kill_at("after-cleanup:3");
    let gone = "user-007";
    let deleted: Vec<_> = read_tables(&warehouse)
        .sessions
        .into_iter()
        .filter(|s| s.user_id == gone)
        .collect();
    // A compaction-like rewrite of every table, a GDPR delete of one user's sessions, then
    // every snapshot but the current one expired: not one snapshot of sessionize's is left.
    pyiceberg(
        &warehouse,
        &format!(
            "for name in ['user_sessions', 'user_sessions_quarantine', 'user_sessions_late_events']:\n\
             \x20   table = catalog.load_table('sessions.' + name)\n\
             \x20   if table.current_snapshot() is not None:\n\
             \x20       table.overwrite(table.scan().to_arrow())\n\
             catalog.load_table('sessions.user_sessions').delete(\"user_id == '{gone}'\")\n\
             for name in ['user_sessions', 'user_sessions_quarantine', 'user_sessions_late_events']:\n\
             \x20   table = catalog.load_table('sessions.' + name)\n\
             \x20   if table.current_snapshot() is not None:\n\
             \x20       current = table.current_snapshot().snapshot_id\n\
             \x20       old = [s.snapshot_id for s in table.snapshots() if s.snapshot_id != current]\n\
             \x20       if old:\n\
             \x20           table.maintenance.expire_snapshots().by_ids(old).commit()\n"
        ),
    );
    run(&warehouse, &inputs).args(["-w", "2"]).success();
    let mut wanted = expected;
    wanted.sessions.retain(|s| !deleted.contains(s));
    assert_tables_equal(
        &read_tables(&warehouse),
        &wanted,
        "the restart on top of other writers' snapshots",
    );
}

#[test]
fn hostile_input_is_accounted_for_line_by_line_and_never_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let ok = |user: &str, id: &str, minute: u64| {
        event(user, id, common::BASE + minute * MIN, "home", true)
    };
    let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    let mut lines: Vec<Vec<u8>> = vec![
        format!("\u{feff}{}", ok("u1", "bom", 0)).into_bytes(),
        ok("u1", "a", 1).into_bytes(),
        format!(r#"{{"event_id":"x","uuid":"u","event_timestamp":"1772323200000","event_details":{{}},"x":{deep}}}"#).into_bytes(),
        format!(r#"{{"event_id":"y","uuid":"u","event_timestamp":1,"booking_details":{deep}}}"#).into_bytes(),
        format!(r#"{{"event_id":"{}","uuid":"u2","event_timestamp":1}}"#, "z".repeat(5 << 20)).into_bytes(),
        b"\0\0\0{\"uuid\":\"u\0\"}".to_vec(),
        b"{\"uuid\":\"u\xff\xfe\",\"event_id\":\"e\",\"event_timestamp\":5}".to_vec(),
        br#"{"uuid":"\ud800","event_id":"lone","event_timestamp":1772323260000}"#.to_vec(),
        format!("{}\r", ok("u2", "crlf", 2)).into_bytes(),
        br#"{"uuid":"u3","event_id":"big","event_timestamp":123456789012345678901234567890}"#.to_vec(),
        br#"{"uuid":"u3","event_id":"big2","event_timestamp":"99999999999999999999999"}"#.to_vec(),
        br#"{"uuid":"u3","uuid":"u4","event_id":"dup-key","event_timestamp":1772323200000}"#.to_vec(),
        b"[1,2,3]".to_vec(),
        b"\"just a string\"".to_vec(),
        b"42".to_vec(),
        b"null".to_vec(),
        b"{".repeat(100_000),
        ok("u1", "b", 3).into_bytes(),
    ];
    let normal = lines.len();
    lines.push(ok("u5", "last", 4).into_bytes());
    let mut bytes = lines.join(&b'\n');
    bytes.push(b'\n');
    let path = dir.path().join("hostile.jsonl");
    std::fs::write(&path, &bytes).unwrap();
    // And a line of 3 GB without a newline at the end (a sparse file: zeros, no disk used).
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.set_len(bytes.len() as u64 + (3 << 30)).unwrap();
    drop(file);
    let warehouse = dir.path().join("warehouse");
    let summary = run(&warehouse, &[path]).args(["-w", "2"]).json();
    let actual = read_tables(&warehouse);
    let lines_in_file = normal + 2; // the last event and the 3 GB line
    let events_in_sessions: i64 = actual.sessions.iter().map(|s| s.event_count).sum();
    let accounted = events_in_sessions as u64
        + summary["duplicates"].as_u64().unwrap()
        + actual.quarantined.len() as u64
        + actual.late.len() as u64;
    assert_eq!(summary["events_read"], lines_in_file as u64);
    assert_eq!(accounted, lines_in_file as u64, "{summary}");
    // The last line is quarantined by its length, and its head is kept.
    assert!(actual.quarantined.contains(&(0, lines_in_file as i64)));
}

#[test]
fn files_are_known_by_their_content_not_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(59, 2);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);
    let warehouse = dir.path().join("warehouse");
    // Killed half-way, then resumed with other paths to the same files, in another order.
    run(&warehouse, &inputs)
        .args(["-w", "2"])
        .kill_at("after-cleanup:2");
    let relative: Vec<PathBuf> = inputs
        .iter()
        .rev()
        .map(|p| PathBuf::from(".").join(p.file_name().unwrap()))
        .collect();
    let resumed = run(&warehouse, &relative)
        .args(["-w", "2"])
        .command()
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_success(&resumed, "resumed under other paths");
    let actual = read_tables(&warehouse);
    assert_eq!(actual.sessions, expected.sessions);
    assert_eq!(actual.quarantined.len(), expected.quarantined.len());
    assert_eq!(actual.late.len(), expected.late.len());

    // A run over the same files adds nothing.
    run(&warehouse, &inputs).success();
    assert_eq!(read_tables(&warehouse).sessions, expected.sessions);

    // Lines appended since are read by the next run, and only they.
    let appended: Vec<String> = (0..5)
        .map(|i| {
            event(
                "user-new",
                &format!("new-{i}"),
                common::BASE + 40 * HOUR + i * MIN,
                "home",
                false,
            )
        })
        .collect();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&inputs[0])
        .unwrap();
    std::io::Write::write_all(&mut file, format!("{}\n", appended.join("\n")).as_bytes()).unwrap();
    drop(file);
    let summary = run(&warehouse, &inputs).json();
    assert_eq!(summary["events_read"], 5);
    let sessions = read_tables(&warehouse).sessions;
    assert_eq!(sessions.len(), expected.sessions.len() + 1);
    assert!(
        sessions
            .iter()
            .any(|s| s.user_id == "user-new" && s.event_count == 5)
    );

    // Another file under a recorded name is refused, with what to do.
    std::fs::write(
        &inputs[1],
        event("someone", "else", common::BASE, "home", true),
    )
    .unwrap();
    let refused = run(&warehouse, &inputs).output();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("is not the file") || stderr.contains("shorter"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A tmpfs of `size` mounted at `dir` (the tests run as root), unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Tmpfs(dir))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_stops_the_run_cleanly_and_a_restart_completes() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(67, 3);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);
    let Some(disk) = Tmpfs::mount(dir.path().join("disk"), "600k") else {
        panic!("cannot mount a tmpfs: the tests must run as root");
    };
    let warehouse = disk.0.join("warehouse");
    let full = run(&warehouse, &inputs).args(["-w", "2"]).output();
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert_eq!(full.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    disk.resize("64m");
    run(&warehouse, &inputs).args(["-w", "2"]).success();
    assert_tables_equal(&read_tables(&warehouse), &expected, "after a full disk");
}

#[test]
fn a_locked_catalog_is_waited_out() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(71, 2);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);
    let warehouse = dir.path().join("warehouse");
    // The first commits, then the catalog is locked by another client for 8 s mid-run.
    run(&warehouse, &inputs)
        .args(["-w", "2"])
        .kill_at("after-cleanup:2");
    let catalog = warehouse.join("catalog.db");
    let mut lock = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3, sys, time\n\
             c = sqlite3.connect('{}', isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             time.sleep(8)\n\
             c.execute('COMMIT')\n",
            catalog.display()
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(lock.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    let output = run(&warehouse, &inputs).args(["-w", "2"]).output();
    lock.wait().unwrap();
    assert_success(&output, "a run against a locked catalog");
    assert_tables_equal(&read_tables(&warehouse), &expected, "after the lock");
}

#[test]
fn a_missing_checkpoint_or_a_bad_name_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(73, 2);
    let inputs = write_inputs(dir.path(), &partitions);
    let warehouse = dir.path().join("warehouse");
    run(&warehouse, &inputs)
        .args(["-w", "2"])
        .kill_at("after-cleanup:2");
    // Under the sessions table's UUID.
    let checkpoints = warehouse.join("_sessionize/sessions.user_sessions");
    // Checkpoints are the owner's alone.
    for entry in walk(&checkpoints) {
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&entry.metadata().unwrap().permissions());
        assert_eq!(
            mode & 0o077,
            0,
            "{} is readable by others",
            entry.path().display()
        );
    }
    std::fs::remove_dir_all(&checkpoints).unwrap();
    let output = run(&warehouse, &inputs).output();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("is missing") && stderr.contains("restore"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );

    for (flag, value) in [
        ("--iceberg-table", "../../etc"),
        ("--iceberg-database", "a.b"),
        ("--iceberg-table", ""),
    ] {
        let output = run(&warehouse, &inputs).args([flag, value]).output();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{flag} {value:?}: {stderr}");
        assert!(
            stderr.contains(&flag[2..]) && stderr.lines().count() == 1,
            "{stderr}"
        );
    }
}

fn walk(dir: &Path) -> Vec<std::fs::DirEntry> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.file_type().unwrap().is_dir() {
            entries.extend(walk(&entry.path()));
        }
        entries.push(entry);
    }
    entries
}

#[test]
fn one_device_hours_ahead_under_any_limit_does_not_make_the_rest_late() {
    let dir = tempfile::tempdir().unwrap();
    // Twenty users, one event a minute each for 100 minutes; one device's clock is 5 h ahead, less
    // than the jump limit used to be, and it sends an event every other minute throughout.
    let mut lines = Vec::new();
    for minute in 0..100 {
        for user in 0..20 {
            let time = common::BASE + minute * MIN + user * 1000;
            let id = format!("e-{minute}-{user}");
            lines.push(event(&format!("user-{user}"), &id, time, "home", true));
        }
        if minute % 2 == 1 {
            let time = common::BASE + 5 * HOUR + minute * MIN;
            let id = format!("ahead-{minute}");
            lines.push(event("bad-clock", &id, time, "home", true));
        }
    }
    let partitions = vec![format!("{}\n", lines.join("\n")).into_bytes()];
    let inputs = write_inputs(dir.path(), &partitions);
    let warehouse = dir.path().join("warehouse");
    run(&warehouse, &inputs).success();
    let actual = read_tables(&warehouse);
    assert!(actual.late.is_empty(), "{} late events", actual.late.len());
    // The device's own events are on time too, and sessionized as any user's.
    let device: i64 = actual
        .sessions
        .iter()
        .filter(|s| s.user_id == "bad-clock")
        .map(|s| s.event_count)
        .sum();
    assert_eq!(device, 50);
    let total: i64 = actual.sessions.iter().map(|s| s.event_count).sum();
    assert_eq!(total, lines.len() as i64);
}

#[test]
fn one_device_a_day_ahead_does_not_make_the_rest_late() {
    let dir = tempfile::tempdir().unwrap();
    // Twenty users active for three hours, in order; early on one device's clock is 23 h ahead.
    let mut lines = Vec::new();
    for minute in 0..180 {
        for user in 0..20 {
            let id = format!("e-{minute}-{user}");
            lines.push(event(
                &format!("user-{user}"),
                &id,
                common::BASE + minute * MIN,
                "home",
                true,
            ));
        }
        if minute == 10 {
            lines.push(event(
                "bad-clock",
                "ahead",
                common::BASE + 23 * HOUR,
                "home",
                true,
            ));
        }
    }
    let partitions = vec![format!("{}\n", lines.join("\n")).into_bytes()];
    let inputs = write_inputs(dir.path(), &partitions);
    let guarded = dir.path().join("guarded");
    run(&guarded, &inputs).success();
    let actual = read_tables(&guarded);
    assert!(actual.late.is_empty(), "{} late events", actual.late.len());
    assert_eq!(
        actual.sessions.iter().map(|s| s.event_count).sum::<i64>(),
        20 * 180 + 1
    );
    // Without the guard or corrections, the rest of the stream would have been late.
    let unguarded = dir.path().join("unguarded");
    run(&unguarded, &inputs)
        .args(["--max-event-time-jump", "0", "--correction-horizon", "0"])
        .success();
    assert!(read_tables(&unguarded).late.len() > 3000);
    // Corrections alone keep every event in its session: they are within a day of the jump.
    let corrected = dir.path().join("corrected");
    run(&corrected, &inputs)
        .args(["--max-event-time-jump", "0"])
        .success();
    let actual = read_tables(&corrected);
    assert!(actual.late.is_empty(), "{} late events", actual.late.len());
    assert_eq!(
        actual.sessions.iter().map(|s| s.event_count).sum::<i64>(),
        20 * 180 + 1
    );
}

#[test]
fn metadata_stays_small_over_many_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(89, 2);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);
    let warehouse = dir.path().join("warehouse");
    let summary = Sessionize::run(&warehouse)
        .inputs(&inputs)
        .commit_interval("20ms")
        .args(["--max-epoch-records", "100"])
        .args(["--chunk-bytes", "2048", "--retain-snapshots", "4"])
        .json();
    assert!(summary["epochs"].as_u64().unwrap() >= 15, "{summary}");
    let actual = read_tables(&warehouse);
    assert!(actual.snapshots <= 6, "{} snapshots kept", actual.snapshots);
    assert_tables_equal(&actual, &expected, "after expiry");
}

#[test]
fn end_reasons_do_not_depend_on_an_interruption() {
    let dir = tempfile::tempdir().unwrap();
    // A short file whose events are the newest of all ends first; the long one goes on.
    let newest: Vec<String> = (0..5)
        .map(|i| {
            event(
                "night-owl",
                &format!("n{i}"),
                common::BASE + 60 * HOUR + i * MIN,
                "home",
                true,
            )
        })
        .collect();
    let mut partitions = vec![format!("{}\n", newest.join("\n")).into_bytes()];
    partitions.extend(workload(103, 1));
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);
    let warehouse = dir.path().join("warehouse");
    run(&warehouse, &inputs)
        .args(["-w", "2"])
        .kill_at("after-cleanup:3");
    run(&warehouse, &inputs).args(["-w", "2"]).success();
    assert_tables_equal(
        &read_tables(&warehouse),
        &expected,
        "end reasons after a restart",
    );
}

#[test]
fn a_process_whose_peers_never_come_gives_up_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = write_inputs(dir.path(), &workload(107, 1));
    let hosts = hostfile(dir.path(), 2);
    let output = run(&dir.path().join("warehouse"), &inputs)
        .args(["--cluster-timeout", "2s"])
        .cluster(&hosts, 2, 0)
        .output();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("did not all connect"), "{stderr}");
}

#[test]
fn a_commit_whose_answer_is_lost_is_found_in_the_table_not_made_twice() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(109, 2);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);
    for pass in ["1", "2", "4"] {
        let warehouse = dir.path().join(format!("warehouse-{pass}"));
        let output = run(&warehouse, &inputs)
            .args(["-w", "2"])
            .env("SESSIONIZE_FAIL_AT", format!("lose-commit-response:{pass}"))
            .success();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("answer was lost"), "{stderr}");
        let what = format!("answer lost at pass {pass}");
        assert_tables_equal(&read_tables(&warehouse), &expected, &what);
    }
}
