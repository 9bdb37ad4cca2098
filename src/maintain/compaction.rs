//! Compaction: a streaming pipeline adds a few small files to each partition at every commit, and
//! every query plans and opens all of them. Where a partition (day × user bucket, or a whole side
//! table) holds [`CompactionSettings::min_files`] files or more below three quarters of the target
//! size (`write.target-file-size-bytes`, as Java's `RewriteDataFiles` decides), its rows are read,
//! sorted ([`TableKind::sort_columns`]) and written into files near the target, and the new files
//! replace the old in a `replace` snapshot (`sink::replace`).
//!
//! Planning reads manifests only; rewriting reads and writes Parquet and never touches the
//! catalog, so it can run beside the pipeline (`super::compactor`). The work of one round is
//! bounded by [`CompactionSettings::max_bytes`] of input.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::RecordBatch;
use arrow_ord::sort::{SortColumn, lexsort_to_indices};
use futures::{StreamExt, TryStreamExt};
use iceberg::spec::{DataFile, ManifestContentType, ManifestStatus};
use iceberg::table::Table;

use crate::sink::{TableKind, TableWriter};

/// Where a table's files are compacted, when the table does not say.
pub const DEFAULT_TARGET_FILE_SIZE: u64 = 128 << 20;

/// When and how much to compact (`--compact-min-files`, `--compact-max-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionSettings {
    /// A partition is compacted once it has this many small files; 0 turns compaction off.
    pub min_files: usize,
    /// The input one round rewrites at most (Parquet bytes).
    pub max_bytes: u64,
}

impl Default for CompactionSettings {
    fn default() -> Self {
        CompactionSettings {
            // Java's `min-input-files`.
            min_files: 5,
            max_bytes: 256 << 20,
        }
    }
}

/// The files one round rewrites, by partition, as the snapshot `snapshot_id` lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub snapshot_id: i64,
    pub groups: Vec<Vec<String>>,
    pub target_bytes: u64,
}

impl Plan {
    pub fn files(&self) -> impl Iterator<Item = &String> {
        self.groups.iter().flatten()
    }
}

/// What a round wrote: the files it replaces and the new ones, not yet committed.
#[derive(Debug, Clone)]
pub struct Rewritten {
    pub removed: HashSet<String>,
    pub added: Vec<DataFile>,
}

/// The target file size `table` asks for.
fn target_bytes(table: &Table) -> u64 {
    table
        .metadata()
        .properties()
        .get("write.target-file-size-bytes")
        .and_then(|v| v.parse().ok())
        .filter(|&bytes| bytes > 0)
        .unwrap_or(DEFAULT_TARGET_FILE_SIZE)
}

/// The next round's work on `table`, if any partition needs it: the partitions with the most
/// small files first, up to `settings.max_bytes` of input (at least one partition's
/// `min_files` files, so that a round always makes progress).
pub async fn plan(table: &Table, settings: CompactionSettings) -> Result<Option<Plan>> {
    let metadata = table.metadata();
    let Some(current) = metadata.current_snapshot() else {
        return Ok(None);
    };
    if settings.min_files == 0 {
        return Ok(None);
    }
    let target = target_bytes(table);
    let small_below = target / 4 * 3;
    let spec_id = metadata.default_partition_spec_id();
    // Files by partition (in the spec's own display), smallest first.
    let mut partitions: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    let list = table.manifest_list_reader(current).load().await?;
    for manifest in list.entries() {
        if manifest.content != ManifestContentType::Data || manifest.partition_spec_id != spec_id {
            continue;
        }
        let (entries, _) = manifest.load_manifest(table.file_io()).await?.into_parts();
        for entry in entries
            .iter()
            .filter(|e| e.status != ManifestStatus::Deleted)
        {
            let file = &entry.data_file;
            if file.file_size_in_bytes() < small_below {
                partitions
                    .entry(format!("{:?}", file.partition()))
                    .or_default()
                    .push((file.file_size_in_bytes(), file.file_path().to_string()));
            }
        }
    }
    let mut candidates: Vec<Vec<(u64, String)>> = partitions
        .into_values()
        .filter(|files| files.len() >= settings.min_files)
        .collect();
    candidates.sort_by_key(|files| std::cmp::Reverse(files.len()));
    let mut groups = Vec::new();
    let mut budget = settings.max_bytes;
    for mut files in candidates {
        files.sort();
        let mut group = Vec::new();
        for (bytes, path) in files {
            if bytes > budget && group.len() >= settings.min_files.max(2) {
                break;
            }
            budget = budget.saturating_sub(bytes);
            group.push(path);
        }
        if group.len() >= settings.min_files.max(2) {
            groups.push(group);
        }
        if budget == 0 {
            break;
        }
    }
    Ok((!groups.is_empty()).then(|| Plan {
        snapshot_id: current.snapshot_id(),
        groups,
        target_bytes: target,
    }))
}

