//! `appliance peer …`: the federation allow-list, kept as one peer card per file in
//! `<data_dir>/peers/`.
//!
//! Our own card is made by the homeserver's one implementation (`homeserver::peer_card`).
//! Imported cards are checked with the homeserver's own parser (format and self-signature) and
//! TLS code (the CA must load) before anything is written, so the server never meets a card the
//! CLI accepted but it would skip. Cards are written atomically; a running server is told to
//! re-read the folder over the admin socket, a stopped one reads it when it starts.
//!
//! Trust comes from the admins, not from the file: importing shows the card's fingerprint and
//! asks for it to be confirmed against what the other unit's admin reads out
//! (`--expect-fingerprint` for scripts).

use std::io::Read;
use std::path::{Path, PathBuf};

use homeserver::admin::wire::{PeerInfo, PeerList, PeersReloaded};
use homeserver::matrix::peer_card::{CARD_VERSION, CardError, PeerCard, TlsTrust};
use homeserver::service::admin as service;
use homeserver::transport::peers::Allowlist;
use homeserver::transport::tls::client_config_for;

use crate::admin_client::AdminClient;
use crate::cli::PeerCommand;
use crate::console::Console;
use crate::exit::{Exit, Failure, from_homeserver};
use crate::status::format_time_ms;
use crate::unit::{ServerState, Unit};

/// The largest card or CA file read; real ones are a few kilobytes.
const MAX_INPUT: u64 = 1024 * 1024;

/// Runs `appliance peer …`.
pub fn run(unit: &Unit, command: &PeerCommand) -> Result<Exit, Failure> {
    match command {
        PeerCommand::Export { out } => export(unit, out.as_deref()),
        PeerCommand::Fingerprint => fingerprint(unit),
        PeerCommand::Import {
            file,
            expect_fingerprint,
            yes,
        } => import(unit, file, expect_fingerprint.as_deref(), *yes),
        PeerCommand::Add {
            server_name,
            endpoint,
            verify_key,
            ca_file,
            spki_sha256,
        } => {
            let trust = match (ca_file, spki_sha256) {
                (Some(file), _) => TlsTrust::ca(read_input(file, "the CA certificate")?),
                (None, Some(pin)) => TlsTrust::spki(pin),
                (None, None) => {
                    return Err(Failure::usage("give --ca-file or --spki-sha256".to_owned()));
                }
            };
            add(unit, server_name, endpoint, verify_key, trust)
        }
        PeerCommand::List { json } => list(unit, *json),
        PeerCommand::Remove { name, yes } => remove(unit, name, *yes),
    }
}

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
        ("TLS unit CA", tls.join(crate::tls::CA_CERT)),
        ("TLS certificate", tls.join(crate::tls::CERT)),
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

fn export(unit: &Unit, out: Option<&Path>) -> Result<Exit, Failure> {
    let card = own_card(unit)?;
    let text = card_json(&card)?;
    match out {
        Some(path) => {
            crate::unit::replace_file(path, text.as_bytes(), 0o644)?;
            eprintln!(
                "Wrote the peer card of {} to {}.",
                card.server_name,
                path.display()
            );
        }
        None => print!("{text}"),
    }
    eprintln!("Fingerprint: {}", card.fingerprint());
    eprintln!(
        "Give the card to the other unit's admin, who imports it with `appliance peer import \
         FILE`, and read them the fingerprint so they can check it."
    );
    Ok(Exit::Success)
}

fn fingerprint(unit: &Unit) -> Result<Exit, Failure> {
    let card = own_card(unit)?;
    let fingerprint = card.fingerprint();
    println!("{fingerprint}");
    eprintln!(
        "Fingerprint of {}; read aloud:\n  {}",
        card.server_name,
        spell(&fingerprint)
    );
    Ok(Exit::Success)
}

