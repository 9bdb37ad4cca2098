//! A partition's event-time clock: which events are late, how its watermark advances, when an
//! idle partition stops holding the others back, and how it resists devices with bad clocks.
//! Pure: times come in as arguments, so every rule here is tested on its own.
//!
//! A partition's watermark is its newest event time minus the allowed lateness; an event before
//! the watermark is late. The watermark never goes back.
//!
//! ```
//! use sessionize::watermark::{ClockLimits, PartitionClock};
//! let limits = ClockLimits { lateness_ms: 10, max_jump_ms: u64::MAX, correction_horizon_ms: 0 };
//! let mut clock = PartitionClock::default();
//! clock.observe("a", 100, limits);
//! assert_eq!(clock.watermark_ms, 90);
//! assert!(clock.is_late(89) && !clock.is_late(90));
//! clock.observe("a", 50, limits); // an older on-time event moves nothing
//! assert_eq!(clock.watermark_ms, 90);
//! ```
//!
//! The newest event time itself is guarded ([`JumpGuard`]): one event from a device
//! whose clock runs hours ahead would make the next hours of its partition's events late. Here a
//! move of the partition's newest event time further than a limit is a jump, which counts only
//! once a share of the partition's current users and of its recent events confirm it, however far
//! it goes. Until then those events are still processed as on time; they just do not advance the
//! watermark.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How a partition's event time may move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockLimits {
    /// How far behind the partition's newest event time an event is still on time.
    pub lateness_ms: u64,
    /// How far ahead of it an event may move it at once; further is a jump, which others must
    /// confirm ([`JumpGuard`]). `u64::MAX` turns the guard off.
    pub max_jump_ms: u64,
    /// How far behind the watermark a late event still corrects its sessions (0: none does).
    pub correction_horizon_ms: u64,
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

    /// A late event that still corrects the sessions it belongs to, rather than going to the
    /// late events: within the horizon behind the watermark.
    pub fn corrects(&self, time_ms: u64, limits: ClockLimits) -> bool {
        limits.correction_horizon_ms > 0
            && time_ms.saturating_add(limits.correction_horizon_ms) >= self.watermark_ms
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

/// Whether a partition is idle, for `--idle-timeout`: its reader found it caught up and silent,
/// or it kept delivering records without moving its watermark, for the timeout. A partition that
/// keeps sending records with a frozen event time (a device clock stuck in the past) counts as
/// idle too, so that it cannot hold every worker's pending events back without bound; its frozen
/// records become late events.
///
/// Both spans are measured between observations, never up to the present, and two observations
/// further apart than the timeout start a span over: a worker that stalled (a slow disk under its
/// writer, a starved CPU, a stopped process) observed nothing meanwhile. Were they measured up to
/// the present, or across the stall, the stall alone would make the partition idle, and its
/// watermark would follow the wall clock past the records waiting for it.
///
/// ```
/// use std::time::{Duration, Instant};
/// use sessionize::watermark::Idleness;
/// let (start, second) = (Instant::now(), Duration::from_secs(1));
/// let mut idleness = Idleness::new(10 * second);
/// for s in 0..10 {
///     idleness.found_quiet(start + s * second);
/// }
/// assert!(!idleness.is_idle());
/// idleness.found_quiet(start + 10 * second);
/// assert!(idleness.is_idle());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Idleness {
    timeout: Duration,
    /// The first and the latest time the reader found the partition caught up and without
    /// records, since it last delivered.
    quiet: Option<Span>,
    /// The first and the latest delivery since the partition's watermark last moved.
    unmoved: Option<Span>,
    /// The last delivery or pause: a quiet look from before it is out of date.
    reset_at: Option<Instant>,
}

/// The first and the latest observation of a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span(Instant, Instant);

impl Span {
    /// The span with an observation at `at`; one more than `max_gap` after the span's latest
    /// starts another.
    fn extend(span: Option<Span>, at: Instant, max_gap: Duration) -> Option<Span> {
        Some(match span {
            Some(Span(first, latest)) if at <= latest => Span(first, latest),
            Some(Span(first, latest)) if at.duration_since(latest) <= max_gap => Span(first, at),
            _ => Span(at, at),
        })
    }

