//! Checkpoints: each worker's session state at the end of an epoch, written once to the
//! checkpoint store (a local directory or an S3 prefix) before the epoch commits, and named by the
//! sessions table's snapshot. Older releases' parts are read and upgraded.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::PipelineConfig;
use crate::rules::{Boundary, SavedEvent, SavedSession, SessionizerState};
use crate::sink::TableKind;
use crate::storage::WriteOnceFiles;

/// The format of the session state in checkpoint parts, at the end of their file names
/// (`part-w<i>.<format>`): bincode compressed with zstd, full or amending. Parts named `….v3.zst`
/// predate the histories kept for corrections, parts named `….v2.bin` hold a full state
/// uncompressed, and parts without a format predate session boundaries.
const PART_FORMAT: &str = "v4.zst";
const PART_FORMAT_V3: &str = "v3.zst";
const PART_FORMAT_V2: &str = "v2.bin";

/// Session state as checkpoints held it before histories (`….v3.zst`): a user without a history
/// has its late events corrected as far as its open session allows.
#[derive(Deserialize)]
struct StateV3 {
    watermark: u64,
    full: bool,
    open: Vec<SavedSession>,
    ended: Vec<String>,
    pending: Vec<SavedEvent>,
    recent_ids: Vec<(u64, u128)>,
}

impl StateV3 {
    fn upgrade(self) -> SessionizerState {
        SessionizerState {
            watermark: self.watermark,
            full: self.full,
            open: self.open,
            ended: self.ended,
            pending: self.pending,
            recent_ids: self.recent_ids,
            histories: Vec::new(),
        }
    }
}

/// Session state as checkpoints held it before they could amend each other (`….v2.bin`).
#[derive(Deserialize)]
struct StateV2 {
    watermark: u64,
    open: Vec<SavedSession>,
    pending: Vec<SavedEvent>,
    recent_ids: Vec<(u64, u128)>,
}

impl StateV2 {
    fn upgrade(self) -> SessionizerState {
        SessionizerState {
            watermark: self.watermark,
            full: true,
            open: self.open,
            ended: Vec::new(),
            pending: self.pending,
            recent_ids: self.recent_ids,
            histories: Vec::new(),
        }
    }
}

/// Session state as checkpoints held it before pending events carried a [`Boundary`], so that a
/// new release resumes from an older one's checkpoint.
#[derive(Deserialize)]
struct StateBeforeBoundaries {
    watermark: u64,
    open: Vec<SavedSession>,
    pending: Vec<EventBeforeBoundaries>,
    recent_ids: Vec<(u64, u128)>,
}

#[derive(Deserialize)]
struct EventBeforeBoundaries {
    user_id: String,
    event_id: String,
    page_name: Option<String>,
    time_ms: u64,
}

impl StateBeforeBoundaries {
    fn upgrade(self) -> SessionizerState {
        let pending = self.pending.into_iter().map(|e| SavedEvent {
            user_id: e.user_id,
            event_id: e.event_id,
            page_name: e.page_name,
            time_ms: e.time_ms,
            boundary: Boundary::NONE,
        });
        SessionizerState {
            watermark: self.watermark,
            full: true,
            open: self.open,
            ended: Vec::new(),
            pending: pending.collect(),
            recent_ids: self.recent_ids,
            histories: Vec::new(),
        }
    }
}

/// The checkpoint a snapshot names: a directory under the store and its part files, and the
/// earlier checkpoints its parts amend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRef {
    pub dir: String,
    pub parts: Vec<String>,
    /// The checkpoints this one amends, oldest first: a full one and those amending it, each
    /// without `amends` of its own. Empty when this one is full. (Always serialized: the start
    /// state crosses processes in bincode, which cannot skip a field.)
    #[serde(default)]
    pub amends: Vec<CheckpointRef>,
}

impl CheckpointRef {
    /// The checkpoints a restore reads, in the order it applies them: the amended ones, then
    /// this one.
    pub fn chain(&self) -> Vec<&CheckpointRef> {
        self.amends.iter().chain(std::iter::once(self)).collect()
    }

