//! `appliance status`: is the unit healthy, and if not, what should the admin do.
//!
//! With the homeserver running the facts come from its admin socket; with it stopped this tool
//! gathers what it can from the files (the database read-only, the disk, the keys) and reports
//! the stopped server as the first thing needing attention. Each problem comes with what to do.

use serde::Serialize;

use homeserver::admin::wire::{DatabaseHealth, DiskSpace, PeerInfo, ServerStatus};
use homeserver::matrix::keys::SigningKey;
use homeserver::service::admin as service;

use crate::base::admin_client::AdminClient;
use crate::base::console::format_time_ms;
use crate::base::exit::{Exit, Failure};
use crate::base::progress::human_bytes;
use crate::cli::StatusArgs;
use crate::unit::appservices::{self, Link};
use crate::unit::{START_HINT, ServerState, Unit};

/// The whole report, as printed with `--json`.
#[derive(Debug, Serialize)]
struct Report {
    /// True when nothing needs attention.
    healthy: bool,
    /// The unit's data directory.
    data_dir: String,
    /// The server name, if the unit is set up.
    server_name: Option<String>,
    /// Whether the homeserver answers on its admin socket.
    running: bool,
    /// What the running homeserver reports about itself.
    server: Option<ServerStatus>,
    /// Database health (from the server, or read directly when it is stopped).
    database: Option<DatabaseHealth>,
    /// Space on the data partition.
    disk: Option<DiskSpace>,
    /// The signing key ID found in the key file.
    signing_key_id: Option<String>,
    /// Federation addresses from the provisioning file.
    federation_listen: Option<String>,
    /// Where peers reach this unit.
    federation_endpoints: Vec<String>,
    /// When the TLS certificates expire.
    certificates: Vec<CertificateExpiry>,
    /// The client port: plain HTTP or HTTPS, and the certificate users' clients see.
    client_tls: Option<ClientTlsReport>,
    /// The allow-listed peers and the link to each.
    peers: Vec<PeerInfo>,
    /// The registered appservices and the link to each.
    appservices: Vec<AppserviceStatus>,
    /// What needs attention, each with what to do.
    problems: Vec<String>,
}

/// One registered appservice: its registration file, and its link when the homeserver runs.
#[derive(Debug, Serialize)]
struct AppserviceStatus {
    /// The appservice's id.
    id: String,
    /// Where the homeserver pushes to; `None` for a send-only appservice.
    url: Option<String>,
    /// The link as the running homeserver reports it; `None` when it is stopped or has not
    /// loaded the file.
    link: Option<Link>,
}

/// When one of the unit's certificates stops being valid.
#[derive(Debug, Serialize)]
struct CertificateExpiry {
    /// `ca.pem` (the unit CA, pinned by peers) or `cert.pem` (the federation certificate).
    file: String,
    /// Its `notAfter`, in ms since the epoch.
    not_after_ts: i64,
}

/// The client port's TLS, from the config and the certificate file it serves.
#[derive(Debug, Serialize)]
struct ClientTlsReport {
    /// `listen.tls`: `unit-ca`, `imported` or `off`.
    mode: String,
    /// The client listen address.
    listen: String,
    /// The URL users' clients are told (`listen.public_base_url`).
    public_base_url: Option<String>,
    /// The names users type (`listen.public_names`, resolved).
    public_names: Vec<String>,
    /// The certificate's DNS names and IP addresses (none with TLS off or no file yet).
    names: Vec<String>,
    /// Who issued the certificate.
    issuer: Option<String>,
    /// Its `notAfter`, in ms since the epoch.
    not_after_ts: Option<i64>,
    /// Whole days until it expires.
    days_left: Option<i64>,
    /// Plain HTTP off loopback, accepted by `insecure_plain_http = true`.
    insecure_plain_http: bool,
}

/// Warn this long before the federation certificate expires (`appliance tls renew`).
const CERT_WARNING_DAYS: i64 = 30;
/// Warn this long before the unit CA expires: replacing it means new cards for every peer.
const CA_WARNING_DAYS: i64 = 180;

/// Runs `appliance status`.
pub fn run(unit: &Unit, args: &StatusArgs) -> Result<Exit, Failure> {
    let report = gather(unit)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report)
                .map_err(|err| Failure::broke(format!("encoding JSON: {err}")))?
        );
    } else {
        print_text(&report);
    }
    Ok(if report.healthy {
        Exit::Success
    } else {
        Exit::Attention
    })
}

