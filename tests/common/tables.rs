//! Reading the tables back, through the iceberg crate (or pyiceberg), and comparing them with the
//! reference.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;

use arrow_array::{Array, Int32Array, Int64Array, ListArray, RecordBatch, StringArray};
use futures::TryStreamExt;
use sessionize::sink::Warehouse;
use sessionize::sink::catalog::CatalogSettings;
use sessionize::sink::tables::TableKind;
use sessionize::storage::Location;

use super::{Expected, OpenRow, Position, SessionRow, assert_success};

/// What the three tables hold, read back through the iceberg crate.
#[derive(Debug, PartialEq, Eq)]
pub struct Actual {
    pub sessions: Vec<SessionRow>,
    /// (partition, line number) of quarantined lines.
    pub quarantined: Vec<(i32, i64)>,
    /// (partition, line number, watermark) of late events.
    pub late: Vec<(i32, i64, i64)>,
    /// (partition, offset) of quarantined lines.
    pub quarantined_offsets: Vec<(i32, i64)>,
    /// (partition, offset, watermark) of late events.
    pub late_offsets: Vec<(i32, i64, i64)>,
    pub epoch_summary: Option<String>,
    /// The newest sessions snapshot's summary.
    pub summary: HashMap<String, String>,
    /// How many snapshots of the sessions table are kept.
    pub snapshots: usize,
}

impl Actual {
    /// Every partition's next offset, as the newest sessions snapshot records it.
    pub fn next_offsets(&self) -> BTreeMap<u32, u64> {
        let positions: BTreeMap<String, serde_json::Value> = self
            .summary
            .get("sessionize.positions")
            .map(|json| serde_json::from_str(json).unwrap())
            .unwrap_or_default();
        positions
            .into_iter()
            .map(|(p, v)| (p.parse().unwrap(), v["next_offset"].as_u64().unwrap()))
            .collect()
    }
}

/// Fails the test, naming `what`, unless the tables hold exactly what the reference says: the
/// side rows at the positions it names them by, and the sessions row for row.
#[track_caller]
pub fn assert_tables_equal(actual: &Actual, expected: &Expected, what: &str) {
    let (quarantined, late) = match expected.position {
        Position::LineNumber => (&actual.quarantined, &actual.late),
        Position::Offset => (&actual.quarantined_offsets, &actual.late_offsets),
    };
    // The short comparison first: the tables' row counts say more than a diff of thousands of
    // rows, and where missing sessions went (events counted late, lines quarantined).
    let counts = |sessions: usize, quarantined: usize, late: usize| {
        format!("{sessions} sessions, {quarantined} quarantined, {late} late")
    };
    assert_eq!(
        counts(actual.sessions.len(), quarantined.len(), late.len()),
        counts(
            expected.sessions.len(),
            expected.quarantined.len(),
            expected.late.len()
        ),
        "{what}: row counts"
    );
    assert_eq!(quarantined, &expected.quarantined, "{what}: quarantined");
    assert_eq!(late, &expected.late, "{what}: late");
    assert_eq!(actual.sessions, expected.sessions, "{what}: sessions");
}

pub fn read_tables(warehouse: &Path) -> Actual {
    read_tables_from(&CatalogSettings::default(), warehouse)
}

/// [`read_tables`] through the catalog `catalog`.
pub fn read_tables_from(catalog: &CatalogSettings, warehouse: impl Into<Location>) -> Actual {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let warehouse = open_warehouse(catalog, warehouse).await;
        let sessions_table = warehouse.load(TableKind::Sessions).await.unwrap();
        let snapshots = sessions_table.metadata().snapshots().len();
        // Our newest commit's record: compactions may be on top of it.
        let summary = sessionize::commit::record::newest_own_snapshot(&sessions_table)
            .map(|s| s.summary().additional_properties.clone())
            .unwrap_or_default();
        let epoch_summary = summary.get("sessionize.epoch").cloned();
        let mut sessions = Vec::new();
        for batch in scan(&warehouse, TableKind::Sessions).await {
            for row in 0..batch.num_rows() {
                sessions.push(SessionRow {
                    user_id: column::<StringArray>(&batch, "user_id").value(row).into(),
                    session_id: column::<StringArray>(&batch, "session_id")
                        .value(row)
                        .into(),
                    start_ms: column::<Int64Array>(&batch, "session_start_time_ms").value(row),
                    end_ms: column::<Int64Array>(&batch, "session_end_time_ms").value(row),
                    duration_s: column::<Int64Array>(&batch, "session_duration_seconds").value(row),
                    event_count: column::<Int64Array>(&batch, "event_count").value(row),
                    pages: pages_visited(&batch, row),
                    end_reason: column::<StringArray>(&batch, "end_reason")
                        .value(row)
                        .into(),
                });
            }
        }
        let mut quarantined = Vec::new();
        let mut quarantined_offsets = Vec::new();
        for batch in scan(&warehouse, TableKind::Quarantine).await {
            for row in 0..batch.num_rows() {
                let partition = column::<Int32Array>(&batch, "partition").value(row);
                quarantined.push((
                    partition,
                    column::<Int64Array>(&batch, "line_number").value(row),
                ));
                quarantined_offsets
                    .push((partition, column::<Int64Array>(&batch, "offset").value(row)));
            }
        }
        let mut late = Vec::new();
        let mut late_offsets = Vec::new();
        for batch in scan(&warehouse, TableKind::LateEvents).await {
            for row in 0..batch.num_rows() {
                let partition = column::<Int32Array>(&batch, "partition").value(row);
                let watermark = column::<Int64Array>(&batch, "watermark_ms").value(row);
                late.push((
                    partition,
                    column::<Int64Array>(&batch, "line_number").value(row),
                    watermark,
                ));
                late_offsets.push((
                    partition,
                    column::<Int64Array>(&batch, "offset").value(row),
                    watermark,
                ));
            }
        }
        sessions.sort();
        quarantined.sort();
        late.sort();
        quarantined_offsets.sort();
        late_offsets.sort();
        Actual {
            sessions,
            quarantined,
            late,
            quarantined_offsets,
            late_offsets,
            epoch_summary,
            summary,
            snapshots,
        }
    })
}

