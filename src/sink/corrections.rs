//! Copy-on-write corrections of the sessions table: the rows an epoch's corrections retract are
//! dropped by writing the files that hold them again without them. Only files are read and
//! written here; the commit that swaps them in (an `overwrite` snapshot) is the commit protocol's
//! (`src/commit/protocol.rs`).
//!
//! A retracted row is looked for in the files of the table's current snapshot that may hold it
//! (pruned by a filter on its user and start, as a query would be) and in the epoch's own new
//! files of its partition. A row matches on every column the session rules decide (user, start,
//! end, event count, end reason, pages), so that a corrected row that kept the session's id is
//! told apart from the row it replaces; each retraction drops one row at most.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{BooleanArray, RecordBatch};
use futures::{StreamExt, TryStreamExt};
use iceberg::expr::Reference;
use iceberg::scan::FileScanTask;
use iceberg::spec::{DataFile, Datum, Literal, Struct};
use iceberg::table::Table;
use iceberg::transform::create_transform_function;

use super::commit::deserialize_files;
use super::tables::RetractedSession;
use super::writer::TableWriter;

/// The files that carry an epoch's corrections into the sessions table, not yet committed.
#[derive(Debug)]
pub struct Rewrite {
    /// The table's snapshot the rewrite read (`None` for a table without one): the commit must
    /// be made on top of it, or the rewrite made again.
    pub base_snapshot: Option<i64>,
    /// Files of that snapshot that held retracted rows.
    pub removed: HashSet<String>,
    /// The epoch's new files that held none, and the rewritten files.
    pub added: Vec<DataFile>,
}

/// Rewrites the files of the sessions table `base` (as its current snapshot lists them) and the
/// epoch's new files (not in the table yet, as [`TableWriter::close`] serialized them) that hold
/// rows `retractions` names, without those rows, into files named `file_prefix…`. A retraction
/// that matches no row is logged and otherwise ignored: the row it names is not in the table, so
/// nothing is left to replace.
pub async fn rewrite(
    base: &Table,
    new_files: &[String],
    retractions: &[RetractedSession],
    file_prefix: String,
) -> Result<Rewrite> {
    // Each row maps to the retractions of it still to match, so that duplicates drop one row
    // each. A retraction holds exactly the columns that tell one version of a session from
    // another, so it is its own key.
    let mut pending: HashMap<&RetractedSession, usize> = HashMap::new();
    for row in retractions {
        *pending.entry(row).or_default() += 1;
    }
    let mut writer = TableWriter::new(base, file_prefix).await?;
    let schema = writer.arrow_schema().clone();
    let mut removed = HashSet::new();
    // Rows committed before are matched first: a retraction names a row that was written.
    for task in table_candidates(base, retractions).await? {
        let path = task.data_file_path.clone();
        if let Some(kept) = without_retracted(base, task, &schema, &mut pending).await? {
            for batch in kept {
                writer.write(batch).await?;
            }
            removed.insert(path);
        }
    }
    let partitions = retractions
        .iter()
        .map(|row| partition_of(base, row))
        .collect::<Result<HashSet<Struct>>>()?;
    let mut added = Vec::new();
    for file in deserialize_files(base, new_files)? {
        if !partitions.contains(file.partition()) {
            added.push(file);
            continue;
        }
        let task = new_file_task(base, &file);
        match without_retracted(base, task, &schema, &mut pending).await? {
            Some(kept) => {
                for batch in kept {
                    writer.write(batch).await?;
                }
            }
            None => added.push(file),
        }
    }
    added.extend(writer.close_files().await?);
    for row in retractions {
        if let Some(left) = pending.get_mut(row).filter(|left| **left > 0) {
            *left -= 1;
            tracing::warn!(
                session_id = %row.session_id(),
                user_id = %row.user_id,
                start_ms = row.start_ms,
                "a correction retracts a session row that is not in {}: nothing to replace",
                base.identifier()
            );
        }
    }
    Ok(Rewrite {
        base_snapshot: base.metadata().current_snapshot_id(),
        removed,
        added,
    })
}

/// The scan tasks of the files of `table`'s current snapshot that may hold a retracted row: those
/// a filter on the rows' users and starts does not rule out (by partition and column bounds).
/// The filter only chooses files: every row of each is read.
async fn table_candidates(
    table: &Table,
    retractions: &[RetractedSession],
) -> Result<Vec<FileScanTask>> {
    if table.metadata().current_snapshot().is_none() {
        return Ok(Vec::new());
    }
    let users = retractions.iter().map(|row| Datum::string(&row.user_id));
    let starts = retractions
        .iter()
        .map(|row| Datum::timestamptz_micros(row.start_ms as i64 * 1000));
    let filter = Reference::new("user_id")
        .is_in(users)
        .and(Reference::new("session_start").is_in(starts));
    let tasks: Vec<FileScanTask> = table
        .scan()
        .select_all()
        .with_filter(filter)
        .build()?
        .plan_files()
        .await?
        .try_collect()
        .await?;
    Ok(tasks
        .into_iter()
        .map(|task| FileScanTask {
            predicate: None,
            ..task
        })
        .collect())
}

