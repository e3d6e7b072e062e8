//! Outpost's Matrix homeserver: a SQLite-backed server for closed federations of appliance units.
//!
//! Layers, each depending only on the ones below it:
//! [`api`] (HTTP, wire formats) → [`service`] (behaviour) → [`store`] (SQLite) and
//! [`matrix`] (the Matrix rules, no I/O). [`run`] wires them together and owns the shutdown
//! protocol; `main.rs` owns the command line.

pub mod admin;
pub mod api;
pub mod clock;
pub mod config;
pub mod error;
pub mod matrix;
pub mod service;
pub mod store;
pub mod transport;
pub mod util;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::matrix::keys::SigningKey;
use crate::service::{Server, Signer};
use crate::store::{CheckpointMode, Store};

/// The signing key file inside the data dir.
pub const SIGNING_KEY_FILE: &str = "signing.key";

/// How long in-flight requests get to finish after SIGTERM before we stop anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the server could not start; each maps to a distinct exit code in `main`.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory cannot be created or written.
    #[error("data directory {path} is not usable: {reason}")]
    DataDir {
        /// The directory.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The database could not be opened, checked or migrated.
    #[error(transparent)]
    Store(#[from] store::OpenError),
    /// The signing key file is unreadable or malformed.
    #[error("signing key {path}: {reason}")]
    Key {
        /// The key file.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The client listener's certificate cannot be issued, read or used.
    #[error("client TLS certificate: {reason}")]
    ClientTls {
        /// What failed, naming the file.
        reason: String,
    },
    /// The listen address is taken or not ours.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Makes sure the data dir exists and is writable.
fn prepare_data_dir(dir: &Path) -> Result<(), StartError> {
    let fail = |reason: String| StartError::DataDir {
        path: dir.display().to_string(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|err| fail(err.to_string()))?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"").map_err(|err| fail(format!("not writable: {err}")))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Loads the signing key, generating and saving one (mode 0600) on first start.
fn load_or_create_key(dir: &Path) -> Result<SigningKey, StartError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(SIGNING_KEY_FILE);
    let fail = |reason: String| StartError::Key {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => SigningKey::parse(&text).map_err(|err| fail(err.to_string())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::generate();
            let tmp = dir.join(format!("{SIGNING_KEY_FILE}.tmp"));
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|err| fail(err.to_string()))?;
            file.write_all(key.serialize().as_bytes())
                .map_err(|err| fail(err.to_string()))?;
            file.sync_all().map_err(|err| fail(err.to_string()))?;
            std::fs::rename(&tmp, &path).map_err(|err| fail(err.to_string()))?;
            tracing::info!(key_id = %key.key_id(), "generated a new signing key");
            Ok(key)
        }
        Err(err) => Err(fail(err.to_string())),
    }
}

/// A server that is ready to serve: storage open, key loaded, port bound.
pub struct Prepared {
    server: Arc<Server>,
    connections: Arc<api::conn::Connections>,
    listener: TcpListener,
    federation_listener: Option<(TcpListener, Arc<rustls::ServerConfig>)>,
    ca_http_listener: Option<(TcpListener, Arc<api::ca_http::CaPage>)>,
    shutdown_tx: watch::Sender<bool>,
}

impl Prepared {
    /// The bound address (useful when listening on port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Opens everything the server needs; fails fast with a precise reason.
pub async fn prepare(config: Config) -> Result<Prepared, StartError> {
    let fd_limit = raise_fd_limit();
    let connections = api::conn::Connections::new(&config.connections, fd_limit);
    prepare_data_dir(&config.data_dir)?;
    let store = Store::open_with(
        &config.data_dir,
        config.storage.read_connections,
        crate::store::SpacePolicy::from_config(&config),
    )?;
    let key = load_or_create_key(&config.data_dir)?;
    for token in config.registration.tokens.clone() {
        // Not refused below the free-space watermark: a unit on a nearly full disk must still
        // start (read-only), and the row exists already after the first start.
        store
            .write_bookkeeping(move |tx| store::accounts::ensure_registration_token(tx, &token))
            .await
            .map_err(|err| StartError::DataDir {
                path: config.data_dir.display().to_string(),
                reason: err.to_string(),
            })?;
    }
    let tls =
        transport::tls::TlsIdentity::load_or_create(&config.data_dir, config.server_name.as_str())
            .map_err(|err| StartError::Key {
                path: config
                    .data_dir
                    .join(transport::tls::TLS_DIR)
                    .display()
                    .to_string(),
                reason: err.to_string(),
            })?;
    let client_tls =
        transport::client_tls::ClientTls::start(&config).map_err(|err| StartError::ClientTls {
            reason: err.to_string(),
        })?;
    let peers = Arc::new(
        transport::peers::Allowlist::load(
            config.data_dir.join(transport::peers::PEERS_DIR),
            config.server_name.as_str(),
        )
        .map_err(|err| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            reason: err.to_string(),
        })?,
    );
    let appservices = Arc::new(
        service::appservice::Registry::load(
            config.data_dir.join(service::appservice::APPSERVICES_DIR),
            config.server_name.as_str(),
        )
        .map_err(|err| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            reason: err.to_string(),
        })?,
    );
    let federation_listener = match config.federation.listen {
        Some(addr) => Some((
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Listen { addr, source })?,
            tls.server_config().map_err(|err| StartError::Key {
                path: "tls".to_owned(),
                reason: err.to_string(),
            })?,
        )),
        None => None,
    };
    let listener = TcpListener::bind(config.client_listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.client_listen,
            source,
        })?;
    let ca_http_listener = match (config.ca_http, &config.public_base_url) {
        (Some(addr), Some(base_url)) => {
            let fingerprint =
                transport::client_cert::ca_fingerprint(&tls.ca_pem).map_err(|err| {
                    StartError::ClientTls {
                        reason: format!("the unit CA: {err}"),
                    }
                })?;
            let page = api::ca_http::CaPage {
                ca_pem: tls.ca_pem.clone(),
                fingerprint,
                base_url: base_url.clone(),
            };
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Listen { addr, source })?;
            Some((listener, Arc::new(page)))
        }
        _ => None,
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let signer = Arc::new(Signer {
        server_name: config.server_name.clone(),
        key,
    });
    let client = transport::client::FederationClient::new(
        Arc::clone(&signer),
        Arc::clone(&peers),
        Duration::from_secs(config.federation.request_timeout_secs),
    );
    let clock = clock::system();
    let server = Arc::new(Server {
        appservices,
        peers,
        federation: client,
        tls_ca_pem: tls.ca_pem.clone(),
        client_tls,
        config,
        store,
        signer,
        uia: service::uia::Sessions::new(Arc::clone(&clock)),
        openid: Default::default(),
        login_throttle: service::login_throttle::LoginThrottle::new(Arc::clone(&clock)),
        clock,
        tokens: Default::default(),
        typing: Default::default(),
        hierarchy_cache: Default::default(),
        filters: Default::default(),
        sliding_sync: Default::default(),
        delayed: Default::default(),
        shutdown: shutdown_rx,
        appservice_kicker: Default::default(),
        oauth: Default::default(),
    });
    Ok(Prepared {
        server,
        connections,
        listener,
        federation_listener,
        ca_http_listener,
        shutdown_tx,
    })
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish
/// (cutting long polls short), commits every acknowledged write and stops the writer.
pub async fn serve(
    prepared: Prepared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Prepared {
        server,
        connections,
        listener,
        federation_listener,
        ca_http_listener,
        shutdown_tx,
    } = prepared;
    let store = server.store.clone();
    let admin = admin::start(Arc::clone(&server), shutdown_tx.subscribe())?;
    let checkpointer = tokio::spawn(checkpoint_loop(
        store.clone(),
        Duration::from_millis(server.config.storage.passive_checkpoint_ms),
        Duration::from_secs(server.config.storage.checkpoint_interval_secs),
        shutdown_tx.subscribe(),
    ));
    let watchdog = tokio::spawn(watchdog_loop(shutdown_tx.subscribe()));
    let sender = tokio::spawn(transport::sender::run(
        store.clone(),
        server.federation.clone(),
        Duration::from_secs(server.config.federation.retry_cap_secs),
        shutdown_tx.subscribe(),
    ));
    let pusher = tokio::spawn(service::push::pushers::run(
        store.clone(),
        shutdown_tx.subscribe(),
    ));
    let typing_expiry = tokio::spawn(expire_typing(Arc::clone(&server), shutdown_tx.subscribe()));
    let delayed = tokio::spawn(service::delayed_events::run(
        Arc::clone(&server),
        shutdown_tx.subscribe(),
    ));
    if let Err(err) =
        service::appservice::push::start_streams(&server, &server.appservices.all()).await
    {
        tracing::warn!(error = %err, "could not store new appservices' stream positions");
    }
    let appservice_sender = tokio::spawn(service::appservice::push::run(
        Arc::clone(&server),
        shutdown_tx.subscribe(),
    ));
    let reloader = tokio::spawn(reload_on_sighup(
        Arc::clone(&server),
        shutdown_tx.subscribe(),
    ));
    let renewer = server
        .client_tls
        .clone()
        .map(|client_tls| tokio::spawn(client_tls.run(shutdown_tx.subscribe())));
    let reaper = tokio::spawn(Arc::clone(&connections).reap(shutdown_tx.subscribe()));
    let federation_server = federation_listener.map(|(listener, tls)| {
        tokio::spawn(api::conn::serve(
            listener,
            Some(tls),
            api::federation::router(Arc::clone(&server)),
            api::conn::Listener::Federation,
            Arc::clone(&connections),
            shutdown_tx.subscribe(),
        ))
    });
    // The trust-distribution listener counts against the client listener's caps.
    let ca_http_server = ca_http_listener.map(|(listener, page)| {
        tokio::spawn(api::conn::serve(
            listener,
            None,
            api::ca_http::router(page),
            api::conn::Listener::Client,
            Arc::clone(&connections),
            shutdown_tx.subscribe(),
        ))
    });
    let app = api::router(Arc::clone(&server));
    let (stopping_tx, mut stopping_rx) = watch::channel(false);
    let client_stop = shutdown_tx.subscribe();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing requests");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        let _ = shutdown_tx.send(true);
        let _ = stopping_tx.send(true);
    });
    let serving = api::conn::serve(
        listener,
        server.client_tls.as_ref().map(|tls| tls.server_config()),
        app,
        api::conn::Listener::Client,
        Arc::clone(&connections),
        client_stop,
    );
    tokio::select! {
        () = serving => {}
        _ = async {
            let _ = stopping_rx.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("requests still running after the grace period; stopping anyway");
        }
    };
    reaper.abort();
    let _ = checkpointer.await;
    let _ = sender.await;
    let _ = pusher.await;
    let _ = delayed.await;
    let _ = appservice_sender.await;
    reloader.abort();
    if let Some(renewer) = renewer {
        renewer.abort();
    }
    typing_expiry.abort();
    if let Some(federation_server) = federation_server {
        let _ = federation_server.await;
    }
    if let Some(ca_http_server) = ca_http_server {
        let _ = ca_http_server.await;
    }
    let _ = admin.await;
    watchdog.abort();
    // Every write submitted before this point is committed before the writer exits.
    tokio::task::spawn_blocking(move || store.shutdown())
        .await
        .ok();
    drop(server);
    tracing::info!("stopped");
    Ok(())
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (systemd and shells start services at
/// 1,024, which a few hundred idle connections exhaust) and returns the soft limit in force.
fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    // An unlimited hard limit cannot be the soft one (the kernel caps it at fs.nr_open).
    let target = hard.min(1 << 20);
    if soft >= target {
        return soft;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
        Ok(()) => {
            tracing::info!(from = soft, to = target, "raised the open file limit");
            target
        }
        Err(err) => {
            tracing::warn!(soft, hard, %err, "cannot raise the open file limit");
            soft
        }
    }
}

