//! `sessionize inspect`: where a pipeline's tables stand, read from the catalog, the snapshot
//! summaries and the checkpoint, with Kafka's lag on request. It only reads: it never commits, and
//! it reads the same record a restart would ([`last_record`]), so what it shows is where the next
//! run resumes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use iceberg::table::Table;
use serde::Serialize;

use crate::commit::record::{last_record, recorded_positions};
use crate::commit::{CheckpointRef, CheckpointStore, Mark, summary};
use crate::config::PipelineConfig;
use crate::maintain::{Surveyor, TableShape};
use crate::sink::{TableKind, Warehouse};
use crate::source::kafka::{KafkaSettings, offset_bounds};

/// Everything `inspect` shows; its JSON form is `inspect --json`.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// `database.table` of the sessions table.
    pub table: String,
    /// The catalog, with any password hidden.
    pub catalog: String,
    /// The last epoch committed, and by which run.
    pub epoch: Option<u64>,
    pub run_id: Option<String>,
    /// The pipeline's watermark at the last commit (event time, ms since the epoch).
    pub watermark_ms: Option<u64>,
    /// The session rules the table is written under (`sessionize.rules`).
    pub rules: Option<serde_json::Value>,
    /// The sessions table's newest snapshots, newest first.
    pub commits: Vec<Commit>,
    pub partitions: Vec<Partition>,
    pub checkpoint: Option<Checkpoint>,
    /// The tables: sessions, quarantine, late events, and the open sessions if there are any.
    pub tables: Vec<TableRows>,
    /// The topic whose lag was measured (`--kafka-servers`).
    pub kafka_topic: Option<String>,
}

/// One snapshot of the sessions table.
#[derive(Debug, Clone, Serialize)]
pub struct Commit {
    pub snapshot_id: i64,
    /// Absent for snapshots of other tools (compaction, deletes).
    pub epoch: Option<u64>,
    pub run_id: Option<String>,
    pub timestamp_ms: i64,
    pub operation: String,
    pub rows_added: u64,
    pub files_added: u64,
}

/// A partition as the last commit records it, and as Kafka has it (with `--kafka-servers`).
#[derive(Debug, Clone, Serialize)]
pub struct Partition {
    pub partition: u32,
    /// The file, or the topic.
    pub source: Option<String>,
    /// The next byte of a file or the next record of a Kafka partition to read; absent for a
    /// Kafka partition no commit names yet.
    pub next_offset: Option<u64>,
    pub watermark_ms: Option<u64>,
    pub max_event_ms: Option<u64>,
    /// A file read to its end by the last bounded run.
    pub finished: bool,
    /// Kafka's first and next offsets of the partition.
    pub log_start_offset: Option<u64>,
    pub log_end_offset: Option<u64>,
    /// Records not yet committed: the log end offset minus the committed next offset (or minus
    /// the log start, for a partition not yet read).
    pub lag: Option<u64>,
}

