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
    Service, SessionRow, Sessionize, catalog_at, default_reference, read_tables_from,
    reader_script, rest_on_s3, s3_options, workload, write_inputs,
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
}

#[test]
fn spark_duckdb_and_pyiceberg_read_the_reference_numbers_from_a_rest_catalog_over_s3() {
    readers_get_the_reference_numbers(Lakehouse::RestOverS3);
}

#[test]
fn spark_duckdb_and_pyiceberg_read_the_reference_numbers_from_a_postgres_catalog_on_s3() {
    readers_get_the_reference_numbers(Lakehouse::PostgresAndS3);
}

fn readers_get_the_reference_numbers(lakehouse: Lakehouse) {
    let dir = tempfile::tempdir().unwrap();
    let s3 = Service::start("s3", &dir.path().join("s3"));
    let endpoint = s3.get("ENDPOINT").to_string();
    let (_catalog, uri) = match lakehouse {
        Lakehouse::RestOverS3 => {
            let rest = Service::start_with(
                "iceberg_rest",
                &dir.path().join("rest"),
                &["--warehouse", "s3://lake/warehouse"],
                &rest_on_s3(&endpoint),
            );
            let uri = rest.get("URI").to_string();
            (rest, uri)
        }
        Lakehouse::PostgresAndS3 => {
            let postgres = Service::start("postgres", &dir.path().join("postgres"));
            let url = postgres.get("URL").to_string();
            (postgres, url)
        }
    };
    let partitions = workload(73, 2);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);

    let catalog = catalog_at(&uri, s3_options(&endpoint));
    Sessionize::run("s3://lake/warehouse")
        .inputs(&inputs)
        .small_epochs()
        .catalog(&catalog)
        .args(["-w", "2"])
        .success();
    // The table is the reference, row for row, before any other reader looks at it.
    assert_eq!(
        read_tables_from(&catalog, &dir.path().join("reader")).sessions,
        expected.sessions
    );

    let scratch = dir.path().join("readers");
    std::fs::create_dir_all(&scratch).unwrap();
    let read = read_with_every_reader(&uri, &endpoint, &scratch);
    eprintln!("reader versions: {}", read["versions"]);
    let wanted = Validation::of(&expected.sessions);
    let readers: &[&str] = match lakehouse {
        Lakehouse::RestOverS3 => &["spark", "duckdb", "duckdb_iceberg_scan", "pyiceberg"],
        // DuckDB cannot open a SQL catalog: it scans the table's metadata file.
        Lakehouse::PostgresAndS3 => &["spark", "duckdb_iceberg_scan", "pyiceberg"],
    };
    for reader in readers {
        let value = read
            .get(reader)
            .unwrap_or_else(|| panic!("tests/readers.py reported nothing for {reader}: {read}"));
        Validation::from_json(reader, value).assert_matches(reader, &wanted);
    }
}
