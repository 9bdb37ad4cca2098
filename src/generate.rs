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

/// The pages of the booking funnel. The discriminant indexes [`PAGES`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Page {
    Home,
    Search,
    Results,
    HotelDetails,
    FlightDetails,
    Deals,
    Cart,
    Checkout,
    Payment,
    Confirmation,
    Account,
    Help,
    Login,
}

struct PageInfo {
    name: &'static str,
    /// Click targets, so that event names are plausible for the page.
    clicks: &'static [&'static str],
    /// The form submitted on this page, if any.
    form: Option<&'static str>,
    /// Whether the page carries a booking in progress.
    booking: bool,
    /// Weighted next pages: the funnel's transitions.
    next: &'static [(Page, u32)],
}

impl Page {
    fn info(self) -> &'static PageInfo {
        &PAGES[self as usize]
    }
}

/// Where sessions begin: mostly the home page, sometimes a deep link from an ad or an e-mail.
const ENTRY_PAGES: &[(Page, u32)] = &[
    (Page::Home, 50),
    (Page::Search, 15),
    (Page::Deals, 10),
    (Page::Results, 10),
    (Page::HotelDetails, 10),
    (Page::Account, 5),
];

static PAGES: [PageInfo; 13] = [
    PageInfo {
        name: "home",
        clicks: &["search_bar", "deal_banner", "login_link", "logo"],
        form: None,
        booking: false,
        next: &[
            (Page::Search, 40),
            (Page::Deals, 15),
            (Page::Results, 10),
            (Page::Account, 8),
            (Page::Login, 7),
            (Page::Help, 5),
            (Page::Home, 5),
        ],
    },
    PageInfo {
        name: "search",
        clicks: &[
            "destination_input",
            "date_picker",
            "guests_selector",
            "search_button",
        ],
        form: Some("search_form"),
        booking: false,
        next: &[
            (Page::Results, 70),
            (Page::Search, 15),
            (Page::Home, 10),
            (Page::Help, 5),
        ],
    },
    PageInfo {
        name: "results",
        clicks: &[
            "result_card",
            "sort_by_price",
            "filter_stars",
            "next_page",
            "map_view",
        ],
        form: None,
        booking: false,
        next: &[
            (Page::HotelDetails, 40),
            (Page::FlightDetails, 25),
            (Page::Results, 15),
            (Page::Search, 15),
            (Page::Home, 5),
        ],
    },
    PageInfo {
        name: "hotel_details",
        clicks: &["photo_gallery", "room_option", "add_to_cart", "reviews_tab"],
        form: None,
        booking: false,
        next: &[
            (Page::Results, 35),
            (Page::Cart, 30),
            (Page::HotelDetails, 10),
            (Page::FlightDetails, 10),
            (Page::Deals, 10),
            (Page::Help, 5),
        ],
    },
    PageInfo {
        name: "flight_details",
        clicks: &["fare_class", "seat_map", "add_to_cart", "baggage_info"],
        form: None,
        booking: false,
        next: &[
            (Page::Results, 35),
            (Page::Cart, 30),
            (Page::HotelDetails, 15),
            (Page::FlightDetails, 10),
            (Page::Search, 10),
        ],
    },
    PageInfo {
        name: "deals",
        clicks: &["deal_card", "newsletter_signup"],
        form: None,
        booking: false,
        next: &[
            (Page::HotelDetails, 40),
            (Page::FlightDetails, 20),
            (Page::Search, 20),
            (Page::Home, 20),
        ],
    },
    PageInfo {
        name: "cart",
        clicks: &["remove_item", "apply_coupon", "proceed_to_checkout"],
        form: Some("coupon_form"),
        booking: true,
        next: &[
            (Page::Checkout, 45),
            (Page::Results, 20),
            (Page::HotelDetails, 15),
            (Page::Cart, 10),
            (Page::Home, 10),
        ],
    },
    PageInfo {
        name: "checkout",
        clicks: &[
            "traveler_details",
            "insurance_toggle",
            "continue_to_payment",
        ],
        form: Some("traveler_form"),
        booking: true,
        next: &[
            (Page::Payment, 55),
            (Page::Cart, 20),
            (Page::Login, 15),
            (Page::Help, 10),
        ],
    },
    PageInfo {
        name: "payment",
        clicks: &["card_form", "pay_now", "change_method"],
        form: Some("payment_form"),
        booking: true,
        next: &[
            (Page::Confirmation, 60),
            (Page::Payment, 15),
            (Page::Checkout, 15),
            (Page::Help, 10),
        ],
    },
    PageInfo {
        name: "confirmation",
        clicks: &["download_receipt", "add_to_calendar", "share"],
        form: None,
        booking: true,
        next: &[(Page::Home, 40), (Page::Account, 35), (Page::Search, 25)],
    },
    PageInfo {
        name: "account",
        clicks: &["my_bookings", "edit_profile", "logout"],
        form: Some("profile_form"),
        booking: false,
        next: &[
            (Page::Home, 40),
            (Page::Search, 25),
            (Page::Account, 20),
            (Page::Help, 15),
        ],
    },
    PageInfo {
        name: "help",
        clicks: &["faq_item", "contact_support", "live_chat"],
        form: Some("contact_form"),
        booking: false,
        next: &[
            (Page::Home, 40),
            (Page::Search, 25),
            (Page::Help, 20),
            (Page::Account, 15),
        ],
    },
    PageInfo {
        name: "login",
        clicks: &["email_input", "password_input", "forgot_password"],
        form: Some("login_form"),
        booking: false,
        next: &[(Page::Account, 40), (Page::Home, 30), (Page::Checkout, 30)],
    },
];