fn gather(unit: &Unit) -> Result<Report, Failure> {
    let mut report = Report {
        healthy: false,
        data_dir: unit.dir().display().to_string(),
        server_name: None,
        running: false,
        server: None,
        database: None,
        disk: None,
        signing_key_id: None,
        federation_listen: None,
        federation_endpoints: Vec::new(),
        certificates: Vec::new(),
        client_tls: None,
        peers: Vec::new(),
        appservices: Vec::new(),
        problems: Vec::new(),
    };
    if unit.require_set_up().is_err() {
        report.problems.push(format!(
            "no unit is set up in {}: run `appliance setup`",
            unit.dir().display()
        ));
        return Ok(report);
    }
    let problems = &mut report.problems;
    let mut config_loaded = None;
    match unit.config() {
        Ok(config) => {
            report.server_name = Some(config.server_name.to_string());
            if config.data_dir.canonicalize().ok() != unit.dir().canonicalize().ok() {
                problems.push(format!(
                    "the config's data_dir ({}) is not this directory; the homeserver would use \
                     other data",
                    config.data_dir.display()
                ));
            }
            config_loaded = Some(config);
        }
        Err(err) => problems.push(format!("the homeserver config is not usable: {err}")),
    }
    match unit.provisioning() {
        Ok(Some(file)) => {
            report.federation_listen = Some(file.network.federation_listen);
            report.federation_endpoints = file.network.federation_endpoints;
        }
        Ok(None) => problems.push("provisioning.json is missing".to_owned()),
        Err(err) => problems.push(err.message),
    }
    match std::fs::read_to_string(unit.key_path()) {
        Ok(text) => match SigningKey::parse(&text) {
            Ok(key) => report.signing_key_id = Some(key.key_id()),
            Err(err) => problems.push(format!("the signing key is unusable: {err}")),
        },
        Err(err) => problems.push(format!(
            "cannot read the signing key {}: {err}",
            unit.key_path().display()
        )),
    }
    for name in [crate::unit::CA_CERT, crate::unit::CERT, crate::unit::KEY] {
        let path = unit.path(crate::unit::TLS_DIR).join(name);
        if !path.is_file() {
            problems.push(format!("the TLS file {} is missing", path.display()));
        }
    }
    report.certificates = certificate_expiry(unit, problems);
    let running = matches!(unit.server_state()?, ServerState::Running);
    let client = config_loaded
        .as_ref()
        .map(|config| client_tls(unit, config, running, problems));
    match unit.server_state()? {
        ServerState::Running => {
            report.running = true;
            let status: ServerStatus = AdminClient::new(unit.socket_path()).get("/v1/status")?;
            if !status.ready {
                problems.push("the homeserver is shutting down".to_owned());
            }
            if report.signing_key_id.as_deref() != Some(status.signing_key_id.as_str()) {
                problems.push(format!(
                    "the homeserver signs with {} but the key file holds another key; restart \
                     it to load the key file",
                    status.signing_key_id
                ));
            }
            report.database = Some(status.database.clone());
            report.disk = Some(status.disk.clone());
            report.server = Some(status);
        }
        ServerState::Stopped => {
            problems.push(format!(
                "the homeserver is not running: start it with `{START_HINT}`"
            ));
            if unit.db_path().is_file() {
                match service::database_health(&unit.db_path()) {
                    Ok(health) => report.database = Some(health),
                    Err(err) => problems.push(format!("cannot read the database: {err}")),
                }
            } else {
                problems.push(format!(
                    "the database {} is missing",
                    unit.db_path().display()
                ));
            }
            match service::disk_space(unit.dir()) {
                Ok(disk) => report.disk = Some(disk),
                Err(err) => problems.push(format!("cannot measure the disk: {err}")),
            }
        }
    }
    if let Some(server_name) = report.server_name.clone() {
        match crate::unit::allowlist::peer_infos(unit, &server_name) {
            Ok(peers) => report.peers = peers,
            Err(err) => problems.push(format!("cannot list the peers: {err}")),
        }
        for (path, reason) in crate::unit::allowlist::unusable_files(unit, &server_name) {
            problems.push(format!(
                "the peer card {} is not used: {reason}; re-import the card or remove the file",
                path.display()
            ));
        }
    }
    if let Some(server_name) = report.server_name.clone() {
        appservice_status(unit, &server_name, &mut report);
    }
    report.client_tls = client;
    let problems = &mut report.problems;
    for peer in &report.peers {
        let link = &peer.link;
        if link.consecutive_failures > 0 && link.queue_depth > 0 {
            problems.push(format!(
                "{} has not been reached since {}, with {} item{} queued for it (last error: \
                 {}); check the link and the peer",
                peer.server_name,
                link.last_success_ts
                    .map(format_time_ms)
                    .unwrap_or_else(|| "it was added".to_owned()),
                link.queue_depth,
                if link.queue_depth == 1 { "" } else { "s" },
                link.last_error.as_deref().unwrap_or("none recorded")
            ));
        }
    }
    if let Some(database) = &report.database
        && database.quick_check != "ok"
    {
        problems.push(format!(
            "the database failed its integrity check ({}): restore the latest backup with \
             `appliance restore FILE`",
            database.quick_check.lines().next().unwrap_or_default()
        ));
    }
    if let Some(space) = report.server.as_ref().and_then(|s| s.space.as_ref())
        && space.read_only
    {
        problems.push(format!(
            "disk nearly full: {} free, under the {} watermark ([storage] min_free_bytes), so \
             the homeserver refuses writes (reads and sync still work); free space on the data \
             partition and writes resume by themselves",
            human_bytes(space.free_bytes),
            human_bytes(space.min_free_bytes)
        ));
    } else if let Some(disk) = &report.disk
        && disk.is_low()
    {
        problems.push(format!(
            "the data partition is nearly full ({} free): take a backup and free space",
            human_bytes(disk.free_bytes)
        ));
    }
    report.healthy = report.problems.is_empty();
    Ok(report)
}

