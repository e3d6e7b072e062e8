//! `appliance keys rotate`: a new signing key for the unit.
//!
//! Rotation needs the homeserver stopped: it signs with the key it loaded at start, and
//! swapping the file under a running server would leave it signing with a key its own card
//! no longer names. Stopping it is the simplest choice that is always correct. The key file
//! keeps the old key's public half (`old` lines, see `homeserver::matrix::keys`), so history
//! signed with it still verifies, here and, through the new card's `old_verify_keys`, on peers.

use homeserver::matrix::keys::SigningKey;

use crate::base::console::Console;
use crate::base::exit::{Exit, Failure};
use crate::cli::KeysCommand;
use crate::unit::Unit;

/// Runs `appliance keys …`.
pub fn run(unit: &Unit, command: &KeysCommand) -> Result<Exit, Failure> {
    match command {
        KeysCommand::Rotate { yes } => rotate(unit, *yes),
    }
}

fn rotate(unit: &Unit, yes: bool) -> Result<Exit, Failure> {
    let config = unit.config()?;
    unit.require_stopped("rotating the signing key (it signs with the key it loaded at start)")?;
    let path = unit.key_path();
    let text =
        std::fs::read_to_string(&path).map_err(|err| Failure::io("cannot read", &path, err))?;
    let key = SigningKey::parse(&text)
        .map_err(|err| Failure::broke(format!("{}: {err}", path.display())))?;
    let peers = crate::unit::allowlist::peer_infos(unit, config.server_name.as_str())?;
    if !yes
        && !Console::new().confirm(
            &format!(
                "Replace the signing key {}? Each of this unit's {} peer(s) must then import \
                 its new card before they accept it again.",
                key.key_id(),
                peers.len()
            ),
            false,
            "--yes",
        )?
    {
        return Err(Failure::state("not rotated; the key is unchanged"));
    }
    let now = u64::try_from(homeserver::util::now_ms()).unwrap_or(0);
    let next = key.rotate(now);
    crate::unit::replace_file(&path, next.serialize().as_bytes(), 0o600)?;
    let card = crate::unit::allowlist::own_card(unit)?;
    println!(
        "New signing key {}; the old key {} is kept so what it signed still verifies.",
        next.key_id(),
        key.key_id()
    );
    println!("New fingerprint: {}", card.fingerprint());
    if peers.is_empty() {
        println!("Give the new card (`appliance peer export --out FILE`) to future peers.");
    } else {
        let names: Vec<&str> = peers.iter().map(|peer| peer.server_name.as_str()).collect();
        println!(
            "Until they import the new card, peers refuse this unit. Export it with `appliance \
             peer export --out FILE` and hand it to the admin of every peer ({}), reading them \
             the new fingerprint.",
            names.join(", ")
        );
    }
    Ok(Exit::Success)
}
