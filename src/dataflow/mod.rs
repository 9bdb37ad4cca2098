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

mod commit;
mod parse;
mod read;
mod sessionize;
mod stamp;
mod time;
mod write;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use anyhow::Result;
use iceberg::table::Table;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::vec::{Broadcast, Map};
use timely::dataflow::operators::{Concat, Probe};
use timely::dataflow::{ProbeHandle, Scope};

use crate::checkpoint::{
    CheckpointPart, CheckpointStore, SourceCounts, SourcePosition, StartState,
};
use crate::config::PipelineConfig;
use crate::rules::{Boundary, ClosedSession};
use crate::sink::iceberg::Warehouse;
use crate::sink::tables::{self, LateEvent, QuarantinedLine, TableKind};
use crate::source::file::Chunk;

use commit::commit;
use parse::parse;
use read::{Alignment, open_readers, read_chunks};
use sessionize::sessionize;
use stamp::{Stamped, stamp};
pub use time::Time;
use time::frontier_watermark;
use write::write_table;

/// An output of an operator built with [`timely::dataflow::operators::generic::builder_rc`].
type Out<D> = OutputBuilder<Time, CapacityContainerBuilder<Vec<D>>>;

/// An on-time event, routed to the worker that owns its user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEvent {
    /// `bucket(user_id)`, computed where the event is parsed, off the stamper's path.
    pub bucket: u32,
    pub user_id: String,
    pub event_id: String,
    pub page_name: Option<String>,
    pub event_time_ms: u64,
    /// What the event does under `--end-session-on` / `--start-session-on`, decided where it is
    /// parsed, so that only two flags travel instead of the fields the rules read.
    pub boundary: Boundary,
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

/// The bucket of `user_id` under Iceberg's `bucket[n]` transform (Murmur3 of the UTF-8 bytes).
pub fn user_bucket(user_id: &str, buckets: u32) -> u32 {
    let hash = murmur3::murmur3_32(&mut std::io::Cursor::new(user_id.as_bytes()), 0)
        .expect("hashing memory cannot fail");
    ((hash as i32 & i32::MAX) as u32) % buckets
}
