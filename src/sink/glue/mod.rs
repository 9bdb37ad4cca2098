//! AWS Glue as the Iceberg catalog (`--catalog-uri glue`): a database per namespace, a Glue table
//! per Iceberg table whose `metadata_location` parameter names its current metadata file, as
//! Java's `GlueCatalog` keeps them, so Athena, EMR, Spark and pyiceberg find our tables.
//!
//! Our own thin client, for the few calls a pipeline makes, signed with SigV4 (reqsign, already in
//! the build through OpenDAL's S3): iceberg-catalog-glue 0.10 refuses `timestamptz` columns.
//!
//! A commit writes its new metadata file, then claims the succession of the metadata it was
//! built on by creating `<base metadata file>.next`, which names the new file, atomically (a
//! conditional `PUT` on S3, an exclusive create on a local disk), then points the Glue table at
//! the new file with `UpdateTable` and the `VersionId` it read with the base. Of two of our
//! writers on one base only one can claim it, even where Glue does not check `VersionId` (moto's
//! server, which the tests run against, ignores it); `VersionId` keeps out writers that make no
//! claims, such as Spark. The claim is the commit point: whoever loads the table and finds a
//! claim on the metadata Glue names completes that commit first, so a writer killed between its
//! claim and its `UpdateTable` has committed all the same, and Glue's pointer set back by a late
//! `UpdateTable` comes forward again at the next load.
//!
//! Options (`--catalog-option`): `glue.region` (else `AWS_REGION`, else `us-east-1`),
//! `glue.endpoint` (another endpoint than `https://glue.<region>.amazonaws.com`),
//! `glue.catalog-id` (another account's catalog), and credentials `glue.access-key-id`,
//! `glue.secret-access-key`, `glue.session-token` (else `s3.access-key-id` and
//! `s3.secret-access-key`, else the usual AWS chain: environment, profile, web identity, ECS, EC2).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use iceberg::io::{FileIO, FileIOBuilder};
use iceberg::spec::{
    NestedFieldRef, PrimitiveType, Schema, TableMetadata, TableMetadataBuilder, Type,
};
use iceberg::table::Table;
use iceberg::{
    Catalog, Error, ErrorKind, MetadataLocation, Namespace, NamespaceIdent, Result, TableCommit,
    TableCreation, TableIdent,
};
use serde_json::{Value, json};

use super::expiry::dropped_metadata_files;
use crate::failure::fail_point;
use crate::storage::{TableStorage, TableStorageFactory};

mod client;
use client::GlueClient;

/// A Glue Data Catalog and the warehouse under which new tables are placed.
#[derive(Debug)]
pub struct GlueCatalog {
    client: GlueClient,
    file_io: FileIO,
    /// The tables' files, for the claims FileIO cannot make (module docs).
    storage: TableStorage,
    warehouse: String,
}

/// How many claimed commits a load completes before it gives up: one writer claims one commit
/// at a time, so more than a few in a row means something else is wrong.
const MAX_CLAIMS_COMPLETED: usize = 16;

/// Where the claim on the succession of the metadata file at `metadata_location` is.
fn claim_location(metadata_location: &str) -> String {
    format!("{metadata_location}.next")
}

/// The table's entry in Glue as a load read it, which a commit on that load's table updates.
pub struct GlueVersion(GlueTable);

impl GlueCatalog {
    /// The catalog of `options` (see the module's documentation); new tables go under
    /// `warehouse` (`<warehouse>/<database>.db/<table>`, as Java's GlueCatalog places them).
    pub fn new(
        options: &HashMap<String, String>,
        warehouse: &str,
        http: reqwest::Client,
    ) -> Result<Self> {
        Ok(GlueCatalog {
            client: GlueClient::new(options, http)?,
            file_io: FileIOBuilder::new(Arc::new(TableStorageFactory))
                .with_props(options.clone())
                .build(),
            storage: TableStorage::new(options),
            warehouse: warehouse.trim_end_matches('/').to_string(),
        })
    }

