//! The command line as a user meets it: names, help, and what flags turn into.

use std::time::Duration;

use super::*;
use crate::config::PipelineConfig;
use crate::source::kafka::StopAt;

fn parse(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("sessionize").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn run_config(args: &[&str]) -> PipelineConfig {
    let Command::Run(run) = parse(&[&["run"], args].concat()).command else {
        panic!("not a run");
    };
    run.into_config().unwrap().0
}

fn help(subcommand: &str) -> String {
    let mut command = Cli::command();
    command.build();
    command
        .find_subcommand_mut(subcommand)
        .unwrap()
        .render_help()
        .to_string()
}

#[test]
fn every_subcommand_names_its_topic_kafka_topic_and_still_takes_topic() {
    for flag in ["--kafka-topic", "--topic"] {
        let Command::Produce(produce) = parse(&["produce", flag, "t"]).command else {
            panic!("not produce");
        };
        assert_eq!(produce.kafka_topic, "t");
        let Command::Broker(broker) = parse(&["broker", flag, "a", flag, "b"]).command else {
            panic!("not broker");
        };
        assert_eq!(broker.topics, ["a", "b"]);
    }
    for subcommand in ["run", "inspect", "produce", "broker"] {
        let text = help(subcommand);
        assert!(text.contains("--kafka-topic"), "{subcommand}:\n{text}");
        assert!(!text.contains("--topic"), "{subcommand}:\n{text}");
    }
}

#[test]
fn run_help_groups_the_flags_under_headings_and_ends_with_help() {
    let text = help("run");
    let headings: Vec<&str> = text
        .lines()
        .filter(|line| line.ends_with(':') && !line.starts_with(' '))
        .collect();
    assert_eq!(
        headings,
        [
            "Source:",
            "Rules:",
            "Tables & catalog:",
            "Checkpoints:",
            "Cluster:",
            "Operations:"
        ],
        "{text}"
    );
    let last_flag = text
        .lines()
        .rfind(|line| line.trim_start().starts_with('-'));
    assert!(
        last_flag.unwrap().trim_start().starts_with("--help"),
        "{text}"
    );
    assert!(text.contains("-h, --hostfile"), "{text}");
}

#[test]
fn run_without_flags_but_an_input_has_the_pipeline_s_defaults() {
    let from_flags = run_config(&["--input", "events.jsonl"]);
    let defaults = PipelineConfig::new(
        vec!["events.jsonl".into()],
        std::path::Path::new("warehouse"),
    );
    assert_eq!(format!("{from_flags:?}"), format!("{defaults:?}"));
}

#[test]
fn run_flags_become_the_settings_they_mean() {
    let config = run_config(&[
        "--kafka-servers",
        "localhost:9092",
        "--allowed-lateness",
        "3",
        "--max-event-time-jump",
        "0",
        "--max-watermark-drift",
        "0",
        "--watermark-tick",
        "0",
        "--test-mode",
    ]);
    assert_eq!(config.allowed_lateness_ms, 180_000);
    assert_eq!(config.rules.dedup_window_ms, 180_000);
    assert_eq!(config.max_event_time_jump_ms, u64::MAX);
    assert_eq!(config.watermark_tick_ms, 1);
    let kafka = config.kafka.unwrap();
    assert_eq!(kafka.max_watermark_drift, None);
    assert_eq!(kafka.stop, StopAt::EndAtStart);
    assert_eq!(kafka.settings.topic, "clickstream-events");

    let config = run_config(&[
        "--kafka-servers",
        "localhost:9092",
        "--max-watermark-drift",
        "10",
        "--inactivity-timeout",
        "90s",
    ]);
    let drift = config.kafka.unwrap().max_watermark_drift;
    assert_eq!(drift, Some(Duration::from_secs(600)));
    assert_eq!(config.rules.inactivity_ms, 90_000);
}

#[test]
fn run_refuses_what_it_cannot_read() {
    let error = |args: &[&str]| {
        let Command::Run(run) = parse(&[&["run"], args].concat()).command else {
            panic!("not a run");
        };
        run.into_config().err().unwrap().to_string()
    };
    assert!(error(&[]).contains("nothing to read"));
    let avro_file = error(&["--input", "f", "--format", "avro"]);
    assert!(avro_file.contains("--format avro"), "{avro_file}");
    let start = error(&["--input", "f", "--start-offsets", "earliest"]);
    assert!(start.contains("--start-offsets"), "{start}");
    let table = error(&["--input", "f", "--iceberg-table", "a.b"]);
    assert!(table.contains("--iceberg-table"), "{table}");
    let lateness = error(&["--input", "f", "--allowed-lateness", "soon"]);
    assert!(lateness.contains("--allowed-lateness"), "{lateness}");
}

#[test]
fn produce_flags_become_the_producer_s_configuration() {
    let Command::Produce(produce) = parse(&[
        "produce",
        "--kafka-servers",
        "localhost:9092",
        "--num-users",
        "50",
        "--duration",
        "1m",
        "--start-time",
        "2026-03-01T00:00:00Z",
    ])
    .command
    else {
        panic!("not produce");
    };
    let config = produce.into_config().unwrap();
    assert_eq!(config.topic, "clickstream-events");
    assert_eq!(config.clickstream.users, 50);
    assert_eq!(config.clickstream.start_ms, 1_772_323_200_000);
    assert_eq!(config.duration, Some(Duration::from_secs(60)));
}