fn print_text(report: &Report) {
    let row = |label: &str, value: String| println!("{label:<13}{value}");
    row(
        "Unit",
        report
            .server_name
            .clone()
            .unwrap_or_else(|| "(not set up)".to_owned()),
    );
    row("Data", report.data_dir.clone());
    match &report.server {
        Some(server) => row(
            "Homeserver",
            format!(
                "running, {} (version {}, up {})",
                if server.ready {
                    "ready"
                } else {
                    "shutting down"
                },
                server.version,
                format_duration(server.uptime_secs)
            ),
        ),
        None => row("Homeserver", "not running".to_owned()),
    }
    if let Some(db) = &report.database {
        row(
            "Database",
            format!(
                "integrity {}, {} (+ {} WAL), schema {}, {} users, {} rooms",
                if db.quick_check == "ok" {
                    "ok"
                } else {
                    "DAMAGED"
                },
                human_bytes(db.size_bytes),
                human_bytes(db.wal_bytes),
                db.schema_version,
                db.users,
                db.rooms
            ),
        );
    }
    if let Some(disk) = &report.disk {
        let refusing = report
            .server
            .as_ref()
            .and_then(|server| server.space.as_ref())
            .filter(|space| space.read_only)
            .map(|space| {
                format!(
                    " - disk nearly full: under the {} watermark, writes refused",
                    human_bytes(space.min_free_bytes)
                )
            })
            .unwrap_or_default();
        row(
            "Disk",
            format!(
                "{} free of {}{refusing}",
                human_bytes(disk.free_bytes),
                human_bytes(disk.total_bytes)
            ),
        );
    }
    if let Some(key) = &report.signing_key_id {
        row("Signing key", key.clone());
    }
    if let Some(listen) = &report.federation_listen {
        row(
            "Federation",
            format!(
                "listens on {listen}, peers reach it at {}",
                report.federation_endpoints.join(", ")
            ),
        );
    }
    if let Some(tls) = &report.client_tls {
        row("Clients", client_tls_line(tls));
    }
    for cert in &report.certificates {
        let label = if cert.file == crate::unit::CA_CERT {
            "Unit CA"
        } else {
            "Certificate"
        };
        row(
            label,
            format!("valid until {}", format_time_ms(cert.not_after_ts)),
        );
    }
    if report.server_name.is_some() {
        if report.peers.is_empty() {
            row(
                "Peers",
                "none (`appliance peer import FILE` adds one)".to_owned(),
            );
        }
        for peer in &report.peers {
            let link = &peer.link;
            row(
                "Peer",
                format!(
                    "{}: last delivery {}, {} queued{}",
                    peer.server_name,
                    link.last_success_ts
                        .map(format_time_ms)
                        .unwrap_or_else(|| "never".to_owned()),
                    link.queue_depth,
                    if link.consecutive_failures > 0 {
                        format!(", {} failed attempt(s) in a row", link.consecutive_failures)
                    } else {
                        String::new()
                    }
                ),
            );
        }
    }
    for service in &report.appservices {
        row("Appservice", appservice_line(service, report.running));
    }
    if report.healthy {
        println!("\nAll good.");
    } else {
        println!("\nNeeds attention:");
        for problem in &report.problems {
            println!("  - {problem}");
        }
    }
}