    fn database(namespace: &NamespaceIdent) -> Result<&str> {
        match &namespace[..] {
            [database] => Ok(database),
            _ => Err(Error::new(
                ErrorKind::DataInvalid,
                format!("Glue has one level of namespaces (databases), not {namespace:?}"),
            )),
        }
    }

    /// The Glue table of `ident`: its `metadata_location` and `VersionId`.
    async fn glue_table(&self, ident: &TableIdent) -> Result<GlueTable> {
        let database = Self::database(ident.namespace())?;
        let answer = self
            .client
            .call(
                "GetTable",
                json!({"DatabaseName": database, "Name": ident.name()}),
            )
            .await
            .map_err(|e| e.about_table(ident))?;
        let table = &answer["Table"];
        let parameters = &table["Parameters"];
        if !is_iceberg(table) {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                format!("Glue table {ident} is not an Iceberg table (no table_type=ICEBERG)"),
            ));
        }
        let metadata_location = parameters["metadata_location"]
            .as_str()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::DataInvalid,
                    format!("Glue table {ident} has no metadata_location parameter"),
                )
            })?
            .to_string();
        Ok(GlueTable {
            metadata_location,
            version_id: table["VersionId"].as_str().map(str::to_string),
        })
    }

    /// Creates the Glue table of `ident`, pointing at `metadata`, written at `metadata_location`.
    async fn register(
        &self,
        ident: &TableIdent,
        metadata: TableMetadata,
        metadata_location: String,
    ) -> Result<Table> {
        let database = Self::database(ident.namespace())?;
        self.client
            .call(
                "CreateTable",
                json!({
                    "DatabaseName": database,
                    "TableInput": table_input(ident, &metadata, &metadata_location, None),
                }),
            )
            .await
            .map_err(|e| e.about_table(ident))?;
        self.table(ident, metadata, metadata_location)
    }

    fn table(
        &self,
        ident: &TableIdent,
        metadata: TableMetadata,
        location: String,
    ) -> Result<Table> {
        Table::builder()
            .file_io(self.file_io.clone())
            .identifier(ident.clone())
            .metadata_location(location)
            .metadata(metadata)
            .runtime(iceberg::Runtime::try_current()?)
            .build()
    }

    /// The table `ident` with the commits claimed on it completed (module docs), and its entry
    /// in Glue, for a commit on it.
    pub async fn load(&self, ident: &TableIdent) -> Result<(Table, GlueVersion)> {
        let as_named = |entry: GlueTable| async move {
            let metadata =
                TableMetadata::read_from(&self.file_io, &entry.metadata_location).await?;
            let table = self.table(ident, metadata, entry.metadata_location.clone())?;
            Ok((table, GlueVersion(entry)))
        };
        for _ in 0..MAX_CLAIMS_COMPLETED {
            let entry = self.glue_table(ident).await?;
            let claimed = self
                .storage
                .read_if_exists(&claim_location(&entry.metadata_location))
                .await?;
            let Some(successor) = claimed else {
                return as_named(entry).await;
            };
            let successor = String::from_utf8_lossy(&successor).into_owned();
            let metadata = match TableMetadata::read_from(&self.file_io, &successor).await {
                Ok(metadata) => metadata,
                // Only a cleanup of files no metadata names (Spark's `remove_orphan_files`)
                // takes the file of a claim never completed: that commit did not happen.
                Err(e) if !self.file_io.exists(&successor).await.unwrap_or(true) => {
                    tracing::warn!(
                        "ignoring the claim on {} of {ident}: {successor} is gone ({e})",
                        entry.metadata_location
                    );
                    return as_named(entry).await;
                }
                Err(e) => return Err(e),
            };
            // Refused if the entry changed since it was read: then the loop reads it again.
            match self.point_at(ident, &entry, &successor, &metadata).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::CatalogCommitConflicts => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::new(
            ErrorKind::Unexpected,
            format!(
                "{ident}: more than {MAX_CLAIMS_COMPLETED} claimed commits in a row to \
                 complete; is another writer committing in a loop?"
            ),
        ))
    }

    /// Commits `staged`, built on `base` (as loaded with `version`, by [`Self::load`]): writes
    /// its metadata file, claims the succession of `base`'s and points Glue at it (module docs).
    /// A conflict if another commit claimed `base` first or, where Glue checks versions, a
    /// writer that makes no claims changed the table since the load.
    pub async fn commit(&self, base: &Table, version: GlueVersion, staged: &Table) -> Result<()> {
        let ident = base.identifier();
        let base_location = base.metadata_location_result()?;
        let new_location = staged.metadata_location_result()?;
        staged
            .metadata()
            .write_to(&self.file_io, &new_location.parse::<MetadataLocation>()?)
            .await?;
        let claim = claim_location(base_location);
        let claimed = self
            .storage
            .create_new(&claim, Bytes::from(new_location.to_string()))
            .await?
            // A retried request whose first attempt went through finds its own claim.
            || self.storage.read_if_exists(&claim).await?.as_deref() == Some(new_location.as_bytes());
        if !claimed {
            // Nobody will ever read the metadata file we wrote.
            let _ = self.file_io.delete(new_location).await;
            return Err(Error::new(
                ErrorKind::CatalogCommitConflicts,
                format!("another commit to {ident} came first"),
            ));
        }
        fail_point("after-glue-claim");
        if let Err(refused) = self
            .point_at(ident, &version.0, new_location, staged.metadata())
            .await
        {
            // Someone may have completed the claim for us, and gone on; or the claim is void,
            // taken over by a writer that makes none.
            let (now, _) = self.load(ident).await?;
            if !descends_from(now.metadata(), now.metadata_location(), new_location) {
                return Err(refused);
            }
        }
        self.forget_claims(base, staged).await;
        Ok(())
    }

    /// Points the Glue entry of `ident`, as read in `entry`, at the metadata file `location`
    /// (`metadata`) with `UpdateTable`, which Glue refuses if the entry changed since.
    async fn point_at(
        &self,
        ident: &TableIdent,
        entry: &GlueTable,
        location: &str,
        metadata: &TableMetadata,
    ) -> Result<()> {
        let previous = Some(entry.metadata_location.as_str());
        let mut update = json!({
            "DatabaseName": Self::database(ident.namespace())?,
            "TableInput": table_input(ident, metadata, location, previous),
            "SkipArchive": false,
        });
        if let Some(version) = &entry.version_id {
            update["VersionId"] = Value::String(version.clone());
        }
        self.client
            .call("UpdateTable", update)
            .await
            .map_err(|e| e.about_table(ident))
            .map(drop)
    }

    /// Deletes the claims on metadata files `staged` dropped from the metadata log: no load
    /// reaches them again.
    async fn forget_claims(&self, base: &Table, staged: &Table) {
        for file in dropped_metadata_files(base, staged) {
            let _ = self.file_io.delete(claim_location(file)).await;
        }
    }
}

