//! A thread that, every [`SAMPLE_EVERY`], asks for the end offsets of the partitions this
//! process reads (Kafka's lag), and samples throughput and lag for the status page's charts.
//! Broker requests happen here, never on a worker.

use super::Telemetry;
use super::prometheus::PartitionLabel;
use super::status::SAMPLE_EVERY;
use crate::clock::wall_clock_ms;

/// The end offset of a partition, or `None` if it cannot be had now (the last lag then stands).
/// Asked from the sampler's thread only, so it may block briefly and keep a client of its own.
pub type EndOffsets = Box<dyn FnMut(u32) -> Option<u64> + Send>;

pub(super) fn spawn(telemetry: &'static Telemetry, mut end_offsets: Option<EndOffsets>) {
    std::thread::Builder::new()
        .name("sessionize-ops-sampler".into())
        .spawn(move || {
            loop {
                let lag = match &mut end_offsets {
                    Some(end_offset) => lag(telemetry, end_offset),
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
fn lag(telemetry: &Telemetry, end_offset: &mut EndOffsets) -> i64 {
    let reading: Vec<(u32, u64)> = telemetry
        .reading
        .lock()
        .expect("not poisoned")
        .iter()
        .map(|(p, o)| (*p, *o))
        .collect();
    let mut total = 0;
    for (partition, next) in reading {
        let Some(end) = end_offset(partition) else {
            continue;
        };
        let lag = end.saturating_sub(next) as i64;
        telemetry
            .metrics
            .kafka_lag
            .get_or_create(&PartitionLabel { partition })
            .set(lag);
        total += lag;
    }
    total
}
