//! Whether the process lives (`/healthz`) and whether its pipeline is ready (`/readyz`), decided
//! from a few atomics the workers and the committer set as they go.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// A worker that has not stepped for this long is stuck: a commit's retries, a checkpoint or a
/// Parquet file of a large epoch block a worker for seconds, never for a minute.
pub const STALL: Duration = Duration::from_secs(60);

/// Readiness allows this many commit intervals between completed epochs.
const READY_INTERVALS: u32 = 3;

/// The answer of a probe: its HTTP status and a line saying why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    pub reason: String,
}

impl Verdict {
    fn new(ok: bool, reason: impl Into<String>) -> Self {
        Verdict {
            ok,
            reason: reason.into(),
        }
    }
}

/// The health of one process: its workers' steps, restores and completed epochs. Times are
/// milliseconds since `started` plus one, so that zero means "never".
pub struct Health {
    started: Instant,
    commit_interval: Duration,
    /// The last step of each of this process's workers.
    steps: Vec<AtomicU64>,
    restored: AtomicUsize,
    /// When the pipeline last completed an epoch (committed it, or found nothing to commit); the
    /// moment the last worker restored counts as one, so that a fresh start has its intervals.
    progress_at: AtomicU64,
    /// A commit attempt failed and none has succeeded since (the committing process only).
    commit_failing: AtomicBool,
}

impl Health {
    pub fn new(workers: usize, commit_interval: Duration) -> Self {
        Health {
            started: Instant::now(),
            commit_interval,
            steps: (0..workers.max(1)).map(|_| AtomicU64::new(0)).collect(),
            restored: AtomicUsize::new(0),
            progress_at: AtomicU64::new(0),
            commit_failing: AtomicBool::new(false),
        }
    }

    fn stamp(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_millis() as u64 + 1
    }

    fn since(&self, stamp: u64, now: Instant) -> Option<Duration> {
        (stamp > 0).then(|| Duration::from_millis(self.stamp(now).saturating_sub(stamp)))
    }

    /// Worker `local` (its index within this process) has just stepped.
    pub fn stepped(&self, local: usize, now: Instant) {
        if let Some(step) = self.steps.get(local) {
            step.store(self.stamp(now), Relaxed);
        }
    }

    /// A worker has built its dataflow: its state is restored from the checkpoint.
    pub fn restored(&self, now: Instant) {
        if self.restored.fetch_add(1, Relaxed) + 1 == self.steps.len() {
            self.progress_at.store(self.stamp(now), Relaxed);
        }
    }

    /// The pipeline completed an epoch.
    pub fn progressed(&self, now: Instant) {
        self.progress_at.store(self.stamp(now), Relaxed);
    }

    /// A commit attempt failed (`true`), or a commit went through (`false`).
    pub fn commit_failing(&self, failing: bool) {
        self.commit_failing.store(failing, Relaxed);
    }

    /// `/healthz`: alive while some worker has stepped within [`STALL`]; a process whose workers
    /// have not started yet is alive too (start-up has its own time limits, and ends the process
    /// when they pass).
    pub fn liveness(&self, now: Instant) -> Verdict {
        let newest = self
            .steps
            .iter()
            .map(|s| s.load(Relaxed))
            .max()
            .unwrap_or(0);
        match self.since(newest, now) {
            None => Verdict::new(true, "starting: no worker has stepped yet"),
            Some(idle) if idle <= STALL => Verdict::new(
                true,
                format!("a worker stepped {} ms ago", idle.as_millis()),
            ),
            Some(idle) => Verdict::new(
                false,
                format!(
                    "no worker has stepped for {} s (limit {} s)",
                    idle.as_secs(),
                    STALL.as_secs()
                ),
            ),
        }
    }

    /// `/readyz`: started, restored, and an epoch completed within three commit intervals, with
    /// no commit failing right now.
    pub fn readiness(&self, now: Instant) -> Verdict {
        let restored = self.restored.load(Relaxed);
        if restored < self.steps.len() {
            return Verdict::new(
                false,
                format!(
                    "starting: {restored} of {} workers restored",
                    self.steps.len()
                ),
            );
        }
        if self.commit_failing.load(Relaxed) {
            return Verdict::new(
                false,
                "the last commit attempt failed: the catalog is unreachable or refuses it",
            );
        }
        let limit = self.commit_interval * READY_INTERVALS;
        match self.since(self.progress_at.load(Relaxed), now) {
            Some(idle) if idle <= limit => Verdict::new(
                true,
                format!("an epoch completed {} ms ago", idle.as_millis()),
            ),
            idle => Verdict::new(
                false,
                format!(
                    "no epoch completed for {} s (limit: {READY_INTERVALS} commit intervals, {} s)",
                    idle.unwrap_or_default().as_secs(),
                    limit.as_secs_f64()
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alive_while_starting_and_while_some_worker_steps() {
        let health = Health::new(2, Duration::from_secs(1));
        let t0 = health.started;
        assert!(health.liveness(t0 + Duration::from_secs(600)).ok);
        health.stepped(0, t0 + Duration::from_secs(1));
        assert!(health.liveness(t0 + Duration::from_secs(30)).ok);
        let stuck = health.liveness(t0 + Duration::from_secs(1) + STALL + Duration::from_secs(1));
        assert!(!stuck.ok, "{stuck:?}");
        // The other worker still steps: the process lives.
        health.stepped(1, t0 + STALL);
        assert!(health.liveness(t0 + STALL + Duration::from_secs(2)).ok);
    }

    #[test]
    fn ready_after_every_worker_restored_while_epochs_complete() {
        let interval = Duration::from_secs(10);
        let health = Health::new(2, interval);
        let t0 = health.started;
        health.restored(t0);
        assert!(!health.readiness(t0).ok, "one worker of two restored");
        health.restored(t0 + Duration::from_secs(1));
        assert!(health.readiness(t0 + Duration::from_secs(2)).ok);
        // Three intervals with no completed epoch: not ready.
        assert!(!health.readiness(t0 + Duration::from_secs(32)).ok);
        health.progressed(t0 + Duration::from_secs(33));
        assert!(health.readiness(t0 + Duration::from_secs(34)).ok);
        health.commit_failing(true);
        assert!(!health.readiness(t0 + Duration::from_secs(34)).ok);
        health.commit_failing(false);
        assert!(health.readiness(t0 + Duration::from_secs(34)).ok);
    }
}
