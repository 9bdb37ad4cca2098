//! The timely operators of the pipeline, and their assembly into one dataflow.
//!
//! ```text
//! read_chunks ─exchange(chunk)─► parse ─exchange(partition owner)─► stamp ─┬─ on time ─exchange(bucket)─► sessionize ─┬─► write(sessions) ─┐
//!                                                                          │                                        └─ checkpoint parts ─┤
//!                                                                          ├─ quarantined ──────────────────────────────► write(quarantine) ─┤
//!                                                                          ├─ late ─────────────────────────────────────► write(late) ──────┤
//!                                                                          └─ positions ─broadcast─► sessionize, commit ◄──exchange(0)──────┘
//! ```
//!
//! Timestamps are `Product<epoch, watermark_ms>`. [`stamp`] owns each partition's order: it sees
//! the chunks of a partition in sequence, classifies events against the partition's watermark
//! (its largest event time so far minus the allowed lateness), and sends each chunk's records at
//! `(epoch, the watermark before the chunk, rounded down to a tick)`: never later than a record's
//! own watermark, which is at most its event time. So when the frontier passes watermark `F`, every
//! on-time event before `F` has arrived, and [`sessionize`] can apply events in exact event-time
//! order. Every commit interval the stampers move to the next epoch and wait until the committer
//! has committed the previous one; when the frontier passes an epoch, every sessionizer writes its
//! checkpoint and the committer commits the epoch (see [`crate::checkpoint`] for the protocol).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Result;
use iceberg::table::Table;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{Operator, OutputBuilder, OutputBuilderSession};
use timely::dataflow::operators::vec::{Broadcast, Map};
use timely::dataflow::operators::{Capability, CapabilitySet, Concat, Probe};
use timely::dataflow::{ProbeHandle, Scope, StreamVec};
use timely::order::PartialOrder;
use timely::progress::Antichain;
use timely::progress::Timestamp;
use timely::progress::frontier::AntichainRef;
use timely::progress::timestamp::{PathSummary, Refines};

use crate::checkpoint::{
    CheckpointPart, CheckpointRef, CheckpointStore, SideFiles, SourceCounts, SourcePosition,
    StartState, sessions_properties, side_properties,
};
use crate::config::{PipelineConfig, wall_clock_ms};
use crate::metrics;
use crate::rules::{ClosedSession, Sessionizer};
use crate::sink::iceberg::{TableWriter, Warehouse};
use crate::sink::tables::{self, LateEvent, QuarantinedLine, TableKind};
use crate::source::file::{Chunk, ChunkReader};
use crate::source::kafka::{KafkaReader, ReadStatus, StartOffsets, StopAt, resolve_start};

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

/// Input bytes a worker's readers may have in flight ahead of the stampers, shared by the
/// partitions it reads. A deep read-ahead keeps every worker parsing while the owner stamps;
/// 64 MiB measured 1.5x the throughput of 8 MiB (docs/PERFORMANCE.md).
const READ_AHEAD_BYTES: usize = 64 << 20;
/// Rows buffered per table before they are encoded into an Arrow batch.
const WRITE_BATCH_ROWS: usize = 16 * 1024;

/// An on-time event, routed to the worker that owns its user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEvent {
    /// `bucket(user_id)`, computed where the event is parsed, off the stamper's path.
    pub bucket: u32,
    pub user_id: String,
    pub event_id: String,
    pub page_name: Option<String>,
    pub event_time_ms: u64,
}

/// A chunk after parsing: each non-blank line's position and outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParsedChunk {
    pub chunk: Chunk,
    pub lines: Vec<ParsedLine>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParsedLine {
    /// Byte range of the line within the chunk.
    pub start: usize,
    pub end: usize,
    /// Byte offset of a line in its file, or a Kafka record's offset.
    pub offset: u64,
    pub line_number: u64,
    pub event: Result<SessionEvent, String>,
}

/// What the committer gathers for an epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CommitPart {
    Files {
        table: TableKind,
        files: Vec<String>,
        rows: u64,
        /// For sessions: the events they hold.
        events: u64,
    },
    Position(SourcePosition),
    Checkpoint(CheckpointPart),
}

/// Totals of a run, as committed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTotals {
    pub epochs: u64,
    pub counts: SourceCounts,
    pub sessions: u64,
    pub session_events: u64,
    pub duplicates: u64,
    pub watermark_ms: u64,
}

/// What one worker needs from outside the dataflow.
pub struct WorkerContext {
    pub config: Arc<PipelineConfig>,
    pub runtime: Rc<tokio::runtime::Runtime>,
    pub warehouse: Rc<Warehouse>,
    pub tables: HashMap<TableKind, Table>,
    /// Unique per run; names data files and checkpoints, and marks this run's commits.
    pub run_id: String,
    pub start: Arc<StartState>,
    pub store: Arc<CheckpointStore>,
}

