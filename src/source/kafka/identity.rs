//! What a topic is, beyond its name: the cluster that holds it and the topic's own id, which a
//! deleted and recreated topic (or a replaced broker) does not keep. A run resumes recorded offsets
//! only on the topic they were read from, and only inside the partition's offsets.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::fmt;
use std::time::Duration;

use anyhow::{Result, bail};
use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::{Deserialize, Serialize};

use super::{KafkaSettings, offset_bounds};

/// A topic's identity as the broker states it; either part is `None` where the broker or a commit
/// made before identities were recorded does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicIdentity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
}

impl fmt::Display for TopicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |id: &Option<String>| id.clone().unwrap_or_else(|| "unknown".into());
        write!(
            f,
            "cluster {}, topic id {}",
            show(&self.cluster_id),
            show(&self.topic_id)
        )
    }
}

impl TopicIdentity {
    /// Whether `self` and `other` are known to be different topics: some part both know differs.
    fn differs_from(&self, other: &TopicIdentity) -> bool {
        let differ =
            |a: &Option<String>, b: &Option<String>| matches!((a, b), (Some(a), Some(b)) if a != b);
        differ(&self.cluster_id, &other.cluster_id) || differ(&self.topic_id, &other.topic_id)
    }
}

/// How long the broker may take to say what the topic is.
const IDENTITY_TIMEOUT: Duration = Duration::from_secs(10);

impl KafkaSettings {
    /// The topic's identity. A broker that cannot tell (older than Kafka 3.7 for topic ids, the
    /// embedded mock broker) leaves that part unknown rather than failing the run.
    pub fn identity(&self, consumer: &BaseConsumer) -> TopicIdentity {
        TopicIdentity {
            cluster_id: consumer.client().fetch_cluster_id(IDENTITY_TIMEOUT),
            topic_id: topic_id(consumer, &self.topic),
        }
    }
}

/// The topic's id, from the admin request DescribeTopics (KIP-966): rdkafka's safe API does not
/// expose it, and librdkafka's metadata does not carry it.
fn topic_id(consumer: &BaseConsumer, topic: &str) -> Option<String> {
    let name = CString::new(topic).ok()?;
    let mut names = [name.as_ptr()];
    let client = consumer.client().native_ptr();
    // SAFETY: every pointer is librdkafka's or ours and outlives its use: `names` and `name` live
    // to the end of this function, the collection, queue and event are destroyed once, after
    // their last use, and the strings read from the event are copied before it is destroyed.
    unsafe {
        let collection = rd::rd_kafka_TopicCollection_of_topic_names(names.as_mut_ptr(), 1);
        let queue = rd::rd_kafka_queue_new(client);
        rd::rd_kafka_DescribeTopics(client, collection, std::ptr::null(), queue);
        let event = rd::rd_kafka_queue_poll(queue, IDENTITY_TIMEOUT.as_millis() as i32);
        let mut id = None;
        if !event.is_null()
            && rd::rd_kafka_event_error(event)
                == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            let result = rd::rd_kafka_event_DescribeTopics_result(event);
            let mut count = 0usize;
            let topics = rd::rd_kafka_DescribeTopics_result_topics(result, &mut count);
            if !result.is_null() && count == 1 {
                let description = *topics;
                let uuid = rd::rd_kafka_TopicDescription_topic_id(description);
                if rd::rd_kafka_TopicDescription_error(description).is_null() && !uuid.is_null() {
                    let text = rd::rd_kafka_Uuid_base64str(uuid);
                    if !text.is_null() {
                        id = Some(CStr::from_ptr(text).to_string_lossy().into_owned());
                    }
                }
            }
        }
        if !event.is_null() {
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_queue_destroy(queue);
        rd::rd_kafka_TopicCollection_destroy(collection);
        // The all-zero id is Kafka's "no id".
        id.filter(|id| id != "AAAAAAAAAAAAAAAAAAAAAA")
    }
}

/// The topic's identity now, and where each recorded partition (`partition -> next offset`,
/// recorded on the topic `recorded`) resumes on it: [`check_resume`] against the partition's
/// offsets as the broker has them. Records deleted by retention before they were read are logged.
pub fn resume_offsets(
    settings: &KafkaSettings,
    positions: &BTreeMap<u32, u64>,
    recorded: Option<&TopicIdentity>,
) -> Result<(TopicIdentity, BTreeMap<u32, u64>)> {
    let consumer = settings.consumer()?;
    let current = settings.identity(&consumer);
    let mut resumed = BTreeMap::new();
    for (&partition, &offset) in positions {
        let bounds = offset_bounds(&consumer, &settings.topic, partition)?;
        let at = match check_resume(
            &settings.topic,
            partition,
            offset,
            recorded,
            &current,
            bounds,
        )? {
            Resume::At(offset) => offset,
            Resume::AfterGap { recorded, low } => {
                records_gone(partition, recorded, low);
                low
            }
        };
        resumed.insert(partition, at);
    }
    Ok((current, resumed))
}

