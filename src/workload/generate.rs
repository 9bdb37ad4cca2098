//! A seeded clickstream generator, for `sessionize generate`, the demo, tests and benchmarks.
//!
//! The stream is meant to look like what a travel site's tracking pipeline actually delivers, so
//! that the sessionizer is exercised on the cases that matter rather than on tidy data: users who
//! come back after pauses, gaps that land exactly on the inactivity limit, marathon users whose
//! sessions must be split at the maximum duration, events that arrive slightly out of order, retried
//! deliveries (duplicates), events that arrive hours late, and lines that are not events at all.
//!
//! Everything derives from [`GenerateConfig::seed`], so a failing test or a benchmark can be
//! reproduced byte for byte. Memory holds one record per user plus the reorder window, never the
//! stream, so millions of events can be generated straight into a file.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Write};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use pages::{ENTRY_PAGES, Page, pick};

mod json_line;
mod pages;
#[cfg(test)]
mod tests;

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 60 * MINUTE_MS;
/// The default inactivity limit of the sessionizer. Gaps of exactly this, and of one millisecond
/// more, are generated on purpose: they sit on either side of the rule "equal to a limit stays in".
const INACTIVITY_MS: u64 = 30 * MINUTE_MS;
/// Marathon sessions last at least this long. The largest gap a continuous user makes is 25
/// minutes, so even the last event before the end falls more than 2 hours after the first, past
/// the sessionizer's maximum session duration.
const MARATHON_MIN_MS: u64 = 2 * HOUR_MS + 30 * MINUTE_MS;
const MARATHON_MAX_MS: u64 = 5 * HOUR_MS;
/// Hours-late events lag the stream by this much: far beyond any sensible allowed lateness.
const HOURS_LATE_MIN_MS: u64 = 2 * HOUR_MS;
const HOURS_LATE_MAX_MS: u64 = 6 * HOUR_MS;
/// 2100-01-01T00:00:00Z: far enough ahead to fail any future-skew check for decades.
const YEAR_2100_MS: u64 = 4_102_444_800_000;
/// One user in this many is a continuous ("marathon") user: about 3%.
const CONTINUOUS_ONE_IN: u64 = 32;

/// What to generate. `Default` gives a realistic mix.
#[derive(Debug, Clone)]
pub struct GenerateConfig {
    /// Distinct users.
    pub users: u64,
    /// Total lines to write, malformed lines included.
    pub events: u64,
    pub seed: u64,
    /// Event time of the earliest event.
    pub start_ms: u64,
    pub malformed_per_million: u32,
    /// Rate at which an on-time event is re-emitted verbatim, as a retrying producer would: 2 to
    /// 60 seconds after the original, so at most `max_disorder_ms` + 60 s behind the stream, well
    /// within the allowed lateness and the de-duplication window.
    pub duplicate_per_million: u32,
    /// Rate of new events whose timestamp is 2–6 hours behind the stream (the latest event time
    /// emitted on time), as a device that was offline would deliver them: far past any allowed
    /// lateness, so they must be routed to the late events. While the stream is less than 2
    /// hours old, on-time events take their place, so that no event precedes `start_ms`.
    pub hours_late_per_million: u32,
    /// An on-time event is at most this much behind the stream when it is emitted: producers
    /// batch and retry, but within a bound the allowed lateness is meant to cover.
    pub max_disorder_ms: u64,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            users: 1_000,
            events: 100_000,
            seed: 1,
            // 2026-03-01T00:00:00Z
            start_ms: 1_772_323_200_000,
            malformed_per_million: 100,
            duplicate_per_million: 2_000,
            hours_late_per_million: 200,
            max_disorder_ms: 120_000,
        }
    }
}

/// What was written. `lines == valid + malformed + duplicates + hours_late`, where `valid` counts
/// the on-time, first-seen events.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GenerateStats {
    pub lines: u64,
    pub valid: u64,
    pub malformed: u64,
    pub duplicates: u64,
    pub hours_late: u64,
}

