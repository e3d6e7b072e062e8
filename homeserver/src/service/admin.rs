//! Unit administration: what the local admin socket and the `appliance` CLI do to accounts,
//! and the health facts they report.
//!
//! Account functions come in two layers. The `*_in_store` functions need only the [`Store`] and
//! the server name, so the CLI can run them on the database directly while the server is
//! stopped; the wrappers taking a [`Server`] add what only a running server has (its token
//! cache, and the signing key that deactivation needs to leave rooms).

use std::path::{Path, PathBuf};

use ruma::{OwnedUserId, ServerName};
use serde::{Deserialize, Serialize};

use super::Server;
use super::accounts;
use crate::error::{Error, ErrorCode, Result};
use crate::store::Store;
use crate::store::admin as store_admin;
/// The admin API's row types, as the store reads them.
pub use crate::store::admin::{BackupOutcome, Report, UserSummary};
use crate::util::now_ms;

/// Turns what an admin typed (`alice` or `@alice:server`) into a user ID of this unit.
pub fn parse_user(server_name: &ServerName, input: &str) -> Result<OwnedUserId> {
    let input = input.trim();
    let user_id = if input.starts_with('@') {
        OwnedUserId::try_from(input)
    } else {
        ruma::UserId::parse_with_server_name(input, server_name)
    }
    .map_err(|err| {
        Error::new(
            ErrorCode::InvalidUsername,
            format!("{input:?} is not a valid user name: {err}"),
        )
    })?;
    if user_id.server_name() != server_name {
        return Err(Error::new(
            ErrorCode::InvalidUsername,
            format!("{user_id} belongs to another server, not to {server_name}"),
        ));
    }
    Ok(user_id)
}

/// Like [`parse_user`], for a name about to be created: it must follow today's strict grammar
/// (lowercase `a-z 0-9 . _ = - / +`, as client registration requires), not merely one that
/// older servers allowed.
pub fn parse_new_user(server_name: &ServerName, input: &str) -> Result<OwnedUserId> {
    let user_id = parse_user(server_name, input)?;
    let strict = user_id
        .localpart()
        .bytes()
        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'));
    if !strict || user_id.localpart().is_empty() || user_id.as_str().len() > 255 {
        return Err(Error::new(
            ErrorCode::InvalidUsername,
            format!(
                "{:?}: user names may only contain a-z, 0-9, '.', '_', '=', '-', '/' and '+'",
                input.trim()
            ),
        ));
    }
    if user_id.localpart() == super::notices::SENDER_LOCALPART {
        return Err(Error::new(
            ErrorCode::UserInUse,
            "that user name is reserved for server notices",
        ));
    }
    Ok(user_id)
}

/// Creates an account with a password; `admin` makes it a server admin.
///
/// New names must use today's strict grammar (lowercase `a-z 0-9 . _ = - / +`), the same rule
/// as client registration.
pub async fn create_user_in_store(
    store: &Store,
    server_name: &ServerName,
    user: &str,
    password: String,
    admin: bool,
) -> Result<UserSummary> {
    let user_id = parse_new_user(server_name, user)?;
    if password.is_empty() {
        return Err(Error::invalid_param("the password must not be empty"));
    }
    let hash = accounts::hash_password(password).await?;
    let user = user_id.to_string();
    let summary = store
        .write(move |tx| {
            if !crate::store::accounts::create_user(tx, &user, Some(&hash), now_ms())? {
                return Err(Error::new(
                    ErrorCode::UserInUse,
                    format!("{user} already exists"),
                ));
            }
            store_admin::set_admin(tx, &user, admin)?;
            store_admin::get_user(tx, &user)?
                .ok_or_else(|| Error::internal("user vanished inside its own transaction"))
        })
        .await?;
    tracing::info!(user = %user_id, admin, "admin created user");
    Ok(summary)
}

/// Every local account.
pub async fn list_users_in_store(store: &Store) -> Result<Vec<UserSummary>> {
    store.read(store_admin::list_users).await
}

/// Loads an account that must exist and must not be deactivated.
async fn active_user(store: &Store, user_id: &OwnedUserId) -> Result<UserSummary> {
    let user = user_id.to_string();
    let summary = store
        .read(move |conn| store_admin::get_user(conn, &user))
        .await?
        .ok_or_else(|| Error::not_found(format!("there is no user {user_id}")))?;
    if summary.deactivated {
        return Err(Error::new(
            ErrorCode::UserDeactivated,
            format!("{user_id} is deactivated"),
        ));
    }
    Ok(summary)
}

