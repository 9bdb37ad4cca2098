//! Operating a run, to the side of the pipeline and fed plain numbers: the progress shown on the
//! terminal or in the log, and, on `--metrics-addr` (off by default), Prometheus metrics, health
//! probes and a live status page over HTTP.
//!
//! The pipeline reports through [`telemetry`], which is `None` unless a server was started: every
//! hook costs one load of a `OnceLock` when metrics are off, and an update of a few atomics per
//! chunk, activation, step or commit (never per event) when they are on. Each process serves its
//! own workers' figures; the commit figures come from the committing process (process 0).
//!
//! * [`progress`]: process-wide counters, the progress bar and the progress log line;
//! * [`prometheus`]: the Prometheus metrics and their names;
//! * [`health`]: `/healthz` and `/readyz`;
//! * [`status`]: `/status` (JSON) and the page at `/` (`status.html`);
//! * [`sampler`]: a thread that asks for end offsets (Kafka's lag) and samples the charts' history;
//! * [`http`]: the HTTP server.

pub mod health;
mod http;
pub mod progress;
pub mod prometheus;
mod sampler;
pub mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::clock::wall_clock_ms;
use crate::rules::{ClosedSession, EndReason};
use health::Health;
pub use prometheus::TableFigures;
use prometheus::{Metrics, PartitionLabel};
pub use sampler::EndOffsets;
use status::{CommitStatus, Recent};

static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();

/// The process's telemetry, if `--metrics-addr` started a server.
#[inline]
pub fn telemetry() -> Option<&'static Telemetry> {
    TELEMETRY.get()
}

/// What the status page and the probes know of a run.
pub struct Served {
    /// What the run reads, for people: a Kafka topic and its servers, or a number of files.
    pub source: String,
    /// How often the run commits: the readiness probe allows a few intervals without a commit.
    pub commit_interval: Duration,
    /// End offsets of the partitions being read, for the lag; `None` for files.
    pub end_offsets: Option<EndOffsets>,
}

/// Starts serving `/metrics`, `/healthz`, `/readyz`, `/status` and `/` on `addr`, and the sampler
/// thread; both live as long as the process. `workers` is this process's worker count.
pub fn serve(
    addr: SocketAddr,
    served: Served,
    (process, processes, workers): (usize, usize, usize),
) -> Result<()> {
    let (processes, workers) = (processes.max(1), workers.max(1));
    let telemetry = Telemetry {
        metrics: Metrics::new(process),
        health: Health::new(workers, served.commit_interval),
        recent: Mutex::new(Recent::default()),
        partitions: Mutex::new(BTreeSet::new()),
        reading: Mutex::new(BTreeMap::new()),
        pipeline_watermark: AtomicU64::new(0),
        epoch_in_progress: AtomicU64::new(0),
        closing: Mutex::new(BTreeMap::new()),
        process,
        processes,
        workers,
        source: served.source,
        started: Instant::now(),
    };
    let server = http::bind(addr)?;
    anyhow::ensure!(
        TELEMETRY.set(telemetry).is_ok(),
        "the metrics server is already running in this process"
    );
    let telemetry = TELEMETRY.get().expect("set above");
    http::spawn(server, telemetry);
    sampler::spawn(telemetry, served.end_offsets);
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz, /status and /");
    Ok(())
}

/// What became of a span of lines: how many there were, and how many were on time, late or
/// quarantined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineOutcomes {
    pub lines: u64,
    pub on_time: u64,
    pub late: u64,
    pub quarantined: u64,
}

/// Counts, gauges and recent history of one process.
pub struct Telemetry {
    pub metrics: Metrics,
    pub health: Health,
    recent: Mutex<Recent>,
    /// The partitions this process's stampers have seen, for `/status`.
    partitions: Mutex<BTreeSet<u32>>,
    /// The next offset to read of each Kafka partition this process reads, for the lag.
    reading: Mutex<BTreeMap<u32, u64>>,
    /// The pipeline's watermark (the lowest over every partition of the cluster), as this
    /// process's sessionizers see their input frontier; 0 until known.
    pipeline_watermark: AtomicU64,
    /// The first epoch not yet completed, as the workers see the committer's frontier.
    epoch_in_progress: AtomicU64,
    /// Sessions closed in an epoch not yet committed: epoch -> wall clock (in tenths of a second)
    /// when they were closed -> how many.
    closing: Mutex<BTreeMap<u64, BTreeMap<u64, u64>>>,
    process: usize,
    processes: usize,
    workers: usize,
    source: String,
    started: Instant,
}