fn pick(rng: &mut SmallRng, weighted: &[(Page, u32)]) -> Page {
    let total: u32 = weighted.iter().map(|&(_, w)| w).sum();
    let mut roll = rng.random_range(0..total);
    for &(page, weight) in weighted {
        if roll < weight {
            return page;
        }
        roll -= weight;
    }
    unreachable!("the roll is below the total weight")
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
        let prefix = mix(config.seed ^ ID_SALT) >> 32;
        let mut id_prefix = [0; 8];
        for (i, digit) in id_prefix.iter_mut().enumerate() {
            *digit = HEX[((prefix >> (28 - 4 * i)) & 0xf) as usize];
        }
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
            config,
            rng,
            id_prefix,
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

    /// Writes an event as one JSON line, by hand: serializing through serde costs more than the
    /// whole simulation, and every string here is known to need no escaping.
    fn render(&mut self, event: &Event, flaw: Option<Flaw>) {
        let line = &mut self.line;
        let bits = event.bits;
        let page = event.page.info();
        let (uuid_hi, uuid_lo) = user_uuid(self.config.seed, event.user);

        line.extend_from_slice(b"{\"event_id\":\"e-");
        line.extend_from_slice(&self.id_prefix);
        line.push(b'-');
        push_u64(line, event.seq);
        line.extend_from_slice(b"\",\"page_name\":\"");
        line.extend_from_slice(page.name.as_bytes());
        if flaw == Some(Flaw::InvalidUtf8) {
            line.extend_from_slice(&[0xff, 0xfe]);
        }
        line.push(b'"');

        match flaw {
            Some(Flaw::MissingTimestamp) => {}
            Some(Flaw::TextTimestamp) => line.extend_from_slice(b",\"event_timestamp\":\"abc\""),
            Some(Flaw::NegativeTimestamp) => line.extend_from_slice(b",\"event_timestamp\":-5"),
            Some(Flaw::FarFuture) => {
                push_timestamp(line, YEAR_2100_MS + event.time % (24 * HOUR_MS), bits);
            }
            _ => push_timestamp(line, event.time, bits),
        }

        line.extend_from_slice(b",\"booking_details\":");
        let shape = bits >> 40;
        if page.booking {
            // One booking per user and day, so that the cart, checkout and payment of a trip agree.
            let booking = mix(uuid_lo ^ (event.time / (24 * HOUR_MS)));
            let reference = booking & 0xff_ffff;
            if shape.is_multiple_of(4) {
                line.extend_from_slice(b"\"BK-");
                push_hex(line, reference, 6);
                line.push(b'"');
            } else {
                line.extend_from_slice(b"{\"booking_id\":\"BK-");
                push_hex(line, reference, 6);
                line.extend_from_slice(b"\",\"product\":\"");
                let product = ["hotel", "flight", "package"][(booking >> 24) as usize % 3];
                line.extend_from_slice(product.as_bytes());
                line.extend_from_slice(b"\",\"amount\":");
                let cents = 4_900 + (booking >> 32) % 200_000;
                push_u64(line, cents / 100);
                line.push(b'.');
                line.push(b'0' + (cents / 10 % 10) as u8);
                line.push(b'0' + (cents % 10) as u8);
                line.extend_from_slice(b",\"currency\":\"");
                let currency = ["EUR", "USD", "GBP"][(booking >> 28) as usize % 3];
                line.extend_from_slice(currency.as_bytes());
                line.extend_from_slice(b"\"}");
            }
        } else if shape.is_multiple_of(16) {
            line.extend_from_slice(b"\"none\"");
        } else {
            line.extend_from_slice(b"null");
        }

        match flaw {
            Some(Flaw::MissingUuid) => {}
            Some(Flaw::EmptyUuid) => line.extend_from_slice(b",\"uuid\":\"\""),
            _ => {
                line.extend_from_slice(b",\"uuid\":\"");
                push_hex(line, uuid_hi >> 32, 8);
                line.push(b'-');
                push_hex(line, (uuid_hi >> 16) & 0xffff, 4);
                line.push(b'-');
                push_hex(line, uuid_hi & 0xffff, 4);
                line.push(b'-');
                push_hex(line, uuid_lo >> 48, 4);
                line.push(b'-');
                push_hex(line, uuid_lo & 0xffff_ffff_ffff, 12);
                line.push(b'"');
            }
        }

        if flaw == Some(Flaw::DetailsNotObject) {
            line.extend_from_slice(b",\"event_details\":\"click\"}\n");
            return;
        }
        line.extend_from_slice(b",\"event_details\":{\"event_name\":\"");
        let value = bits >> 16;
        match ((bits >> 1) % 100, page.form) {
            (0..40, _) => {
                line.extend_from_slice(
                    b"page_loaded\",\"event_type\":\"page_view\",\"event_value\":",
                );
                if value.is_multiple_of(8) {
                    line.extend_from_slice(b"null");
                } else {
                    // Load time in milliseconds.
                    push_u64(line, 150 + value % 3_000);
                }
            }
            (40..75, _) => {
                line.extend_from_slice(page.clicks[value as usize % page.clicks.len()].as_bytes());
                line.extend_from_slice(b"\",\"event_type\":\"click\",\"event_value\":\"position_");
                push_u64(line, 1 + (value >> 8) % 20);
                line.push(b'"');
            }
            (75..90, _) => {
                line.extend_from_slice(
                    b"scroll_depth\",\"event_type\":\"scroll\",\"event_value\":",
                );
                push_u64(line, 25 * (1 + value % 4));
            }
            (_, Some(form)) => {
                line.extend_from_slice(form.as_bytes());
                line.extend_from_slice(b"\",\"event_type\":\"submit\",\"event_value\":");
                line.extend_from_slice(if value.is_multiple_of(5) {
                    b"\"validation_error\"".as_slice()
                } else {
                    b"\"ok\"".as_slice()
                });
            }
            (_, None) => {
                line.extend_from_slice(b"tooltip\",\"event_type\":\"hover\",\"event_value\":null");
            }
        }
        line.extend_from_slice(b"}}\n");
    }
}

