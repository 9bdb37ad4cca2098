//! Events waiting for the watermark, filed by slots of event time.
//!
//! A pending event costs about the bytes of its ids and page name: an 8-byte entry in its slot,
//! and its texts, length-prefixed, in the slot's one buffer. Struct fields of their own (a time, a
//! shared page name, offsets and lengths) would cost more than the texts, and pending events are
//! the events of the whole allowed lateness.

use super::Boundary;
use super::encoding::{push_text, take_text, text_len};

/// Pending events are filed by this span of event time, so that buffering costs no allocation per
/// event and a watermark releases whole slots at once.
pub(super) const PENDING_SLOT_MS: u64 = 1000;

/// A pending event, as it is buffered and read back.
#[derive(Debug, Clone, Copy)]
pub(super) struct PendingEvent<'a> {
    pub time_ms: u64,
    pub user_id: &'a str,
    pub event_id: &'a str,
    pub page_name: Option<&'a str>,
    pub boundary: Boundary,
    /// In a saved checkpoint already.
    pub saved: bool,
}

/// The events of one slot of event time. See the module documentation.
#[derive(Debug)]
pub(super) struct PendingSlot {
    start_ms: u64,
    entries: Vec<Entry>,
    /// Each event's user id, event id and page name (if it has one), length-prefixed. The bytes
    /// of events applied or forgotten while others remain stay until the slot is dropped.
    bytes: Vec<u8>,
}

/// An event of a slot, in one word: from the top, the millisecond within the slot (10 bits),
/// where its texts start in the slot's bytes (40 bits), and its flags.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry(u64);

const MS_SHIFT: u32 = 54;
const AT_SHIFT: u32 = 14;
const AT_LIMIT: u64 = 1 << (MS_SHIFT - AT_SHIFT);
const STARTS: u64 = 1;
const ENDS: u64 = 1 << 1;
const SAVED: u64 = 1 << 2;
const HAS_PAGE: u64 = 1 << 3;
const _: () = assert!(PENDING_SLOT_MS <= 1 << (64 - MS_SHIFT));

impl Entry {
    fn ms(self) -> u64 {
        self.0 >> MS_SHIFT
    }

    fn at(self) -> usize {
        ((self.0 >> AT_SHIFT) & (AT_LIMIT - 1)) as usize
    }

    fn has(self, flag: u64) -> bool {
        self.0 & flag != 0
    }
}

impl PendingSlot {
    /// The slot of the events from `start_ms` (a multiple of [`PENDING_SLOT_MS`]) on.
    pub fn new(start_ms: u64) -> Self {
        PendingSlot {
            start_ms,
            entries: Vec::new(),
            bytes: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// # Panics
    /// If the event's time is not within the slot.
    pub fn push(&mut self, event: PendingEvent<'_>) {
        let ms = event.time_ms - self.start_ms;
        assert!(
            ms < PENDING_SLOT_MS,
            "event at {} outside its slot",
            event.time_ms
        );
        let at = self.bytes.len() as u64;
        assert!(at < AT_LIMIT, "a second of pending events holds over 1 TiB");
        let mut word = ms << MS_SHIFT | at << AT_SHIFT;
        for (set, flag) in [
            (event.boundary.starts, STARTS),
            (event.boundary.ends, ENDS),
            (event.saved, SAVED),
            (event.page_name.is_some(), HAS_PAGE),
        ] {
            if set {
                word |= flag;
            }
        }
        let page_len = event.page_name.map_or(0, text_len);
        self.bytes
            .reserve(text_len(event.user_id) + text_len(event.event_id) + page_len);
        push_text(&mut self.bytes, event.user_id);
        push_text(&mut self.bytes, event.event_id);
        if let Some(page) = event.page_name {
            push_text(&mut self.bytes, page);
        }
        self.entries.push(Entry(word));
    }

    /// The event of one of this slot's entries.
    pub fn event(&self, entry: Entry) -> PendingEvent<'_> {
        let mut bytes = &self.bytes[entry.at()..];
        let mut text = || take_text(&mut bytes).expect("pending texts are written by push");
        let (user_id, event_id) = (text(), text());
        PendingEvent {
            time_ms: self.start_ms + entry.ms(),
            user_id,
            event_id,
            page_name: entry.has(HAS_PAGE).then(text),
            boundary: Boundary {
                starts: entry.has(STARTS),
                ends: entry.has(ENDS),
            },
            saved: entry.has(SAVED),
        }
    }

    pub fn events(&self) -> impl Iterator<Item = PendingEvent<'_>> {
        self.entries.iter().map(|&entry| self.event(entry))
    }

