//! The Iceberg side: the embedded SQL catalog, table creation, Parquet data files and commits.

use std::collections::HashMap;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef as ArrowSchemaRef;
use iceberg::arrow::{RecordBatchPartitionSplitter, schema_to_arrow_schema};
use iceberg::spec::{
    DataFile, DataFileFormat, FormatVersion, NestedFieldRef, Schema, Snapshot, SnapshotRef,
    TableProperties, Type, deserialize_data_file_from_json, serialize_data_file_to_json,
};
use iceberg::table::Table;
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use iceberg::{Catalog, Namespace, NamespaceIdent, TableCommit, TableCreation, TableIdent};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use super::catalog::CatalogSettings;
use super::tables::TableKind;
use crate::failure::TwoWriters;
use crate::storage::Location;

/// Snapshot-summary keys under which each commit records where the pipeline stands.
pub mod summary {
    pub const EPOCH: &str = "sessionize.epoch";
    pub const WATERMARK_MS: &str = "sessionize.watermark-ms";
    pub const POSITIONS: &str = "sessionize.positions";
    pub const CHECKPOINT: &str = "sessionize.checkpoint";
    /// The session rules the table was written under ([`crate::config::PipelineConfig::rules_record`]).
    pub const RULES: &str = "sessionize.rules";
    /// The run that committed the snapshot: a run that finds another run's commit on top of its
    /// own stops, since two pipelines are writing one table.
    pub const RUN_ID: &str = "sessionize.run-id";
}

/// The tables' catalog and the warehouse directory: by default a SQLite catalog at
/// `<warehouse>/catalog.db`, readable by pyiceberg's
/// `SqlCatalog("default", uri="sqlite:///<warehouse>/catalog.db", ...)`; see [`CatalogSettings`].
pub struct Warehouse {
    catalog: Arc<dyn Catalog>,
    namespace: NamespaceIdent,
    sessions_table: String,
}

