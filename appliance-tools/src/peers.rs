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
use std::path::Path;

use homeserver::admin::wire::{PeerInfo, PeerList, PeersReloaded};
use homeserver::matrix::peer_card::{
    CARD_VERSION, CardError, KeyError, PeerCard, TlsTrust, check_verify_key,
};
use homeserver::transport::tls::client_config_for;

use crate::base::console::{Console, format_time_ms};
use crate::base::exit::{Exit, Failure};
use crate::cli::PeerCommand;
use crate::unit::Unit;
use crate::unit::allowlist::{
    card_files, card_json, current_card, own_card, peer_infos, unusable_files, write_card,
};

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
    let card = PeerCard::parse(&card_json(&card)?).map_err(|err| match err {
        CardError::Endpoint { endpoint, reason } => endpoint_refused(&endpoint, &reason),
        err => Failure::rejected(format!("not added: {err}")),
    })?;
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
    for note in crate::unit::firewall::revoke(unit, name)? {
        println!("{note}");
    }
    println!("Removed {name} from the allow-list.");
    println!("{}", reload(unit)?);
    Ok(Exit::Success)
}

/// Makes a running homeserver re-read the allow-list; says what happened.
fn reload(unit: &Unit) -> Result<String, Failure> {
    Ok(
        match unit.reload_running::<PeersReloaded>("/v1/peers/reload", "the allow-list was")? {
            Some(reloaded) => format!(
                "The homeserver reloaded its allow-list: {} peer{}.",
                reloaded.peers,
                if reloaded.peers == 1 { "" } else { "s" }
            ),
            None => "The homeserver is stopped; it loads the allow-list when it starts.".to_owned(),
        },
    )
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
        CardError::Endpoint { endpoint, reason } => endpoint_refused(endpoint, reason),
        CardError::Malformed(_) => Failure::rejected(format!(
            "{} is not a usable peer card ({err}). Nothing was imported",
            file.display()
        )),
    }
}

/// An endpoint the card parser refused ([`check_endpoint`](homeserver::matrix::peer_card::check_endpoint)).
fn endpoint_refused(endpoint: &str, reason: &str) -> Failure {
    Failure::rejected(format!(
        "the endpoint {endpoint:?} is not host:port ({reason}). Nothing was changed"
    ))
}

/// What the homeserver's card parser lets through but this unit must still refuse: our own
/// card, a CA that does not load.
fn check_card(card: &PeerCard, own_server_name: &str) -> Result<(), Failure> {
    if card.server_name == own_server_name {
        return Err(Failure::rejected(format!(
            "this is this unit's own card ({own_server_name}). Nothing was imported: import the \
             other unit's card here, and give ours to its admin"
        )));
    }
    client_config_for(&card.tls).map_err(|err| {
        Failure::rejected(format!(
            "the TLS trust anchor (CA certificate or key pin) is not usable ({err}). Nothing \
             was changed"
        ))
    })?;
    Ok(())
}

/// Parses `ed25519:ID=BASE64` into the key ID and the unpadded base64 key, with the
/// homeserver's one check of card keys ([`check_verify_key`]).
fn parse_verify_key(raw: &str) -> Result<(String, String), String> {
    let raw = raw.trim();
    let (id, key) = raw
        .split_once('=')
        .ok_or_else(|| format!("--verify-key {raw:?} is not ed25519:KEY_ID=BASE64"))?;
    let key = check_verify_key(id, key).map_err(|err| match err {
        KeyError::NotEd25519 | KeyError::BadKeyId => format!("--verify-key {id:?}: {err}"),
        KeyError::NotBase64(_) | KeyError::WrongLength(_) => format!("--verify-key {id}: {err}"),
    })?;
    Ok((id.to_owned(), key))
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
    use crate::unit::allowlist::card_file_name;

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
