//! Every call to the catalog bounded by `--catalog-timeout`: a catalog that accepts connections
//! and never answers (a hung server, a black-holing firewall, a pool that waits for a connection)
//! fails the call instead of the run hanging. The SQL catalog's pool has no timeout we could
//! set, and the REST client's own only bounds the HTTP requests, so the bound is here, around
//! each call, whichever the catalog.
//!
//! A commit cut short has an unknown outcome (the catalog may have taken it): its caller treats it
//! as any other failed commit, by looking at the table before anything else
//! (`src/commit/protocol.rs`), never by appending again blindly.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use iceberg::table::Table;
use iceberg::{Catalog, Namespace, NamespaceIdent, TableCommit, TableCreation, TableIdent};

/// `inner`, each call given at most `limit`.
#[derive(Debug)]
pub(super) struct BoundedCatalog {
    inner: Arc<dyn Catalog>,
    limit: Duration,
    /// The catalog's URI with its secrets hidden, for the error.
    shown: String,
}

impl BoundedCatalog {
    pub(super) fn new(inner: Arc<dyn Catalog>, limit: Duration, shown: String) -> Self {
        BoundedCatalog {
            inner,
            limit,
            shown,
        }
    }

    async fn bounded<T>(
        &self,
        what: &str,
        call: impl Future<Output = iceberg::Result<T>>,
    ) -> iceberg::Result<T> {
        tokio::time::timeout(self.limit, call)
            .await
            .unwrap_or_else(|_| {
                Err(iceberg::Error::new(
                    iceberg::ErrorKind::Unexpected,
                    format!(
                        "the Iceberg catalog {} gave no answer within {:?} to {what}: check that \
                         it is up and reachable, or allow it longer with --catalog-timeout",
                        self.shown, self.limit
                    ),
                ))
            })
    }
}

#[async_trait::async_trait]
impl Catalog for BoundedCatalog {
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> iceberg::Result<Vec<NamespaceIdent>> {
        self.bounded(
            "a listing of namespaces",
            self.inner.list_namespaces(parent),
        )
        .await
    }

    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<Namespace> {
        let call = self.inner.create_namespace(namespace, properties);
        self.bounded("the creation of a namespace", call).await
    }

    async fn get_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<Namespace> {
        self.bounded("a namespace's lookup", self.inner.get_namespace(namespace))
            .await
    }

    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> iceberg::Result<bool> {
        let call = self.inner.namespace_exists(namespace);
        self.bounded("a namespace's lookup", call).await
    }

    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<()> {
        let call = self.inner.update_namespace(namespace, properties);
        self.bounded("an update of a namespace", call).await
    }

    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<()> {
        let call = self.inner.drop_namespace(namespace);
        self.bounded("the removal of a namespace", call).await
    }

    async fn list_tables(&self, namespace: &NamespaceIdent) -> iceberg::Result<Vec<TableIdent>> {
        self.bounded("a listing of tables", self.inner.list_tables(namespace))
            .await
    }

    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> iceberg::Result<Table> {
        let call = self.inner.create_table(namespace, creation);
        self.bounded("the creation of a table", call).await
    }

    async fn load_table(&self, table: &TableIdent) -> iceberg::Result<Table> {
        let what = format!("loading table {table}");
        self.bounded(&what, self.inner.load_table(table)).await
    }

