//! Kafka → timely → Iceberg, against a real Apache Kafka broker (KRaft, `scripts/services/kafka.sh`:
//! one shared by the tests, each on topics and a consumer group of its own, and one of its own
//! for the test that stops and starts it) and a real SQL catalog and warehouse: exactly-once
//! results through SIGKILLs and restarts with other worker counts, replays from offsets and
//! times, transactional topics, a broker outage, and two pipelines on one table. The embedded
//! broker (librdkafka's mock cluster) is only for `sessionize demo` and `sessionize broker`: one
//! test checks that it still serves a run.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    Actual, Expected, KillOnDrop, Lcg, MIN, Service, Sessionize, TOPIC, assert_tables_equal,
    default_reference, kafka_reference, read_tables, records_of, spawn_cluster, workload,
};

/// A topic, on a broker, that a test reads under a consumer group of its own.
struct Topic {
    servers: String,
    name: String,
    group: String,
}

impl Topic {
    /// Creates the topic `name` with `partitions` partitions on the shared broker.
    fn new(name: &str, partitions: i32) -> Topic {
        Topic::on(common::shared_kafka(), name, partitions, &[])
    }

    /// Creates the topic `name` with `partitions` partitions and the topic settings `configs` on
    /// `kafka`; its consumer group is named after it.
    fn on(kafka: &Service, name: &str, partitions: i32, configs: &[(&str, &str)]) -> Topic {
        let servers = kafka.get("BOOTSTRAP").to_string();
        common::create_topic(&servers, name, partitions, configs);
        Topic {
            servers,
            name: name.to_string(),
            group: format!("sessionize-{name}"),
        }
    }

    /// Produces every partition's records to the partition of the same number (see
    /// [`common::produce`]).
    fn produce(&self, partitions: &[Vec<u8>], timestamp: Option<&dyn Fn(usize, usize) -> i64>) {
        common::produce_to(&self.servers, &self.name, partitions, timestamp);
    }

    /// A live run reading the topic under its consumer group.
    fn run(&self, warehouse: &Path) -> Sessionize {
        Sessionize::run(warehouse)
            .kafka(&self.servers, &self.name)
            .args(["--kafka-group", &self.group])
    }

    /// A run that ends at the end the topic has when it starts (`--test-mode`).
    fn bounded(&self, warehouse: &Path) -> Sessionize {
        self.run(warehouse).arg("--test-mode")
    }
}

/// The topic `name` on the shared broker holding `workload(seed, count)`, each partition in its
/// own, and the reference for it.
fn loaded_topic(name: &str, seed: u64, count: usize) -> (Topic, Vec<Vec<u8>>, Expected) {
    let topic = Topic::new(name, count as i32);
    let partitions = workload(seed, count);
    topic.produce(&partitions, None);
    let expected = kafka_reference(&partitions);
    (topic, partitions, expected)
}

/// The offsets a consumer group has committed, read with an independent client.
fn group_offsets(topic: &Topic, partitions: i32) -> BTreeMap<u32, u64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &topic.servers)
        .set("group.id", &topic.group)
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(&topic.name, partition);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .unwrap();
    committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition() as u32, o as u64)),
            _ => None,
        })
        .collect()
}

fn end_offsets(partitions: &[Vec<u8>]) -> BTreeMap<u32, u64> {
    partitions
        .iter()
        .enumerate()
        .map(|(p, bytes)| (p as u32, records_of(bytes).len() as u64))
        .collect()
}

