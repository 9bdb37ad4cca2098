//! `sessionize`: the command line. Subcommands run the pipeline over files, generate a realistic
//! clickstream, or show the whole path at once (`demo`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use sessionize::config::{PipelineConfig, parse_duration};
use sessionize::generate::{GenerateConfig, generate};
use sessionize::run::{Cluster, RunSummary, run};

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
    /// Print help.
    #[arg(long, global = true, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

#[derive(Subcommand)]
enum Command {
    /// Sessionize events from files (or standard input) into the Iceberg tables.
    Run(Box<RunArgs>),
    /// Write a realistic, reproducible clickstream as JSON lines.
    Generate(GenerateArgs),
    /// Generate a clickstream, sessionize it into ./warehouse and print a summary.
    Demo {
        /// Events to generate.
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
struct RunArgs {
    /// Input file of JSON lines; repeat for several partitions; `-` reads standard input.
    #[arg(long = "input", required = true)]
    inputs: Vec<String>,
    /// Warehouse directory: data files and the SQLite catalog (catalog.db).
    #[arg(long, default_value = "warehouse")]
    warehouse: PathBuf,
    #[arg(long, default_value = "sessions")]
    iceberg_database: String,
    /// The sessions table; side tables get the suffixes _quarantine and _late_events.
    #[arg(long, default_value = "user_sessions")]
    iceberg_table: String,
    /// Inactivity that ends a session (a bare number is minutes; or 90s, 30m, 1h30m).
    #[arg(long, default_value = "30")]
    inactivity_timeout: String,
    /// Longest session before a split (a bare number is hours; or 90m, 2h).
    #[arg(long, default_value = "2")]
    max_session_duration: String,
    /// How far behind its partition's newest event an event may be and still count (bare: minutes).
    #[arg(long, default_value = "10")]
    allowed_lateness: String,
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
    /// Watermark granularity of the dataflow's timestamps (bare: milliseconds).
    #[arg(long, default_value = "1000")]
    watermark_tick: String,
    /// Size of the line-aligned chunks inputs are read and parsed in.
    #[arg(long, default_value_t = 1 << 20)]
    chunk_bytes: usize,
    /// Bounded run: stop at the end of the input (files always end; kept for Kafka parity).
    #[arg(long)]
    test_mode: bool,
    /// Also write the one-line JSON summary to this file.
    #[arg(long)]
    summary: Option<PathBuf>,
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
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn execute(command: Command) -> Result<()> {
    match command {
        Command::Run(args) => {
            let (config, cluster, summary_path) = args.into_config()?;
            report(run(config, &cluster)?, summary_path.as_deref())
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
            let input = warehouse.join("demo-input").join("events.jsonl");
            std::fs::create_dir_all(input.parent().expect("a parent"))?;
            let config = GenerateConfig {
                users: (events / 100).max(10),
                events,
                ..GenerateConfig::default()
            };
            let mut out = BufWriter::new(File::create(&input)?);
            let stats = generate(&config, &mut out)?;
            out.flush()?;
            eprintln!(
                "generated {} events into {}: {stats:?}",
                events,
                input.display()
            );
            let pipeline =
                PipelineConfig::new(vec![input.display().to_string()], warehouse.clone());
            let cluster = Cluster {
                threads,
                processes: 1,
                process: 0,
                hostfile: None,
            };
            report(run(pipeline, &cluster)?, None)?;
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

impl RunArgs {
    fn into_config(self) -> Result<(PipelineConfig, Cluster, Option<PathBuf>)> {
        let minutes = Duration::from_secs(60);
        let ms = |text: &str, bare: Duration, flag: &str| -> Result<u64> {
            parse_duration(text, bare)
                .map(|d| d.as_millis() as u64)
                .map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
        };
        let mut config = PipelineConfig::new(self.inputs, self.warehouse);
        config.database = self.iceberg_database;
        config.table = self.iceberg_table;
        config.rules.inactivity_ms = ms(&self.inactivity_timeout, minutes, "inactivity-timeout")?;
        config.rules.max_duration_ms = ms(
            &self.max_session_duration,
            60 * minutes,
            "max-session-duration",
        )?;
        config.allowed_lateness_ms = ms(&self.allowed_lateness, minutes, "allowed-lateness")?;
        config.rules.dedup_window_ms = config.allowed_lateness_ms;
        config.max_future_skew_ms = ms(&self.max_future_skew, 60 * minutes, "max-future-skew")?;
        config.max_event_bytes = self.max_event_bytes;
        config.chunk_bytes = self.chunk_bytes.max(1);
        anyhow::ensure!(self.buckets > 0, "--buckets must be at least 1");
        config.buckets = self.buckets;
        config.commit_interval = Duration::from_millis(ms(
            &self.commit_interval,
            Duration::from_secs(1),
            "commit-interval",
        )?);
        config.watermark_tick_ms = ms(
            &self.watermark_tick,
            Duration::from_millis(1),
            "watermark-tick",
        )?
        .max(1);
        // Files always end, so every file run is bounded; `--test-mode` is accepted for parity
        // with Kafka runs, where it means "stop at the offsets seen at start".
        let _bounded = self.test_mode;
        let cluster = Cluster {
            threads: self.threads,
            processes: self.processes,
            process: self.process,
            hostfile: self.hostfile,
        };
        Ok((config, cluster, self.summary))
    }
}
