//! The session rules against a brute-force reference, by property tests, and their edge cases.

use std::collections::BTreeMap;

use super::*;
use proptest::prelude::*;

const MIN: u64 = 60_000;

/// `(user, event_id, page, time, boundary)`.
type Ev = (String, String, String, u64, Boundary);

fn rules() -> SessionRules {
    SessionRules {
        inactivity_ms: 30 * MIN,
        max_duration_ms: 120 * MIN,
        dedup_window_ms: 10 * MIN,
    }
}

/// Runs events (user, id, page, time) through a sessionizer in the given arrival order, with the
/// watermark following the earliest event not yet pushed.
fn run(rules: SessionRules, events: &[Ev]) -> Vec<ClosedSession> {
    let mut sessionizer = Sessionizer::new(rules);
    let mut closed = Vec::new();
    let max = events.iter().map(|e| e.3).max().unwrap_or(0);
    for (i, (user, id, page, time, boundary)) in events.iter().enumerate() {
        sessionizer.push(user.as_str(), id.as_str(), Some(page), *time, *boundary);
        let rest_min = events[i + 1..]
            .iter()
            .map(|e| e.3)
            .min()
            .unwrap_or(u64::MAX);
        sessionizer.advance(rest_min.min(max), &mut closed);
    }
    // A few sessions a call, as the dataflow closes them at the end of the input.
    while !sessionizer.finish(max, 2, &mut closed) {}
    closed.sort();
    closed
}

/// The rules, written as plainly as possible: sort each user's events, drop duplicates, cut.
fn reference(rules: SessionRules, events: &[Ev]) -> Vec<ClosedSession> {
    let max = events.iter().map(|e| e.3).max().unwrap_or(0);
    let mut by_user: BTreeMap<&str, Vec<(u64, &str, &str, Boundary)>> = BTreeMap::new();
    for (user, id, page, time, boundary) in events {
        by_user
            .entry(user)
            .or_default()
            .push((*time, id, page, *boundary));
    }
    let mut out = Vec::new();
    for (user, mut evs) in by_user {
        evs.sort();
        let mut applied: Vec<(u64, &str)> = Vec::new();
        let mut kept = Vec::new();
        for (time, id, page, boundary) in evs {
            let dup = applied
                .iter()
                .any(|(t, i)| *i == id && *t + rules.dedup_window_ms >= time);
            if !dup {
                applied.push((time, id));
                kept.push((time, page, boundary));
            }
        }
        // Each session's (time, page) events with the reason it ended, `None` while open.
        type Cut<'a> = (Vec<(u64, &'a str)>, Option<EndReason>);
        let mut sessions: Vec<Cut> = Vec::new();
        for (time, page, boundary) in kept {
            let open = sessions.last_mut().filter(|(_, reason)| reason.is_none());
            match open {
                Some((s, reason)) if time - s.last().unwrap().0 > rules.inactivity_ms => {
                    *reason = Some(EndReason::Inactivity);
                    sessions.push((vec![(time, page)], None));
                }
                Some((s, reason)) if time - s[0].0 > rules.max_duration_ms => {
                    *reason = Some(EndReason::MaxDuration);
                    sessions.push((vec![(time, page)], None));
                }
                Some((_, reason)) if boundary.starts => {
                    *reason = Some(EndReason::Boundary);
                    sessions.push((vec![(time, page)], None));
                }
                Some((s, _)) => s.push((time, page)),
                None => sessions.push((vec![(time, page)], None)),
            }
            if boundary.ends {
                sessions.last_mut().unwrap().1 = Some(EndReason::Boundary);
            }
        }
        for (session, end_reason) in sessions {
            let end_reason = end_reason.unwrap_or_else(|| {
                if session.last().unwrap().0 + rules.inactivity_ms < max {
                    EndReason::Inactivity
                } else {
                    EndReason::EndOfInput
                }
            });
            let mut pages: Vec<Rc<str>> = Vec::new();
            for (_, page) in &session {
                if pages.len() < MAX_PAGES_PER_SESSION && !pages.iter().any(|p| &**p == *page) {
                    pages.push((*page).into());
                }
            }
            out.push(ClosedSession {
                user_id: user.into(),
                start_ms: session[0].0,
                end_ms: session.last().unwrap().0,
                event_count: session.len() as u64,
                pages_visited: pages,
                end_reason,
                corrected: false,
            });
        }
    }
    out.sort();
    out
}

