//! Shared catalogs for real: the SQL catalog on a PostgreSQL server, Apache Iceberg's own REST
//! catalog server, and AWS Glue as moto's server serves it, all started by `scripts/services`
//! (installed by `scripts/services/install.sh`). A file pipeline killed mid-commit and restarted
//! with another number of workers leaves tables equal, row for row, to the reference; pyiceberg
//! reads the REST catalog's and Glue's tables too.

mod common;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use common::{
    Expected, RestOverS3, Service, Sessionize, assert_success, assert_tables_equal, bucket_keys,
    catalog_at, default_reference, losers_of_concurrent_runs, read_tables_from, s3_options,
    workload, write_inputs,
};
use sessionize::sink::catalog::CatalogSettings;
use sessionize::storage::Location;

/// The two-partition workload of `seed` written to `dir`, and its reference.
fn inputs_and_reference(dir: &Path, seed: u64) -> (Vec<PathBuf>, Expected) {
    let partitions = workload(seed, 2);
    let inputs = write_inputs(dir, &partitions);
    (inputs, default_reference(&partitions))
}

/// A run in small epochs into `catalog`, so that there are many to be killed in.
fn run(warehouse: impl AsRef<OsStr>, catalog: &CatalogSettings) -> Sessionize {
    Sessionize::run(warehouse).small_epochs().catalog(catalog)
}

/// A run killed after its third sessions commit, then a restart on one worker more, which
/// compacts the small files of its commits through the catalog's own commit protocol.
fn kill_and_restart(
    warehouse: impl AsRef<OsStr> + Copy,
    inputs: &[PathBuf],
    catalog: &CatalogSettings,
) {
    run(warehouse, catalog)
        .inputs(inputs)
        .args(["-w", "2"])
        .kill_at("after-sessions-commit:3");
    let summary = run(warehouse, catalog)
        .inputs(inputs)
        .args(["-w", "3"])
        .json();
    assert!(summary["compactions"].as_u64().unwrap() > 0, "{summary}");
}

#[test]
fn a_postgres_catalog_receives_the_reference_tables_through_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let postgres = Service::start("postgres", &dir.path().join("postgres"));
    let (inputs, expected) = inputs_and_reference(dir.path(), 61);
    let warehouse = dir.path().join("warehouse");
    let catalog = catalog_at(postgres.get("URL"), Vec::new());
    kill_and_restart(&warehouse, &inputs, &catalog);
    let actual = read_tables_from(&catalog, &warehouse);
    assert_tables_equal(&actual, &expected, "a PostgreSQL catalog");
    // The catalog is the server's: no SQLite catalog was made.
    assert!(!warehouse.join("catalog.db").exists());
}

#[test]
fn a_rest_catalog_receives_the_reference_tables_through_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let rest = Service::start("iceberg_rest", &dir.path().join("rest"));
    let (inputs, expected) = inputs_and_reference(dir.path(), 67);
    let warehouse = dir.path().join("warehouse");
    let catalog = catalog_at(rest.get("URI"), Vec::new());
    kill_and_restart(&warehouse, &inputs, &catalog);
    let actual = read_tables_from(&catalog, &warehouse);
    assert_tables_equal(&actual, &expected, "a REST catalog");

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
    assert_success(&counted, "pyiceberg's RestCatalog");
    let rows: usize = String::from_utf8_lossy(&counted.stdout)
        .trim()
        .parse()
        .unwrap();
    assert_eq!(rows, expected.sessions.len());
}

/// Iceberg's REST catalog with its warehouse on S3 (moto's server): the pipeline writes data and
/// metadata files to the bucket through the catalog's FileIO settings, survives a kill, and
/// the tables read back through S3 equal the reference.
#[test]
fn a_rest_catalog_over_s3_receives_the_reference_tables_through_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let lake = RestOverS3::start(dir.path());
    let (endpoint, catalog) = (&lake.endpoint, lake.catalog());
    let (inputs, expected) = inputs_and_reference(dir.path(), 71);
    let warehouse = dir.path().join("warehouse");
    kill_and_restart(&warehouse, &inputs, &catalog);
    let actual = read_tables_from(&catalog, &warehouse);
    assert_tables_equal(&actual, &expected, "a REST catalog over S3");
    // The data is in the bucket, not on the local disk.
    let keys = bucket_keys(endpoint);
    assert!(keys.iter().any(|k| k.ends_with(".parquet")), "{keys:?}");
}

