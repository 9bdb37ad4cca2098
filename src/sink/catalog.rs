//! Which Iceberg catalog holds the tables (`--catalog-uri` and `--catalog-option`), and the
//! [`Warehouse`]: the catalog opened, with the names of our tables in it.
//!
//! * `sqlite:PATH` (the default, `<warehouse>/catalog.db`): iceberg's SQL catalog on SQLite, the
//!   embedded choice for one machine;
//! * `postgres://…` (or `postgresql://…`): the same SQL catalog on PostgreSQL, shared by every
//!   machine of a cluster and by other engines' JDBC catalogs;
//! * `http://…` / `https://…`: an Iceberg REST catalog (Polaris, Nessie, Lakekeeper, Gravitino,
//!   Unity, Iceberg's own). Options pass its properties through: `token=…` (bearer),
//!   `credential=ID:SECRET` with optional `oauth2-server-uri`, `scope` (OAuth2 client credentials),
//!   `header.NAME=VALUE` (extra headers), `warehouse=…` (the catalog's warehouse name).
//!
//! ```
//! use sessionize::sink::catalog::{CatalogKind, CatalogSettings};
//! let uri = Some("postgres://app:s3cret@db:5432/iceberg".into());
//! let settings = CatalogSettings { uri, ..CatalogSettings::default() };
//! let warehouse = "/w".parse().unwrap();
//! assert_eq!(settings.kind(&warehouse).unwrap(), CatalogKind::Sql);
//! assert_eq!(settings.display_uri(&warehouse), "postgres://app:***@db:5432/iceberg");
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use iceberg::table::Table;
use iceberg::transaction::Transaction;
use iceberg::{
    Catalog, CatalogBuilder, Namespace, NamespaceIdent, TableCommit, TableCreation, TableIdent,
};
use iceberg_catalog_rest::{RestCatalog, RestCatalogBuilder};
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalogBuilder};
use iceberg_storage_opendal::OpenDalResolvingStorageFactory;

use super::commit::with_properties;
use super::tables::TableKind;
use crate::retry::Backoff;
use crate::storage::Location;

/// The catalog's name in the SQL catalog's rows (pyiceberg and Spark open it under this name).
pub const CATALOG_NAME: &str = "default";

/// `--catalog-uri`, `--catalog-option`s and `--catalog-timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogSettings {
    /// `None` is the SQLite catalog in the warehouse directory.
    pub uri: Option<String>,
    /// Catalog properties; values may be secrets and are never logged.
    pub options: Vec<(String, String)>,
    /// How long a catalog that is away (or, for SQLite, locked) is waited for at start.
    pub patience: Duration,
}

