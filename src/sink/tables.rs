//! The three output tables: their Iceberg schemas, partition specs and Arrow conversions.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{
    ArrayRef, Date32Array, Int32Array, Int64Array, LargeBinaryArray, RecordBatch, StringArray,
    TimestampMicrosecondArray, new_null_array,
};
use arrow_schema::{DataType, SchemaRef as ArrowSchemaRef};
use iceberg::spec::{
    ListType, NestedField, PrimitiveType, Schema, Transform, Type, UnboundPartitionSpec,
};
use serde::{Deserialize, Serialize};

use super::murmur3::murmur3_32;
use super::spark::{user_hash_bucket, utc_day};
use crate::rules::{ClosedSession, OpenSessionView};

/// A line that could not be parsed as an event, kept with its exact bytes and position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantinedLine {
    pub raw: Vec<u8>,
    pub reason: String,
    pub partition: u32,
    /// Byte offset of the line in its file (or the record offset in its Kafka partition).
    pub offset: u64,
    /// 1-based line number in its file.
    pub line_number: u64,
}

/// A valid event that came after its partition's watermark had passed its time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateEvent {
    pub user_id: String,
    pub event_id: String,
    pub event_time_ms: u64,
    /// The watermark of the event's partition when it arrived.
    pub watermark_ms: u64,
    pub raw: String,
    pub partition: u32,
    pub offset: u64,
    pub line_number: u64,
}

/// Which table: the three that keep what the input made, or the one that shows the sessions
/// open now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TableKind {
    Sessions,
    Quarantine,
    LateEvents,
    /// Replaced at every commit (`--open-sessions-table`), never appended to: not in [`Self::ALL`].
    OpenSessions,
}

impl TableKind {
    /// The tables whose commits are the pipeline's exactly-once record.
    pub const ALL: [TableKind; 3] = [
        TableKind::Sessions,
        TableKind::Quarantine,
        TableKind::LateEvents,
    ];

    /// The table's name, given the sessions table's name.
    pub fn table_name(self, sessions_table: &str) -> String {
        match self {
            TableKind::Sessions => sessions_table.to_string(),
            TableKind::Quarantine => format!("{sessions_table}_quarantine"),
            TableKind::LateEvents => format!("{sessions_table}_late_events"),
            TableKind::OpenSessions => format!("{sessions_table}_open"),
        }
    }

    pub fn schema(self) -> Schema {
        use PrimitiveType::{Binary, Date, Int, Long, String, Timestamptz};
        let required =
            |id, name: &str, ty| Arc::new(NestedField::required(id, name, Type::Primitive(ty)));
        // The columns a session has open or closed, at the same ids in both tables.
        let session = || {
            vec![
                required(1, "user_id", String),
                required(2, "session_id", String),
                required(3, "session_start", Timestamptz),
                required(4, "session_start_time_ms", Long),
                required(7, "event_count", Long),
                Arc::new(NestedField::required(
                    8,
                    "pages_visited",
                    Type::List(ListType::new(Arc::new(NestedField::list_element(
                        10,
                        Type::Primitive(String),
                        true,
                    )))),
                )),
            ]
        };
        let fields = match self {
            TableKind::Sessions => {
                let mut fields = session();
                fields.insert(4, required(5, "session_end_time_ms", Long));
                fields.insert(5, required(6, "session_duration_seconds", Long));
                fields.extend([
                    required(9, "end_reason", String),
                    // The Spark job's own columns, so that its users' queries run unchanged.
                    required(11, "session_date", Date),
                    required(12, "user_hash_bucket", Int),
                    // The epoch whose commit replaced the row after a late event changed the
                    // session; null for a row as first written.
                    Arc::new(NestedField::optional(
                        15,
                        "corrected_at_epoch",
                        Type::Primitive(Long),
                    )),
                ]);
                fields
            }
            TableKind::Quarantine => vec![
                required(1, "raw", Binary),
                required(2, "reason", String),
                required(3, "source", String),
                required(4, "partition", Int),
                required(5, "offset", Long),
                required(6, "line_number", Long),
                required(7, "epoch", Long),
            ],
            TableKind::LateEvents => vec![
                required(1, "user_id", String),
                required(2, "event_id", String),
                required(3, "event_time_ms", Long),
                required(4, "watermark_ms", Long),
                required(5, "raw", String),
                required(6, "source", String),
                required(7, "partition", Int),
                required(8, "offset", Long),
                required(9, "line_number", Long),
                required(10, "epoch", Long),
            ],
            TableKind::OpenSessions => {
                let mut fields = session();
                fields.insert(4, required(5, "last_event_time_ms", Long));
                fields.extend([
                    // Every event before it is in the row: how current the row is.
                    required(13, "watermark_ms", Long),
                    required(14, "epoch", Long),
                ]);
                fields
            }
        };
        Schema::builder()
            .with_fields(fields)
            .build()
            .expect("the table schemas are valid")
    }

