//! The obviously-correct reference: workloads with the hard cases, and what the pipeline must
//! make of them, computed by brute force through serde_json rather than the pipeline's own code.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use sessionize::rules::session_id;

use super::Sessionize;

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
/// active for hours without a pause, duplicates, disorder of minutes, events hours late (within
/// the correction horizon and beyond it), and malformed lines of many kinds.
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
            // Invalid UTF-8, and an event hours behind the stream: within the correction
            // horizon (its sessions are corrected), or beyond it (a late event).
            partition.extend_from_slice(
                b"{\"uuid\":\"user-\xff\",\"event_id\":\"y\",\"event_timestamp\":1}\n",
            );
            // The first lands among a user's sessions of three hours before, which it extends,
            // merges or splits anew.
            let (user, behind) = if i % 2 == 0 {
                (format!("user-{:03}", i % 40), 3 * HOUR)
            } else {
                ("user-late".to_string(), 30 * HOUR)
            };
            let late = event(&user, &format!("late-{i}"), arrival - behind, "home", true);
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
    /// (partition, position) of quarantined lines.
    pub quarantined: Vec<(i32, i64)>,
    /// (partition, position, watermark) of late events.
    pub late: Vec<(i32, i64, i64)>,
    pub position: Position,
}

/// How the side rows name an event: by line number in a file, or by offset in a Kafka partition
/// (they differ wherever a file has blank lines).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Position {
    #[default]
    LineNumber,
    Offset,
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

/// The reference under the pipeline's default limits (30 min of inactivity, sessions of 2 h at
/// most, 10 min of lateness), which is what a run without those flags must give.
pub fn default_reference(inputs: &[Vec<u8>]) -> Expected {
    reference(inputs, 30 * MIN, 2 * HOUR, 10 * MIN)
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
/// A partition's newest event time as README's `--max-event-time-jump` (10 minutes) describes it:
/// an on-time event moves it at once by up to the limit; further only once a quarter of the
/// partition's current users (among its latest 32 on-time events, those within the limit of the
/// newest) and a quarter of those events have reached the new time.
#[derive(Default)]
struct ReferenceClock {
    newest: Option<u64>,
    recent: std::collections::VecDeque<(String, u64)>,
}

impl ReferenceClock {
    const LIMIT: u64 = 10 * MIN;

    fn observe(&mut self, user: &str, time: u64) {
        if self.recent.len() == 32 {
            self.recent.pop_front();
        }
        self.recent.push_back((user.to_string(), time));
        let Some(newest) = self.newest else {
            self.newest = Some(time);
            return;
        };
        if time <= newest + Self::LIMIT {
            self.newest = Some(newest.max(time));
            return;
        }
        let current: Vec<&(String, u64)> = self
            .recent
            .iter()
            .filter(|(_, t)| *t + Self::LIMIT >= newest)
            .collect();
        let mut latest_by_user: BTreeMap<&str, u64> = BTreeMap::new();
        for (user, t) in &current {
            let latest = latest_by_user.entry(user).or_insert(*t);
            *latest = (*latest).max(*t);
        }
        let quarter_down = |mut times: Vec<u64>| {
            times.sort_unstable_by(|a, b| b.cmp(a));
            times[times.len().div_ceil(4) - 1]
        };
        let by_users = quarter_down(latest_by_user.into_values().collect());
        let by_events = quarter_down(current.iter().map(|(_, t)| *t).collect());
        self.newest = Some(newest.max(by_users.min(by_events)));
    }
}

pub fn reference_with(
    inputs: &[Vec<u8>],
    inactivity: u64,
    max_duration: u64,
    lateness: u64,
    boundaries: &Boundaries,
) -> Expected {
    let mut expected = Expected::default();
    let by_user = on_time_by_user(inputs, lateness, boundaries, &mut expected);
    let end_of_input = by_user.values().flatten().map(|e| e.0).max().unwrap_or(0);
    for (user, events) in by_user {
        for (events, reason) in cut_sessions(events, inactivity, max_duration, lateness) {
            let start = events[0].0;
            let end = events.last().unwrap().0;
            let reason = reason.unwrap_or(if end + inactivity < end_of_input {
                "inactivity"
            } else {
                "end_of_input"
            });
            expected.sessions.push(SessionRow {
                user_id: user.clone(),
                session_id: session_id(&user, start).to_string(),
                start_ms: start as i64,
                end_ms: end as i64,
                duration_s: ((end - start) / 1000) as i64,
                event_count: events.len() as i64,
                pages: pages_of(&events),
                end_reason: reason.to_string(),
            });
        }
    }
    expected.sessions.sort();
    expected.quarantined.sort();
    expected.late.sort();
    expected
}

/// A session still open: a row of the open-sessions table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OpenRow {
    pub user_id: String,
    pub session_id: String,
    pub start_ms: i64,
    pub last_ms: i64,
    pub event_count: i64,
    pub pages: Vec<String>,
}