/// A scan task reading every row of `file`, one of the epoch's files, which no snapshot lists
/// yet (so no delete file applies to it).
fn new_file_task(table: &Table, file: &DataFile) -> FileScanTask {
    let schema = table.metadata().current_schema().clone();
    let field_ids = schema.as_struct().fields().iter().map(|f| f.id).collect();
    FileScanTask::builder()
        .with_file_size_in_bytes(file.file_size_in_bytes())
        .with_start(0)
        .with_length(file.file_size_in_bytes())
        .with_record_count(Some(file.record_count()))
        .with_data_file_path(file.file_path().to_string())
        .with_data_file_format(file.file_format())
        .with_schema(schema)
        .with_project_field_ids(field_ids)
        .with_case_sensitive(true)
        .build()
}

/// The partition (of `table`'s default spec) a retracted row was written to.
fn partition_of(table: &Table, row: &RetractedSession) -> Result<Struct> {
    let metadata = table.metadata();
    let schema = metadata.current_schema();
    metadata
        .default_partition_spec()
        .fields()
        .iter()
        .map(|field| {
            let source = schema.field_by_id(field.source_id).map(|f| f.name.as_str());
            let value = match source {
                Some("user_id") => Datum::string(&row.user_id),
                Some("session_start") => Datum::timestamptz_micros(row.start_ms as i64 * 1000),
                Some("session_start_time_ms") => Datum::long(row.start_ms as i64),
                other => bail!(
                    "{} is partitioned by {other:?}, where corrections cannot find rows",
                    table.identifier()
                ),
            };
            let value = create_transform_function(&field.transform)?.transform_literal(&value)?;
            Ok(value.map(|value| Literal::Primitive(value.literal().clone())))
        })
        .collect()
}

/// The rows of `task`'s file but those `pending` retracts (each match uses one retraction up),
/// in `schema`; `None` if no row of the file is retracted.
async fn without_retracted(
    table: &Table,
    task: FileScanTask,
    schema: &arrow_schema::SchemaRef,
    pending: &mut HashMap<&RetractedSession, usize>,
) -> Result<Option<Vec<RecordBatch>>> {
    let path = task.data_file_path.clone();
    let batches: Vec<RecordBatch> = table
        .reader_builder()
        .build()
        .read(futures::stream::iter([Ok(task)]).boxed())?
        .stream()
        .try_collect()
        .await
        .with_context(|| format!("cannot read {path} to correct it"))?;
    let mut dropped = false;
    let mut kept = Vec::with_capacity(batches.len());
    for batch in batches {
        // The reader's batches lack the writer's field ids.
        let batch = RecordBatch::try_new(schema.clone(), batch.columns().to_vec())?;
        let rows = session_rows(&batch)?;
        let keep: BooleanArray = rows
            .iter()
            .map(|row| match pending.get_mut(row).filter(|left| **left > 0) {
                Some(left) => {
                    *left -= 1;
                    dropped = true;
                    Some(false)
                }
                None => Some(true),
            })
            .collect();
        kept.push(arrow_select::filter::filter_record_batch(&batch, &keep)?);
    }
    Ok(dropped.then_some(kept))
}

/// Each row of a batch of the sessions table, as a retraction would name it.
fn session_rows(batch: &RecordBatch) -> Result<Vec<RetractedSession>> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .with_context(|| format!("the sessions table has no column {name}"))
    };
    let string = |name: &str| {
        column(name)?
            .as_string_opt::<i32>()
            .with_context(|| format!("the column {name} is not a string"))
    };
    let long = |name: &str| {
        column(name)?
            .as_primitive_opt::<Int64Type>()
            .with_context(|| format!("the column {name} is not a long"))
    };
    let (users, reasons) = (string("user_id")?, string("end_reason")?);
    let (starts, ends) = (long("session_start_time_ms")?, long("session_end_time_ms")?);
    let counts = long("event_count")?;
    let pages = column("pages_visited")?
        .as_list_opt::<i32>()
        .context("the column pages_visited is not a list")?;
    (0..batch.num_rows())
        .map(|row| {
            let visited = pages.value(row);
            let visited = visited
                .as_string_opt::<i32>()
                .context("the pages visited are not strings")?;
            // Negative values (another tool's rows) match no retraction either way.
            Ok(RetractedSession {
                user_id: users.value(row).to_string(),
                start_ms: starts.value(row) as u64,
                end_ms: ends.value(row) as u64,
                event_count: counts.value(row) as u64,
                end_reason: reasons.value(row).to_string(),
                pages_visited: visited.iter().flatten().map(str::to_string).collect(),
            })
        })
        .collect()
}
