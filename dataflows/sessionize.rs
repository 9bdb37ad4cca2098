//! `sessionize`: the command line. Subcommands run the pipeline over a Kafka topic or files, run
//! an embedded Kafka broker, produce or generate a realistic clickstream, or show the whole path
//! at once (`demo`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use sessionize::broker::EmbeddedBroker;
use sessionize::clock::wall_clock_ms;
use sessionize::config::{KafkaInput, PipelineConfig, parse_duration, parse_timestamp_ms};
use sessionize::dataflow::{Cluster, RunSummary, run};
use sessionize::event::EventFormat;
use sessionize::event::avro::AvroDecoder;
use sessionize::event::registry::Registry;
use sessionize::generate::{GenerateConfig, generate};
use sessionize::ops::progress as metrics;
use sessionize::produce::{AvroOutput, ProduceConfig, produce};
use sessionize::rules::{BoundaryRules, FieldEquals};
use sessionize::sink::catalog::CatalogSettings;
use sessionize::source::kafka::{KafkaSettings, StartOffsets, StopAt};
use sessionize::storage::Location;
use sessionize::{failure, flag_sources, inspect, report};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sessionize",
    version,
    about = "Real-time user sessionization into Apache Iceberg"
)]
#[command(disable_help_flag = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    /// How log lines on standard error look: text for people, or json (one object a line, and
    /// no progress bar) for log shippers.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// A TOML file of flags, e.g. `threads = 4` and `catalog-option = ["s3.region=eu-west-1"]`.
    /// Every flag can also be set in the environment as SESSIONIZE_<FLAG>, e.g.
    /// SESSIONIZE_KAFKA_SERVERS; the command line wins over the environment, which wins over the
    /// file, and repeatable flags add up (one value per line in the environment).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print help.
    #[arg(long, global = true, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Sessionize events from a Kafka topic (or files) into the Iceberg tables, exactly once.
    Run(Box<RunArgs>),
    /// Run an embedded Kafka-protocol broker (librdkafka's mock cluster) until stopped.
    Broker {
        /// Partitions of the topics created at start.
        #[arg(long, default_value_t = 4)]
        partitions: u32,
        /// Port to serve on 127.0.0.1 (default: any free port).
        #[arg(long)]
        port: Option<u16>,
        /// Topics to create at start; repeat for several.
        #[arg(long = "topic", default_value = "clickstream-events")]
        topics: Vec<String>,
    },
    /// Where the tables stand: the last commits, every partition's committed offset and
    /// watermark, the checkpoint, row counts, and with --kafka-servers the lag per partition.
    Inspect(InspectArgs),
    /// Write one self-contained HTML file of plots of the tables and the session rule checks.
    Report(ReportArgs),
    /// Produce the clickstream to a Kafka topic, each record keyed by its user.
    Produce(ProduceArgs),
    /// Write a realistic, reproducible clickstream as JSON lines.
    Generate(GenerateArgs),
    /// The whole path in one command: an embedded broker, a producer, the pipeline (bounded) and
    /// the Iceberg tables in ./warehouse; prints a summary.
    Demo {
        /// Events to produce.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[arg(long, default_value = "warehouse")]
        warehouse: PathBuf,
        /// Worker threads.
        #[arg(short = 'w', long = "threads", default_value_t = 2)]
        threads: usize,
    },
}

#[derive(Args)]
struct KafkaArgs {
    /// Kafka bootstrap servers, e.g. localhost:9092.
    #[arg(long)]
    kafka_servers: Option<String>,
    /// Any librdkafka setting, e.g. security.protocol=SASL_SSL; repeat for several. Values are
    /// never logged; `key=@FILE` reads the value from FILE, and SESSIONIZE_KAFKA_OPTION_<KEY>
    /// variables (e.g. SESSIONIZE_KAFKA_OPTION_SASL_PASSWORD) add options from the environment.
    #[arg(long = "kafka-option", value_parser = parse_key_value)]
    kafka_options: Vec<(String, String)>,
}

