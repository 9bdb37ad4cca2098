//! The `sessionize` command line: its subcommands and flags, read from the command line, the
//! environment and a `--config` file ([`crate::config::flag_sources`]), and turned into the
//! configurations of the library; [`commands`] carries each subcommand out.
//!
//! Every Kafka-using subcommand names its topic `--kafka-topic` (`--topic` is kept as a hidden
//! alias where it was the name before). `-h` is timely's hostfile, as in every timely program, so
//! help is `--help` alone.

pub mod commands;
pub mod kafka;
pub mod run;
pub mod tables;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::config::flag_sources::{self, with_flag_sources};
use crate::config::{parse_duration, parse_timestamp_ms};
use run::RunArgs;
use tables::{InspectArgs, MaintainArgs, ReportArgs};
use workload::{BrokerArgs, DemoArgs, GenerateArgs, ProduceArgs};

/// The whole command line.
#[derive(Parser)]
#[command(
    name = "sessionize",
    version,
    about = "Real-time user sessionization into Apache Iceberg",
    disable_help_flag = true,
    disable_version_flag = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Print the version.
    #[arg(short = 'V', long, action = ArgAction::Version, help_heading = "Operations")]
    version: Option<bool>,
    /// Listed after every subcommand's own flags, so that `--help` comes last.
    #[command(flatten, next_help_heading = "Operations", next_display_order = 1000)]
    pub global: GlobalArgs,
}

/// The flags every subcommand takes.
#[derive(Args)]
pub struct GlobalArgs {
    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    /// How log lines on standard error look: text for people, or json (one object a line, and
    /// no progress bar) for log shippers.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// A TOML file of flags, e.g. `threads = 4` and `catalog-option = ["s3.region=eu-west-1"]`.
    /// Every flag can also be set in the environment as SESSIONIZE_<FLAG>, e.g.
    /// SESSIONIZE_KAFKA_SERVERS; the command line wins over the environment, which wins over the
    /// file, and repeatable flags add up (one value per line in the environment).
    #[arg(long = flag_sources::CONFIG_FLAG, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print help.
    #[arg(long, global = true, action = ArgAction::Help)]
    help: Option<bool>,
}

/// How log lines look.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object a line, for log shippers.
    Json,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Sessionize events from a Kafka topic (or files) into the Iceberg tables, exactly once.
    Run(Box<RunArgs>),
    /// Run an embedded Kafka-protocol broker (librdkafka's mock cluster) until stopped.
    Broker(BrokerArgs),
    /// Where the tables stand: the last commits, every partition's committed offset and
    /// watermark, the checkpoint, row counts, and with --kafka-servers the lag per partition.
    Inspect(InspectArgs),
    /// Write one self-contained HTML file of plots of the tables and the session rule checks.
    Report(ReportArgs),
    /// Compact, expire and remove orphan files of the tables, once (what a running pipeline
    /// does as it goes): for tables of older releases, runs with compaction off, or a schedule.
    Maintain(MaintainArgs),
    /// Produce the clickstream to a Kafka topic, each record keyed by its user.
    Produce(ProduceArgs),
    /// Write a realistic, reproducible clickstream as JSON lines.
    Generate(GenerateArgs),
    /// The whole path in one command: an embedded broker, a producer, the pipeline (bounded) and
    /// the Iceberg tables in ./warehouse; prints a summary.
    Demo(DemoArgs),
}

/// The command line of this process, with flags also from the environment and the `--config`
/// file. Help, the version and malformed command lines end the process, as clap does.
pub fn parse_command_line() -> Result<Cli> {
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
    let (command, args) = with_flag_sources(Cli::command(), args, file, &env)?;
    let matches = command.get_matches_from(args);
    Ok(Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()))
}

const MILLISECOND: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// The duration a flag gives, a bare number counting `bare_unit`s; errors name the `flag`.
fn duration_flag(text: &str, bare_unit: Duration, flag: &str) -> Result<Duration> {
    parse_duration(text, bare_unit).map_err(|e| anyhow!("--{flag}: {e}"))
}

/// The time a flag gives, in epoch milliseconds; errors name the `flag`.
fn timestamp_flag(text: &str, flag: &str) -> Result<i64> {
    parse_timestamp_ms(text).map_err(|e| anyhow!("--{flag}: {e}"))
}

#[cfg(test)]
mod tests;