/// Whether the table whose metadata, at `location`, is `metadata` is the metadata file
/// `ancestor` or was committed on it, as far as its metadata log goes back.
fn descends_from(metadata: &TableMetadata, location: Option<&str>, ancestor: &str) -> bool {
    location == Some(ancestor)
        || metadata
            .metadata_log()
            .iter()
            .any(|log| log.metadata_file == ancestor)
}

/// Whether a Glue table (as `GetTable` and `GetTables` answer) is an Iceberg table.
fn is_iceberg(table: &Value) -> bool {
    table["Parameters"]["table_type"]
        .as_str()
        .is_some_and(|t| t.eq_ignore_ascii_case("iceberg"))
}

/// A Glue table's entry: where the Iceberg metadata it names is, and Glue's version of it.
struct GlueTable {
    metadata_location: String,
    version_id: Option<String>,
}

/// The `TableInput` of an Iceberg table whose metadata is at `location`: its columns mapped as
/// Java's GlueCatalog maps them, for engines that read Glue's schema.
fn table_input(
    ident: &TableIdent,
    metadata: &TableMetadata,
    location: &str,
    previous: Option<&str>,
) -> Value {
    let mut parameters = json!({"table_type": "ICEBERG", "metadata_location": location});
    if let Some(previous) = previous {
        parameters["previous_metadata_location"] = Value::String(previous.to_string());
    }
    json!({
        "Name": ident.name(),
        "TableType": "EXTERNAL_TABLE",
        "Parameters": parameters,
        "StorageDescriptor": {
            "Location": metadata.location(),
            "Columns": columns(metadata.current_schema()),
        },
    })
}

