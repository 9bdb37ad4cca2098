//! Shared helpers of the integration tests: a brute-force reference of the whole pipeline's
//! semantics, the `sessionize` binary, and reading tables back through the iceberg crate.

#![allow(dead_code)] // each test binary uses its own subset

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow_array::{Array, Int32Array, Int64Array, ListArray, RecordBatch, StringArray};
use futures::TryStreamExt;
use sessionize::rules::session_id;
use sessionize::sink::iceberg::Warehouse;
use sessionize::sink::tables::TableKind;

pub const MIN: u64 = 60_000;

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
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expected {
    pub sessions: Vec<SessionRow>,
    /// (partition, line number) of quarantined lines.
    pub quarantined: Vec<(i32, i64)>,
    /// (partition, line number, watermark) of late events.
    pub late: Vec<(i32, i64, i64)>,
}

/// The pipeline's semantics with the default limits, written as plainly as possible.
pub fn reference(
    inputs: &[Vec<u8>],
    inactivity: u64,
    max_duration: u64,
    lateness: u64,
) -> Expected {
    let mut expected = Expected::default();
    let mut on_time: Vec<(String, u64, String, Option<String>)> = Vec::new();
    for (partition, bytes) in inputs.iter().enumerate() {
        let mut max_seen: Option<u64> = None;
        for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
            let line_number = index as i64 + 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Some((user, time, id, page)) = parse_reference(line) else {
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
            on_time.push((user, time, id, page));
        }
    }
    let end_of_input = on_time.iter().map(|e| e.1).max().unwrap_or(0);
    let mut by_user: BTreeMap<String, Vec<(u64, String, Option<String>)>> = BTreeMap::new();
    for (user, time, id, page) in on_time {
        by_user.entry(user).or_default().push((time, id, page));
    }
    for (user, mut events) in by_user {
        events.sort();
        let mut seen: HashMap<String, u64> = HashMap::new();
        // Each session: its (time, page) events and, once cut, why it ended.
        type Session = (Vec<(u64, Option<String>)>, Option<&'static str>);
        let mut sessions: Vec<Session> = Vec::new();
        for (time, id, page) in events {
            if seen.get(&id).is_some_and(|t| t + lateness >= time) {
                continue;
            }
            seen.insert(id, time);
            let cut = match sessions.last() {
                None => Some(None),
                Some((s, _)) if time - s.last().unwrap().0 > inactivity => Some(Some("inactivity")),
                Some((s, _)) if time - s[0].0 > max_duration => Some(Some("max_duration")),
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

/// The reference's own reading of a line, through serde_json rather than the pipeline's parser.
fn parse_reference(line: &[u8]) -> Option<(String, u64, String, Option<String>)> {
    let text = std::str::from_utf8(line).ok()?;
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let object = value.as_object()?;
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
    Some((user, time, id, page))
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
    pub quarantined: Vec<(i32, i64)>,
    pub late: Vec<(i32, i64, i64)>,
    pub epoch_summary: Option<String>,
}

pub fn read_tables(warehouse: &Path) -> Actual {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let warehouse = Warehouse::open(warehouse, "sessions", "user_sessions")
            .await
            .unwrap();
        let sessions_table = warehouse.load(TableKind::Sessions).await.unwrap();
        let epoch_summary = sessions_table.metadata().current_snapshot().and_then(|s| {
            s.summary()
                .additional_properties
                .get("sessionize.epoch")
                .cloned()
        });
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
        for batch in scan(&warehouse, TableKind::Quarantine).await {
            for row in 0..batch.num_rows() {
                quarantined.push((
                    column::<Int32Array>(&batch, "partition").value(row),
                    column::<Int64Array>(&batch, "line_number").value(row),
                ));
            }
        }
        let mut late = Vec::new();
        for batch in scan(&warehouse, TableKind::LateEvents).await {
            for row in 0..batch.num_rows() {
                late.push((
                    column::<Int32Array>(&batch, "partition").value(row),
                    column::<Int64Array>(&batch, "line_number").value(row),
                    column::<Int64Array>(&batch, "watermark_ms").value(row),
                ));
            }
        }
        sessions.sort();
        quarantined.sort();
        late.sort();
        Actual {
            sessions,
            quarantined,
            late,
            epoch_summary,
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
