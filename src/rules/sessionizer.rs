//! The [`Sessionizer`]: pending events, open sessions and the de-duplication window of the users
//! one worker owns, and its state for checkpoints.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::rc::Rc;

use foldhash::fast::RandomState;
use serde::Serialize;

use super::dedup::{DedupWindow, IdKey};
use super::history::{EventRef, Histories, Whose};
use super::id_list::IdList;
use super::open_sessions::{Generation, OpenSession, OpenSessions, SlotNumber};
use super::pending::{PENDING_SLOT_MS, PendingEvent, PendingSlot};
use super::{
    Boundary, ClosedSession, EndReason, MAX_INTERNED_PAGES, OpenSessionView, SessionRules,
    SessionizerState,
};
use super::{Counted, SavedHistoryRef, Seq};

/// A borrowed view of a [`Sessionizer`] that serializes exactly as a [`SessionizerState`]: all of
/// it, or (`full` false) what changed since the last [`Sessionizer::saved`].
struct SavedState<'a> {
    sessionizer: &'a Sessionizer,
    full: bool,
}

impl Serialize for SavedState<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let (state, full) = (self.sessionizer, self.full);
        let saved_sessions = || -> Box<dyn Iterator<Item = (&str, &OpenSession)>> {
            if full {
                Box::new(state.open.iter())
            } else {
                Box::new(state.open.changed())
            }
        };
        let open = Counted {
            remaining: saved_sessions().count(),
            items: saved_sessions(),
        }
        .map(|(user, session)| SavedSessionRef {
            user_id: user,
            start_ms: session.start_ms,
            last_ms: session.last_ms,
            event_count: session.event_count,
            pages_visited: Seq::new(session.pages_visited.iter().map(|p| &**p)),
        });
        let no_ended = IdList::default();
        let ended = if full { &no_ended } else { &state.ended };
        let pending_events = || {
            state
                .pending
                .values()
                .flat_map(PendingSlot::events)
                .filter(|event| full || !event.saved)
        };
        let pending = Counted {
            remaining: pending_events().count(),
            items: pending_events(),
        }
        .map(|event| SavedEventRef {
            user_id: event.user_id,
            event_id: event.event_id,
            page_name: event.page_name,
            time_ms: event.time_ms,
            boundary: event.boundary,
        });
        let recent = state.recent_ids.to_save(full, state.watermark);
        let mut out = serializer.serialize_struct("SessionizerState", 7)?;
        out.serialize_field("watermark", &state.watermark)?;
        out.serialize_field("full", &full)?;
        out.serialize_field("open", &Seq::new(open))?;
        out.serialize_field("ended", &Seq::new(ended.iter()))?;
        out.serialize_field("pending", &Seq::new(pending))?;
        out.serialize_field("recent_ids", &recent)?;
        match &state.histories {
            Some(histories) => out.serialize_field("histories", &Seq::new(histories.to_save(full))),
            None => out.serialize_field("histories", &[] as &[SavedHistoryRef]),
        }?;
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

/// A session's candidate close time, `(deadline, slot, generation)`: 16 bytes an open session.
type Deadline = Reverse<(u64, SlotNumber, Generation)>;
const _: () = assert!(std::mem::size_of::<Deadline>() == 16);

