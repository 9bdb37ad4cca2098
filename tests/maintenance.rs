//! Tables that stay small while the pipeline commits often: manifests are merged, expired
//! snapshots' files and old metadata files are deleted, and the rows stay exactly the reference's
//! through a kill. Checked through pyiceberg, an independent reader of the table's metadata.

mod common;

use std::path::{Path, PathBuf};

use common::{
    Sessionize, assert_tables_equal, default_reference, pyiceberg, read_tables, workload,
    write_inputs,
};

/// What pyiceberg sees of the sessions table: manifests, data files and their bytes in the
/// current snapshot, retained snapshots, and the data files they reference, as JSON.
fn table_shape(warehouse: &Path) -> serde_json::Value {
    let out = pyiceberg(
        warehouse,
        "import json\n\
         table = catalog.load_table('sessions.user_sessions')\n\
         current = table.current_snapshot()\n\
         referenced = set()\n\
         for snapshot in table.snapshots():\n\
         \x20   for manifest in snapshot.manifests(table.io):\n\
         \x20       for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):\n\
         \x20           referenced.add(entry.data_file.file_path)\n\
         tasks = list(table.scan().plan_files())\n\
         print(json.dumps({'manifests': len(current.manifests(table.io)),\n\
         \x20   'data_files': len(tasks),\n\
         \x20   'bytes': sum(t.file.file_size_in_bytes for t in tasks),\n\
         \x20   'snapshots': len(table.snapshots()),\n\
         \x20   'rows': len(table.scan().to_arrow()),\n\
         \x20   'referenced': sorted(referenced),\n\
         \x20   'location': table.location()}))\n",
    );
    serde_json::from_str(out.trim()).unwrap()
}

/// Files under `dir` whose names end with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_ending(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            found.push(path.to_string_lossy().into_owned());
        }
    }
    found
}

#[test]
fn many_commits_keep_few_manifests_and_no_unreferenced_file() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(41, 2);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);
    let warehouse = dir.path().join("warehouse");
    let run = || {
        Sessionize::run(&warehouse)
            .inputs(&inputs)
            .commit_interval("10ms")
            .args(["--max-epoch-records", "25", "--chunk-bytes", "512"])
            .args(["--retain-snapshots", "5", "-w", "2"])
    };
    // Killed once, after a commit: the epoch in flight may leave Parquet files no commit names.
    run().kill_at("after-cleanup:3");
    // Files of an epoch no run committed, one of another run of ours and one of another tool.
    let data = table_location(&table_shape(&warehouse)).join("data");
    let some_file = files_ending(&data, ".parquet").pop().unwrap();
    let ours = data.join("0abc12-0def34-w0-e999-00000.parquet");
    let theirs = data.join("00000-0-0b5e0d9c-spark.parquet");
    for orphan in [&ours, &theirs] {
        std::fs::copy(&some_file, orphan).unwrap();
    }
    // Another writer rewrites every file (a compaction by Spark or pyiceberg), and the table's
    // own property keeps fewer old metadata files than the commits to come.
    pyiceberg(
        &warehouse,
        "table = catalog.load_table('sessions.user_sessions')\n\
         table.overwrite(table.scan().to_arrow())\n\
         with table.transaction() as t:\n\
         \x20   t.set_properties({'write.metadata.previous-versions-max': '10'})\n",
    );
    let summary = run().json();
    let epochs = summary["epochs"].as_u64().unwrap();
    assert!(epochs >= 30, "{summary}");
    assert_tables_equal(&read_tables(&warehouse), &expected, "after many commits");

    let shape = table_shape(&warehouse);
    let manifests = shape["manifests"].as_u64().unwrap();
    // A manifest per commit would be one per epoch; merged, a handful.
    assert!(
        manifests <= 10,
        "{manifests} manifests after {epochs} commits"
    );
    // The files the rewrite replaced went with the snapshots that named them, and the files of
    // epochs no run committed with the run's first commit; another tool's files are its own.
    let left = unreferenced(&warehouse);
    assert!(!ours.exists(), "an uncommitted epoch's file is left");
    assert_eq!(left, [theirs.display().to_string()]);
    let location = table_location(&shape);
    let metadata_files = files_ending(&location.join("metadata"), ".metadata.json");
    assert!(
        metadata_files.len() <= 10 + 1,
        "{} metadata files with write.metadata.previous-versions-max 10",
        metadata_files.len()
    );

    // inspect counts what pyiceberg sees, and knows that expiry ran.
    let ours = inspected_shape(&warehouse);
    assert_eq!(ours["manifests"], shape["manifests"], "{ours} {shape}");
    assert_eq!(ours["data_files"], shape["data_files"], "{ours} {shape}");
    assert_eq!(ours["bytes"], shape["bytes"], "{ours} {shape}");
    assert_eq!(ours["records"], shape["rows"], "{ours} {shape}");
    assert!(ours["last_expiry_ms"].is_i64(), "{ours}");
}

