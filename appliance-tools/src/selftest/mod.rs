//! `appliance selftest`: an end-to-end check an installer can run at the console. Two
//! temporary devices exchange an end-to-end-encrypted message the way real clients do, and
//! each step is reported with its time.
//!
//! Device A belongs to a temporary account created on this unit through the admin socket. B is
//! a second temporary account here, or, with `--peer`, an existing test account on a peer unit
//! that the peer's admin provides, reached at that unit's client API, so the invite, the join,
//! the key queries, the to-device message and the room message all cross federation.
//!
//! The steps: create the accounts, log in both devices over the client API (plain HTTP to the
//! `[listen] client` address of this unit's config), publish signed device and one-time keys
//! (vodozemac Olm accounts), A creates an encrypted room and invites B, B joins, A queries and
//! claims B's keys and opens an Olm session, shares a Megolm room key by `/sendToDevice` and
//! sends a Megolm-encrypted message with a random nonce; B checks A's keys, decrypts the room
//! key and the message and compares it with what A sent. Every step has a deadline.
//!
//! Cleanup runs whatever happened: on a peer, B leaves the room and logs out (deleting the
//! temporary device); the temporary accounts here are deactivated through the admin socket,
//! which also makes them leave their rooms. Ctrl-C does the same before the process ends: the
//! accounts created so far are deactivated and B's device on a peer is logged out (see
//! `steps`), so an interrupted selftest leaves no usable temporary account behind.
//!
//! Unlike the other commands this one opens network connections (to this unit's client
//! listener and, with `--peer`, to the peer's): that is what it tests.

mod device;
mod matrix;
mod report;
mod steps;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use homeserver::admin::wire::PeerList;
use homeserver::util::random_string;

use crate::base::admin_client::AdminClient;
use crate::base::console::read_secret_file;
use crate::base::exit::{Exit, Failure};
use crate::cli::SelftestArgs;
use crate::unit::{START_HINT, ServerState, Unit};

use matrix::Api;
use report::{Report, StepRecord};
use steps::{Trip, clean_up, round_trip};

/// What the selftest runs against, validated before any step.
struct Plan {
    /// This unit's server name.
    server_name: String,
    /// This unit's client API.
    local: Api,
    /// This unit's admin socket.
    socket: PathBuf,
    /// The receiving side on a peer unit, with `--peer`.
    peer: Option<Peer>,
}

/// The peer's test account (`--peer …`).
struct Peer {
    /// The peer's server name.
    name: String,
    /// The test account's user ID.
    user_id: String,
    /// Its password.
    password: String,
    /// The peer's client API.
    api: Api,
}

/// The `--json` document.
#[derive(Serialize)]
struct Summary<'a> {
    /// Whether every step passed.
    passed: bool,
    /// This unit.
    server_name: &'a str,
    /// The peer the message went through, if any.
    peer: Option<&'a str>,
    /// The sending account (here).
    sender: Option<&'a str>,
    /// The receiving account (here, or on the peer).
    receiver: Option<&'a str>,
    /// Every step in order, cleanup included.
    steps: &'a [StepRecord],
    /// The first step that failed.
    failed_step: Option<&'a str>,
    /// Its error.
    error: Option<&'a str>,
    /// The temporary accounts that were deactivated.
    accounts_removed: &'a [String],
    /// The whole run, in milliseconds.
    total_ms: u64,
}

