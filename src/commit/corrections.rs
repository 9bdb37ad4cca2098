//! The commit point of an epoch with corrections: an `overwrite` snapshot of the sessions table
//! that removes the files holding the rows the corrections retract and adds them rewritten
//! without those rows ([`crate::sink::corrections`]), with the epoch's new files. The rewrite
//! reads the table as one snapshot lists it, so it is only committed on top of that snapshot: when
//! [`super::commit_once`] finds that the table moved on (a compaction may have replaced a file
//! the rewrite removes), the files are rewritten from the new base before the next attempt.

use std::collections::HashMap;

use anyhow::Result;
use iceberg::table::Table;

use super::record::summary;
use crate::failure::fail_point;
use crate::sink::corrections::{Rewrite, rewrite};
use crate::sink::{RetractedSession, Warehouse};

/// The rows of the sessions table an epoch's corrections retract, and the rewrites made for them
/// so far.
pub struct Corrections<'a> {
    retractions: &'a [RetractedSession],
    /// The start of the rewritten files' names, unique to the epoch's commit.
    file_prefix: String,
    rewrites: u32,
    /// The latest rewrite, kept for another attempt on the same base.
    latest: Option<Rewrite>,
}

impl<'a> Corrections<'a> {
    /// The corrections of an epoch's commit, whose rewritten files' names start with
    /// `file_prefix` (then the number of the rewrite).
    pub fn new(retractions: &'a [RetractedSession], file_prefix: String) -> Self {
        Corrections {
            retractions,
            file_prefix,
            rewrites: 0,
            latest: None,
        }
    }

    /// One commit attempt on top of `base`: the epoch's new files `files` (serialized) and the
    /// corrections in an `overwrite` snapshot whose summary carries `properties` (the record,
    /// which the table's properties take too) and the number of rows retracted.
    pub async fn attempt(
        &mut self,
        warehouse: &Warehouse,
        base: &Table,
        files: &[String],
        properties: &HashMap<String, String>,
    ) -> Result<Table> {
        let current = base.metadata().current_snapshot_id();
        let rewritten = match self.latest.take() {
            Some(latest) if latest.base_snapshot == current => latest,
            _ => {
                self.rewrites += 1;
                let prefix = format!("{}{}", self.file_prefix, self.rewrites);
                let rewritten = rewrite(base, files, self.retractions, prefix).await?;
                tracing::info!(
                    retracted = self.retractions.len(),
                    files_rewritten = rewritten.removed.len(),
                    "rewrote the files holding corrected sessions"
                );
                fail_point("after-correction-files");
                rewritten
            }
        };
        let latest = self.latest.insert(rewritten);
        let mut snapshot_properties = properties.clone();
        snapshot_properties.insert(
            summary::CORRECTED_SESSIONS.to_string(),
            self.retractions.len().to_string(),
        );
        warehouse
            .overwrite(
                base,
                &latest.removed,
                latest.added.clone(),
                snapshot_properties,
                properties.clone(),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::rc::Rc;
    use std::sync::{Arc, Mutex};

    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::{Array, RecordBatch};
    use futures::TryStreamExt;
    use iceberg::spec::{Datum, Operation};

    use super::*;
    use crate::commit::record::{Mark, side_properties};
    use crate::commit::{TableCommit, commit_once};
    use crate::maintain::compaction::{Plan, rewrite as compact};
    use crate::rules::{ClosedSession, EndReason};
    use crate::sink::tables::sessions_batch;
    use crate::sink::{CatalogSettings, TableKind, TableWriter, live_data_files};

    const RUN: &str = "18c0ffee000-0badcafe";
    const BUCKETS: u32 = 16;

    fn session(user: &str, start_ms: u64, end_ms: u64, pages: &[&str]) -> ClosedSession {
        ClosedSession {
            user_id: user.into(),
            start_ms,
            end_ms,
            event_count: pages.len() as u64,
            pages_visited: pages.iter().map(|p| Rc::from(*p)).collect(),
            end_reason: EndReason::Inactivity,
            corrected: false,
        }
    }

    fn corrected(row: ClosedSession) -> ClosedSession {
        ClosedSession {
            corrected: true,
            ..row
        }
    }

    /// A row as read back: session id, user, start, end, duration, events, pages, end reason and
    /// the epoch that corrected it.
    type Row = (
        String,
        String,
        i64,
        i64,
        i64,
        i64,
        Vec<String>,
        String,
        Option<i64>,
    );

    fn expected(row: &ClosedSession, corrected_at: Option<i64>) -> Row {
        (
            row.session_id().to_string(),
            row.user_id.to_string(),
            row.start_ms as i64,
            row.end_ms as i64,
            row.duration_seconds() as i64,
            row.event_count as i64,
            row.pages_visited.iter().map(|p| p.to_string()).collect(),
            row.end_reason.as_str().to_string(),
            corrected_at,
        )
    }

    async fn rows(table: &Table) -> Vec<Row> {
        let batches: Vec<RecordBatch> = table
            .scan()
            .select_all()
            .build()
            .unwrap()
            .to_arrow()
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let mut rows = Vec::new();
        for batch in &batches {
            let string = |name| batch.column_by_name(name).unwrap().as_string::<i32>();
            let long = |name| {
                batch
                    .column_by_name(name)
                    .unwrap()
                    .as_primitive::<Int64Type>()
            };
            let pages = batch
                .column_by_name("pages_visited")
                .unwrap()
                .as_list::<i32>();
            for row in 0..batch.num_rows() {
                let visited = pages.value(row);
                let corrected_at = long("corrected_at_epoch");
                rows.push((
                    string("session_id").value(row).to_string(),
                    string("user_id").value(row).to_string(),
                    long("session_start_time_ms").value(row),
                    long("session_end_time_ms").value(row),
                    long("session_duration_seconds").value(row),
                    long("event_count").value(row),
                    visited
                        .as_string::<i32>()
                        .iter()
                        .flatten()
                        .map(str::to_string)
                        .collect(),
                    string("end_reason").value(row).to_string(),
                    corrected_at.is_valid(row).then(|| corrected_at.value(row)),
                ));
            }
        }
        rows.sort();
        rows
    }

    /// The epoch's rows in files as the workers write them.
    async fn write(table: &Table, epoch: u64, rows: &[ClosedSession]) -> Vec<String> {
        let mut writer = TableWriter::new(table, format!("{RUN}-w0-e{epoch}"))
            .await
            .unwrap();
        let batch = sessions_batch(writer.arrow_schema(), rows, epoch, BUCKETS);
        writer.write(batch).await.unwrap();
        writer.close().await.unwrap()
    }

    /// What `tracing` logs while `f` runs on this thread.
    fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
        #[derive(Clone)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl Write for Captured {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured(Arc::default());
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || writer.clone())
            .finish();
        let result = tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        (result, text)
    }

