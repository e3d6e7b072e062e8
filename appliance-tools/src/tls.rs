//! The unit's TLS identity, generated on the box at setup and renewed by `appliance tls
//! renew`: thin wrappers over the homeserver's one implementation
//! (`homeserver::transport::tls`), so `appliance` and the homeserver make exactly the same
//! files.
//!
//! Peers pin the unit CA (it goes on the peer card), so the leaf can be renewed without
//! re-exchanging cards. Nothing here is ever taken from the image or the repository.

use crate::base::exit::{Exit, Failure};
use crate::cli::TlsCommand;
use crate::unit::{CERT, KEY, Unit};

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
        crate::base::console::format_time_ms(expires.unix_timestamp().saturating_mul(1000))
    );
    println!(
        "The unit CA is unchanged, so peers keep their cards. Start the homeserver to use it \
         (`{}`).",
        crate::unit::START_HINT
    );
    Ok(Exit::Success)
}