/// The registered appservices with their links, noting as problems a link that is down and a
/// registration file the homeserver does not load.
fn appservice_status(unit: &Unit, server_name: &str, report: &mut Report) {
    let entries = appservices::entries(unit, server_name);
    if entries.is_empty() {
        return;
    }
    let links = match appservices::links(unit) {
        Ok(links) => links.unwrap_or_default(),
        Err(err) => {
            report
                .problems
                .push(format!("cannot read the appservices' links: {err}"));
            Vec::new()
        }
    };
    for entry in entries {
        if let Some(reason) = &entry.skipped {
            report.problems.push(format!(
                "the appservice file {} is not used: {reason}; fix it and add it again with \
                 `appliance appservice add FILE --replace`, or remove the file",
                entry.path.display()
            ));
        }
        let Some(registration) = entry.loaded() else {
            continue;
        };
        let link = links
            .iter()
            .find(|link| link.id == registration.id)
            .cloned();
        if let Some(link) = link.as_ref().filter(|link| appservices::is_down(link)) {
            report.problems.push(format!(
                "the appservice {} is down: {} item{} queued, last delivery {}, last error: {}; \
                 check that the bridge runs (`appliance appservice ping {}`)",
                link.id,
                link.queue_depth,
                if link.queue_depth == 1 { "" } else { "s" },
                link.last_delivery_ms
                    .map(format_time_ms)
                    .unwrap_or_else(|| "never".to_owned()),
                link.last_error.as_deref().unwrap_or("none recorded"),
                link.id
            ));
        }
        report.appservices.push(AppserviceStatus {
            id: registration.id.clone(),
            url: registration.url.clone(),
            link,
        });
    }
}

/// `irc: up, 0 queued, last delivery …`: one appservice in a status line.
fn appservice_line(service: &AppserviceStatus, running: bool) -> String {
    match &service.link {
        Some(link) => format!(
            "{}: {}, {} queued, last delivery {}{}",
            service.id,
            if appservices::is_down(link) {
                "DOWN"
            } else {
                &link.link
            },
            link.queue_depth,
            link.last_delivery_ms
                .map(format_time_ms)
                .unwrap_or_else(|| "never".to_owned()),
            link.next_retry_ms
                .filter(|_| appservices::is_down(link))
                .map(|at| format!(", next attempt {}", format_time_ms(at)))
                .unwrap_or_default()
        ),
        None if running => format!("{}: not loaded by the homeserver", service.id),
        None => format!(
            "{}: {}, link unknown while the homeserver is stopped",
            service.id,
            service.url.as_deref().unwrap_or("send-only")
        ),
    }
}

/// Reads the expiry of the unit CA and the federation certificate, noting those that expire
/// soon (or cannot be read) as problems.
fn certificate_expiry(unit: &Unit, problems: &mut Vec<String>) -> Vec<CertificateExpiry> {
    let now = time::OffsetDateTime::now_utc();
    let mut found = Vec::new();
    for (name, warn_days, what, remedy) in [
        (
            crate::unit::CA_CERT,
            CA_WARNING_DAYS,
            "the unit CA",
            "a new CA means giving every peer a new card",
        ),
        (
            crate::unit::CERT,
            CERT_WARNING_DAYS,
            "the federation certificate",
            "renew it with `appliance tls renew` (homeserver stopped)",
        ),
    ] {
        let path = unit.tls_dir().join(name);
        let Ok(pem) = std::fs::read_to_string(&path) else {
            continue; // Reported as missing above.
        };
        match homeserver::transport::tls::pem_not_after(&pem) {
            Ok(not_after) => {
                let at = format_time_ms(not_after.unix_timestamp().saturating_mul(1000));
                if not_after <= now {
                    problems.push(format!(
                        "{what} expired on {at}: peers refuse this unit; {remedy}"
                    ));
                } else if not_after - now < time::Duration::days(warn_days) {
                    problems.push(format!("{what} expires on {at}; {remedy}"));
                }
                found.push(CertificateExpiry {
                    file: name.to_owned(),
                    not_after_ts: not_after.unix_timestamp().saturating_mul(1000),
                });
            }
            Err(err) => problems.push(format!("cannot read {}: {err}", path.display())),
        }
    }
    found
}

