//! [`Histories`]: the events each user's recent sessions were made of, so that a late event can
//! cut them again ([`super::Sessionizer::correct`]).
//!
//! Summaries are not enough to correct a session exactly: an event before a session's start
//! moves where its maximum-duration splits fall, and so which session each later event belongs
//! to; a page seen earlier moves ahead in the order of first visits; an event id seen again
//! turns a later event into a duplicate. So the history keeps every applied event (duplicates
//! too, flagged) of the sessions that a late event within the horizon can still reach, and
//! forgets whole sessions once they are out of reach.
//!
//! Every event is kept, so a history is encoded compactly, in one buffer per user: each event is
//! a flags byte, its time as a variable-length delta from the event before, and its event id and
//! page name as length-prefixed bytes; a session's end is a byte of its own. An event costs about
//! its ids' length plus 4 bytes, rather than a struct and two allocations. Corrections, which are
//! rare, decode the user's history into [`LoggedSession`]s.

use std::rc::Rc;

use foldhash::fast::RandomState;
use hashbrown::HashMap;

use super::{Boundary, ClosedSession, EndReason, MAX_PAGES_PER_SESSION, SavedHistory};

/// An applied event, as [`Histories`] takes it.
#[derive(Debug, Clone, Copy)]
pub(super) struct EventRef<'a> {
    pub time_ms: u64,
    pub event_id: &'a str,
    pub page: Option<&'a str>,
    pub boundary: Boundary,
    /// Dropped as a duplicate when applied: no part of its session, but a late event can change
    /// that.
    pub duplicate: bool,
}

/// An applied event of a decoded history.
#[derive(Debug, Clone)]
pub(super) struct LoggedEvent {
    pub time_ms: u64,
    pub event_id: Box<str>,
    pub page: Option<Rc<str>>,
    pub boundary: Boundary,
    pub duplicate: bool,
}

impl LoggedEvent {
    fn as_ref(&self) -> EventRef<'_> {
        EventRef {
            time_ms: self.time_ms,
            event_id: &self.event_id,
            page: self.page.as_deref(),
            boundary: self.boundary,
            duplicate: self.duplicate,
        }
    }
}

/// A session of a decoded history: its events in the order they were applied, the first one
/// starting it.
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
            end_ms: self.applied().last().map_or(0, |e| e.time_ms),
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

/// One user's history, encoded (see the module documentation), with what forgetting needs.
#[derive(Debug, Default)]
struct History {
    bytes: Vec<u8>,
    /// The time of its latest event: the base of the next one's delta.
    last_ms: u64,
    /// The time of the latest event of its first session once that session ended (`u64::MAX`
    /// before): whether it is time to forget some.
    first_ended_ms: u64,
    sessions: u32,
    open: bool,
    /// Listed in `Histories::changed`.
    changed: bool,
}

const EVENT: u8 = 0;
const END: u8 = 1;
const STARTS_SESSION: u8 = 1 << 2;
const DUPLICATE: u8 = 1 << 3;
const BOUNDARY_STARTS: u8 = 1 << 4;
const BOUNDARY_ENDS: u8 = 1 << 5;
const HAS_PAGE: u8 = 1 << 6;
const REASONS: [EndReason; 4] = [
    EndReason::Inactivity,
    EndReason::MaxDuration,
    EndReason::EndOfInput,
    EndReason::Boundary,
];

impl History {
    fn push_event(&mut self, event: EventRef<'_>, starts_session: bool) {
        let mut flags = EVENT;
        for (set, flag) in [
            (starts_session, STARTS_SESSION),
            (event.duplicate, DUPLICATE),
            (event.boundary.starts, BOUNDARY_STARTS),
            (event.boundary.ends, BOUNDARY_ENDS),
            (event.page.is_some(), HAS_PAGE),
        ] {
            if set {
                flags |= flag;
            }
        }
        self.bytes.push(flags);
        // Events are applied in time order, so the delta is never negative.
        push_varint(
            &mut self.bytes,
            event.time_ms - self.last_ms.min(event.time_ms),
        );
        push_text(&mut self.bytes, event.event_id);
        if let Some(page) = event.page {
            push_text(&mut self.bytes, page);
        }
        self.last_ms = event.time_ms;
        if starts_session {
            self.sessions += 1;
            self.open = true;
        }
    }

    fn push_end(&mut self, reason: EndReason) {
        let code = REASONS.iter().position(|r| *r == reason).expect("listed") as u8;
        self.bytes.push(END | (code << 2));
        if self.sessions == 1 {
            self.first_ended_ms = self.last_ms;
        }
        self.open = false;
    }

    fn encode(sessions: &[LoggedSession]) -> History {
        let mut history = History {
            first_ended_ms: u64::MAX,
            ..History::default()
        };
        for session in sessions {
            for (i, event) in session.events.iter().enumerate() {
                history.push_event(event.as_ref(), i == 0);
            }
            if let Some(reason) = session.end_reason {
                history.push_end(reason);
            }
        }
        history
    }

