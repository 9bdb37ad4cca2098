//! A cluster across hosts, for real on one machine: two `sessionize` processes, each in its own
//! network namespace with its own address, joined by a bridge in the root namespace where a real
//! Kafka broker, the catalog (PostgreSQL, or Iceberg's REST catalog) and an S3 server (moto)
//! listen. The processes share only the broker, the catalog and the bucket, which holds the
//! tables' files and the checkpoints. One process is SIGKILLed mid-run, then the
//! cluster restarts with another number of workers and another process dies at a fail point,
//! then a single process of yet another shape finishes the topic: the tables equal the reference
//! row for row.
//!
//! Needs root (network namespaces, veth pairs, a bridge) and `scripts/services/install.sh`.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{
    Actual, Service, Sessionize, TOPIC, assert_tables_equal, bucket_keys, catalog_at,
    kafka_reference, produce, read_tables_from, records_of, rest_on_s3, s3_options, workload,
};
use sessionize::sink::catalog::CatalogSettings;

/// Runs `ip ARGS`; the error is what it printed.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip (iproute2): {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn ip_ok(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("setting up the network failed (the test runs as root): {e}");
    }
}

/// Network namespaces on one private /24, each joined by a veth pair to a bridge in the root
/// namespace that holds the subnet's `.1` (where the services listen); namespace `i` has `.{i+2}`.
/// Names and subnet are unique to this network. Everything, including any process still
/// running in a namespace, goes away on drop, also when the test panics.
struct Network {
    /// `10.213.X`, without the last byte.
    prefix: String,
    bridge: String,
    namespaces: Vec<String>,
    /// The root namespace's end of each veth pair.
    veths: Vec<String>,
}

impl Network {
    fn new(count: usize) -> Network {
        assert!(count <= 26);
        // Tests of this process set up one network at a time, each under its own name, so that
        // they never pick the same free subnet.
        static SETUP: std::sync::Mutex<u32> = std::sync::Mutex::new(0);
        let mut networks = SETUP.lock().unwrap_or_else(|e| e.into_inner());
        *networks += 1;
        let id = format!("{}{}", std::process::id(), *networks);
        let letter = |i: usize| (b'a' + i as u8) as char;
        let network = Network {
            prefix: free_subnet(std::process::id() + *networks),
            bridge: format!("sz{id}br"),
            namespaces: (0..count)
                .map(|i| format!("sz-{id}-{}", letter(i)))
                .collect(),
            veths: (0..count)
                .map(|i| format!("sz{id}{}0", letter(i)))
                .collect(),
        };
        // Leftovers of an earlier run that had this pid and was killed before its clean-up.
        network.tear_down();
        let gateway = format!("{}/24", network.gateway());
        ip_ok(&["link", "add", &network.bridge, "type", "bridge"]);
        ip_ok(&["addr", "add", &gateway, "dev", &network.bridge]);
        ip_ok(&["link", "set", &network.bridge, "up"]);
        for i in 0..count {
            let (ns, host_end) = (network.namespaces[i].clone(), network.veths[i].clone());
            let inner_end = format!("sz{id}{}1", letter(i));
            let address = format!("{}/24", network.address(i));
            ip_ok(&["netns", "add", &ns]);
            ip_ok(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", &inner_end, "netns", &ns,
            ]);
            ip_ok(&["link", "set", &host_end, "master", &network.bridge]);
            ip_ok(&["link", "set", &host_end, "up"]);
            ip_ok(&["-n", &ns, "addr", "add", &address, "dev", &inner_end]);
            ip_ok(&["-n", &ns, "link", "set", &inner_end, "up"]);
            ip_ok(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        network
    }

    /// The bridge's address, where the root namespace's services are reached.
    fn gateway(&self) -> String {
        format!("{}.1", self.prefix)
    }

    /// Namespace `i`'s own address.
    fn address(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, i + 2)
    }

