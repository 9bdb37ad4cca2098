//! Avro events from Kafka (embedded broker): records written by an independent encoder (fastavro,
//! `tests/avro_encoder.py`) in the Confluent wire format, their writer schemas registered with a
//! real schema registry (Apicurio Registry, `scripts/services/registry.sh`) that asks for basic
//! authentication; and `sessionize produce --format avro` against its JSON twin.
//! `scripts/test.sh` installs fastavro and the registry.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use common::{
    Service, Sessionize, TOPIC, assert_success, assert_tables_equal, kafka_reference, read_tables,
    send_record, workload, write_inputs,
};
use sessionize::workload::EmbeddedBroker;

/// Sends `records` to `partition` of `topic`, in order: binary records, which
/// [`common::produce`] cannot split into lines.
fn send(servers: &str, topic: &str, partition: i32, records: &[Vec<u8>]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .unwrap();
    for record in records {
        let message = BaseRecord::<[u8], [u8]>::to(topic)
            .payload(record)
            .partition(partition);
        send_record(&producer, message);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Length-prefixed records, as `tests/avro_encoder.py` writes them.
fn read_records(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let mut records = Vec::new();
    let mut rest = &bytes[..];
    while let [a, b, c, d, tail @ ..] = rest {
        let length = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
        records.push(tail[..length].to_vec());
        rest = &tail[length..];
    }
    records
}

/// The registry's user and password: every request must carry them.
const REGISTRY_AUTH: &str = "producer:avro-test-secret";

/// The Confluent-compatible API of a real schema registry (Apicurio Registry, in memory), shared
/// by this file's tests. Its watchdog stops it once the test process is gone.
fn registry_url() -> &'static str {
    static REGISTRY: OnceLock<Service> = OnceLock::new();
    let registry = REGISTRY.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("registry-{}", std::process::id()));
        let (user, password) = REGISTRY_AUTH.split_once(':').unwrap();
        let pid = std::process::id().to_string();
        Service::start_with(
            "registry",
            &dir,
            &["--user", user, "--password", password, "--stop-with", &pid],
            &[],
        )
    });
    registry.get("URL")
}

/// Registers the encoder's schemas and encodes the JSON-line partitions `dir/part-<p>.jsonl`
/// into `dir/part-<p>.records`; returns the ids the registry gave the schemas (`v1`, `v2`,
/// `tagged`).
fn encode_with_registry(dir: &Path, partitions: usize) -> serde_json::Value {
    let output = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/avro_encoder.py"
        ))
        .arg(dir)
        .arg(partitions.to_string())
        .arg(registry_url())
        .arg(REGISTRY_AUTH)
        .output()
        .expect("python3 runs (scripts/test.sh installs fastavro)");
    assert_success(&output, "the Avro encoder");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn wire_format_records_of_another_encoder_match_the_json_reference() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = workload(23, 2);
    write_inputs(dir.path(), &partitions);
    let ids = encode_with_registry(dir.path(), partitions.len());
    let id = |name: &str| ids[name].as_u64().unwrap() as u32;
    assert_ne!(id("v1"), id("v2"), "a new version is a new schema id");

    let broker = EmbeddedBroker::start(None).unwrap();
    broker.create_topic(TOPIC, partitions.len() as u32).unwrap();
    let mut expected = kafka_reference(&partitions);
    for p in 0..partitions.len() {
        let records = read_records(&dir.path().join(format!("part-{p}.records")));
        send(broker.bootstrap_servers(), TOPIC, p as i32, &records);
    }
    // A record of an id the registry does not know, one not in the wire format, and a map whose
    // 11-byte header claims 2^60 entries: each is quarantined, none is fatal.
    let next_offset = read_records(&dir.path().join("part-0.records")).len() as i64;
    let huge_map = [
        2, b'u', 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20,
    ];
    let unknown = id("v1").max(id("v2")).max(id("tagged")) + 1000;
    let hostile = [
        [&[0][..], &unknown.to_be_bytes(), &[2, b'x']].concat(),
        b"{\"uuid\":\"u\"}".to_vec(),
        [&[0][..], &id("tagged").to_be_bytes(), &huge_map].concat(),
    ];
    send(broker.bootstrap_servers(), TOPIC, 0, &hostile);
    for offset in 0..hostile.len() as i64 {
        expected.quarantined.push((0, next_offset + offset));
    }
    expected.quarantined.sort();

    let warehouse = dir.path().join("warehouse");
    Sessionize::run(&warehouse)
        .kafka(broker.bootstrap_servers(), TOPIC)
        .args(["--format", "avro", "--schema-registry-url", registry_url()])
        .args(["--schema-registry-auth", REGISTRY_AUTH])
        .args(["--test-mode", "-w", "2"])
        .success();
    assert_tables_equal(
        &read_tables(&warehouse),
        &expected,
        "Avro in the wire format",
    );
}