impl Default for CatalogSettings {
    fn default() -> Self {
        CatalogSettings {
            uri: None,
            options: Vec::new(),
            patience: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogKind {
    /// iceberg's SQL catalog (SQLite or PostgreSQL).
    Sql,
    /// An Iceberg REST catalog.
    Rest,
}

impl CatalogSettings {
    /// The catalog's URI, the default resolved against the warehouse directory.
    fn resolved_uri(&self, warehouse: &Location) -> String {
        match &self.uri {
            Some(uri) => uri.clone(),
            None => format!("sqlite:{warehouse}/catalog.db"),
        }
    }

    pub fn kind(&self, warehouse: &Location) -> Result<CatalogKind> {
        if self.uri.is_none() && warehouse.local().is_none() {
            bail!(
                "--warehouse {warehouse}: the default SQLite catalog lives on a local disk; give \
                 --catalog-uri (postgres://…, http(s)://… or sqlite:PATH) for a warehouse on S3"
            );
        }
        let uri = self.resolved_uri(warehouse);
        let scheme = uri.split(':').next().unwrap_or_default();
        Ok(match scheme {
            "sqlite" | "postgres" | "postgresql" => CatalogKind::Sql,
            "http" | "https" => CatalogKind::Rest,
            _ => bail!(
                "--catalog-uri {}: unknown kind of catalog; use sqlite:PATH, postgres://… or \
                 http(s)://… (a REST catalog)",
                self.display_uri(warehouse)
            ),
        })
    }

    /// The URI for messages and logs, with any password in it hidden.
    pub fn display_uri(&self, warehouse: &Location) -> String {
        let uri = self.resolved_uri(warehouse);
        let Some((scheme, rest)) = uri.split_once("://") else {
            return uri;
        };
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        let Some(at) = authority.rfind('@') else {
            return uri;
        };
        match authority[..at].split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
            None => uri,
        }
    }

    /// Opens the catalog, of the `kind` [`CatalogSettings::kind`] found; data of new tables goes
    /// under `warehouse` where the catalog lets us choose (the SQL catalogs; a REST catalog
    /// decides for itself).
    pub async fn open(
        &self,
        kind: CatalogKind,
        warehouse: &Location,
    ) -> iceberg::Result<Arc<dyn Catalog>> {
        let uri = self.resolved_uri(warehouse);
        let mut properties: HashMap<String, String> = self.options.iter().cloned().collect();
        let storage = Arc::new(OpenDalResolvingStorageFactory::new());
        Ok(match kind {
            CatalogKind::Sql => {
                let (uri, bind_style) = if uri.starts_with("sqlite:") {
                    // Created on first use.
                    let create = if uri.contains('?') {
                        "&mode=rwc"
                    } else {
                        "?mode=rwc"
                    };
                    (format!("{uri}{create}"), SqlBindStyle::QMark)
                } else {
                    (uri, SqlBindStyle::DollarNumeric)
                };
                Arc::new(
                    SqlCatalogBuilder::default()
                        .uri(uri)
                        .warehouse_location(warehouse.uri())
                        .sql_bind_style(bind_style)
                        .with_storage_factory(storage)
                        .load(CATALOG_NAME, properties)
                        .await?,
                )
            }
            CatalogKind::Rest => {
                properties.insert("uri".into(), uri);
                let catalog = RestCatalogBuilder::default()
                    .with_storage_factory(storage)
                    .load(CATALOG_NAME, properties)
                    .await?;
                Arc::new(RenewingCatalog(catalog))
            }
        })
    }
}

/// A REST catalog whose OAuth2 token is renewed when the catalog refuses it: the REST client
/// fetches a token with the client credentials at its first request and keeps it, while
/// catalogs' tokens expire (after an hour, typically) and a pipeline runs for months. A request
/// refused as unauthorized is made again once with a new token; a commit is not (its argument
/// is consumed), and the commit loop's retry finds the new token.
#[derive(Debug)]
struct RenewingCatalog(RestCatalog);

impl RenewingCatalog {
    /// Fetches a new token if `result` is a refusal of the current one; returns whether it did.
    async fn renewed<T>(&self, result: &iceberg::Result<T>) -> bool {
        let Err(error) = result else {
            return false;
        };
        if !error.to_string().contains("401 Unauthorized") {
            return false;
        }
        match self.0.regenerate_token().await {
            Ok(()) => {
                tracing::info!("the REST catalog refused the OAuth2 token: fetched a new one");
                true
            }
            Err(e) => {
                tracing::warn!(
                    "the REST catalog refused the OAuth2 token, and gave no new one: {e}"
                );
                false
            }
        }
    }
}

/// `$call` on the inner catalog, made again once after a renewed token.
macro_rules! renewing {
    ($self:ident, $call:expr) => {{
        let result = $call.await;
        if $self.renewed(&result).await {
            $call.await
        } else {
            result
        }
    }};
}

#[async_trait::async_trait]
impl Catalog for RenewingCatalog {
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> iceberg::Result<Vec<NamespaceIdent>> {
        renewing!(self, self.0.list_namespaces(parent))
    }

    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<Namespace> {
        renewing!(self, self.0.create_namespace(namespace, properties.clone()))
    }

    async fn get_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<Namespace> {
        renewing!(self, self.0.get_namespace(namespace))
    }

    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> iceberg::Result<bool> {
        renewing!(self, self.0.namespace_exists(namespace))
    }

    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<()> {
        renewing!(self, self.0.update_namespace(namespace, properties.clone()))
    }

    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<()> {
        renewing!(self, self.0.drop_namespace(namespace))
    }

    async fn list_tables(&self, namespace: &NamespaceIdent) -> iceberg::Result<Vec<TableIdent>> {
        renewing!(self, self.0.list_tables(namespace))
    }

    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> iceberg::Result<Table> {
        let result = self.0.create_table(namespace, creation).await;
        self.renewed(&result).await;
        result
    }

    async fn load_table(&self, table: &TableIdent) -> iceberg::Result<Table> {
        renewing!(self, self.0.load_table(table))
    }

    async fn drop_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        renewing!(self, self.0.drop_table(table))
    }

    async fn purge_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        renewing!(self, self.0.purge_table(table))
    }

