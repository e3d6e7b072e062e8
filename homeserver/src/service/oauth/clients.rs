//! Dynamic client registration (RFC 7591, spec "Client registration") and client lookups.
//!
//! The metadata rules are `matrix::oauth::validate_metadata`; this stores what passed and
//! answers with it. Localised variants (`client_name#fr`) and unknown fields are ignored, as
//! the spec's example shows a server may do.

use serde::{Deserialize, Serialize};

use super::super::Server;
use crate::error::{Error, Result};
use crate::matrix::oauth::{self, ApplicationType, MetadataInput};
use crate::store::oauth::{self as store, ClientRow};
use crate::util::{now_ms, random_string};

/// The registration request body (the fields this server reads).
#[derive(Debug, Default, Deserialize)]
pub struct ClientMetadata {
    /// `client_uri`.
    pub client_uri: Option<String>,
    /// `client_name`.
    pub client_name: Option<String>,
    /// `logo_uri`.
    pub logo_uri: Option<String>,
    /// `tos_uri`.
    pub tos_uri: Option<String>,
    /// `policy_uri`.
    pub policy_uri: Option<String>,
    /// `redirect_uris`.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// `response_types`.
    pub response_types: Option<Vec<String>>,
    /// `grant_types`.
    pub grant_types: Option<Vec<String>>,
    /// `token_endpoint_auth_method`.
    pub token_endpoint_auth_method: Option<String>,
    /// `application_type`.
    pub application_type: Option<String>,
}

/// The registration answer (RFC 7591 section 3.2.1): the client ID and the metadata as
/// registered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisteredClient {
    /// The new client's ID.
    pub client_id: String,
    /// When it was issued (seconds since the epoch).
    pub client_id_issued_at: i64,
    /// `client_name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    /// `client_uri`.
    pub client_uri: String,
    /// `logo_uri`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    /// `tos_uri`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tos_uri: Option<String>,
    /// `policy_uri`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_uri: Option<String>,
    /// `redirect_uris`.
    pub redirect_uris: Vec<String>,
    /// Always `none`.
    pub token_endpoint_auth_method: String,
    /// `response_types` understood.
    pub response_types: Vec<String>,
    /// `grant_types` understood.
    pub grant_types: Vec<String>,
    /// `web` or `native`.
    pub application_type: String,
}

/// # Registers a client
/// `body` is the request's JSON; a body that is not a JSON object of the right field types
/// is `invalid_client_metadata`, a rule broken is that or `invalid_redirect_uri`.
pub async fn register(server: &Server, body: &[u8]) -> Result<RegisteredClient> {
    let request: ClientMetadata = serde_json::from_slice(body)
        .map_err(|err| Error::oauth("invalid_client_metadata", err.to_string()))?;
    let valid = oauth::validate_metadata(&MetadataInput {
        client_uri: request.client_uri.as_deref(),
        logo_uri: request.logo_uri.as_deref(),
        tos_uri: request.tos_uri.as_deref(),
        policy_uri: request.policy_uri.as_deref(),
        client_name: request.client_name.as_deref(),
        redirect_uris: &request.redirect_uris,
        application_type: request.application_type.as_deref(),
        token_endpoint_auth_method: request.token_endpoint_auth_method.as_deref(),
        grant_types: request.grant_types.as_deref(),
        response_types: request.response_types.as_deref(),
    })
    .map_err(|err| Error::oauth(err.code(), err.description()))?;
    let now = now_ms();
    let answer = RegisteredClient {
        client_id: random_string(24),
        client_id_issued_at: now / 1000,
        client_name: request.client_name,
        // `validate_metadata` refused a request without one.
        client_uri: request
            .client_uri
            .ok_or_else(|| Error::oauth("invalid_client_metadata", "client_uri is required"))?,
        logo_uri: request.logo_uri,
        tos_uri: request.tos_uri,
        policy_uri: request.policy_uri,
        redirect_uris: request.redirect_uris,
        token_endpoint_auth_method: "none".to_owned(),
        response_types: valid
            .response_types
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        grant_types: valid.grant_types.iter().map(|s| (*s).to_owned()).collect(),
        application_type: valid.application_type.as_str().to_owned(),
    };
    let row = ClientRow {
        client_id: answer.client_id.clone(),
        client_name: answer.client_name.clone(),
        client_uri: answer.client_uri.clone(),
        application_type: answer.application_type.clone(),
        redirect_uris: answer.redirect_uris.clone(),
        grant_types: answer.grant_types.clone(),
        metadata: serde_json::to_string(&answer).map_err(|err| Error::internal(err.to_string()))?,
        created_ts: now,
    };
    server
        .store
        .write(move |tx| store::insert_client(tx, &row))
        .await?;
    tracing::info!(client_id = %answer.client_id, client_uri = %answer.client_uri, "registered OAuth client");
    Ok(answer)
}

/// A registered client as the grants and pages use it.
#[derive(Debug, Clone)]
pub struct Client {
    /// The stored row.
    pub row: ClientRow,
    /// Its application type.
    pub kind: ApplicationType,
    /// Its registered metadata.
    pub metadata: RegisteredClient,
}

impl Client {
    /// The name to show the user: `client_name`, else the client URI.
    pub fn display_name(&self) -> &str {
        self.row
            .client_name
            .as_deref()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or(&self.row.client_uri)
    }

    /// Whether it registered for a grant type.
    pub fn may_use(&self, grant: &str) -> bool {
        self.row.grant_types.iter().any(|g| g == grant)
    }
}

/// Looks a client up; `None` when unknown.
pub async fn find(server: &Server, client_id: &str) -> Result<Option<Client>> {
    let id = client_id.to_owned();
    let row = server
        .store
        .read(move |conn| store::get_client(conn, &id))
        .await?;
    row.map(|row| {
        let kind = ApplicationType::parse(Some(row.application_type.as_str()))
            .map_err(|err| Error::internal(err.description().to_owned()))?;
        let metadata = serde_json::from_str(&row.metadata)
            .map_err(|err| Error::internal(format!("stored client metadata: {err}")))?;
        Ok(Client {
            row,
            kind,
            metadata,
        })
    })
    .transpose()
}

/// A client that must exist: `invalid_client` (401) otherwise.
pub async fn require(server: &Server, client_id: Option<&str>) -> Result<Client> {
    let client_id =
        client_id.ok_or_else(|| Error::oauth("invalid_request", "client_id is required"))?;
    find(server, client_id)
        .await?
        .ok_or_else(|| Error::oauth("invalid_client", "Unknown client_id"))
}

/// One registered client with its open sessions, for `appliance oauth clients`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientSummary {
    /// The client ID.
    pub client_id: String,
    /// Its name, if it gave one.
    pub client_name: Option<String>,
    /// Its client URI.
    pub client_uri: String,
    /// `web` or `native`.
    pub application_type: String,
    /// When it registered (ms).
    pub created_ts: i64,
    /// Devices whose session it opened and that still exist.
    pub sessions: i64,
}

/// Every registered client with its open sessions.
pub async fn list(server: &Server) -> Result<Vec<ClientSummary>> {
    let rows = server.store.read(store::list_clients).await?;
    Ok(rows
        .into_iter()
        .map(
            |store::ClientWithSessions { client, sessions }| ClientSummary {
                client_id: client.client_id,
                client_name: client.client_name,
                client_uri: client.client_uri,
                application_type: client.application_type,
                created_ts: client.created_ts,
                sessions,
            },
        )
        .collect())
}
