//! Shared catalogs for real: the SQL catalog on a PostgreSQL server and Apache Iceberg's own REST
//! catalog server, both started by `scripts/services` (installed by `scripts/services/install.sh`).
//! A file pipeline killed mid-commit and restarted with another number of workers leaves tables
//! equal, row for row, to the reference; pyiceberg reads the REST catalog's tables too.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{
    Expected, HOUR, MIN, Service, read_tables_from, reference, run_command, workload, write_inputs,
};
use sessionize::sink::catalog::CatalogSettings;

/// [`run_command`] into `catalog`.
fn command(warehouse: &Path, inputs: &[PathBuf], catalog: &str, extra: &[&str]) -> Command {
    let mut command = run_command(warehouse, inputs, extra);
    command.args(["--catalog-uri", catalog]);
    command
}

/// A run killed after its third sessions commit, then a restart on one worker more.
fn kill_and_restart(warehouse: &Path, inputs: &[PathBuf], catalog: &str) {
    let killed = command(warehouse, inputs, catalog, &["-w", "2"])
        .env("SESSIONIZE_FAIL_AT", "after-sessions-commit:3")
        .output()
        .unwrap();
    assert!(
        !killed.status.success(),
        "the fail point was never reached: {}",
        String::from_utf8_lossy(&killed.stderr)
    );
    let restarted: Output = command(warehouse, inputs, catalog, &["-w", "3"])
        .output()
        .unwrap();
    assert!(
        restarted.status.success(),
        "{}",
        String::from_utf8_lossy(&restarted.stderr)
    );
}

fn assert_tables(catalog: &str, warehouse: &Path, expected: &Expected) {
    let settings = CatalogSettings {
        uri: Some(catalog.to_string()),
        ..CatalogSettings::default()
    };
    let actual = read_tables_from(&settings, warehouse);
    assert_eq!(actual.sessions.len(), expected.sessions.len());
    assert_eq!(actual.sessions, expected.sessions);
    assert_eq!(actual.quarantined, expected.quarantined);
    assert_eq!(actual.late, expected.late);
}

#[test]
fn a_postgres_catalog_receives_the_reference_tables_through_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let postgres = Service::start("postgres", &dir.path().join("postgres"));
    let partitions = workload(61, 2);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = reference(&partitions, 30 * MIN, 2 * HOUR, 10 * MIN);
    let warehouse = dir.path().join("warehouse");
    kill_and_restart(&warehouse, &inputs, postgres.get("URL"));
    assert_tables(postgres.get("URL"), &warehouse, &expected);
    // The catalog is the server's: no SQLite catalog was made.
    assert!(!warehouse.join("catalog.db").exists());
}

#[test]
fn a_rest_catalog_receives_the_reference_tables_through_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let rest = Service::start("iceberg_rest", &dir.path().join("rest"));
    let partitions = workload(67, 2);
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = reference(&partitions, 30 * MIN, 2 * HOUR, 10 * MIN);
    let warehouse = dir.path().join("warehouse");
    kill_and_restart(&warehouse, &inputs, rest.get("URI"));
    assert_tables(rest.get("URI"), &warehouse, &expected);

    let counted = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "from pyiceberg.catalog.rest import RestCatalog\n\
             catalog = RestCatalog('rest', uri='{}')\n\
             print(len(catalog.load_table('sessions.user_sessions').scan().to_arrow()))",
            rest.get("URI")
        ))
        .output()
        .unwrap();
    assert!(
        counted.status.success(),
        "{}",
        String::from_utf8_lossy(&counted.stderr)
    );
    let rows: usize = String::from_utf8_lossy(&counted.stdout)
        .trim()
        .parse()
        .unwrap();
    assert_eq!(rows, expected.sessions.len());
}

#[test]
fn an_unreachable_catalog_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    std::fs::write(&input, "").unwrap();
    for (catalog, hint) in [
        ("http://127.0.0.1:1/catalog", "--catalog-uri"),
        ("postgres://app:s3cret@127.0.0.1:1/iceberg", "app:***@"),
        ("mysql://db/iceberg", "unknown kind of catalog"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_sessionize"))
            .args(["run", "--input", input.to_str().unwrap(), "--warehouse"])
            .arg(dir.path().join("warehouse"))
            .args(["--catalog-uri", catalog, "--catalog-timeout", "1s"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{catalog}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let error: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(error.len(), 1, "{stderr}");
        assert!(error[0].contains(hint), "{stderr}");
        assert!(!stderr.contains("s3cret"), "{stderr}");
    }
}