/// Builds the pipeline in `scope`; returns a probe that is done when everything is committed,
/// and the totals the committer (worker 0) records.
pub fn build_pipeline(
    scope: Scope<'_, Time>,
    context: &WorkerContext,
) -> Result<(ProbeHandle<Time>, Rc<RefCell<RunTotals>>)> {
    let config = &context.config;
    let committed = ProbeHandle::new();
    let consumed = ProbeHandle::new();
    let totals = Rc::new(RefCell::new(RunTotals::default()));

    // Each stamped partition's watermark, and the lowest over every worker: the readers pause
    // partitions that run too far ahead.
    let watermarks = Rc::new(RefCell::new(HashMap::new()));
    let stamped_low = ProbeHandle::new();
    let readers = open_readers(context, scope.index(), scope.peers())?;
    let partitions = readers.partitions();
    let alignment = Alignment {
        watermarks: Rc::clone(&watermarks),
        low: stamped_low.clone(),
    };
    let chunks = read_chunks(scope, readers, config, consumed.clone(), alignment);
    let parsed = parse(chunks, config);
    let (stamped, consumed_marker) =
        stamp(parsed, context, &partitions, committed.clone(), watermarks);
    consumed_marker.probe_with(&consumed);

    let Stamped {
        on_time,
        quarantined,
        late,
        positions,
    } = stamped;
    let on_time = on_time.probe_with(&stamped_low);
    let (sessions, checkpoints) = sessionize(on_time, positions.clone().broadcast(), context)?;
    let session_files = write_table(sessions, TableKind::Sessions, context, {
        move |schema, rows: &[ClosedSession], _epoch| tables::sessions_batch(schema, rows)
    });
    let names = Arc::clone(config);
    let quarantine_files = write_table(quarantined, TableKind::Quarantine, context, {
        move |schema, rows: &[QuarantinedLine], epoch| {
            tables::quarantine_batch(schema, rows, epoch, &|p| names.source_name(p).to_string())
        }
    });
    let names = Arc::clone(config);
    let late_files = write_table(late, TableKind::LateEvents, context, {
        move |schema, rows: &[LateEvent], epoch| {
            tables::late_events_batch(schema, rows, epoch, &|p| names.source_name(p).to_string())
        }
    });
    let parts = session_files
        .concat(quarantine_files)
        .concat(late_files)
        .concat(positions.map(CommitPart::Position))
        .concat(checkpoints);
    commit(parts, context, Rc::clone(&totals)).probe_with(&committed);
    Ok((committed, totals))
}

/// The owner of partition `p` is worker `p % peers`: it reads it and stamps it.
fn owns(partition: u32, index: usize, peers: usize) -> bool {
    partition as usize % peers == index
}

/// What one worker reads: its files, or its partitions of a Kafka topic.
enum Readers {
    Files(Vec<ChunkReader>),
    Kafka(Box<KafkaReader>),
}

impl Readers {
    /// The partitions this worker reads, from their start.
    fn partitions(&self) -> Vec<u32> {
        match self {
            Readers::Files(readers) => readers.iter().map(ChunkReader::partition).collect(),
            Readers::Kafka(reader) => reader.partitions().collect(),
        }
    }
}

/// Opens this worker's partitions where the run starts: at the positions of the table's newest
/// snapshot, or where `--start-offsets` says.
fn open_readers(context: &WorkerContext, index: usize, peers: usize) -> Result<Readers> {
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
            readers.push(ChunkReader::open(partition, path, config.chunk_bytes, at)?);
        }
        return Ok(Readers::Files(readers));
    };
    let settings = &kafka.settings;
    let consumer = settings.consumer()?;
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
struct Alignment {
    /// The watermark of each partition this worker stamps.
    watermarks: Rc<RefCell<HashMap<u32, u64>>>,
    /// The stampers' output, whose frontier is the lowest watermark over every worker.
    low: ProbeHandle<Time>,
}

/// Records a Kafka reader hands out per call, so that a busy topic cannot starve the worker.
const KAFKA_RECORDS_PER_READ: usize = 50_000;

/// Reads the partitions this worker owns, chunk by chunk, at `(0, n)` for its `n`-th chunk,
/// keeping at most [`READ_AHEAD_BYTES`] ahead of the stampers (`consumed` shows how far they have
/// got).
fn read_chunks<'scope>(
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
    let mut builder = OperatorBuilder::new("ReadChunks".into(), scope);
    let activator = scope.activator_for(builder.operator_info().address);
    let (output, stream) = builder.new_output();
    let mut output = OutputBuilder::<_, CapacityContainerBuilder<Vec<Chunk>>>::from(output);
    builder.build(move |mut capabilities| {
        let mut capability = capabilities.pop();
        let mut next_chunk = 0u64;
        // (chunk number, bytes) of the chunks the stampers have not consumed yet.
        let mut in_flight: VecDeque<(u64, usize)> = VecDeque::new();
        let mut in_flight_bytes = 0usize;
        let mut ready = Vec::new();
        let started = Instant::now();
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
            if in_flight_bytes >= READ_AHEAD_BYTES {
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
                    }
                    let budget = if rate_per_worker == 0 {
                        KAFKA_RECORDS_PER_READ as u64
                    } else {
                        let allowed = started.elapsed().as_secs_f64() * rate_per_worker as f64;
                        (allowed as u64).saturating_sub(reader.records_read())
                    };
                    reader.read(
                        budget.min(KAFKA_RECORDS_PER_READ as u64) as usize,
                        &mut ready,
                    )
                }
            };
            let status = status.unwrap_or_else(|e| stop(e.context("reading input failed")));
            let mut output = output.activate();
            for chunk in ready.drain(..) {
                let chunk_bytes = chunk.bytes.len();
                output
                    .session(&cap.delayed(&Time::new(0, next_chunk)))
                    .give(chunk);
                in_flight.push_back((next_chunk, chunk_bytes));
                in_flight_bytes += chunk_bytes;
                next_chunk += 1;
            }
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

