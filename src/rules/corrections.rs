//! Corrections: a late event within the horizon cuts its user's recent sessions again, as if it
//! had come on time.
//!
//! The rules are causal: what happens to an event depends only on the events before it. So the
//! sessions before the one holding the user's last event before the late one stand, and that
//! session starts as it did; from its first event on, the user's logged events and the late one
//! are applied again by a sessionizer of their own, seeded with the event ids the
//! de-duplication window still holds from before. Rows that come out different replace the old.

use super::history::LoggedEvent;
use super::{Boundary, ClosedSession, Sessionizer};

impl Sessionizer {
    /// Applies a late event (before the watermark, within [`Self::can_correct`]'s horizon) as if
    /// it had come on time. Rows that change are handed out: the rows written before in
    /// `retracted`, their replacements (marked [`ClosedSession::corrected`]) in `closed`; the
    /// user's open session is replaced if it changes. Returns `false`, doing nothing, when the
    /// user's open session predates the history (restored from a release without one).
    ///
    /// ```
    /// use sessionize::rules::{Boundary, SessionRules, Sessionizer};
    /// let rules = SessionRules { inactivity_ms: 30, max_duration_ms: 120, dedup_window_ms: 10 };
    /// let mut sessions = Sessionizer::new(rules).with_correction_horizon(1_000);
    /// sessions.push("u", "a", Some("home"), 0, Boundary::NONE);
    /// sessions.push("u", "c", Some("cart"), 50, Boundary::NONE);
    /// let (mut closed, mut retracted) = (Vec::new(), Vec::new());
    /// sessions.advance(200, &mut closed); // two sessions: the gap of 50 is over 30
    /// assert_eq!(closed.len(), 2);
    /// assert!(sessions.correct("u", "b", Some("search"), 25, Boundary::NONE, &mut closed, &mut retracted));
    /// assert_eq!(retracted.len(), 2); // both give way to one session of three events
    /// let merged = closed.last().unwrap();
    /// assert_eq!((merged.start_ms, merged.end_ms, merged.event_count, merged.corrected), (0, 50, 3, true));
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn correct(
        &mut self,
        user_id: &str,
        event_id: &str,
        page_name: Option<&str>,
        time_ms: u64,
        boundary: Boundary,
        closed: &mut Vec<ClosedSession>,
        retracted: &mut Vec<ClosedSession>,
    ) -> bool {
        debug_assert!(time_ms < self.watermark && self.can_correct(time_ms));
        let window = self.rules.dedup_window_ms;
        let histories = self.histories.as_ref().expect("corrections keep histories");
        let logged = histories.of(user_id);
        let open_logged = logged
            .as_ref()
            .is_some_and(|(_, s)| s.last().is_some_and(|s| s.end_reason.is_none()));
        if self.open.find(user_id).is_some() && !open_logged {
            return false;
        }
        let late = (time_ms, event_id);
        let (from, old_rows, replayed, seeds) = match logged {
            None => (0, Vec::new(), Vec::new(), Vec::new()),
            Some((user, sessions)) => {
                let from = sessions.iter().rposition(|s| s.first() < late).unwrap_or(0);
                let old_rows: Vec<ClosedSession> = sessions
                    .iter()
                    .skip(from)
                    .filter_map(|s| s.row(&user))
                    .collect();
                let replayed: Vec<LoggedEvent> = sessions
                    .iter()
                    .skip(from)
                    .flat_map(|s| s.events.iter().cloned())
                    .collect();
                let first_ms = replayed.first().map_or(time_ms, |e| e.time_ms.min(time_ms));
                let seeds: Vec<(Box<str>, u64)> = sessions
                    .iter()
                    .take(from)
                    .flat_map(|s| &s.events)
                    .filter(|e| !e.duplicate && e.time_ms.saturating_add(window) >= first_ms)
                    .map(|e| (e.event_id.clone(), e.time_ms))
                    .collect();
                (from, old_rows, replayed, seeds)
            }
        };

        let mut replay =
            Sessionizer::new(self.rules).with_correction_horizon(self.correction_horizon_ms);
        for (id, seen_ms) in &seeds {
            replay.remember_id(user_id, id, *seen_ms);
        }
        for e in &replayed {
            replay.push(
                user_id,
                &e.event_id,
                e.page.as_deref(),
                e.time_ms,
                e.boundary,
            );
        }
        replay.push(user_id, event_id, page_name, time_ms, boundary);
        let mut new_rows = Vec::new();
        replay.advance(self.watermark, &mut new_rows);
        let new_sessions = replay.histories.as_mut().expect("kept").take(user_id);
        let new_open = replay.open.remove(user_id);

        for old in old_rows {
            match new_rows.iter().position(|new| *new == old) {
                Some(same) => {
                    new_rows.swap_remove(same);
                }
                None => retracted.push(old),
            }
        }
        closed.extend(new_rows.into_iter().map(|row| ClosedSession {
            corrected: true,
            ..row
        }));

        // The de-duplication window: events the late one made duplicates no longer count, and
        // it and the others applied do.
        let watermark = self.watermark;
        let in_window: Vec<&LoggedEvent> = new_sessions
            .iter()
            .flat_map(|s| &s.events)
            .filter(|e| e.time_ms.saturating_add(window) >= watermark)
            .collect();
        for e in in_window.iter().filter(|e| e.duplicate) {
            self.forget_id(user_id, &e.event_id, e.time_ms);
        }
        for e in in_window.iter().filter(|e| !e.duplicate) {
            self.remember_id(user_id, &e.event_id, e.time_ms);
        }

        let history = self
            .histories
            .as_mut()
            .expect("corrections keep histories")
            .replace_from(user_id, from, new_sessions);
        match (self.open.find(user_id), new_open) {
            (_, Some((_, mut session))) => {
                session.changed = true;
                session.history = Some(history);
                let slot = self.open.insert(user_id, session);
                self.schedule(slot);
            }
            (Some(slot), None) => {
                let (user, _) = self.open.remove_slot(slot).expect("found");
                self.ended.push(&user);
            }
            (None, None) => {}
        }
        true
    }
}
