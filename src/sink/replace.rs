//! `replace` snapshots: the same rows in other files. The files replaced are marked deleted in
//! rewrites of the manifests that list them, the new files are added in a manifest of their own,
//! every other manifest is listed as it is, and the summary says what changed as Java's
//! `RewriteFiles` writes it. Readers of changes (incremental scans, streaming reads) skip a
//! `replace`: it adds no rows. An `overwrite`, made the same way, changes rows: an epoch's
//! corrections ([`super::corrections`]) and the open-sessions table's contents.

use std::collections::{HashMap, HashSet};

use anyhow::{Result, ensure};
use iceberg::TableUpdate;
use iceberg::spec::{
    DataFile, ManifestContentType, ManifestFile, ManifestListWriter, ManifestStatus, Operation,
    Snapshot, SnapshotReference, SnapshotRetention, Summary,
};
use iceberg::table::Table;

use super::catalog::Warehouse;
use super::commit::deserialize_files;
use super::expiry::{delete_dropped_metadata_files, forget_view};
use super::manifests::{
    Recency, SplitWriter, live_data_files, new_manifest_writer, with_merged_manifests,
};

/// What a replace removes and adds, as its summary counts them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Change {
    files: i64,
    records: i64,
    bytes: i64,
}

impl Change {
    fn count(&mut self, file: &DataFile) {
        self.files += 1;
        self.records += file.record_count() as i64;
        self.bytes += file.file_size_in_bytes() as i64;
    }
}

impl Warehouse {
    /// One commit attempt of a `replace` snapshot on top of `base`: the data files at `removed`
    /// (which must be in `base`'s current snapshot) give way to `added`, with the same rows.
    pub async fn replace(
        &self,
        base: &Table,
        removed: &HashSet<String>,
        added: Vec<DataFile>,
        properties: HashMap<String, String>,
    ) -> Result<Table> {
        self.swap_files(
            base,
            removed,
            added,
            properties,
            Operation::Replace,
            Vec::new(),
        )
        .await
    }

    /// One commit attempt of an `overwrite` snapshot on top of `base`: the data files at
    /// `removed` (which must be in `base`'s current snapshot) give way to `added`, which hold
    /// other rows. Its summary carries `properties`, and the table's properties take `record`,
    /// as [`Warehouse::append`]'s take its properties: a commit of the pipeline's record.
    pub async fn overwrite(
        &self,
        base: &Table,
        removed: &HashSet<String>,
        added: Vec<DataFile>,
        properties: HashMap<String, String>,
        record: HashMap<String, String>,
    ) -> Result<Table> {
        let record = TableUpdate::SetProperties { updates: record };
        self.swap_files(
            base,
            removed,
            added,
            properties,
            Operation::Overwrite,
            vec![record],
        )
        .await
    }

    /// One commit attempt of a snapshot of `operation` (see [`replace_files`]) on top of `base`,
    /// with the table updates `also` in the same metadata commit.
    async fn swap_files(
        &self,
        base: &Table,
        removed: &HashSet<String>,
        added: Vec<DataFile>,
        properties: HashMap<String, String>,
        operation: Operation,
        also: Vec<TableUpdate>,
    ) -> Result<Table> {
        // The other manifests are listed merged, as an append lists them.
        let view = match with_merged_manifests(base).await {
            Ok(view) => view,
            Err(e) => {
                tracing::warn!("cannot merge the manifests of {}: {e:#}", base.identifier());
                base.clone()
            }
        };
        let committed = match replace_files(&view, removed, added, properties, operation).await {
            Ok(updates) => {
                let updates = updates.into_iter().chain(also).collect();
                self.commit_updates(&view, updates).await
            }
            Err(e) => Err(e),
        };
        forget_view(base, &view).await;
        let committed = committed?;
        delete_dropped_metadata_files(base, &committed).await;
        Ok(committed)
    }