/// Runs `appliance selftest`.
pub fn run(unit: &Unit, args: &SelftestArgs) -> Result<Exit, Failure> {
    let plan = plan(unit, args)?;
    let mut report = Report::new(args.json, Duration::from_secs(args.step_timeout));
    report.say(&match &plan.peer {
        None => format!(
            "Selftest of {}: an encrypted message between two temporary devices on this unit \
             ({}).",
            plan.server_name,
            plan.local.base()
        ),
        Some(peer) => format!(
            "Selftest of {} through {}: an encrypted message from a temporary device here to a \
             temporary device of {} ({}).",
            plan.server_name,
            peer.name,
            peer.user_id,
            peer.api.base()
        ),
    });
    let mut trip = Trip::default();
    let body = format!("Outpost selftest {}", random_string(24));
    // A failed step is in the report; cleanup runs either way.
    let _ = round_trip(&plan, &mut trip, &mut report, &body);
    clean_up(&plan, &mut trip, &mut report);

    let failure = report.first_failure().cloned();
    let sender = trip.accounts.first().map(|(user, _)| user.as_str());
    let receiver = match &plan.peer {
        Some(peer) => Some(peer.user_id.as_str()),
        None => trip.accounts.get(1).map(|(user, _)| user.as_str()),
    };
    let total = report.elapsed();
    if args.json {
        let summary = Summary {
            passed: failure.is_none(),
            server_name: &plan.server_name,
            peer: plan.peer.as_ref().map(|peer| peer.name.as_str()),
            sender,
            receiver,
            steps: report.steps(),
            failed_step: failure.as_ref().map(|step| step.step),
            error: failure.as_ref().and_then(|step| step.error.as_deref()),
            accounts_removed: &trip.removed,
            total_ms: u64::try_from(total.as_millis()).unwrap_or(u64::MAX),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&summary)
                .map_err(|err| Failure::broke(format!("encoding JSON: {err}")))?
        );
    } else {
        print_verdict(&plan, &trip, failure.as_ref(), total);
    }
    Ok(if failure.is_none() {
        Exit::Success
    } else {
        Exit::Attention
    })
}

/// Checks the flags and the unit before anything is created.
fn plan(unit: &Unit, args: &SelftestArgs) -> Result<Plan, Failure> {
    let config = unit.config()?;
    let server_name = config.server_name.to_string();
    let peer = match &args.peer {
        None => None,
        Some(name) => Some(peer_plan(unit, name, args, &server_name)?),
    };
    if let ServerState::Stopped = unit.server_state()? {
        return Err(Failure::state(format!(
            "the homeserver is not running: the selftest talks to it. Start it (`{START_HINT}`) \
             and try again."
        )));
    }
    let socket = unit.socket_path();
    if let Some(peer) = &peer {
        let listed: PeerList = AdminClient::new(socket.clone()).get("/v1/peers")?;
        if !listed
            .peers
            .iter()
            .any(|card| card.server_name == peer.name)
        {
            return Err(Failure::rejected(format!(
                "{} is not on this unit's allow-list; `appliance peer list` shows the peers, \
                 `appliance peer import` adds one",
                peer.name
            )));
        }
    }
    Ok(Plan {
        server_name,
        local: if config.client_tls == homeserver::config::ClientTlsMode::Off {
            Api::new(local_base("http", config.client_listen))
        } else {
            Api::own_https(local_base("https", config.client_listen))
        },
        socket,
        peer,
    })
}

/// Validates `--peer NAME` and the flags that come with it.
fn peer_plan(unit: &Unit, name: &str, args: &SelftestArgs, own: &str) -> Result<Peer, Failure> {
    let (Some(user), Some(password_file), Some(url)) = (
        args.peer_user.as_deref(),
        args.peer_password_file.as_deref(),
        args.peer_client_url.as_deref(),
    ) else {
        return Err(Failure::usage(
            "--peer needs --peer-user, --peer-password-file and --peer-client-url",
        ));
    };
    if name == own {
        return Err(Failure::usage(format!(
            "--peer {name} is this unit; leave --peer out for a selftest on this unit alone"
        )));
    }
    let user_id = ruma::UserId::parse(user).map_err(|err| {
        Failure::usage(format!(
            "--peer-user {user:?} is not a user ID like @name:{name}: {err}"
        ))
    })?;
    if user_id.server_name().as_str() != name {
        return Err(Failure::usage(format!(
            "--peer-user {user_id} is not an account on {name}"
        )));
    }
    let password = read_secret_file(password_file)?;
    if password.is_empty() {
        return Err(Failure::usage(format!(
            "{} holds no password",
            password_file.display()
        )));
    }
    let base = client_url(url)?;
    let api = if base.starts_with("https://") {
        Api::https_trusting(base, &peer_ca(unit, name, args.peer_ca.as_deref())?)
            .map_err(Failure::usage)?
    } else {
        if args.peer_ca.is_some() {
            return Err(Failure::usage(
                "--peer-ca is for an https:// --peer-client-url; this one is plain http://",
            ));
        }
        Api::new(base)
    };
    Ok(Peer {
        name: name.to_owned(),
        user_id: user_id.to_string(),
        password,
        api,
    })
}