impl Telemetry {
    /// A stamper classified a chunk of `partition`: what became of its lines.
    pub fn stamped(&self, partition: u32, outcomes: LineOutcomes) {
        if outcomes.lines == 0 {
            return;
        }
        self.metrics
            .events_read
            .get_or_create(&PartitionLabel { partition })
            .inc_by(outcomes.lines);
        let counters = &self.metrics.outcomes;
        counters.on_time.inc_by(outcomes.on_time);
        counters.late.inc_by(outcomes.late);
        counters.quarantined.inc_by(outcomes.quarantined);
    }

    /// Where a stamper stands in `partition`: once per activation.
    pub fn stamper_position(&self, partition: u32, next_offset: u64, watermark_ms: u64) {
        let label = PartitionLabel { partition };
        self.metrics
            .next_offset
            .get_or_create(&label)
            .set(next_offset as i64);
        self.metrics
            .watermark
            .get_or_create(&label)
            .set(watermark_ms as i64);
        let mut partitions = self.partitions.lock().expect("not poisoned");
        if !partitions.contains(&partition) {
            partitions.insert(partition);
        }
    }

    /// The next offsets a Kafka reader will read (about once a second).
    pub fn reading(&self, offsets: impl Iterator<Item = (u32, u64)>) {
        self.reading.lock().expect("not poisoned").extend(offsets);
    }

    /// The sessionizers' input frontier reached `watermark_ms`.
    pub fn pipeline_watermark(&self, watermark_ms: u64) {
        self.pipeline_watermark.fetch_max(watermark_ms, Relaxed);
    }

    /// Sessions closed now, to be committed with `epoch`.
    pub fn sessions_closed(&self, closed: &[ClosedSession], epoch: u64) {
        let mut by_reason = [0u64; 4];
        for session in closed {
            by_reason[reason_index(session.end_reason)] += 1;
        }
        for (reason, count) in REASONS.into_iter().zip(by_reason) {
            if count > 0 {
                self.metrics.sessions_closed(reason).inc_by(count);
            }
        }
        // The moment a session could close is when the watermark passed its end plus the
        // inactivity timeout (or its boundary, or the end of input): that is when the sessionizer
        // closes it, so the wall clock now maps that event time to wall time.
        let tenth = wall_clock_ms() / 100;
        *self
            .closing
            .lock()
            .expect("not poisoned")
            .entry(epoch)
            .or_default()
            .entry(tenth)
            .or_default() += closed.len() as u64;
    }

    /// The committer committed `epoch` with `rows` sessions in `duration`.
    pub fn committed(&self, epoch: u64, rows: u64, duration: Duration) {
        let at_ms = wall_clock_ms();
        self.health.commit_failing(false);
        self.metrics.commit_duration.observe(duration.as_secs_f64());
        self.metrics.last_commit.set(at_ms as f64 / 1000.0);
        self.recent
            .lock()
            .expect("not poisoned")
            .commit(CommitStatus {
                epoch,
                at_ms,
                rows,
                duration_s: duration.as_secs_f64(),
            });
    }

    /// After a commit (and the compaction and expiry after it), `table` is as `shape` says;
    /// `new_compactions` rounds of it were committed since the last call.
    pub fn table_shape(&self, table: &str, shape: &TableFigures, new_compactions: u64) {
        self.metrics.tables.set(table, shape, new_compactions);
    }

    /// `count` files were deleted for `reason` (one of [`prometheus::DELETE_REASONS`]).
    pub fn files_deleted(&self, reason: &'static str, count: u64) {
        self.metrics.files_deleted(reason, count);
    }

