//! AWS Glue as the Iceberg catalog (`--catalog-uri glue`): a database per namespace, a Glue table
//! per Iceberg table whose `metadata_location` parameter names its current metadata file, as
//! Java's `GlueCatalog` keeps them, so Athena, EMR, Spark and pyiceberg find our tables.
//!
//! Our own thin client, for the few calls a pipeline makes, signed with SigV4 (reqsign, already in
//! the build through OpenDAL's S3): iceberg-catalog-glue 0.10 refuses `timestamptz` columns.
//!
//! A commit writes the new metadata file, then `UpdateTable` with the `VersionId` the table had
//! when its current metadata was read: Glue refuses the update if anyone updated the table since,
//! so of two writers exactly one wins. Before that, the table's `metadata_location` must still
//! be the one the commit was built on.
//!
//! Options (`--catalog-option`): `glue.region` (else `AWS_REGION`, else `us-east-1`),
//! `glue.endpoint` (another endpoint than `https://glue.<region>.amazonaws.com`),
//! `glue.catalog-id` (another account's catalog), and credentials `glue.access-key-id`,
//! `glue.secret-access-key`, `glue.session-token` (else `s3.access-key-id` and
//! `s3.secret-access-key`, else the usual AWS chain: environment, profile, web identity, ECS, EC2).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use iceberg::io::{FileIO, FileIOBuilder, StorageFactory};
use iceberg::spec::{
    NestedFieldRef, PrimitiveType, Schema, TableMetadata, TableMetadataBuilder, Type,
};
use iceberg::table::Table;
use iceberg::{
    Catalog, Error, ErrorKind, MetadataLocation, Namespace, NamespaceIdent, Result, TableCommit,
    TableCreation, TableIdent,
};
use reqsign_aws_v4::{
    Credential, DefaultCredentialProvider, RequestSigner, StaticCredentialProvider,
};
use reqsign_core::{Context, OsEnv, Signer};
use serde_json::{Value, json};

/// A Glue Data Catalog and the warehouse under which new tables are placed.
#[derive(Debug)]
pub struct GlueCatalog {
    client: GlueClient,
    file_io: FileIO,
    warehouse: String,
}

impl GlueCatalog {
    /// The catalog of `options` (see the module's documentation); new tables go under
    /// `warehouse` (`<warehouse>/<database>.db/<table>`, as Java's GlueCatalog places them).
    pub fn new(
        options: &HashMap<String, String>,
        warehouse: &str,
        storage: Arc<dyn StorageFactory>,
        http: reqwest::Client,
    ) -> Result<Self> {
        Ok(GlueCatalog {
            client: GlueClient::new(options, http)?,
            file_io: FileIOBuilder::new(storage)
                .with_props(options.clone())
                .build(),
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

    /// Points the Glue table of `ident` at `new_location` (whose metadata, `metadata`, is
    /// written) if it still points at `base_location`: the check first, then `UpdateTable` with
    /// the table's `VersionId`, which Glue refuses if the table changed in between.
    pub async fn swap_metadata(
        &self,
        ident: &TableIdent,
        base_location: &str,
        new_location: &str,
        metadata: &TableMetadata,
    ) -> Result<()> {
        let current = self.glue_table(ident).await?;
        if current.metadata_location != base_location {
            return Err(Error::new(
                ErrorKind::CatalogCommitConflicts,
                format!("another commit to {ident} came first"),
            ));
        }
        let mut update = json!({
            "DatabaseName": Self::database(ident.namespace())?,
            "TableInput": table_input(ident, metadata, new_location, Some(base_location)),
            "SkipArchive": false,
        });
        if let Some(version) = current.version_id {
            update["VersionId"] = Value::String(version);
        }
        self.client
            .call("UpdateTable", update)
            .await
            .map_err(|e| e.about_table(ident))
            .map(drop)
    }
}

/// Whether a Glue table (as `GetTable` and `GetTables` answer) is an Iceberg table.
fn is_iceberg(table: &Value) -> bool {
    table["Parameters"]["table_type"]
        .as_str()
        .is_some_and(|t| t.eq_ignore_ascii_case("iceberg"))
}

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
        let glue = self.glue_table(ident).await?;
        let metadata = TableMetadata::read_from(&self.file_io, &glue.metadata_location).await?;
        self.table(ident, metadata, glue.metadata_location)
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
        let ident = commit.identifier().clone();
        let current = self.load_table(&ident).await?;
        let base_location = current.metadata_location_result()?.to_string();
        let staged = commit.apply(current)?;
        let new_location = staged.metadata_location_result()?.to_string();
        staged
            .metadata()
            .write_to(staged.file_io(), &new_location.parse::<MetadataLocation>()?)
            .await?;
        let swapped = self
            .swap_metadata(&ident, &base_location, &new_location, staged.metadata())
            .await;
        if let Err(e) = &swapped
            && e.kind() == ErrorKind::CatalogCommitConflicts
        {
            // Nobody will ever read the metadata file we wrote.
            let _ = staged.file_io().delete(&new_location).await;
        }
        swapped.map(|()| staged)
    }
}

/// Glue's JSON API at one endpoint, each request signed with SigV4.
struct GlueClient {
    http: reqwest::Client,
    endpoint: String,
    catalog_id: Option<String>,
    signer: Signer<Credential>,
}

impl std::fmt::Debug for GlueClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlueClient")
            .field("endpoint", &self.endpoint)
            .field("catalog_id", &self.catalog_id)
            .finish()
    }
}

/// Why Glue refused a call: its exception's name and message.
struct GlueError {
    exception: String,
    message: String,
}