/// How records encode events.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Json,
    /// Avro datums in Kafka records: in the Confluent wire format with --schema-registry-url,
    /// or plain with --avro-schema.
    Avro,
}

#[derive(Args)]
struct FormatArgs {
    /// How records encode events.
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// A Confluent-compatible schema registry, for Avro in the Confluent wire format (a zero
    /// byte and the schema's id before each datum).
    #[arg(long)]
    schema_registry_url: Option<String>,
    /// USER:PASSWORD for the schema registry (best from SESSIONIZE_SCHEMA_REGISTRY_AUTH).
    #[arg(long)]
    schema_registry_auth: Option<String>,
}

impl FormatArgs {
    fn registry(&self) -> Result<Option<Registry>> {
        self.schema_registry_url
            .as_deref()
            .map(|url| Registry::new(url, self.schema_registry_auth.as_deref()))
            .transpose()
    }
}

/// Where the tables and checkpoints are: shared by `run` and the commands that read what it wrote.
#[derive(Args)]
struct TablesArgs {
    /// The warehouse: a directory, or s3://BUCKET/PREFIX (with --catalog-uri and the s3.*
    /// --catalog-options); new tables' files (for the SQL catalogs), checkpoints, and the default
    /// SQLite catalog (catalog.db).
    #[arg(long, default_value = "warehouse")]
    warehouse: Location,
    /// Where checkpoints go instead of <warehouse>/_sessionize: a directory or s3://BUCKET/PREFIX,
    /// reached by every process of a cluster.
    #[arg(long)]
    checkpoint_location: Option<Location>,
    /// The Iceberg catalog: sqlite:PATH (default: <warehouse>/catalog.db), postgres://USER@HOST/DB
    /// (a SQL catalog on PostgreSQL) or http(s)://HOST/PATH (a REST catalog).
    #[arg(long)]
    catalog_uri: Option<String>,
    /// A catalog property, e.g. credential=ID:SECRET, token=T, header.X-Tenant=a, warehouse=NAME;
    /// repeatable; `key=@FILE` reads the value from FILE; SESSIONIZE_CATALOG_OPTION adds more,
    /// one key=value per line. Values are never logged.
    #[arg(long = "catalog-option", value_parser = parse_key_value)]
    catalog_options: Vec<(String, String)>,
    /// How long an unreachable (or, for SQLite, locked) catalog is waited for at start (bare:
    /// seconds).
    #[arg(long, default_value = "30")]
    catalog_timeout: String,
    #[arg(long, default_value = "sessions")]
    iceberg_database: String,
    /// The sessions table; side tables get the suffixes _quarantine and _late_events.
    #[arg(long, default_value = "user_sessions")]
    iceberg_table: String,
}

