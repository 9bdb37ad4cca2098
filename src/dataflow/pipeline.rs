//! The assembly: read -> parse -> stamp -> sessionize -> write -> commit, on one worker.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use timely::dataflow::operators::vec::{Broadcast, Map};
use timely::dataflow::operators::{Concat, Probe};
use timely::dataflow::{ProbeHandle, Scope};

use crate::commit::RunTotals;
use crate::rules::ClosedSession;
use crate::sink::tables::{self, LateEvent, QuarantinedLine, TableKind};

use super::commit::commit;
use super::parse::parse;
use super::read::{Alignment, Reading, open_readers, read_chunks};
use super::sessionize::sessionize;
use super::stamp::{Stamped, stamp};
use super::time::Time;
use super::types::{CommitPart, WorkerContext};
use super::write::write_table;

/// Builds the pipeline in `scope`; returns a probe that is done when everything is committed,
/// and the totals the committer (worker 0) records.
pub(super) fn build_pipeline(
    scope: Scope<'_, Time>,
    context: &WorkerContext,
) -> Result<(ProbeHandle<Time>, Arc<Mutex<RunTotals>>)> {
    let config = &context.config;
    let committed = ProbeHandle::new();
    let consumed = ProbeHandle::new();
    let totals = Arc::new(Mutex::new(RunTotals::default()));

    // Each stamped partition's watermark, and the lowest over every worker: the readers pause
    // partitions that run too far ahead.
    let watermarks = Rc::new(RefCell::new(HashMap::new()));
    let reading = Rc::new(RefCell::new(Reading::default()));
    let stamped_low = ProbeHandle::new();
    let readers = open_readers(context, scope.index(), scope.peers())?;
    let partitions = readers.partitions();
    let alignment = Alignment {
        watermarks: Rc::clone(&watermarks),
        low: stamped_low.clone(),
        reading: Rc::clone(&reading),
    };
    let chunks = read_chunks(scope, readers, config, consumed.clone(), alignment);
    let parsed = parse(chunks, config);
    let (stamped, consumed_marker) = stamp(
        parsed,
        context,
        &partitions,
        committed.clone(),
        (watermarks, reading),
    );
    consumed_marker.probe_with(&consumed);

    let Stamped {
        on_time,
        quarantined,
        late,
        positions,
    } = stamped;
    let on_time = on_time.probe_with(&stamped_low);
    let (sessions, checkpoints) = sessionize(on_time, positions.clone().broadcast(), context)?;
    let user_hash_buckets = config.user_hash_buckets;
    let session_files = write_table(sessions, TableKind::Sessions, context, {
        move |schema, rows: &[ClosedSession], epoch| {
            tables::sessions_batch(schema, rows, epoch, user_hash_buckets)
        }
    });
    let names = Arc::clone(config);
    let quarantine_files = write_table(quarantined, TableKind::Quarantine, context, {
        move |schema, rows: &[QuarantinedLine], epoch| {
            tables::quarantine_batch(schema, rows, epoch, &|p| names.source_name(p).to_string())
        }
    });
    let names = Arc::clone(config);
    let late_files = write_table(late, TableKind::LateEvents, context, {
        move |schema, rows: &[LateEvent], epoch| {
            tables::late_events_batch(schema, rows, epoch, &|p| names.source_name(p).to_string())
        }
    });
    let parts = session_files
        .concat(quarantine_files)
        .concat(late_files)
        .concat(positions.map(|p| {
            let counts = p.counts;
            CommitPart::Position(p, counts)
        }))
        .concat(checkpoints);
    commit(parts, context, Arc::clone(&totals)).probe_with(&committed);
    Ok((committed, totals))
}
