//! The Prometheus metrics of one process, as prometheus-client atomics: the pipeline's hooks
//! update them per chunk, activation or commit (never per event), and `/metrics` encodes them.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Upper bounds (seconds) of `sessionize_session_visible_delay_seconds`' buckets.
const VISIBLE_DELAY_BUCKETS: [f64; 16] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 45.0, 60.0, 120.0, 300.0, 600.0, 900.0,
    1800.0,
];
use prometheus_client::registry::Registry;

use crate::rules::EndReason;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub partition: u32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndReasonLabel {
    end_reason: &'static str,
}

/// What happened to events, by the `outcome` label.
pub struct Outcomes {
    pub on_time: Counter,
    pub late: Counter,
    pub quarantined: Counter,
    /// On-time events the sessionizer dropped as repeats: a subset of `on_time`.
    pub duplicate: Counter,
}

/// Every metric `/metrics` serves. Names are stable: dashboards and alerts rely on them.
pub struct Metrics {
    registry: Registry,
    pub events_read: Family<PartitionLabel, Counter>,
    pub outcomes: Outcomes,
    sessions_closed: Family<EndReasonLabel, Counter>,
    pub kafka_lag: Family<PartitionLabel, Gauge>,
    pub next_offset: Family<PartitionLabel, Gauge>,
    pub watermark: Family<PartitionLabel, Gauge>,
    pub watermark_lag: Gauge<f64, AtomicU64>,
    pub open_sessions: Gauge,
    pub pending_events: Gauge,
    pub state_bytes: Gauge,
    pub epoch: Gauge,
    pub last_commit: Gauge<f64, AtomicU64>,
    pub commit_duration: Histogram,
    pub checkpoint_duration: Histogram,
    pub visible_delay: Histogram,
}

/// The metric names served, without the suffixes the format adds (`_total` to counters,
/// `_bucket`/`_sum`/`_count` to histograms).
pub const NAMES: [&str; 16] = [
    "sessionize_events_read_total",
    "sessionize_events_total",
    "sessionize_sessions_closed_total",
    "sessionize_kafka_lag_records",
    "sessionize_next_offset",
    "sessionize_watermark_ms",
    "sessionize_watermark_lag_seconds",
    "sessionize_open_sessions",
    "sessionize_pending_events",
    "sessionize_state_bytes",
    "sessionize_epoch",
    "sessionize_last_commit_timestamp_seconds",
    "sessionize_commit_duration_seconds",
    "sessionize_checkpoint_duration_seconds",
    "sessionize_session_visible_delay_seconds",
    "sessionize_up",
];