/// Parses chunks on every worker (chunks are dealt out by sequence number).
fn parse<'scope>(
    chunks: StreamVec<'scope, Time, Chunk>,
    config: &PipelineConfig,
) -> StreamVec<'scope, Time, ParsedChunk> {
    let config = config.clone();
    let buckets = config.buckets;
    let peers = chunks.scope().peers();
    chunks.unary(
        Exchange::new(move |c: &Chunk| parser_of(c.partition, c.seq, peers)),
        "Parse",
        move |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let validator = config.validator();
                    let mut session = output.session(&cap);
                    for chunk in data.drain(..) {
                        let lines = chunk
                            .records()
                            .map(|record| ParsedLine {
                                start: record.start,
                                end: record.start + record.bytes.len(),
                                offset: record.offset,
                                line_number: record.line_number,
                                event: validator
                                    .parse(record.bytes)
                                    .map(|e| SessionEvent {
                                        bucket: user_bucket(&e.user_id, buckets),
                                        user_id: e.user_id.into_owned(),
                                        event_id: e.event_id.into_owned(),
                                        page_name: e.page_name.map(|p| p.into_owned()),
                                        event_time_ms: e.event_time_ms,
                                    })
                                    .map_err(|r| r.0),
                            })
                            .collect();
                        session.give(ParsedChunk { chunk, lines });
                    }
                });
            }
        },
    )
}

/// The four record streams a stamper sends, each under its own capabilities.
pub struct Stamped<'scope> {
    pub on_time: StreamVec<'scope, Time, SessionEvent>,
    pub quarantined: StreamVec<'scope, Time, QuarantinedLine>,
    pub late: StreamVec<'scope, Time, LateEvent>,
    pub positions: StreamVec<'scope, Time, SourcePosition>,
}

type Out<D> = OutputBuilder<Time, CapacityContainerBuilder<Vec<D>>>;
type OutSession<'a, D> = OutputBuilderSession<'a, Time, CapacityContainerBuilder<Vec<D>>>;

/// A partition's capabilities for the four outputs, always at the same time.
struct OutputCaps([Capability<Time>; 4]);

impl OutputCaps {
    fn time(&self) -> Time {
        *self.0[0].time()
    }

    fn downgrade(&mut self, time: Time) {
        for cap in &mut self.0 {
            cap.downgrade(&time);
        }
    }
}

/// The stamper's outputs, activated for one invocation.
struct StampOutputs<'a> {
    on_time: OutSession<'a, SessionEvent>,
    quarantined: OutSession<'a, QuarantinedLine>,
    late: OutSession<'a, LateEvent>,
    positions: OutSession<'a, SourcePosition>,
}

/// The worker that parses chunk `seq` of `partition`. The partition's owner also reads and stamps
/// it, so it parses one chunk in `2 * peers - 1` and every other worker two.
fn parser_of(partition: u32, seq: u64, peers: usize) -> u64 {
    let peers = peers as u64;
    let owner = u64::from(partition) % peers;
    match seq % (2 * peers - 1) {
        0 => owner,
        slot => (owner + 1 + (slot - 1) / 2) % peers,
    }
}

/// Per-partition state of a stamper.
struct PartitionStamper {
    partition: u32,
    /// Chunks that arrived ahead of their turn.
    waiting: BTreeMap<u64, ParsedChunk>,
    next_seq: u64,
    position: SourcePosition,
    capabilities: Option<OutputCaps>,
    /// When the partition last delivered a record, for `--idle-timeout`.
    last_record: Instant,
}

impl PartitionStamper {
    /// A partition starting at `position`, stamping under `capabilities`.
    fn new(position: SourcePosition, capabilities: OutputCaps) -> Self {
        PartitionStamper {
            partition: position.partition,
            waiting: BTreeMap::new(),
            next_seq: 0,
            position,
            capabilities: Some(capabilities),
            last_record: Instant::now(),
        }
    }
}