    /// `command` to be run in namespace `i` (`ip netns exec` execs its program: the child is
    /// that program).
    fn exec(&self, i: usize, command: &Command) -> Command {
        let mut exec = Command::new("ip");
        exec.args(["netns", "exec", &self.namespaces[i]])
            .arg(command.get_program())
            .args(command.get_args());
        for (key, value) in command.get_envs() {
            if let Some(value) = value {
                exec.env(key, value);
            }
        }
        exec
    }

    fn tear_down(&self) {
        for ns in &self.namespaces {
            // Only processes this test started can be in its namespaces.
            if let Ok(output) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = ip(&["netns", "del", ns]);
        }
        for veth in &self.veths {
            let _ = ip(&["link", "del", veth]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.tear_down();
    }
}

/// A /24 in 10.213.0.0/16 that no interface of the root namespace is on, starting the search at
/// one derived from `id`.
fn free_subnet(id: u32) -> String {
    let output = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .expect("ip (iproute2) runs");
    let used = String::from_utf8_lossy(&output.stdout).into_owned();
    (0..254)
        .map(|n| (id as usize + n) % 254 + 1)
        .map(|x| format!("10.213.{x}"))
        .find(|prefix| !used.contains(&format!(" {prefix}.")))
        .expect("a free /24 in 10.213.0.0/16")
}

/// A `sessionize run` in a namespace, output to files; killed (SIGKILL) on drop if still running.
struct Process {
    name: String,
    child: Child,
    stderr: PathBuf,
}

impl Process {
    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Its exit status, waiting at most `timeout`; a process still running then is killed and
    /// the test fails.
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not stop within {timeout:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The tail of its standard error.
    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Its network namespace, once `ip netns exec` has entered it and exec'd the binary.
    fn netns(&self) -> PathBuf {
        let proc = PathBuf::from(format!("/proc/{}", self.child.id()));
        let binary = Path::new(env!("CARGO_BIN_EXE_sessionize"))
            .canonicalize()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(proc.join("exe")).ok() != Some(binary.clone()) {
            assert!(Instant::now() < deadline, "{} never started", self.name);
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::read_link(proc.join("ns/net")).unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What every process of the cluster shares, and nothing else: the broker, the catalog and the
/// bucket.
struct Shared {
    bootstrap: String,
    /// The catalog, with the bucket's `s3.*` options.
    catalog: CatalogSettings,
    /// `--warehouse` and `--checkpoint-location`, both in the bucket.
    warehouse: String,
    checkpoints: String,
    /// Logs and hostfiles, and a directory that no process writes to.
    dir: PathBuf,
}

impl Shared {
    /// Starts `sessionize run` in namespace `ns` as process `process` of `processes`, with
    /// `workers` workers each and the hostfile `hosts` when there is more than one process.
    #[allow(clippy::too_many_arguments)]
    fn start(
        &self,
        network: &Network,
        ns: usize,
        (processes, process, workers): (usize, usize, usize),
        hosts: Option<&Path>,
        extra: &[&str],
        env: &[(&str, &str)],
        name: &str,
    ) -> Process {
        let stdout = self.dir.join(format!("{name}.out"));
        let stderr = self.dir.join(format!("{name}.err"));
        let mut run = Sessionize::run(&self.warehouse)
            .kafka(&self.bootstrap, TOPIC)
            .args(["--checkpoint-location", &self.checkpoints])
            .catalog(&self.catalog)
            .args([
                "--test-mode",
                "--max-epoch-records",
                "300",
                "--chunk-bytes",
                "4096",
            ])
            .args(["--cluster-timeout", "60s", "-w", &workers.to_string()])
            .args(extra);
        run = match hosts {
            Some(hosts) => run.cluster(hosts, processes, process),
            None => run.args(["-n", &processes.to_string(), "-p", &process.to_string()]),
        };
        for (key, value) in env {
            run = run.env(key, value);
        }
        let mut command = network.exec(ns, &run.command());
        command
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap());
        Process {
            name: format!("{name} (sessionize -n {processes} -p {process} -w {workers})"),
            child: command.spawn().expect("ip netns exec runs"),
            stderr,
        }
    }

    /// A two-process cluster of `workers` workers each, process `i` in namespace `i` at its own
    /// address; `env` goes to process 0 only.
    fn start_cluster(
        &self,
        network: &Network,
        round: &str,
        port: u16,
        workers: usize,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Vec<Process> {
        let hosts = self.dir.join(format!("hosts-{round}"));
        let lines: String = (0..2)
            .map(|i| format!("{}:{port}\n", network.address(i)))
            .collect();
        std::fs::write(&hosts, lines).unwrap();
        (0..2)
            .map(|i| {
                let env = if i == 0 { env } else { &[] };
                let name = format!("{round}-p{i}");
                self.start(network, i, (2, i, workers), Some(&hosts), extra, env, &name)
            })
            .collect()
    }

    /// The tables, or `None` while they do not exist yet.
    fn tables(&self) -> Option<Actual> {
        let (catalog, reader) = (&self.catalog, self.dir.join("reader"));
        std::panic::catch_unwind(|| read_tables_from(catalog, &reader)).ok()
    }
}

/// Records read up to the newest commit, over all partitions.
fn committed(actual: &Actual) -> u64 {
    actual.next_offsets().values().sum()
}

/// The catalogs a cluster can share.
enum SharedCatalog {
    /// iceberg's SQL catalog on PostgreSQL, its tables' files under `--warehouse s3://…`.
    Postgres,
    /// Iceberg's REST catalog, which puts tables in the bucket itself.
    Rest,
}

#[test]
fn a_cluster_on_a_postgres_catalog_and_s3_survives_kills_and_other_shapes() {
    a_cluster_survives_kills_and_other_shapes(SharedCatalog::Postgres);
}

#[test]
fn a_cluster_on_a_rest_catalog_over_s3_survives_kills_and_other_shapes() {
    a_cluster_survives_kills_and_other_shapes(SharedCatalog::Rest);
}

fn a_cluster_survives_kills_and_other_shapes(catalog: SharedCatalog) {
    // Dropped last: the processes and services go first.
    let network = Network::new(2);
    let dir = tempfile::tempdir().unwrap();
    let host = network.gateway();
    let on_bridge = ["--host", host.as_str()];
    let kafka = Service::start_with("kafka", &dir.path().join("kafka"), &on_bridge, &[]);
    let bootstrap = kafka.get("BOOTSTRAP").to_string();
    assert!(bootstrap.starts_with(&format!("{host}:")), "{bootstrap}");
    let s3 = Service::start_with("s3", &dir.path().join("s3"), &on_bridge, &[]);
    let endpoint = s3.get("ENDPOINT").to_string();
    let (_catalog_service, uri) = match catalog {
        SharedCatalog::Postgres => {
            let postgres = Service::start_with("postgres", &dir.path().join("pg"), &on_bridge, &[]);
            let url = postgres.get("URL").to_string();
            (postgres, url)
        }
        SharedCatalog::Rest => {
            let rest = Service::start_with(
                "iceberg_rest",
                &dir.path().join("rest"),
                &[&on_bridge[..], &["--warehouse", "s3://lake/tables"]].concat(),
                &rest_on_s3(&endpoint),
            );
            let uri = rest.get("URI").to_string();
            (rest, uri)
        }
    };

    let partitions = workload(131, 6);
    common::create_topic(&bootstrap, TOPIC, partitions.len() as i32, &[]);
    produce(&bootstrap, &partitions, None);
    let expected = kafka_reference(&partitions);
    assert!(!expected.late.is_empty() && !expected.quarantined.is_empty());
    let total: u64 = partitions.iter().map(|p| records_of(p).len() as u64).sum();
    // About five seconds of reading for the whole topic, so that failures land mid-stream.
    let rate = (total / 5).to_string();
    let slow = ["--max-rate", rate.as_str()];

    let shared = Shared {
        bootstrap,
        catalog: catalog_at(&uri, s3_options(&endpoint)),
        warehouse: "s3://lake/warehouse".into(),
        checkpoints: "s3://lake/checkpoints".into(),
        dir: dir.path().to_path_buf(),
    };

    // 1. -n 2 -w 2; process 1 is SIGKILLed once the cluster has committed.
    let mut cluster = shared.start_cluster(&network, "first", 2101, 2, &slow, &[]);
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    let (ns0, ns1) = (cluster[0].netns(), cluster[1].netns());
    assert!(ns0 != ns1 && ns0 != own && ns1 != own, "{ns0:?} {ns1:?}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let first_commit = loop {
        if let Some(actual) = shared.tables()
            && actual.summary.contains_key("sessionize.epoch")
        {
            break actual;
        }
        for process in &mut cluster {
            assert!(
                process.running(),
                "{} stopped before the first commit:\n{}",
                process.name,
                process.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no commit within two minutes:\n{}\n{}",
            cluster[0].log(),
            cluster[1].log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(committed(&first_commit) < total, "the run ended too soon");
    assert!(cluster[1].running(), "{}", cluster[1].log());
    cluster[1].child.kill().unwrap(); // SIGKILL
    cluster[1].wait(Duration::from_secs(10));
    // The other process stops too: it lost its peer.
    let status = cluster[0].wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(5), "{}", cluster[0].log());
    drop(cluster);
    let after_kill = shared.tables().expect("the tables exist");
    assert!(committed(&after_kill) < total, "the kill came too late");

    // 2. -n 2 -w 1; process 0 (whose worker 0 commits) dies at a fail point after its second
    // sessions commit, before the side tables' commits.
    let mut cluster = shared.start_cluster(
        &network,
        "second",
        2102,
        1,
        &slow,
        &[("SESSIONIZE_FAIL_AT", "after-sessions-commit:2")],
    );
    let status = cluster[0].wait(Duration::from_secs(120));
    assert!(
        !status.success() && cluster[0].log().contains("fail point"),
        "{}",
        cluster[0].log()
    );
    let status = cluster[1].wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(5), "{}", cluster[1].log());
    drop(cluster);
    let after_abort = shared.tables().expect("the tables exist");
    assert!(
        committed(&after_kill) < committed(&after_abort) && committed(&after_abort) < total,
        "the restarted cluster should commit, and die before the end"
    );

    eprintln!(
        "committed {} of {total} records after the SIGKILL, {} after the fail point",
        committed(&after_kill),
        committed(&after_abort)
    );

    // 3. One process of three workers, in the other namespace, reads the rest at full speed.
    let mut last = shared.start(&network, 1, (1, 0, 3), None, &[], &[], "third");
    let status = last.wait(Duration::from_secs(120));
    assert!(status.success(), "{}", last.log());

    let actual = shared.tables().expect("the tables exist");
    assert_tables_equal(&actual, &expected, "after the last run");
    assert_eq!(committed(&actual), total);

    // Everything is in the bucket: the tables' files, and the newest checkpoints (of the default
    // --keep-checkpoints 5, with the up to 9 they amend under --full-checkpoint-every 10) under
    // the sessions table's UUID; older ones, and those of epochs that never committed, are
    // removed: no epoch has two.
    let keys = bucket_keys(&endpoint);
    assert!(keys.iter().any(|k| k.ends_with(".parquet")), "{keys:?}");
    let checkpoints: std::collections::BTreeSet<(&str, &str)> = keys
        .iter()
        .filter_map(|k| k.strip_prefix("checkpoints/sessions.user_sessions/"))
        .filter_map(|k| {
            let (uuid, rest) = k.split_once("/checkpoints/")?;
            Some((uuid, rest.split('/').next()?))
        })
        .collect();
    assert!((1..=5 + 9).contains(&checkpoints.len()), "{keys:?}");
    let epochs: std::collections::BTreeSet<&str> = checkpoints.iter().map(|c| &c.1[..13]).collect();
    assert_eq!(epochs.len(), checkpoints.len(), "{keys:?}");
    let uuids: std::collections::BTreeSet<&str> = checkpoints.iter().map(|c| c.0).collect();
    assert_eq!(uuids.len(), 1, "{keys:?}");
    assert!(!dir.path().join("warehouse").exists());
}