/// Writes `config.events` JSON lines of clickstream to `out`.
///
/// Lines are written one `write_all` at a time, so `out` should be buffered. Fails only if `out`
/// does, or if events are asked of zero users.
pub fn generate(config: &GenerateConfig, out: &mut impl Write) -> io::Result<GenerateStats> {
    if config.users == 0 && config.events > 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot generate events without users",
        ));
    }
    if config.events == 0 {
        return Ok(GenerateStats::default());
    }
    let mut stream = Clickstream::new(config.clone());
    while stream.stats().lines < config.events {
        out.write_all(stream.next_line())?;
    }
    Ok(stream.stats().clone())
}

/// The generated clickstream as an endless sequence of lines (each ending in `\n`), for
/// producers; `config.events` is ignored.
pub struct Clickstream(Generator);

impl Clickstream {
    /// # Panics
    /// If `config.users` is zero.
    pub fn new(config: GenerateConfig) -> Self {
        assert!(config.users > 0, "a clickstream needs users");
        Clickstream(Generator::new(config))
    }

    pub fn next_line(&mut self) -> &[u8] {
        self.0.next_line();
        self.0.stats.lines += 1;
        &self.0.line
    }

    /// What has been generated so far.
    pub fn stats(&self) -> &GenerateStats {
        &self.0.stats
    }
}

/// One event, compact enough to sit in the reorder buffer by the thousand.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Event {
    time: u64,
    /// Makes `event_id` unique.
    seq: u64,
    user: u64,
    page: Page,
    /// Cosmetic choices (event type, values, booking, timestamp as text or number), drawn once so
    /// that rendering is a pure function of the event and a duplicate repeats its original's
    /// bytes exactly.
    bits: u64,
}

/// An event waiting in the reorder buffer until its emission time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    emit_at: u64,
    duplicate: bool,
    event: Event,
}

/// A user between two events.
struct User {
    /// Continuous users' sessions are bounded by time (`session_end`), others' by event count.
    continuous: bool,
    remaining: u32,
    session_end: u64,
    page: Page,
}

impl User {
    fn start_session(&mut self, start: u64, rng: &mut SmallRng) {
        self.page = pick(rng, ENTRY_PAGES);
        if self.continuous {
            self.remaining = u32::MAX;
            self.session_end = start + rng.random_range(MARATHON_MIN_MS..=MARATHON_MAX_MS);
        } else {
            self.remaining = session_length(rng);
            self.session_end = u64::MAX;
        }
    }
}

/// Events in a session: many bounces, a long tail up to hundreds (bots, indecisive planners).
fn session_length(rng: &mut SmallRng) -> u32 {
    match rng.random_range(0..100) {
        0..15 => 1,
        15..60 => rng.random_range(2..10),
        60..90 => rng.random_range(10..40),
        90..98 => rng.random_range(40..120),
        _ => rng.random_range(120..400),
    }
}

/// Time to a user's next event within a session. Continuous users never hit the boundary gaps,
/// so their sessions are cut only by the maximum duration.
fn gap(rng: &mut SmallRng, continuous: bool) -> u64 {
    let low = if continuous { 10 } else { 0 };
    match rng.random_range(low..1000) {
        0..5 => INACTIVITY_MS,
        5..10 => INACTIVITY_MS + 1,
        10..700 => rng.random_range(1_000..30_000),
        700..950 => rng.random_range(30_000..3 * MINUTE_MS),
        _ => rng.random_range(3 * MINUTE_MS..25 * MINUTE_MS),
    }
}

/// Time between sessions: always clearly over the inactivity limit, from a coffee break to a day.
fn pause(rng: &mut SmallRng) -> u64 {
    match rng.random_range(0..100) {
        0..40 => rng.random_range(31 * MINUTE_MS..HOUR_MS),
        40..75 => rng.random_range(HOUR_MS..4 * HOUR_MS),
        _ => rng.random_range(4 * HOUR_MS..=24 * HOUR_MS),
    }
}