impl TablesArgs {
    /// A pipeline configuration with these tables (and the defaults otherwise).
    fn into_config(self, inputs: Vec<String>) -> Result<PipelineConfig> {
        let mut config = PipelineConfig::new(inputs, self.warehouse);
        config.catalog = CatalogSettings {
            uri: self.catalog_uri,
            options: self.catalog_options,
            patience: parse_duration(&self.catalog_timeout, Duration::from_secs(1))
                .map_err(|e| anyhow::anyhow!("--catalog-timeout: {e}"))?,
        };
        config.catalog.kind(&config.warehouse)?;
        config.checkpoints = self.checkpoint_location;
        config.database = identifier(self.iceberg_database, "iceberg-database")?;
        config.table = identifier(self.iceberg_table, "iceberg-table")?;
        Ok(config)
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    format: FormatArgs,
    /// Avro records are plain datums of this writer schema (an .avsc file, such as
    /// schemas/clickstream_event.avsc) rather than in the Confluent wire format.
    #[arg(long, conflicts_with = "schema_registry_url")]
    avro_schema: Option<PathBuf>,
    /// The topic to read.
    #[arg(long, default_value = "clickstream-events")]
    kafka_topic: String,
    /// Consumer group under which committed offsets are published, for lag tools only.
    #[arg(long, default_value = "sessionize")]
    kafka_group: String,
    /// Start here instead of where the table's newest snapshot says: earliest, latest,
    /// committed (the group's offsets), or partition:offset pairs such as 0:1200,1:980.
    #[arg(long, conflicts_with = "start_timestamp")]
    start_offsets: Option<StartOffsets>,
    /// Start at the first records at or after this time (RFC 3339).
    #[arg(long)]
    start_timestamp: Option<String>,
    /// Bounded run: stop at the first records at or after this time (RFC 3339).
    #[arg(long, conflicts_with = "test_mode")]
    until_timestamp: Option<String>,
    /// A partition without new records for this long stops holding the watermark back (bare:
    /// seconds).
    #[arg(long, default_value = "60")]
    idle_timeout: String,
    /// Upper bound on events read per second, over all workers (0: none).
    #[arg(long, default_value_t = 0)]
    max_rate: u64,
    /// Watermark alignment: pause a partition whose watermark runs this far ahead of the slowest
    /// partition's, bounding memory when partitions are skewed in event time, at a cost in
    /// throughput (bare: minutes; default: off).
    #[arg(long)]
    max_watermark_drift: Option<String>,
    /// An epoch ends early after this many records.
    #[arg(long, default_value_t = 50_000_000)]
    max_epoch_records: u64,
    /// Input file of JSON lines instead of Kafka; repeat for several partitions; `-` reads
    /// standard input.
    #[arg(long = "input", conflicts_with = "kafka_servers")]
    inputs: Vec<String>,
    #[command(flatten)]
    tables: TablesArgs,
    /// Inactivity that ends a session (a bare number is minutes; or 90s, 30m, 1h30m).
    #[arg(long, default_value = "30")]
    inactivity_timeout: String,
    /// Longest session before a split (a bare number is hours; or 90m, 2h).
    #[arg(long, default_value = "2")]
    max_session_duration: String,
    /// A business rule: an event whose FIELD equals VALUE ends its session after itself
    /// (repeatable). FIELD: page_name, event_details.event_name or event_details.event_type.
    #[arg(long = "end-session-on", value_name = "FIELD=VALUE")]
    end_session_on: Vec<FieldEquals>,
    /// A business rule: an event whose FIELD equals VALUE starts a new session (repeatable).
    #[arg(long = "start-session-on", value_name = "FIELD=VALUE")]
    start_session_on: Vec<FieldEquals>,
    /// Start even though the table was written under other session rules (timeouts or
    /// boundaries); the new rules apply from where the table stands.
    #[arg(long)]
    allow_rule_change: bool,
    /// How far behind its partition's newest event an event may be and still count (bare: minutes).
    #[arg(long, default_value = "10")]
    allowed_lateness: String,
    /// An event further than this ahead of its partition's newest event time (a device with a bad
    /// clock) moves the watermark only once events of other users confirm the jump; 0 turns the
    /// guard off (bare: hours).
    #[arg(long, default_value = "6")]
    max_event_time_jump: String,
    /// Events further than this ahead of the wall clock are rejected (bare: hours).
    #[arg(long, default_value = "24")]
    max_future_skew: String,
    /// Longest accepted line, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_event_bytes: usize,
    /// Number of bucket(user_id) partitions of the sessions table (also the unit of parallelism).
    #[arg(long, default_value_t = 16)]
    buckets: u32,
    /// Time between commits (bare: seconds).
    #[arg(long, default_value = "30")]
    commit_interval: String,
    /// An epoch with nothing to write is committed only this long after the last commit, so that
    /// an idle pipeline adds few snapshots but its recorded offsets still move (bare: seconds).
    #[arg(long, default_value = "300")]
    idle_commit_interval: String,
    /// Snapshots of ours each table keeps (time travel reaches back this many commits); older
    /// ones are expired from the metadata. 0 keeps every snapshot.
    #[arg(long, default_value_t = 100)]
    retain_snapshots: usize,
    /// Watermark granularity of the dataflow's timestamps (bare: milliseconds).
    #[arg(long, default_value = "1000")]
    watermark_tick: String,
    /// Size of the line-aligned chunks inputs are read and parsed in.
    #[arg(long, default_value_t = 1 << 20)]
    chunk_bytes: usize,
    /// Input bytes each worker may read ahead of the stampers (memory for throughput).
    #[arg(long, default_value_t = 64 << 20)]
    read_ahead_bytes: usize,
    /// Bounded run: read up to the end offsets seen at start, close every session, commit and
    /// exit (files always end).
    #[arg(long)]
    test_mode: bool,
    /// Also write the one-line JSON summary to this file.
    #[arg(long)]
    summary: Option<PathBuf>,
    /// Time between progress log lines, when standard error is not a terminal (on a terminal a
    /// bounded run draws a progress bar instead) (bare: seconds).
    #[arg(long, default_value = "5")]
    progress_interval: String,
    /// Worker threads per process (timely's -w).
    #[arg(short = 'w', long = "threads", default_value_t = 1)]
    threads: usize,
    /// Number of processes (timely's -n).
    #[arg(short = 'n', long = "processes", default_value_t = 1)]
    processes: usize,
    /// Index of this process (timely's -p).
    #[arg(short = 'p', long = "process", default_value_t = 0)]
    process: usize,
    /// File with one host:port line per process (timely's -h).
    #[arg(short = 'h', long = "hostfile")]
    hostfile: Option<PathBuf>,
    /// How long the processes of a cluster may take to connect to each other (bare: seconds).
    #[arg(long, default_value = "120")]
    cluster_timeout: String,
    /// Serve Prometheus metrics (/metrics), health probes (/healthz, /readyz) and a live status
    /// page (/, and /status as JSON) on this address, e.g. 0.0.0.0:9464; each process of a
    /// cluster serves its own workers' figures (default: off).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

#[derive(Args)]
struct InspectArgs {
    #[command(flatten)]
    tables: TablesArgs,
    /// Also show each partition's log end offset and lag, from these Kafka servers.
    #[command(flatten)]
    kafka: KafkaArgs,
    /// The topic whose lag to show (with --kafka-servers).
    #[arg(long, default_value = "clickstream-events")]
    kafka_topic: String,
    /// How many of the newest snapshots to list.
    #[arg(long, default_value_t = 10)]
    commits: usize,
    /// One JSON object on standard output, for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ReportArgs {
    #[command(flatten)]
    tables: TablesArgs,
    /// The HTML file to write.
    #[arg(long, default_value = "sessions.html")]
    out: PathBuf,
}

#[derive(Args)]
struct ProduceArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// With --format avro: records in the Confluent wire format, the schema registered under
    /// `<topic>-value`; without a registry, plain datums of schemas/clickstream_event.avsc.
    #[command(flatten)]
    format: FormatArgs,
    #[arg(long, default_value = "clickstream-events")]
    topic: String,
    #[arg(long, default_value_t = 1_000)]
    num_users: u64,
    /// Events per second (0: as fast as the broker takes them).
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// How long to produce (bare: seconds).
    #[arg(long)]
    duration: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    events: Option<u64>,
    /// Print the first N events sent.
    #[arg(long, default_value_t = 0)]
    sample: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Event time of the first event (RFC 3339, or `now`).
    #[arg(long, default_value = "now")]
    start_time: String,
}

#[derive(Args)]
struct GenerateArgs {
    #[arg(long, default_value_t = 10_000)]
    users: u64,
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output file (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = match parse_command_line() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(failure::EXIT_STARTUP as u8);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Lines go through the progress bar's writer, which lifts the bar while a line is written.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(metrics::LogWriter);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => {
            // Every line of standard error is then a JSON object: no bar between them.
            metrics::disable_bars();
            logs.json().with_ansi(false).init();
        }
    }
    failure::end_process_on_panic();
    match execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match cli.log_format {
                LogFormat::Text => eprintln!("error: {e:#}"),
                LogFormat::Json => tracing::error!("{e:#}"),
            }
            let code = match failure::exit_code(&e) {
                failure::EXIT_CONFLICT => failure::EXIT_CONFLICT,
                _ => failure::EXIT_STARTUP,
            };
            ExitCode::from(code as u8)
        }
    }
}

