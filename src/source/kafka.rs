//! Kafka topics, read partition by partition with manual assignment, in batches of records.
//!
//! Every worker owns the partitions `p % peers == index` and assigns them to its own consumer at
//! exact offsets: no consumer-group rebalances, no offsets read from the group. The group id is
//! used only to publish committed offsets for lag tools, after the Iceberg commit that makes them
//! true.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::file::Chunk;

/// How long a metadata or offsets request may take before it is retried or reported.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a reader looks for partitions added to the topic.
const PARTITION_DISCOVERY_INTERVAL: Duration = Duration::from_secs(30);

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
    pub fn reader_consumer(&self) -> Result<BaseConsumer> {
        self.consumer_with(&[("enable.partition.eof", "true")])
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
            // Fetch in large batches: the dataflow parses them in parallel.
            .set("fetch.max.bytes", "104857600")
            .set("max.partition.fetch.bytes", "16777216")
            .set("queued.max.messages.kbytes", "16384")
            .set("queued.min.messages", "20000")
            // Fetch again soon after a full local queue drains: the default (1 s) starves a
            // reader that drains its queue in milliseconds.
            .set("fetch.queue.backoff.ms", "5");
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

    /// The topic's partition count, retried until the broker answers or `deadline` passes.
    pub fn partition_count(&self, consumer: &BaseConsumer, patience: Duration) -> Result<u32> {
        let started = Instant::now();
        loop {
            let attempt = consumer
                .fetch_metadata(Some(&self.topic), REQUEST_TIMEOUT.min(patience))
                .map_err(anyhow::Error::from)
                .and_then(|metadata| {
                    let topic = metadata
                        .topics()
                        .iter()
                        .find(|t| t.name() == self.topic)
                        .context("the broker did not describe the topic")?;
                    if let Some(error) = topic.error() {
                        bail!("{error:?}");
                    }
                    Ok(topic.partitions().len() as u32)
                });
            match attempt {
                Ok(count) if count > 0 => return Ok(count),
                Ok(_) => {}
                Err(e) if started.elapsed() >= patience => {
                    return Err(e).with_context(|| {
                        format!(
                            "cannot read topic {:?} from Kafka at {}: check that the broker is up \
                             and reachable, and that the topic exists",
                            self.topic, self.servers
                        )
                    });
                }
                Err(e) => tracing::warn!("Kafka metadata not available yet, retrying: {e:#}"),
            }
            if started.elapsed() >= patience {
                bail!(
                    "topic {:?} has no partitions at {}: create it, or produce to it first",
                    self.topic,
                    self.servers
                );
            }
            std::thread::sleep(Duration::from_millis(200));
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

/// The low and high watermark offsets of a partition, retried through a broker outage.
pub fn watermarks(consumer: &BaseConsumer, topic: &str, partition: u32) -> Result<(u64, u64)> {
    let (low, high) = retry("read partition offsets", || {
        consumer.fetch_watermarks(topic, partition as i32, REQUEST_TIMEOUT)
    })?;
    Ok((low.max(0) as u64, high.max(0) as u64))
}

/// Retries a broker request with back-off for about a minute, logging each failure.
fn retry<T>(what: &str, mut request: impl FnMut() -> Result<T, KafkaError>) -> Result<T> {
    let mut delay = Duration::from_millis(100);
    let started = Instant::now();
    loop {
        match request() {
            Ok(value) => return Ok(value),
            Err(e) if started.elapsed() < Duration::from_secs(60) => {
                tracing::warn!("cannot {what} ({e}); retrying in {delay:?}");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot {what}: the Kafka broker did not answer for a minute")
                });
            }
        }
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
        let (low, high) = watermarks(consumer, topic, partition)?;
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
    let (mut low, mut high) = watermarks(consumer, topic, partition)?;
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

/// Where a bounded run stops: the end offsets seen at start, or the offsets of a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAt {
    /// Read forever.
    Never,
    /// The end offsets when the run starts (`--test-mode`).
    EndAtStart,
    /// The first offset whose record timestamp is at or after this time (`--until-timestamp`).
    Timestamp(i64),
}

/// One partition as a reader sees it.
struct PartitionCursor {
    /// Offset of the next record to hand out.
    next_offset: u64,
    /// Up to where the progress counters have counted the partition's offsets.
    counted_offset: u64,
    /// Where a bounded run stops.
    end: Option<u64>,
    next_seq: u64,
    pending: PendingChunk,
    ended: bool,
    /// Unassigned while its watermark runs too far ahead of the slowest partition's.
    paused: bool,
}

/// Records gathered for the next chunk of a partition.
#[derive(Default)]
struct PendingChunk {
    bytes: Vec<u8>,
    ends: Vec<u32>,
    offsets: Vec<u64>,
    /// When the first record arrived: a partial chunk waits at most [`CHUNK_LINGER`].
    since: Option<Instant>,
}

/// How long records may wait for their chunk to fill: long enough to batch a busy topic into
/// large chunks, short against the commit interval.
const CHUNK_LINGER: Duration = Duration::from_millis(20);

/// What a call to [`KafkaReader::read`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStatus {
    /// Chunks were produced; more may be ready.
    Busy,
    /// Nothing new arrived.
    Idle,
    /// Every partition reached its end (bounded runs only).
    Ended,
}

/// Reads the partitions one worker owns, in chunks of records.
pub struct KafkaReader {
    settings: KafkaSettings,
    consumer: BaseConsumer,
    cursors: BTreeMap<u32, PartitionCursor>,
    chunk_bytes: usize,
    stop: StopAt,
    index: usize,
    peers: usize,
    known_partitions: u32,
    next_discovery: Instant,
    /// Consecutive poll errors, to log an outage once and its end once.
    failing_since: Option<Instant>,
    /// Records taken from the consumer so far, for `--max-rate`.
    records_read: u64,
}

impl KafkaReader {
    /// Assigns `start` (partition -> next offset) to `consumer` (from [`KafkaSettings::consumer`],
    /// not yet assigned). `known_partitions` is the topic's partition count at start; later
    /// partitions are picked up as they appear.
    pub fn open(
        settings: &KafkaSettings,
        consumer: BaseConsumer,
        start: &BTreeMap<u32, u64>,
        stop: StopAt,
        chunk_bytes: usize,
        (index, peers): (usize, usize),
        known_partitions: u32,
    ) -> Result<Self> {
        let mut reader = KafkaReader {
            settings: settings.clone(),
            consumer,
            cursors: BTreeMap::new(),
            chunk_bytes: chunk_bytes.max(1),
            stop,
            index,
            peers,
            known_partitions,
            next_discovery: Instant::now() + PARTITION_DISCOVERY_INTERVAL,
            failing_since: None,
            records_read: 0,
        };
        reader.assign(start)?;
        Ok(reader)
    }

    /// Records taken from the consumer so far.
    pub fn records_read(&self) -> u64 {
        self.records_read
    }

    /// The next offset to read of each partition that has not ended, for the lag metrics.
    pub fn next_offsets(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.cursors
            .iter()
            .filter(|(_, c)| !c.ended)
            .map(|(p, c)| (*p, c.next_offset))
    }

    /// The partitions this reader has handed out chunks of, or will.
    pub fn partitions(&self) -> impl Iterator<Item = u32> + '_ {
        self.cursors.keys().copied()
    }

    fn assign(&mut self, start: &BTreeMap<u32, u64>) -> Result<()> {
        let topic = self.settings.topic.clone();
        let mut list = TopicPartitionList::new();
        for (&partition, &offset) in start {
            let end = match self.stop {
                StopAt::Never => None,
                StopAt::EndAtStart => Some(watermarks(&self.consumer, &topic, partition)?.1),
                StopAt::Timestamp(ms) => Some(offset_for_time(
                    &self.settings,
                    &self.consumer,
                    partition,
                    ms,
                )?),
            };
            let ended = end.is_some_and(|end| offset >= end);
            crate::metrics::add_input(offset, end);
            self.cursors.insert(
                partition,
                PartitionCursor {
                    next_offset: offset,
                    counted_offset: offset,
                    end,
                    next_seq: 0,
                    pending: PendingChunk::default(),
                    ended: false,
                    paused: false,
                },
            );
            if !ended {
                list.add_partition_offset(&topic, partition as i32, Offset::Offset(offset as i64))
                    .context("invalid start offset")?;
            }
        }
        if list.count() > 0 {
            self.consumer
                .incremental_assign(&list)
                .context("cannot assign Kafka partitions")?;
        }
        Ok(())
    }

    /// Polls the consumer and appends to `out` the chunks that filled up, plus, when nothing more
    /// is waiting, what each partition has gathered. A partition that reaches its end gets a last
    /// chunk.
    pub fn read(&mut self, max_records: usize, out: &mut Vec<Chunk>) -> Result<ReadStatus> {
        if self.stop == StopAt::Never && Instant::now() >= self.next_discovery {
            self.discover_partitions()?;
        }
        // Nothing to take (a rate limit) counts as drained: the caller waits before the next read.
        let mut drained = max_records == 0;
        for _ in 0..max_records {
            match self.consumer.poll(Duration::ZERO) {
                None => {
                    drained = true;
                    break;
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    self.skip_to_position(partition as u32);
                }
                Some(Err(e)) => {
                    if self.failing_since.is_none() {
                        tracing::warn!(
                            "Kafka is failing ({e}); librdkafka keeps retrying, and reading \
                             resumes where it stopped"
                        );
                        self.failing_since = Some(Instant::now());
                    }
                    drained = true;
                    break;
                }
                Some(Ok(message)) => {
                    if let Some(since) = self.failing_since.take() {
                        tracing::info!("Kafka is back after {:?}", since.elapsed());
                    }
                    let partition = message.partition() as u32;
                    let offset = message.offset() as u64;
                    let Some(cursor) = self.cursors.get_mut(&partition) else {
                        continue;
                    };
                    if cursor.ended || cursor.paused || offset < cursor.next_offset {
                        continue;
                    }
                    if offset > cursor.next_offset && cursor.pending.offsets.is_empty() {
                        tracing::warn!(
                            partition,
                            "records {}..{offset} are gone from the broker (retention or \
                             compaction) and were never read",
                            cursor.next_offset
                        );
                    }
                    if cursor.end.is_some_and(|end| offset >= end) {
                        cursor.next_offset = cursor.end.expect("checked");
                        continue;
                    }
                    let pending = &mut cursor.pending;
                    let payload = message.payload().unwrap_or_default();
                    if pending.offsets.is_empty() {
                        pending.since = Some(Instant::now());
                    }
                    pending.bytes.extend_from_slice(payload);
                    pending.ends.push(pending.bytes.len() as u32);
                    pending.offsets.push(offset);
                    cursor.next_offset = offset + 1;
                    self.records_read += 1;
                    if pending.bytes.len() >= self.chunk_bytes {
                        out.push(take_chunk(partition, cursor, false));
                    }
                }
            }
        }
        let mut unassign = TopicPartitionList::new();
        for (&partition, cursor) in self.cursors.iter_mut() {
            if cursor.ended {
                continue;
            }
            let at_end = cursor.end.is_some_and(|end| cursor.next_offset >= end);
            let lingered = cursor
                .pending
                .since
                .is_some_and(|t| t.elapsed() >= CHUNK_LINGER);
            if at_end || lingered {
                out.push(take_chunk(partition, cursor, at_end));
            }
            if at_end {
                cursor.ended = true;
                unassign.add_partition(&self.settings.topic, partition as i32);
            }
        }
        if unassign.count() > 0 {
            let _ = self.consumer.incremental_unassign(&unassign);
        }
        if self.cursors.values().all(|c| c.ended) {
            return Ok(ReadStatus::Ended);
        }
        Ok(if drained && out.is_empty() {
            ReadStatus::Idle
        } else {
            ReadStatus::Busy
        })
    }

    /// At the end of a partition, everything readable has been delivered, and the consumer's
    /// position may be past offsets that deliver nothing: transaction markers and aborted
    /// records. Moving on to it lets a bounded run reach its end offset, and a restart skip them.
    fn skip_to_position(&mut self, partition: u32) {
        let Some(cursor) = self.cursors.get_mut(&partition) else {
            return;
        };
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        let position = positions
            .find_partition(&self.settings.topic, partition as i32)
            .map(|p| p.offset());
        if let Some(Offset::Offset(position)) = position {
            let position = cursor
                .end
                .map_or(position as u64, |end| end.min(position as u64));
            cursor.next_offset = cursor.next_offset.max(position);
        }
    }

    /// Watermark alignment: a partition whose watermark is more than `window` ahead of the
    /// slowest partition's (`low`, over every worker) stops being fetched until the others catch
    /// up to within half of it, so that skewed partitions cannot fill the sessionizers with
    /// events the watermark is not ready to apply. Unassigning and reassigning at the next offset
    /// loses nothing: queued records of a paused partition are dropped and fetched again.
    pub fn align(&mut self, watermarks: &HashMap<u32, u64>, low: u64, window: u64) -> Result<()> {
        let topic = self.settings.topic.clone();
        let mut pause = TopicPartitionList::new();
        let mut resume = TopicPartitionList::new();
        for (&partition, cursor) in self.cursors.iter_mut().filter(|(_, c)| !c.ended) {
            let Some(&watermark) = watermarks.get(&partition) else {
                continue;
            };
            if !cursor.paused && watermark > low.saturating_add(window) {
                cursor.paused = true;
                pause.add_partition(&topic, partition as i32);
            } else if cursor.paused && watermark <= low.saturating_add(window / 2) {
                cursor.paused = false;
                resume
                    .add_partition_offset(
                        &topic,
                        partition as i32,
                        Offset::Offset(cursor.next_offset as i64),
                    )
                    .context("invalid offset")?;
            }
        }
        if pause.count() > 0 {
            tracing::debug!(
                partitions = pause.count(),
                "pausing partitions ahead of the watermark"
            );
            self.consumer
                .incremental_unassign(&pause)
                .context("cannot pause Kafka partitions")?;
        }
        if resume.count() > 0 {
            self.consumer
                .incremental_assign(&resume)
                .context("cannot resume Kafka partitions")?;
        }
        Ok(())
    }

    /// Assigns partitions added to the topic since start, from their earliest offset.
    fn discover_partitions(&mut self) -> Result<()> {
        self.next_discovery = Instant::now() + PARTITION_DISCOVERY_INTERVAL;
        let Ok(count) = self
            .settings
            .partition_count(&self.consumer, Duration::from_secs(1))
        else {
            return Ok(());
        };
        if count <= self.known_partitions {
            return Ok(());
        }
        let added: Vec<u32> = (self.known_partitions..count)
            .filter(|p| *p as usize % self.peers == self.index)
            .collect();
        self.known_partitions = count;
        if added.is_empty() {
            return Ok(());
        }
        tracing::info!(
            ?added,
            "new partitions of the topic; reading them from the start"
        );
        let start = resolve_start(
            &self.consumer,
            &self.settings,
            &added,
            &StartOffsets::Earliest,
        )?;
        self.assign(&start)
    }
}

fn take_chunk(partition: u32, cursor: &mut PartitionCursor, last: bool) -> Chunk {
    let pending = std::mem::take(&mut cursor.pending);
    let first_offset = pending
        .offsets
        .first()
        .copied()
        .unwrap_or(cursor.next_offset);
    let chunk = Chunk {
        partition,
        seq: cursor.next_seq,
        byte_offset: first_offset,
        first_line: 0,
        bytes: pending.bytes,
        last,
        end_offset: cursor.next_offset,
        records: Some(super::file::RecordIndex {
            ends: pending.ends,
            offsets: pending.offsets,
        }),
        oversize_line: None,
    };
    cursor.next_seq += 1;
    // Offsets, not records: transaction markers take offsets too, and a bounded run's end is one.
    crate::metrics::input_done(cursor.next_offset.saturating_sub(cursor.counted_offset));
    cursor.counted_offset = cursor.next_offset;
    chunk
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
