//! Where sessionize keeps files: a directory on a local disk or a prefix of an S3 bucket. Files of
//! its own (checkpoints) are written once and never overwritten; the tables' files go through
//! iceberg's `FileIO` on a [`TableStorage`].
//!
//! ```
//! use sessionize::storage::Location;
//! let lake: Location = "s3a://lake/warehouse/".parse().unwrap();
//! assert_eq!(lake.join("_sessionize").to_string(), "s3://lake/warehouse/_sessionize");
//! let local: Location = "/data/warehouse".parse().unwrap();
//! assert_eq!(local.uri(), "file:///data/warehouse");
//! ```

mod local;
mod s3;
mod table_io;

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, bail};

use local::LocalFiles;
use s3::ObjectStore;
pub use table_io::{TableStorage, TableStorageFactory};

/// A directory on a local disk, or a prefix of an S3 (or S3-compatible) bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    /// `path` has no leading or trailing slash.
    S3 {
        bucket: String,
        path: String,
    },
}

impl FromStr for Location {
    type Err = anyhow::Error;

    /// A local path (or `file://PATH`), or `s3://BUCKET/PREFIX` (`s3a://` as Spark writes it).
    fn from_str(text: &str) -> Result<Self> {
        if let Some(rest) = text
            .strip_prefix("s3://")
            .or_else(|| text.strip_prefix("s3a://"))
        {
            let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                bail!("{text}: an S3 location names its bucket, as in s3://BUCKET/PREFIX");
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                path: path.trim_matches('/').to_string(),
            });
        }
        if let Some(path) = text.strip_prefix("file://") {
            return Ok(Location::Local(path.into()));
        }
        if text.contains("://") {
            bail!("{text}: unknown kind of location; give a local path or s3://BUCKET/PREFIX");
        }
        Ok(Location::Local(text.into()))
    }
}

impl From<&Path> for Location {
    fn from(path: &Path) -> Self {
        Location::Local(path.to_path_buf())
    }
}

impl From<&PathBuf> for Location {
    fn from(path: &PathBuf) -> Self {
        Location::Local(path.clone())
    }
}

impl From<PathBuf> for Location {
    fn from(path: PathBuf) -> Self {
        Location::Local(path)
    }
}

impl From<&Location> for Location {
    fn from(location: &Location) -> Self {
        location.clone()
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
            Location::S3 { bucket, path } if path.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, path } => write!(f, "s3://{bucket}/{path}"),
        }
    }
}

impl Location {
    pub fn join(&self, name: &str) -> Location {
        match self {
            Location::Local(path) => Location::Local(path.join(name)),
            Location::S3 { bucket, path } => Location::S3 {
                bucket: bucket.clone(),
                path: [path.as_str(), name.trim_matches('/')]
                    .iter()
                    .filter(|part| !part.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join("/"),
            },
        }
    }

    /// The location as Iceberg names locations: `file://` and an absolute path, or `s3://`.
    pub fn uri(&self) -> String {
        match self {
            Location::Local(path) => format!("file://{}", path.display()),
            s3 => s3.to_string(),
        }
    }

    /// The local directory, if the location is one.
    pub fn local(&self) -> Option<&Path> {
        match self {
            Location::Local(path) => Some(path),
            Location::S3 { .. } => None,
        }
    }
}

/// Files under a [`Location`] that are created once: a file is complete or absent, never torn,
/// and a second writer of the same name fails instead of replacing the first one's file. On a
/// local disk that takes a synced temporary file hard-linked under its name; on S3 a conditional
/// `PUT` (`If-None-Match: *`), which S3 and the compatible stores apply atomically.
/// A file found by [`WriteOnceFiles::files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    pub name: String,
    pub modified: Option<std::time::SystemTime>,
}

pub struct WriteOnceFiles {
    location: Location,
    backend: Backend,
}

/// Where the files of a [`WriteOnceFiles`] live.
enum Backend {
    Local(LocalFiles),
    S3(ObjectStore),
}