/// The checkpoint the last commit names, with those it amends.
#[derive(Debug, Clone, Serialize)]
pub struct Checkpoint {
    pub location: String,
    /// The bytes a restore reads: every part of the chain.
    pub bytes: u64,
    /// The open sessions a restore finds.
    pub open_sessions: u64,
    /// The pending events the parts hold: a part that amends holds those pushed since the
    /// checkpoint before it, which may have applied some of the ones before.
    pub pending_events: u64,
    pub parts: Vec<CheckpointPartInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckpointPartInfo {
    pub file: String,
    /// Whether the part holds all its worker's state, or amends the checkpoint before it.
    pub full: bool,
    pub bytes: u64,
    /// The open sessions the part holds: all of them, or those that changed.
    pub open_sessions: u64,
    pub pending_events: u64,
}

/// A table's size by its current snapshot's summary.
#[derive(Debug, Clone, Serialize)]
pub struct TableRows {
    pub table: String,
    /// Rows in the table's data files (deletes by other tools not subtracted: see `deletes`).
    pub rows: u64,
    pub data_files: u64,
    /// Position and equality deletes other tools wrote on top.
    pub deletes: u64,
    pub snapshots: usize,
    /// The last epoch committed to this table.
    pub epoch: Option<u64>,
    /// What queries of the table plan and open: files, small files, manifests, bytes.
    pub shape: TableShape,
}

/// Reads where the tables of `config` stand; `commits` is how many of the newest snapshots to
/// list. Runs inside a tokio runtime; Kafka is asked afterwards ([`Inspection::measure_lag`]).
pub async fn inspect(
    warehouse: &Warehouse,
    config: &PipelineConfig,
    commits: usize,
) -> Result<Inspection> {
    let sessions = warehouse.load(TableKind::Sessions).await?;
    let record = last_record(&sessions).unwrap_or_default();
    let mark = Mark::from_record(&record);
    let positions = recorded_positions(&record)?;
    let checkpoint = match record.get(summary::CHECKPOINT) {
        Some(json) => {
            let named: CheckpointRef =
                serde_json::from_str(json).context("the snapshot's checkpoint name")?;
            let store = CheckpointStore::new(config, &sessions.metadata().uuid())?;
            Some(read_checkpoint(&store, &named)?)
        }
        None => None,
    };
    let mut tables = Vec::new();
    for kind in warehouse.kinds() {
        let table = match kind {
            TableKind::Sessions => sessions.clone(),
            // Tables of an older release, or of runs that keep none.
            TableKind::OpenSessions if !warehouse.exists(kind).await? => continue,
            _ => warehouse.load(kind).await?,
        };
        tables.push(table_rows(&table).await?);
    }
    Ok(Inspection {
        table: warehouse.ident(TableKind::Sessions).to_string(),
        catalog: config.catalog.display_uri(&config.warehouse),
        epoch: mark.as_ref().map(|m| m.epoch),
        run_id: mark.map(|m| m.run_id),
        watermark_ms: record
            .get(summary::WATERMARK_MS)
            .and_then(|w| w.parse().ok()),
        rules: record
            .get(summary::RULES)
            .and_then(|r| serde_json::from_str(r).ok()),
        commits: newest_commits(&sessions, commits),
        partitions: positions
            .into_iter()
            .map(|(partition, p)| Partition {
                partition,
                source: Some(p.source),
                next_offset: Some(p.next_offset),
                watermark_ms: Some(p.watermark_ms),
                max_event_ms: p.max_event_ms,
                finished: p.finished,
                log_start_offset: None,
                log_end_offset: None,
                lag: None,
            })
            .collect(),
        checkpoint,
        tables,
        kafka_topic: None,
    })
}

impl Inspection {
    /// Adds every partition's log offsets and lag from Kafka. Partitions the table records for
    /// another source (files, another topic) are left as they are.
    pub fn measure_lag(&mut self, settings: &KafkaSettings) -> Result<()> {
        let consumer = settings.consumer()?;
        let count = settings.partition_count(&consumer, Duration::from_secs(30))?;
        let mut by_partition: BTreeMap<u32, Partition> = std::mem::take(&mut self.partitions)
            .into_iter()
            .map(|p| (p.partition, p))
            .collect();
        let mut measured = Vec::new();
        for partition in 0..count {
            let (low, high) = offset_bounds(&consumer, &settings.topic, partition)?;
            let recorded = by_partition
                .remove(&partition)
                .filter(|p| p.source.as_deref() == Some(settings.topic.as_str()));
            let mut row = recorded.unwrap_or(Partition {
                partition,
                source: Some(settings.topic.clone()),
                next_offset: None,
                watermark_ms: None,
                max_event_ms: None,
                finished: false,
                log_start_offset: None,
                log_end_offset: None,
                lag: None,
            });
            // Records deleted by retention before they were read are not lag: they are gone.
            let next = row.next_offset.unwrap_or(low).max(low);
            row.log_start_offset = Some(low);
            row.log_end_offset = Some(high);
            row.lag = Some(high.saturating_sub(next));
            measured.push(row);
        }
        // Whatever else the table records (other sources) keeps its place after the topic's.
        measured.extend(by_partition.into_values());
        self.partitions = measured;
        self.kafka_topic = Some(settings.topic.clone());
        Ok(())
    }

    /// The human-readable form: sections of aligned columns.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "table      {}", self.table);
        let _ = writeln!(out, "catalog    {}", self.catalog);
        match (&self.epoch, &self.run_id) {
            (Some(epoch), Some(run)) => {
                let _ = writeln!(out, "epoch      {epoch} (run {run})");
            }
            _ => {
                let _ = writeln!(out, "epoch      none: sessionize has not committed yet");
            }
        }
        if let Some(watermark) = self.watermark_ms {
            let _ = writeln!(out, "watermark  {}", watermark_text(watermark));
        }
        if let Some(rules) = &self.rules {
            let _ = writeln!(out, "rules      {rules}");
        }

