//! Checkpoints and the start of a run: what each commit records, and how a run finds where the
//! previous one stopped.
//!
//! An epoch commits in this order, so that a kill at any instant leaves a state a restart can
//! finish exactly once:
//!
//! 1. every worker writes its session state to `checkpoints/<epoch dir>/part-w<i>.v2.bin`, and the
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

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::config::PipelineConfig;
use crate::rules::{Boundary, SavedEvent, SavedSession, SessionizerState};
use crate::sink::iceberg::{Mark, Warehouse, last_record, newest_mark, summary};
use crate::sink::tables::TableKind;
use crate::source::file::Fingerprint;
use crate::storage::WriteOnceFiles;
use crate::watermark::JumpGuard;

/// The format of the session state in checkpoint parts, in their file names
/// (`part-w<i>.<format>.bin`); parts without it predate session boundaries.
const PART_FORMAT: &str = "v2";

/// Session state as checkpoints held it before pending events carried a [`Boundary`], so that a
/// new release resumes from an older one's checkpoint.
#[derive(Deserialize)]
struct StateBeforeBoundaries {
    watermark: u64,
    open: Vec<SavedSession>,
    pending: Vec<EventBeforeBoundaries>,
    recent_ids: Vec<(u64, u128)>,
}

#[derive(Deserialize)]
struct EventBeforeBoundaries {
    user_id: String,
    event_id: String,
    page_name: Option<String>,
    time_ms: u64,
}

impl StateBeforeBoundaries {
    fn upgrade(self) -> SessionizerState {
        let pending = self.pending.into_iter().map(|e| SavedEvent {
            user_id: e.user_id,
            event_id: e.event_id,
            page_name: e.page_name,
            time_ms: e.time_ms,
            boundary: Boundary::NONE,
        });
        SessionizerState {
            watermark: self.watermark,
            open: self.open,
            pending: pending.collect(),
            recent_ids: self.recent_ids,
        }
    }
}

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
    /// Events too far ahead to move `max_event_ms` yet (a device with a bad clock, or a jump
    /// not yet confirmed).
    #[serde(default)]
    pub jump_guard: JumpGuard,
    /// A file's identity, by which a later run finds it under any path.
    #[serde(default)]
    pub fingerprint: Option<Fingerprint>,
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

/// A partition's position as a snapshot summary records it (`sessionize.positions`, by partition).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedPosition {
    pub source: String,
    pub next_offset: u64,
    pub next_line: u64,
    pub max_event_ms: Option<u64>,
    #[serde(default)]
    pub watermark_ms: u64,
    pub finished: bool,
    #[serde(default, skip_serializing_if = "JumpGuard::is_empty")]
    pub jump_guard: JumpGuard,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
}

impl RecordedPosition {
    /// The positions a commit's record names, by partition.
    pub fn all_in(record: &HashMap<String, String>) -> Result<BTreeMap<u32, RecordedPosition>> {
        let Some(json) = record.get(summary::POSITIONS) else {
            return Ok(BTreeMap::new());
        };
        let by_name: BTreeMap<String, RecordedPosition> =
            serde_json::from_str(json).context("the snapshot's positions")?;
        by_name
            .into_iter()
            .map(|(partition, position)| {
                let partition = partition.parse().context("a partition number")?;
                Ok((partition, position))
            })
            .collect()
    }
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

/// The checkpoints of a table: `<checkpoint location>/<database>.<table>/`, by default under
/// `<warehouse>/_sessionize/`, on a local disk or on S3 (see [`WriteOnceFiles`]).
pub struct CheckpointStore {
    files: WriteOnceFiles,
}

const SIDE_FILES: &str = "side-files.json";

impl CheckpointStore {
    pub fn new(config: &PipelineConfig) -> Result<Self> {
        let location = config
            .checkpoint_location()
            .join(&format!("{}.{}", config.database, config.table));
        Ok(CheckpointStore {
            files: WriteOnceFiles::open(&location, &config.catalog.options)?,
        })
    }

