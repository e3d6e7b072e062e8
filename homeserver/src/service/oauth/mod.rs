//! The built-in OAuth 2.0 authorisation server (spec "OAuth 2.0 API"; issue 18): server
//! metadata, dynamic client registration, the authorisation code grant with PKCE, the
//! device authorisation grant, the refresh grant with rotation and reuse detection,
//! revocation, and the unit's own sign-in, account-creation and consent pages.
//!
//! The tokens it issues are ordinary Outpost access and refresh tokens of a device
//! (`service::accounts`), so every Client-Server endpoint works unchanged with them. What
//! must survive a restart (clients, codes, sessions, rotated refresh tokens) is in
//! `store::oauth`; browser sessions, authorisation requests in progress and pending device
//! codes are held here in memory ([`Web`]).
//!
//! - `clients.rs`: registration (RFC 7591) and lookups.
//! - `grants.rs`: the token endpoint's grants and revocation (RFC 6749, 7636, 7009, 8628).
//! - `web.rs`: the browser side: sessions, CSRF, the authorisation endpoint and the pages.
//! - `account.rs`: the account page (`account_management_uri`).
//! - `html.rs`: the pages' HTML, with the one escaping function.

pub mod account;
pub mod clients;
pub mod grants;
mod html;
pub mod web;

use serde::Serialize;

use super::Server;
use crate::error::{Error, ErrorCode, Result};
use crate::matrix::oauth::GRANT_TYPES;

pub use web::{WebAnswer, WebBody, WebState};

/// The OAuth server's in-memory state, held in [`Server`].
#[derive(Default)]
pub struct State {
    /// Browser sessions and authorisation requests in progress.
    pub web: WebState,
    /// Pending device codes.
    pub devices: grants::DeviceCodes,
}

/// Where the server's OAuth endpoints and pages live (clients find them in the metadata).
pub const PREFIX: &str = "/_outpost/oauth";

/// Lifetime of an access token issued by an OAuth grant: short, the spec says, since the
/// refresh token renews it (`expires_in` says it to the client).
pub const ACCESS_TOKEN_TTL_MS: i64 = 5 * 60 * 1000;

/// Lifetime of an authorisation code (RFC 6749 section 4.1.2 recommends at most 10 minutes).
pub const CODE_TTL_MS: i64 = 10 * 60 * 1000;

/// The unit's issuer identifier: its public base URL with a trailing slash. Without a public
/// base URL (a wildcard listener and none configured) the unit cannot name itself, and the
/// metadata answers as a server without the OAuth 2.0 API does (404 `M_UNRECOGNIZED`).
pub fn issuer(server: &Server) -> Result<String> {
    let base = server.config.public_base_url.as_ref().ok_or_else(|| {
        Error::new(
            ErrorCode::Unrecognized,
            "This unit has no public base URL (listen.public_base_url), so it cannot name its \
             OAuth 2.0 endpoints",
        )
    })?;
    Ok(format!("{}/", base.trim_end_matches('/')))
}

/// The authorisation server metadata (RFC 8414, spec `GET /auth_metadata`), with only what
/// this server implements.
#[derive(Debug, Serialize)]
pub struct AuthMetadata {
    /// The issuer (the unit's base URL with a trailing slash).
    pub issuer: String,
    /// Dynamic client registration.
    pub registration_endpoint: String,
    /// The authorisation code grant's browser entry point.
    pub authorization_endpoint: String,
    /// The token endpoint.
    pub token_endpoint: String,
    /// RFC 7009 revocation.
    pub revocation_endpoint: String,
    /// RFC 8628 device authorisation.
    pub device_authorization_endpoint: String,
    /// `["code"]`.
    pub response_types_supported: [&'static str; 1],
    /// `["query", "fragment"]`.
    pub response_modes_supported: [&'static str; 2],
    /// The grants of [`GRANT_TYPES`].
    pub grant_types_supported: [&'static str; 3],
    /// `["S256"]` only.
    pub code_challenge_methods_supported: [&'static str; 1],
    /// `["none"]`: public clients only.
    pub token_endpoint_auth_methods_supported: [&'static str; 1],
    /// `["none"]`.
    pub revocation_endpoint_auth_methods_supported: [&'static str; 1],
    /// The scope tokens understood.
    pub scopes_supported: [&'static str; 2],
    /// The account page (MSC4191, spec "Account management").
    pub account_management_uri: String,
    /// The actions it serves.
    pub account_management_actions_supported: [&'static str; 9],
    /// `["create"]` when open registration is on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prompt_values_supported: Vec<&'static str>,
}

/// Whether the sign-in pages may create accounts (`prompt=create`): open registration
/// without tokens (a token-gated registration has no field for the token on the page).
pub fn registration_open(server: &Server) -> bool {
    server.config.registration.enabled && server.config.registration.tokens.is_empty()
}

/// # The server metadata
pub fn metadata(server: &Server) -> Result<AuthMetadata> {
    let issuer = issuer(server)?;
    let base = issuer.trim_end_matches('/');
    let url = |path: &str| format!("{base}{PREFIX}{path}");
    Ok(AuthMetadata {
        registration_endpoint: url("/register"),
        authorization_endpoint: url("/authorize"),
        token_endpoint: url("/token"),
        revocation_endpoint: url("/revoke"),
        device_authorization_endpoint: url("/device"),
        response_types_supported: ["code"],
        response_modes_supported: ["query", "fragment"],
        grant_types_supported: GRANT_TYPES,
        code_challenge_methods_supported: ["S256"],
        token_endpoint_auth_methods_supported: ["none"],
        revocation_endpoint_auth_methods_supported: ["none"],
        scopes_supported: ["urn:matrix:client:api:*", "urn:matrix:client:device:*"],
        account_management_uri: format!("{base}{}", account::ACCOUNT_PATH),
        account_management_actions_supported: account::ACTIONS,
        prompt_values_supported: if registration_open(server) {
            vec!["create"]
        } else {
            Vec::new()
        },
        issuer,
    })
}
