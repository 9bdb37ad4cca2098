//! Runs the pipeline on a timely cluster: prepares the tables, starts the workers, builds the
//! dataflow on each, waits for the last commit and reports what was done.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use timely::ExchangeData;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Input, Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;

use super::pipeline::build_pipeline;
use super::time::Time;
use super::types::WorkerContext;
use crate::commit::{BufferedOutput, CheckpointStore, RunTotals, StartState, new_run_id, prepare};
use crate::config::PipelineConfig;
use crate::failure::stop;
use crate::ops::progress::{InputUnit, ProgressReporter, ProgressStyleChoice};
use crate::ops::{self, Served};
use crate::sink;
use crate::source::kafka::{self, StopAt};

/// Timely's cluster options (`-w`, `-n`, `-p`, `-h`).
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub threads: usize,
    pub processes: usize,
    pub process: usize,
    pub hostfile: Option<PathBuf>,
    /// How long the processes may take to find each other before this one gives up.
    pub formation_timeout: Duration,
}

impl Cluster {
    fn timely_config(&self) -> Result<timely::Config> {
        let mut args = vec![
            "sessionize".to_string(),
            "-w".into(),
            self.threads.max(1).to_string(),
            "-n".into(),
            self.processes.max(1).to_string(),
            "-p".into(),
            self.process.to_string(),
        ];
        if let Some(hostfile) = &self.hostfile {
            args.extend(["-h".into(), hostfile.display().to_string()]);
        }
        timely::Config::from_args(args.into_iter())
            .map_err(|e| anyhow::anyhow!("invalid cluster options: {e}"))
    }
}

/// The one-line report of a bounded run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    pub events_read: u64,
    pub valid: u64,
    pub duplicates: u64,
    pub late: u64,
    pub quarantined: u64,
    pub sessions: u64,
    pub epochs: u64,
    /// Compaction rounds committed.
    pub compactions: u64,
    pub elapsed_s: f64,
    pub events_per_s: f64,
}

impl RunSummary {
    fn new(totals: &RunTotals, elapsed: Duration) -> Self {
        let counts = totals.counts;
        let elapsed_s = elapsed.as_secs_f64();
        RunSummary {
            events_read: counts.lines,
            valid: counts.lines - counts.quarantined,
            duplicates: totals.duplicates,
            late: counts.late,
            quarantined: counts.quarantined,
            sessions: totals.sessions,
            epochs: totals.epochs,
            compactions: totals.compactions,
            elapsed_s: (elapsed_s * 1000.0).round() / 1000.0,
            events_per_s: (counts.lines as f64 / elapsed_s.max(1e-9)).round(),
        }
    }
}

/// Runs the pipeline over bounded inputs until everything is committed. Process 0 returns the
/// run's summary; other processes return `None`.
pub fn run(config: PipelineConfig, cluster: &Cluster) -> Result<Option<RunSummary>> {
    if config.inputs.is_empty() && config.kafka.is_none() {
        bail!(
            "no input: give --kafka-servers and --kafka-topic, or --input FILE (one or more; `-` \
             for standard input)"
        );
    }
    for input in config.inputs.iter().filter(|i| *i != "-") {
        std::fs::metadata(input).with_context(|| {
            format!("cannot read input {input:?}: check the path (every process needs to read it)")
        })?;
    }
    keep_files_private();
    let timely_config = cluster.timely_config()?;
    if let Some(addr) = config.metrics_addr {
        // Before the tables are prepared, so that the probes answer (not ready) while the catalog
        // is waited for.
        let shape = (cluster.process, cluster.processes, cluster.threads);
        ops::serve(addr, served(&config), shape)?;
    }
    if let Some(kafka) = &config.kafka {
        // Reach the broker before starting the cluster, so that a wrong address is one clear error.
        let consumer = kafka.settings.consumer()?;
        kafka
            .settings
            .partition_count(&consumer, Duration::from_secs(30))?;
    }
    let restore = config.kafka.as_ref().is_none_or(|k| k.start.is_none());
    // Process 0 prepares the tables and decides where the run starts, once for the cluster; its
    // first worker hands that decision and the run's identity to every worker of every process.
    let start = if cluster.process == 0 {
        let start = sink::runtime()?.block_on(async {
            let warehouse = config.open_warehouse().await?;
            prepare(&warehouse, &config, restore).await
        })?;
        Some(RunStart {
            run_id: new_run_id(),
            start,
        })
    } else {
        None
    };
    let workers = cluster.threads.max(1) * cluster.processes.max(1);
    if (config.buckets as usize) < workers {
        tracing::warn!(
            buckets = config.buckets,
            workers,
            "fewer buckets than workers: some workers will hold no sessions (raise --buckets)"
        );
    }

    let started = Instant::now();
    // Files always end; a topic ends only for a bounded run.
    let (bounded, unit) = match &config.kafka {
        Some(kafka) => (kafka.stop != StopAt::Never, InputUnit::Records),
        None => (true, InputUnit::Bytes),
    };
    let _progress = ProgressReporter::start(
        config.progress_interval,
        ProgressStyleChoice::for_run(bounded, unit),
    );
    let config = Arc::new(config);
    let formed = watch_formation(cluster);
    let buffered = Arc::new(BufferedOutput::default());
    let threads = cluster.threads.max(1);
    let guards = timely::execute(timely_config, move |worker| {
        let runtime = Rc::new(sink::runtime().unwrap_or_else(|e| stop(e)));
        let RunStart { run_id, start } = agree(worker, start.clone());
        formed.store(true, std::sync::atomic::Ordering::Relaxed);
        if worker.index() == 0 {
            tracing::info!(run_id, epoch = start.epoch, "starting");
        }
        let store = CheckpointStore::new(&config, &start.table_uuid).unwrap_or_else(|e| stop(e));
        let context = runtime
            .block_on(async {
                let warehouse = config.open_warehouse().await?;
                let tables = warehouse.load_all().await?;
                anyhow::Ok(WorkerContext {
                    config: Arc::clone(&config),
                    runtime: Rc::clone(&runtime),
                    warehouse: Rc::new(warehouse),
                    tables,
                    run_id,
                    start: Arc::new(start),
                    store: Arc::new(store),
                    buffered: Arc::clone(&buffered),
                })
            })
            .unwrap_or_else(|e| stop(e));
        let (committed, totals) = worker
            .dataflow::<Time, _, _>(|scope| build_pipeline(scope, &context))
            .unwrap_or_else(|e| stop(e));
        let telemetry = ops::telemetry();
        if let Some(telemetry) = telemetry {
            telemetry.health.restored(Instant::now());
        }
        // Timely numbers a process's workers consecutively.
        let local = worker.index() % threads;
        while !committed.done() {
            worker.step_or_park(Some(Duration::from_millis(20)));
            if let Some(telemetry) = telemetry {
                let epoch = committed
                    .with_frontier(|f| f.iter().map(|t| t.epoch).min())
                    .unwrap_or(u64::MAX);
                telemetry.worker_stepped(local, epoch);
            }
        }
        let totals = totals
            .lock()
            .expect("the commit thread has finished")
            .clone();
        (worker.index() == 0).then_some(totals)
    })
    .map_err(|e| anyhow::anyhow!("cannot start the timely cluster: {e}"))?;
    let mut summary = None;
    for result in guards.join() {
        match result {
            Ok(Some(totals)) => summary = Some(RunSummary::new(&totals, started.elapsed())),
            Ok(None) => {}
            // timely reports a worker's panic only as `Any`; its message is printed above.
            Err(_) => bail!("a worker failed (its message is above)"),
        }
    }
    Ok(summary)
}

