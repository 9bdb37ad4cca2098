//! Workloads for trying sessionize out, testing and benchmarking it: an embedded Kafka broker
//! ([`broker`]), a realistic clickstream ([`generate`]) written to files or produced to Kafka
//! ([`produce`]), and all of them with the pipeline at once ([`demo`]).

pub mod broker;
pub mod demo;
pub mod generate;
pub mod produce;

pub use broker::EmbeddedBroker;
pub use demo::{DemoConfig, demo};
pub use generate::{Clickstream, GenerateConfig, GenerateStats, generate};
pub use produce::{AvroOutput, ProduceConfig, produce};