/// The sessions table's shape as `inspect --json` shows it.
fn inspected_shape(warehouse: &Path) -> serde_json::Value {
    let inspection = Sessionize::new("inspect")
        .arg("--warehouse")
        .arg(warehouse)
        .arg("--json")
        .json();
    inspection["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "sessions.user_sessions")
        .unwrap_or_else(|| panic!("no sessions table in {inspection}"))["shape"]
        .clone()
}

fn table_location(shape: &serde_json::Value) -> PathBuf {
    PathBuf::from(
        shape["location"]
            .as_str()
            .unwrap()
            .trim_start_matches("file://"),
    )
}

/// The sessions table's Parquet files that no retained snapshot references.
fn unreferenced(warehouse: &Path) -> Vec<String> {
    let shape = table_shape(warehouse);
    let referenced: Vec<&str> = shape["referenced"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().trim_start_matches("file://"))
        .collect();
    files_ending(&table_location(&shape), ".parquet")
        .into_iter()
        .filter(|f| !referenced.contains(&f.as_str()))
        .collect()
}

/// What pyiceberg sees of each table's compaction: the most files any partition of the current
/// snapshot has, the `replace` snapshots (as added and deleted records), and whether the rows of
/// each compacted sessions file are in (user, start) order.
fn compaction_shape(warehouse: &Path) -> serde_json::Value {
    let out = pyiceberg(
        warehouse,
        "import json, collections\n\
         import pyarrow.parquet as pq\n\
         shape = {}\n\
         for name in ['user_sessions', 'user_sessions_quarantine', 'user_sessions_late_events']:\n\
         \x20   table = catalog.load_table('sessions.' + name)\n\
         \x20   current = table.current_snapshot()\n\
         \x20   by_partition = collections.Counter()\n\
         \x20   compacted = []\n\
         \x20   for manifest in current.manifests(table.io):\n\
         \x20       for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):\n\
         \x20           by_partition[str(entry.data_file.partition)] += 1\n\
         \x20           if '-compact' in entry.data_file.file_path:\n\
         \x20               compacted.append(entry.data_file.file_path)\n\
         \x20   replaces = [(s.summary['added-records'], s.summary['deleted-records'])\n\
         \x20               for s in table.snapshots() if s.summary.operation.value == 'replace']\n\
         \x20   sorted_files = True\n\
         \x20   if name == 'user_sessions':\n\
         \x20       for path in compacted:\n\
         \x20           rows = pq.read_table(path.removeprefix('file://')).select(['user_id', 'session_start_time_ms']).to_pylist()\n\
         \x20           keys = [(r['user_id'], r['session_start_time_ms']) for r in rows]\n\
         \x20           sorted_files = sorted_files and keys == sorted(keys)\n\
         \x20   shape[name] = {'most_files_in_a_partition': max(by_partition.values(), default=0),\n\
         \x20       'replaces': replaces, 'compacted_files': len(compacted), 'sorted': sorted_files}\n\
         print(json.dumps(shape))\n",
    );
    serde_json::from_str(out.trim()).unwrap()
}

#[test]
fn compaction_leaves_few_sorted_files_per_partition_through_kills() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(43, 2);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);
    let warehouse = dir.path().join("warehouse");
    let min_files = 3;
    let run = || {
        Sessionize::run(&warehouse)
            .inputs(&inputs)
            .commit_interval("10ms")
            .args([
                "--max-epoch-records",
                "40",
                "--chunk-bytes",
                "1024",
                "-w",
                "2",
            ])
            .args(["--compact-min-files", &min_files.to_string()])
    };
    // Killed with a round rewritten but not committed, then just after a round's commit.
    run().kill_at("before-compaction-commit:2");
    run().kill_at("after-compaction-commit:2");
    let summary = run().json();
    assert_tables_equal(
        &read_tables(&warehouse),
        &expected,
        "compacted through kills",
    );

    let shape = compaction_shape(&warehouse);
    let sessions = &shape["user_sessions"];
    let epochs = summary["epochs"].as_u64().unwrap();
    assert!(
        sessions["replaces"].as_array().unwrap().len() >= 2,
        "{shape} after {epochs} more commits"
    );
    for (table, shape) in shape.as_object().unwrap() {
        // A finished run leaves each partition in one file (all are far below the target).
        let most = shape["most_files_in_a_partition"].as_u64().unwrap();
        assert_eq!(most, 1, "{table}: {shape}");
        // A replace keeps the rows.
        for replace in shape["replaces"].as_array().unwrap() {
            assert_eq!(replace[0], replace[1], "{table}: {shape}");
        }
    }
    assert!(sessions["compacted_files"].as_u64().unwrap() > 0, "{shape}");
    assert_eq!(sessions["sorted"], true, "{shape}");
    // inspect shows the compaction, and every file is small (far below the target), none left
    // to compact with another in its partition.
    let ours = inspected_shape(&warehouse);
    assert!(ours["last_compaction_ms"].is_i64(), "{ours}");
    assert_eq!(ours["small_files"], ours["data_files"], "{ours}");
    // The round the first kill cut short left files no snapshot names; the next run removed them.
    assert_eq!(unreferenced(&warehouse), Vec::<String>::new());
}

