//! Reading: each worker reads the partitions it owns in chunks, with bounded read-ahead.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Result;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};

use super::time::{Time, frontier_watermark};
use super::types::{WorkerContext, owns};
use crate::clock::wall_clock_micros;
use crate::config::PipelineConfig;
use crate::failure::stop;
use crate::source::file::{Chunk, ChunkReader};
use crate::source::kafka::{KafkaReader, ReadStatus, StartOffsets, resolve_start};

/// What one worker reads: its files, or its partitions of a Kafka topic.
pub(super) enum Readers {
    Files(Vec<ChunkReader>),
    Kafka(Box<KafkaReader>),
}

impl Readers {
    /// The partitions this worker reads, from their start.
    pub(super) fn partitions(&self) -> Vec<u32> {
        match self {
            Readers::Files(readers) => readers.iter().map(ChunkReader::partition).collect(),
            Readers::Kafka(reader) => reader.partitions().collect(),
        }
    }
}

/// Opens this worker's partitions where the run starts: at the positions of the table's newest
/// snapshot, or where `--start-offsets` says.
pub(super) fn open_readers(context: &WorkerContext, index: usize, peers: usize) -> Result<Readers> {
    let config = &context.config;
    let start = &context.start;
    let Some(kafka) = &config.kafka else {
        let mut readers = Vec::new();
        for (partition, path) in config.inputs.iter().enumerate() {
            let partition = partition as u32;
            let position = start.positions.get(&partition);
            if !owns(partition, index, peers) || position.is_some_and(|p| p.finished) {
                continue;
            }
            let at = position.map_or((0, 1), |p| (p.next_offset, p.next_line));
            let held = position.map_or(0, |p| p.unfinished_line);
            readers.push(
                ChunkReader::open(partition, path, config.chunk_bytes, at)?
                    .with_max_line_bytes(config.max_event_bytes)
                    .with_line_held_before(held),
            );
        }
        return Ok(Readers::Files(readers));
    };
    let settings = &kafka.settings;
    let consumer = settings.reader_consumer()?;
    let count = settings.partition_count(&consumer, Duration::from_secs(30))?;
    let owned: Vec<u32> = (0..count).filter(|p| owns(*p, index, peers)).collect();
    let (positioned, fresh): (Vec<u32>, Vec<u32>) = owned
        .iter()
        .partition(|p| kafka.start.is_none() && start.positions.contains_key(p));
    let from = kafka.start.clone().unwrap_or(StartOffsets::Earliest);
    let mut offsets = resolve_start(&consumer, settings, &fresh, &from)?;
    for partition in positioned {
        offsets.insert(partition, start.positions[&partition].next_offset);
    }
    let reader = KafkaReader::open(
        settings,
        consumer,
        &offsets,
        kafka.stop,
        config.chunk_bytes,
        (index, peers),
        count,
    )?;
    Ok(Readers::Kafka(Box::new(reader)))
}

/// What a reader needs to keep its partitions' watermarks aligned.
pub(super) struct Alignment {
    /// The watermark of each partition this worker stamps.
    pub(super) watermarks: Rc<RefCell<HashMap<u32, u64>>>,
    /// The stampers' output, whose frontier is the lowest watermark over every worker.
    pub(super) low: ProbeHandle<Time>,
    /// What the reader tells its worker's stamper, so that it takes no partition for idle whose
    /// records the reader holds back or has sent on.
    pub(super) reading: Rc<RefCell<Reading>>,
}

/// What a worker's reader has done with each of its partitions, as its stamper needs to know.
#[derive(Debug, Default)]
pub(super) struct Reading {
    /// The partitions paused for watermark alignment.
    pub(super) paused: HashSet<u32>,
    /// The number of chunks sent on so far, by partition: more than a stamper has stamped means
    /// records on their way to it (being parsed or exchanged).
    pub(super) chunks_sent: HashMap<u32, u64>,
    /// When the reader last found each partition caught up with its broker and nothing waiting,
    /// for the partitions it found so in its latest read.
    pub(super) quiet: HashMap<u32, Instant>,
}

/// How often a Kafka reader reports its next offsets for the lag metrics.
const OFFSETS_REPORT_INTERVAL: Duration = Duration::from_millis(500);

/// Records a Kafka reader hands out per call, so that a busy topic cannot starve the worker.
const KAFKA_RECORDS_PER_READ: usize = 50_000;

