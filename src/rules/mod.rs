//! The session rules, free of any I/O, engine or format.
//!
//! [`Sessionizer`] holds the sessions of the users one worker owns. Events are handed to it in any
//! order; a watermark says when every event before it has arrived, and only then are events applied,
//! in `(time, event_id)` order, so the result does not depend on arrival order:
//!
//! * an event starts a new session when its user has none open, when it comes more than
//!   `inactivity` after the previous event, or more than `max_duration` after the session's first
//!   event (a split: the next split is measured from the new start). Equal to a limit stays in;
//! * an event whose `event_id` the same user already had, at most `dedup_window` earlier, is a
//!   duplicate and is dropped;
//! * business boundaries ([`BoundaryRules`], `--end-session-on` / `--start-session-on`): an event
//!   marked [`Boundary::ends`] closes its session after itself, one marked [`Boundary::starts`]
//!   starts a new session before itself (the time rules come first: a session that a gap or the
//!   maximum duration ends is not ended by a boundary as well);
//! * a session ends at its last event; it is closed once the watermark proves that no event can
//!   extend it (a session ended by a boundary is closed when its last event is applied).
//!
//! ```
//! use sessionize::rules::{Boundary, EndReason, SessionRules, Sessionizer};
//! let rules = SessionRules { inactivity_ms: 30 * 60_000, max_duration_ms: 2 * 3_600_000, dedup_window_ms: 600_000 };
//! let mut sessions = Sessionizer::new(rules);
//! sessions.push("alice", "e2", Some("search"), 60_000, Boundary::NONE);
//! sessions.push("alice", "e1", Some("home"), 0, Boundary::NONE);
//! sessions.push("alice", "e1", Some("home"), 0, Boundary::NONE); // a duplicate
//! let mut closed = Vec::new();
//! sessions.advance(60_001 + 30 * 60_000, &mut closed);
//! assert_eq!(closed.len(), 1);
//! assert_eq!((closed[0].event_count, closed[0].end_reason), (2, EndReason::Inactivity));
//! assert_eq!(closed[0].pages_visited.iter().map(|p| &**p).collect::<Vec<_>>(), ["home", "search"]);
//! ```

use std::fmt;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// At most this many distinct pages are kept per session, in order of first visit.
pub const MAX_PAGES_PER_SESSION: usize = 64;

/// The namespace of session ids: `session_id = uuid5(NAMESPACE, user_id + '\x1f' + start_ms)`, which
/// any engine can recompute.
pub const SESSION_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1f2d2e_9a3b_5c1e_8e4f_5e551021ab1e);

/// Above this many distinct page names the interner starts afresh, so that a stream of unique page
/// names cannot grow memory without bound (open sessions keep their own copies alive).
const MAX_INTERNED_PAGES: usize = 100_000;

/// The limits that cut a user's events into sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRules {
    /// A gap longer than this ends a session.
    pub inactivity_ms: u64,
    /// An event more than this after the session's first event starts a new session.
    pub max_duration_ms: u64,
    /// A repeated `event_id` of the same user at most this much later is a duplicate.
    pub dedup_window_ms: u64,
}

/// What an event does to the session around it under the business rules of [`BoundaryRules`].
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Boundary {
    /// The event starts a new session: the open one ends before it.
    pub starts: bool,
    /// The event is the last of its session: the session ends after it.
    pub ends: bool,
}

impl Boundary {
    pub const NONE: Boundary = Boundary {
        starts: false,
        ends: false,
    };
}

/// A field of an event that a boundary rule can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventField {
    #[serde(rename = "page_name")]
    PageName,
    #[serde(rename = "event_details.event_name")]
    EventName,
    #[serde(rename = "event_details.event_type")]
    EventType,
}

impl EventField {
    pub const ALL: [EventField; 3] = [
        EventField::PageName,
        EventField::EventName,
        EventField::EventType,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventField::PageName => "page_name",
            EventField::EventName => "event_details.event_name",
            EventField::EventType => "event_details.event_type",
        }
    }
}

