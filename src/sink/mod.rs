//! Where results go: Iceberg tables for closed sessions, quarantined lines and late events.
//!
//! [`tables`] defines the three tables and turns rows into Arrow record batches; [`catalog`] opens
//! the Iceberg catalog (the [`Warehouse`]), each of whose calls `bounded` limits in time;
//! [`create`] creates the tables and evolves their schemas; [`writer`] writes Parquet data files,
//! a file per partition (`partition` splits the rows);
//! [`commit`] commits them, one attempt at a time, merging small manifests first (`manifests`);
//! `replace` commits a compaction's files, through the catalog's own protocol ([`updates`]);
//! [`corrections`] rewrites the files holding rows that late events corrected;
//! [`expiry`] deletes what commits and expiry leave unreferenced; [`spark`] computes the Spark
//! job's own columns (`session_date`, `user_hash_bucket`).
//! Which commits are made, and how often they are tried, is the commit protocol's
//! (`src/commit/`).

mod bounded;
pub mod catalog;
pub mod commit;
pub mod corrections;
pub mod create;
pub mod expiry;
pub mod glue;
mod manifests;
pub mod murmur3;
mod partition;
mod replace;
mod rest_commit;
pub mod spark;
pub mod tables;
pub mod updates;
pub mod writer;

use anyhow::{Context, Result};

pub use catalog::{CatalogSettings, Warehouse};
pub use manifests::live_data_files;
pub use tables::{LateEvent, QuarantinedLine, RetractedSession, TableKind};
pub use updates::on_this_runtime;
pub use writer::TableWriter;

/// A runtime on the calling thread for iceberg's async calls: each worker drives its own.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")
}
