//! Reading the partitions one worker owns, in chunks of records, with their end for bounded runs.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::batch::{ConsumerQueue, Record, cached_high_watermark};
use super::identity::{Resume, TopicIdentity, check_resume, records_gone};
use super::start::{StartOffsets, offset_for_time, resolve_start};
use super::{KafkaSettings, offset_bounds};
use crate::source::file::Chunk;

/// How often a reader looks for partitions added to the topic.
const PARTITION_DISCOVERY_INTERVAL: Duration = Duration::from_secs(30);

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
    /// The bytes and records of the partition's last chunk, to size the next one by.
    last_chunk: (usize, usize),
    ended: bool,
    /// Unassigned while its watermark runs too far ahead of the slowest partition's.
    paused: bool,
    /// `next_offset` when the current read began.
    read_from: u64,
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

impl PendingChunk {
    /// Appends a record. The first record of a chunk allocates room for twice what the last
    /// chunk held (up to `chunk_bytes`), so that a busy partition's chunks are allocated once
    /// rather than grown, and copied, record by record.
    fn push(
        &mut self,
        payload: &[u8],
        offset: u64,
        last_chunk: (usize, usize),
        chunk_bytes: usize,
    ) {
        if self.offsets.is_empty() {
            self.since = Some(Instant::now());
            let (bytes, records) = last_chunk;
            self.bytes
                .reserve((2 * bytes).min(chunk_bytes).max(payload.len()));
            self.ends.reserve(2 * records);
            self.offsets.reserve(2 * records);
        }
        self.bytes.extend_from_slice(payload);
        self.ends.push(self.bytes.len() as u32);
        self.offsets.push(offset);
    }
}

