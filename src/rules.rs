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

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};

use foldhash::fast::RandomState;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
pub fn session_id(user_id: &str, start_ms: u64) -> Uuid {
    Uuid::new_v5(
        &SESSION_ID_NAMESPACE,
        format!("{user_id}\x1f{start_ms}").as_bytes(),
    )
}

/// A [`Sessionizer`]'s state in a form that can be written to a checkpoint and read back by
/// another process, possibly with another number of workers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionizerState {
    pub watermark: u64,
    pub open: Vec<SavedSession>,
    pub pending: Vec<SavedEvent>,
    /// `(time, key)` of the de-duplication window, oldest first.
    pub recent_ids: Vec<(u64, u128)>,
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

/// A borrowed view of a [`Sessionizer`] that serializes exactly as a [`SessionizerState`].
struct SavedState<'a>(&'a Sessionizer);

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

impl Serialize for SavedState<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let state = self.0;
        let open = state.open.iter().map(|(user, session)| SavedSessionRef {
            user_id: user,
            start_ms: session.start_ms,
            last_ms: session.last_ms,
            event_count: session.event_count,
            pages_visited: Seq::new(session.pages_visited.iter().map(|p| &**p)),
        });
        let pending = PendingIter {
            slots: state.pending.values(),
            current: [].iter(),
            remaining: state.pending_count,
        };
        let recent = state
            .recent_order
            .iter()
            .filter(|(seen_ms, key)| state.recent_ids.get(key) == Some(seen_ms))
            .copied()
            .collect::<Vec<_>>();
        let mut out = serializer.serialize_struct("SessionizerState", 4)?;
        out.serialize_field("watermark", &state.watermark)?;
        out.serialize_field("open", &Seq::new(open))?;
        out.serialize_field("pending", &Seq::new(pending))?;
        out.serialize_field("recent_ids", &recent)?;
        out.end()
    }
}

/// A [`SavedSession`], borrowed.
#[derive(Serialize)]
#[serde(bound(serialize = ""))]
struct SavedSessionRef<'a, P: ExactSizeIterator<Item = &'a str>> {
    user_id: &'a str,
    start_ms: u64,
    last_ms: u64,
    event_count: u64,
    pages_visited: Seq<P>,
}

/// A [`SavedEvent`], borrowed.
#[derive(Serialize)]
struct SavedEventRef<'a> {
    user_id: &'a str,
    event_id: &'a str,
    page_name: Option<&'a str>,
    time_ms: u64,
    boundary: Boundary,
}

/// The pending events of every slot, with their count known up front.
struct PendingIter<'a> {
    slots: std::collections::btree_map::Values<'a, u64, Vec<PendingEvent>>,
    current: std::slice::Iter<'a, PendingEvent>,
    remaining: usize,
}

impl<'a> Iterator for PendingIter<'a> {
    type Item = SavedEventRef<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(event) = self.current.next() {
                self.remaining -= 1;
                return Some(SavedEventRef {
                    user_id: &event.user_id,
                    event_id: &event.event_id,
                    page_name: event.page_name.as_deref(),
                    time_ms: event.time_ms,
                    boundary: event.boundary,
                });
            }
            self.current = self.slots.next()?.iter();
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for PendingIter<'_> {}

/// Pending events are filed by this span of event time, so that buffering costs no allocation per
/// event and a watermark releases whole slots at once.
const PENDING_SLOT_MS: u64 = 1000;

/// An event waiting for the watermark to pass its time.
#[derive(Debug)]
struct PendingEvent {
    time_ms: u64,
    user_id: Box<str>,
    event_id: Box<str>,
    page_name: Option<Rc<str>>,
    boundary: Boundary,
}

#[derive(Debug)]
struct OpenSession {
    start_ms: u64,
    last_ms: u64,
    event_count: u64,
    pages_visited: Vec<Rc<str>>,
}

/// The sessions of a set of users, advanced by a watermark. See the module documentation.
#[derive(Debug)]
pub struct Sessionizer {
    rules: SessionRules,
    /// Events not yet applied, by slot of event time.
    pending: BTreeMap<u64, Vec<PendingEvent>>,
    pending_count: usize,
    open: HashMap<Rc<str>, OpenSession, RandomState>,
    /// Candidate close times (`last + inactivity`) of the sessions started at `start`, by
    /// `(deadline, user, start)`; an entry whose session has moved on is re-queued at its current
    /// deadline when it surfaces, and one whose session has ended is dropped.
    deadlines: BinaryHeap<Reverse<(u64, Rc<str>, u64)>>,
    /// Applied `(user, event_id)` hashes still inside the de-duplication window, with their times
    /// in application order (which is time order) for expiry.
    recent_ids: HashMap<u128, u64, RandomState>,
    recent_order: VecDeque<(u64, u128)>,
    pages: HashSet<Rc<str>, RandomState>,
    /// Largest watermark applied so far: events before it must not arrive any more.
    watermark: u64,
    duplicates: u64,
}

impl Sessionizer {
    pub fn new(rules: SessionRules) -> Self {
        Sessionizer {
            rules,
            pending: BTreeMap::new(),
            pending_count: 0,
            open: HashMap::default(),
            deadlines: BinaryHeap::new(),
            recent_ids: HashMap::default(),
            recent_order: VecDeque::new(),
            pages: HashSet::default(),
            watermark: 0,
            duplicates: 0,
        }
    }

