//! [`DedupWindow`]: the `(user, event_id)` pairs applied within the de-duplication window.
//!
//! Expiry is lazy. An entry keeps the latest time its pair was applied, and a lookup compares
//! that time with the window, so an expired entry never matches. Expired entries are swept out
//! when the table is full, before it would grow, and once per window of event time, so that an
//! idle stream gives back its memory. Expiring each entry on time would cost a queue of every
//! key in time order (24 bytes an event) and a second hash probe per event; a sweep walks the
//! table in memory order, and frees an eighth of it or grows it, so it costs a few entries' walk
//! per pair recorded.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use foldhash::fast::RandomState;

/// Marks an entry applied since the last checkpoint was saved, in the top bit of its time: times
/// are epoch milliseconds, far below 2^63.
const UNSAVED: u64 = 1 << 63;

/// The pairs applied within the window, with the time each was last applied.
#[derive(Debug)]
pub(super) struct DedupWindow {
    window_ms: u64,
    /// The latest time each key was applied, `UNSAVED`-marked until a checkpoint holds it.
    ids: HashMap<IdKey, u64, RandomState>,
    /// The latest time applied or expired at: no entry older than the window before it can
    /// match any more.
    latest_ms: u64,
    /// The event time at which the next sweep is due, however full the table.
    next_sweep_ms: u64,
    /// How many entries are marked `UNSAVED`.
    unsaved: usize,
}

impl DedupWindow {
    pub fn new(window_ms: u64) -> Self {
        DedupWindow {
            window_ms,
            ids: HashMap::default(),
            latest_ms: 0,
            next_sweep_ms: 0,
            unsaved: 0,
        }
    }

    /// Whether an event applied at `time_ms` repeats a pair applied at most the window before;
    /// if not, records it. Events are applied in time order, which sweeps rely on.
    pub fn is_duplicate(&mut self, key: IdKey, time_ms: u64) -> bool {
        self.latest_ms = self.latest_ms.max(time_ms);
        self.make_room();
        match self.ids.entry(key) {
            Entry::Occupied(seen) if live(*seen.get(), self.window_ms, time_ms) => return true,
            entry => stamp(entry.or_insert(0), time_ms, &mut self.unsaved),
        }
        false
    }

    /// Records a pair as applied at `time_ms`, out of the order of application: for the events a
    /// correction applies, and for those a replay must know from before it. The latest time wins.
    pub fn remember(&mut self, key: IdKey, time_ms: u64) {
        self.make_room();
        match self.ids.entry(key) {
            Entry::Occupied(seen) if *seen.get() & !UNSAVED >= time_ms => {}
            entry => stamp(entry.or_insert(0), time_ms, &mut self.unsaved),
        }
    }

    /// Forgets a pair applied at `time_ms` (a correction found it a duplicate), unless it was
    /// applied again later.
    pub fn forget(&mut self, key: IdKey, time_ms: u64) {
        if let Entry::Occupied(seen) = self.ids.entry(key)
            && *seen.get() & !UNSAVED == time_ms
        {
            self.unsaved -= usize::from(*seen.get() & UNSAVED != 0);
            seen.remove();
        }
    }

    /// Declares that no event before `time_ms` will be applied any more: sweeps if one is due.
    pub fn expire(&mut self, time_ms: u64) {
        self.latest_ms = self.latest_ms.max(time_ms);
        if self.latest_ms >= self.next_sweep_ms {
            self.sweep();
        }
    }

    /// The `(time, key)` entries a checkpoint at `watermark` saves: all live ones, or (not `full`)
    /// those applied since the last [`saved`](Self::saved).
    pub fn to_save(&self, full: bool, watermark: u64) -> Vec<(u64, u128)> {
        if !full && self.unsaved == 0 {
            return Vec::new();
        }
        self.ids
            .iter()
            .filter(|&(_, &seen)| {
                (full || seen & UNSAVED != 0) && live(seen, self.window_ms, watermark)
            })
            .map(|(key, seen)| (seen & !UNSAVED, key.to_u128()))
            .collect()
    }

    /// Records that the last checkpoint was saved.
    pub fn saved(&mut self) {
        if self.unsaved > 0 {
            self.ids.values_mut().for_each(|seen| *seen &= !UNSAVED);
            self.unsaved = 0;
        }
    }

    /// Adds the entries of a saved checkpoint: held by it, so not unsaved.
    pub fn restore(&mut self, saved: impl IntoIterator<Item = (u64, u128)>) {
        for (seen_ms, key) in saved {
            let seen = self.ids.entry(IdKey::from_u128(key)).or_insert(seen_ms);
            if *seen & !UNSAVED < seen_ms {
                *seen = seen_ms | (*seen & UNSAVED);
            }
        }
    }

    /// Before an insert into a full table: sweeps, and grows the table unless an eighth of it
    /// is free afterwards.
    fn make_room(&mut self) {
        let capacity = self.ids.capacity();
        if self.ids.len() < capacity {
            return;
        }
        self.sweep();
        if self.ids.len() + capacity / 8 >= capacity {
            self.ids.reserve(capacity / 8 + 1);
        }
    }