fn columns(schema: &Schema) -> Vec<Value> {
    schema
        .as_struct()
        .fields()
        .iter()
        .map(|field| {
            let mut column = json!({
                "Name": field.name,
                "Type": glue_type(&field.field_type),
                "Parameters": {
                    "iceberg.field.id": field.id.to_string(),
                    "iceberg.field.optional": (!field.required).to_string(),
                    "iceberg.field.current": "true",
                },
            });
            if let Some(doc) = &field.doc {
                column["Comment"] = Value::String(doc.clone());
            }
            column
        })
        .collect()
}

/// A type as Glue (Hive) names it; times of day are strings and timestamps, with or without a
/// zone, `timestamp`, as in Java's GlueCatalog.
fn glue_type(field_type: &Type) -> String {
    let fields = |fields: &[NestedFieldRef]| {
        fields
            .iter()
            .map(|f| format!("{}:{}", f.name, glue_type(&f.field_type)))
            .collect::<Vec<_>>()
            .join(",")
    };
    match field_type {
        Type::Primitive(primitive) => match primitive {
            PrimitiveType::Boolean => "boolean".into(),
            PrimitiveType::Int => "int".into(),
            PrimitiveType::Long => "bigint".into(),
            PrimitiveType::Float => "float".into(),
            PrimitiveType::Double => "double".into(),
            PrimitiveType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            PrimitiveType::Date => "date".into(),
            PrimitiveType::Timestamp
            | PrimitiveType::Timestamptz
            | PrimitiveType::TimestampNs
            | PrimitiveType::TimestamptzNs => "timestamp".into(),
            PrimitiveType::Time | PrimitiveType::String | PrimitiveType::Uuid => "string".into(),
            PrimitiveType::Fixed(_) | PrimitiveType::Binary => "binary".into(),
        },
        Type::Struct(s) => format!("struct<{}>", fields(s.fields())),
        Type::List(list) => format!("array<{}>", glue_type(&list.element_field.field_type)),
        Type::Map(map) => format!(
            "map<{},{}>",
            glue_type(&map.key_field.field_type),
            glue_type(&map.value_field.field_type)
        ),
    }
}

#[async_trait::async_trait]
impl Catalog for GlueCatalog {
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> Result<Vec<NamespaceIdent>> {
        if parent.is_some() {
            return Ok(Vec::new());
        }
        let answers = self.client.pages("GetDatabases", json!({})).await?;
        Ok(answers
            .iter()
            .flat_map(|answer| answer["DatabaseList"].as_array().into_iter().flatten())
            .filter_map(|database| database["Name"].as_str())
            .map(|name| NamespaceIdent::new(name.to_string()))
            .collect())
    }

    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> Result<Namespace> {
        let database = Self::database(namespace)?;
        self.client
            .call(
                "CreateDatabase",
                json!({"DatabaseInput": {"Name": database, "Parameters": properties}}),
            )
            .await
            .map_err(|e| e.about_namespace(namespace))?;
        Ok(Namespace::with_properties(namespace.clone(), properties))
    }

