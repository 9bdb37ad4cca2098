//! Data files a run wrote for an epoch it never committed (it was killed, or lost its commit to
//! another pipeline), or for a compaction round it never committed: no snapshot names them, and
//! no commit ever will.
//!
//! Files are told apart by the run that wrote them: their names start with the run's id. Once
//! this run has committed, no other run can commit anything it wrote before that commit: every
//! commit, an epoch's or a compaction's (ours, or `sessionize maintain`'s), requires the snapshot
//! it read, which this run's commit replaced, and none is ever rebased. So after its first commit
//! a run removes the unreferenced files of every other run written before it started, and never
//! touches its own (an epoch in flight), those written since (a `maintain` round that began
//! after the commit) or other tools' (told by their names).

use std::time::SystemTime;

use anyhow::Result;
use iceberg::table::Table;

use crate::sink::expiry::referenced_files;
use crate::storage::{ListedFile, Location, WriteOnceFiles};

/// The data files of `table` that other sessionize runs than `run_id` wrote before
/// `written_before` and no snapshot names, as paths under the table's `data/` directory.
pub async fn orphans(
    table: &Table,
    run_id: &str,
    listed: &[ListedFile],
    written_before: SystemTime,
) -> Result<Vec<String>> {
    let referenced = referenced_files(table).await?;
    let data = format!("{}/data", table.metadata().location().trim_end_matches('/'));
    Ok(listed
        .iter()
        .filter(|file| {
            let file_name = file.name.rsplit('/').next().unwrap_or(&file.name);
            written_by(file_name).is_some_and(|run| run != run_id)
                && file.modified.is_some_and(|time| time < written_before)
                && !referenced.contains(&format!("{data}/{}", file.name))
        })
        .map(|file| file.name.clone())
        .collect())
}

/// The files under the table's `data/` directory, and the store to remove them from.
pub fn data_files(
    table: &Table,
    options: &[(String, String)],
) -> Result<(WriteOnceFiles, Vec<ListedFile>)> {
    let location: Location = table.metadata().location().parse()?;
    let files = WriteOnceFiles::open(&location.join("data"), options)?;
    let listed = files.files("")?;
    Ok((files, listed))
}

/// The run that wrote a data file, from its name (`<run id>-w<worker>-e<epoch>-…`, the run id
/// being two hexadecimal parts); `None` for files of other writers.
fn written_by(file_name: &str) -> Option<&str> {
    let mut parts = file_name.splitn(5, '-');
    let (time, random) = (parts.next()?, parts.next()?);
    let (worker, epoch) = (parts.next()?, parts.next()?);
    let hex = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_hexdigit());
    let numbered = |part: &str, prefix: char| {
        part.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    (hex(time) && hex(random) && numbered(worker, 'w') && numbered(epoch, 'e'))
        .then(|| &file_name[..time.len() + 1 + random.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_known_by_the_run_that_wrote_them() {
        assert_eq!(
            written_by("661d57615b84c-2eb14cb1-w1-e17-00000-0.parquet"),
            Some("661d57615b84c-2eb14cb1")
        );
        // Spark's, pyiceberg's and iceberg-rust's default names.
        for other in [
            "00000-0-3f1c9a7e-1b2c-4d5e-8f90-123456789abc-00001.parquet",
            "data-00000.parquet",
            "abc-def-x1-e2.parquet",
        ] {
            assert_eq!(written_by(other), None, "{other}");
        }
    }
}
