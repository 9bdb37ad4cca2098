//! Bytes of state per open session, measured with a counting allocator:
//! `cargo bench --bench session_state`. Target: at most 200 bytes per open session (issue 18).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

use sessionize::config::PipelineConfig;
use sessionize::rules::{Boundary, SessionRules, Sessionizer};

struct Counting;

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as isize, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size() as isize, Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    // The product's defaults: the README's rules and a 24-hour correction horizon.
    let defaults = PipelineConfig::new(Vec::new(), Path::new("unused"));
    let rules = defaults.rules;
    for sessions in [100_000u64, 1_000_000] {
        let (bytes, with_ids) = open_sessions(rules, 0, sessions);
        println!(
            "open sessions: {sessions:>9}  bytes/session: {bytes:>6.1} (with recent event ids of \
             the lateness window: {with_ids:.1})"
        );
    }
    // The default correction horizon keeps each session's events as well.
    let (bytes, with_ids) = open_sessions(rules, defaults.correction_horizon_ms, 1_000_000);
    println!(
        "open sessions: {:>9}  bytes/session: {bytes:>6.1} (with recent event ids: {with_ids:.1}), \
         with their histories for corrections",
        1_000_000
    );
    let events = 1_000_000;
    println!(
        "events waiting for the watermark: {events:>9}  bytes/event: {:>6.1}",
        pending_events(rules, events)
    );
}

const START_MS: u64 = 1_772_323_200_000;
const PAGES: [&str; 5] = ["home", "search", "results", "hotel_details", "cart"];

/// A UUID-sized user id, as the README's events carry.
fn user_id(user: u64) -> String {
    format!("2f1c7a4e-{:04x}-4bde-9d1e-{:012x}", user % 65536, user)
}

/// Bytes per open session once the de-duplication window has passed, and before.
fn open_sessions(rules: SessionRules, horizon_ms: u64, sessions: u64) -> (f64, f64) {
    let before = ALLOCATED.load(Relaxed);
    let mut sessionizer = Sessionizer::new(rules).with_correction_horizon(horizon_ms);
    let mut closed = Vec::new();
    // Each user: three events a minute apart, on three pages. The last event is older than the
    // lateness window when measured, as in a steady stream.
    for round in 0..3u64 {
        for user in 0..sessions {
            let event_id = format!("e-{user}-{round}");
            let page = PAGES[((user + round) % PAGES.len() as u64) as usize];
            sessionizer.push(
                &user_id(user),
                &event_id,
                Some(page),
                START_MS + round * 60_000,
                Boundary::NONE,
            );
        }
    }
    sessionizer.advance(START_MS + 3 * 60_000, &mut closed);
    let with_ids = (ALLOCATED.load(Relaxed) - before) as f64 / sessions as f64;
    // Once the de-duplication window has passed, the recent event ids are gone.
    sessionizer.advance(
        START_MS + 2 * 60_000 + rules.dedup_window_ms + 1,
        &mut closed,
    );
    let after_window = ALLOCATED.load(Relaxed) - before;
    assert_eq!(sessionizer.open_sessions() as u64, sessions);
    assert!(closed.is_empty());
    (after_window as f64 / sessions as f64, with_ids)
}

/// Bytes per event buffered until the watermark passes it: the events of ten minutes, in time
/// order, of as many users.
fn pending_events(rules: SessionRules, events: u64) -> f64 {
    let before = ALLOCATED.load(Relaxed);
    let mut sessionizer = Sessionizer::new(rules);
    for event in 0..events {
        let page = PAGES[(event % PAGES.len() as u64) as usize];
        sessionizer.push(
            &user_id(event),
            &format!("e-{event}-0"),
            Some(page),
            START_MS + event * 600_000 / events,
            Boundary::NONE,
        );
    }
    assert_eq!(sessionizer.pending_events() as u64, events);
    (ALLOCATED.load(Relaxed) - before) as f64 / events as f64
}
