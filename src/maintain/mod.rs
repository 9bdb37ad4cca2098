//! Keeping the tables fast to read while the pipeline commits often: [`shape`] surveys what a
//! table's current snapshot holds, [`compaction`] plans from that survey and rewrites a
//! partition's small files into a few sorted ones, and the [`Compactor`] runs it beside the
//! pipeline, committing each round as a `replace` snapshot between two epochs.
//! (Merged manifests and expiry that deletes are part of every commit: `sink::manifests`,
//! `sink::expiry`.)

pub mod compaction;
mod compactor;
pub mod shape;

pub use compaction::CompactionSettings;
pub use compactor::{COMPACTED_BY, Compactor};
pub use shape::{Surveyor, TableShape};