fn import(
    unit: &Unit,
    file: &Path,
    expect_fingerprint: Option<&str>,
    yes: bool,
) -> Result<Exit, Failure> {
    let config = unit.config()?;
    let text = read_input(file, "the peer card")?;
    let card = PeerCard::parse(&text).map_err(|err| card_refused(file, &err))?;
    if !card.is_signed() {
        return Err(Failure::rejected(format!(
            "{} is not signed, so it is not an Outpost unit's card and nothing proves who made \
             it. Nothing was imported; a server that is not an Outpost unit is added with \
             `appliance peer add`",
            file.display()
        )));
    }
    check_card(&card, config.server_name.as_str())?;
    let fingerprint = card.fingerprint();
    let replaced = current_card(unit, &card.server_name);
    describe(&card, &fingerprint);
    if let Some(old) = &replaced {
        eprintln!(
            "  replaces     the card issued {} (fingerprint {})",
            format_time_ms(i64::try_from(old.issued_at).unwrap_or(i64::MAX)),
            old.fingerprint()
        );
    }
    match expect_fingerprint {
        Some(expected) if same_fingerprint(expected, &fingerprint) => {
            eprintln!("The fingerprint matches the one expected.");
        }
        Some(expected) => {
            return Err(Failure::rejected(format!(
                "the card's fingerprint {fingerprint} is not the one expected ({expected}). \
                 Nothing was imported: this may not be the card the other admin exported. Ask \
                 them to read out `appliance peer fingerprint` again and to export a fresh card"
            )));
        }
        None if yes => {
            eprintln!("Importing without a fingerprint check (--yes).");
        }
        None => {
            let confirmed = Console::new().confirm(
                "Does the other unit's admin read out exactly this fingerprint?",
                false,
                "--expect-fingerprint FP (or --yes)",
            )?;
            if !confirmed {
                return Err(Failure::state(
                    "not imported: the fingerprint was not confirmed. Do not trust this card; \
                     ask the other admin for a fresh export",
                ));
            }
        }
    }
    let path = write_card(unit, &card)?;
    println!(
        "Imported the card of {} ({}) into {}.",
        card.server_name,
        fingerprint,
        path.display()
    );
    println!("{}", reload(unit)?);
    Ok(Exit::Success)
}

fn add(
    unit: &Unit,
    server_name: &str,
    endpoints: &[String],
    verify_keys: &[String],
    trust: TlsTrust,
) -> Result<Exit, Failure> {
    let config = unit.config()?;
    let mut keys = std::collections::BTreeMap::new();
    for raw in verify_keys {
        let (id, key) = parse_verify_key(raw).map_err(Failure::rejected)?;
        if keys.insert(id.clone(), key).is_some() {
            return Err(Failure::rejected(format!(
                "--verify-key {id} is given twice"
            )));
        }
    }
    let card = PeerCard {
        version: CARD_VERSION,
        server_name: server_name.trim().to_owned(),
        endpoints: endpoints.iter().map(|e| e.trim().to_owned()).collect(),
        verify_keys: keys,
        old_verify_keys: Default::default(),
        tls: trust,
        issued_at: u64::try_from(homeserver::util::now_ms()).unwrap_or(0),
        signatures: Default::default(),
    };
    // Through the same parser the homeserver loads cards with.
    let card = PeerCard::parse(&card_json(&card)?)
        .map_err(|err| Failure::rejected(format!("not added: {err}")))?;
    check_card(&card, config.server_name.as_str())?;
    let fingerprint = card.fingerprint();
    let replaced = current_card(unit, &card.server_name).is_some();
    describe(&card, &fingerprint);
    let path = write_card(unit, &card)?;
    println!(
        "{} {} by hand ({}) in {}.",
        if replaced { "Replaced" } else { "Added" },
        card.server_name,
        fingerprint,
        path.display()
    );
    println!("{}", reload(unit)?);
    Ok(Exit::Success)
}

fn list(unit: &Unit, json: bool) -> Result<Exit, Failure> {
    let config = unit.config()?;
    let peers = peer_infos(unit, config.server_name.as_str())?;
    for (path, reason) in unusable_files(unit, config.server_name.as_str()) {
        eprintln!(
            "warning: {} is not used: {reason}. Re-import the card or remove the file.",
            path.display()
        );
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&PeerList { peers })
                .map_err(|err| Failure::broke(format!("encoding JSON: {err}")))?
        );
    } else {
        print_table(&peers);
    }
    Ok(Exit::Success)
}