    /// The directory of an epoch's checkpoint, relative to the store: unique per run, so that a
    /// run never overwrites what another has committed.
    pub fn epoch_dir(epoch: u64, run_id: &str) -> String {
        format!("checkpoints/e{epoch:012}-{run_id}")
    }

    /// Writes a worker's state once; returns its part record.
    pub fn write_part(
        &self,
        dir: &str,
        worker: usize,
        state: &impl Serialize,
        open_sessions: u64,
        duplicates: u64,
    ) -> Result<CheckpointPart> {
        let file = format!("part-w{worker}.{PART_FORMAT}.bin");
        let bytes = self.files.create(&format!("{dir}/{file}"), |out| {
            bincode::serialize_into(out, state).map_err(std::io::Error::other)
        })?;
        Ok(CheckpointPart {
            worker,
            bytes,
            file,
            open_sessions,
            duplicates,
        })
    }

    pub fn read_part(&self, checkpoint: &CheckpointRef, file: &str) -> Result<SessionizerState> {
        Ok(self.read_part_sized(checkpoint, file)?.0)
    }

    /// Where a file of the store is, for people.
    pub fn display(&self, name: &str) -> String {
        self.files.display(name)
    }

    /// A part's state and its size in bytes.
    pub fn read_part_sized(
        &self,
        checkpoint: &CheckpointRef,
        file: &str,
    ) -> Result<(SessionizerState, u64)> {
        let name = format!("{}/{file}", checkpoint.dir);
        let input = self.files.read(&name)?.with_context(|| {
            format!(
                "the checkpoint {} named by the table's newest snapshot is missing: every \
                 process must reach the same checkpoint location, and checkpoints must not be \
                 deleted by hand; restore the file, or replay from scratch into a new table",
                self.files.display(&name)
            )
        })?;
        let mut input = CountingReader {
            inner: input,
            bytes: 0,
        };
        let state = if file.ends_with(&format!(".{PART_FORMAT}.bin")) {
            bincode::deserialize_from(&mut input)
        } else {
            bincode::deserialize_from(&mut input).map(StateBeforeBoundaries::upgrade)
        };
        let state = state.with_context(|| {
            format!(
                "the checkpoint {} is damaged (truncated or overwritten outside sessionize); \
                 restore the file, or replay from scratch into a new table",
                self.files.display(&name)
            )
        })?;
        // bincode reads what the state needs, which is the whole part; whatever follows counts.
        std::io::copy(&mut input, &mut std::io::sink())?;
        Ok((state, input.bytes))
    }

    pub fn write_side_files(&self, dir: &str, side: &SideFiles) -> Result<()> {
        self.files.create(&format!("{dir}/{SIDE_FILES}"), |out| {
            serde_json::to_writer(out, side).map_err(std::io::Error::other)
        })?;
        Ok(())
    }

    pub fn read_side_files(&self, dir: &str) -> Result<SideFiles> {
        let name = format!("{dir}/{SIDE_FILES}");
        let input = self.files.read(&name)?.with_context(|| {
            format!(
                "cannot read {}: the checkpoint is incomplete",
                self.files.display(&name)
            )
        })?;
        serde_json::from_reader(input)
            .with_context(|| format!("{} is unreadable", self.files.display(&name)))
    }

    /// Removes the checkpoint directories of epochs before `epoch`: the newest snapshot names a
    /// checkpoint of `epoch`, and a directory of a later epoch may belong to a run still writing
    /// it.
    pub fn remove_before(&self, epoch: u64) {
        let directories = match self.files.directories("checkpoints") {
            Ok(directories) => directories,
            Err(e) => {
                tracing::warn!("cannot list old checkpoints: {e:#}");
                return;
            }
        };
        for name in directories {
            let older = name
                .strip_prefix('e')
                .and_then(|n| n.get(..12)?.parse::<u64>().ok())
                .is_some_and(|e| e < epoch);
            if older && let Err(e) = self.files.remove_directory(&format!("checkpoints/{name}")) {
                tracing::warn!("cannot remove an old checkpoint: {e:#}");
            }
        }
    }
}

/// A reader that counts the bytes it read.
struct CountingReader<R> {
    inner: R,
    bytes: u64,
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.bytes += read as u64;
        Ok(read)
    }
}

