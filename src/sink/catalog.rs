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
//!   `header.NAME=VALUE` (extra headers), `warehouse=…` (the catalog's warehouse name);
//! * `glue`: the AWS Glue Data Catalog ([`super::glue`]), with `glue.region`, `glue.endpoint`,
//!   `glue.catalog-id` and credentials as options.
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
use iceberg::{
    Catalog, CatalogBuilder, Namespace, NamespaceIdent, TableCommit, TableCreation, TableIdent,
};
use iceberg_catalog_rest::{RestCatalog, RestCatalogBuilder};
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalogBuilder};

use super::bounded::BoundedCatalog;
use super::glue::GlueCatalog;
use super::rest_commit::RestCommits;
use super::tables::TableKind;
use super::updates::CommitRoute;
use crate::retry::Backoff;
use crate::storage::{Location, TableStorageFactory};

/// The catalog's name in the SQL catalog's rows (pyiceberg and Spark open it under this name).
pub const CATALOG_NAME: &str = "default";

/// `--catalog-uri`, `--catalog-option`s and `--catalog-timeout`.
#[derive(Clone, PartialEq, Eq)]
pub struct CatalogSettings {
    /// `None` is the SQLite catalog in the warehouse directory.
    pub uri: Option<String>,
    /// Catalog properties; values may be secrets and are never logged.
    pub options: Vec<(String, String)>,
    /// How long a catalog that is away (or, for SQLite, locked) is waited for at start, and the
    /// longest any one call to the catalog may take (`sink::bounded`).
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

impl std::fmt::Debug for CatalogSettings {
    /// Shows the URI with its secrets hidden, and option names only: their values may be secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let uri = self.uri.as_deref().map(without_secrets);
        let options: Vec<String> = self
            .options
            .iter()
            .map(|(k, _)| format!("{k}=***"))
            .collect();
        f.debug_struct("CatalogSettings")
            .field("uri", &uri)
            .field("options", &options)
            .field("patience", &self.patience)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogKind {
    /// iceberg's SQL catalog (SQLite or PostgreSQL).
    Sql,
    /// An Iceberg REST catalog.
    Rest,
    /// The AWS Glue Data Catalog.
    Glue,
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
                 --catalog-uri (postgres://…, http(s)://…, glue or sqlite:PATH) for a warehouse on S3"
            );
        }
        let uri = self.resolved_uri(warehouse);
        let scheme = uri.split(':').next().unwrap_or_default();
        Ok(match scheme {
            "sqlite" | "postgres" | "postgresql" => CatalogKind::Sql,
            "http" | "https" => CatalogKind::Rest,
            "glue" => CatalogKind::Glue,
            _ => bail!(
                "--catalog-uri {}: unknown kind of catalog; use sqlite:PATH, postgres://…, \
                 http(s)://… (a REST catalog) or glue",
                self.display_uri(warehouse)
            ),
        })
    }

    /// The URI for messages and logs, with its secrets hidden: the password of its user, and the
    /// values of query parameters that name a secret (`?password=…`, `token`, `secret`,
    /// `credential`, `key`).
    pub fn display_uri(&self, warehouse: &Location) -> String {
        without_secrets(&self.resolved_uri(warehouse))
    }

    /// `text` with every secret of these settings (in the URI, or an option's value that names
    /// one) replaced by `***`: for errors of the catalog's client, which may quote them.
    pub fn scrub(&self, warehouse: &Location, text: &str) -> String {
        let options = self
            .options
            .iter()
            .filter(|(key, _)| names_a_secret(key))
            .map(|(_, value)| value.clone());
        let mut secrets: Vec<String> = uri_secrets(&self.resolved_uri(warehouse))
            .into_iter()
            .chain(options)
            .filter(|secret| !secret.is_empty())
            .collect();
        // The longest first, so that a secret inside another is not left half shown.
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        secrets
            .iter()
            .fold(text.to_string(), |text, secret| text.replace(secret, "***"))
    }

    /// Opens the catalog, of the `kind` [`CatalogSettings::kind`] found; data of new tables goes
    /// under `warehouse` where the catalog lets us choose (the SQL catalogs; a REST catalog
    /// decides for itself). Each call to it fails after `patience` without an answer.
    pub async fn open(
        &self,
        kind: CatalogKind,
        warehouse: &Location,
    ) -> iceberg::Result<Arc<dyn Catalog>> {
        let inner = self.open_unbounded(kind, warehouse).await?;
        let shown = self.display_uri(warehouse);
        Ok(Arc::new(BoundedCatalog::new(inner, self.patience, shown)))
    }

