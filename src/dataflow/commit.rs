//! Committing: worker 0 commits each epoch once the frontier has passed it.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use iceberg::table::Table;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use super::{CommitPart, RunTotals, Time, WorkerContext};
use crate::checkpoint::{
    CheckpointPart, CheckpointRef, CheckpointStore, SideFiles, SourcePosition, sessions_properties,
    side_properties,
};
use crate::config::PipelineConfig;
use crate::failure::{fail_point, stop};
use crate::sink::iceberg::{Mark, Warehouse, newest_mark};
use crate::sink::tables::TableKind;

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
pub(super) fn commit<'scope>(
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
        tables: context
            .tables
            .iter()
            .map(|(kind, table)| (*kind, table.clone()))
            .collect(),
        // The sessions table must still show the commit the run starts from; a side table, the
        // last commit that had rows for it (the start completed it).
        marks: TableKind::ALL
            .into_iter()
            .map(|kind| match kind {
                TableKind::Sessions => (kind, context.start.last_commit.clone()),
                _ => (kind, newest_mark(&context.tables[&kind])),
            })
            .collect(),
        last_commit_at: Instant::now(),
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
    /// Each table as this run last saw it: the next commit requires its snapshot to be current.
    tables: HashMap<TableKind, Table>,
    /// The mark of this pipeline's last commit to each table, which the table's history must
    /// still show as its newest.
    marks: HashMap<TableKind, Option<Mark>>,
    last_commit_at: Instant,
    positions: BTreeMap<u32, SourcePosition>,
    /// Publishes committed offsets to the consumer group, for lag tools.
    lag_consumer: Option<rdkafka::consumer::BaseConsumer>,
}

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
        totals.duplicates += part.checkpoint.iter().map(|p| p.duplicates).sum::<u64>();
        let nothing_to_write = part.files.values().all(Vec::is_empty);
        let finished = self.positions.values().all(|p| p.finished);
        if nothing_to_write
            && !finished
            && self.last_commit_at.elapsed() < self.config.idle_commit_interval
        {
            // No snapshot for an epoch without rows: the next commit records these positions.
            tracing::debug!(epoch, "nothing to write: no commit");
            return Ok(());
        }
        let committing = Instant::now();
        totals.sessions += part.sessions;
        totals.session_events += part.session_events;
        totals.epochs += 1;
        totals.watermark_ms = self
            .positions
            .values()
            .map(|p| if p.finished { u64::MAX } else { p.watermark_ms })
            .min()
            .unwrap_or(0);
        fail_point("after-checkpoint-parts");

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
        fail_point("after-side-files");
        let mut parts: Vec<String> = part.checkpoint.iter().map(|p| p.file.clone()).collect();
        parts.sort();
        let checkpoint = CheckpointRef {
            dir: dir.clone(),
            parts,
        };
        let properties = sessions_properties(
            epoch,
            &self.run_id,
            totals.watermark_ms,
            &self.positions,
            &self.config,
            &checkpoint,
        );
        let no_files = Vec::new();
        let session_files = part.files.get(&TableKind::Sessions).unwrap_or(&no_files);
        let mark = Mark {
            epoch,
            run_id: self.run_id.clone(),
        };
        self.commit_table(TableKind::Sessions, session_files, properties, &mark)?;
        fail_point("after-sessions-commit");
        // A side table gets a snapshot only when it has rows.
        let quarantine = &side.files[&TableKind::Quarantine];
        if !quarantine.is_empty() {
            self.commit_table(
                TableKind::Quarantine,
                quarantine,
                side_properties(&mark),
                &mark,
            )?;
        }
        fail_point("between-side-commits");
        let late = &side.files[&TableKind::LateEvents];
        if !late.is_empty() {
            self.commit_table(TableKind::LateEvents, late, side_properties(&mark), &mark)?;
        }
        self.last_commit_at = Instant::now();
        self.store.remove_before(epoch);
        fail_point("after-cleanup");
        self.publish_offsets();
        if let Some(telemetry) = crate::ops::telemetry() {
            telemetry.committed(epoch, part.sessions, committing.elapsed());
        }
        tracing::info!(epoch, sessions = part.sessions, "committed");
        Ok(())
    }

    /// Commits one table's files for the epoch of `mark`, on top of the table as last seen.
    fn commit_table(
        &mut self,
        kind: TableKind,
        files: &[String],
        properties: HashMap<String, String>,
        mark: &Mark,
    ) -> Result<()> {
        let base = self.tables[&kind].clone();
        let committed = self.runtime.block_on(self.warehouse.commit_once(
            kind,
            base,
            files,
            properties,
            mark,
            self.marks[&kind].as_ref(),
            self.config.retain_snapshots,
        ))?;
        self.tables.insert(kind, committed);
        self.marks.insert(kind, Some(mark.clone()));
        Ok(())
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
