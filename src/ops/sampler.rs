//! A thread that, every [`SAMPLE_EVERY`], asks Kafka for the end offsets of the partitions this
//! process reads (the lag), and samples throughput and lag for the status page's charts. Broker
//! requests happen here, never on a worker.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::Telemetry;
use super::metrics::PartitionLabel;
use super::status::SAMPLE_EVERY;
use crate::config::wall_clock_ms;
use crate::source::kafka::KafkaSettings;

/// How long one end-offset request may take: an unreachable broker must not stall the charts.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) fn spawn(telemetry: &'static Telemetry, kafka: Option<KafkaSettings>) {
    std::thread::Builder::new()
        .name("sessionize-ops-sampler".into())
        .spawn(move || {
            let mut consumer: Option<BaseConsumer> = None;
            loop {
                let lag = match &kafka {
                    Some(settings) => kafka_lag(telemetry, settings, &mut consumer),
                    None => 0,
                };
                let watermark_lag = telemetry.watermark_lag_s();
                telemetry.recent.lock().expect("not poisoned").sample(
                    wall_clock_ms(),
                    telemetry.events_read(),
                    lag,
                    watermark_lag,
                );
                std::thread::sleep(SAMPLE_EVERY);
            }
        })
        .expect("cannot start the ops sampler thread");
}

/// Sets each partition's lag (end offset minus the next offset to read); returns their sum.
fn kafka_lag(
    telemetry: &Telemetry,
    settings: &KafkaSettings,
    consumer: &mut Option<BaseConsumer>,
) -> i64 {
    let reading: Vec<(u32, u64)> = telemetry
        .reading
        .lock()
        .expect("not poisoned")
        .iter()
        .map(|(p, o)| (*p, *o))
        .collect();
    if reading.is_empty() {
        return 0;
    }
    if consumer.is_none() {
        match settings.consumer() {
            Ok(created) => *consumer = Some(created),
            Err(e) => {
                tracing::debug!("no consumer for the lag metrics: {e:#}");
                return 0;
            }
        }
    }
    let consumer = consumer.as_ref().expect("created above");
    let mut total = 0;
    for (partition, next) in reading {
        // An unanswered request leaves the partition's last lag in place.
        let Ok((_, end)) =
            consumer.fetch_watermarks(&settings.topic, partition as i32, REQUEST_TIMEOUT)
        else {
            continue;
        };
        let lag = (end.max(0) as u64).saturating_sub(next) as i64;
        telemetry
            .metrics
            .kafka_lag
            .get_or_create(&PartitionLabel { partition })
            .set(lag);
        total += lag;
    }
    total
}
