//! The unit's TLS identity, generated on the box at setup and renewed by `appliance tls
//! renew`: thin wrappers over the homeserver's one implementation
//! (`homeserver::transport::tls`), so `appliance` and the homeserver make exactly the same
//! files.
//!
//! Peers pin the unit CA (it goes on the peer card), so the leaf can be renewed without
//! re-exchanging cards. Nothing here is ever taken from the image or the repository.

use std::path::Path;

pub use homeserver::transport::tls::{CA_CERT, CERT, KEY};

use crate::cli::TlsCommand;
use crate::exit::{Exit, Failure};
use crate::unit::Unit;

/// Generates the CA and the leaf for the server name (plus every endpoint host) into `dir`.
pub fn generate(dir: &Path, server_name: &str, endpoint_hosts: &[String]) -> Result<(), Failure> {
    homeserver::transport::tls::generate(dir, server_name, endpoint_hosts)
        .map_err(|err| Failure::broke(format!("generating the TLS certificate: {err}")))
}

/// Runs `appliance tls …`.
pub fn run(unit: &Unit, command: &TlsCommand) -> Result<Exit, Failure> {
    match command {
        TlsCommand::Renew => renew(unit),
    }
}

/// A new leaf certificate and key from the existing unit CA, for the server name and the
/// configured endpoints. Needs the homeserver stopped: it loads its certificate at start.
fn renew(unit: &Unit) -> Result<Exit, Failure> {
    let config = unit.config()?;
    unit.require_stopped("renewing the certificate (it loads the certificate at start)")?;
    let dir = unit.tls_dir();
    let expires = homeserver::transport::tls::renew(
        &dir,
        config.server_name.as_str(),
        &config.federation.card_endpoints(),
    )
    .map_err(|err| Failure::broke(format!("renewing the TLS certificate: {err}")))?;
    for name in [KEY, CERT] {
        crate::unit::match_owner(&dir.join(name), &dir)?;
    }
    println!(
        "Issued a new federation certificate from the unit CA, valid until {}.",
        crate::status::format_time_ms(expires.unix_timestamp().saturating_mul(1000))
    );
    println!(
        "The unit CA is unchanged, so peers keep their cards. Start the homeserver to use it \
         (`{}`).",
        crate::unit::START_HINT
    );
    Ok(Exit::Success)
}
