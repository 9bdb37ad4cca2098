//! Running the `sessionize` binary under test.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use sessionize::sink::catalog::CatalogSettings;

/// A command line of the `sessionize` binary, built like a [`Command`], its output captured.
///
/// `--commit-interval` is added only when the command starts, so that a preset and then a test
/// can each set it: the binary refuses a flag given twice.
pub struct Sessionize {
    command: Command,
    commit_interval: Option<&'static str>,
}

impl Sessionize {
    /// `sessionize SUBCOMMAND`.
    pub fn new(subcommand: &str) -> Sessionize {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sessionize"));
        command
            .arg(subcommand)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Sessionize {
            command,
            commit_interval: None,
        }
    }

    /// `sessionize run` into `warehouse` (a directory or an `s3://` location), committing every
    /// 200 ms: often enough for the tests' small workloads to make several epochs.
    pub fn run(warehouse: impl AsRef<OsStr>) -> Sessionize {
        Sessionize::new("run")
            .arg("--warehouse")
            .arg(warehouse)
            .commit_interval("200ms")
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Sessionize {
        self.command.arg(arg);
        self
    }

    pub fn args(mut self, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Sessionize {
        self.command.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Sessionize {
        self.command.env(key, value);
        self
    }

    /// An `--input` for each file: the n-th is partition n.
    pub fn inputs(mut self, files: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Sessionize {
        for file in files {
            self.command.arg("--input").arg(file);
        }
        self
    }

    /// Reads `topic` on the broker at `servers` and commits every 100 ms, as the Kafka tests'
    /// runs always have.
    pub fn kafka(mut self, servers: &str, topic: &str) -> Sessionize {
        self.command
            .args(["--kafka-servers", servers, "--kafka-topic", topic]);
        self.commit_interval("100ms")
    }

    /// Commits to `catalog`'s URI with its options.
    pub fn catalog(mut self, catalog: &CatalogSettings) -> Sessionize {
        if let Some(uri) = &catalog.uri {
            self.command.args(["--catalog-uri", uri]);
        }
        for (key, value) in &catalog.options {
            self.command
                .arg("--catalog-option")
                .arg(format!("{key}={value}"));
        }
        self
    }

    pub fn commit_interval(mut self, interval: &'static str) -> Sessionize {
        self.commit_interval = Some(interval);
        self
    }

    /// Commits often and in small epochs, so that a run has many epochs to be killed in.
    pub fn small_epochs(self) -> Sessionize {
        self.commit_interval("50ms").args([
            "--max-epoch-records",
            "400",
            "--chunk-bytes",
            "8192",
            "--idle-commit-interval",
            "0",
        ])
    }

    /// Process `process` of a cluster of `processes` whose addresses are in `hostfile`.
    pub fn cluster(self, hostfile: &Path, processes: usize, process: usize) -> Sessionize {
        self.args(["-n", &processes.to_string(), "-p", &process.to_string()])
            .arg("-h")
            .arg(hostfile)
    }

    /// The finished [`Command`], for what this builder leaves out (standard input, another
    /// directory, another namespace).
    pub fn command(mut self) -> Command {
        if let Some(interval) = self.commit_interval {
            self.command.args(["--commit-interval", interval]);
        }
        self.command
    }

    /// Runs to the end, whatever the end is.
    pub fn output(self) -> Output {
        self.command().output().expect("the sessionize binary runs")
    }

    /// Runs to the end, failing the test with the command line and standard error unless the
    /// run succeeds.
    #[track_caller]
    pub fn success(self) -> Output {
        let mut command = self.command();
        let output = command.output().expect("the sessionize binary runs");
        assert_success(&output, &format!("{command:?}"));
        output
    }

    /// What a command that must succeed printed as JSON: a run's summary, `inspect --json`.
    #[track_caller]
    pub fn json(self) -> serde_json::Value {
        serde_json::from_slice(&self.success().stdout).unwrap()
    }

    pub fn spawn(self) -> Child {
        self.command().spawn().expect("the sessionize binary runs")
    }

    /// Runs with the fail point `point` (`name`, or `name:n` for its n-th pass), which must
    /// stop the run before it succeeds.
    #[track_caller]
    pub fn kill_at(self, point: &str) {
        let killed = self.env("SESSIONIZE_FAIL_AT", point).output();
        assert!(
            !killed.status.success(),
            "{point} was never reached: {}",
            String::from_utf8_lossy(&killed.stderr)
        );
    }
}

/// Fails the test, naming `what`, with the exit status and standard error of a process that did
/// not succeed.
#[track_caller]
pub fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A timely hostfile in `dir` for `processes` processes on loopback, each on a free port.
/// Waits for pipelines started at once on the same tables; each must finish, or stop with the
/// two-writers exit code (4) once it finds another's commit. Both may stop, when their commits
/// interleave across the tables: a restart finishes the work. Returns how many stopped.
pub fn losers_of_concurrent_runs(children: Vec<Child>) -> usize {
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut losers = 0;
    for output in &outputs {
        let stderr = String::from_utf8_lossy(&output.stderr);
        match output.status.code() {
            Some(0) => {}
            Some(4) => {
                losers += 1;
                assert!(stderr.contains("another pipeline"), "{stderr}");
            }
            other => panic!("unexpected exit {other:?}: {stderr}"),
        }
    }
    losers
}

pub fn hostfile(dir: &Path, processes: usize) -> PathBuf {
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let hosts: String = (0..processes)
        .map(|_| format!("127.0.0.1:{}\n", port()))
        .collect();
    let path = dir.join(format!("hosts-{}", port()));
    std::fs::write(&path, hosts).unwrap();
    path
}

/// Starts the processes of one cluster on loopback, with a hostfile in `dir`; `run(p)` is
/// process `p`'s command line, without its place in the cluster.
pub fn spawn_cluster(
    dir: &Path,
    processes: usize,
    run: impl Fn(usize) -> Sessionize,
) -> Vec<Child> {
    let hosts = hostfile(dir, processes);
    (0..processes)
        .map(|process| run(process).cluster(&hosts, processes, process).spawn())
        .collect()
}
