//! Where sessionize keeps files of its own (checkpoints): a directory on a local disk or a prefix
//! of an S3 bucket, and files there that are written once and never overwritten.
//!
//! ```
//! use sessionize::storage::Location;
//! let lake: Location = "s3a://lake/warehouse/".parse().unwrap();
//! assert_eq!(lake.join("_sessionize").to_string(), "s3://lake/warehouse/_sessionize");
//! let local: Location = "/data/warehouse".parse().unwrap();
//! assert_eq!(local.uri(), "file:///data/warehouse");
//! ```

use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{Buffer, ErrorKind, Operator};

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
pub struct WriteOnceFiles {
    location: Location,
    object_store: Option<ObjectStore>,
}

/// An S3 bucket and the runtime its requests run on: workers call in from threads of their own,
/// and each worker's single-threaded runtime only runs while its worker waits on it, so the HTTP
/// connections live on a runtime of the store's.
struct ObjectStore {
    operator: Operator,
    /// Always there until dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for ObjectStore {
    /// Without waiting, so that dropping the store inside another runtime does not panic.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl WriteOnceFiles {
    /// Files under `location`; an S3 location takes its settings from the `s3.*` properties
    /// Iceberg's FileIO takes (`s3.endpoint`, `s3.region`, `s3.access-key-id`,
    /// `s3.secret-access-key`, `s3.session-token`, `s3.path-style-access`), then from the usual
    /// AWS environment and profile.
    pub fn open(location: &Location, properties: &[(String, String)]) -> Result<Self> {
        let object_store = match location {
            Location::Local(_) => None,
            Location::S3 { bucket, path } => Some(ObjectStore::open(bucket, path, properties)?),
        };
        Ok(WriteOnceFiles {
            location: location.clone(),
            object_store,
        })
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
        match (&self.object_store, &self.location) {
            (Some(store), _) => {
                let mut bytes = Vec::new();
                write(&mut bytes)
                    .with_context(|| format!("cannot write {}", self.display(name)))?;
                let size = bytes.len() as u64;
                store
                    .create(name, bytes.into())
                    .with_context(|| format!("cannot create {}", self.display(name)))?;
                Ok(size)
            }
            (None, location) => {
                let path = location
                    .local()
                    .expect("a store without S3 is local")
                    .join(name);
                create_local(&path, write)
            }
        }
    }

    /// The contents of `name`, or `None` if it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<Box<dyn Read>>> {
        let read: Option<Box<dyn Read>> = match (&self.object_store, &self.location) {
            (Some(store), _) => store
                .read(name)
                .with_context(|| format!("cannot read {}", self.display(name)))?
                .map(|bytes| Box::new(std::io::Cursor::new(bytes)) as Box<dyn Read>),
            (None, location) => {
                let path = location
                    .local()
                    .expect("a store without S3 is local")
                    .join(name);
                match File::open(&path) {
                    Ok(file) => Some(Box::new(std::io::BufReader::with_capacity(1 << 20, file))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot read {}", path.display()));
                    }
                }
            }
        };
        Ok(read)
    }

    /// The names of the directories in `dir`.
    pub fn directories(&self, dir: &str) -> Result<Vec<String>> {
        match (&self.object_store, &self.location) {
            (Some(store), _) => store.directories(dir),
            (None, location) => {
                let path = location
                    .local()
                    .expect("a store without S3 is local")
                    .join(dir);
                let entries = match std::fs::read_dir(&path) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot list {}", path.display()));
                    }
                };
                Ok(entries
                    .flatten()
                    .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|entry| entry.file_name().into_string().ok())
                    .collect())
            }
        }
    }

    /// Removes the directory `dir` and everything in it.
    pub fn remove_directory(&self, dir: &str) -> Result<()> {
        match (&self.object_store, &self.location) {
            (Some(store), _) => store.remove_directory(dir),
            (None, location) => {
                let path = location
                    .local()
                    .expect("a store without S3 is local")
                    .join(dir);
                std::fs::remove_dir_all(&path)
                    .with_context(|| format!("cannot remove {}", path.display()))
            }
        }
    }
}