/// Reads the partitions this worker owns, chunk by chunk, keeping at most `--read-ahead-bytes`
/// ahead of the stampers (`consumed` shows how far they have got).
///
/// A chunk is sent at `(0, t)` for `t` the microsecond it was read at (strictly increasing per
/// worker), and a reader with nothing to send moves its capability on with the clock. Counting
/// chunks instead would make the consumed frontier, a minimum over every worker, wait on the
/// counter of a worker whose partitions are quiet, and stall the busy workers' read-ahead.
pub(super) fn read_chunks<'scope>(
    scope: Scope<'scope, Time>,
    mut readers: Readers,
    config: &PipelineConfig,
    consumed: ProbeHandle<Time>,
    alignment: Alignment,
) -> StreamVec<'scope, Time, Chunk> {
    let max_rate = config.kafka.as_ref().map_or(0, |k| k.max_rate);
    let max_drift = config
        .kafka
        .as_ref()
        .and_then(|k| k.max_watermark_drift)
        .map(|d| d.as_millis() as u64);
    let rate_per_worker = max_rate.div_ceil(scope.peers() as u64);
    let read_ahead_bytes = config.read_ahead_bytes;
    let mut builder = OperatorBuilder::new("ReadChunks".into(), scope);
    let activator = scope.activator_for(builder.operator_info().address);
    let (output, stream) = builder.new_output();
    let mut output = OutputBuilder::<_, CapacityContainerBuilder<Vec<Chunk>>>::from(output);
    builder.build(move |mut capabilities| {
        let mut capability = capabilities.pop();
        let mut next_chunk = 0u64;
        // (time sent, bytes) of the chunks the stampers have not consumed yet.
        let mut in_flight: VecDeque<(u64, usize)> = VecDeque::new();
        let mut in_flight_bytes = 0usize;
        let mut ready = Vec::new();
        let started = Instant::now();
        let telemetry = crate::ops::telemetry();
        let mut offsets_reported = started;
        move |_frontiers| {
            let Some(cap) = capability.as_mut() else {
                return;
            };
            let stamped_up_to = consumed
                .with_frontier(frontier_watermark)
                .unwrap_or(u64::MAX);
            while in_flight.front().is_some_and(|(n, _)| *n < stamped_up_to) {
                in_flight_bytes -= in_flight.pop_front().expect("checked").1;
            }
            let now = wall_clock_micros();
            if in_flight_bytes >= read_ahead_bytes {
                next_chunk = next_chunk.max(now);
                cap.downgrade(&Time::new(0, next_chunk));
                activator.activate_after(Duration::from_millis(1));
                return;
            }
            let status = match &mut readers {
                Readers::Files(files) => read_files(files, &mut ready),
                Readers::Kafka(reader) => {
                    if let Some(drift) = max_drift
                        && let Some(low) = alignment.low.with_frontier(frontier_watermark)
                    {
                        let watermarks = alignment.watermarks.borrow();
                        reader
                            .align(&watermarks, low, drift)
                            .unwrap_or_else(|e| stop(e));
                        let paused = &mut alignment.reading.borrow_mut().paused;
                        paused.clear();
                        paused.extend(reader.paused());
                    }
                    let budget = if rate_per_worker == 0 {
                        KAFKA_RECORDS_PER_READ as u64
                    } else {
                        let allowed = started.elapsed().as_secs_f64() * rate_per_worker as f64;
                        (allowed as u64).saturating_sub(reader.records_read())
                    };
                    let status = reader.read(
                        budget.min(KAFKA_RECORDS_PER_READ as u64) as usize,
                        &mut ready,
                    );
                    let quiet = &mut alignment.reading.borrow_mut().quiet;
                    quiet.clear();
                    let looked = Instant::now();
                    quiet.extend(reader.quiet().map(|partition| (partition, looked)));
                    if let Some(telemetry) = telemetry
                        && offsets_reported.elapsed() >= OFFSETS_REPORT_INTERVAL
                    {
                        telemetry.reading(reader.next_offsets());
                        offsets_reported = Instant::now();
                    }
                    status
                }
            };
            let status = status.unwrap_or_else(|e| stop(e.context("reading input failed")));
            let mut output = output.activate();
            let mut reading = alignment.reading.borrow_mut();
            for chunk in ready.drain(..) {
                reading.chunks_sent.insert(chunk.partition, chunk.seq + 1);
                let chunk_bytes = chunk.bytes.len();
                let sent_at = next_chunk.max(now);
                output
                    .session(&cap.delayed(&Time::new(0, sent_at)))
                    .give(chunk);
                in_flight.push_back((sent_at, chunk_bytes));
                in_flight_bytes += chunk_bytes;
                next_chunk = sent_at + 1;
            }
            next_chunk = next_chunk.max(now);
            match status {
                ReadStatus::Ended => capability = None,
                ReadStatus::Busy => {
                    cap.downgrade(&Time::new(0, next_chunk));
                    activator.activate();
                }
                ReadStatus::Idle => {
                    cap.downgrade(&Time::new(0, next_chunk));
                    activator.activate_after(Duration::from_millis(2));
                }
            }
        }
    });
    stream
}

/// Reads the next chunk of every file that has not ended.
fn read_files(readers: &mut Vec<ChunkReader>, out: &mut Vec<Chunk>) -> Result<ReadStatus> {
    for reader in readers.iter_mut() {
        if let Some(chunk) = reader.next_chunk()? {
            out.push(chunk);
        }
    }
    readers.retain(|r| !r.done());
    Ok(if readers.is_empty() {
        ReadStatus::Ended
    } else {
        ReadStatus::Busy
    })
}
