//! The `homeserver` command line: parse, resolve the config, run; print one line and exit with
//! a documented code on failure.
//!
//! Exit codes: 0 clean stop; 1 runtime failure; 2 bad command line or config; 3 data directory,
//! database or key unusable; 4 cannot listen.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use homeserver::config::{Config, ConfigError};
use homeserver::{StartError, prepare, serve};

/// Outpost's Matrix homeserver.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Run from this TOML config file (see provisioning/homeserver.example.toml).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print this unit's signed peer card (JSON) for other units' allow-lists; its fingerprint
    /// goes to stderr. Needs --config. Generates the keys on first use.
    PeerCard {
        /// Write the card to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Run on an embedded default for trying Outpost out: open registration, local data dir.
    Dev {
        /// Where the database and signing key live.
        #[arg(long, value_name = "DIR", default_value = "outpost-dev")]
        data_dir: PathBuf,
        /// Client API listen address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8008")]
        listen: SocketAddr,
        /// The server name users' IDs end in.
        #[arg(long, value_name = "NAME", default_value = "localhost:8008")]
        server_name: String,
        /// Serve HTTPS with a certificate from a dev CA made in the data dir (its path is
        /// printed), so the TLS path can be tried locally.
        #[arg(long)]
        tls: bool,
        /// Install this application-service registration (a bridge's YAML file) into the data
        /// dir's appservices/ before starting, replacing an earlier copy with the same id;
        /// repeat for several. Checked as `appliance appservice add` checks it.
        #[arg(long = "appservice", value_name = "FILE")]
        appservices: Vec<PathBuf>,
    },
}

/// Documented process exit codes.
#[derive(Debug, Clone, Copy)]
enum Exit {
    Runtime = 1,
    Usage = 2,
    Storage = 3,
    Listen = 4,
}

/// Makes glibc serve large allocations (argon2id's 19 MiB per password hash) by mmap and
/// return them on free. By default glibc raises its mmap threshold after the first such free
/// and keeps the memory in per-thread arenas: a burst of logins raised peak RSS from 31 MiB to
/// over 200 MiB in the load benchmark.
fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; it is called once, before any other
    // thread exists, and no safe wrapper for it exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match try_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("homeserver: {message}");
            ExitCode::from(code as u8)
        }
    }
}

fn resolve(cli: &Cli) -> Result<Config, ConfigError> {
    match (&cli.config, &cli.command) {
        (Some(path), None) => Config::from_file(path),
        (
            None,
            Some(Command::Dev {
                data_dir,
                listen,
                server_name,
                tls,
                ..
            }),
        ) => Config::dev(
            Some(data_dir.clone()),
            Some(*listen),
            Some(server_name.clone()),
            *tls,
        ),
        (Some(path), Some(Command::PeerCard { .. })) => Config::from_file(path),
        (None, Some(Command::PeerCard { .. })) => Err(ConfigError::Invalid(
            "peer-card needs --config PATH".to_owned(),
        )),
        (Some(_), Some(_)) => Err(ConfigError::Invalid(
            "use either --config or `dev`, not both".to_owned(),
        )),
        (None, None) => Err(ConfigError::Invalid(
            "nothing to run: pass --config PATH, or `homeserver dev` to try it out".to_owned(),
        )),
    }
}

fn init_logging(level: &str) {
    use tracing_subscriber::prelude::*;
    // ruma-state-res logs every auth check at INFO; that is debug detail for us.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("ruma_state_res=warn,{level}"))
    });
    // systemd sets JOURNAL_STREAM when our stderr is the journal: log natively there.
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journald) = tracing_journald::layer()
    {
        tracing_subscriber::registry()
            .with(filter)
            .with(journald)
            .init();
        return;
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
}

