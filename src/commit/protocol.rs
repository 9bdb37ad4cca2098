//! The steps of an epoch's commit, in one place. Worker 0's commit thread runs them, one epoch
//! at a time and in order, once the frontier has passed the epoch (the `Commit` operator of the
//! dataflow hands them over, and the workers fill the next epoch meanwhile); each step is a fail
//! point, so that the tests kill the process between any two of them:
//!
//! 1. every worker has written its session state to the epoch's checkpoint directory
//!    ([`super::checkpoint`]), named uniquely by epoch and run (`after-checkpoint-parts`);
//! 2. the committer writes the epoch's side-table files to `side-files.json` in that directory
//!    (`after-side-files`);
//! 3. the sessions table commits its files in one snapshot whose summary names the epoch, every
//!    partition's next offset and the checkpoint ([`super::record`]): **the commit point**
//!    (`after-sessions-commit`). When the epoch's corrections retract rows committed before (or
//!    written in the epoch), the files holding them are first written again without them
//!    (`after-correction-files`), and the snapshot is an `overwrite` that swaps them in
//!    ([`super::corrections`]); on a table that moved on, they are rewritten before each attempt;
//! 4. the quarantine and late-events tables commit their files, their summaries naming the epoch
//!    (`between-side-commits`), then the open-sessions table's rows are replaced by the workers'
//!    latest (`after-open-sessions-commit`; no part of the record: it only shows the present);
//! 5. checkpoint directories of older epochs are removed (`after-cleanup`), and the offsets are
//!    published to the consumer group, for lag tools only.
//!
//! A restart ([`super::start`]) reads the sessions table's newest mark, completes step 4 if it
//! did not happen, restores the checkpoint and reads on from the recorded offsets. Files written
//! for an epoch that never reached step 3 are left unreferenced. Every table commit goes through
//! [`commit_once`], which never makes a commit twice.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use iceberg::table::Table;
use serde::{Deserialize, Serialize};

use super::checkpoint::{CheckpointPart, CheckpointRef, CheckpointStore, SideFiles};
use super::corrections::Corrections;
use super::orphans::{data_files, orphans};
use super::position::{SourceCounts, SourcePosition};
use super::record::{
    Mark, named_checkpoints, newest_mark, own_snapshots_to_expire, sessions_properties,
    side_properties, two_writers,
};
use crate::config::PipelineConfig;
use crate::failure::fail_point;
use crate::maintain::Compactor;
use crate::maintain::shape::last_expiry_ms;
use crate::retry::Backoff;
use crate::sink::{RetractedSession, TableKind, Warehouse};
use crate::source::kafka::TopicIdentity;

/// What an epoch's commit gathers from every worker.
#[derive(Debug, Default)]
pub struct EpochParts {
    /// Data files of each table, as serialized by the writers.
    pub files: BTreeMap<TableKind, Vec<String>>,
    /// Where each partition stood at the end of the epoch.
    pub positions: Vec<SourcePosition>,
    /// Each worker's part of the checkpoint.
    pub checkpoint: Vec<CheckpointPart>,
    pub sessions: u64,
    pub session_events: u64,
    /// The open-sessions table's files of each worker whose open sessions changed.
    pub open_sessions: BTreeMap<usize, Vec<String>>,
    /// Rows of the sessions table that the epoch's corrections replace.
    pub retractions: Vec<RetractedSession>,
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
    /// Compaction rounds committed.
    #[serde(default)]
    pub compactions: u64,
}

/// One table's commit of an epoch: its files, the record its snapshot carries, its mark, and the
/// mark of this pipeline's previous commit to the table, which the table must still show.
pub struct TableCommit<'a> {
    pub kind: TableKind,
    pub files: &'a [String],
    pub properties: HashMap<String, String>,
    pub mark: &'a Mark,
    pub previous: Option<&'a Mark>,
    /// The rows of the sessions table the epoch's corrections retract, if any: the commit is
    /// then an `overwrite` that rewrites the files holding them.
    pub corrections: Option<Corrections<'a>>,
}

