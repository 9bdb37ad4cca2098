//! Shared helpers of the integration tests: a brute-force reference of the whole pipeline's
//! semantics, the `sessionize` binary, and reading tables back through the iceberg crate.

#![allow(dead_code)] // each test binary uses its own subset

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use arrow_array::{Array, Int32Array, Int64Array, ListArray, RecordBatch, StringArray};
use futures::TryStreamExt;
use sessionize::rules::session_id;
use sessionize::sink::Warehouse;
use sessionize::sink::catalog::CatalogSettings;
use sessionize::sink::tables::TableKind;

pub const MIN: u64 = 60_000;
pub const HOUR: u64 = 60 * MIN;
pub const BASE: u64 = 1_772_323_200_000; // 2026-03-01T00:00:00Z

/// A small deterministic random source, so the workload needs nothing from the crate under test.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn event(user: &str, id: &str, time: u64, page: &str, as_string: bool) -> String {
    let ts = if as_string {
        format!("\"{time}\"")
    } else {
        time.to_string()
    };
    format!(
        r#"{{"event_id":"{id}","page_name":"{page}","event_timestamp":{ts},"booking_details":null,"uuid":"{user}","event_details":{{"event_name":"view","event_type":"page","event_value":1}}}}"#
    )
}

/// `count` partitions of events with the hard cases: gaps of exactly 30 min and 30 min + 1 ms, users
/// active for hours without a pause, duplicates, disorder of minutes, events hours late, and
/// malformed lines of many kinds.
pub fn workload(seed: u64, count: usize) -> Vec<Vec<u8>> {
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
    let mut partitions = vec![Vec::new(); count];
    for (i, (arrival, line)) in arrivals.iter().enumerate() {
        let partition = &mut partitions[i % count];
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

/// One expected or actual session row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SessionRow {
    pub user_id: String,
    pub session_id: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub duration_s: i64,
    pub event_count: i64,
    pub pages: Vec<String>,
    pub end_reason: String,
}

/// Everything the tables should hold, computed by brute force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub sessions: Vec<SessionRow>,
    /// (partition, line number) of quarantined lines.
    pub quarantined: Vec<(i32, i64)>,
    /// (partition, line number, watermark) of late events.
    pub late: Vec<(i32, i64, i64)>,
}

/// Business rules for the reference: `(field path, value)` pairs, the path as in the flags
/// (`page_name`, `event_details.event_name`).
#[derive(Debug, Clone, Default)]
pub struct Boundaries {
    pub end_on: Vec<(&'static str, &'static str)>,
    pub start_on: Vec<(&'static str, &'static str)>,
}

impl Boundaries {
    /// `(starts, ends)` of an event, read from its JSON.
    fn of(&self, event: &serde_json::Value) -> (bool, bool) {
        let matches = |rules: &[(&str, &str)]| {
            rules.iter().any(|(path, value)| {
                let field = path
                    .split('.')
                    .try_fold(event, |v, key| v.get(key))
                    .and_then(|v| v.as_str());
                field == Some(value)
            })
        };
        (matches(&self.start_on), matches(&self.end_on))
    }
}

/// The pipeline's semantics with the default limits, written as plainly as possible.
pub fn reference(
    inputs: &[Vec<u8>],
    inactivity: u64,
    max_duration: u64,
    lateness: u64,
) -> Expected {
    reference_with(
        inputs,
        inactivity,
        max_duration,
        lateness,
        &Boundaries::default(),
    )
}

