//! Kafka topics, read partition by partition with manual assignment, in batches of records.
//!
//! Every worker owns the partitions `p % peers == index` and assigns them to its own consumer at
//! exact offsets: no consumer-group rebalances, no offsets read from the group. The group id is
//! used only to publish committed offsets for lag tools, after the Iceberg commit that makes them
//! true.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

mod batch;
mod identity;
mod reader;
mod start;

pub use identity::{Resume, TopicIdentity, check_resume, resume_offsets};
pub use reader::{KafkaReader, ReadStatus, StopAt};
pub use start::{StartOffsets, offset_for_time, resolve_start};

use crate::retry::Backoff;

/// How long a metadata or offsets request may take before it is retried or reported.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the topic.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    pub servers: String,
    pub topic: String,
    /// The consumer group under which committed offsets are published for lag tools.
    pub group_id: String,
    /// Any librdkafka setting (`security.protocol`, `sasl.*`, ...), passed through.
    pub options: Vec<(String, String)>,
}

impl fmt::Debug for KafkaSettings {
    /// Shows option names only: their values may be secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options: Vec<String> = self
            .options
            .iter()
            .map(|(k, _)| format!("{k}=***"))
            .collect();
        f.debug_struct("KafkaSettings")
            .field("servers", &self.servers)
            .field("topic", &self.topic)
            .field("group_id", &self.group_id)
            .field("options", &options)
            .finish()
    }
}

impl KafkaSettings {
    /// A consumer that never subscribes: partitions are assigned by hand, and offsets are stored
    /// only when [`commit_offsets`] publishes them.
    pub fn consumer(&self) -> Result<BaseConsumer> {
        self.consumer_with(&[])
    }

    /// The consumer a [`KafkaReader`] reads with: it is told when it reaches the end of a
    /// partition, and then skips what delivers nothing (transaction markers, aborted records).
    /// An offset out of range is an error the reader handles, never a silent jump to the earliest
    /// offset: after a topic is recreated, that would skip every record below the offset it had.
    pub fn reader_consumer(&self) -> Result<BaseConsumer> {
        self.consumer_with(&[
            ("enable.partition.eof", "true"),
            ("auto.offset.reset", "error"),
        ])
    }

    /// A consumer with settings of ours on top of the usual ones (the user's still win).
    fn consumer_with(&self, overrides: &[(&str, &str)]) -> Result<BaseConsumer> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.servers)
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            // Records of aborted or open transactions are never read (librdkafka's default,
            // stated because exactly-once depends on it).
            .set("isolation.level", "read_committed")
            // Prefetch a little ahead of the dataflow, whose own read-ahead (64 MiB a worker)
            // is the buffer that counts: on a real broker, 8 MiB fetches and 2 MiB queued per
            // partition read as fast as 100 MiB and 16 MiB did, in 480 MiB of memory instead of
            // 1.24 GiB (docs/PERFORMANCE.md). A record larger than a fetch still comes whole.
            .set("fetch.max.bytes", "8388608")
            .set("max.partition.fetch.bytes", "1048576")
            .set("queued.max.messages.kbytes", "2048")
            .set("queued.min.messages", "20000")
            // Fetch again soon after a full local queue drains: the default (1 s) starves a
            // reader that drains its queue in milliseconds.
            .set("fetch.queue.backoff.ms", "5")
            // Connect to the brokers at once: with sparse connections, a client's first request
            // waited for librdkafka's one-second timer to open a connection, which was a quarter
            // of a two-million-record bounded run (docs/PERFORMANCE.md).
            .set("enable.sparse.connections", "false");
        for (key, value) in overrides {
            config.set(*key, *value);
        }
        for (key, value) in &self.options {
            config.set(key, value);
        }
        config.create().map_err(|e| {
            anyhow::anyhow!(
                "cannot create a Kafka consumer for {}: {}; check --kafka-servers and \
                 --kafka-option",
                self.servers,
                without_values(&e)
            )
        })
    }

    /// The topic's partition count, retried until the broker answers or `patience` has passed.
    pub fn partition_count(&self, consumer: &BaseConsumer, patience: Duration) -> Result<u32> {
        let count = METADATA_BACKOFF.patience(patience).retry(
            || {
                let metadata = consumer
                    .fetch_metadata(Some(&self.topic), REQUEST_TIMEOUT.min(patience))
                    .map_err(|e| Absent::Unreachable(e.into()))?;
                let topic = metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == self.topic)
                    .ok_or_else(|| {
                        Absent::Unreachable(anyhow::anyhow!(
                            "the broker did not describe the topic"
                        ))
                    })?;
                if let Some(error) = topic.error() {
                    return Err(Absent::Unreachable(anyhow::anyhow!("{error:?}")));
                }
                match topic.partitions().len() as u32 {
                    0 => Err(Absent::NoPartitions),
                    count => Ok(count),
                }
            },
            |e, _| {
                if let Absent::Unreachable(e) = e {
                    tracing::warn!("Kafka metadata not available yet, retrying: {e:#}");
                }
            },
        );
        match count {
            Ok(count) => Ok(count),
            Err(Absent::Unreachable(e)) => Err(e).with_context(|| {
                format!(
                    "cannot read topic {:?} from Kafka at {}: check that the broker is up and \
                     reachable, and that the topic exists",
                    self.topic, self.servers
                )
            }),
            Err(Absent::NoPartitions) => bail!(
                "topic {:?} has no partitions at {}: create it, or produce to it first",
                self.topic,
                self.servers
            ),
        }
    }

    /// Publishes next offsets for lag tools. Never read back as truth: the table's snapshot is.
    /// `wait` waits for the broker's answer: a bounded run's last publication must land before
    /// the process exits, while a live run must not stall on a broker outage.
    pub fn commit_offsets(&self, consumer: &BaseConsumer, next: &BTreeMap<u32, u64>, wait: bool) {
        let mut list = TopicPartitionList::new();
        for (&partition, &offset) in next {
            let _ = list.add_partition_offset(
                &self.topic,
                partition as i32,
                Offset::Offset(offset as i64),
            );
        }
        let mode = if wait {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        if let Err(e) = consumer.commit(&list, mode) {
            tracing::warn!("cannot publish consumer-group offsets (lag tools only): {e}");
        }
    }
}

