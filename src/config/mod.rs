//! Settings of a pipeline run ([`PipelineConfig`]) with the product's defaults and what each
//! setting means, and the parsing of the values they are given in: durations and times
//! ([`duration`]), `key=value` options and names ([`values`]), and the environment and file that
//! flags may also come from ([`flag_sources`]).

pub mod duration;
pub mod flag_sources;
pub mod values;

use std::time::Duration;

pub use duration::{parse_duration, parse_timestamp_ms, whole_millis};
pub use values::{identifier, kafka_options_from_env, parse_key_value};

use anyhow::Result;

use crate::clock::wall_clock_ms;
use crate::event::{EventFormat, Validator};
use crate::maintain::CompactionSettings;
use crate::rules::{BoundaryRules, SessionRules};
use crate::sink::{CatalogSettings, Warehouse};
use crate::source::kafka::{KafkaSettings, StartOffsets, StopAt};
use crate::storage::Location;

/// Everything a run needs to know, shared by every worker.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Input files, one partition each, in order; `-` is standard input.
    pub inputs: Vec<String>,
    /// Where new tables' files go (for the SQL catalogs), and checkpoints by default.
    pub warehouse: Location,
    /// Where checkpoints go, if not under the warehouse (see [`PipelineConfig::checkpoint_location`]).
    pub checkpoints: Option<Location>,
    /// The Iceberg catalog of the tables.
    pub catalog: CatalogSettings,
    pub database: String,
    pub table: String,
    /// The table of the sessions open at the last commit, replaced at every commit; `None`
    /// keeps none.
    pub open_sessions_table: Option<String>,
    pub rules: SessionRules,
    /// How records encode events.
    pub format: EventFormat,
    /// Business rules that end or start sessions on an event's fields.
    pub boundaries: BoundaryRules,
    /// Start on a table written under other rules (see [`PipelineConfig::rules_record`]).
    pub allow_rule_change: bool,
    /// How far behind its partition's latest event time an event may be and still be on time.
    pub allowed_lateness_ms: u64,
    /// How far behind its partition's watermark a late event still corrects the sessions it
    /// belongs to, instead of going to the late-events table; 0 turns corrections off.
    pub correction_horizon_ms: u64,
    /// How far a partition's newest event time moves at once; a jump further moves its watermark
    /// only once a share of its current users and recent events confirm it
    /// ([`crate::watermark::JumpGuard`]); `u64::MAX` turns the guard off.
    pub max_event_time_jump_ms: u64,
    pub max_future_skew_ms: u64,
    pub max_event_bytes: usize,
    /// Number of `bucket(user_id)` partitions of the sessions table; also the unit of work
    /// distribution, so it bounds the useful number of workers.
    pub buckets: u32,
    /// `N` of the sessions table's `user_hash_bucket`: Spark SQL's `abs(hash(user_id)) % N`, the
    /// cohorts of the Spark job this table replaces.
    pub user_hash_buckets: u32,
    pub commit_interval: Duration,
    /// Watermarks are rounded down to this granularity before they become timely timestamps.
    pub watermark_tick_ms: u64,
    /// Time between progress log lines (when no progress bar is drawn).
    pub progress_interval: Duration,
    /// Input bytes a worker may have read ahead of the stampers, over the partitions it reads. A
    /// deep read-ahead keeps every worker parsing while the owner stamps; 64 MiB measured 1.5x
    /// the throughput of 8 MiB (docs/PERFORMANCE.md).
    pub read_ahead_bytes: usize,
    /// Size of the line-aligned chunks in which inputs are read and parsed.
    pub chunk_bytes: usize,
    /// Read a Kafka topic instead of `inputs`.
    pub kafka: Option<KafkaInput>,
    /// An epoch ends early once its sources have stamped this many records, bounding the work
    /// a commit holds and a restart redoes.
    pub max_epoch_records: u64,
    /// An epoch ends early once the writers of a process hold this much of its output
    /// (uncompressed bytes; 0: no limit), bounding their memory and the commit's files.
    pub commit_max_bytes: u64,
    /// The same, in output rows (0: no limit).
    pub commit_max_rows: u64,
    /// An epoch with nothing to write is committed only when this long has passed since the last
    /// commit (so that the recorded offsets move), or at the end of input.
    pub idle_commit_interval: Duration,
    /// Snapshots of ours each table keeps; older ones are expired (metadata only). 0 keeps all.
    pub retain_snapshots: usize,
    /// When and how much of each table is compacted beside the pipeline.
    pub compaction: CompactionSettings,
    /// Checkpoints kept, of the newest epochs: a table rolled back by fewer commits resumes from
    /// the checkpoint of the commit it was rolled back to. At least 1.
    pub keep_checkpoints: usize,
    /// One checkpoint in this many is full; the others hold what changed since the one before
    /// (`--full-checkpoint-every`). At least 1: a restore reads at most this many.
    pub full_checkpoint_every: u64,
    /// Where to serve metrics, health probes and the status page (`--metrics-addr`; off: None).
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// A Kafka topic as the input of a run.
#[derive(Debug, Clone)]
pub struct KafkaInput {
    pub settings: KafkaSettings,
    /// Where to start instead of the table's newest snapshot.
    pub start: Option<StartOffsets>,
    pub stop: StopAt,
    /// A partition without new records for this long stops holding the watermark back.
    pub idle_timeout: Duration,
    /// Events per second over all workers; 0 is unlimited.
    pub max_rate: u64,
    /// Pause a partition whose watermark runs this far ahead of the slowest partition's
    /// (watermark alignment); `None` never pauses.
    pub max_watermark_drift: Option<Duration>,
}

