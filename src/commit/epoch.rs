//! Cutting the input into epochs: an epoch ends every commit interval, or early once its sources
//! have stamped a number of records or the writers hold a given output for it, which bounds the
//! work a commit holds, the memory waiting for it and what a restart redoes.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use sessionize::commit::{Buffered, EpochCutter, EpochLimits};
//! let start = Instant::now();
//! let limits = EpochLimits { max_bytes: 1 << 20, ..EpochLimits::every(Duration::from_secs(30)) };
//! let mut cutter = EpochCutter::new(7, limits, start);
//! cutter.count(400);
//! let small = Buffered { rows: 10, bytes: 2_000 };
//! assert!(!cutter.is_due(start + Duration::from_secs(1), small));
//! assert!(cutter.is_due(start + Duration::from_secs(1), Buffered { rows: 5_000, bytes: 1 << 20 }));
//! assert!(cutter.is_due(start + Duration::from_secs(30), small));
//! assert_eq!(cutter.cut(start + Duration::from_secs(30)), 8);
//! ```

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When an epoch ends: whichever limit it reaches first. A limit of 0 is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochLimits {
    /// `--commit-interval`.
    pub interval: Duration,
    /// `--max-epoch-records`: records stamped by one stamper.
    pub max_records: u64,
    /// `--commit-max-bytes`: output the writers of this process hold for the epoch.
    pub max_bytes: u64,
    /// `--commit-max-rows`: output rows the writers of this process hold for the epoch.
    pub max_rows: u64,
}

impl EpochLimits {
    /// Epochs that end by the clock only.
    pub fn every(interval: Duration) -> Self {
        EpochLimits {
            interval,
            max_records: 0,
            max_bytes: 0,
            max_rows: 0,
        }
    }

    fn output_limited(&self) -> bool {
        self.max_bytes > 0 || self.max_rows > 0
    }

    fn output_reached(&self, buffered: Buffered) -> bool {
        let reached = |limit: u64, value: u64| limit > 0 && value >= limit;
        reached(self.max_bytes, buffered.bytes) || reached(self.max_rows, buffered.rows)
    }
}

/// How often a stamper whose epochs end by output size looks at the writers' buffers when no
/// input wakes it: output grows only as the watermark moves, which input mostly causes.
const OUTPUT_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Where the current epoch stands, and when it ends.
#[derive(Debug, Clone)]
pub struct EpochCutter {
    epoch: u64,
    records: u64,
    limits: EpochLimits,
    ends_at: Instant,
}

impl EpochCutter {
    /// Epoch `first`, begun at `now`, ending at `limits`.
    pub fn new(first: u64, limits: EpochLimits, now: Instant) -> Self {
        EpochCutter {
            epoch: first,
            records: 0,
            limits,
            ends_at: now + limits.interval,
        }
    }

    /// The epoch records are stamped with now.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the epoch may take more records: an epoch ends at its record limit even mid-way
    /// through what has arrived.
    pub fn has_room(&self) -> bool {
        self.limits.max_records == 0 || self.records < self.limits.max_records
    }

    /// `records` more were stamped in this epoch.
    pub fn count(&mut self, records: u64) {
        self.records += records;
    }

    /// Whether the epoch has reached a limit of its size, the writers holding `buffered` of its
    /// output: it takes no more records until it ends, even when it cannot end yet (while the
    /// previous epoch commits).
    pub fn is_full(&self, buffered: Buffered) -> bool {
        !self.has_room() || self.limits.output_reached(buffered)
    }

    /// Whether the epoch should end at `now`, the writers holding `buffered` of its output.
    pub fn is_due(&self, now: Instant, buffered: Buffered) -> bool {
        now >= self.ends_at || self.is_full(buffered)
    }

    /// How long from `now` until the epoch should be looked at again: when it ends by the clock,
    /// or sooner when its output may end it.
    pub fn until_due(&self, now: Instant) -> Duration {
        let by_clock = self.ends_at.saturating_duration_since(now);
        if self.limits.output_limited() {
            by_clock.min(OUTPUT_CHECK_INTERVAL)
        } else {
            by_clock
        }
    }

    /// Ends the epoch at `now`; returns the next one.
    pub fn cut(&mut self, now: Instant) -> u64 {
        self.epoch += 1;
        self.records = 0;
        self.ends_at = now + self.limits.interval;
        self.epoch
    }
}

/// What the writers hold of one epoch's output: rows, and their size as Arrow arrays
/// (uncompressed), which is what the writers' memory and the commit's files grow with.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Buffered {
    pub rows: u64,
    pub bytes: u64,
}

