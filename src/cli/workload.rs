//! The flags of the workload commands (`broker`, `produce`, `generate`, `demo`) and their
//! translation into the workloads' configurations.

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use clap::Args;

use super::kafka::{DEFAULT_TOPIC, Format, FormatArgs, KafkaArgs};
use super::{SECOND, duration_flag, timestamp_flag};
use crate::clock::wall_clock_ms;
use crate::workload::{AvroOutput, DemoConfig, GenerateConfig, ProduceConfig};

/// `sessionize broker`.
#[derive(Args)]
pub struct BrokerArgs {
    /// Partitions of the topics created at start.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Port to serve on 127.0.0.1 (default: any free port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Topics to create at start; repeat for several.
    #[arg(long = "kafka-topic", alias = "topic", value_name = "TOPIC", default_value = DEFAULT_TOPIC)]
    pub topics: Vec<String>,
}

/// `sessionize produce`.
#[derive(Args)]
pub struct ProduceArgs {
    #[command(flatten, next_help_heading = "Kafka")]
    pub kafka: KafkaArgs,
    /// The topic to write.
    #[arg(long, alias = "topic", default_value = DEFAULT_TOPIC)]
    pub kafka_topic: String,
    /// With --format avro: records in the Confluent wire format, the schema registered under
    /// `<topic>-value`; without a registry, plain datums of schemas/clickstream_event.avsc.
    #[command(flatten)]
    pub format: FormatArgs,
    #[command(flatten, next_help_heading = "Clickstream")]
    pub clickstream: ClickstreamArgs,
}

/// The clickstream to produce, and for how long.
#[derive(Args)]
pub struct ClickstreamArgs {
    /// Distinct users.
    #[arg(long, default_value_t = 1_000)]
    pub num_users: u64,
    /// Events per second (0: as fast as the broker takes them).
    #[arg(long, default_value_t = 1_000)]
    pub rate: u64,
    /// How long to produce (bare: seconds).
    #[arg(long)]
    pub duration: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    pub events: Option<u64>,
    /// Print the first N events sent.
    #[arg(long, default_value_t = 0)]
    pub sample: usize,
    /// Seed of the generator: the same seed produces the same events.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Event time of the first event (RFC 3339, or `now`).
    #[arg(long, default_value = "now")]
    pub start_time: String,
}

impl ProduceArgs {
    /// The producer's configuration.
    pub fn into_config(self) -> Result<ProduceConfig> {
        let servers = self.kafka.kafka_servers.clone().context(
            "give --kafka-servers HOST:PORT (e.g. the address `sessionize broker` prints)",
        )?;
        let clickstream = self.clickstream;
        let start_ms = match clickstream.start_time.as_str() {
            "now" => wall_clock_ms(),
            time => timestamp_flag(time, "start-time")? as u64,
        };
        ensure!(clickstream.num_users > 0, "--num-users must be at least 1");
        let duration = clickstream
            .duration
            .map(|d| duration_flag(&d, SECOND, "duration"))
            .transpose()?;
        let avro = match self.format.format {
            Format::Json => None,
            Format::Avro => Some(AvroOutput {
                registry: self.format.registry()?,
            }),
        };
        Ok(ProduceConfig {
            servers,
            avro,
            topic: self.kafka_topic,
            options: self.kafka.options(),
            clickstream: GenerateConfig {
                users: clickstream.num_users,
                seed: clickstream.seed,
                start_ms,
                ..GenerateConfig::default()
            },
            rate: clickstream.rate,
            duration,
            events: clickstream.events,
            sample: clickstream.sample,
        })
    }
}

/// `sessionize generate`.
#[derive(Args)]
pub struct GenerateArgs {
    /// Distinct users.
    #[arg(long, default_value_t = 10_000)]
    pub users: u64,
    /// Lines to write, malformed ones included.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Seed of the generator: the same seed writes the same lines.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output file (default: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl GenerateArgs {
    /// The generator's configuration.
    pub fn config(&self) -> GenerateConfig {
        GenerateConfig {
            users: self.users,
            events: self.events,
            seed: self.seed,
            ..GenerateConfig::default()
        }
    }
}

/// `sessionize demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Events to produce.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// A new directory for the tables (one an earlier demo made is cleared).
    #[arg(long, default_value = "warehouse")]
    pub warehouse: PathBuf,
    /// Worker threads.
    #[arg(short = 'w', long = "threads", default_value_t = 2)]
    pub threads: usize,
}

impl DemoArgs {
    /// The demo's configuration.
    pub fn into_config(self) -> DemoConfig {
        DemoConfig {
            events: self.events,
            warehouse: self.warehouse,
            threads: self.threads,
        }
    }
}