/// AWS Glue as moto's server serves it (Glue and S3 on one port), the warehouse in its bucket.
fn glue_on_moto(s3: &Service) -> CatalogSettings {
    let endpoint = s3.get("ENDPOINT");
    let mut options = s3_options(endpoint);
    options.push(("glue.endpoint".into(), endpoint.into()));
    options.push(("glue.region".into(), "us-east-1".into()));
    catalog_at("glue", options)
}

/// pyiceberg's GlueCatalog, reading the sessions table through Glue and S3: its row count.
fn rows_by_pyiceberg_glue(endpoint: &str) -> usize {
    let counted = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "from pyiceberg.catalog.glue import GlueCatalog\n\
             options = {{'glue.endpoint': '{endpoint}', 'glue.region': 'us-east-1',\n\
             \x20   'glue.access-key-id': 'test', 'glue.secret-access-key': 'test',\n\
             \x20   's3.endpoint': '{endpoint}', 's3.access-key-id': 'test',\n\
             \x20   's3.secret-access-key': 'test', 's3.region': 'us-east-1'}}\n\
             catalog = GlueCatalog('glue', **options)\n\
             print(len(catalog.load_table('sessions.user_sessions').scan().to_arrow()))"
        ))
        .output()
        .unwrap();
    assert_success(&counted, "pyiceberg's GlueCatalog");
    String::from_utf8_lossy(&counted.stdout)
        .trim()
        .parse()
        .unwrap()
}

/// AWS Glue (moto's server) with the warehouse on S3: killed mid-commit and restarted, the tables
/// equal the reference; Glue holds them as Java's GlueCatalog does (Iceberg's metadata location
/// in the table's parameters, its columns in Glue's types), and pyiceberg reads them through
/// Glue.
#[test]
fn a_glue_catalog_receives_the_reference_tables_through_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = Service::start("s3", &dir.path().join("s3"));
    let catalog = glue_on_moto(&s3);
    let (inputs, expected) = inputs_and_reference(dir.path(), 73);
    let warehouse = "s3://lake/glue";
    kill_and_restart(warehouse, &inputs, &catalog);
    let actual = read_tables_from(&catalog, warehouse.parse::<Location>().unwrap());
    assert_tables_equal(&actual, &expected, "a Glue catalog");
    assert_eq!(
        rows_by_pyiceberg_glue(s3.get("ENDPOINT")),
        expected.sessions.len()
    );

    let glue = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import boto3, json\n\
             glue = boto3.client('glue', endpoint_url='{}', aws_access_key_id='test',\n\
             \x20   aws_secret_access_key='test', region_name='us-east-1')\n\
             table = glue.get_table(DatabaseName='sessions', Name='user_sessions')['Table']\n\
             print(json.dumps({{'parameters': table['Parameters'],\n\
             \x20   'columns': {{c['Name']: c['Type'] for c in table['StorageDescriptor']['Columns']}}}}))",
            s3.get("ENDPOINT")
        ))
        .output()
        .unwrap();
    assert_success(&glue, "boto3's Glue client");
    let table: serde_json::Value = serde_json::from_slice(&glue.stdout).unwrap();
    assert_eq!(table["parameters"]["table_type"], "ICEBERG");
    let metadata = table["parameters"]["metadata_location"].as_str().unwrap();
    assert!(
        metadata.starts_with("s3://lake/glue/sessions.db/user_sessions/metadata/"),
        "{metadata}"
    );
    assert!(table["parameters"]["previous_metadata_location"].is_string());
    assert_eq!(table["columns"]["session_start_time_ms"], "bigint");
    assert_eq!(table["columns"]["pages_visited"], "array<string>");
}