    /// The epoch a checkpoint directory (see [`CheckpointStore::epoch_dir`]) belongs to.
    pub fn epoch(&self) -> Option<u64> {
        dir_epoch(self.dir.strip_prefix("checkpoints/")?)
    }
}

/// The epoch of a checkpoint directory's name, `e<epoch>-<run>`.
fn dir_epoch(name: &str) -> Option<u64> {
    name.strip_prefix('e')?.get(..12)?.parse().ok()
}

/// One worker's part of an epoch's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointPart {
    pub worker: usize,
    pub file: String,
    pub bytes: u64,
    pub open_sessions: u64,
    /// Events this worker dropped as duplicates during the epoch.
    pub duplicates: u64,
}

/// The side tables' files of an epoch, kept until the next epoch commits.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SideFiles {
    pub epoch: u64,
    pub files: BTreeMap<TableKind, Vec<String>>,
}

/// The checkpoints of a table: `<checkpoint location>/<database>.<table>/<table uuid>/`, by
/// default under `<warehouse>/_sessionize/`, on a local disk or on S3 (see [`WriteOnceFiles`]).
///
/// The table's UUID keeps apart the checkpoints of tables that share a name and a checkpoint
/// location (two catalogs, or a table dropped and created again), so that one pipeline's cleanup
/// never removes another's. Checkpoints of releases that kept them directly under
/// `<database>.<table>/` are still read from there.
pub struct CheckpointStore {
    files: WriteOnceFiles,
    before_table_uuids: WriteOnceFiles,
    /// How many of the newest epochs' checkpoints are kept.
    keep: u64,
}

const SIDE_FILES: &str = "side-files.json";

impl CheckpointStore {
    pub fn new(config: &PipelineConfig, table_uuid: &uuid::Uuid) -> Result<Self> {
        let named = config
            .checkpoint_location()
            .join(&format!("{}.{}", config.database, config.table));
        let options = &config.catalog.options;
        let files = WriteOnceFiles::open(&named.join(&table_uuid.to_string()), options)?;
        files.create_location().with_context(|| {
            format!(
                "cannot create the checkpoint location {}: choose a --checkpoint-location this \
                 process can write",
                config.checkpoint_location()
            )
        })?;
        Ok(CheckpointStore {
            files,
            before_table_uuids: WriteOnceFiles::open(&named, options)?,
            keep: config.keep_checkpoints.max(1) as u64,
        })
    }

    /// The directory of an epoch's checkpoint, relative to the store: unique per run, so that a
    /// run never overwrites what another has committed.
    pub fn epoch_dir(epoch: u64, run_id: &str) -> String {
        format!("checkpoints/e{epoch:012}-{run_id}")
    }

    /// The worker that wrote a part, by the part's file name.
    pub fn part_worker(file: &str) -> Result<usize> {
        file.strip_prefix("part-w")
            .and_then(|rest| rest.split('.').next()?.parse().ok())
            .with_context(|| format!("{file:?} is not a checkpoint part's name"))
    }

    /// Writes a worker's state once, compressed; returns its part record.
    pub fn write_part(
        &self,
        dir: &str,
        worker: usize,
        state: &impl Serialize,
        open_sessions: u64,
        duplicates: u64,
    ) -> Result<CheckpointPart> {
        let file = format!("part-w{worker}.{PART_FORMAT}");
        let bytes = self.files.create(&format!("{dir}/{file}"), |out| {
            // Level 1: the worker waits for its checkpoint, and most of the state's bytes are
            // repeated ids and page names, which the fastest level already finds.
            let mut compressed = zstd::Encoder::new(out, 1)?;
            bincode::serialize_into(&mut compressed, state).map_err(std::io::Error::other)?;
            compressed.finish()?;
            Ok(())
        })?;
        Ok(CheckpointPart {
            worker,
            bytes,
            file,
            open_sessions,
            duplicates,
        })
    }