/// The command line, with flags from the environment and the `--config` file
/// ([`sessionize::flag_sources`]).
fn parse_command_line() -> Result<Cli> {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let env: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .filter(|(key, _)| key.starts_with(flag_sources::ENV_PREFIX))
        .collect();
    let file = match flag_sources::config_file(&args, &env) {
        Some(path) => {
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "--config {}: cannot read it; check the path",
                    path.display()
                )
            })?;
            Some((path.display().to_string(), text))
        }
        None => None,
    };
    let file = file
        .as_ref()
        .map(|(name, text)| (name.as_str(), text.as_str()));
    let (command, args) = flag_sources::with_flag_sources(Cli::command(), args, file, &env)?;
    let matches = command.get_matches_from(args);
    Ok(Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()))
}

fn execute(command: Command) -> Result<()> {
    match command {
        Command::Run(args) => {
            let (config, cluster, summary_path) = args.into_config()?;
            report(run(config, &cluster)?, summary_path.as_deref())
        }
        Command::Inspect(args) => {
            let config = args.tables.into_config(Vec::new())?;
            let mut inspection = runtime()?.block_on(async {
                let warehouse = config.existing_warehouse().await?;
                inspect::inspect(&warehouse, &config, args.commits).await
            })?;
            if let Some(servers) = args.kafka.kafka_servers {
                inspection.measure_lag(&KafkaSettings {
                    servers,
                    topic: args.kafka_topic,
                    // Never joined nor committed under: lag is read, not published.
                    group_id: "sessionize-inspect".into(),
                    options: args
                        .kafka
                        .kafka_options
                        .into_iter()
                        .chain(kafka_options_from_env())
                        .collect(),
                })?;
            }
            let text = if args.json {
                serde_json::to_string_pretty(&inspection)? + "\n"
            } else {
                inspection.to_text()
            };
            print_out(&text)
        }
        Command::Report(args) => {
            let config = args.tables.into_config(Vec::new())?;
            let data = runtime()?.block_on(async {
                let warehouse = config.existing_warehouse().await?;
                report::load(&warehouse).await
            })?;
            let page = report::html(&data, wall_clock_ms() as i64);
            std::fs::write(&args.out, page).with_context(|| {
                format!(
                    "cannot write the report to {}: check the path",
                    args.out.display()
                )
            })?;
            eprintln!(
                "wrote {} ({} sessions, {} late events, {} quarantined lines)",
                args.out.display(),
                data.sessions.len(),
                data.late_arrivals_ms.len(),
                data.quarantined.len()
            );
            Ok(())
        }
        Command::Broker {
            partitions,
            port,
            topics,
        } => {
            let broker = EmbeddedBroker::start(port)?;
            for topic in &topics {
                broker.create_topic(topic, partitions)?;
            }
            println!("{}", broker.bootstrap_servers());
            eprintln!(
                "Kafka broker (librdkafka mock cluster) at {}, topics {topics:?} with {partitions} \
                 partitions; other topics are created on first use. Stop with Ctrl-C.",
                broker.bootstrap_servers()
            );
            loop {
                std::thread::park();
            }
        }
        Command::Produce(args) => {
            let config = args.into_config()?;
            let stats = produce(&config)?;
            eprintln!("produced to {}: {stats:?}", config.topic);
            Ok(())
        }
        Command::Generate(args) => {
            let config = GenerateConfig {
                users: args.users,
                events: args.events,
                seed: args.seed,
                ..GenerateConfig::default()
            };
            let stats = match &args.out {
                Some(path) => {
                    let file = File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    let mut out = BufWriter::new(file);
                    let stats = generate(&config, &mut out)?;
                    out.flush()?;
                    stats
                }
                None => {
                    let mut out = BufWriter::new(std::io::stdout().lock());
                    let stats = generate(&config, &mut out)?;
                    out.flush()?;
                    stats
                }
            };
            eprintln!("{stats:?}");
            Ok(())
        }
        Command::Demo {
            events,
            warehouse,
            threads,
        } => {
            prepare_demo_warehouse(&warehouse)?;
            let broker = EmbeddedBroker::start(None)?;
            let topic = "clickstream-events";
            // The embedded broker keeps 5 MiB per partition: enough partitions that all fit.
            let partitions = (events / 40_000).clamp(4, 256) as u32;
            broker.create_topic(topic, partitions)?;
            let clickstream = GenerateConfig {
                users: (events / 100).max(10),
                ..GenerateConfig::default()
            };
            let stats = produce(&ProduceConfig {
                servers: broker.bootstrap_servers().to_string(),
                avro: None,
                topic: topic.into(),
                options: Vec::new(),
                clickstream,
                rate: 0,
                duration: None,
                events: Some(events),
                sample: 0,
            })?;
            eprintln!(
                "produced {events} events to {topic} on the embedded broker at {}: {stats:?}",
                broker.bootstrap_servers()
            );
            let mut pipeline = PipelineConfig::new(Vec::new(), warehouse.clone());
            pipeline.kafka = Some(KafkaInput {
                settings: KafkaSettings {
                    servers: broker.bootstrap_servers().to_string(),
                    topic: topic.into(),
                    group_id: "sessionize-demo".into(),
                    options: Vec::new(),
                },
                start: None,
                stop: StopAt::EndAtStart,
                idle_timeout: Duration::from_secs(60),
                max_rate: 0,
                max_watermark_drift: None,
            });
            pipeline.commit_interval = Duration::from_secs(5);
            let cluster = Cluster {
                threads,
                processes: 1,
                process: 0,
                hostfile: None,
                formation_timeout: Duration::from_secs(120),
            };
            let summary = run(pipeline, &cluster)?;
            if let Some(summary) = &summary
                && summary.events_read != events
            {
                eprintln!(
                    "warning: read {} of {events} events: the embedded broker dropped the oldest \
                     (it keeps 5 MiB per partition)",
                    summary.events_read
                );
            }
            report(summary, None)?;
            let root = warehouse.canonicalize()?;
            eprintln!(
                "read it back, e.g. with pyiceberg:\n  from pyiceberg.catalog.sql import SqlCatalog\n  \
                 c = SqlCatalog('default', uri='sqlite:///{root}/catalog.db', warehouse='file://{root}')\n  \
                 print(c.load_table('sessions.user_sessions').scan().to_arrow())",
                root = root.display()
            );
            Ok(())
        }
    }
}