/// Glue through a kill at every step of the commit protocol, each into tables of their own (a
/// server of its own), restarted with another number of workers: nothing lost, nothing doubled.
#[test]
fn a_kill_at_every_commit_step_into_glue_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, expected) = inputs_and_reference(dir.path(), 83);
    for point in [
        "after-checkpoint-parts:2",
        "after-side-files:2",
        "after-sessions-commit:2",
        "between-side-commits:2",
        "after-cleanup:2",
        // Claimed and not yet in Glue: the restart completes the commit (`sink::glue`).
        "after-glue-claim:1",
        "after-glue-claim:4",
    ] {
        let s3 = Service::start("s3", &dir.path().join(point.replace(':', "-")));
        let catalog = glue_on_moto(&s3);
        let warehouse = "s3://lake/glue";
        run(warehouse, &catalog)
            .inputs(&inputs)
            .args(["-w", "2"])
            .kill_at(point);
        run(warehouse, &catalog)
            .inputs(&inputs)
            .args(["-w", "3"])
            .success();
        let actual = read_tables_from(&catalog, warehouse.parse::<Location>().unwrap());
        assert_tables_equal(&actual, &expected, point);
    }
}

/// Two pipelines started at once on the same Glue tables: one is refused, and whatever their
/// commits' interleaving, a restart finishes and no row is doubled. moto's Glue ignores
/// `VersionId`, so this is the claims' doing (`sink::glue`).
#[test]
fn concurrent_pipelines_on_one_glue_table_never_double_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, expected) = inputs_and_reference(dir.path(), 79);
    let mut conflicts = 0;
    for attempt in 0..3 {
        // A server of its own each time: the tables are new.
        let s3 = Service::start("s3", &dir.path().join(format!("s3-{attempt}")));
        let catalog = glue_on_moto(&s3);
        let warehouse = "s3://lake/glue";
        let children: Vec<Child> = (0..2)
            .map(|_| run(warehouse, &catalog).inputs(&inputs).spawn())
            .collect();
        conflicts += losers_of_concurrent_runs(children);
        run(warehouse, &catalog).inputs(&inputs).success();
        let actual = read_tables_from(&catalog, warehouse.parse::<Location>().unwrap());
        assert_tables_equal(&actual, &expected, &format!("Glue, attempt {attempt}"));
    }
    // Each time, one of the two was refused (3 of 3 when this test was written).
    assert!(conflicts > 0, "the two pipelines never overlapped");
}

/// A catalog that accepts connections and never answers (a listener nobody reads from: the kernel
/// completes the handshakes) is given up once `--catalog-timeout` has passed, with one line.
#[test]
fn a_catalog_that_never_answers_is_given_up_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    std::fs::write(&input, "").unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!("http://{}/catalog", silent.local_addr().unwrap());
    let output = Sessionize::run(dir.path().join("warehouse"))
        .inputs([&input])
        .args(["--catalog-uri", &uri, "--catalog-timeout", "2s"])
        .output();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let error: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(error[0].contains("no answer within"), "{stderr}");
    drop(silent);
}

/// A REST catalog that stops answering mid-run (a proxy in front of it forwards the second commit
/// of the sessions table, then nothing more, either way, on any connection): the run gives up
/// within the catalog timeout and its retries, with one line naming the catalog and the flag; the
/// catalog took that commit without the run knowing, and a restart against the healthy catalog
/// finds it there and commits every session exactly once.
#[test]
fn a_catalog_that_stops_answering_mid_run_is_given_up_and_the_restart_commits_once() {
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let rest = Service::start("iceberg_rest", &dir.path().join("rest"));
    let (inputs, expected) = inputs_and_reference(dir.path(), 73);
    let warehouse = dir.path().join("warehouse");
    let upstream = rest.get("URI").trim_start_matches("http://");
    let commit = b"POST /v1/namespaces/sessions/tables/user_sessions ";
    let hole = BlackHole::start(upstream, commit, 2);
    let proxied = catalog_at(&format!("http://{}", hole.addr), Vec::new());
    let mut child = common::KillOnDrop(
        run(&warehouse, &proxied)
            .inputs(&inputs)
            .args(["--catalog-timeout", "2s"])
            .command()
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut stderr = child.0.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the run still waits on a silent catalog"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = log.join().unwrap();
    let tripped = hole
        .tripped()
        .expect("the run ended before its second commit");
    let took = tripped.elapsed();
    println!("the run gave up {took:?} after the catalog fell silent");
    // Five attempts of two calls (the commit, reading the table back) of 2 s each, the
    // back-off between them (3 s), and a margin.
    assert!(took < Duration::from_secs(35), "{took:?}\n{stderr}");
    assert_eq!(exit.code(), Some(3), "{stderr}");
    let error: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("sessionize: "))
        .collect();
    assert_eq!(error.len(), 1, "{stderr}");
    println!("{}", error[0]);
    let proxy = hole.addr.to_string();
    for part in [proxy.as_str(), "--catalog-timeout", "restart"] {
        assert!(error[0].contains(part), "{part} not in {}", error[0]);
    }

    let healthy = catalog_at(rest.get("URI"), Vec::new());
    run(&warehouse, &healthy)
        .inputs(&inputs)
        .args(["-w", "3"])
        .success();
    let actual = read_tables_from(&healthy, &warehouse);
    assert_tables_equal(&actual, &expected, "after a catalog that fell silent");
}

