//! Checkpoints and the start of a run: what each commit records, and how a run finds where the
//! previous one stopped.
//!
//! An epoch commits in this order, so that a kill at any instant leaves a state a restart can
//! finish exactly once:
//!
//! 1. every worker writes its session state to `checkpoints/<epoch dir>/part-w<i>.bin`, and the
//!    committer writes the epoch's side-table files to `side-files.json`, all synced to disk;
//! 2. the sessions table commits its files in one snapshot whose summary names the epoch, every
//!    partition's next offset and the checkpoint: this is the commit point;
//! 3. the quarantine and late-events tables commit their files, their summaries naming the epoch;
//! 4. older checkpoint directories are removed.
//!
//! A restart reads the sessions table's newest summary, commits the side tables' files of that
//! epoch if step 3 did not happen, restores the checkpoint (keyed by user, so any number of
//! workers can) and reads on from the recorded offsets. Files written for an epoch that never
//! committed are left unreferenced.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::config::PipelineConfig;
use crate::rules::SessionizerState;
use crate::sink::iceberg::{Warehouse, summary};
use crate::sink::tables::TableKind;

/// Where a partition stands at the end of an epoch, and what it saw during the epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    pub partition: u32,
    /// The next byte of a file, or the next record offset of a Kafka partition.
    pub next_offset: u64,
    /// The next line number of a file.
    pub next_line: u64,
    pub max_event_ms: Option<u64>,
    pub watermark_ms: u64,
    pub finished: bool,
    #[serde(skip)]
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

/// A partition's position as a snapshot summary records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RecordedPosition {
    source: String,
    next_offset: u64,
    next_line: u64,
    max_event_ms: Option<u64>,
    #[serde(default)]
    watermark_ms: u64,
    finished: bool,
}

/// The checkpoint a snapshot names: a directory under the store and its part files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRef {
    pub dir: String,
    pub parts: Vec<String>,
}

/// One worker's part of an epoch's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointPart {
    pub worker: usize,
    pub file: String,
    pub bytes: u64,
    pub open_sessions: u64,
    /// Events this worker dropped as duplicates during the epoch.
    pub duplicates: u64,
}

/// The side tables' files of an epoch, kept until the next epoch commits.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SideFiles {
    pub epoch: u64,
    pub files: BTreeMap<TableKind, Vec<String>>,
}

/// The checkpoint directory of a table: `<warehouse>/_sessionize/<database>.<table>/`.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    root: PathBuf,
}

const SIDE_FILES: &str = "side-files.json";

impl CheckpointStore {
    pub fn new(config: &PipelineConfig) -> Self {
        CheckpointStore {
            root: config
                .warehouse
                .join("_sessionize")
                .join(format!("{}.{}", config.database, config.table)),
        }
    }

    /// The directory of an epoch's checkpoint, relative to the store: unique per run, so that a
    /// run never overwrites what another has committed.
    pub fn epoch_dir(epoch: u64, run_id: &str) -> String {
        format!("checkpoints/e{epoch:012}-{run_id}")
    }

    /// Writes a worker's state and syncs it; returns its part record.
    pub fn write_part(
        &self,
        dir: &str,
        worker: usize,
        state: &impl Serialize,
        open_sessions: u64,
        duplicates: u64,
    ) -> Result<CheckpointPart> {
        let file = format!("part-w{worker}.bin");
        let path = self.root.join(dir).join(&file);
        write_synced(&path, |out| {
            bincode::serialize_into(out, state).map_err(std::io::Error::other)
        })?;
        Ok(CheckpointPart {
            worker,
            bytes: std::fs::metadata(&path)?.len(),
            file,
            open_sessions,
            duplicates,
        })
    }

    pub fn read_part(&self, checkpoint: &CheckpointRef, file: &str) -> Result<SessionizerState> {
        let path = self.root.join(&checkpoint.dir).join(file);
        let input = File::open(&path).with_context(|| {
            format!(
                "the checkpoint {} named by the table's newest snapshot is missing",
                path.display()
            )
        })?;
        bincode::deserialize_from(BufReader::new(input))
            .with_context(|| format!("the checkpoint {} is unreadable", path.display()))
    }