        let _ = writeln!(out, "\nrows");
        let rows: Vec<Vec<String>> = self
            .tables
            .iter()
            .map(|t| {
                vec![
                    t.table.clone(),
                    t.rows.to_string(),
                    t.data_files.to_string(),
                    t.deletes.to_string(),
                    t.snapshots.to_string(),
                    optional(t.epoch),
                ]
            })
            .collect();
        out.push_str(&columns(
            &["table", "rows", "files", "deletes", "snapshots", "epoch"],
            &rows,
        ));

        let _ = writeln!(out, "\nfiles (current snapshot)");
        let rows: Vec<Vec<String>> = self
            .tables
            .iter()
            .map(|t| {
                let shape = &t.shape;
                vec![
                    t.table.clone(),
                    shape.data_files.to_string(),
                    shape.small_files.to_string(),
                    shape.manifests.to_string(),
                    shape.bytes.to_string(),
                    shape.last_compaction_ms.map_or("-".into(), time_text),
                    shape.last_expiry_ms.map_or("-".into(), time_text),
                ]
            })
            .collect();
        out.push_str(&columns(
            &[
                "table",
                "data files",
                "small",
                "manifests",
                "bytes",
                "last compaction",
                "last expiry",
            ],
            &rows,
        ));

        let _ = writeln!(out, "\npartitions");
        if self.partitions.is_empty() {
            let _ = writeln!(out, "  (none recorded yet)");
        } else {
            let kafka = self.kafka_topic.is_some();
            let mut header = vec![
                "partition",
                "source",
                "next offset",
                "watermark",
                "finished",
            ];
            if kafka {
                header.extend(["log end", "lag"]);
            }
            let rows: Vec<Vec<String>> = self
                .partitions
                .iter()
                .map(|p| {
                    let mut row = vec![
                        p.partition.to_string(),
                        p.source.clone().unwrap_or_default(),
                        optional(p.next_offset),
                        p.watermark_ms.map_or("-".into(), watermark_text),
                        if p.finished { "yes" } else { "no" }.to_string(),
                    ];
                    if kafka {
                        row.extend([optional(p.log_end_offset), optional(p.lag)]);
                    }
                    row
                })
                .collect();
            out.push_str(&columns(&header, &rows));
            if kafka {
                let lag: u64 = self.partitions.iter().filter_map(|p| p.lag).sum();
                let _ = writeln!(out, "  total lag {lag} records");
            }
        }

        let _ = writeln!(out, "\ncheckpoint");
        match &self.checkpoint {
            None => {
                let _ = writeln!(out, "  (none)");
            }
            Some(checkpoint) => {
                let _ = writeln!(out, "  {}", checkpoint.location);
                let rows: Vec<Vec<String>> = checkpoint
                    .parts
                    .iter()
                    .map(|p| {
                        vec![
                            p.file.clone(),
                            if p.full { "full" } else { "amends" }.to_string(),
                            p.bytes.to_string(),
                            p.open_sessions.to_string(),
                            p.pending_events.to_string(),
                        ]
                    })
                    .chain([vec![
                        "total".to_string(),
                        String::new(),
                        checkpoint.bytes.to_string(),
                        checkpoint.open_sessions.to_string(),
                        checkpoint.pending_events.to_string(),
                    ]])
                    .collect();
                out.push_str(&columns(
                    &["part", "kind", "bytes", "open sessions", "pending events"],
                    &rows,
                ));
            }
        }

        let _ = writeln!(out, "\nlast commits");
        let rows: Vec<Vec<String>> = self
            .commits
            .iter()
            .map(|c| {
                vec![
                    optional(c.epoch),
                    time_text(c.timestamp_ms),
                    c.operation.clone(),
                    c.rows_added.to_string(),
                    c.files_added.to_string(),
                    c.snapshot_id.to_string(),
                ]
            })
            .collect();
        out.push_str(&columns(
            &["epoch", "time", "operation", "rows", "files", "snapshot"],
            &rows,
        ));
        out
    }
}

