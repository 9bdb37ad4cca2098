//! Flags shared by the commands that talk to Kafka: where the brokers are, and how records
//! encode events.

use anyhow::Result;
use clap::{Args, ValueEnum};

use crate::config::{kafka_options_from_env, parse_key_value};
use crate::event::registry::Registry;

/// The topic every command reads, writes or creates unless told otherwise.
pub const DEFAULT_TOPIC: &str = "clickstream-events";

/// How to reach Kafka.
#[derive(Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, e.g. localhost:9092.
    #[arg(long)]
    pub kafka_servers: Option<String>,
    /// Any librdkafka setting, e.g. security.protocol=SASL_SSL; repeat for several. Values are
    /// never logged; `key=@FILE` reads the value from FILE, and SESSIONIZE_KAFKA_OPTION_<KEY>
    /// variables (e.g. SESSIONIZE_KAFKA_OPTION_SASL_PASSWORD) add options from the environment.
    #[arg(long = "kafka-option", value_parser = parse_key_value)]
    pub kafka_options: Vec<(String, String)>,
}

impl KafkaArgs {
    /// The librdkafka settings: the flags' and then the environment's.
    pub fn options(&self) -> Vec<(String, String)> {
        self.kafka_options
            .iter()
            .cloned()
            .chain(kafka_options_from_env())
            .collect()
    }
}

/// How records encode events.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A JSON object per record (or per line of a file).
    Json,
    /// Avro datums in Kafka records: in the Confluent wire format with --schema-registry-url,
    /// or plain with --avro-schema.
    Avro,
}

/// The encoding of records, and the schema registry of Avro ones.
#[derive(Args)]
pub struct FormatArgs {
    /// How records encode events.
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    /// A Confluent-compatible schema registry, for Avro in the Confluent wire format (a zero
    /// byte and the schema's id before each datum).
    #[arg(long)]
    pub schema_registry_url: Option<String>,
    /// USER:PASSWORD for the schema registry (best from SESSIONIZE_SCHEMA_REGISTRY_AUTH).
    #[arg(long)]
    pub schema_registry_auth: Option<String>,
}

impl FormatArgs {
    /// The schema registry client, if --schema-registry-url names one.
    pub fn registry(&self) -> Result<Option<Registry>> {
        self.schema_registry_url
            .as_deref()
            .map(|url| Registry::new(url, self.schema_registry_auth.as_deref()))
            .transpose()
    }
}
