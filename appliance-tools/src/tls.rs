//! The unit's TLS certificates: `appliance tls renew` for the federation leaf, and `appliance
//! tls client …` for the certificate users' Matrix clients see on the client port.
//!
//! The federation identity is generated on the box at setup and renewed with thin wrappers
//! over the homeserver's one implementation (`homeserver::transport::tls`), so `appliance` and
//! the homeserver make exactly the same files. Peers pin the unit CA (it goes on the peer
//! card), so the leaf can be renewed without re-exchanging cards. Nothing here is ever taken
//! from the image or the repository.
//!
//! The client certificate is checked with the homeserver's own checks
//! (`homeserver::transport::client_cert`): an import is validated completely before anything
//! is written, then the two files are swapped in as one directory, so the server never sees a
//! new key beside an old certificate.

use std::path::Path;

use homeserver::admin::wire::{TlsReload, TlsReloaded};
use homeserver::config::ClientTlsMode;
use homeserver::transport::client_cert::ca_fingerprint;

use crate::base::admin_client::AdminClient;
use crate::base::console::format_time_ms;
use crate::base::exit::{Exit, Failure};
use crate::base::interrupt;
use crate::cli::{TlsClientCommand, TlsCommand, TlsImportArgs};
use crate::unit::client_cert;
use crate::unit::{CERT, KEY, ServerState, Unit};

/// Runs `appliance tls …`.
pub fn run(unit: &Unit, command: &TlsCommand) -> Result<Exit, Failure> {
    match command {
        TlsCommand::Renew => renew(unit),
        TlsCommand::Client(TlsClientCommand::Import(args)) => import(unit, args),
        TlsCommand::Client(TlsClientCommand::Ca { out }) => ca(unit, out.as_deref()),
        TlsCommand::Client(TlsClientCommand::UnitCa) => use_unit_ca(unit),
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
        format_time_ms(expires.unix_timestamp().saturating_mul(1000))
    );
    println!(
        "The unit CA is unchanged, so peers keep their cards. Start the homeserver to use it \
         (`{}`).",
        crate::unit::START_HINT
    );
    Ok(Exit::Success)
}

/// `appliance tls client ca`: the unit CA's PEM and fingerprint.
fn ca(unit: &Unit, out: Option<&Path>) -> Result<Exit, Failure> {
    unit.require_set_up()?;
    let path = unit.tls_dir().join(crate::unit::CA_CERT);
    let pem =
        std::fs::read_to_string(&path).map_err(|err| Failure::io("cannot read", &path, err))?;
    let fingerprint =
        ca_fingerprint(&pem).map_err(|err| Failure::broke(format!("{}: {err}", path.display())))?;
    match out {
        Some(file) => {
            crate::unit::write_file(file, pem.as_bytes(), 0o644)?;
            eprintln!("Wrote the unit CA certificate to {}.", file.display());
        }
        None => print!("{pem}"),
    }
    eprintln!("SHA-256 fingerprint of the unit CA:\n  {fingerprint}");
    eprintln!(
        "Install it on users' devices as a trusted CA, and check that the device shows this \
         fingerprint."
    );
    Ok(Exit::Success)
}

/// `appliance tls client import CERT KEY [CHAIN]`.
fn import(unit: &Unit, args: &TlsImportArgs) -> Result<Exit, Failure> {
    let config = unit.config()?;
    if config.client_tls == ClientTlsMode::Off {
        return Err(Failure::state(
            "the client port serves plain HTTP (listen.tls = \"off\"); set listen.tls, \
             listen.public_names and an https:// listen.public_base_url in the config first \
             (or run `appliance setup` again); nothing was changed",
        ));
    }
    let checked = client_cert::check(
        &client_cert::CertPaths {
            cert: args.cert.clone(),
            key: args.key.clone(),
            chain: args.chain.clone(),
        },
        &config.public_names,
    )?;

    let info = &checked.info;
    println!("Certificate for  {}", info.names().join(", "));
    println!("Issued by        {}", info.issuer);
    println!(
        "Valid until      {} ({} days)",
        format_time_ms(info.not_after.unix_timestamp().saturating_mul(1000)),
        info.days_left(time::OffsetDateTime::now_utc())
    );
    match &checked.verified_to {
        Some(anchor) => println!("Chain            verified up to {anchor}"),
        None => println!(
            "Chain            not checked: only the certificate was given, so users' devices \
             must trust its issuer directly"
        ),
    }

    // The config edit is worked out before anything is written.
    let edited = config_edit(unit, &config, ClientTlsMode::Imported)?;
    let dir =
        interrupt::uninterruptible(|| client_cert::write_imported(&unit.tls_dir(), &checked))?;
    println!("Wrote {}.", dir.display());
    apply(unit, edited, ClientTlsMode::Imported)?;
    Ok(Exit::Success)
}