/// Records taken from librdkafka's queue in one call.
const RECORDS_PER_BATCH: usize = 1024;

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
    /// The consumer's queue, read a batch at a time; declared before `consumer` so that it is
    /// dropped first.
    queue: ConsumerQueue,
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
    /// The topic, for librdkafka's calls.
    topic: CString,
    /// The partitions the last read found caught up with the broker and without records.
    quiet: Vec<u32>,
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
        let queue = ConsumerQueue::of(&consumer)
            .context("the Kafka consumer has no consumer queue (no group id)")?;
        let mut reader = KafkaReader {
            settings: settings.clone(),
            queue,
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
            topic: CString::new(settings.topic.as_str()).context("a topic name without NUL")?,
            quiet: Vec::new(),
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
                StopAt::EndAtStart => Some(offset_bounds(&self.consumer, &topic, partition)?.1),
                StopAt::Timestamp(ms) => Some(offset_for_time(
                    &self.settings,
                    &self.consumer,
                    partition,
                    ms,
                )?),
            };
            let ended = end.is_some_and(|end| offset >= end);
            crate::ops::progress::add_input(offset, end);
            self.cursors.insert(
                partition,
                PartitionCursor {
                    next_offset: offset,
                    counted_offset: offset,
                    end,
                    next_seq: 0,
                    pending: PendingChunk::default(),
                    last_chunk: (0, 0),
                    ended: false,
                    paused: false,
                    read_from: offset,
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
        for cursor in self.cursors.values_mut() {
            cursor.read_from = cursor.next_offset;
        }
        // Nothing to take (a rate limit) counts as drained: the caller waits before the next read.
        let mut drained = max_records == 0;
        let mut left = max_records;
        // The first record comes by `poll`, which also returns client-wide errors (every broker
        // down) that a batch would only log; the others come a batch at a time.
        if left > 0 {
            match self.consumer.poll(Duration::ZERO) {
                None => drained = true,
                Some(Ok(message)) => {
                    // One record a read: a copy of it frees the consumer for the reader's use.
                    let message = message.detach();
                    let payload = message.payload().unwrap_or_default();
                    let (partition, offset) = (message.partition(), message.offset());
                    self.take_record(partition as u32, offset as u64, payload, out);
                    left -= 1;
                }
                Some(Err(error)) => drained = self.on_error(error)?,
            }
        }
        while left > 0 && !drained {
            let wanted = left.min(RECORDS_PER_BATCH);
            let batch = self.queue.take(wanted);
            left -= batch.len();
            drained = batch.len() < wanted;
            for record in batch.records() {
                match record {
                    Record::Message {
                        partition,
                        offset,
                        payload,
                    } => self.take_record(partition, offset, payload, out),
                    Record::End { partition, offset } => self.skip_to(partition, offset),
                    Record::Error(error) => drained |= self.on_error(error)?,
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
        // A partition is quiet when it delivered nothing and is caught up with the broker's latest
        // fetch response: no record of it can be waiting in the queue, whatever the other
        // partitions have there. Before a first response, only a read that emptied the queue
        // can tell.
        let emptied_queue = max_records > 0 && drained;
        self.quiet.clear();
        for (&partition, cursor) in &self.cursors {
            let silent = !cursor.ended
                && !cursor.paused
                && cursor.next_offset == cursor.read_from
                && cursor.pending.offsets.is_empty();
            if silent
                && cached_high_watermark(&self.consumer, &self.topic, partition)
                    .map_or(emptied_queue, |high| cursor.next_offset >= high)
            {
                self.quiet.push(partition);
            }
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

    /// Handles an error `poll` or a batch returned; returns whether it is an outage, after which
    /// the caller waits before reading again. An outage is logged once, when it starts;
    /// [`Self::take_record`] logs its end.
    fn on_error(&mut self, error: KafkaError) -> Result<bool> {
        match error {
            KafkaError::PartitionEOF(partition) => self.skip_to_position(partition as u32),
            KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset) => {
                self.offsets_out_of_range()?
            }
            error => {
                if self.failing_since.is_none() {
                    tracing::warn!(
                        "Kafka is failing ({error}); librdkafka keeps retrying, and reading resumes \
                 where it stopped"
                    );
                    self.failing_since = Some(Instant::now());
                }
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Adds a record to its partition's chunk, unless the partition is not read (any more) or the
    /// record was handed out already.
    fn take_record(&mut self, partition: u32, offset: u64, payload: &[u8], out: &mut Vec<Chunk>) {
        if let Some(since) = self.failing_since.take() {
            tracing::info!("Kafka is back after {:?}", since.elapsed());
        }
        let Some(cursor) = self.cursors.get_mut(&partition) else {
            return;
        };
        if cursor.ended || cursor.paused || offset < cursor.next_offset {
            return;
        }
        if cursor.end.is_some_and(|end| offset >= end) {
            cursor.next_offset = cursor.end.expect("checked");
            return;
        }
        // A record that would take the chunk past its size starts the next one: the chunk's room
        // was allocated up front.
        let taken = cursor.pending.bytes.len();
        if taken > 0 && taken + payload.len() > self.chunk_bytes {
            out.push(take_chunk(partition, cursor, false));
        }
        let last_chunk = cursor.last_chunk;
        cursor
            .pending
            .push(payload, offset, last_chunk, self.chunk_bytes);
        cursor.next_offset = offset + 1;
        self.records_read += 1;
        if cursor.pending.bytes.len() >= self.chunk_bytes {
            out.push(take_chunk(partition, cursor, false));
        }
    }

    /// At the end of a partition, everything readable has been delivered, and the consumer's
    /// position may be past offsets that deliver nothing: transaction markers and aborted
    /// records. Moving on to it lets a bounded run reach its end offset, and a restart skip them.
    /// For `poll`'s end of a partition, whose position only records (and markers) move; a
    /// batch's end carries its offset ([`Record::End`]).
    fn skip_to_position(&mut self, partition: u32) {
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        let position = positions
            .find_partition(&self.settings.topic, partition as i32)
            .map(|p| p.offset());
        if let Some(Offset::Offset(position)) = position {
            self.skip_to(partition, position as u64);
        }
    }

    /// The partition has nothing before `offset` left to deliver.
    fn skip_to(&mut self, partition: u32, offset: u64) {
        let Some(cursor) = self.cursors.get_mut(&partition) else {
            return;
        };
        let offset = cursor.end.map_or(offset, |end| end.min(offset));
        cursor.next_offset = cursor.next_offset.max(offset);
    }

    /// librdkafka found a partition's next offset outside the offsets the broker keeps (with
    /// `auto.offset.reset=error`; the error does not say which partition). Below the first kept
    /// offset, retention deleted records before they were read: logged, and reading goes on from
    /// there. Past the end, the partition went backwards (recreated, or the broker replaced):
    /// resuming anywhere would skip or re-read records, so the run stops.
    fn offsets_out_of_range(&mut self) -> Result<()> {
        let topic = self.settings.topic.clone();
        let mut moved = TopicPartitionList::new();
        for (&partition, cursor) in self.cursors.iter_mut() {
            if cursor.ended || cursor.paused {
                continue;
            }
            let bounds = offset_bounds(&self.consumer, &topic, partition)?;
            let unknown = TopicIdentity::default();
            let resume = check_resume(
                &topic,
                partition,
                cursor.next_offset,
                None,
                &unknown,
                bounds,
            )?;
            if let Resume::AfterGap { recorded, low } = resume {
                records_gone(partition, recorded, low);
                cursor.next_offset = low;
                moved
                    .add_partition_offset(&topic, partition as i32, Offset::Offset(low as i64))
                    .context("invalid offset")?;
            }
        }
        if moved.count() > 0 {
            self.consumer
                .incremental_unassign(&moved)
                .context("cannot reassign Kafka partitions")?;
            self.consumer
                .incremental_assign(&moved)
                .context("cannot reassign Kafka partitions")?;
        }
        Ok(())
    }

    /// The partitions paused for watermark alignment ([`KafkaReader::align`]).
    /// The partitions the last [`read`](Self::read) found caught up with their broker (as of its
    /// latest fetch) and without records.
    pub fn quiet(&self) -> impl Iterator<Item = u32> + '_ {
        self.quiet.iter().copied()
    }

    pub fn paused(&self) -> impl Iterator<Item = u32> + '_ {
        self.cursors
            .iter()
            .filter(|(_, c)| c.paused && !c.ended)
            .map(|(p, _)| *p)
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
    cursor.last_chunk = (pending.bytes.len(), pending.offsets.len());
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
        records: Some(crate::source::file::RecordIndex {
            ends: pending.ends,
            offsets: pending.offsets,
        }),
        oversize_line: None,
        unfinished_line: 0,
    };
    cursor.next_seq += 1;
    // Offsets, not records: transaction markers take offsets too, and a bounded run's end is one.
    crate::ops::progress::input_done(cursor.next_offset.saturating_sub(cursor.counted_offset));
    cursor.counted_offset = cursor.next_offset;
    chunk
}
