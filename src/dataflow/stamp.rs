//! Stamping: each partition's owner restores its order, classifies its lines against its
//! watermark, and stamps records with `(epoch, watermark tick)`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{OutputBuilder, OutputBuilderSession};
use timely::dataflow::{ProbeHandle, StreamVec};
use timely::progress::Antichain;

use super::read::Reading;
use super::time::Time;
use super::types::{Events, Out, ParsedChunk, WorkerContext, WorkerEvents, owner};
use crate::clock::wall_clock_ms;
use crate::commit::{EpochCutter, EpochLimits, SourcePosition};
use crate::event::EventFormat;
use crate::failure::stop;
use crate::ops::progress;
use crate::sink::{LateEvent, QuarantinedLine};
use crate::source::kafka::StopAt;
use crate::watermark::{ClockLimits, Idleness};

/// The four record streams a stamper sends, each under its own capabilities.
pub struct Stamped<'scope> {
    pub on_time: StreamVec<'scope, Time, WorkerEvents>,
    pub quarantined: StreamVec<'scope, Time, QuarantinedLine>,
    pub late: StreamVec<'scope, Time, LateEvent>,
    pub positions: StreamVec<'scope, Time, SourcePosition>,
}

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
    /// The workers on-time events are dealt out to, by their users' buckets.
    peers: usize,
    on_time: OutSession<'a, WorkerEvents>,
    quarantined: OutSession<'a, QuarantinedLine>,
    late: OutSession<'a, LateEvent>,
    positions: OutSession<'a, SourcePosition>,
}

/// Per-partition state of a stamper.
struct PartitionStamper {
    partition: u32,
    /// Chunks that arrived ahead of their turn.
    waiting: BTreeMap<u64, ParsedChunk>,
    next_seq: u64,
    position: SourcePosition,
    capabilities: Option<OutputCaps>,
    /// For `--idle-timeout`.
    idleness: Idleness,
    /// Idle when last checked: its watermark follows the wall clock.
    idle: bool,
}

impl PartitionStamper {
    /// A partition starting at `position`, stamping under `capabilities`, idle after
    /// `idle_timeout` (never without one).
    fn new(
        position: SourcePosition,
        capabilities: OutputCaps,
        idle_timeout: Option<Duration>,
    ) -> Self {
        PartitionStamper {
            partition: position.partition,
            waiting: BTreeMap::new(),
            next_seq: 0,
            position,
            capabilities: Some(capabilities),
            idleness: Idleness::new(idle_timeout.unwrap_or(Duration::MAX)),
            idle: false,
        }
    }
}

/// What a stamper shares with its worker's reader: each partition's watermark (it writes), and
/// what the reader has paused and sent on (it reads).
type SharedWithReader = (Rc<RefCell<HashMap<u32, u64>>>, Rc<RefCell<Reading>>);

