//! Bytes of state per open session, measured with a counting allocator:
//! `cargo bench --bench session_state`. Target: at most 256 bytes per open session.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

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
    let rules = SessionRules {
        inactivity_ms: 30 * 60_000,
        max_duration_ms: 2 * 3_600_000,
        dedup_window_ms: 10 * 60_000,
    };
    let pages = ["home", "search", "results", "hotel_details", "cart"];
    for sessions in [100_000u64, 1_000_000] {
        let before = ALLOCATED.load(Relaxed);
        let mut sessionizer = Sessionizer::new(rules);
        let mut closed = Vec::new();
        let start = 1_772_323_200_000u64;
        // Each user: three events a minute apart, on three pages; user ids are UUID-sized. The
        // last event is older than the lateness window when measured, as in a steady stream.
        for round in 0..3u64 {
            for user in 0..sessions {
                let user_id = format!("2f1c7a4e-{:04x}-4bde-9d1e-{:012x}", user % 65536, user);
                let event_id = format!("e-{user}-{round}");
                let page = pages[((user + round) % pages.len() as u64) as usize];
                sessionizer.push(
                    &user_id,
                    &event_id,
                    Some(page),
                    start + round * 60_000,
                    Boundary::NONE,
                );
            }
        }
        sessionizer.advance(start + 3 * 60_000, &mut closed);
        let per_session_with_ids = (ALLOCATED.load(Relaxed) - before) as f64 / sessions as f64;
        // Once the de-duplication window has passed, the recent event ids are gone.
        sessionizer.advance(start + 2 * 60_000 + rules.dedup_window_ms + 1, &mut closed);
        let after_window = ALLOCATED.load(Relaxed) - before;
        assert_eq!(sessionizer.open_sessions() as u64, sessions);
        assert!(closed.is_empty());
        println!(
            "open sessions: {sessions:>9}  bytes/session: {:>6.1} (with recent event ids of the \
             lateness window: {per_session_with_ids:.1})",
            after_window as f64 / sessions as f64
        );
        drop(sessionizer);
    }
}
