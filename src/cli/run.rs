//! `sessionize run`: its flags, in the groups `--help` shows them in, and their translation into
//! the pipeline's configuration and the cluster's shape.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use clap::Args;

use super::kafka::{DEFAULT_TOPIC, Format, FormatArgs, KafkaArgs};
use super::tables::TablesArgs;
use super::{HOUR, MILLISECOND, MINUTE, SECOND, duration_flag, timestamp_flag};
use crate::config::{KafkaInput, PipelineConfig, whole_millis};
use crate::dataflow::Cluster;
use crate::event::EventFormat;
use crate::event::avro::AvroDecoder;
use crate::maintain::CompactionSettings;
use crate::rules::{BoundaryRules, FieldEquals};
use crate::source::kafka::{KafkaSettings, StartOffsets, StopAt};

/// `sessionize run`.
#[derive(Args)]
pub struct RunArgs {
    #[command(flatten, next_help_heading = "Source")]
    pub source: SourceArgs,
    #[command(flatten, next_help_heading = "Rules")]
    pub rules: RulesArgs,
    #[command(flatten, next_help_heading = "Tables & catalog")]
    pub tables: TablesArgs,
    #[command(flatten, next_help_heading = "Tables & catalog")]
    pub layout: TableLayoutArgs,
    #[command(flatten, next_help_heading = "Checkpoints")]
    pub checkpoints: CheckpointArgs,
    #[command(flatten, next_help_heading = "Cluster")]
    pub cluster: ClusterArgs,
    #[command(flatten, next_help_heading = "Operations")]
    pub operations: OperationsArgs,
}

/// What to read, from where to where, and how fast.
#[derive(Args)]
pub struct SourceArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The topic to read.
    #[arg(long, default_value = DEFAULT_TOPIC)]
    pub kafka_topic: String,
    /// Consumer group under which committed offsets are published, for lag tools only.
    #[arg(long, default_value = "sessionize")]
    pub kafka_group: String,
    /// Input file of JSON lines instead of Kafka; repeat for several partitions; `-` reads
    /// standard input.
    #[arg(long = "input", conflicts_with = "kafka_servers")]
    pub inputs: Vec<String>,
    #[command(flatten)]
    pub format: FormatArgs,
    /// Avro records are plain datums of this writer schema (an .avsc file, such as
    /// schemas/clickstream_event.avsc) rather than in the Confluent wire format.
    #[arg(long, conflicts_with = "schema_registry_url")]
    pub avro_schema: Option<PathBuf>,
    /// Start here instead of where the table's newest snapshot says: earliest, latest,
    /// committed (the group's offsets), or partition:offset pairs such as 0:1200,1:980.
    #[arg(long, conflicts_with = "start_timestamp")]
    pub start_offsets: Option<StartOffsets>,
    /// Start at the first records at or after this time (RFC 3339).
    #[arg(long)]
    pub start_timestamp: Option<String>,
    /// Bounded run: stop at the first records at or after this time (RFC 3339).
    #[arg(long, conflicts_with = "test_mode")]
    pub until_timestamp: Option<String>,
    /// Bounded run: read up to the end offsets seen at start, close every session, commit and
    /// exit (files always end).
    #[arg(long)]
    pub test_mode: bool,
    /// A partition found caught up and without new records for this long stops holding the
    /// watermark back (bare: seconds).
    #[arg(long, default_value = "60")]
    pub idle_timeout: String,
    /// Upper bound on events read per second, over all workers (0: none).
    #[arg(long, default_value_t = 0)]
    pub max_rate: u64,
    /// Watermark alignment: pause a partition whose watermark runs this far ahead of the slowest
    /// partition's, bounding memory when partitions are skewed in event time, at a cost in
    /// throughput (bare: minutes; default and 0: off).
    #[arg(long)]
    pub max_watermark_drift: Option<String>,
    /// Watermark granularity of the dataflow's timestamps (bare: milliseconds).
    #[arg(long, default_value = "1000")]
    pub watermark_tick: String,
    /// Size of the line-aligned chunks inputs are read and parsed in.
    #[arg(long, default_value_t = 1 << 20)]
    pub chunk_bytes: usize,
    /// Input bytes each worker may read ahead of the stampers (memory for throughput).
    #[arg(long, default_value_t = 64 << 20)]
    pub read_ahead_bytes: usize,
}

