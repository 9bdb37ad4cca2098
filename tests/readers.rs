//! Readers that users have (issue 8): **Spark** (PySpark with Iceberg's `iceberg-spark-runtime`
//! jar), **DuckDB** (1.5.5 with its `iceberg` extension) and **pyiceberg** read the sessions table
//! that a pipeline wrote to S3 (moto's server) through Apache Iceberg's REST catalog server, or
//! through the SQL catalog on PostgreSQL, and get the reference's numbers.
//!
//! The pipeline (two workers, many small commits) writes a generated workload into the catalog
//! started by `scripts/services`; `tests/readers.py` then runs a table
//! validation in each reader: the row count, the number of users, the sessions of each user, and
//! Spark's `describe` of `session_duration_seconds` (count, min, max, mean, sample standard
//! deviation). Spark opens the catalog as a Spark user does (`spark.sql.catalog.X.type=rest` or
//! `jdbc`, with S3FileIO), DuckDB scans the table's metadata file with `iceberg_scan` and also
//! attaches a REST catalog, and pyiceberg uses its `RestCatalog` or `SqlCatalog`. Every number is compared with the same
//! number computed from the brute-force reference: exactly for counts, minimum and maximum,
//! within 1e-6 (relative) for the mean and the standard deviation.
//!
//! Nothing is skipped: without the readers installed (`scripts/services/install.sh`, part
//! `readers`), the test fails and says so.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{
    KillOnDrop, Service, SessionRow, Sessionize, TOPIC, assert_tables_equal, catalog_at,
    default_reference, kafka_reference, kafka_with_topic, produce, read_open_sessions,
    read_tables_from, reader_script, records_of, rest_on_s3, s3_options, workload, write_inputs,
};

/// What a table validation finds: the numbers every reader must agree on.
#[derive(Debug)]
struct Validation {
    rows: u64,
    users: u64,
    per_user: BTreeMap<String, u64>,
    count: u64,
    min: i64,
    max: i64,
    mean: f64,
    stddev: f64,
}

impl Validation {
    /// The numbers of the reference's sessions.
    fn of(sessions: &[SessionRow]) -> Validation {
        assert!(sessions.len() > 1, "the workload makes sessions");
        let mut per_user: BTreeMap<String, u64> = BTreeMap::new();
        for session in sessions {
            *per_user.entry(session.user_id.clone()).or_default() += 1;
        }
        let durations: Vec<i64> = sessions.iter().map(|s| s.duration_s).collect();
        let n = durations.len() as f64;
        let mean = durations.iter().map(|&d| d as f64).sum::<f64>() / n;
        let squares: f64 = durations.iter().map(|&d| (d as f64 - mean).powi(2)).sum();
        Validation {
            rows: sessions.len() as u64,
            users: per_user.len() as u64,
            per_user,
            count: durations.len() as u64,
            min: *durations.iter().min().unwrap(),
            max: *durations.iter().max().unwrap(),
            mean,
            stddev: (squares / (n - 1.0)).sqrt(),
        }
    }

    /// The numbers one reader reported in `tests/readers.py`'s output.
    fn from_json(reader: &str, value: &serde_json::Value) -> Validation {
        let field = |path: &[&str]| {
            path.iter()
                .try_fold(value, |v, key| v.get(key))
                .unwrap_or_else(|| panic!("{reader} reported no {path:?}: {value}"))
        };
        let int = |path: &[&str]| {
            field(path)
                .as_i64()
                .unwrap_or_else(|| panic!("{reader}: {path:?} is not an integer: {value}"))
        };
        let float = |path: &[&str]| {
            field(path)
                .as_f64()
                .unwrap_or_else(|| panic!("{reader}: {path:?} is not a number: {value}"))
        };
        let per_user = field(&["per_user"])
            .as_object()
            .unwrap_or_else(|| panic!("{reader}: per_user is not an object: {value}"))
            .iter()
            .map(|(user, n)| (user.clone(), n.as_u64().unwrap()))
            .collect();
        Validation {
            rows: int(&["rows"]) as u64,
            users: int(&["users"]) as u64,
            per_user,
            count: int(&["duration", "count"]) as u64,
            min: int(&["duration", "min"]),
            max: int(&["duration", "max"]),
            mean: float(&["duration", "mean"]),
            stddev: float(&["duration", "stddev"]),
        }
    }

    /// Fails the test, naming `reader`, where `self` (what it read) differs from `expected`.
    fn assert_matches(&self, reader: &str, expected: &Validation) {
        assert_eq!(self.rows, expected.rows, "{reader}: row count");
        assert_eq!(self.users, expected.users, "{reader}: distinct users");
        assert_eq!(
            self.per_user, expected.per_user,
            "{reader}: sessions per user"
        );
        assert_eq!(self.count, expected.count, "{reader}: describe count");
        assert_eq!(self.min, expected.min, "{reader}: describe min");
        assert_eq!(self.max, expected.max, "{reader}: describe max");
        let close =
            |actual: f64, wanted: f64| (actual - wanted).abs() <= 1e-6 * wanted.abs().max(1.0);
        assert!(
            close(self.mean, expected.mean),
            "{reader}: describe mean {} != {}",
            self.mean,
            expected.mean
        );
        assert!(
            close(self.stddev, expected.stddev),
            "{reader}: describe stddev {} != {}",
            self.stddev,
            expected.stddev
        );
    }
}