/// Logs records deleted from the broker before anyone read them: the only gap in a partition's
/// offsets that loses input (transaction markers and compaction leave gaps that do not).
pub(super) fn records_gone(partition: u32, from: u64, to: u64) {
    tracing::warn!(
        partition,
        "records {from}..{to} are gone from the broker (deleted by retention) and were never read"
    );
}

/// Where a partition resumes, after [`check_resume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// At the recorded offset.
    At(u64),
    /// At the partition's first offset still kept: the records from the recorded offset up to it
    /// were deleted by retention before anyone read them.
    AfterGap { recorded: u64, low: u64 },
}

/// Whether `partition`, recorded at `next_offset` on the topic `recorded`, can resume on the topic
/// as it is now (`current`, offsets `low..high`). A different topic (another cluster or topic id),
/// or offsets that went backwards (an offset past the end: the topic was recreated or the broker
/// replaced), would skip or re-read records: that is an error saying how to go on. Offsets below
/// the low watermark are a real gap, reported by the caller; gaps that transaction markers or
/// compaction leave inside the kept offsets are not gaps in the input.
pub fn check_resume(
    topic: &str,
    partition: u32,
    next_offset: u64,
    recorded: Option<&TopicIdentity>,
    current: &TopicIdentity,
    (low, high): (u64, u64),
) -> Result<Resume> {
    let how_on = "to read the topic as it is now, start explicitly with --start-offsets (e.g. \
                  earliest) or --start-timestamp, or write to another --iceberg-table";
    if let Some(recorded) = recorded
        && recorded.differs_from(current)
    {
        bail!(
            "topic {topic:?} is not the topic this table read: its last commit recorded \
             partition {partition} at offset {next_offset} of {recorded}, and the broker now has \
             {current} (offsets {low}..{high}); the topic was recreated or the cluster replaced; \
             {how_on}"
        );
    }
    if next_offset > high {
        let read_on = recorded.map(|r| format!(" of {r}")).unwrap_or_default();
        bail!(
            "partition {partition} of topic {topic:?} went backwards: it was read up to offset \
             {next_offset}{read_on}, and the broker now has offsets {low}..{high} ({current}); \
             the topic was deleted and recreated or the broker replaced; {how_on}"
        );
    }
    Ok(if next_offset < low {
        Resume::AfterGap {
            recorded: next_offset,
            low,
        }
    } else {
        Resume::At(next_offset)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(cluster: &str, topic: Option<&str>) -> TopicIdentity {
        TopicIdentity {
            cluster_id: Some(cluster.into()),
            topic_id: topic.map(Into::into),
        }
    }

    #[test]
    fn the_same_topic_resumes_inside_its_offsets() {
        let same = identity("c1", Some("t1"));
        let check = |offset, bounds| check_resume("t", 0, offset, Some(&same), &same, bounds);
        assert_eq!(check(3000, (0, 3500)).unwrap(), Resume::At(3000));
        // Everything read: the next offset is the end.
        assert_eq!(check(3000, (0, 3000)).unwrap(), Resume::At(3000));
        assert_eq!(
            check(3000, (3200, 3500)).unwrap(),
            Resume::AfterGap {
                recorded: 3000,
                low: 3200
            }
        );
    }

    #[test]
    fn offsets_that_went_backwards_stop_the_run_naming_both_sides() {
        let same = identity("c1", Some("t1"));
        let error = check_resume("t", 2, 3000, Some(&same), &same, (0, 500))
            .unwrap_err()
            .to_string();
        for part in [
            "partition 2",
            "3000",
            "0..500",
            "--start-offsets",
            "cluster c1",
        ] {
            assert!(error.contains(part), "{part}: {error}");
        }
        assert!(!error.contains('\n'));
    }

    #[test]
    fn another_topic_or_cluster_stops_the_run_even_inside_the_offsets() {
        let recorded = identity("c1", Some("t1"));
        for current in [identity("c1", Some("t2")), identity("c2", Some("t1"))] {
            let error = check_resume("t", 0, 10, Some(&recorded), &current, (0, 5000))
                .unwrap_err()
                .to_string();
            assert!(error.contains(&recorded.to_string()), "{error}");
            assert!(error.contains(&current.to_string()), "{error}");
            assert!(error.contains("--start-offsets"), "{error}");
        }
    }

    #[test]
    fn unknown_parts_compare_as_equal_and_old_commits_check_offsets_only() {
        let recorded = identity("c1", None);
        let current = identity("c1", Some("t9"));
        assert_eq!(
            check_resume("t", 0, 10, Some(&recorded), &current, (0, 20)).unwrap(),
            Resume::At(10)
        );
        assert_eq!(
            check_resume("t", 0, 10, None, &current, (0, 20)).unwrap(),
            Resume::At(10)
        );
        assert!(check_resume("t", 0, 30, None, &current, (0, 20)).is_err());
    }
}