#[test]
fn a_bounded_run_matches_the_reference_and_records_the_end_offsets() {
    let (topic, partitions, expected) = loaded_topic("bounded-run", 5, 4);
    assert!(!expected.late.is_empty() && !expected.quarantined.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let summary = topic.bounded(&warehouse).args(["-w", "2"]).json();
    let actual = read_tables(&warehouse);
    assert_tables_equal(&actual, &expected, "-w 2");
    assert_eq!(actual.next_offsets(), end_offsets(&partitions));
    assert_eq!(summary["sessions"], expected.sessions.len() as u64);
    // Lag tools see the committed offsets under the consumer group.
    assert_eq!(group_offsets(&topic, 4), end_offsets(&partitions));

    // Running again finds nothing new: the table says where the topic was read up to.
    topic.bounded(&warehouse).args(["-w", "2"]).success();
    assert_tables_equal(&read_tables(&warehouse), &expected, "second run");

    // A fresh table started from the group's committed offsets has nothing left to read.
    let from_group = dir.path().join("from-group");
    topic
        .bounded(&from_group)
        .args(["--start-offsets", "committed"])
        .success();
    let actual = read_tables(&from_group);
    assert!(actual.sessions.is_empty() && actual.quarantined_offsets.is_empty());
    assert_eq!(actual.next_offsets(), end_offsets(&partitions));
}

/// The only test of the embedded broker (librdkafka's mock cluster), which `sessionize demo`
/// runs and `sessionize broker` serves: a small bounded run through the port it serves.
#[test]
fn the_embedded_broker_of_demo_and_broker_still_serves_a_bounded_run() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut command = Sessionize::new("broker")
        .args(["--partitions", "2", "--port", &port])
        .command();
    let mut broker = KillOnDrop(command.stderr(Stdio::null()).spawn().unwrap());
    let mut bootstrap = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(broker.0.stdout.take().unwrap()),
        &mut bootstrap,
    )
    .unwrap();
    let topic = Topic {
        servers: bootstrap.trim().to_string(),
        name: TOPIC.into(),
        group: "sessionize".into(),
    };
    assert_eq!(topic.servers, format!("127.0.0.1:{port}"));
    let partitions = workload(3, 2);
    topic.produce(&partitions, None);
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    topic.bounded(&warehouse).args(["-w", "2"]).success();
    let actual = read_tables(&warehouse);
    assert_tables_equal(&actual, &kafka_reference(&partitions), "embedded broker");
    assert_eq!(actual.next_offsets(), end_offsets(&partitions));
}