/// How long an idle-time TRUNCATE checkpoint waits for the writer before giving up: it blocks
/// new writes while it waits, so it must stay short.
const TRUNCATE_WAIT: Duration = Duration::from_millis(20);

/// The checkpointer: keeps the write-ahead log bounded and the free-space guard fresh.
///
/// While commits keep coming, a passive checkpoint runs at most every `passive` on the store's
/// own checkpoint connection (the writer never waits for it), then the writer copies the few
/// frames appended meanwhile, so its next commit starts the log over and the log stays about
/// `passive` long; once no commit has come for `idle`, a TRUNCATE checkpoint hands the log's
/// space back. Below the free-space watermark it truncates as soon as writes stop, so the log
/// is reclaimed even with writes refused.
async fn checkpoint_loop(
    store: Store,
    passive: Duration,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut written = store.subscribe_writes();
    let mut ticker = tokio::time::interval(passive);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_write = tokio::time::Instant::now();
    let mut truncated = false;
    let mut dirty = true;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopped(&mut shutdown) => break,
        }
        if written.has_changed().unwrap_or(false) {
            written.borrow_and_update();
            dirty = true;
            truncated = false;
            last_write = tokio::time::Instant::now();
        }
        let space = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || {
                let state = store.space().measure();
                if !state.read_only {
                    store.space().ensure_reserve();
                }
                state
            })
            .await
        };
        let read_only = space.map(|state| state.read_only).unwrap_or(false);
        let mode = if !truncated && (read_only || last_write.elapsed() >= idle) {
            CheckpointMode::Truncate
        } else if dirty {
            CheckpointMode::Passive
        } else {
            continue;
        };
        let mut result = store.checkpoint(mode, TRUNCATE_WAIT).await;
        if mode == CheckpointMode::Passive
            && let Ok(outcome) = &result
            && outcome.log_frames > 0
        {
            // The bulk is copied; the writer copies the tail so the log starts over.
            result = store.checkpoint_tail().await;
        }
        match result {
            Ok(outcome) => {
                dirty = outcome.busy || outcome.checkpointed_frames < outcome.log_frames;
                if mode == CheckpointMode::Truncate && !outcome.busy {
                    truncated = true;
                }
                tracing::trace!(?mode, ?outcome, "WAL checkpoint");
            }
            Err(err) => tracing::warn!(error = %err, ?mode, "WAL checkpoint failed"),
        }
    }
    if let Err(err) = store
        .checkpoint(CheckpointMode::Truncate, Duration::from_secs(2))
        .await
    {
        tracing::warn!(error = %err, "final WAL checkpoint failed");
    }
}

