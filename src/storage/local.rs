//! Write-once files in a local directory: a synced temporary file hard-linked under its name.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::ListedFile;

/// The files under one local directory.
pub(super) struct LocalFiles {
    root: PathBuf,
}

impl LocalFiles {
    pub(super) fn new(root: PathBuf) -> Self {
        LocalFiles { root }
    }

    /// Creates the directory, so that one that cannot be is found at start, not at a commit.
    pub(super) fn create_root(&self) -> Result<()> {
        create_private_dirs(&self.root)
    }

    pub(super) fn create(
        &self,
        name: &str,
        write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<u64> {
        create_local(&self.root.join(name), write)
    }

    pub(super) fn read(&self, name: &str) -> Result<Option<Box<dyn Read>>> {
        let path = self.root.join(name);
        match File::open(&path) {
            Ok(file) => Ok(Some(Box::new(std::io::BufReader::with_capacity(
                1 << 20,
                file,
            )))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub(super) fn directories(&self, dir: &str) -> Result<Vec<String>> {
        let path = self.root.join(dir);
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", path.display())),
        };
        Ok(entries
            .flatten()
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect())
    }

    pub(super) fn files(&self, dir: &str) -> Result<Vec<ListedFile>> {
        let mut found = Vec::new();
        let mut pending = vec![dir.trim_matches('/').to_string()];
        while let Some(dir) = pending.pop() {
            let path = self.root.join(&dir);
            let entries = match std::fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot list {}", path.display())),
            };
            for entry in entries.flatten() {
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                let name = if dir.is_empty() {
                    name
                } else {
                    format!("{dir}/{name}")
                };
                match entry.file_type() {
                    Ok(kind) if kind.is_dir() => pending.push(name),
                    Ok(_) => found.push(ListedFile {
                        name,
                        modified: entry.metadata().and_then(|m| m.modified()).ok(),
                    }),
                    Err(_) => {}
                }
            }
        }
        Ok(found)
    }

    pub(super) fn remove_file(&self, name: &str) -> Result<()> {
        let path = self.root.join(name);
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))
    }

    pub(super) fn remove_directory(&self, dir: &str) -> Result<()> {
        let path = self.root.join(dir);
        std::fs::remove_dir_all(&path).with_context(|| format!("cannot remove {}", path.display()))
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
    // The parent of a relative path's first component is the empty path: the working directory.
    if dir.as_os_str().is_empty() || dir.is_dir() {
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
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_and_directories_are_private_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalFiles::new(dir.path().join("store"));
        files.create("a/b/part.bin", |w| w.write_all(b"x")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("store/a/b/part.bin")), 0o600);
        assert_eq!(mode(&dir.path().join("store/a/b")), 0o700);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("store/a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["part.bin"]);
    }

    #[test]
    fn a_failed_write_leaves_no_file_under_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalFiles::new(dir.path().to_path_buf());
        let failed = files.create("part.bin", |_| Err(std::io::Error::other("disk full")));
        assert!(failed.is_err());
        assert!(files.read("part.bin").unwrap().is_none());
        files.create("part.bin", |w| w.write_all(b"ok")).unwrap();
        assert!(files.read("part.bin").unwrap().is_some());
    }
}