fn ev(user: &str, id: &str, time: u64) -> Ev {
    (
        user.into(),
        id.into(),
        format!("p{}", time % 3),
        time,
        Boundary::NONE,
    )
}

#[test]
fn gap_equal_to_inactivity_stays_in_the_session() {
    let events = [
        ev("u", "a", 0),
        ev("u", "b", 30 * MIN),
        ev("u", "c", 60 * MIN + 1),
    ];
    let closed = run(rules(), &events);
    assert_eq!(closed.len(), 2);
    assert_eq!((closed[0].start_ms, closed[0].end_ms), (0, 30 * MIN));
    assert_eq!(closed[0].end_reason, EndReason::Inactivity);
    assert_eq!(closed[1].start_ms, 60 * MIN + 1);
    assert_eq!(closed, reference(rules(), &events));
}

#[test]
fn splits_at_max_duration_measured_from_each_new_start() {
    // An event every 20 minutes for 5 hours: splits at 2 h, then 2 h after the new start.
    let events: Vec<_> = (0..=15)
        .map(|i| ev("u", &format!("e{i}"), i * 20 * MIN))
        .collect();
    let closed = run(rules(), &events);
    let starts: Vec<u64> = closed.iter().map(|s| s.start_ms / MIN).collect();
    assert_eq!(starts, [0, 140, 280]);
    assert_eq!(closed[0].end_ms, 120 * MIN);
    assert_eq!(closed[0].end_reason, EndReason::MaxDuration);
    assert_eq!(closed[2].end_reason, EndReason::EndOfInput);
    assert_eq!(closed, reference(rules(), &events));
}

#[test]
fn duplicates_within_the_window_apply_once() {
    let events = [
        ev("u", "a", 0),
        ev("u", "a", 0),
        ev("u", "a", 10 * MIN),
        ev("u", "a", 20 * MIN + 1),
    ];
    let closed = run(rules(), &events);
    assert_eq!(closed[0].event_count, 2);
    assert_eq!(closed, reference(rules(), &events));
}

fn marked(user: &str, id: &str, time: u64, starts: bool, ends: bool) -> Ev {
    let mut event = ev(user, id, time);
    event.4 = Boundary { starts, ends };
    event
}

#[test]
fn a_logout_ends_its_session_after_itself() {
    let events = [
        ev("u", "a", 0),
        marked("u", "logout", MIN, false, true),
        ev("u", "b", 2 * MIN),
    ];
    let closed = run(rules(), &events);
    assert_eq!(closed.len(), 2);
    assert_eq!((closed[0].event_count, closed[0].end_ms), (2, MIN));
    assert_eq!(closed[0].end_reason, EndReason::Boundary);
    assert_eq!(closed[1].start_ms, 2 * MIN);
    assert_eq!(closed, reference(rules(), &events));
}

#[test]
fn a_login_starts_a_session_before_itself() {
    let events = [
        ev("u", "a", 0),
        marked("u", "login", MIN, true, false),
        ev("u", "b", 2 * MIN),
    ];
    let closed = run(rules(), &events);
    assert_eq!(closed.len(), 2);
    assert_eq!(
        (closed[0].event_count, closed[0].end_reason),
        (1, EndReason::Boundary)
    );
    assert_eq!((closed[1].start_ms, closed[1].event_count), (MIN, 2));
    assert_eq!(closed, reference(rules(), &events));
}

#[test]
fn time_rules_come_before_boundaries() {
    let events = [ev("u", "a", 0), marked("u", "login", 31 * MIN, true, false)];
    let closed = run(rules(), &events);
    assert_eq!(closed[0].end_reason, EndReason::Inactivity);
    assert_eq!(closed, reference(rules(), &events));
}

#[test]
fn session_ids_are_deterministic_and_distinct() {
    assert_eq!(session_id("u", 5), session_id("u", 5));
    assert_ne!(session_id("u", 5), session_id("u", 6));
    assert_ne!(session_id("u1", 5), session_id("u", 15));
    assert_eq!(session_id("u", 5).get_version_num(), 5);
}

#[test]
#[should_panic(expected = "after watermark")]
fn refuses_events_behind_the_watermark() {
    let mut s = Sessionizer::new(rules());
    s.advance(100, &mut Vec::new());
    s.push("u", "a", None, 99, Boundary::NONE);
}