/// The output the writers of one process hold, by epoch: the writers add to it, the stampers read
/// it to end an epoch at `--commit-max-bytes` / `--commit-max-rows`. Shared by the workers of a
/// process (a process bounds its own memory; the other processes end the same epoch at their own
/// limits or the interval).
///
/// ```
/// use sessionize::commit::{Buffered, BufferedOutput};
/// let output = BufferedOutput::default();
/// output.add(3, 2, 300);
/// output.add(3, 1, 100);
/// assert_eq!(output.of(3), Buffered { rows: 3, bytes: 400 });
/// output.add(4, 1, 50);
/// assert_eq!(output.of(3), Buffered { rows: 3, bytes: 400 });
/// output.add(5, 1, 50);
/// assert_eq!(output.of(3), Buffered::default());
/// ```
#[derive(Debug, Default)]
pub struct BufferedOutput {
    by_epoch: Mutex<BTreeMap<u64, Buffered>>,
}

impl BufferedOutput {
    /// The writers took `rows` more rows of `bytes` for `epoch`. Epochs before the previous one
    /// are forgotten: an epoch ends only once the one before it is committed, so at most two take
    /// rows at a time.
    pub fn add(&self, epoch: u64, rows: u64, bytes: u64) {
        let mut by_epoch = self.by_epoch.lock().expect("not poisoned");
        by_epoch.retain(|&e, _| e + 1 >= epoch);
        let buffered = by_epoch.entry(epoch).or_default();
        buffered.rows += rows;
        buffered.bytes += bytes;
    }

    /// What the writers hold of `epoch`'s output.
    pub fn of(&self, epoch: u64) -> Buffered {
        let by_epoch = self.by_epoch.lock().expect("not poisoned");
        by_epoch.get(&epoch).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTHING: Buffered = Buffered { rows: 0, bytes: 0 };

    fn limits(interval: Duration, max_records: u64) -> EpochLimits {
        EpochLimits {
            max_records,
            ..EpochLimits::every(interval)
        }
    }

    #[test]
    fn the_record_limit_ends_an_epoch_before_its_interval() {
        let start = Instant::now();
        let mut cutter = EpochCutter::new(0, limits(Duration::from_secs(30), 100), start);
        cutter.count(99);
        assert!(cutter.has_room() && !cutter.is_due(start, NOTHING));
        cutter.count(1);
        assert!(!cutter.has_room() && cutter.is_due(start, NOTHING));
        assert_eq!(cutter.cut(start), 1);
        assert!(cutter.has_room());
    }

    #[test]
    fn the_interval_restarts_at_each_cut() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut cutter = EpochCutter::new(3, EpochLimits::every(10 * second), start);
        assert_eq!(cutter.until_due(start + 4 * second), 6 * second);
        let later = start + 25 * second;
        assert!(cutter.is_due(later, NOTHING));
        cutter.cut(later);
        assert!(!cutter.is_due(later + 9 * second, NOTHING));
        assert_eq!(cutter.epoch(), 4);
        assert_eq!(cutter.until_due(later + 30 * second), Duration::ZERO);
    }

    #[test]
    fn zero_limits_are_no_limits() {
        let start = Instant::now();
        let cutter = EpochCutter::new(0, limits(Duration::from_secs(1), 0), start);
        assert!(cutter.has_room());
        let huge = Buffered {
            rows: u64::MAX,
            bytes: u64::MAX,
        };
        assert!(!cutter.is_due(start, huge));
    }

    #[test]
    fn either_output_limit_ends_the_epoch_and_is_looked_at_often() {
        let start = Instant::now();
        let hour = Duration::from_secs(3600);
        let by_rows = EpochLimits {
            max_rows: 1_000,
            ..EpochLimits::every(hour)
        };
        let cutter = EpochCutter::new(0, by_rows, start);
        assert!(cutter.until_due(start) <= OUTPUT_CHECK_INTERVAL);
        let rows = |rows| Buffered { rows, bytes: 1 };
        assert!(!cutter.is_due(start, rows(999)));
        assert!(cutter.is_due(start, rows(1_000)));
        let by_bytes = EpochLimits {
            max_bytes: 1 << 20,
            ..EpochLimits::every(hour)
        };
        let cutter = EpochCutter::new(0, by_bytes, start);
        let bytes = |bytes| Buffered { rows: 1, bytes };
        assert!(!cutter.is_due(start, bytes((1 << 20) - 1)));
        assert!(cutter.is_due(start, bytes(1 << 20)));
    }

    #[test]
    fn buffered_output_is_counted_per_epoch_across_writers() {
        let output = std::sync::Arc::new(BufferedOutput::default());
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let output = std::sync::Arc::clone(&output);
                std::thread::spawn(move || {
                    for _ in 0..1_000 {
                        output.add(9, 1, 10);
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        assert_eq!(
            output.of(9),
            Buffered {
                rows: 4_000,
                bytes: 40_000
            }
        );
        assert_eq!(output.of(10), NOTHING);
    }
}