/// Attempts at a commit that fails with an error (not a lost race) before the run stops.
const COMMIT_ATTEMPTS: u32 = 5;
/// Waits between those attempts.
const COMMIT_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(200), Duration::from_secs(10)).attempts(COMMIT_ATTEMPTS);
/// Races lost in a row to other writers' commits before the run stops.
const MAX_REBASES: u32 = 100;
/// Snapshots the open-sessions table keeps: a reader planning on one has a few commit intervals
/// before its files go.
const OPEN_SESSIONS_SNAPSHOTS: usize = 3;

/// Commits `commit` exactly once, on top of `base`: the table as this run last saw it.
///
/// The commit requires the table's current snapshot to be `base`'s, so the catalog refuses it if
/// anyone committed since. Then, and after any error whose outcome is unknown (a timeout, a lost
/// connection), it looks at what is there before doing anything else: its own mark means the
/// catalog took the commit; another pipeline's mark on top of `previous` is a
/// [`crate::failure::TwoWriters`] error; snapshots of other tools (compaction, deletes, expiry)
/// on top are welcome, and the commit is made again on top of them. It is never re-applied
/// blindly: an epoch's corrections, which rewrite files of the base, are rewritten from the new
/// one.
///
/// Snapshots of ours beyond the newest `retain_snapshots` are then expired (metadata only), so
/// that months of frequent commits keep the metadata small.
pub async fn commit_once(
    warehouse: &Warehouse,
    mut base: Table,
    mut commit: TableCommit<'_>,
    retain_snapshots: usize,
) -> Result<Table> {
    let ident = warehouse.ident(commit.kind);
    let mut delays = COMMIT_BACKOFF.delays();
    let mut rebases = 0;
    loop {
        let newest = newest_mark(&base);
        if newest.as_ref() == Some(commit.mark) {
            return Ok(base);
        }
        if newest.as_ref() != commit.previous {
            return Err(two_writers(&ident, newest.as_ref(), commit.previous).into());
        }
        let mut attempted = match &mut commit.corrections {
            Some(corrections) => {
                corrections
                    .attempt(warehouse, &base, commit.files, &commit.properties)
                    .await
            }
            None => {
                warehouse
                    .append(&base, commit.files, commit.properties.clone())
                    .await
            }
        };
        if attempted.is_ok() && crate::failure::injected("lose-commit-response") {
            // As if the catalog took the commit but its answer never came back.
            attempted = Err(anyhow::anyhow!("the catalog's answer was lost (injected)"));
        }
        let error = match attempted {
            Ok(table) => {
                let expired = own_snapshots_to_expire(&table, retain_snapshots);
                return Ok(warehouse.expire_snapshots(table, expired).await);
            }
            Err(error) => error,
        };
        let seen = base.metadata().current_snapshot_id();
        // Until the table is read back, the catalog may have taken the commit or not.
        let mut unknown = true;
        match warehouse.load(commit.kind).await {
            Ok(table) if table.metadata().current_snapshot_id() != seen => {
                // Someone committed, perhaps this very commit: the loop's checks decide.
                tracing::info!(
                    "commit to {ident} came back with an error ({error:#}) and the table has \
                     changed: looking at what is there"
                );
                base = table;
                rebases += 1;
                anyhow::ensure!(
                    rebases <= MAX_REBASES,
                    "commit to {ident} lost {MAX_REBASES} races in a row against other writers \
                     of the table: {error:#}"
                );
                continue;
            }
            Ok(table) => {
                base = table;
                unknown = false;
            }
            Err(load_error) => tracing::warn!("cannot read {ident} back: {load_error:#}"),
        }
        if let Some(telemetry) = crate::ops::telemetry() {
            // Not ready while the catalog refuses or cannot be reached (`/readyz`).
            telemetry.health.commit_failing(true);
        }
        let Some(delay) = delays.next() else {
            let outcome = if unknown {
                "whether the catalog took the last attempt is unknown, and the restart looks \
                 before committing again"
            } else {
                "nothing of it is in the table"
            };
            return Err(error.context(format!(
                "commit to {ident} failed {COMMIT_ATTEMPTS} times; {outcome}: restart when the \
                 catalog is back"
            )));
        };
        tracing::warn!("commit to {ident} failed, retrying in {delay:?}: {error:#}");
        tokio::time::sleep(delay).await;
    }
}

