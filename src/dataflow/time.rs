//! The dataflow's timestamp: a checkpoint epoch and a watermark, ordered as a product.

use serde::{Deserialize, Serialize};
use timely::order::PartialOrder;
use timely::progress::Timestamp;
use timely::progress::frontier::AntichainRef;
use timely::progress::timestamp::{PathSummary, Refines};

/// A dataflow timestamp: the checkpoint epoch and the watermark (event-time milliseconds, rounded
/// down to a tick), ordered as a product: a time is before another only if both its parts are.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Time {
    pub epoch: u64,
    pub watermark: u64,
}

impl Time {
    pub fn new(epoch: u64, watermark: u64) -> Self {
        Time { epoch, watermark }
    }
}

impl PartialOrder for Time {
    fn less_equal(&self, other: &Self) -> bool {
        self.epoch <= other.epoch && self.watermark <= other.watermark
    }
}

impl Timestamp for Time {
    type Summary = Time;
    fn minimum() -> Self {
        Time::default()
    }
}

/// As a path summary, a time is an advance of each part.
impl PathSummary<Time> for Time {
    fn results_in(&self, src: &Time) -> Option<Time> {
        Some(Time::new(
            src.epoch.checked_add(self.epoch)?,
            src.watermark.checked_add(self.watermark)?,
        ))
    }
    fn followed_by(&self, other: &Time) -> Option<Time> {
        self.results_in(other)
    }
}

impl Refines<()> for Time {
    fn to_inner(_: ()) -> Time {
        Time::minimum()
    }
    fn to_outer(self) {}
    fn summarize(_: Time) {}
}

/// The smallest watermark of a frontier: every record still to come has a larger stamp.
pub(super) fn frontier_watermark(frontier: AntichainRef<'_, Time>) -> Option<u64> {
    frontier.iter().map(|t| t.watermark).min()
}