    /// One commit attempt that leaves `base`'s table holding exactly the data files
    /// `serialized_files` (as [`super::TableWriter::close`] serialized them): an `overwrite`
    /// snapshot removing the others and adding those it lacks (an `append` where nothing goes),
    /// none if it holds them already. For a table that only shows the present, such as the open
    /// sessions.
    pub async fn replace_contents(
        &self,
        base: &Table,
        serialized_files: &[String],
        properties: HashMap<String, String>,
    ) -> Result<Table> {
        let wanted = serialized_files
            .iter()
            .zip(deserialize_files(base, serialized_files)?);
        let live: HashSet<String> = live_data_files(base)
            .await?
            .iter()
            .map(|file| file.file_path().to_string())
            .collect();
        let (kept, new): (Vec<_>, Vec<_>) =
            wanted.partition(|(_, file)| live.contains(file.file_path()));
        let kept: HashSet<&str> = kept.iter().map(|(_, file)| file.file_path()).collect();
        let removed: HashSet<String> = live
            .iter()
            .filter(|path| !kept.contains(path.as_str()))
            .cloned()
            .collect();
        let (added_json, added): (Vec<String>, Vec<DataFile>) = new
            .into_iter()
            .map(|(json, file)| (json.clone(), file))
            .unzip();
        if removed.is_empty() && added.is_empty() {
            return Ok(base.clone());
        }
        if removed.is_empty() {
            return self.append(base, &added_json, properties).await;
        }
        self.swap_files(
            base,
            &removed,
            added,
            properties,
            Operation::Overwrite,
            Vec::new(),
        )
        .await
    }
}

/// The updates that replace the data files at `removed` of `table`'s current snapshot by `added`,
/// in a snapshot of `operation` whose summary carries `properties` too: a `replace` keeps the
/// rows, an `overwrite` changes them. Every file of `removed` must still be in the current
/// snapshot.
async fn replace_files(
    table: &Table,
    removed: &HashSet<String>,
    added: Vec<DataFile>,
    properties: HashMap<String, String>,
    operation: Operation,
) -> Result<Vec<TableUpdate>> {
    let metadata = table.metadata();
    // A table without a snapshot has no files to remove, but an overwrite may still add some.
    let current = metadata.current_snapshot();
    let snapshot_id = new_snapshot_id(table);
    let sequence_number = metadata.next_sequence_number();
    let file_io = table.file_io();
    let location = metadata.location();
    let schema = metadata.current_schema();

    let mut deleted = Change::default();
    let mut partitions = HashSet::new();
    let mut manifests: Vec<ManifestFile> = Vec::new();
    let listed = match current {
        Some(current) => {
            let list = table.manifest_list_reader(current).load().await?;
            list.entries().to_vec()
        }
        None => Vec::new(),
    };
    let recency = Recency::of(metadata.default_partition_spec(), &listed);
    for manifest in &listed {
        if manifest.content != ManifestContentType::Data {
            manifests.push(manifest.clone());
            continue;
        }
        let (entries, _) = manifest.load_manifest(file_io).await?.into_parts();
        let live = || {
            entries
                .iter()
                .filter(|e| e.status != ManifestStatus::Deleted)
        };
        if !live().any(|e| removed.contains(e.data_file.file_path())) {
            manifests.push(manifest.clone());
            continue;
        }
        let spec = metadata
            .partition_spec_by_id(manifest.partition_spec_id)
            .ok_or_else(|| anyhow::anyhow!("manifest of unknown partition spec"))?;
        // Cold partitions' survivors go to a manifest of their own (see `Recency`, whose
        // partition field is the default spec's).
        let default_spec = manifest.partition_spec_id == metadata.default_partition_spec_id();
        let recency = recency.filter(|_| default_spec);
        let mut split = SplitWriter::new(table, snapshot_id, spec.as_ref(), recency);
        for entry in live() {
            let file = entry.data_file.clone();
            let writer = split.writer_for(&file)?;
            let data_sequence = entry.sequence_number.unwrap_or(manifest.sequence_number);
            if removed.contains(file.file_path()) {
                deleted.count(&file);
                partitions.insert(format!("{:?}", file.partition()));
                writer.add_delete_file(file, data_sequence, entry.file_sequence_number)?;
            } else {
                writer.add_existing_file(
                    file,
                    entry.snapshot_id.unwrap_or(manifest.added_snapshot_id),
                    data_sequence,
                    entry.file_sequence_number,
                )?;
            }
        }
        manifests.extend(split.finish().await?);
    }
    ensure!(
        deleted.files as usize == removed.len(),
        "{} of the {} files to replace are no longer in {}",
        removed.len() - deleted.files as usize,
        removed.len(),
        table.identifier()
    );

    let mut inserted = Change::default();
    if !added.is_empty() {
        let mut writer =
            new_manifest_writer(table, snapshot_id, metadata.default_partition_spec())?;
        for file in added {
            inserted.count(&file);
            partitions.insert(format!("{:?}", file.partition()));
            writer.add_file(file, sequence_number)?;
        }
        // The new files first: readers plan them as any others, and tools list them on top.
        manifests.insert(0, writer.write_manifest_file().await?);
    }
    ensure!(
        operation != Operation::Replace || inserted.records == deleted.records,
        "a replace must keep the rows: {} records in the new files, {} in those replaced",
        inserted.records,
        deleted.records
    );

    let list_path = format!(
        "{location}/metadata/snap-{snapshot_id}-1-{}.avro",
        uuid::Uuid::new_v4()
    );
    let mut list = ManifestListWriter::v2(
        file_io.new_output(&list_path)?.writer().await?,
        snapshot_id,
        current.map(|c| c.snapshot_id()),
        sequence_number,
    );
    list.add_manifests(manifests.into_iter())?;
    list.close().await?;

    let summary = Summary {
        operation,
        additional_properties: summary_properties(
            &current.map_or_else(HashMap::new, |c| c.summary().additional_properties.clone()),
            inserted,
            deleted,
            partitions.len(),
        )
        .into_iter()
        .chain(properties)
        .collect(),
    };
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(current.map(|c| c.snapshot_id()))
        .with_sequence_number(sequence_number)
        .with_timestamp_ms(chrono::Utc::now().timestamp_millis())
        .with_manifest_list(list_path)
        .with_summary(summary)
        .with_schema_id(schema.schema_id())
        .build();
    Ok(vec![
        TableUpdate::AddSnapshot { snapshot },
        TableUpdate::SetSnapshotRef {
            ref_name: "main".into(),
            reference: SnapshotReference::new(
                snapshot_id,
                SnapshotRetention::branch(None, None, None),
            ),
        },
    ])
}

