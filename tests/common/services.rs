//! The real services the tests start and talk to: Kafka, the catalogs, S3 and headless chromium.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sessionize::sink::catalog::CatalogSettings;

use super::{assert_success, records_of};

/// A real service (Kafka, the Iceberg REST catalog, PostgreSQL, S3) started by
/// `scripts/services`, stopped when the test ends; `settings` holds what its start printed
/// (`BOOTSTRAP`, `URI`, `URL`, `ENDPOINT`).
pub struct Service {
    script: PathBuf,
    dir: PathBuf,
    /// More arguments and environment variables of the script's `start`.
    args: Vec<String>,
    env: Vec<(String, String)>,
    pub settings: HashMap<String, String>,
}

impl Service {
    /// Starts `scripts/services/<name>.sh` with its state in `dir`.
    pub fn start(name: &str, dir: &Path) -> Service {
        Service::start_with(name, dir, &[], &[])
    }

    /// [`Service::start`] with more arguments for the script, and environment variables.
    pub fn start_with(name: &str, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Service {
        let mut service = Service {
            script: Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("scripts/services/{name}.sh")),
            dir: dir.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            settings: HashMap::new(),
        };
        service.settings = service.launch();
        service
    }

    pub fn get(&self, key: &str) -> &str {
        &self.settings[key]
    }

    /// Stops the service, then starts it again with its state, in the same place (port).
    pub fn restart_after(&mut self, away: Duration) {
        let _ = self.stop();
        std::thread::sleep(away);
        let settings = self.launch();
        let place = |settings: &HashMap<String, String>| {
            let mut settings = settings.clone();
            settings.remove("PID");
            settings
        };
        assert_eq!(place(&settings), place(&self.settings));
        self.settings = settings;
    }