/// Pings systemd's watchdog at half its interval when `WatchdogSec` is set.
async fn watchdog_loop(mut shutdown: watch::Receiver<bool>) {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let mut ticker = tokio::time::interval(Duration::from_micros(usec / 2));
    loop {
        tokio::select! {
            _ = ticker.tick() => { let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]); }
            _ = stopped(&mut shutdown) => break,
        }
    }
}

pub use util::stopped;

/// Reloads the allow-list, the appservice registrations and the client TLS certificate on SIGHUP, as admins expect of a
/// daemon. A certificate that fails to load is logged and the old one stays in service.
async fn reload_on_sighup(server: Arc<Server>, mut shutdown: watch::Receiver<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP; reload through the admin socket");
        return;
    };
    loop {
        tokio::select! {
            _ = hangup.recv() => {}
            _ = stopped(&mut shutdown) => break,
        }
        server.peers.reload();
        service::appservice::push::reload(&server).await;
        if let Some(client_tls) = &server.client_tls {
            let client_tls = Arc::clone(client_tls);
            match tokio::task::spawn_blocking(move || client_tls.reload(None)).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => tracing::error!(
                    error = %err,
                    "client TLS reload failed; the previous certificate stays in service"
                ),
                Err(err) => tracing::error!(error = %err, "client TLS reload task failed"),
            }
        }
    }
}