/// The sessions of a set of users, advanced by a watermark. See the module documentation.
#[derive(Debug)]
pub struct Sessionizer {
    pub(super) rules: SessionRules,
    /// Events not yet applied, by slot of event time.
    pending: BTreeMap<u64, PendingSlot>,
    /// The latest slot an event was buffered in.
    newest_slot: u64,
    pending_count: usize,
    pub(super) open: OpenSessions,
    /// Candidate close times (`last + inactivity`) of the sessions, by `(deadline, slot,
    /// generation)`; an entry whose session has moved on is re-queued at its current deadline
    /// when it surfaces, and one whose session has ended is dropped. A session closes only at its
    /// current deadline, so an entry that outlived its session and finds another in its slot
    /// (generations wrap) does no harm.
    pub(super) deadlines: BinaryHeap<Deadline>,
    /// The `(user, event_id)` pairs applied within the de-duplication window.
    recent_ids: DedupWindow,
    /// Users whose session ended since the last checkpoint was saved.
    pub(super) ended: IdList,
    pages: HashSet<Rc<str>, RandomState>,
    /// Largest watermark applied so far: events before it go to [`Self::correct`].
    pub(super) watermark: u64,
    duplicates: u64,
    /// How far behind the watermark late events are corrected (0: not at all).
    pub(super) correction_horizon_ms: u64,
    /// The events of the sessions corrections can reach; `None` without corrections.
    pub(super) histories: Option<Histories>,
}

impl Sessionizer {
    pub fn new(rules: SessionRules) -> Self {
        Sessionizer {
            rules,
            pending: BTreeMap::new(),
            newest_slot: 0,
            pending_count: 0,
            open: OpenSessions::default(),
            deadlines: BinaryHeap::new(),
            recent_ids: DedupWindow::new(rules.dedup_window_ms),
            ended: IdList::default(),
            pages: HashSet::default(),
            watermark: 0,
            duplicates: 0,
            correction_horizon_ms: 0,
            histories: None,
        }
    }

    /// Keeps what it takes to correct the sessions that events up to `horizon_ms` behind the
    /// watermark belong to ([`Self::correct`]); 0 keeps nothing.
    pub fn with_correction_horizon(mut self, horizon_ms: u64) -> Self {
        self.correction_horizon_ms = horizon_ms;
        self.histories = (horizon_ms > 0).then(Histories::default);
        self
    }

    /// Whether a late event at `time_ms` is within reach of [`Self::correct`].
    pub fn can_correct(&self, time_ms: u64) -> bool {
        self.histories.is_some()
            && time_ms.saturating_add(self.correction_horizon_ms) >= self.watermark
    }

    /// Buffers an event until the watermark passes its time.
    ///
    /// # Panics
    /// If the event is older than a watermark already applied: the sessions it belongs to may be
    /// closed already, so the caller hands such late events to [`Self::correct`] (or routes them
    /// elsewhere).
    pub fn push(
        &mut self,
        user_id: &str,
        event_id: &str,
        page_name: Option<&str>,
        time_ms: u64,
        boundary: Boundary,
    ) {
        assert!(
            time_ms >= self.watermark,
            "event at {time_ms} arrived after watermark {}",
            self.watermark
        );
        self.buffer(user_id, event_id, page_name, time_ms, boundary, false);
    }

