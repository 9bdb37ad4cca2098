//! A partition's event-time clock: which events are late, how its watermark advances, when an
//! idle partition stops holding the others back, and how it resists devices with bad clocks.
//! Pure: times come in as arguments, so every rule here is tested on its own.
//!
//! A partition's watermark is its newest event time minus the allowed lateness; an event before
//! the watermark is late. The watermark never goes back.
//!
//! ```
//! use sessionize::watermark::{ClockLimits, PartitionClock};
//! let limits = ClockLimits { lateness_ms: 10, max_jump_ms: u64::MAX };
//! let mut clock = PartitionClock::default();
//! clock.observe("a", 100, limits);
//! assert_eq!(clock.watermark_ms, 90);
//! assert!(clock.is_late(89) && !clock.is_late(90));
//! clock.observe("a", 50, limits); // an older on-time event moves nothing
//! assert_eq!(clock.watermark_ms, 90);
//! ```
//!
//! The newest event time itself is guarded ([`JumpGuard`]): one event from a device
//! whose clock runs a day ahead would make the next day of its partition's events late. Here an
//! event further than a limit ahead of the partition's newest event time does not move it on its
//! own: the jump counts only once events of several users confirm it (a partition that truly
//! jumps, such as a replay across a gap in the data, does so for everyone). Until then those
//! events are still processed as on time; they just do not advance the watermark.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How a partition's event time may move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockLimits {
    /// How far behind the partition's newest event time an event is still on time.
    pub lateness_ms: u64,
    /// How far ahead of it an event moves it only once others confirm the jump; `u64::MAX`
    /// turns the guard off.
    pub max_jump_ms: u64,
}

/// A partition's event-time clock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionClock {
    /// The largest event time of an on-time event, jumps included.
    pub max_event_ms: Option<u64>,
    /// Events before this are late.
    pub watermark_ms: u64,
    /// The newest event time the watermark follows, and the jumps waiting for confirmation.
    pub jump_guard: JumpGuard,
}

impl PartitionClock {
    /// A clock that has seen no event, its watermark at `watermark_ms`.
    pub fn at(watermark_ms: u64) -> Self {
        PartitionClock {
            watermark_ms,
            ..PartitionClock::default()
        }
    }

    /// Whether an event at `time_ms` is late.
    pub fn is_late(&self, time_ms: u64) -> bool {
        time_ms < self.watermark_ms
    }

    /// An on-time event of `user` at `time_ms`: the newest event time and the watermark move on.
    pub fn observe(&mut self, user: &str, time_ms: u64, limits: ClockLimits) {
        self.max_event_ms = Some(self.max_event_ms.map_or(time_ms, |m| m.max(time_ms)));
        let newest = self.jump_guard.observe(user, time_ms, limits.max_jump_ms);
        self.watermark_ms = self
            .watermark_ms
            .max(newest.saturating_sub(limits.lateness_ms));
    }

    /// An idle partition stops holding the watermark back: its watermark follows the wall clock,
    /// `now - idle timeout - allowed lateness`, as a live source's would have had it kept
    /// sending. Returns whether the watermark moved.
    pub fn follow_wall_clock(
        &mut self,
        wall_clock_ms: u64,
        idle: Duration,
        lateness_ms: u64,
    ) -> bool {
        let follow = wall_clock_ms
            .saturating_sub(idle.as_millis() as u64)
            .saturating_sub(lateness_ms);
        let moved = follow > self.watermark_ms;
        self.watermark_ms = self.watermark_ms.max(follow);
        moved
    }
}

/// When a partition last delivered a record and last moved its watermark, for `--idle-timeout`.
/// A partition that keeps sending records with a frozen event time (a device clock stuck in the
/// past) counts as idle too, so that it cannot hold every worker's pending events back without
/// bound; its frozen records become late events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Idleness {
    last_record: Instant,
    last_advance: Instant,
}

impl Idleness {
    /// A partition that has just started, as if it had just delivered and advanced.
    pub fn new(now: Instant) -> Self {
        Idleness {
            last_record: now,
            last_advance: now,
        }
    }

    /// The partition delivered records at `now`.
    pub fn delivered(&mut self, now: Instant) {
        self.last_record = now;
    }

    /// The partition's watermark moved at `now`.
    pub fn advanced(&mut self, now: Instant) {
        self.last_advance = now;
    }

    /// Whether the partition has delivered nothing, or not moved its watermark, for `timeout`.
    pub fn is_idle(&self, now: Instant, timeout: Duration) -> bool {
        now.duration_since(self.last_record) >= timeout
            || now.duration_since(self.last_advance) >= timeout
    }
}

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

    const LIMITS: ClockLimits = ClockLimits {
        lateness_ms: 10 * 60_000,
        max_jump_ms: 6 * HOUR,
    };

    #[test]
    fn the_watermark_trails_the_newest_event_by_the_lateness_and_never_goes_back() {
        let mut clock = PartitionClock::default();
        clock.observe("a", HOUR, LIMITS);
        assert_eq!(clock.watermark_ms, HOUR - LIMITS.lateness_ms);
        assert_eq!(clock.max_event_ms, Some(HOUR));
        clock.observe("b", HOUR / 2, LIMITS);
        assert_eq!(clock.watermark_ms, HOUR - LIMITS.lateness_ms);
        // Exactly at the watermark is on time; a millisecond before is late.
        assert!(!clock.is_late(clock.watermark_ms));
        assert!(clock.is_late(clock.watermark_ms - 1));
    }

    #[test]
    fn a_guarded_jump_moves_the_largest_time_but_not_the_watermark() {
        let mut clock = PartitionClock::default();
        clock.observe("a", HOUR, LIMITS);
        clock.observe("bad-clock", 30 * HOUR, LIMITS);
        assert_eq!(clock.max_event_ms, Some(30 * HOUR));
        assert_eq!(clock.watermark_ms, HOUR - LIMITS.lateness_ms);
    }

    #[test]
    fn an_idle_partition_follows_the_wall_clock_forward_only() {
        let mut clock = PartitionClock::at(5 * HOUR);
        let idle = Duration::from_secs(60);
        assert!(!clock.follow_wall_clock(5 * HOUR, idle, LIMITS.lateness_ms));
        assert_eq!(clock.watermark_ms, 5 * HOUR);
        assert!(clock.follow_wall_clock(6 * HOUR, idle, LIMITS.lateness_ms));
        assert_eq!(clock.watermark_ms, 6 * HOUR - 60_000 - LIMITS.lateness_ms);
    }

    #[test]
    fn idleness_is_silence_or_a_frozen_watermark() {
        let start = Instant::now();
        let timeout = Duration::from_secs(10);
        let mut idleness = Idleness::new(start);
        assert!(!idleness.is_idle(start + Duration::from_secs(9), timeout));
        // Records keep coming, but the watermark stands still: idle all the same.
        idleness.delivered(start + Duration::from_secs(9));
        assert!(idleness.is_idle(start + Duration::from_secs(10), timeout));
        idleness.advanced(start + Duration::from_secs(10));
        assert!(!idleness.is_idle(start + Duration::from_secs(12), timeout));
        assert!(idleness.is_idle(start + Duration::from_secs(19), timeout));
    }

    #[test]
    fn within_the_limit_time_moves_at_once() {
        let mut guard = JumpGuard::starting_at(Some(0));
        assert_eq!(guard.observe("a", HOUR, HOUR), HOUR);
        assert_eq!(guard.observe("a", 10, HOUR), HOUR);
    }
}
