//! The unit's TLS identity, generated on the box at setup: a thin wrapper over the homeserver's
//! one implementation (`homeserver::federation::tls`), so `appliance setup` and a homeserver's
//! first start make exactly the same files.
//!
//! Peers pin the unit CA (it goes on the peer card), so the leaf can be renewed without
//! re-exchanging cards. Nothing here is ever taken from the image or the repository.

use std::path::Path;

pub use homeserver::federation::tls::{CA_CERT, CERT, KEY};

use crate::exit::Failure;

/// Generates the CA and the leaf for the server name (plus every endpoint host) into `dir`.
pub fn generate(dir: &Path, server_name: &str, endpoint_hosts: &[String]) -> Result<(), Failure> {
    homeserver::federation::tls::generate(dir, server_name, endpoint_hosts)
        .map_err(|err| Failure::broke(format!("generating the TLS certificate: {err}")))
}
