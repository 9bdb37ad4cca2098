//! [`Histories`]: the events each user's recent sessions were made of, so that a late event can
//! cut them again ([`super::Sessionizer::correct`]).
//!
//! Summaries are not enough to correct a session exactly: an event before a session's start
//! moves where its maximum-duration splits fall, and so which session each later event belongs
//! to; a page seen earlier moves ahead in the order of first visits; an event id seen again
//! turns a later event into a duplicate. So the history keeps every applied event (duplicates
//! too, flagged) of the sessions that a late event within the horizon can still reach, grouped by
//! session, and forgets whole sessions once they are out of reach.

use std::collections::VecDeque;
use std::rc::Rc;

use foldhash::fast::RandomState;
use hashbrown::HashMap;

use super::{
    Boundary, ClosedSession, EndReason, MAX_PAGES_PER_SESSION, SavedHistory, SavedLoggedEvent,
    SavedLoggedSession,
};

/// An applied event as a history keeps it.
#[derive(Debug, Clone)]
pub(super) struct LoggedEvent {
    pub time_ms: u64,
    pub event_id: Box<str>,
    pub page: Option<Rc<str>>,
    pub boundary: Boundary,
    /// Dropped as a duplicate when applied: no part of its session, but a late event can change
    /// that.
    pub duplicate: bool,
}

/// A session of a history: its events in the order they were applied, the first one starting it.
#[derive(Debug, Clone)]
pub(super) struct LoggedSession {
    pub events: Vec<LoggedEvent>,
    /// `None` while the session is open.
    pub end_reason: Option<EndReason>,
}

impl LoggedSession {
    /// The `(time, event_id)` its first event was applied at.
    pub fn first(&self) -> (u64, &str) {
        let first = &self.events[0];
        (first.time_ms, &first.event_id)
    }

    fn last_ms(&self) -> u64 {
        self.applied().last().map_or(0, |e| e.time_ms)
    }

    fn applied(&self) -> impl DoubleEndedIterator<Item = &LoggedEvent> {
        self.events.iter().filter(|e| !e.duplicate)
    }

    /// Its row, as the sessionizer wrote it when the session closed; `None` while it is open.
    pub fn row(&self, user_id: &Rc<str>) -> Option<ClosedSession> {
        let end_reason = self.end_reason?;
        let mut pages_visited: Vec<Rc<str>> = Vec::new();
        for page in self.applied().filter_map(|e| e.page.as_ref()) {
            if pages_visited.len() < MAX_PAGES_PER_SESSION && !pages_visited.contains(page) {
                pages_visited.push(Rc::clone(page));
            }
        }
        Some(ClosedSession {
            user_id: Rc::clone(user_id),
            start_ms: self.first().0,
            end_ms: self.last_ms(),
            event_count: self.applied().count() as u64,
            pages_visited,
            end_reason,
            corrected: false,
        })
    }
}

/// The histories of a sessionizer's users. See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Histories {
    users: HashMap<Rc<str>, History, RandomState>,
    /// Users whose history changed since the last checkpoint was saved, each once.
    changed: Vec<Rc<str>>,
}

#[derive(Debug, Default)]
struct History {
    sessions: VecDeque<LoggedSession>,
    /// Listed in `Histories::changed`.
    changed: bool,
}

impl Histories {
    /// A user's sessions, oldest first, with their user id as the histories hold it.
    pub fn of(&self, user_id: &str) -> Option<(&Rc<str>, &VecDeque<LoggedSession>)> {
        let (user, history) = self.users.get_key_value(user_id)?;
        Some((user, &history.sessions))
    }

    /// An event that starts a session of the user.
    pub fn start(&mut self, user_id: &str, event: LoggedEvent) {
        let sessions = self.sessions_mut(user_id);
        sessions.push_back(LoggedSession {
            events: vec![event],
            end_reason: None,
        });
    }

    /// An event applied to the user's open session, or dropped as a duplicate.
    pub fn append(&mut self, user_id: &str, event: LoggedEvent) {
        // A duplicate of a user without a session left is a duplicate of an event forgotten
        // already: no correction can reach either.
        if let Some(open) = self.sessions_mut(user_id).back_mut() {
            open.events.push(event);
        }
    }

