//! The timely operators of the pipeline, and their assembly into one dataflow.
//!
//! ```text
//! read_chunks ─exchange(chunk)─► parse ─exchange(partition owner)─► stamp ─┬─ on time ─exchange(bucket)─► sessionize ─┬─► write(sessions) ─┐
//!                                                                          │                                        └─ checkpoint parts ─┤
//!                                                                          ├─ quarantined ──────────────────────────────► write(quarantine) ─┤
//!                                                                          ├─ late ─────────────────────────────────────► write(late) ──────┤
//!                                                                          └─ positions ─broadcast─► sessionize, commit ◄──exchange(0)──────┘
//! ```
//!
//! Timestamps are `Product<epoch, watermark_ms>`. [`stamp`] owns each partition's order: it sees
//! the chunks of a partition in sequence, classifies events against the partition's watermark
//! (its largest event time so far minus the allowed lateness), and sends each chunk's records at
//! `(epoch, the watermark before the chunk, rounded down to a tick)`: never later than a record's
//! own watermark, which is at most its event time. So when the frontier passes watermark `F`, every
//! on-time event before `F` has arrived, and [`sessionize`] can apply events in exact event-time
//! order. Every commit interval the stampers move to the next epoch and wait until the committer
//! has committed the previous one; when the frontier passes an epoch, every sessionizer writes its
//! checkpoint and the committer commits the epoch (see [`crate::commit::protocol`] for the
//! protocol). [`run`] starts the workers of a cluster and builds this dataflow on each.

mod commit;
mod parse;
mod pipeline;
mod read;
mod run;
mod sessionize;
mod stamp;
mod time;
mod types;
mod write;

pub use run::{Cluster, RunSummary, run};
pub use time::Time;
pub use types::{
    CommitPart, Events, ParsedChunk, ParsedLine, SessionEvent, WorkerContext, WorkerEvents,
};