/// Where a run starts: read from the sessions table's newest snapshot of ours.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StartState {
    /// The first epoch this run commits.
    pub epoch: u64,
    /// Positions of the partitions to resume, by partition.
    pub positions: BTreeMap<u32, SourcePosition>,
    /// The watermark the restored sessions have seen.
    pub watermark_ms: u64,
    /// The checkpoint to restore, if any.
    pub checkpoint: Option<CheckpointRef>,
    /// The checkpoint directory of the last commit, whose side-table files a run completes even
    /// when it starts afresh.
    pub last_checkpoint_dir: Option<String>,
    pub last_commit: Option<Mark>,
    /// The fingerprint of each input file of this run, by partition.
    pub fingerprints: BTreeMap<u32, Fingerprint>,
}

impl StartState {
    /// Reads the newest snapshot of ours in the sessions table's history (snapshots of other
    /// tools on top of it are skipped). With `restore` false (explicit start offsets), only the
    /// epoch numbering continues: positions and state start afresh.
    pub async fn load(
        warehouse: &Warehouse,
        config: &PipelineConfig,
        restore: bool,
    ) -> Result<StartState> {
        let heads: Vec<Option<Vec<u8>>> = match config.kafka {
            Some(_) => Vec::new(),
            None => config
                .inputs
                .iter()
                .map(|path| {
                    (path != "-")
                        .then(|| Fingerprint::read_head(path))
                        .transpose()
                })
                .collect::<std::io::Result<_>>()?,
        };
        let mut start = Self::load_positions(warehouse, config, restore, &heads).await?;
        for (partition, head) in heads.iter().enumerate() {
            let partition = partition as u32;
            let recorded = start.positions.get(&partition).and_then(|p| p.fingerprint);
            if let Some(fingerprint) = recorded.or(head.as_deref().map(Fingerprint::of_head)) {
                start.fingerprints.insert(partition, fingerprint);
            }
        }
        Ok(start)
    }

