//! Where results go: Iceberg tables for closed sessions, quarantined lines and late events.
//!
//! [`tables`] defines the three tables and turns rows into Arrow record batches; [`catalog`] picks
//! the Iceberg catalog; [`iceberg`] opens it, creates the tables, writes Parquet data files and
//! commits them.

pub mod catalog;
pub mod iceberg;
pub mod tables;

pub use tables::{LateEvent, QuarantinedLine, TableKind};
