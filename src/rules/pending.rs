//! Events waiting for the watermark, filed by slots of event time.

use std::rc::Rc;

use super::Boundary;

/// Pending events are filed by this span of event time, so that buffering costs no allocation per
/// event and a watermark releases whole slots at once.
pub(super) const PENDING_SLOT_MS: u64 = 1000;

/// The events of one slot of event time. Their ids share one buffer, so that buffering an event
/// allocates nothing of its own.
#[derive(Debug, Default)]
pub(super) struct PendingSlot {
    pub events: Vec<PendingEvent>,
    /// Each event's user id followed by its event id. The bytes of events applied or forgotten
    /// while others remain stay until the slot is dropped.
    pub ids: String,
}

/// An event waiting for the watermark to pass its time; its ids are in its slot.
#[derive(Debug)]
pub(super) struct PendingEvent {
    pub time_ms: u64,
    /// Where its user id starts in the slot's `ids`.
    pub ids_at: usize,
    pub user_len: u32,
    pub event_id_len: u32,
    pub page_name: Option<Rc<str>>,
    pub boundary: Boundary,
    /// In a saved checkpoint already.
    pub saved: bool,
}

impl PendingSlot {
    pub fn push(&mut self, user_id: &str, event_id: &str, event: PendingEvent) {
        let length =
            |id: &str| u32::try_from(id.len()).expect("ids are bounded by --max-event-bytes");
        let event = PendingEvent {
            ids_at: self.ids.len(),
            user_len: length(user_id),
            event_id_len: length(event_id),
            ..event
        };
        self.ids.push_str(user_id);
        self.ids.push_str(event_id);
        self.events.push(event);
    }
}

impl PendingEvent {
    /// Its user id, from its slot's `ids`.
    pub fn user_id<'a>(&self, ids: &'a str) -> &'a str {
        &ids[self.ids_at..self.ids_at + self.user_len as usize]
    }

    /// Its event id, from its slot's `ids`.
    pub fn event_id<'a>(&self, ids: &'a str) -> &'a str {
        let at = self.ids_at + self.user_len as usize;
        &ids[at..at + self.event_id_len as usize]
    }
}
