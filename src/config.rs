//! Settings of a pipeline run, and the parsing of human-friendly durations.

use std::time::Duration;

use anyhow::Result;

use crate::clock::wall_clock_ms;
use crate::event::{EventFormat, Validator};
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
    pub rules: SessionRules,
    /// How records encode events.
    pub format: EventFormat,
    /// Business rules that end or start sessions on an event's fields.
    pub boundaries: BoundaryRules,
    /// Start on a table written under other rules (see [`PipelineConfig::rules_record`]).
    pub allow_rule_change: bool,
    /// How far behind its partition's latest event time an event may be and still be on time.
    pub allowed_lateness_ms: u64,
    /// An event further than this ahead of its partition's newest event time moves the
    /// partition's watermark only once events of other users confirm the jump
    /// ([`crate::watermark::JumpGuard`]); `u64::MAX` turns the guard off.
    pub max_event_time_jump_ms: u64,
    pub max_future_skew_ms: u64,
    pub max_event_bytes: usize,
    /// Number of `bucket(user_id)` partitions of the sessions table; also the unit of work
    /// distribution, so it bounds the useful number of workers.
    pub buckets: u32,
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
    /// An epoch with nothing to write is committed only when this long has passed since the last
    /// commit (so that the recorded offsets move), or at the end of input.
    pub idle_commit_interval: Duration,
    /// Snapshots of ours each table keeps; older ones are expired (metadata only). 0 keeps all.
    pub retain_snapshots: usize,
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
            rules: SessionRules {
                inactivity_ms: 30 * 60_000,
                max_duration_ms: 2 * 3_600_000,
                dedup_window_ms: 10 * 60_000,
            },
            format: EventFormat::default(),
            boundaries: BoundaryRules::default(),
            allow_rule_change: false,
            allowed_lateness_ms: 10 * 60_000,
            max_event_time_jump_ms: 6 * 3_600_000,
            max_future_skew_ms: 86_400_000,
            max_event_bytes: 1 << 20,
            buckets: 16,
            commit_interval: Duration::from_secs(30),
            watermark_tick_ms: 1000,
            progress_interval: Duration::from_secs(5),
            chunk_bytes: 1 << 20,
            read_ahead_bytes: 64 << 20,
            kafka: None,
            max_epoch_records: 50_000_000,
            idle_commit_interval: Duration::from_secs(300),
            retain_snapshots: 100,
            metrics_addr: None,
        }
    }

    /// How side-table rows name the source of a partition: the file, or the topic.
    /// The root of the checkpoints of every table: `--checkpoint-location`, or `_sessionize` in
    /// the warehouse.
    pub fn checkpoint_location(&self) -> Location {
        self.checkpoints
            .clone()
            .unwrap_or_else(|| self.warehouse.join("_sessionize"))
    }

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
        Warehouse::open(&self.catalog, &self.warehouse, &self.database, &self.table).await
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

    /// The event validator, against the wall clock now.
    pub fn validator(&self) -> Validator {
        Validator {
            max_event_bytes: self.max_event_bytes,
            max_future_skew_ms: self.max_future_skew_ms,
            now_ms: wall_clock_ms(),
        }
    }
}

/// Parses a duration such as `90m`, `2h`, `1h30m`, `45s`, `250ms` or `1d`; a bare number is taken
/// in `bare_unit`.
///
/// ```
/// use std::time::Duration;
/// use sessionize::config::parse_duration;
/// let minute = Duration::from_secs(60);
/// assert_eq!(parse_duration("1h30m", minute), Ok(90 * minute));
/// assert_eq!(parse_duration("45", minute), Ok(45 * minute));
/// assert!(parse_duration("1x", minute).is_err());
/// ```
pub fn parse_duration(text: &str, bare_unit: Duration) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(number) = text.parse::<f64>() {
        return if number.is_finite() && number >= 0.0 {
            Ok(bare_unit.mul_f64(number))
        } else {
            Err(format!("invalid duration {text:?}"))
        };
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {text:?} lacks a unit after its last number"))?;
        let (number, tail) = rest.split_at(digits);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("invalid number in duration {text:?}"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit = match unit {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" | "min" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            other => {
                return Err(format!(
                    "unknown unit {other:?} in duration {text:?} (use ms, s, m, h or d)"
                ));
            }
        };
        total += unit.mul_f64(number);
        rest = tail;
    }
    Ok(total)
}

/// Parses an RFC 3339 time such as `2026-03-01T10:00:00Z` into epoch milliseconds.
///
/// ```
/// use sessionize::config::parse_timestamp_ms;
/// assert_eq!(parse_timestamp_ms("2026-03-01T00:00:00Z"), Ok(1_772_323_200_000));
/// assert!(parse_timestamp_ms("yesterday").is_err());
/// ```
pub fn parse_timestamp_ms(text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{text:?} is not an RFC 3339 time such as 2026-03-01T10:00:00Z: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_bare_numbers() {
        let hour = Duration::from_secs(3600);
        assert_eq!(parse_duration("2", hour), Ok(2 * hour));
        assert_eq!(parse_duration("1.5", hour), Ok(hour * 3 / 2));
        assert_eq!(parse_duration("90m", hour), Ok(hour * 3 / 2));
        assert_eq!(parse_duration("2h", hour), Ok(2 * hour));
        assert_eq!(
            parse_duration("250ms", hour),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            parse_duration("1h30m15s", hour),
            Ok(hour + Duration::from_secs(30 * 60 + 15))
        );
        assert!(parse_duration("", hour).is_err());
        assert!(parse_duration("-1", hour).is_err());
        assert!(parse_duration("5 parsecs", hour).is_err());
        assert!(parse_duration("h", hour).is_err());
    }
}
