//! Glue's JSON API: requests signed with SigV4 by reqsign, and Glue's refusals as iceberg's errors.

use std::collections::HashMap;

use bytes::Bytes;
use iceberg::{Error, ErrorKind, NamespaceIdent, Result, TableIdent};
use reqsign_aws_v4::{
    Credential, DefaultCredentialProvider, RequestSigner, StaticCredentialProvider,
};
use reqsign_core::{Context, OsEnv, Signer};
use serde_json::Value;

/// Glue's JSON API at one endpoint, each request signed with SigV4.
pub(super) struct GlueClient {
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
pub(super) struct GlueError {
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

    pub(super) fn about_table(self, ident: &TableIdent) -> Error {
        self.into_error(
            ErrorKind::TableNotFound,
            ErrorKind::TableAlreadyExists,
            format!("table {ident}"),
        )
    }

    pub(super) fn about_namespace(self, namespace: &NamespaceIdent) -> Error {
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
    pub(super) fn new(options: &HashMap<String, String>, http: reqwest::Client) -> Result<Self> {
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
    pub(super) async fn call(
        &self,
        action: &str,
        mut body: Value,
    ) -> std::result::Result<Value, GlueError> {
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
    pub(super) async fn pages(
        &self,
        action: &str,
        body: Value,
    ) -> std::result::Result<Vec<Value>, GlueError> {
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
