//! Fuzzes event parsing: `sessionize::event::Validator::parse` must never panic. Every byte
//! string, valid JSON or not, valid UTF-8 or not, however deeply nested, yields either an event
//! or a `Rejection`.
//!
//! Run it from the `fuzz/` directory with a nightly toolchain:
//!
//! ```text
//! cargo +nightly fuzz run event_parser -- -max_total_time=60
//! ```
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessionize::event::Validator;

const VALIDATOR: Validator = Validator {
    max_event_bytes: 1 << 20,
    max_future_skew_ms: 86_400_000,
    now_ms: 1_772_323_200_000,
};

fuzz_target!(|data: &[u8]| {
    // Either outcome is fine; a panic (or a stack overflow) is the bug.
    let _ = VALIDATOR.parse(data);
});
