//! `appliance status`: is the unit healthy, and if not, what should the admin do.
//!
//! With the homeserver running the facts come from its admin socket; with it stopped this tool
//! gathers what it can from the files (the database read-only, the disk, the keys) and reports
//! the stopped server as the first thing needing attention. Each problem comes with what to do.

use serde::Serialize;

use homeserver::admin::wire::{DatabaseHealth, DiskSpace, ServerStatus};
use homeserver::matrix::keys::SigningKey;
use homeserver::service::admin as service;

use crate::admin_client::AdminClient;
use crate::cli::StatusArgs;
use crate::exit::{Exit, Failure};
use crate::progress::human_bytes;
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
    /// What needs attention, each with what to do.
    problems: Vec<String>,
}

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
    for name in [crate::tls::CA_CERT, crate::tls::CERT, crate::tls::KEY] {
        let path = unit.path(crate::unit::TLS_DIR).join(name);
        if !path.is_file() {
            problems.push(format!("the TLS file {} is missing", path.display()));
        }
    }
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
    if let Some(database) = &report.database
        && database.quick_check != "ok"
    {
        problems.push(format!(
            "the database failed its integrity check ({}): restore the latest backup with \
             `appliance restore FILE`",
            database.quick_check.lines().next().unwrap_or_default()
        ));
    }
    if let Some(disk) = &report.disk
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
        row(
            "Disk",
            format!(
                "{} free of {}",
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
    if report.healthy {
        println!("\nAll good.");
    } else {
        println!("\nNeeds attention:");
        for problem in &report.problems {
            println!("  - {problem}");
        }
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

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM UTC`.
pub fn format_time_ms(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(ms / 1000) {
        Ok(at) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute()
        ),
        Err(_) => ms.to_string(),
    }
}