/// The checkpoint a snapshot names with those it amends: each part's size and what it holds,
/// and the open sessions a restore of the whole chain finds.
fn read_checkpoint(store: &CheckpointStore, named: &CheckpointRef) -> Result<Checkpoint> {
    let mut parts = Vec::new();
    let mut open = std::collections::HashSet::new();
    for checkpoint in named.chain() {
        let name = checkpoint.dir.rsplit('/').next().unwrap_or_default();
        for file in &checkpoint.parts {
            let (state, bytes) = store.read_part_sized(checkpoint, file)?;
            for user in &state.ended {
                open.remove(user);
            }
            open.extend(state.open.iter().map(|s| s.user_id.clone()));
            parts.push(CheckpointPartInfo {
                file: format!("{name}/{file}"),
                full: state.full,
                bytes,
                open_sessions: state.open.len() as u64,
                pending_events: state.pending.len() as u64,
            });
        }
    }
    Ok(Checkpoint {
        location: store.display(&named.dir),
        bytes: parts.iter().map(|p| p.bytes).sum(),
        open_sessions: open.len() as u64,
        pending_events: parts.iter().map(|p| p.pending_events).sum(),
        parts,
    })
}

/// A count from a snapshot summary (absent counts as 0).
fn count(summary: &std::collections::HashMap<String, String>, key: &str) -> u64 {
    summary.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

async fn table_rows(table: &Table) -> Result<TableRows> {
    let shape = Surveyor::default()
        .survey(table)
        .await
        .with_context(|| format!("cannot read the manifests of {}", table.identifier()))?
        .shape;
    let metadata = table.metadata();
    let current = metadata
        .current_snapshot()
        .map(|s| s.summary().additional_properties.clone())
        .unwrap_or_default();
    Ok(TableRows {
        table: table.identifier().to_string(),
        rows: count(&current, "total-records"),
        data_files: count(&current, "total-data-files"),
        deletes: count(&current, "total-position-deletes")
            + count(&current, "total-equality-deletes"),
        snapshots: metadata.snapshots().count(),
        epoch: last_record(table)
            .and_then(|r| Mark::from_record(&r))
            .map(|m| m.epoch),
        shape,
    })
}

/// The `limit` newest snapshots of the table's current history, newest first.
fn newest_commits(table: &Table, limit: usize) -> Vec<Commit> {
    let metadata = table.metadata();
    let mut commits = Vec::new();
    let mut next = metadata.current_snapshot_id();
    while let Some(id) = next
        && commits.len() < limit
    {
        let Some(snapshot) = metadata.snapshot_by_id(id) else {
            break; // expired: the history ends here
        };
        let summary = &snapshot.summary().additional_properties;
        let mark = Mark::from_record(summary);
        commits.push(Commit {
            snapshot_id: id,
            epoch: mark.as_ref().map(|m| m.epoch),
            run_id: mark.map(|m| m.run_id),
            timestamp_ms: snapshot.timestamp_ms(),
            operation: format!("{:?}", snapshot.summary().operation).to_lowercase(),
            rows_added: count(summary, "added-records"),
            files_added: count(summary, "added-data-files"),
        });
        next = snapshot.parent_snapshot_id();
    }
    commits
}

/// A watermark for people: the end of input is recorded as the largest watermark there is.
fn watermark_text(ms: u64) -> String {
    match i64::try_from(ms) {
        Ok(ms) => time_text(ms),
        Err(_) => "end of input".into(),
    }
}

fn optional(value: Option<impl ToString>) -> String {
    value.map_or("-".into(), |v| v.to_string())
}

/// A time in ms since the epoch as RFC 3339 (UTC, to the millisecond).
pub fn time_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or(ms.to_string(), |t| {
        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    })
}

/// Rows under a header, each column as wide as its widest cell, numbers right-aligned; indented
/// by two spaces.
pub fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let numeric: Vec<bool> = (0..header.len())
        .map(|i| {
            rows.iter().all(|r| {
                r.get(i)
                    .is_some_and(|c| c == "-" || c.bytes().all(|b| b.is_ascii_digit()))
            }) && !rows.is_empty()
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let mut text = String::from(" ");
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            text.push(' ');
            if numeric[i] {
                text.extend(std::iter::repeat_n(' ', pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.extend(std::iter::repeat_n(' ', pad));
            }
            text.push(' ');
        }
        text.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_text_left_and_numbers_right() {
        let text = columns(
            &["name", "rows"],
            &[
                vec!["sessions".into(), "7".into()],
                vec!["q".into(), "1234".into()],
            ],
        );
        assert_eq!(
            text,
            "  name      rows\n  sessions     7\n  q         1234\n"
        );
    }

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(time_text(1_772_323_200_000), "2026-03-01T00:00:00.000Z");
    }
}
