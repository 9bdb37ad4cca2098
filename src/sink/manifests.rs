//! Merged manifests: an append adds one manifest per commit, so a table committed every few
//! seconds would soon list thousands of them, and every commit and every query plan reads them
//! all. Before an append, the small manifests of the current snapshot are merged into one, as
//! Java's `MergeAppend` does, under the same table properties
//! (`commit.manifest.min-count-to-merge`, `commit.manifest.target-size-bytes`).
//!
//! iceberg-rust's append lists the current snapshot's manifests in the new snapshot. The merge
//! hands it a view of the table whose current snapshot (the same id, sequence number and summary)
//! names a manifest list of the merged manifests, so the new snapshot lists those; the commit's
//! requirement is still the current snapshot's id, and the snapshots already committed are
//! untouched. Merged entries keep their snapshot ids and sequence numbers, as `EXISTING` entries.
//!
//! New files and compactions go to the partitions of the newest days; older days' partitions stay
//! as they are. So manifests keep the two apart ([`Recency`]): a merge or a replace writes the
//! entries of older days to a manifest of their own, which later merges and replaces leave alone
//! (cold manifests are merged only among themselves). A commit's work then follows the files of
//! the newest days, not those of the whole table, and stays flat as the table grows.

use anyhow::{Context, Result};
use iceberg::spec::{
    DataFile, Literal, ManifestContentType, ManifestFile, ManifestListWriter, ManifestStatus,
    ManifestWriter, ManifestWriterBuilder, PartitionSpec, PrimitiveLiteral, TableMetadata,
    Transform,
};
use iceberg::table::Table;

/// When the current snapshot lists this many small manifests, they are merged (Java's default
/// is 100; a streaming table commits far more often than a batch job).
const MIN_COUNT_TO_MERGE: usize = 8;
/// Manifests at least this large are left as they are (Java's default).
const TARGET_SIZE_BYTES: i64 = 8 << 20;

/// The data files of `table`'s current snapshot (none without one).
pub async fn live_data_files(table: &Table) -> Result<Vec<DataFile>> {
    let Some(current) = table.metadata().current_snapshot() else {
        return Ok(Vec::new());
    };
    let list = table.manifest_list_reader(current).load().await?;
    let mut files = Vec::new();
    for manifest in list.entries() {
        if manifest.content == ManifestContentType::Data {
            let (entries, _) = manifest.load_manifest(table.file_io()).await?.into_parts();
            files.extend(
                entries
                    .into_iter()
                    .filter(|e| e.status != ManifestStatus::Deleted)
                    .map(|e| e.data_file.clone()),
            );
        }
    }
    Ok(files)
}

/// The table as an append should see it: `table` itself, or a view whose current snapshot lists
/// its small manifests merged into one (module docs). The view is for one append, never to keep.
pub async fn with_merged_manifests(table: &Table) -> Result<Table> {
    let metadata = table.metadata();
    let Some(current) = metadata.current_snapshot() else {
        return Ok(table.clone());
    };
    let property = |key: &str| metadata.properties().get(key).and_then(|v| v.parse().ok());
    let min_count = property("commit.manifest.min-count-to-merge")
        .map_or(MIN_COUNT_TO_MERGE, |n: i64| n.max(2) as usize);
    let target_bytes = property("commit.manifest.target-size-bytes").unwrap_or(TARGET_SIZE_BYTES);
    let merge_enabled = metadata
        .properties()
        .get("commit.manifest-merge.enabled")
        .is_none_or(|v| v != "false");
    let list = table.manifest_list_reader(current).load().await?;
    let spec = metadata.default_partition_spec();
    let recency = Recency::of(spec, list.entries());
    let (small, kept): (Vec<&ManifestFile>, Vec<&ManifestFile>) =
        list.entries().iter().partition(|m| {
            m.content == ManifestContentType::Data
                && m.partition_spec_id == spec.spec_id()
                && m.manifest_length < target_bytes
        });
    let (cold, hot): (Vec<&ManifestFile>, Vec<&ManifestFile>) = small
        .into_iter()
        .partition(|m| recency.is_some_and(|r| r.is_cold_manifest(m)));
    let mut unmerged: Vec<ManifestFile> = kept.into_iter().cloned().collect();
    let mut merged = Vec::new();
    for group in [hot, cold] {
        if merge_enabled && group.len() >= min_count {
            merged.extend(merge(table, &group, recency).await?);
        } else {
            unmerged.extend(group.into_iter().cloned());
        }
    }
    if merged.is_empty() {
        return Ok(table.clone());
    }

    let file_io = table.file_io();
    let location = metadata.location();
    let list_path = format!(
        "{location}/metadata/snap-{}-merged-{}.avro",
        current.snapshot_id(),
        uuid::Uuid::new_v4()
    );
    let mut list_writer = ManifestListWriter::v2(
        file_io.new_output(&list_path)?.writer().await?,
        current.snapshot_id(),
        current.parent_snapshot_id(),
        current.sequence_number(),
    );
    list_writer.add_manifests(merged.into_iter().chain(unmerged))?;
    list_writer.close().await?;
    tracing::debug!(table = %table.identifier(), "merged small manifests");
    view_with_manifest_list(table, current.snapshot_id(), &list_path)
}

