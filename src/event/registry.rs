//! A client of a Confluent-compatible schema registry (Confluent Schema Registry, Redpanda,
//! Karapace, Apicurio's compatibility API): schemas by id, and registration under a subject.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// A schema registry at a base URL, with optional basic authentication.
pub struct Registry {
    base: String,
    /// `user:password`, sent as HTTP basic authentication.
    auth: Option<(String, String)>,
    client: reqwest::blocking::Client,
}

#[derive(Deserialize)]
struct SchemaById {
    schema: String,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
}

/// What the registry says of a schema id.
pub enum SchemaAnswer {
    /// The schema's text.
    Avro(String),
    /// Why there is no schema to use.
    Refused(String),
}

#[derive(Deserialize)]
struct Registered {
    id: u32,
}

impl Registry {
    /// `url` is the registry's base URL; `auth` is `user:password`.
    pub fn new(url: &str, auth: Option<&str>) -> Result<Self> {
        let auth = match auth {
            None => None,
            Some(auth) => {
                let (user, password) = auth.split_once(':').context(
                    "--schema-registry-auth must be USER:PASSWORD (or set SESSIONIZE_SCHEMA_REGISTRY_AUTH)",
                )?;
                Some((user.to_string(), password.to_string()))
            }
        };
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot create an HTTP client for the schema registry")?;
        Ok(Registry {
            base: url.trim_end_matches('/').to_string(),
            auth,
            client,
        })
    }

    fn request(
        &self,
        builder: reqwest::blocking::RequestBuilder,
    ) -> reqwest::blocking::RequestBuilder {
        let builder = builder.header("Accept", "application/vnd.schemaregistry.v1+json");
        match &self.auth {
            Some((user, password)) => builder.basic_auth(user, Some(password)),
            None => builder,
        }
    }

    /// Checks at start-up that the registry answers and accepts our credentials, so that a
    /// wrong password is one clear line rather than every record refused.
    pub fn check_access(&self) -> Result<()> {
        let response = self
            .request(self.client.get(format!("{}/subjects", self.base)))
            .send()
            .with_context(|| {
                format!(
                    "schema registry {} unreachable: check --schema-registry-url and that the \
                     registry is up",
                    self.base
                )
            })?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            bail!(
                "schema registry {} refused our credentials ({status}): check \
                 --schema-registry-auth (or SESSIONIZE_SCHEMA_REGISTRY_AUTH)",
                self.base
            );
        }
        Ok(())
    }

    /// The Avro schema registered under `id`, or why the registry refuses it (unknown, not Avro,
    /// forbidden: the records naming it are at fault); an error if the registry could not answer
    /// (unreachable, failing, overloaded), which is worth asking again.
    pub fn schema(&self, id: u32) -> Result<SchemaAnswer> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let response = self
            .request(self.client.get(&url))
            .send()
            .with_context(|| format!("schema registry {} unreachable", self.base))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(SchemaAnswer::Refused(format!(
                "schema id {id} is not in the schema registry"
            )));
        }
        let transient = status.is_server_error()
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
        if status.is_client_error() && !transient {
            return Ok(SchemaAnswer::Refused(format!(
                "the schema registry answered {status} for schema id {id}"
            )));
        }
        if !status.is_success() {
            bail!(
                "schema registry {} answered {status} for schema {id}",
                self.base
            );
        }
        let found: SchemaById = response
            .json()
            .with_context(|| format!("schema registry {} sent an unreadable answer", self.base))?;
        Ok(match found.schema_type.as_deref() {
            None | Some("AVRO") => SchemaAnswer::Avro(found.schema),
            Some(other) => {
                SchemaAnswer::Refused(format!("schema id {id} is a {other} schema, not Avro"))
            }
        })
    }

    /// Registers `schema` (Avro, JSON text) under `subject` and returns its id; registering a
    /// schema the subject already has returns the existing id.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        let url = format!("{}/subjects/{subject}/versions", self.base);
        let body = serde_json::json!({ "schema": schema, "schemaType": "AVRO" });
        let response = self
            .request(self.client.post(&url))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .body(body.to_string())
            .send()
            .with_context(|| format!("schema registry {} unreachable", self.base))?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().unwrap_or_default();
            bail!(
                "schema registry {} refused the schema for {subject}: {status} {text}",
                self.base
            );
        }
        let registered: Registered = response
            .json()
            .with_context(|| format!("schema registry {} sent an unreadable answer", self.base))?;
        Ok(registered.id)
    }
}