    /// Worker `local` (its index in this process) stepped; `epoch` is the first epoch not yet
    /// completed, as the worker sees the committer's frontier (`u64::MAX` once all are).
    pub fn worker_stepped(&self, local: usize, epoch: u64) {
        let now = Instant::now();
        self.health.stepped(local, now);
        if self.epoch_in_progress.fetch_max(epoch, Relaxed) < epoch {
            self.epoch_completed(epoch, now);
        }
    }

    /// Every epoch before `epoch` is committed (or had nothing to commit): the sessions closed in
    /// them are visible now.
    fn epoch_completed(&self, epoch: u64, now: Instant) {
        self.health.progressed(now);
        if epoch != u64::MAX {
            self.metrics.epoch.set(epoch as i64);
        }
        let visible: Vec<BTreeMap<u64, u64>> = {
            let mut closing = self.closing.lock().expect("not poisoned");
            let later = closing.split_off(&epoch);
            std::mem::replace(&mut *closing, later)
                .into_values()
                .collect()
        };
        let now_tenth = wall_clock_ms() / 100;
        for (tenth, count) in visible.into_iter().flatten() {
            let delay = now_tenth.saturating_sub(tenth) as f64 / 10.0;
            for _ in 0..count {
                self.metrics.visible_delay.observe(delay);
            }
        }
    }

    /// The pipeline's watermark lag, refreshed from the wall clock.
    fn watermark_lag_s(&self) -> Option<f64> {
        let watermark = self.pipeline_watermark.load(Relaxed);
        (watermark > 0).then(|| {
            let lag = wall_clock_ms().saturating_sub(watermark) as f64 / 1000.0;
            self.metrics.watermark_lag.set(lag);
            lag
        })
    }

    fn events_read(&self) -> u64 {
        let o = &self.metrics.outcomes;
        o.on_time.get() + o.late.get() + o.quarantined.get()
    }

    /// `/metrics`.
    pub fn encode_metrics(&self) -> String {
        self.watermark_lag_s();
        self.metrics.encode()
    }

    /// `/status`.
    pub fn status(&self) -> status::Status {
        let now = Instant::now();
        let m = &self.metrics;
        let partitions: Vec<u32> = self
            .partitions
            .lock()
            .expect("not poisoned")
            .iter()
            .copied()
            .collect();
        let partitions = partitions
            .into_iter()
            .map(|partition| {
                let label = PartitionLabel { partition };
                status::PartitionStatus {
                    partition,
                    events_read: m.events_read.get(&label).map_or(0, |c| c.get()),
                    next_offset: m.next_offset.get(&label).map_or(0, |g| g.get()) as u64,
                    lag: m.kafka_lag.get(&label).map(|g| g.get()),
                    watermark_ms: m.watermark.get(&label).map_or(0, |g| g.get()) as u64,
                }
            })
            .collect();
        let (commits, history) = {
            let recent = self.recent.lock().expect("not poisoned");
            (recent.commits(), recent.samples())
        };
        let last_commit = m.last_commit.get();
        let probe = |v: health::Verdict| status::ProbeStatus {
            ok: v.ok,
            reason: v.reason,
        };
        let watermark = self.pipeline_watermark.load(Relaxed);
        status::Status {
            process: self.process,
            processes: self.processes,
            workers: self.workers,
            source: self.source.clone(),
            uptime_s: self.started.elapsed().as_secs(),
            live: probe(self.health.liveness(now)),
            ready: probe(self.health.readiness(now)),
            epoch: m.epoch.get(),
            watermark_ms: (watermark > 0).then_some(watermark),
            watermark_lag_s: self.watermark_lag_s(),
            events_read: self.events_read(),
            outcomes: status::Outcomes {
                on_time: m.outcomes.on_time.get(),
                late: m.outcomes.late.get(),
                quarantined: m.outcomes.quarantined.get(),
                duplicate: m.outcomes.duplicate.get(),
            },
            sessions_closed: m.sessions_closed_by_reason(),
            open_sessions: m.open_sessions.get(),
            pending_events: m.pending_events.get(),
            state_bytes: m.state_bytes.get(),
            last_commit_s: (last_commit > 0.0).then_some(last_commit),
            partitions,
            commits,
            history,
        }
    }
}

