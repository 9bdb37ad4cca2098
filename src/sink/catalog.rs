//! Which Iceberg catalog holds the tables: `--catalog-uri` and `--catalog-option`.
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

use anyhow::{Result, bail};
use iceberg::{Catalog, CatalogBuilder};
use iceberg_catalog_rest::RestCatalogBuilder;
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalogBuilder};
use iceberg_storage_opendal::OpenDalResolvingStorageFactory;

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
                Arc::new(
                    RestCatalogBuilder::default()
                        .with_storage_factory(storage)
                        .load(CATALOG_NAME, properties)
                        .await?,
                )
            }
        })
    }
}
