//! [`OpenSessions`]: the open session of each user, in about 150 bytes a session.
//!
//! A map from user id to session would spend most of its memory on its own table: hash tables
//! keep a quarter to a half of their buckets empty, and a bucket here would hold the whole entry.
//! Instead the entries live in a dense vector of slots, the table holds only 4-byte slot numbers,
//! and a slot number also names the session in the sessionizer's deadlines.

use std::hash::BuildHasher;
use std::rc::Rc;

use foldhash::fast::RandomState;
use hashbrown::HashTable;

use super::MAX_PAGES_PER_SESSION;
use super::history::HistoryLink;

#[derive(Debug)]
pub(super) struct OpenSession {
    pub start_ms: u64,
    pub last_ms: u64,
    pub event_count: u64,
    /// Exactly as long as it needs to be: a session visits few pages and gains them rarely, and
    /// a million sessions' spare capacity would cost more than the reallocations.
    pub pages_visited: Box<[Rc<str>]>,
    /// Where the user's history is, so that the events of a session reach it without a second
    /// lookup of the user; `None` without histories, or before the sessionizer links it.
    pub history: Option<HistoryLink>,
    /// How many sessions its slot held before it, wrapping: with the slot number, it names the
    /// session in the sessionizer's deadlines. Kept by the vacant slot too, so that the next
    /// session in the slot has another.
    generation: Generation,
    /// Changed since the last checkpoint was saved.
    pub changed: bool,
    /// Its slot is in `OpenSessions::changed`; kept by the vacant slot when the session ends.
    listed: bool,
}

/// See [`OpenSession::generation`]. Two bytes are enough: generations only save the deadlines'
/// heap an entry for a session that has moved on, and an entry lives for one inactivity timeout.
pub(super) type Generation = u16;

impl OpenSession {
    pub fn starting(time_ms: u64, page: Option<Rc<str>>, history: Option<HistoryLink>) -> Self {
        OpenSession {
            start_ms: time_ms,
            last_ms: time_ms,
            event_count: 1,
            pages_visited: page.into_iter().collect(),
            history,
            generation: 0,
            changed: true,
            listed: false,
        }
    }

    /// A session as a checkpoint saved it: unchanged since.
    pub fn restored(
        start_ms: u64,
        last_ms: u64,
        event_count: u64,
        pages_visited: Box<[Rc<str>]>,
    ) -> Self {
        OpenSession {
            start_ms,
            last_ms,
            event_count,
            pages_visited,
            history: None,
            generation: 0,
            changed: false,
            listed: false,
        }
    }

    /// Adds a page to the pages visited, unless it is there already or the list is full.
    pub fn visit(&mut self, page: Rc<str>) {
        let pages = &mut self.pages_visited;
        // Pages are interned, so a page seen before is nearly always the same `Rc`: the text is
        // compared only when the pointers differ everywhere (the interned set may have been
        // cleared since, or the page is new).
        let seen = |pages: &[Rc<str>]| {
            pages.iter().any(|p| Rc::ptr_eq(p, &page)) || pages.iter().any(|p| **p == *page)
        };
        if pages.len() < MAX_PAGES_PER_SESSION && !seen(pages) {
            let mut grown = std::mem::take(pages).into_vec();
            grown.reserve_exact(1);
            grown.push(page);
            *pages = grown.into_boxed_slice();
        }
    }
}

/// The number of a slot in [`OpenSessions`]: it names a session while the session is open, and
/// is reused by another once it ends.
pub(super) type SlotNumber = u32;

#[derive(Debug)]
struct Slot {
    /// `None` while the slot is vacant. Shared with the user's history and the rows of its
    /// sessions, so that a user's id is kept once.
    user_id: Option<Rc<str>>,
    session: OpenSession,
}

// A slot stays 64 bytes: the history link and the generation live in what was the session's
// padding.
const _: () = assert!(std::mem::size_of::<Slot>() == 64);

impl Slot {
    /// What a slot holds while no session is open in it; `listed` and `generation` as the
    /// session it held.
    fn vacancy(listed: bool, generation: Generation) -> OpenSession {
        OpenSession {
            listed,
            generation,
            ..OpenSession::restored(0, 0, 0, Box::default())
        }
    }
}