/// Restores each partition's order, classifies its lines against its watermark and stamps them
/// with `(epoch, watermark tick)`. A fifth output carries no data: its frontier shows which chunks
/// the stampers have consumed, for the readers' back-pressure.
fn stamp<'scope>(
    parsed: StreamVec<'scope, Time, ParsedChunk>,
    context: &WorkerContext,
    partitions: &[u32],
    committed: ProbeHandle<Time>,
    watermarks: Rc<RefCell<HashMap<u32, u64>>>,
) -> (Stamped<'scope>, StreamVec<'scope, Time, ()>) {
    let scope = parsed.scope();
    let config = &context.config;
    let mut builder = OperatorBuilder::new("Stamp".into(), scope);
    let activator = scope.activator_for(builder.operator_info().address);
    let mut input = builder.new_input_connection(
        parsed,
        Exchange::new(|p: &ParsedChunk| u64::from(p.chunk.partition)),
        [],
    );
    // The record outputs are not connected to the input: their timestamps come from watermarks.
    let disconnected = || [(0, Antichain::new())];
    let (on_time_out, on_time) = builder.new_output_connection(disconnected());
    let (quarantined_out, quarantined) = builder.new_output_connection(disconnected());
    let (late_out, late) = builder.new_output_connection(disconnected());
    let (positions_out, positions) = builder.new_output_connection(disconnected());
    let (_consumed_out, consumed) = builder
        .new_output_connection::<Vec<()>, _>([(0, Antichain::from_elem(Default::default()))]);
    let mut on_time_out: Out<SessionEvent> = OutputBuilder::from(on_time_out);
    let mut quarantined_out: Out<QuarantinedLine> = OutputBuilder::from(quarantined_out);
    let mut late_out: Out<LateEvent> = OutputBuilder::from(late_out);
    let mut positions_out: Out<SourcePosition> = OutputBuilder::from(positions_out);

    let lateness = config.allowed_lateness_ms;
    let tick = config.watermark_tick_ms.max(1);
    let interval = config.commit_interval;
    let max_epoch_records = config.max_epoch_records.max(1);
    // Only a stream that never ends has idle partitions: a bounded run waits for every record.
    let idle_timeout = config
        .kafka
        .as_ref()
        .filter(|k| k.stop == StopAt::Never)
        .map(|k| k.idle_timeout);
    let start = Arc::clone(&context.start);
    let partitions = partitions.to_vec();

    builder.build(move |mut capabilities| {
        capabilities.truncate(4);
        let initial: [Capability<Time>; 4] = capabilities
            .try_into()
            .expect("a capability for each record output");
        let mut stampers: Vec<PartitionStamper> =
            partitions
                .iter()
                .map(|&partition| {
                    let position = start.positions.get(&partition).cloned().unwrap_or_else(|| {
                        SourcePosition {
                            partition,
                            next_line: 1,
                            watermark_ms: start.watermark_ms,
                            ..SourcePosition::default()
                        }
                    });
                    let mut caps = OutputCaps(initial.clone());
                    caps.downgrade(Time::new(start.epoch, position.watermark_ms / tick * tick));
                    PartitionStamper::new(position, caps)
                })
                .collect();
        drop(initial);
        let mut epoch = start.epoch;
        let mut epoch_records = 0u64;
        let mut next_commit = Instant::now() + interval;
        move |_frontiers| {
            // After an epoch ends, nothing more is stamped until it is committed, so that every
            // epoch is a consistent cut of all partitions.
            let draining = epoch > start.epoch
                && committed.with_frontier(|f| f.iter().any(|t| t.epoch < epoch));
            if draining {
                activator.activate_after(Duration::from_millis(1));
                return;
            }
            input.for_each(|_cap, data| {
                for chunk in data.drain(..) {
                    let partition = chunk.chunk.partition;
                    if !stampers.iter().any(|s| s.partition == partition) {
                        stampers.push(new_partition(partition, &stampers));
                    }
                    let stamper = stampers
                        .iter_mut()
                        .find(|s| s.partition == partition)
                        .expect("added above");
                    stamper.waiting.insert(chunk.chunk.seq, chunk);
                }
            });
            let mut outputs = StampOutputs {
                on_time: on_time_out.activate(),
                quarantined: quarantined_out.activate(),
                late: late_out.activate(),
                positions: positions_out.activate(),
            };
            for stamper in stampers.iter_mut() {
                while let Some(chunk) = stamper.waiting.remove(&stamper.next_seq) {
                    stamper.next_seq += 1;
                    if !chunk.lines.is_empty() {
                        stamper.last_record = Instant::now();
                    }
                    epoch_records += chunk.lines.len() as u64;
                    stamp_chunk(stamper, chunk, epoch, lateness, tick, &mut outputs);
                }
                if let Some(timeout) = idle_timeout
                    && stamper.last_record.elapsed() >= timeout
                {
                    follow_wall_clock(stamper, timeout, lateness, tick);
                }
                watermarks
                    .borrow_mut()
                    .insert(stamper.partition, stamper.position.watermark_ms);
            }
            let open = stampers.iter().any(|s| s.capabilities.is_some());
            if open && (Instant::now() >= next_commit || epoch_records >= max_epoch_records) {
                for stamper in stampers.iter_mut() {
                    if let Some(caps) = stamper.capabilities.as_mut() {
                        let report = SourcePosition {
                            counts: std::mem::take(&mut stamper.position.counts),
                            ..stamper.position.clone()
                        };
                        outputs.positions.session(&caps.0[3]).give(report);
                        caps.downgrade(Time::new(epoch + 1, caps.time().watermark));
                    }
                }
                epoch += 1;
                epoch_records = 0;
                next_commit = Instant::now() + interval;
                activator.activate();
            } else if open {
                let mut wake = next_commit.saturating_duration_since(Instant::now());
                if idle_timeout.is_some() {
                    wake = wake.min(IDLE_CHECK_INTERVAL);
                }
                activator.activate_after(wake);
            }
        }
    });
    let stamped = Stamped {
        on_time,
        quarantined,
        late,
        positions,
    };
    (stamped, consumed)
}

/// How often a stamper checks for idle partitions.
const IDLE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A partition that appeared in the topic while running starts at the watermark of a partition
/// this stamper already has, so that it neither holds the others back nor lets late data in.
fn new_partition(partition: u32, stampers: &[PartitionStamper]) -> PartitionStamper {
    let Some(template) = stampers.iter().find_map(|s| s.capabilities.as_ref()) else {
        stop(anyhow::anyhow!(
            "partition {partition} appeared, but this worker has no open partition to stamp it \
             alongside; restart the pipeline to read it"
        ));
    };
    let caps = OutputCaps(template.0.clone());
    let position = SourcePosition {
        partition,
        watermark_ms: caps.time().watermark,
        ..SourcePosition::default()
    };
    PartitionStamper::new(position, caps)
}

/// An idle partition stops holding the watermark back: its watermark follows the wall clock,
/// `now - idle timeout - allowed lateness`, as a live source's would have had it kept sending.
/// Records it delivers later are classified against that watermark.
fn follow_wall_clock(stamper: &mut PartitionStamper, timeout: Duration, lateness: u64, tick: u64) {
    let Some(caps) = stamper.capabilities.as_mut() else {
        return;
    };
    let wall = wall_clock_ms()
        .saturating_sub(timeout.as_millis() as u64)
        .saturating_sub(lateness);
    if wall > stamper.position.watermark_ms {
        stamper.position.watermark_ms = wall;
        let tick_time = wall / tick * tick;
        if tick_time > caps.time().watermark {
            caps.downgrade(Time::new(caps.time().epoch, tick_time));
        }
    }
}

/// Record buffers of a chunk, sent each time the partition's watermark tick moves on.
#[derive(Default)]
struct StampBuffers {
    on_time: Vec<SessionEvent>,
    quarantined: Vec<QuarantinedLine>,
    late: Vec<LateEvent>,
}

