//! Where events come from. Every source hands out line-aligned chunks of raw bytes in the order of
//! its partition, with the position of each chunk, so that offsets in commits and quarantine rows
//! are exact.

pub mod file;
pub mod kafka;

pub use file::{Chunk, ChunkReader};