    fn buffer(
        &mut self,
        user_id: &str,
        event_id: &str,
        page_name: Option<&str>,
        time_ms: u64,
        boundary: Boundary,
        saved: bool,
    ) {
        let key = time_ms / PENDING_SLOT_MS;
        if key > self.newest_slot {
            // Events come mostly in time order, so the newest slot before this one is mostly
            // complete: give back its spare capacity (up to half of it) while it waits.
            if let Some(complete) = self.pending.get_mut(&self.newest_slot) {
                complete.shrink_to_fit();
            }
            self.newest_slot = key;
        }
        let slot = self
            .pending
            .entry(key)
            .or_insert_with(|| PendingSlot::new(key * PENDING_SLOT_MS));
        slot.push(PendingEvent {
            time_ms,
            user_id,
            event_id,
            page_name,
            boundary,
            saved,
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
        self.recent_ids.expire(watermark);
        while let Some(Reverse((deadline, _, _))) = self.deadlines.peek() {
            if *deadline >= watermark {
                break;
            }
            let Reverse((deadline, slot, generation)) = self.deadlines.pop().expect("peeked");
            let Some((_, session)) = self.open.slot(slot) else {
                continue;
            };
            if self.open.generation(slot) != generation {
                continue;
            }
            if session.last_ms + self.rules.inactivity_ms == deadline {
                let (user, session) = self.open.remove_slot(slot).expect("found above");
                self.close(user, session, EndReason::Inactivity, closed);
            } else {
                self.schedule(slot);
            }
        }
    }

    /// Ends the input: applies every pending event and closes the open sessions, at most `limit`
    /// of them a call, so that a caller can hand on each slice of rows before it asks for the
    /// next; returns whether every session is closed. `max_event_time_ms` is the latest event
    /// time of the whole input: a session whose inactivity timeout had elapsed by then ended by
    /// inactivity, the others by the end of the input.
    pub fn finish(
        &mut self,
        max_event_time_ms: u64,
        limit: usize,
        closed: &mut Vec<ClosedSession>,
    ) -> bool {
        if self.watermark != u64::MAX {
            // Nothing follows the end of the input: no event can correct a session any more, nor
            // be a duplicate once the pending ones are applied, so the histories and then the
            // window go before a million rows can join them.
            self.histories = None;
            self.apply_pending_before(u64::MAX, closed);
            self.watermark = u64::MAX;
            self.deadlines = BinaryHeap::new();
            self.recent_ids = DedupWindow::new(self.rules.dedup_window_ms);
        }
        let inactivity_ms = self.rules.inactivity_ms;
        for (user, session) in self.open.close_last(limit) {
            let reason = if session.last_ms + inactivity_ms < max_event_time_ms {
                EndReason::Inactivity
            } else {
                EndReason::EndOfInput
            };
            self.close(user, session, reason, closed);
        }
        self.open.len() == 0
    }

    pub fn open_sessions(&self) -> usize {
        self.open.len()
    }

    /// The open sessions, in no particular order, as the events before [`Self::watermark`] made
    /// them.
    pub fn open(&self) -> impl Iterator<Item = OpenSessionView<'_>> {
        self.open.iter().map(|(user_id, session)| OpenSessionView {
            user_id,
            start_ms: session.start_ms,
            last_ms: session.last_ms,
            event_count: session.event_count,
            pages_visited: &session.pages_visited,
        })
    }

    /// Whether a session opened, changed or closed since the last [`saved`](Self::saved).
    pub fn open_changed(&self) -> bool {
        !self.ended.is_empty() || self.open.changed().next().is_some()
    }

    /// The watermark applied so far: every event before it has been applied.
    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    pub fn pending_events(&self) -> usize {
        self.pending_count
    }

    /// Events dropped as duplicates so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// The sessionizer's state for a checkpoint, serializing as a [`SessionizerState`] without
    /// copying it first: with `full`, everything it holds (open sessions, pending events, the
    /// event ids inside the de-duplication window, and the watermark applied so far); otherwise
    /// what changed since the last [`saved`](Self::saved) checkpoint, and the pending events.
    pub fn checkpoint(&self, full: bool) -> impl Serialize + '_ {
        SavedState {
            sessionizer: self,
            full,
        }
    }

    /// Records that the last [`checkpoint`](Self::checkpoint) was saved: the next one that is not
    /// full holds what changes from now on.
    pub fn saved(&mut self) {
        self.open.saved();
        self.pending.values_mut().for_each(PendingSlot::mark_saved);
        self.ended.clear();
        self.recent_ids.saved();
        let kept_from = self.history_kept_from();
        if let Some(histories) = &mut self.histories {
            histories.saved();
            histories.forget_before(kept_from);
        }
    }

