//! Writing: rows into Parquet data files per table and epoch.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use super::time::Time;
use super::types::{CommitPart, WorkerContext};
use crate::failure::stop;
use iceberg::table::Table;

use crate::rules::{ClosedSession, OpenSessionView};
use crate::sink::tables::open_sessions_batch;
use crate::sink::{LateEvent, QuarantinedLine, TableKind, TableWriter};

/// Rows buffered per table before they are encoded into an Arrow batch.
const WRITE_BATCH_ROWS: usize = 16 * 1024;

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
pub(super) fn write_table<'scope, R, F>(
    rows: StreamVec<'scope, Time, R>,
    kind: TableKind,
    context: &WorkerContext,
    to_batch: F,
) -> StreamVec<'scope, Time, CommitPart>
where
    R: RowWeight + 'static,
    F: Fn(&arrow_schema::SchemaRef, &[R], u64) -> arrow_array::RecordBatch + 'static,
{
    let runtime = Rc::clone(&context.runtime);
    let table = context.tables[&kind].clone();
    let prefix = format!("{}-w{}", context.run_id, rows.scope().index());
    let buffered = Arc::clone(&context.buffered);
    rows.unary_frontier(
        Pipeline,
        &format!("Write{kind:?}"),
        move |_initial, _info| {
            let mut epochs: BTreeMap<u64, EpochWrite<R>> = BTreeMap::new();
            // Writes the rows buffered so far, a batch at a time, so that an epoch that closes a
            // million sessions at once never holds them all as Arrow columns.
            let write_runtime = Rc::clone(&runtime);
            let write_buffered = move |epoch: u64, write: &mut EpochWrite<R>| {
                let runtime = &write_runtime;
                let writer = match write.writer.as_mut() {
                    Some(writer) => writer,
                    None => write.writer.insert(
                        runtime
                            .block_on(TableWriter::new(&table, format!("{prefix}-e{epoch}")))
                            .unwrap_or_else(|e| {
                                stop(e.context(format!("cannot write to {kind:?}")))
                            }),
                    ),
                };
                for rows in write.rows.chunks(WRITE_BATCH_ROWS) {
                    let batch = to_batch(writer.arrow_schema(), rows, epoch);
                    runtime
                        .block_on(writer.write(batch))
                        .unwrap_or_else(|e| stop(e.context(format!("writing {kind:?} failed"))));
                }
                write.row_count += write.rows.len() as u64;
                write.rows.clear();
            };
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
                    let (rows, mut bytes) = (data.len() as u64, 0);
                    for row in data.drain(..) {
                        epoch.events += row.events();
                        bytes += row.bytes();
                        epoch.rows.push(row);
                    }
                    buffered.add(time.epoch, rows, bytes);
                    if epoch.rows.len() >= WRITE_BATCH_ROWS {
                        write_buffered(time.epoch, epoch);
                    }
                });
                let frontier = frontier.frontier();
                let complete: Vec<u64> = epochs
                    .keys()
                    .copied()
                    .filter(|e| frontier.iter().all(|t| t.epoch > *e))
                    .collect();
                for epoch in complete {
                    let mut write = epochs.remove(&epoch).expect("listed above");
                    if !write.rows.is_empty() {
                        write_buffered(epoch, &mut write);
                    }
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

/// Writes a worker's open sessions at the end of `epoch` (as of `watermark_ms`) into the
/// open-sessions table's Parquet files, named `file_prefix…`; none if there are none.
pub(super) fn write_open_sessions<'a>(
    runtime: &tokio::runtime::Runtime,
    table: &Table,
    file_prefix: String,
    sessions: impl Iterator<Item = OpenSessionView<'a>>,
    watermark_ms: u64,
    epoch: u64,
) -> anyhow::Result<Vec<String>> {
    let mut sessions = sessions.peekable();
    if sessions.peek().is_none() {
        return Ok(Vec::new());
    }
    runtime.block_on(async {
        let mut writer = TableWriter::new(table, file_prefix).await?;
        let mut rows = Vec::with_capacity(WRITE_BATCH_ROWS);
        loop {
            rows.extend(sessions.by_ref().take(WRITE_BATCH_ROWS));
            if rows.is_empty() {
                break;
            }
            let batch = open_sessions_batch(writer.arrow_schema(), &rows, watermark_ms, epoch);
            rows.clear();
            writer.write(batch).await?;
        }
        writer.close().await
    })
}

/// What a row weighs: the events it stands for (for the run's totals), and its size in the
/// writer's Arrow batches (for `--commit-max-bytes`).
pub trait RowWeight {
    fn events(&self) -> u64 {
        0
    }

    fn bytes(&self) -> u64;
}

/// The fixed-width columns of a row and their offsets and validity, about the same in each table.
const FIXED_ROW_BYTES: u64 = 96;

impl RowWeight for ClosedSession {
    fn events(&self) -> u64 {
        self.event_count
    }

    fn bytes(&self) -> u64 {
        let pages: usize = self.pages_visited.iter().map(|page| page.len() + 4).sum();
        // The session id's 36 characters, the end reason's dozen.
        FIXED_ROW_BYTES + (self.user_id.len() + pages + 48) as u64
    }
}

impl RowWeight for QuarantinedLine {
    fn bytes(&self) -> u64 {
        FIXED_ROW_BYTES + (self.raw.len() + self.reason.len()) as u64
    }
}

impl RowWeight for LateEvent {
    fn bytes(&self) -> u64 {
        FIXED_ROW_BYTES + (self.user_id.len() + self.event_id.len() + self.raw.len()) as u64
    }
}
