//! Files a table no longer needs, deleted after the commit that let them go: metadata files that
//! fell out of the metadata log (`write.metadata.previous-versions-max`), and the manifest lists,
//! manifests and data files of expired snapshots that no remaining snapshot references.
//!
//! Deletion is best effort and comes after the commit: a file left behind by a crash costs space,
//! never a row, and a file is deleted only once no snapshot left in the table names it, so time
//! travel to every retained snapshot still reads. Only files under the table's location are
//! touched.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use iceberg::spec::{ManifestStatus, SnapshotRef};
use iceberg::table::Table;

/// The table property our expiry commits set: when they ran (ms since the epoch).
pub const LAST_EXPIRY_MS: &str = "sessionize.last-expiry-ms";

/// Deletes the metadata files `before` still listed and `after` no longer does, unless the table
/// says `write.metadata.delete-after-commit.enabled=false` (Java's default is false; a streaming
/// table writes a metadata file every commit, so ours is true).
pub async fn delete_dropped_metadata_files(before: &Table, after: &Table) {
    let disabled = after
        .metadata()
        .properties()
        .get("write.metadata.delete-after-commit.enabled")
        .is_some_and(|v| v == "false");
    if disabled {
        return;
    }
    let deleted = delete_all(after, dropped_metadata_files(before, after).into_iter()).await;
    report_deleted("metadata", deleted);
}

/// The metadata files `before` names (itself and its metadata log) that `after` no longer does.
pub fn dropped_metadata_files<'a>(before: &'a Table, after: &Table) -> Vec<&'a str> {
    let kept: HashSet<&str> = after
        .metadata()
        .metadata_log()
        .iter()
        .map(|log| log.metadata_file.as_str())
        .chain(after.metadata_location())
        .collect();
    before
        .metadata()
        .metadata_log()
        .iter()
        .map(|log| log.metadata_file.as_str())
        .chain(before.metadata_location())
        .filter(|file| !kept.contains(file))
        .collect()
}

/// Deletes what the snapshots expired between `before` and `after` referenced and no snapshot of
/// `after` does.
pub async fn delete_unreferenced_files(before: &Table, after: &Table) {
    match unreferenced_files(before, after).await {
        Ok(files) => {
            let count = delete_all(after, files.iter().map(String::as_str)).await;
            report_deleted("expired", count);
            tracing::debug!(table = %after.identifier(), count, "deleted the files of expired snapshots");
        }
        Err(e) => tracing::warn!(
            "cannot list the files of expired snapshots of {}: {e:#}",
            after.identifier()
        ),
    }
}

/// Deletes the manifest list of a view made for one append ([`super::manifests`]), if it is one.
pub async fn forget_view(table: &Table, view: &Table) {
    let list = |t: &Table| {
        t.metadata()
            .current_snapshot()
            .map(|s| s.manifest_list().to_string())
    };
    if let Some(view_list) = list(view).filter(|v| Some(v) != list(table).as_ref()) {
        delete_all(table, std::iter::once(view_list.as_str())).await;
    }
}

/// Every file the table's snapshots name: manifest lists, manifests, and data files in any entry
/// (a file one snapshot deleted is still another's).
pub async fn referenced_files(table: &Table) -> Result<HashSet<String>> {
    let snapshots: Vec<&SnapshotRef> = table.metadata().snapshots().collect();
    let mut reader = ManifestReader {
        table,
        read: HashMap::new(),
        with_deleted: true,
    };
    reader.files(&snapshots).await
}

async fn unreferenced_files(before: &Table, after: &Table) -> Result<Vec<String>> {
    let remaining: HashSet<i64> = after
        .metadata()
        .snapshots()
        .map(|s| s.snapshot_id())
        .collect();
    let (expired, retained): (Vec<&SnapshotRef>, Vec<&SnapshotRef>) = before
        .metadata()
        .snapshots()
        .partition(|s| !remaining.contains(&s.snapshot_id()));
    if expired.is_empty() {
        return Ok(Vec::new());
    }
    let mut reader = ManifestReader {
        table: before,
        read: HashMap::new(),
        with_deleted: false,
    };
    let retained_files = reader.files(&retained).await?;
    let expired_files = reader.files(&expired).await?;
    Ok(expired_files.difference(&retained_files).cloned().collect())
}

/// Reads the files snapshots reference, each manifest once.
struct ManifestReader<'a> {
    table: &'a Table,
    /// Per manifest, the data files it lists.
    read: HashMap<String, Vec<String>>,
    /// Whether files a manifest lists as deleted count, or only live ones.
    with_deleted: bool,
}

impl ManifestReader<'_> {
    /// The manifest lists, manifests and data files of `snapshots`.
    async fn files(&mut self, snapshots: &[&SnapshotRef]) -> Result<HashSet<String>> {
        let mut files = HashSet::new();
        for snapshot in snapshots {
            files.insert(snapshot.manifest_list().to_string());
            let list = self.table.manifest_list_reader(snapshot).load().await?;
            for manifest in list.entries() {
                files.insert(manifest.manifest_path.clone());
                if !self.read.contains_key(&manifest.manifest_path) {
                    let (entries, _) = manifest
                        .load_manifest(self.table.file_io())
                        .await?
                        .into_parts();
                    let live = entries
                        .iter()
                        .filter(|e| self.with_deleted || e.status != ManifestStatus::Deleted)
                        .map(|e| e.file_path().to_string())
                        .collect();
                    self.read.insert(manifest.manifest_path.clone(), live);
                }
                files.extend(self.read[&manifest.manifest_path].iter().cloned());
            }
        }
        Ok(files)
    }
}

/// Deletes `files` that lie under the table's location, logging what cannot be deleted; returns
/// how many were deleted.
async fn delete_all(table: &Table, files: impl Iterator<Item = &str>) -> u64 {
    let root = format!("{}/", table.metadata().location().trim_end_matches('/'));
    let mut deleted = 0;
    for file in files.filter(|f| f.starts_with(&root)) {
        match table.file_io().delete(file).await {
            Ok(()) => deleted += 1,
            Err(e) => tracing::warn!("cannot delete {file}: {e}"),
        }
        crate::failure::fail_point("between-deletes");
    }
    deleted
}

/// Counts deleted files in `sessionize_files_deleted_total`.
fn report_deleted(reason: &'static str, count: u64) {
    if let Some(telemetry) = crate::ops::telemetry() {
        telemetry.files_deleted(reason, count);
    }
}
