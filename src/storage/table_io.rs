//! The files of Iceberg tables (data, manifests, metadata) on a local disk or in S3: the storage
//! our catalogs hand to iceberg's `FileIO`, over OpenDAL.
//!
//! Ours rather than `iceberg-storage-opendal`'s because that crate turns on OpenDAL's default
//! TLS (rustls on aws-lc, a C build of about a minute in every cold build), where the OpenSSL
//! that rdkafka links already serves.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use iceberg::io::{
    FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage, StorageConfig,
    StorageFactory,
};
use iceberg::{Error, ErrorKind};
use opendal::Operator;
use serde::{Deserialize, Serialize};

use super::Location;
use super::s3::s3_operator;

/// Builds a [`TableStorage`] from the properties a catalog gives a table's `FileIO`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct TableStorageFactory;

#[typetag::serde]
impl StorageFactory for TableStorageFactory {
    fn build(&self, config: &StorageConfig) -> iceberg::Result<Arc<dyn Storage>> {
        Ok(Arc::new(TableStorage::new(config.props())))
    }
}

/// Files addressed by absolute locations: `file:///…` or a bare absolute path on the local disk,
/// `s3://BUCKET/…` (or `s3a://`) in a bucket, whose operator is made on first use.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableStorage {
    /// The `FileIO` properties (`s3.endpoint`, `s3.region`, credentials, ...).
    properties: Vec<(String, String)>,
    /// One operator per bucket (`None`: the local disk), shared by the storage's clones.
    #[serde(skip)]
    operators: Arc<Mutex<HashMap<Option<String>, Operator>>>,
}

impl TableStorage {
    /// Storage configured by FileIO's `properties`.
    pub fn new(properties: &HashMap<String, String>) -> Self {
        let mut properties: Vec<(String, String)> = properties
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        properties.sort();
        TableStorage {
            properties,
            operators: Arc::default(),
        }
    }

    /// Creates `location` holding `bytes` unless it exists, atomically (a conditional `PUT` on
    /// S3, an exclusive create on a local disk): whether this call created it.
    pub async fn create_new(&self, location: &str, bytes: Bytes) -> iceberg::Result<bool> {
        let (operator, path) = self.resolve(location)?;
        match operator.write_with(path, bytes).if_not_exists(true).await {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    opendal::ErrorKind::ConditionNotMatch | opendal::ErrorKind::AlreadyExists
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(io_error(e)),
        }
    }

    /// The contents of `location`, or `None` if there is no such file.
    pub async fn read_if_exists(&self, location: &str) -> iceberg::Result<Option<Bytes>> {
        let (operator, path) = self.resolve(location)?;
        match operator.read(path).await {
            Ok(buffer) => Ok(Some(buffer.to_bytes())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(e)),
        }
    }

    /// The operator that holds `location`, and the path of `location` within it.
    fn resolve<'a>(&self, location: &'a str) -> iceberg::Result<(Operator, &'a str)> {
        let parsed = location
            .parse::<Location>()
            .map_err(|e| Error::new(ErrorKind::FeatureUnsupported, e.to_string()))?;
        let (bucket, path) = match &parsed {
            Location::Local(_) => {
                let path = location.strip_prefix("file://").unwrap_or(location);
                let path = path.strip_prefix("file:").unwrap_or(path);
                if !path.starts_with('/') {
                    return Err(Error::new(
                        ErrorKind::DataInvalid,
                        format!("{location}: a table's file location must be absolute"),
                    ));
                }
                (None, path)
            }
            Location::S3 { bucket, .. } => {
                let after_scheme = location
                    .split_once("://")
                    .map_or(location, |(_, rest)| rest);
                (Some(bucket.clone()), &after_scheme[bucket.len()..])
            }
        };
        let mut operators = self.operators.lock().expect("no operator build panics");
        if let Some(operator) = operators.get(&bucket) {
            return Ok((operator.clone(), path));
        }
        let operator = match &bucket {
            None => Operator::new(opendal::services::Fs::default().root("/"))
                .map(|builder| builder.finish())
                .map_err(io_error),
            Some(bucket) => s3_operator(bucket, "", &self.properties)
                .map_err(|e| Error::new(ErrorKind::DataInvalid, format!("{e:#}"))),
        }?;
        operators.insert(bucket, operator.clone());
        Ok((operator, path))
    }
}

/// An OpenDAL error as iceberg's, keeping OpenDAL's for its kind and the path.
fn io_error(error: opendal::Error) -> Error {
    Error::new(ErrorKind::Unexpected, "file input or output failed").with_source(error)
}

#[async_trait]
#[typetag::serde]
impl Storage for TableStorage {
    async fn exists(&self, location: &str) -> iceberg::Result<bool> {
        let (operator, path) = self.resolve(location)?;
        operator.exists(path).await.map_err(io_error)
    }

    async fn metadata(&self, location: &str) -> iceberg::Result<FileMetadata> {
        let (operator, path) = self.resolve(location)?;
        let metadata = operator.stat(path).await.map_err(io_error)?;
        Ok(FileMetadata {
            size: metadata.content_length(),
        })
    }