    fn lasted(span: Option<Span>, timeout: Duration) -> bool {
        span.is_some_and(|Span(first, latest)| latest.duration_since(first) >= timeout)
    }
}

impl Idleness {
    /// A partition idle after `timeout`, of which nothing has been observed yet.
    pub fn new(timeout: Duration) -> Self {
        Idleness {
            timeout,
            quiet: None,
            unmoved: None,
            reset_at: None,
        }
    }

    /// The partition delivered records at `now`.
    pub fn delivered(&mut self, now: Instant) {
        self.quiet = None;
        self.unmoved = Span::extend(self.unmoved, now, self.timeout);
        self.reset_at = Some(now);
    }

    /// The partition's watermark moved.
    pub fn advanced(&mut self) {
        self.unmoved = None;
    }

    /// The reader found the partition caught up with its broker and nothing waiting, at `at`.
    pub fn found_quiet(&mut self, at: Instant) {
        if self.reset_at.is_none_or(|reset| at >= reset) {
            self.quiet = Span::extend(self.quiet, at, self.timeout);
        }
    }

    /// The partition's records wait on purpose at `now` (paused for watermark alignment, or held
    /// until the epoch is cut), so it is not idle, and its timeout starts over when it resumes.
    /// Were it idle, its watermark would follow the wall clock past the records it was not
    /// allowed to read.
    pub fn paused(&mut self, now: Instant) {
        *self = Idleness {
            reset_at: Some(now),
            ..Idleness::new(self.timeout)
        };
    }

    /// Whether the partition was found quiet, or delivered without moving its watermark, over
    /// the timeout.
    pub fn is_idle(&self) -> bool {
        Span::lasted(self.quiet, self.timeout) || Span::lasted(self.unmoved, self.timeout)
    }
}

/// How many of a partition's latest on-time events the guard remembers: enough to tell who the
/// partition's current users are, few enough to keep in every commit's positions.
const RECENT_EVENTS: usize = 32;
/// A jump counts once a share of 1 in this many of the partition's current users, and of their
/// recent events, have reached it.
const CONFIRMING_SHARE: usize = 4;

/// The partition's newest event time for its watermark, guarded against jumps.
///
/// The newest time moves at once by up to `limit`; further is a jump, which counts only once a
/// quarter of the partition's current users (those of its latest events that are within `limit`
/// of its newest time), and a quarter of those events, have reached it, however far it goes. A
/// device whose clock runs hours ahead is one user among many, so its partition's time waits for
/// the others; a partition that truly jumps (a replay across a gap in the data) does so for
/// everyone, and a partition whose only current user jumps follows it.
///
/// ```
/// use sessionize::watermark::JumpGuard;
/// let (limit, hour) = (600_000, 3_600_000);
/// let mut guard = JumpGuard::default();
/// for (i, user) in ["a", "b", "c", "d", "e", "f", "g", "h"].iter().enumerate() {
///     guard.observe(user, i as u64 * 1000, limit);
/// }
/// // One device five hours ahead does not move the partition's time...
/// assert_eq!(guard.observe("bad-clock", 5 * hour, limit), 7000);
/// assert_eq!(guard.observe("a", 60_000, limit), 60_000);
/// // ...a jump that a quarter of the users make does.
/// assert_eq!(guard.observe("b", 3 * hour, limit), 60_000);
/// assert_eq!(guard.observe("c", 3 * hour + 5, limit), 3 * hour);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JumpGuard {
    /// The newest event time the watermark follows: the largest, but for jumps not confirmed.
    newest: Option<u64>,
    /// The partition's latest on-time events, oldest first: (a hash of the user id, event time).
    #[serde(default)]
    recent: VecDeque<(u32, u64)>,
}

impl JumpGuard {
    /// A guard whose partition's newest event time is `newest` (a partition restored from a
    /// commit made before the guard existed).
    pub fn starting_at(newest: Option<u64>) -> Self {
        JumpGuard {
            newest,
            recent: VecDeque::new(),
        }
    }

    /// The newest event time the watermark follows, if any event was seen.
    pub fn newest(&self) -> Option<u64> {
        self.newest
    }

