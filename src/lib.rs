//! sessionize: real-time user sessionization, from Kafka or files, through a timely dataflow, into
//! Apache Iceberg.
//!
//! The modules follow the path of an event: [`source`] reads bytes, [`event`] parses and validates
//! them, [`dataflow`] stamps them with watermarks ([`watermark`]) and routes them to the worker that
//! owns their user, [`rules`] cuts them into sessions, [`sink`] writes the tables, [`commit`]
//! makes each epoch's commit exactly once, and [`maintain`] compacts the tables as they grow. [`config`] holds a run's settings and what they mean,
//! [`cli`] turns the command line into them, [`ops`] shows how a run goes, [`inspect`] and
//! [`report`] read what runs wrote, and [`workload`] makes traffic to try it on (a broker, a
//! clickstream, the demo). docs/ARCHITECTURE.md draws the layers.

pub mod cli;
pub mod clock;
pub mod commit;
pub mod config;
pub mod dataflow;
pub mod event;
pub mod failure;
pub mod inspect;
pub mod maintain;
pub mod ops;
pub mod report;
pub mod retry;
pub mod rules;
pub mod sink;
pub mod source;
pub mod storage;
pub mod watermark;
pub mod workload;
