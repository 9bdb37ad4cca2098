//! Where a run starts: the sessions table's newest commit of ours names the epoch, every
//! partition's position and the checkpoint to restore. [`prepare`] is the one entry point:
//! process 0 calls it once for the cluster, before any worker starts.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::checkpoint::{CheckpointRef, CheckpointStore, SideFiles};
use super::position::{RecordedPosition, SourcePosition};
use super::protocol::{TableCommit, commit_once};
use super::record::{
    Mark, last_record, newest_mark, recorded_positions, recorded_topic, rolled_back_from,
    side_properties, snapshot_before_epoch, summary,
};
use crate::config::PipelineConfig;
use crate::sink::{TableKind, Warehouse};
use crate::source::file::Fingerprint;
use crate::source::kafka::{TopicIdentity, resume_offsets};

/// Prepares the tables and decides where the run starts: creates (or evolves) the tables, reads
/// the newest commit, and completes the side tables of an interrupted commit. With `restore`
/// false (explicit start offsets), only the epoch numbering continues.
pub async fn prepare(
    warehouse: &Warehouse,
    config: &PipelineConfig,
    restore: bool,
) -> Result<StartState> {
    warehouse.ensure_tables(config.buckets).await?;
    let start = StartState::load(warehouse, config, restore).await?;
    let store = CheckpointStore::new(config, &start.table_uuid)?;
    start
        .complete_side_tables(warehouse, &store, config)
        .await?;
    Ok(start)
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
    /// Our last commit before the sessions table was rolled back to `last_commit`, if it was.
    pub rolled_back_from: Option<Mark>,
    /// The sessions table's UUID, under which its checkpoints are kept.
    pub table_uuid: uuid::Uuid,
    /// The fingerprint of each input file of this run, by partition.
    pub fingerprints: BTreeMap<u32, Fingerprint>,
    /// The Kafka topic's identity as the broker gave it at start; every commit records it.
    #[serde(default)]
    pub topic: Option<TopicIdentity>,
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
        let table = warehouse.load(TableKind::Sessions).await?;
        let record = last_record(&table);
        match &record {
            None if table.metadata().current_snapshot().is_some() && restore => bail!(
                "table {} has snapshots but none written by sessionize (were they expired?), \
                 so where to resume is unknown; start explicitly with --start-offsets or \
                 --start-timestamp (Kafka), or give another --iceberg-table",
                warehouse.ident(TableKind::Sessions)
            ),
            None => {}
            Some(props) => check_rules(warehouse, config, props).await?,
        }
        let mut start = match &record {
            Some(props) => StartState::resume(props, config, restore, &heads)?,
            None => StartState::default(),
        };
        start.table_uuid = table.metadata().uuid();
        start.rolled_back_from = rolled_back_from(&table);
        if let Some(from) = &start.rolled_back_from {
            tracing::warn!(
                table = %warehouse.ident(TableKind::Sessions),
                "the table was rolled back from epoch {} of run {} to {}: reading again what \
                 the rollback removed",
                from.epoch,
                from.run_id,
                start.last_commit.as_ref().map_or("before its first commit".to_string(), |m| {
                    format!("epoch {} of run {}", m.epoch, m.run_id)
                })
            );
        }
        if let Some(kafka) = &config.kafka {
            // Recorded offsets are checked against the topic as it is now, never taken blindly.
            let recorded = record.as_ref().map(recorded_topic).transpose()?.flatten();
            let offsets = start
                .positions
                .iter()
                .map(|(partition, position)| (*partition, position.next_offset))
                .collect();
            let (topic, resumed) = resume_offsets(&kafka.settings, &offsets, recorded.as_ref())?;
            for (partition, offset) in resumed {
                if let Some(position) = start.positions.get_mut(&partition) {
                    position.next_offset = offset;
                }
            }
            start.topic = Some(topic);
        }
        for (partition, head) in heads.iter().enumerate() {
            let partition = partition as u32;
            let recorded = start.positions.get(&partition).and_then(|p| p.fingerprint);
            if let Some(fingerprint) = recorded.or(head.as_deref().map(Fingerprint::of_head)) {
                start.fingerprints.insert(partition, fingerprint);
            }
        }
        Ok(start)
    }

    /// Where a run resumes from the record of the last commit: its epoch, and (with `restore`)
    /// the positions of this run's partitions and the checkpoint. Kafka partitions are matched by
    /// topic name; files by their fingerprint (`heads` are the first bytes of this run's inputs),
    /// so that a file read under another path resumes and another file under a known path is
    /// refused.
    pub fn resume(
        record: &HashMap<String, String>,
        config: &PipelineConfig,
        restore: bool,
        heads: &[Option<Vec<u8>>],
    ) -> Result<StartState> {
        let last_commit =
            Mark::from_record(record).context("the table's record of its last commit")?;
        let checkpoint: Option<CheckpointRef> = record
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
        let kafka = config.kafka.is_some();
        let mut taken = vec![false; heads.len()];
        for (partition, position) in recorded_positions(record)? {
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
            start
                .positions
                .insert(partition, position.resume(partition, finished));
        }
        if start.positions.is_empty() {
            // Another source: its state does not apply.
            return Ok(start);
        }
        start.watermark_ms = start
            .positions
            .values()
            .filter(|p| !p.finished)
            .map(|p| p.clock.watermark_ms)
            .min()
            .unwrap_or(0);
        start.checkpoint = checkpoint;
        Ok(start)
    }

    /// Commits the side tables' files of the last commit if the run that wrote them stopped
    /// between the sessions commit and theirs, on every start (an explicit start too). Run once,
    /// by process 0, before the workers start; a pipeline doing the same at the same moment
    /// cannot make it twice ([`commit_once`]).
    pub async fn complete_side_tables(
        &self,
        warehouse: &Warehouse,
        store: &CheckpointStore,
        config: &PipelineConfig,
    ) -> Result<()> {
        let mut side: Option<SideFiles> = None;
        for kind in [TableKind::Quarantine, TableKind::LateEvents] {
            let table = warehouse.load(kind).await?;
            let committed = newest_mark(&table);
            let ahead = match (&committed, &self.last_commit) {
                (Some(mark), Some(last)) => mark != last && mark.epoch >= last.epoch,
                (Some(_), None) => self.rolled_back_from.is_some(),
                (None, _) => false,
            };
            if let (true, Some(mark)) = (ahead, &committed) {
                bail!("{}", self.side_table_ahead(warehouse, kind, &table, mark));
            }
            let (Some(last), Some(dir)) = (&self.last_commit, &self.last_checkpoint_dir) else {
                continue;
            };
            if committed.as_ref() == Some(last) {
                continue;
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
            let commit = TableCommit {
                kind,
                files,
                properties: side_properties(last),
                mark: last,
                previous: committed.as_ref(),
                corrections: None,
            };
            commit_once(warehouse, table, commit, config.retain_snapshots).await?;
        }
        Ok(())
    }

    /// Why a run cannot start when a side table holds commits the sessions table does not.
    fn side_table_ahead(
        &self,
        warehouse: &Warehouse,
        kind: TableKind,
        table: &iceberg::table::Table,
        mark: &Mark,
    ) -> String {
        let ident = warehouse.ident(kind);
        let sessions = warehouse.ident(TableKind::Sessions);
        let Some(from) = &self.rolled_back_from else {
            let last = self
                .last_commit
                .as_ref()
                .expect("a side table is ahead of a commit");
            return format!(
                "table {ident} is at epoch {} of run {}, not behind the sessions table (epoch {} \
                 of run {}): another pipeline writes it",
                mark.epoch, mark.run_id, last.epoch, last.run_id
            );
        };
        let epoch = self.last_commit.as_ref().map(|m| m.epoch);
        let target = epoch.and_then(|epoch| snapshot_before_epoch(table, epoch));
        let to = match (epoch, target) {
            (Some(epoch), Some(id)) => format!("to snapshot {id} (its state at epoch {epoch})"),
            (_, Some(id)) => format!("to snapshot {id}"),
            (_, None) => "to before its first commit (drop it: the run creates it again)".into(),
        };
        format!(
            "table {sessions} was rolled back from epoch {} to {}, but {ident} still holds rows \
             of epoch {} that the run would write again: roll {ident} back {to} as well, then \
             restart",
            from.epoch,
            epoch.map_or("before its first commit".to_string(), |e| format!(
                "epoch {e}"
            )),
            mark.epoch
        )
    }
}

