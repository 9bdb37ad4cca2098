//! Commits of table updates we build ourselves: snapshots iceberg-rust's transactions cannot make
//! (a `replace` that removes and adds files), through each catalog's own commit protocol. A
//! [`iceberg::TableCommit`] cannot be built outside iceberg-rust, so the protocol is spoken here:
//!
//! * the SQL catalog (SQLite, PostgreSQL): the requirements are checked against the table as the
//!   catalog holds it, the updates applied to its metadata, the new metadata file written, and
//!   the catalog row's `metadata_location` swapped only if it still names the metadata the
//!   updates were applied to: the compare-and-swap iceberg-catalog-sql and Java's `JdbcCatalog`
//!   use, so a concurrent commit of any of them makes exactly one of the two fail;
//! * a REST catalog: `POST /v1/{prefix}/namespaces/{namespace}/tables/{table}` with the updates
//!   and requirements, which the catalog checks and applies atomically ([`super::rest_commit`]);
//! * AWS Glue: the new metadata file written, the succession of the base claimed, and the Glue
//!   table pointed at it with its `VersionId` ([`GlueCatalog::commit`]).
//!
//! Like [`Warehouse::append`], one attempt, bounded by `--catalog-timeout`; a failure may have
//! been taken by the catalog, so whoever retries looks at the table first.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use iceberg::spec::TableMetadata;
use iceberg::table::Table;
use iceberg::{MetadataLocation, TableIdent, TableRequirement, TableUpdate};
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use tokio::sync::OnceCell;

use super::catalog::{CATALOG_NAME, Warehouse};
use super::glue::GlueCatalog;
use super::rest_commit::RestCommits;

/// How the catalog takes a commit of updates.
pub(super) enum CommitRoute {
    /// iceberg's SQL catalog; the pool is opened at the first commit.
    Sql {
        uri: String,
        /// PostgreSQL numbers its parameters; SQLite takes `?`.
        numbered_parameters: bool,
        pool: OnceCell<AnyPool>,
    },
    Rest(RestCommits),
    Glue(GlueCatalog),
}

impl CommitRoute {
    pub(super) fn sql(uri: String, numbered_parameters: bool) -> Self {
        CommitRoute::Sql {
            uri,
            numbered_parameters,
            pool: OnceCell::new(),
        }
    }
}

impl Warehouse {
    /// Commits `updates` to `base`'s table, requiring that its current snapshot is still
    /// `base`'s (and that it is the same table), and returns the table committed.
    pub async fn commit_updates(&self, base: &Table, updates: Vec<TableUpdate>) -> Result<Table> {
        let ident = base.identifier();
        let metadata = base.metadata();
        let requirements = vec![
            TableRequirement::UuidMatch {
                uuid: metadata.uuid(),
            },
            TableRequirement::RefSnapshotIdMatch {
                r#ref: "main".into(),
                snapshot_id: metadata.current_snapshot_id(),
            },
        ];
        let commit = async {
            match &self.route {
                CommitRoute::Sql {
                    uri,
                    numbered_parameters,
                    pool,
                } => {
                    let pool = pool
                        .get_or_try_init(|| async {
                            sqlx::any::install_default_drivers();
                            AnyPoolOptions::new()
                                .max_connections(1)
                                .idle_timeout(Duration::from_secs(10))
                                .connect(uri)
                                .await
                        })
                        .await?;
                    let current = self.catalog.load_table(ident).await?;
                    let staged = staged(&current, requirements, updates)?;
                    swap_metadata(pool, *numbered_parameters, ident, &current, &staged).await?;
                    Ok(staged)
                }
                CommitRoute::Rest(rest) => rest.commit(base, requirements, updates).await,
                CommitRoute::Glue(glue) => {
                    let (current, version) = glue.load(ident).await?;
                    let staged = staged(&current, requirements, updates)?;
                    glue.commit(&current, version, &staged).await?;
                    Ok(staged)
                }
            }
        };
        tokio::time::timeout(self.patience, commit)
            .await
            .unwrap_or_else(|_| {
                bail!(
                    "the Iceberg catalog {} gave no answer within {:?} to a commit to {ident}: \
                     check that it is up and reachable, or allow it longer with --catalog-timeout",
                    self.shown,
                    self.patience
                )
            })
            .with_context(|| format!("commit to {ident} failed"))
    }
}

/// `current` with `updates` applied, if it meets `requirements`, and its new metadata file's
/// location (not written yet).
fn staged(
    current: &Table,
    requirements: Vec<TableRequirement>,
    updates: Vec<TableUpdate>,
) -> Result<Table> {
    for requirement in &requirements {
        requirement
            .check(Some(current.metadata()))
            .context("the table changed since it was read")?;
    }
    let location = current.metadata_location_result()?;
    let mut builder = current
        .metadata()
        .clone()
        .into_builder(Some(location.to_string()));
    for update in updates {
        builder = update.apply(builder)?;
    }
    let metadata = builder.build()?.metadata;
    let new_location = location
        .parse::<MetadataLocation>()?
        .with_next_version()
        .with_new_metadata(&metadata)
        .to_string();
    table_at(current, metadata, new_location)
}

/// `table` for use on the calling thread's runtime (a table keeps the runtime it was loaded on).
pub fn on_this_runtime(table: &Table) -> Result<Table> {
    table_at(
        table,
        table.metadata().clone(),
        table.metadata_location_result()?.to_string(),
    )
}

/// `table` with other metadata, at `location`.
pub(super) fn table_at(table: &Table, metadata: TableMetadata, location: String) -> Result<Table> {
    Ok(Table::builder()
        .metadata(metadata)
        .metadata_location(location)
        .identifier(table.identifier().clone())
        .file_io(table.file_io().clone())
        .runtime(iceberg::Runtime::try_current()?)
        .build()?)
}

/// Writes `staged`'s metadata file, then points the catalog's row at it if the row still points
/// at `current`'s.
async fn swap_metadata(
    pool: &AnyPool,
    numbered_parameters: bool,
    ident: &TableIdent,
    current: &Table,
    staged: &Table,
) -> Result<()> {
    let new_location = staged.metadata_location_result()?;
    staged
        .metadata()
        .write_to(staged.file_io(), &new_location.parse::<MetadataLocation>()?)
        .await?;
    let old_location = current.metadata_location_result()?;
    let parameter = |n: usize| {
        if numbered_parameters {
            format!("${n}")
        } else {
            "?".to_string()
        }
    };
    let statement = format!(
        "UPDATE iceberg_tables SET metadata_location = {}, previous_metadata_location = {} \
         WHERE catalog_name = {} AND table_namespace = {} AND table_name = {} \
         AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL) AND metadata_location = {}",
        parameter(1),
        parameter(2),
        parameter(3),
        parameter(4),
        parameter(5),
        parameter(6),
    );
    let swapped = sqlx::query(&statement)
        .bind(new_location)
        .bind(old_location)
        .bind(CATALOG_NAME)
        .bind(ident.namespace().join("."))
        .bind(ident.name())
        .bind(old_location)
        .execute(pool)
        .await?;
    if swapped.rows_affected() == 0 {
        // Nobody will ever read the metadata file we wrote.
        let _ = staged.file_io().delete(new_location).await;
        bail!("another commit to {ident} came first");
    }
    Ok(())
}