impl KafkaInput {
    /// Reading `settings`' topic from where the table stands, without end, at full speed, with
    /// partitions idle after a minute and no watermark alignment.
    pub fn new(settings: KafkaSettings) -> Self {
        KafkaInput {
            settings,
            start: None,
            stop: StopAt::Never,
            idle_timeout: Duration::from_secs(60),
            max_rate: 0,
            max_watermark_drift: None,
        }
    }

    /// Sets the watermark alignment's limit ([`KafkaInput::max_watermark_drift`]). A drift of
    /// zero is none rather than a limit no partition could keep: it turns the alignment off.
    pub fn set_max_watermark_drift(&mut self, drift: Duration) {
        self.max_watermark_drift = Some(drift).filter(|drift| !drift.is_zero());
    }
}

impl PipelineConfig {
    /// A configuration with the product's defaults, for the given inputs and warehouse.
    pub fn new(inputs: Vec<String>, warehouse: impl Into<Location>) -> Self {
        PipelineConfig {
            inputs,
            warehouse: warehouse.into(),
            checkpoints: None,
            catalog: CatalogSettings::default(),
            database: "sessions".into(),
            table: "user_sessions".into(),
            open_sessions_table: Some("user_sessions_open".into()),
            rules: SessionRules {
                inactivity_ms: 30 * 60_000,
                max_duration_ms: 2 * 3_600_000,
                dedup_window_ms: 10 * 60_000,
            },
            format: EventFormat::default(),
            boundaries: BoundaryRules::default(),
            allow_rule_change: false,
            allowed_lateness_ms: 10 * 60_000,
            correction_horizon_ms: 24 * 3_600_000,
            max_event_time_jump_ms: 10 * 60_000,
            max_future_skew_ms: 86_400_000,
            max_event_bytes: 1 << 20,
            buckets: 16,
            user_hash_buckets: 100,
            commit_interval: Duration::from_secs(30),
            watermark_tick_ms: 1000,
            progress_interval: Duration::from_secs(5),
            chunk_bytes: 1 << 20,
            read_ahead_bytes: 64 << 20,
            kafka: None,
            max_epoch_records: 50_000_000,
            commit_max_bytes: 256 << 20,
            commit_max_rows: 0,
            idle_commit_interval: Duration::from_secs(300),
            retain_snapshots: 100,
            compaction: CompactionSettings::default(),
            keep_checkpoints: 5,
            full_checkpoint_every: 10,
            metrics_addr: None,
        }
    }

    /// Whether the checkpoint of `epoch` is full, rather than amending the one before. Every
    /// worker and the committer agree on it from the epoch alone.
    pub fn full_checkpoint(&self, epoch: u64) -> bool {
        epoch.is_multiple_of(self.full_checkpoint_every.max(1))
    }

    /// The root of the checkpoints of every table: `--checkpoint-location`, or `_sessionize` in
    /// the warehouse.
    pub fn checkpoint_location(&self) -> Location {
        self.checkpoints
            .clone()
            .unwrap_or_else(|| self.warehouse.join("_sessionize"))
    }

    /// How side-table rows name the source of a partition: the file, or the topic.
    pub fn source_name(&self, partition: u32) -> &str {
        match &self.kafka {
            Some(kafka) => &kafka.settings.topic,
            None => self
                .inputs
                .get(partition as usize)
                .map_or("", String::as_str),
        }
    }

    /// The session rules as the table records them (`sessionize.rules`), so that a restart under
    /// other rules is noticed: the open sessions of the checkpoint were cut by these.
    ///
    /// ```
    /// use sessionize::config::PipelineConfig;
    /// let mut config = PipelineConfig::new(vec![], std::path::Path::new("w"));
    /// let default = config.rules_record();
    /// config.boundaries.end_on.push("page_name=logout".parse().unwrap());
    /// assert_ne!(config.rules_record(), default);
    /// assert!(config.rules_record().contains("page_name=logout"));
    /// ```
    pub fn rules_record(&self) -> String {
        let list = |rules: &[crate::rules::FieldEquals]| {
            let mut texts = rules.iter().map(ToString::to_string).collect::<Vec<_>>();
            texts.sort();
            texts.dedup();
            texts
        };
        serde_json::json!({
            "inactivity_ms": self.rules.inactivity_ms,
            "max_duration_ms": self.rules.max_duration_ms,
            "end_session_on": list(&self.boundaries.end_on),
            "start_session_on": list(&self.boundaries.start_on),
        })
        .to_string()
    }