impl StampBuffers {
    fn send(&mut self, caps: &OutputCaps, outputs: &mut StampOutputs<'_>) {
        if !self.on_time.is_empty() {
            outputs
                .on_time
                .session(&caps.0[0])
                .give_iterator(self.on_time.drain(..));
        }
        if !self.quarantined.is_empty() {
            outputs
                .quarantined
                .session(&caps.0[1])
                .give_iterator(self.quarantined.drain(..));
        }
        if !self.late.is_empty() {
            outputs
                .late
                .session(&caps.0[2])
                .give_iterator(self.late.drain(..));
        }
    }
}

fn stamp_chunk(
    stamper: &mut PartitionStamper,
    parsed: ParsedChunk,
    epoch: u64,
    lateness: u64,
    tick: u64,
    outputs: &mut StampOutputs<'_>,
) {
    let caps = stamper
        .capabilities
        .as_mut()
        .expect("no chunk follows the last one");
    let chunk = &parsed.chunk;
    let position = &mut stamper.position;
    let mut buffers = StampBuffers::default();
    metrics::LINES_READ.fetch_add(parsed.lines.len() as u64, Relaxed);
    for line in parsed.lines {
        let raw = &chunk.bytes[line.start..line.end];
        let offset = line.offset;
        position.counts.lines += 1;
        match line.event {
            Err(reason) => {
                position.counts.quarantined += 1;
                buffers.quarantined.push(QuarantinedLine {
                    raw: raw.to_vec(),
                    reason,
                    partition: stamper.partition,
                    offset,
                    line_number: line.line_number,
                });
            }
            Ok(event) if event.event_time_ms < position.watermark_ms => {
                position.counts.late += 1;
                buffers.late.push(LateEvent {
                    user_id: event.user_id,
                    event_id: event.event_id,
                    event_time_ms: event.event_time_ms,
                    watermark_ms: position.watermark_ms,
                    raw: String::from_utf8_lossy(raw).into_owned(),
                    partition: stamper.partition,
                    offset,
                    line_number: line.line_number,
                });
            }
            Ok(event) => {
                position.counts.on_time += 1;
                let max = position
                    .max_event_ms
                    .map_or(event.event_time_ms, |m| m.max(event.event_time_ms));
                position.max_event_ms = Some(max);
                position.watermark_ms = position.watermark_ms.max(max.saturating_sub(lateness));
                buffers.on_time.push(event);
            }
        }
    }
    // The whole chunk goes out at the watermark it started with: a stamp may be earlier than a
    // record's watermark (never later), and one message per chunk instead of one per tick keeps
    // the exchange cheap when a partition's events are sparse in event time.
    buffers.send(caps, outputs);
    let tick_time = position.watermark_ms / tick * tick;
    if tick_time > caps.time().watermark {
        caps.downgrade(Time::new(epoch, tick_time));
    }
    position.next_offset = chunk.end_offset;
    if chunk.records.is_none() {
        position.next_line = chunk.next_line();
    }
    metrics::BYTES_READ.fetch_add(chunk.bytes.len() as u64, Relaxed);
    if chunk.last {
        position.finished = true;
        outputs
            .positions
            .session(&caps.0[3])
            .give(std::mem::take(position));
        stamper.capabilities = None;
    }
}

/// The smallest watermark of a frontier: every record still to come has a larger stamp.
fn frontier_watermark(frontier: AntichainRef<'_, Time>) -> Option<u64> {
    frontier.iter().map(|t| t.watermark).min()
}

/// The bucket of `user_id` under Iceberg's `bucket[n]` transform (Murmur3 of the UTF-8 bytes).
pub fn user_bucket(user_id: &str, buckets: u32) -> u32 {
    let hash = murmur3::murmur3_32(&mut std::io::Cursor::new(user_id.as_bytes()), 0)
        .expect("hashing memory cannot fail");
    ((hash as i32 & i32::MAX) as u32) % buckets
}