/// The open sessions, one per user, by user id.
#[derive(Debug, Default)]
pub(super) struct OpenSessions {
    /// Slot numbers, found by the hash of their slot's user id.
    index: HashTable<SlotNumber>,
    slots: Vec<Slot>,
    /// Vacant slots, reused before the vector grows.
    vacant: Vec<SlotNumber>,
    /// The slots whose session changed since [`saved`](Self::saved), each once, so that a
    /// checkpoint of the changes costs what changed rather than a walk over every session.
    changed: Vec<SlotNumber>,
    hasher: RandomState,
}

impl OpenSessions {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// The slot of a user's open session.
    pub fn find(&self, user_id: &str) -> Option<SlotNumber> {
        let slots = &self.slots;
        self.index
            .find(self.hasher.hash_one(user_id), |&n| {
                slots[n as usize].user_id.as_deref() == Some(user_id)
            })
            .copied()
    }

    /// The session in an occupied slot.
    pub fn session_mut(&mut self, slot: SlotNumber) -> &mut OpenSession {
        let slot = &mut self.slots[slot as usize];
        debug_assert!(slot.user_id.is_some(), "a vacant slot");
        &mut slot.session
    }

    /// The user and session in a slot, if it is occupied.
    pub fn slot(&self, slot: SlotNumber) -> Option<(&str, &OpenSession)> {
        let Slot { user_id, session } = self.slots.get(slot as usize)?;
        Some((user_id.as_deref()?, session))
    }

    /// Opens a session for a user, replacing the user's open one if any; returns its slot.
    pub fn insert(
        &mut self,
        user_id: impl AsRef<str> + Into<Rc<str>>,
        session: OpenSession,
    ) -> SlotNumber {
        if let Some(slot) = self.find(user_id.as_ref()) {
            self.replace(slot, session);
            return slot;
        }
        let user_id: Rc<str> = user_id.into();
        let hash = self.hasher.hash_one(&*user_id);
        let number = match self.vacant.pop() {
            Some(number) => {
                self.slots[number as usize].user_id = Some(user_id);
                number
            }
            None => {
                self.slots.push(Slot {
                    user_id: Some(user_id),
                    session: Slot::vacancy(false, 0),
                });
                SlotNumber::try_from(self.slots.len() - 1)
                    .expect("fewer than 4 billion open sessions per worker")
            }
        };
        self.replace(number, session);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.insert_unique(hash, number, |&n| {
            hasher.hash_one(slots[n as usize].user_id.as_deref().expect("indexed"))
        });
        number
    }

    /// Which of the sessions its slot has held is in an occupied slot: a session is named by its
    /// slot and this.
    pub fn generation(&self, slot: SlotNumber) -> Generation {
        self.slots[slot as usize].session.generation
    }

    /// The user whose session is in an occupied slot.
    pub fn user(&self, slot: SlotNumber) -> &Rc<str> {
        self.slots[slot as usize]
            .user_id
            .as_ref()
            .expect("an occupied slot")
    }

    /// Puts a session in an occupied slot in place of the one there; returns that one.
    pub fn replace(&mut self, slot: SlotNumber, mut session: OpenSession) -> OpenSession {
        let current = &mut self.slots[slot as usize].session;
        session.listed = current.listed;
        session.generation = current.generation.wrapping_add(1);
        let changed = session.changed;
        let replaced = std::mem::replace(current, session);
        if changed {
            self.mark_changed(slot);
        }
        replaced
    }

    /// Records that the session in a slot changed since the last saved checkpoint.
    pub fn mark_changed(&mut self, slot: SlotNumber) {
        let session = &mut self.slots[slot as usize].session;
        session.changed = true;
        if !session.listed {
            session.listed = true;
            self.changed.push(slot);
        }
    }

    /// The sessions changed since the last [`saved`](Self::saved), each once.
    pub fn changed(&self) -> impl Iterator<Item = (&str, &OpenSession)> {
        self.changed
            .iter()
            .filter_map(|&slot| self.slot(slot))
            .filter(|(_, session)| session.changed)
    }