    /// Buffers an event until the watermark passes its time.
    ///
    /// # Panics
    /// If the event is older than a watermark already applied: the caller must route such late
    /// events elsewhere, since the sessions they belong to may be closed already.
    pub fn push(
        &mut self,
        user_id: impl Into<Box<str>>,
        event_id: impl Into<Box<str>>,
        page_name: Option<&str>,
        time_ms: u64,
        boundary: Boundary,
    ) {
        assert!(
            time_ms >= self.watermark,
            "event at {time_ms} arrived after watermark {}",
            self.watermark
        );
        let page_name = page_name.map(|page| self.intern(page));
        let slot = self.pending.entry(time_ms / PENDING_SLOT_MS).or_default();
        slot.push(PendingEvent {
            time_ms,
            user_id: user_id.into(),
            event_id: event_id.into(),
            page_name,
            boundary,
        });
        self.pending_count += 1;
    }

    /// Declares that every event with a time before `watermark` has been pushed: applies them and
    /// closes the sessions no later event can extend.
    pub fn advance(&mut self, watermark: u64, closed: &mut Vec<ClosedSession>) {
        if watermark <= self.watermark {
            return;
        }
        self.watermark = watermark;
        self.apply_pending_before(watermark, closed);
        self.expire_recent_ids(watermark);
        // After a burst, give back what the de-duplication window no longer needs.
        if self.recent_ids.len() * 4 < self.recent_ids.capacity() {
            self.recent_ids.shrink_to_fit();
            self.recent_order.shrink_to_fit();
        }
        while let Some(Reverse((deadline, _, _))) = self.deadlines.peek() {
            if *deadline >= watermark {
                break;
            }
            let Reverse((deadline, user, start)) = self.deadlines.pop().expect("peeked");
            let Some(session) = self.open.get(&user).filter(|s| s.start_ms == start) else {
                continue;
            };
            let current = session.last_ms + self.rules.inactivity_ms;
            if current == deadline {
                let session = self.open.remove(&user).expect("found above");
                closed.push(finish(user, session, EndReason::Inactivity));
            } else {
                self.deadlines.push(Reverse((current, user, start)));
            }
        }
    }

    /// Ends the input: applies every pending event and closes every session. `max_event_time_ms` is
    /// the latest event time of the whole input: a session whose inactivity timeout had elapsed by
    /// then ended by inactivity, the others by the end of the input.
    pub fn finish(&mut self, max_event_time_ms: u64, closed: &mut Vec<ClosedSession>) {
        self.apply_pending_before(u64::MAX, closed);
        self.watermark = u64::MAX;
        self.deadlines.clear();
        for (user, session) in self.open.drain() {
            let reason = if session.last_ms + self.rules.inactivity_ms < max_event_time_ms {
                EndReason::Inactivity
            } else {
                EndReason::EndOfInput
            };
            closed.push(finish(user, session, reason));
        }
    }

    pub fn open_sessions(&self) -> usize {
        self.open.len()
    }

    pub fn pending_events(&self) -> usize {
        self.pending_count
    }

    /// Events dropped as duplicates so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Everything the sessionizer holds, for a checkpoint: open sessions, pending events, the
    /// event ids inside the de-duplication window, and the watermark applied so far. It
    /// serializes as a [`SessionizerState`] without copying the state first.
    pub fn checkpoint(&self) -> impl Serialize + '_ {
        SavedState(self)
    }