/// `FIELD=VALUE`: an event whose `FIELD` equals `VALUE` exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FieldEquals {
    pub field: EventField,
    pub value: String,
}

impl std::str::FromStr for FieldEquals {
    type Err = String;

    /// ```
    /// use sessionize::rules::{EventField, FieldEquals};
    /// let rule: FieldEquals = "event_details.event_name=logout".parse().unwrap();
    /// assert_eq!((rule.field, rule.value.as_str()), (EventField::EventName, "logout"));
    /// assert!("user=bob".parse::<FieldEquals>().unwrap_err().contains("page_name"));
    /// ```
    fn from_str(text: &str) -> Result<Self, String> {
        let fields = || EventField::ALL.map(EventField::as_str).join(", ");
        let (name, value) = text.split_once('=').ok_or_else(|| {
            format!(
                "expected FIELD=VALUE with FIELD one of {}, got {text:?}",
                fields()
            )
        })?;
        let field = EventField::ALL
            .into_iter()
            .find(|f| f.as_str() == name)
            .ok_or_else(|| format!("unknown field {name:?}: FIELD is one of {}", fields()))?;
        Ok(FieldEquals {
            field,
            value: value.to_string(),
        })
    }
}

impl fmt::Display for FieldEquals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.field.as_str(), self.value)
    }
}

/// The business rules that cut sessions besides time: `--end-session-on` and `--start-session-on`.
/// An event matches a list when it matches any rule of it.
///
/// ```
/// use sessionize::rules::{Boundary, BoundaryRules, EventField};
/// let rules = BoundaryRules {
///     end_on: vec!["page_name=logout".parse().unwrap()],
///     start_on: vec!["event_details.event_type=login".parse().unwrap()],
/// };
/// let page = |page| move |field| (field == EventField::PageName).then_some(page);
/// assert_eq!(rules.classify(page("logout")), Boundary { starts: false, ends: true });
/// assert_eq!(rules.classify(page("home")), Boundary::NONE);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundaryRules {
    pub end_on: Vec<FieldEquals>,
    pub start_on: Vec<FieldEquals>,
}

impl BoundaryRules {
    /// The boundary an event marks, given its fields (`None` for a field it lacks).
    pub fn classify<'a>(&self, field: impl Fn(EventField) -> Option<&'a str>) -> Boundary {
        let matches = |rules: &[FieldEquals]| {
            rules
                .iter()
                .any(|rule| field(rule.field) == Some(rule.value.as_str()))
        };
        Boundary {
            starts: matches(&self.start_on),
            ends: matches(&self.end_on),
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EndReason {
    /// No event came within the inactivity timeout.
    Inactivity,
    /// The next event came more than the maximum duration after the session's start.
    MaxDuration,
    /// The input ended within the inactivity timeout of the session's last event.
    EndOfInput,
    /// A business rule ended it: its last event matched `--end-session-on`, or the next event
    /// matched `--start-session-on`.
    Boundary,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Inactivity => "inactivity",
            EndReason::MaxDuration => "max_duration",
            EndReason::EndOfInput => "end_of_input",
            EndReason::Boundary => "boundary",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finished session: a row of the sessions table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClosedSession {
    pub user_id: Rc<str>,
    pub start_ms: u64,
    pub end_ms: u64,
    pub event_count: u64,
    pub pages_visited: Vec<Rc<str>>,
    pub end_reason: EndReason,
    /// A late event within the correction horizon changed it: it replaces an earlier row (see
    /// [`Sessionizer::correct`]).
    pub corrected: bool,
}

impl ClosedSession {
    /// The deterministic id of the session: a replay of the same events yields the same id.
    pub fn session_id(&self) -> Uuid {
        session_id(&self.user_id, self.start_ms)
    }

    pub fn duration_seconds(&self) -> u64 {
        (self.end_ms - self.start_ms) / 1000
    }
}

/// `uuid5(SESSION_ID_NAMESPACE, "{user_id}\x1f{start_ms}")`.
/// A session still open, as far as the watermark has applied events: a row of the open-sessions
/// table. Its id is the one it will have once closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenSessionView<'a> {
    pub user_id: &'a str,
    pub start_ms: u64,
    /// The time of its latest event so far.
    pub last_ms: u64,
    pub event_count: u64,
    pub pages_visited: &'a [Rc<str>],
}

impl OpenSessionView<'_> {
    pub fn session_id(&self) -> Uuid {
        session_id(self.user_id, self.start_ms)
    }
}

pub fn session_id(user_id: &str, start_ms: u64) -> Uuid {
    Uuid::new_v5(
        &SESSION_ID_NAMESPACE,
        format!("{user_id}\x1f{start_ms}").as_bytes(),
    )
}

/// A [`Sessionizer`]'s state in a form that can be written to a checkpoint and read back by
/// another process, possibly with another number of workers.
///
/// A state is either all of it (`full`) or what changed since the previous checkpoint, which it
/// amends: then `open` holds only the sessions that changed, `ended` the users whose session
/// ended, and `pending` and `recent_ids` only the events pushed and the ids applied since. The
/// events pending before that its watermark has passed were applied since (see
/// [`Sessionizer::forget_applied`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionizerState {
    pub watermark: u64,
    pub full: bool,
    pub open: Vec<SavedSession>,
    pub ended: Vec<String>,
    pub pending: Vec<SavedEvent>,
    /// `(time, key)` of the de-duplication window, oldest first.
    pub recent_ids: Vec<(u64, u128)>,
    /// The users' histories for corrections: all, or those that changed (each in full).
    pub histories: Vec<SavedHistory>,
}

