//! Committing: worker 0 gathers each epoch's parts and, once the frontier has passed the epoch,
//! hands them to the [`Committer`].

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use super::time::Time;
use super::types::{CommitPart, WorkerContext};
use crate::commit::{Committer, EpochParts, RunTotals};
use crate::failure::stop;
use crate::sink::TableKind;

/// Parts of one epoch waiting for the frontier to pass it.
#[derive(Default)]
struct PendingEpoch {
    parts: EpochParts,
    capability: Option<Capability<Time>>,
}

/// Worker 0 commits each epoch once the frontier has passed it; see [`crate::commit::protocol`]
/// for the order of the steps and why a kill between any two of them loses and doubles nothing.
///
/// ```text
/// parts (files, positions, checkpoint parts) ─exchange(0)─► Commit ─► committed epochs
/// ```
pub(super) fn commit<'scope>(
    parts: StreamVec<'scope, Time, CommitPart>,
    context: &WorkerContext,
    totals: Rc<RefCell<RunTotals>>,
) -> StreamVec<'scope, Time, u64> {
    let peers = parts.scope().peers();
    let committing = parts.scope().index() == 0;
    let mut committer = Committer::new(
        Rc::clone(&context.runtime),
        Rc::clone(&context.warehouse),
        Arc::clone(&context.store),
        Arc::clone(&context.config),
        context.run_id.clone(),
        context.tables.clone(),
        (
            context.start.last_commit.clone(),
            context.start.positions.clone(),
            context.start.topic.clone(),
        ),
    );
    parts.unary_frontier(
        Exchange::new(|_: &CommitPart| 0),
        "Commit",
        move |_initial, _info| {
            let mut pending: BTreeMap<u64, PendingEpoch> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let time = *cap.stamp().iter().next().expect("data has a time");
                    let pending = pending.entry(time.epoch).or_default();
                    if pending.capability.is_none() {
                        pending.capability = Some(cap.delayed(&time, 0));
                    }
                    let epoch = &mut pending.parts;
                    for part in data.drain(..) {
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
                            CommitPart::Position(p) => epoch.positions.push(p),
                            CommitPart::Checkpoint(part) => epoch.checkpoint.push(part),
                        }
                    }
                });
                let frontier = frontier.frontier();
                while let Some((&epoch, _)) = pending.first_key_value() {
                    if !frontier.iter().all(|t| t.epoch > epoch) {
                        break;
                    }
                    let PendingEpoch { parts, capability } =
                        pending.remove(&epoch).expect("first key");
                    if parts.checkpoint.len() != peers {
                        // Only an epoch without positions lacks checkpoints: nothing to commit.
                        assert!(
                            parts.positions.is_empty(),
                            "epoch {epoch} lacks checkpoint parts"
                        );
                        continue;
                    }
                    let mut totals = totals.borrow_mut();
                    committer
                        .commit_epoch(epoch, &parts, &mut totals)
                        .unwrap_or_else(|e| {
                            stop(e.context(format!("commit of epoch {epoch} failed")))
                        });
                    if let Some(cap) = capability {
                        output.session(&cap).give(epoch);
                    }
                }
                if committing && frontier.is_empty() {
                    committer.finish(&mut totals.borrow_mut());
                }
            }
        },
    )
}