/// A TCP proxy on loopback that forwards both ways until a client's `nth` request starting with
/// `trigger`: that one still goes through, and from then on nothing more is forwarded on any
/// connection, old or new, which the proxy keeps accepting.
struct BlackHole {
    addr: SocketAddr,
    tripped: Arc<OnceLock<Instant>>,
}

impl BlackHole {
    fn start(upstream: &str, trigger: &'static [u8], nth: usize) -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let tripped: Arc<OnceLock<Instant>> = Arc::default();
        let seen = Arc::new(AtomicUsize::new(0));
        let upstream = upstream.to_string();
        let state = tripped.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let server = TcpStream::connect(&upstream).unwrap();
                let client_in = client.try_clone().unwrap();
                let server_in = server.try_clone().unwrap();
                let (up, seen) = (state.clone(), seen.clone());
                std::thread::spawn(move || {
                    pump(client_in, server, &up, Some((trigger, nth, &seen)))
                });
                let down = state.clone();
                std::thread::spawn(move || pump(server_in, client, &down, None));
            }
        });
        BlackHole { addr, tripped }
    }

    /// When the proxy fell silent.
    fn tripped(&self) -> Option<Instant> {
        self.tripped.get().copied()
    }
}

/// Copies `from` to `to` until either ends, or only reads once `tripped`; `watch` counts the
/// requests that trip it.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    tripped: &OnceLock<Instant>,
    watch: Option<(&[u8], usize, &AtomicUsize)>,
) {
    let mut buffer = vec![0; 64 << 10];
    loop {
        let Ok(n @ 1..) = from.read(&mut buffer) else {
            let _ = to.shutdown(std::net::Shutdown::Write);
            return;
        };
        if tripped.get().is_some() {
            continue;
        }
        let chunk = &buffer[..n];
        if let Some((trigger, nth, seen)) = watch {
            let requests = chunk
                .windows(trigger.len())
                .filter(|w| w == &trigger)
                .count();
            if requests > 0 && seen.fetch_add(requests, SeqCst) + requests >= nth {
                // Silent from now on, before this request can be answered.
                let _ = tripped.set(Instant::now());
            }
        }
        if to.write_all(chunk).is_err() {
            return;
        }
    }
}

#[test]
fn an_unreachable_catalog_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    std::fs::write(&input, "").unwrap();
    for (catalog, hint) in [
        ("http://127.0.0.1:1/catalog", "--catalog-uri"),
        ("postgres://app:s3cret@127.0.0.1:1/iceberg", "app:***@"),
        // Secrets in the query are hidden too, in the error and in whatever the client quotes.
        (
            "postgres://app@127.0.0.1:1/iceberg?sslmode=disable&password=s3cret",
            "password=***",
        ),
        ("mysql://db/iceberg?token=s3cret", "unknown kind of catalog"),
    ] {
        let output = Sessionize::run(dir.path().join("warehouse"))
            .inputs([&input])
            .args(["--catalog-uri", catalog, "--catalog-timeout", "1s"])
            .output();
        assert_eq!(output.status.code(), Some(1), "{catalog}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let error: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(error.len(), 1, "{stderr}");
        assert!(error[0].contains(hint), "{stderr}");
        assert!(!stderr.contains("s3cret"), "{stderr}");
    }
}