/// The ways a line can be broken; [`Generator::malformed`] cycles through them so that even a
/// short stream has each.
#[derive(Clone, Copy)]
enum Malformed {
    Garbage,
    Truncated,
    Flawed(Flaw),
}

/// A single wrong field in an otherwise well-formed event.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flaw {
    MissingUuid,
    EmptyUuid,
    TextTimestamp,
    NegativeTimestamp,
    DetailsNotObject,
    FarFuture,
    InvalidUtf8,
    MissingTimestamp,
}

const MALFORMED: [Malformed; 10] = [
    Malformed::Garbage,
    Malformed::Truncated,
    Malformed::Flawed(Flaw::MissingUuid),
    Malformed::Flawed(Flaw::EmptyUuid),
    Malformed::Flawed(Flaw::TextTimestamp),
    Malformed::Flawed(Flaw::NegativeTimestamp),
    Malformed::Flawed(Flaw::DetailsNotObject),
    Malformed::Flawed(Flaw::FarFuture),
    Malformed::Flawed(Flaw::InvalidUtf8),
    Malformed::Flawed(Flaw::MissingTimestamp),
];

/// One run: the users' simulation, the reorder window, and what has been written.
struct Generator {
    config: GenerateConfig,
    rng: SmallRng,
    /// Hex digits identifying the seed in every `event_id`, so streams of different seeds can be
    /// concatenated without id collisions.
    id_prefix: [u8; 8],
    users: Vec<User>,
    /// Each user's next event time: popping the earliest merges all users in event-time order.
    due: BinaryHeap<Reverse<(u64, u64)>>,
    /// On-time events and duplicates by emission time.
    reorder: BinaryHeap<Reverse<Pending>>,
    next_seq: u64,
    /// The largest event time emitted on time so far.
    stream_ms: u64,
    line: Vec<u8>,
    stats: GenerateStats,
}

impl Generator {
    fn new(config: GenerateConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let mut users = Vec::with_capacity(config.users.try_into().unwrap_or(0));
        let mut due = BinaryHeap::with_capacity(users.capacity());
        for user in 0..config.users {
            let mut state = User {
                continuous: user
                    .wrapping_add(config.seed)
                    .is_multiple_of(CONTINUOUS_ONE_IN),
                remaining: 0,
                session_end: 0,
                page: Page::Home,
            };
            // User 0 opens the stream so that `start_ms` is the earliest event time; the others
            // arrive over the first two hours instead of all at once.
            let first = match user {
                0 => config.start_ms,
                _ => config.start_ms + rng.random_range(0..2 * HOUR_MS),
            };
            state.start_session(first, &mut rng);
            users.push(state);
            due.push(Reverse((first, user)));
        }
        Generator {
            stream_ms: config.start_ms,
            id_prefix: json_line::id_prefix(config.seed),
            config,
            rng,
            users,
            due,
            reorder: BinaryHeap::new(),
            next_seq: 0,
            line: Vec::with_capacity(512),
            stats: GenerateStats::default(),
        }
    }

    /// Renders the next line into `self.line`, and counts it by kind.
    fn next_line(&mut self) {
        self.line.clear();
        let roll = self.rng.random_range(0..1_000_000);
        let malformed = self.config.malformed_per_million;
        if roll < malformed {
            self.malformed();
        } else if roll - malformed >= self.config.hours_late_per_million || !self.hours_late() {
            self.on_time();
        }
    }

    /// The next event of the simulation, in event-time order across all users.
    fn simulate(&mut self) -> Event {
        // Rescheduling the user in place costs one sift instead of a pop and a push.
        let mut due = self
            .due
            .peek_mut()
            .expect("every user always has a next event");
        let Reverse((time, user)) = *due;
        let state = &mut self.users[user as usize];
        let event = Event {
            time,
            seq: self.next_seq,
            user,
            page: state.page,
            bits: self.rng.random(),
        };
        self.next_seq += 1;
        state.remaining -= 1;
        let gap = gap(&mut self.rng, state.continuous);
        let next = if state.remaining == 0 || time + gap > state.session_end {
            let start = time + pause(&mut self.rng);
            state.start_session(start, &mut self.rng);
            start
        } else {
            state.page = pick(&mut self.rng, state.page.info().next);
            time + gap
        };
        *due = Reverse((next, user));
        event
    }