fn arb_events() -> impl Strategy<Value = Vec<Ev>> {
    // Few users and ids, times clustered around the limits, so that boundaries and
    // duplicates are common.
    let step = prop_oneof![
        Just(0u64),
        Just(1),
        Just(10 * MIN),
        Just(30 * MIN),
        Just(30 * MIN + 1),
        Just(120 * MIN),
        0..40 * MIN,
    ];
    // Most events mark no boundary; the others any of the three kinds.
    let boundary = prop_oneof![
        6 => Just(Boundary::NONE),
        1 => Just(Boundary { starts: true, ends: false }),
        1 => Just(Boundary { starts: false, ends: true }),
        1 => Just(Boundary { starts: true, ends: true }),
    ];
    proptest::collection::vec((0..4u8, 0..12u8, step, boundary), 1..60).prop_map(|raw| {
        let mut time = 0;
        raw.into_iter()
            .map(|(user, id, step, boundary)| {
                time += step;
                let time = time.saturating_sub((step % 7) * MIN); // some disorder
                (
                    format!("u{user}"),
                    format!("e{id}"),
                    format!("p{}", id % 5),
                    time,
                    boundary,
                )
            })
            .collect()
    })
}

/// Like [`run`], but the events run in stages, each on its own number of workers that split the
/// users between them: a stage starts from the checkpoints the stages before it wrote (encoded
/// and decoded, as a restart reads them) and writes one at its end, full or amending the one
/// before, as a run that is restarted with other numbers of workers does.
fn run_with_restarts(
    rules: SessionRules,
    events: &[Ev],
    stages: &[(usize, u64, bool)],
) -> Vec<ClosedSession> {
    run_correcting(rules, events, stages, None)
}

/// Like [`run_with_restarts`]; with a `lateness`, the watermark trails the newest event pushed by
/// it, and the events behind it are corrections: the result is the table the rows and
/// retractions leave.
fn run_correcting(
    rules: SessionRules,
    events: &[Ev],
    stages: &[(usize, u64, bool)],
    lateness: Option<u64>,
) -> Vec<ClosedSession> {
    let max = events.iter().map(|e| e.3).max().unwrap_or(0);
    let watermark_after = |i: usize| match lateness {
        None => {
            let rest_min = events[i + 1..].iter().map(|e| e.3).min();
            rest_min.unwrap_or(u64::MAX).min(max)
        }
        Some(lateness) => {
            let newest = events[..=i].iter().map(|e| e.3).max().unwrap_or(0);
            newest.saturating_sub(lateness)
        }
    };
    let horizon = if lateness.is_some() { u64::MAX / 4 } else { 0 };
    let mut closed = Vec::new();
    let mut retracted = Vec::new();
    // Each checkpoint: every worker's encoded part; the newest last, back to a full one.
    let mut chain: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut next = 0;
    for (stage, &(cut, workers, full)) in stages.iter().enumerate() {
        let worker_of = |user: &str| xxhash_rust::xxh3::xxh3_64(user.as_bytes()) % workers;
        let mut sessionizers: Vec<Sessionizer> = (0..workers)
            .map(|worker| {
                let mut sessionizer = Sessionizer::new(rules).with_correction_horizon(horizon);
                for parts in &chain {
                    let writers = parts.len() as u64;
                    for (writer, part) in (0..).zip(parts) {
                        let state: SessionizerState = bincode::deserialize(part).unwrap();
                        if !state.full {
                            sessionizer.forget_applied(state.watermark, |user| {
                                xxhash_rust::xxh3::xxh3_64(user.as_bytes()) % writers == writer
                            });
                        }
                        sessionizer.restore(state, |user| worker_of(user) == worker);
                    }
                }
                sessionizer
            })
            .collect();
        let last_stage = stage + 1 == stages.len();
        let end = if last_stage {
            events.len()
        } else {
            cut.max(next)
        };
        for (i, (user, id, page, time, boundary)) in events.iter().enumerate().take(end).skip(next)
        {
            let sessionizer = &mut sessionizers[worker_of(user) as usize];
            if *time >= sessionizer.watermark() {
                sessionizer.push(user.as_str(), id.as_str(), Some(page), *time, *boundary);
            } else {
                let (user, id) = (user.as_str(), id.as_str());
                let (page, boundary) = (Some(page.as_str()), *boundary);
                assert!(sessionizer.correct(
                    user,
                    id,
                    page,
                    *time,
                    boundary,
                    &mut closed,
                    &mut retracted
                ));
            }
            for sessionizer in &mut sessionizers {
                sessionizer.advance(watermark_after(i), &mut closed);
            }
        }
        next = end;
        if last_stage {
            for sessionizer in &mut sessionizers {
                assert!(sessionizer.finish(max, usize::MAX, &mut closed));
            }
        } else {
            // The borrowed view must read back as the owned state.
            let parts = sessionizers
                .iter_mut()
                .map(|sessionizer| {
                    let part = bincode::serialize(&sessionizer.checkpoint(full)).unwrap();
                    sessionizer.saved();
                    part
                })
                .collect();
            if full {
                chain.clear();
            }
            chain.push(parts);
        }
    }
    let mut table: Vec<ClosedSession> = closed
        .into_iter()
        .map(|row| ClosedSession {
            corrected: false,
            ..row
        })
        .collect();
    for gone in retracted {
        let at = table.iter().position(|row| *row == gone);
        table.swap_remove(at.expect("a retraction names a row given out before"));
    }
    table.sort();
    table
}