/// What `tests/readers.py` finds in the catalog at `uri`, with its files at `s3_endpoint`.
fn read_with_every_reader(uri: &str, s3_endpoint: &str, scratch: &Path) -> serde_json::Value {
    reader_script("readers.py", &[uri.as_ref(), s3_endpoint.as_ref()], scratch)
}

/// The catalogs the readers open, both with the tables' files on S3.
#[derive(Clone, Copy)]
enum Lakehouse {
    /// Iceberg's REST catalog, which puts tables in the bucket.
    RestOverS3,
    /// iceberg's SQL catalog on PostgreSQL, with `--warehouse s3://…`.
    PostgresAndS3,
    /// AWS Glue as moto's server serves it, beside its S3, with `--warehouse s3://…`.
    GlueOnMoto,
}

#[test]
fn spark_duckdb_and_pyiceberg_read_the_reference_numbers_from_a_rest_catalog_over_s3() {
    readers_get_the_reference_numbers(Lakehouse::RestOverS3);
}

#[test]
fn spark_duckdb_and_pyiceberg_read_the_reference_numbers_from_a_postgres_catalog_on_s3() {
    readers_get_the_reference_numbers(Lakehouse::PostgresAndS3);
}

#[test]
fn spark_duckdb_and_pyiceberg_read_the_reference_numbers_from_a_glue_catalog() {
    readers_get_the_reference_numbers(Lakehouse::GlueOnMoto);
}

fn readers_get_the_reference_numbers(lakehouse: Lakehouse) {
    let dir = tempfile::tempdir().unwrap();
    let s3 = Service::start("s3", &dir.path().join("s3"));
    let endpoint = s3.get("ENDPOINT").to_string();
    let mut options = s3_options(&endpoint);
    let (_catalog, uri) = match lakehouse {
        Lakehouse::RestOverS3 => {
            let rest = Service::start_with(
                "iceberg_rest",
                &dir.path().join("rest"),
                &["--warehouse", "s3://lake/warehouse"],
                &rest_on_s3(&endpoint),
            );
            let uri = rest.get("URI").to_string();
            (Some(rest), uri)
        }
        Lakehouse::PostgresAndS3 => {
            let postgres = Service::start("postgres", &dir.path().join("postgres"));
            let url = postgres.get("URL").to_string();
            (Some(postgres), url)
        }
        Lakehouse::GlueOnMoto => {
            options.push(("glue.endpoint".into(), endpoint.clone()));
            (None, "glue".to_string())
        }
    };
    // One partition, so that the late events within the horizon find their sessions committed:
    // the readers read a table whose rows `overwrite` snapshots replaced.
    let partitions = workload(73, 1);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);

    let catalog = catalog_at(&uri, options);
    let warehouse = match lakehouse {
        Lakehouse::GlueOnMoto => "s3://lake/glue",
        _ => "s3://lake/warehouse",
    };
    Sessionize::run(warehouse)
        .inputs(&inputs)
        .small_epochs()
        .catalog(&catalog)
        .args(["-w", "2"])
        .success();
    // The table is the reference, row for row, before any other reader looks at it.
    assert_eq!(
        read_tables_from(&catalog, dir.path().join("reader")).sessions,
        expected.sessions
    );

    let scratch = dir.path().join("readers");
    std::fs::create_dir_all(&scratch).unwrap();
    let read = read_with_every_reader(&uri, &endpoint, &scratch);
    eprintln!("reader versions: {}", read["versions"]);
    let wanted = Validation::of(&expected.sessions);
    let readers: &[&str] = match lakehouse {
        Lakehouse::RestOverS3 => &["spark", "duckdb", "duckdb_iceberg_scan", "pyiceberg"],
        // DuckDB cannot open a SQL catalog, nor Glue on a test server: it scans the table's
        // metadata file.
        Lakehouse::PostgresAndS3 | Lakehouse::GlueOnMoto => {
            &["spark", "duckdb_iceberg_scan", "pyiceberg"]
        }
    };
    for reader in readers {
        let value = read
            .get(reader)
            .unwrap_or_else(|| panic!("tests/readers.py reported nothing for {reader}: {read}"));
        Validation::from_json(reader, value).assert_matches(reader, &wanted);
        // The open-sessions table, emptied by overwrites at the end of the input, reads empty
        // (DuckDB's attached catalog is not asked).
        if *reader != "duckdb" {
            assert_eq!(value["open_rows"], 0, "{reader}: open sessions: {value}");
        }
    }
    let open = read_open_sessions(&catalog, dir.path().join("reader"));
    assert!(
        open.rows.is_empty() && open.snapshots >= 2,
        "{}",
        open.snapshots
    );
}