/// Writes `text` to standard output; a reader that went away (`| head`) is no error.
fn print_out(text: &str) -> Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

/// A runtime for the commands that read the tables once.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")
}

/// Marks a warehouse the demo made, so that a second demo can start afresh without ever deleting
/// a warehouse it did not make.
const DEMO_MARKER: &str = ".sessionize-demo";

fn prepare_demo_warehouse(warehouse: &std::path::Path) -> Result<()> {
    if warehouse.exists() {
        anyhow::ensure!(
            warehouse.join(DEMO_MARKER).exists(),
            "{} exists and was not made by the demo; pass --warehouse with a new directory",
            warehouse.display()
        );
        std::fs::remove_dir_all(warehouse)
            .with_context(|| format!("cannot clear the demo warehouse {}", warehouse.display()))?;
    }
    std::fs::create_dir_all(warehouse)?;
    std::fs::write(warehouse.join(DEMO_MARKER), "made by `sessionize demo`\n")?;
    Ok(())
}

fn report(summary: Option<RunSummary>, path: Option<&std::path::Path>) -> Result<()> {
    if let Some(summary) = summary {
        let line = serde_json::to_string(&summary)?;
        println!("{line}");
        if let Some(path) = path {
            std::fs::write(path, format!("{line}\n"))
                .with_context(|| format!("cannot write the summary to {}", path.display()))?;
        }
    }
    Ok(())
}