/// The sessions open once every event before `watermark` is applied (under the default limits),
/// and none after it: a session is open until the watermark passes its last event by more than
/// the inactivity, whatever its length (the maximum duration splits it at its next event).
pub fn open_sessions_at(inputs: &[Vec<u8>], watermark: u64) -> Vec<OpenRow> {
    let (inactivity, max_duration, lateness) = (30 * MIN, 2 * HOUR, 10 * MIN);
    let mut ignored = Expected::default();
    let by_user = on_time_by_user(inputs, lateness, &Boundaries::default(), &mut ignored);
    let mut open = Vec::new();
    for (user, mut events) in by_user {
        events.retain(|e| e.0 < watermark);
        let sessions = cut_sessions(events, inactivity, max_duration, lateness);
        let Some((events, None)) = sessions.last() else {
            continue;
        };
        let (start, last) = (events[0].0, events.last().unwrap().0);
        if last + inactivity >= watermark {
            open.push(OpenRow {
                session_id: session_id(&user, start).to_string(),
                user_id: user,
                start_ms: start as i64,
                last_ms: last as i64,
                event_count: events.len() as i64,
                pages: pages_of(events),
            });
        }
    }
    open.sort();
    open
}

/// An on-time event as the rules see it: time, event id, page, and (starts, ends) a session.
type Applied = (u64, String, Option<String>, (bool, bool));
/// A session's (time, page) events and, once cut, why it ended.
type Session = (Vec<(u64, Option<String>)>, Option<&'static str>);

/// The pipeline's default `--correction-horizon`: late events at most this far behind their
/// partition's watermark count as if on time (their sessions are corrected).
pub const CORRECTION_HORIZON: u64 = 24 * HOUR;

/// Reads `inputs` as the stampers do: quarantined lines and lines late beyond the correction
/// horizon go to `expected`, and the other events are returned by user, in time order, as if
/// every one had come on time.
fn on_time_by_user(
    inputs: &[Vec<u8>],
    lateness: u64,
    boundaries: &Boundaries,
    expected: &mut Expected,
) -> BTreeMap<String, Vec<Applied>> {
    let mut by_user: BTreeMap<String, Vec<Applied>> = BTreeMap::new();
    for (partition, bytes) in inputs.iter().enumerate() {
        let mut clock = ReferenceClock::default();
        for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
            let line_number = index as i64 + 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Some((user, time, id, page, value)) = parse_reference(line) else {
                expected.quarantined.push((partition as i32, line_number));
                continue;
            };
            let watermark = clock.newest.map(|m| m.saturating_sub(lateness));
            let late = watermark.is_some_and(|w| time < w);
            if watermark.is_some_and(|w| time + CORRECTION_HORIZON < w) {
                expected
                    .late
                    .push((partition as i32, line_number, watermark.unwrap() as i64));
                continue;
            }
            if !late {
                clock.observe(&user, time);
            }
            by_user
                .entry(user)
                .or_default()
                .push((time, id, page, boundaries.of(&value)));
        }
    }
    for events in by_user.values_mut() {
        events.sort();
    }
    by_user
}

/// One user's events, in time order, cut into sessions; repeated event ids within `dedup` of
/// the first are dropped.
fn cut_sessions(
    events: Vec<Applied>,
    inactivity: u64,
    max_duration: u64,
    dedup: u64,
) -> Vec<Session> {
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut sessions: Vec<Session> = Vec::new();
    for (time, id, page, (starts, ends)) in events {
        if seen.get(&id).is_some_and(|t| t + dedup >= time) {
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
    sessions
}

/// A session's distinct pages in order of first visit, at most 64.
fn pages_of(events: &[(u64, Option<String>)]) -> Vec<String> {
    let mut pages: Vec<String> = Vec::new();
    for page in events.iter().filter_map(|e| e.1.clone()) {
        if pages.len() < 64 && !pages.contains(&page) {
            pages.push(page);
        }
    }
    pages
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

/// The records a partition's bytes make when every non-blank line is produced to Kafka.
pub fn records_of(partition: &[u8]) -> Vec<&[u8]> {
    partition
        .split(|b| *b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .collect()
}

/// The default reference for partitions produced to Kafka record by record ([`records_of`]): side
/// rows are named by (partition, offset) instead of line numbers.
pub fn kafka_reference(partitions: &[Vec<u8>]) -> Expected {
    let mut expected = default_reference(partitions);
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
    expected.position = Position::Offset;
    expected
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
        Sessionize::new("generate")
            .args([
                "--users",
                &users.to_string(),
                "--events",
                &events.to_string(),
            ])
            .args(["--seed", &seed.to_string()])
            .arg("--out")
            .arg(&path)
            .success();
        contents.push(std::fs::read(&path).unwrap());
        files.push(path);
    }
    (files, contents)
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