    /// The warehouse and catalog of the tables. Must run inside a tokio runtime.
    pub async fn open_warehouse(&self) -> Result<Warehouse> {
        let warehouse =
            Warehouse::open(&self.catalog, &self.warehouse, &self.database, &self.table).await?;
        Ok(warehouse.with_open_sessions_table(self.open_sessions_table.clone()))
    }

    /// The warehouse of tables a run wrote, for the commands that only read them: a missing
    /// default catalog is an error that says what to give instead, not a new empty catalog.
    pub async fn existing_warehouse(&self) -> Result<Warehouse> {
        if self.catalog.uri.is_none()
            && let Some(root) = self.warehouse.local()
            && !root.join("catalog.db").exists()
        {
            anyhow::bail!(
                "no sessionize tables at --warehouse {} (it has no catalog.db): give the \
                 --warehouse of a run, or its --catalog-uri",
                root.display()
            );
        }
        self.open_warehouse().await
    }

    /// Sets how far behind its partition's newest event an event may be and still count. The
    /// de-duplication window follows it: a retried delivery within the lateness must not count
    /// twice, and one beyond it goes to the late-events table anyway, so remembering events for
    /// longer would only cost memory.
    pub fn set_allowed_lateness(&mut self, lateness: Duration) {
        self.allowed_lateness_ms = whole_millis(lateness);
        self.rules.dedup_window_ms = self.allowed_lateness_ms;
    }

    /// Sets the jump guard's limit ([`PipelineConfig::max_event_time_jump_ms`]); zero turns the
    /// guard off, so that every event moves the watermark at once.
    pub fn set_max_event_time_jump(&mut self, jump: Duration) {
        self.max_event_time_jump_ms = match whole_millis(jump) {
            0 => u64::MAX,
            jump_ms => jump_ms,
        };
    }

    /// Sets the watermarks' granularity, at least a millisecond: a dataflow timestamp is a whole
    /// number of ticks.
    pub fn set_watermark_tick(&mut self, tick: Duration) {
        self.watermark_tick_ms = whole_millis(tick).max(1);
    }

    /// Sets the time between progress log lines, at least a millisecond so that the progress
    /// loop never spins.
    pub fn set_progress_interval(&mut self, interval: Duration) {
        self.progress_interval = Duration::from_millis(whole_millis(interval).max(1));
    }

    /// Sets the sizes inputs are read in: chunks of `chunk_bytes` and up to `read_ahead_bytes`
    /// ahead of the stampers, each at least a byte so that a reader always makes progress.
    pub fn set_read_sizes(&mut self, chunk_bytes: usize, read_ahead_bytes: usize) {
        self.chunk_bytes = chunk_bytes.max(1);
        self.read_ahead_bytes = read_ahead_bytes.max(1);
    }

    /// The event validator, against the wall clock now.
    pub fn validator(&self) -> Validator {
        Validator {
            max_event_bytes: self.max_event_bytes,
            max_future_skew_ms: self.max_future_skew_ms,
            now_ms: wall_clock_ms(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn config() -> PipelineConfig {
        PipelineConfig::new(vec!["events.jsonl".into()], std::path::Path::new("w"))
    }

    #[test]
    fn the_deduplication_window_is_the_allowed_lateness() {
        let mut config = config();
        assert_eq!(config.rules.dedup_window_ms, config.allowed_lateness_ms);
        config.set_allowed_lateness(3 * MINUTE);
        assert_eq!(config.allowed_lateness_ms, 180_000);
        assert_eq!(config.rules.dedup_window_ms, 180_000);
    }

    #[test]
    fn a_zero_limit_turns_the_jump_guard_and_the_watermark_alignment_off() {
        let mut config = config();
        config.set_max_event_time_jump(60 * MINUTE);
        assert_eq!(config.max_event_time_jump_ms, 3_600_000);
        config.set_max_event_time_jump(Duration::ZERO);
        assert_eq!(config.max_event_time_jump_ms, u64::MAX);

        let settings = KafkaSettings {
            servers: "localhost:9092".into(),
            topic: "t".into(),
            group_id: "g".into(),
            options: Vec::new(),
        };
        let mut kafka = KafkaInput::new(settings);
        assert_eq!(kafka.max_watermark_drift, None);
        kafka.set_max_watermark_drift(10 * MINUTE);
        assert_eq!(kafka.max_watermark_drift, Some(10 * MINUTE));
        kafka.set_max_watermark_drift(Duration::ZERO);
        assert_eq!(kafka.max_watermark_drift, None);
    }

    #[test]
    fn ticks_intervals_and_read_sizes_are_never_zero() {
        let mut config = config();
        config.set_watermark_tick(Duration::ZERO);
        config.set_progress_interval(Duration::ZERO);
        config.set_read_sizes(0, 0);
        assert_eq!(config.watermark_tick_ms, 1);
        assert_eq!(config.progress_interval, Duration::from_millis(1));
        assert_eq!((config.chunk_bytes, config.read_ahead_bytes), (1, 1));
        config.set_watermark_tick(Duration::from_secs(2));
        assert_eq!(config.watermark_tick_ms, 2000);
    }
}