    /// Adds the part of a checkpoint that belongs to the users `owns` accepts. A checkpoint taken
    /// by another set of workers is restored by calling this once per saved part, so a restart
    /// may use another number of workers. A checkpoint that amends earlier ones is restored by
    /// restoring those first, oldest (a full one) first, and [`forget_applied`] before each
    /// part that amends.
    ///
    /// [`forget_applied`]: Self::forget_applied
    ///
    /// De-duplication keys are hashes that no longer name their user, so every part's keys are
    /// kept: a key of another worker's user can never match an event here, and it expires with
    /// the de-duplication window like any other.
    pub fn restore(&mut self, state: SessionizerState, owns: impl Fn(&str) -> bool) {
        self.watermark = self.watermark.max(state.watermark);
        for user in state.ended.iter().filter(|user| owns(user)) {
            self.open.remove(user);
        }
        for saved in state.open.into_iter().filter(|s| owns(&s.user_id)) {
            let pages_visited = saved.pages_visited.iter().map(|p| self.intern(p)).collect();
            let session = OpenSession::restored(
                saved.start_ms,
                saved.last_ms,
                saved.event_count,
                pages_visited,
            );
            let slot = self.open.insert(saved.user_id.as_str(), session);
            self.schedule(slot);
        }
        // Parts of other workers may have passed other watermarks: an event of this part can be
        // older than the largest restored.
        for event in state.pending.into_iter().filter(|e| owns(&e.user_id)) {
            self.buffer(
                &event.user_id,
                &event.event_id,
                event.page_name.as_deref(),
                event.time_ms,
                event.boundary,
                true,
            );
        }
        self.recent_ids.restore(state.recent_ids);
        if let Some(mut histories) = self.histories.take() {
            for saved in state.histories.into_iter().filter(|h| owns(&h.user_id)) {
                histories.restore(saved);
            }
            // Restoring a history may have moved it, and a session restored above has no link.
            for (user, session) in self.open.iter_mut() {
                session.history = histories.link(user);
            }
            self.histories = Some(histories);
        }
    }

    /// Before restoring a part that amends: forgets the pending events of the users its writer
    /// owned (`written_by`) that its watermark has passed, which that writer applied since the
    /// checkpoint before.
    pub fn forget_applied(&mut self, watermark: u64, written_by: impl Fn(&str) -> bool) {
        let slots = self
            .pending
            .range_mut(..watermark.div_ceil(PENDING_SLOT_MS));
        let mut forgotten = 0;
        for slot in slots.map(|(_, slot)| slot) {
            forgotten += slot.retain(|e| e.time_ms >= watermark || !written_by(e.user_id));
        }
        self.pending.retain(|_, slot| !slot.is_empty());
        self.pending_count -= forgotten;
    }

    fn apply_pending_before(&mut self, watermark: u64, closed: &mut Vec<ClosedSession>) {
        // Slots hold disjoint spans of time, so applying them one after the other, each sorted,
        // applies every event in time order.
        while let Some(first) = self.pending.first_entry() {
            let key = *first.key();
            if key * PENDING_SLOT_MS >= watermark {
                break;
            }
            let mut slot = first.remove();
            let ready = slot.take_before(watermark);
            self.pending_count -= ready.len();
            for entry in ready {
                self.apply(slot.event(entry), closed);
            }
            if !slot.is_empty() {
                self.pending.insert(key, slot);
                break;
            }
        }
    }

