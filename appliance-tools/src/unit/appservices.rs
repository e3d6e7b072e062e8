//! The registered appservices: one registration file per appservice in
//! `<data_dir>/appservices/`, and their link state from the running homeserver. Shared by
//! `appliance appservice` (which writes the folder) and `status` (which reads it).
//!
//! The folder is read with the homeserver's own loader rules
//! ([`homeserver::service::appservice::files`]), so a file listed as used here is one the
//! server loads, and a file the server skips is shown with the reason.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use homeserver::service::appservice::files::{Entry, scan};

use crate::base::admin_client::AdminClient;
use crate::base::exit::Failure;
use crate::unit::{APPSERVICES_DIR, ServerState, Unit};

/// One appservice's link, as `GET /v1/appservices` on the admin socket reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Link {
    /// The appservice's id.
    pub id: String,
    /// Where the homeserver pushes to; `None` for a send-only appservice.
    pub url: Option<String>,
    /// The appservice's own user.
    pub sender: String,
    /// `up` (the last attempt succeeded), `down` (it failed; retrying), `send-only` (no url)
    /// or `idle` (nothing sent yet).
    pub link: String,
    /// Events and ephemeral items waiting to be sent.
    pub queue_depth: u64,
    /// When a transaction last reached it (ms since the epoch).
    pub last_delivery_ms: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the next attempt is due (ms since the epoch).
    pub next_retry_ms: Option<i64>,
}

impl Link {
    /// Whether the homeserver cannot deliver to it at the moment.
    pub fn is_down(&self) -> bool {
        self.link == "down"
    }
}

/// The answer of `GET /v1/appservices`.
#[derive(Debug, Deserialize)]
struct LinkList {
    appservices: Vec<Link>,
}

/// The folder of registration files.
pub fn dir(unit: &Unit) -> PathBuf {
    unit.path(APPSERVICES_DIR)
}

/// Every registration file, in the order the homeserver loads them, with what it makes of each.
pub fn entries(unit: &Unit, server_name: &str) -> Vec<Entry> {
    scan(&dir(unit), server_name)
}

/// The link of every appservice the running homeserver has loaded; `None` when it is stopped.
pub fn links(unit: &Unit) -> Result<Option<Vec<Link>>, Failure> {
    match unit.server_state()? {
        ServerState::Running => Ok(Some(
            AdminClient::new(unit.socket_path())
                .get::<LinkList>("/v1/appservices")?
                .appservices,
        )),
        ServerState::Stopped => Ok(None),
    }
}
