//! Commits of our own updates to a REST catalog: the catalog's `/v1/config` says its path prefix,
//! the same credentials as the catalog's client authenticate (a `token`, or an OAuth2 `credential`
//! exchanged for one, `header.*` options), and the commit is one `POST` of the updates and
//! requirements, which the catalog checks and applies atomically.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use iceberg::table::Table;
use iceberg::{TableRequirement, TableUpdate};
use iceberg_catalog_rest::{CommitTableRequest, CommitTableResponse};
use reqwest::{Client, RequestBuilder, StatusCode};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::updates::table_at;

/// A REST catalog as our commits see it.
pub(super) struct RestCommits {
    client: Client,
    uri: String,
    options: HashMap<String, String>,
    /// The path prefix and bearer token, known after the first commit.
    session: Mutex<Option<Session>>,
}

#[derive(Clone)]
struct Session {
    /// The catalog's base URI (which its configuration may override) and path prefix.
    base: String,
    token: Option<String>,
}

#[derive(Deserialize)]
struct CatalogConfig {
    #[serde(default)]
    defaults: HashMap<String, String>,
    #[serde(default)]
    overrides: HashMap<String, String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
}

impl RestCommits {
    pub(super) fn new(client: Client, uri: String, options: HashMap<String, String>) -> Self {
        RestCommits {
            client,
            uri: uri.trim_end_matches('/').to_string(),
            options,
            session: Mutex::new(None),
        }
    }

    /// One commit attempt of `updates` to `base`'s table under `requirements`; a refused token
    /// is renewed once.
    pub(super) async fn commit(
        &self,
        base: &Table,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
    ) -> Result<Table> {
        let ident = base.identifier();
        let request = CommitTableRequest {
            identifier: Some(ident.clone()),
            requirements,
            updates,
        };
        let mut renewed = false;
        loop {
            let session = self.session(renewed).await?;
            let mut url = reqwest::Url::parse(&session.base)
                .with_context(|| format!("the REST catalog's URI {} is not a URL", session.base))?;
            url.path_segments_mut()
                .map_err(|()| anyhow::anyhow!("the REST catalog's URI cannot have a path"))?
                // Namespace levels are joined by the unit separator, percent-encoded here.
                .extend(["namespaces", &ident.namespace().join("\u{1f}"), "tables"])
                .push(ident.name());
            let response = self
                .authorized(self.client.post(url.clone()), &session)
                .json(&request)
                .send()
                .await?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !renewed {
                renewed = true;
                continue;
            }
            if status == StatusCode::CONFLICT {
                bail!("another commit to {ident} came first (409 from the REST catalog)");
            }
            if !status.is_success() {
                let body = response.text().await.unwrap_or_default();
                bail!("the REST catalog answered {status}: {}", truncated(&body));
            }
            let committed: CommitTableResponse = response
                .json()
                .await
                .context("cannot read the REST catalog's answer to a commit")?;
            return table_at(base, committed.metadata, committed.metadata_location);
        }
    }

    /// The session, fetched (again, when `renew`) from the catalog.
    async fn session(&self, renew: bool) -> Result<Session> {
        let mut session = self.session.lock().await;
        if renew || session.is_none() {
            *session = Some(self.open_session().await?);
        }
        Ok(session.clone().expect("a session was just opened"))
    }

    async fn open_session(&self) -> Result<Session> {
        let token = match (self.options.get("token"), self.options.get("credential")) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(credential)) => Some(self.fetch_token(credential).await?),
            (None, None) => None,
        };
        let mut session = Session {
            base: String::new(),
            token,
        };
        let mut config_request = self.client.get(format!("{}/v1/config", self.uri));
        if let Some(warehouse) = self.options.get("warehouse") {
            config_request = config_request.query(&[("warehouse", warehouse)]);
        }
        let response = self.authorized(config_request, &session).send().await?;
        if !response.status().is_success() {
            bail!(
                "the REST catalog answered {} to GET /v1/config",
                response.status()
            );
        }
        let config: CatalogConfig = response.json().await?;
        let setting = |key: &str| {
            config
                .overrides
                .get(key)
                .or_else(|| self.options.get(key))
                .or_else(|| config.defaults.get(key))
        };
        let uri = setting("uri").map_or(self.uri.as_str(), |u| u.trim_end_matches('/'));
        session.base = match setting("prefix") {
            Some(prefix) => format!("{uri}/v1/{}", prefix.trim_matches('/')),
            None => format!("{uri}/v1"),
        };
        Ok(session)
    }

    /// Exchanges the OAuth2 client credentials (`ID:SECRET`, or a secret alone) for a token.
    async fn fetch_token(&self, credential: &str) -> Result<String> {
        let endpoint = self
            .options
            .get("oauth2-server-uri")
            .cloned()
            .unwrap_or_else(|| format!("{}/v1/oauth/tokens", self.uri));
        let (id, secret) = match credential.split_once(':') {
            Some((id, secret)) => (Some(id), secret),
            None => (None, credential),
        };
        let scope = self.options.get("scope").map_or("catalog", String::as_str);
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_secret", secret),
            ("scope", scope),
        ];
        form.extend(id.map(|id| ("client_id", id)));
        for optional in ["audience", "resource"] {
            if let Some(value) = self.options.get(optional) {
                form.push((optional, value));
            }
        }
        let response = self.client.post(&endpoint).form(&form).send().await?;
        if !response.status().is_success() {
            bail!(
                "the OAuth2 server answered {} to the client credentials",
                response.status()
            );
        }
        Ok(response.json::<TokenResponse>().await?.access_token)
    }

    /// `request` with the session's token and the `header.*` options.
    fn authorized(&self, request: RequestBuilder, session: &Session) -> RequestBuilder {
        let request = self
            .options
            .iter()
            .filter_map(|(key, value)| Some((key.strip_prefix("header.")?, value)))
            .fold(request, |request, (name, value)| {
                request.header(name, value)
            });
        match &session.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }
}

fn truncated(body: &str) -> &str {
    let end = body
        .char_indices()
        .nth(500)
        .map_or(body.len(), |(end, _)| end);
    &body[..end]
}
