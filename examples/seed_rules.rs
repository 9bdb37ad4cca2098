//! The rule check of the Spark job sessionize replaces, on the pure session rules: three users,
//! one with a 35-minute pause, one active for 3 hours without a pause, one with a short visit.
//! Prints the session summary table.
//!
//! ```text
//! cargo run --release --example seed_rules
//! ```

use sessionize::rules::{Boundary, ClosedSession, SessionRules, Sessionizer};

const MIN: u64 = 60_000;
/// 2026-03-01T10:00:00Z
const T0: u64 = 1_772_359_200_000;

/// The three users' events, `(user, event_id, page, minutes after T0)`.
fn events() -> Vec<(String, String, &'static str, u64)> {
    let mut events = Vec::new();
    // user_1: browses for 10 minutes, pauses 35 minutes, comes back.
    for (i, minute) in [0, 5, 10, 45, 50].into_iter().enumerate() {
        events.push(("user_1".into(), format!("u1-{i}"), "search", minute));
    }
    // user_2: an event every 5 minutes for 3 hours: the session splits at 2 hours.
    for i in 0..=36 {
        events.push(("user_2".into(), format!("u2-{i}"), "results", i * 5));
    }
    // user_3: a short visit.
    for (i, page) in ["home", "details", "cart"].into_iter().enumerate() {
        events.push(("user_3".into(), format!("u3-{i}"), page, i as u64 * 2));
    }
    events
}

/// The sessions under the default rules (30 minutes of inactivity, 2 hours at most).
fn sessions() -> Vec<ClosedSession> {
    let mut sessionizer = Sessionizer::new(SessionRules {
        inactivity_ms: 30 * MIN,
        max_duration_ms: 120 * MIN,
        dedup_window_ms: 10 * MIN,
    });
    let events = events();
    for (user, id, page, minute) in &events {
        sessionizer.push(
            user.as_str(),
            id.as_str(),
            Some(page),
            T0 + minute * MIN,
            Boundary::NONE,
        );
    }
    let last = events.iter().map(|e| T0 + e.3 * MIN).max().unwrap_or(T0);
    let mut closed = Vec::new();
    sessionizer.finish(last, usize::MAX, &mut closed);
    closed.sort_by_key(|s| (s.user_id.clone(), s.start_ms));
    closed
}

fn main() {
    println!(
        "{:<8} {:<36} {:>6} {:>6} {:>9} {:>7}  {:<12} pages",
        "user", "session_id", "start", "end", "duration", "events", "end_reason"
    );
    let minute = |ms: u64| format!("+{}m", (ms - T0) / MIN);
    for s in sessions() {
        println!(
            "{:<8} {:<36} {:>6} {:>6} {:>8}s {:>7}  {:<12} {}",
            s.user_id,
            s.session_id(),
            minute(s.start_ms),
            minute(s.end_ms),
            s.duration_seconds(),
            s.event_count,
            s.end_reason,
            s.pages_visited.join(",")
        );
    }
}

#[test]
fn the_seed_rule_check_holds() {
    let sessions = sessions();
    let of = |user: &str| -> Vec<&ClosedSession> {
        sessions.iter().filter(|s| &*s.user_id == user).collect()
    };
    // The 35-minute pause ends the first session.
    let user_1 = of("user_1");
    assert_eq!(user_1.len(), 2);
    assert_eq!((user_1[0].event_count, user_1[1].event_count), (3, 2));
    // Three hours of activity: no session longer than 2 hours, none lost.
    let user_2 = of("user_2");
    assert_eq!(user_2.len(), 2);
    assert!(user_2.iter().all(|s| s.end_ms - s.start_ms <= 120 * MIN));
    assert_eq!(user_2.iter().map(|s| s.event_count).sum::<u64>(), 37);
    assert_eq!(of("user_3").len(), 1);
}