/// `appliance tls client unit-ca`: back from an imported certificate to one the homeserver
/// issues from the unit CA (when the organisation's certificate is withdrawn, say). The
/// imported files stay where they are, unused, until the next import replaces them.
fn use_unit_ca(unit: &Unit) -> Result<Exit, Failure> {
    let config = unit.config()?;
    if config.client_tls == ClientTlsMode::Off {
        return Err(Failure::state(
            "the client port serves plain HTTP (listen.tls = \"off\"); set listen.tls, \
             listen.public_names and an https:// listen.public_base_url in the config first \
             (or run `appliance setup` again); nothing was changed",
        ));
    }
    if config.client_tls == ClientTlsMode::UnitCa {
        println!("The client port already serves a certificate from the unit CA; nothing to do.");
        return Ok(Exit::Success);
    }
    let edited = config_edit(unit, &config, ClientTlsMode::UnitCa)?;
    apply(unit, edited, ClientTlsMode::UnitCa)?;
    println!(
        "Users' devices must trust the unit CA (`appliance tls client ca` prints it and its \
         fingerprint)."
    );
    Ok(Exit::Success)
}

/// The config text with `listen.tls = mode`, or `None` when it already says so. Worked out
/// before anything is written, so a config that cannot be edited changes nothing.
fn config_edit(
    unit: &Unit,
    config: &homeserver::config::Config,
    mode: ClientTlsMode,
) -> Result<Option<String>, Failure> {
    if config.client_tls == mode {
        return Ok(None);
    }
    let path = unit.config_path();
    let text =
        std::fs::read_to_string(&path).map_err(|err| Failure::io("cannot read", &path, err))?;
    crate::unit::provisioning::set_listen_key(&text, "tls", mode.as_str())
        .map(Some)
        .map_err(|err| Failure::broke(format!("{}: {err}", path.display())))
}

/// Writes the config edit (if any) and has a running homeserver serve `mode` now.
fn apply(unit: &Unit, edited: Option<String>, mode: ClientTlsMode) -> Result<(), Failure> {
    if let Some(edited) = edited {
        let path = unit.config_path();
        interrupt::uninterruptible(|| crate::unit::replace_file(&path, edited.as_bytes(), 0o640))?;
        println!(
            "Set listen.tls = \"{}\" in {}.",
            mode.as_str(),
            path.display()
        );
    }
    match unit.server_state()? {
        ServerState::Stopped => println!(
            "The homeserver is stopped; it serves this certificate from its next start (`{}`).",
            crate::unit::START_HINT
        ),
        ServerState::Running => {
            // The running server switches too: it keeps the mode it started in until told.
            let served: TlsReloaded = AdminClient::new(unit.socket_path())
                .post("/v1/tls/reload", &TlsReload { mode: Some(mode) })
                .map_err(|failure| {
                    Failure::new(
                        failure.code,
                        format!(
                            "the change is written, but the running homeserver did not switch to it: \
                             {failure}; restart it (`systemctl restart homeserver`)"
                        ),
                    )
                })?;
            println!(
                "The homeserver now serves it to new connections (names {}, issued by {}, valid \
                 until {}).",
                served.names.join(", "),
                served.issuer,
                format_time_ms(served.not_after_ms)
            );
        }
    }
    Ok(())
}