/// Rewrites `plan`'s files of `table` (a table of `kind`) into sorted files near the target size,
/// named with `file_prefix`. Reads through iceberg's reader, so files of older schemas come out
/// in the current one.
pub async fn rewrite(
    table: &Table,
    kind: TableKind,
    plan: &Plan,
    file_prefix: String,
) -> Result<Rewritten> {
    let tasks: Vec<_> = table
        .scan()
        .snapshot_id(plan.snapshot_id)
        .select_all()
        .build()?
        .plan_files()
        .await?
        .try_collect()
        .await?;
    let mut writer =
        TableWriter::with_target_size(table, file_prefix, plan.target_bytes as usize).await?;
    let schema = writer.arrow_schema().clone();
    for group in &plan.groups {
        let wanted: HashSet<&String> = group.iter().collect();
        let group_tasks: Vec<_> = tasks
            .iter()
            .filter(|task| wanted.contains(&task.data_file_path))
            .cloned()
            .map(Ok)
            .collect();
        anyhow::ensure!(
            group_tasks.len() == group.len(),
            "the snapshot {} does not list every file to compact",
            plan.snapshot_id
        );
        let batches: Vec<RecordBatch> = table
            .reader_builder()
            .build()
            .read(futures::stream::iter(group_tasks).boxed())?
            .stream()
            .try_collect()
            .await
            .with_context(|| {
                format!("cannot read the files to compact of {}", table.identifier())
            })?;
        let batches: Vec<RecordBatch> = batches
            .into_iter()
            .map(|batch| RecordBatch::try_new(schema.clone(), batch.columns().to_vec()))
            .collect::<Result<_, _>>()?;
        let all = arrow_select::concat::concat_batches(&schema, &batches)?;
        writer.write(sorted(&all, kind.sort_columns())?).await?;
    }
    Ok(Rewritten {
        removed: plan.files().cloned().collect(),
        added: writer.close_files().await?,
    })
}

/// `batch` sorted by `columns`.
fn sorted(batch: &RecordBatch, columns: &[&str]) -> Result<RecordBatch> {
    let keys = columns
        .iter()
        .map(|name| {
            let values = batch
                .column_by_name(name)
                .with_context(|| format!("no column {name} to sort by"))?;
            Ok(SortColumn {
                values: Arc::clone(values),
                options: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let indices = lexsort_to_indices(&keys, None)?;
    Ok(arrow_select::take::take_record_batch(batch, &indices)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    #[test]
    fn rows_are_sorted_by_user_then_start() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Utf8, false),
            Field::new("session_start_time_ms", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["b", "a", "b", "a"])),
                Arc::new(Int64Array::from(vec![5, 9, 1, 2])),
            ],
        )
        .unwrap();
        let sorted = sorted(&batch, TableKind::Sessions.sort_columns()).unwrap();
        let users = sorted
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let starts = sorted
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(
            users.iter().flatten().collect::<Vec<_>>(),
            ["a", "a", "b", "b"]
        );
        assert_eq!(starts.values(), &[2, 9, 1, 5]);
    }
}