    #[test]
    fn corrections_replace_exactly_the_retracted_rows_on_the_newest_base() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = crate::sink::runtime().unwrap();
        // Day 0 and day 1 (86 400 000 ms): partitions the corrections touch, and one they don't.
        let replaced = session("alice", 1_000, 61_000, &["/a", "/b"]);
        let kept_corrected = corrected(session("alice", 5_000_000, 5_090_000, &["/c"]));
        let compacted_away = session("bob", 2_000, 32_000, &["/a"]);
        let untouched = session("frank", 90_000_000, 90_001_000, &["/z"]);
        let replacement = corrected(session("alice", 1_000, 90_000, &["/a", "/b", "/d"]));
        let retracted_new = session("dave", 10_000, 20_000, &["/x"]);
        let kept_new = session("dave", 20_000_000, 20_005_000, &["/y", "/y"]);
        let other_new = session("erin", 95_000_000, 95_000_500, &["/q"]);
        let missing = session("zed", 7, 8, &["/nowhere"]);
        let retractions: Vec<RetractedSession> =
            [&replaced, &compacted_away, &retracted_new, &missing]
                .into_iter()
                .map(RetractedSession::from)
                .collect();

        let ((table, stale, files), log) = logged(|| {
            runtime.block_on(async {
                let warehouse = Warehouse::open(
                    &CatalogSettings::default(),
                    dir.path().to_path_buf(),
                    "db",
                    "sessions",
                )
                .await
                .unwrap();
                warehouse.ensure_tables(BUCKETS).await.unwrap();
                let base = warehouse.load(TableKind::Sessions).await.unwrap();
                let first = Mark {
                    epoch: 1,
                    run_id: RUN.into(),
                };
                let epoch_rows = [
                    replaced.clone(),
                    kept_corrected.clone(),
                    compacted_away.clone(),
                    untouched.clone(),
                ];
                let files = write(&base, 1, &epoch_rows).await;
                let commit = TableCommit {
                    kind: TableKind::Sessions,
                    files: &files,
                    properties: side_properties(&first),
                    mark: &first,
                    previous: None,
                    corrections: None,
                };
                let stale = commit_once(&warehouse, base, commit, 100).await.unwrap();

                // Another tool compacts bob's file after the committer last saw the table: the
                // file the corrections would remove is gone.
                let bob_file = live_data_files(&stale)
                    .await
                    .unwrap()
                    .into_iter()
                    .find(|file| file.lower_bounds().get(&1) == Some(&Datum::string("bob")))
                    .expect("bob's row is alone in its partition");
                let plan = Plan {
                    snapshot_id: stale.metadata().current_snapshot_id().unwrap(),
                    groups: vec![vec![bob_file.file_path().to_string()]],
                    target_bytes: 1 << 20,
                };
                let compaction = compact(&stale, TableKind::Sessions, &plan, "other-tool".into())
                    .await
                    .unwrap();
                warehouse
                    .replace(
                        &stale,
                        &compaction.removed,
                        compaction.added,
                        HashMap::new(),
                    )
                    .await
                    .unwrap();

                let second = Mark {
                    epoch: 2,
                    run_id: RUN.into(),
                };
                let new_rows = [
                    replacement.clone(),
                    retracted_new.clone(),
                    kept_new.clone(),
                    other_new.clone(),
                ];
                let files = write(&stale, 2, &new_rows).await;
                let prefix = format!("{RUN}-w0-e2-correction");
                let commit = TableCommit {
                    kind: TableKind::Sessions,
                    files: &files,
                    properties: side_properties(&second),
                    mark: &second,
                    previous: Some(&first),
                    corrections: Some(Corrections::new(&retractions, prefix.clone())),
                };
                let table = commit_once(&warehouse, stale.clone(), commit, 100)
                    .await
                    .unwrap();

                // The same commit once more, from the same stale view: it finds its own mark and
                // makes no second snapshot.
                let again = TableCommit {
                    kind: TableKind::Sessions,
                    files: &files,
                    properties: side_properties(&second),
                    mark: &second,
                    previous: Some(&first),
                    corrections: Some(Corrections::new(&retractions, prefix)),
                };
                let after = commit_once(&warehouse, stale.clone(), again, 100)
                    .await
                    .unwrap();
                assert_eq!(
                    after.metadata().current_snapshot_id(),
                    table.metadata().current_snapshot_id()
                );
                let files: Vec<String> = live_data_files(&table)
                    .await
                    .unwrap()
                    .iter()
                    .map(|file| file.file_path().to_string())
                    .collect();
                (table, stale, files)
            })
        });