    pub fn write_side_files(&self, dir: &str, side: &SideFiles) -> Result<()> {
        write_synced(&self.root.join(dir).join(SIDE_FILES), |out| {
            serde_json::to_writer(out, side).map_err(std::io::Error::other)
        })
    }

    pub fn read_side_files(&self, dir: &str) -> Result<SideFiles> {
        let path = self.root.join(dir).join(SIDE_FILES);
        let input = File::open(&path).with_context(|| {
            format!(
                "cannot read {}: the checkpoint is incomplete",
                path.display()
            )
        })?;
        serde_json::from_reader(BufReader::new(input))
            .with_context(|| format!("{} is unreadable", path.display()))
    }

    /// Removes the checkpoint directories of epochs before `epoch`: the newest snapshot names a
    /// checkpoint of `epoch`, and a directory of a later epoch may belong to a run still writing
    /// it.
    pub fn remove_before(&self, epoch: u64) {
        let Ok(entries) = std::fs::read_dir(self.root.join("checkpoints")) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let older = name
                .to_str()
                .and_then(|n| n.strip_prefix('e')?.get(..12)?.parse::<u64>().ok())
                .is_some_and(|e| e < epoch);
            if older && let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(
                    "cannot remove old checkpoint {}: {e}",
                    entry.path().display()
                );
            }
        }
    }
}

fn write_synced(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&File>) -> std::io::Result<()>,
) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let file = File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, &file);
    write(&mut out).with_context(|| format!("cannot write {}", path.display()))?;
    out.flush()?;
    drop(out);
    file.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))
}

/// The last commit a run builds on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastCommit {
    pub epoch: u64,
    pub run_id: String,
}

/// Where a run starts: read from the sessions table's newest snapshot.
#[derive(Debug, Clone, Default)]
pub struct StartState {
    /// The first epoch this run commits.
    pub epoch: u64,
    /// Positions of the partitions to resume, by partition.
    pub positions: BTreeMap<u32, SourcePosition>,
    /// The watermark the restored sessions have seen.
    pub watermark_ms: u64,
    /// The checkpoint to restore, if any.
    pub checkpoint: Option<CheckpointRef>,
    pub last_commit: Option<LastCommit>,
}

impl StartState {
    /// Reads the newest snapshot of the sessions table. With `restore` false (explicit start
    /// offsets), only the epoch numbering continues: positions and state start afresh.
    pub async fn load(
        warehouse: &Warehouse,
        config: &PipelineConfig,
        restore: bool,
    ) -> Result<StartState> {
        let table = warehouse.load(TableKind::Sessions).await?;
        let Some(snapshot) = table.metadata().current_snapshot() else {
            return Ok(StartState::default());
        };
        let props = &snapshot.summary().additional_properties;
        let Some(epoch) = props.get(summary::EPOCH) else {
            bail!(
                "table {} has snapshots that sessionize did not write; give another \
                 --iceberg-table",
                warehouse.ident(TableKind::Sessions)
            );
        };
        let epoch: u64 = epoch
            .parse()
            .context("the snapshot's epoch is not a number")?;
        let last_commit = Some(LastCommit {
            epoch,
            run_id: props.get(summary::RUN_ID).cloned().unwrap_or_default(),
        });
        let mut start = StartState {
            epoch: epoch + 1,
            last_commit,
            ..StartState::default()
        };
        if !restore {
            return Ok(start);
        }
        let recorded: BTreeMap<String, RecordedPosition> = match props.get(summary::POSITIONS) {
            Some(json) => serde_json::from_str(json).context("the snapshot's positions")?,
            None => BTreeMap::new(),
        };
        let kafka = config.kafka.is_some();
        for (partition, position) in recorded {
            let partition: u32 = partition.parse().context("a partition number")?;
            if position.source != config.source_name(partition) {
                continue;
            }
            start.positions.insert(
                partition,
                SourcePosition {
                    partition,
                    next_offset: position.next_offset,
                    next_line: position.next_line,
                    max_event_ms: position.max_event_ms,
                    watermark_ms: position.watermark_ms,
                    // A bounded Kafka run ends at the offsets of its time; a later run reads on.
                    finished: position.finished && !kafka,
                    counts: SourceCounts::default(),
                },
            );
        }
        if start.positions.is_empty() {
            // Another source: its state does not apply.
            return Ok(start);
        }
        start.watermark_ms = start
            .positions
            .values()
            .filter(|p| !p.finished)
            .map(|p| p.watermark_ms)
            .min()
            .unwrap_or(0);
        if let Some(json) = props.get(summary::CHECKPOINT) {
            start.checkpoint = Some(serde_json::from_str(json).context("the checkpoint name")?);
        }
        Ok(start)
    }

