//! What each commit records, and how we find our commits again: the snapshot-summary keys, the
//! mark of the epoch and run that made a commit, and the record a restart reads.
//!
//! A commit's record is a snapshot summary (and, in the same metadata commit, the table's
//! properties, which outlive our snapshots when other tools expire them). The mark says which
//! epoch of which run committed: the sessions table's newest mark is the commit point of the
//! whole pipeline.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result};
use iceberg::TableIdent;
use iceberg::spec::{Snapshot, SnapshotRef};
use iceberg::table::Table;
use serde::{Deserialize, Serialize};

use super::checkpoint::CheckpointRef;
use super::position::{RecordedPosition, SourcePosition};
use crate::config::PipelineConfig;
use crate::failure::TwoWriters;
use crate::maintain::COMPACTED_BY;
use crate::source::kafka::TopicIdentity;

/// Snapshot-summary keys under which each commit records where the pipeline stands.
pub mod summary {
    pub const EPOCH: &str = "sessionize.epoch";
    pub const WATERMARK_MS: &str = "sessionize.watermark-ms";
    pub const POSITIONS: &str = "sessionize.positions";
    pub const CHECKPOINT: &str = "sessionize.checkpoint";
    /// The session rules the table was written under ([`crate::config::PipelineConfig::rules_record`]).
    pub const RULES: &str = "sessionize.rules";
    /// The run that committed the snapshot: a run that finds another run's commit on top of its
    /// own stops, since two pipelines are writing one table.
    pub const RUN_ID: &str = "sessionize.run-id";
    /// The Kafka topic's identity ([`crate::source::kafka::TopicIdentity`]): recorded offsets
    /// resume only on the topic they were read from.
    pub const TOPIC: &str = "sessionize.kafka-topic";
    /// How many rows of the sessions table an epoch's corrections retracted, on its `overwrite`
    /// snapshot only.
    pub const CORRECTED_SESSIONS: &str = "sessionize.corrected-sessions";
}

/// A fresh run id: the wall clock and random bits (from the OS-seeded `RandomState`), so that
/// two runs started at once differ. Data files' names start with it (`super::orphans`).
pub fn new_run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!(
        "{:x}-{:08x}",
        crate::clock::wall_clock_micros(),
        random as u32
    )
}

/// Which epoch of which run committed a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub epoch: u64,
    pub run_id: String,
}

impl Mark {
    /// The mark in a commit's record (a snapshot summary, or the table's properties).
    pub fn from_record(record: &HashMap<String, String>) -> Option<Mark> {
        Some(Mark {
            epoch: record.get(summary::EPOCH)?.parse().ok()?,
            run_id: record.get(summary::RUN_ID).cloned().unwrap_or_default(),
        })
    }

    /// The mark of a snapshot sessionize committed; `None` for other tools' snapshots.
    pub fn of(snapshot: &Snapshot) -> Option<Mark> {
        Mark::from_record(&snapshot.summary().additional_properties)
    }
}

/// The newest snapshot sessionize committed in the table's current history, walking back from
/// the current snapshot through its parents, past snapshots of other tools (compaction, deletes).
pub fn newest_own_snapshot(table: &Table) -> Option<&SnapshotRef> {
    own_lineage(table).newest
}

/// What a walk down the current snapshot's ancestors found.
struct Lineage<'a> {
    /// The newest snapshot of ours among the ancestors.
    newest: Option<&'a SnapshotRef>,
    /// Whether the walk stopped at a snapshot whose parent is gone (expired), rather than at the
    /// table's first snapshot or at one of ours.
    cut: bool,
}

fn own_lineage(table: &Table) -> Lineage<'_> {
    let metadata = table.metadata();
    let mut next = metadata.current_snapshot_id();
    while let Some(id) = next {
        let Some(snapshot) = metadata.snapshot_by_id(id) else {
            return Lineage {
                newest: None,
                cut: true,
            };
        };
        if Mark::of(snapshot).is_some() {
            return Lineage {
                newest: Some(snapshot),
                cut: false,
            };
        }
        next = snapshot.parent_snapshot_id();
    }
    Lineage {
        newest: None,
        cut: false,
    }
}

/// The record our commits keep in the table's properties (set in the same metadata commit as
/// the snapshot), if any.
fn properties_record(table: &Table) -> Option<HashMap<String, String>> {
    let properties = table.metadata().properties();
    properties.contains_key(summary::EPOCH).then(|| {
        properties
            .iter()
            .filter(|(key, _)| key.starts_with("sessionize."))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    })
}