    /// Removes the events before `time_ms` and returns their entries in the order they are to be
    /// applied: by time, and events of the same time by event id, page name and boundary, so that
    /// the order does not depend on their arrival.
    pub fn take_before(&mut self, time_ms: u64) -> Vec<Entry> {
        let cut = time_ms.saturating_sub(self.start_ms);
        let mut ready = if cut >= PENDING_SLOT_MS {
            std::mem::take(&mut self.entries)
        } else {
            let (ready, kept) = self.entries.iter().partition(|e| e.ms() < cut);
            self.entries = kept;
            ready
        };
        // Times nearly always differ: the texts are read only for a tie.
        ready.sort_unstable_by(|&a, &b| {
            a.ms().cmp(&b.ms()).then_with(|| {
                let (a, b) = (self.event(a), self.event(b));
                (a.event_id, a.page_name, a.boundary).cmp(&(b.event_id, b.page_name, b.boundary))
            })
        });
        ready
    }

    /// Keeps the events `keep` accepts; returns how many it dropped.
    pub fn retain(&mut self, mut keep: impl FnMut(PendingEvent<'_>) -> bool) -> usize {
        let before = self.entries.len();
        let mut entries = std::mem::take(&mut self.entries);
        entries.retain(|&entry| keep(self.event(entry)));
        self.entries = entries;
        before - self.entries.len()
    }

    /// Records that a checkpoint holds every event of the slot.
    pub fn mark_saved(&mut self) {
        self.entries.iter_mut().for_each(|entry| entry.0 |= SAVED);
    }

    /// Gives back spare capacity, for a slot that is not likely to grow much more.
    pub fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
        self.bytes.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    type Owned = (u64, String, String, Option<String>, (bool, bool), bool);

    fn owned(event: PendingEvent<'_>) -> Owned {
        (
            event.time_ms,
            event.user_id.to_owned(),
            event.event_id.to_owned(),
            event.page_name.map(str::to_owned),
            (event.boundary.starts, event.boundary.ends),
            event.saved,
        )
    }

    fn event(e: &Owned) -> PendingEvent<'_> {
        PendingEvent {
            time_ms: e.0,
            user_id: &e.1,
            event_id: &e.2,
            page_name: e.3.as_deref(),
            boundary: Boundary {
                starts: e.4.0,
                ends: e.4.1,
            },
            saved: e.5,
        }
    }

    const START: u64 = 1_772_323_200_000;

    fn events() -> impl Strategy<Value = Vec<Owned>> {
        let one = (
            START..START + PENDING_SLOT_MS,
            "[a-c]{0,2}|.{0,40}",
            "[a-c]{0,2}|.{0,140}",
            prop::option::of("[a-c]{0,2}|.{0,20}"),
            (any::<bool>(), any::<bool>()),
            any::<bool>(),
        );
        prop::collection::vec(one, 0..60)
    }

    proptest! {
        /// Against a list of owned events: every event reads back as pushed, and those before a
        /// time come out sorted as a stable sort by time and content would put them.
        #[test]
        fn events_read_back_and_come_out_in_order(pushed in events(), cut in 0..PENDING_SLOT_MS + 1) {
            let mut slot = PendingSlot::new(START);
            for e in &pushed {
                slot.push(event(e));
            }
            prop_assert_eq!(slot.events().map(owned).collect::<Vec<_>>(), pushed.clone());

            let ready: Vec<Owned> = slot
                .take_before(START + cut)
                .into_iter()
                .map(|entry| owned(slot.event(entry)))
                .collect();
            let mut expected: Vec<Owned> =
                pushed.iter().filter(|e| e.0 < START + cut).cloned().collect();
            expected.sort_by(|a, b| (a.0, &a.2, &a.3, a.4).cmp(&(b.0, &b.2, &b.3, b.4)));
            let key = |e: &Owned| (e.0, e.2.clone(), e.3.clone(), e.4);
            prop_assert_eq!(ready.iter().map(key).collect::<Vec<_>>(), expected.iter().map(key).collect::<Vec<_>>());
            let kept: Vec<Owned> = pushed.iter().filter(|e| e.0 >= START + cut).cloned().collect();
            prop_assert_eq!(slot.events().map(owned).collect::<Vec<_>>(), kept);
        }

        #[test]
        fn retain_and_mark_saved_keep_the_rest_intact(pushed in events()) {
            let mut slot = PendingSlot::new(START);
            for e in &pushed {
                slot.push(event(e));
            }
            let dropped = slot.retain(|e| e.user_id.len() % 2 == 0);
            slot.mark_saved();
            let kept: Vec<Owned> = pushed
                .iter()
                .filter(|e| e.1.len() % 2 == 0)
                .map(|e| (e.0, e.1.clone(), e.2.clone(), e.3.clone(), e.4, true))
                .collect();
            prop_assert_eq!(dropped, pushed.len() - kept.len());
            prop_assert_eq!(slot.events().map(owned).collect::<Vec<_>>(), kept);
        }
    }
}