    /// Adds the part of a checkpoint that belongs to the users `owns` accepts. A checkpoint taken
    /// by another set of workers is restored by calling this once per saved part, so a restart
    /// may use another number of workers.
    ///
    /// De-duplication keys are hashes that no longer name their user, so every part's keys are
    /// kept: a key of another worker's user can never match an event here, and it expires with
    /// the de-duplication window like any other.
    pub fn restore(&mut self, state: SessionizerState, owns: impl Fn(&str) -> bool) {
        self.watermark = self.watermark.max(state.watermark);
        for saved in state.open.into_iter().filter(|s| owns(&s.user_id)) {
            let user: Rc<str> = saved.user_id.into();
            let pages_visited = saved.pages_visited.iter().map(|p| self.intern(p)).collect();
            self.deadlines.push(Reverse((
                saved.last_ms + self.rules.inactivity_ms,
                Rc::clone(&user),
                saved.start_ms,
            )));
            self.open.insert(
                user,
                OpenSession {
                    start_ms: saved.start_ms,
                    last_ms: saved.last_ms,
                    event_count: saved.event_count,
                    pages_visited,
                },
            );
        }
        for event in state.pending.into_iter().filter(|e| owns(&e.user_id)) {
            self.push(
                event.user_id,
                event.event_id,
                event.page_name.as_deref(),
                event.time_ms,
                event.boundary,
            );
        }
        for (seen_ms, key) in state.recent_ids {
            let newest = self.recent_ids.entry(key).or_insert(seen_ms);
            *newest = (*newest).max(seen_ms);
            self.recent_order.push_back((seen_ms, key));
        }
        self.recent_order.make_contiguous().sort_unstable();
    }

    fn apply_pending_before(&mut self, watermark: u64, closed: &mut Vec<ClosedSession>) {
        let mut ready = Vec::new();
        while let Some(mut slot) = self.pending.first_entry() {
            let slot_start = *slot.key() * PENDING_SLOT_MS;
            if slot_start.saturating_add(PENDING_SLOT_MS) <= watermark {
                let events = slot.remove();
                if ready.is_empty() {
                    ready = events;
                } else {
                    ready.extend(events);
                }
            } else {
                if slot_start < watermark {
                    let events = slot.get_mut();
                    let mut i = 0;
                    while i < events.len() {
                        if events[i].time_ms < watermark {
                            ready.push(events.swap_remove(i));
                        } else {
                            i += 1;
                        }
                    }
                }
                break;
            }
        }
        self.pending_count -= ready.len();
        ready.sort_unstable_by(|a, b| {
            (a.time_ms, &a.event_id, &a.page_name, a.boundary).cmp(&(
                b.time_ms,
                &b.event_id,
                &b.page_name,
                b.boundary,
            ))
        });
        for event in ready {
            self.apply(event, closed);
        }
    }

    fn apply(&mut self, event: PendingEvent, closed: &mut Vec<ClosedSession>) {
        let time_ms = event.time_ms;
        if self.is_duplicate(time_ms, &event) {
            self.duplicates += 1;
            return;
        }
        let (user_id, page, boundary, rules) =
            (event.user_id, event.page_name, event.boundary, self.rules);
        // A session that starts here needs a deadline, unless a boundary ends it right away.
        let mut starts = None;
        if let Some(session) = self.open.get_mut(&*user_id) {
            let reason = if time_ms - session.last_ms > rules.inactivity_ms {
                Some(EndReason::Inactivity)
            } else if time_ms - session.start_ms > rules.max_duration_ms {
                Some(EndReason::MaxDuration)
            } else if boundary.starts {
                Some(EndReason::Boundary)
            } else {
                None
            };
            match reason {
                None => {
                    session.last_ms = time_ms;
                    session.event_count += 1;
                    if let Some(page) = page {
                        visit(&mut session.pages_visited, page);
                    }
                }
                Some(reason) => {
                    let ended = std::mem::replace(session, OpenSession::starting(time_ms, page));
                    let user: Rc<str> = Rc::from(&*user_id);
                    closed.push(finish(Rc::clone(&user), ended, reason));
                    starts = Some(user);
                }
            }
        } else {
            let user: Rc<str> = Rc::from(&*user_id);
            self.open
                .insert(Rc::clone(&user), OpenSession::starting(time_ms, page));
            starts = Some(user);
        }
        if boundary.ends {
            let (user, session) = self.open.remove_entry(&*user_id).expect("applied above");
            closed.push(finish(user, session, EndReason::Boundary));
        } else if let Some(user) = starts {
            self.deadlines
                .push(Reverse((time_ms + rules.inactivity_ms, user, time_ms)));
        }
    }