/// This unit's signed peer card, generating the signing key and TLS identity if this is the
/// first start. Fails when no federation endpoint is configured.
pub fn peer_card(config: &Config) -> Result<matrix::peer_card::PeerCard, StartError> {
    prepare_data_dir(&config.data_dir)?;
    let key = load_or_create_key(&config.data_dir)?;
    let tls =
        transport::tls::TlsIdentity::load_or_create(&config.data_dir, config.server_name.as_str())
            .map_err(|err| StartError::Key {
                path: "tls".to_owned(),
                reason: err.to_string(),
            })?;
    let endpoints = config.federation.card_endpoints();
    if endpoints.is_empty() {
        return Err(StartError::Key {
            path: "config".to_owned(),
            reason: "no federation endpoint: set [federation] listen or endpoints".to_owned(),
        });
    }
    let card = matrix::peer_card::PeerCard {
        version: matrix::peer_card::CARD_VERSION,
        server_name: config.server_name.to_string(),
        endpoints,
        verify_keys: [(key.key_id(), key.public_key_base64())]
            .into_iter()
            .collect(),
        old_verify_keys: key
            .old_verify_keys()
            .iter()
            .map(|old| {
                let entry = matrix::peer_card::OldKey {
                    key: old.public_key.clone(),
                    expired_ts: old.expired_ts,
                };
                (old.key_id.clone(), entry)
            })
            .collect(),
        tls: matrix::peer_card::TlsTrust::ca(tls.ca_pem),
        issued_at: util::now_ms() as u64,
        signatures: Default::default(),
    };
    card.sign(&key).map_err(|err| StartError::Key {
        path: SIGNING_KEY_FILE.to_owned(),
        reason: err.to_string(),
    })
}

/// Expires typing notices every second, waking long polls that show them.
async fn expire_typing(server: Arc<Server>, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = ticker.tick() => service::typing::expire(&server).await,
            _ = stopped(&mut shutdown) => break,
        }
    }
}