impl Warehouse {
    /// Opens the catalog `settings` name, with new data under `root` (created if needed). Must run
    /// inside a tokio runtime.
    pub async fn open(
        settings: &CatalogSettings,
        root: impl Into<Location>,
        database: &str,
        sessions_table: &str,
    ) -> Result<Self> {
        let root = match root.into() {
            Location::Local(path) => {
                std::fs::create_dir_all(&path).with_context(|| {
                    format!("cannot create the warehouse directory {}", path.display())
                })?;
                Location::Local(path.canonicalize().with_context(|| {
                    format!("cannot resolve the warehouse path {}", path.display())
                })?)
            }
            s3 => s3,
        };
        let kind = settings.kind(&root)?;
        // A catalog that is busy (locked by another client) or briefly away is waited for; one
        // that stays away is an error that says what to check.
        let started = std::time::Instant::now();
        let mut delay = Duration::from_millis(200);
        let catalog = loop {
            let opened = match settings.open(kind, &root).await {
                // A REST catalog is only reached on first use: ask it something now.
                Ok(catalog) => catalog.list_namespaces(None).await.map(|_| catalog),
                Err(e) => Err(e),
            };
            match opened {
                Ok(catalog) => break catalog,
                Err(e) if started.elapsed() < settings.patience => {
                    tracing::warn!(
                        "the Iceberg catalog is not available yet, retrying in {delay:?}: {e}"
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "cannot reach the Iceberg catalog {} for {:?}: check \
                             --catalog-uri and --catalog-option (for the default SQLite catalog: \
                             that the warehouse directory is writable and that no other program \
                             holds the catalog locked)",
                            settings.display_uri(&root),
                            settings.patience
                        )
                    });
                }
            }
        };
        Ok(Warehouse {
            catalog,
            namespace: NamespaceIdent::new(database.to_string()),
            sessions_table: sessions_table.to_string(),
        })
    }

    pub fn ident(&self, kind: TableKind) -> TableIdent {
        TableIdent::new(
            self.namespace.clone(),
            kind.table_name(&self.sessions_table),
        )
    }

    /// Creates the namespace and the three tables where they do not exist yet.
    pub async fn ensure_tables(&self, buckets: u32) -> Result<()> {
        // Another pipeline starting at the same moment may create them first: that is fine.
        if !self.catalog.namespace_exists(&self.namespace).await?
            && let Err(e) = self
                .catalog
                .create_namespace(&self.namespace, HashMap::new())
                .await
            && !self.catalog.namespace_exists(&self.namespace).await?
        {
            return Err(e).with_context(|| format!("cannot create namespace {:?}", self.namespace));
        }
        for kind in TableKind::ALL {
            let ident = self.ident(kind);
            if self.catalog.table_exists(&ident).await? {
                let table = self.catalog.load_table(&ident).await?;
                check_compatible(&table, kind, buckets)?;
                self.evolve_schema(table, kind).await?;
                continue;
            }
            let creation = TableCreation::builder()
                .name(ident.name().to_string())
                .schema(kind.schema())
                .partition_spec(kind.partition_spec(buckets))
                .properties([
                    (
                        TableProperties::PROPERTY_DEFAULT_FILE_FORMAT.to_string(),
                        "parquet".to_string(),
                    ),
                    (
                        "write.parquet.compression-codec".to_string(),
                        "zstd".to_string(),
                    ),
                ])
                .build();
            if let Err(e) = self.catalog.create_table(&self.namespace, creation).await
                && !self.catalog.table_exists(&ident).await?
            {
                return Err(e).with_context(|| format!("cannot create table {ident}"));
            }
        }
        Ok(())
    }

    /// Brings an existing table's schema to what this release writes: our columns that it lacks
    /// (it was created by an older release) are added as optional columns, and columns that other
    /// tools added are kept (written as nulls). A column whose type conflicts with ours, or a
    /// required column we do not write, is refused with its name.
    async fn evolve_schema(&self, table: Table, kind: TableKind) -> Result<()> {
        let ours = kind.schema();
        let missing = schema_changes(&table, &ours)?;
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = missing.iter().map(|f| f.name.as_str()).collect();
        let transaction = Transaction::new(&table);
        let update = missing
            .iter()
            .fold(transaction.update_schema(), |action, field| {
                action.add_column(AddColumn::optional(
                    &field.name,
                    (*field.field_type).clone(),
                ))
            });
        let evolved = update
            .apply(transaction)?
            .commit(self.catalog.as_ref())
            .await;
        if let Err(e) = evolved {
            // Another pipeline starting at the same moment may have added them first.
            let table = self.load(kind).await?;
            if !schema_changes(&table, &ours)?.is_empty() {
                return Err(e).with_context(|| {
                    format!("cannot add the columns {names:?} to {}", table.identifier())
                });
            }
        }
        tracing::info!(table = %table.identifier(), columns = ?names, "added columns to the table's schema");
        Ok(())
    }

    pub async fn load(&self, kind: TableKind) -> Result<Table> {
        let ident = self.ident(kind);
        self.catalog.load_table(&ident).await.with_context(|| {
            format!("cannot load table {ident}; run with the same --warehouse to create it")
        })
    }

    /// Sets table properties in a metadata commit of their own (no snapshot).
    pub async fn set_properties(
        &self,
        kind: TableKind,
        properties: HashMap<String, String>,
    ) -> Result<Table> {
        let table = self.load(kind).await?;
        let transaction = Transaction::new(&table);
        with_properties(transaction, properties)?
            .commit(self.catalog.as_ref())
            .await
            .with_context(|| format!("cannot set the properties of {}", table.identifier()))
    }

    /// Appends data files (as serialized by [`TableWriter::close`]) to a table in one snapshot
    /// whose summary carries `properties` and whose mark is `mark`, exactly once, on top of `base`:
    /// the table as this run last saw it, whose newest mark must be `previous`.
    ///
    /// The commit requires the table's current snapshot to be `base`'s, so the catalog refuses it
    /// if anyone committed since. Then, and after any error whose outcome is unknown (a timeout,
    /// a lost connection), it looks at what is there before doing anything else: its own mark
    /// means the catalog took the commit; another pipeline's mark on top of `previous` is a
    /// [`TwoWriters`] error; snapshots of other tools (compaction, deletes, expiry) on top are
    /// welcome, and the commit is made again on top of them. It is never re-applied blindly.
    ///
    /// Snapshots of ours beyond the newest `retain_snapshots` are then expired (metadata only),
    /// so that months of frequent commits keep the metadata small.
    #[allow(clippy::too_many_arguments)]
    pub async fn commit_once(
        &self,
        kind: TableKind,
        mut base: Table,
        serialized_files: &[String],
        properties: HashMap<String, String>,
        mark: &Mark,
        previous: Option<&Mark>,
        retain_snapshots: usize,
    ) -> Result<Table> {
        let ident = self.ident(kind);
        let mut delay = Duration::from_millis(200);
        let mut failures = 0;
        let mut rebases = 0;
        loop {
            let newest = newest_mark(&base);
            if newest.as_ref() == Some(mark) {
                return Ok(base);
            }
            if newest.as_ref() != previous {
                return Err(two_writers(&ident, newest.as_ref(), previous).into());
            }
            let mut appended = self
                .append(&base, serialized_files, properties.clone())
                .await;
            if appended.is_ok() && crate::failure::injected("lose-commit-response") {
                // As if the catalog took the commit but its answer never came back.
                appended = Err(anyhow::anyhow!("the catalog's answer was lost (injected)"));
            }
            let error = match appended {
                Ok(table) => return Ok(self.expire(table, retain_snapshots).await),
                Err(error) => error,
            };
            let seen = base.metadata().current_snapshot_id();
            match self.load(kind).await {
                Ok(table) if table.metadata().current_snapshot_id() != seen => {
                    // Someone committed, perhaps this very commit: the loop's checks decide.
                    tracing::info!(
                        "commit to {ident} came back with an error ({error:#}) and the table has \
                         changed: looking at what is there"
                    );
                    base = table;
                    rebases += 1;
                    anyhow::ensure!(
                        rebases <= MAX_REBASES,
                        "commit to {ident} lost {MAX_REBASES} races in a row against other \
                         writers of the table: {error:#}"
                    );
                    continue;
                }
                Ok(table) => base = table,
                Err(load_error) => tracing::warn!("cannot read {ident} back: {load_error:#}"),
            }
            failures += 1;
            if let Some(telemetry) = crate::ops::telemetry() {
                // Not ready while the catalog refuses or cannot be reached (`/readyz`).
                telemetry.health.commit_failing(true);
            }
            if failures >= COMMIT_ATTEMPTS {
                return Err(error.context(format!(
                    "commit to {ident} failed {COMMIT_ATTEMPTS} times; nothing of it is in the \
                     table: restart when the catalog is back"
                )));
            }
            tracing::warn!("commit to {ident} failed, retrying in {delay:?}: {error:#}");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// One commit attempt on top of `base`, with no retry: a conflict or an error comes back to
    /// [`Warehouse::commit_once`], which looks at the table before anything else.
    async fn append(
        &self,
        base: &Table,
        serialized_files: &[String],
        properties: HashMap<String, String>,
    ) -> Result<Table> {
        let metadata = base.metadata();
        let spec = metadata.default_partition_spec();
        let schema = metadata.current_schema();
        let partition_type = spec.partition_type(schema)?;
        let files = serialized_files
            .iter()
            .map(|json| {
                deserialize_data_file_from_json(json, spec.spec_id(), &partition_type, schema)
            })
            .collect::<Result<Vec<DataFile>, _>>()?;
        let transaction = Transaction::new(base);
        let transaction = transaction
            .fast_append()
            .add_data_files(files)
            .set_snapshot_properties(properties.clone())
            .apply(transaction)?;
        // The same record in the table's properties, in the same metadata commit: it survives
        // when other tools expire our snapshots, and then says where the pipeline stands.
        let transaction = with_properties(transaction, properties)?;
        let pinned = PinnedCatalog {
            inner: self.catalog.as_ref(),
            base,
        };
        let committed = transaction
            .commit(&pinned)
            .await
            .with_context(|| format!("commit to {} failed", base.identifier()))?;
        Ok(committed)
    }
}

impl Warehouse {
    /// Expires our snapshots beyond the newest `retain` (metadata only), in a commit of its own
    /// on top of `table`. Best effort: a failure is logged, and the next commit tries again.
    async fn expire(&self, table: Table, retain: usize) -> Table {
        let expired = own_snapshots_to_expire(&table, retain);
        if expired.is_empty() {
            return table;
        }
        let count = expired.len();
        let expire = async {
            let transaction = Transaction::new(&table);
            // By id alone: an age cutoff before any snapshot selects nothing more.
            let action = transaction
                .expire_snapshots()
                .expire_snapshot_ids(expired)
                .expire_older_than_ms(0);
            let transaction = action.apply(transaction)?;
            let pinned = PinnedCatalog {
                inner: self.catalog.as_ref(),
                base: &table,
            };
            anyhow::Ok(transaction.commit(&pinned).await?)
        };
        match expire.await {
            Ok(expired) => {
                tracing::debug!(table = %table.identifier(), count, "expired old snapshots");
                expired
            }
            Err(e) => {
                tracing::warn!(
                    "cannot expire old snapshots of {}: {e:#}",
                    table.identifier()
                );
                table
            }
        }
    }
}

/// Attempts at a commit that fails with an error (not a lost race) before the run stops.
const COMMIT_ATTEMPTS: u32 = 5;
/// Races lost in a row to other writers' commits before the run stops.
const MAX_REBASES: u32 = 100;

/// Which epoch of which run committed a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub epoch: u64,
    pub run_id: String,
}

