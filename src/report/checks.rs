//! The rule checks of the Spark job sessionize replaced, run on the committed sessions: what each
//! can prove from the table's columns, and what it cannot.

use std::collections::BTreeMap;

use super::{Rules, SessionFacts};

/// The outcome of one rule check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    /// Rows or pairs checked, and how many broke the rule.
    pub checked: u64,
    pub violations: u64,
    /// What passing shows, and what it cannot.
    pub proves: &'static str,
    pub cannot: &'static str,
}

/// The rule checks the seed job printed, on what the sessions table holds. Each says what it can
/// prove from the table's columns: the table has each session's first and last event time and
/// event count, not the times of the events in between.
pub fn rule_checks(sessions: &[SessionFacts], rules: Rules) -> Vec<Check> {
    let longer = sessions
        .iter()
        .filter(|s| s.end_ms - s.start_ms > rules.max_duration_ms)
        .count() as u64;
    // If every gap is at most the timeout, n events span at most (n - 1) timeouts.
    let spread = sessions
        .iter()
        .filter(|s| s.end_ms - s.start_ms > (s.event_count - 1).max(0) * rules.inactivity_ms)
        .count() as u64;
    let mut by_user: BTreeMap<&str, Vec<&SessionFacts>> = BTreeMap::new();
    for session in sessions {
        by_user.entry(&session.user_id).or_default().push(session);
    }
    let (mut pairs, mut overlaps, mut inactivity_pairs, mut short_gaps) = (0, 0, 0, 0);
    let (mut duration_pairs, mut early_cuts) = (0, 0);
    for user_sessions in by_user.values_mut() {
        user_sessions.sort_by_key(|s| (s.start_ms, s.end_ms));
        for pair in user_sessions.windows(2) {
            let (before, after) = (pair[0], pair[1]);
            pairs += 1;
            overlaps += u64::from(after.start_ms <= before.end_ms);
            match before.end_reason.as_str() {
                "inactivity" => {
                    inactivity_pairs += 1;
                    short_gaps += u64::from(after.start_ms - before.end_ms <= rules.inactivity_ms);
                }
                "max_duration" => {
                    duration_pairs += 1;
                    early_cuts +=
                        u64::from(after.start_ms - before.start_ms <= rules.max_duration_ms);
                }
                _ => {}
            }
        }
    }
    vec![
        Check {
            name: "no session longer than the maximum duration",
            checked: sessions.len() as u64,
            violations: longer,
            proves: "every committed session's last event is within the maximum duration of its \
                     first (both times are columns, so this is exact)",
            cannot: "nothing about sessions still open (they are in the checkpoint, not the table)",
        },
        Check {
            name: "no gap inside a session above the inactivity timeout (necessary condition)",
            checked: sessions.len() as u64,
            violations: spread,
            proves: "a violation proves a gap above the timeout: n events spanning more than \
                     n − 1 timeouts must have one",
            cannot: "passing does not prove there is none: the table keeps no per-event times, \
                     and one long gap among quick events fits within n − 1 timeouts",
        },
        Check {
            name: "a session ended by inactivity is followed by a gap above the timeout",
            checked: inactivity_pairs,
            violations: short_gaps,
            proves: "every inactivity cut with a later session of the same user in the table \
                     was justified: the next event came more than the timeout later",
            cannot: "a user's last session has no successor to check against",
        },
        Check {
            name: "a session cut at the maximum duration is followed by an event past it",
            checked: duration_pairs,
            violations: early_cuts,
            proves: "no session was cut before its maximum duration had passed",
            cannot: "whether the cut event belonged there (per-event times are not kept)",
        },
        Check {
            name: "sessions of a user never overlap",
            checked: pairs,
            violations: overlaps,
            proves: "each event went to one session; a replay appended twice would show here",
            cannot: "events lost entirely (compare counts with the input for that)",
        },
    ]
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::report) const MIN: i64 = 60_000;

    pub(in crate::report) fn session(
        user: &str,
        start: i64,
        end: i64,
        events: i64,
        reason: &str,
    ) -> SessionFacts {
        SessionFacts {
            user_id: user.into(),
            start_ms: start,
            end_ms: end,
            duration_s: (end - start) / 1000,
            event_count: events,
            pages: 2,
            end_reason: reason.into(),
        }
    }

    pub(in crate::report) const RULES: Rules = Rules {
        inactivity_ms: 30 * MIN,
        max_duration_ms: 120 * MIN,
    };

    #[test]
    fn the_checks_pass_on_sessions_cut_by_the_rules() {
        // The seed's three users: a 35-minute pause, 3 hours of activity, a short visit.
        let sessions = [
            session("user_1", 0, 10 * MIN, 3, "inactivity"),
            session("user_1", 45 * MIN, 50 * MIN, 2, "end_of_input"),
            session("user_2", 0, 120 * MIN, 25, "max_duration"),
            session("user_2", 125 * MIN, 180 * MIN, 12, "end_of_input"),
            session("user_3", 0, 4 * MIN, 3, "end_of_input"),
        ];
        let checks = rule_checks(&sessions, RULES);
        assert!(checks.iter().all(|c| c.violations == 0), "{checks:?}");
        assert_eq!(checks[2].checked, 1);
        assert_eq!(checks[3].checked, 1);
        assert_eq!(checks[4].checked, 2);
    }

    #[test]
    fn the_checks_find_what_breaks_the_rules() {
        let sessions = [
            session("a", 0, 121 * MIN, 100, "max_duration"), // too long
            session("a", 122 * MIN, 123 * MIN, 2, "inactivity"),
            session("a", 130 * MIN, 131 * MIN, 2, "end_of_input"), // only 7 min after
            session("b", 0, 61 * MIN, 3, "end_of_input"),          // 3 events over 61 minutes
            session("d", 0, 60 * MIN, 40, "max_duration"),         // cut an hour early:
            session("d", 100 * MIN, 110 * MIN, 2, "end_of_input"), // 100 min after its start
            session("c", 0, 10 * MIN, 2, "end_of_input"),
            session("c", 5 * MIN, 20 * MIN, 2, "end_of_input"), // overlaps
        ];
        let violations: Vec<u64> = rule_checks(&sessions, RULES)
            .iter()
            .map(|c| c.violations)
            .collect();
        assert_eq!(violations, [1, 1, 1, 1, 1]);
    }
}