    async fn table_exists(&self, table: &TableIdent) -> iceberg::Result<bool> {
        renewing!(self, self.0.table_exists(table))
    }

    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> iceberg::Result<()> {
        renewing!(self, self.0.rename_table(src, dest))
    }

    async fn register_table(
        &self,
        table: &TableIdent,
        metadata_location: String,
    ) -> iceberg::Result<Table> {
        renewing!(
            self,
            self.0.register_table(table, metadata_location.clone())
        )
    }

    async fn update_table(&self, commit: TableCommit) -> iceberg::Result<Table> {
        let result = self.0.update_table(commit).await;
        self.renewed(&result).await;
        result
    }
}

/// How a catalog that is away at start is waited for (up to `--catalog-timeout`).
const CATALOG_BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));

/// The tables' catalog and the warehouse directory: by default a SQLite catalog at
/// `<warehouse>/catalog.db`, readable by pyiceberg's
/// `SqlCatalog("default", uri="sqlite:///<warehouse>/catalog.db", ...)`; see [`CatalogSettings`].
pub struct Warehouse {
    pub(super) catalog: Arc<dyn Catalog>,
    pub(super) namespace: NamespaceIdent,
    sessions_table: String,
}

impl Warehouse {
    /// Opens the catalog `settings` name, with new data under `root` (created if needed). Must run
    /// inside a tokio runtime. A catalog that is busy (locked by another client) or briefly away
    /// is waited for; one that stays away is an error that says what to check.
    pub async fn open(
        settings: &CatalogSettings,
        root: impl Into<Location>,
        database: &str,
        sessions_table: &str,
    ) -> Result<Self> {
        let root = match root.into() {
            Location::Local(path) => {
                std::fs::create_dir_all(&path).with_context(|| {
                    format!("cannot create the warehouse directory {}", path.display())
                })?;
                Location::Local(path.canonicalize().with_context(|| {
                    format!("cannot resolve the warehouse path {}", path.display())
                })?)
            }
            s3 => s3,
        };
        let kind = settings.kind(&root)?;
        let root = &root;
        let catalog = CATALOG_BACKOFF
            .patience(settings.patience)
            .retry_async(
                || async move {
                    let catalog = settings.open(kind, root).await?;
                    // A REST catalog is only reached on first use: ask it something now.
                    catalog.list_namespaces(None).await?;
                    Ok::<_, iceberg::Error>(catalog)
                },
                |e, delay| {
                    tracing::warn!(
                        "the Iceberg catalog is not available yet, retrying in {delay:?}: {e}"
                    )
                },
            )
            .await
            .with_context(|| {
                format!(
                    "cannot reach the Iceberg catalog {} for {:?}: check --catalog-uri and \
                     --catalog-option (for the default SQLite catalog: that the warehouse \
                     directory is writable and that no other program holds the catalog locked)",
                    settings.display_uri(root),
                    settings.patience
                )
            })?;
        Ok(Warehouse {
            catalog,
            namespace: NamespaceIdent::new(database.to_string()),
            sessions_table: sessions_table.to_string(),
        })
    }

    pub fn ident(&self, kind: TableKind) -> TableIdent {
        TableIdent::new(
            self.namespace.clone(),
            kind.table_name(&self.sessions_table),
        )
    }

    pub async fn load(&self, kind: TableKind) -> Result<Table> {
        let ident = self.ident(kind);
        self.catalog.load_table(&ident).await.with_context(|| {
            format!("cannot load table {ident}; run with the same --warehouse to create it")
        })
    }

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
}