impl Mark {
    /// The mark in a commit's record (a snapshot summary, or the table's properties).
    pub fn from_record(record: &HashMap<String, String>) -> Option<Mark> {
        Some(Mark {
            epoch: record.get(summary::EPOCH)?.parse().ok()?,
            run_id: record.get(summary::RUN_ID).cloned().unwrap_or_default(),
        })
    }

    fn of(snapshot: &Snapshot) -> Option<Mark> {
        Mark::from_record(&snapshot.summary().additional_properties)
    }
}

/// The newest snapshot sessionize committed in the table's current history, walking back from
/// the current snapshot through its parents, past snapshots of other tools (compaction, deletes).
pub fn newest_own_snapshot(table: &Table) -> Option<&SnapshotRef> {
    let metadata = table.metadata();
    let mut next = metadata.current_snapshot_id();
    while let Some(id) = next {
        let snapshot = metadata.snapshot_by_id(id)?;
        if Mark::of(snapshot).is_some() {
            return Some(snapshot);
        }
        next = snapshot.parent_snapshot_id();
    }
    None
}

/// What sessionize recorded with its last commit to the table: the table's properties, which
/// every commit of ours sets atomically with its snapshot and which outlive the snapshot when other
/// tools expire it; for tables committed before the properties were kept, the summary of the
/// newest snapshot of ours in the history.
pub fn last_record(table: &Table) -> Option<HashMap<String, String>> {
    let properties = table.metadata().properties();
    if properties.contains_key(summary::EPOCH) {
        let ours = properties
            .iter()
            .filter(|(key, _)| key.starts_with("sessionize."))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        return Some(ours);
    }
    newest_own_snapshot(table).map(|s| s.summary().additional_properties.clone())
}