/// `manifests` of `table`'s current snapshot merged: their live entries in one manifest, or in
/// two when some are of cold partitions ([`Recency`]).
async fn merge(
    table: &Table,
    manifests: &[&ManifestFile],
    recency: Option<Recency>,
) -> Result<Vec<ManifestFile>> {
    let metadata = table.metadata();
    let current = metadata.current_snapshot().context("a current snapshot")?;
    let file_io = table.file_io();
    let spec = metadata.default_partition_spec();
    let mut split = SplitWriter::new(table, current.snapshot_id(), spec, recency);
    for manifest in manifests {
        let (entries, _) = manifest.load_manifest(file_io).await?.into_parts();
        // Files deleted by an older snapshot are history, which a merged manifest drops.
        for entry in entries
            .iter()
            .filter(|e| e.status != ManifestStatus::Deleted)
        {
            split.writer_for(&entry.data_file)?.add_existing_file(
                entry.data_file.clone(),
                entry.snapshot_id.unwrap_or(manifest.added_snapshot_id),
                entry.sequence_number.unwrap_or(manifest.sequence_number),
                entry.file_sequence_number,
            )?;
        }
    }
    split.finish().await
}

/// Which partitions are still written to: those of the newest two days of a table partitioned by
/// a day (or hour) of its rows. Partitions older than that are cold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recency {
    /// The time field's position in the partition tuple.
    field: usize,
    /// Partition values (days, or hours, since 1970) below this are cold.
    hot_from: i32,
}

impl Recency {
    /// The recency of the partitions of `spec` that `manifests` list; `None` when the spec has no
    /// day or hour field, or the manifests say nothing of it.
    pub fn of(spec: &PartitionSpec, manifests: &[ManifestFile]) -> Option<Recency> {
        let (field, hot_span) =
            spec.fields()
                .iter()
                .enumerate()
                .find_map(|(i, field)| match field.transform {
                    Transform::Day => Some((i, 1)),
                    Transform::Hour => Some((i, 24)),
                    _ => None,
                })?;
        let newest = manifests
            .iter()
            .filter(|m| m.partition_spec_id == spec.spec_id())
            .filter_map(|m| upper_bound(m, field))
            .max()?;
        Some(Recency {
            field,
            hot_from: newest.saturating_sub(hot_span),
        })
    }

    /// Whether every partition `manifest` lists is cold.
    pub fn is_cold_manifest(&self, manifest: &ManifestFile) -> bool {
        upper_bound(manifest, self.field).is_some_and(|newest| newest < self.hot_from)
    }

    /// Whether `file` is in a cold partition.
    pub fn is_cold(&self, file: &DataFile) -> bool {
        match file.partition().fields().get(self.field) {
            Some(Some(Literal::Primitive(PrimitiveLiteral::Int(value)))) => *value < self.hot_from,
            _ => false,
        }
    }
}

/// The newest value of partition field `field` in `manifest`, from the manifest list's summary
/// (a day or an hour is an int, stored as 4 little-endian bytes).
fn upper_bound(manifest: &ManifestFile, field: usize) -> Option<i32> {
    let bound = manifest
        .partitions
        .as_ref()?
        .get(field)?
        .upper_bound
        .as_ref()?;
    Some(i32::from_le_bytes(bound.as_ref().try_into().ok()?))
}

/// A writer of a new data manifest of `table` under `spec`, for the snapshot `snapshot_id`.
pub fn new_manifest_writer(
    table: &Table,
    snapshot_id: i64,
    spec: &PartitionSpec,
) -> Result<ManifestWriter> {
    let metadata = table.metadata();
    let path = format!(
        "{}/metadata/{}-m0.avro",
        metadata.location(),
        uuid::Uuid::new_v4()
    );
    Ok(ManifestWriterBuilder::new(
        table.file_io().new_output(&path)?,
        Some(snapshot_id),
        metadata.current_schema().clone(),
        spec.clone(),
    )
    .build_v2_data())
}

/// Writes manifest entries of one partition spec into a manifest for hot partitions and another
/// for cold ones, each created on its first entry; without a [`Recency`], into one.
pub struct SplitWriter<'a> {
    table: &'a Table,
    snapshot_id: i64,
    spec: &'a PartitionSpec,
    recency: Option<Recency>,
    hot: Option<ManifestWriter>,
    cold: Option<ManifestWriter>,
}

impl<'a> SplitWriter<'a> {
    pub fn new(
        table: &'a Table,
        snapshot_id: i64,
        spec: &'a PartitionSpec,
        recency: Option<Recency>,
    ) -> Self {
        SplitWriter {
            table,
            snapshot_id,
            spec,
            recency,
            hot: None,
            cold: None,
        }
    }