    /// The partition's newest event time for its watermark, after an on-time event of `user` at
    /// `time`; a move further than `limit` waits for confirmation.
    pub fn observe(&mut self, user: &str, time: u64, limit: u64) -> u64 {
        if self.recent.len() == RECENT_EVENTS {
            self.recent.pop_front();
        }
        self.recent
            .push_back((xxhash_rust::xxh3::xxh3_64(user.as_bytes()) as u32, time));
        let newest = match self.newest {
            None => time,
            Some(newest) if time <= newest.saturating_add(limit) => newest.max(time),
            Some(newest) => newest.max(self.confirmed(newest, limit)),
        };
        self.newest = Some(newest);
        newest
    }

    /// The latest time that a share of the current users and of their recent events have
    /// reached. Only a jump gets here, so the sorting is paid by outliers, not by every event.
    fn confirmed(&self, newest: u64, limit: u64) -> u64 {
        let current_from = newest.saturating_sub(limit);
        let mut current: Vec<(u32, u64)> = self
            .recent
            .iter()
            .filter(|(_, time)| *time >= current_from)
            .copied()
            .collect();
        current.sort_unstable();
        // Each current user's latest time, and every current event's time, latest first.
        let mut users: Vec<u64> = current
            .chunk_by(|a, b| a.0 == b.0)
            .map(|events| events[events.len() - 1].1)
            .collect();
        let mut times: Vec<u64> = current.iter().map(|(_, time)| *time).collect();
        users.sort_unstable_by(|a, b| b.cmp(a));
        times.sort_unstable_by(|a, b| b.cmp(a));
        let by_users = users[users.len().div_ceil(CONFIRMING_SHARE) - 1];
        let by_volume = times[times.len().div_ceil(CONFIRMING_SHARE) - 1];
        by_users.min(by_volume)
    }