/// Our snapshots older than the newest `retain` of ours, once there are a tenth more than that
/// (so that expiry is batched), never the current snapshot or another ref's head. Snapshots of
/// other tools are theirs to expire.
fn own_snapshots_to_expire(table: &Table, retain: usize) -> Vec<i64> {
    let metadata = table.metadata();
    let mut own: Vec<&SnapshotRef> = metadata
        .snapshots()
        .filter(|s| Mark::of(s).is_some())
        .collect();
    if retain == 0 || own.len() <= retain + retain.div_ceil(10) {
        return Vec::new();
    }
    // The metadata has no accessor for its refs; its JSON form has them (this runs once in a
    // tenth of `retain` commits).
    let heads: Vec<i64> = serde_json::to_value(metadata)
        .ok()
        .and_then(|m| {
            let refs = m.get("refs")?.as_object()?.clone();
            Some(
                refs.values()
                    .filter_map(|r| r.get("snapshot-id")?.as_i64())
                    .collect(),
            )
        })
        .unwrap_or_default();
    own.sort_by_key(|s| (s.sequence_number(), s.timestamp_ms()));
    own[..own.len() - retain]
        .iter()
        .map(|s| s.snapshot_id())
        .filter(|id| !heads.contains(id) && metadata.current_snapshot_id() != Some(*id))
        .collect()
}