/// [`reference`] with business rules that end and start sessions.
pub fn reference_with(
    inputs: &[Vec<u8>],
    inactivity: u64,
    max_duration: u64,
    lateness: u64,
    boundaries: &Boundaries,
) -> Expected {
    let mut expected = Expected::default();
    // (user, time, event id, page, (starts, ends)).
    type OnTime = (String, u64, String, Option<String>, (bool, bool));
    let mut on_time: Vec<OnTime> = Vec::new();
    for (partition, bytes) in inputs.iter().enumerate() {
        let mut max_seen: Option<u64> = None;
        for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
            let line_number = index as i64 + 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Some((user, time, id, page, value)) = parse_reference(line) else {
                expected.quarantined.push((partition as i32, line_number));
                continue;
            };
            let watermark = max_seen.map(|m| m.saturating_sub(lateness));
            if watermark.is_some_and(|w| time < w) {
                expected
                    .late
                    .push((partition as i32, line_number, watermark.unwrap() as i64));
                continue;
            }
            max_seen = Some(max_seen.map_or(time, |m| m.max(time)));
            on_time.push((user, time, id, page, boundaries.of(&value)));
        }
    }
    let end_of_input = on_time.iter().map(|e| e.1).max().unwrap_or(0);
    type Applied = (u64, String, Option<String>, (bool, bool));
    let mut by_user: BTreeMap<String, Vec<Applied>> = BTreeMap::new();
    for (user, time, id, page, marks) in on_time {
        by_user
            .entry(user)
            .or_default()
            .push((time, id, page, marks));
    }
    for (user, mut events) in by_user {
        events.sort();
        let mut seen: HashMap<String, u64> = HashMap::new();
        // Each session: its (time, page) events and, once cut, why it ended.
        type Session = (Vec<(u64, Option<String>)>, Option<&'static str>);
        let mut sessions: Vec<Session> = Vec::new();
        for (time, id, page, (starts, ends)) in events {
            if seen.get(&id).is_some_and(|t| t + lateness >= time) {
                continue;
            }
            seen.insert(id, time);
            let cut = match sessions.last() {
                None | Some((_, Some(_))) => Some(None),
                Some((s, _)) if time - s.last().unwrap().0 > inactivity => Some(Some("inactivity")),
                Some((s, _)) if time - s[0].0 > max_duration => Some(Some("max_duration")),
                Some(_) if starts => Some(Some("boundary")),
                Some(_) => None,
            };
            match cut {
                Some(reason) => {
                    if let (Some(last), Some(reason)) = (sessions.last_mut(), reason) {
                        last.1 = Some(reason);
                    }
                    sessions.push((vec![(time, page)], None));
                }
                None => sessions.last_mut().unwrap().0.push((time, page)),
            }
            if ends {
                sessions.last_mut().unwrap().1 = Some("boundary");
            }
        }
        for (events, reason) in sessions {
            let start = events[0].0;
            let end = events.last().unwrap().0;
            let reason = reason.unwrap_or(if end + inactivity < end_of_input {
                "inactivity"
            } else {
                "end_of_input"
            });
            let mut pages: Vec<String> = Vec::new();
            for page in events.iter().filter_map(|e| e.1.clone()) {
                if pages.len() < 64 && !pages.contains(&page) {
                    pages.push(page);
                }
            }
            expected.sessions.push(SessionRow {
                user_id: user.clone(),
                session_id: session_id(&user, start).to_string(),
                start_ms: start as i64,
                end_ms: end as i64,
                duration_s: ((end - start) / 1000) as i64,
                event_count: events.len() as i64,
                pages,
                end_reason: reason.to_string(),
            });
        }
    }
    expected.sessions.sort();
    expected.quarantined.sort();
    expected.late.sort();
    expected
}

/// The reference's own reading of a line, through serde_json rather than the pipeline's parser:
/// user, time, event id, page, and the whole event.
fn parse_reference(
    line: &[u8],
) -> Option<(String, u64, String, Option<String>, serde_json::Value)> {
    let text = std::str::from_utf8(line).ok()?;
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let object = value.as_object()?.clone();
    let user = object
        .get("uuid")?
        .as_str()
        .filter(|u| !u.is_empty())?
        .to_string();
    let id = object
        .get("event_id")?
        .as_str()
        .filter(|u| !u.is_empty())?
        .to_string();
    let time = match object.get("event_timestamp")? {
        serde_json::Value::Number(n) => n.as_u64()?,
        serde_json::Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()?
        }
        _ => return None,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    if time > now + 86_400_000 {
        return None;
    }
    let page = match object.get("page_name") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(p)) => Some(p.clone()),
        Some(_) => return None,
    };
    match object.get("event_details") {
        None | Some(serde_json::Value::Null) | Some(serde_json::Value::Object(_)) => {}
        Some(_) => return None,
    }
    Some((user, time, id, page, value))
}