    pub fn is_empty(&self) -> bool {
        *self == JumpGuard::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    /// Events of `users` users in turn, a second apart, from `from`.
    fn steady(guard: &mut JumpGuard, users: usize, from: u64, events: usize) -> u64 {
        let mut newest = 0;
        for i in 0..events {
            let user = format!("user-{}", i % users);
            newest = guard.observe(&user, from + i as u64 * 1000, LIMIT);
        }
        newest
    }

    const LIMIT: u64 = 10 * 60_000;

    proptest::proptest! {
        /// Whatever the size of its lead (beyond the limit), one device among many never moves
        /// the partition's time, and ordinary progress is followed exactly.
        #[test]
        fn one_user_ahead_among_many_is_never_followed(
            users in 5usize..40,
            lead in (LIMIT + 1)..(48 * HOUR),
            every in 2usize..12,
            events in 50usize..400,
        ) {
            let mut guard = JumpGuard::default();
            for i in 0..events {
                let time = i as u64 * 1000;
                let newest = guard.observe(&format!("user-{}", i % users), time, LIMIT);
                proptest::prop_assert_eq!(newest, time);
                // From a few events in: among the very first, a device is a large share.
                if i >= 2 * CONFIRMING_SHARE * users.min(4) && i % every == 0 {
                    let newest = guard.observe("bad-clock", time + lead, LIMIT);
                    proptest::prop_assert_eq!(newest, time);
                }
            }
        }

        /// A whole partition that moves ahead, by any amount, is followed within a quarter of
        /// the recent events.
        #[test]
        fn a_partition_that_moves_ahead_is_followed(
            users in 1usize..40,
            jump in (LIMIT + 1)..(48 * HOUR),
        ) {
            let mut guard = JumpGuard::default();
            let before = steady(&mut guard, users, 0, 64);
            let after = steady(&mut guard, users, before + jump, RECENT_EVENTS / CONFIRMING_SHARE + users.min(8));
            proptest::prop_assert!(after >= before + jump, "{} < {}", after, before + jump);
        }
    }

    #[test]
    fn the_only_current_user_is_followed_at_once() {
        let mut guard = JumpGuard::default();
        guard.observe("a", 0, LIMIT);
        assert_eq!(guard.observe("a", 5 * HOUR, LIMIT), 5 * HOUR);
        // Users long behind the partition's time are not current: they do not hold it back.
        let mut guard = JumpGuard::default();
        steady(&mut guard, 10, 0, 20);
        guard.observe("a", 9 * 60_000, LIMIT);
        assert_eq!(guard.observe("a", 18 * 60_000, LIMIT), 18 * 60_000);
        assert_eq!(guard.observe("a", 5 * HOUR, LIMIT), 5 * HOUR);
    }

    #[test]
    fn the_guard_keeps_a_bounded_window() {
        let mut guard = JumpGuard::default();
        steady(&mut guard, 7, 0, 10 * RECENT_EVENTS);
        assert_eq!(guard.recent.len(), RECENT_EVENTS);
    }

    const LIMITS: ClockLimits = ClockLimits {
        lateness_ms: 10 * 60_000,
        max_jump_ms: LIMIT,
        correction_horizon_ms: 0,
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
        for user in ["a", "b", "c", "d", "e"] {
            clock.observe(user, HOUR, LIMITS);
        }
        clock.observe("bad-clock", 5 * HOUR, LIMITS);
        assert_eq!(clock.max_event_ms, Some(5 * HOUR));
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
        let at = |s| start + Duration::from_secs(s);
        let mut idleness = Idleness::new(Duration::from_secs(10));
        // Records keep coming, but the watermark stands still: idle all the same.
        for s in 0..10 {
            idleness.delivered(at(s));
        }
        assert!(!idleness.is_idle());
        idleness.delivered(at(10));
        assert!(idleness.is_idle());
        idleness.advanced();
        assert!(!idleness.is_idle());
        // Found quiet from 12 to 22: idle; a delivery starts over.
        for s in 12..22 {
            idleness.found_quiet(at(s));
        }
        assert!(!idleness.is_idle());
        idleness.found_quiet(at(22));
        assert!(idleness.is_idle());
        idleness.delivered(at(23));
        idleness.advanced();
        assert!(!idleness.is_idle());
        // A quiet look from before the delivery is out of date.
        idleness.found_quiet(at(22));
        idleness.found_quiet(at(30));
        assert!(!idleness.is_idle());
    }

    #[test]
    fn a_stall_alone_is_not_idleness() {
        let start = Instant::now();
        let ms = |ms| start + Duration::from_millis(ms);
        let mut idleness = Idleness::new(Duration::from_secs(1));
        // Quiet, then the worker stalls for a minute: the look after it starts a span over.
        idleness.found_quiet(ms(0));
        idleness.found_quiet(ms(500));
        idleness.found_quiet(ms(60_000));
        assert!(!idleness.is_idle());
        idleness.found_quiet(ms(61_000));
        assert!(idleness.is_idle(), "quiet for a second after the stall");
        // Records that do not move the watermark on either side of a stall are not a frozen
        // clock.
        idleness.delivered(ms(62_000));
        idleness.delivered(ms(62_500));
        idleness.delivered(ms(122_500));
        assert!(!idleness.is_idle());
    }

    proptest::proptest! {
        /// Whatever happens around it, a partition is never idle while it is paused, nor within
        /// the timeout after it resumes, nor before anything spanning the timeout was observed.
        #[test]
        fn a_paused_partition_is_never_idle(
            steps in proptest::collection::vec((0u64..5_000, 0u8..4), 1..60),
            timeout_ms in 1u64..4_000,
        ) {
            let start = Instant::now();
            let mut idleness = Idleness::new(Duration::from_millis(timeout_ms));
            let timeout = Duration::from_millis(timeout_ms);
            let mut now = start;
            let mut last_pause = None;
            for (wait_ms, what) in steps {
                now += Duration::from_millis(wait_ms);
                match what {
                    0 => idleness.delivered(now),
                    1 => idleness.advanced(),
                    2 => {
                        idleness.paused(now);
                        last_pause = Some(now);
                        proptest::prop_assert!(!idleness.is_idle());
                    }
                    _ => idleness.found_quiet(now),
                }
                if let Some(paused) = last_pause
                    && now.duration_since(paused) < timeout
                {
                    proptest::prop_assert!(!idleness.is_idle());
                }
                if now.duration_since(start) < timeout {
                    proptest::prop_assert!(!idleness.is_idle());
                }
            }
        }
    }

    #[test]
    fn within_the_limit_time_moves_at_once() {
        let mut guard = JumpGuard::starting_at(Some(0));
        assert_eq!(guard.observe("a", HOUR, HOUR), HOUR);
        assert_eq!(guard.observe("a", 10, HOUR), HOUR);
    }
}