    /// The user's open session ended.
    pub fn end(&mut self, user_id: &str, reason: EndReason) {
        if let Some(open) = self.sessions_mut(user_id).back_mut() {
            open.end_reason = Some(reason);
        }
    }

    /// Replaces the user's sessions from the `from`-th on (all of them, past the end).
    pub fn replace_from(&mut self, user_id: &str, from: usize, sessions: VecDeque<LoggedSession>) {
        let kept = self.sessions_mut(user_id);
        kept.truncate(from);
        kept.extend(sessions);
    }

    /// Takes a user's sessions out.
    pub fn take(&mut self, user_id: &str) -> VecDeque<LoggedSession> {
        self.users
            .remove(user_id)
            .map(|h| h.sessions)
            .unwrap_or_default()
    }

    /// Forgets the closed sessions whose last event is before `before_ms`, which no late event
    /// the sessionizer still corrects can reach.
    pub fn forget_before(&mut self, before_ms: u64) {
        self.users.retain(|_, History { sessions, .. }| {
            while sessions
                .front()
                .is_some_and(|s| s.end_reason.is_some() && s.last_ms() < before_ms)
            {
                sessions.pop_front();
            }
            !sessions.is_empty()
        });
    }

    /// The histories for a checkpoint: all of them, or those changed since the last saved.
    pub fn to_save(&self, full: bool) -> Vec<SavedHistory> {
        let save = |user: &Rc<str>, sessions: &VecDeque<LoggedSession>| SavedHistory {
            user_id: user.to_string(),
            sessions: sessions.iter().map(save_session).collect(),
        };
        if full {
            self.users
                .iter()
                .map(|(user, history)| save(user, &history.sessions))
                .collect()
        } else {
            // A user forgotten since is saved without sessions, which forgets it on restore.
            let none = VecDeque::new();
            self.changed
                .iter()
                .map(|user| save(user, self.users.get(user).map_or(&none, |h| &h.sessions)))
                .collect()
        }
    }

    pub fn saved(&mut self) {
        for user in self.changed.drain(..) {
            if let Some(history) = self.users.get_mut(&user) {
                history.changed = false;
            }
        }
    }

    /// Restores a saved history in place of the user's.
    pub fn restore(&mut self, saved: SavedHistory, intern: &mut impl FnMut(&str) -> Rc<str>) {
        let sessions: VecDeque<LoggedSession> = saved
            .sessions
            .into_iter()
            .map(|session| LoggedSession {
                end_reason: session.end_reason,
                events: session
                    .events
                    .into_iter()
                    .map(|e| LoggedEvent {
                        time_ms: e.time_ms,
                        event_id: e.event_id.into(),
                        page: e.page_name.as_deref().map(&mut *intern),
                        boundary: e.boundary,
                        duplicate: e.duplicate,
                    })
                    .collect(),
            })
            .filter(|session| !session.events.is_empty())
            .collect();
        if sessions.is_empty() {
            self.users.remove(saved.user_id.as_str());
        } else {
            let history = History {
                sessions,
                changed: false,
            };
            self.users.insert(saved.user_id.into(), history);
        }
    }

    /// A user's sessions, to change: the user is listed as changed.
    fn sessions_mut(&mut self, user_id: &str) -> &mut VecDeque<LoggedSession> {
        if !self.users.contains_key(user_id) {
            self.users.insert(Rc::from(user_id), History::default());
        }
        let (user, history) = self
            .users
            .get_key_value_mut(user_id)
            .expect("inserted above");
        if !history.changed {
            history.changed = true;
            self.changed.push(Rc::clone(user));
        }
        &mut history.sessions
    }
}

fn save_session(session: &LoggedSession) -> SavedLoggedSession {
    SavedLoggedSession {
        end_reason: session.end_reason,
        events: session
            .events
            .iter()
            .map(|e| SavedLoggedEvent {
                time_ms: e.time_ms,
                event_id: e.event_id.to_string(),
                page_name: e.page.as_deref().map(str::to_string),
                boundary: e.boundary,
                duplicate: e.duplicate,
            })
            .collect(),
    }
}