/// Restores each partition's order, classifies its lines against its watermark and stamps them
/// with `(epoch, watermark tick)`. A fifth output carries no data: its frontier shows which chunks
/// the stampers have consumed, for the readers' back-pressure. The stamper tells this worker's
/// reader each partition's watermark, and learns from it which partitions it paused.
pub(super) fn stamp<'scope>(
    parsed: StreamVec<'scope, Time, ParsedChunk>,
    context: &WorkerContext,
    partitions: &[u32],
    committed: ProbeHandle<Time>,
    (watermarks, reading): SharedWithReader,
) -> (Stamped<'scope>, StreamVec<'scope, Time, ()>) {
    let scope = parsed.scope();
    let peers = scope.peers();
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
    let mut on_time_out: Out<WorkerEvents> = OutputBuilder::from(on_time_out);
    let mut quarantined_out: Out<QuarantinedLine> = OutputBuilder::from(quarantined_out);
    let mut late_out: Out<LateEvent> = OutputBuilder::from(late_out);
    let mut positions_out: Out<SourcePosition> = OutputBuilder::from(positions_out);

    let limits = ClockLimits {
        lateness_ms: config.allowed_lateness_ms,
        max_jump_ms: config.max_event_time_jump_ms,
        correction_horizon_ms: config.correction_horizon_ms,
    };
    let tick = config.watermark_tick_ms.max(1);
    let format = config.format.clone();
    let epoch_limits = EpochLimits {
        interval: config.commit_interval,
        max_records: config.max_epoch_records,
        max_bytes: config.commit_max_bytes,
        max_rows: config.commit_max_rows,
    };
    let buffered = Arc::clone(&context.buffered);
    // Only a stream that never ends has idle partitions: a bounded run waits for every record.
    let idle_timeout = config
        .kafka
        .as_ref()
        .filter(|k| k.stop == StopAt::Never)
        .map(|k| k.idle_timeout);
    let start = Arc::clone(&context.start);
    let partitions = partitions.to_vec();
    let telemetry = crate::ops::telemetry();

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
                            fingerprint: start.fingerprints.get(&partition).copied(),
                            ..SourcePosition::fresh(partition, start.watermark_ms)
                        }
                    });
                    let mut caps = OutputCaps(initial.clone());
                    let watermark = position.clock.watermark_ms;
                    caps.downgrade(Time::new(start.epoch, watermark / tick * tick));
                    PartitionStamper::new(position, caps, idle_timeout)
                })
                .collect();
        drop(initial);
        let mut epochs = EpochCutter::new(start.epoch, epoch_limits, Instant::now());
        move |_frontiers| {
            // The next epoch fills while the previous one commits, but ends only once it is
            // committed: one epoch commits at a time, and what waits is bounded by one epoch.
            let epoch = epochs.epoch();
            let committing_previous = epoch > start.epoch
                && committed.with_frontier(|f| f.iter().any(|t| t.epoch < epoch));
            // The writers add to it as they go: read once, as the stamper sees it now.
            let output = buffered.of(epoch);
            // A full epoch that cannot end yet takes no more input: what the readers sent stays
            // in the channel, which holds them back (their read-ahead counts it).
            if !epochs.is_full(output) {
                input.for_each(|_cap, data| {
                    for chunk in data.drain(..) {
                        let partition = chunk.chunk.partition;
                        if !stampers.iter().any(|s| s.partition == partition) {
                            stampers.push(new_partition(partition, &stampers, idle_timeout));
                        }
                        let stamper = stampers
                            .iter_mut()
                            .find(|s| s.partition == partition)
                            .expect("added above");
                        stamper.waiting.insert(chunk.chunk.seq, chunk);
                    }
                });
            }
            let mut outputs = StampOutputs {
                peers,
                on_time: on_time_out.activate(),
                quarantined: quarantined_out.activate(),
                late: late_out.activate(),
                positions: positions_out.activate(),
            };
            for stamper in stampers.iter_mut() {
                while !epochs.is_full(output)
                    && let Some(chunk) = stamper.waiting.remove(&stamper.next_seq)
                {
                    stamper.next_seq += 1;
                    if !chunk.lines.is_empty() {
                        stamper.idleness.delivered(Instant::now());
                    }
                    epochs.count(chunk.lines.len() as u64);
                    let before = stamper.position.clock.watermark_ms;
                    stamp_chunk(stamper, chunk, epoch, limits, tick, &format, &mut outputs);
                    if stamper.position.clock.watermark_ms > before {
                        stamper.idleness.advanced();
                    }
                }
                let reading = reading.borrow();
                if reading.paused.contains(&stamper.partition) || epochs.is_full(output) {
                    stamper.idleness.paused(Instant::now());
                } else if reading
                    .chunks_sent
                    .get(&stamper.partition)
                    .is_some_and(|sent| *sent > stamper.next_seq)
                {
                    // Read but not stamped yet: a slow parse is not a silent partition.
                    stamper.idleness.delivered(Instant::now());
                } else if let Some(&at) = reading.quiet.get(&stamper.partition) {
                    stamper.idleness.found_quiet(at);
                }
                if let Some(timeout) = idle_timeout {
                    let idle = stamper.idleness.is_idle();
                    if idle != stamper.idle {
                        stamper.idle = idle;
                        tracing::info!(
                            partition = stamper.partition,
                            "{}",
                            if idle {
                                "partition idle: its watermark follows the wall clock"
                            } else {
                                "partition active again"
                            }
                        );
                    }
                    if idle {
                        follow_wall_clock(stamper, timeout, limits.lateness_ms, tick);
                    }
                }
                watermarks
                    .borrow_mut()
                    .insert(stamper.partition, stamper.position.clock.watermark_ms);
                // A finished partition's position has gone to the committer: its last report stands.
                if let Some(telemetry) = telemetry
                    && stamper.capabilities.is_some()
                {
                    telemetry.stamper_position(
                        stamper.partition,
                        stamper.position.next_offset,
                        stamper.position.clock.watermark_ms,
                    );
                }
            }
            let open = stampers.iter().any(|s| s.capabilities.is_some());
            if open && committing_previous {
                activator.activate_after(Duration::from_millis(1));
            } else if open && epochs.is_due(Instant::now(), output) {
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
                epochs.cut(Instant::now());
                activator.activate();
            } else if open {
                let mut wake = epochs.until_due(Instant::now());
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
fn new_partition(
    partition: u32,
    stampers: &[PartitionStamper],
    idle_timeout: Option<Duration>,
) -> PartitionStamper {
    let Some(template) = stampers.iter().find_map(|s| s.capabilities.as_ref()) else {
        stop(anyhow::anyhow!(
            "partition {partition} appeared, but this worker has no open partition to stamp it \
             alongside; restart the pipeline to read it"
        ));
    };
    let caps = OutputCaps(template.0.clone());
    let position = SourcePosition {
        next_line: 0,
        ..SourcePosition::fresh(partition, caps.time().watermark)
    };
    PartitionStamper::new(position, caps, idle_timeout)
}

/// An idle partition stops holding the watermark back ([`crate::watermark::Idleness`]): its
/// watermark follows the wall clock, and its capabilities with it. Records it delivers later are
/// classified against that watermark.
fn follow_wall_clock(stamper: &mut PartitionStamper, timeout: Duration, lateness: u64, tick: u64) {
    let Some(caps) = stamper.capabilities.as_mut() else {
        return;
    };
    let clock = &mut stamper.position.clock;
    if clock.follow_wall_clock(wall_clock_ms(), timeout, lateness) {
        let tick_time = clock.watermark_ms / tick * tick;
        if tick_time > caps.time().watermark {
            caps.downgrade(Time::new(caps.time().epoch, tick_time));
        }
    }
}

/// Record buffers of a chunk, sent at its end: on-time events by the worker that owns their
/// users.
struct StampBuffers {
    on_time: Vec<Events>,
    quarantined: Vec<QuarantinedLine>,
    late: Vec<LateEvent>,
}

impl StampBuffers {
    fn new(peers: usize) -> Self {
        StampBuffers {
            on_time: vec![Events::default(); peers],
            quarantined: Vec::new(),
            late: Vec::new(),
        }
    }

    fn send(self, caps: &OutputCaps, outputs: &mut StampOutputs<'_>) {
        let by_worker = self.on_time.into_iter().enumerate();
        let batches = by_worker
            .filter(|(_, events)| !events.is_empty())
            .map(|(worker, events)| WorkerEvents {
                worker: worker as u32,
                events,
            });
        outputs.on_time.session(&caps.0[0]).give_iterator(batches);
        if !self.quarantined.is_empty() {
            outputs
                .quarantined
                .session(&caps.0[1])
                .give_iterator(self.quarantined.into_iter());
        }
        if !self.late.is_empty() {
            outputs
                .late
                .session(&caps.0[2])
                .give_iterator(self.late.into_iter());
        }
    }
}

fn stamp_chunk(
    stamper: &mut PartitionStamper,
    parsed: ParsedChunk,
    epoch: u64,
    limits: ClockLimits,
    tick: u64,
    format: &EventFormat,
    outputs: &mut StampOutputs<'_>,
) {
    let caps = stamper
        .capabilities
        .as_mut()
        .expect("no chunk follows the last one");
    let ParsedChunk {
        chunk,
        lines,
        events,
    } = parsed;
    let position = &mut stamper.position;
    let mut buffers = StampBuffers::new(outputs.peers);
    let counts_before = position.counts;
    progress::LINES_READ.fetch_add(lines.len() as u64, Relaxed);
    for line in lines {
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
            Ok(index) => {
                let event = events.get(index);
                let time_ms = event.event_time_ms;
                let late = position.clock.is_late(time_ms);
                if late && !position.clock.corrects(time_ms, limits) {
                    position.counts.late += 1;
                    buffers.late.push(LateEvent {
                        user_id: event.user_id.to_string(),
                        event_id: event.event_id.to_string(),
                        event_time_ms: time_ms,
                        watermark_ms: position.clock.watermark_ms,
                        raw: format.raw_text(raw),
                        partition: stamper.partition,
                        offset,
                        line_number: line.line_number,
                    });
                    continue;
                }
                // A late event within the horizon goes on to its user's worker all the same,
                // which corrects its sessions; it does not move the clock.
                position.counts.on_time += 1;
                if !late {
                    position.clock.observe(event.user_id, time_ms, limits);
                }
                buffers.on_time[owner(event.bucket, outputs.peers)].push_event(event);
            }
        }
    }
    // The whole chunk goes out at the watermark it started with: a stamp may be earlier than a
    // record's watermark (never later), and one message per chunk instead of one per tick keeps
    // the exchange cheap when a partition's events are sparse in event time.
    buffers.send(caps, outputs);
    let tick_time = position.clock.watermark_ms / tick * tick;
    if tick_time > caps.time().watermark {
        caps.downgrade(Time::new(epoch, tick_time));
    }
    position.next_offset = chunk.end_offset;
    if chunk.records.is_none() {
        position.next_line = chunk.next_line();
    }
    progress::BYTES_READ.fetch_add(chunk.bytes.len() as u64, Relaxed);
    if let Some(telemetry) = crate::ops::telemetry() {
        telemetry.stamped(stamper.partition, position.counts.since(counts_before));
        if chunk.last {
            telemetry.stamper_position(
                stamper.partition,
                position.next_offset,
                position.clock.watermark_ms,
            );
        }
    }
    if chunk.last {
        position.finished = true;
        position.unfinished_line = chunk.unfinished_line;
        outputs
            .positions
            .session(&caps.0[3])
            .give(std::mem::take(position));
        stamper.capabilities = None;
    }
}