/// Parses `key=value`; a value `@FILE` is read from FILE (its trailing line end dropped), so
/// that secrets need not appear in the command line that `ps` shows.
fn parse_key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{text:?} is not key=value"))?;
    match value.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map(|v| (key.clone(), v.trim_end_matches(['\r', '\n']).to_string()))
            .map_err(|e| format!("cannot read the value of {key} from {path:?}: {e}")),
        None => Ok((key, value)),
    }
}

/// Environment variables that add `--kafka-option`s: `SESSIONIZE_KAFKA_OPTION_SASL_PASSWORD=x`
/// is `--kafka-option sasl.password=x` (the name after the prefix, lower case, `_` as `.`).
const KAFKA_OPTION_ENV: &str = "SESSIONIZE_KAFKA_OPTION_";

fn kafka_options_from_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter_map(|(name, value)| {
            let key = name.strip_prefix(KAFKA_OPTION_ENV)?;
            Some((key.to_ascii_lowercase().replace('_', "."), value))
        })
        .collect()
}

/// A database or table name: it names a directory of the checkpoint store too, so only letters,
/// digits, `_` and `-` (no path separators, no `..`, no `.` that could make two names meet).
fn identifier(name: String, flag: &str) -> Result<String> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !name.starts_with('-');
    anyhow::ensure!(
        valid,
        "--{flag} {name:?} is not a valid name: use up to 128 letters, digits, `_` or `-`"
    );
    Ok(name)
}

