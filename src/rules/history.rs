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

use std::num::NonZeroU32;
use std::rc::Rc;

use super::encoding::{push_text, push_varint, take_text, take_varint, text_len, varint_len};
use super::user_table::UserTable;
use super::{
    Boundary, ClosedSession, EndReason, MAX_PAGES_PER_SESSION, SavedHistory, SavedHistoryRef,
};

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

/// Where a user's history is in its [`Histories`], for the user's open session to keep: it
/// stays valid while the session is open, as a history with an open session is never removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HistoryLink(NonZeroU32);

impl HistoryLink {
    fn new(number: u32) -> Self {
        HistoryLink(NonZeroU32::new(number.wrapping_add(1)).expect("fewer than 4 billion users"))
    }

    fn number(self) -> u32 {
        self.0.get() - 1
    }
}

/// Whose history an operation is on: a user's, found by its id, or the one a link names.
#[derive(Debug, Clone, Copy)]
pub(super) enum Whose<'a> {
    User(&'a str),
    Linked(HistoryLink),
}

/// The histories of a sessionizer's users. See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Histories {
    users: UserTable<History>,
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
    /// How many of `bytes` the checkpoints saved so far hold: a history only grows at its end
    /// until it is rewritten (a correction, forgetting), so a checkpoint saves what it grew by.
    saved_len: usize,
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
        // Events are applied in time order, so the delta is never negative.
        let delta = event.time_ms - self.last_ms.min(event.time_ms);
        let page_len = event.page.map_or(0, text_len);
        reserve(
            &mut self.bytes,
            1 + varint_len(delta) + text_len(event.event_id) + page_len,
        );
        self.bytes.push(flags);
        push_varint(&mut self.bytes, delta);
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

    /// A history as a checkpoint saved it, with what forgetting needs read from it.
    fn from_bytes(bytes: Vec<u8>) -> History {
        let mut history = History {
            bytes,
            ..History::default()
        };
        // The bytes are kept as they are, so that what later checkpoints add follows on them.
        let sessions = history.decode();
        let last_event = |s: &LoggedSession| s.events.last().map_or(0, |e| e.time_ms);
        history.last_ms = sessions.last().map_or(0, last_event);
        history.first_ended_ms = sessions
            .first()
            .filter(|s| s.end_reason.is_some())
            .map_or(u64::MAX, last_event);
        history.sessions = sessions.len() as u32;
        history.open = sessions.last().is_some_and(|s| s.end_reason.is_none());
        history.saved_len = history.bytes.len();
        history
    }

    /// Forgets the closed sessions at its start whose last event is before `before_ms`; returns
    /// whether it forgot any (it is rewritten).
    fn forget_before(&mut self, before_ms: u64) -> bool {
        if self.first_ended_ms >= before_ms {
            return false;
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
        true
    }
}

impl Histories {
    /// A user's sessions, oldest first, decoded, with their user id as the histories hold it.
    pub fn of(&self, user_id: &str) -> Option<(Rc<str>, Vec<LoggedSession>)> {
        let (user, history) = self.users.get_key_value(user_id)?;
        Some((Rc::clone(user), history.decode()))
    }

    /// An event that starts a session of the user; returns the user's id as the histories keep
    /// it and the history's link, for the session to share and keep.
    pub fn start(&mut self, whose: Whose<'_>, event: EventRef<'_>) -> (Rc<str>, HistoryLink) {
        let (user, history, link) = self.history_mut(whose);
        history.push_event(event, true);
        (Rc::clone(user), link)
    }

    /// An event applied to the user's open session, or dropped as a duplicate.
    pub fn append(&mut self, whose: Whose<'_>, event: EventRef<'_>) {
        let (_, history, _) = self.history_mut(whose);
        // A duplicate of a user without a session left is a duplicate of an event forgotten
        // already: no correction can reach either.
        if history.sessions > 0 {
            history.push_event(event, false);
        }
    }

    /// The user's open session ended.
    pub fn end(&mut self, whose: Whose<'_>, reason: EndReason) {
        let (_, history, _) = self.history_mut(whose);
        if history.open {
            history.push_end(reason);
        }
    }

    /// Replaces the user's sessions from the `from`-th on (all of them, past the end); returns
    /// the history's link.
    pub fn replace_from(
        &mut self,
        user_id: &str,
        from: usize,
        sessions: Vec<LoggedSession>,
    ) -> HistoryLink {
        let (_, history, link) = self.history_mut(Whose::User(user_id));
        let mut all = history.decode();
        all.truncate(from);
        all.extend(sessions);
        *history = History {
            changed: true,
            ..History::encode(&all)
        };
        link
    }