/// Applies the session rules on the worker owning each user's bucket, starting from the
/// checkpoint the run resumes. When the frontier passes an epoch, the worker writes its state to
/// that epoch's checkpoint and reports the part to the committer (the second stream).
fn sessionize<'scope>(
    events: StreamVec<'scope, Time, SessionEvent>,
    positions: StreamVec<'scope, Time, SourcePosition>,
    context: &WorkerContext,
) -> Result<(
    StreamVec<'scope, Time, ClosedSession>,
    StreamVec<'scope, Time, CommitPart>,
)> {
    let scope = events.scope();
    let (index, peers) = (scope.index(), scope.peers());
    let config = &context.config;
    let mut sessionizer = Sessionizer::new(config.rules);
    if let Some(checkpoint) = &context.start.checkpoint {
        let buckets = config.buckets;
        for part in &checkpoint.parts {
            let mut state = context.store.read_part(checkpoint, part)?;
            // A bounded run's last checkpoint has seen every event; a run that reads on starts
            // from the partitions' watermarks.
            state.watermark = state.watermark.min(context.start.watermark_ms);
            sessionizer.restore(state, |user| owns(user_bucket(user, buckets), index, peers));
        }
    }
    let store = Arc::clone(&context.store);
    let run_id = context.run_id.clone();

    let mut builder = OperatorBuilder::new("Sessionize".into(), scope);
    let mut events_in = builder.new_input(
        events,
        Exchange::new(|e: &SessionEvent| u64::from(e.bucket)),
    );
    let mut positions_in = builder.new_input(positions, Pipeline);
    let (closed_out, closed_stream) = builder.new_output();
    let (parts_out, parts_stream) = builder.new_output();
    let mut closed_out: Out<ClosedSession> = OutputBuilder::from(closed_out);
    let mut parts_out: Out<CommitPart> = OutputBuilder::from(parts_out);
    builder.build(move |initial| {
        let [closed_cap, part_cap]: [Capability<Time>; 2] =
            initial.try_into().expect("a capability per output");
        let mut closed_caps = CapabilitySet::from_elem(closed_cap);
        let mut part_caps = CapabilitySet::from_elem(part_cap);
        let mut max_event_ms: Option<u64> = None;
        let mut closed = Vec::new();
        // Epochs whose positions have arrived: each gets a checkpoint when the frontier passes it.
        let mut epochs_to_save = std::collections::BTreeSet::new();
        let mut duplicates_reported = 0;
        move |frontiers| {
            events_in.for_each(|_cap, data| {
                for e in data.drain(..) {
                    sessionizer.push(
                        e.user_id,
                        e.event_id,
                        e.page_name.as_deref(),
                        e.event_time_ms,
                    );
                }
            });
            positions_in.for_each(|cap, data| {
                let time = cap.stamp().iter().next().copied().expect("data has a time");
                epochs_to_save.insert(time.epoch);
                for p in data.drain(..).filter(|p| p.finished) {
                    max_event_ms = max_event_ms.max(p.max_event_ms);
                }
            });
            let mut frontier = Antichain::new();
            for f in frontiers.iter() {
                frontier.extend(f.frontier().iter().copied());
            }
            if let Some(watermark) = frontier_watermark(frontiers[0].frontier()) {
                sessionizer.advance(watermark, &mut closed);
            } else if frontier.is_empty() {
                sessionizer.finish(max_event_ms.unwrap_or(0), &mut closed);
            }
            // Sessions closed now belong to the epoch being completed, whose checkpoint no longer
            // holds them.
            let current_epoch = epochs_to_save
                .first()
                .copied()
                .or_else(|| frontier.iter().map(|t| t.epoch).min());
            if !closed.is_empty()
                && let Some(cap) = capability_for(&closed_caps, current_epoch)
            {
                metrics::SESSIONS_CLOSED.fetch_add(closed.len() as u64, Relaxed);
                let mut output = closed_out.activate();
                output.session(&cap).give_iterator(closed.drain(..));
            }
            while let Some(&epoch) = epochs_to_save.first() {
                if !frontier.iter().all(|t| t.epoch > epoch) {
                    break;
                }
                epochs_to_save.remove(&epoch);
                let dir = CheckpointStore::epoch_dir(epoch, &run_id);
                let duplicates = sessionizer.duplicates() - duplicates_reported;
                duplicates_reported = sessionizer.duplicates();
                let part = store
                    .write_part(
                        &dir,
                        index,
                        &sessionizer.checkpoint(),
                        sessionizer.open_sessions() as u64,
                        duplicates,
                    )
                    .unwrap_or_else(|e| stop(e.context("cannot write a checkpoint")));
                if let Some(cap) = capability_for(&part_caps, Some(epoch)) {
                    parts_out
                        .activate()
                        .session(&cap)
                        .give(CommitPart::Checkpoint(part));
                }
            }
            closed_caps.downgrade(frontier.iter());
            part_caps.downgrade(frontier.iter());
        }
    });
    Ok((closed_stream, parts_stream))
}

/// A capability at `epoch` (or, without one, at the earliest epoch held), derived from the
/// capabilities held since the previous frontier.
fn capability_for(
    capabilities: &CapabilitySet<Time>,
    epoch: Option<u64>,
) -> Option<Capability<Time>> {
    let earliest = capabilities
        .iter()
        .map(|c| *c.time())
        .min_by_key(|t| t.epoch)?;
    let epoch = epoch.unwrap_or(earliest.epoch).max(earliest.epoch);
    Some(capabilities.delayed(&Time::new(epoch, earliest.watermark)))
}

/// One epoch's rows of a table on one worker.
struct EpochWrite<R> {
    capability: Capability<Time>,
    rows: Vec<R>,
    writer: Option<TableWriter>,
    row_count: u64,
    events: u64,
}