/// The number of rounds `tests/other_writer.py` has finished, from its signals directory.
fn rounds_finished(signals: &Path) -> u64 {
    std::fs::read_to_string(signals.join("rounds"))
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// `partition` cut into `parts` pieces of whole records.
fn pieces(partition: &[u8], parts: usize) -> Vec<Vec<u8>> {
    let records = records_of(partition);
    records
        .chunks(records.len().div_ceil(parts))
        .map(|piece| {
            let mut bytes = Vec::new();
            for record in piece {
                bytes.extend_from_slice(record);
                bytes.push(b'\n');
            }
            bytes
        })
        .collect()
}

/// Another writer (issue 17): Spark runs Iceberg's maintenance procedures on the sessions table
/// (`rewrite_data_files` of every file, `expire_snapshots` of all but the last two), round after
/// round, through the same PostgreSQL catalog, while a live pipeline reads a real Kafka topic and
/// commits and compacts every few hundred milliseconds; the pipeline is then killed and a bounded
/// run finishes the topic from where the table says it stood. Nothing is lost or doubled, every
/// snapshot left is readable in full, and each side's refused commits are only retried.
#[test]
fn spark_maintenance_while_the_pipeline_commits_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = Service::start("s3", &dir.path().join("s3"));
    let endpoint = s3.get("ENDPOINT").to_string();
    let postgres = Service::start("postgres", &dir.path().join("postgres"));
    let uri = postgres.get("URL").to_string();
    let kafka = kafka_with_topic(dir.path(), 2);
    let servers = kafka.get("BOOTSTRAP").to_string();
    let partitions = workload(41, 2);
    let expected = kafka_reference(&partitions);
    let catalog = catalog_at(&uri, s3_options(&endpoint));
    let warehouse = "s3://lake/warehouse";
    let pipeline = || {
        Sessionize::run(warehouse)
            .kafka(&servers, TOPIC)
            .catalog(&catalog)
            .args(["-w", "2", "--compact-min-files", "2"])
    };

    let signals = dir.path().join("signals");
    let scratch = dir.path().join("spark");
    std::fs::create_dir_all(&signals).unwrap();
    std::fs::create_dir_all(&scratch).unwrap();
    let spark = {
        let args = [uri.clone(), endpoint.clone(), signals.display().to_string()];
        let scratch = scratch.clone();
        std::thread::spawn(move || {
            let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
            reader_script("other_writer.py", &args, &scratch)
        })
    };
    // The topic pauses for minutes between pieces (Spark starts, then finishes rounds) and its
    // events are months old: with the default `--idle-timeout` the idle partitions' watermark
    // would follow the wall clock and every later piece would be late.
    let live = KillOnDrop(
        pipeline()
            .commit_interval("200ms")
            .args(["--idle-commit-interval", "1", "--idle-timeout", "1h"])
            .spawn(),
    );
    // The topic grows piece by piece; after each piece Spark finishes a whole round that began
    // after it, so its commits land among the pipeline's.
    let parts = 4;
    let pieces: Vec<Vec<Vec<u8>>> = partitions.iter().map(|p| pieces(p, parts)).collect();
    for part in 0..parts {
        let round = rounds_finished(&signals);
        let piece: Vec<Vec<u8>> = pieces.iter().map(|p| p[part].clone()).collect();
        produce(&servers, &piece, None);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        while rounds_finished(&signals) < round + 2 {
            assert!(!spark.is_finished(), "tests/other_writer.py stopped early");
            assert!(
                std::time::Instant::now() < deadline,
                "Spark's rounds stalled"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    drop(live); // SIGKILL
    pipeline().arg("--test-mode").success();
    std::fs::write(signals.join("stop"), "").unwrap();
    let report = spark.join().unwrap();
    println!("{}", serde_json::to_string_pretty(&report).unwrap());

    let actual = read_tables_from(&catalog, dir.path().join("reader"));
    assert_tables_equal(&actual, &expected, "after Spark's maintenance");
    // Spark's rewrites took, among commits of ours: our epoch moved on between its rounds.
    assert!(report["rewrites"].as_u64().unwrap() >= 1, "{report}");
    assert!(
        report["expired_data_files"].as_u64().unwrap() >= 1,
        "{report}"
    );
    let epochs: Vec<u64> = report["epochs_seen"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_u64())
        .collect();
    assert!(
        epochs.windows(2).filter(|w| w[1] > w[0]).count() >= 2,
        "{report}"
    );
    let validation = &report["validation"];
    assert_eq!(
        validation["rows"].as_u64().unwrap(),
        expected.sessions.len() as u64
    );
    let per_user: BTreeMap<String, u64> =
        serde_json::from_value(validation["per_user"].clone()).unwrap();
    assert_eq!(per_user, Validation::of(&expected.sessions).per_user);
    assert!(
        !validation["snapshot_rows"].as_object().unwrap().is_empty(),
        "{report}"
    );
}