/// Sets a new password and ends every session of the account (a reset usually means the old
/// password or a device is not to be trusted).
pub async fn reset_password_in_store(
    store: &Store,
    server_name: &ServerName,
    user: &str,
    password: String,
) -> Result<UserSummary> {
    let user_id = parse_user(server_name, user)?;
    active_user(store, &user_id).await?;
    if password.is_empty() {
        return Err(Error::invalid_param("the password must not be empty"));
    }
    let hash = accounts::hash_password(password).await?;
    let user = user_id.to_string();
    let summary = store
        .write(move |tx| {
            crate::store::accounts::set_password(tx, &user, &hash)?;
            crate::store::accounts::delete_devices_except(tx, &user, None)?;
            store_admin::get_user(tx, &user)?.ok_or_else(|| Error::not_found("user vanished"))
        })
        .await?;
    tracing::info!(user = %user_id, "admin reset password");
    Ok(summary)
}

/// Grants or revokes server-admin rights.
pub async fn set_admin_in_store(
    store: &Store,
    server_name: &ServerName,
    user: &str,
    admin: bool,
) -> Result<UserSummary> {
    let user_id = parse_user(server_name, user)?;
    active_user(store, &user_id).await?;
    let user = user_id.to_string();
    let summary = store
        .write(move |tx| {
            store_admin::set_admin(tx, &user, admin)?;
            store_admin::get_user(tx, &user)?.ok_or_else(|| Error::not_found("user vanished"))
        })
        .await?;
    tracing::info!(user = %user_id, admin, "admin changed admin rights");
    Ok(summary)
}

/// The content reports users filed, for `GET /v1/reports`.
pub async fn reports(server: &Server) -> Result<Vec<Report>> {
    server.store.read(store_admin::reports).await
}

/// [`reset_password_in_store`] on the running server: also forgets cached sessions.
pub async fn reset_password(server: &Server, user: &str, password: String) -> Result<UserSummary> {
    let summary =
        reset_password_in_store(&server.store, server.server_name(), user, password).await?;
    server.tokens.invalidate();
    Ok(summary)
}

/// Ends every OAuth session of a user (`appliance oauth revoke`); returns the user ID and
/// the devices signed out.
pub async fn revoke_oauth(server: &Server, user: &str) -> Result<(String, Vec<String>)> {
    let user_id = parse_user(server.server_name(), user)?;
    active_user(&server.store, &user_id).await?;
    let devices = super::oauth::grants::revoke_user(server, &user_id).await?;
    Ok((user_id.to_string(), devices))
}

/// Deactivates an account on the running server: logins refused, every session ended, every
/// room left (which signs leave events, so it needs the running server).
pub async fn deactivate(server: &Server, user: &str) -> Result<UserSummary> {
    let user_id = parse_user(server.server_name(), user)?;
    active_user(&server.store, &user_id).await?;
    accounts::deactivate(server, user_id.clone()).await?;
    let user = user_id.to_string();
    server
        .store
        .read(move |conn| store_admin::get_user(conn, &user))
        .await?
        .ok_or_else(|| Error::internal("deactivated user vanished"))
}

/// The database's health as the admin sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseHealth {
    /// The database file.
    pub path: PathBuf,
    /// Size of the database file in bytes.
    pub size_bytes: u64,
    /// Size of its write-ahead log in bytes.
    pub wal_bytes: u64,
    /// `ok`, or what `PRAGMA quick_check` found.
    pub quick_check: String,
    /// The schema version (last migration applied).
    pub schema_version: i64,
    /// Local accounts that are not deactivated.
    pub users: u64,
    /// Rooms this unit knows.
    pub rooms: u64,
}

/// Checks the database file at `path` from a fresh read-only connection. Blocking: it reads
/// the whole file.
pub fn database_health(path: &Path) -> Result<DatabaseHealth> {
    let size = |path: &Path| std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let conn = store_admin::open_read_only(path)?;
    Ok(DatabaseHealth {
        path: path.to_owned(),
        size_bytes: size(path),
        wal_bytes: size(Path::new(&wal)),
        quick_check: store_admin::quick_check(&conn)?,
        schema_version: store_admin::schema_version(&conn)?,
        users: store_admin::count_active_users(&conn)?,
        rooms: store_admin::count_rooms(&conn)?,
    })
}

/// Free and total space of the filesystem holding a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpace {
    /// The directory asked about.
    pub path: PathBuf,
    /// Bytes available to the service (not counting blocks reserved for root).
    pub free_bytes: u64,
    /// Size of the filesystem in bytes.
    pub total_bytes: u64,
}