fn try_main(cli: Cli) -> Result<(), (Exit, String)> {
    let config = resolve(&cli).map_err(|err| (Exit::Usage, err.to_string()))?;
    init_logging(&config.log.level);
    if let Some(Command::Dev { appservices, .. }) = &cli.command
        && !appservices.is_empty()
    {
        install_appservices(&config, appservices)?;
    }
    if let Some(Command::PeerCard { out }) = &cli.command {
        let card =
            homeserver::peer_card(&config).map_err(|err| (Exit::Storage, err.to_string()))?;
        let text = serde_json::to_string_pretty(&card)
            .map_err(|err| (Exit::Runtime, err.to_string()))?
            + "\n";
        match out {
            Some(path) => std::fs::write(path, text)
                .map_err(|err| (Exit::Storage, format!("{}: {err}", path.display())))?,
            None => print!("{text}"),
        }
        eprintln!(
            "fingerprint of {}: {}",
            card.server_name,
            card.fingerprint()
        );
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Blocking work is bounded (read pool, password hashing); cap threads to bound memory.
        .max_blocking_threads(16)
        .build()
        .map_err(|err| {
            (
                Exit::Runtime,
                format!("cannot start the async runtime: {err}"),
            )
        })?;
    runtime.block_on(async move {
        let dev = config.dev_mode;
        let server_name = config.server_name.clone();
        let dev_ca = (config.client_tls != homeserver::config::ClientTlsMode::Off).then(|| {
            config
                .data_dir
                .join(homeserver::transport::tls::TLS_DIR)
                .join(homeserver::transport::tls::CA_CERT)
        });
        let prepared = prepare(config).await.map_err(|err| {
            let code = match err {
                StartError::Listen { .. } => Exit::Listen,
                _ => Exit::Storage,
            };
            (code, err.to_string())
        })?;
        let addr = prepared
            .local_addr()
            .map_err(|err| (Exit::Listen, err.to_string()))?;
        tracing::info!(%addr, server_name = %server_name, "listening");
        if dev {
            let url = match &dev_ca {
                Some(_) => format!("https://{addr}"),
                None => format!("http://{addr}"),
            };
            eprintln!(
                "Outpost homeserver ({server_name}) is up. Point a Matrix client (e.g. Element) at \
                 {url} and register an account; registration is open in dev mode."
            );
            if let Some(ca) = &dev_ca {
                eprintln!(
                    "HTTPS uses a certificate from the dev CA {}: make your client trust that \
                     file (e.g. curl --cacert).",
                    ca.display()
                );
            }
        }
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        serve(prepared, shutdown_signal())
            .await
            .map_err(|err| (Exit::Runtime, err.to_string()))
    })
}

/// `dev --appservice FILE…`: checks every file (as `appliance appservice add` does, each
/// replacing an installed registration with its id) before writing any, then writes them into
/// the dev data dir's appservices/ for the server to load as it starts.
fn install_appservices(config: &Config, files: &[PathBuf]) -> Result<(), (Exit, String)> {
    use homeserver::service::appservice::{APPSERVICES_DIR, files as folder};
    let dir = config.data_dir.join(APPSERVICES_DIR);
    let server_name = config.server_name.as_str();
    let existing = folder::scan(&dir, server_name);
    let mut checked: Vec<(folder::Checked, String)> = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|err| {
            (
                Exit::Usage,
                format!("--appservice {}: {err}", file.display()),
            )
        })?;
        let pending: Vec<_> = checked.iter().map(|(c, _)| &c.registration).collect();
        let new = folder::check_new(&dir, &existing, &pending, &text, server_name, true).map_err(
            |refusal| {
                let reason = match refusal {
                    folder::Refusal::Invalid(err) if err.field == "file" => err.reason,
                    folder::Refusal::Invalid(err) => err.to_string(),
                    folder::Refusal::Exists { id, .. } => {
                        format!("id: {id:?} is already installed")
                    }
                };
                (
                    Exit::Usage,
                    format!(
                        "--appservice {}: {reason}; nothing was installed",
                        file.display()
                    ),
                )
            },
        )?;
        checked.push((new, text));
    }
    let storage = |path: &std::path::Path, err: std::io::Error| {
        (Exit::Storage, format!("{}: {err}", path.display()))
    };
    std::fs::create_dir_all(&dir).map_err(|err| storage(&dir, err))?;
    for (new, text) in &checked {
        folder::write_private(&new.path, text.as_bytes()).map_err(|err| storage(&new.path, err))?;
        for old in &new.replaces {
            std::fs::remove_file(old).map_err(|err| storage(old, err))?;
        }
        eprintln!(
            "Installed the appservice {} ({}) as {}.",
            new.registration.id,
            new.registration.url.as_deref().unwrap_or("send-only"),
            new.path.display()
        );
    }
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::error!(error = %err, "cannot watch SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