    /// The link of a user's history, for its open session to keep: `None` unless the history
    /// holds an open session, as only those are never forgotten.
    pub fn link(&self, user_id: &str) -> Option<HistoryLink> {
        let number = self.users.number_of(user_id)?;
        let open = self.users.get(user_id).is_some_and(|history| history.open);
        open.then(|| HistoryLink::new(number))
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
        let mut rewritten = Vec::new();
        self.users.retain(|user, history| {
            if !history.open && history.last_ms < before_ms {
                return false;
            }
            if history.forget_before(before_ms) && !history.changed {
                history.changed = true;
                rewritten.push(Rc::clone(user));
            }
            true
        });
        self.changed.extend(rewritten);
    }

    /// The histories for a checkpoint, borrowed: all of them, or what changed since the last saved.
    pub fn to_save(
        &self,
        full: bool,
    ) -> Box<dyn ExactSizeIterator<Item = SavedHistoryRef<'_>> + '_> {
        if full {
            Box::new(
                self.users
                    .iter()
                    .map(move |(u, h)| saved_ref(u, Some(h), full)),
            ) as Box<dyn ExactSizeIterator<Item = _>>
        } else {
            Box::new(
                self.changed
                    .iter()
                    .map(|u| saved_ref(u, self.users.get(u), false)),
            )
        }
    }

    pub fn saved(&mut self) {
        for user in self.changed.drain(..) {
            if let Some(history) = self.users.get_mut(&user) {
                history.changed = false;
                history.saved_len = history.bytes.len();
            }
        }
    }

    /// Restores a saved history: in place of the user's, or (`from` past 0) as what it grew by.
    pub fn restore(&mut self, saved: SavedHistory) {
        let user = saved.user_id.as_str();
        let mut bytes = Vec::new();
        if saved.from > 0 {
            match self.users.remove(user) {
                Some(history) if history.bytes.len() as u64 == saved.from => bytes = history.bytes,
                _ => {
                    // Parts are restored in the order they were written, so this is a damaged
                    // checkpoint: the user's late events are left out until its session closes.
                    tracing::warn!(
                        user,
                        "a checkpoint's history does not follow on the one before"
                    );
                    return;
                }
            }
        }
        bytes.extend(saved.events);
        let history = History::from_bytes(bytes);
        if history.sessions == 0 {
            self.users.remove(user);
        } else {
            self.users.insert(user.into(), history);
        }
    }

    /// A user's history, to change, with its user id and link: the user is listed as changed.
    fn history_mut(&mut self, whose: Whose<'_>) -> (&Rc<str>, &mut History, HistoryLink) {
        let (user, history, number) = match whose {
            Whose::Linked(link) => {
                let number = link.number();
                let (user, history) = self.users.by_number_mut(number).expect("a linked history");
                (user, history, number)
            }
            Whose::User(user_id) => self.users.get_or_insert_with(user_id, || History {
                first_ended_ms: u64::MAX,
                ..History::default()
            }),
        };
        if !history.changed {
            history.changed = true;
            self.changed.push(Rc::clone(user));
        }
        (user, history, HistoryLink::new(number))
    }
}

/// Makes room for `additional` bytes, growing by a quarter rather than doubling: histories are
/// many and most grow by a few events, so doubling would leave a third of their memory unused.
/// The capacity is rounded up to the allocator's size class (mimalloc's and jemalloc's: four a
/// power of two), whose bytes the block has anyway, so that fewer events move the history.
fn reserve(bytes: &mut Vec<u8>, additional: usize) {
    if bytes.capacity() - bytes.len() < additional {
        let wanted = bytes.len() + additional.max(bytes.len() / 4);
        bytes.reserve_exact(size_class(wanted) - bytes.len());
    }
}

/// The smallest of `8, 16, .., 64, 80, 96, 112, 128, 160, ..` (four steps a power of two) that
/// holds `bytes`.
fn size_class(bytes: usize) -> usize {
    if bytes <= 64 {
        return bytes.next_multiple_of(8);
    }
    let step = 1 << ((bytes - 1).ilog2() - 2);
    bytes.next_multiple_of(step)
}

