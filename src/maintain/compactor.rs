//! Compaction beside the pipeline. A round rewrites files on a thread of its own while the
//! pipeline goes on; the committer, between two of its commits, commits the finished round on top
//! of the table as it just left it (the files a round replaces are the pipeline's own, which no
//! append removes, so a round planned a few commits ago still applies), then starts the next
//! round. Ingestion never waits for a rewrite; it waits for the replace commit, which writes
//! manifests only.
//!
//! A round that fails, or whose commit is refused (another writer removed its files), is dropped
//! with its new files. A kill leaves the files of a round not yet committed: they carry the run's
//! id in their names, and the next run's orphan removal deletes them.

use std::collections::HashMap;
use std::sync::mpsc::Sender;

use anyhow::Result;
use iceberg::table::Table;
use tokio::sync::oneshot::{self, Receiver, error::TryRecvError};

use super::compaction::{CompactionSettings, Plan, Rewritten, plan, rewrite};
use super::shape::{Surveyor, TableShape};
use crate::failure::fail_point;
use crate::sink::{TableKind, Warehouse, on_this_runtime};

/// The snapshot-summary key of our `replace` snapshots: the run that compacted.
pub const COMPACTED_BY: &str = "sessionize.compacted-by";

/// Rounds a finished run may take to leave its tables compacted.
const FINAL_ROUNDS: usize = 32;

/// A round for the compaction thread, and where its outcome goes.
struct Round {
    table: Table,
    kind: TableKind,
    plan: Plan,
    file_prefix: String,
    done: oneshot::Sender<Result<Rewritten>>,
}

/// The committer's compaction: at most one round per table at a time.
pub struct Compactor {
    settings: CompactionSettings,
    run_id: String,
    rounds: u64,
    committed: HashMap<TableKind, u64>,
    running: HashMap<TableKind, Receiver<Result<Rewritten>>>,
    surveyors: HashMap<TableKind, Surveyor>,
    shapes: HashMap<TableKind, TableShape>,
    /// The compaction thread, started with the first round. It has a runtime of its own, kept
    /// for the run, so that connections it opens stay usable; it ends with the compactor.
    thread: Option<Sender<Round>>,
}

impl Compactor {
    pub fn new(settings: CompactionSettings, run_id: String) -> Self {
        Compactor {
            settings,
            run_id,
            rounds: 0,
            committed: HashMap::new(),
            running: HashMap::new(),
            surveyors: HashMap::new(),
            shapes: HashMap::new(),
            thread: None,
        }
    }

    /// Rounds committed so far.
    pub fn committed(&self) -> u64 {
        self.committed.values().sum()
    }

    /// Rounds of `kind`'s table committed so far.
    pub fn committed_of(&self, kind: TableKind) -> u64 {
        self.committed.get(&kind).copied().unwrap_or(0)
    }

    /// `kind`'s table as the last [`Compactor::after_commit`] left it.
    pub fn shape(&self, kind: TableKind) -> Option<TableShape> {
        self.shapes.get(&kind).copied()
    }