/// The mark of the table's [`last_record`].
pub fn newest_mark(table: &Table) -> Option<Mark> {
    Mark::from_record(&last_record(table)?)
}

fn two_writers(ident: &TableIdent, newest: Option<&Mark>, expected: Option<&Mark>) -> TwoWriters {
    let show = |mark: Option<&Mark>| {
        mark.map_or("none".to_string(), |m| {
            format!("epoch {} of run {}", m.epoch, m.run_id)
        })
    };
    TwoWriters(format!(
        "table {ident} was committed by another pipeline: its newest sessionize commit is {}, \
         this run expected {}; two pipelines must not write one table: stop one, then restart \
         the other",
        show(newest),
        show(expected)
    ))
}

/// A view of the catalog for one commit: loading the table gives `base`, the table as the
/// pipeline last saw it, so the transaction neither rebases onto a newer table nor drops the
/// requirement on `base`'s snapshot; and a failed commit is never retried inside the transaction.
#[derive(Debug)]
struct PinnedCatalog<'a> {
    inner: &'a dyn Catalog,
    base: &'a Table,
}

#[async_trait::async_trait]
impl Catalog for PinnedCatalog<'_> {
    async fn load_table(&self, table: &TableIdent) -> iceberg::Result<Table> {
        if table == self.base.identifier() {
            Ok(self.base.clone())
        } else {
            self.inner.load_table(table).await
        }
    }

    async fn update_table(&self, commit: TableCommit) -> iceberg::Result<Table> {
        self.inner
            .update_table(commit)
            .await
            .map_err(|e| e.with_retryable(false))
    }

    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> iceberg::Result<Vec<NamespaceIdent>> {
        self.inner.list_namespaces(parent).await
    }
    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<Namespace> {
        self.inner.create_namespace(namespace, properties).await
    }
    async fn get_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<Namespace> {
        self.inner.get_namespace(namespace).await
    }
    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> iceberg::Result<bool> {
        self.inner.namespace_exists(namespace).await
    }
    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<()> {
        self.inner.update_namespace(namespace, properties).await
    }
    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<()> {
        self.inner.drop_namespace(namespace).await
    }
    async fn list_tables(&self, namespace: &NamespaceIdent) -> iceberg::Result<Vec<TableIdent>> {
        self.inner.list_tables(namespace).await
    }
    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> iceberg::Result<Table> {
        self.inner.create_table(namespace, creation).await
    }
    async fn drop_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.inner.drop_table(table).await
    }
    async fn purge_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.inner.purge_table(table).await
    }
    async fn table_exists(&self, table: &TableIdent) -> iceberg::Result<bool> {
        self.inner.table_exists(table).await
    }
    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> iceberg::Result<()> {
        self.inner.rename_table(src, dest).await
    }
    async fn register_table(
        &self,
        table: &TableIdent,
        metadata_location: String,
    ) -> iceberg::Result<Table> {
        self.inner.register_table(table, metadata_location).await
    }
}

/// `transaction` with an update of the table's properties that sets `properties`.
fn with_properties(
    transaction: Transaction,
    properties: HashMap<String, String>,
) -> iceberg::Result<Transaction> {
    let update = properties.into_iter().fold(
        transaction.update_table_properties(),
        |action, (key, value)| action.set(key, value),
    );
    update.apply(transaction)
}

/// Our columns that `table` lacks; an error naming the column if the table has one that conflicts:
/// of another type than ours, or required but not written by us.
fn schema_changes(table: &Table, ours: &Schema) -> Result<Vec<NestedFieldRef>> {
    let theirs = table.metadata().current_schema();
    let mut missing = Vec::new();
    for want in ours.as_struct().fields() {
        match theirs.as_struct().field_by_name(&want.name) {
            None => missing.push(Arc::clone(want)),
            Some(have) if same_type(&have.field_type, &want.field_type) => {}
            Some(have) => bail!(
                "table {} has a column `{}` of type {}, where sessionize writes {}: rename or drop \
                 that column, or give another --iceberg-table",
                table.identifier(),
                have.name,
                have.field_type,
                want.field_type
            ),
        }
    }
    for have in theirs.as_struct().fields() {
        if have.required && ours.as_struct().field_by_name(&have.name).is_none() {
            bail!(
                "table {} has a required column `{}` that sessionize does not write: make it \
                 optional, or give another --iceberg-table",
                table.identifier(),
                have.name
            );
        }
    }
    Ok(missing)
}