    async fn drop_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        let what = format!("dropping table {table}");
        self.bounded(&what, self.inner.drop_table(table)).await
    }

    async fn purge_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        let what = format!("purging table {table}");
        self.bounded(&what, self.inner.purge_table(table)).await
    }

    async fn table_exists(&self, table: &TableIdent) -> iceberg::Result<bool> {
        let what = format!("looking up table {table}");
        self.bounded(&what, self.inner.table_exists(table)).await
    }

    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> iceberg::Result<()> {
        let what = format!("renaming table {src}");
        self.bounded(&what, self.inner.rename_table(src, dest))
            .await
    }

    async fn register_table(
        &self,
        table: &TableIdent,
        metadata_location: String,
    ) -> iceberg::Result<Table> {
        let what = format!("registering table {table}");
        let call = self.inner.register_table(table, metadata_location);
        self.bounded(&what, call).await
    }

    async fn update_table(&self, commit: TableCommit) -> iceberg::Result<Table> {
        let what = format!(
            "a commit to {} (whether it took the commit is unknown)",
            commit.identifier()
        );
        self.bounded(&what, self.inner.update_table(commit)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A catalog whose every call waits for ever.
    #[derive(Debug)]
    struct Silent;

    #[async_trait::async_trait]
    impl Catalog for Silent {
        async fn list_namespaces(
            &self,
            _: Option<&NamespaceIdent>,
        ) -> iceberg::Result<Vec<NamespaceIdent>> {
            std::future::pending().await
        }
        async fn create_namespace(
            &self,
            _: &NamespaceIdent,
            _: HashMap<String, String>,
        ) -> iceberg::Result<Namespace> {
            std::future::pending().await
        }
        async fn get_namespace(&self, _: &NamespaceIdent) -> iceberg::Result<Namespace> {
            std::future::pending().await
        }
        async fn namespace_exists(&self, _: &NamespaceIdent) -> iceberg::Result<bool> {
            std::future::pending().await
        }
        async fn update_namespace(
            &self,
            _: &NamespaceIdent,
            _: HashMap<String, String>,
        ) -> iceberg::Result<()> {
            std::future::pending().await
        }
        async fn drop_namespace(&self, _: &NamespaceIdent) -> iceberg::Result<()> {
            std::future::pending().await
        }
        async fn list_tables(&self, _: &NamespaceIdent) -> iceberg::Result<Vec<TableIdent>> {
            std::future::pending().await
        }
        async fn create_table(
            &self,
            _: &NamespaceIdent,
            _: TableCreation,
        ) -> iceberg::Result<Table> {
            std::future::pending().await
        }
        async fn load_table(&self, _: &TableIdent) -> iceberg::Result<Table> {
            std::future::pending().await
        }
        async fn drop_table(&self, _: &TableIdent) -> iceberg::Result<()> {
            std::future::pending().await
        }
        async fn purge_table(&self, _: &TableIdent) -> iceberg::Result<()> {
            std::future::pending().await
        }
        async fn table_exists(&self, _: &TableIdent) -> iceberg::Result<bool> {
            std::future::pending().await
        }
        async fn rename_table(&self, _: &TableIdent, _: &TableIdent) -> iceberg::Result<()> {
            std::future::pending().await
        }
        async fn register_table(&self, _: &TableIdent, _: String) -> iceberg::Result<Table> {
            std::future::pending().await
        }
        async fn update_table(&self, _: TableCommit) -> iceberg::Result<Table> {
            std::future::pending().await
        }
    }

    #[test]
    fn a_silent_catalog_fails_each_call_within_the_limit() {
        let runtime = crate::sink::runtime().unwrap();
        let limit = Duration::from_millis(300);
        let catalog = BoundedCatalog::new(Arc::new(Silent), limit, "http://db/***".into());
        let ident = TableIdent::from_strs(["sessions", "user_sessions"]).unwrap();
        let started = std::time::Instant::now();
        let error = runtime
            .block_on(catalog.load_table(&ident))
            .unwrap_err()
            .to_string();
        // The call fails rather than waiting for ever; not before the limit. How much later
        // depends on the machine's load, so the upper bound only tells a bound from a hang.
        let took = started.elapsed();
        assert!(took >= limit && took < Duration::from_secs(60), "{took:?}");
        for part in [
            "http://db/***",
            "sessions.user_sessions",
            "--catalog-timeout",
        ] {
            assert!(error.contains(part), "{error}");
        }
    }
}