    async fn open_unbounded(
        &self,
        kind: CatalogKind,
        warehouse: &Location,
    ) -> iceberg::Result<Arc<dyn Catalog>> {
        let uri = self.resolved_uri(warehouse);
        let mut properties: HashMap<String, String> = self.options.iter().cloned().collect();
        let storage = Arc::new(TableStorageFactory);
        Ok(match kind {
            CatalogKind::Sql => {
                let (uri, bind_style) = sql_connection(uri);
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
                    .with_client(self.http_client()?)
                    .with_storage_factory(storage)
                    .load(CATALOG_NAME, properties)
                    .await?;
                Arc::new(RenewingCatalog(catalog))
            }
            CatalogKind::Glue => Arc::new(self.glue(warehouse)?),
        })
    }

    fn glue(&self, warehouse: &Location) -> iceberg::Result<GlueCatalog> {
        let properties: HashMap<String, String> = self.options.iter().cloned().collect();
        GlueCatalog::new(&properties, &warehouse.uri(), self.http_client()?)
    }
}

impl CatalogSettings {
    /// The HTTP client of a REST catalog. Its timeouts bound the requests the catalog's wrapper
    /// does not see (fetching OAuth2 tokens); a little longer than the wrapper's, whose error is
    /// the clearer.
    fn http_client(&self) -> iceberg::Result<reqwest::Client> {
        reqwest::Client::builder()
            .connect_timeout(self.patience)
            .timeout(self.patience + Duration::from_secs(1))
            .build()
            .map_err(|e| {
                iceberg::Error::new(
                    iceberg::ErrorKind::Unexpected,
                    format!("cannot make the REST catalog's HTTP client: {e}"),
                )
            })
    }

    /// How our own commits of table updates reach the catalog (`sink::updates`).
    fn commit_route(&self, kind: CatalogKind, warehouse: &Location) -> Result<CommitRoute> {
        let uri = self.resolved_uri(warehouse);
        Ok(match kind {
            CatalogKind::Sql => {
                let (uri, bind_style) = sql_connection(uri);
                CommitRoute::sql(uri, bind_style == SqlBindStyle::DollarNumeric)
            }
            CatalogKind::Rest => CommitRoute::Rest(RestCommits::new(
                self.http_client()?,
                uri,
                self.options.iter().cloned().collect(),
            )),
            CatalogKind::Glue => CommitRoute::Glue(self.glue(warehouse)?),
        })
    }
}

/// The SQL catalog's connection string for `uri` (a SQLite file is created on first use), and
/// how its statements take parameters.
fn sql_connection(uri: String) -> (String, SqlBindStyle) {
    if uri.starts_with("sqlite:") {
        let create = if uri.contains('?') {
            "&mode=rwc"
        } else {
            "?mode=rwc"
        };
        (format!("{uri}{create}"), SqlBindStyle::QMark)
    } else {
        (uri, SqlBindStyle::DollarNumeric)
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
    /// How commits the catalog's client cannot make reach the catalog.
    pub(super) route: CommitRoute,
    /// The longest any one call to the catalog may take.
    pub(super) patience: Duration,
    /// The catalog's address as errors show it (secrets hidden).
    pub(super) shown: String,
    pub(super) namespace: NamespaceIdent,
    sessions_table: String,
    /// The open-sessions table's name, if the pipeline keeps one.
    open_sessions_table: Option<String>,
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
        // A catalog that accepts connections and never answers (or a pool that waits for one)
        // must not outlast the patience either: each attempt gets what is left of it.
        let deadline = tokio::time::Instant::now() + settings.patience;
        let catalog = CATALOG_BACKOFF
            .patience(settings.patience)
            .retry_async(
                || async move {
                    let attempt = async {
                        let catalog = settings.open(kind, root).await?;
                        // A REST catalog is only reached on first use: ask it something now.
                        catalog.list_namespaces(None).await?;
                        Ok::<_, iceberg::Error>(catalog)
                    };
                    let left = deadline
                        .saturating_duration_since(tokio::time::Instant::now())
                        .max(Duration::from_millis(100));
                    tokio::time::timeout(left, attempt)
                        .await
                        .unwrap_or_else(|_| {
                            Err(iceberg::Error::new(
                                iceberg::ErrorKind::Unexpected,
                                format!("no answer within {left:?}"),
                            ))
                        })
                },
                |e, delay| {
                    let error = settings.scrub(root, &e.to_string());
                    tracing::warn!(
                        "the Iceberg catalog is not available yet, retrying in {delay:?}: {error}"
                    )
                },
            )
            .await
            .map_err(|e| {
                // The client's error may quote the URI or an option: never show their secrets.
                anyhow::anyhow!(
                    "cannot reach the Iceberg catalog {} for {:?}: check --catalog-uri and \
                     --catalog-option (for the default SQLite catalog: that the warehouse \
                     directory is writable and that no other program holds the catalog locked): \
                     {}",
                    settings.display_uri(root),
                    settings.patience,
                    settings.scrub(root, &e.to_string())
                )
            })?;
        Ok(Warehouse {
            catalog,
            route: settings.commit_route(kind, root)?,
            patience: settings.patience,
            shown: settings.display_uri(root),
            namespace: NamespaceIdent::new(database.to_string()),
            sessions_table: sessions_table.to_string(),
            open_sessions_table: None,
        })
    }

    /// The warehouse with an open-sessions table named `name` (`--open-sessions-table`).
    pub fn with_open_sessions_table(mut self, name: Option<String>) -> Self {
        self.open_sessions_table = name;
        self
    }

    /// The pipeline's tables: the three of [`TableKind::ALL`], and the open-sessions table if
    /// there is one.
    pub fn kinds(&self) -> Vec<TableKind> {
        let open = self
            .open_sessions_table
            .as_ref()
            .map(|_| TableKind::OpenSessions);
        TableKind::ALL.into_iter().chain(open).collect()
    }

    pub fn ident(&self, kind: TableKind) -> TableIdent {
        let name = match (kind, &self.open_sessions_table) {
            (TableKind::OpenSessions, Some(name)) => name.clone(),
            _ => kind.table_name(&self.sessions_table),
        };
        TableIdent::new(self.namespace.clone(), name)
    }

    pub async fn exists(&self, kind: TableKind) -> Result<bool> {
        let ident = self.ident(kind);
        self.catalog
            .table_exists(&ident)
            .await
            .with_context(|| format!("cannot look for table {ident}"))
    }

    pub async fn load(&self, kind: TableKind) -> Result<Table> {
        let ident = self.ident(kind);
        self.catalog.load_table(&ident).await.with_context(|| {
            format!("cannot load table {ident}; run with the same --warehouse to create it")
        })
    }

    /// Every table of the pipeline, as the catalog has it now.
    pub async fn load_all(&self) -> Result<HashMap<TableKind, Table>> {
        let mut tables = HashMap::new();
        for kind in self.kinds() {
            tables.insert(kind, self.load(kind).await?);
        }
        Ok(tables)
    }
}

