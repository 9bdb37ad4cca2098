//! The timely operators of the pipeline, and their assembly into one dataflow.
//!
//! ```text
//! read_chunks ─exchange(chunk)─► parse ─exchange(partition owner)─► stamp ─┬─ on time ─exchange(bucket)─► sessionize ─► write(sessions) ─┐
//!                                                                          ├─ quarantined ──────────────────────────────► write(quarantine) ─┤
//!                                                                          ├─ late ─────────────────────────────────────► write(late) ──────┤
//!                                                                          └─ positions ─broadcast─► sessionize, commit ◄──exchange(0)──────┘
//! ```
//!
//! Timestamps are `Product<epoch, watermark_ms>`. [`stamp`] owns each partition's order: it sees
//! the chunks of a partition in sequence, classifies events against the partition's watermark
//! (its largest event time so far minus the allowed lateness), and sends every record at
//! `(epoch, watermark rounded down to a tick)`. So when the frontier passes watermark `F`, every
//! on-time event before `F` has arrived, and [`sessionize`] can apply events in exact event-time
//! order. Every commit interval the stampers move to the next epoch and wait until the committer
//! has committed the previous one; the committer commits an epoch once the frontier has passed it.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

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

use crate::config::PipelineConfig;
use crate::metrics;
use crate::rules::{ClosedSession, Sessionizer};
use crate::sink::iceberg::{TableWriter, Warehouse, summary};
use crate::sink::tables::{self, LateEvent, QuarantinedLine, TableKind};
use crate::source::file::{Chunk, ChunkReader, lines};

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
    pub line_number: u64,
    pub event: Result<SessionEvent, String>,
}

/// Where a partition stands at the end of an epoch, and what it saw during the epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    pub partition: u32,
    pub next_offset: u64,
    pub next_line: u64,
    pub max_event_ms: Option<u64>,
    pub watermark_ms: u64,
    pub finished: bool,
    pub counts: SourceCounts,
}

/// What a source saw, summed over a span of input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCounts {
    pub lines: u64,
    pub on_time: u64,
    pub late: u64,
    pub quarantined: u64,
}

impl std::ops::AddAssign for SourceCounts {
    fn add_assign(&mut self, other: Self) {
        self.lines += other.lines;
        self.on_time += other.on_time;
        self.late += other.late;
        self.quarantined += other.quarantined;
    }
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
}

/// Totals of a run, as committed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTotals {
    pub epochs: u64,
    pub counts: SourceCounts,
    pub sessions: u64,
    pub session_events: u64,
    pub watermark_ms: u64,
}

/// What one worker needs from outside the dataflow.
pub struct WorkerContext {
    pub config: Arc<PipelineConfig>,
    pub runtime: Rc<tokio::runtime::Runtime>,
    pub warehouse: Rc<Warehouse>,
    pub tables: HashMap<TableKind, Table>,
    /// Unique per run; names data files.
    pub run_id: String,
}

/// Builds the pipeline in `scope`; returns a probe that is done when everything is committed,
/// and the totals the committer (worker 0) records.
pub fn build_pipeline(
    scope: Scope<'_, Time>,
    context: &WorkerContext,
) -> (ProbeHandle<Time>, Rc<RefCell<RunTotals>>) {
    let config = &context.config;
    let committed = ProbeHandle::new();
    let consumed = ProbeHandle::new();
    let totals = Rc::new(RefCell::new(RunTotals::default()));

    let chunks = read_chunks(scope, config, consumed.clone());
    let parsed = parse(chunks, config);
    let (stamped, consumed_marker) = stamp(parsed, config, committed.clone());
    consumed_marker.probe_with(&consumed);

    let Stamped {
        on_time,
        quarantined,
        late,
        positions,
    } = stamped;
    let sessions = sessionize(on_time, positions.clone().broadcast(), config);
    let sources = Rc::new(config.inputs.clone());
    let session_files = write_table(sessions, TableKind::Sessions, context, {
        move |schema, rows: &[ClosedSession], _epoch| tables::sessions_batch(schema, rows)
    });
    let quarantine_sources = Rc::clone(&sources);
    let quarantine_files = write_table(quarantined, TableKind::Quarantine, context, {
        move |schema, rows: &[QuarantinedLine], epoch| {
            tables::quarantine_batch(schema, rows, epoch, &quarantine_sources)
        }
    });
    let late_files = write_table(late, TableKind::LateEvents, context, {
        move |schema, rows: &[LateEvent], epoch| {
            tables::late_events_batch(schema, rows, epoch, &sources)
        }
    });
    let parts = session_files
        .concat(quarantine_files)
        .concat(late_files)
        .concat(positions.map(CommitPart::Position));
    commit(parts, context, Rc::clone(&totals)).probe_with(&committed);
    (committed, totals)
}