    async fn load_positions(
        warehouse: &Warehouse,
        config: &PipelineConfig,
        restore: bool,
        heads: &[Option<Vec<u8>>],
    ) -> Result<StartState> {
        let table = warehouse.load(TableKind::Sessions).await?;
        let Some(props) = last_record(&table) else {
            if table.metadata().current_snapshot().is_some() && restore {
                bail!(
                    "table {} has snapshots but none written by sessionize (were they expired?), \
                     so where to resume is unknown; start explicitly with --start-offsets or \
                     --start-timestamp (Kafka), or give another --iceberg-table",
                    warehouse.ident(TableKind::Sessions)
                );
            }
            return Ok(StartState::default());
        };
        let last_commit =
            Mark::from_record(&props).context("the table's record of its last commit")?;
        let current_rules = config.rules_record();
        if let Some(recorded) = props.get(summary::RULES)
            && *recorded != current_rules
        {
            let current = current_rules;
            if !config.allow_rule_change {
                bail!(
                    "table {} was written under the session rules {recorded}, and this run has \
                     {current}: start with the same --inactivity-timeout, --max-session-duration, \
                     --end-session-on and --start-session-on, or pass --allow-rule-change to \
                     apply the new rules from where the table stands",
                    warehouse.ident(TableKind::Sessions)
                );
            }
            tracing::warn!(from = %recorded, to = %current, "session rules changed (--allow-rule-change)");
            let rules = HashMap::from([(summary::RULES.to_string(), current)]);
            warehouse.set_properties(TableKind::Sessions, rules).await?;
        }
        let checkpoint: Option<CheckpointRef> = props
            .get(summary::CHECKPOINT)
            .map(|json| serde_json::from_str(json))
            .transpose()
            .context("the snapshot's checkpoint name")?;
        let mut start = StartState {
            epoch: last_commit.epoch + 1,
            last_checkpoint_dir: checkpoint.as_ref().map(|c| c.dir.clone()),
            last_commit: Some(last_commit),
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
        let mut taken = vec![false; heads.len()];
        for (partition, position) in recorded {
            let partition: u32 = partition.parse().context("a partition number")?;
            let (partition, finished) = if kafka {
                if position.source != config.source_name(partition) {
                    continue;
                }
                // A bounded Kafka run ends at the offsets of its time; a later run reads on.
                (partition, false)
            } else {
                let Some((input, grown)) = find_input(config, heads, &mut taken, &position)? else {
                    continue;
                };
                (input, position.finished && !grown)
            };
            start.positions.insert(
                partition,
                SourcePosition {
                    partition,
                    next_offset: position.next_offset,
                    next_line: position.next_line,
                    max_event_ms: position.max_event_ms,
                    watermark_ms: position.watermark_ms,
                    finished,
                    // Commits made before the guard existed start it at the newest event time.
                    jump_guard: match position.jump_guard.newest() {
                        Some(_) => position.jump_guard,
                        None => JumpGuard::starting_at(position.max_event_ms),
                    },
                    fingerprint: position.fingerprint,
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
        start.checkpoint = checkpoint;
        Ok(start)
    }

    /// Commits the side tables' files of the last commit if the run that wrote them stopped
    /// between the sessions commit and theirs, on every start (an explicit start too). Run once,
    /// by process 0, before the workers start; a pipeline doing the same at the same moment
    /// cannot make it twice ([`Warehouse::commit_once`]).
    pub async fn complete_side_tables(
        &self,
        warehouse: &Warehouse,
        store: &CheckpointStore,
        config: &PipelineConfig,
    ) -> Result<()> {
        let (Some(last), Some(dir)) = (&self.last_commit, &self.last_checkpoint_dir) else {
            return Ok(());
        };
        let mut side: Option<SideFiles> = None;
        for kind in [TableKind::Quarantine, TableKind::LateEvents] {
            let table = warehouse.load(kind).await?;
            let committed = newest_mark(&table);
            match &committed {
                Some(mark) if mark == last => continue,
                Some(mark) if mark.epoch >= last.epoch => bail!(
                    "table {} is at epoch {} of run {}, not behind the sessions table (epoch {} \
                     of run {}): another pipeline writes it",
                    warehouse.ident(kind),
                    mark.epoch,
                    mark.run_id,
                    last.epoch,
                    last.run_id
                ),
                _ => {}
            }
            if side.is_none() {
                side = Some(store.read_side_files(dir)?);
            }
            let files = side
                .as_ref()
                .and_then(|s| s.files.get(&kind))
                .map_or(&[][..], Vec::as_slice);
            if files.is_empty() {
                // The epoch had no rows for this table: it never gets a snapshot.
                continue;
            }
            tracing::info!(table = %warehouse.ident(kind), epoch = last.epoch, "completing an interrupted commit");
            warehouse
                .commit_once(
                    kind,
                    table,
                    files,
                    side_properties(last),
                    last,
                    committed.as_ref(),
                    config.retain_snapshots,
                )
                .await?;
        }
        Ok(())
    }
}

/// The input of this run that is the file a recorded position belongs to (found by its
/// fingerprint, under whatever path), and whether it has grown since (appended lines are read
/// on). Another file under the recorded name is an error, not a silent re-read.
fn find_input(
    config: &PipelineConfig,
    heads: &[Option<Vec<u8>>],
    taken: &mut [bool],
    position: &RecordedPosition,
) -> Result<Option<(u32, bool)>> {
    let found = (0..heads.len()).find(|&i| {
        !taken[i]
            && match (&position.fingerprint, &heads[i]) {
                (Some(fingerprint), Some(head)) => fingerprint.matches(head),
                // Recorded before fingerprints: by name.
                (None, _) => config.inputs[i] == position.source,
                (Some(_), None) => false,
            }
    });
    let Some(input) = found else {
        if let Some(same_name) = config
            .inputs
            .iter()
            .find(|path| **path == position.source && *path != "-")
        {
            bail!(
                "input {same_name:?} is not the file this table read under that name (its first \
                 bytes differ): a file replaced or rewritten is not re-read silently; give it \
                 another name to read it as new input, or write to another --iceberg-table"
            );
        }
        return Ok(None);
    };
    taken[input] = true;
    let path = &config.inputs[input];
    if path == "-" {
        return Ok(Some((input as u32, false)));
    }
    let length = std::fs::metadata(path)
        .with_context(|| format!("cannot read input {path:?}"))?
        .len();
    if length < position.next_offset {
        bail!(
            "input {path:?} is shorter ({length} bytes) than when this table read it ({} \
             bytes): it was truncated or replaced; give another --iceberg-table to read it \
             afresh",
            position.next_offset
        );
    }
    Ok(Some((input as u32, length > position.next_offset)))
}

/// The summary of a side-table commit.
pub fn side_properties(mark: &Mark) -> HashMap<String, String> {
    HashMap::from([
        (summary::EPOCH.to_string(), mark.epoch.to_string()),
        (summary::RUN_ID.to_string(), mark.run_id.clone()),
    ])
}

/// The summary of a sessions-table commit: the commit point of an epoch.
pub fn sessions_properties(
    epoch: u64,
    run_id: &str,
    watermark_ms: u64,
    positions: &BTreeMap<u32, SourcePosition>,
    config: &PipelineConfig,
    checkpoint: &CheckpointRef,
) -> HashMap<String, String> {
    let positions: BTreeMap<String, RecordedPosition> = positions
        .values()
        .map(|p| {
            (
                p.partition.to_string(),
                RecordedPosition {
                    source: config.source_name(p.partition).to_string(),
                    next_offset: p.next_offset,
                    next_line: p.next_line,
                    max_event_ms: p.max_event_ms,
                    watermark_ms: p.watermark_ms,
                    finished: p.finished,
                    jump_guard: p.jump_guard.clone(),
                    fingerprint: p.fingerprint,
                },
            )
        })
        .collect();
    HashMap::from([
        (summary::EPOCH.to_string(), epoch.to_string()),
        (summary::RUN_ID.to_string(), run_id.to_string()),
        (summary::WATERMARK_MS.to_string(), watermark_ms.to_string()),
        (summary::RULES.to_string(), config.rules_record()),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A part written before pending events carried boundaries, in that release's layout.
    #[derive(Serialize)]
    struct OldState {
        watermark: u64,
        open: Vec<SavedSession>,
        pending: Vec<(String, String, Option<String>, u64)>,
        recent_ids: Vec<(u64, u128)>,
    }

    #[test]
    fn reads_parts_of_the_release_before_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(&PipelineConfig::new(vec![], dir.path())).unwrap();
        let checkpoint = CheckpointRef {
            dir: CheckpointStore::epoch_dir(3, "r"),
            parts: vec!["part-w0.bin".into()],
        };
        let old = OldState {
            watermark: 7,
            open: vec![],
            pending: vec![("u".into(), "e".into(), Some("home".into()), 9)],
            recent_ids: vec![(9, 42)],
        };
        let part = format!("{}/part-w0.bin", checkpoint.dir);
        let old = bincode::serialize(&old).unwrap();
        store
            .files
            .create(&part, |out| out.write_all(&old))
            .unwrap();
        let state = store.read_part(&checkpoint, "part-w0.bin").unwrap();
        assert_eq!((state.watermark, &state.recent_ids), (7, &vec![(9, 42)]));
        assert_eq!(state.pending[0].page_name.as_deref(), Some("home"));
        assert_eq!(state.pending[0].boundary, Boundary::NONE);

        let written = store.write_part(&checkpoint.dir, 1, &state, 0, 0).unwrap();
        assert!(written.file.ends_with(".v2.bin"));
        assert_eq!(store.read_part(&checkpoint, &written.file).unwrap(), state);
    }
}
