//! Exactly once, engine-free: what each commit records, where a run starts, and the steps of an
//! epoch's commit. Nothing here knows timely; the dataflow calls in when its frontier says an
//! epoch is complete.
//!
//! * [`epoch`]: when an epoch ends (the commit interval, a record limit, or the output it holds);
//! * [`position`]: where each partition stands, running and as recorded;
//! * [`record`]: the snapshot-summary keys, the mark of a commit, and finding our commits again;
//! * [`checkpoint`]: the session state each worker writes per epoch, written once;
//! * [`start`]: where a run starts ([`prepare`]);
//! * [`protocol`]: the steps of an epoch's commit and their fail points ([`Committer`]), and
//!   [`commit_once`], which never makes a table commit twice;
//! * `corrections`: the commit point of an epoch whose corrections replace committed rows;
//! * `orphans`: the files of commits that never happened;
//! * `maintenance`: `sessionize maintain`, the pipeline's compaction, expiry and orphan removal
//!   as one bounded command ([`maintain`]).

pub mod checkpoint;
mod corrections;
pub mod epoch;
mod maintenance;
mod orphans;
pub mod position;
pub mod protocol;
pub mod record;
pub mod start;

pub use checkpoint::{CheckpointPart, CheckpointRef, CheckpointStore, SideFiles};
pub use epoch::{Buffered, BufferedOutput, EpochCutter, EpochLimits};
pub use maintenance::{MaintainSettings, TableMaintenance, maintain};
pub use position::{RecordedPosition, SourceCounts, SourcePosition};
pub use protocol::{Committer, EpochParts, RunTotals, Start, TableCommit, commit_once};
pub use record::{Mark, new_run_id, summary};
pub use start::{StartState, prepare};
