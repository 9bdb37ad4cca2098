//! `sessionize maintain`: what a running pipeline does to keep its tables small (compaction,
//! expiry that deletes, orphan removal), as one bounded command, for tables written by older
//! releases, by runs with compaction off, or after a change of `write.target-file-size-bytes`.
//!
//! It may run beside a pipeline: each of its commits requires the snapshot it read, so a commit
//! of the pipeline in between makes it give up that round, never lose or double a row. The
//! pipeline, in turn, leaves alone the files `maintain` writes after the pipeline started. Orphan
//! files are only those of sessionize runs, and only once older than `orphan_age`, since an epoch
//! in flight of a running pipeline is unreferenced too until its commit.

use std::time::{Duration, SystemTime};

use anyhow::Result;
use serde::Serialize;

use super::orphans::{data_files, orphans};
use super::record::{new_run_id, own_snapshots_to_expire};
use crate::maintain::{CompactionSettings, Compactor};
use crate::sink::{TableKind, Warehouse};

/// What `sessionize maintain` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaintainSettings {
    pub compaction: CompactionSettings,
    /// Snapshots of ours each table keeps; 0 keeps all.
    pub retain_snapshots: usize,
    /// Unreferenced files of sessionize runs older than this are removed.
    pub orphan_age: Duration,
}

/// What maintenance did to one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableMaintenance {
    pub table: String,
    pub data_files_before: u64,
    pub data_files_after: u64,
    pub compactions: u64,
    pub snapshots_expired: usize,
    pub orphans_removed: usize,
}

/// Maintains the tables of `warehouse` that exist: compacts every partition with two small
/// files or more, expires our snapshots beyond `retain_snapshots` (deleting what no retained
/// snapshot references), and removes orphan files.
pub async fn maintain(
    warehouse: &Warehouse,
    catalog_options: &[(String, String)],
    settings: MaintainSettings,
) -> Result<Vec<TableMaintenance>> {
    let run_id = new_run_id();
    let orphans_before = SystemTime::now() - settings.orphan_age;
    let mut done = Vec::new();
    for kind in TableKind::ALL {
        if !warehouse.exists(kind).await? {
            continue;
        }
        let table = warehouse.load(kind).await?;
        let data_files_before = total_data_files(&table);
        let mut compactor = Compactor::new(settings.compaction, run_id.clone());
        let table = compactor
            .after_commit(warehouse, kind, table, 0, true)
            .await;
        let expired = own_snapshots_to_expire(&table, settings.retain_snapshots);
        let snapshots_expired = expired.len();
        let table = warehouse.expire_snapshots(table, expired).await;
        let (files, listed) = data_files(&table, catalog_options)?;
        let found = orphans(&table, &run_id, &listed, orphans_before).await?;
        for name in &found {
            files.remove_file(name)?;
        }
        done.push(TableMaintenance {
            table: table.identifier().to_string(),
            data_files_before,
            data_files_after: total_data_files(&table),
            compactions: compactor.committed(),
            snapshots_expired,
            orphans_removed: found.len(),
        });
    }
    Ok(done)
}

fn total_data_files(table: &iceberg::table::Table) -> u64 {
    table
        .metadata()
        .current_snapshot()
        .and_then(|s| {
            s.summary()
                .additional_properties
                .get("total-data-files")?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