impl WriteOnceFiles {
    /// Files under `location`; an S3 location takes its settings from the `s3.*` properties
    /// Iceberg's FileIO takes (`s3.endpoint`, `s3.region`, `s3.access-key-id`,
    /// `s3.secret-access-key`, `s3.session-token`, `s3.path-style-access`), then from the usual
    /// AWS environment and profile.
    pub fn open(location: &Location, properties: &[(String, String)]) -> Result<Self> {
        let backend = match location {
            Location::Local(path) => Backend::Local(LocalFiles::new(path.clone())),
            Location::S3 { bucket, path } => {
                Backend::S3(ObjectStore::open(bucket, path, properties)?)
            }
        };
        Ok(WriteOnceFiles {
            location: location.clone(),
            backend,
        })
    }

    /// Creates a local location's directory (an S3 prefix needs none), so that one that cannot
    /// be written is an error at start.
    pub fn create_location(&self) -> Result<()> {
        match &self.backend {
            Backend::Local(files) => files.create_root(),
            Backend::S3(_) => Ok(()),
        }
    }

    /// Where `name` (a `/`-separated path under the location) is, for messages.
    pub fn display(&self, name: &str) -> String {
        self.location.join(name).to_string()
    }

    /// Creates `name` with what `write` writes, unless it exists; returns its size in bytes.
    pub fn create(
        &self,
        name: &str,
        write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<u64> {
        match &self.backend {
            Backend::Local(files) => files.create(name, write),
            Backend::S3(store) => {
                let mut bytes = Vec::new();
                write(&mut bytes)
                    .with_context(|| format!("cannot write {}", self.display(name)))?;
                let size = bytes.len() as u64;
                store
                    .create(name, bytes.into())
                    .with_context(|| format!("cannot create {}", self.display(name)))?;
                Ok(size)
            }
        }
    }

    /// The contents of `name`, or `None` if it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<Box<dyn Read>>> {
        match &self.backend {
            Backend::Local(files) => files.read(name),
            Backend::S3(store) => Ok(store
                .read(name)
                .with_context(|| format!("cannot read {}", self.display(name)))?
                .map(|bytes| Box::new(std::io::Cursor::new(bytes)) as Box<dyn Read>)),
        }
    }

    /// The names of the directories in `dir`.
    pub fn directories(&self, dir: &str) -> Result<Vec<String>> {
        match &self.backend {
            Backend::Local(files) => files.directories(dir),
            Backend::S3(store) => store.directories(dir),
        }
    }

    /// Every file under `dir`, at any depth, by name relative to the location, with when it was
    /// last modified (if the store says).
    pub fn files(&self, dir: &str) -> Result<Vec<ListedFile>> {
        match &self.backend {
            Backend::Local(files) => files.files(dir),
            Backend::S3(store) => store.files(dir),
        }
    }

    /// Removes the file `name`.
    pub fn remove_file(&self, name: &str) -> Result<()> {
        match &self.backend {
            Backend::Local(files) => files.remove_file(name),
            Backend::S3(store) => store.remove_file(name),
        }
    }

    /// Removes the directory `dir` and everything in it.
    pub fn remove_directory(&self, dir: &str) -> Result<()> {
        match &self.backend {
            Backend::Local(files) => files.remove_directory(dir),
            Backend::S3(store) => store.remove_directory(dir),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_join() {
        let s3: Location = "s3://lake".parse().unwrap();
        assert_eq!(s3.join("a/").join("b").to_string(), "s3://lake/a/b");
        assert!("s3:///x".parse::<Location>().is_err());
        assert!("gs://x/y".parse::<Location>().is_err());
        let file: Location = "file:///tmp/w".parse().unwrap();
        assert_eq!(file, Location::Local("/tmp/w".into()));
    }

    #[test]
    fn a_local_file_is_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let files = WriteOnceFiles::open(&dir.path().into(), &[]).unwrap();
        assert!(files.read("a/b.bin").unwrap().is_none());
        assert_eq!(files.create("a/b.bin", |w| w.write_all(b"one")).unwrap(), 3);
        let second = files.create("a/b.bin", |w| w.write_all(b"two"));
        assert!(second.unwrap_err().to_string().contains("must not exist"));
        let mut text = String::new();
        files
            .read("a/b.bin")
            .unwrap()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "one");
        assert_eq!(files.directories("").unwrap(), vec!["a".to_string()]);
        files.remove_directory("a").unwrap();
        assert!(files.directories("").unwrap().is_empty());
    }
}