    /// Called after the commit of `epoch` left `kind`'s table as `table`: commits the table's
    /// finished round on top of it, and starts the next round if one is due. When `finishing`
    /// (the input has ended), waits for rounds and goes on until no partition has two small
    /// files.
    /// Returns the table as it now is.
    pub async fn after_commit(
        &mut self,
        warehouse: &Warehouse,
        kind: TableKind,
        mut table: Table,
        epoch: u64,
        finishing: bool,
    ) -> Table {
        // A finished run leaves each partition in as few files as it can: one below the target.
        let (rounds, settings) = if finishing && self.settings.min_files > 0 {
            let last = CompactionSettings {
                min_files: 2,
                ..self.settings
            };
            (FINAL_ROUNDS, last)
        } else {
            (1, self.settings)
        };
        for _ in 0..rounds {
            let mut busy = false;
            if let Some(mut round) = self.running.remove(&kind) {
                let finished = if finishing {
                    // Awaited, not blocked on: the round may need this runtime's connections.
                    (&mut round).await.map_err(|_| TryRecvError::Closed)
                } else {
                    round.try_recv()
                };
                match finished {
                    Err(TryRecvError::Empty) => {
                        self.running.insert(kind, round);
                        busy = true;
                    }
                    Err(TryRecvError::Closed) => {
                        tracing::warn!("a compaction round of {} stopped", table.identifier())
                    }
                    Ok(Err(e)) => {
                        tracing::warn!("a compaction round of {} failed: {e:#}", table.identifier())
                    }
                    Ok(Ok(rewritten)) => {
                        match self.commit(warehouse, kind, &table, rewritten).await {
                            Some(compacted) => table = compacted,
                            // The table changed under us: plan again on the table as it is next time.
                            None => busy = true,
                        }
                    }
                }
            }
            let survey = match self.surveyors.entry(kind).or_default().survey(&table).await {
                Ok(survey) => survey,
                Err(e) => {
                    tracing::warn!("cannot read the manifests of {}: {e:#}", table.identifier());
                    return table;
                }
            };
            self.shapes.insert(kind, survey.shape);
            if busy {
                return table;
            }
            match plan(&survey, settings) {
                Some(plan) => self.start(kind, &table, plan, epoch),
                None => return table,
            }
        }
        table
    }

    /// Commits a finished round on top of `table`; on failure, drops its files.
    async fn commit(
        &mut self,
        warehouse: &Warehouse,
        kind: TableKind,
        table: &Table,
        rewritten: Rewritten,
    ) -> Option<Table> {
        fail_point("before-compaction-commit");
        let properties = HashMap::from([(COMPACTED_BY.to_string(), self.run_id.clone())]);
        let (removed, added) = (rewritten.removed.len(), rewritten.added.len());
        let paths: Vec<String> = rewritten
            .added
            .iter()
            .map(|f| f.file_path().to_string())
            .collect();
        match warehouse
            .replace(table, &rewritten.removed, rewritten.added, properties)
            .await
        {
            Ok(compacted) => {
                fail_point("after-compaction-commit");
                *self.committed.entry(kind).or_default() += 1;
                tracing::info!(table = %table.identifier(), removed, added, "compacted");
                Some(compacted)
            }
            Err(e) => {
                tracing::warn!("cannot commit compaction of {}: {e:#}", table.identifier());
                for path in paths {
                    let _ = table.file_io().delete(&path).await;
                }
                None
            }
        }
    }

    /// Starts a round of `plan` on `table` on the compaction thread.
    fn start(&mut self, kind: TableKind, table: &Table, plan: Plan, epoch: u64) {
        self.rounds += 1;
        let (done, outcome) = oneshot::channel();
        let round = Round {
            table: table.clone(),
            kind,
            plan,
            // Named as the run's data files are, so that orphan removal knows them.
            file_prefix: format!("{}-w0-e{epoch}-compact{}", self.run_id, self.rounds),
            done,
        };
        let thread = match self.thread.take() {
            Some(thread) => Ok(thread),
            None => start_thread(),
        };
        match thread.and_then(|thread| {
            thread
                .send(round)
                .map_err(|_| anyhow::anyhow!("the compaction thread stopped"))?;
            Ok(thread)
        }) {
            Ok(thread) => {
                self.thread = Some(thread);
                self.running.insert(kind, outcome);
            }
            Err(e) => tracing::warn!("cannot compact: {e:#}"),
        }
    }
}

/// Starts the compaction thread, which rewrites rounds one after another.
fn start_thread() -> Result<Sender<Round>> {
    let (rounds, incoming) = std::sync::mpsc::channel::<Round>();
    let runtime = crate::sink::runtime()?;
    std::thread::Builder::new()
        .name("compaction".into())
        .spawn(move || {
            for round in incoming {
                let rewritten = runtime.block_on(async {
                    let table = on_this_runtime(&round.table)?;
                    rewrite(&table, round.kind, &round.plan, round.file_prefix).await
                });
                let _ = round.done.send(rewritten);
            }
        })?;
    Ok(rounds)
}