/// What sessionize recorded with its last commit in the table's current lineage.
///
/// The table's properties hold the record of our last commit and outlive its snapshot when other
/// tools expire it, but a rollback leaves them as they were: they are trusted only when the
/// snapshot carrying the same mark is the newest of ours among the current snapshot's ancestors,
/// or when that history was expired under another tool's snapshot. Otherwise the newest of our
/// snapshots in the lineage is the record, so that a rollback re-reads what it removed.
pub fn last_record(table: &Table) -> Option<HashMap<String, String>> {
    let lineage = own_lineage(table);
    let properties = properties_record(table);
    match (lineage.newest, properties) {
        (Some(snapshot), Some(properties))
            if Mark::of(snapshot) == Mark::from_record(&properties) =>
        {
            Some(properties)
        }
        (Some(snapshot), _) => Some(snapshot.summary().additional_properties.clone()),
        // Our snapshots were expired under another tool's: the properties are all there is.
        (None, Some(properties)) if lineage.cut || !holds_snapshot_of(table, &properties) => {
            Some(properties)
        }
        // The properties' snapshot is there but not in the lineage: the table was rolled back
        // to before our first commit.
        (None, _) => None,
    }
}

/// The checkpoints the table's snapshots and its properties name: those a restart or a rollback
/// may resume from.
pub fn named_checkpoints(table: &Table) -> Vec<CheckpointRef> {
    let snapshots = table
        .metadata()
        .snapshots()
        .map(|s| s.summary().additional_properties.clone());
    snapshots
        .chain(properties_record(table))
        .filter_map(|record| serde_json::from_str(record.get(summary::CHECKPOINT)?).ok())
        .collect()
}

/// Whether the table still holds the snapshot that carries the mark of `record`.
fn holds_snapshot_of(table: &Table, record: &HashMap<String, String>) -> bool {
    let mark = Mark::from_record(record);
    table
        .metadata()
        .snapshots()
        .any(|snapshot| mark.is_some() && Mark::of(snapshot) == mark)
}

/// The mark of our last commit before the table was rolled back, when it was: the properties'
/// mark, newer than the [`last_record`]'s. `None` when the table is where our last commit left it.
pub fn rolled_back_from(table: &Table) -> Option<Mark> {
    let before = Mark::from_record(&properties_record(table)?)?;
    let now = last_record(table).and_then(|record| Mark::from_record(&record));
    (now.as_ref() != Some(&before)).then_some(before)
}

/// Where a table must be rolled back to so that it agrees with a sessions table rolled back to
/// `epoch`: the parent of the oldest snapshot of ours after `epoch` in its current lineage
/// (`None`: the table had no snapshot before it).
pub fn snapshot_before_epoch(table: &Table, epoch: u64) -> Option<i64> {
    let metadata = table.metadata();
    let mut parent = metadata.current_snapshot_id();
    let mut next = parent;
    while let Some(snapshot) = next.and_then(|id| metadata.snapshot_by_id(id)) {
        if Mark::of(snapshot).is_some_and(|mark| mark.epoch <= epoch) {
            break;
        }
        if Mark::of(snapshot).is_some() {
            parent = snapshot.parent_snapshot_id();
        }
        next = snapshot.parent_snapshot_id();
    }
    parent
}

/// Our snapshots older than the newest `retain` of ours, once there are a tenth more than that
/// (so that expiry is batched), never the current snapshot or another ref's head. Ours are the
/// commits' and the compactions'; snapshots of other tools are theirs to expire.
pub fn own_snapshots_to_expire(table: &Table, retain: usize) -> Vec<i64> {
    let metadata = table.metadata();
    let mut own: Vec<&SnapshotRef> = metadata
        .snapshots()
        .filter(|s| {
            Mark::of(s).is_some() || s.summary().additional_properties.contains_key(COMPACTED_BY)
        })
        .collect();
    if retain == 0 || own.len() <= retain + retain.div_ceil(10) {
        return Vec::new();
    }
    // The metadata has no accessor for its refs; its JSON form has them (this runs once in a
    // tenth of `retain` commits).
    let heads: Vec<i64> = serde_json::to_value(metadata)
        .ok()
        .and_then(|m| {
            let refs = m.get("refs")?.as_object()?.clone();
            Some(
                refs.values()
                    .filter_map(|r| r.get("snapshot-id")?.as_i64())
                    .collect(),
            )
        })
        .unwrap_or_default();
    own.sort_by_key(|s| (s.sequence_number(), s.timestamp_ms()));
    own[..own.len() - retain]
        .iter()
        .map(|s| s.snapshot_id())
        .filter(|id| !heads.contains(id) && metadata.current_snapshot_id() != Some(*id))
        .collect()
}

/// The mark of the table's [`last_record`].
pub fn newest_mark(table: &Table) -> Option<Mark> {
    Mark::from_record(&last_record(table)?)
}

