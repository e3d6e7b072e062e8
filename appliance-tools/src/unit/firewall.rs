//! The firewall's peer sets: one nftables file per allow-listed peer in the folder the image's
//! ruleset (`/usr/share/outpost/firewall.nft`) includes (`/data/firewall`, beside the data
//! directory and owned by root, so the homeserver cannot open the firewall), or in
//! `<data dir>/firewall/` where no ruleset is installed (a development machine). Written
//! whenever a card is imported, added or removed, then `outpost-firewall.service` is reloaded
//! so the change is in force at once.
//!
//! Only IP-literal endpoints can be admitted: the unit resolves no names. A card endpoint that
//! is a host name is reported, and the peer stays unreachable through the firewall until its
//! card names an address.
//!
//! One more file, `_ca-http.nft` (no server name starts with `_`), admits the port of the
//! plain-HTTP CA download listener (`listen.ca_http`) when the config has one; setup writes
//! it, and a rebuild rewrites it from the config.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use homeserver::matrix::peer_card::PeerCard;

use crate::base::exit::Failure;
use crate::unit::Unit;

/// The folder of per-peer rule files inside the data directory, where no ruleset is installed.
pub const FIREWALL_DIR: &str = "firewall";

/// The ruleset installed on an Outpost image; its absence means "not an appliance" (a
/// development machine), where there is no firewall to reload.
const RULESET: &str = "/usr/share/outpost/firewall.nft";

/// The folder of per-peer rule files: the one the installed ruleset includes (the ruleset is
/// the one source of that path), else `<data dir>/firewall`.
pub fn rules_dir(unit: &Unit) -> PathBuf {
    std::fs::read_to_string(RULESET)
        .ok()
        .and_then(|ruleset| included_dir(&ruleset))
        .unwrap_or_else(|| unit.path(FIREWALL_DIR))
}

/// The folder of an `include "<folder>/*.nft"` line of a ruleset.
fn included_dir(ruleset: &str) -> Option<PathBuf> {
    ruleset
        .lines()
        .filter_map(|line| line.trim().strip_prefix("include \""))
        .filter_map(|rest| rest.strip_suffix('"'))
        .find_map(|pattern| pattern.strip_suffix("/*.nft"))
        .map(PathBuf::from)
}

/// The rule file of a peer.
pub fn rules_path(unit: &Unit, server_name: &str) -> PathBuf {
    rules_dir(unit).join(format!("{}.nft", server_name.replace([':', '/'], "_")))
}

/// The nftables lines admitting a card's endpoints, and the endpoints that could not be
/// admitted (not an IP address and port).
pub fn rules_for(card: &PeerCard) -> (String, Vec<String>) {
    let mut text = format!(
        "# Written by `appliance peer` for {}; replaced whenever its card changes.\n",
        card.server_name
    );
    let mut skipped = Vec::new();
    for endpoint in &card.endpoints {
        let Ok(addr) = endpoint.parse::<SocketAddr>() else {
            skipped.push(endpoint.clone());
            continue;
        };
        let family = match addr.ip() {
            IpAddr::V4(_) => "v4",
            IpAddr::V6(_) => "v6",
        };
        let _ = writeln!(
            text,
            "add element inet outpost peer_sources_{family} {{ {} }}",
            addr.ip()
        );
        let _ = writeln!(
            text,
            "add element inet outpost peer_endpoints_{family} {{ {} . {} }}",
            addr.ip(),
            addr.port()
        );
    }
    (text, skipped)
}

/// The file admitting the CA download port.
const CA_HTTP_FILE: &str = "_ca-http.nft";

/// The nftables line admitting the CA download listener's port.
fn ca_http_rules(port: u16) -> String {
    format!(
        "# Written by `appliance setup` for listen.ca_http: the unit CA download page.\n\
         add element inet outpost ca_http_ports {{ {port} }}\n"
    )
}

/// Writes (or, with `None`, removes) the CA download port's file, without reloading.
fn write_ca_http(unit: &Unit, port: Option<u16>) -> Result<(), Failure> {
    let dir = rules_dir(unit);
    let path = dir.join(CA_HTTP_FILE);
    match port {
        Some(port) => {
            ensure_rules_dir(unit, &dir)?;
            crate::unit::replace_file(&path, ca_http_rules(port).as_bytes(), 0o644)?;
        }
        None => match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(Failure::io("cannot remove", &path, err)),
        },
    }
    crate::unit::sync_dir(&dir)
}

/// Admits the CA download listener's port (or closes it, with `None`) and reloads; returns
/// notes for the admin.
pub fn admit_ca_http(unit: &Unit, port: Option<u16>) -> Result<Vec<String>, Failure> {
    if port.is_none() && !rules_dir(unit).join(CA_HTTP_FILE).exists() {
        return Ok(Vec::new());
    }
    write_ca_http(unit, port)?;
    Ok(reload().into_iter().collect())
}

/// Writes a peer's rule file and reloads; returns notes for the admin (endpoints left out,
/// reload outcome).
pub fn admit(unit: &Unit, card: &PeerCard) -> Result<Vec<String>, Failure> {
    let mut notes = write_rules(unit, card)?;
    notes.extend(reload());
    Ok(notes)
}

