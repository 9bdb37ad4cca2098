//! What each subcommand does, given its flags: one function per subcommand, so that the binary
//! only dispatches.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};

use super::run::RunArgs;
use super::tables::{InspectArgs, MaintainArgs, ReportArgs};
use super::workload::{BrokerArgs, DemoArgs, GenerateArgs, ProduceArgs};
use super::{HOUR, duration_flag};
use crate::clock::wall_clock_ms;
use crate::commit::{self, MaintainSettings};
use crate::dataflow::RunSummary;
use crate::maintain::CompactionSettings;
use crate::source::kafka::KafkaSettings;
use crate::workload::{self, EmbeddedBroker, GenerateConfig, GenerateStats};
use crate::{inspect, report, sink};

/// `sessionize run`: runs the pipeline; a bounded run prints its summary line.
pub fn run(args: RunArgs) -> Result<()> {
    let summary_copy = args.operations.summary.clone();
    let (config, cluster) = args.into_config()?;
    print_summary(
        crate::dataflow::run(config, &cluster)?,
        summary_copy.as_deref(),
    )
}

/// `sessionize maintain`: compacts, expires and removes orphans once, and says what it did.
pub fn maintain(args: MaintainArgs) -> Result<()> {
    let config = args.tables.into_config(Vec::new())?;
    anyhow::ensure!(
        args.compact_max_bytes > 0,
        "--compact-max-bytes must be more than 0"
    );
    let settings = MaintainSettings {
        compaction: CompactionSettings {
            min_files: 2,
            max_bytes: args.compact_max_bytes,
        },
        retain_snapshots: args.retain_snapshots,
        orphan_age: duration_flag(&args.orphan_age, HOUR, "orphan-age")?,
    };
    let done = sink::runtime()?.block_on(async {
        let warehouse = config.existing_warehouse().await?;
        commit::maintain(&warehouse, &config.catalog.options, settings).await
    })?;
    let text = if args.json {
        serde_json::to_string_pretty(&done)? + "\n"
    } else {
        let mut text = format!(
            "{:<40} {:>12} {:>11} {:>11} {:>8} {:>8}\n",
            "table", "files before", "files after", "compactions", "expired", "orphans"
        );
        for table in &done {
            text += &format!(
                "{:<40} {:>12} {:>11} {:>11} {:>8} {:>8}\n",
                table.table,
                table.data_files_before,
                table.data_files_after,
                table.compactions,
                table.snapshots_expired,
                table.orphans_removed
            );
        }
        text
    };
    print_out(&text)
}

/// `sessionize inspect`: prints where the tables stand, and the lag with --kafka-servers.
pub fn inspect(args: InspectArgs) -> Result<()> {
    let config = args.tables.into_config(Vec::new())?;
    let mut inspection = sink::runtime()?.block_on(async {
        let warehouse = config.existing_warehouse().await?;
        inspect::inspect(&warehouse, &config, args.commits).await
    })?;
    if let Some(servers) = args.kafka.kafka_servers.clone() {
        inspection.measure_lag(&KafkaSettings {
            servers,
            topic: args.kafka_topic,
            // Never joined nor committed under: lag is read, not published.
            group_id: "sessionize-inspect".into(),
            options: args.kafka.options(),
        })?;
    }
    let text = if args.json {
        serde_json::to_string_pretty(&inspection)? + "\n"
    } else {
        inspection.to_text()
    };
    print_out(&text)
}

/// `sessionize report`: writes the HTML report of the tables.
pub fn report(args: ReportArgs) -> Result<()> {
    let config = args.tables.into_config(Vec::new())?;
    let data = sink::runtime()?.block_on(async {
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

/// `sessionize broker`: serves an embedded broker until the process is stopped.
pub fn broker(args: BrokerArgs) -> Result<()> {
    let broker = EmbeddedBroker::start(args.port)?;
    for topic in &args.topics {
        broker.create_topic(topic, args.partitions)?;
    }
    println!("{}", broker.bootstrap_servers());
    eprintln!(
        "Kafka broker (librdkafka mock cluster) at {}, topics {:?} with {} partitions; other \
         topics are created on first use. Stop with Ctrl-C.",
        broker.bootstrap_servers(),
        args.topics,
        args.partitions
    );
    loop {
        std::thread::park();
    }
}

/// `sessionize produce`: produces the clickstream to Kafka.
pub fn produce(args: ProduceArgs) -> Result<()> {
    let config = args.into_config()?;
    let stats = workload::produce(&config)?;
    eprintln!("produced to {}: {stats:?}", config.topic);
    Ok(())
}

/// `sessionize generate`: writes the clickstream to a file or standard output.
pub fn generate(args: GenerateArgs) -> Result<()> {
    let config = args.config();
    let stats = match &args.out {
        Some(path) => {
            let file =
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            write_clickstream(&config, BufWriter::new(file))?
        }
        None => write_clickstream(&config, BufWriter::new(std::io::stdout().lock()))?,
    };
    eprintln!("{stats:?}");
    Ok(())
}

/// `sessionize demo`: the whole path at once, then how to read the result back.
pub fn demo(args: DemoArgs) -> Result<()> {
    let config = args.into_config();
    let summary = workload::demo(&config)?;
    print_summary(summary, None)?;
    eprintln!("{}", workload::demo::read_back_hint(&config.warehouse)?);
    Ok(())
}

/// Writes the clickstream of `config` to `out`, flushed.
fn write_clickstream(config: &GenerateConfig, mut out: impl Write) -> Result<GenerateStats> {
    let stats = workload::generate(config, &mut out)?;
    out.flush()?;
    Ok(stats)
}

/// Prints a bounded run's summary as one JSON line, also written to `copy_to`.
fn print_summary(summary: Option<RunSummary>, copy_to: Option<&Path>) -> Result<()> {
    let Some(summary) = summary else {
        return Ok(());
    };
    let line = serde_json::to_string(&summary)?;
    println!("{line}");
    if let Some(path) = copy_to {
        std::fs::write(path, format!("{line}\n"))
            .with_context(|| format!("cannot write the summary to {}", path.display()))?;
    }
    Ok(())
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