    /// The columns a compacted file is sorted by, so that readers skip files and row groups by
    /// their bounds: a user's sessions in time, and side rows in their source's order.
    pub fn sort_columns(self) -> &'static [&'static str] {
        match self {
            TableKind::Sessions | TableKind::OpenSessions => &["user_id", "session_start_time_ms"],
            TableKind::Quarantine | TableKind::LateEvents => &["partition", "offset"],
        }
    }

    /// Sessions are partitioned by day of start and by user bucket, so that a day's sessions of
    /// one user live in one file per commit; the side tables are small and unpartitioned.
    pub fn partition_spec(self, buckets: u32) -> UnboundPartitionSpec {
        // With its id: REST catalogs (Iceberg's Java server) require one in a create request.
        let builder = UnboundPartitionSpec::builder().with_spec_id(0);
        match self {
            TableKind::Sessions => builder
                .add_partition_field(3, "session_start_day", Transform::Day)
                .and_then(|b| {
                    b.add_partition_field(1, "user_id_bucket", Transform::Bucket(buckets))
                })
                .expect("the sessions partition spec is valid")
                .build(),
            TableKind::Quarantine | TableKind::LateEvents | TableKind::OpenSessions => {
                builder.build()
            }
        }
    }
}

/// A row of the sessions table that a correction replaces, as it was written: its user and start
/// find its partition (day of start, bucket of user) and its id, and the other columns tell it
/// from the row that replaces it, which keeps the id when the start did not move.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RetractedSession {
    pub user_id: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub event_count: u64,
    pub pages_visited: Vec<String>,
    pub end_reason: String,
}

impl RetractedSession {
    pub fn session_id(&self) -> uuid::Uuid {
        crate::rules::session_id(&self.user_id, self.start_ms)
    }
}

impl From<&ClosedSession> for RetractedSession {
    fn from(row: &ClosedSession) -> Self {
        RetractedSession {
            user_id: row.user_id.to_string(),
            start_ms: row.start_ms,
            end_ms: row.end_ms,
            event_count: row.event_count,
            pages_visited: row.pages_visited.iter().map(|p| p.to_string()).collect(),
            end_reason: row.end_reason.as_str().to_string(),
        }
    }
}

/// Arrow record batches for the sessions table; `user_hash_buckets` is the Spark job's `N` in
/// `abs(hash(user_id)) % N`.
pub fn sessions_batch(
    schema: &ArrowSchemaRef,
    rows: &[ClosedSession],
    epoch: u64,
    user_hash_buckets: u32,
) -> RecordBatch {
    let longs = |f: &dyn Fn(&ClosedSession) -> u64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| f(r) as i64),
        ))
    };
    let pages = pages_column(schema, rows.iter().map(|r| &r.pages_visited[..]));
    let columns: [ArrayRef; 12] = [
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &*r.user_id),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.session_id().to_string()),
        )),
        session_start(rows.iter().map(|r| r.start_ms)),
        longs(&|r| r.start_ms),
        longs(&|r| r.end_ms),
        longs(&|r| r.duration_seconds()),
        longs(&|r| r.event_count),
        pages,
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.end_reason.as_str()),
        )),
        Arc::new(Date32Array::from_iter_values(
            rows.iter().map(|r| utc_day(r.start_ms)),
        )),
        Arc::new(Int32Array::from_iter_values(
            rows.iter()
                .map(|r| user_hash_bucket(&r.user_id, user_hash_buckets)),
        )),
        Arc::new(Int64Array::from_iter(
            rows.iter().map(|r| r.corrected.then_some(epoch as i64)),
        )),
    ];
    fit(schema, TableKind::Sessions, columns.into(), rows.len())
}

/// Arrow record batches for the open-sessions table: `rows` as of `watermark_ms`, at the end of
/// `epoch`.
pub fn open_sessions_batch(
    schema: &ArrowSchemaRef,
    rows: &[OpenSessionView<'_>],
    watermark_ms: u64,
    epoch: u64,
) -> RecordBatch {
    let longs = |f: &dyn Fn(&OpenSessionView<'_>) -> u64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| f(r) as i64),
        ))
    };
    let columns: [ArrayRef; 9] = [
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.user_id),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.session_id().to_string()),
        )),
        session_start(rows.iter().map(|r| r.start_ms)),
        longs(&|r| r.start_ms),
        longs(&|r| r.last_ms),
        longs(&|r| r.event_count),
        pages_column(schema, rows.iter().map(|r| r.pages_visited)),
        longs(&|_| watermark_ms),
        longs(&|_| epoch),
    ];
    fit(schema, TableKind::OpenSessions, columns.into(), rows.len())
}