    fn apply(&mut self, event: PendingEvent<'_>, closed: &mut Vec<ClosedSession>) {
        let (time_ms, user_id, event_id) = (event.time_ms, event.user_id, event.event_id);
        let duplicate = self
            .recent_ids
            .is_duplicate(IdKey::of(user_id, event_id), time_ms);
        let page = event.page_name.map(|page| self.intern(page));
        let (boundary, rules) = (event.boundary, self.rules);
        let open = self.open.find(user_id);
        let mut history = None;
        // Why the open session ends before this event, if it does.
        let ends = open.and_then(|slot| {
            let session = self.open.session_mut(slot);
            history = session.history;
            if time_ms - session.last_ms > rules.inactivity_ms {
                Some(EndReason::Inactivity)
            } else if time_ms - session.start_ms > rules.max_duration_ms {
                Some(EndReason::MaxDuration)
            } else if boundary.starts {
                Some(EndReason::Boundary)
            } else {
                None
            }
        });
        // The user's id, shared by its history and its session once it has both, and the link
        // of its history.
        let mut user = None;
        if let Some(histories) = &mut self.histories {
            let whose = history.map_or(Whose::User(user_id), Whose::Linked);
            let logged = EventRef {
                time_ms,
                event_id,
                page: page.as_deref(),
                boundary,
                duplicate,
            };
            if duplicate || (open.is_some() && ends.is_none()) {
                histories.append(whose, logged);
            } else {
                if let Some(reason) = ends {
                    histories.end(whose, reason);
                }
                let (id, link) = histories.start(whose, logged);
                (user, history) = (Some(id), Some(link));
            }
        }
        if duplicate {
            self.duplicates += 1;
            return;
        }
        let (slot, starts) = match (open, ends) {
            (Some(slot), None) => {
                let session = self.open.session_mut(slot);
                session.last_ms = time_ms;
                session.event_count += 1;
                if let Some(page) = page {
                    session.visit(page);
                }
                self.open.mark_changed(slot);
                (slot, false)
            }
            (Some(slot), Some(reason)) => {
                let ended = self
                    .open
                    .replace(slot, OpenSession::starting(time_ms, page, history));
                closed.push(finish(Rc::clone(self.open.user(slot)), ended, reason));
                (slot, true)
            }
            (None, _) => {
                let user = user.unwrap_or_else(|| user_id.into());
                (
                    self.open
                        .insert(user, OpenSession::starting(time_ms, page, history)),
                    true,
                )
            }
        };
        // A session that starts here needs a deadline, unless a boundary ends it right away.
        if boundary.ends {
            let (user, session) = self.open.remove_slot(slot).expect("applied above");
            self.close(user, session, EndReason::Boundary, closed);
        } else if starts {
            self.schedule(slot);
        }
    }

    /// Queues the session in an occupied slot to close at its current deadline.
    pub(super) fn schedule(&mut self, slot: SlotNumber) {
        let (_, session) = self.open.slot(slot).expect("an occupied slot");
        let deadline = session.last_ms + self.rules.inactivity_ms;
        let generation = self.open.generation(slot);
        self.deadlines.push(Reverse((deadline, slot, generation)));
    }

    /// Ends a session that is no longer open: a row, and an ended user for the checkpoint.
    fn close(
        &mut self,
        user: Rc<str>,
        session: OpenSession,
        reason: EndReason,
        closed: &mut Vec<ClosedSession>,
    ) {
        if let Some(histories) = &mut self.histories {
            histories.end(
                session.history.map_or(Whose::User(&user), Whose::Linked),
                reason,
            );
        }
        self.ended.push(&user);
        closed.push(finish(user, session, reason));
    }

    /// The time before which histories forget closed sessions: no event within the horizon can
    /// change them, nor count as their duplicate, nor end their successor's predecessor.
    fn history_kept_from(&self) -> u64 {
        let rules = self.rules;
        self.watermark
            .saturating_sub(self.correction_horizon_ms)
            .saturating_sub(rules.inactivity_ms)
            .saturating_sub(rules.max_duration_ms)
            .saturating_sub(rules.dedup_window_ms)
    }

    /// Records an event id as applied at `time_ms`, out of the order of application: for the
    /// events a correction applies, and for those a replay must know from before it.
    pub(super) fn remember_id(&mut self, user_id: &str, event_id: &str, time_ms: u64) {
        self.recent_ids
            .remember(IdKey::of(user_id, event_id), time_ms);
    }

    /// Forgets an event id applied at `time_ms` that a correction found to be a duplicate.
    pub(super) fn forget_id(&mut self, user_id: &str, event_id: &str, time_ms: u64) {
        self.recent_ids
            .forget(IdKey::of(user_id, event_id), time_ms);
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

fn finish(user_id: Rc<str>, session: OpenSession, end_reason: EndReason) -> ClosedSession {
    ClosedSession {
        user_id,
        start_ms: session.start_ms,
        end_ms: session.last_ms,
        event_count: session.event_count,
        pages_visited: session.pages_visited.into_vec(),
        end_reason,
        corrected: false,
    }
}