/// The positions a commit's record names, by partition.
pub fn recorded_positions(
    record: &HashMap<String, String>,
) -> Result<BTreeMap<u32, RecordedPosition>> {
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

/// The identity of the Kafka topic whose positions a commit's record names; `None` for files and
/// for commits made before identities were recorded.
pub fn recorded_topic(record: &HashMap<String, String>) -> Result<Option<TopicIdentity>> {
    record
        .get(summary::TOPIC)
        .map(|json| serde_json::from_str(json))
        .transpose()
        .context("the snapshot's Kafka topic identity")
}

/// The error of a commit that found another pipeline's commit on top of ours.
pub fn two_writers(
    ident: &TableIdent,
    newest: Option<&Mark>,
    expected: Option<&Mark>,
) -> TwoWriters {
    let show = |mark: Option<&Mark>| {
        mark.map_or("none".to_string(), |m| {
            format!("epoch {} of run {}", m.epoch, m.run_id)
        })
    };
    TwoWriters(format!(
        "table {ident} was committed by another pipeline: its newest sessionize commit is {}, \
         this run expected {}; two pipelines must not write one table: stop one, then restart \
         the other",
        show(newest),
        show(expected)
    ))
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
    (positions, topic): (&BTreeMap<u32, SourcePosition>, Option<&TopicIdentity>),
    config: &PipelineConfig,
    checkpoint: &CheckpointRef,
) -> HashMap<String, String> {
    let positions: BTreeMap<String, RecordedPosition> = positions
        .values()
        .map(|p| {
            let source = config.source_name(p.partition);
            (p.partition.to_string(), p.recorded(source))
        })
        .collect();
    let mut properties = HashMap::from([
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
    ]);
    if let Some(topic) = topic {
        properties.insert(
            summary::TOPIC.to_string(),
            serde_json::to_string(topic).expect("identities serialize"),
        );
    }
    properties
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_mark_needs_an_epoch_and_tolerates_a_missing_run() {
        let full = record(&[(summary::EPOCH, "7"), (summary::RUN_ID, "r1")]);
        let mark = Mark::from_record(&full).unwrap();
        assert_eq!((mark.epoch, mark.run_id.as_str()), (7, "r1"));
        // Commits made before runs had ids.
        assert_eq!(
            Mark::from_record(&record(&[(summary::EPOCH, "2")]))
                .unwrap()
                .run_id,
            ""
        );
        assert!(Mark::from_record(&record(&[(summary::RUN_ID, "r1")])).is_none());
        assert!(Mark::from_record(&record(&[(summary::EPOCH, "seven")])).is_none());
    }

    #[test]
    fn positions_are_read_by_partition_and_a_bad_number_is_an_error() {
        let json = r#"{"2":{"source":"f","next_offset":10,"next_line":2,"max_event_ms":5000,"finished":false}}"#;
        let positions = recorded_positions(&record(&[(summary::POSITIONS, json)])).unwrap();
        assert_eq!(positions[&2].next_offset, 10);
        assert!(recorded_positions(&record(&[])).unwrap().is_empty());
        let bad = r#"{"x":{"source":"f","next_offset":1,"next_line":1,"max_event_ms":null,"finished":false}}"#;
        assert!(recorded_positions(&record(&[(summary::POSITIONS, bad)])).is_err());
    }

    #[test]
    fn a_sessions_commit_records_what_a_restart_needs() {
        let config = PipelineConfig::new(vec!["in.jsonl".into()], std::path::Path::new("w"));
        let mut position = SourcePosition::fresh(0, 5);
        position.next_offset = 99;
        let positions = BTreeMap::from([(0, position)]);
        let checkpoint = CheckpointRef {
            dir: "checkpoints/e000000000003-r".into(),
            parts: vec!["part-w0.v2.bin".into()],
            amends: Vec::new(),
        };
        let topic = TopicIdentity {
            cluster_id: Some("c".into()),
            topic_id: None,
        };
        let props =
            sessions_properties(3, "r", 5, (&positions, Some(&topic)), &config, &checkpoint);
        assert_eq!(recorded_topic(&props).unwrap(), Some(topic));
        assert_eq!(
            Mark::from_record(&props),
            Some(Mark {
                epoch: 3,
                run_id: "r".into()
            })
        );
        assert_eq!(props[summary::RULES], config.rules_record());
        let named: CheckpointRef = serde_json::from_str(&props[summary::CHECKPOINT]).unwrap();
        assert_eq!(named, checkpoint);
        let recorded = recorded_positions(&props).unwrap();
        assert_eq!(
            (recorded[&0].source.as_str(), recorded[&0].next_offset),
            ("in.jsonl", 99)
        );
        let side = side_properties(&Mark::from_record(&props).unwrap());
        assert_eq!(side.len(), 2);
    }
}