    /// Records that a checkpoint holding every change so far was saved.
    pub fn saved(&mut self) {
        for slot in self.changed.drain(..) {
            let session = &mut self.slots[slot as usize].session;
            session.changed = false;
            session.listed = false;
        }
    }

    /// Closes the session in a slot.
    pub fn remove_slot(&mut self, slot: SlotNumber) -> Option<(Rc<str>, OpenSession)> {
        let user_id = self.slots.get(slot as usize)?.user_id.as_deref()?;
        let hash = self.hasher.hash_one(user_id);
        let entry = self.index.find_entry(hash, |&n| n == slot);
        entry.expect("an occupied slot is indexed").remove();
        self.vacant.push(slot);
        let Slot { user_id, session } = &mut self.slots[slot as usize];
        let vacancy = Slot::vacancy(session.listed, session.generation);
        let user_id = user_id.take().expect("occupied");
        Some((user_id, std::mem::replace(session, vacancy)))
    }

    /// Closes a user's session.
    pub fn remove(&mut self, user_id: &str) -> Option<(Rc<str>, OpenSession)> {
        let slot = self.find(user_id)?;
        self.remove_slot(slot)
    }

    /// The open sessions, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &OpenSession)> {
        self.slots
            .iter()
            .filter_map(|slot| Some((slot.user_id.as_deref()?, &slot.session)))
    }

    /// The open sessions, in no particular order, to change in place: not listed as changed.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut OpenSession)> {
        self.slots
            .iter_mut()
            .filter_map(|slot| Some((slot.user_id.as_deref()?, &mut slot.session)))
    }

    /// Closes up to `limit` sessions, those in the last slots first, and gives back the room of
    /// the slots they leave, so that closing a million sessions a slice at a time never holds
    /// both all the slots and all their rows.
    pub fn close_last(&mut self, limit: usize) -> Vec<(Rc<str>, OpenSession)> {
        let mut closed = Vec::with_capacity(limit.min(self.len()));
        while closed.len() < limit {
            let Some(Slot { user_id, session }) = self.slots.pop() else {
                break;
            };
            let Some(user_id) = user_id else {
                continue;
            };
            let slot = SlotNumber::try_from(self.slots.len()).expect("slot numbers fit");
            let hash = self.hasher.hash_one(&*user_id);
            let entry = self.index.find_entry(hash, |&n| n == slot);
            entry.expect("an occupied slot is indexed").remove();
            closed.push((user_id, session));
        }
        let len = self.slots.len();
        self.vacant.retain(|&n| (n as usize) < len);
        self.changed.retain(|&n| (n as usize) < len);
        if len < self.slots.capacity() / 2 {
            self.slots.shrink_to_fit();
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    /// One step on the open sessions: `(operation, user, time)`.
    type Step = (u8, u8, u64);

    proptest! {
        /// Against a map and a set: whatever the order of opening, replacing, changing, closing
        /// (one or the last few) and saving, the sessions are the map's and the changed ones are
        /// listed once each.
        #[test]
        fn behave_like_a_map_with_a_set_of_changed_users(
            steps in proptest::collection::vec((0..6u8, 0..6u8, 0..1000u64), 1..200)
        ) {
            let mut open = OpenSessions::default();
            let mut model: BTreeMap<String, u64> = BTreeMap::new();
            let mut changed: BTreeSet<String> = BTreeSet::new();
            for (operation, user, time) in steps as Vec<Step> {
                let user = format!("user-{user}");
                match operation {
                    0 => {
                        open.insert(user.as_str(), OpenSession::starting(time, None, None));
                        model.insert(user.clone(), time);
                        changed.insert(user);
                    }
                    1 => {
                        let restored = OpenSession::restored(time, time, 1, Box::default());
                        let slot = open.insert(user.as_str(), restored);
                        prop_assert_eq!(open.find(&user), Some(slot));
                        model.insert(user.clone(), time);
                        changed.remove(&user);
                    }
                    2 => {
                        if let Some(slot) = open.find(&user) {
                            open.mark_changed(slot);
                            changed.insert(user);
                        }
                    }
                    3 => {
                        let removed = open.remove(&user).map(|(u, s)| (u.to_string(), s.start_ms));
                        prop_assert_eq!(removed, model.remove(&user).map(|t| (user.clone(), t)));
                        changed.remove(&user);
                    }
                    4 => {
                        let limit = (time % 3) as usize;
                        let closed = open.close_last(limit);
                        prop_assert_eq!(closed.len(), limit.min(model.len()));
                        for (user, session) in closed {
                            prop_assert_eq!(model.remove(&*user), Some(session.start_ms));
                            changed.remove(&*user);
                        }
                    }
                    _ => {
                        open.saved();
                        changed.clear();
                    }
                }
                let sessions: BTreeMap<String, u64> =
                    open.iter().map(|(u, s)| (u.to_string(), s.start_ms)).collect();
                prop_assert_eq!(&sessions, &model);
                prop_assert_eq!(open.len(), model.len());
                let listed: Vec<String> = open.changed().map(|(u, _)| u.to_string()).collect();
                let listed_set: BTreeSet<String> = listed.iter().cloned().collect();
                prop_assert_eq!(listed.len(), listed_set.len(), "a session listed twice");
                prop_assert_eq!(&listed_set, &changed);
            }
        }
    }

    #[test]
    fn slots_are_reused_and_users_found_after_removals() {
        let mut open = OpenSessions::default();
        let a = open.insert("a", OpenSession::starting(1, None, None));
        let b = open.insert("b", OpenSession::starting(2, None, None));
        assert_ne!(a, b);
        assert_eq!(open.remove("a").map(|(user, _)| user), Some("a".into()));
        assert!(open.find("a").is_none());
        assert!(open.slot(a).is_none());
        let c = open.insert("c", OpenSession::starting(3, None, None));
        assert_eq!(c, a, "a vacant slot is reused");
        assert_eq!(open.find("b"), Some(b));
        assert_eq!(
            open.slot(c).map(|(user, s)| (user, s.start_ms)),
            Some(("c", 3))
        );
        assert_eq!(
            open.insert("b", OpenSession::starting(4, None, None)),
            b,
            "replaced in place"
        );
        assert_eq!(open.len(), 2);
        let mut all: Vec<_> = open.close_last(1);
        all.extend(open.close_last(usize::MAX));
        let mut all: Vec<_> = all.into_iter().map(|(u, s)| (u, s.start_ms)).collect();
        all.sort();
        assert_eq!(all, [("b".into(), 4), ("c".into(), 3)]);
        assert_eq!(open.len(), 0);
    }

    #[test]
    fn each_changed_session_is_listed_once_until_saved() {
        let mut open = OpenSessions::default();
        let a = open.insert("a", OpenSession::starting(1, None, None));
        open.insert("b", OpenSession::restored(2, 2, 1, Box::default()));
        open.mark_changed(a);
        open.saved();
        assert_eq!(open.changed().count(), 0);
        let b = open.find("b").expect("open");
        open.mark_changed(b);
        open.mark_changed(b);
        // A session that ends and a new one that takes its slot, within one checkpoint.
        open.remove("b");
        let c = open.insert("c", OpenSession::starting(3, None, None));
        assert_eq!(c, b);
        open.replace(a, OpenSession::starting(4, None, None));
        let mut changed: Vec<_> = open.changed().map(|(user, s)| (user, s.start_ms)).collect();
        changed.sort();
        assert_eq!(changed, [("a", 4), ("c", 3)]);
        open.saved();
        assert_eq!(open.changed().count(), 0);
        assert!(open.iter().all(|(_, s)| !s.changed));
    }

    #[test]
    fn pages_are_kept_once_each_in_visiting_order() {
        // Interned pages (the same `Rc`) and equal texts in other `Rc`s alike.
        let search: Rc<str> = "search".into();
        let mut session = OpenSession::starting(0, Some("home".into()), None);
        for page in [
            &search,
            &"home".into(),
            &"cart".into(),
            &search,
            &"search".into(),
        ] {
            session.visit(Rc::clone(page));
        }
        let pages: Vec<&str> = session.pages_visited.iter().map(|p| &**p).collect();
        assert_eq!(pages, ["home", "search", "cart"]);
    }
}