/// A user's sessions within reach of corrections, in a checkpoint, encoded as the sessionizer
/// keeps them; none: forgotten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedHistory {
    pub user_id: String,
    /// Where `events` go in the user's history: 0 replaces it, past 0 they follow that many
    /// bytes saved before.
    pub from: u64,
    /// As bytes, not a sequence of numbers: one write, not one per byte.
    #[serde(with = "serde_bytes")]
    pub events: Vec<u8>,
}

/// A [`SavedHistory`], borrowed from the sessionizer: serialized the same way, without a copy.
#[derive(Debug, Serialize)]
pub struct SavedHistoryRef<'a> {
    pub user_id: &'a str,
    pub from: u64,
    #[serde(with = "serde_bytes")]
    pub events: &'a [u8],
}

/// An open session in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSession {
    pub user_id: String,
    pub start_ms: u64,
    pub last_ms: u64,
    pub event_count: u64,
    pub pages_visited: Vec<String>,
}

/// An event waiting for the watermark, in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedEvent {
    pub user_id: String,
    pub event_id: String,
    pub page_name: Option<String>,
    pub time_ms: u64,
    pub boundary: Boundary,
}

/// An iterator whose length was counted beforehand, for a filtered sequence that serializes with
/// its length up front.
struct Counted<I> {
    items: I,
    remaining: usize,
}

impl<I: Iterator> Iterator for Counted<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        let item = self.items.next()?;
        self.remaining -= 1;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<I: Iterator> ExactSizeIterator for Counted<I> {}

/// Serializes the items of an iterator as a sequence.
struct Seq<I>(std::cell::Cell<Option<I>>);

impl<I> Seq<I> {
    fn new(items: I) -> Self {
        Seq(std::cell::Cell::new(Some(items)))
    }
}

impl<I: ExactSizeIterator<Item = T>, T: Serialize> Serialize for Seq<I> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let items = self.0.take().expect("a sequence is serialized once");
        serializer.collect_seq(items)
    }
}

mod corrections;
mod dedup;
mod encoding;
mod history;
mod id_list;
mod open_sessions;
mod pending;
mod sessionizer;
#[cfg(test)]
mod tests;
mod user_table;

pub use sessionizer::Sessionizer;