impl GlueError {
    fn into_error(self, not_found: ErrorKind, exists: ErrorKind, what: String) -> Error {
        let kind = match self.exception.as_str() {
            "EntityNotFoundException" => not_found,
            "AlreadyExistsException" => exists,
            "ConcurrentModificationException" => ErrorKind::CatalogCommitConflicts,
            _ => ErrorKind::Unexpected,
        };
        Error::new(
            kind,
            format!("Glue: {what}: {}: {}", self.exception, self.message),
        )
    }

    fn about_table(self, ident: &TableIdent) -> Error {
        self.into_error(
            ErrorKind::TableNotFound,
            ErrorKind::TableAlreadyExists,
            format!("table {ident}"),
        )
    }

    fn about_namespace(self, namespace: &NamespaceIdent) -> Error {
        self.into_error(
            ErrorKind::NamespaceNotFound,
            ErrorKind::NamespaceAlreadyExists,
            format!("database {}", namespace.join(".")),
        )
    }
}

impl From<GlueError> for Error {
    fn from(e: GlueError) -> Error {
        e.into_error(ErrorKind::Unexpected, ErrorKind::Unexpected, "call".into())
    }
}

impl GlueClient {
    fn new(options: &HashMap<String, String>, http: reqwest::Client) -> Result<Self> {
        let option = |names: &[&str]| names.iter().find_map(|name| options.get(*name).cloned());
        let region = option(&["glue.region", "client.region"])
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".into());
        let endpoint = option(&["glue.endpoint"])
            .unwrap_or_else(|| format!("https://glue.{region}.amazonaws.com"));
        let context = Context::new()
            .with_file_read(reqsign_file_read_tokio::TokioFileRead)
            .with_http_send(SignerHttp(http.clone()))
            .with_env(OsEnv);
        let key = option(&["glue.access-key-id", "s3.access-key-id"]);
        let secret = option(&["glue.secret-access-key", "s3.secret-access-key"]);
        let request_signer = RequestSigner::new("glue", &region);
        let signer = match (key, secret) {
            (Some(key), Some(secret)) => {
                let mut provider = StaticCredentialProvider::new(&key, &secret);
                if let Some(token) = option(&["glue.session-token", "s3.session-token"]) {
                    provider = provider.with_session_token(&token);
                }
                Signer::new(context, provider, request_signer)
            }
            (None, None) => Signer::new(context, DefaultCredentialProvider::new(), request_signer),
            _ => {
                return Err(Error::new(
                    ErrorKind::DataInvalid,
                    "give both glue.access-key-id and glue.secret-access-key, or neither (the \
                     AWS credential chain)",
                ));
            }
        };
        Ok(GlueClient {
            http,
            endpoint,
            catalog_id: option(&["glue.catalog-id", "glue.id"]),
            signer,
        })
    }

    /// Calls `action` (`GetTable`, ...) with `body`; Glue's refusal is a [`GlueError`] inside.
    async fn call(&self, action: &str, mut body: Value) -> std::result::Result<Value, GlueError> {
        if let Some(id) = &self.catalog_id {
            body["CatalogId"] = Value::String(id.clone());
        }
        let body = Bytes::from(body.to_string());
        let transport = |message: String| GlueError {
            exception: "transport".into(),
            message,
        };
        let request = http::Request::post(&self.endpoint)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", format!("AWSGlue.{action}"))
            // Glue wants the payload signed (not S3's UNSIGNED-PAYLOAD).
            .header(
                "x-amz-content-sha256",
                reqsign_core::hash::hex_sha256(&body),
            )
            .body(())
            .map_err(|e| transport(format!("{action}: {e}")))?;
        let (mut parts, ()) = request.into_parts();
        self.signer
            .sign(&mut parts, None)
            .await
            .map_err(|e| transport(format!("cannot sign {action} for Glue: {e}")))?;
        let request = reqwest::Request::try_from(http::Request::from_parts(parts, body))
            .map_err(|e| transport(format!("{action}: {e}")))?;
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| transport(format!("Glue at {} unreachable: {e}", self.endpoint)))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| transport(format!("{action}: {e}")))?;
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(answer);
        }
        // `__type` is `com.amazonaws...#EntityNotFoundException` or just the name.
        let exception = answer["__type"]
            .as_str()
            .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
            .unwrap_or_else(|| format!("HTTP {status}"));
        let message = answer["message"]
            .as_str()
            .or(answer["Message"].as_str())
            .unwrap_or(&text)
            .to_string();
        Err(GlueError { exception, message })
    }

    /// Every page of a listing call, following `NextToken`.
    async fn pages(&self, action: &str, body: Value) -> std::result::Result<Vec<Value>, GlueError> {
        let mut pages = Vec::new();
        let mut request = body;
        loop {
            let answer = self.call(action, request.clone()).await?;
            let next = answer["NextToken"].as_str().map(str::to_string);
            pages.push(answer);
            match next {
                Some(token) if !token.is_empty() => {
                    request["NextToken"] = Value::String(token);
                }
                _ => return Ok(pages),
            }
        }
    }
}

/// The HTTP client reqsign fetches credentials with (web identity, ECS and EC2 metadata).
#[derive(Debug)]
struct SignerHttp(reqwest::Client);

impl reqsign_core::HttpSend for SignerHttp {
    async fn http_send(
        &self,
        request: http::Request<Bytes>,
    ) -> reqsign_core::Result<http::Response<Bytes>> {
        let failed = |e: reqwest::Error| reqsign_core::Error::unexpected(e.to_string());
        let request = reqwest::Request::try_from(request).map_err(failed)?;
        let response = self.0.execute(request).await.map_err(failed)?;
        let mut answer = http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            answer = answer.header(name, value);
        }
        let body = response.bytes().await.map_err(failed)?;
        answer
            .body(body)
            .map_err(|e| reqsign_core::Error::unexpected(e.to_string()))
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