const REASONS: [EndReason; 4] = [
    EndReason::Inactivity,
    EndReason::MaxDuration,
    EndReason::Boundary,
    EndReason::EndOfInput,
];

fn reason_index(reason: EndReason) -> usize {
    match reason {
        EndReason::Inactivity => 0,
        EndReason::MaxDuration => 1,
        EndReason::Boundary => 2,
        EndReason::EndOfInput => 3,
    }
}

/// One sessionizer's share of the process's gauges: it reports its own figures, and the gauges
/// move by the difference, so that workers never overwrite each other.
#[derive(Default)]
pub struct WorkerFigures {
    open_sessions: i64,
    pending_events: i64,
    state_bytes: i64,
    duplicates: u64,
}

impl WorkerFigures {
    /// The worker's open sessions, pending events and duplicates so far; once per activation.
    pub fn report(&mut self, t: &Telemetry, open: usize, pending: usize, duplicates: u64) {
        let m = &t.metrics;
        let (open, pending) = (open as i64, pending as i64);
        if open != self.open_sessions {
            m.open_sessions.inc_by(open - self.open_sessions);
            self.open_sessions = open;
        }
        if pending != self.pending_events {
            m.pending_events.inc_by(pending - self.pending_events);
            self.pending_events = pending;
        }
        if duplicates > self.duplicates {
            m.outcomes.duplicate.inc_by(duplicates - self.duplicates);
            self.duplicates = duplicates;
        }
    }

    /// The worker wrote its checkpoint part of an epoch: `bytes` in `duration`.
    pub fn checkpoint(&mut self, t: &Telemetry, bytes: u64, duration: Duration) {
        t.metrics
            .checkpoint_duration
            .observe(duration.as_secs_f64());
        let bytes = bytes as i64;
        t.metrics.state_bytes.inc_by(bytes - self.state_bytes);
        self.state_bytes = bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_sum_the_workers_of_a_process() {
        let t = Telemetry {
            metrics: Metrics::new(0),
            health: Health::new(2, Duration::from_secs(30)),
            recent: Mutex::default(),
            partitions: Mutex::default(),
            reading: Mutex::default(),
            pipeline_watermark: AtomicU64::new(0),
            epoch_in_progress: AtomicU64::new(0),
            closing: Mutex::default(),
            process: 0,
            processes: 1,
            workers: 2,
            source: String::new(),
            started: Instant::now(),
        };
        let (mut a, mut b) = (WorkerFigures::default(), WorkerFigures::default());
        a.report(&t, 10, 5, 1);
        b.report(&t, 7, 0, 2);
        a.report(&t, 4, 6, 3);
        assert_eq!(t.metrics.open_sessions.get(), 11);
        assert_eq!(t.metrics.pending_events.get(), 6);
        assert_eq!(t.metrics.outcomes.duplicate.get(), 5);
        a.checkpoint(&t, 1000, Duration::from_millis(3));
        b.checkpoint(&t, 500, Duration::from_millis(3));
        a.checkpoint(&t, 800, Duration::from_millis(3));
        assert_eq!(t.metrics.state_bytes.get(), 1300);

        // Sessions closed in epoch 3 become visible when epoch 3 completes, not before.
        let session = ClosedSession {
            user_id: "u".into(),
            start_ms: 0,
            end_ms: 1,
            event_count: 1,
            pages_visited: Vec::new(),
            end_reason: EndReason::Inactivity,
            corrected: false,
        };
        t.sessions_closed(&[session.clone(), session], 3);
        t.epoch_completed(3, Instant::now());
        let visible = |n: u64| format!("sessionize_session_visible_delay_seconds_count {n}\n");
        assert!(t.metrics.encode().contains(&visible(0)));
        t.epoch_completed(4, Instant::now());
        assert!(t.metrics.encode().contains(&visible(2)));
        assert_eq!(t.metrics.sessions_closed(EndReason::Inactivity).get(), 2);
        assert_eq!(t.metrics.epoch.get(), 4);
    }
}