impl DiskSpace {
    /// Whether free space is low enough that the admin should act: under 5 % or under 512 MiB.
    /// A full disk stops every write, so this is raised well before that.
    pub fn is_low(&self) -> bool {
        const MIN_FREE: u64 = 512 * 1024 * 1024;
        self.free_bytes < MIN_FREE || self.free_bytes.saturating_mul(20) < self.total_bytes
    }
}

/// Measures the filesystem holding `dir` (statvfs).
// statvfs's field types are u64 on x86-64 but narrower on other targets.
#[allow(clippy::useless_conversion)]
pub fn disk_space(dir: &Path) -> Result<DiskSpace> {
    let stat = nix::sys::statvfs::statvfs(dir)
        .map_err(|err| Error::internal(format!("statvfs {}: {err}", dir.display())))?;
    let fragment = u64::from(stat.fragment_size());
    Ok(DiskSpace {
        path: dir.to_owned(),
        free_bytes: u64::from(stat.blocks_available()).saturating_mul(fragment),
        total_bytes: u64::from(stat.blocks()).saturating_mul(fragment),
    })
}

/// Everything `appliance status` shows about a running server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// The homeserver's version.
    pub version: String,
    /// This unit's server name.
    pub server_name: String,
    /// Seconds since the server started serving.
    pub uptime_secs: u64,
    /// Whether the server is serving requests (false while it shuts down).
    pub ready: bool,
    /// The current signing key's ID.
    pub signing_key_id: String,
    /// Database health.
    pub database: DatabaseHealth,
    /// Space on the data partition.
    pub disk: DiskSpace,
    /// The free-space watermark and whether writes are refused because of it.
    #[serde(default)]
    pub space: Option<SpaceStatus>,
}

/// The running server's free-space guard, as the admin sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceStatus {
    /// True while free space is under the watermark: writes get `M_RESOURCE_LIMIT_EXCEEDED`.
    pub read_only: bool,
    /// The watermark (`[storage] min_free_bytes`).
    pub min_free_bytes: u64,
    /// Free bytes at the guard's latest measurement.
    pub free_bytes: u64,
}

/// Collects the running server's status; `started` is when it began serving.
pub async fn status(server: &Server, started: std::time::Instant) -> Result<ServerStatus> {
    let db_path = server.store.path().to_owned();
    let data_dir = server.config.data_dir.clone();
    let guard = {
        let store = server.store.clone();
        tokio::task::spawn_blocking(move || store.space().measure())
            .await
            .map_err(|err| Error::internal(format!("status task failed: {err}")))?
    };
    let (database, disk) = tokio::task::spawn_blocking(move || {
        Ok::<_, Error>((database_health(&db_path)?, disk_space(&data_dir)?))
    })
    .await
    .map_err(|err| Error::internal(format!("status task failed: {err}")))??;
    Ok(ServerStatus {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        server_name: server.server_name().to_string(),
        uptime_secs: started.elapsed().as_secs(),
        ready: !*server.shutdown.borrow(),
        signing_key_id: server.signer.key.key_id(),
        database,
        disk,
        space: Some(SpaceStatus {
            read_only: guard.read_only,
            min_free_bytes: guard.min_free_bytes,
            free_bytes: guard.free_bytes,
        }),
    })
}

/// Copies the live database to `dest`, a new file the caller names (absolute, not existing yet),
/// on the blocking pool.
pub async fn backup(server: &Server, dest: PathBuf) -> Result<store_admin::BackupOutcome> {
    if !dest.is_absolute() {
        return Err(Error::invalid_param("the backup path must be absolute"));
    }
    if dest.exists() {
        return Err(Error::Conflict(format!(
            "{} already exists",
            dest.display()
        )));
    }
    let source = server.store.path().to_owned();
    tracing::info!(dest = %dest.display(), "online backup started");
    let outcome = tokio::task::spawn_blocking(move || {
        store_admin::backup(&source, &dest, |progress| {
            tracing::debug!(
                copied = progress.copied_pages,
                total = progress.total_pages,
                "backup progress"
            );
        })
    })
    .await
    .map_err(|err| Error::internal(format!("backup task failed: {err}")))??;
    tracing::info!(
        bytes = outcome.size_bytes,
        ms = outcome.duration_ms,
        "online backup finished"
    );
    Ok(outcome)
}

/// One allow-listed peer as the admin sees it: what its card says and how the link to it is
/// doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The peer's server name.
    pub server_name: String,
    /// Where this unit dials it, in order.
    pub endpoints: Vec<String>,
    /// The card's read-aloud fingerprint.
    pub fingerprint: String,
    /// Whether the card is self-signed (an Outpost unit's card) rather than added by hand.
    pub signed: bool,
    /// IDs of its current verify keys.
    pub verify_keys: Vec<String>,
    /// IDs of keys it used before a rotation.
    pub old_verify_keys: Vec<String>,
    /// When the card was made (ms since the epoch).
    pub issued_at: u64,
    /// Delivery to the peer.
    pub link: LinkInfo,
}

