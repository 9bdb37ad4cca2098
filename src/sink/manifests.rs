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

use anyhow::{Context, Result};
use iceberg::spec::{
    ManifestContentType, ManifestFile, ManifestListWriter, ManifestStatus, ManifestWriterBuilder,
    TableMetadata,
};
use iceberg::table::Table;

/// When the current snapshot lists this many small manifests, they are merged (Java's default
/// is 100; a streaming table commits far more often than a batch job).
const MIN_COUNT_TO_MERGE: usize = 8;
/// Manifests at least this large are left as they are (Java's default).
const TARGET_SIZE_BYTES: i64 = 8 << 20;

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
    let (small, kept): (Vec<&ManifestFile>, Vec<&ManifestFile>) =
        list.entries().iter().partition(|m| {
            m.content == ManifestContentType::Data
                && m.partition_spec_id == spec.spec_id()
                && m.manifest_length < target_bytes
        });
    if !merge_enabled || small.len() < min_count {
        return Ok(table.clone());
    }

    let file_io = table.file_io();
    let location = metadata.location();
    let merged_path = format!("{location}/metadata/{}-m0.avro", uuid::Uuid::new_v4());
    let mut writer = ManifestWriterBuilder::new(
        file_io.new_output(&merged_path)?,
        Some(current.snapshot_id()),
        metadata.current_schema().clone(),
        spec.as_ref().clone(),
    )
    .build_v2_data();
    for manifest in &small {
        let (entries, _) = manifest.load_manifest(file_io).await?.into_parts();
        // Files deleted by an older snapshot are history, which a merged manifest drops.
        for entry in entries
            .iter()
            .filter(|e| e.status != ManifestStatus::Deleted)
        {
            writer.add_existing_file(
                entry.data_file.clone(),
                entry.snapshot_id.unwrap_or(manifest.added_snapshot_id),
                entry.sequence_number.unwrap_or(manifest.sequence_number),
                entry.file_sequence_number,
            )?;
        }
    }
    let merged = writer.write_manifest_file().await?;

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
    list_writer.add_manifests(std::iter::once(merged).chain(kept.into_iter().cloned()))?;
    list_writer.close().await?;
    tracing::debug!(
        table = %table.identifier(),
        merged = small.len(),
        "merged small manifests"
    );
    view_with_manifest_list(table, current.snapshot_id(), &list_path)
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
