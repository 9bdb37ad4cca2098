//! `sessionize produce`: the generated clickstream, written to a Kafka topic at a given rate,
//! each record keyed by its user, as a site's tracking pipeline would.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::event::avro::{EVENT_SCHEMA, encode_json_event, to_wire_format};
use crate::event::registry::Registry;
use crate::workload::generate::{Clickstream, GenerateConfig, GenerateStats};

/// Avro records: in the Confluent wire format with the schema registered in `registry`, or
/// plain datums of [`EVENT_SCHEMA`] without one.
pub struct AvroOutput {
    pub registry: Option<Registry>,
}

/// What to produce, and where.
pub struct ProduceConfig {
    pub servers: String,
    /// Avro records instead of JSON.
    pub avro: Option<AvroOutput>,
    pub topic: String,
    /// librdkafka settings passed through (`security.protocol`, `sasl.*`, ...).
    pub options: Vec<(String, String)>,
    pub clickstream: GenerateConfig,
    /// Events per second; 0 is as fast as the broker takes them.
    pub rate: u64,
    /// Stop after this long...
    pub duration: Option<Duration>,
    /// ...or after this many events, whichever comes first.
    pub events: Option<u64>,
    /// Print this many of the first events to standard output, to see what is sent.
    pub sample: usize,
}

/// Produces the clickstream until the duration or the event count is reached, then waits until
/// the broker has every record.
pub fn produce(config: &ProduceConfig) -> Result<GenerateStats> {
    if config.duration.is_none() && config.events.is_none() {
        bail!("give --duration or --events, or the producer never stops");
    }
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.servers)
        // Large batches: cheaper for every broker, and librdkafka's mock cluster answers a fetch
        // with one batch per partition.
        .set("linger.ms", "200")
        .set("batch.size", "4000000")
        .set("batch.num.messages", "20000")
        .set("queue.buffering.max.messages", "1000000")
        .set("compression.type", "lz4");
    for (key, value) in &config.options {
        client.set(key, value);
    }
    let producer: BaseProducer = client.create().map_err(|e| {
        anyhow::anyhow!(
            "cannot create a Kafka producer for {}: {}; check --kafka-servers and --kafka-option",
            config.servers,
            crate::source::kafka::without_values(&e)
        )
    })?;
    let avro = config
        .avro
        .as_ref()
        .map(|output| avro_encoder(output, &config.topic))
        .transpose()?;
    let mut stream = Clickstream::new(config.clickstream.clone());
    let started = Instant::now();
    let limit = config.events.unwrap_or(u64::MAX);
    let mut sent = 0u64;
    while sent < limit && config.duration.is_none_or(|d| started.elapsed() < d) {
        if config.rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / config.rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                producer.poll(Duration::ZERO);
                std::thread::sleep(wait);
            }
        }
        let line = stream.next_line();
        let payload = line.strip_suffix(b"\n").unwrap_or(line);
        if (sent as usize) < config.sample {
            println!("{}", String::from_utf8_lossy(payload));
        }
        let user = user_of(payload);
        let encoded = avro.as_ref().and_then(|encode| encode(payload));
        let payload = encoded.as_deref().unwrap_or(payload);
        let mut record = BaseRecord::<[u8], [u8]>::to(&config.topic).payload(payload);
        if let Some(user) = user.as_deref() {
            record = record.key(user.as_bytes());
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => {
                    return Err(e).with_context(|| format!("cannot produce to {}", config.topic));
                }
            }
        }
        sent += 1;
        if sent.is_multiple_of(10_000) {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .with_context(|| format!("the broker at {} did not take every record", config.servers))?;
    Ok(stream.stats().clone())
}

/// Encodes a generated JSON event as an Avro record; `None` for the generator's malformed lines,
/// which are sent as they are (and quarantined by the pipeline).
type AvroEncoder = Box<dyn Fn(&[u8]) -> Option<Vec<u8>>>;

fn avro_encoder(output: &AvroOutput, topic: &str) -> Result<AvroEncoder> {
    let schema = apache_avro::Schema::parse_str(EVENT_SCHEMA).expect("the event schema is valid");
    let Some(registry) = &output.registry else {
        return Ok(Box::new(move |line| encode_json_event(&schema, line)));
    };
    let subject = format!("{topic}-value");
    let id = registry.register(&subject, EVENT_SCHEMA)?;
    Ok(Box::new(move |line| {
        Some(to_wire_format(id, &encode_json_event(&schema, line)?))
    }))
}

/// The event's user, to key its record with; malformed lines have none.
fn user_of(payload: &[u8]) -> Option<String> {
    let value = sonic_rs::get_from_slice(payload, &["uuid"]).ok()?;
    sonic_rs::from_str::<String>(value.as_raw_str()).ok()
}
