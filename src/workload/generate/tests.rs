//! The generator's promises, checked on generated streams: the mix of lines, reproducibility,
//! event-time order within the disorder bound, and the edge cases the sessionizer must meet.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use serde_json::Value;

use super::*;

/// Rates well above the defaults, so that a short stream has plenty of each kind of line.
fn noisy(users: u64, events: u64) -> GenerateConfig {
    GenerateConfig {
        users,
        events,
        seed: 7,
        malformed_per_million: 5_000,
        duplicate_per_million: 20_000,
        hours_late_per_million: 2_000,
        ..GenerateConfig::default()
    }
}

fn run(config: &GenerateConfig) -> (Vec<u8>, GenerateStats) {
    let mut out = Vec::new();
    let stats = generate(config, &mut out).unwrap();
    (out, stats)
}

fn lines(out: &[u8]) -> Vec<&[u8]> {
    assert_eq!(out.last(), Some(&b'\n'));
    out[..out.len() - 1].split(|&b| b == b'\n').collect()
}

struct Valid {
    user: String,
    id: String,
    time: u64,
}

/// The shape of an event line; strings borrow, as the generator never escapes.
#[derive(serde::Deserialize)]
struct Line<'a> {
    event_id: &'a str,
    page_name: &'a str,
    uuid: Option<&'a str>,
    event_timestamp: Option<Value>,
    booking_details: Value,
    event_details: Value,
}

/// What the sessionizer would accept, judged independently of the generator's own bookkeeping.
fn parse_valid(line: &[u8]) -> Option<Valid> {
    let line: Line = serde_json::from_slice(line).ok()?;
    let user = line.uuid.filter(|u| !u.is_empty())?;
    let time = match line.event_timestamp? {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) if s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok()?,
        _ => return None,
    };
    let details = line.event_details.as_object()?;
    for field in ["event_name", "event_type", "event_value"] {
        assert!(details.contains_key(field), "{field} of {}", line.event_id);
    }
    assert!(!line.page_name.is_empty() && !line.booking_details.is_array());
    (time < YEAR_2100_MS).then(|| Valid {
        user: user.to_owned(),
        id: line.event_id.to_owned(),
        time,
    })
}

/// One stream, generated and parsed once for all the tests that only read it.
struct Sample {
    config: GenerateConfig,
    out: Vec<u8>,
    stats: GenerateStats,
    /// The valid-looking event of each line, if any.
    parsed: Vec<Option<Valid>>,
}

fn sample() -> &'static Sample {
    static SAMPLE: OnceLock<Sample> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let config = noisy(200, 50_000);
        let (out, stats) = run(&config);
        let parsed = lines(&out).into_iter().map(parse_valid).collect();
        Sample {
            config,
            out,
            stats,
            parsed,
        }
    })
}

#[test]
fn same_config_same_bytes() {
    let sample = sample();
    let again = run(&sample.config);
    assert!(again.0 == sample.out && again.1 == sample.stats);
    let other_seed = GenerateConfig {
        seed: sample.config.seed + 1,
        events: 1_000,
        ..sample.config.clone()
    };
    assert!(!sample.out.starts_with(&run(&other_seed).0));
}

#[test]
fn writes_exactly_the_requested_lines() {
    let Sample {
        config, out, stats, ..
    } = sample();
    assert_eq!(lines(out).len() as u64, config.events);
    assert_eq!(stats.lines, config.events);
    assert_eq!(
        stats.lines,
        stats.valid + stats.malformed + stats.duplicates + stats.hours_late
    );
    assert!(stats.malformed > 100 && stats.duplicates > 500 && stats.hours_late > 30);

    let none = GenerateConfig {
        events: 0,
        ..GenerateConfig::default()
    };
    assert_eq!(run(&none), (Vec::new(), GenerateStats::default()));
    let no_users = GenerateConfig {
        users: 0,
        ..GenerateConfig::default()
    };
    assert!(generate(&no_users, &mut Vec::new()).is_err());
}