/// The CA (PEM) the peer's HTTPS client certificate must chain to: `--peer-ca`, else the unit
/// CA on the peer's card (which issues the client certificate of a unit in unit-CA mode).
fn peer_ca(unit: &Unit, name: &str, file: Option<&Path>) -> Result<String, Failure> {
    if let Some(file) = file {
        return std::fs::read_to_string(file).map_err(|err| Failure::io("cannot read", file, err));
    }
    let card = crate::unit::allowlist::current_card(unit, name).ok_or_else(|| {
        Failure::rejected(format!(
            "{name} is not on this unit's allow-list; `appliance peer list` shows the peers, \
             `appliance peer import` adds one"
        ))
    })?;
    card.tls.ca_pem.ok_or_else(|| {
        Failure::usage(format!(
            "the card of {name} pins a certificate key, not a CA, so it cannot vouch for the \
             peer's HTTPS certificate; give the CA that issued it with --peer-ca FILE"
        ))
    })
}

/// `http(s)://host:port` from `--peer-client-url`: the server's root.
fn client_url(text: &str) -> Result<String, Failure> {
    let bad = |why: &str| {
        Failure::usage(format!(
            "--peer-client-url {text:?}: {why}; give the peer's client API like \
             https://10.0.0.2 or http://10.0.0.2:8008"
        ))
    };
    let uri: ureq::http::Uri = text.parse().map_err(|_| bad("not a URL"))?;
    let scheme = match uri.scheme_str() {
        Some(scheme @ ("http" | "https")) => scheme,
        _ => return Err(bad("only http:// and https:// are supported")),
    };
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') || uri.query().is_some() || !matches!(uri.path(), "" | "/")
    {
        return Err(bad("only a host and port are expected"));
    }
    Ok(format!("{scheme}://{authority}"))
}

/// The URL of this unit's client listener; a wildcard address is reached on loopback.
fn local_base(scheme: &str, listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("{scheme}://{}", SocketAddr::new(ip, listen.port()))
}

/// The text verdict and what happened to the temporary accounts.
fn print_verdict(plan: &Plan, trip: &Trip, failure: Option<&StepRecord>, total: Duration) {
    if !trip.removed.is_empty() {
        println!(
            "Removed the temporary accounts (deactivated; they left their rooms): {}.",
            trip.removed.join(", ")
        );
    }
    for (user, _) in &trip.accounts {
        if !trip.removed.contains(user) {
            println!(
                "Could not remove the temporary account {user}: deactivate it with \
                 `appliance user deactivate {user} --yes`."
            );
        }
    }
    let seconds = total.as_secs_f64();
    match failure {
        None => println!(
            "PASSED in {seconds:.1} s: an encrypted message from A reached B{} and B decrypted \
             exactly what A sent.",
            match &plan.peer {
                Some(peer) => format!(" on {}", peer.name),
                None => String::new(),
            }
        ),
        Some(step) => println!(
            "FAILED in {seconds:.1} s at \"{}\": {}",
            step.step,
            step.error.as_deref().unwrap_or("no details")
        ),
    }
}