    /// Emits the on-time event (or scheduled duplicate) with the earliest emission time.
    ///
    /// Each event is held back by a jitter of at most `max_disorder_ms` and emitted in order of
    /// `time + jitter`. Since every event still to be simulated has a time of at least the next
    /// due time, an entry due no later than that can safely go out; so emitted keys never
    /// decrease, and an event is behind an earlier one by at most its own jitter.
    fn on_time(&mut self) {
        loop {
            let next_due = self
                .due
                .peek()
                .expect("every user always has a next event")
                .0
                .0;
            if self
                .reorder
                .peek()
                .is_some_and(|Reverse(pending)| pending.emit_at <= next_due)
            {
                break;
            }
            let event = self.simulate();
            let max = self.config.max_disorder_ms;
            // Most events arrive within a couple of seconds; a few straggle up to the bound.
            let jitter = match self.rng.random_range(0..10) {
                0 => self.rng.random_range(0..=max),
                _ => self.rng.random_range(0..=max.min(2_000)),
            };
            self.reorder.push(Reverse(Pending {
                emit_at: event.time.saturating_add(jitter),
                duplicate: false,
                event,
            }));
        }
        let Reverse(pending) = self.reorder.pop().expect("filled above");
        self.render(&pending.event, None);
        if pending.duplicate {
            self.stats.duplicates += 1;
            return;
        }
        self.stats.valid += 1;
        self.stream_ms = self.stream_ms.max(pending.event.time);
        if self.rng.random_range(0..1_000_000) < self.config.duplicate_per_million {
            // A retry shortly after, well within any sensible allowed lateness and dedup window.
            self.reorder.push(Reverse(Pending {
                emit_at: pending
                    .emit_at
                    .saturating_add(self.rng.random_range(2_000..=60_000)),
                duplicate: true,
                event: pending.event,
            }));
        }
    }

    /// Emits a new event from hours ago, unless the stream is too young to have an "hours ago"
    /// after `start_ms`.
    fn hours_late(&mut self) -> bool {
        let age = self.stream_ms - self.config.start_ms;
        if age < HOURS_LATE_MIN_MS {
            return false;
        }
        let lag = self
            .rng
            .random_range(HOURS_LATE_MIN_MS..=age.min(HOURS_LATE_MAX_MS));
        let event = self.stray_event(self.stream_ms - lag);
        self.render(&event, None);
        self.stats.hours_late += 1;
        true
    }

    /// Emits a line the sessionizer must reject, of the next kind in turn.
    fn malformed(&mut self) {
        let kind = MALFORMED[(self.stats.malformed % MALFORMED.len() as u64) as usize];
        self.stats.malformed += 1;
        match kind {
            Malformed::Garbage => {
                let garbage: &[u8] = match self.rng.random_range(0..3) {
                    0 => b"<html><body><h1>502 Bad Gateway</h1></body></html>",
                    1 => b"GET /track?page=home HTTP/1.1",
                    _ => b"{\"event_id\":,,\"uuid\":}",
                };
                self.line.extend_from_slice(garbage);
                self.line.push(b'\n');
            }
            Malformed::Truncated => {
                let event = self.stray_event(self.stream_ms);
                self.render(&event, None);
                self.line.truncate(self.line.len() / 2);
                self.line.push(b'\n');
            }
            Malformed::Flawed(flaw) => {
                let event = self.stray_event(self.stream_ms);
                self.render(&event, Some(flaw));
            }
        }
    }

    /// An event outside the simulation, for a random user: its users' sessions are not disturbed.
    fn stray_event(&mut self, time: u64) -> Event {
        let event = Event {
            time,
            seq: self.next_seq,
            user: self.rng.random_range(0..self.config.users),
            page: pick(&mut self.rng, ENTRY_PAGES),
            bits: self.rng.random(),
        };
        self.next_seq += 1;
        event
    }
}