/// The `session_start` column: times in epoch ms as UTC timestamps.
fn session_start(starts_ms: impl Iterator<Item = u64>) -> ArrayRef {
    let micros = starts_ms.map(|ms| ms as i64 * 1000);
    Arc::new(TimestampMicrosecondArray::from_iter_values(micros).with_timezone("+00:00"))
}

/// The `pages_visited` column of `schema` holding `pages`, row by row.
fn pages_column<'a>(
    schema: &ArrowSchemaRef,
    pages: impl Iterator<Item = &'a [Rc<str>]>,
) -> ArrayRef {
    let element_field = match schema
        .field_with_name("pages_visited")
        .map(|f| f.data_type())
    {
        Ok(DataType::List(field)) => field.clone(),
        other => panic!("pages_visited is a list in the table's schema, not {other:?}"),
    };
    let mut column = ListBuilder::new(StringBuilder::new()).with_field(element_field);
    for row in pages {
        for page in row {
            column.values().append_value(page);
        }
        column.append(true);
    }
    Arc::new(column.finish())
}

/// The batch for a table whose schema is `schema`, from `columns` in the order of our own schema
/// ([`TableKind::schema`]): matched by name, so that a table evolved by other tools (columns
/// added or moved) is written too; columns that are not ours get nulls.
fn fit(
    schema: &ArrowSchemaRef,
    kind: TableKind,
    columns: Vec<ArrayRef>,
    rows: usize,
) -> RecordBatch {
    let ours = kind.schema();
    let mut by_name: HashMap<&str, ArrayRef> = ours
        .as_struct()
        .fields()
        .iter()
        .map(|f| f.name.as_str())
        .zip(columns)
        .collect();
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            by_name
                .remove(field.name().as_str())
                .unwrap_or_else(|| new_null_array(field.data_type(), rows))
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns)
        .unwrap_or_else(|e| panic!("columns follow the {kind:?} table's checked schema: {e}"))
}

/// Arrow record batches for the quarantine table.
pub fn quarantine_batch(
    schema: &ArrowSchemaRef,
    rows: &[QuarantinedLine],
    epoch: u64,
    source_name: &dyn Fn(u32) -> String,
) -> RecordBatch {
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(LargeBinaryArray::from_iter_values(
            rows.iter().map(|r| &r.raw),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.reason),
        )),
    ];
    let origins: Vec<_> = rows
        .iter()
        .map(|r| (r.partition, r.offset, r.line_number))
        .collect();
    columns.extend(origin_columns(&origins, epoch, source_name));
    fit(schema, TableKind::Quarantine, columns, rows.len())
}

/// Arrow record batches for the late-events table.
pub fn late_events_batch(
    schema: &ArrowSchemaRef,
    rows: &[LateEvent],
    epoch: u64,
    source_name: &dyn Fn(u32) -> String,
) -> RecordBatch {
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.user_id),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.event_id),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.event_time_ms as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.watermark_ms as i64),
        )),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.raw))),
    ];
    let origins: Vec<_> = rows
        .iter()
        .map(|r| (r.partition, r.offset, r.line_number))
        .collect();
    columns.extend(origin_columns(&origins, epoch, source_name));
    fit(schema, TableKind::LateEvents, columns, rows.len())
}

/// The columns that say where a side-table row came from, the same in both side tables: source,
/// partition, offset, line number and commit epoch. `origins` are (partition, offset, line number).
fn origin_columns(
    origins: &[(u32, u64, u64)],
    epoch: u64,
    source_name: &dyn Fn(u32) -> String,
) -> [ArrayRef; 5] {
    [
        Arc::new(StringArray::from_iter_values(
            origins.iter().map(|o| source_name(o.0)),
        )),
        Arc::new(Int32Array::from_iter_values(
            origins.iter().map(|o| o.0 as i32),
        )),
        Arc::new(Int64Array::from_iter_values(
            origins.iter().map(|o| o.1 as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            origins.iter().map(|o| o.2 as i64),
        )),
        Arc::new(Int64Array::from_value(epoch as i64, origins.len())),
    ]
}

/// The bucket of `user_id` under Iceberg's `bucket[n]` transform (Murmur3 of the UTF-8 bytes).
pub fn user_bucket(user_id: &str, buckets: u32) -> u32 {
    ((murmur3_32(user_id.as_bytes(), 0) as i32 & i32::MAX) as u32) % buckets
}