/// The client port's TLS state, noting what needs attention: plain HTTP off loopback, a
/// certificate that is missing, does not cover the public names, or expires within
/// [`CERT_WARNING_DAYS`].
fn client_tls(
    unit: &Unit,
    config: &homeserver::config::Config,
    running: bool,
    problems: &mut Vec<String>,
) -> ClientTlsReport {
    use homeserver::config::ClientTlsMode;
    use homeserver::transport::client_cert;
    let mut report = ClientTlsReport {
        mode: config.client_tls.as_str().to_owned(),
        listen: config.client_listen.to_string(),
        public_base_url: config.public_base_url.clone(),
        public_names: config.public_names.clone(),
        names: Vec::new(),
        issuer: None,
        not_after_ts: None,
        days_left: None,
        insecure_plain_http: false,
    };
    let Some(dir) = homeserver::transport::client_tls::cert_dir(unit.dir(), config.client_tls)
    else {
        if !config.client_listen.ip().is_loopback() {
            report.insecure_plain_http = true;
            problems.push(format!(
                "the client port {} serves plain HTTP (insecure_plain_http = true): passwords, \
                 access tokens and messages cross the network in clear; set listen.tls = \
                 \"unit-ca\" and listen.public_names in the config (or run `appliance setup`)",
                config.client_listen
            ));
        }
        return report;
    };
    let path = dir.join(homeserver::transport::client_tls::CERT);
    let imported = config.client_tls == ClientTlsMode::Imported;
    let remedy = if imported {
        "import a new one with `appliance tls client import CERT KEY [CHAIN]`"
    } else {
        "the homeserver issues it from the unit CA at start and renews it daily; restart it \
         and check its log (journalctl -u homeserver)"
    };
    let pem = match std::fs::read_to_string(&path) {
        Ok(pem) => pem,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            // A stopped unit-CA unit gets its certificate at the next start.
            if imported || running {
                problems.push(format!(
                    "the client certificate {} is missing: {remedy}",
                    path.display()
                ));
            }
            return report;
        }
        Err(err) => {
            problems.push(format!("cannot read {}: {err}", path.display()));
            return report;
        }
    };
    let info = match client_cert::cert_info(&pem) {
        Ok(info) => info,
        Err(err) => {
            problems.push(format!("{}: {err}; {remedy}", path.display()));
            return report;
        }
    };
    let now = time::OffsetDateTime::now_utc();
    let days = info.days_left(now);
    let at = format_time_ms(info.not_after.unix_timestamp().saturating_mul(1000));
    if info.not_after <= now {
        problems.push(format!(
            "the client certificate expired on {at}: users' clients refuse to connect; {remedy}"
        ));
    } else if days < CERT_WARNING_DAYS {
        problems.push(format!(
            "the client certificate expires on {at} (in {days} day{}); {remedy}",
            if days == 1 { "" } else { "s" }
        ));
    }
    let wanted: Vec<client_cert::PublicName> = config
        .public_names
        .iter()
        .filter_map(|name| client_cert::parse_public_name(name).ok())
        .collect();
    let missing: Vec<String> = info
        .uncovered(&wanted)
        .into_iter()
        .map(ToString::to_string)
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "the client certificate does not cover {} (listen.public_names): users typing it \
             get a certificate warning; {remedy}",
            missing.join(", ")
        ));
    }
    report.names = info.names();
    report.issuer = Some(info.issuer.clone());
    report.not_after_ts = Some(info.not_after.unix_timestamp().saturating_mul(1000));
    report.days_left = Some(days);
    report
}

/// One line for the client port: how it is served and what its certificate says.
fn client_tls_line(tls: &ClientTlsReport) -> String {
    let url = tls.public_base_url.as_deref().unwrap_or("no public URL");
    if tls.mode == "off" {
        return format!(
            "{url}, plain HTTP on {}{}",
            tls.listen,
            if tls.insecure_plain_http {
                " - INSECURE: not encrypted"
            } else {
                ""
            }
        );
    }
    let source = if tls.mode == "imported" {
        "imported certificate"
    } else {
        "unit CA certificate"
    };
    match (&tls.issuer, tls.not_after_ts, tls.days_left) {
        (Some(issuer), Some(not_after), Some(days)) => format!(
            "{url}, HTTPS on {} with the {source} for {}, issued by {issuer}, valid until {} \
             ({days} days)",
            tls.listen,
            tls.names.join(", "),
            format_time_ms(not_after)
        ),
        _ => format!(
            "{url}, HTTPS on {} with the {source} (not issued yet)",
            tls.listen
        ),
    }
}

/// `3725` → `1h 2m`.
fn format_duration(secs: u64) -> String {
    let (days, hours, minutes) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    match (days, hours) {
        (0, 0) => format!("{minutes}m {}s", secs % 60),
        (0, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}
