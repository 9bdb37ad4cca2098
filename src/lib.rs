//! sessionize: real-time user sessionization, from Kafka or files, through a timely dataflow, into
//! Apache Iceberg.
//!
//! The modules follow the path of an event:
//! [`source`] reads bytes, [`event`] parses and validates them, [`dataflow`] stamps them with
//! watermarks and routes them to the worker that owns their user, [`rules`] cuts them into sessions,
//! and [`sink`] commits closed sessions (and rejected or late events) to Iceberg tables.
//!
//! Around them: [`config`] holds a run's settings and what they mean, [`cli`] turns the command
//! line into them, and [`workload`] makes traffic to try it on (a broker, a clickstream, the demo).

pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod dataflow;
pub mod event;
pub mod failure;
pub mod inspect;
pub mod metrics;
pub mod ops;
pub mod report;
pub mod rules;
pub mod run;
pub mod sink;
pub mod source;
pub mod storage;
pub mod watermark;
pub mod workload;
