//! Write-once objects in an S3 (or S3-compatible) bucket: conditional `PUT`s through OpenDAL.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{Buffer, ErrorKind, Operator};

use super::ListedFile;

/// An S3 bucket and the runtime its requests run on: workers call in from threads of their own,
/// and each worker's single-threaded runtime only runs while its worker waits on it, so the HTTP
/// connections live on a runtime of the store's.
pub(super) struct ObjectStore {
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

/// An OpenDAL operator on `path` in `bucket`, configured by Iceberg's FileIO properties
/// (`s3.endpoint`, `s3.region`, `s3.access-key-id`, ...; credentials not given there come from
/// the environment as the AWS tools find them), with timeouts and retries.
pub(super) fn s3_operator(
    bucket: &str,
    path: &str,
    properties: &[(String, String)],
) -> Result<Operator> {
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
    Ok(Operator::new(builder)
        .with_context(|| format!("cannot use the S3 bucket {bucket}: check the s3.* options"))?
        .layer(TimeoutLayer::new().with_timeout(Duration::from_secs(120)))
        .layer(RetryLayer::new().with_max_times(5).with_jitter())
        .finish())
}

impl ObjectStore {
    pub(super) fn open(bucket: &str, path: &str, properties: &[(String, String)]) -> Result<Self> {
        let operator = s3_operator(bucket, path, properties)?;
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

    pub(super) fn create(&self, name: &str, bytes: Buffer) -> Result<()> {
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

    pub(super) fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let operator = self.operator.clone();
        let path = name.to_string();
        match self.wait(async move { operator.read(&path).await }) {
            Ok(buffer) => Ok(Some(buffer.to_vec())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) fn directories(&self, dir: &str) -> Result<Vec<String>> {
        let (prefix, entries) = self.list(dir, false)?;
        Ok(entries
            .iter()
            .filter(|entry| entry.metadata().is_dir())
            .filter_map(|entry| {
                let name = entry.path().strip_prefix(&prefix)?.trim_end_matches('/');
                (!name.is_empty()).then(|| name.to_string())
            })
            .collect())
    }

    pub(super) fn files(&self, dir: &str) -> Result<Vec<ListedFile>> {
        let (_, entries) = self.list(dir, true)?;
        Ok(entries
            .iter()
            .filter(|entry| entry.metadata().is_file())
            .map(|entry| ListedFile {
                name: entry.path().trim_start_matches('/').to_string(),
                modified: entry.metadata().last_modified().map(Into::into),
            })
            .collect())
    }

    /// The entries under `dir` (with everything below them if `recursive`), and `dir` as the
    /// prefix of their paths; none if it does not exist.
    fn list(&self, dir: &str, recursive: bool) -> Result<(String, Vec<opendal::Entry>)> {
        let operator = self.operator.clone();
        let prefix = match dir.trim_matches('/') {
            "" => String::new(),
            dir => format!("{dir}/"),
        };
        let listed = self.wait({
            let path = format!("/{prefix}");
            async move { operator.list_with(&path).recursive(recursive).await }
        });
        match listed {
            Ok(entries) => Ok((prefix, entries)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok((prefix, Vec::new())),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) fn remove_file(&self, name: &str) -> Result<()> {
        let operator = self.operator.clone();
        let path = name.to_string();
        self.wait(async move { operator.delete(&path).await })?;
        Ok(())
    }

    pub(super) fn remove_directory(&self, dir: &str) -> Result<()> {
        let operator = self.operator.clone();
        let path = format!("{}/", dir.trim_end_matches('/'));
        self.wait(async move { operator.delete_with(&path).recursive(true).await })?;
        Ok(())
    }
}