/// The summary's counts: what changed, and the table's totals after it.
fn summary_properties(
    previous: &HashMap<String, String>,
    added: Change,
    deleted: Change,
    changed_partitions: usize,
) -> HashMap<String, String> {
    let total = |key: &str, delta: i64| {
        let before: i64 = previous.get(key).and_then(|v| v.parse().ok()).unwrap_or(0);
        (key.to_string(), (before + delta).max(0).to_string())
    };
    let mut summary: HashMap<String, String> = [
        ("added-data-files", added.files),
        ("deleted-data-files", deleted.files),
        ("added-records", added.records),
        ("deleted-records", deleted.records),
        ("added-files-size", added.bytes),
        ("removed-files-size", deleted.bytes),
        ("changed-partition-count", changed_partitions as i64),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect();
    summary.extend([
        total("total-data-files", added.files - deleted.files),
        total("total-records", added.records - deleted.records),
        total("total-files-size", added.bytes - deleted.bytes),
    ]);
    for unchanged in [
        "total-delete-files",
        "total-position-deletes",
        "total-equality-deletes",
    ] {
        summary.insert(
            unchanged.into(),
            previous.get(unchanged).cloned().unwrap_or("0".into()),
        );
    }
    summary
}

/// A snapshot id not in use in `table` (positive, as Java's are).
fn new_snapshot_id(table: &Table) -> i64 {
    loop {
        let (high, _) = uuid::Uuid::new_v4().as_u64_pair();
        let id = (high & i64::MAX as u64) as i64;
        if id != 0 && table.metadata().snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_follow_the_change() {
        let previous: HashMap<String, String> = [
            ("total-data-files", "10"),
            ("total-records", "1000"),
            ("total-files-size", "5000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let added = Change {
            files: 1,
            records: 600,
            bytes: 2000,
        };
        let deleted = Change {
            files: 6,
            records: 600,
            bytes: 3000,
        };
        let summary = summary_properties(&previous, added, deleted, 1);
        assert_eq!(summary["total-data-files"], "5");
        assert_eq!(summary["total-records"], "1000");
        assert_eq!(summary["total-files-size"], "4000");
        assert_eq!(summary["deleted-data-files"], "6");
        assert_eq!(summary["total-delete-files"], "0");
    }
}
