//! Committing: worker 0 gathers each epoch's parts and, once the frontier has passed the epoch,
//! hands them to a thread of its own that runs the [`Committer`], so that the workers go on with
//! the next epoch while one commits.

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::scheduling::SyncActivator;

use super::time::Time;
use super::types::{CommitPart, WorkerContext};
use crate::commit::{Committer, EpochParts, RunTotals, Start};
use crate::config::PipelineConfig;
use crate::failure::stop;
use crate::sink::{self, TableKind};

/// What the operator asks of the commit thread, in epoch order.
enum Job {
    Commit(u64, EpochParts),
    /// The input has ended and every epoch before has been handed over: compact what is left.
    Finish,
}

/// What the commit thread reports back, in the order of the jobs.
enum Done {
    Committed(u64),
    Finished,
}

/// Worker 0 commits each epoch once the frontier has passed it; see [`crate::commit::protocol`]
/// for the order of the steps and why a kill between any two of them loses and doubles nothing.
/// The commits run on a thread of their own, one at a time and in epoch order; the output shows
/// each epoch once its commit is done, which is what the stampers wait for before they end the
/// next epoch (so at most one epoch is committing while the next one fills).
///
/// ```text
/// parts (files, positions, checkpoint parts) ─exchange(0)─► Commit ─► committed epochs
///                                                             │ ▲
///                                                        jobs ▼ │ done
///                                                        commit thread
/// ```
pub(super) fn commit<'scope>(
    parts: StreamVec<'scope, Time, CommitPart>,
    context: &WorkerContext,
    totals: Arc<Mutex<RunTotals>>,
) -> StreamVec<'scope, Time, u64> {
    let scope = parts.scope();
    let peers = scope.peers();
    let committing = scope.index() == 0;
    let start: Start = (
        context.start.last_commit.clone(),
        context.start.positions.clone(),
        context.start.topic.clone(),
        context.start.checkpoint.clone(),
    );
    let setup = CommitSetup {
        config: Arc::clone(&context.config),
        store: Arc::clone(&context.store),
        run_id: context.run_id.clone(),
        start,
        totals,
    };
    parts.unary_frontier(
        Exchange::new(|_: &CommitPart| 0),
        "Commit",
        move |initial, info| {
            let thread = committing
                .then(|| setup.spawn(scope.worker().sync_activator_for(info.address.to_vec())));
            // One capability, at the oldest epoch not yet committed: the committed epochs are given
            // at it, and dropping it once the run is finished ends the output.
            let mut capability = Some(initial);
            let mut pending: BTreeMap<u64, EpochParts> = BTreeMap::new();
            let mut in_flight: VecDeque<u64> = VecDeque::new();
            let (mut finish_sent, mut finished) = (false, false);
            move |(input, frontier), output| {
                if let Some((_, done)) = &thread {
                    for report in done.try_iter() {
                        match report {
                            Done::Committed(epoch) => {
                                let cap = capability.as_ref().expect("held until finished");
                                output.session(cap).give(epoch);
                                in_flight.pop_front();
                            }
                            Done::Finished => finished = true,
                        }
                    }
                }
                input.for_each(|cap, data| {
                    let time = *cap.stamp().iter().next().expect("data has a time");
                    let epoch = pending.entry(time.epoch).or_default();
                    for part in data.drain(..) {
                        gather(epoch, part);
                    }
                });
                let frontier = frontier.frontier();
                while let Some((&epoch, _)) = pending.first_key_value() {
                    if !frontier.iter().all(|t| t.epoch > epoch) {
                        break;
                    }
                    let parts = pending.remove(&epoch).expect("first key");
                    if parts.checkpoint.len() != peers {
                        // Only an epoch without positions lacks checkpoints: nothing to commit.
                        assert!(
                            parts.positions.is_empty(),
                            "epoch {epoch} lacks checkpoint parts"
                        );
                        continue;
                    }
                    let (jobs, _) = thread.as_ref().expect("parts go to worker 0 only");
                    send(jobs, Job::Commit(epoch, parts));
                    in_flight.push_back(epoch);
                }
                if let Some((jobs, _)) = &thread
                    && frontier.is_empty()
                    && !std::mem::replace(&mut finish_sent, true)
                {
                    send(jobs, Job::Finish);
                }
                let oldest = in_flight
                    .front()
                    .copied()
                    .or_else(|| pending.keys().next().copied())
                    .or_else(|| frontier.iter().map(|t| t.epoch).min());
                match (oldest, capability.as_mut()) {
                    (Some(epoch), Some(cap)) => cap.downgrade(&Time::new(epoch, 0)),
                    // Worker 0 holds on while its thread finishes; the others are done.
                    (None, Some(_)) if !committing || finished => capability = None,
                    _ => {}
                }
            }
        },
    )
}