impl ObjectStore {
    fn open(bucket: &str, path: &str, properties: &[(String, String)]) -> Result<Self> {
        let mut builder = opendal::services::S3::default()
            .bucket(bucket)
            .root(&format!("/{path}"));
        // As Iceberg's FileIO: virtual-host-style addressing unless path style is asked for.
        let mut virtual_host_style = true;
        for (key, value) in properties {
            builder = match key.as_str() {
                "s3.endpoint" => builder.endpoint(value),
                "s3.region" | "client.region" => builder.region(value),
                "s3.access-key-id" => builder.access_key_id(value),
                "s3.secret-access-key" => builder.secret_access_key(value),
                "s3.session-token" => builder.session_token(value),
                "s3.path-style-access" => {
                    virtual_host_style = !matches!(value.to_lowercase().as_str(), "true" | "1");
                    builder
                }
                _ => builder,
            };
        }
        if virtual_host_style {
            builder = builder.enable_virtual_host_style();
        }
        let operator = Operator::new(builder)
            .with_context(|| format!("cannot use the S3 bucket {bucket}: check the s3.* options"))?
            .layer(TimeoutLayer::new().with_timeout(Duration::from_secs(120)))
            .layer(RetryLayer::new().with_max_times(5).with_jitter())
            .finish();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sessionize-s3")
            .enable_all()
            .build()
            .context("cannot start a tokio runtime")?;
        Ok(ObjectStore {
            operator,
            runtime: Some(runtime),
        })
    }

    /// Runs `request` on the store's runtime and waits for it, from any thread, in or out of
    /// another runtime.
    fn wait<T: Send + 'static>(
        &self,
        request: impl Future<Output = opendal::Result<T>> + Send + 'static,
    ) -> opendal::Result<T> {
        let (sender, receiver) = std::sync::mpsc::channel();
        let runtime = self
            .runtime
            .as_ref()
            .expect("the runtime lives as long as the store");
        runtime.spawn(async move {
            let _ = sender.send(request.await);
        });
        receiver
            .recv()
            .expect("the store's runtime runs every request it is given")
    }

    fn create(&self, name: &str, bytes: Buffer) -> Result<()> {
        let operator = self.operator.clone();
        let (path, written) = (name.to_string(), bytes.clone());
        let created = self.wait(async move {
            operator
                .write_with(&path, written)
                .if_not_exists(true)
                .await
                .map(|_| ())
        });
        match created {
            Ok(()) => Ok(()),
            // A retried request whose first attempt went through finds its own object.
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => match self.read(name)? {
                Some(existing) if existing == bytes.to_vec() => Ok(()),
                _ => bail!("it exists already, written by another run"),
            },
            Err(e) => Err(e.into()),
        }
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let operator = self.operator.clone();
        let path = name.to_string();
        match self.wait(async move { operator.read(&path).await }) {
            Ok(buffer) => Ok(Some(buffer.to_vec())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn directories(&self, dir: &str) -> Result<Vec<String>> {
        let operator = self.operator.clone();
        let prefix = match dir.trim_matches('/') {
            "" => String::new(),
            dir => format!("{dir}/"),
        };
        let listed = self.wait({
            let path = format!("/{prefix}");
            async move { operator.list(&path).await }
        });
        let entries = match listed {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        Ok(entries
            .iter()
            .filter(|entry| entry.metadata().is_dir())
            .filter_map(|entry| {
                let name = entry.path().strip_prefix(&prefix)?.trim_end_matches('/');
                (!name.is_empty()).then(|| name.to_string())
            })
            .collect())
    }

    fn remove_directory(&self, dir: &str) -> Result<()> {
        let operator = self.operator.clone();
        let path = format!("{}/", dir.trim_end_matches('/'));
        self.wait(async move { operator.delete_with(&path).recursive(true).await })?;
        Ok(())
    }
}

/// Creates `path` once on a local disk: into a temporary file that is synced, then linked under
/// its name, which fails if the name exists; the directory is synced too, so that the name
/// survives a power loss. Only the owner may read the files: checkpoints hold user ids and events.
fn create_local(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<u64> {
    let parent = path.parent().context("a file has a directory")?;
    create_private_dirs(parent)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("part");
    let temporary = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, &file);
    write(&mut out).with_context(|| format!("cannot write {}", path.display()))?;
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    drop(out);
    file.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))?;
    let size = file.metadata()?.len();
    let linked = std::fs::hard_link(&temporary, path);
    let _ = std::fs::remove_file(&temporary);
    linked.with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    sync_dir(parent)?;
    Ok(size)
}

/// Creates `dir` and its missing parents, readable by the owner only, and syncs each new entry.
fn create_private_dirs(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_private_dirs(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
    match dir.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync directory {}", dir.display()))
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