/// A user's history, or (full) all of it, as a checkpoint saves it.
fn saved_ref<'a>(user: &'a str, history: Option<&'a History>, full: bool) -> SavedHistoryRef<'a> {
    let from = history.map_or(0, |h| if full { 0 } else { h.saved_len });
    SavedHistoryRef {
        user_id: user,
        from: from as u64,
        // A user forgotten since is saved without events, which forgets it on restore.
        events: history.map_or(&[][..], |h| &h.bytes[from..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn size_classes_hold_the_bytes_with_at_most_a_quarter_more() {
        let mut previous = 0;
        for bytes in 1..100_000 {
            let class = size_class(bytes);
            assert!(
                class >= bytes && class <= bytes + bytes / 4 + 7,
                "{bytes} -> {class}"
            );
            assert_eq!(size_class(class), class, "a class is its own class");
            assert!(class >= previous, "classes grow with the bytes");
            previous = class;
        }
        let classes: Vec<usize> = [60, 65, 100, 129, 1000, 1025].map(size_class).into();
        assert_eq!(classes, [64, 80, 112, 160, 1024, 1280]);
    }

    fn event(time_ms: u64, id: &str, page: Option<&str>, duplicate: bool) -> LoggedEvent {
        LoggedEvent {
            time_ms,
            event_id: id.into(),
            page: page.map(Rc::from),
            boundary: Boundary {
                starts: time_ms.is_multiple_of(3),
                ends: time_ms.is_multiple_of(5),
            },
            duplicate,
        }
    }

    /// A decoded event's parts, comparable.
    type EventParts = (u64, String, Option<String>, Boundary, bool);

    /// What decoded sessions say, comparable.
    fn summary(sessions: &[LoggedSession]) -> Vec<(Vec<EventParts>, Option<EndReason>)> {
        sessions
            .iter()
            .map(|s| {
                let events = s.events.iter().map(|e| {
                    let page = e.page.as_deref().map(str::to_string);
                    (
                        e.time_ms,
                        e.event_id.to_string(),
                        page,
                        e.boundary,
                        e.duplicate,
                    )
                });
                (events.collect(), s.end_reason)
            })
            .collect()
    }

    proptest! {
        #[test]
        fn a_history_decodes_as_it_was_encoded(
            sessions in proptest::collection::vec(
                (
                    proptest::collection::vec((0u64..1 << 40, "[a-zé-]{0,40}", proptest::option::of("[a-z]{0,9}"), any::<bool>()), 1..6),
                    proptest::option::of(0usize..4),
                ),
                0..5,
            )
        ) {
            let mut time_ms = 1_772_323_200_000;
            let sessions: Vec<LoggedSession> = sessions
                .into_iter()
                .map(|(events, end)| LoggedSession {
                    events: events
                        .into_iter()
                        .enumerate()
                        .map(|(i, (step, id, page, duplicate))| {
                            time_ms += step;
                            event(time_ms, &id, page.as_deref(), duplicate && i > 0)
                        })
                        .collect(),
                    end_reason: end.map(|code| REASONS[code]),
                })
                .collect();
            let history = History::encode(&sessions);
            prop_assert_eq!(summary(&history.decode()), summary(&sessions));
            // A damaged end loses the events from there on, and nothing panics.
            for cut in 0..history.bytes.len() {
                let damaged = History { bytes: history.bytes[..cut].to_vec(), ..History::default() };
                prop_assert!(damaged.decode().len() <= sessions.len());
            }
        }
    }

    #[test]
    fn forgetting_drops_closed_sessions_that_ended_before_and_keeps_the_rest() {
        let mut histories = Histories::default();
        let at = |time_ms, id| EventRef {
            time_ms,
            event_id: id,
            page: Some("home"),
            boundary: Boundary::NONE,
            duplicate: false,
        };
        let (u, idle) = (Whose::User("u"), Whose::User("idle"));
        let (_, link) = histories.start(u, at(10, "a"));
        histories.append(Whose::Linked(link), at(20, "b"));
        histories.end(u, EndReason::Inactivity);
        histories.start(u, at(100, "c"));
        histories.start(idle, at(5, "d"));
        histories.end(idle, EndReason::Inactivity);
        histories.forget_before(50);
        let (_, kept) = histories.of("u").unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].first(), (100, "c"));
        assert!(histories.of("idle").is_none());
        // The open session stays however old.
        histories.forget_before(1_000);
        assert_eq!(histories.of("u").unwrap().1.len(), 1);
    }
}
