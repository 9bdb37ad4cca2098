//! Where a run starts reading partitions the table has no position for: the earliest or latest
//! offsets, the group's committed ones, explicit ones, or those of a time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::{KafkaSettings, REQUEST_TIMEOUT, offset_bounds, retry};

/// Where a run starts reading partitions that the table has no position for (or all partitions,
/// when given explicitly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOffsets {
    Earliest,
    Latest,
    /// The consumer group's committed offsets (earliest where it has none).
    Committed,
    /// Offsets per partition; partitions not named start at the earliest offset.
    Explicit(BTreeMap<u32, u64>),
    /// The first offset of each partition whose record timestamp is at or after this time.
    Timestamp(i64),
}

impl std::str::FromStr for StartOffsets {
    type Err = String;

    /// `earliest`, `latest`, `committed`, or `partition:offset,...` such as `0:1200,1:980`.
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "earliest" => return Ok(StartOffsets::Earliest),
            "latest" => return Ok(StartOffsets::Latest),
            "committed" => return Ok(StartOffsets::Committed),
            _ => {}
        }
        let mut offsets = BTreeMap::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let parsed = pair
                .split_once(':')
                .and_then(|(p, o)| Some((p.trim().parse().ok()?, o.trim().parse().ok()?)));
            let Some((partition, offset)) = parsed else {
                return Err(format!(
                    "{pair:?} is not partition:offset; use earliest, latest, committed or e.g. \
                     0:1200,1:980"
                ));
            };
            offsets.insert(partition, offset);
        }
        if offsets.is_empty() {
            return Err("no offsets given".into());
        }
        Ok(StartOffsets::Explicit(offsets))
    }
}

/// Resolves where each partition starts, as concrete offsets.
pub fn resolve_start(
    consumer: &BaseConsumer,
    settings: &KafkaSettings,
    partitions: &[u32],
    start: &StartOffsets,
) -> Result<BTreeMap<u32, u64>> {
    let topic = &settings.topic;
    let mut resolved = BTreeMap::new();
    for &partition in partitions {
        let (low, high) = offset_bounds(consumer, topic, partition)?;
        let offset = match start {
            StartOffsets::Earliest => low,
            StartOffsets::Latest => high,
            StartOffsets::Explicit(offsets) => offsets.get(&partition).copied().unwrap_or(low),
            StartOffsets::Committed => {
                let mut list = TopicPartitionList::new();
                list.add_partition(topic, partition as i32);
                let committed = retry("read committed offsets", || {
                    consumer.committed_offsets(list.clone(), REQUEST_TIMEOUT)
                })?;
                match committed.elements().first().map(|e| e.offset()) {
                    Some(Offset::Offset(o)) if o >= 0 => o as u64,
                    _ => low,
                }
            }
            StartOffsets::Timestamp(ms) => offset_for_time(settings, consumer, partition, *ms)?,
        };
        resolved.insert(partition, offset.clamp(low, high.max(low)));
    }
    Ok(resolved)
}

/// The first offset of `partition` whose record timestamp is at or after `ms`, or the end
/// offset if there is none. Asks the broker's time index; a broker without one (librdkafka's
/// mock cluster answers "none" to every time) is searched by reading record timestamps, which,
/// like the time index, assumes they grow with the offset.
pub fn offset_for_time(
    settings: &KafkaSettings,
    consumer: &BaseConsumer,
    partition: u32,
    ms: i64,
) -> Result<u64> {
    let topic = &settings.topic;
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition as i32, Offset::Offset(ms))
        .context("invalid timestamp")?;
    let found = retry("look up offsets for a timestamp", || {
        consumer.offsets_for_times(list.clone(), REQUEST_TIMEOUT)
    })?;
    if let Some(Offset::Offset(o)) = found.elements().first().map(|e| e.offset())
        && o >= 0
    {
        return Ok(o as u64);
    }
    let (mut low, mut high) = offset_bounds(consumer, topic, partition)?;
    // Reads one record at a time: fetch it at once, and no more than it.
    let probe =
        settings.consumer_with(&[("fetch.wait.max.ms", "10"), ("queued.min.messages", "1")])?;
    while low < high {
        let middle = low + (high - low) / 2;
        if record_timestamp(&probe, topic, partition, middle)? < ms {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    Ok(low)
}

/// The timestamp of the record at `offset` (or of the first one after it, if it is gone).
fn record_timestamp(probe: &BaseConsumer, topic: &str, partition: u32, offset: u64) -> Result<i64> {
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition as i32, Offset::Offset(offset as i64))
        .context("invalid offset")?;
    probe.assign(&list).context("cannot assign a partition")?;
    let started = Instant::now();
    while started.elapsed() < REQUEST_TIMEOUT {
        if let Some(message) = probe.poll(Duration::from_millis(100)) {
            let message = message.context("cannot read a record's timestamp")?;
            return Ok(message.timestamp().to_millis().unwrap_or(i64::MIN));
        }
    }
    bail!("record {offset} of partition {partition} did not arrive within {REQUEST_TIMEOUT:?}")
}
