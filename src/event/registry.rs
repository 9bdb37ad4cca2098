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

    /// The Avro schema registered under `id`, or why there is none to use (`Ok(Err(reason))`); an
    /// error if the registry could not be asked (unreachable, refusing, failing).
    pub fn schema(&self, id: u32) -> Result<Result<String, String>> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let response = self
            .request(self.client.get(&url))
            .send()
            .with_context(|| format!("schema registry {} unreachable", self.base))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Err(format!("schema id {id} is not in the schema registry")));
        }
        if !response.status().is_success() {
            bail!(
                "schema registry {} answered {} for schema {id}",
                self.base,
                response.status()
            );
        }
        let found: SchemaById = response
            .json()
            .with_context(|| format!("schema registry {} sent an unreadable answer", self.base))?;
        Ok(match found.schema_type.as_deref() {
            None | Some("AVRO") => Ok(found.schema),
            Some(other) => Err(format!("schema id {id} is a {other} schema, not Avro")),
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