/// Classifies every line from its content alone and checks the result against the stats: the
/// malformed lines are rejected, duplicates repeat an earlier line exactly and soon after, the
/// hours-late events are hours behind, and every other event is within the disorder bound.
#[test]
fn lines_are_what_the_stats_say() {
    let sample = sample();
    let max_disorder = sample.config.max_disorder_ms;
    let mut seen: HashMap<&str, &[u8]> = HashMap::new();
    let mut users = HashSet::new();
    let mut counted = GenerateStats::default();
    let mut stream_ms = 0u64;
    let mut earliest = u64::MAX;
    for (line, parsed) in lines(&sample.out).into_iter().zip(&sample.parsed) {
        counted.lines += 1;
        let Some(event) = parsed else {
            counted.malformed += 1;
            continue;
        };
        let behind = stream_ms.saturating_sub(event.time);
        if let Some(original) = seen.insert(&event.id, line) {
            assert_eq!(original, line);
            assert!(behind <= max_disorder + 60_000, "{behind}");
            counted.duplicates += 1;
        } else if behind > HOUR_MS {
            assert!((HOURS_LATE_MIN_MS..=HOURS_LATE_MAX_MS).contains(&behind));
            counted.hours_late += 1;
        } else {
            assert!(behind <= max_disorder, "{behind}");
            counted.valid += 1;
            stream_ms = stream_ms.max(event.time);
        }
        earliest = earliest.min(event.time);
        users.insert(&event.user);
    }
    assert_eq!(counted, sample.stats);
    assert_eq!(earliest, sample.config.start_ms);
    let users = users.len() as u64;
    assert!(users <= sample.config.users && users > sample.config.users / 2);
}

#[test]
fn zero_disorder_is_event_time_order() {
    let config = GenerateConfig {
        max_disorder_ms: 0,
        duplicate_per_million: 0,
        hours_late_per_million: 0,
        ..noisy(50, 5_000)
    };
    let (out, _) = run(&config);
    let times: Vec<u64> = lines(&out)
        .into_iter()
        .filter_map(parse_valid)
        .map(|e| e.time)
        .collect();
    assert!(times.len() > 4_900 && times.is_sorted());
}

#[test]
fn every_kind_of_malformed_line_appears() {
    let lines = lines(&sample().out);
    let has = |needle: &[u8]| {
        lines
            .iter()
            .any(|l| l.windows(needle.len()).any(|w| w == needle))
    };
    let object_without = |field: &[u8]| {
        lines
            .iter()
            .any(|l| l.starts_with(b"{") && !l.windows(field.len()).any(|w| w == field))
    };
    assert!(lines.iter().any(|l| std::str::from_utf8(l).is_err()));
    assert!(lines.iter().any(|l| !l.starts_with(b"{")));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(b"{") && !l.ends_with(b"}"))
    );
    assert!(has(b"\"uuid\":\"\""));
    assert!(has(b"\"event_timestamp\":\"abc\""));
    assert!(has(b"\"event_timestamp\":-5"));
    assert!(has(b"\"event_timestamp\":41") || has(b"\"event_timestamp\":\"41"));
    assert!(has(b"\"event_details\":\"click\""));
    assert!(object_without(b"\"uuid\""));
    assert!(object_without(b"\"event_timestamp\""));
}

/// The boundary cases of the session rules must show up even in a modest stream.
#[test]
fn boundary_gaps_and_marathons_appear() {
    let mut by_user: HashMap<&str, Vec<u64>> = HashMap::new();
    let mut seen = HashSet::new();
    let mut stream_ms = 0;
    for event in sample().parsed.iter().flatten() {
        // Only first-seen, on-time events: duplicates and hours-late ones are not user behaviour.
        if seen.insert(&event.id) && event.time + HOUR_MS >= stream_ms {
            stream_ms = stream_ms.max(event.time);
            by_user.entry(&event.user).or_default().push(event.time);
        }
    }
    let (mut exact, mut just_over, mut marathon_users) = (0, 0, 0);
    for times in by_user.values_mut() {
        times.sort_unstable();
        let (mut run_start, mut longest_run) = (times[0], 0);
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            exact += usize::from(gap == INACTIVITY_MS);
            just_over += usize::from(gap == INACTIVITY_MS + 1);
            if gap >= INACTIVITY_MS {
                run_start = pair[1];
            }
            longest_run = longest_run.max(pair[1] - run_start);
        }
        marathon_users += usize::from(longest_run > 2 * HOUR_MS);
    }
    assert!(exact > 10 && just_over > 10, "{exact} {just_over}");
    assert!(marathon_users > 3, "{marathon_users}");
}
