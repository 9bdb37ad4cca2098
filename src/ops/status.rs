//! What `/status` (JSON) and the live page at `/` show: partitions, recent commits, and a few
//! minutes of throughput and lag sampled every [`SAMPLE_EVERY`].

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

/// How often the history is sampled (and Kafka's end offsets asked for).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Samples kept: five minutes.
const HISTORY: usize = 150;
/// Commits kept for the page.
const COMMITS: usize = 20;

/// One partition of this process.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    pub partition: u32,
    pub events_read: u64,
    /// The next offset (Kafka) or byte offset (files) the stamper classifies.
    pub next_offset: u64,
    /// Log end offset minus the next offset to read (Kafka only, once known).
    pub lag: Option<i64>,
    pub watermark_ms: u64,
}

/// A commit of the committing process.
#[derive(Debug, Clone, Serialize)]
pub struct CommitStatus {
    pub epoch: u64,
    /// Wall clock, ms since the Unix epoch.
    pub at_ms: u64,
    /// Session rows the commit added.
    pub rows: u64,
    pub duration_s: f64,
}

/// One point of the charts.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub at_ms: u64,
    pub events_read: u64,
    /// Events read per second since the previous sample.
    pub events_per_s: f64,
    /// Kafka lag summed over this process's partitions (0 for files).
    pub lag: i64,
    pub watermark_lag_s: Option<f64>,
}

/// The charts' samples and the last commits.
#[derive(Default)]
pub struct Recent {
    samples: VecDeque<Sample>,
    commits: VecDeque<CommitStatus>,
}

impl Recent {
    /// Adds a sample of the events read so far; the rate is taken against the previous sample.
    pub fn sample(&mut self, at_ms: u64, events_read: u64, lag: i64, watermark_lag_s: Option<f64>) {
        let events_per_s = match self.samples.back() {
            Some(last) if at_ms > last.at_ms => {
                events_read.saturating_sub(last.events_read) as f64 * 1000.0
                    / (at_ms - last.at_ms) as f64
            }
            _ => 0.0,
        };
        push_bounded(
            &mut self.samples,
            Sample {
                at_ms,
                events_read,
                events_per_s,
                lag,
                watermark_lag_s,
            },
            HISTORY,
        );
    }

    pub fn commit(&mut self, commit: CommitStatus) {
        push_bounded(&mut self.commits, commit, COMMITS);
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.iter().copied().collect()
    }

    /// Newest first.
    pub fn commits(&self) -> Vec<CommitStatus> {
        self.commits.iter().rev().cloned().collect()
    }
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T, bound: usize) {
    if queue.len() == bound {
        queue.pop_front();
    }
    queue.push_back(item);
}

/// The whole of `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub process: usize,
    pub processes: usize,
    pub workers: usize,
    pub source: String,
    pub uptime_s: u64,
    pub live: ProbeStatus,
    pub ready: ProbeStatus,
    pub epoch: i64,
    pub watermark_ms: Option<u64>,
    pub watermark_lag_s: Option<f64>,
    pub events_read: u64,
    pub outcomes: Outcomes,
    pub sessions_closed: Vec<(&'static str, u64)>,
    pub open_sessions: i64,
    pub pending_events: i64,
    pub state_bytes: i64,
    pub last_commit_s: Option<f64>,
    pub partitions: Vec<PartitionStatus>,
    pub commits: Vec<CommitStatus>,
    pub history: Vec<Sample>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeStatus {
    pub ok: bool,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcomes {
    pub on_time: u64,
    pub late: u64,
    pub quarantined: u64,
    pub duplicate: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_between_samples_and_bounded_history() {
        let mut recent = Recent::default();
        recent.sample(1_000, 0, 10, None);
        recent.sample(3_000, 5_000, 4, Some(1.5));
        let samples = recent.samples();
        assert_eq!(samples[0].events_per_s, 0.0);
        assert_eq!(samples[1].events_per_s, 2_500.0);
        for i in 0..HISTORY as u64 * 2 {
            recent.sample(4_000 + i, i, 0, None);
        }
        assert_eq!(recent.samples().len(), HISTORY);
        for epoch in 0..COMMITS as u64 + 5 {
            recent.commit(CommitStatus {
                epoch,
                at_ms: 0,
                rows: 1,
                duration_s: 0.1,
            });
        }
        let commits = recent.commits();
        assert_eq!(commits.len(), COMMITS);
        assert_eq!(commits[0].epoch, COMMITS as u64 + 4, "newest first");
    }
}
