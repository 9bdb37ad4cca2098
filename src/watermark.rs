//! A partition's newest event time, from which its watermark follows, made resistant to devices
//! with bad clocks.
//!
//! A watermark is the newest event time minus the allowed lateness, so one event from a device
//! whose clock runs a day ahead would make the next day of its partition's events late. Here an
//! event further than a limit ahead of the partition's newest event time does not move it on its
//! own: the jump counts only once events of several users confirm it (a partition that truly
//! jumps, such as a replay across a gap in the data, does so for everyone). Until then those
//! events are still processed as on time; they just do not advance the watermark.

use serde::{Deserialize, Serialize};

/// Events of at least this many users, and this many events in all, confirm a jump.
const CONFIRMING_USERS: usize = 2;
const CONFIRMING_EVENTS: u64 = 3;

/// The events of a partition that came further ahead than the jump limit, by user.
///
/// ```
/// use sessionize::watermark::JumpGuard;
/// let hour = 3_600_000;
/// let mut guard = JumpGuard::default();
/// assert_eq!(guard.observe("a", 0, hour), 0);
/// // One device a day ahead does not move the partition's time...
/// assert_eq!(guard.observe("bad-clock", 24 * hour, hour), 0);
/// assert_eq!(guard.observe("a", 60_000, hour), 60_000);
/// // ...a jump that several users make does.
/// guard.observe("b", 3 * hour, hour);
/// assert_eq!(guard.observe("c", 3 * hour + 5, hour), 3 * hour + 5);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JumpGuard {
    /// The newest event time the watermark follows: the largest, but for jumps not confirmed.
    newest: Option<u64>,
    ahead: Vec<Ahead>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Ahead {
    /// A hash of the user id.
    user: u64,
    /// The user's earliest event time among these events.
    time: u64,
    events: u64,
}

impl JumpGuard {
    /// A guard whose partition's newest event time is `newest` (a partition restored from a
    /// commit made before the guard existed).
    pub fn starting_at(newest: Option<u64>) -> Self {
        JumpGuard {
            newest,
            ahead: Vec::new(),
        }
    }

    /// The newest event time the watermark follows, if any event was seen.
    pub fn newest(&self) -> Option<u64> {
        self.newest
    }

    /// The partition's newest event time for its watermark, after an on-time event of `user` at
    /// `time`, with jumps further than `limit` waiting for confirmation.
    pub fn observe(&mut self, user: &str, time: u64, limit: u64) -> u64 {
        let newest = self.observe_inner(user, time, limit);
        self.newest = Some(newest);
        newest
    }

    fn observe_inner(&mut self, user: &str, time: u64, limit: u64) -> u64 {
        let Some(newest) = self.newest else {
            return time;
        };
        if time <= newest.saturating_add(limit) {
            let newest = newest.max(time);
            self.ahead.retain(|a| a.time > newest);
            return newest;
        }
        let user = xxhash_rust::xxh3::xxh3_64(user.as_bytes());
        match self.ahead.iter_mut().find(|a| a.user == user) {
            Some(ahead) => {
                ahead.time = ahead.time.min(time);
                ahead.events += 1;
            }
            None => self.ahead.push(Ahead {
                user,
                time,
                events: 1,
            }),
        }
        let events: u64 = self.ahead.iter().map(|a| a.events).sum();
        if self.ahead.len() < CONFIRMING_USERS || events < CONFIRMING_EVENTS {
            return newest;
        }
        // Confirmed: move to the earliest of the jump, the cautious choice; whatever is still
        // too far ahead of it waits for confirmation of its own.
        let mut newest = self.ahead.iter().map(|a| a.time).min().expect("confirmed");
        let limit_from = newest;
        for ahead in &self.ahead {
            if ahead.time <= limit_from.saturating_add(limit) {
                newest = newest.max(ahead.time);
            }
        }
        self.ahead
            .retain(|a| a.time > limit_from.saturating_add(limit));
        newest
    }

    pub fn is_empty(&self) -> bool {
        *self == JumpGuard::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    #[test]
    fn one_device_far_ahead_never_moves_the_time() {
        let mut guard = JumpGuard::default();
        let mut newest = guard.observe("a", 0, HOUR);
        for i in 0..100 {
            guard.observe("bad", 23 * HOUR + i, HOUR);
            newest = guard.observe("a", i * 1000, HOUR);
        }
        assert_eq!(newest, 99_000);
        assert_eq!(guard.ahead.len(), 1);
    }

    #[test]
    fn a_jump_of_several_users_is_followed_and_the_outlier_still_waits() {
        let mut guard = JumpGuard::default();
        guard.observe("a", 0, HOUR);
        guard.observe("bad", 23 * HOUR, HOUR);
        guard.observe("b", 5 * HOUR, HOUR);
        let mut newest = guard.observe("c", 5 * HOUR + 10, HOUR);
        assert_eq!(newest, 5 * HOUR + 10);
        assert_eq!(guard.ahead.len(), 1);
        // Ordinary progress passes the outlier's time eventually, and forgets it.
        let mut time = 5 * HOUR;
        while time <= 23 * HOUR {
            time += HOUR / 2;
            newest = guard.observe("b", time, HOUR);
        }
        assert_eq!(guard.ahead.len(), 0);
        assert_eq!(newest, time);
    }

    #[test]
    fn within_the_limit_time_moves_at_once() {
        let mut guard = JumpGuard::starting_at(Some(0));
        assert_eq!(guard.observe("a", HOUR, HOUR), HOUR);
        assert_eq!(guard.observe("a", 10, HOUR), HOUR);
    }
}
