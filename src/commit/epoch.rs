//! Cutting the input into epochs: an epoch ends every commit interval, or early once its sources
//! have stamped a number of records, which bounds the work a commit holds and a restart redoes.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use sessionize::commit::EpochCutter;
//! let start = Instant::now();
//! let mut cutter = EpochCutter::new(7, Duration::from_secs(30), 1_000, start);
//! cutter.count(400);
//! assert!(!cutter.is_due(start + Duration::from_secs(1)));
//! assert!(cutter.is_due(start + Duration::from_secs(30)));
//! assert_eq!(cutter.cut(start + Duration::from_secs(30)), 8);
//! ```

use std::time::{Duration, Instant};

/// Where the current epoch stands, and when it ends.
#[derive(Debug, Clone)]
pub struct EpochCutter {
    epoch: u64,
    records: u64,
    max_records: u64,
    interval: Duration,
    ends_at: Instant,
}

impl EpochCutter {
    /// Epoch `first`, begun at `now`; each epoch lasts `interval` or `max_records` records.
    pub fn new(first: u64, interval: Duration, max_records: u64, now: Instant) -> Self {
        EpochCutter {
            epoch: first,
            records: 0,
            max_records: max_records.max(1),
            interval,
            ends_at: now + interval,
        }
    }

    /// The epoch records are stamped with now.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the epoch may take more records: an epoch ends at its record limit even mid-way
    /// through what has arrived.
    pub fn has_room(&self) -> bool {
        self.records < self.max_records
    }

    /// `records` more were stamped in this epoch.
    pub fn count(&mut self, records: u64) {
        self.records += records;
    }

    /// Whether the epoch should end at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        now >= self.ends_at || !self.has_room()
    }

    /// How long from `now` until the epoch ends by the clock.
    pub fn until_due(&self, now: Instant) -> Duration {
        self.ends_at.saturating_duration_since(now)
    }

    /// Ends the epoch at `now`; returns the next one.
    pub fn cut(&mut self, now: Instant) -> u64 {
        self.epoch += 1;
        self.records = 0;
        self.ends_at = now + self.interval;
        self.epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_limit_ends_an_epoch_before_its_interval() {
        let start = Instant::now();
        let mut cutter = EpochCutter::new(0, Duration::from_secs(30), 100, start);
        cutter.count(99);
        assert!(cutter.has_room() && !cutter.is_due(start));
        cutter.count(1);
        assert!(!cutter.has_room() && cutter.is_due(start));
        assert_eq!(cutter.cut(start), 1);
        assert!(cutter.has_room());
    }

    #[test]
    fn the_interval_restarts_at_each_cut() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut cutter = EpochCutter::new(3, 10 * second, u64::MAX, start);
        assert_eq!(cutter.until_due(start + 4 * second), 6 * second);
        let later = start + 25 * second;
        assert!(cutter.is_due(later));
        cutter.cut(later);
        assert!(!cutter.is_due(later + 9 * second));
        assert_eq!(cutter.epoch(), 4);
        assert_eq!(cutter.until_due(later + 30 * second), Duration::ZERO);
    }

    #[test]
    fn a_zero_record_limit_still_takes_records() {
        let cutter = EpochCutter::new(0, Duration::from_secs(1), 0, Instant::now());
        assert!(cutter.has_room());
    }
}