/// The state of the outbound link to a peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkInfo {
    /// Last successful delivery (ms since the epoch), if any.
    pub last_success_ts: Option<i64>,
    /// Last failed attempt (ms since the epoch), if any.
    pub last_error_ts: Option<i64>,
    /// What went wrong the last time.
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub consecutive_failures: i64,
    /// Events and EDUs waiting to be delivered.
    pub queue_depth: i64,
}

/// Describes `cards` with their link state from the database behind `conn`. Shared by the
/// admin socket and the CLI's offline path (a read-only connection), so both report alike.
pub fn peer_infos(
    conn: &rusqlite::Connection,
    cards: &[crate::matrix::peer_card::PeerCard],
) -> Result<Vec<PeerInfo>> {
    let mut peers = Vec::with_capacity(cards.len());
    for card in cards {
        let link = crate::store::outbox::link_state(conn, &card.server_name)?;
        peers.push(PeerInfo {
            server_name: card.server_name.clone(),
            endpoints: card.endpoints.clone(),
            fingerprint: card.fingerprint(),
            signed: card.is_signed(),
            verify_keys: card.verify_keys.keys().cloned().collect(),
            old_verify_keys: card.old_verify_keys.keys().cloned().collect(),
            issued_at: card.issued_at,
            link: LinkInfo {
                last_success_ts: link.last_success_ts,
                last_error_ts: link.last_error_ts,
                last_error: link.last_error,
                consecutive_failures: link.failures,
                queue_depth: link.queue_depth,
            },
        });
    }
    peers.sort_by(|a, b| a.server_name.cmp(&b.server_name));
    Ok(peers)
}

/// Every peer on the running server's allow-list, with its link state.
pub async fn list_peers(server: &Server) -> Result<Vec<PeerInfo>> {
    let cards: Vec<_> = server
        .peers
        .names()
        .iter()
        .filter_map(|name| server.peers.get(name))
        .map(|peer| peer.card.clone())
        .collect();
    server
        .store
        .read(move |conn| peer_infos(conn, &cards))
        .await
}

/// Re-reads the peer card folder (after `appliance peer import/add/remove`); returns how many
/// peers are allowed now.
pub async fn reload_peers(server: &Server) -> Result<usize> {
    let peers = std::sync::Arc::clone(&server.peers);
    tokio::task::spawn_blocking(move || peers.reload())
        .await
        .map_err(|err| Error::internal(format!("reload task failed: {err}")))
}

/// Re-reads the client listener's certificate files (reissuing from the unit CA when due) and
/// serves them to new handshakes; open connections are kept. `mode` switches between the
/// unit-CA and the imported files. Refused when the client listener serves plain HTTP, when
/// `mode` is plain HTTP, or when the files are unusable (then the old certificate stays).
pub async fn reload_client_tls(
    server: &Server,
    mode: Option<crate::config::ClientTlsMode>,
) -> Result<crate::transport::client_tls::CertSummary> {
    let Some(client_tls) = server.client_tls.clone() else {
        return Err(Error::new(
            ErrorCode::UnknownRequest,
            "the client listener serves plain HTTP (listen.tls = \"off\"): nothing to reload",
        ));
    };
    tokio::task::spawn_blocking(move || client_tls.reload(mode))
        .await
        .map_err(|err| Error::internal(format!("reload task failed: {err}")))?
        .map_err(|err| {
            Error::new(
                ErrorCode::UnknownRequest,
                format!("{err}; the previous certificate stays in service"),
            )
        })
}

/// Sends a server notice to one local user (`alice` or `@alice:server`) or, with `None`, to
/// every active local account. Returns who got it.
pub async fn send_notices(
    server: &Server,
    user: Option<&str>,
    body: String,
) -> Result<Vec<String>> {
    if body.trim().is_empty() {
        return Err(Error::invalid_param("the notice is empty"));
    }
    let targets: Vec<OwnedUserId> = match user {
        Some(user) => vec![parse_user(server.server_name(), user)?],
        None => list_users_in_store(&server.store)
            .await?
            .into_iter()
            .filter(|u| !u.deactivated)
            .filter_map(|u| OwnedUserId::try_from(u.user_id).ok())
            .filter(|u| u.localpart() != super::notices::SENDER_LOCALPART)
            .collect(),
    };
    let mut sent = Vec::new();
    for target in targets {
        super::notices::send_notice(server, target.clone(), body.clone()).await?;
        sent.push(target.to_string());
    }
    Ok(sent)
}