    /// Forgets the event ids that no event at `time_ms` or later can duplicate.
    fn expire_recent_ids(&mut self, time_ms: u64) {
        let window = self.rules.dedup_window_ms;
        while let Some(&(seen_ms, key)) = self.recent_order.front() {
            if seen_ms.saturating_add(window) >= time_ms {
                break;
            }
            self.recent_order.pop_front();
            if self.recent_ids.get(&key) == Some(&seen_ms) {
                self.recent_ids.remove(&key);
            }
        }
    }

    fn is_duplicate(&mut self, time_ms: u64, event: &PendingEvent) -> bool {
        self.expire_recent_ids(time_ms);
        let key = id_key(&event.user_id, &event.event_id);
        if self.recent_ids.contains_key(&key) {
            return true;
        }
        self.recent_ids.insert(key, time_ms);
        self.recent_order.push_back((time_ms, key));
        false
    }

    fn intern(&mut self, page: &str) -> Rc<str> {
        if let Some(known) = self.pages.get(page) {
            return Rc::clone(known);
        }
        if self.pages.len() >= MAX_INTERNED_PAGES {
            self.pages.clear();
        }
        let page: Rc<str> = page.into();
        self.pages.insert(Rc::clone(&page));
        page
    }
}

impl OpenSession {
    fn starting(time_ms: u64, page: Option<Rc<str>>) -> Self {
        OpenSession {
            start_ms: time_ms,
            last_ms: time_ms,
            event_count: 1,
            pages_visited: page.into_iter().collect(),
        }
    }
}

fn visit(pages: &mut Vec<Rc<str>>, page: Rc<str>) {
    if pages.len() < MAX_PAGES_PER_SESSION && !pages.iter().any(|p| **p == *page) {
        pages.push(page);
    }
}

fn finish(user_id: Rc<str>, session: OpenSession, end_reason: EndReason) -> ClosedSession {
    ClosedSession {
        user_id,
        start_ms: session.start_ms,
        end_ms: session.last_ms,
        event_count: session.event_count,
        pages_visited: session.pages_visited,
        end_reason,
    }
}

fn id_key(user_id: &str, event_id: &str) -> u128 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(user_id.as_bytes());
    hasher.update(&[0x1f]);
    hasher.update(event_id.as_bytes());
    hasher.digest128()
}

#[cfg(test)]
mod tests {
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
        sessionizer.finish(max, &mut closed);
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

    /// Like [`run`], but after `cut` events the state is checkpointed, encoded, and restored into
    /// `workers` fresh sessionizers that split the users between them, as a restart with another
    /// number of workers does.
    fn run_with_restart(
        rules: SessionRules,
        events: &[Ev],
        cut: usize,
        workers: u64,
    ) -> Vec<ClosedSession> {
        let worker_of = |user: &str| xxhash_rust::xxh3::xxh3_64(user.as_bytes()) % workers;
        let max = events.iter().map(|e| e.3).max().unwrap_or(0);
        let watermark_after = |i: usize| {
            let rest_min = events[i + 1..].iter().map(|e| e.3).min();
            rest_min.unwrap_or(u64::MAX).min(max)
        };
        let mut closed = Vec::new();
        let mut before = Sessionizer::new(rules);
        for (i, (user, id, page, time, boundary)) in events.iter().enumerate().take(cut) {
            before.push(user.as_str(), id.as_str(), Some(page), *time, *boundary);
            before.advance(watermark_after(i), &mut closed);
        }
        // The borrowed view must read back as the owned state.
        let encoded = bincode::serialize(&before.checkpoint()).unwrap();
        let mut after: Vec<Sessionizer> = (0..workers)
            .map(|worker| {
                let state: SessionizerState = bincode::deserialize(&encoded).unwrap();
                let mut sessionizer = Sessionizer::new(rules);
                sessionizer.restore(state, |user| worker_of(user) == worker);
                sessionizer
            })
            .collect();
        for (i, (user, id, page, time, boundary)) in events.iter().enumerate().skip(cut) {
            let sessionizer = &mut after[worker_of(user) as usize];
            sessionizer.push(user.as_str(), id.as_str(), Some(page), *time, *boundary);
            for sessionizer in &mut after {
                sessionizer.advance(watermark_after(i), &mut closed);
            }
        }
        for sessionizer in &mut after {
            sessionizer.finish(max, &mut closed);
        }
        closed.sort();
        closed
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
                run_with_restart(rules(), &events, cut, workers),
                reference(rules(), &events)
            );
        }

        #[test]
        fn tight_limits_match_the_reference(events in arb_events()) {
            let tight = SessionRules { inactivity_ms: MIN, max_duration_ms: 3 * MIN, dedup_window_ms: 0 };
            prop_assert_eq!(run(tight, &events), reference(tight, &events));
        }
    }
}
