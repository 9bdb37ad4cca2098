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

/// An on-time event, routed to the worker that owns its user.
///
/// ```
/// use sessionize::dataflow::SessionEvent;
/// use sessionize::rules::Boundary;
/// let e = SessionEvent::new(3, "u1", "e1", Some("home"), 1_700_000_000_000, Boundary::default());
/// assert_eq!((e.user_id(), e.event_id(), e.page_name()), ("u1", "e1", Some("home")));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEvent {
    /// `bucket(user_id)`, computed where the event is parsed, off the stamper's path.
    pub bucket: u32,
    pub event_time_ms: u64,
    /// What the event does under `--end-session-on` / `--start-session-on`, decided where it is
    /// parsed, so that only two flags travel instead of the fields the rules read.
    pub boundary: Boundary,
    /// The user id, event id and page name one after another: one allocation per event on the
    /// path every event takes, not three.
    text: String,
    user_len: u32,
    event_id_len: u32,
    has_page: bool,
}

impl SessionEvent {
    pub fn new(
        bucket: u32,
        user_id: &str,
        event_id: &str,
        page_name: Option<&str>,
        event_time_ms: u64,
        boundary: Boundary,
    ) -> Self {
        let page = page_name.unwrap_or_default();
        let mut text = String::with_capacity(user_id.len() + event_id.len() + page.len());
        for part in [user_id, event_id, page] {
            text.push_str(part);
        }
        let length =
            |part: &str| u32::try_from(part.len()).expect("an event's field is under 4 GiB");
        SessionEvent {
            bucket,
            event_time_ms,
            boundary,
            user_len: length(user_id),
            event_id_len: length(event_id),
            has_page: page_name.is_some(),
            text,
        }
    }

    pub fn user_id(&self) -> &str {
        &self.text[..self.user_len as usize]
    }

    pub fn event_id(&self) -> &str {
        &self.text[self.user_len as usize..self.page_at()]
    }

    pub fn page_name(&self) -> Option<&str> {
        self.has_page.then(|| &self.text[self.page_at()..])
    }

    fn page_at(&self) -> usize {
        (self.user_len + self.event_id_len) as usize
    }
}

/// A chunk after parsing: each non-blank line's position and outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParsedChunk {
    pub chunk: Chunk,
    pub lines: Vec<ParsedLine>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParsedLine {
    /// Byte range of the line within the chunk.
    pub start: usize,
    pub end: usize,
    /// Byte offset of a line in its file, or a Kafka record's offset.
    pub offset: u64,
    pub line_number: u64,
    pub event: Result<SessionEvent, String>,
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
    partition_or_bucket as usize % peers == index
}