/// Producers disagree on the type of `event_timestamp`, so half the events carry it as a string.
fn push_timestamp(line: &mut Vec<u8>, ms: u64, bits: u64) {
    if bits & 1 == 0 {
        line.extend_from_slice(b",\"event_timestamp\":\"");
        push_u64(line, ms);
        line.push(b'"');
    } else {
        line.extend_from_slice(b",\"event_timestamp\":");
        push_u64(line, ms);
    }
}

/// A version-4-looking UUID of the user, as two halves: stable across runs, unlike a random one,
/// and distinct for the users of one seed but for a 2^-122 chance.
fn user_uuid(seed: u64, user: u64) -> (u64, u64) {
    let hi = mix(seed ^ mix(user ^ UUID_SALT));
    let lo = mix(hi ^ UUID_SALT);
    ((hi & !0xf000) | 0x4000, (lo & !(0b11 << 62)) | (0b10 << 62))
}

/// Keep the hashes of the seed for event ids and user ids apart, and away from `mix(0) == 0`.
const ID_SALT: u64 = 0x243f_6a88_85a3_08d3;
const UUID_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

/// The SplitMix64 finalizer: cheap, and a bijection on `u64`.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The low `digits` hex digits of `value`.
fn push_hex(line: &mut Vec<u8>, value: u64, digits: u32) {
    for i in (0..digits).rev() {
        line.push(HEX[((value >> (4 * i)) & 0xf) as usize]);
    }
}