/// What a session is, and which events count.
#[derive(Args)]
pub struct RulesArgs {
    /// Inactivity that ends a session (a bare number is minutes; or 90s, 30m, 1h30m).
    #[arg(long, default_value = "30")]
    pub inactivity_timeout: String,
    /// Longest session before a split (a bare number is hours; or 90m, 2h).
    #[arg(long, default_value = "2")]
    pub max_session_duration: String,
    /// A business rule: an event whose FIELD equals VALUE ends its session after itself
    /// (repeatable). FIELD: page_name, event_details.event_name or event_details.event_type.
    #[arg(long = "end-session-on", value_name = "FIELD=VALUE")]
    pub end_session_on: Vec<FieldEquals>,
    /// A business rule: an event whose FIELD equals VALUE starts a new session (repeatable).
    #[arg(long = "start-session-on", value_name = "FIELD=VALUE")]
    pub start_session_on: Vec<FieldEquals>,
    /// Start even though the table was written under other session rules (timeouts or
    /// boundaries); the new rules apply from where the table stands.
    #[arg(long)]
    pub allow_rule_change: bool,
    /// How far behind its partition's newest event an event may be and still count (bare: minutes).
    #[arg(long, default_value = "10")]
    pub allowed_lateness: String,
    /// A late event at most this far behind its partition's watermark corrects the sessions it
    /// belongs to (their rows are replaced) instead of going to the late-events table; 0 turns
    /// corrections off (bare: hours).
    #[arg(long, default_value = "24")]
    pub correction_horizon: String,
    /// A partition's newest event time moves at once by up to this; a jump further (a device
    /// with a bad clock, whatever its lead) moves the watermark only once a quarter of the
    /// partition's current users and of its recent events have reached it; 0 turns the guard off
    /// (bare: hours).
    #[arg(long, default_value = "10m")]
    pub max_event_time_jump: String,
    /// Events further than this ahead of the wall clock are rejected (bare: hours).
    #[arg(long, default_value = "24")]
    pub max_future_skew: String,
    /// Longest accepted line, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_event_bytes: usize,
}

/// How the sessions table is laid out and how much history it keeps.
#[derive(Args)]
pub struct TableLayoutArgs {
    /// Number of bucket(user_id) partitions of the sessions table (also the unit of parallelism).
    #[arg(long, default_value_t = 16)]
    pub buckets: u32,
    /// N of the sessions table's user_hash_bucket column: Spark SQL's abs(hash(user_id)) % N,
    /// the Spark job's cohorts.
    #[arg(long, default_value_t = 100)]
    pub user_hash_buckets: u32,
    /// Snapshots of ours each table keeps (time travel reaches back this many commits); older
    /// ones are expired from the metadata. 0 keeps every snapshot.
    #[arg(long, default_value_t = 100)]
    pub retain_snapshots: usize,
    /// A partition is compacted (its small files rewritten into sorted files near the table's
    /// write.target-file-size-bytes, beside the pipeline) once it has this many files below
    /// three quarters of that size. 0 turns compaction off.
    #[arg(long, default_value_t = 5)]
    pub compact_min_files: usize,
    /// Input bytes one compaction round rewrites at most, which bounds its memory.
    #[arg(long, default_value_t = 256 << 20)]
    pub compact_max_bytes: u64,
}

/// How often to commit, which is how often state is checkpointed.
#[derive(Args)]
pub struct CheckpointArgs {
    /// Time between commits (bare: seconds).
    #[arg(long, default_value = "30")]
    pub commit_interval: String,
    /// An epoch with nothing to write is committed only this long after the last commit, so that
    /// an idle pipeline adds few snapshots but its recorded offsets still move (bare: seconds).
    #[arg(long, default_value = "300")]
    pub idle_commit_interval: String,
    /// An epoch ends early after a stamper has taken this many records (0: no limit).
    #[arg(long, default_value_t = 50_000_000)]
    pub max_epoch_records: u64,
    /// An epoch ends early once this process's writers hold this many bytes of its output
    /// (uncompressed), which bounds their memory and a commit's files at long intervals
    /// (0: no limit).
    #[arg(long, default_value_t = 256 << 20)]
    pub commit_max_bytes: u64,
    /// An epoch ends early once this process's writers hold this many of its output rows
    /// (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub commit_max_rows: u64,
    /// Checkpoints kept, of the newest commits: a sessions table rolled back by fewer commits
    /// (Iceberg's rollback_to_snapshot) resumes from where it was rolled back to and reads again
    /// what the rollback removed, with the checkpoints they amend.
    #[arg(long, default_value_t = 5)]
    pub keep_checkpoints: usize,
    /// One checkpoint in N holds all the open sessions; the others hold only the users whose
    /// state changed since the one before, and a restore reads at most N of them (1: every
    /// checkpoint is full).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub full_checkpoint_every: u64,
}