/// What the open-sessions table holds: its rows, each with the watermark it was taken at, and
/// how many snapshots it keeps.
pub struct OpenTable {
    pub rows: Vec<(i64, OpenRow)>,
    pub snapshots: usize,
}

/// The open-sessions table (`user_sessions_open`), read through `catalog`.
pub fn read_open_sessions(catalog: &CatalogSettings, warehouse: impl Into<Location>) -> OpenTable {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let warehouse = open_warehouse(catalog, warehouse).await;
        let mut rows = Vec::new();
        for batch in scan(&warehouse, TableKind::OpenSessions).await {
            for row in 0..batch.num_rows() {
                let watermark = column::<Int64Array>(&batch, "watermark_ms").value(row);
                let open = OpenRow {
                    user_id: column::<StringArray>(&batch, "user_id").value(row).into(),
                    session_id: column::<StringArray>(&batch, "session_id")
                        .value(row)
                        .into(),
                    start_ms: column::<Int64Array>(&batch, "session_start_time_ms").value(row),
                    last_ms: column::<Int64Array>(&batch, "last_event_time_ms").value(row),
                    event_count: column::<Int64Array>(&batch, "event_count").value(row),
                    pages: pages_visited(&batch, row),
                };
                rows.push((watermark, open));
            }
        }
        rows.sort();
        let table = warehouse.load(TableKind::OpenSessions).await.unwrap();
        OpenTable {
            rows,
            snapshots: table.metadata().snapshots().len(),
        }
    })
}

/// The default tables' warehouse through `catalog`.
async fn open_warehouse(catalog: &CatalogSettings, warehouse: impl Into<Location>) -> Warehouse {
    Warehouse::open(catalog, warehouse, "sessions", "user_sessions")
        .await
        .unwrap()
        .with_open_sessions_table(Some("user_sessions_open".into()))
}

async fn scan(warehouse: &Warehouse, kind: TableKind) -> Vec<RecordBatch> {
    let table = warehouse.load(kind).await.unwrap();
    if table.metadata().current_snapshot().is_none() {
        return Vec::new();
    }
    let stream = table
        .scan()
        .select_all()
        .build()
        .unwrap()
        .to_arrow()
        .await
        .unwrap();
    stream.try_collect().await.unwrap()
}

/// The `pages_visited` of a row.
fn pages_visited(batch: &RecordBatch, row: usize) -> Vec<String> {
    let pages = column::<ListArray>(batch, "pages_visited").value(row);
    let pages = pages.as_any().downcast_ref::<StringArray>().unwrap();
    (0..pages.len())
        .map(|i| pages.value(i).to_string())
        .collect()
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> &'a T {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name}"))
        .as_any()
        .downcast_ref::<T>()
        .unwrap_or_else(|| panic!("type of column {name}"))
}

/// Runs a Python snippet with pyiceberg against `warehouse`'s catalog (as `catalog`); returns
/// what it printed.
pub fn pyiceberg(warehouse: &Path, script: &str) -> String {
    let root = warehouse.canonicalize().unwrap();
    let prelude = format!(
        "from pyiceberg.catalog.sql import SqlCatalog\n\
         catalog = SqlCatalog('default', uri='sqlite:///{root}/catalog.db', warehouse='file://{root}')\n",
        root = root.display()
    );
    let output = Command::new("python3")
        .arg("-c")
        .arg(format!("{prelude}{script}"))
        .output()
        .unwrap();
    assert_success(&output, "pyiceberg");
    String::from_utf8(output.stdout).unwrap()
}