/// Checkpoint files on S3 are created once: a second writer of the same name (another run, or a
/// process that lost track of its own) fails with a conditional `PUT` rejected by the store,
/// rather than replace what a snapshot may already name; cleanup removes whole directories.
#[test]
fn files_on_s3_are_written_once() {
    use sessionize::storage::{Location, WriteOnceFiles};
    let dir = tempfile::tempdir().unwrap();
    let s3 = Service::start("s3", &dir.path().join("s3"));
    let location: Location = "s3://lake/checkpoints/t".parse().unwrap();
    let files = WriteOnceFiles::open(&location, &s3_options(s3.get("ENDPOINT"))).unwrap();
    let read = |name: &str| {
        let mut text = String::new();
        files
            .read(name)
            .unwrap()
            .map(|mut file| file.read_to_string(&mut text).unwrap())
            .map(|_| text)
    };
    assert_eq!(read("e1/part.bin"), None);
    assert_eq!(
        files
            .create("e1/part.bin", |w| w.write_all(b"first"))
            .unwrap(),
        5
    );
    let second = files.create("e1/part.bin", |w| w.write_all(b"second"));
    let error = format!("{:#}", second.unwrap_err());
    assert!(
        error.contains("s3://lake/checkpoints/t/e1/part.bin") && error.contains("exists"),
        "{error}"
    );
    assert_eq!(read("e1/part.bin").as_deref(), Some("first"));
    // The same bytes again are a retried request that went through: not an error.
    files
        .create("e1/part.bin", |w| w.write_all(b"first"))
        .unwrap();
    files.create("e2/part.bin", |w| w.write_all(b"x")).unwrap();
    assert_eq!(files.directories("").unwrap(), ["e1", "e2"]);
    files.remove_directory("e1").unwrap();
    assert_eq!(files.directories("").unwrap(), ["e2"]);
    assert_eq!(
        bucket_keys(s3.get("ENDPOINT")),
        ["checkpoints/t/e2/part.bin"]
    );
}

/// A REST catalog whose OAuth2 tokens expire (after two seconds here; after an hour or so in
/// production) keeps receiving commits: the pipeline fetches a new token with its client
/// credentials when the catalog refuses the old one, and its commits go through. Without the
/// credentials the start is one clear error.
#[test]
fn a_rest_catalog_with_expiring_oauth2_tokens_keeps_receiving_commits() {
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let rest = Service::start_with(
        "iceberg_rest",
        &dir.path().join("rest"),
        &[],
        &[
            ("REST_CLIENT_CREDENTIAL", "sessionize:s3cret"),
            ("REST_TOKEN_LIFETIME_SECONDS", "2"),
        ],
    );
    let log = Path::new(rest.get("LOG")).to_path_buf();
    let issued = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with("issued token"))
            .count()
    };
    let warehouse = dir.path().join("warehouse");

    let refused = run(&warehouse, &catalog_at(rest.get("URI"), Vec::new()))
        .inputs(["-"])
        .args(["--catalog-timeout", "1s"])
        .command()
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("401"), "{stderr}");

    let partition = workload(79, 1).remove(0);
    let expected = default_reference(std::slice::from_ref(&partition));
    let (first, rest_of_input) = partition.split_at(partition.len() / 2);
    let credential = ("credential".to_string(), "sessionize:s3cret".to_string());
    let catalog = catalog_at(rest.get("URI"), vec![credential]);
    let mut child = run(&warehouse, &catalog)
        .inputs(["-"])
        .command()
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(first).unwrap();
    stdin.flush().unwrap();
    // Once the first half is committed, the token that commit used is left to expire (the
    // condition under test is time passing); the second half's commits then meet the refusal.
    let metadata = Path::new(rest.get("DIR")).join("warehouse/sessions/user_sessions/metadata");
    let commits = || {
        std::fs::read_dir(&metadata).map_or(0, |entries| {
            let names = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned());
            names.filter(|n| n.ends_with(".metadata.json")).count()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while commits() < 2 {
        assert!(Instant::now() < deadline, "nothing was committed");
        assert!(child.try_wait().unwrap().is_none(), "the run stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
    let tokens_before = issued();
    std::thread::sleep(Duration::from_secs(3));
    stdin.write_all(rest_of_input).unwrap();
    drop(stdin);
    assert_success(&child.wait_with_output().unwrap(), "the run");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("expired token"),
        "the catalog never refused a token"
    );
    assert!(
        issued() > tokens_before,
        "the refused token was not renewed"
    );
    let actual = read_tables_from(&catalog, &warehouse);
    assert_tables_equal(&actual, &expected, "through expiring tokens");
}
