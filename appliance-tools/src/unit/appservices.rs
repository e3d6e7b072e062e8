//! The registered appservices: one registration file per appservice in
//! `<data_dir>/appservices/`, and their link state from the running homeserver. Shared by
//! `appliance appservice` (which writes the folder) and `status` (which reads it).
//!
//! The folder is read with the homeserver's own loader rules
//! ([`homeserver::service::appservice::files`]), so a file listed as used here is one the
//! server loads, and a file the server skips is shown with the reason.

use std::path::PathBuf;

use homeserver::admin::wire::AppserviceList;
use homeserver::service::appservice::files::{Entry, scan};

use crate::base::admin_client::AdminClient;
use crate::base::exit::Failure;
use crate::unit::{APPSERVICES_DIR, ServerState, Unit};

/// One appservice's link, as `GET /v1/appservices` on the admin socket reports it.
pub use homeserver::admin::wire::AppserviceLink as Link;

/// Whether the homeserver cannot deliver to the appservice at the moment.
pub fn is_down(link: &Link) -> bool {
    link.link == "down"
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
                .get::<AppserviceList>("/v1/appservices")?
                .appservices,
        )),
        ServerState::Stopped => Ok(None),
    }
}
