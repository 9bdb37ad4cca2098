//! Writing: rows into Parquet data files per table and epoch.

use std::collections::BTreeMap;
use std::rc::Rc;

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use super::time::Time;
use super::types::{CommitPart, WorkerContext};
use crate::failure::stop;
use crate::rules::ClosedSession;
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
