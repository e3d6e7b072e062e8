//! Services: the homeserver's behaviour, between the HTTP handlers and storage.
//!
//! Each module is one area (accounts, rooms, sync…) of plain functions taking the explicit
//! [`Server`] they need. Handlers call exactly one service function; services call storage and
//! the pure Matrix rules in [`crate::matrix`].

pub mod account_data;
pub mod accounts;
pub mod admin;
pub mod aggregations;
pub mod aliases;
pub mod appservice;
pub mod backup;
pub mod delayed_events;
pub mod directory;
pub mod e2ee;
pub mod federation;
pub mod filters;
pub mod hierarchy_cache;
pub mod legacy;
pub mod login_throttle;
pub mod media;
pub mod membership;
pub mod notices;
pub mod notifications;
pub mod oauth;
pub mod openid;
pub mod persist;
pub mod presence;
pub mod profile;
pub mod push;
pub mod relations;
pub mod reports;
pub mod room_state;
pub mod rooms;
pub mod search;
pub mod sliding_sync;
pub mod state_request;
pub mod state_res;
pub mod sync;
pub mod timeline;
pub mod tokens;
pub mod typing;
pub mod uia;
pub mod upgrade;

use std::sync::Arc;

use crate::config::Config;
use crate::store::Store;

pub use crate::matrix::keys::Signer;

/// Everything a request needs, handed to handlers through axum's `State`.
pub struct Server {
    /// The resolved configuration.
    pub config: Config,
    /// The database.
    pub store: Store,
    /// Where "now" comes from: the system clock, a fake one in unit tests.
    pub clock: Arc<dyn crate::clock::Clock>,
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
    /// The registered application services (bridges and bots).
    pub appservices: Arc<appservice::Registry>,
    /// The allow-listed peers (from peer cards).
    pub peers: Arc<crate::transport::peers::Allowlist>,
    /// Signed requests to peers.
    pub federation: crate::transport::client::FederationClient,
    /// Our CA certificate (PEM), for our peer card.
    pub tls_ca_pem: String,
    /// The client listener's TLS certificate and its reload; `None` with `listen.tls = "off"`.
    pub client_tls: Option<Arc<crate::transport::client_tls::ClientTls>>,
    /// Peers' recent space-hierarchy answers, so paging a hierarchy does not ask each time.
    pub hierarchy_cache: hierarchy_cache::Cache,
    /// Parsed `/sync` filters by owner and ID (a stored filter never changes).
    pub filters: filters::Cache,
    /// What each sliding sync connection has been sent, per `pos` (in memory, bounded).
    pub sliding_sync: sliding_sync::Connections,
    /// Wakes the delayed-events timer when a new event may be due sooner.
    pub delayed: delayed_events::Timer,
    /// Becomes `true` when the server is shutting down, so long polls return at once.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Wakes the appservice senders (queued ephemeral items, a reload).
    pub appservice_kicker: appservice::push::Kicker,
    /// The OAuth 2.0 server's browser sessions, requests in progress and device codes.
    pub oauth: oauth::State,
}

impl Server {
    /// Our server name.
    pub fn server_name(&self) -> &ruma::ServerName {
        &self.signer.server_name
    }
}

/// Refuses a user of a server that is neither this unit nor an allow-listed peer: no event of
/// ours may name one (closed federation).
pub fn require_allowed_user(server: &Server, user_id: &ruma::UserId) -> crate::error::Result<()> {
    let name = user_id.server_name().as_str();
    if name == server.server_name().as_str() || server.peers.contains(name) {
        Ok(())
    } else {
        Err(crate::error::Error::forbidden(format!(
            "{name} is not an allow-listed peer of this unit, so {user_id} cannot be part of its rooms"
        )))
    }
}

/// Who asks, for the services that format events for the requester (`unsigned.transaction_id`
/// on their own events): `/events`, `/initialSync` and search.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The user.
    pub user_id: ruma::OwnedUserId,
    /// Their device (`None`: an application service's request without one).
    pub device_id: Option<ruma::OwnedDeviceId>,
}

impl Viewer {
    /// The `(user, device)` pair event formatting takes.
    pub(crate) fn pair(&self) -> (&str, &str) {
        (self.user_id.as_str(), device_key(self.device_id.as_deref()))
    }
}

/// A request's device as the store keeps it (transaction IDs, delayed events, lazy-loaded
/// members, to-device messages, pushers) and as event formatting compares it: `""` for a
/// request without a device (an application service's that names none), which is what those
/// rows have always held for it.
pub fn device_key(device: Option<&ruma::DeviceId>) -> &str {
    device.map_or("", ruma::DeviceId::as_str)
}