/// Ends the process if the cluster has not formed within the timeout: timely waits forever for a
/// process that never connects (one that failed at start-up, or was never started).
fn watch_formation(cluster: &Cluster) -> Arc<std::sync::atomic::AtomicBool> {
    let formed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if cluster.processes <= 1 {
        return formed;
    }
    let watched = Arc::clone(&formed);
    let (timeout, processes) = (cluster.formation_timeout, cluster.processes);
    std::thread::spawn(move || {
        let started = Instant::now();
        while !watched.load(std::sync::atomic::Ordering::Relaxed) {
            if started.elapsed() >= timeout {
                eprintln!(
                    "sessionize: the {processes} processes of the cluster did not all connect \
                     within {timeout:?}: start every process (-p 0 to {}) with the same hostfile, \
                     and check that each can reach the others' addresses",
                    processes - 1
                );
                std::process::exit(crate::failure::EXIT_STARTUP);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    formed
}

/// What every worker of a run must agree on: who the run is, and where it starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunStart {
    /// Names this run's data files and checkpoint directories and marks its commits.
    run_id: String,
    start: StartState,
}

/// Worker 0's `value` (the only worker that has one), on every worker of the cluster, through a
/// small dataflow; it also waits until every worker has started, as a barrier would.
fn agree<T: ExchangeData + Clone>(worker: &mut Worker, value: Option<T>) -> T {
    let mut input = InputHandle::new();
    let probe = ProbeHandle::new();
    let received = Rc::new(RefCell::new(None));
    let sink = Rc::clone(&received);
    worker.dataflow::<u64, _, _>(|scope| {
        scope
            .input_from(&mut input)
            .container::<Vec<T>>()
            .broadcast()
            .inspect(move |value: &T| *sink.borrow_mut() = Some(value.clone()))
            .probe_with(&probe);
    });
    if worker.index() == 0 {
        input.send(value.expect("process 0 decides where the run starts"));
    }
    input.close();
    while !probe.done() {
        worker.step_or_park(Some(Duration::from_millis(20)));
    }
    received
        .take()
        .expect("worker 0's value reaches every worker before its input closes")
}

/// What the status page shows of the run, and how the sampler asks for Kafka's end offsets.
fn served(config: &PipelineConfig) -> Served {
    let (source, end_offsets) = match &config.kafka {
        Some(input) => (
            format!(
                "Kafka topic {} at {}",
                input.settings.topic, input.settings.servers
            ),
            Some(kafka::end_offsets(input.settings.clone())),
        ),
        None => (format!("{} file(s)", config.inputs.len()), None),
    };
    Served {
        source,
        commit_interval: config.commit_interval,
        end_offsets,
    }
}

/// Takes read and write access to the files and directories this process creates from everyone
/// but their owner, as the checkpoints have always been: tables, the SQLite catalog and metadata
/// hold user ids and raw events. The mask only ever tightens: a stricter umask stays.
fn keep_files_private() {
    // SAFETY: umask only swaps the process's file-mode mask; it cannot fail.
    unsafe {
        let previous = libc::umask(0o077);
        libc::umask(previous | 0o077);
    }
}
