//! The records that travel between the operators, and what every operator may take from outside
//! the dataflow. Operators import from here, never from the assembly (`mod.rs`).

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use iceberg::table::Table;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::OutputBuilder;

use super::time::Time;
use crate::commit::{
    BufferedOutput, CheckpointPart, CheckpointStore, SourceCounts, SourcePosition, StartState,
};
use crate::config::PipelineConfig;
use crate::rules::Boundary;
use crate::sink::{RetractedSession, TableKind, Warehouse};
use crate::source::file::Chunk;

/// An output of an operator built with [`timely::dataflow::operators::generic::builder_rc`].
pub(super) type Out<D> = OutputBuilder<Time, CapacityContainerBuilder<Vec<D>>>;

/// Parsed events, their texts in one buffer: parsing and stamping a chunk allocate per chunk, not
/// per event, and the exchange to the users' workers moves one batch per chunk and worker.
///
/// ```
/// use sessionize::dataflow::Events;
/// use sessionize::rules::Boundary;
/// let mut events = Events::default();
/// let at = events.push(3, "u1", "e1", Some("home"), 1_700_000_000_000, Boundary::default());
/// let e = events.get(at);
/// assert_eq!((e.bucket, e.user_id, e.event_id, e.page_name), (3, "u1", "e1", Some("home")));
/// assert_eq!(events.iter().count(), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Events {
    records: Vec<EventRecord>,
    /// Each event's user id, event id and page name, one after another.
    text: String,
}

/// An event of [`Events`]: where its texts are, and the rest of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct EventRecord {
    /// `bucket(user_id)`, computed where the event is parsed, off the stamper's path.
    bucket: u32,
    text_at: u32,
    user_len: u32,
    event_id_len: u32,
    page_len: u32,
    has_page: bool,
    /// What the event does under `--end-session-on` / `--start-session-on`, decided where it is
    /// parsed, so that only two flags travel instead of the fields the rules read.
    boundary: Boundary,
    event_time_ms: u64,
}

/// An event of [`Events`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionEvent<'a> {
    pub bucket: u32,
    pub user_id: &'a str,
    pub event_id: &'a str,
    pub page_name: Option<&'a str>,
    pub event_time_ms: u64,
    pub boundary: Boundary,
}

impl Events {
    /// Adds an event; returns its index.
    pub fn push(
        &mut self,
        bucket: u32,
        user_id: &str,
        event_id: &str,
        page_name: Option<&str>,
        event_time_ms: u64,
        boundary: Boundary,
    ) -> u32 {
        // A batch holds one chunk's events at most, whose texts are within the chunk.
        let length = |bytes: usize| u32::try_from(bytes).expect("a batch of events is under 4 GiB");
        let page = page_name.unwrap_or_default();
        let record = EventRecord {
            bucket,
            text_at: length(self.text.len()),
            user_len: length(user_id.len()),
            event_id_len: length(event_id.len()),
            page_len: length(page.len()),
            has_page: page_name.is_some(),
            boundary,
            event_time_ms,
        };
        for part in [user_id, event_id, page] {
            self.text.push_str(part);
        }
        self.records.push(record);
        length(self.records.len() - 1)
    }

    /// Adds a copy of an event of another batch.
    pub fn push_event(&mut self, e: SessionEvent<'_>) -> u32 {
        self.push(
            e.bucket,
            e.user_id,
            e.event_id,
            e.page_name,
            e.event_time_ms,
            e.boundary,
        )
    }

    /// The event at `index`, as [`push`](Self::push) returned it.
    pub fn get(&self, index: u32) -> SessionEvent<'_> {
        self.view(&self.records[index as usize])
    }

    pub fn iter(&self) -> impl Iterator<Item = SessionEvent<'_>> {
        self.records.iter().map(|record| self.view(record))
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn view(&self, record: &EventRecord) -> SessionEvent<'_> {
        let user_at = record.text_at as usize;
        let event_id_at = user_at + record.user_len as usize;
        let page_at = event_id_at + record.event_id_len as usize;
        SessionEvent {
            bucket: record.bucket,
            user_id: &self.text[user_at..event_id_at],
            event_id: &self.text[event_id_at..page_at],
            page_name: record
                .has_page
                .then(|| &self.text[page_at..page_at + record.page_len as usize]),
            event_time_ms: record.event_time_ms,
            boundary: record.boundary,
        }
    }
}

/// A stamped chunk's on-time events whose users `worker` owns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerEvents {
    pub worker: u32,
    pub events: Events,
}

/// A chunk after parsing: each non-blank line's position and outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParsedChunk {
    pub chunk: Chunk,
    pub lines: Vec<ParsedLine>,
    /// The events of the lines that parsed.
    pub events: Events,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParsedLine {
    /// Byte range of the line within the chunk.
    pub start: usize,
    pub end: usize,
    /// Byte offset of a line in its file, or a Kafka record's offset.
    pub offset: u64,
    pub line_number: u64,
    /// The index of its event in the chunk's `events`, or why the line was rejected.
    pub event: Result<u32, String>,
}

/// What the committer gathers for an epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CommitPart {
    Files {
        table: TableKind,
        files: Vec<String>,
        rows: u64,
        /// For sessions: the events they hold.
        events: u64,
    },
    /// A partition's position, and what it saw since the last: the position's own `counts` are
    /// not serialized (they are no part of what a commit records), so across processes they
    /// travel beside it.
    Position(SourcePosition, SourceCounts),
    Checkpoint(CheckpointPart),
    /// A worker's open sessions at the end of the epoch, in these files of the open-sessions
    /// table (none: it has none); sent when they changed, and at a run's first epoch.
    OpenSessions {
        worker: usize,
        files: Vec<String>,
    },
    /// Rows of the sessions table that corrections replaced in the epoch: the epoch's commit
    /// removes them, wherever they are (earlier commits' files or the epoch's own).
    Retractions(Vec<RetractedSession>),
}

/// What one worker needs from outside the dataflow.
pub struct WorkerContext {
    pub config: Arc<PipelineConfig>,
    pub runtime: Rc<tokio::runtime::Runtime>,
    pub warehouse: Rc<Warehouse>,
    pub tables: HashMap<TableKind, Table>,
    /// Unique per run; names data files and checkpoints, and marks this run's commits.
    pub run_id: String,
    pub start: Arc<StartState>,
    pub store: Arc<CheckpointStore>,
    /// The output this process's writers hold per epoch, which may end an epoch early.
    pub buffered: Arc<BufferedOutput>,
}

/// The owner of partition `p` is worker `p % peers`: it reads it and stamps it. The owner of
/// bucket `b` is worker `b % peers`: it sessionizes the bucket's users and writes their files.
pub(super) fn owns(partition_or_bucket: u32, index: usize, peers: usize) -> bool {
    owner(partition_or_bucket, peers) == index
}

/// The worker that owns partition or bucket `partition_or_bucket`; see [`owns`].
pub(super) fn owner(partition_or_bucket: u32, peers: usize) -> usize {
    partition_or_bucket as usize % peers
}