    pub fn read_part(&self, checkpoint: &CheckpointRef, file: &str) -> Result<SessionizerState> {
        Ok(self.read_part_sized(checkpoint, file)?.0)
    }

    /// Where a file of the store is, for people.
    pub fn display(&self, name: &str) -> String {
        self.files.display(name)
    }

    /// A part's state and its size in bytes.
    pub fn read_part_sized(
        &self,
        checkpoint: &CheckpointRef,
        file: &str,
    ) -> Result<(SessionizerState, u64)> {
        let name = format!("{}/{file}", checkpoint.dir);
        let input = self.read(&name)?.with_context(|| {
            format!(
                "the checkpoint {} named by the table's newest commit is missing: every process \
                 must reach the same checkpoint location, checkpoints must not be deleted by \
                 hand, and a table rolled back further than --keep-checkpoints commits cannot \
                 resume; restore the file, or replay from scratch into a new table",
                self.files.display(&name)
            )
        })?;
        let mut input = CountingReader {
            inner: input,
            bytes: 0,
        };
        let state = if file.ends_with(&format!(".{PART_FORMAT}")) {
            read_compressed(&mut input, |decoded| bincode::deserialize_from(decoded))
        } else if file.ends_with(&format!(".{PART_FORMAT_V3}")) {
            read_compressed(&mut input, |decoded| {
                bincode::deserialize_from(decoded).map(StateV3::upgrade)
            })
        } else if file.ends_with(&format!(".{PART_FORMAT_V2}")) {
            bincode::deserialize_from(&mut input).map(StateV2::upgrade)
        } else {
            bincode::deserialize_from(&mut input).map(StateBeforeBoundaries::upgrade)
        };
        let state = state.with_context(|| {
            format!(
                "the checkpoint {} is damaged (truncated or overwritten outside sessionize); \
                 restore the file, or replay from scratch into a new table",
                self.files.display(&name)
            )
        })?;
        // bincode reads what the state needs, which is the whole part; whatever follows counts.
        std::io::copy(&mut input, &mut std::io::sink())?;
        Ok((state, input.bytes))
    }

    pub fn write_side_files(&self, dir: &str, side: &SideFiles) -> Result<()> {
        self.files.create(&format!("{dir}/{SIDE_FILES}"), |out| {
            serde_json::to_writer(out, side).map_err(std::io::Error::other)
        })?;
        Ok(())
    }

    pub fn read_side_files(&self, dir: &str) -> Result<SideFiles> {
        let name = format!("{dir}/{SIDE_FILES}");
        let input = self.read(&name)?.with_context(|| {
            format!(
                "cannot read {}: the checkpoint is incomplete",
                self.files.display(&name)
            )
        })?;
        serde_json::from_reader(input)
            .with_context(|| format!("{} is unreadable", self.files.display(&name)))
    }

    /// A file of this table's checkpoints, where this release or an older one wrote it.
    fn read(&self, name: &str) -> Result<Option<Box<dyn Read>>> {
        match self.files.read(name)? {
            Some(input) => Ok(Some(input)),
            None => self.before_table_uuids.read(name),
        }
    }

    /// Removes the checkpoint directories a restart can no longer need. The newest commit's
    /// epoch is `epoch`, and `named` are the checkpoints the table's snapshots name: those of the
    /// newest `--keep-checkpoints` epochs are kept with the checkpoints they amend, so that a
    /// table rolled back by fewer commits resumes from its checkpoint. The rest of the epochs up
    /// to `epoch` go, dead runs' epochs that never committed among them. A directory of a later
    /// epoch may belong to a run still writing it, and is kept.
    pub fn remove_before(&self, epoch: u64, named: &[CheckpointRef]) {
        let oldest_kept = (epoch + 1).saturating_sub(self.keep);
        let needed: BTreeSet<&str> = named
            .iter()
            .filter(|checkpoint| checkpoint.epoch().is_some_and(|e| e >= oldest_kept))
            .flat_map(CheckpointRef::chain)
            .map(|checkpoint| checkpoint.dir.as_str())
            .collect();
        let directories = match self.files.directories("checkpoints") {
            Ok(directories) => directories,
            Err(e) => {
                tracing::warn!("cannot list old checkpoints: {e:#}");
                return;
            }
        };
        for name in directories {
            let dir = format!("checkpoints/{name}");
            let removable =
                dir_epoch(&name).is_some_and(|e| e <= epoch) && !needed.contains(dir.as_str());
            if removable && let Err(e) = self.files.remove_directory(&dir) {
                tracing::warn!("cannot remove an old checkpoint: {e:#}");
            }
        }
    }
}