/// Why a topic's partitions cannot be counted (yet).
enum Absent {
    Unreachable(anyhow::Error),
    NoPartitions,
}

/// How metadata is asked for while a topic is not there yet.
const METADATA_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(200), Duration::from_millis(200));

/// A partition's offset bounds: its first offset still kept (Kafka's low watermark) and its end
/// offset (the high watermark, the offset the next record will take). Retried through a broker
/// outage.
pub fn offset_bounds(consumer: &BaseConsumer, topic: &str, partition: u32) -> Result<(u64, u64)> {
    let (low, high) = retry("read partition offsets", || {
        consumer.fetch_watermarks(topic, partition as i32, REQUEST_TIMEOUT)
    })?;
    Ok((low.max(0) as u64, high.max(0) as u64))
}

/// How a broker request that fails is retried: for about a minute.
const BROKER_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// Retries a broker request through an outage, logging each failure.
fn retry<T>(what: &str, request: impl FnMut() -> Result<T, KafkaError>) -> Result<T> {
    BROKER_BACKOFF
        .retry(request, |e, delay| {
            tracing::warn!("cannot {what} ({e}); retrying in {delay:?}")
        })
        .with_context(|| format!("cannot {what}: the Kafka broker did not answer for a minute"))
}

/// End offsets for the lag metrics ([`crate::ops::EndOffsets`]), from a consumer of its own made
/// on first use; a request that takes more than a second, or fails, gives `None`.
pub fn end_offsets(settings: KafkaSettings) -> crate::ops::EndOffsets {
    let mut consumer: Option<BaseConsumer> = None;
    Box::new(move |partition| {
        if consumer.is_none() {
            match settings.consumer() {
                Ok(created) => consumer = Some(created),
                Err(e) => {
                    tracing::debug!("no consumer for the lag metrics: {e:#}");
                    return None;
                }
            }
        }
        let consumer = consumer.as_ref()?;
        let (_, end) = consumer
            .fetch_watermarks(&settings.topic, partition as i32, Duration::from_secs(1))
            .ok()?;
        Some(end.max(0) as u64)
    })
}
/// A client error as it can be shown: librdkafka's configuration errors carry the value given,
/// which may be a secret (`sasl.password`), so only the key is named.
pub fn without_values(error: &rdkafka::error::KafkaError) -> String {
    match error {
        rdkafka::error::KafkaError::ClientConfig(_, description, key, _) => {
            format!("invalid Kafka option {key:?}: {description}")
        }
        other => other.to_string(),
    }
}