impl ProduceArgs {
    fn into_config(self) -> Result<ProduceConfig> {
        let servers = self.kafka.kafka_servers.context(
            "give --kafka-servers HOST:PORT (e.g. the address `sessionize broker` prints)",
        )?;
        let start_ms = if self.start_time == "now" {
            wall_clock_ms()
        } else {
            parse_timestamp_ms(&self.start_time)
                .map_err(|e| anyhow::anyhow!("--start-time: {e}"))? as u64
        };
        anyhow::ensure!(self.num_users > 0, "--num-users must be at least 1");
        let duration = self
            .duration
            .map(|d| parse_duration(&d, Duration::from_secs(1)))
            .transpose()
            .map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
        let avro = match self.format.format {
            Format::Json => None,
            Format::Avro => Some(AvroOutput {
                registry: self.format.registry()?,
            }),
        };
        Ok(ProduceConfig {
            servers,
            avro,
            topic: self.topic,
            options: self.kafka.kafka_options,
            clickstream: GenerateConfig {
                users: self.num_users,
                seed: self.seed,
                start_ms,
                ..GenerateConfig::default()
            },
            rate: self.rate,
            duration,
            events: self.events,
            sample: self.sample,
        })
    }
}

impl RunArgs {
    fn into_config(self) -> Result<(PipelineConfig, Cluster, Option<PathBuf>)> {
        let minutes = Duration::from_secs(60);
        let ms = |text: &str, bare: Duration, flag: &str| -> Result<u64> {
            parse_duration(text, bare)
                .map(|d| d.as_millis() as u64)
                .map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
        };
        let stop = match (&self.until_timestamp, self.test_mode) {
            (Some(until), _) => StopAt::Timestamp(
                parse_timestamp_ms(until).map_err(|e| anyhow::anyhow!("--until-timestamp: {e}"))?,
            ),
            (None, true) => StopAt::EndAtStart,
            (None, false) => StopAt::Never,
        };
        let start = match (&self.start_offsets, &self.start_timestamp) {
            (Some(offsets), _) => Some(offsets.clone()),
            (None, Some(time)) => Some(StartOffsets::Timestamp(
                parse_timestamp_ms(time).map_err(|e| anyhow::anyhow!("--start-timestamp: {e}"))?,
            )),
            (None, None) => None,
        };
        let kafka = match self.kafka.kafka_servers {
            Some(servers) => Some(KafkaInput {
                settings: KafkaSettings {
                    servers,
                    topic: self.kafka_topic,
                    group_id: self.kafka_group,
                    options: self
                        .kafka
                        .kafka_options
                        .into_iter()
                        .chain(kafka_options_from_env())
                        .collect(),
                },
                start,
                stop,
                idle_timeout: parse_duration(&self.idle_timeout, Duration::from_secs(1))
                    .map_err(|e| anyhow::anyhow!("--idle-timeout: {e}"))?,
                max_rate: self.max_rate,
                max_watermark_drift: match self.max_watermark_drift.as_deref() {
                    None | Some("0") => None,
                    Some(drift) => Some(
                        parse_duration(drift, Duration::from_secs(60))
                            .map_err(|e| anyhow::anyhow!("--max-watermark-drift: {e}"))?,
                    ),
                },
            }),
            None if self.inputs.is_empty() => anyhow::bail!(
                "nothing to read: give --kafka-servers HOST:PORT (and --kafka-topic), or --input FILE"
            ),
            None => {
                anyhow::ensure!(
                    start.is_none(),
                    "--start-offsets and --start-timestamp apply to Kafka (--kafka-servers)"
                );
                None
            }
        };
        let format = match self.format.format {
            Format::Json => {
                anyhow::ensure!(
                    self.avro_schema.is_none() && self.format.schema_registry_url.is_none(),
                    "--avro-schema and --schema-registry-url apply to --format avro"
                );
                EventFormat::Json
            }
            Format::Avro => {
                anyhow::ensure!(
                    kafka.is_some(),
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
                    (None, Some(registry)) => AvroDecoder::with_registry(registry),
                    (None, None) => anyhow::bail!(
                        "--format avro needs --schema-registry-url URL (Confluent wire format) \
                         or --avro-schema FILE (plain datums)"
                    ),
                };
                EventFormat::Avro(std::sync::Arc::new(decoder))
            }
        };
        let mut config = self.tables.into_config(self.inputs)?;
        config.format = format;
        config.kafka = kafka;
        config.max_epoch_records = self.max_epoch_records;
        config.rules.inactivity_ms = ms(&self.inactivity_timeout, minutes, "inactivity-timeout")?;
        config.rules.max_duration_ms = ms(
            &self.max_session_duration,
            60 * minutes,
            "max-session-duration",
        )?;
        config.boundaries = BoundaryRules {
            end_on: self.end_session_on,
            start_on: self.start_session_on,
        };
        config.allow_rule_change = self.allow_rule_change;
        config.allowed_lateness_ms = ms(&self.allowed_lateness, minutes, "allowed-lateness")?;
        config.rules.dedup_window_ms = config.allowed_lateness_ms;
        config.max_event_time_jump_ms = match ms(
            &self.max_event_time_jump,
            60 * minutes,
            "max-event-time-jump",
        )? {
            0 => u64::MAX,
            jump => jump,
        };
        config.max_future_skew_ms = ms(&self.max_future_skew, 60 * minutes, "max-future-skew")?;
        config.max_event_bytes = self.max_event_bytes;
        config.chunk_bytes = self.chunk_bytes.max(1);
        config.read_ahead_bytes = self.read_ahead_bytes.max(1);
        anyhow::ensure!(self.buckets > 0, "--buckets must be at least 1");
        config.buckets = self.buckets;
        config.commit_interval = Duration::from_millis(ms(
            &self.commit_interval,
            Duration::from_secs(1),
            "commit-interval",
        )?);
        config.idle_commit_interval = Duration::from_millis(ms(
            &self.idle_commit_interval,
            Duration::from_secs(1),
            "idle-commit-interval",
        )?);
        config.retain_snapshots = self.retain_snapshots;
        config.progress_interval = Duration::from_millis(
            ms(
                &self.progress_interval,
                Duration::from_secs(1),
                "progress-interval",
            )?
            .max(1),
        );
        config.metrics_addr = self.metrics_addr;
        config.watermark_tick_ms = ms(
            &self.watermark_tick,
            Duration::from_millis(1),
            "watermark-tick",
        )?
        .max(1);
        let cluster = Cluster {
            threads: self.threads,
            processes: self.processes,
            process: self.process,
            hostfile: self.hostfile,
            formation_timeout: parse_duration(&self.cluster_timeout, Duration::from_secs(1))
                .map_err(|e| anyhow::anyhow!("--cluster-timeout: {e}"))?,
        };
        Ok((config, cluster, self.summary))
    }
}