/// Where a run starts, as the committer needs it: the last commit, the partitions' positions,
/// the Kafka topic's identity and the checkpoint the workers restored.
pub type Start = (
    Option<Mark>,
    BTreeMap<u32, SourcePosition>,
    Option<TopicIdentity>,
    Option<CheckpointRef>,
);

/// The committing worker's view of the tables: it commits each epoch, in order.
pub struct Committer {
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
    /// The Kafka topic's identity, recorded with every commit.
    topic: Option<TopicIdentity>,
    /// Publishes committed offsets to the consumer group, for lag tools.
    lag_consumer: Option<rdkafka::consumer::BaseConsumer>,
    /// Whether the files of other runs' uncommitted epochs have been looked for.
    orphans_removed: bool,
    compactor: Compactor,
    /// Whether the run's input has ended and its last compaction is done.
    finished: bool,
    /// When the run started: other runs' files written since are none of its business.
    started: std::time::SystemTime,
    /// The checkpoints since the last full one, oldest first, the newest epoch's last: what the
    /// workers' next checkpoint amends, written whether their epochs committed or not.
    chain: Vec<CheckpointRef>,
    /// Each worker's latest open sessions, in the open-sessions table's files: what the table is
    /// to hold.
    open_sessions: BTreeMap<usize, Vec<String>>,
}

impl Committer {
    /// The committer of a run whose sessions table last showed `last_commit`, whose partitions
    /// start at `positions` and whose Kafka topic is `topic`, with `tables` as this worker loaded
    /// them.
    pub fn new(
        runtime: Rc<tokio::runtime::Runtime>,
        warehouse: Rc<Warehouse>,
        store: Arc<CheckpointStore>,
        config: Arc<PipelineConfig>,
        run_id: String,
        tables: HashMap<TableKind, Table>,
        (last_commit, positions, topic, restored): Start,
    ) -> Self {
        // The sessions table must still show the commit the run starts from; a side table, the
        // last commit that had rows for it (the start completed it).
        let marks = TableKind::ALL
            .into_iter()
            .map(|kind| match kind {
                TableKind::Sessions => (kind, last_commit.clone()),
                _ => (kind, newest_mark(&tables[&kind])),
            })
            .collect();
        let compactor = Compactor::new(config.compaction, run_id.clone());
        Committer {
            runtime,
            warehouse,
            store,
            config,
            run_id,
            tables,
            marks,
            last_commit_at: Instant::now(),
            positions,
            topic,
            lag_consumer: None,
            orphans_removed: false,
            compactor,
            finished: false,
            started: std::time::SystemTime::now(),
            chain: restored.map_or_else(Vec::new, |restored| {
                let links = restored.chain().into_iter().cloned();
                links
                    .map(|link| CheckpointRef {
                        amends: Vec::new(),
                        ..link
                    })
                    .collect()
            }),
            open_sessions: BTreeMap::new(),
        }
    }

