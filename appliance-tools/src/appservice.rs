//! `appliance appservice …`: the registered application services (bridges and bots), kept as
//! one registration file per appservice in `<data_dir>/appservices/<id>.yaml`.
//!
//! A file is checked with the homeserver's own parser and set checks
//! ([`homeserver::service::appservice::files`]) against the registrations already there
//! before anything is written, so the server never meets a file the CLI accepted but it would
//! skip. The file is written as given (bridges keep their own keys and comments in it),
//! atomically, mode 0600 (it holds both tokens), owned like the data dir so the homeserver's
//! user reads it. A running server is told to re-read the folder over the admin socket
//! (`POST /v1/appservices/reload`); a stopped one reads it when it starts. `list` and `ping`
//! ask the running server for the link state and the round trip.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use homeserver::admin::wire::{AppservicePinged, AppservicesReloaded};
use homeserver::matrix::appservice::{Namespace, Registration};
use homeserver::service::appservice::files::{Entry, Refusal, check_new, file_name};

use crate::base::admin_client::{AdminClient, ErrorAnswer};
use crate::base::console::{Console, format_time_ms};
use crate::base::exit::{Exit, Failure, from_errcode};
use crate::base::interrupt;
use crate::cli::AppserviceCommand;
use crate::unit::appservices::{self, Link};
use crate::unit::{START_HINT, ServerState, Unit};

/// The largest registration file read; real ones are a few hundred bytes.
const MAX_INPUT: u64 = 1024 * 1024;

/// Runs `appliance appservice …`.
pub fn run(unit: &Unit, command: &AppserviceCommand) -> Result<Exit, Failure> {
    match command {
        AppserviceCommand::Add { file, replace } => add(unit, file, *replace),
        AppserviceCommand::List { json } => list(unit, *json),
        AppserviceCommand::Remove { id, yes } => remove(unit, id, *yes),
        AppserviceCommand::Ping { id } => ping(unit, id),
    }
}

fn add(unit: &Unit, file: &Path, replace: bool) -> Result<Exit, Failure> {
    let config = unit.config()?;
    let server_name = config.server_name.as_str();
    let text = read_input(file)?;
    let dir = appservices::dir(unit);
    let existing = appservices::entries(unit, server_name);
    let checked = check_new(&dir, &existing, &[], &text, server_name, replace)
        .map_err(|refusal| refused(file, refusal))?;
    let replaced = !checked.replaces.is_empty() || checked.path.exists();
    interrupt::uninterruptible(|| -> Result<(), Failure> {
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(|err| Failure::io("cannot create", &dir, err))?;
            crate::unit::match_owner(&dir, unit.dir())?;
        }
        crate::unit::replace_file(&checked.path, text.as_bytes(), 0o600)?;
        for old in &checked.replaces {
            std::fs::remove_file(old).map_err(|err| Failure::io("cannot remove", old, err))?;
        }
        crate::unit::sync_dir(&dir)
    })?;
    let registration = &checked.registration;
    println!(
        "{} the appservice {} ({}, sender {}) in {}.",
        if replaced { "Replaced" } else { "Registered" },
        registration.id,
        registration
            .url
            .as_deref()
            .unwrap_or("send-only: the homeserver never calls it"),
        registration.sender(server_name),
        checked.path.display()
    );
    println!("{}", reload(unit)?);
    Ok(Exit::Success)
}