#[test]
fn maintain_compacts_expires_and_removes_old_orphans_of_a_table_written_without_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(47, 2);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);
    let warehouse = dir.path().join("warehouse");
    Sessionize::run(&warehouse)
        .inputs(&inputs)
        .commit_interval("10ms")
        .args(["--max-epoch-records", "40", "--chunk-bytes", "1024"])
        .args(["--compact-min-files", "0"])
        .success();
    let data = table_location(&table_shape(&warehouse)).join("data");
    let some_file = files_ending(&data, ".parquet").pop().unwrap();
    // Two orphans of an earlier run, one written days ago, one a moment ago (it could be a
    // running pipeline's epoch in flight), and another tool's file.
    let old = data.join("0abc12-0def34-w0-e998-00000.parquet");
    let young = data.join("0abc12-0def34-w0-e999-00000.parquet");
    let theirs = data.join("00000-0-0b5e0d9c-spark.parquet");
    for orphan in [&old, &young, &theirs] {
        std::fs::copy(&some_file, orphan).unwrap();
    }
    let days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(5 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(days_ago)
        .unwrap();
    let before = compaction_shape(&warehouse);

    let output = Sessionize::new("maintain")
        .arg("--warehouse")
        .arg(&warehouse)
        .args(["--retain-snapshots", "5", "--json"])
        .success();
    let done: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let sessions = &done[0];
    assert_eq!(sessions["table"], "sessions.user_sessions", "{done}");
    assert!(sessions["compactions"].as_u64().unwrap() > 0, "{done}");
    assert!(
        sessions["data_files_after"].as_u64().unwrap()
            < sessions["data_files_before"].as_u64().unwrap(),
        "{done}"
    );
    assert!(
        sessions["snapshots_expired"].as_u64().unwrap() > 0,
        "{done}"
    );
    assert_eq!(sessions["orphans_removed"], 1, "{done}");

    assert_tables_equal(&read_tables(&warehouse), &expected, "after maintain");
    let after = compaction_shape(&warehouse);
    assert!(
        before["user_sessions"]["most_files_in_a_partition"]
            .as_u64()
            .unwrap()
            > 1
    );
    for (table, shape) in after.as_object().unwrap() {
        assert_eq!(shape["most_files_in_a_partition"], 1, "{table}: {after}");
    }
    assert_eq!(after["user_sessions"]["sorted"], true, "{after}");
    // Time travel to the snapshot before each retained compaction reads the same rows.
    let same = pyiceberg(
        &warehouse,
        "table = catalog.load_table('sessions.user_sessions')\n\
         ids = {s.snapshot_id for s in table.snapshots()}\n\
         rows = lambda s: sorted(map(str, table.scan(snapshot_id=s).to_arrow().to_pylist()))\n\
         pairs = [(s.parent_snapshot_id, s.snapshot_id) for s in table.snapshots()\n\
         \x20        if s.summary.operation.value == 'replace' and s.parent_snapshot_id in ids]\n\
         print(len(pairs), all(rows(a) == rows(b) for a, b in pairs))\n",
    );
    let (pairs, all_same) = same.trim().split_once(' ').unwrap();
    assert!(pairs.parse::<u32>().unwrap() > 0, "{same}");
    assert_eq!(all_same, "True");
    assert!(!old.exists(), "an old orphan is left");
    assert!(young.exists() && theirs.exists());
}

#[test]
fn kills_in_expiry_lose_nothing_and_leave_no_unreferenced_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(53, 2);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);
    let warehouse = dir.path().join("warehouse");
    let run = || {
        Sessionize::run(&warehouse)
            .inputs(&inputs)
            .commit_interval("10ms")
            .args(["--max-epoch-records", "40", "--chunk-bytes", "1024"])
            .args(["--retain-snapshots", "3"])
    };
    // Killed with snapshots expired but none of their files deleted yet, then mid-way through
    // the deletes.
    run().kill_at("after-expiry-commit:2");
    run().kill_at("between-deletes:5");
    run().success();
    assert_tables_equal(
        &read_tables(&warehouse),
        &expected,
        "through kills in expiry",
    );
    // What the first kill left is known by its run's id, and went with the next run's commit.
    assert_eq!(unreferenced(&warehouse), Vec::<String>::new());
}
