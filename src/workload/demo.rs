//! `sessionize demo`: the whole path in one process, on nothing but this machine: an embedded
//! broker, the generated clickstream produced to it, a bounded run of the pipeline and the Iceberg
//! tables in a local warehouse.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::{KafkaInput, PipelineConfig};
use crate::dataflow::{Cluster, RunSummary, run};
use crate::source::kafka::{KafkaSettings, StopAt};
use crate::workload::broker::EmbeddedBroker;
use crate::workload::generate::GenerateConfig;
use crate::workload::produce::{ProduceConfig, produce};

/// What the demo does.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Events to produce and sessionize.
    pub events: u64,
    /// A new directory, or one an earlier demo made (it is cleared).
    pub warehouse: PathBuf,
    /// Worker threads of the pipeline.
    pub threads: usize,
}

/// The topic the demo produces to and reads.
const TOPIC: &str = "clickstream-events";

/// Marks a warehouse the demo made, so that a second demo can start afresh without ever deleting
/// a warehouse it did not make.
const DEMO_MARKER: &str = ".sessionize-demo";

/// The embedded broker keeps this many events of the generated stream per partition (5 MiB).
const EVENTS_PER_PARTITION: u64 = 40_000;

/// Produces `config.events` events to an embedded broker and sessionizes them into
/// `config.warehouse`, reporting its steps on standard error; the run's summary.
pub fn demo(config: &DemoConfig) -> Result<Option<RunSummary>> {
    let events = config.events;
    prepare_warehouse(&config.warehouse)?;
    let broker = EmbeddedBroker::start(None)?;
    let partitions = (events / EVENTS_PER_PARTITION).clamp(4, 256) as u32;
    broker.create_topic(TOPIC, partitions)?;
    let stats = produce(&ProduceConfig {
        servers: broker.bootstrap_servers().to_string(),
        avro: None,
        topic: TOPIC.into(),
        options: Vec::new(),
        clickstream: GenerateConfig {
            users: (events / 100).max(10),
            ..GenerateConfig::default()
        },
        rate: 0,
        duration: None,
        events: Some(events),
        sample: 0,
    })?;
    eprintln!(
        "produced {events} events to {TOPIC} on the embedded broker at {}: {stats:?}",
        broker.bootstrap_servers()
    );
    let mut pipeline = PipelineConfig::new(Vec::new(), config.warehouse.clone());
    pipeline.kafka = Some(KafkaInput {
        stop: StopAt::EndAtStart,
        ..KafkaInput::new(KafkaSettings {
            servers: broker.bootstrap_servers().to_string(),
            topic: TOPIC.into(),
            group_id: "sessionize-demo".into(),
            options: Vec::new(),
        })
    });
    // Commits often enough that a demo of a few seconds shows several snapshots.
    pipeline.commit_interval = Duration::from_secs(5);
    let cluster = Cluster {
        threads: config.threads,
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
    Ok(summary)
}

/// How to read the demo's sessions table back with pyiceberg.
pub fn read_back_hint(warehouse: &Path) -> Result<String> {
    let root = warehouse
        .canonicalize()
        .with_context(|| format!("cannot find the demo warehouse {}", warehouse.display()))?;
    Ok(format!(
        "read it back, e.g. with pyiceberg:\n  from pyiceberg.catalog.sql import SqlCatalog\n  \
         c = SqlCatalog('default', uri='sqlite:///{root}/catalog.db', warehouse='file://{root}')\n  \
         print(c.load_table('sessions.user_sessions').scan().to_arrow())",
        root = root.display()
    ))
}

/// Makes `warehouse` an empty directory marked as the demo's, clearing it if an earlier demo made
/// it; refuses a directory the demo did not make.
fn prepare_warehouse(warehouse: &Path) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_clears_only_a_warehouse_it_made() {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = dir.path().join("warehouse");
        prepare_warehouse(&warehouse).unwrap();
        std::fs::write(warehouse.join("catalog.db"), "tables").unwrap();
        prepare_warehouse(&warehouse).unwrap();
        assert!(!warehouse.join("catalog.db").exists());
        assert!(warehouse.join(DEMO_MARKER).exists());

        let foreign = dir.path().join("foreign");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::write(foreign.join("precious"), "data").unwrap();
        let error = prepare_warehouse(&foreign).unwrap_err();
        assert!(
            error.to_string().contains("not made by the demo"),
            "{error}"
        );
        assert!(foreign.join("precious").exists());
    }

    #[test]
    fn the_hint_names_the_warehouse_s_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let hint = read_back_hint(dir.path()).unwrap();
        let root = dir.path().canonicalize().unwrap();
        assert!(hint.contains(&format!("sqlite:///{}/catalog.db", root.display())));
        assert!(read_back_hint(&dir.path().join("missing")).is_err());
    }
}