    /// Commits the side tables' files of the start epoch if the run that wrote them stopped
    /// between the sessions commit and theirs. Run once, by process 0, before the workers start.
    pub async fn complete_side_tables(
        &self,
        warehouse: &Warehouse,
        store: &CheckpointStore,
    ) -> Result<()> {
        let (Some(last), Some(checkpoint)) = (&self.last_commit, &self.checkpoint) else {
            return Ok(());
        };
        let mut side: Option<SideFiles> = None;
        for kind in [TableKind::Quarantine, TableKind::LateEvents] {
            let table = warehouse.load(kind).await?;
            let committed = table
                .metadata()
                .current_snapshot()
                .and_then(|s| s.summary().additional_properties.get(summary::EPOCH))
                .and_then(|e| e.parse::<u64>().ok());
            match committed {
                Some(epoch) if epoch == last.epoch => continue,
                Some(epoch) if epoch > last.epoch => bail!(
                    "table {} is at epoch {epoch}, ahead of the sessions table (epoch {}): \
                     another pipeline writes it",
                    warehouse.ident(kind),
                    last.epoch
                ),
                _ => {}
            }
            if side.is_none() {
                side = Some(store.read_side_files(&checkpoint.dir)?);
            }
            let files = side
                .as_ref()
                .and_then(|s| s.files.get(&kind))
                .map_or(&[][..], Vec::as_slice);
            tracing::info!(table = %warehouse.ident(kind), epoch = last.epoch, "completing an interrupted commit");
            warehouse
                .commit(kind, files, side_properties(last.epoch, &last.run_id))
                .await?;
        }
        Ok(())
    }
}

/// The summary of a side-table commit.
pub fn side_properties(epoch: u64, run_id: &str) -> HashMap<String, String> {
    HashMap::from([
        (summary::EPOCH.to_string(), epoch.to_string()),
        (summary::RUN_ID.to_string(), run_id.to_string()),
    ])
}

/// The summary of a sessions-table commit: the commit point of an epoch.
pub fn sessions_properties(
    epoch: u64,
    run_id: &str,
    watermark_ms: u64,
    positions: &BTreeMap<u32, SourcePosition>,
    source_name: impl Fn(u32) -> String,
    checkpoint: &CheckpointRef,
) -> HashMap<String, String> {
    let positions: BTreeMap<String, RecordedPosition> = positions
        .values()
        .map(|p| {
            (
                p.partition.to_string(),
                RecordedPosition {
                    source: source_name(p.partition),
                    next_offset: p.next_offset,
                    next_line: p.next_line,
                    max_event_ms: p.max_event_ms,
                    watermark_ms: p.watermark_ms,
                    finished: p.finished,
                },
            )
        })
        .collect();
    HashMap::from([
        (summary::EPOCH.to_string(), epoch.to_string()),
        (summary::RUN_ID.to_string(), run_id.to_string()),
        (summary::WATERMARK_MS.to_string(), watermark_ms.to_string()),
        (
            summary::POSITIONS.to_string(),
            serde_json::to_string(&positions).expect("positions serialize"),
        ),
        (
            summary::CHECKPOINT.to_string(),
            serde_json::to_string(checkpoint).expect("checkpoint names serialize"),
        ),
    ])
}
