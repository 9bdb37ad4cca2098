//! Where each partition stands: in a running pipeline ([`SourcePosition`]), and as a commit
//! records it ([`RecordedPosition`]).

use serde::{Deserialize, Serialize};

use crate::ops::LineOutcomes;
use crate::source::file::Fingerprint;
use crate::watermark::{JumpGuard, PartitionClock};

/// Where a partition stands at the end of an epoch, and what it saw during the epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    pub partition: u32,
    /// The next byte of a file, or the next record offset of a Kafka partition.
    pub next_offset: u64,
    /// The next line number of a file.
    pub next_line: u64,
    /// The partition's event time: its newest event time and its watermark.
    pub clock: PartitionClock,
    pub finished: bool,
    /// A file's identity, by which a later run finds it under any path.
    #[serde(default)]
    pub fingerprint: Option<Fingerprint>,
    /// A file's unfinished last line, left unread after `next_offset` ([`Chunk::unfinished_line`]).
    ///
    /// [`Chunk::unfinished_line`]: crate::source::file::Chunk::unfinished_line
    #[serde(default)]
    pub unfinished_line: u64,
    #[serde(skip)]
    pub counts: SourceCounts,
}

impl SourcePosition {
    /// Where a partition nobody has read yet starts, its watermark at `watermark_ms`.
    pub fn fresh(partition: u32, watermark_ms: u64) -> Self {
        SourcePosition {
            partition,
            next_line: 1,
            clock: PartitionClock::at(watermark_ms),
            ..SourcePosition::default()
        }
    }

    /// The position as a commit records it, under the name of its source.
    pub fn recorded(&self, source: &str) -> RecordedPosition {
        RecordedPosition {
            source: source.to_string(),
            next_offset: self.next_offset,
            next_line: self.next_line,
            max_event_ms: self.clock.max_event_ms,
            watermark_ms: self.clock.watermark_ms,
            finished: self.finished,
            jump_guard: self.clock.jump_guard.clone(),
            fingerprint: self.fingerprint,
            unfinished_line: self.unfinished_line,
        }
    }
}

/// What a source saw, summed over a span of input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCounts {
    pub lines: u64,
    pub on_time: u64,
    pub late: u64,
    pub quarantined: u64,
}

impl SourceCounts {
    /// What happened between `before` and these counts, for the metrics.
    pub fn since(self, before: SourceCounts) -> LineOutcomes {
        LineOutcomes {
            lines: self.lines.saturating_sub(before.lines),
            on_time: self.on_time.saturating_sub(before.on_time),
            late: self.late.saturating_sub(before.late),
            quarantined: self.quarantined.saturating_sub(before.quarantined),
        }
    }
}

impl std::ops::AddAssign for SourceCounts {
    fn add_assign(&mut self, other: Self) {
        self.lines += other.lines;
        self.on_time += other.on_time;
        self.late += other.late;
        self.quarantined += other.quarantined;
    }
}

/// A partition's position as a snapshot summary records it (`sessionize.positions`, by partition).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedPosition {
    pub source: String,
    pub next_offset: u64,
    pub next_line: u64,
    pub max_event_ms: Option<u64>,
    #[serde(default)]
    pub watermark_ms: u64,
    pub finished: bool,
    #[serde(default, skip_serializing_if = "JumpGuard::is_empty")]
    pub jump_guard: JumpGuard,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unfinished_line: u64,
}

fn is_zero(bytes: &u64) -> bool {
    *bytes == 0
}

impl RecordedPosition {
    /// The position a run resumes `partition` from; `finished` says whether its input has ended.
    pub fn resume(self, partition: u32, finished: bool) -> SourcePosition {
        SourcePosition {
            partition,
            next_offset: self.next_offset,
            next_line: self.next_line,
            clock: PartitionClock {
                max_event_ms: self.max_event_ms,
                watermark_ms: self.watermark_ms,
                // Commits made before the guard existed start it at the newest event time.
                jump_guard: match self.jump_guard.newest() {
                    Some(_) => self.jump_guard,
                    None => JumpGuard::starting_at(self.max_event_ms),
                },
            },
            finished,
            fingerprint: self.fingerprint,
            unfinished_line: self.unfinished_line,
            counts: SourceCounts::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_resumes_as_it_was_recorded() {
        let mut position = SourcePosition::fresh(3, 1_000);
        position.next_offset = 42;
        position.finished = true;
        position.clock.max_event_ms = Some(700_000);
        position.clock.jump_guard = JumpGuard::starting_at(Some(700_000));
        let recorded = position.recorded("t");
        assert_eq!(recorded.source, "t");
        assert_eq!(recorded.resume(3, true), position);
    }

    #[test]
    fn a_record_from_before_the_jump_guard_starts_it_at_the_newest_event() {
        let recorded = RecordedPosition {
            source: "f".into(),
            next_offset: 10,
            next_line: 2,
            max_event_ms: Some(5000),
            watermark_ms: 0,
            finished: false,
            jump_guard: JumpGuard::default(),
            fingerprint: None,
            unfinished_line: 0,
        };
        let resumed = recorded.resume(0, false);
        assert_eq!(resumed.clock.jump_guard.newest(), Some(5000));
        assert_eq!(resumed.clock.watermark_ms, 0);
    }
}