/// Timely's cluster: workers and processes.
#[derive(Args)]
pub struct ClusterArgs {
    /// Worker threads per process (timely's -w).
    #[arg(short = 'w', long = "threads", default_value_t = 1)]
    pub threads: usize,
    /// Number of processes (timely's -n).
    #[arg(short = 'n', long = "processes", default_value_t = 1)]
    pub processes: usize,
    /// Index of this process (timely's -p).
    #[arg(short = 'p', long = "process", default_value_t = 0)]
    pub process: usize,
    /// File with one host:port line per process (timely's -h).
    #[arg(short = 'h', long = "hostfile")]
    pub hostfile: Option<PathBuf>,
    /// How long the processes of a cluster may take to connect to each other (bare: seconds).
    #[arg(long, default_value = "120")]
    pub cluster_timeout: String,
}

/// What a run tells its operators.
#[derive(Args)]
pub struct OperationsArgs {
    /// Also write the one-line JSON summary to this file.
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// Time between progress log lines, when standard error is not a terminal (on a terminal a
    /// bounded run draws a progress bar instead) (bare: seconds).
    #[arg(long, default_value = "5")]
    pub progress_interval: String,
    /// Serve Prometheus metrics (/metrics), health probes (/healthz, /readyz) and a live status
    /// page (/, and /status as JSON) on this address, e.g. 127.0.0.1:9464 (0.0.0.0:9464 for
    /// other hosts: nothing is authenticated); each process of a cluster serves its own
    /// workers' figures (default: off).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl RunArgs {
    /// The pipeline's configuration and the cluster's shape these flags ask for.
    pub fn into_config(self) -> Result<(PipelineConfig, Cluster)> {
        let RunArgs {
            source,
            rules,
            tables,
            layout,
            checkpoints,
            cluster,
            operations,
        } = self;
        let kafka = source.kafka_input()?;
        let format = source.event_format()?;
        let mut config = tables.into_config(source.inputs)?;
        config.kafka = kafka;
        config.format = format;
        config.set_watermark_tick(duration_flag(
            &source.watermark_tick,
            MILLISECOND,
            "watermark-tick",
        )?);
        config.set_read_sizes(source.chunk_bytes, source.read_ahead_bytes);
        rules.apply(&mut config)?;
        ensure!(layout.buckets > 0, "--buckets must be at least 1");
        config.buckets = layout.buckets;
        ensure!(
            layout.user_hash_buckets > 0,
            "--user-hash-buckets must be at least 1"
        );
        config.user_hash_buckets = layout.user_hash_buckets;
        config.retain_snapshots = layout.retain_snapshots;
        ensure!(
            layout.compact_max_bytes > 0,
            "--compact-max-bytes must be more than 0 (turn compaction off with --compact-min-files 0)"
        );
        config.compaction = CompactionSettings {
            min_files: layout.compact_min_files,
            max_bytes: layout.compact_max_bytes,
        };
        config.commit_interval =
            duration_flag(&checkpoints.commit_interval, SECOND, "commit-interval")?;
        config.idle_commit_interval = duration_flag(
            &checkpoints.idle_commit_interval,
            SECOND,
            "idle-commit-interval",
        )?;
        config.max_epoch_records = checkpoints.max_epoch_records;
        config.commit_max_bytes = checkpoints.commit_max_bytes;
        config.commit_max_rows = checkpoints.commit_max_rows;
        ensure!(
            checkpoints.keep_checkpoints > 0,
            "--keep-checkpoints must be at least 1 (the newest commit's checkpoint is where a restart resumes)"
        );
        config.keep_checkpoints = checkpoints.keep_checkpoints;
        ensure!(
            checkpoints.full_checkpoint_every > 0,
            "--full-checkpoint-every must be at least 1 (1: every checkpoint is full)"
        );
        config.full_checkpoint_every = checkpoints.full_checkpoint_every;
        config.set_progress_interval(duration_flag(
            &operations.progress_interval,
            SECOND,
            "progress-interval",
        )?);
        config.metrics_addr = operations.metrics_addr;
        Ok((config, cluster.into_cluster()?))
    }
}