/// Refuses to start under other session rules than the table was written under, unless
/// `--allow-rule-change`; then records the new rules.
async fn check_rules(
    warehouse: &Warehouse,
    config: &PipelineConfig,
    record: &HashMap<String, String>,
) -> Result<()> {
    let current = config.rules_record();
    let Some(recorded) = record.get(summary::RULES).filter(|r| **r != current) else {
        return Ok(());
    };
    if !config.allow_rule_change {
        bail!(
            "table {} was written under the session rules {recorded}, and this run has \
             {current}: start with the same --inactivity-timeout, --max-session-duration, \
             --end-session-on and --start-session-on, or pass --allow-rule-change to apply the \
             new rules from where the table stands",
            warehouse.ident(TableKind::Sessions)
        );
    }
    tracing::warn!(from = %recorded, to = %current, "session rules changed (--allow-rule-change)");
    let rules = HashMap::from([(summary::RULES.to_string(), current)]);
    warehouse.set_properties(TableKind::Sessions, rules).await?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::record::sessions_properties;

    /// The record of a commit of epoch 4 that read `positions` of this config's sources.
    fn record_of(
        config: &PipelineConfig,
        positions: Vec<SourcePosition>,
    ) -> HashMap<String, String> {
        let positions = positions.into_iter().map(|p| (p.partition, p)).collect();
        let checkpoint = CheckpointRef {
            dir: "checkpoints/e000000000004-r".into(),
            parts: vec!["part-w0.v2.bin".into()],
            amends: Vec::new(),
        };
        sessions_properties(4, "r", 0, (&positions, None), config, &checkpoint)
    }

    fn position(
        partition: u32,
        next_offset: u64,
        watermark_ms: u64,
        finished: bool,
    ) -> SourcePosition {
        SourcePosition {
            next_offset,
            finished,
            ..SourcePosition::fresh(partition, watermark_ms)
        }
    }

    #[test]
    fn files_resume_by_content_under_any_path_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
        std::fs::write(&a, "first file\n").unwrap();
        std::fs::write(&b, "second file\n").unwrap();
        let path = |p: &std::path::Path| p.display().to_string();
        let before = PipelineConfig::new(vec![path(&a), path(&b)], dir.path());
        let mut first = position(0, 11, 500, true);
        first.fingerprint = Some(Fingerprint::of_head(b"first file\n"));
        let mut second = position(1, 5, 700, false);
        second.fingerprint = Some(Fingerprint::of_head(b"second file\n"));
        let record = record_of(&before, vec![first, second]);

        // The same files, listed the other way round.
        let after = PipelineConfig::new(vec![path(&b), path(&a)], dir.path());
        let heads = [
            Some(b"second file\n".to_vec()),
            Some(b"first file\n".to_vec()),
        ];
        let start = StartState::resume(&record, &after, true, &heads).unwrap();
        assert_eq!(start.epoch, 5);
        assert_eq!(
            (
                start.positions[&0].next_offset,
                start.positions[&0].finished
            ),
            (5, false)
        );
        assert_eq!(
            (
                start.positions[&1].next_offset,
                start.positions[&1].finished
            ),
            (11, true)
        );
        // Only unfinished partitions hold the restored watermark back.
        assert_eq!(start.watermark_ms, 700);
        assert!(start.checkpoint.is_some());
    }

    #[test]
    fn a_finished_file_that_grew_is_read_on() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jsonl");
        std::fs::write(&a, "line one\nline two\n").unwrap();
        let config = PipelineConfig::new(vec![a.display().to_string()], dir.path());
        let mut done = position(0, 9, 0, true);
        done.fingerprint = Some(Fingerprint::of_head(b"line one\n"));
        let record = record_of(&config, vec![done]);
        let heads = [Some(b"line one\nline two\n".to_vec())];
        let start = StartState::resume(&record, &config, true, &heads).unwrap();
        assert!(!start.positions[&0].finished);
    }

    #[test]
    fn another_file_under_a_recorded_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jsonl");
        std::fs::write(&a, "replaced\n").unwrap();
        let config = PipelineConfig::new(vec![a.display().to_string()], dir.path());
        let mut old = position(0, 9, 0, true);
        old.fingerprint = Some(Fingerprint::of_head(b"original\n"));
        let record = record_of(&config, vec![old]);
        let heads = [Some(b"replaced\n".to_vec())];
        let error = StartState::resume(&record, &config, true, &heads).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("is not the file this table read")
        );
    }

    #[test]
    fn an_explicit_start_keeps_only_the_epoch_numbering() {
        let config = PipelineConfig::new(vec!["x".into()], std::path::Path::new("w"));
        let record = record_of(&config, vec![position(0, 9, 100, false)]);
        let start = StartState::resume(&record, &config, false, &[None]).unwrap();
        assert_eq!(start.epoch, 5);
        assert!(start.positions.is_empty() && start.checkpoint.is_none());
        // The side tables of the last commit are still completed.
        assert!(start.last_checkpoint_dir.is_some());
    }

    #[test]
    fn a_record_without_an_epoch_is_an_error() {
        let config = PipelineConfig::new(vec![], std::path::Path::new("w"));
        let record = HashMap::from([(summary::RUN_ID.to_string(), "r".to_string())]);
        assert!(StartState::resume(&record, &config, true, &[]).is_err());
    }
}
