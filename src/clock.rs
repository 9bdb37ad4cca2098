//! The wall clock, read in one place so that every part agrees on its unit.

use std::time::{SystemTime, UNIX_EPOCH};

/// The wall clock, in epoch milliseconds.
pub fn wall_clock_ms() -> u64 {
    wall_clock_micros() / 1000
}

/// The wall clock, in epoch microseconds (the times of the readers' chunks).
pub fn wall_clock_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