impl SourceArgs {
    /// The Kafka topic to read, or `None` for the input files; one of them must be given.
    fn kafka_input(&self) -> Result<Option<KafkaInput>> {
        let stop = match (&self.until_timestamp, self.test_mode) {
            (Some(until), _) => StopAt::Timestamp(timestamp_flag(until, "until-timestamp")?),
            (None, true) => StopAt::EndAtStart,
            (None, false) => StopAt::Never,
        };
        let start = match (&self.start_offsets, &self.start_timestamp) {
            (Some(offsets), _) => Some(offsets.clone()),
            (None, Some(time)) => Some(StartOffsets::Timestamp(timestamp_flag(
                time,
                "start-timestamp",
            )?)),
            (None, None) => None,
        };
        let Some(servers) = self.kafka.kafka_servers.clone() else {
            ensure!(
                !self.inputs.is_empty(),
                "nothing to read: give --kafka-servers HOST:PORT (and --kafka-topic), or --input FILE"
            );
            ensure!(
                start.is_none(),
                "--start-offsets and --start-timestamp apply to Kafka (--kafka-servers)"
            );
            return Ok(None);
        };
        let mut kafka = KafkaInput::new(KafkaSettings {
            servers,
            topic: self.kafka_topic.clone(),
            group_id: self.kafka_group.clone(),
            options: self.kafka.options(),
        });
        kafka.start = start;
        kafka.stop = stop;
        kafka.idle_timeout = duration_flag(&self.idle_timeout, SECOND, "idle-timeout")?;
        kafka.max_rate = self.max_rate;
        if let Some(drift) = &self.max_watermark_drift {
            kafka.set_max_watermark_drift(duration_flag(drift, MINUTE, "max-watermark-drift")?);
        }
        Ok(Some(kafka))
    }

    /// How records encode events: JSON, or Avro of a schema file or from a registry (Kafka only).
    fn event_format(&self) -> Result<EventFormat> {
        match self.format.format {
            Format::Json => {
                ensure!(
                    self.avro_schema.is_none() && self.format.schema_registry_url.is_none(),
                    "--avro-schema and --schema-registry-url apply to --format avro"
                );
                Ok(EventFormat::Json)
            }
            Format::Avro => {
                ensure!(
                    self.kafka.kafka_servers.is_some(),
                    "--format avro reads Kafka records (a datum each); files are read as JSON lines"
                );
                let decoder = match (&self.avro_schema, self.format.registry()?) {
                    (Some(path), _) => {
                        let text = std::fs::read_to_string(path).with_context(|| {
                            format!("cannot read --avro-schema {}", path.display())
                        })?;
                        AvroDecoder::with_schema(&text)
                            .map_err(|e| anyhow::anyhow!("--avro-schema {}: {e}", path.display()))?
                    }
                    (None, Some(registry)) => {
                        registry.check_access()?;
                        AvroDecoder::with_registry(registry)
                    }
                    (None, None) => bail!(
                        "--format avro needs --schema-registry-url URL (Confluent wire format) \
                         or --avro-schema FILE (plain datums)"
                    ),
                };
                Ok(EventFormat::Avro(Arc::new(decoder)))
            }
        }
    }
}

impl RulesArgs {
    /// Sets the session rules and the events' validity in `config`.
    fn apply(self, config: &mut PipelineConfig) -> Result<()> {
        config.rules.inactivity_ms = whole_millis(duration_flag(
            &self.inactivity_timeout,
            MINUTE,
            "inactivity-timeout",
        )?);
        config.rules.max_duration_ms = whole_millis(duration_flag(
            &self.max_session_duration,
            HOUR,
            "max-session-duration",
        )?);
        config.boundaries = BoundaryRules {
            end_on: self.end_session_on,
            start_on: self.start_session_on,
        };
        config.allow_rule_change = self.allow_rule_change;
        config.set_allowed_lateness(duration_flag(
            &self.allowed_lateness,
            MINUTE,
            "allowed-lateness",
        )?);
        config.correction_horizon_ms = whole_millis(duration_flag(
            &self.correction_horizon,
            HOUR,
            "correction-horizon",
        )?);
        config.set_max_event_time_jump(duration_flag(
            &self.max_event_time_jump,
            HOUR,
            "max-event-time-jump",
        )?);
        config.max_future_skew_ms = whole_millis(duration_flag(
            &self.max_future_skew,
            HOUR,
            "max-future-skew",
        )?);
        config.max_event_bytes = self.max_event_bytes;
        Ok(())
    }
}

impl ClusterArgs {
    /// The cluster's shape, as timely's flags give it.
    fn into_cluster(self) -> Result<Cluster> {
        Ok(Cluster {
            threads: self.threads,
            processes: self.processes,
            process: self.process,
            hostfile: self.hostfile,
            formation_timeout: duration_flag(&self.cluster_timeout, SECOND, "cluster-timeout")?,
        })
    }
}