/// Writes a table's rows into Parquet files; when the frontier passes an epoch, closes its files
/// and sends their metadata to the committer.
fn write_table<'scope, R, F>(
    rows: StreamVec<'scope, Time, R>,
    kind: TableKind,
    context: &WorkerContext,
    to_batch: F,
) -> StreamVec<'scope, Time, CommitPart>
where
    R: SessionWeight + 'static,
    F: Fn(&arrow_schema::SchemaRef, &[R], u64) -> arrow_array::RecordBatch + 'static,
{
    let runtime = Rc::clone(&context.runtime);
    let table = context.tables[&kind].clone();
    let prefix = format!("{}-w{}", context.run_id, rows.scope().index());
    rows.unary_frontier(
        Pipeline,
        &format!("Write{kind:?}"),
        move |_initial, _info| {
            let mut epochs: BTreeMap<u64, EpochWrite<R>> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let time = *cap.stamp().iter().next().expect("data has a time");
                    let epoch = epochs.entry(time.epoch).or_insert_with(|| EpochWrite {
                        capability: cap.delayed(&time, 0),
                        rows: Vec::new(),
                        writer: None,
                        row_count: 0,
                        events: 0,
                    });
                    for row in data.drain(..) {
                        epoch.events += row.events();
                        epoch.rows.push(row);
                    }
                });
                let frontier = frontier.frontier();
                let complete: Vec<u64> = epochs
                    .keys()
                    .copied()
                    .filter(|e| frontier.iter().all(|t| t.epoch > *e))
                    .collect();
                for (epoch, write) in epochs.iter_mut() {
                    let finishing = complete.contains(epoch);
                    if write.rows.len() >= WRITE_BATCH_ROWS || (finishing && !write.rows.is_empty())
                    {
                        let writer = match write.writer.as_mut() {
                            Some(writer) => writer,
                            None => write.writer.insert(
                                runtime
                                    .block_on(TableWriter::new(
                                        &table,
                                        format!("{prefix}-e{epoch}"),
                                    ))
                                    .unwrap_or_else(|e| {
                                        stop(e.context(format!("cannot write to {kind:?}")))
                                    }),
                            ),
                        };
                        let batch = to_batch(writer.arrow_schema(), &write.rows, *epoch);
                        write.row_count += write.rows.len() as u64;
                        write.rows.clear();
                        runtime.block_on(writer.write(batch)).unwrap_or_else(|e| {
                            stop(e.context(format!("writing {kind:?} failed")))
                        });
                    }
                }
                for epoch in complete {
                    let write = epochs.remove(&epoch).expect("listed above");
                    let files = match write.writer {
                        Some(writer) => runtime.block_on(writer.close()).unwrap_or_else(|e| {
                            stop(e.context(format!("closing {kind:?} files failed")))
                        }),
                        None => Vec::new(),
                    };
                    output.session(&write.capability).give(CommitPart::Files {
                        table: kind,
                        files,
                        rows: write.row_count,
                        events: write.events,
                    });
                }
            }
        },
    )
}

/// How many events a row stands for, for the run's totals.
pub trait SessionWeight {
    fn events(&self) -> u64 {
        0
    }
}

impl SessionWeight for ClosedSession {
    fn events(&self) -> u64 {
        self.event_count
    }
}
impl SessionWeight for QuarantinedLine {}
impl SessionWeight for LateEvent {}

/// Parts of one epoch waiting for the frontier to pass it.
#[derive(Default)]
struct PendingCommit {
    files: BTreeMap<TableKind, Vec<String>>,
    positions: Vec<SourcePosition>,
    checkpoint: Vec<CheckpointPart>,
    sessions: u64,
    session_events: u64,
    capability: Option<Capability<Time>>,
}

/// Worker 0 commits each epoch once the frontier has passed it; see [`crate::checkpoint`] for
/// the order of the steps and why a kill between any two of them loses and doubles nothing.
fn commit<'scope>(
    parts: StreamVec<'scope, Time, CommitPart>,
    context: &WorkerContext,
    totals: Rc<RefCell<RunTotals>>,
) -> StreamVec<'scope, Time, u64> {
    let peers = parts.scope().peers();
    let mut committer = Committer {
        runtime: Rc::clone(&context.runtime),
        warehouse: Rc::clone(&context.warehouse),
        store: Arc::clone(&context.store),
        config: Arc::clone(&context.config),
        run_id: context.run_id.clone(),
        last_commit: context
            .start
            .last_commit
            .as_ref()
            .map(|c| (c.epoch, c.run_id.clone())),
        positions: context.start.positions.clone(),
        lag_consumer: None,
    };
    parts.unary_frontier(
        Exchange::new(|_: &CommitPart| 0),
        "Commit",
        move |_initial, _info| {
            let mut pending: BTreeMap<u64, PendingCommit> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let time = *cap.stamp().iter().next().expect("data has a time");
                    let epoch = pending.entry(time.epoch).or_default();
                    if epoch.capability.is_none() {
                        epoch.capability = Some(cap.delayed(&time, 0));
                    }
                    for part in data.drain(..) {
                        match part {
                            CommitPart::Files {
                                table,
                                files,
                                rows,
                                events,
                            } => {
                                if table == TableKind::Sessions {
                                    epoch.sessions += rows;
                                    epoch.session_events += events;
                                }
                                epoch.files.entry(table).or_default().extend(files);
                            }
                            CommitPart::Position(p) => epoch.positions.push(p),
                            CommitPart::Checkpoint(part) => epoch.checkpoint.push(part),
                        }
                    }
                });
                let frontier = frontier.frontier();
                while let Some((&epoch, _)) = pending.first_key_value() {
                    if !frontier.iter().all(|t| t.epoch > epoch) {
                        break;
                    }
                    let part = pending.remove(&epoch).expect("first key");
                    if part.checkpoint.len() != peers {
                        // Only an epoch without positions lacks checkpoints: nothing to commit.
                        assert!(
                            part.positions.is_empty(),
                            "epoch {epoch} lacks checkpoint parts"
                        );
                        continue;
                    }
                    let mut totals = totals.borrow_mut();
                    committer
                        .commit_epoch(epoch, &part, &mut totals)
                        .unwrap_or_else(|e| {
                            stop(e.context(format!("commit of epoch {epoch} failed")))
                        });
                    if let Some(cap) = part.capability {
                        output.session(&cap).give(epoch);
                    }
                }
            }
        },
    )
}

/// The committing worker's view of the tables.
struct Committer {
    runtime: Rc<tokio::runtime::Runtime>,
    warehouse: Rc<Warehouse>,
    store: Arc<CheckpointStore>,
    config: Arc<PipelineConfig>,
    run_id: String,
    /// The (epoch, run) the sessions table's newest snapshot must show before the next commit.
    last_commit: Option<(u64, String)>,
    positions: BTreeMap<u32, SourcePosition>,
    /// Publishes committed offsets to the consumer group, for lag tools.
    lag_consumer: Option<rdkafka::consumer::BaseConsumer>,
}

/// Attempts at a commit before the run stops.
const COMMIT_ATTEMPTS: u32 = 5;