/// Whether a URI query parameter or catalog option of this name holds a secret.
fn names_a_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "token", "secret", "credential", "key"]
        .iter()
        .any(|word| name.contains(word))
}

/// `uri` with its secrets ([`uri_secrets`]) replaced by `***`.
fn without_secrets(uri: &str) -> String {
    uri_secrets(uri)
        .iter()
        .fold(uri.to_string(), |shown, secret| {
            shown.replace(secret, "***")
        })
}

/// The secrets written in a URI: its user's password, and the values of query parameters that
/// name a secret (both as written, percent-encoded or not).
fn uri_secrets(uri: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    let Some((_, rest)) = uri.split_once("://") else {
        return secrets;
    };
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    if let Some(at) = authority.rfind('@')
        && let Some((_, password)) = authority[..at].split_once(':')
    {
        secrets.push(password.to_string());
    }
    if let Some((_, query)) = rest.split_once('?') {
        for pair in query.split('&') {
            if let Some((key, value)) = pair.split_once('=')
                && names_a_secret(key)
            {
                secrets.push(value.to_string());
            }
        }
    }
    secrets.retain(|secret| !secret.is_empty());
    secrets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(uri: &str) -> CatalogSettings {
        CatalogSettings {
            uri: Some(uri.into()),
            ..CatalogSettings::default()
        }
    }

    #[test]
    fn passwords_and_secret_parameters_are_hidden() {
        let warehouse: Location = "/w".parse().unwrap();
        let uri = "postgres://app:pw1@db:5432/iceberg?sslmode=require&password=pw2&auth_token=t0k";
        let shown = settings(uri).display_uri(&warehouse);
        assert_eq!(
            shown,
            "postgres://app:***@db:5432/iceberg?sslmode=require&password=***&auth_token=***"
        );
        let plain = "https://catalog.example/api/catalog?warehouse=lake";
        assert_eq!(settings(plain).display_uri(&warehouse), plain);
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let mut settings = settings("postgres://app:pw1@db/iceberg?token=t0k");
        settings.options = vec![("credential".into(), "id:s3cr3t".into())];
        let shown = format!("{settings:?}");
        for secret in ["pw1", "t0k", "s3cr3t"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn errors_are_scrubbed_of_every_secret() {
        let warehouse: Location = "/w".parse().unwrap();
        let mut with_options = settings("postgres://app@db/iceberg?password=hunter2");
        with_options.options = vec![
            ("credential".into(), "id:s3cr3t".into()),
            ("warehouse".into(), "lake".into()),
        ];
        let error = "connect to postgres://app@db/iceberg?password=hunter2 as id:s3cr3t in lake";
        let scrubbed = with_options.scrub(&warehouse, error);
        assert!(
            !scrubbed.contains("hunter2") && !scrubbed.contains("s3cr3t"),
            "{scrubbed}"
        );
        assert!(scrubbed.contains("lake"));
    }
}
