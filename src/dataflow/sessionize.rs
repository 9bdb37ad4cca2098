//! Sessionizing: the session rules per user, on the worker owning the user's bucket, with a
//! checkpoint of its state at the end of every epoch.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use anyhow::Result;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::{Capability, CapabilitySet};
use timely::progress::Antichain;

use super::time::{Time, frontier_watermark};
use super::types::{CommitPart, Out, SessionEvent, WorkerContext, WorkerEvents, owns};
use super::write::write_open_sessions;
use crate::commit::{CheckpointStore, SourcePosition};
use crate::failure::{fail_point, stop};
use crate::ops::progress;
use crate::rules::{ClosedSession, Sessionizer};
use crate::sink::tables::user_bucket;
use crate::sink::{RetractedSession, TableKind};

/// The room for closed rows the operator keeps between activations (rows of 72 bytes), and the
/// sessions it closes per activation at the end of the input.
const CLOSED_ROWS_KEPT: usize = 16 * 1024;

/// Applies the session rules on the worker owning each user's bucket, starting from the
/// checkpoint the run resumes. When the frontier passes an epoch, the worker writes its state to
/// that epoch's checkpoint and reports the part to the committer (the second stream).
pub(super) fn sessionize<'scope>(
    events: StreamVec<'scope, Time, WorkerEvents>,
    positions: StreamVec<'scope, Time, SourcePosition>,
    context: &WorkerContext,
) -> Result<(
    StreamVec<'scope, Time, ClosedSession>,
    StreamVec<'scope, Time, CommitPart>,
)> {
    let scope = events.scope();
    let (index, peers) = (scope.index(), scope.peers());
    let config = &context.config;
    let mut sessionizer =
        Sessionizer::new(config.rules).with_correction_horizon(config.correction_horizon_ms);
    if let Some(checkpoint) = &context.start.checkpoint {
        let buckets = config.buckets;
        for checkpoint in checkpoint.chain() {
            // Every worker of the run that wrote a checkpoint wrote a part of it.
            let writers = checkpoint.parts.len();
            for part in &checkpoint.parts {
                let mut state = context.store.read_part(checkpoint, part)?;
                if !state.full {
                    let writer = CheckpointStore::part_worker(part)?;
                    sessionizer.forget_applied(state.watermark, |user| {
                        owns(user_bucket(user, buckets), writer, writers)
                    });
                }
                // A bounded run's last checkpoint has seen every event; a run that reads on
                // starts from the partitions' watermarks.
                state.watermark = state.watermark.min(context.start.watermark_ms);
                sessionizer.restore(state, |user| owns(user_bucket(user, buckets), index, peers));
            }
        }
    }
    let store = Arc::clone(&context.store);
    let pipeline = Arc::clone(&context.config);
    let run_id = context.run_id.clone();
    let runtime = Rc::clone(&context.runtime);
    let open_sessions_table = context.tables.get(&TableKind::OpenSessions).cloned();
    let finished_max_event_ms = context
        .start
        .positions
        .values()
        .filter(|p| p.finished)
        .filter_map(|p| p.clock.max_event_ms)
        .max();

    let mut builder = OperatorBuilder::new("Sessionize".into(), scope);
    let activator = scope.activator_for(builder.operator_info().address);
    let mut events_in = builder.new_input(
        events,
        Exchange::new(|batch: &WorkerEvents| u64::from(batch.worker)),
    );
    let mut positions_in = builder.new_input(positions, Pipeline);
    let (closed_out, closed_stream) = builder.new_output();
    let (parts_out, parts_stream) = builder.new_output();
    let mut closed_out: Out<ClosedSession> = OutputBuilder::from(closed_out);
    let mut parts_out: Out<CommitPart> = OutputBuilder::from(parts_out);
    builder.build(move |initial| {
        let [closed_cap, part_cap]: [Capability<Time>; 2] =
            initial.try_into().expect("a capability per output");
        let mut closed_caps = CapabilitySet::from_elem(closed_cap);
        let mut part_caps = CapabilitySet::from_elem(part_cap);
        // The latest event time of the whole input decides which sessions end with it
        // (`end_of_input`); partitions a previous run finished count too, so that the reason
        // does not depend on whether the run was interrupted.
        let mut max_event_ms: Option<u64> = finished_max_event_ms;
        let mut closed = Vec::new();
        // Rows written before that corrections replaced, for the committer to remove.
        let mut retracted = Vec::new();
        // Epochs whose positions have arrived: each gets a checkpoint when the frontier passes it.
        let mut epochs_to_save = std::collections::BTreeSet::new();
        let mut duplicates_reported = 0;
        let telemetry = crate::ops::telemetry();
        let mut figures = crate::ops::WorkerFigures::default();
        // Events of an epoch whose predecessor's checkpoint is not written yet: they reach the
        // rules only after it, so that each checkpoint holds exactly the epochs up to its own
        // while the stampers already fill the next one.
        let mut held: Vec<(Time, Vec<WorkerEvents>)> = Vec::new();
        // The committer replaces each worker's open sessions with the latest it sent, so the
        // first epoch sends them whatever changed, and then only changes.
        let mut open_sessions_sent = false;
        move |frontiers| {
            // At the end of the input, sessions remain to close in later activations: the
            // writer takes each slice of rows before the next, and the last checkpoint and the
            // capabilities wait for the last slice.
            let mut closing = false;
            let mut frontier = Antichain::new();
            for f in frontiers.iter() {
                frontier.extend(f.frontier().iter().copied());
            }
            // The oldest epoch whose checkpoint is still to be written (none once all are).
            let open_epoch = |epochs_to_save: &std::collections::BTreeSet<u64>| {
                let frontier_epochs = frontier.iter().map(|t| t.epoch);
                epochs_to_save
                    .first()
                    .copied()
                    .into_iter()
                    .chain(frontier_epochs)
                    .min()
            };
            positions_in.for_each(|cap, data| {
                let time = cap.stamp().iter().next().copied().expect("data has a time");
                epochs_to_save.insert(time.epoch);
                for p in data.drain(..).filter(|p| p.finished) {
                    max_event_ms = max_event_ms.max(p.clock.max_event_ms);
                }
            });
            let open = open_epoch(&epochs_to_save);
            events_in.for_each(|cap, data| {
                let time = *cap.stamp().iter().next().expect("data has a time");
                if open.is_some_and(|open| time.epoch > open) {
                    held.push((time, std::mem::take(data)));
                } else {
                    push_all(&mut sessionizer, data, &mut closed, &mut retracted);
                    data.clear();
                }
            });
            loop {
                let open = open_epoch(&epochs_to_save);
                held.retain_mut(|(time, events)| {
                    let release = open.is_none_or(|open| time.epoch <= open);
                    if release {
                        push_all(&mut sessionizer, events, &mut closed, &mut retracted);
                    }
                    !release
                });
                // Every event still to reach the rules is stamped at or after this watermark.
                let watermark = frontier_watermark(frontiers[0].frontier())
                    .into_iter()
                    .chain(held.iter().map(|(time, _)| time.watermark))
                    .min();
                if let Some(watermark) = watermark {
                    sessionizer.advance(watermark, &mut closed);
                } else if frontier.is_empty() {
                    let max_event_ms = max_event_ms.unwrap_or(0);
                    closing = !sessionizer.finish(max_event_ms, CLOSED_ROWS_KEPT, &mut closed);
                }
                if let Some(telemetry) = telemetry {
                    if let Some(watermark) = watermark {
                        telemetry.pipeline_watermark(watermark);
                    }
                    figures.report(
                        telemetry,
                        sessionizer.open_sessions(),
                        sessionizer.pending_events(),
                        sessionizer.duplicates(),
                    );
                }
                // Sessions closed now belong to the epoch being completed, whose checkpoint no
                // longer holds them.
                if !closed.is_empty()
                    && let Some(cap) = capability_for(&closed_caps, open)
                {
                    progress::SESSIONS_CLOSED.fetch_add(closed.len() as u64, Relaxed);
                    if let Some(telemetry) = telemetry {
                        telemetry.sessions_closed(&closed, cap.time().epoch);
                    }
                    let mut output = closed_out.activate();
                    output.session(&cap).give_iterator(closed.drain(..));
                    // A watermark that closes a million sessions at once must not keep room
                    // for a million rows for the rest of the run.
                    closed.shrink_to(CLOSED_ROWS_KEPT);
                }
                if !retracted.is_empty()
                    && let Some(cap) = capability_for(&part_caps, open)
                {
                    let rows = retracted.drain(..).map(|row| RetractedSession::from(&row));
                    let mut parts = parts_out.activate();
                    parts
                        .session(&cap)
                        .give(CommitPart::Retractions(rows.collect()));
                }
                if closing {
                    activator.activate();
                    fail_point("between-end-slices");
                    break;
                }
                let Some(&epoch) = epochs_to_save.first() else {
                    break;
                };
                if !frontier.iter().all(|t| t.epoch > epoch) {
                    break;
                }
                epochs_to_save.remove(&epoch);
                let dir = CheckpointStore::epoch_dir(epoch, &run_id);
                let writing = std::time::Instant::now();
                let duplicates = sessionizer.duplicates() - duplicates_reported;
                duplicates_reported = sessionizer.duplicates();
                let part = store
                    .write_part(
                        &dir,
                        index,
                        &sessionizer.checkpoint(pipeline.full_checkpoint(epoch)),
                        sessionizer.open_sessions() as u64,
                        duplicates,
                    )
                    .unwrap_or_else(|e| stop(e.context("cannot write a checkpoint")));
                let open_sessions = open_sessions_table
                    .as_ref()
                    .filter(|_| !open_sessions_sent || sessionizer.open_changed())
                    .map(|table| {
                        let files = write_open_sessions(
                            &runtime,
                            table,
                            format!("{run_id}-w{index}-e{epoch}"),
                            sessionizer.open(),
                            sessionizer.watermark(),
                            epoch,
                        )
                        .unwrap_or_else(|e| {
                            stop(e.context("cannot write the open-sessions table's files"))
                        });
                        CommitPart::OpenSessions {
                            worker: index,
                            files,
                        }
                    });
                open_sessions_sent |= open_sessions.is_some();
                sessionizer.saved();
                if let Some(telemetry) = telemetry {
                    figures.checkpoint(telemetry, part.bytes, writing.elapsed());
                }
                if let Some(cap) = capability_for(&part_caps, Some(epoch)) {
                    let mut parts = parts_out.activate();
                    let mut session = parts.session(&cap);
                    session.give(CommitPart::Checkpoint(part));
                    session.give_iterator(open_sessions.into_iter());
                }
            }
            if !closing {
                closed_caps.downgrade(frontier.iter());
                part_caps.downgrade(frontier.iter());
            }
        }
    });
    Ok((closed_stream, parts_stream))
}