    /// Commits epoch `epoch` from its gathered `part`s (a no-op for an epoch with nothing to
    /// write, unless the idle commit interval has passed or the input has ended).
    pub fn commit_epoch(
        &mut self,
        epoch: u64,
        part: &EpochParts,
        totals: &mut RunTotals,
    ) -> Result<()> {
        for position in &part.positions {
            totals.counts += position.counts;
            self.positions.insert(position.partition, position.clone());
        }
        totals.duplicates += part.checkpoint.iter().map(|p| p.duplicates).sum::<u64>();
        let dir = CheckpointStore::epoch_dir(epoch, &self.run_id);
        let mut parts: Vec<String> = part.checkpoint.iter().map(|p| p.file.clone()).collect();
        parts.sort();
        if self.config.full_checkpoint(epoch) {
            self.chain.clear();
        }
        self.chain.push(CheckpointRef {
            dir: dir.clone(),
            parts,
            amends: Vec::new(),
        });
        let nothing_to_write = part.files.values().all(Vec::is_empty)
            && part.open_sessions.is_empty()
            && part.retractions.is_empty();
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
        // Corrected sessions replace rows: the totals count the table's rows, not rows written.
        let retracted_events: u64 = part.retractions.iter().map(|r| r.event_count).sum();
        totals.sessions =
            (totals.sessions + part.sessions).saturating_sub(part.retractions.len() as u64);
        totals.session_events =
            (totals.session_events + part.session_events).saturating_sub(retracted_events);
        totals.epochs += 1;
        totals.watermark_ms = self
            .positions
            .values()
            .map(|p| {
                if p.finished {
                    u64::MAX
                } else {
                    p.clock.watermark_ms
                }
            })
            .min()
            .unwrap_or(0);
        fail_point("after-checkpoint-parts");

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
        let (newest, amended) = self.chain.split_last().expect("this epoch's is in it");
        let checkpoint = CheckpointRef {
            amends: amended.to_vec(),
            ..newest.clone()
        };
        let properties = sessions_properties(
            epoch,
            &self.run_id,
            totals.watermark_ms,
            (&self.positions, self.topic.as_ref()),
            &self.config,
            &checkpoint,
        );
        let no_files = Vec::new();
        let session_files = part.files.get(&TableKind::Sessions).unwrap_or(&no_files);
        let mark = Mark {
            epoch,
            run_id: self.run_id.clone(),
        };
        // Named as the workers name the epoch's files, so that orphan removal knows the run of
        // a rewrite that was never committed.
        let corrections = (!part.retractions.is_empty()).then(|| {
            let prefix = format!("{}-w0-e{epoch}-correction", self.run_id);
            Corrections::new(&part.retractions, prefix)
        });
        self.commit_table(
            TableKind::Sessions,
            session_files,
            properties,
            corrections,
            &mark,
        )?;
        fail_point("after-sessions-commit");
        // A side table gets a snapshot only when it has rows.
        let quarantine = &side.files[&TableKind::Quarantine];
        if !quarantine.is_empty() {
            self.commit_table(
                TableKind::Quarantine,
                quarantine,
                side_properties(&mark),
                None,
                &mark,
            )?;
        }
        fail_point("between-side-commits");
        let late = &side.files[&TableKind::LateEvents];
        if !late.is_empty() {
            self.commit_table(
                TableKind::LateEvents,
                late,
                side_properties(&mark),
                None,
                &mark,
            )?;
        }
        self.commit_open_sessions(&part.open_sessions, &mark);
        self.last_commit_at = Instant::now();
        let named = named_checkpoints(&self.tables[&TableKind::Sessions]);
        self.store.remove_before(epoch, &named);
        self.remove_orphans();
        self.compact(epoch, false);
        totals.compactions = self.compactor.committed();
        fail_point("after-cleanup");
        self.publish_offsets();
        if let Some(telemetry) = crate::ops::telemetry() {
            telemetry.committed(epoch, part.sessions, committing.elapsed());
        }
        tracing::info!(
            epoch,
            sessions = part.sessions,
            corrected = part.retractions.len(),
            "committed"
        );
        Ok(())
    }

    /// Commits one table's files for the epoch of `mark`, on top of the table as last seen, with
    /// the snapshot's properties and the epoch's corrections, if any.
    fn commit_table(
        &mut self,
        kind: TableKind,
        files: &[String],
        properties: HashMap<String, String>,
        corrections: Option<Corrections<'_>>,
        mark: &Mark,
    ) -> Result<()> {
        let base = self.tables[&kind].clone();
        let commit = TableCommit {
            kind,
            files,
            properties,
            mark,
            previous: self.marks[&kind].as_ref(),
            corrections,
        };
        let committed = self.runtime.block_on(commit_once(
            &self.warehouse,
            base,
            commit,
            self.config.retain_snapshots,
        ))?;
        self.tables.insert(kind, committed);
        self.marks.insert(kind, Some(mark.clone()));
        Ok(())
    }