/// Rewrites the rule files from `cards` (the peers now on the allow-list), dropping files of
/// peers that are not, and reloads once. Restore and factory reset call it: on an appliance
/// the folder is outside the data directory, so a backup does not carry it and an erase does
/// not clear it.
pub fn rebuild(unit: &Unit, cards: &[PeerCard]) -> Result<Vec<String>, Failure> {
    let dir = rules_dir(unit);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let stale = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "nft"));
        for path in stale {
            std::fs::remove_file(&path).map_err(|err| Failure::io("cannot remove", &path, err))?;
        }
        crate::unit::sync_dir(&dir)?;
    }
    let mut notes = Vec::new();
    for card in cards {
        notes.extend(write_rules(unit, card)?);
    }
    if let Ok(config) = unit.config()
        && config.client_tls != homeserver::config::ClientTlsMode::Off
    {
        write_ca_http(unit, config.ca_http.map(|addr| addr.port()))?;
    }
    notes.extend(reload());
    Ok(notes)
}

/// Creates the rules folder if needed.
fn ensure_rules_dir(unit: &Unit, dir: &Path) -> Result<(), Failure> {
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).map_err(|err| Failure::io("cannot create", dir, err))?;
        // Inside the data directory (a development machine) the homeserver's user may own it;
        // the appliance's folder outside it stays root's.
        if dir.starts_with(unit.dir()) {
            crate::unit::match_owner(dir, unit.dir())?;
        }
    }
    Ok(())
}

/// Writes a peer's rule file (no reload); returns notes on endpoints left out.
fn write_rules(unit: &Unit, card: &PeerCard) -> Result<Vec<String>, Failure> {
    let dir = rules_dir(unit);
    ensure_rules_dir(unit, &dir)?;
    let (text, skipped) = rules_for(card);
    crate::unit::replace_file(&rules_path(unit, &card.server_name), text.as_bytes(), 0o644)?;
    crate::unit::sync_dir(&dir)?;
    Ok(skipped
        .iter()
        .map(|endpoint| {
            format!(
                "Firewall: endpoint {endpoint} is not an IP address and port, so it is not \
                 admitted (this unit resolves no names); ask for a card that names an address."
            )
        })
        .collect())
}

/// Removes a peer's rule file (if any) and reloads the firewall.
pub fn revoke(unit: &Unit, server_name: &str) -> Result<Vec<String>, Failure> {
    let path = rules_path(unit, server_name);
    match std::fs::remove_file(&path) {
        Ok(()) => crate::unit::sync_dir(&rules_dir(unit))?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(Failure::io("cannot remove", &path, err)),
    }
    Ok(reload().into_iter().collect())
}

/// Reloads `outpost-firewall.service` on an appliance; nothing elsewhere.
fn reload() -> Option<String> {
    if !Path::new(RULESET).exists() {
        return None;
    }
    let reloaded = Command::new("systemctl")
        .args(["reload", "outpost-firewall.service"])
        .status();
    match reloaded {
        Ok(status) if status.success() => Some("Firewall: peer addresses updated.".to_owned()),
        Ok(status) => Some(format!(
            "Firewall: reloading outpost-firewall.service failed ({status}); the new peer \
             rules apply at the next boot. `systemctl status outpost-firewall` says why."
        )),
        Err(err) => Some(format!(
            "Firewall: cannot run systemctl ({err}); the new peer rules apply at the next boot."
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_admit_ip_endpoints_and_report_names() {
        let card: PeerCard = serde_json::from_value(serde_json::json!({
            "version": 1,
            "server_name": "unit-b.example:8448",
            "endpoints": ["10.0.0.2:8448", "[fd00::2]:8449", "unit-b.example:8448"],
            "verify_keys": {},
            "tls": {"ca_pem": "x"},
            "issued_at": 0,
        }))
        .expect("card");
        let (text, skipped) = rules_for(&card);
        assert!(text.contains("add element inet outpost peer_sources_v4 { 10.0.0.2 }"));
        assert!(text.contains("add element inet outpost peer_endpoints_v4 { 10.0.0.2 . 8448 }"));
        assert!(text.contains("add element inet outpost peer_sources_v6 { fd00::2 }"));
        assert!(text.contains("add element inet outpost peer_endpoints_v6 { fd00::2 . 8449 }"));
        assert_eq!(skipped, ["unit-b.example:8448"]);
    }

    #[test]
    fn the_ca_download_port_is_one_set_element() {
        assert!(ca_http_rules(80).ends_with("add element inet outpost ca_http_ports { 80 }\n"));
    }

    #[test]
    fn the_rule_folder_is_the_one_the_ruleset_includes() {
        let ruleset = "flush ruleset\ntable inet outpost {}\n\ninclude \"/data/firewall/*.nft\"\n";
        assert_eq!(included_dir(ruleset), Some(PathBuf::from("/data/firewall")));
        assert_eq!(included_dir("flush ruleset\n"), None);
    }
}