        let mut wanted = vec![
            expected(&kept_corrected, Some(1)),
            expected(&untouched, None),
            expected(&replacement, Some(2)),
            expected(&kept_new, None),
            expected(&other_new, None),
        ];
        wanted.sort();
        assert_eq!(runtime.block_on(rows(&table)), wanted);
        // The replacement keeps the id of the row it replaces.
        assert_eq!(replacement.session_id(), replaced.session_id());

        let snapshot = table.metadata().current_snapshot().unwrap();
        let summary = snapshot.summary();
        assert_eq!(summary.operation, Operation::Overwrite);
        assert_eq!(
            summary.additional_properties[summary::CORRECTED_SESSIONS],
            "4"
        );
        assert_eq!(summary.additional_properties[summary::EPOCH], "2");
        // The rows removed: the two retracted rows committed in epoch 1 and the rows kept beside
        // them in their files, which come back rewritten.
        assert_eq!(summary.additional_properties["deleted-records"], "3");
        // The record is the table's too, but the count is the snapshot's alone.
        let properties = table.metadata().properties();
        assert_eq!(properties[summary::EPOCH], "2");
        assert!(!properties.contains_key(summary::CORRECTED_SESSIONS));

        // The first rewrite read the stale snapshot; the commit is the second's, made on top of
        // the compaction.
        assert_ne!(
            stale.metadata().current_snapshot_id(),
            snapshot.parent_snapshot_id()
        );
        assert!(files.iter().any(|f| f.contains("-e2-correction2-")));
        assert!(!files.iter().any(|f| f.contains("-e2-correction1-")));

        // Only the retraction that matches nothing is logged, once per rewrite: the stale one,
        // the committed one, and the repeated commit's before it found its own mark.
        let missing_id = missing.session_id().to_string();
        assert_eq!(log.matches(&missing_id).count(), 3, "{log}");
        assert_eq!(log.matches("WARN").count(), 3, "{log}");
    }
}
