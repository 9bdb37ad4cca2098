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
pub struct TableLabel {
    pub table: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Why files were deleted, the `reason` label of `sessionize_files_deleted_total`: metadata files
/// beyond the log, files of expired snapshots, files of epochs no run committed.
pub const DELETE_REASONS: [&str; 3] = ["metadata", "expired", "orphan"];

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
    pub tables: TableGauges,
    files_deleted: Family<ReasonLabel, Counter>,
}

/// What a table's current snapshot holds, as the committer surveyed it after a commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableFigures {
    pub data_files: u64,
    pub small_files: u64,
    pub manifests: u64,
    pub bytes: u64,
    pub records: u64,
    pub last_compaction_ms: Option<i64>,
    pub last_expiry_ms: Option<i64>,
}

/// Each table's shape after the last commit, by the `table` label (the committing process).
pub struct TableGauges {
    pub data_files: Family<TableLabel, Gauge>,
    pub small_files: Family<TableLabel, Gauge>,
    pub manifests: Family<TableLabel, Gauge>,
    pub bytes: Family<TableLabel, Gauge>,
    pub records: Family<TableLabel, Gauge>,
    pub compactions: Family<TableLabel, Counter>,
    pub last_compaction: Family<TableLabel, Gauge<f64, AtomicU64>>,
    pub last_expiry: Family<TableLabel, Gauge<f64, AtomicU64>>,
}

/// The metric names served, without the suffixes the format adds (`_total` to counters,
/// `_bucket`/`_sum`/`_count` to histograms).
pub const NAMES: [&str; 25] = [
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
    "sessionize_table_data_files",
    "sessionize_table_small_files",
    "sessionize_table_manifests",
    "sessionize_table_bytes",
    "sessionize_table_records",
    "sessionize_compactions_total",
    "sessionize_last_compaction_timestamp_seconds",
    "sessionize_last_expiry_timestamp_seconds",
    "sessionize_files_deleted_total",
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
        let tables = TableGauges::register(&mut registry);
        let files_deleted = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "sessionize_files_deleted",
            "Files the committing process deleted, by reason: metadata (metadata files beyond \
             write.metadata.previous-versions-max), expired (manifest lists, manifests and data \
             files only expired snapshots named), orphan (files of epochs no run committed)",
            files_deleted.clone(),
        );
        for reason in DELETE_REASONS {
            files_deleted.get_or_create_owned(&ReasonLabel { reason });
        }
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
            tables,
            files_deleted,
        }
    }

    /// `count` files were deleted for `reason` (one of [`DELETE_REASONS`]).
    pub fn files_deleted(&self, reason: &'static str, count: u64) {
        self.files_deleted
            .get_or_create(&ReasonLabel { reason })
            .inc_by(count);
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

impl TableGauges {
    fn register(registry: &mut Registry) -> Self {
        let gauges = TableGauges {
            data_files: Family::default(),
            small_files: Family::default(),
            manifests: Family::default(),
            bytes: Family::default(),
            records: Family::default(),
            compactions: Family::default(),
            last_compaction: Family::default(),
            last_expiry: Family::default(),
        };
        let current = "in the table's current snapshot, after the last commit";
        registry.register(
            "sessionize_table_data_files",
            format!("Data files {current}"),
            gauges.data_files.clone(),
        );
        registry.register(
            "sessionize_table_small_files",
            format!(
                "Data files below three quarters of write.target-file-size-bytes (what compaction \
                 rewrites) {current}"
            ),
            gauges.small_files.clone(),
        );
        registry.register(
            "sessionize_table_manifests",
            format!("Manifests {current}"),
            gauges.manifests.clone(),
        );
        registry.register(
            "sessionize_table_bytes",
            format!("Bytes of the data files {current}"),
            gauges.bytes.clone(),
        );
        registry.register(
            "sessionize_table_records",
            format!("Rows in the data files {current}"),
            gauges.records.clone(),
        );
        registry.register(
            "sessionize_compactions",
            "Compaction rounds committed (replace snapshots), by table",
            gauges.compactions.clone(),
        );
        registry.register(
            "sessionize_last_compaction_timestamp_seconds",
            "When the table's newest compaction snapshot was committed, seconds since the Unix \
             epoch (0: none retained)",
            gauges.last_compaction.clone(),
        );
        registry.register(
            "sessionize_last_expiry_timestamp_seconds",
            "When snapshots of the table were last expired, seconds since the Unix epoch (0: never)",
            gauges.last_expiry.clone(),
        );
        gauges
    }

    /// `table`'s shape after a commit, with the compaction rounds committed since the last one.
    pub fn set(&self, table: &str, shape: &TableFigures, new_compactions: u64) {
        let label = TableLabel {
            table: table.to_string(),
        };
        let set = |family: &Family<TableLabel, Gauge>, value: u64| {
            family.get_or_create(&label).set(value as i64);
        };
        set(&self.data_files, shape.data_files);
        set(&self.small_files, shape.small_files);
        set(&self.manifests, shape.manifests);
        set(&self.bytes, shape.bytes);
        set(&self.records, shape.records);
        self.compactions
            .get_or_create(&label)
            .inc_by(new_compactions);
        let seconds = |ms: Option<i64>| ms.map_or(0.0, |ms| ms as f64 / 1000.0);
        self.last_compaction
            .get_or_create(&label)
            .set(seconds(shape.last_compaction_ms));
        self.last_expiry
            .get_or_create(&label)
            .set(seconds(shape.last_expiry_ms));
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
        let shape = TableFigures {
            data_files: 12,
            manifests: 2,
            last_compaction_ms: Some(1_500),
            ..TableFigures::default()
        };
        metrics.tables.set("sessions.user_sessions", &shape, 3);
        metrics.files_deleted("expired", 4);
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
        let table = "{table=\"sessions.user_sessions\"}";
        assert!(text.contains(&format!("sessionize_table_data_files{table} 12")));
        assert!(text.contains(&format!("sessionize_compactions_total{table} 3")));
        assert!(text.contains(&format!(
            "sessionize_last_compaction_timestamp_seconds{table} 1.5"
        )));
        assert!(text.contains("sessionize_files_deleted_total{reason=\"expired\"} 4"));
        assert!(text.contains("sessionize_files_deleted_total{reason=\"orphan\"} 0"));
    }
}