    /// Runs the script's `start` and returns what it printed. A start that fails is tried once
    /// more (the free port the script picked may have been taken before it bound it).
    fn launch(&self) -> HashMap<String, String> {
        let start = || {
            self.script_command("start")
                .args(&self.args)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .output()
                .unwrap()
        };
        let mut output = start();
        if !output.status.success() {
            let _ = self.stop();
            output = start();
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        assert!(
            output.status.success(),
            "{} did not start (scripts/services/install.sh installs it):\n{}",
            self.script.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn script_command(&self, command: &str) -> Command {
        let mut script = Command::new("bash");
        script
            .arg(&self.script)
            .arg(command)
            .arg("--dir")
            .arg(&self.dir);
        script
    }

    /// Stops the service, keeping its state.
    pub fn stop(&self) -> std::io::Result<Output> {
        self.script_command("stop").output()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A real Apache Kafka broker (KRaft, one node: `scripts/services/kafka.sh`) with its state in
/// `dir`, stopped when the value is dropped and, failing that, by the script's watchdog once this
/// test process is gone (`--stop-with`).
pub fn start_kafka(dir: &Path) -> Service {
    let pid = std::process::id().to_string();
    Service::start_with("kafka", dir, &["--stop-with", &pid], &[])
}

/// A real Apache Kafka broker of its own in `dir/kafka`, with [`TOPIC`] in `partitions`
/// partitions.
pub fn kafka_with_topic(dir: &Path, partitions: i32) -> Service {
    let kafka = start_kafka(&dir.join("kafka"));
    create_topic(kafka.get("BOOTSTRAP"), TOPIC, partitions, &[]);
    kafka
}

/// One real Kafka broker shared by every test of the test binary, started by the first test that
/// asks for it: each test uses topics and consumer groups of its own. A static is never dropped,
/// so the broker stops itself once the test process is gone (see [`start_kafka`]). Its state is
/// in `CARGO_TARGET_TMPDIR/shared-kafka/<pid>`; that of test processes that are gone is removed.
pub fn shared_kafka() -> &'static Service {
    static KAFKA: std::sync::OnceLock<Service> = std::sync::OnceLock::new();
    KAFKA.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("shared-kafka");
        let pid = std::process::id();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/services/kafka.sh");
        for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let owner = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok());
            let gone = owner.is_none_or(|p| p == pid || !Path::new(&format!("/proc/{p}")).exists());
            if gone {
                // Its watchdog stops it within a second; this makes sure before removing it.
                let _ = Command::new("bash")
                    .arg(&script)
                    .args(["stop", "--dir"])
                    .arg(entry.path())
                    .output();
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        start_kafka(&root.join(pid.to_string()))
    })
}

/// The topic the Kafka tests use.
pub const TOPIC: &str = "clickstream-events";

/// Creates `topic` with `partitions` partitions and the topic settings `configs` on the broker
/// at `servers`.
pub fn create_topic(servers: &str, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .unwrap();
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (key, value) in configs {
        new = new.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let created = futures::executor::block_on(admin.create_topics([&new], &options)).unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
}

/// Produces every partition's records to the partition of the same number, with an independent
/// client, each record stamped with `timestamp(partition, offset)` when given.
pub fn produce(
    servers: &str,
    partitions: &[Vec<u8>],
    timestamp: Option<&dyn Fn(usize, usize) -> i64>,
) {
    produce_to(servers, TOPIC, partitions, timestamp);
}

/// [`produce`] to the topic `topic`.
pub fn produce_to(
    servers: &str,
    topic: &str,
    partitions: &[Vec<u8>],
    timestamp: Option<&dyn Fn(usize, usize) -> i64>,
) {
    // Idempotent: a retried request (a slow broker on a busy machine) would otherwise write its
    // records twice, and every offset after them would differ from the reference's.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for (partition, bytes) in partitions.iter().enumerate() {
        for (offset, record) in records_of(bytes).into_iter().enumerate() {
            let mut message = BaseRecord::<[u8], [u8]>::to(topic)
                .payload(record)
                .partition(partition as i32);
            if let Some(timestamp) = timestamp {
                message = message.timestamp(timestamp(partition, offset));
            }
            send_record(&producer, message);
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Hands `record` to `producer`, waiting while its queue is full (a large workload fills it).
pub fn send_record(producer: &BaseProducer, record: BaseRecord<[u8], [u8]>) {
    let mut message = Some(record);
    while let Some(m) = message.take() {
        if let Err((_, back)) = producer.send(m) {
            message = Some(back);
            producer.poll(Duration::from_millis(10));
        }
    }
}

/// The `s3.*` catalog options of moto's server at `endpoint`.
pub fn s3_options(endpoint: &str) -> Vec<(String, String)> {
    [
        ("s3.endpoint", endpoint),
        ("s3.access-key-id", "test"),
        ("s3.secret-access-key", "test"),
        ("s3.region", "us-east-1"),
        ("s3.path-style-access", "true"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec()
}

/// The environment of Iceberg's REST catalog writing through S3FileIO to `endpoint`.
pub fn rest_on_s3(endpoint: &str) -> Vec<(&'static str, &str)> {
    vec![
        ("CATALOG_IO__IMPL", "org.apache.iceberg.aws.s3.S3FileIO"),
        ("CATALOG_S3_ENDPOINT", endpoint),
        ("CATALOG_S3_PATH__STYLE__ACCESS", "true"),
        ("CATALOG_S3_ACCESS__KEY__ID", "test"),
        ("CATALOG_S3_SECRET__ACCESS__KEY", "test"),
        ("CATALOG_CLIENT_REGION", "us-east-1"),
        ("AWS_REGION", "us-east-1"),
    ]
}

/// Runs `tests/<script>` (a reader in Python: PySpark with iceberg-spark-runtime, DuckDB with its
/// iceberg extension, pyiceberg) with `args` and then the path of the JSON it writes, in `dir`,
/// bounded so that a hung JVM fails the test instead of hanging it; returns that JSON.
pub fn reader_script(script: &str, args: &[&std::ffi::OsStr], dir: &Path) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let out = dir.join(format!("{script}.json"));
    let output = Command::new("timeout")
        .args(["--kill-after=10", "600", "python3"])
        .arg(&path)
        .args(args)
        .arg(&out)
        .current_dir(dir)
        .output()
        .expect("timeout and python3 run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(60).collect();
    assert!(
        output.status.success(),
        "tests/{script} failed ({}); the readers (PySpark with iceberg-spark-runtime, DuckDB \
         1.5.5 with its iceberg extension, pyiceberg) come from scripts/services/install.sh:\n{}",
        output.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap()
}

/// Iceberg's REST catalog keeping its tables in moto's S3 (`s3://lake/warehouse`), both started
/// under `dir`: the lakehouse of the tests of object storage and of other readers. Both stop when
/// it is dropped.
pub struct RestOverS3 {
    pub s3: Service,
    pub rest: Service,
    /// The S3 server's address.
    pub endpoint: String,
    /// The REST catalog's address.
    pub uri: String,
}

impl RestOverS3 {
    pub fn start(dir: &Path) -> RestOverS3 {
        let s3 = Service::start("s3", &dir.join("s3"));
        let endpoint = s3.get("ENDPOINT").to_string();
        let rest = Service::start_with(
            "iceberg_rest",
            &dir.join("rest"),
            &["--warehouse", "s3://lake/warehouse"],
            &rest_on_s3(&endpoint),
        );
        let uri = rest.get("URI").to_string();
        RestOverS3 {
            s3,
            rest,
            endpoint,
            uri,
        }
    }

    /// The catalog's settings for a run and for reading its tables back.
    pub fn catalog(&self) -> CatalogSettings {
        catalog_at(&self.uri, s3_options(&self.endpoint))
    }
}

/// The settings of the catalog service at `uri`, for a run ([`super::Sessionize::catalog`]) and
/// for reading its tables back ([`super::read_tables_from`]) alike.
pub fn catalog_at(uri: &str, options: Vec<(String, String)>) -> CatalogSettings {
    CatalogSettings {
        uri: Some(uri.to_string()),
        options,
        ..CatalogSettings::default()
    }
}

/// Every key in the bucket `lake`, listed by boto3.
pub fn bucket_keys(endpoint: &str) -> Vec<String> {
    let listed = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import boto3\n\
             s3 = boto3.client('s3', endpoint_url='{endpoint}', aws_access_key_id='test',\n\
             \x20   aws_secret_access_key='test', region_name='us-east-1')\n\
             for page in s3.get_paginator('list_objects_v2').paginate(Bucket='lake'):\n\
             \x20   for o in page.get('Contents', []): print(o['Key'])"
        ))
        .output()
        .unwrap();
    assert_success(&listed, "listing the bucket");
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// What Debian's chromium, headless with a profile in `profile`, prints for `url` given `args`
/// (e.g. `--dump-dom`, `--screenshot=FILE`).
pub fn headless_chromium(profile: &Path, url: &str, args: &[&str]) -> String {
    let output = Command::new("chromium")
        .args(["--headless=new", "--no-sandbox", "--disable-gpu"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs (scripts/services/install.sh chromium installs it)");
    assert_success(&output, "chromium");
    String::from_utf8(output.stdout).unwrap()
}

/// Takes a screenshot of `url` with [`headless_chromium`] into `test-artifacts/<name>` of the
/// target's temporary directory, where a person can look at it after the test.
pub fn screenshot(profile: &Path, url: &str, args: &[&str], name: &str) {
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join(name);
    let _ = std::fs::remove_file(&screenshot);
    let to = format!("--screenshot={}", screenshot.display());
    headless_chromium(profile, url, &[args, &[to.as_str()]].concat());
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
    println!("screenshot: {}", screenshot.display());
}

/// A child process that is killed when the test ends, passed or not.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