fn remove(unit: &Unit, name: &str, yes: bool) -> Result<Exit, Failure> {
    unit.require_set_up()?;
    let name = name.trim();
    let files = card_files(&unit.peers_dir(), name);
    if files.is_empty() {
        return Err(Failure::rejected(format!(
            "{name} is not on the allow-list; `appliance peer list` shows who is"
        )));
    }
    if !yes
        && !Console::new().confirm(
            &format!(
                "Remove {name} from the allow-list? This unit will refuse its requests and stop \
                 sending to it."
            ),
            false,
            "--yes",
        )?
    {
        return Err(Failure::state("not removed"));
    }
    for path in &files {
        std::fs::remove_file(path).map_err(|err| Failure::io("cannot remove", path, err))?;
    }
    crate::unit::sync_dir(&unit.peers_dir())?;
    for note in crate::firewall::revoke(unit, name)? {
        println!("{note}");
    }
    println!("Removed {name} from the allow-list.");
    println!("{}", reload(unit)?);
    Ok(Exit::Success)
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

/// The `*.json` files in `dir`, sorted; none if it does not exist.
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
fn card_files(dir: &Path, server_name: &str) -> Vec<PathBuf> {
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
fn current_card(unit: &Unit, server_name: &str) -> Option<PeerCard> {
    let path = unit.peers_dir().join(card_file_name(server_name));
    let text = std::fs::read_to_string(path).ok()?;
    PeerCard::parse(&text).ok()
}

/// Writes `card` as `<peers>/<name>.json` (atomically) and removes any other file holding a
/// card for the same server.
fn write_card(unit: &Unit, card: &PeerCard) -> Result<PathBuf, Failure> {
    let dir = unit.peers_dir();
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir).map_err(|err| Failure::io("cannot create", &dir, err))?;
        crate::unit::match_owner(&dir, unit.dir())?;
    }
    let path = dir.join(card_file_name(&card.server_name));
    crate::unit::replace_file(&path, card_json(card)?.as_bytes(), 0o644)?;
    for other in card_files(&dir, &card.server_name) {
        if other != path {
            std::fs::remove_file(&other)
                .map_err(|err| Failure::io("cannot remove", &other, err))?;
        }
    }
    crate::unit::sync_dir(&dir)?;
    for note in crate::firewall::admit(unit, card)? {
        println!("{note}");
    }
    Ok(path)
}

/// Makes a running homeserver re-read the allow-list; says what happened.
fn reload(unit: &Unit) -> Result<String, Failure> {
    match unit.server_state()? {
        ServerState::Running => {
            let reloaded: PeersReloaded = AdminClient::new(unit.socket_path())
                .post("/v1/peers/reload", &serde_json::json!({}))
                .map_err(|failure| {
                    Failure::new(
                        failure.code,
                        format!(
                            "the allow-list was written, but the homeserver did not reload it \
                             ({failure}); restart it to load it"
                        ),
                    )
                })?;
            Ok(format!(
                "The homeserver reloaded its allow-list: {} peer{}.",
                reloaded.peers,
                if reloaded.peers == 1 { "" } else { "s" }
            ))
        }
        ServerState::Stopped => {
            Ok("The homeserver is stopped; it loads the allow-list when it starts.".to_owned())
        }
    }
}

fn card_json(card: &PeerCard) -> Result<String, Failure> {
    serde_json::to_string_pretty(card)
        .map(|text| format!("{text}\n"))
        .map_err(|err| Failure::broke(format!("encoding the peer card: {err}")))
}

/// Reads a small input file (`-` for stdin).
fn read_input(path: &Path, what: &str) -> Result<String, Failure> {
    let mut text = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(MAX_INPUT + 1)
            .read_to_string(&mut text)
    } else {
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_INPUT + 1).read_to_string(&mut text))
    };
    read.map_err(|err| Failure::io(&format!("cannot read {what}"), path, err))?;
    if text.len() as u64 > MAX_INPUT {
        return Err(Failure::rejected(format!(
            "{} is too large to be {what}",
            path.display()
        )));
    }
    Ok(text)
}