/// Types equal but for field ids and the nullability of nested fields.
fn same_type(a: &Type, b: &Type) -> bool {
    match (a, b) {
        (Type::List(a), Type::List(b)) => {
            same_type(&a.element_field.field_type, &b.element_field.field_type)
        }
        (Type::Primitive(a), Type::Primitive(b)) => a == b,
        _ => false,
    }
}

fn check_compatible(table: &Table, kind: TableKind, buckets: u32) -> Result<()> {
    let wanted = kind.partition_spec(buckets);
    let spec = table.metadata().default_partition_spec();
    let same = spec.fields().len() == wanted.fields().len()
        && spec
            .fields()
            .iter()
            .zip(wanted.fields())
            .all(|(have, want)| {
                have.transform == want.transform && have.source_id == want.source_id
            });
    if !same {
        bail!(
            "table {} exists with another partitioning ({:?}); use the --buckets it was created \
             with, or another --iceberg-table",
            table.identifier(),
            spec.fields()
        );
    }
    Ok(())
}

type FileBuilder =
    DataFileWriterBuilder<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator>;

// One writer exists per table and epoch, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Layout {
    Partitioned {
        splitter: RecordBatchPartitionSplitter,
        writer: FanoutWriter<FileBuilder>,
    },
    Unpartitioned(<FileBuilder as IcebergWriterBuilder>::R),
}

/// Writes record batches of one table into Parquet data files (ZSTD), one open file per table
/// partition, until closed.
pub struct TableWriter {
    layout: Layout,
    arrow_schema: ArrowSchemaRef,
    partition_type: iceberg::spec::StructType,
}

impl TableWriter {
    /// A writer whose file names start with `file_prefix`, which must be unique in the table
    /// (file counters restart at zero with every writer).
    pub async fn new(table: &Table, file_prefix: String) -> Result<Self> {
        let metadata = table.metadata();
        let schema = metadata.current_schema().clone();
        let spec = metadata.default_partition_spec().clone();
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let builder =
            DataFileWriterBuilder::new(RollingFileWriterBuilder::new_with_default_file_size(
                ParquetWriterBuilder::new(properties, schema.clone()),
                table.file_io().clone(),
                DefaultLocationGenerator::new(metadata)?,
                DefaultFileNameGenerator::new(file_prefix, None, DataFileFormat::Parquet),
            ));
        let layout = if spec.is_unpartitioned() {
            Layout::Unpartitioned(builder.build(None).await?)
        } else {
            Layout::Partitioned {
                splitter: RecordBatchPartitionSplitter::try_new_with_computed_values(
                    schema.clone(),
                    spec.clone(),
                )?,
                writer: FanoutWriter::new(builder),
            }
        };
        Ok(TableWriter {
            layout,
            arrow_schema: Arc::new(schema_to_arrow_schema(&schema)?),
            partition_type: spec.partition_type(&schema)?,
        })
    }

    /// The Arrow schema batches must have (with Iceberg field ids).
    pub fn arrow_schema(&self) -> &ArrowSchemaRef {
        &self.arrow_schema
    }

    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        match &mut self.layout {
            Layout::Partitioned { splitter, writer } => {
                for (key, part) in splitter.split(&batch)? {
                    writer.write(key, part).await?;
                }
            }
            Layout::Unpartitioned(writer) => writer.write(batch).await?,
        }
        Ok(())
    }

    /// Finishes every file and returns their metadata, serialized so that it can travel to the
    /// committing worker in another process.
    pub async fn close(self) -> Result<Vec<String>> {
        let files = match self.layout {
            Layout::Partitioned { writer, .. } => writer.close().await?,
            Layout::Unpartitioned(mut writer) => writer.close().await?,
        };
        files
            .into_iter()
            .map(|file| {
                serialize_data_file_to_json(file, &self.partition_type, FormatVersion::V2)
                    .map_err(Into::into)
            })
            .collect()
    }
}
