//! Commits to a table, one attempt each: appending data files with our record, and expiring
//! snapshots. Each requires the snapshot the pipeline last saw ([`PinnedCatalog`]); the
//! exactly-once protocol around them is the commit module's (`src/commit/protocol.rs`).

use std::collections::HashMap;

use anyhow::{Context, Result};
use iceberg::spec::{DataFile, deserialize_data_file_from_json};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, Namespace, NamespaceIdent, TableCommit, TableCreation, TableIdent};

use super::catalog::Warehouse;
use super::expiry::{
    LAST_EXPIRY_MS, delete_dropped_metadata_files, delete_unreferenced_files, forget_view,
};
use super::manifests::with_merged_manifests;
use super::tables::TableKind;

impl Warehouse {
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

    /// One commit attempt: appends data files (as serialized by [`super::TableWriter::close`])
    /// in one snapshot whose summary carries `properties`, which the table's properties take too.
    /// The commit requires the table's current snapshot to be `base`'s, so the catalog refuses it
    /// if anyone committed since; it is never retried here: whoever retries must first look at
    /// what the table holds (the commit protocol, `src/commit/protocol.rs`).
    pub async fn append(
        &self,
        base: &Table,
        serialized_files: &[String],
        properties: HashMap<String, String>,
    ) -> Result<Table> {
        let files = deserialize_files(base, serialized_files)?;
        let view = match with_merged_manifests(base).await {
            Ok(view) => view,
            Err(e) => {
                tracing::warn!("cannot merge the manifests of {}: {e:#}", base.identifier());
                base.clone()
            }
        };
        let transaction = Transaction::new(&view);
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
            base: &view,
        };
        let committed = transaction.commit(&pinned).await;
        // The view's manifest list served this attempt only; no snapshot names it.
        forget_view(base, &view).await;
        let committed =
            committed.with_context(|| format!("commit to {} failed", base.identifier()))?;
        delete_dropped_metadata_files(base, &committed).await;
        Ok(committed)
    }

    /// Expires the snapshots `expired` (metadata only), in a commit of its own on top of `table`.
    /// Best effort: a failure is logged, and the next commit tries again.
    pub async fn expire_snapshots(&self, table: Table, expired: Vec<i64>) -> Table {
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
            // Expiry leaves no snapshot behind: the property is what tells when it last ran.
            let when = HashMap::from([(
                LAST_EXPIRY_MS.to_string(),
                crate::clock::wall_clock_ms().to_string(),
            )]);
            let transaction = with_properties(transaction, when)?;
            let pinned = PinnedCatalog {
                inner: self.catalog.as_ref(),
                base: &table,
            };
            anyhow::Ok(transaction.commit(&pinned).await?)
        };
        match expire.await {
            Ok(expired) => {
                crate::failure::fail_point("after-expiry-commit");
                tracing::debug!(table = %table.identifier(), count, "expired old snapshots");
                delete_dropped_metadata_files(&table, &expired).await;
                delete_unreferenced_files(&table, &expired).await;
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

/// Data files as [`super::TableWriter::close`] serialized them, for `table`'s default partition
/// spec and current schema.
pub(super) fn deserialize_files(table: &Table, serialized: &[String]) -> Result<Vec<DataFile>> {
    let metadata = table.metadata();
    let spec = metadata.default_partition_spec();
    let schema = metadata.current_schema();
    let partition_type = spec.partition_type(schema)?;
    let files = serialized
        .iter()
        .map(|json| deserialize_data_file_from_json(json, spec.spec_id(), &partition_type, schema))
        .collect::<Result<Vec<DataFile>, _>>()?;
    Ok(files)
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
pub(super) fn with_properties(
    transaction: Transaction,
    properties: HashMap<String, String>,
) -> iceberg::Result<Transaction> {
    let update = properties.into_iter().fold(
        transaction.update_table_properties(),
        |action, (key, value)| action.set(key, value),
    );
    update.apply(transaction)
}