    /// Replaces the open-sessions table's rows with each worker's latest open sessions, in a
    /// snapshot marked as the epoch's, and expires the snapshots before the last few (the table
    /// shows the present; its history is no use). The table is not part of the exactly-once
    /// record: a failed commit only leaves it one commit behind, and the next one catches up.
    fn commit_open_sessions(&mut self, changed: &BTreeMap<usize, Vec<String>>, mark: &Mark) {
        if changed.is_empty() {
            return;
        }
        let Some(table) = self.tables.get(&TableKind::OpenSessions).cloned() else {
            return;
        };
        self.open_sessions
            .extend(changed.iter().map(|(w, files)| (*w, files.clone())));
        let wanted: Vec<String> = self.open_sessions.values().flatten().cloned().collect();
        let committed = self.runtime.block_on(async {
            let table = self
                .warehouse
                .replace_contents(&table, &wanted, side_properties(mark))
                .await?;
            let expired = own_snapshots_to_expire(&table, OPEN_SESSIONS_SNAPSHOTS);
            anyhow::Ok(self.warehouse.expire_snapshots(table, expired).await)
        });
        match committed {
            Ok(table) => {
                self.tables.insert(TableKind::OpenSessions, table);
            }
            Err(e) => {
                tracing::warn!("cannot replace the open sessions (the next commit will): {e:#}");
                let reloaded = self
                    .runtime
                    .block_on(self.warehouse.load(TableKind::OpenSessions));
                if let Ok(table) = reloaded {
                    self.tables.insert(TableKind::OpenSessions, table);
                }
            }
        }
        fail_point("after-open-sessions-commit");
    }

    /// Once the input has ended and every epoch is committed: compacts what is left, so that a
    /// bounded run leaves each partition in few files, even a run that found its input already
    /// committed.
    pub fn finish(&mut self, totals: &mut RunTotals) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let epoch = self.marks[&TableKind::Sessions]
            .as_ref()
            .map_or(0, |mark| mark.epoch);
        self.compact(epoch, true);
        totals.compactions = self.compactor.committed();
    }

    /// Commits the tables' finished compaction rounds and starts the next ones; when the input
    /// has ended, compacts what is left before the run ends.
    fn compact(&mut self, epoch: u64, finished: bool) {
        for kind in TableKind::ALL {
            let table = self.tables[&kind].clone();
            let compactions = self.compactor.committed_of(kind);
            let table = self.runtime.block_on(async {
                let table = self
                    .compactor
                    .after_commit(&self.warehouse, kind, table, epoch, finished)
                    .await;
                // Compactions' snapshots count as ours, and are expired as the commits' are.
                let expired = own_snapshots_to_expire(&table, self.config.retain_snapshots);
                self.warehouse.expire_snapshots(table, expired).await
            });
            if let Some(telemetry) = crate::ops::telemetry()
                && let Some(shape) = self.compactor.shape(kind)
            {
                let figures = crate::ops::TableFigures {
                    data_files: shape.data_files,
                    small_files: shape.small_files,
                    manifests: shape.manifests,
                    bytes: shape.bytes,
                    records: shape.records,
                    last_compaction_ms: shape.last_compaction_ms,
                    last_expiry_ms: last_expiry_ms(&table),
                };
                let compacted = self.compactor.committed_of(kind) - compactions;
                telemetry.table_shape(&table.identifier().to_string(), &figures, compacted);
            }
            self.tables.insert(kind, table);
        }
    }

    /// Once this run has committed, removes the data files that other runs wrote for epochs
    /// they never committed ([`super::orphans`]). Best effort: what stays costs space only.
    fn remove_orphans(&mut self) {
        if std::mem::replace(&mut self.orphans_removed, true) {
            return;
        }
        let kinds: Vec<TableKind> = self.tables.keys().copied().collect();
        for kind in kinds {
            let table = &self.tables[&kind];
            let removed =
                data_files(table, &self.config.catalog.options).and_then(|(files, listed)| {
                    let found = self.runtime.block_on(orphans(
                        table,
                        &self.run_id,
                        &listed,
                        self.started,
                    ))?;
                    for name in &found {
                        files.remove_file(name)?;
                    }
                    anyhow::Ok(found.len())
                });
            if let (Ok(count), Some(telemetry)) = (&removed, crate::ops::telemetry()) {
                telemetry.files_deleted("orphan", *count as u64);
            }
            match removed {
                Ok(0) => {}
                Ok(count) => tracing::info!(
                    table = %table.identifier(),
                    count,
                    "removed the files of epochs that earlier runs never committed"
                ),
                Err(e) => tracing::warn!(
                    "cannot remove the files earlier runs left in {}: {e:#}",
                    table.identifier()
                ),
            }
        }
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
