//! A table's shape: what its current snapshot makes every query plan and open (data files, the
//! small ones among them, manifests, bytes, rows). Compaction plans from it, and `inspect` and
//! `/metrics` show it.
//!
//! Manifests never change once written, so a [`Surveyor`] reads each one once and afterwards only
//! the manifest list and the manifests a commit added: a commit's survey costs one or two reads,
//! not a read of the whole table.

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use iceberg::spec::{DataFile, ManifestContentType, ManifestStatus, Operation};
use iceberg::table::Table;
use serde::Serialize;

use super::COMPACTED_BY;
use crate::sink::expiry::LAST_EXPIRY_MS;
use crate::sink::live_data_files;

/// Where a table's files are compacted, when the table does not say.
pub const DEFAULT_TARGET_FILE_SIZE: u64 = 128 << 20;

/// A file is small below this share of the target size (Java's `RewriteDataFiles` default).
const SMALL_SHARE: (u64, u64) = (3, 4);

/// What the current snapshot of a table holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TableShape {
    pub data_files: u64,
    /// Data files below three quarters of the target size: what compaction rewrites.
    pub small_files: u64,
    /// Position and equality delete files (other tools').
    pub delete_files: u64,
    pub manifests: u64,
    /// Rows in the data files.
    pub records: u64,
    /// Bytes of the data files.
    pub bytes: u64,
    /// When the newest compaction snapshot still in the table was committed (ms since the epoch).
    pub last_compaction_ms: Option<i64>,
    /// When our expiry last ran on the table (ms since the epoch).
    pub last_expiry_ms: Option<i64>,
}

/// A survey of the current snapshot: its shape, and its small data files by partition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Survey {
    pub snapshot_id: Option<i64>,
    pub shape: TableShape,
    pub target_bytes: u64,
    /// Small data files of the default partition spec, (bytes, path), by partition.
    pub small_files: BTreeMap<String, Vec<(u64, String)>>,
}

/// What one manifest lists, as far as a survey needs it.
#[derive(Debug, Clone, Default)]
struct Digest {
    data_files: u64,
    delete_files: u64,
    records: u64,
    bytes: u64,
    /// Small data files: (partition, bytes, path).
    small: Vec<(String, u64, String)>,
}

/// Surveys a table commit after commit, reading each manifest once.
#[derive(Debug, Default)]
pub struct Surveyor {
    digests: HashMap<String, Digest>,
    /// The small-file bound the digests were made with.
    small_below: u64,
}

impl Surveyor {
    /// The survey of `table`'s current snapshot.
    pub async fn survey(&mut self, table: &Table) -> Result<Survey> {
        let metadata = table.metadata();
        let target_bytes = target_bytes(table);
        let mut survey = Survey {
            target_bytes,
            ..Survey::default()
        };
        survey.shape.last_compaction_ms = last_compaction_ms(table);
        survey.shape.last_expiry_ms = last_expiry_ms(table);
        let Some(current) = metadata.current_snapshot() else {
            return Ok(survey);
        };
        survey.snapshot_id = Some(current.snapshot_id());
        let small_below = small_below(target_bytes);
        if small_below != self.small_below {
            self.digests.clear();
            self.small_below = small_below;
        }
        let spec_id = metadata.default_partition_spec_id();
        let list = table.manifest_list_reader(current).load().await?;
        let mut listed = HashMap::with_capacity(list.entries().len());
        for manifest in list.entries() {
            let digest = match self.digests.remove(&manifest.manifest_path) {
                Some(digest) => digest,
                None => {
                    let (entries, _) = manifest.load_manifest(table.file_io()).await?.into_parts();
                    let mut digest = Digest::default();
                    for entry in entries
                        .iter()
                        .filter(|e| e.status != ManifestStatus::Deleted)
                    {
                        let file = &entry.data_file;
                        if manifest.content == ManifestContentType::Deletes {
                            digest.delete_files += 1;
                            continue;
                        }
                        digest.data_files += 1;
                        digest.records += file.record_count();
                        digest.bytes += file.file_size_in_bytes();
                        if file.file_size_in_bytes() < small_below
                            && manifest.partition_spec_id == spec_id
                        {
                            digest.small.push((
                                format!("{:?}", file.partition()),
                                file.file_size_in_bytes(),
                                file.file_path().to_string(),
                            ));
                        }
                    }
                    digest
                }
            };
            let shape = &mut survey.shape;
            shape.manifests += 1;
            shape.data_files += digest.data_files;
            shape.delete_files += digest.delete_files;
            shape.records += digest.records;
            shape.bytes += digest.bytes;
            shape.small_files += digest.small.len() as u64;
            for (partition, bytes, path) in &digest.small {
                survey
                    .small_files
                    .entry(partition.clone())
                    .or_default()
                    .push((*bytes, path.clone()));
            }
            listed.insert(manifest.manifest_path.clone(), digest);
        }
        // Only the current snapshot's manifests are kept: the rest will not be listed again.
        self.digests = listed;
        Ok(survey)
    }
}

/// The size below which a data file is small (and compacted), for a target size.
pub fn small_below(target_bytes: u64) -> u64 {
    target_bytes / SMALL_SHARE.1 * SMALL_SHARE.0
}

/// The size of every data file of `table`'s current snapshot.
pub async fn data_file_sizes(table: &Table) -> Result<Vec<u64>> {
    let files = live_data_files(table).await?;
    Ok(files.iter().map(DataFile::file_size_in_bytes).collect())
}

/// The target file size `table` asks for (`write.target-file-size-bytes`).
pub fn target_bytes(table: &Table) -> u64 {
    table
        .metadata()
        .properties()
        .get("write.target-file-size-bytes")
        .and_then(|v| v.parse().ok())
        .filter(|&bytes| bytes > 0)
        .unwrap_or(DEFAULT_TARGET_FILE_SIZE)
}

/// When our expiry last ran on `table`, by the property it sets.
pub fn last_expiry_ms(table: &Table) -> Option<i64> {
    table
        .metadata()
        .properties()
        .get(LAST_EXPIRY_MS)
        .and_then(|ms| ms.parse().ok())
}

/// The newest snapshot of the table that compacted it: ours, or another tool's `replace`.
fn last_compaction_ms(table: &Table) -> Option<i64> {
    table
        .metadata()
        .snapshots()
        .filter(|s| {
            let summary = s.summary();
            summary.operation == Operation::Replace
                || summary.additional_properties.contains_key(COMPACTED_BY)
        })
        .map(|s| s.timestamp_ms())
        .max()
}
