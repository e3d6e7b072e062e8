//! The admin API's request and response bodies, shared with the `appliance` CLI so both sides
//! agree on one definition.
//!
//! Routes (HTTP/1.1 + JSON on `<data_dir>/admin.sock`; errors are `{"errcode","error"}` with
//! the same codes and statuses as the client API):
//!
//! | method and path                       | body              | answer                      |
//! |---------------------------------------|-------------------|-----------------------------|
//! | `GET /v1/status`                      |                   | [`ServerStatus`]            |
//! | `GET /v1/users`                       |                   | [`UserList`]                |
//! | `POST /v1/users`                      | [`CreateUser`]    | [`UserSummary`]             |
//! | `POST /v1/users/{user}/password`      | [`ResetPassword`] | [`UserSummary`]             |
//! | `POST /v1/users/{user}/deactivate`    | `{}`              | [`UserSummary`]             |
//! | `POST /v1/users/{user}/admin`         | [`SetAdmin`]      | [`UserSummary`]             |
//! | `POST /v1/backup`                     | [`BackupRequest`] | [`BackupOutcome`]           |
//! | `GET /v1/peers`                       |                   | [`PeerList`]                |
//! | `POST /v1/peers/reload`               | `{}`              | [`PeersReloaded`]           |
//! | `POST /v1/tls/reload`                 | [`TlsReload`]     | [`TlsReloaded`]             |
//! | `GET /v1/reports`                     |                   | [`ReportList`]              |
//! | `POST /v1/notices`                    | [`SendNotice`]    | [`NoticesSent`]             |
//! | `GET /v1/appservices`                 |                   | [`AppserviceList`]          |
//! | `POST /v1/appservices/reload`         | empty             | [`AppservicesReloaded`]     |
//! | `POST /v1/appservices/{id}/ping`      | empty             | [`AppservicePinged`]        |
//! | `GET /v1/oauth/clients`               |                   | [`OAuthClientList`]         |
//! | `POST /v1/users/{user}/oauth/revoke`  | empty             | [`OAuthRevoked`]            |
//!
//! The appservice ping fails with the client ping endpoint's errors: 404 `M_NOT_FOUND` (no
//! such id), 400 `M_URL_NOT_SET`, 502 `M_BAD_STATUS` (with `status` and `body`), 502
//! `M_CONNECTION_FAILED`, 504 `M_CONNECTION_TIMEOUT`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::service::admin::{
    BackupOutcome, DatabaseHealth, DiskSpace, LinkInfo, PeerInfo, Report, ServerStatus,
    SpaceStatus, UserSummary,
};

pub use crate::service::oauth::clients::ClientSummary as OAuthClient;

/// `GET /v1/oauth/clients`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OAuthClientList {
    /// Every client registered through OAuth 2.0 dynamic registration, oldest first.
    pub clients: Vec<OAuthClient>,
}

/// `POST /v1/users/{user}/oauth/revoke`: every OAuth session of the user ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OAuthRevoked {
    /// The full user ID.
    pub user_id: String,
    /// The devices signed out.
    pub devices: Vec<String>,
}

/// `GET /v1/users`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserList {
    /// Every local account, sorted by user ID.
    pub users: Vec<UserSummary>,
}

/// `POST /v1/users`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateUser {
    /// `alice` or `@alice:server`.
    pub user: String,
    /// The initial password (the CLI has already checked its strength).
    pub password: String,
    /// Whether the account is a server admin.
    #[serde(default)]
    pub admin: bool,
}

/// `POST /v1/users/{user}/password`: sets the password and ends every session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResetPassword {
    /// The new password.
    pub password: String,
}

/// `POST /v1/users/{user}/admin`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetAdmin {
    /// Grant (`true`) or revoke (`false`) server-admin rights.
    pub admin: bool,
}

/// `POST /v1/backup`: copy the live database into a new file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupRequest {
    /// Absolute path of the copy; must not exist, and the server's user must be able to write
    /// there (the CLI uses a file inside the data dir).
    pub path: PathBuf,
}

/// `GET /v1/peers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerList {
    /// Every allow-listed peer, sorted by server name.
    pub peers: Vec<PeerInfo>,
}

/// `POST /v1/peers/reload`: re-read `<data_dir>/peers/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeersReloaded {
    /// How many peers are allowed after the reload.
    pub peers: usize,
}

/// `POST /v1/tls/reload` asks: `{}` re-reads the certificate files of the mode the server
/// runs in; `{"mode": "imported"}` (or `"unit-ca"`) switches the running listener to that
/// mode's files, as `appliance tls client import` does after setting `listen.tls`, so an
/// import needs no restart. Plain HTTP cannot be switched to or from without a restart.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TlsReload {
    /// The mode to serve from now on; `None` keeps the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<crate::config::ClientTlsMode>,
}

/// `POST /v1/tls/reload`: re-read the client listener's certificate files and serve them to
/// new connections (`{"names": [...], "issuer": "...", "not_after_ms": N}`).
pub type TlsReloaded = crate::transport::client_tls::CertSummary;

/// `GET /v1/reports`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportList {
    /// Every content report users filed, oldest first.
    pub reports: Vec<Report>,
}

/// `POST /v1/notices`: a server notice to one user, or to every active local user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendNotice {
    /// `alice` or `@alice:server`; `None` for everyone.
    pub user: Option<String>,
    /// The message text.
    pub body: String,
}

/// The answer to `POST /v1/notices`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NoticesSent {
    /// The users the notice went to.
    pub sent: Vec<String>,
}

pub use crate::service::appservice::push::AppserviceLink;

/// `GET /v1/appservices`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppserviceList {
    /// Every registered appservice, in registry (file-name) order.
    pub appservices: Vec<AppserviceLink>,
}

/// `POST /v1/appservices/reload`: re-read `<data_dir>/appservices/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppservicesReloaded {
    /// How many appservices are registered after the reload.
    pub appservices: usize,
}

/// `POST /v1/appservices/{id}/ping`: the round trip of the appservice's `/_matrix/app/v1/ping`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppservicePinged {
    /// Milliseconds from the homeserver's call to the appservice's answer.
    pub duration_ms: u64,
}