fn card_refused(file: &Path, err: &CardError) -> Failure {
    match err {
        CardError::BadSignature(_) => Failure::rejected(format!(
            "the card in {} does not verify: it was changed after it was made, or damaged on \
             the way ({err}). Nothing was imported; ask the other admin for a fresh `appliance \
             peer export`",
            file.display()
        )),
        CardError::Malformed(_) => Failure::rejected(format!(
            "{} is not a usable peer card ({err}). Nothing was imported",
            file.display()
        )),
    }
}

/// What the homeserver's parser lets through but this unit must still refuse: our own card,
/// endpoints that are not `host:port`, a CA that does not load.
fn check_card(card: &PeerCard, own_server_name: &str) -> Result<(), Failure> {
    if card.server_name == own_server_name {
        return Err(Failure::rejected(format!(
            "this is this unit's own card ({own_server_name}). Nothing was imported: import the \
             other unit's card here, and give ours to its admin"
        )));
    }
    for endpoint in &card.endpoints {
        check_endpoint(endpoint).map_err(|reason| {
            Failure::rejected(format!(
                "the endpoint {endpoint:?} is not host:port ({reason}). Nothing was changed"
            ))
        })?;
    }
    client_config_for(&card.tls).map_err(|err| {
        Failure::rejected(format!(
            "the TLS trust anchor (CA certificate or key pin) is not usable ({err}). Nothing \
             was changed"
        ))
    })?;
    Ok(())
}

/// `host:port` with a host name, an IPv4 address or a bracketed IPv6 address, and a port
/// from 1 to 65535.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let name = <&ruma::ServerName>::try_from(endpoint).map_err(|err| err.to_string())?;
    match name.port() {
        Some(0) => Err("port 0".to_owned()),
        Some(_) => Ok(()),
        None => Err("no port".to_owned()),
    }
}

/// Parses `ed25519:ID=BASE64` into the key ID and the unpadded base64 key.
fn parse_verify_key(raw: &str) -> Result<(String, String), String> {
    let raw = raw.trim();
    let (id, key) = raw
        .split_once('=')
        .ok_or_else(|| format!("--verify-key {raw:?} is not ed25519:KEY_ID=BASE64"))?;
    let version = id
        .strip_prefix("ed25519:")
        .ok_or_else(|| format!("--verify-key {id:?}: only ed25519 keys are supported"))?;
    if version.is_empty()
        || !version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(format!(
            "--verify-key {id:?}: the key ID must be ed25519: followed by letters, digits or _"
        ));
    }
    let key = key.trim_end_matches('=');
    let decoded = ruma::serde::Base64::<ruma::serde::base64::Standard, Vec<u8>>::parse(key)
        .map_err(|err| format!("--verify-key {id}: not base64 ({err})"))?;
    if decoded.as_bytes().len() != 32 {
        return Err(format!(
            "--verify-key {id}: an ed25519 public key is 32 bytes, this is {}",
            decoded.as_bytes().len()
        ));
    }
    Ok((id.to_owned(), decoded.encode()))
}

/// Whether two fingerprints are the same, ignoring case, dashes and spaces.
fn same_fingerprint(typed: &str, actual: &str) -> bool {
    let normal = |text: &str| -> String {
        text.chars()
            .filter(|c| !matches!(c, '-' | ' ' | '\t'))
            .map(|c| c.to_ascii_uppercase())
            .collect()
    };
    normal(typed) == normal(actual)
}

