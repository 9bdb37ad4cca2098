//! The Iceberg side: the embedded SQL catalog, table creation, Parquet data files and commits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef as ArrowSchemaRef;
use iceberg::arrow::{RecordBatchPartitionSplitter, schema_to_arrow_schema};
use iceberg::io::LocalFsStorageFactory;
use iceberg::spec::{
    DataFile, DataFileFormat, FormatVersion, TableProperties, deserialize_data_file_from_json,
    serialize_data_file_to_json,
};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use iceberg::{Catalog, CatalogBuilder, NamespaceIdent, TableCreation, TableIdent};
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalog, SqlCatalogBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::tables::TableKind;

/// Snapshot-summary keys under which each commit records where the pipeline stands.
pub mod summary {
    pub const EPOCH: &str = "sessionize.epoch";
    pub const WATERMARK_MS: &str = "sessionize.watermark-ms";
    pub const POSITIONS: &str = "sessionize.positions";
    pub const CHECKPOINT: &str = "sessionize.checkpoint";
    /// The run that committed the snapshot: a run that finds another run's commit on top of its
    /// own stops, since two pipelines are writing one table.
    pub const RUN_ID: &str = "sessionize.run-id";
}

/// The warehouse directory with its SQLite catalog (`<warehouse>/catalog.db`), readable by
/// pyiceberg's `SqlCatalog("default", uri="sqlite:///<warehouse>/catalog.db", ...)`.
pub struct Warehouse {
    catalog: SqlCatalog,
    namespace: NamespaceIdent,
    sessions_table: String,
}

impl Warehouse {
    /// Opens (creating if needed) the warehouse at `root`. Must run inside a tokio runtime.
    pub async fn open(root: &Path, database: &str, sessions_table: &str) -> Result<Self> {
        std::fs::create_dir_all(root)
            .with_context(|| format!("cannot create the warehouse directory {}", root.display()))?;
        let root: PathBuf = root
            .canonicalize()
            .with_context(|| format!("cannot resolve the warehouse path {}", root.display()))?;
        let catalog = SqlCatalogBuilder::default()
            .uri(format!("sqlite:{}/catalog.db?mode=rwc", root.display()))
            .warehouse_location(format!("file://{}", root.display()))
            .sql_bind_style(SqlBindStyle::QMark)
            .with_storage_factory(Arc::new(LocalFsStorageFactory))
            .load("default", HashMap::new())
            .await
            .with_context(|| {
                format!(
                    "cannot open the Iceberg SQL catalog {}/catalog.db: check that the warehouse \
                     directory is writable",
                    root.display()
                )
            })?;
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
        if !self.catalog.namespace_exists(&self.namespace).await? {
            self.catalog
                .create_namespace(&self.namespace, HashMap::new())
                .await
                .with_context(|| format!("cannot create namespace {:?}", self.namespace))?;
        }
        for kind in TableKind::ALL {
            let ident = self.ident(kind);
            if self.catalog.table_exists(&ident).await? {
                let table = self.catalog.load_table(&ident).await?;
                check_compatible(&table, kind, buckets)?;
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
            self.catalog
                .create_table(&self.namespace, creation)
                .await
                .with_context(|| format!("cannot create table {ident}"))?;
        }
        Ok(())
    }

    pub async fn load(&self, kind: TableKind) -> Result<Table> {
        let ident = self.ident(kind);
        self.catalog.load_table(&ident).await.with_context(|| {
            format!("cannot load table {ident}; run with the same --warehouse to create it")
        })
    }

    /// Appends data files (as serialized by [`TableWriter::close`]) to a table in one snapshot
    /// whose summary carries `properties`.
    pub async fn commit(
        &self,
        kind: TableKind,
        serialized_files: &[String],
        properties: HashMap<String, String>,
    ) -> Result<Table> {
        let table = self.load(kind).await?;
        let metadata = table.metadata();
        let spec = metadata.default_partition_spec();
        let schema = metadata.current_schema();
        let partition_type = spec.partition_type(schema)?;
        let files = serialized_files
            .iter()
            .map(|json| {
                deserialize_data_file_from_json(json, spec.spec_id(), &partition_type, schema)
            })
            .collect::<Result<Vec<DataFile>, _>>()?;
        let transaction = Transaction::new(&table);
        let transaction = transaction
            .fast_append()
            .add_data_files(files)
            .set_snapshot_properties(properties)
            .apply(transaction)?;
        let committed = transaction
            .commit(&self.catalog)
            .await
            .with_context(|| format!("commit to {} failed", self.ident(kind)))?;
        Ok(committed)
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