    async fn get_namespace(&self, namespace: &NamespaceIdent) -> Result<Namespace> {
        let database = Self::database(namespace)?;
        let answer = self
            .client
            .call("GetDatabase", json!({"Name": database}))
            .await
            .map_err(|e| e.about_namespace(namespace))?;
        let properties = answer["Database"]["Parameters"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        Ok(Namespace::with_properties(namespace.clone(), properties))
    }

    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> Result<bool> {
        match self.get_namespace(namespace).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NamespaceNotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> Result<()> {
        let database = Self::database(namespace)?;
        self.client
            .call(
                "UpdateDatabase",
                json!({"Name": database, "DatabaseInput": {"Name": database, "Parameters": properties}}),
            )
            .await
            .map_err(|e| e.about_namespace(namespace))
            .map(drop)
    }

    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> Result<()> {
        let database = Self::database(namespace)?;
        self.client
            .call("DeleteDatabase", json!({"Name": database}))
            .await
            .map_err(|e| e.about_namespace(namespace))
            .map(drop)
    }

    async fn list_tables(&self, namespace: &NamespaceIdent) -> Result<Vec<TableIdent>> {
        let database = Self::database(namespace)?;
        let answers = self
            .client
            .pages("GetTables", json!({"DatabaseName": database}))
            .await
            .map_err(|e| e.about_namespace(namespace))?;
        Ok(answers
            .iter()
            .flat_map(|answer| answer["TableList"].as_array().into_iter().flatten())
            .filter(|table| is_iceberg(table))
            .filter_map(|table| table["Name"].as_str())
            .map(|name| TableIdent::new(namespace.clone(), name.to_string()))
            .collect())
    }

    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> Result<Table> {
        let database = Self::database(namespace)?;
        let ident = TableIdent::new(namespace.clone(), creation.name.clone());
        let location = match &creation.location {
            Some(location) => location.clone(),
            None => format!("{}/{database}.db/{}", self.warehouse, creation.name),
        };
        let metadata = TableMetadataBuilder::from_table_creation(TableCreation {
            location: Some(location.clone()),
            ..creation
        })?
        .build()?
        .metadata;
        let metadata_location = MetadataLocation::new_with_metadata(location, &metadata);
        metadata.write_to(&self.file_io, &metadata_location).await?;
        self.register(&ident, metadata, metadata_location.to_string())
            .await
    }

    async fn load_table(&self, ident: &TableIdent) -> Result<Table> {
        Ok(self.load(ident).await?.0)
    }

    async fn drop_table(&self, ident: &TableIdent) -> Result<()> {
        let database = Self::database(ident.namespace())?;
        self.client
            .call(
                "DeleteTable",
                json!({"DatabaseName": database, "Name": ident.name()}),
            )
            .await
            .map_err(|e| e.about_table(ident))
            .map(drop)
    }

    async fn purge_table(&self, ident: &TableIdent) -> Result<()> {
        self.drop_table(ident).await
    }

    async fn table_exists(&self, ident: &TableIdent) -> Result<bool> {
        match self.glue_table(ident).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::TableNotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn rename_table(&self, _: &TableIdent, _: &TableIdent) -> Result<()> {
        Err(Error::new(
            ErrorKind::FeatureUnsupported,
            "renaming a table in Glue is not supported",
        ))
    }

    async fn register_table(&self, ident: &TableIdent, metadata_location: String) -> Result<Table> {
        let metadata = TableMetadata::read_from(&self.file_io, &metadata_location).await?;
        self.register(ident, metadata, metadata_location).await
    }

    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        let (base, version) = self.load(commit.identifier()).await?;
        let staged = commit.apply(base.clone())?;
        self.commit(&base, version, &staged).await?;
        Ok(staged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iceberg::spec::NestedField;

    #[test]
    fn columns_are_mapped_as_javas_glue_catalog_maps_them() {
        let schema = Schema::builder()
            .with_fields(vec![
                NestedField::required(1, "user_id", Type::Primitive(PrimitiveType::String)).into(),
                NestedField::optional(2, "start", Type::Primitive(PrimitiveType::Timestamptz))
                    .into(),
                NestedField::required(3, "count", Type::Primitive(PrimitiveType::Long)).into(),
                NestedField::optional(
                    4,
                    "pages",
                    Type::List(iceberg::spec::ListType::new(
                        NestedField::list_element(5, Type::Primitive(PrimitiveType::String), true)
                            .into(),
                    )),
                )
                .into(),
            ])
            .build()
            .unwrap();
        let columns = columns(&schema);
        let types: Vec<&str> = columns
            .iter()
            .map(|c| c["Type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["string", "timestamp", "bigint", "array<string>"]);
        assert_eq!(columns[1]["Parameters"]["iceberg.field.optional"], "true");
        assert_eq!(columns[2]["Parameters"]["iceberg.field.id"], "3");
    }
}
