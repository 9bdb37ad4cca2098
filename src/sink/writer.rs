//! Parquet data files (ZSTD), one open file per table partition, for one table and epoch.

use std::sync::Arc;

use anyhow::Result;
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef as ArrowSchemaRef;
use iceberg::arrow::schema_to_arrow_schema;
use iceberg::spec::{DataFile, DataFileFormat, FormatVersion, serialize_data_file_to_json};
use iceberg::table::Table;
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::partition::PartitionSplitter;

/// Where a file is closed and the next begun (iceberg-rust's default, Java's
/// `write.target-file-size-bytes` default).
const DEFAULT_TARGET_FILE_SIZE: usize = 512 << 20;

type FileBuilder =
    DataFileWriterBuilder<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator>;

// One writer exists per table and epoch, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Layout {
    Partitioned {
        splitter: PartitionSplitter,
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
        Self::with_target_size(table, file_prefix, DEFAULT_TARGET_FILE_SIZE).await
    }

    /// A writer as [`TableWriter::new`] makes, which starts a new file once one reaches
    /// `target_bytes`.
    pub async fn with_target_size(
        table: &Table,
        file_prefix: String,
        target_bytes: usize,
    ) -> Result<Self> {
        let metadata = table.metadata();
        let schema = metadata.current_schema().clone();
        let spec = metadata.default_partition_spec().clone();
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let builder = DataFileWriterBuilder::new(RollingFileWriterBuilder::new(
            ParquetWriterBuilder::new(properties, schema.clone()),
            target_bytes,
            table.file_io().clone(),
            DefaultLocationGenerator::new(metadata)?,
            DefaultFileNameGenerator::new(file_prefix, None, DataFileFormat::Parquet),
        ));
        let layout = if spec.is_unpartitioned() {
            Layout::Unpartitioned(builder.build(None).await?)
        } else {
            Layout::Partitioned {
                splitter: PartitionSplitter::new(schema.clone(), spec.as_ref().clone())?,
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

    /// Finishes every file and returns their metadata.
    pub async fn close_files(self) -> Result<Vec<DataFile>> {
        Ok(match self.layout {
            Layout::Partitioned { writer, .. } => writer.close().await?,
            Layout::Unpartitioned(mut writer) => writer.close().await?,
        })
    }

    /// Finishes every file and returns their metadata, serialized so that it can travel to the
    /// committing worker in another process.
    pub async fn close(self) -> Result<Vec<String>> {
        let partition_type = self.partition_type.clone();
        self.close_files()
            .await?
            .into_iter()
            .map(|file| {
                serialize_data_file_to_json(file, &partition_type, FormatVersion::V2)
                    .map_err(Into::into)
            })
            .collect()
    }
}