/// Runs a Python snippet with pyiceberg against `warehouse`'s catalog (as `catalog`); returns
/// what it printed.
pub fn pyiceberg(warehouse: &Path, script: &str) -> String {
    let root = warehouse.canonicalize().unwrap();
    let prelude = format!(
        "from pyiceberg.catalog.sql import SqlCatalog\n\
         catalog = SqlCatalog('default', uri='sqlite:///{root}/catalog.db', warehouse='file://{root}')\n",
        root = root.display()
    );
    let output = Command::new("python3")
        .arg("-c")
        .arg(format!("{prelude}{script}"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "pyiceberg failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A child process that is killed when the test ends, passed or not.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the `sessionize` binary with `args`, failing the test with its output if it fails.
pub fn sessionize(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_sessionize"))
        .args(args)
        .output()
        .expect("the sessionize binary runs");
    assert!(
        output.status.success(),
        "sessionize {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `sessionize run` over `inputs` into `warehouse`, committing every 200 ms, with `extra` flags;
/// returns standard output (the run's JSON summary).
pub fn run_files(warehouse: &Path, inputs: &[PathBuf], extra: &[&str]) -> String {
    let mut args: Vec<String> = vec!["run".into()];
    for input in inputs {
        args.extend(["--input".into(), input.display().to_string()]);
    }
    args.extend([
        "--warehouse".into(),
        warehouse.display().to_string(),
        "--commit-interval".into(),
        "200ms".into(),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    String::from_utf8(sessionize(&args).stdout).unwrap()
}

/// The `sessionize run` command over `inputs`, committing often and in small epochs, so that a
/// run has many epochs to be killed in.
/// `warehouse` is a directory or an `s3://` location.
pub fn run_command(
    warehouse: impl AsRef<std::ffi::OsStr>,
    inputs: &[PathBuf],
    extra: &[&str],
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sessionize"));
    command.arg("run");
    for input in inputs {
        command.arg("--input").arg(input);
    }
    command
        .arg("--warehouse")
        .arg(warehouse)
        .args([
            "--commit-interval",
            "50ms",
            "--max-epoch-records",
            "400",
            "--chunk-bytes",
            "8192",
            "--idle-commit-interval",
            "0",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// `sessionize generate` into `dir`, a file of `events` events of `users` users per seed; returns
/// the files and their contents.
pub fn generated(
    dir: &Path,
    users: u64,
    events: u64,
    seeds: &[u64],
) -> (Vec<PathBuf>, Vec<Vec<u8>>) {
    let mut files = Vec::new();
    let mut contents = Vec::new();
    for seed in seeds {
        let path = dir.join(format!("generated-{seed}.jsonl"));
        let out = path.to_str().unwrap();
        let (users, events, seed) = (users.to_string(), events.to_string(), seed.to_string());
        sessionize(&[
            "generate", "--users", &users, "--events", &events, "--seed", &seed, "--out", out,
        ]);
        contents.push(std::fs::read(&path).unwrap());
        files.push(path);
    }
    (files, contents)
}

/// A timely hostfile in `dir` for `processes` processes on loopback, each on a free port.
pub fn hostfile(dir: &Path, processes: usize) -> PathBuf {
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let hosts: String = (0..processes)
        .map(|_| format!("127.0.0.1:{}\n", port()))
        .collect();
    let path = dir.join(format!("hosts-{}", port()));
    std::fs::write(&path, hosts).unwrap();
    path
}

pub fn write_inputs(dir: &Path, inputs: &[Vec<u8>]) -> Vec<PathBuf> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let path = dir.join(format!("part-{i}.jsonl"));
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect()
}

/// What the three tables hold, read back through the iceberg crate.
#[derive(Debug, PartialEq, Eq)]
pub struct Actual {
    pub sessions: Vec<SessionRow>,
    /// (partition, line number) of quarantined lines.
    pub quarantined: Vec<(i32, i64)>,
    /// (partition, line number, watermark) of late events.
    pub late: Vec<(i32, i64, i64)>,
    /// (partition, offset) of quarantined lines.
    pub quarantined_offsets: Vec<(i32, i64)>,
    /// (partition, offset, watermark) of late events.
    pub late_offsets: Vec<(i32, i64, i64)>,
    pub epoch_summary: Option<String>,
    /// The newest sessions snapshot's summary.
    pub summary: HashMap<String, String>,
}

impl Actual {
    /// Every partition's next offset, as the newest sessions snapshot records it.
    pub fn next_offsets(&self) -> BTreeMap<u32, u64> {
        let positions: BTreeMap<String, serde_json::Value> = self
            .summary
            .get("sessionize.positions")
            .map(|json| serde_json::from_str(json).unwrap())
            .unwrap_or_default();
        positions
            .into_iter()
            .map(|(p, v)| (p.parse().unwrap(), v["next_offset"].as_u64().unwrap()))
            .collect()
    }
}

/// The topic the Kafka tests use.
pub const TOPIC: &str = "clickstream-events";

/// Produces every partition's records to the partition of the same number, with an independent
/// client, each record stamped with `timestamp(partition, offset)` when given.
pub fn produce(
    servers: &str,
    partitions: &[Vec<u8>],
    timestamp: Option<&dyn Fn(usize, usize) -> i64>,
) {
    produce_to(servers, TOPIC, partitions, timestamp);
}

/// The records a partition's bytes make when every non-blank line is produced to Kafka.
pub fn records_of(partition: &[u8]) -> Vec<&[u8]> {
    partition
        .split(|b| *b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .collect()
}

/// The reference for partitions produced to Kafka record by record ([`records_of`]): side rows
/// are named by (partition, offset) instead of line numbers.
pub fn kafka_reference(partitions: &[Vec<u8>], lateness: u64) -> Expected {
    let mut expected = reference(partitions, 30 * MIN, 2 * HOUR, lateness);
    let offset_of: Vec<HashMap<i64, i64>> = partitions
        .iter()
        .map(|bytes| {
            let mut map = HashMap::new();
            let mut offset = 0;
            for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
                if !line.iter().all(u8::is_ascii_whitespace) {
                    map.insert(index as i64 + 1, offset);
                    offset += 1;
                }
            }
            map
        })
        .collect();
    for row in &mut expected.quarantined {
        row.1 = offset_of[row.0 as usize][&row.1];
    }
    for row in &mut expected.late {
        row.1 = offset_of[row.0 as usize][&row.1];
    }
    expected.quarantined.sort();
    expected.late.sort();
    expected
}

/// A real service (Kafka, the Iceberg REST catalog, PostgreSQL, S3) started by
/// `scripts/services`, stopped when the test ends; `settings` holds what its start printed
/// (`BOOTSTRAP`, `URI`, `URL`, `ENDPOINT`).
pub struct Service {
    script: PathBuf,
    dir: PathBuf,
    /// More arguments and environment variables of the script's `start`.
    args: Vec<String>,
    env: Vec<(String, String)>,
    pub settings: HashMap<String, String>,
}

impl Service {
    /// Starts `scripts/services/<name>.sh` with its state in `dir`.
    pub fn start(name: &str, dir: &Path) -> Service {
        Service::start_with(name, dir, &[], &[])
    }

    /// [`Service::start`] with more arguments for the script, and environment variables.
    pub fn start_with(name: &str, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Service {
        let mut service = Service {
            script: Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("scripts/services/{name}.sh")),
            dir: dir.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            settings: HashMap::new(),
        };
        service.settings = service.launch();
        service
    }

    pub fn get(&self, key: &str) -> &str {
        &self.settings[key]
    }

    /// Stops the service, then starts it again with its state, in the same place (port).
    pub fn restart_after(&mut self, away: Duration) {
        self.stop();
        std::thread::sleep(away);
        let settings = self.launch();
        let place = |settings: &HashMap<String, String>| {
            let mut settings = settings.clone();
            settings.remove("PID");
            settings
        };
        assert_eq!(place(&settings), place(&self.settings));
        self.settings = settings;
    }

    /// Runs the script's `start` and returns what it printed. A start that fails is tried once
    /// more (the free port the script picked may have been taken before it bound it).
    fn launch(&self) -> HashMap<String, String> {
        let start = || {
            self.script_command("start")
                .args(&self.args)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .output()
                .unwrap()
        };
        let mut output = start();
        if !output.status.success() {
            self.stop();
            output = start();
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        assert!(
            output.status.success(),
            "{} did not start (scripts/services/install.sh installs it):\n{}",
            self.script.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn script_command(&self, command: &str) -> Command {
        let mut script = Command::new("bash");
        script
            .arg(&self.script)
            .arg(command)
            .arg("--dir")
            .arg(&self.dir);
        script
    }

    fn stop(&self) {
        let _ = self.script_command("stop").output();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn read_tables(warehouse: &Path) -> Actual {
    read_tables_from(&CatalogSettings::default(), warehouse)
}

/// [`read_tables`] through the catalog `catalog`.
pub fn read_tables_from(catalog: &CatalogSettings, warehouse: &Path) -> Actual {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let warehouse = Warehouse::open(catalog, warehouse, "sessions", "user_sessions")
            .await
            .unwrap();
        let sessions_table = warehouse.load(TableKind::Sessions).await.unwrap();
        let summary = sessions_table
            .metadata()
            .current_snapshot()
            .map(|s| s.summary().additional_properties.clone())
            .unwrap_or_default();
        let epoch_summary = summary.get("sessionize.epoch").cloned();
        let mut sessions = Vec::new();
        for batch in scan(&warehouse, TableKind::Sessions).await {
            for row in 0..batch.num_rows() {
                let pages = column::<ListArray>(&batch, "pages_visited").value(row);
                let pages = pages.as_any().downcast_ref::<StringArray>().unwrap();
                sessions.push(SessionRow {
                    user_id: column::<StringArray>(&batch, "user_id").value(row).into(),
                    session_id: column::<StringArray>(&batch, "session_id")
                        .value(row)
                        .into(),
                    start_ms: column::<Int64Array>(&batch, "session_start_time_ms").value(row),
                    end_ms: column::<Int64Array>(&batch, "session_end_time_ms").value(row),
                    duration_s: column::<Int64Array>(&batch, "session_duration_seconds").value(row),
                    event_count: column::<Int64Array>(&batch, "event_count").value(row),
                    pages: (0..pages.len())
                        .map(|i| pages.value(i).to_string())
                        .collect(),
                    end_reason: column::<StringArray>(&batch, "end_reason")
                        .value(row)
                        .into(),
                });
            }
        }
        let mut quarantined = Vec::new();
        let mut quarantined_offsets = Vec::new();
        for batch in scan(&warehouse, TableKind::Quarantine).await {
            for row in 0..batch.num_rows() {
                let partition = column::<Int32Array>(&batch, "partition").value(row);
                quarantined.push((
                    partition,
                    column::<Int64Array>(&batch, "line_number").value(row),
                ));
                quarantined_offsets
                    .push((partition, column::<Int64Array>(&batch, "offset").value(row)));
            }
        }
        let mut late = Vec::new();
        let mut late_offsets = Vec::new();
        for batch in scan(&warehouse, TableKind::LateEvents).await {
            for row in 0..batch.num_rows() {
                let partition = column::<Int32Array>(&batch, "partition").value(row);
                let watermark = column::<Int64Array>(&batch, "watermark_ms").value(row);
                late.push((
                    partition,
                    column::<Int64Array>(&batch, "line_number").value(row),
                    watermark,
                ));
                late_offsets.push((
                    partition,
                    column::<Int64Array>(&batch, "offset").value(row),
                    watermark,
                ));
            }
        }
        sessions.sort();
        quarantined.sort();
        late.sort();
        quarantined_offsets.sort();
        late_offsets.sort();
        Actual {
            sessions,
            quarantined,
            late,
            quarantined_offsets,
            late_offsets,
            epoch_summary,
            summary,
        }
    })
}

async fn scan(warehouse: &Warehouse, kind: TableKind) -> Vec<RecordBatch> {
    let table = warehouse.load(kind).await.unwrap();
    if table.metadata().current_snapshot().is_none() {
        return Vec::new();
    }
    let stream = table
        .scan()
        .select_all()
        .build()
        .unwrap()
        .to_arrow()
        .await
        .unwrap();
    stream.try_collect().await.unwrap()
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> &'a T {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name}"))
        .as_any()
        .downcast_ref::<T>()
        .unwrap_or_else(|| panic!("type of column {name}"))
}

/// The `s3.*` catalog options of moto's server at `endpoint`.
pub fn s3_options(endpoint: &str) -> Vec<(String, String)> {
    [
        ("s3.endpoint", endpoint),
        ("s3.access-key-id", "test"),
        ("s3.secret-access-key", "test"),
        ("s3.region", "us-east-1"),
        ("s3.path-style-access", "true"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec()
}

/// The environment of Iceberg's REST catalog writing through S3FileIO to `endpoint`.
pub fn rest_on_s3(endpoint: &str) -> Vec<(&'static str, &str)> {
    vec![
        ("CATALOG_IO__IMPL", "org.apache.iceberg.aws.s3.S3FileIO"),
        ("CATALOG_S3_ENDPOINT", endpoint),
        ("CATALOG_S3_PATH__STYLE__ACCESS", "true"),
        ("CATALOG_S3_ACCESS__KEY__ID", "test"),
        ("CATALOG_S3_SECRET__ACCESS__KEY", "test"),
        ("CATALOG_CLIENT_REGION", "us-east-1"),
        ("AWS_REGION", "us-east-1"),
    ]
}

/// Every key in the bucket `lake`, listed by boto3.
pub fn bucket_keys(endpoint: &str) -> Vec<String> {
    let listed = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import boto3\n\
             s3 = boto3.client('s3', endpoint_url='{endpoint}', aws_access_key_id='test',\n\
             \x20   aws_secret_access_key='test', region_name='us-east-1')\n\
             for page in s3.get_paginator('list_objects_v2').paginate(Bucket='lake'):\n\
             \x20   for o in page.get('Contents', []): print(o['Key'])"
        ))
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// [`produce`] to the topic `topic`.
pub fn produce_to(
    servers: &str,
    topic: &str,
    partitions: &[Vec<u8>],
    timestamp: Option<&dyn Fn(usize, usize) -> i64>,
) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for (partition, bytes) in partitions.iter().enumerate() {
        for (offset, record) in records_of(bytes).into_iter().enumerate() {
            let mut message = BaseRecord::<[u8], [u8]>::to(topic)
                .payload(record)
                .partition(partition as i32);
            if let Some(timestamp) = timestamp {
                message = message.timestamp(timestamp(partition, offset));
            }
            let mut message = Some(message);
            while let Some(m) = message.take() {
                if let Err((_, back)) = producer.send(m) {
                    message = Some(back);
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Creates `topic` with `partitions` partitions and the topic settings `configs` on the broker
/// at `servers`.
pub fn create_topic(servers: &str, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .unwrap();
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (key, value) in configs {
        new = new.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let created = futures::executor::block_on(admin.create_topics([&new], &options)).unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
}

/// A real Apache Kafka broker (KRaft, one node: `scripts/services/kafka.sh`) with its state in
/// `dir`, stopped when the value is dropped and, failing that, by the script's watchdog once this
/// test process is gone (`--stop-with`).
pub fn start_kafka(dir: &Path) -> Service {
    let pid = std::process::id().to_string();
    Service::start_with("kafka", dir, &["--stop-with", &pid], &[])
}

/// A real Apache Kafka broker of its own in `dir/kafka`, with [`TOPIC`] in `partitions`
/// partitions.
pub fn kafka_with_topic(dir: &Path, partitions: i32) -> Service {
    let kafka = start_kafka(&dir.join("kafka"));
    create_topic(kafka.get("BOOTSTRAP"), TOPIC, partitions, &[]);
    kafka
}

/// One real Kafka broker shared by every test of the test binary, started by the first test that
/// asks for it: each test uses topics and consumer groups of its own. A static is never dropped,
/// so the broker stops itself once the test process is gone (see [`start_kafka`]). Its state is
/// in `CARGO_TARGET_TMPDIR/shared-kafka/<pid>`; that of test processes that are gone is removed.
pub fn shared_kafka() -> &'static Service {
    static KAFKA: std::sync::OnceLock<Service> = std::sync::OnceLock::new();
    KAFKA.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("shared-kafka");
        let pid = std::process::id();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/services/kafka.sh");
        for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let owner = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok());
            let gone = owner.is_none_or(|p| p == pid || !Path::new(&format!("/proc/{p}")).exists());
            if gone {
                // Its watchdog stops it within a second; this makes sure before removing it.
                let _ = Command::new("bash")
                    .arg(&script)
                    .args(["stop", "--dir"])
                    .arg(entry.path())
                    .output();
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        start_kafka(&root.join(pid.to_string()))
    })
}

/// What Debian's chromium, headless with a profile in `profile`, prints for `url` given `args`
/// (e.g. `--dump-dom`, `--screenshot=FILE`).
pub fn headless_chromium(profile: &Path, url: &str, args: &[&str]) -> String {
    let output = Command::new("chromium")
        .args(["--headless=new", "--no-sandbox", "--disable-gpu"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs (scripts/services/install.sh chromium installs it)");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}
