//! Services: the homeserver's behaviour, between the HTTP handlers and storage.
//!
//! Each module is one area (accounts, rooms, sync…) of plain functions taking the explicit
//! [`Server`] they need. Handlers call exactly one service function; services call storage and
//! the pure Matrix rules in [`crate::matrix`].

pub mod account_data;
pub mod accounts;
pub mod admin;
pub mod aggregations;
pub mod backup;
pub mod delayed_events;
pub mod directory;
pub mod e2ee;
pub mod federation;
pub mod legacy;
pub mod login_throttle;
pub mod media;
pub mod notices;
pub mod openid;
pub mod presence;
pub mod push;
pub mod rooms;
pub mod search;
pub mod sliding_sync;
pub mod state_request;
pub mod sync;
pub mod typing;
pub mod uia;
pub mod upgrade;

use std::sync::Arc;

use ruma::OwnedServerName;

use crate::config::Config;
use crate::matrix::keys::SigningKey;
use crate::store::Store;

/// This server's identity for signing events.
pub struct Signer {
    /// Our server name.
    pub server_name: OwnedServerName,
    /// Our current signing key.
    pub key: SigningKey,
}

/// Everything a request needs, handed to handlers through axum's `State`.
pub struct Server {
    /// The resolved configuration.
    pub config: Config,
    /// The database.
    pub store: Store,
    /// Who signs our events.
    pub signer: Arc<Signer>,
    /// User-interactive-auth sessions in flight.
    pub uia: uia::Sessions,
    /// OpenID tokens handed to widgets and call services.
    pub openid: openid::Tokens,
    /// Who is typing where.
    pub typing: typing::Typing,
    /// Access tokens already resolved.
    pub tokens: accounts::TokenCache,
    /// Failed-password back-off per account.
    pub login_throttle: login_throttle::LoginThrottle,
    /// The allow-listed peers (from peer cards).
    pub peers: Arc<crate::federation::peers::Allowlist>,
    /// Signed requests to peers.
    pub federation: crate::federation::client::FederationClient,
    /// Our CA certificate (PEM), for our peer card.
    pub tls_ca_pem: String,
    /// Peers' recent space-hierarchy answers, so paging a hierarchy does not ask each time.
    pub hierarchy_cache: federation::hierarchy::Cache,
    /// What each sliding sync connection has been sent, per `pos` (in memory, bounded).
    pub sliding_sync: sliding_sync::Connections,
    /// Wakes the delayed-events timer when a new event may be due sooner.
    pub delayed: delayed_events::Timer,
    /// Becomes `true` when the server is shutting down, so long polls return at once.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Server {
    /// Our server name.
    pub fn server_name(&self) -> &ruma::ServerName {
        &self.signer.server_name
    }
}