/// The owner of partition `p` is worker `p % peers`: it reads it and stamps it.
fn owns(partition: u32, index: usize, peers: usize) -> bool {
    partition as usize % peers == index
}

/// Reads the partitions this worker owns, chunk by chunk, at `(0, chunk seq)`, keeping at most
/// [`READ_AHEAD_BYTES`] ahead of the stampers (`consumed` shows how far they have got).
fn read_chunks<'scope>(
    scope: Scope<'scope, Time>,
    config: &PipelineConfig,
    consumed: ProbeHandle<Time>,
) -> StreamVec<'scope, Time, Chunk> {
    let (index, peers) = (scope.index(), scope.peers());
    let mut readers: Vec<ChunkReader> = config
        .inputs
        .iter()
        .enumerate()
        .filter(|(p, _)| owns(*p as u32, index, peers))
        .map(|(p, path)| {
            ChunkReader::open(p as u32, path, config.chunk_bytes).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    let mut next_seq = vec![0u64; readers.len()];
    let chunks_in_flight =
        (READ_AHEAD_BYTES / config.chunk_bytes.max(1) / readers.len().max(1)).max(4) as u64;
    let mut builder = OperatorBuilder::new("ReadChunks".into(), scope);
    let activator = scope.activator_for(builder.operator_info().address);
    let (output, stream) = builder.new_output();
    let mut output =
        OutputBuilder::<_, timely::container::CapacityContainerBuilder<Vec<Chunk>>>::from(output);
    builder.build(move |mut capabilities| {
        let mut capability = capabilities.pop();
        move |_frontiers| {
            let Some(cap) = capability.as_mut() else {
                return;
            };
            let stamped_up_to = consumed.with_frontier(|f| f.iter().map(|t| t.watermark).min());
            let mut output = output.activate();
            let mut blocked = false;
            for (reader, seq) in readers.iter_mut().zip(next_seq.iter_mut()) {
                if *seq == u64::MAX {
                    continue;
                }
                if stamped_up_to.is_some_and(|done| *seq >= done + chunks_in_flight) {
                    blocked = true;
                    continue;
                }
                let chunk = reader
                    .next_chunk()
                    .unwrap_or_else(|e| panic!("reading input failed: {e}"))
                    .expect("a reader is not polled after its last chunk");
                *seq = if chunk.last { u64::MAX } else { chunk.seq + 1 };
                output
                    .session(&cap.delayed(&Time::new(0, chunk.seq)))
                    .give(chunk);
            }
            match next_seq.iter().min() {
                Some(&min) if min < u64::MAX => {
                    cap.downgrade(&Time::new(0, min));
                    if blocked {
                        activator.activate_after(Duration::from_millis(1));
                    } else {
                        activator.activate();
                    }
                }
                _ => capability = None,
            }
        }
    });
    stream
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
                        let mut parsed = Vec::new();
                        for (line_number, (start, line)) in
                            (chunk.first_line..).zip(lines(&chunk.bytes))
                        {
                            if line.iter().all(u8::is_ascii_whitespace) {
                                continue;
                            }
                            let event = validator
                                .parse(line)
                                .map(|e| SessionEvent {
                                    bucket: user_bucket(&e.user_id, buckets),
                                    user_id: e.user_id.into_owned(),
                                    event_id: e.event_id.into_owned(),
                                    page_name: e.page_name.map(|p| p.into_owned()),
                                    event_time_ms: e.event_time_ms,
                                })
                                .map_err(|r| r.0);
                            parsed.push(ParsedLine {
                                start,
                                end: start + line.len(),
                                line_number,
                                event,
                            });
                        }
                        session.give(ParsedChunk {
                            chunk,
                            lines: parsed,
                        });
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
}

/// Restores each partition's order, classifies its lines against its watermark and stamps them
/// with `(epoch, watermark tick)`. A fifth output carries no data: its frontier shows which chunks
/// the stampers have consumed, for the readers' back-pressure.
fn stamp<'scope>(
    parsed: StreamVec<'scope, Time, ParsedChunk>,
    config: &PipelineConfig,
    committed: ProbeHandle<Time>,
) -> (Stamped<'scope>, StreamVec<'scope, Time, ()>) {
    let scope = parsed.scope();
    let (index, peers) = (scope.index(), scope.peers());
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
    let partitions: Vec<u32> = (0..config.inputs.len() as u32)
        .filter(|p| owns(*p, index, peers))
        .collect();

    builder.build(move |mut capabilities| {
        capabilities.truncate(4);
        let initial: [Capability<Time>; 4] = capabilities
            .try_into()
            .expect("a capability for each record output");
        let mut stampers: Vec<PartitionStamper> = partitions
            .iter()
            .map(|&partition| PartitionStamper {
                partition,
                waiting: BTreeMap::new(),
                next_seq: 0,
                position: SourcePosition {
                    partition,
                    next_line: 1,
                    ..SourcePosition::default()
                },
                capabilities: Some(OutputCaps(initial.clone())),
            })
            .collect();
        drop(initial);
        let mut epoch = 0u64;
        let mut next_commit = Instant::now() + interval;
        move |_frontiers| {
            // After an epoch ends, nothing more is stamped until it is committed, so that every
            // epoch is a consistent cut of all partitions.
            let draining =
                epoch > 0 && committed.with_frontier(|f| f.iter().any(|t| t.epoch < epoch));
            if draining {
                activator.activate_after(Duration::from_millis(1));
                return;
            }
            input.for_each(|_cap, data| {
                for chunk in data.drain(..) {
                    let stamper = stampers
                        .iter_mut()
                        .find(|s| s.partition == chunk.chunk.partition)
                        .expect("chunks are routed to their partition's owner");
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
                    stamp_chunk(stamper, chunk, epoch, lateness, tick, &mut outputs);
                }
            }
            let open = stampers.iter().any(|s| s.capabilities.is_some());
            if open && Instant::now() >= next_commit {
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
                next_commit = Instant::now() + interval;
                activator.activate();
            } else if open {
                activator.activate_after(next_commit.saturating_duration_since(Instant::now()));
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
        let offset = chunk.byte_offset + line.start as u64;
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
                position.watermark_ms = max.saturating_sub(lateness);
                buffers.on_time.push(event);
            }
        }
        let tick_time = position.watermark_ms / tick * tick;
        if tick_time > caps.time().watermark {
            // The records so far were stamped under the old watermark; later ones may not be.
            buffers.send(caps, outputs);
            caps.downgrade(Time::new(epoch, tick_time));
        }
    }
    buffers.send(caps, outputs);
    position.next_offset = chunk.byte_offset + chunk.bytes.len() as u64;
    position.next_line = chunk.next_line();
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

/// Applies the session rules on the worker owning each user's bucket.
fn sessionize<'scope>(
    events: StreamVec<'scope, Time, SessionEvent>,
    positions: StreamVec<'scope, Time, SourcePosition>,
    config: &PipelineConfig,
) -> StreamVec<'scope, Time, ClosedSession> {
    let rules = config.rules;
    events.binary_frontier(
        positions,
        Exchange::new(|e: &SessionEvent| u64::from(e.bucket)),
        Pipeline,
        "Sessionize",
        move |initial, _info| {
            let mut capabilities = CapabilitySet::from_elem(initial);
            let mut sessionizer = Sessionizer::new(rules);
            let mut max_event_ms: Option<u64> = None;
            let mut closed = Vec::new();
            move |(events, events_frontier), (positions, positions_frontier), output| {
                events.for_each(|_cap, data| {
                    for e in data.drain(..) {
                        sessionizer.push(
                            e.user_id,
                            e.event_id,
                            e.page_name.as_deref(),
                            e.event_time_ms,
                        );
                    }
                });
                positions.for_each(|_cap, data| {
                    for p in data.drain(..).filter(|p| p.finished) {
                        max_event_ms = max_event_ms.max(p.max_event_ms);
                    }
                });
                let frontier = events_frontier.frontier();
                let all_done = frontier.is_empty() && positions_frontier.frontier().is_empty();
                if let Some(watermark) = frontier_watermark(frontier) {
                    sessionizer.advance(watermark, &mut closed);
                } else if all_done {
                    sessionizer.finish(max_event_ms.unwrap_or(0), &mut closed);
                }
                if !closed.is_empty() {
                    let at = capabilities
                        .iter()
                        .map(|c| *c.time())
                        .min_by_key(|t| t.epoch)
                        .expect("a capability is held until the input ends");
                    let cap = capabilities.delayed(&at);
                    metrics::SESSIONS_CLOSED.fetch_add(closed.len() as u64, Relaxed);
                    output.session(&cap).give_iterator(closed.drain(..));
                }
                capabilities.downgrade(frontier.iter().chain(positions_frontier.frontier().iter()));
            }
        },
    )
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
                                    .unwrap_or_else(|e| panic!("cannot write to {kind:?}: {e:#}")),
                            ),
                        };
                        let batch = to_batch(writer.arrow_schema(), &write.rows, *epoch);
                        write.row_count += write.rows.len() as u64;
                        write.rows.clear();
                        runtime
                            .block_on(writer.write(batch))
                            .unwrap_or_else(|e| panic!("writing {kind:?} failed: {e:#}"));
                    }
                }
                for epoch in complete {
                    let write = epochs.remove(&epoch).expect("listed above");
                    let files = match write.writer {
                        Some(writer) => runtime
                            .block_on(writer.close())
                            .unwrap_or_else(|e| panic!("closing {kind:?} files failed: {e:#}")),
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
    sessions: u64,
    session_events: u64,
    capability: Option<Capability<Time>>,
}

/// Worker 0 commits each epoch, once the frontier has passed it, as one snapshot per table: the
/// side tables first, then the sessions table, whose summary records the epoch, the watermark and
/// every partition's position.
fn commit<'scope>(
    parts: StreamVec<'scope, Time, CommitPart>,
    context: &WorkerContext,
    totals: Rc<RefCell<RunTotals>>,
) -> StreamVec<'scope, Time, u64> {
    let runtime = Rc::clone(&context.runtime);
    let warehouse = Rc::clone(&context.warehouse);
    let sources = context.config.inputs.clone();
    parts.unary_frontier(
        Exchange::new(|_: &CommitPart| 0),
        "Commit",
        move |_initial, _info| {
            let mut pending: BTreeMap<u64, PendingCommit> = BTreeMap::new();
            let mut positions: BTreeMap<u32, SourcePosition> = BTreeMap::new();
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
                        }
                    }
                });
                let frontier = frontier.frontier();
                while let Some((&epoch, _)) = pending.first_key_value() {
                    if !frontier.iter().all(|t| t.epoch > epoch) {
                        break;
                    }
                    let part = pending.remove(&epoch).expect("first key");
                    let mut totals = totals.borrow_mut();
                    for position in part.positions {
                        totals.counts += position.counts;
                        positions.insert(position.partition, position);
                    }
                    totals.sessions += part.sessions;
                    totals.session_events += part.session_events;
                    totals.epochs = epoch + 1;
                    totals.watermark_ms = positions
                        .values()
                        .map(|p| if p.finished { u64::MAX } else { p.watermark_ms })
                        .min()
                        .unwrap_or(0);
                    let properties = commit_properties(epoch, &totals, &positions, &sources);
                    for kind in [
                        TableKind::Quarantine,
                        TableKind::LateEvents,
                        TableKind::Sessions,
                    ] {
                        let files = part.files.get(&kind).map_or(&[][..], |f| f.as_slice());
                        runtime
                            .block_on(warehouse.commit(kind, files, properties.clone()))
                            .unwrap_or_else(|e| panic!("commit of epoch {epoch} failed: {e:#}"));
                    }
                    tracing::info!(epoch, sessions = part.sessions, "committed");
                    if let Some(cap) = part.capability {
                        output.session(&cap).give(epoch);
                    }
                }
            }
        },
    )
}

fn commit_properties(
    epoch: u64,
    totals: &RunTotals,
    positions: &BTreeMap<u32, SourcePosition>,
    sources: &[String],
) -> HashMap<String, String> {
    let positions: BTreeMap<String, serde_json::Value> = positions
        .values()
        .map(|p| {
            (
                p.partition.to_string(),
                serde_json::json!({
                    "source": sources[p.partition as usize],
                    "next_offset": p.next_offset,
                    "next_line": p.next_line,
                    "max_event_ms": p.max_event_ms,
                    "finished": p.finished,
                }),
            )
        })
        .collect();
    HashMap::from([
        (summary::EPOCH.to_string(), epoch.to_string()),
        (
            summary::WATERMARK_MS.to_string(),
            totals.watermark_ms.to_string(),
        ),
        (
            summary::POSITIONS.to_string(),
            serde_json::to_string(&positions).expect("positions serialize"),
        ),
    ])
}