    fn sweep(&mut self) {
        let (window_ms, time_ms, mut dropped_unsaved) = (self.window_ms, self.latest_ms, 0);
        self.ids.retain(|_, &mut seen| {
            let kept = live(seen, window_ms, time_ms);
            dropped_unsaved += usize::from(!kept && seen & UNSAVED != 0);
            kept
        });
        self.unsaved -= dropped_unsaved;
        // After a burst, give back what the window no longer needs.
        if self.ids.len() * 4 < self.ids.capacity() {
            self.ids.shrink_to_fit();
        }
        self.next_sweep_ms = time_ms.saturating_add(window_ms.max(1));
    }
}

/// Sets an entry (a new one holds an unmarked 0) to `time_ms`, marked `UNSAVED` and counted.
fn stamp(seen: &mut u64, time_ms: u64, unsaved: &mut usize) {
    *unsaved += usize::from(*seen & UNSAVED == 0);
    *seen = time_ms | UNSAVED;
}

/// Whether a pair applied at `seen` (marked or not) makes one at `time_ms` a duplicate.
fn live(seen: u64, window_ms: u64, time_ms: u64) -> bool {
    (seen & !UNSAVED).saturating_add(window_ms) >= time_ms
}

/// A key of the window: the 128-bit hash of `(user, event_id)`, as two words so that an entry
/// aligns to 8 bytes rather than 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct IdKey([u64; 2]);

impl IdKey {
    pub fn of(user_id: &str, event_id: &str) -> Self {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(user_id.as_bytes());
        hasher.update(&[0x1f]);
        hasher.update(event_id.as_bytes());
        Self::from_u128(hasher.digest128())
    }

    pub fn from_u128(key: u128) -> Self {
        IdKey([(key >> 64) as u64, key as u64])
    }

    pub fn to_u128(self) -> u128 {
        (u128::from(self.0[0]) << 64) | u128::from(self.0[1])
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// The window as the rules state it, with every entry expired on time: the latest time of
    /// each key, and whether the last saved checkpoint holds it.
    #[derive(Default)]
    struct Model {
        ids: BTreeMap<u128, (u64, bool)>,
    }

    impl Model {
        fn expire(&mut self, window_ms: u64, time_ms: u64) {
            self.ids
                .retain(|_, (seen, _)| seen.saturating_add(window_ms) >= time_ms);
        }
    }

    proptest! {
        /// Against the model: whatever the mix of applying, remembering, forgetting, saving and
        /// watermarks, the same duplicates and the same checkpoints.
        #[test]
        fn expires_like_the_rules(
            window_ms in 0..50u64,
            steps in prop::collection::vec((0..6u8, 0..12u128, 0..20u64), 1..300)
        ) {
            let mut window = DedupWindow::new(window_ms);
            let mut model = Model::default();
            let mut now = 0;
            for (operation, key, step) in steps {
                match operation {
                    0 | 1 => {
                        now += step % 4;
                        model.expire(window_ms, now);
                        let duplicate = model.ids.contains_key(&key);
                        if !duplicate {
                            model.ids.insert(key, (now, false));
                        }
                        prop_assert_eq!(
                            window.is_duplicate(IdKey::from_u128(key), now),
                            duplicate
                        );
                    }
                    2 => {
                        let at = now.saturating_sub(step);
                        window.remember(IdKey::from_u128(key), at);
                        let entry = model.ids.entry(key).or_insert((at, false));
                        if entry.0 < at {
                            *entry = (at, false);
                        }
                    }
                    3 => {
                        let at = now.saturating_sub(step % 3);
                        window.forget(IdKey::from_u128(key), at);
                        if model.ids.get(&key).is_some_and(|(seen, _)| *seen == at) {
                            model.ids.remove(&key);
                        }
                    }
                    4 => {
                        now += step;
                        window.expire(now);
                        model.expire(window_ms, now);
                    }
                    _ => {
                        let full = step % 2 == 0;
                        let mut saved = window.to_save(full, now);
                        saved.sort_unstable();
                        let mut expected: Vec<(u64, u128)> = model
                            .ids
                            .iter()
                            .filter(|(_, (seen, saved))| {
                                (full || !saved) && seen.saturating_add(window_ms) >= now
                            })
                            .map(|(key, (seen, _))| (*seen, *key))
                            .collect();
                        expected.sort_unstable();
                        prop_assert_eq!(saved, expected);
                        window.saved();
                        model.ids.values_mut().for_each(|(_, saved)| *saved = true);
                    }
                }
            }
        }
    }

    #[test]
    fn restored_entries_are_saved_already_and_the_latest_time_wins() {
        let mut window = DedupWindow::new(100);
        assert!(!window.is_duplicate(IdKey::from_u128(1), 50));
        window.restore([(70, 1), (60, 2), (40, 2)]);
        assert_eq!(window.to_save(false, 80), vec![(70, 1)]);
        let mut all = window.to_save(true, 80);
        all.sort_unstable();
        assert_eq!(all, vec![(60, 2), (70, 1)]);
        assert!(window.is_duplicate(IdKey::from_u128(2), 160));
        assert!(!window.is_duplicate(IdKey::from_u128(2), 161));
    }
}