/// One appservice as `list --json` prints it: its registration, and its link when the
/// homeserver runs.
#[derive(Debug, Serialize, Deserialize)]
struct Listed {
    id: String,
    file: String,
    url: Option<String>,
    sender: String,
    namespaces: ListedNamespaces,
    rate_limited: bool,
    receive_ephemeral: bool,
    protocols: Vec<String>,
    /// `None` when the homeserver is stopped (or has not loaded the file yet).
    link: Option<Link>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ListedNamespaces {
    users: Vec<ListedNamespace>,
    aliases: Vec<ListedNamespace>,
    rooms: Vec<ListedNamespace>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ListedNamespace {
    regex: String,
    exclusive: bool,
}

/// A file the homeserver does not load, and why.
#[derive(Debug, Serialize, Deserialize)]
struct Skipped {
    file: String,
    reason: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Listing {
    appservices: Vec<Listed>,
    skipped: Vec<Skipped>,
}

fn list(unit: &Unit, json: bool) -> Result<Exit, Failure> {
    let config = unit.config()?;
    let server_name = config.server_name.as_str();
    let entries = appservices::entries(unit, server_name);
    // Nothing to ask the server about when no file is there.
    let links = if entries.is_empty() {
        None
    } else {
        appservices::links(unit)?
    };
    let running = links.is_some();
    let links = links.unwrap_or_default();
    let listing = Listing {
        appservices: entries
            .iter()
            .filter_map(|entry| Some((entry, entry.loaded()?)))
            .map(|(entry, registration)| Listed {
                id: registration.id.clone(),
                file: entry.path.display().to_string(),
                url: registration.url.clone(),
                sender: registration.sender(server_name),
                namespaces: ListedNamespaces {
                    users: listed(&registration.namespaces.users),
                    aliases: listed(&registration.namespaces.aliases),
                    rooms: listed(&registration.namespaces.rooms),
                },
                rate_limited: registration.rate_limited,
                receive_ephemeral: registration.receive_ephemeral,
                protocols: registration.protocols.clone(),
                link: links
                    .iter()
                    .find(|link| link.id == registration.id)
                    .cloned(),
            })
            .collect(),
        skipped: skipped(&entries),
    };
    for skipped in &listing.skipped {
        eprintln!(
            "warning: {} is not used: {}. Fix it and add it again with `appliance appservice \
             add FILE --replace`, or remove the file.",
            skipped.file, skipped.reason
        );
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&listing)
                .map_err(|err| Failure::broke(format!("encoding JSON: {err}")))?
        );
    } else {
        print_list(&listing.appservices, running);
    }
    Ok(Exit::Success)
}

fn listed(namespaces: &[Namespace]) -> Vec<ListedNamespace> {
    namespaces
        .iter()
        .map(|ns| ListedNamespace {
            regex: ns.source.clone(),
            exclusive: ns.exclusive,
        })
        .collect()
}

fn skipped(entries: &[Entry]) -> Vec<Skipped> {
    entries
        .iter()
        .filter_map(|entry| {
            Some(Skipped {
                file: entry.path.display().to_string(),
                reason: entry.skipped.clone()?,
            })
        })
        .collect()
}

fn print_list(listed: &[Listed], running: bool) {
    if listed.is_empty() {
        println!("No appservices are registered (`appliance appservice add FILE` adds one).");
        return;
    }
    for service in listed {
        println!(
            "{}  {}",
            service.id,
            service.url.as_deref().unwrap_or("send-only (url: null)")
        );
        println!("  sender       {}", service.sender);
        for (kind, namespaces) in [
            ("users", &service.namespaces.users),
            ("aliases", &service.namespaces.aliases),
            ("rooms", &service.namespaces.rooms),
        ] {
            if !namespaces.is_empty() {
                println!(
                    "  {kind:<13}{}",
                    namespaces
                        .iter()
                        .map(|ns| if ns.exclusive {
                            format!("{} (exclusive)", ns.regex)
                        } else {
                            ns.regex.clone()
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        match (&service.link, running) {
            (Some(link), _) => {
                println!("  link         {}", link_line(link));
                if let Some(error) = &link.last_error {
                    println!("  last error   {error}");
                }
            }
            (None, true) => println!(
                "  link         not loaded by the homeserver (its log says why; `appliance \
                 appservice add FILE --replace` reloads)"
            ),
            (None, false) => println!("  link         unknown: the homeserver is stopped"),
        }
    }
}

/// `up, 3 queued, last delivery 2026-…`: one appservice's link in a line, shared in spirit with
/// `status`.
fn link_line(link: &Link) -> String {
    let mut line = format!(
        "{}, {} queued, last delivery {}",
        link.link,
        link.queue_depth,
        link.last_delivery_ms
            .map(format_time_ms)
            .unwrap_or_else(|| "never".to_owned())
    );
    if let Some(retry) = link.next_retry_ms.filter(|_| appservices::is_down(link)) {
        line.push_str(&format!(", next attempt {}", format_time_ms(retry)));
    }
    line
}

fn remove(unit: &Unit, id: &str, yes: bool) -> Result<Exit, Failure> {
    let config = unit.config()?;
    let id = id.trim();
    let own_file = file_name(id).ok();
    let files: Vec<_> = appservices::entries(unit, config.server_name.as_str())
        .into_iter()
        .filter(|entry| {
            entry
                .registration
                .as_ref()
                .is_some_and(|registration| registration.id == id)
                || entry
                    .path
                    .file_name()
                    .is_some_and(|name| own_file.as_deref() == name.to_str())
        })
        .map(|entry| entry.path)
        .collect();
    if files.is_empty() {
        return Err(not_registered(id));
    }
    if !yes
        && !Console::new().confirm(
            &format!(
                "Remove the appservice {id}? The homeserver stops sending it events and stops \
                 accepting its token."
            ),
            false,
            "--yes",
        )?
    {
        return Err(Failure::state("not removed"));
    }
    let dir = appservices::dir(unit);
    interrupt::uninterruptible(|| -> Result<(), Failure> {
        for path in &files {
            std::fs::remove_file(path).map_err(|err| Failure::io("cannot remove", path, err))?;
        }
        crate::unit::sync_dir(&dir)
    })?;
    println!(
        "Removed the appservice {id} ({}).",
        files
            .iter()
            .map(|path| path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("{}", reload(unit)?);
    Ok(Exit::Success)
}

fn ping(unit: &Unit, id: &str) -> Result<Exit, Failure> {
    let config = unit.config()?;
    let id = id.trim();
    if let ServerState::Stopped = unit.server_state()? {
        return Err(Failure::state(format!(
            "the homeserver is not running; start it (`{START_HINT}`) to ping an appservice"
        )));
    }
    let answer = AdminClient::new(unit.socket_path()).post_judged::<_, AppservicePinged>(
        &format!("/v1/appservices/{}/ping", homeserver::util::urlencode(id)),
        &serde_json::json!({}),
    )?;
    match answer {
        Ok(pinged) => {
            println!(
                "The appservice {id} answered the homeserver's ping in {} ms.",
                pinged.duration_ms
            );
            Ok(Exit::Success)
        }
        Err(error) => {
            let url = appservices::entries(unit, config.server_name.as_str())
                .iter()
                .filter_map(Entry::loaded)
                .find(|registration| registration.id == id)
                .and_then(|registration: &Registration| registration.url.clone());
            Err(ping_failed(id, url.as_deref(), error))
        }
    }
}

/// What a failed ping means for the admin, and its exit code: an unknown or send-only id is a
/// refused request (3); an appservice that does not answer properly needs attention (5).
fn ping_failed(id: &str, url: Option<&str>, error: ErrorAnswer) -> Failure {
    let at = url.map(|url| format!(" at {url}")).unwrap_or_default();
    let attention = |message: String| Failure::new(Exit::Attention, message);
    match error.errcode.as_str() {
        "M_NOT_FOUND" => not_registered(id),
        "M_URL_NOT_SET" => Failure::rejected(format!(
            "the appservice {id} is send-only (url: null): the homeserver never calls it, so \
             there is nothing to ping"
        )),
        "M_CONNECTION_FAILED" => attention(format!(
            "the homeserver cannot connect to the appservice {id}{at} ({}); check that the \
             bridge runs and listens there",
            error.message
        )),
        "M_CONNECTION_TIMEOUT" => attention(format!(
            "the appservice {id}{at} did not answer the ping in time ({})",
            error.message
        )),
        "M_BAD_STATUS" => attention(format!(
            "the appservice {id}{at} answered the ping with an error ({}); its log says why \
             (a wrong hs_token is the usual cause)",
            error.message
        )),
        _ if error.status >= 500 => Failure::broke(format!(
            "the homeserver failed ({}): {}; its log has the details (journalctl -u \
             homeserver)",
            error.status, error.message
        )),
        code => from_errcode(code, error.message),
    }
}

fn not_registered(id: &str) -> Failure {
    Failure::rejected(format!(
        "no appservice {id:?} is registered; `appliance appservice list` shows which are"
    ))
}

/// Makes a running homeserver re-read the registrations; says what happened.
fn reload(unit: &Unit) -> Result<String, Failure> {
    Ok(
        match unit.reload_running::<AppservicesReloaded>(
            "/v1/appservices/reload",
            "the registrations were",
        )? {
            Some(reloaded) => format!(
                "The homeserver reloaded its appservices: {} registered.",
                reloaded.appservices
            ),
            None => {
                "The homeserver is stopped; it loads the appservices when it starts.".to_owned()
            }
        },
    )
}

/// The message for a file that is not installed, naming the file and the field.
fn refused(file: &Path, refusal: Refusal) -> Failure {
    let file = file.display();
    match refusal {
        Refusal::Invalid(err) if err.field == "file" => {
            Failure::rejected(format!("{file}: {}. Nothing was written", err.reason))
        }
        Refusal::Invalid(err) => Failure::rejected(format!("{file}: {err}. Nothing was written")),
        Refusal::Exists { id, path } => Failure::rejected(format!(
            "{file}: id: the appservice {id:?} is already registered ({}). Nothing was \
             written; add --replace to replace it",
            path.display()
        )),
    }
}

/// Reads the registration file (`-` for stdin), at most [`MAX_INPUT`] bytes.
fn read_input(path: &Path) -> Result<String, Failure> {
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
    read.map_err(|err| Failure::io("cannot read the registration file", path, err))?;
    if text.len() as u64 > MAX_INPUT {
        return Err(Failure::rejected(format!(
            "{} is too large to be a registration file",
            path.display()
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_ping_is_attention_unless_the_id_is_wrong() {
        let answer = |status, errcode: &str| ErrorAnswer {
            status,
            errcode: errcode.to_owned(),
            message: "m".to_owned(),
        };
        let code = |status, errcode| ping_failed("irc", None, answer(status, errcode)).code;
        assert_eq!(code(404, "M_NOT_FOUND"), Exit::Rejected);
        assert_eq!(code(400, "M_URL_NOT_SET"), Exit::Rejected);
        assert_eq!(code(502, "M_BAD_STATUS"), Exit::Attention);
        assert_eq!(code(502, "M_CONNECTION_FAILED"), Exit::Attention);
        assert_eq!(code(504, "M_CONNECTION_TIMEOUT"), Exit::Attention);
        assert_eq!(code(500, "M_UNKNOWN"), Exit::Failure);
    }
}