impl Committer {
    fn commit_epoch(
        &mut self,
        epoch: u64,
        part: &PendingCommit,
        totals: &mut RunTotals,
    ) -> Result<()> {
        for position in &part.positions {
            totals.counts += position.counts;
            self.positions.insert(position.partition, position.clone());
        }
        totals.sessions += part.sessions;
        totals.session_events += part.session_events;
        totals.duplicates += part.checkpoint.iter().map(|p| p.duplicates).sum::<u64>();
        totals.epochs += 1;
        totals.watermark_ms = self
            .positions
            .values()
            .map(|p| if p.finished { u64::MAX } else { p.watermark_ms })
            .min()
            .unwrap_or(0);

        let dir = CheckpointStore::epoch_dir(epoch, &self.run_id);
        let mut side = SideFiles {
            epoch,
            ..SideFiles::default()
        };
        for kind in [TableKind::Quarantine, TableKind::LateEvents] {
            side.files
                .insert(kind, part.files.get(&kind).cloned().unwrap_or_default());
        }
        self.store.write_side_files(&dir, &side)?;
        let mut parts: Vec<String> = part.checkpoint.iter().map(|p| p.file.clone()).collect();
        parts.sort();
        let checkpoint = CheckpointRef {
            dir: dir.clone(),
            parts,
        };
        let config = Arc::clone(&self.config);
        let properties = sessions_properties(
            epoch,
            &self.run_id,
            totals.watermark_ms,
            &self.positions,
            |p| config.source_name(p).to_string(),
            &checkpoint,
        );
        let no_files = Vec::new();
        let session_files = part.files.get(&TableKind::Sessions).unwrap_or(&no_files);
        self.runtime.block_on(async {
            let newest = newest_mark(&self.warehouse, TableKind::Sessions).await?;
            if newest != self.last_commit {
                return Err(self.two_writers(TableKind::Sessions, newest));
            }
            self.commit_table(TableKind::Sessions, session_files, properties, epoch)
                .await?;
            for kind in [TableKind::Quarantine, TableKind::LateEvents] {
                let properties = side_properties(epoch, &self.run_id);
                self.commit_table(kind, &side.files[&kind], properties, epoch)
                    .await?;
            }
            anyhow::Ok(())
        })?;
        self.last_commit = Some((epoch, self.run_id.clone()));
        self.store.remove_before(epoch);
        self.publish_offsets();
        tracing::info!(epoch, sessions = part.sessions, "committed");
        Ok(())
    }

    /// Commits, retrying with back-off. Before a retry it reads the table's newest snapshot: a
    /// commit the catalog took although the client saw an error must not be applied twice.
    async fn commit_table(
        &self,
        kind: TableKind,
        files: &[String],
        properties: HashMap<String, String>,
        epoch: u64,
    ) -> Result<()> {
        let mut delay = Duration::from_millis(200);
        for attempt in 1.. {
            let error = match self.warehouse.commit(kind, files, properties.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            match newest_mark(&self.warehouse, kind).await {
                Ok(newest) if newest == Some((epoch, self.run_id.clone())) => return Ok(()),
                Ok(newest) if newest != self.last_commit => {
                    return Err(self.two_writers(kind, newest));
                }
                _ => {}
            }
            if attempt >= COMMIT_ATTEMPTS {
                return Err(error);
            }
            tracing::warn!(
                "commit to {} failed, retrying in {delay:?}: {error:#}",
                self.warehouse.ident(kind)
            );
            std::thread::sleep(delay);
            delay *= 2;
        }
        unreachable!("the loop returns")
    }

    fn two_writers(&self, kind: TableKind, newest: Option<(u64, String)>) -> anyhow::Error {
        anyhow::anyhow!(
            "table {} was committed by another pipeline since this run started (its newest \
             snapshot is epoch/run {newest:?}, this run expected {:?}); two pipelines must not \
             write one table: stop one, then restart the other",
            self.warehouse.ident(kind),
            self.last_commit
        )
    }

    fn publish_offsets(&mut self) {
        let Some(kafka) = &self.config.kafka else {
            return;
        };
        if self.lag_consumer.is_none() {
            match kafka.settings.consumer() {
                Ok(consumer) => self.lag_consumer = Some(consumer),
                Err(e) => {
                    tracing::warn!("cannot publish consumer-group offsets: {e:#}");
                    return;
                }
            }
        }
        let next: BTreeMap<u32, u64> = self
            .positions
            .values()
            .map(|p| (p.partition, p.next_offset))
            .collect();
        let last = self.positions.values().all(|p| p.finished);
        if let Some(consumer) = &self.lag_consumer {
            kafka.settings.commit_offsets(consumer, &next, last);
        }
    }
}

/// The (epoch, run) recorded by a table's newest snapshot.
async fn newest_mark(warehouse: &Warehouse, kind: TableKind) -> Result<Option<(u64, String)>> {
    use crate::sink::iceberg::summary;
    let table = warehouse.load(kind).await?;
    Ok(table.metadata().current_snapshot().and_then(|snapshot| {
        let props = &snapshot.summary().additional_properties;
        let epoch = props.get(summary::EPOCH)?.parse().ok()?;
        Some((
            epoch,
            props.get(summary::RUN_ID).cloned().unwrap_or_default(),
        ))
    }))
}

/// Stops the process after an error the pipeline cannot continue from. What is committed stays
/// consistent, and a restart resumes from it; ending the process (rather than one worker) makes
/// sure no peer waits forever for a worker that is gone.
fn stop(error: anyhow::Error) -> ! {
    tracing::error!("{error:#}");
    eprintln!("sessionize: {error:#}");
    std::process::exit(2)
}