    /// The writer `file`'s entry goes to.
    pub fn writer_for(&mut self, file: &DataFile) -> Result<&mut ManifestWriter> {
        let cold = self.recency.is_some_and(|r| r.is_cold(file));
        let slot = if cold { &mut self.cold } else { &mut self.hot };
        if slot.is_none() {
            *slot = Some(new_manifest_writer(
                self.table,
                self.snapshot_id,
                self.spec,
            )?);
        }
        Ok(slot.as_mut().expect("created above"))
    }

    /// The manifests written, hot first.
    pub async fn finish(self) -> Result<Vec<ManifestFile>> {
        let mut written = Vec::new();
        for writer in [self.hot, self.cold].into_iter().flatten() {
            written.push(writer.write_manifest_file().await?);
        }
        Ok(written)
    }
}

/// `table` with snapshot `snapshot_id` naming `manifest_list` instead of its own. The metadata's
/// fields are private; its JSON form, which is its specification, is not.
fn view_with_manifest_list(table: &Table, snapshot_id: i64, manifest_list: &str) -> Result<Table> {
    let mut json = serde_json::to_value(table.metadata())?;
    let snapshot = json
        .get_mut("snapshots")
        .and_then(|s| s.as_array_mut())
        .and_then(|snapshots| {
            snapshots
                .iter_mut()
                .find(|s| s.get("snapshot-id").and_then(|id| id.as_i64()) == Some(snapshot_id))
        })
        .context("the current snapshot is in the metadata")?;
    snapshot["manifest-list"] = manifest_list.into();
    let metadata: TableMetadata = serde_json::from_value(json)?;
    let mut view = Table::builder()
        .metadata(metadata)
        .identifier(table.identifier().clone())
        .file_io(table.file_io().clone())
        .runtime(iceberg::Runtime::try_current()?);
    if let Some(location) = table.metadata_location() {
        view = view.metadata_location(location);
    }
    Ok(view.build()?)
}

#[cfg(test)]
mod tests {
    use iceberg::spec::{
        ByteBuf, DataContentType, DataFileBuilder, DataFileFormat, FieldSummary, Struct,
    };

    use super::*;
    use crate::sink::TableKind;

    fn sessions_spec() -> PartitionSpec {
        TableKind::Sessions
            .partition_spec(16)
            .bind(TableKind::Sessions.schema())
            .unwrap()
    }

    /// A manifest listing partitions of the days `oldest..=newest`.
    fn manifest(oldest: i32, newest: i32) -> ManifestFile {
        let bound = |day: i32| Some(ByteBuf::from(day.to_le_bytes().to_vec()));
        let summary = |lower, upper| FieldSummary {
            contains_null: false,
            contains_nan: None,
            lower_bound: lower,
            upper_bound: upper,
        };
        ManifestFile {
            manifest_path: format!("m-{oldest}-{newest}.avro"),
            manifest_length: 1_000,
            partition_spec_id: 0,
            content: ManifestContentType::Data,
            sequence_number: 1,
            min_sequence_number: 1,
            added_snapshot_id: 1,
            added_files_count: Some(1),
            existing_files_count: Some(0),
            deleted_files_count: Some(0),
            added_rows_count: Some(1),
            existing_rows_count: Some(0),
            deleted_rows_count: Some(0),
            partitions: Some(vec![
                summary(bound(oldest), bound(newest)),
                summary(bound(0), bound(15)),
            ]),
            key_metadata: None,
            first_row_id: None,
        }
    }

    fn file_of_day(day: i32) -> DataFile {
        DataFileBuilder::default()
            .content(DataContentType::Data)
            .file_path(format!("d{day}.parquet"))
            .file_format(DataFileFormat::Parquet)
            .file_size_in_bytes(10)
            .record_count(1)
            .partition_spec_id(0)
            .partition(Struct::from_iter([
                Some(Literal::int(day)),
                Some(Literal::int(3)),
            ]))
            .build()
            .unwrap()
    }

    #[test]
    fn the_newest_two_days_are_hot_and_the_rest_cold() {
        let spec = sessions_spec();
        let manifests = [manifest(100, 103), manifest(90, 95), manifest(104, 105)];
        let recency = Recency::of(&spec, &manifests).unwrap();
        let cold: Vec<bool> = manifests
            .iter()
            .map(|m| recency.is_cold_manifest(m))
            .collect();
        // Day 105 is the newest: 104 and 105 are hot, so a manifest reaching 103 is cold.
        assert_eq!(cold, [true, true, false]);
        assert!(recency.is_cold(&file_of_day(103)));
        assert!(!recency.is_cold(&file_of_day(104)));
        assert!(!recency.is_cold(&file_of_day(105)));
    }

    #[test]
    fn without_a_time_partition_or_its_bounds_nothing_is_cold() {
        let unpartitioned = TableKind::Quarantine
            .partition_spec(16)
            .bind(TableKind::Quarantine.schema())
            .unwrap();
        assert_eq!(Recency::of(&unpartitioned, &[manifest(1, 2)]), None);
        let no_bounds = ManifestFile {
            partitions: None,
            ..manifest(1, 2)
        };
        assert_eq!(Recency::of(&sessions_spec(), &[no_bounds]), None);
    }
}