/// Hands events to the rules: those the watermark has passed, late ones within the correction
/// horizon, correct the rows given out before (`retracted`) with new ones (`closed`).
fn push_all(
    sessionizer: &mut Sessionizer,
    batches: &[WorkerEvents],
    closed: &mut Vec<ClosedSession>,
    retracted: &mut Vec<ClosedSession>,
) {
    for e in batches.iter().flat_map(|batch| batch.events.iter()) {
        let SessionEvent {
            user_id,
            event_id,
            page_name: page,
            event_time_ms: time_ms,
            ..
        } = e;
        if time_ms >= sessionizer.watermark() {
            sessionizer.push(user_id, event_id, page, time_ms, e.boundary);
        } else if !sessionizer.can_correct(time_ms)
            || !sessionizer.correct(
                user_id, event_id, page, time_ms, e.boundary, closed, retracted,
            )
        {
            // The stampers send only events within the horizon, and histories cover it; only a
            // user whose open session was restored from an older release's checkpoint lacks one.
            tracing::warn!(
                user_id,
                event_id,
                time_ms,
                watermark_ms = sessionizer.watermark(),
                "a late event cannot correct its session: its session was restored from a \
                 checkpoint without the events it holds; the event is left out"
            );
        }
    }
}

/// A capability at `epoch` (or, without one, at the earliest epoch held), derived from the
/// capabilities held since the previous frontier.
fn capability_for(
    capabilities: &CapabilitySet<Time>,
    epoch: Option<u64>,
) -> Option<Capability<Time>> {
    let earliest = capabilities
        .iter()
        .map(|c| *c.time())
        .min_by_key(|t| t.epoch)?;
    let epoch = epoch.unwrap_or(earliest.epoch).max(earliest.epoch);
    Some(capabilities.delayed(&Time::new(epoch, earliest.watermark)))
}