#[test]
fn sigkills_at_random_moments_and_other_worker_counts_change_nothing() {
    let topic = Topic::new("sigkills", 4);
    let dir = tempfile::tempdir().unwrap();
    let (_, partitions) = common::generated(dir.path(), 300, 12_000, &[1, 2, 3, 4]);
    topic.produce(&partitions, None);

    let uninterrupted = dir.path().join("uninterrupted");
    topic.bounded(&uninterrupted).args(["-w", "2"]).success();
    let expected = read_tables(&uninterrupted);
    assert_tables_equal(&expected, &kafka_reference(&partitions), "uninterrupted");

    // Slowed down to about 5 s of reading, so that each kill lands mid-stream.
    let killed = dir.path().join("killed");
    let mut rng = Lcg(std::process::id() as u64);
    let mut kills = 0;
    for workers in ["2", "1", "3"] {
        let mut child = topic
            .bounded(&killed)
            .args(["--max-rate", "10000", "-w", workers])
            .spawn();
        std::thread::sleep(Duration::from_millis(200 + rng.below(700)));
        let running = child.try_wait().unwrap().is_none();
        if running {
            kills += 1;
            child.kill().unwrap(); // SIGKILL
        }
        let output = child.wait_with_output().unwrap();
        assert!(
            running || output.status.success(),
            "a restarted pipeline failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert!(kills >= 2, "the kills should interrupt running pipelines");
    topic.bounded(&killed).args(["-w", "2"]).success();
    let actual = read_tables(&killed);
    assert_eq!(actual.sessions, expected.sessions);
    assert_eq!(actual.quarantined_offsets, expected.quarantined_offsets);
    assert_eq!(actual.late_offsets, expected.late_offsets);
    assert_eq!(actual.next_offsets(), end_offsets(&partitions));
}

#[test]
fn replays_from_offsets_and_times_and_runs_bounded_by_time() {
    // Times are found through the broker's time index. The record timestamps (not event
    // times) are months old, one second per offset: the topic keeps them forever, or the
    // broker's retention (7 days, checked 30 s after its start and every 5 min) would not.
    let dir = tempfile::tempdir().unwrap();
    let topic = Topic::on(
        common::shared_kafka(),
        "replays",
        2,
        &[("retention.ms", "-1")],
    );
    let partitions = workload(9, 2);
    let t0 = common::BASE as i64;
    topic.produce(&partitions, Some(&|_, offset| t0 + 1000 * offset as i64));
    let explicit = dir.path().join("explicit");
    topic
        .bounded(&explicit)
        .args(["--start-offsets", "0:40,1:75"])
        .success();
    assert_tables_equal(
        &read_tables(&explicit),
        &reference_after(&partitions, &[40, 75]),
        "--start-offsets",
    );

    // Both partitions' records from T0 + 40 s on: offset 40 onwards.
    let at = dir.path().join("timestamp");
    let time = rfc3339(t0 + 40_000);
    topic
        .bounded(&at)
        .args(["--start-timestamp", &time])
        .success();
    assert_tables_equal(
        &read_tables(&at),
        &reference_after(&partitions, &[40, 40]),
        "--start-timestamp",
    );

    // A run bounded by time: both partitions' records before T0 + 40 s, offsets 0..40.
    let until = dir.path().join("until");
    topic
        .run(&until)
        .args(["--start-offsets", "earliest", "--until-timestamp", &time])
        .success();
    let actual = read_tables(&until);
    assert_tables_equal(
        &actual,
        &reference_between(&partitions, &[0, 0], &[40, 40]),
        "--until-timestamp",
    );
    assert_eq!(actual.next_offsets(), BTreeMap::from([(0, 40), (1, 40)]));
}

/// The reference over each partition's records from offset `skip[partition]` on.
fn reference_after(partitions: &[Vec<u8>], skip: &[usize]) -> Expected {
    reference_between(partitions, skip, &vec![usize::MAX; partitions.len()])
}

/// The reference over each partition's records at offsets `from[p]..until[p]`.
fn reference_between(partitions: &[Vec<u8>], from: &[usize], until: &[usize]) -> Expected {
    let rest: Vec<Vec<u8>> = partitions
        .iter()
        .enumerate()
        .map(|(p, bytes)| {
            let mut rest = Vec::new();
            let records = records_of(bytes);
            for record in &records[from[p]..until[p].min(records.len())] {
                rest.extend_from_slice(record);
                rest.push(b'\n');
            }
            rest
        })
        .collect();
    let mut expected = kafka_reference(&rest);
    for row in &mut expected.quarantined {
        row.1 += from[row.0 as usize] as i64;
    }
    for row in &mut expected.late {
        row.1 += from[row.0 as usize] as i64;
    }
    expected
}

/// `ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ`, computed by hand so the test does not rely on the crate.
fn rfc3339(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rest = ms.rem_euclid(86_400_000);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

/// The broker is stopped mid-read and started again (in the same place, with its data): the run
/// waits it out and the tables are exactly the reference. This test has a broker of its own.
#[test]
fn a_broker_outage_is_waited_out_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let mut kafka = common::start_kafka(&dir.path().join("kafka"));
    let topic = Topic::on(&kafka, "outage", 4, &[]);
    let partitions = workload(13, 4);
    topic.produce(&partitions, None);
    let expected = kafka_reference(&partitions);
    let warehouse = dir.path().join("warehouse");
    let total: u64 = end_offsets(&partitions).values().sum();
    // About 8 s of reading, with the broker stopped and started again once the run has
    // committed part of it.
    let rate = (total / 8).to_string();
    let mut child = topic
        .bounded(&warehouse)
        .args(["--max-rate", &rate, "-w", "2"])
        .spawn();
    let before = poll_tables(&warehouse, "nothing was committed", |actual| {
        actual.next_offsets().values().sum::<u64>() > 0
    });
    let read: u64 = before.next_offsets().values().sum();
    assert!(read < total, "read {read} of {total} before the outage");
    assert!(child.try_wait().unwrap().is_none(), "still reading");
    kafka.restart_after(Duration::from_secs(2));
    finish(child);
    let actual = read_tables(&warehouse);
    assert_tables_equal(&actual, &expected, "after the outage");
    assert_eq!(actual.next_offsets(), end_offsets(&partitions));
}

/// Per partition, more than librdkafka's mock cluster keeps (5 MiB): a real broker, and the same
/// events read from files in the same partitions, give the same sessions.
#[test]
fn a_real_broker_holds_more_than_the_embedded_one_and_agrees_with_files() {
    let dir = tempfile::tempdir().unwrap();
    let topic = Topic::new("large", 2);
    let (inputs, partitions) = common::generated(dir.path(), 2000, 120_000, &[1, 2]);
    assert!(partitions.iter().all(|p| p.len() > 20 << 20));
    topic.produce(&partitions, None);
    let from_kafka = dir.path().join("from-kafka");
    let summary = topic.bounded(&from_kafka).args(["-w", "2"]).json();
    let records: u64 = end_offsets(&partitions).values().sum();
    assert_eq!(summary["events_read"], records);
    let from_files = dir.path().join("from-files");
    Sessionize::run(&from_files)
        .inputs(&inputs)
        .args(["-w", "2"])
        .success();
    let (kafka_tables, file_tables) = (read_tables(&from_kafka), read_tables(&from_files));
    assert_eq!(kafka_tables.sessions.len(), file_tables.sessions.len());
    assert_eq!(kafka_tables.sessions, file_tables.sessions);
    assert_eq!(
        kafka_tables.quarantined.len(),
        file_tables.quarantined.len()
    );
    assert_eq!(kafka_tables.late.len(), file_tables.late.len());
}

/// Waits (at most two minutes) for a run that must succeed.
fn finish(child: Child) -> Output {
    let output = wait_with_timeout(child, Duration::from_secs(120));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn wait_with_timeout(mut child: Child, timeout: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > timeout {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn two_pipelines_on_one_table_stop_with_a_clear_error() {
    let topic = Topic::new("two-pipelines", 2);
    topic.produce(&workload(17, 2), None);
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    // Create the tables first, so that both pipelines start from the same snapshot.
    topic
        .bounded(&warehouse)
        .args(["--start-offsets", "latest"])
        .success();
    let live = || {
        topic
            .run(&warehouse)
            .args(["--start-offsets", "earliest"])
            .spawn()
    };
    let mut pipelines = [live(), live()];
    // Live runs never end by themselves: wait for one to stop, then stop the other.
    let started = Instant::now();
    let loser = loop {
        if let Some(i) = (0..2).find(|&i| pipelines[i].try_wait().unwrap().is_some()) {
            break i;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "neither pipeline stopped"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let [first, second] = pipelines;
    let (loser, mut winner) = if loser == 0 {
        (first, second)
    } else {
        (second, first)
    };
    winner.kill().unwrap();
    winner.wait().unwrap();
    let output = loser.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("another pipeline"), "{stderr}");
}

#[test]
fn idle_partitions_let_sessions_close_on_a_quiet_topic() {
    let (topic, _, expected) = loaded_topic("idle", 21, 2);
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    // A live run (no --test-mode): nothing but idleness can close the last sessions.
    let _pipeline = KillOnDrop(
        topic
            .run(&warehouse)
            .args(["--idle-timeout", "1s", "-w", "2"])
            .spawn(),
    );
    let actual = poll_tables(&warehouse, "the sessions did not close", |actual| {
        actual.sessions.len() >= expected.sessions.len()
    });
    // Closed by the watermark, not by the end of the input: every reason is a real one.
    let strip = |rows: &[common::SessionRow]| -> Vec<common::SessionRow> {
        rows.iter()
            .map(|r| common::SessionRow {
                end_reason: String::new(),
                ..r.clone()
            })
            .collect()
    };
    assert_eq!(strip(&actual.sessions), strip(&expected.sessions));
    assert!(
        actual
            .sessions
            .iter()
            .all(|s| s.end_reason != "end_of_input")
    );
    // Every session is closed and nothing more comes: epochs (every 100 ms) with nothing to write
    // add no snapshots (until --idle-commit-interval, 5 min).
    let snapshots = || read_tables(&warehouse).snapshots;
    let before = snapshots();
    std::thread::sleep(Duration::from_secs(2));
    assert!(snapshots() <= before + 1, "idle epochs made snapshots");
}

#[test]
fn two_processes_read_one_topic_into_the_same_tables() {
    let (topic, partitions, expected) = loaded_topic("two-processes", 23, 4);
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let processes = spawn_cluster(dir.path(), 2, |_| {
        topic.bounded(&warehouse).args(["-w", "2"])
    });
    let outputs: Vec<Output> = processes.into_iter().map(finish).collect();
    let actual = read_tables(&warehouse);
    assert_tables_equal(&actual, &expected, "-n 2 -w 2");
    // Process 0's summary counts every process's records, not only its own partitions'.
    let stdout = String::from_utf8_lossy(&outputs[0].stdout);
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let records: usize = partitions.iter().map(|p| records_of(p).len()).sum();
    assert_eq!(summary["events_read"], records as u64, "{summary}");
    assert_eq!(actual.next_offsets(), end_offsets(&partitions));
}

#[test]
fn a_partition_far_ahead_in_event_time_waits_for_the_others() {
    let topic = Topic::new("far-ahead", 2);
    // Partition 1 runs six hours ahead of partition 0 in event time.
    let mut partitions = workload(29, 2);
    partitions[1] = shift_event_times(&partitions[1], 6 * 60 * MIN);
    topic.produce(&partitions, None);
    let expected = kafka_reference(&partitions);
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    // Read slowly, so that partition 1 has been stamped before it is all read.
    let output = topic
        .bounded(&warehouse)
        .args(["-w", "2", "--max-rate", "2000"])
        .args(["--max-watermark-drift", "10m"])
        .args(["--log-level", "sessionize=debug"])
        .success();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("pausing partitions ahead of the watermark"),
        "{log}"
    );
    assert_tables_equal(&read_tables(&warehouse), &expected, "skewed partitions");
}

/// The records of a partition with every parseable event moved `by` later.
fn shift_event_times(partition: &[u8], by: u64) -> Vec<u8> {
    let mut shifted = Vec::new();
    for record in records_of(partition) {
        let moved = serde_json::from_slice::<serde_json::Value>(record)
            .ok()
            .and_then(|mut event| {
                let time = event.get_mut("event_timestamp")?;
                let ms = match &*time {
                    serde_json::Value::Number(n) => n.as_u64()?,
                    serde_json::Value::String(s) => s.parse().ok()?,
                    _ => return None,
                };
                *time = serde_json::Value::from(ms + by);
                Some(serde_json::to_vec(&event).unwrap())
            });
        shifted.extend_from_slice(moved.as_deref().unwrap_or(record));
        shifted.push(b'\n');
    }
    shifted
}

#[test]
fn a_bounded_run_over_a_transactional_topic_reads_only_committed_records_and_ends() {
    use rdkafka::ClientConfig;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let dir = tempfile::tempdir().unwrap();
    let topic = Topic::new("transactional", 2);
    let partitions = workload(61, 2);
    let expected = default_reference(&partitions);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &topic.servers)
        .set("transactional.id", "sessionize-test-transactional")
        .create()
        .unwrap();
    let timeout = Duration::from_secs(30);
    producer.init_transactions(timeout).unwrap();
    let send = |partition: usize, record: &[u8]| {
        let message = BaseRecord::<[u8], [u8]>::to(&topic.name)
            .payload(record)
            .partition(partition as i32);
        common::send_record(&producer, message);
    };
    // Hours behind the stream: late, so that they cannot change the sessions if delivered.
    let ghost = common::event("ghost", "aborted", common::BASE, "home", true);
    for (partition, bytes) in partitions.iter().enumerate() {
        let records = records_of(bytes);
        let (first, second) = records.split_at(records.len() / 2);
        producer.begin_transaction().unwrap();
        first.iter().for_each(|r| send(partition, r));
        producer.commit_transaction(timeout).unwrap();
        producer.begin_transaction().unwrap();
        (0..20).for_each(|_| send(partition, ghost.as_bytes()));
        producer.flush(timeout).unwrap();
        producer.abort_transaction(timeout).unwrap();
        producer.begin_transaction().unwrap();
        second.iter().for_each(|r| send(partition, r));
        producer.commit_transaction(timeout).unwrap();
    }
    let warehouse = dir.path().join("warehouse");
    finish(topic.bounded(&warehouse).args(["-w", "2"]).spawn());
    // The commit markers and aborted records take offsets that deliver nothing: the run still
    // reaches its end offsets, with every committed record and none of the aborted ones.
    let actual = read_tables(&warehouse);
    assert_eq!(actual.sessions, expected.sessions);
    assert_eq!(actual.quarantined.len(), expected.quarantined.len());
    assert_eq!(actual.late.len(), expected.late.len());
}

/// Reads the tables until `done` holds of them, for at most a minute.
fn poll_tables(warehouse: &Path, what: &str, done: impl Fn(&Actual) -> bool) -> Actual {
    let started = Instant::now();
    loop {
        // Until the pipeline has created the tables, reading them fails.
        if let Ok(actual) = std::panic::catch_unwind(|| read_tables(warehouse))
            && done(&actual)
        {
            return actual;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A two-partition topic `name`: partition 0 holds a workload (`seed`), partition 1 no record.
/// Returns it with the number of records in partition 0.
fn topic_with_a_silent_partition(name: &str, seed: u64) -> (Topic, u64) {
    let topic = Topic::new(name, 2);
    let mut partitions = workload(seed, 1);
    partitions.push(Vec::new());
    topic.produce(&partitions, None);
    let records = records_of(&partitions[0]).len() as u64;
    (topic, records)
}

#[test]
fn a_worker_whose_partitions_are_silent_does_not_hold_back_the_others() {
    // Partition 1 never gets a record; partition 0 has many times the read-ahead.
    let (topic, records) = topic_with_a_silent_partition("silent", 81);
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let _pipeline = KillOnDrop(
        topic
            .run(&warehouse)
            .args(["-w", "2", "--idle-timeout", "1s"])
            .args(["--read-ahead-bytes", "16384", "--chunk-bytes", "4096"])
            .spawn(),
    );
    poll_tables(
        &warehouse,
        "partition 0 was not read to its end",
        |actual| actual.next_offsets().get(&0) == Some(&records),
    );
}

#[test]
fn a_silent_partition_beside_a_backlog_does_not_hold_it_back() {
    // One worker reads both: partition 1 never gets a record; partition 0's records are read
    // slowly enough to last many idle timeouts, so its worker's reads never empty the queue.
    let (topic, records) = topic_with_a_silent_partition("silent-beside-backlog", 87);
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let _pipeline = KillOnDrop(
        topic
            .run(&warehouse)
            .args(["-w", "1", "--max-rate", "200", "--idle-timeout", "1s"])
            .spawn(),
    );
    let actual = poll_tables(&warehouse, "no session closed", |actual| {
        !actual.sessions.is_empty()
    });
    assert!(
        actual.next_offsets().get(&0) < Some(&records),
        "sessions closed only once the backlog was read: {:?} of {records}",
        actual.next_offsets()
    );
}

#[test]
fn a_partition_with_a_frozen_clock_does_not_hold_back_every_session() {
    let topic = Topic::new("frozen-clock", 2);
    let mut partitions = workload(83, 1);
    partitions.push(Vec::new());
    topic.produce(&partitions, None);
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    // Partition 1 keeps sending events whose time never moves, until the test ends.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let frozen = {
        let stop = std::sync::Arc::clone(&stop);
        let (servers, name) = (topic.servers.clone(), topic.name.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let line = common::event("stuck", &format!("s{n}"), common::BASE, "home", true);
                common::produce_to(
                    &servers,
                    &name,
                    &[Vec::new(), format!("{line}\n").into_bytes()],
                    None,
                );
                n += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let _pipeline = KillOnDrop(
        topic
            .run(&warehouse)
            .args(["-w", "2", "--idle-timeout", "2s"])
            .spawn(),
    );
    let expected = default_reference(&partitions[..1]);
    let actual = poll_tables(&warehouse, "no session closed", |actual| {
        actual.sessions.len() >= expected.sessions.len() / 2
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    frozen.join().unwrap();
    // Sessions closed by the watermark (not by the end of input) are those of the reference.
    let key = |s: &common::SessionRow| (s.user_id.clone(), s.start_ms, s.end_ms, s.event_count);
    let expected: Vec<_> = expected.sessions.iter().map(key).collect();
    for session in actual.sessions.iter().filter(|s| s.user_id != "stuck") {
        assert!(expected.contains(&key(session)), "{session:?}");
    }
}

#[test]
fn kafka_options_come_from_the_environment_and_files_without_showing_their_values() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("password");
    std::fs::write(&secret, "s3cret-from-file\n").unwrap();
    // No broker: the options are refused before anything is reached.
    let nowhere = Topic {
        servers: "127.0.0.1:1".into(),
        name: TOPIC.into(),
        group: "sessionize".into(),
    };
    let output = nowhere
        .run(&dir.path().join("warehouse"))
        .arg("--kafka-option")
        .arg(format!("no.such.file.key=@{}", secret.display()))
        .env("SESSIONIZE_KAFKA_OPTION_NO_SUCH_ENV_KEY", "s3cret-from-env")
        .output();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    // librdkafka names the first unknown key it is given; neither value is ever shown.
    assert!(stderr.contains("no.such"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

#[test]
fn a_two_process_cluster_killed_mid_run_restarts_as_one_process() {
    let (topic, _, expected) = loaded_topic("cluster-killed", 97, 4);
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let children = spawn_cluster(dir.path(), 2, |process| {
        let command = topic.bounded(&warehouse).args([
            "--max-epoch-records",
            "300",
            "--chunk-bytes",
            "4096",
            "-w",
            "2",
        ]);
        match process {
            0 => command.env("SESSIONIZE_FAIL_AT", "after-cleanup:2"),
            _ => command,
        }
    });
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| wait_with_timeout(c, Duration::from_secs(120)))
        .collect();
    assert!(
        !outputs[0].status.success(),
        "{}",
        String::from_utf8_lossy(&outputs[0].stderr)
    );
    assert_eq!(outputs[1].status.code(), Some(5));
    // Both processes' checkpoint parts are in the one directory the table names.
    topic.bounded(&warehouse).args(["-w", "3"]).success();
    assert_tables_equal(
        &read_tables(&warehouse),
        &expected,
        "restart as one process",
    );
}

#[test]
fn an_explicit_start_completes_the_side_tables_of_an_interrupted_commit() {
    let (topic, _, expected) = loaded_topic("interrupted-commit", 101, 2);
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    // The whole topic in one epoch, killed between the sessions commit and the side tables'.
    topic
        .bounded(&warehouse)
        .commit_interval("1h")
        .kill_at("after-sessions-commit");
    let before = read_tables(&warehouse);
    assert_eq!(before.sessions, expected.sessions);
    assert!(before.quarantined_offsets.is_empty() && before.late_offsets.is_empty());
    // A replay from the end adds nothing, but completes what the killed run committed.
    topic
        .bounded(&warehouse)
        .args(["--start-offsets", "latest"])
        .success();
    assert_tables_equal(
        &read_tables(&warehouse),
        &expected,
        "after an explicit start",
    );
}

/// Deletes `topic` and creates it again, empty, with `partitions` partitions, as an operator
/// might; the broker deletes a topic in the background, so creation is retried until it can be.
fn recreate(topic: &Topic, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &topic.servers)
        .create()
        .unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let deleted =
        futures::executor::block_on(admin.delete_topics(&[topic.name.as_str()], &options)).unwrap();
    assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");
    let new = NewTopic::new(&topic.name, partitions, TopicReplication::Fixed(1));
    let started = Instant::now();
    loop {
        let created = futures::executor::block_on(admin.create_topics([&new], &options)).unwrap();
        if created.iter().all(Result::is_ok) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{created:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The one line a run that refused to start printed, after checking it is the only one of ours.
fn refusal(output: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: ") || l.starts_with("sessionize: "))
        .collect();
    assert_eq!(ours.len(), 1, "{stderr}");
    ours[0].to_string()
}

#[test]
fn a_recreated_topic_stops_the_run_until_an_explicit_start() {
    let (topic, partitions, _) = loaded_topic("recreated", 41, 1);
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    topic.bounded(&warehouse).success();
    let before = read_tables(&warehouse);
    let committed = before.next_offsets()[&0];
    assert_eq!(committed, records_of(&partitions[0]).len() as u64);

    // Recreated with fewer records than were read: every offset the table knows went backwards.
    recreate(&topic, 1);
    let fresh = workload(43, 1);
    let records = records_of(&fresh[0]);
    let kept = records.len() / 3;
    let mut fewer = records[..kept].join(&b'\n');
    fewer.push(b'\n');
    let fresh = vec![fewer];
    topic.produce(&fresh, None);

    for (what, output) in [
        ("bounded", topic.bounded(&warehouse).output()),
        (
            "live",
            wait_with_timeout(topic.run(&warehouse).spawn(), Duration::from_secs(60)),
        ),
    ] {
        let line = refusal(&output, 1);
        let parts = [
            format!("offset {committed}"),
            format!("0..{kept}"),
            "--start-offsets".to_string(),
        ];
        for part in parts {
            assert!(line.contains(&part), "{what}: {part}: {line}");
        }
    }
    assert_eq!(read_tables(&warehouse).next_offsets()[&0], committed);

    // The explicit start reads every new record.
    topic
        .bounded(&warehouse)
        .args(["--start-offsets", "earliest"])
        .success();
    let after = read_tables(&warehouse);
    assert_eq!(after.next_offsets()[&0], kept as u64);
    let expected = kafka_reference(&fresh);
    let events = |actual: &Actual| actual.sessions.iter().map(|s| s.event_count).sum::<i64>();
    let expected_events: i64 = expected.sessions.iter().map(|s| s.event_count).sum();
    assert_eq!(events(&after) - events(&before), expected_events);
    assert_eq!(after.late.len() - before.late.len(), expected.late.len());
    assert_eq!(
        after.quarantined.len() - before.quarantined.len(),
        expected.quarantined.len()
    );
    // That run recorded the new topic: a restart resumes on it.
    topic.bounded(&warehouse).success();
}

#[test]
fn a_partition_paused_for_alignment_is_never_idle() {
    let topic = Topic::new("paused-not-idle", 2);
    // Partition 1 runs three hours ahead of partition 0 in event time, and both are in the past:
    // an idle partition's watermark would follow the wall clock far beyond its records.
    let mut partitions = workload(31, 2);
    partitions[1] = shift_event_times(&partitions[1], 3 * 60 * MIN);
    topic.produce(&partitions, None);
    let expected = kafka_reference(&partitions);
    let ends = end_offsets(&partitions);
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    // Slow enough that partition 1 stays paused for many idle timeouts while partition 0 is read.
    let _pipeline = KillOnDrop(
        topic
            .run(&warehouse)
            .args(["-w", "2", "--max-rate", "300", "--idle-timeout", "1s"])
            .args(["--max-watermark-drift", "10m"])
            .spawn(),
    );
    // The side tables are committed after the sessions table that records the offsets, so the
    // late events of the last epoch may land a moment after the offsets reach the end.
    let what = "the topic was not read to its end with every late event";
    let actual = poll_tables(&warehouse, what, |actual| {
        actual.next_offsets() == ends && actual.late_offsets.len() >= expected.late.len()
    });
    assert_eq!(actual.late_offsets, expected.late, "late events");
}

#[test]
fn a_stopped_process_does_not_take_its_partitions_for_idle() {
    let topic = Topic::new("stopped-not-idle", 2);
    let partitions = workload(37, 2);
    topic.produce(&partitions, None);
    let expected = kafka_reference(&partitions);
    let ends = end_offsets(&partitions);
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    // Slow enough to be stopped in the middle of the topic; both partitions are in the past, so
    // a partition taken for idle would have its watermark follow the wall clock, and every record
    // after it would be late.
    let pipeline = KillOnDrop(
        topic
            .run(&warehouse)
            .args(["-w", "2", "--max-rate", "300", "--idle-timeout", "1s"])
            .spawn(),
    );
    let pid = pipeline.0.id().to_string();
    poll_tables(&warehouse, "nothing was committed", |actual| {
        actual.next_offsets().values().any(|&offset| offset > 0)
    });
    let signal = |name: &str| {
        let sent = std::process::Command::new("kill")
            .args([name, &pid])
            .status();
        assert!(sent.unwrap().success(), "kill {name}");
    };
    // The fault: no thread of the process runs for three idle timeouts, as under a starved CPU or
    // a stalled disk.
    signal("-STOP");
    std::thread::sleep(Duration::from_secs(3));
    signal("-CONT");
    let what = "the topic was not read to its end with every late event";
    let actual = poll_tables(&warehouse, what, |actual| {
        let offsets = actual.next_offsets();
        let at_end = ends.iter().all(|(p, end)| offsets.get(p) >= Some(end));
        at_end && actual.late_offsets.len() >= expected.late.len()
    });
    // Not past the end either: a restart would skip the partitions' next records.
    assert_eq!(actual.next_offsets(), ends, "next offsets");
    assert_eq!(actual.late_offsets, expected.late, "late events");
}