    fn decode(&self) -> Vec<LoggedSession> {
        let mut sessions: Vec<LoggedSession> = Vec::new();
        let mut bytes = &self.bytes[..];
        let mut time_ms = 0;
        while let Some((&flags, rest)) = bytes.split_first() {
            bytes = rest;
            if flags & 3 == END {
                let reason = REASONS[usize::from(flags >> 2) & 3];
                if let Some(last) = sessions.last_mut() {
                    last.end_reason = Some(reason);
                }
                continue;
            }
            let (Some(delta), Some(event_id)) = (take_varint(&mut bytes), take_text(&mut bytes))
            else {
                break;
            };
            time_ms += delta;
            let page = match flags & HAS_PAGE {
                0 => None,
                _ => match take_text(&mut bytes) {
                    Some(page) => Some(Rc::from(page)),
                    None => break,
                },
            };
            let event = LoggedEvent {
                time_ms,
                event_id: event_id.into(),
                page,
                boundary: Boundary {
                    starts: flags & BOUNDARY_STARTS != 0,
                    ends: flags & BOUNDARY_ENDS != 0,
                },
                duplicate: flags & DUPLICATE != 0,
            };
            if flags & STARTS_SESSION != 0 {
                sessions.push(LoggedSession {
                    events: vec![event],
                    end_reason: None,
                });
            } else if let Some(last) = sessions.last_mut() {
                last.events.push(event);
            }
        }
        sessions
    }

    /// Forgets the closed sessions at its start whose last event is before `before_ms`.
    fn forget_before(&mut self, before_ms: u64) {
        if self.first_ended_ms >= before_ms {
            return;
        }
        let sessions = self.decode();
        let kept = sessions
            .iter()
            .position(|s| {
                s.end_reason.is_none() || s.events.last().is_some_and(|e| e.time_ms >= before_ms)
            })
            .unwrap_or(sessions.len());
        let changed = self.changed;
        *self = History::encode(&sessions[kept..]);
        self.changed = changed;
    }
}

impl Histories {
    /// A user's sessions, oldest first, decoded, with their user id as the histories hold it.
    pub fn of(&self, user_id: &str) -> Option<(Rc<str>, Vec<LoggedSession>)> {
        let (user, history) = self.users.get_key_value(user_id)?;
        Some((Rc::clone(user), history.decode()))
    }

    /// An event that starts a session of the user.
    pub fn start(&mut self, user_id: &str, event: EventRef<'_>) {
        self.history_mut(user_id).push_event(event, true);
    }

    /// An event applied to the user's open session, or dropped as a duplicate.
    pub fn append(&mut self, user_id: &str, event: EventRef<'_>) {
        let history = self.history_mut(user_id);
        // A duplicate of a user without a session left is a duplicate of an event forgotten
        // already: no correction can reach either.
        if history.sessions > 0 {
            history.push_event(event, false);
        }
    }

    /// The user's open session ended.
    pub fn end(&mut self, user_id: &str, reason: EndReason) {
        let history = self.history_mut(user_id);
        if history.open {
            history.push_end(reason);
        }
    }

    /// Replaces the user's sessions from the `from`-th on (all of them, past the end).
    pub fn replace_from(&mut self, user_id: &str, from: usize, sessions: Vec<LoggedSession>) {
        let history = self.history_mut(user_id);
        let mut all = history.decode();
        all.truncate(from);
        all.extend(sessions);
        *history = History {
            changed: true,
            ..History::encode(&all)
        };
    }

    /// Takes a user's sessions out, decoded.
    pub fn take(&mut self, user_id: &str) -> Vec<LoggedSession> {
        self.users
            .remove(user_id)
            .map(|history| history.decode())
            .unwrap_or_default()
    }

    /// Forgets the closed sessions whose last event is before `before_ms`, which no late event
    /// the sessionizer still corrects can reach.
    pub fn forget_before(&mut self, before_ms: u64) {
        self.users.retain(|_, history| {
            if !history.open && history.last_ms < before_ms {
                return false;
            }
            history.forget_before(before_ms);
            true
        });
    }

    /// The histories for a checkpoint: all of them, or those changed since the last saved.
    pub fn to_save(&self, full: bool) -> Vec<SavedHistory> {
        let save = |user: &Rc<str>, history: Option<&History>| SavedHistory {
            user_id: user.to_string(),
            // A user forgotten since is saved without events, which forgets it on restore.
            events: history.map(|h| h.bytes.clone()).unwrap_or_default(),
        };
        if full {
            self.users
                .iter()
                .map(|(user, history)| save(user, Some(history)))
                .collect()
        } else {
            self.changed
                .iter()
                .map(|user| save(user, self.users.get(user)))
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
    pub fn restore(&mut self, saved: SavedHistory) {
        let bytes = History {
            bytes: saved.events,
            ..History::default()
        };
        let history = History::encode(&bytes.decode());
        if history.sessions == 0 {
            self.users.remove(saved.user_id.as_str());
        } else {
            self.users.insert(saved.user_id.into(), history);
        }
    }

    /// A user's history, to change: the user is listed as changed.
    fn history_mut(&mut self, user_id: &str) -> &mut History {
        if !self.users.contains_key(user_id) {
            let history = History {
                first_ended_ms: u64::MAX,
                ..History::default()
            };
            self.users.insert(Rc::from(user_id), history);
        }
        let (user, history) = self
            .users
            .get_key_value_mut(user_id)
            .expect("inserted above");
        if !history.changed {
            history.changed = true;
            self.changed.push(Rc::clone(user));
        }
        history
    }
}

fn push_varint(bytes: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        bytes.push(value as u8 | 0x80);
        value >>= 7;
    }
    bytes.push(value as u8);
}

fn push_text(bytes: &mut Vec<u8>, text: &str) {
    push_varint(bytes, text.len() as u64);
    bytes.extend_from_slice(text.as_bytes());
}

/// `None` where the bytes end or are not what [`push_varint`] writes: a damaged checkpoint's
/// history ends there.
fn take_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

fn take_text<'a>(bytes: &mut &'a [u8]) -> Option<&'a str> {
    let length = usize::try_from(take_varint(bytes)?).ok()?;
    let (text, rest) = bytes.split_at_checked(length)?;
    *bytes = rest;
    std::str::from_utf8(text).ok()
}