impl Metrics {
    pub fn new(process: usize) -> Self {
        let mut registry = Registry::default();
        let events_read = Family::<PartitionLabel, Counter>::default();
        registry.register(
            "sessionize_events_read",
            "Records read, by partition (this process's partitions)",
            events_read.clone(),
        );
        let by_outcome = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "sessionize_events",
            "Events by outcome: on_time, late (past the allowed lateness), quarantined \
             (malformed), duplicate (on-time repeats of an event id, a subset of on_time)",
            by_outcome.clone(),
        );
        let outcome = |outcome| by_outcome.get_or_create_owned(&OutcomeLabel { outcome });
        let outcomes = Outcomes {
            on_time: outcome("on_time"),
            late: outcome("late"),
            quarantined: outcome("quarantined"),
            duplicate: outcome("duplicate"),
        };
        let sessions_closed = Family::<EndReasonLabel, Counter>::default();
        registry.register(
            "sessionize_sessions_closed",
            "Sessions closed by this process's workers, by end reason",
            sessions_closed.clone(),
        );
        for reason in [
            EndReason::Inactivity,
            EndReason::MaxDuration,
            EndReason::Boundary,
            EndReason::EndOfInput,
        ] {
            sessions_closed.get_or_create_owned(&EndReasonLabel {
                end_reason: reason.as_str(),
            });
        }
        let kafka_lag = Family::<PartitionLabel, Gauge>::default();
        registry.register(
            "sessionize_kafka_lag_records",
            "Log end offset minus the next offset to read, by Kafka partition",
            kafka_lag.clone(),
        );
        let next_offset = Family::<PartitionLabel, Gauge>::default();
        registry.register(
            "sessionize_next_offset",
            "Next offset (Kafka) or byte offset (files) the stamper will classify, by partition",
            next_offset.clone(),
        );
        let watermark = Family::<PartitionLabel, Gauge>::default();
        registry.register(
            "sessionize_watermark_ms",
            "Each partition's watermark, event time in ms since the epoch",
            watermark.clone(),
        );
        let watermark_lag = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "sessionize_watermark_lag_seconds",
            "Wall clock minus the pipeline's watermark (the lowest over every partition)",
            watermark_lag.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let open_sessions = gauge(
            &mut registry,
            "sessionize_open_sessions",
            "Sessions open on this process's workers",
        );
        let pending_events = gauge(
            &mut registry,
            "sessionize_pending_events",
            "Events waiting for the watermark on this process's workers",
        );
        let state_bytes = gauge(
            &mut registry,
            "sessionize_state_bytes",
            "Size of this process's workers' last checkpoints: open sessions, pending events and \
             the de-duplication window, serialized",
        );
        let epoch = gauge(
            &mut registry,
            "sessionize_epoch",
            "The epoch in progress (every epoch before it is committed)",
        );
        let last_commit = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "sessionize_last_commit_timestamp_seconds",
            "When the last commit went through, seconds since the Unix epoch (the committing \
             process, 0; other processes serve 0)",
            last_commit.clone(),
        );
        let commit_duration = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register(
            "sessionize_commit_duration_seconds",
            "Time to commit an epoch to the three tables (the committing process)",
            commit_duration.clone(),
        );
        let checkpoint_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "sessionize_checkpoint_duration_seconds",
            "Time for a worker to write its checkpoint part of an epoch",
            checkpoint_duration.clone(),
        );
        // Fine around the 30 s that latency targets are set at, so that a quantile can tell.
        let visible_delay = Histogram::new(VISIBLE_DELAY_BUCKETS);
        registry.register(
            "sessionize_session_visible_delay_seconds",
            "From the moment a session could close (the watermark passing its end plus the \
             inactivity timeout) to the commit that makes it visible",
            visible_delay.clone(),
        );
        let up = Gauge::<i64>::default();
        up.set(1);
        registry.register(
            "sessionize_up",
            format!("1 while the process runs; this is process {process}"),
            up,
        );
        Metrics {
            registry,
            events_read,
            outcomes,
            sessions_closed,
            kafka_lag,
            next_offset,
            watermark,
            watermark_lag,
            open_sessions,
            pending_events,
            state_bytes,
            epoch,
            last_commit,
            commit_duration,
            checkpoint_duration,
            visible_delay,
        }
    }

    /// The counter of sessions closed for `reason`.
    pub fn sessions_closed(&self, reason: EndReason) -> Counter {
        self.sessions_closed.get_or_create_owned(&EndReasonLabel {
            end_reason: reason.as_str(),
        })
    }

    /// Sessions closed so far, by end reason.
    pub fn sessions_closed_by_reason(&self) -> Vec<(&'static str, u64)> {
        [
            EndReason::Inactivity,
            EndReason::MaxDuration,
            EndReason::Boundary,
            EndReason::EndOfInput,
        ]
        .into_iter()
        .map(|r| (r.as_str(), self.sessions_closed(r).get()))
        .collect()
    }

    /// The Prometheus text format (0.0.4) of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// The `Content-Type` of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_every_name_in_the_text_format() {
        let metrics = Metrics::new(0);
        metrics
            .events_read
            .get_or_create(&PartitionLabel { partition: 3 })
            .inc_by(5);
        metrics
            .kafka_lag
            .get_or_create(&PartitionLabel { partition: 3 })
            .set(7);
        metrics
            .next_offset
            .get_or_create(&PartitionLabel { partition: 3 })
            .set(9);
        metrics
            .watermark
            .get_or_create(&PartitionLabel { partition: 3 })
            .set(11);
        metrics.sessions_closed(EndReason::Boundary).inc();
        metrics.commit_duration.observe(0.3);
        let text = metrics.encode();
        for name in NAMES {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "{name} missing from\n{text}"
            );
        }
        assert!(text.contains("sessionize_events_read_total{partition=\"3\"} 5"));
        assert!(text.contains("sessionize_events_total{outcome=\"duplicate\"} 0"));
        assert!(text.contains("sessionize_sessions_closed_total{end_reason=\"boundary\"} 1"));
        assert!(text.contains("sessionize_commit_duration_seconds_count 1"));
        assert!(text.contains("sessionize_kafka_lag_records{partition=\"3\"} 7"));
    }
}