/// A reader that counts the bytes it read.
/// Reads a zstd frame with `read`, then the rest of the frame, so that a damaged end is noticed.
fn read_compressed<T>(
    input: &mut impl std::io::Read,
    read: impl FnOnce(&mut dyn std::io::Read) -> bincode::Result<T>,
) -> bincode::Result<T> {
    let mut decoded = zstd::Decoder::new(input).map_err(bincode::ErrorKind::Io)?;
    let value = read(&mut decoded)?;
    std::io::copy(&mut decoded, &mut std::io::sink()).map_err(bincode::ErrorKind::Io)?;
    Ok(value)
}

struct CountingReader<R> {
    inner: R,
    bytes: u64,
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.bytes += read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A part written before pending events carried boundaries, in that release's layout.
    #[derive(Serialize)]
    struct OldState {
        watermark: u64,
        open: Vec<SavedSession>,
        pending: Vec<(String, String, Option<String>, u64)>,
        recent_ids: Vec<(u64, u128)>,
    }

    fn store(config: &PipelineConfig, table_uuid: u128) -> CheckpointStore {
        CheckpointStore::new(config, &uuid::Uuid::from_u128(table_uuid)).unwrap()
    }

    #[test]
    fn reads_parts_of_the_release_before_boundaries_where_it_kept_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&PipelineConfig::new(vec![], dir.path()), 1);
        let checkpoint = CheckpointRef {
            dir: CheckpointStore::epoch_dir(3, "r"),
            parts: vec!["part-w0.bin".into()],
            amends: Vec::new(),
        };
        let old = OldState {
            watermark: 7,
            open: vec![],
            pending: vec![("u".into(), "e".into(), Some("home".into()), 9)],
            recent_ids: vec![(9, 42)],
        };
        let part = format!("{}/part-w0.bin", checkpoint.dir);
        let old = bincode::serialize(&old).unwrap();
        // That release kept checkpoints by table name only.
        store
            .before_table_uuids
            .create(&part, |out| out.write_all(&old))
            .unwrap();
        let state = store.read_part(&checkpoint, "part-w0.bin").unwrap();
        assert_eq!((state.watermark, &state.recent_ids), (7, &vec![(9, 42)]));
        assert_eq!(state.pending[0].page_name.as_deref(), Some("home"));
        assert_eq!(state.pending[0].boundary, Boundary::NONE);
        assert!(state.full);

        let written = store.write_part(&checkpoint.dir, 1, &state, 0, 0).unwrap();
        assert!(written.file.ends_with(".v4.zst"));
        assert_eq!(store.read_part(&checkpoint, &written.file).unwrap(), state);
    }

    #[test]
    fn reads_full_parts_of_the_release_before_amending_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&PipelineConfig::new(vec![], dir.path()), 1);
        let mut state = SessionizerState {
            watermark: 7,
            full: true,
            open: vec![SavedSession {
                user_id: "u".into(),
                start_ms: 1,
                last_ms: 5,
                event_count: 2,
                pages_visited: vec!["home".into()],
            }],
            ..SessionizerState::default()
        };
        let v2 = bincode::serialize(&(
            state.watermark,
            &state.open,
            &state.pending,
            &state.recent_ids,
        ))
        .unwrap();
        let checkpoint = CheckpointRef {
            dir: CheckpointStore::epoch_dir(3, "r"),
            parts: vec!["part-w0.v2.bin".into()],
            amends: Vec::new(),
        };
        let part = format!("{}/part-w0.v2.bin", checkpoint.dir);
        store.files.create(&part, |out| out.write_all(&v2)).unwrap();
        assert_eq!(
            store.read_part(&checkpoint, "part-w0.v2.bin").unwrap(),
            state
        );

        // A part of the release before histories reads with none.
        let v3 = bincode::serialize(&(
            state.watermark,
            state.full,
            &state.open,
            &state.ended,
            &state.pending,
            &state.recent_ids,
        ))
        .unwrap();
        let part = format!("{}/part-w0.v3.zst", checkpoint.dir);
        let compressed = zstd::encode_all(&v3[..], 1).unwrap();
        store
            .files
            .create(&part, |out| out.write_all(&compressed))
            .unwrap();
        assert_eq!(
            store.read_part(&checkpoint, "part-w0.v3.zst").unwrap(),
            state
        );

        // A damaged compressed part is refused, never read short.
        state.full = false;
        let written = store.write_part(&checkpoint.dir, 1, &state, 1, 0).unwrap();
        let name = format!("{}/{}", checkpoint.dir, written.file);
        let mut bytes = Vec::new();
        store
            .files
            .read(&name)
            .unwrap()
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        assert_eq!(store.read_part(&checkpoint, &written.file).unwrap(), state);
        let cut = &bytes[..bytes.len() - 4];
        store
            .files
            .create(&format!("{}/part-w2.v3.zst", checkpoint.dir), |out| {
                out.write_all(cut)
            })
            .unwrap();
        let error = store.read_part(&checkpoint, "part-w2.v3.zst").unwrap_err();
        assert!(format!("{error:#}").contains("is damaged"), "{error:#}");
    }

    #[test]
    fn cleanup_keeps_the_newest_named_epochs_with_what_they_amend() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = PipelineConfig::new(vec![], dir.path());
        config.keep_checkpoints = 2;
        // Two tables of one name (two catalogs) sharing a checkpoint location.
        let (ours, theirs) = (store(&config, 1), store(&config, 2));
        let state = SessionizerState::default();
        // Epochs 0 and 3 are full; the others amend the epochs since.
        let mut named: Vec<CheckpointRef> = Vec::new();
        for epoch in 0..6 {
            let dir = CheckpointStore::epoch_dir(epoch, "r");
            let part = ours.write_part(&dir, 0, &state, 0, 0).unwrap();
            theirs.write_part(&dir, 0, &state, 0, 0).unwrap();
            let amends = match named.last() {
                Some(previous) if epoch % 3 != 0 => previous
                    .chain()
                    .into_iter()
                    .map(|c| CheckpointRef {
                        amends: Vec::new(),
                        ..c.clone()
                    })
                    .collect(),
                _ => Vec::new(),
            };
            named.push(CheckpointRef {
                dir,
                parts: vec![part.file],
                amends,
            });
        }
        // Killed runs left epochs that never committed, before and after the newest commit.
        for (epoch, run) in [(4, "dead"), (5, "dead"), (6, "dead"), (7, "live")] {
            let dir = CheckpointStore::epoch_dir(epoch, run);
            ours.write_part(&dir, 0, &state, 0, 0).unwrap();
        }
        ours.remove_before(5, &named);
        let epochs = |store: &CheckpointStore| {
            let mut names = store.files.directories("checkpoints").unwrap();
            names.sort();
            names
        };
        // Epochs 4 and 5 are the newest two, and amend epoch 3.
        let kept = [(3, "r"), (4, "r"), (5, "r"), (6, "dead"), (7, "live")];
        let kept: Vec<String> = kept
            .iter()
            .map(|&(e, run)| CheckpointStore::epoch_dir(e, run)["checkpoints/".len()..].to_string())
            .collect();
        assert_eq!(epochs(&ours), kept);
        assert_eq!(epochs(&theirs).len(), 6);
    }
}