/// Adds one part to its epoch's.
fn gather(epoch: &mut EpochParts, part: CommitPart) {
    match part {
        CommitPart::Files {
            table,
            files,
            rows,
            events,
        } => {
            if table == TableKind::Sessions {
                epoch.sessions += rows;
                epoch.session_events += events;
            }
            epoch.files.entry(table).or_default().extend(files);
        }
        CommitPart::Position(mut p, counts) => {
            p.counts = counts;
            epoch.positions.push(p)
        }
        CommitPart::Checkpoint(part) => epoch.checkpoint.push(part),
        CommitPart::OpenSessions { worker, files } => {
            epoch.open_sessions.insert(worker, files);
        }
        CommitPart::Retractions(rows) => epoch.retractions.extend(rows),
    }
}

fn send(jobs: &Sender<Job>, job: Job) {
    // The thread only ends by ending the process (a failed commit stops the run).
    jobs.send(job)
        .expect("the commit thread runs while the dataflow does");
}

/// What the commit thread is started with.
struct CommitSetup {
    config: Arc<PipelineConfig>,
    store: Arc<crate::commit::CheckpointStore>,
    run_id: String,
    start: Start,
    totals: Arc<Mutex<RunTotals>>,
}

impl CommitSetup {
    /// Starts the commit thread: its own runtime and catalog connection, and a [`Committer`] that
    /// runs the jobs in order, waking the operator after each one.
    fn spawn(self, activator: SyncActivator) -> (Sender<Job>, Receiver<Done>) {
        let (jobs, job_queue) = channel::<Job>();
        let (done, reports) = channel::<Done>();
        let thread = std::thread::Builder::new().name("sessionize-commit".into());
        thread
            .spawn(move || {
                let runtime = Rc::new(sink::runtime().unwrap_or_else(|e| stop(e)));
                // The thread loads the tables again: a commit on the tables loaded at start-up,
                // on another thread's runtime, was seen to wait for ever (on work left to that
                // runtime, which nothing drives here).
                let (warehouse, tables) = runtime
                    .block_on(async {
                        let warehouse = self.config.open_warehouse().await?;
                        let tables = warehouse.load_all().await?;
                        anyhow::Ok((warehouse, tables))
                    })
                    .unwrap_or_else(|e| stop(e));
                let mut committer = Committer::new(
                    runtime,
                    Rc::new(warehouse),
                    self.store,
                    self.config,
                    self.run_id,
                    tables,
                    self.start,
                );
                for job in job_queue {
                    let report = match job {
                        Job::Commit(epoch, parts) => {
                            let mut totals = self.totals.lock().expect("no panic holds it");
                            committer
                                .commit_epoch(epoch, &parts, &mut totals)
                                .unwrap_or_else(|e| {
                                    stop(e.context(format!("commit of epoch {epoch} failed")))
                                });
                            Done::Committed(epoch)
                        }
                        Job::Finish => {
                            committer.finish(&mut self.totals.lock().expect("no panic holds it"));
                            Done::Finished
                        }
                    };
                    // Both fail only once the dataflow is gone, when nobody waits for the report.
                    let _ = done.send(report);
                    let _ = activator.activate();
                }
            })
            .unwrap_or_else(|e| stop(anyhow::anyhow!("cannot start the commit thread: {e}")));
        (jobs, reports)
    }
}