proptest! {
    #[test]
    fn matches_the_reference_in_any_arrival_order(
        events in arb_events(),
        seed in any::<u64>(),
    ) {
        let mut shuffled = events.clone();
        // A deterministic shuffle driven by the seed.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(run(rules(), &shuffled), reference(rules(), &events));
    }

    #[test]
    fn a_restore_on_other_workers_changes_nothing(
        events in arb_events(),
        cut_fraction in 0.0f64..=1.0,
        workers in 1u64..4,
    ) {
        let cut = (events.len() as f64 * cut_fraction) as usize;
        prop_assert_eq!(
            run_with_restarts(rules(), &events, &[(cut, 2, true), (0, workers, true)]),
            reference(rules(), &events)
        );
    }

    #[test]
    fn checkpoints_that_amend_restore_as_a_full_one(
        events in arb_events(),
        stages in proptest::collection::vec((0.0f64..=1.0, 1u64..4, proptest::bool::weighted(0.3)), 1..6),
        workers in 1u64..4,
    ) {
        let mut stages: Vec<(usize, u64, bool)> = stages
            .into_iter()
            .map(|(at, workers, full)| ((events.len() as f64 * at) as usize, workers, full))
            .collect();
        stages.sort_by_key(|stage| stage.0);
        stages.push((events.len(), workers, false));
        prop_assert_eq!(
            run_with_restarts(rules(), &events, &stages),
            reference(rules(), &events)
        );
        // Without de-duplication, an event restored twice would count twice.
        let tight = SessionRules { inactivity_ms: MIN, max_duration_ms: 3 * MIN, dedup_window_ms: 0 };
        prop_assert_eq!(run_with_restarts(tight, &events, &stages), reference(tight, &events));
    }

    #[test]
    fn late_events_correct_their_sessions_as_if_on_time(
        events in arb_events(),
        seed in any::<u64>(),
        lateness in prop_oneof![Just(0u64), Just(MIN), 0..3 * 60 * MIN],
        stages in proptest::collection::vec((0.0f64..=1.0, 1u64..4, proptest::bool::weighted(0.3)), 0..4),
        workers in 1u64..4,
    ) {
        let mut arrival = events.clone();
        let mut state = seed | 1;
        for i in (1..arrival.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            arrival.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let mut stages: Vec<(usize, u64, bool)> = stages
            .into_iter()
            .map(|(at, workers, full)| ((events.len() as f64 * at) as usize, workers, full))
            .collect();
        stages.sort_by_key(|stage| stage.0);
        stages.push((events.len(), workers, stages.is_empty()));
        prop_assert_eq!(
            run_correcting(rules(), &arrival, &stages, Some(lateness)),
            reference(rules(), &events)
        );
        let tight = SessionRules { inactivity_ms: MIN, max_duration_ms: 3 * MIN, dedup_window_ms: 2 * MIN };
        prop_assert_eq!(
            run_correcting(tight, &arrival, &stages, Some(lateness)),
            reference(tight, &events)
        );
    }

    #[test]
    fn tight_limits_match_the_reference(events in arb_events()) {
        let tight = SessionRules { inactivity_ms: MIN, max_duration_ms: 3 * MIN, dedup_window_ms: 0 };
        prop_assert_eq!(run(tight, &events), reference(tight, &events));
    }
}