    async fn read(&self, location: &str) -> iceberg::Result<Bytes> {
        let (operator, path) = self.resolve(location)?;
        Ok(operator.read(path).await.map_err(io_error)?.to_bytes())
    }

    async fn reader(&self, location: &str) -> iceberg::Result<Box<dyn FileRead>> {
        let (operator, path) = self.resolve(location)?;
        Ok(Box::new(Reader(
            operator.reader(path).await.map_err(io_error)?,
        )))
    }

    async fn write(&self, location: &str, bytes: Bytes) -> iceberg::Result<()> {
        let (operator, path) = self.resolve(location)?;
        operator.write(path, bytes).await.map_err(io_error)?;
        Ok(())
    }

    async fn writer(&self, location: &str) -> iceberg::Result<Box<dyn FileWrite>> {
        let (operator, path) = self.resolve(location)?;
        Ok(Box::new(Writer(
            operator.writer(path).await.map_err(io_error)?,
        )))
    }

    async fn delete(&self, location: &str) -> iceberg::Result<()> {
        let (operator, path) = self.resolve(location)?;
        operator.delete(path).await.map_err(io_error)
    }

    async fn delete_prefix(&self, location: &str) -> iceberg::Result<()> {
        let (operator, path) = self.resolve(location)?;
        // A directory's path ends with a slash; without one, `table/a` would also take `table/ab`.
        let directory = format!("{}/", path.trim_end_matches('/'));
        operator
            .delete_with(&directory)
            .recursive(true)
            .await
            .map_err(io_error)
    }

    async fn delete_stream(
        &self,
        mut locations: BoxStream<'static, String>,
    ) -> iceberg::Result<()> {
        while let Some(location) = locations.next().await {
            self.delete(&location).await?;
        }
        Ok(())
    }

    fn new_input(&self, location: &str) -> iceberg::Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), location.to_string()))
    }

    fn new_output(&self, location: &str) -> iceberg::Result<OutputFile> {
        Ok(OutputFile::new(
            Arc::new(self.clone()),
            location.to_string(),
        ))
    }
}

/// Ranged reads of one file.
struct Reader(opendal::Reader);

#[async_trait]
impl FileRead for Reader {
    async fn read(&self, range: Range<u64>) -> iceberg::Result<Bytes> {
        Ok(self.0.read(range).await.map_err(io_error)?.to_bytes())
    }
}

/// A file written in parts (multipart uploads in S3); it exists once closed.
struct Writer(opendal::Writer);

#[async_trait]
impl FileWrite for Writer {
    async fn write(&mut self, bytes: Bytes) -> iceberg::Result<()> {
        self.0.write(bytes).await.map_err(io_error)
    }

    async fn close(&mut self) -> iceberg::Result<()> {
        self.0.close().await.map(|_| ()).map_err(io_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage() -> Arc<dyn Storage> {
        TableStorageFactory
            .build(&StorageConfig::new())
            .expect("a local storage needs no properties")
    }

    #[test]
    fn local_files_are_written_read_in_ranges_and_deleted_by_directory() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(write_read_and_delete_local_files());
    }

    async fn write_read_and_delete_local_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display();
        let storage = storage();
        let (data, sibling) = (
            format!("file://{root}/t/a/1.parquet"),
            format!("{root}/t/ab/2.parquet"),
        );
        storage
            .write(&data, Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        let mut writer = storage.writer(&sibling).await.unwrap();
        writer.write(Bytes::from_static(b"abc")).await.unwrap();
        writer.write(Bytes::from_static(b"def")).await.unwrap();
        writer.close().await.unwrap();

        assert_eq!(storage.metadata(&data).await.unwrap().size, 10);
        let reader = storage.reader(&data).await.unwrap();
        assert_eq!(reader.read(2..5).await.unwrap(), Bytes::from_static(b"234"));
        assert_eq!(
            storage.read(&sibling).await.unwrap(),
            Bytes::from_static(b"abcdef")
        );

        storage.delete_prefix(&format!("{root}/t/a")).await.unwrap();
        assert!(!storage.exists(&data).await.unwrap());
        assert!(
            storage.exists(&sibling).await.unwrap(),
            "a sibling directory sharing the prefix stays"
        );
        storage.delete(&sibling).await.unwrap();
        assert!(!storage.exists(&sibling).await.unwrap());
    }

    #[test]
    fn a_relative_or_unknown_location_is_refused_by_name() {
        let properties = [
            ("s3.region", "us-east-1"),
            ("s3.endpoint", "http://127.0.0.1:9"),
        ];
        let storage = TableStorage {
            properties: properties
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .to_vec(),
            operators: Arc::default(),
        };
        for location in ["warehouse/t/1.parquet", "gs://bucket/t/1.parquet"] {
            let error = storage.resolve(location).expect_err("refused").to_string();
            assert!(error.contains(location), "{error}");
        }
        let (_, path) = storage.resolve("s3a://lake/t/1.parquet").unwrap();
        assert_eq!(path, "/t/1.parquet");
    }
}