/// `sessionize produce` of the same generated events as JSON, as plain Avro datums and as Avro in
/// the wire format with the schema registered, then a bounded run over each topic: the sessions
/// are the same, row for row.
#[test]
fn avro_and_json_copies_of_the_same_events_give_the_same_tables() {
    let dir = tempfile::tempdir().unwrap();
    let broker = EmbeddedBroker::start(None).unwrap();
    let servers = broker.bootstrap_servers();
    let schema = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/clickstream_event.avsc"
    );
    let mut tables = Vec::new();
    let registry = ["--schema-registry-url", registry_url()];
    // (topic, format, flags of the producer, flags of the run)
    for (topic, format, producer_flags, run_flags) in [
        ("json", "json", &[][..], &[][..]),
        ("avro-plain", "avro", &[], &["--avro-schema", schema][..]),
        ("avro-wire", "avro", &registry[..], &registry[..]),
    ] {
        broker.create_topic(topic, 3).unwrap();
        Sessionize::new("produce")
            .args([
                "--kafka-servers",
                servers,
                "--topic",
                topic,
                "--format",
                format,
            ])
            .args([
                "--events",
                "20000",
                "--num-users",
                "300",
                "--rate",
                "0",
                "--seed",
                "9",
            ])
            .args(["--start-time", "2026-11-01T00:00:00Z"])
            .args(producer_flags)
            .env("SESSIONIZE_SCHEMA_REGISTRY_AUTH", REGISTRY_AUTH)
            .success();
        let warehouse = dir.path().join(topic);
        Sessionize::run(&warehouse)
            .kafka(servers, topic)
            .args(["--format", format, "--test-mode"])
            .args(run_flags)
            .env("SESSIONIZE_SCHEMA_REGISTRY_AUTH", REGISTRY_AUTH)
            .success();
        tables.push(read_tables(&warehouse));
    }
    let json = &tables[0];
    assert!(json.sessions.len() > 1000, "{}", json.sessions.len());
    assert!(!json.quarantined.is_empty());
    for avro in &tables[1..] {
        assert_eq!(avro.sessions, json.sessions);
        // Malformed records have no user to key them by, so the producer spreads them over the
        // partitions at random: the counts agree, the offsets need not.
        assert_eq!(avro.quarantined.len(), json.quarantined.len());
        assert_eq!(avro.late.len(), json.late.len());
    }
}

/// A wrong password is one line at start-up, before any record is read and refused.
#[test]
fn a_registry_refusing_our_credentials_stops_the_start_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let broker = EmbeddedBroker::start(None).unwrap();
    broker.create_topic(TOPIC, 1).unwrap();
    let output = Sessionize::run(dir.path())
        .kafka(broker.bootstrap_servers(), TOPIC)
        .args(["--format", "avro", "--schema-registry-url", registry_url()])
        .args(["--schema-registry-auth", "producer:wrong", "--test-mode"])
        .output();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refused our credentials") && stderr.contains("--schema-registry-auth"),
        "{stderr}"
    );
    assert!(!stderr.contains("backtrace"), "{stderr}");
}

#[test]
fn avro_needs_a_schema_source_and_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let output = Sessionize::run(dir.path()).args(args).output();
        assert_eq!(output.status.code(), Some(1));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let no_schema = run(&["--kafka-servers", "127.0.0.1:1", "--format", "avro"]);
    assert!(no_schema.contains("--schema-registry-url"), "{no_schema}");
    let file = run(&[
        "--input",
        "events.avro",
        "--format",
        "avro",
        "--avro-schema",
        "x",
    ]);
    assert!(file.contains("Kafka"), "{file}");
    // A writer schema that contains itself could nest without bound: refused at start, by name.
    let recursive = dir.path().join("node.avsc");
    std::fs::write(
        &recursive,
        r#"{"type":"record","name":"Node","fields":[{"name":"uuid","type":"string"},
            {"name":"next","type":["null","Node"]}]}"#,
    )
    .unwrap();
    let schema = recursive.display().to_string();
    let refused = run(&[
        "--kafka-servers",
        "127.0.0.1:1",
        "--format",
        "avro",
        "--avro-schema",
        &schema,
    ]);
    assert!(
        refused.contains("recursive") && refused.contains("Node"),
        "{refused}"
    );
    assert_eq!(refused.lines().count(), 1, "{refused}");
}