/// Shows a card's contents on stderr, before the admin is asked about it.
fn describe(card: &PeerCard, fingerprint: &str) {
    eprintln!("Peer card of {}:", card.server_name);
    eprintln!("  endpoints    {}", card.endpoints.join(", "));
    eprintln!(
        "  keys         {}",
        card.verify_keys
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !card.old_verify_keys.is_empty() {
        eprintln!(
            "  old keys     {}",
            card.old_verify_keys
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    eprintln!(
        "  issued       {}",
        format_time_ms(i64::try_from(card.issued_at).unwrap_or(i64::MAX))
    );
    if let Some(pin) = &card.tls.spki_sha256 {
        eprintln!("  TLS key pin  {pin}");
    }
    eprintln!("  fingerprint  {fingerprint}");
    eprintln!("               ({})", spell(fingerprint));
}

/// A fingerprint spelled for reading aloud: `AB2-` → `alfa bravo two / …`.
pub fn spell(fingerprint: &str) -> String {
    const LETTERS: [&str; 26] = [
        "alfa", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
        "juliett", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
        "sierra", "tango", "uniform", "victor", "whiskey", "x-ray", "yankee", "zulu",
    ];
    const DIGITS: [&str; 10] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    fingerprint
        .split('-')
        .map(|group| {
            group
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' => LETTERS[usize::from(b - b'A')].to_owned(),
                    b'a'..=b'z' => LETTERS[usize::from(b - b'a')].to_owned(),
                    b'0'..=b'9' => DIGITS[usize::from(b - b'0')].to_owned(),
                    other => char::from(other).to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

fn print_table(peers: &[PeerInfo]) {
    if peers.is_empty() {
        println!(
            "No peers yet: this unit federates with no one. Import another unit's card with \
             `appliance peer import FILE`."
        );
        return;
    }
    let width = peers
        .iter()
        .map(|peer| peer.server_name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    println!(
        "{:<width$}  {:<24}  {:<20}  {:>5}  ENDPOINTS",
        "PEER", "FINGERPRINT", "LAST DELIVERY", "QUEUE"
    );
    for peer in peers {
        let link = &peer.link;
        println!(
            "{:<width$}  {:<24}  {:<20}  {:>5}  {}{}",
            peer.server_name,
            peer.fingerprint,
            link.last_success_ts
                .map(format_time_ms)
                .unwrap_or_else(|| "never".to_owned()),
            link.queue_depth,
            peer.endpoints.join(", "),
            if peer.signed { "" } else { "  (added by hand)" }
        );
        if link.consecutive_failures > 0 {
            println!(
                "{:<width$}  last error {} ({} failed attempt{} in a row): {}",
                "",
                link.last_error_ts
                    .map(format_time_ms)
                    .unwrap_or_else(|| "?".to_owned()),
                link.consecutive_failures,
                if link.consecutive_failures == 1 {
                    ""
                } else {
                    "s"
                },
                link.last_error.as_deref().unwrap_or("no details")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_host_and_port() {
        for good in ["127.0.0.1:8448", "unit-b.example:8448", "[::1]:8448"] {
            assert_eq!(check_endpoint(good), Ok(()), "{good}");
        }
        for bad in [
            "unit-b.example",
            "unit-b.example:",
            ":8448",
            "unit-b.example:port",
            "::1:8448",
            "host:0",
            "host:70000",
            "a b:1",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn verify_keys_parse_with_or_without_padding() {
        let key = "l8Hft5qXKn1vfHrg3p4+W8gELQVo8N13JkluMfmn2sQ";
        assert_eq!(
            parse_verify_key(&format!("ed25519:a_1={key}")),
            Ok(("ed25519:a_1".to_owned(), key.to_owned()))
        );
        assert_eq!(
            parse_verify_key(&format!("ed25519:a_1={key}=")),
            Ok(("ed25519:a_1".to_owned(), key.to_owned()))
        );
        for bad in [
            format!("ed25519:a_1{key}"),
            format!("rsa:1={key}"),
            format!("ed25519:={key}"),
            format!("ed25519:a-b={key}"),
            "ed25519:a_1=AAAA".to_owned(),
            "ed25519:a_1=!!!".to_owned(),
        ] {
            assert!(parse_verify_key(&bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn fingerprints_compare_loosely_and_spell_out() {
        assert!(same_fingerprint("abcd efgh-2345", "ABCD-EFGH-2345"));
        assert!(!same_fingerprint("ABCD-EFGH-2346", "ABCD-EFGH-2345"));
        assert_eq!(spell("AB-27"), "alfa bravo / two seven");
        assert_eq!(
            card_file_name("unit-a.example:8448"),
            "unit-a.example_8448.json"
        );
    }
}
