//! The allow-list as files: one peer card per file in `<data_dir>/peers/`, and this unit's own
//! card. Shared by `appliance peer` (which writes it), `status` and `keys` (which read it) and
//! `restore` (which rebuilds the firewall from it).
//!
//! Cards are read with the homeserver's own loader and parser
//! ([`homeserver::matrix::peer_card`]), so what is listed here is exactly what the server
//! allows. Writing a card also opens the firewall for it ([`super::firewall`]).

use std::path::{Path, PathBuf};

use homeserver::admin::wire::{PeerInfo, PeerList};
use homeserver::matrix::peer_card::PeerCard;
use homeserver::service::admin as service;
use homeserver::transport::peers::Allowlist;
use homeserver::transport::tls::client_config_for;

use crate::base::admin_client::AdminClient;
use crate::base::exit::{Failure, from_homeserver};
use crate::unit::{ServerState, Unit};

/// This unit's signed peer card, from its key, TLS CA and configured endpoints.
pub fn own_card(unit: &Unit) -> Result<PeerCard, Failure> {
    let config = unit.config()?;
    if config.federation.card_endpoints().is_empty() {
        return Err(Failure::state(
            "this unit has no federation address ([federation] listen or endpoints in \
             homeserver.toml), so no peer could reach it; set one up with `appliance setup`",
        ));
    }
    // peer_card() would make a missing key or CA; a new identity here would silently split
    // this unit from its peers, so a missing file is an error instead.
    let tls = unit.tls_dir();
    for (what, path) in [
        ("signing key", unit.key_path()),
        ("TLS unit CA", tls.join(crate::unit::CA_CERT)),
        ("TLS certificate", tls.join(crate::unit::CERT)),
    ] {
        if !path.is_file() {
            return Err(Failure::state(format!(
                "this unit's {what} {} is missing: restore the latest backup \
                 (`appliance restore FILE`)",
                path.display()
            )));
        }
    }
    homeserver::peer_card(&config)
        .map_err(|err| Failure::broke(format!("making this unit's peer card: {err}")))
}

/// Every peer with its link state: from the running homeserver, or from the card files and
/// the database (read-only) when it is stopped.
pub fn peer_infos(unit: &Unit, own_server_name: &str) -> Result<Vec<PeerInfo>, Failure> {
    match unit.server_state()? {
        ServerState::Running => Ok(AdminClient::new(unit.socket_path())
            .get::<PeerList>("/v1/peers")?
            .peers),
        ServerState::Stopped => {
            let cards = allowed_cards(unit, own_server_name)?;
            let conn = homeserver::store::admin::open_read_only(&unit.db_path())
                .map_err(from_homeserver)?;
            service::peer_infos(&conn, &cards).map_err(from_homeserver)
        }
    }
}

/// Card files in the peers folder that the homeserver skips, with the reason.
pub fn unusable_files(unit: &Unit, own_server_name: &str) -> Vec<(PathBuf, String)> {
    let mut unusable = Vec::new();
    for path in json_files(&unit.peers_dir()) {
        let verdict = std::fs::read_to_string(&path)
            .map_err(|err| err.to_string())
            .and_then(|text| PeerCard::parse(&text).map_err(|err| err.to_string()))
            .and_then(|card| {
                if card.server_name == own_server_name {
                    return Err("it is this unit's own card".to_owned());
                }
                client_config_for(&card.tls)
                    .map(|_| ())
                    .map_err(|err| format!("its TLS trust anchor is unusable: {err}"))
            });
        if let Err(reason) = verdict {
            unusable.push((path, reason));
        }
    }
    unusable
}

/// The cards of the peers on the allow-list, read with the homeserver's own loader, so this is
/// exactly what it would allow.
pub fn allowed_cards(unit: &Unit, own_server_name: &str) -> Result<Vec<PeerCard>, Failure> {
    let dir = unit.peers_dir();
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let allowlist = Allowlist::load(dir.clone(), own_server_name)
        .map_err(|err| Failure::io("cannot read", &dir, err))?;
    Ok(allowlist
        .names()
        .iter()
        .filter_map(|name| allowlist.get(name))
        .map(|peer| peer.card.clone())
        .collect())
}

/// The `*.json` files in `dir`, sorted; none if it does not exist.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    paths
}

/// The file name a peer's card is kept under: its server name with `:` made file-name safe.
pub fn card_file_name(server_name: &str) -> String {
    format!("{}.json", server_name.replace(':', "_"))
}

/// The files holding a card for `server_name`: the one named after it, and any other file
/// whose card names it (an admin may have copied one in by hand).
pub fn card_files(dir: &Path, server_name: &str) -> Vec<PathBuf> {
    let own_name = card_file_name(server_name);
    let mut found = Vec::new();
    for path in json_files(dir) {
        let named = path.file_name().is_some_and(|name| *name == *own_name);
        let holds = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .is_some_and(|card| card["server_name"] == server_name);
        if named || holds {
            found.push(path);
        }
    }
    found
}

/// The card currently on the allow-list for `server_name`, if a readable one is there.
pub fn current_card(unit: &Unit, server_name: &str) -> Option<PeerCard> {
    let path = unit.peers_dir().join(card_file_name(server_name));
    let text = std::fs::read_to_string(path).ok()?;
    PeerCard::parse(&text).ok()
}

/// Writes `card` as `<peers>/<name>.json` (atomically) and removes any other file holding a
/// card for the same server.
pub fn write_card(unit: &Unit, card: &PeerCard) -> Result<PathBuf, Failure> {
    let dir = unit.peers_dir();
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir).map_err(|err| Failure::io("cannot create", &dir, err))?;
        super::match_owner(&dir, unit.dir())?;
    }
    let path = dir.join(card_file_name(&card.server_name));
    super::replace_file(&path, card_json(card)?.as_bytes(), 0o644)?;
    for other in card_files(&dir, &card.server_name) {
        if other != path {
            std::fs::remove_file(&other)
                .map_err(|err| Failure::io("cannot remove", &other, err))?;
        }
    }
    super::sync_dir(&dir)?;
    for note in super::firewall::admit(unit, card)? {
        println!("{note}");
    }
    Ok(path)
}

pub fn card_json(card: &PeerCard) -> Result<String, Failure> {
    serde_json::to_string_pretty(card)
        .map(|text| format!("{text}\n"))
        .map_err(|err| Failure::broke(format!("encoding the peer card: {err}")))
}
