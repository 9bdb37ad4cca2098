//! Compaction: a streaming pipeline adds a few small files to each partition at every commit, and
//! every query plans and opens all of them. Where a partition (day × user bucket, or a whole side
//! table) holds [`CompactionSettings::min_files`] files or more below three quarters of the target
//! size (`write.target-file-size-bytes`, as Java's `RewriteDataFiles` decides), its rows are read,
//! sorted ([`TableKind::sort_columns`]) and written into files near the target, and the new files
//! replace the old in a `replace` snapshot (`sink::replace`).
//!
//! Planning works on a survey of the manifests ([`super::shape`]); rewriting reads and writes Parquet and never touches the
//! catalog, so it can run beside the pipeline (`super::compactor`). The work of one round is
//! bounded by [`CompactionSettings::max_bytes`] of input.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::RecordBatch;
use arrow_ord::sort::{SortColumn, lexsort_to_indices};
use futures::{StreamExt, TryStreamExt};
use iceberg::spec::DataFile;
use iceberg::table::Table;

use super::shape::Survey;
use crate::sink::{TableKind, TableWriter};

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

/// The next round's work, if any partition of the surveyed snapshot needs it: the partitions with
/// the most small files first, up to `settings.max_bytes` of input (at least one partition's
/// `min_files` files, so that a round always makes progress).
pub fn plan(survey: &Survey, settings: CompactionSettings) -> Option<Plan> {
    let snapshot_id = survey.snapshot_id?;
    if settings.min_files == 0 {
        return None;
    }
    let least = settings.min_files.max(2);
    let mut candidates: Vec<&Vec<(u64, String)>> = survey
        .small_files
        .values()
        .filter(|files| files.len() >= settings.min_files)
        .collect();
    candidates.sort_by_key(|files| std::cmp::Reverse(files.len()));
    let mut groups = Vec::new();
    let mut budget = settings.max_bytes;
    for files in candidates {
        let mut files = files.clone();
        files.sort();
        let mut group = Vec::new();
        for (bytes, path) in files {
            if bytes > budget && group.len() >= least {
                break;
            }
            budget = budget.saturating_sub(bytes);
            group.push(path);
        }
        if group.len() >= least {
            groups.push(group);
        }
        if budget == 0 {
            break;
        }
    }
    (!groups.is_empty()).then_some(Plan {
        snapshot_id,
        groups,
        target_bytes: survey.target_bytes,
    })
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
    use std::collections::BTreeMap;

    fn survey(partitions: &[(&str, &[u64])]) -> Survey {
        let mut small_files = BTreeMap::new();
        for (partition, sizes) in partitions {
            let files: Vec<(u64, String)> = sizes
                .iter()
                .enumerate()
                .map(|(i, bytes)| (*bytes, format!("{partition}-{i}.parquet")))
                .collect();
            small_files.insert(partition.to_string(), files);
        }
        Survey {
            snapshot_id: Some(7),
            target_bytes: 1000,
            small_files,
            ..Survey::default()
        }
    }

    #[test]
    fn partitions_with_the_most_small_files_go_first_within_the_budget() {
        let settings = CompactionSettings {
            min_files: 3,
            max_bytes: 1000,
        };
        let first = plan(
            &survey(&[
                ("a", &[100, 100, 100]),
                ("b", &[50, 60, 70, 80, 90]),
                ("c", &[10, 10]),
            ]),
            settings,
        )
        .unwrap();
        assert_eq!(first.snapshot_id, 7);
        // "c" has fewer than min_files; "b" comes first, smallest files first.
        assert_eq!(first.groups.len(), 2);
        assert_eq!(first.groups[0].len(), 5);
        assert!(first.groups[0][0].starts_with("b-0"));
        assert_eq!(first.groups[1].len(), 3);
        // A budget smaller than one partition still takes min_files of it, and stops there.
        let tight = plan_of(&[("b", &[500, 500, 500, 500])], 3, 600);
        assert_eq!(
            tight.groups,
            [vec!["b-0.parquet", "b-1.parquet", "b-2.parquet"]]
        );
        assert!(
            plan(
                &survey(&[("a", &[1, 1, 1])]),
                CompactionSettings {
                    min_files: 0,
                    max_bytes: 10
                }
            )
            .is_none()
        );
    }

    fn plan_of(partitions: &[(&str, &[u64])], min_files: usize, max_bytes: u64) -> Plan {
        plan(
            &survey(partitions),
            CompactionSettings {
                min_files,
                max_bytes,
            },
        )
        .unwrap()
    }
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