fn push_u64(line: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    line.extend_from_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::sync::OnceLock;

    use serde_json::Value;

    use super::*;

    /// Rates well above the defaults, so that a short stream has plenty of each kind of line.
    fn noisy(users: u64, events: u64) -> GenerateConfig {
        GenerateConfig {
            users,
            events,
            seed: 7,
            malformed_per_million: 5_000,
            duplicate_per_million: 20_000,
            hours_late_per_million: 2_000,
            ..GenerateConfig::default()
        }
    }

    fn run(config: &GenerateConfig) -> (Vec<u8>, GenerateStats) {
        let mut out = Vec::new();
        let stats = generate(config, &mut out).unwrap();
        (out, stats)
    }

    fn lines(out: &[u8]) -> Vec<&[u8]> {
        assert_eq!(out.last(), Some(&b'\n'));
        out[..out.len() - 1].split(|&b| b == b'\n').collect()
    }

    struct Valid {
        user: String,
        id: String,
        time: u64,
    }

    /// The shape of an event line; strings borrow, as the generator never escapes.
    #[derive(serde::Deserialize)]
    struct Line<'a> {
        event_id: &'a str,
        page_name: &'a str,
        uuid: Option<&'a str>,
        event_timestamp: Option<Value>,
        booking_details: Value,
        event_details: Value,
    }

    /// What the sessionizer would accept, judged independently of the generator's own bookkeeping.
    fn parse_valid(line: &[u8]) -> Option<Valid> {
        let line: Line = serde_json::from_slice(line).ok()?;
        let user = line.uuid.filter(|u| !u.is_empty())?;
        let time = match line.event_timestamp? {
            Value::Number(n) => n.as_u64()?,
            Value::String(s) if s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok()?,
            _ => return None,
        };
        let details = line.event_details.as_object()?;
        for field in ["event_name", "event_type", "event_value"] {
            assert!(details.contains_key(field), "{field} of {}", line.event_id);
        }
        assert!(!line.page_name.is_empty() && !line.booking_details.is_array());
        (time < YEAR_2100_MS).then(|| Valid {
            user: user.to_owned(),
            id: line.event_id.to_owned(),
            time,
        })
    }

    /// One stream, generated and parsed once for all the tests that only read it.
    struct Sample {
        config: GenerateConfig,
        out: Vec<u8>,
        stats: GenerateStats,
        /// The valid-looking event of each line, if any.
        parsed: Vec<Option<Valid>>,
    }

    fn sample() -> &'static Sample {
        static SAMPLE: OnceLock<Sample> = OnceLock::new();
        SAMPLE.get_or_init(|| {
            let config = noisy(200, 50_000);
            let (out, stats) = run(&config);
            let parsed = lines(&out).into_iter().map(parse_valid).collect();
            Sample {
                config,
                out,
                stats,
                parsed,
            }
        })
    }

    #[test]
    fn same_config_same_bytes() {
        let sample = sample();
        let again = run(&sample.config);
        assert!(again.0 == sample.out && again.1 == sample.stats);
        let other_seed = GenerateConfig {
            seed: sample.config.seed + 1,
            events: 1_000,
            ..sample.config.clone()
        };
        assert!(!sample.out.starts_with(&run(&other_seed).0));
    }

    #[test]
    fn writes_exactly_the_requested_lines() {
        let Sample {
            config, out, stats, ..
        } = sample();
        assert_eq!(lines(out).len() as u64, config.events);
        assert_eq!(stats.lines, config.events);
        assert_eq!(
            stats.lines,
            stats.valid + stats.malformed + stats.duplicates + stats.hours_late
        );
        assert!(stats.malformed > 100 && stats.duplicates > 500 && stats.hours_late > 30);

        let none = GenerateConfig {
            events: 0,
            ..GenerateConfig::default()
        };
        assert_eq!(run(&none), (Vec::new(), GenerateStats::default()));
        let no_users = GenerateConfig {
            users: 0,
            ..GenerateConfig::default()
        };
        assert!(generate(&no_users, &mut Vec::new()).is_err());
    }

    /// Classifies every line from its content alone and checks the result against the stats: the
    /// malformed lines are rejected, duplicates repeat an earlier line exactly and soon after, the
    /// hours-late events are hours behind, and every other event is within the disorder bound.
    #[test]
    fn lines_are_what_the_stats_say() {
        let sample = sample();
        let max_disorder = sample.config.max_disorder_ms;
        let mut seen: HashMap<&str, &[u8]> = HashMap::new();
        let mut users = HashSet::new();
        let mut counted = GenerateStats::default();
        let mut stream_ms = 0u64;
        let mut earliest = u64::MAX;
        for (line, parsed) in lines(&sample.out).into_iter().zip(&sample.parsed) {
            counted.lines += 1;
            let Some(event) = parsed else {
                counted.malformed += 1;
                continue;
            };
            let behind = stream_ms.saturating_sub(event.time);
            if let Some(original) = seen.insert(&event.id, line) {
                assert_eq!(original, line);
                assert!(behind <= max_disorder + 60_000, "{behind}");
                counted.duplicates += 1;
            } else if behind > HOUR_MS {
                assert!((HOURS_LATE_MIN_MS..=HOURS_LATE_MAX_MS).contains(&behind));
                counted.hours_late += 1;
            } else {
                assert!(behind <= max_disorder, "{behind}");
                counted.valid += 1;
                stream_ms = stream_ms.max(event.time);
            }
            earliest = earliest.min(event.time);
            users.insert(&event.user);
        }
        assert_eq!(counted, sample.stats);
        assert_eq!(earliest, sample.config.start_ms);
        let users = users.len() as u64;
        assert!(users <= sample.config.users && users > sample.config.users / 2);
    }

    #[test]
    fn zero_disorder_is_event_time_order() {
        let config = GenerateConfig {
            max_disorder_ms: 0,
            duplicate_per_million: 0,
            hours_late_per_million: 0,
            ..noisy(50, 5_000)
        };
        let (out, _) = run(&config);
        let times: Vec<u64> = lines(&out)
            .into_iter()
            .filter_map(parse_valid)
            .map(|e| e.time)
            .collect();
        assert!(times.len() > 4_900 && times.is_sorted());
    }

    #[test]
    fn every_kind_of_malformed_line_appears() {
        let lines = lines(&sample().out);
        let has = |needle: &[u8]| {
            lines
                .iter()
                .any(|l| l.windows(needle.len()).any(|w| w == needle))
        };
        let object_without = |field: &[u8]| {
            lines
                .iter()
                .any(|l| l.starts_with(b"{") && !l.windows(field.len()).any(|w| w == field))
        };
        assert!(lines.iter().any(|l| std::str::from_utf8(l).is_err()));
        assert!(lines.iter().any(|l| !l.starts_with(b"{")));
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(b"{") && !l.ends_with(b"}"))
        );
        assert!(has(b"\"uuid\":\"\""));
        assert!(has(b"\"event_timestamp\":\"abc\""));
        assert!(has(b"\"event_timestamp\":-5"));
        assert!(has(b"\"event_timestamp\":41") || has(b"\"event_timestamp\":\"41"));
        assert!(has(b"\"event_details\":\"click\""));
        assert!(object_without(b"\"uuid\""));
        assert!(object_without(b"\"event_timestamp\""));
    }

    /// The boundary cases of the session rules must show up even in a modest stream.
    #[test]
    fn boundary_gaps_and_marathons_appear() {
        let mut by_user: HashMap<&str, Vec<u64>> = HashMap::new();
        let mut seen = HashSet::new();
        let mut stream_ms = 0;
        for event in sample().parsed.iter().flatten() {
            // Only first-seen, on-time events: duplicates and hours-late ones are not user behaviour.
            if seen.insert(&event.id) && event.time + HOUR_MS >= stream_ms {
                stream_ms = stream_ms.max(event.time);
                by_user.entry(&event.user).or_default().push(event.time);
            }
        }
        let (mut exact, mut just_over, mut marathon_users) = (0, 0, 0);
        for times in by_user.values_mut() {
            times.sort_unstable();
            let (mut run_start, mut longest_run) = (times[0], 0);
            for pair in times.windows(2) {
                let gap = pair[1] - pair[0];
                exact += usize::from(gap == INACTIVITY_MS);
                just_over += usize::from(gap == INACTIVITY_MS + 1);
                if gap >= INACTIVITY_MS {
                    run_start = pair[1];
                }
                longest_run = longest_run.max(pair[1] - run_start);
            }
            marathon_users += usize::from(longest_run > 2 * HOUR_MS);
        }
        assert!(exact > 10 && just_over > 10, "{exact} {just_over}");
        assert!(marathon_users > 3, "{marathon_users}");
    }
}
