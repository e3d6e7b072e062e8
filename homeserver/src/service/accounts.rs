//! Accounts: registration, password login, sessions (devices + tokens), refresh, password
//! change and deactivation.
//!
//! Passwords are hashed with argon2id on the blocking pool; tokens are random and stored only
//! as SHA-256 hashes.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use sha2::{Digest, Sha256};

use super::Server;
use crate::error::{Error, ErrorCode, Result};
use crate::store::WriteTx;
/// A device as stored, as the device endpoints list it.
pub use crate::store::accounts::DeviceRow;
use crate::store::accounts::{self, TokenOwner};
use crate::util::{now_ms, random_string};

/// Sessions kept in the token cache before it starts over.
const TOKEN_CACHE_SIZE: usize = 100_000;

/// Access tokens already looked up, so most requests skip a database read.
///
/// Any token deletion bumps the generation and empties the cache; a lookup that raced with a
/// deletion (read the row before the delete committed) only caches its result if the
/// generation is unchanged, so a revoked token is never resurrected.
#[derive(Default)]
pub struct TokenCache {
    inner: std::sync::Mutex<(u64, std::collections::HashMap<Vec<u8>, TokenOwner>)>,
}

impl TokenCache {
    fn generation(&self) -> u64 {
        self.inner.lock().map(|g| g.0).unwrap_or(u64::MAX)
    }

    fn get(&self, hash: &[u8]) -> Option<TokenOwner> {
        self.inner.lock().ok()?.1.get(hash).cloned()
    }

    fn insert(&self, generation: u64, hash: Vec<u8>, owner: TokenOwner) {
        if let Ok(mut guard) = self.inner.lock()
            && guard.0 == generation
        {
            if guard.1.len() >= TOKEN_CACHE_SIZE {
                guard.1.clear();
            }
            guard.1.insert(hash, owner);
        }
    }

    /// Forgets every cached token; call after any token deletion has committed.
    pub fn invalidate(&self) {
        if let Ok(mut guard) = self.inner.lock() {
            guard.0 += 1;
            guard.1.clear();
        }
    }
}

/// Lifetime of an access token issued together with a refresh token.
const REFRESHABLE_TOKEN_MS: i64 = 60 * 60 * 1000;

/// SHA-256 of a token, the form the database keys on.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A freshly issued session.
#[derive(Debug)]
pub struct Session {
    /// The user.
    pub user_id: OwnedUserId,
    /// The device.
    pub device_id: String,
    /// Access token.
    pub access_token: String,
    /// Refresh token, when the client asked for one.
    pub refresh_token: Option<String>,
    /// Access token lifetime when refreshable.
    pub expires_in_ms: Option<i64>,
}

/// Password hashes computed at once. Each argon2id computation takes 19 MiB and a core for
/// tens of milliseconds, so unbounded concurrency (a burst of logins or registrations) would
/// multiply memory use and starve the runtime; two at a time keep a 2-core unit responsive.
/// A process-wide limit on a machine resource, not service state, hence a static.
static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Requests allowed to queue for [`HASHING`]. Beyond it a login or registration is answered
/// 429 at once instead of queueing: guesses spread over many accounts cannot build a queue
/// that makes a legitimate login wait seconds (per-account guessing is already held to one
/// check at a time by `login_throttle.rs`).
const HASH_QUEUE_MAX: usize = 8;

/// Requests waiting for a hashing permit.
static HASH_QUEUE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// What a request turned away by a full hashing queue is told to wait.
const HASH_BUSY_RETRY_MS: u64 = 500;

/// Takes a hashing permit, or 429 when [`HASH_QUEUE_MAX`] requests already wait for one.
async fn hashing_permit() -> Result<tokio::sync::SemaphorePermit<'static>> {
    use std::sync::atomic::Ordering;
    if let Ok(permit) = HASHING.try_acquire() {
        return Ok(permit);
    }
    /// Leaves the queue when the wait ends, also when the request is cancelled.
    struct Queued;
    impl Drop for Queued {
        fn drop(&mut self) {
            HASH_QUEUE.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let queued = Queued;
    if HASH_QUEUE.fetch_add(1, Ordering::AcqRel) >= HASH_QUEUE_MAX {
        return Err(Error::RateLimited {
            retry_after_ms: HASH_BUSY_RETRY_MS,
        });
    }
    let permit = HASHING.acquire().await;
    drop(queued);
    permit.map_err(|_| Error::internal("hashing closed"))
}

/// Hashes a password with argon2id (off the async runtime, at most two at a time).
pub async fn hash_password(password: String) -> Result<String> {
    let _permit = hashing_permit().await?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|err| Error::internal(format!("hashing password: {err}")))
    })
    .await
    .map_err(|err| Error::internal(err.to_string()))?
}

async fn verify_password(password: String, hash: String) -> Result<bool> {
    let _permit = hashing_permit().await?;
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash)
            .map_err(|err| Error::internal(format!("stored hash: {err}")))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(|err| Error::internal(err.to_string()))?
}

/// Validates a localpart for registration (spec: user identifier grammar, lowercase only).
pub fn validate_localpart(localpart: &str, server: &Server) -> Result<OwnedUserId> {
    let valid = !localpart.is_empty()
        && localpart.bytes().all(
            |b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'),
        );
    let user_id = format!("@{localpart}:{}", server.server_name());
    if !valid || user_id.len() > 255 {
        return Err(Error::new(
            ErrorCode::InvalidUsername,
            "User ID may only contain a-z, 0-9, '.', '_', '=', '-', '/' and '+'",
        ));
    }
    if localpart == super::notices::SENDER_LOCALPART {
        return Err(Error::new(
            ErrorCode::UserInUse,
            "That user name is reserved for server notices",
        ));
    }
    OwnedUserId::try_from(user_id)
        .map_err(|_| Error::new(ErrorCode::InvalidUsername, "Invalid user ID"))
}

/// Whether a localpart is free.
pub async fn is_available(server: &Server, user_id: &UserId) -> Result<bool> {
    let user = user_id.to_string();
    server
        .store
        .read(move |conn| Ok(accounts::get_user(conn, &user)?.is_none()))
        .await
}

/// Options for the session a login or registration opens.
#[derive(Debug, Default)]
pub struct DeviceRequest {
    /// Reuse this device ID (its old tokens are revoked).
    pub device_id: Option<String>,
    /// Display name for a new device.
    pub display_name: Option<String>,
    /// Whether to issue a refresh token.
    pub refresh_token: bool,
}

/// Creates an account and, unless `inhibit_login`, a session for it.
pub async fn register(
    server: &Server,
    user_id: OwnedUserId,
    password: Option<String>,
    device: DeviceRequest,
    inhibit_login: bool,
    registration_token: Option<String>,
) -> Result<Option<Session>> {
    let hash = match password {
        Some(password) => Some(hash_password(password).await?),
        None => None,
    };
    let tokens = new_tokens(&device);
    let session = tokens.clone();
    let user = user_id.clone();
    let own = server.server_name().to_string();
    server
        .store
        .write(move |tx| {
            let now = now_ms();
            if let Some(token) = &registration_token {
                if !accounts::registration_token_valid(tx, token, now)? {
                    return Err(Error::new(
                        ErrorCode::Forbidden,
                        "Registration token is not valid",
                    ));
                }
                accounts::use_registration_token(tx, token)?;
            }
            if !accounts::create_user(tx, user.as_str(), hash.as_deref(), now)? {
                return Err(Error::new(ErrorCode::UserInUse, "User ID already taken"));
            }
            if !inhibit_login {
                store_session(tx, &own, user.as_str(), &session, now)?;
            }
            Ok(())
        })
        .await?;
    tracing::info!(user = %user_id, "registered user");
    Ok((!inhibit_login).then(|| tokens.into_session(user_id)))
}

#[derive(Clone)]
struct NewTokens {
    device_id: String,
    /// Lifetime of the access token when it comes with a refresh token.
    access_ttl_ms: i64,
    display_name: Option<String>,
    access: String,
    refresh: Option<String>,
}

impl NewTokens {
    fn into_session(self, user_id: OwnedUserId) -> Session {
        let expires_in_ms = self.refresh.as_ref().map(|_| self.access_ttl_ms);
        Session {
            user_id,
            device_id: self.device_id,
            access_token: self.access,
            refresh_token: self.refresh,
            expires_in_ms,
        }
    }
}

fn new_tokens(device: &DeviceRequest) -> NewTokens {
    NewTokens {
        device_id: device
            .device_id
            .clone()
            .unwrap_or_else(|| random_string(10).to_uppercase()),
        access_ttl_ms: REFRESHABLE_TOKEN_MS,
        display_name: device.display_name.clone(),
        access: format!("opa_{}", random_string(40)),
        refresh: device
            .refresh_token
            .then(|| format!("opr_{}", random_string(40))),
    }
}

/// Stores a login's device and tokens. A new device is a device-list change (spec: the
/// user's own and their room peers' `device_lists.changed`, and `m.device_list_update` to
/// other servers), even before it uploads any keys.
fn store_session(
    tx: &mut WriteTx<'_>,
    own: &str,
    user_id: &str,
    t: &NewTokens,
    now: i64,
) -> Result<()> {
    if accounts::upsert_device(tx, user_id, &t.device_id, t.display_name.as_deref(), now)? {
        super::e2ee::device_changed_in_tx(tx, own, user_id, &t.device_id, false)?;
    }
    let conn: &rusqlite::Connection = tx;
    accounts::delete_device_tokens(conn, user_id, &t.device_id)?;
    let expires = t.refresh.as_ref().map(|_| now + t.access_ttl_ms);
    accounts::insert_access_token(
        conn,
        &token_hash(&t.access),
        user_id,
        &t.device_id,
        expires,
        now,
    )?;
    if let Some(refresh) = &t.refresh {
        accounts::insert_refresh_token(conn, &token_hash(refresh), user_id, &t.device_id, now)?;
    }
    Ok(())
}

/// Opens a session with a refresh token on the device `device_id` names (created when new,
/// a device-list change; its old tokens replaced when it exists), in the caller's write
/// transaction: the OAuth 2.0 grants' sessions, whose access tokens live `access_ttl_ms`.
/// Returns `(access_token, refresh_token)`.
pub fn open_session_in_tx(
    tx: &mut WriteTx<'_>,
    own: &str,
    user_id: &str,
    device_id: &str,
    access_ttl_ms: i64,
    now: i64,
) -> Result<(String, String)> {
    let mut tokens = new_tokens(&DeviceRequest {
        device_id: Some(device_id.to_owned()),
        display_name: None,
        refresh_token: true,
    });
    tokens.access_ttl_ms = access_ttl_ms;
    store_session(tx, own, user_id, &tokens, now)?;
    let refresh = tokens
        .refresh
        .ok_or_else(|| Error::internal("a refresh token was asked for"))?;
    Ok((tokens.access, refresh))
}

/// A new access and refresh token pair for an existing device, stored (the caller removed
/// the old ones): a refresh grant's rotation. Returns `(access, refresh)`.
pub fn issue_tokens_in_tx(
    conn: &rusqlite::Connection,
    user_id: &str,
    device_id: &str,
    access_ttl_ms: i64,
    now: i64,
) -> Result<(String, String)> {
    let access = format!("opa_{}", random_string(40));
    let refresh = format!("opr_{}", random_string(40));
    accounts::insert_access_token(
        conn,
        &token_hash(&access),
        user_id,
        device_id,
        Some(now + access_ttl_ms),
        now,
    )?;
    accounts::insert_refresh_token(conn, &token_hash(&refresh), user_id, device_id, now)?;
    Ok((access, refresh))
}

/// Checks a user's password; `M_FORBIDDEN` on any mismatch (never says which part was wrong),
/// 429 `M_LIMIT_EXCEEDED` while the account is in its failed-attempt back-off
/// (`login_throttle.rs`), whatever the password.
pub async fn check_password(server: &Server, user_id: &UserId, password: String) -> Result<()> {
    let attempt = server.login_throttle.begin(user_id.as_str())?;
    match password_matches(server, user_id, password).await {
        Ok(true) => {
            attempt.finish(true);
            Ok(())
        }
        Ok(false) => {
            attempt.finish(false);
            Err(Error::forbidden("Invalid username or password"))
        }
        Err(err) => Err(err),
    }
}

/// Whether `password` is the user's; `false` for an unknown user or one without a password.
async fn password_matches(server: &Server, user_id: &UserId, password: String) -> Result<bool> {
    let user = user_id.to_string();
    let row = server
        .store
        .read(move |conn| accounts::get_user(conn, &user))
        .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    if row.deactivated {
        return Err(Error::new(
            ErrorCode::UserDeactivated,
            "This account has been deactivated",
        ));
    }
    let Some(hash) = row.password_hash else {
        return Ok(false);
    };
    verify_password(password, hash).await
}

/// Logs in with a password and opens a session.
pub async fn login(
    server: &Server,
    user_id: OwnedUserId,
    password: String,
    device: DeviceRequest,
) -> Result<Session> {
    check_password(server, &user_id, password).await?;
    let tokens = new_tokens(&device);
    let session = tokens.clone();
    let user = user_id.to_string();
    let own = server.server_name().to_string();
    server
        .store
        .write(move |tx| store_session(tx, &own, &user, &session, now_ms()))
        .await?;
    // Logging in again on a device ID replaces that device's old tokens.
    server.tokens.invalidate();
    Ok(tokens.into_session(user_id))
}

/// Checks that an application service may act as `user_id` (already inside its namespace):
/// the user must be registered and active, except the appservice's own sender, which is
/// created (without a password) the first time the appservice acts as it, as every
/// homeserver provides it. 403 `M_FORBIDDEN` otherwise.
pub async fn require_appservice_user(
    server: &Server,
    user_id: &UserId,
    is_sender: bool,
) -> Result<()> {
    let user = user_id.to_string();
    let row = server
        .store
        .read(move |conn| accounts::get_user(conn, &user))
        .await?;
    match row {
        Some(row) if row.deactivated => Err(Error::forbidden(
            "This appservice user has been deactivated",
        )),
        Some(_) => Ok(()),
        None if is_sender => {
            let user = user_id.to_string();
            server
                .store
                .write(move |tx| accounts::create_user(tx, &user, None, now_ms()).map(drop))
                .await?;
            tracing::info!(user = %user_id, "created application service sender");
            Ok(())
        }
        None => Err(Error::forbidden(
            "Application service has not registered this user",
        )),
    }
}

/// Whether `device_id` is one of the user's devices.
pub async fn has_device(server: &Server, user_id: &UserId, device_id: &DeviceId) -> Result<bool> {
    Ok(devices(server, user_id)
        .await?
        .iter()
        .any(|d| d.device_id == device_id.as_str()))
}

/// Opens a session for a registered user without a password (`m.login.application_service`,
/// whose `as_token` and namespace the caller checked): 403 `M_FORBIDDEN` for a user that
/// does not exist (the spec's answer), `M_USER_DEACTIVATED` for a deactivated one.
pub async fn login_for_appservice(
    server: &Server,
    user_id: OwnedUserId,
    device: DeviceRequest,
) -> Result<Session> {
    let tokens = new_tokens(&device);
    let session = tokens.clone();
    let user = user_id.to_string();
    let own = server.server_name().to_string();
    server
        .store
        .write(move |tx| {
            match accounts::get_user(tx, &user)? {
                None => {
                    return Err(Error::forbidden(
                        "Application service has not registered this user",
                    ));
                }
                Some(row) if row.deactivated => {
                    return Err(Error::new(
                        ErrorCode::UserDeactivated,
                        "This account has been deactivated",
                    ));
                }
                Some(_) => {}
            }
            store_session(tx, &own, &user, &session, now_ms())
        })
        .await?;
    server.tokens.invalidate();
    Ok(tokens.into_session(user_id))
}

/// Creates a device without a session (spec v1.17 "Device management", MSC4190: an
/// application service makes the devices of its users itself), or renames it when it exists.
/// A new device is a device-list change, as one made by a login is.
pub async fn create_or_rename_device(
    server: &Server,
    user_id: &UserId,
    device_id: &DeviceId,
    display_name: Option<String>,
) -> Result<()> {
    let (user, device_id) = (user_id.to_string(), device_id.to_string());
    let own = server.server_name().to_string();
    server
        .store
        .write(move |tx| {
            // New or renamed, the user's room-mates' device lists learn of it.
            accounts::upsert_device(tx, &user, &device_id, display_name.as_deref(), now_ms())?;
            super::e2ee::device_changed_in_tx(tx, &own, &user, &device_id, false)
        })
        .await
}

/// Resolves an access token.
pub async fn authenticate(server: &Server, token: &str) -> Result<TokenOwner> {
    let hash = token_hash(token);
    let owner = match server.tokens.get(&hash) {
        Some(owner) => Some(owner),
        None => {
            let generation = server.tokens.generation();
            let key = hash.clone();
            let owner = server
                .store
                .read(move |conn| accounts::token_owner(conn, &key))
                .await?;
            if let Some(owner) = &owner {
                server.tokens.insert(generation, hash, owner.clone());
            }
            owner
        }
    };
    match owner {
        Some(owner) if owner.expires_ts.is_none_or(|exp| exp > now_ms()) => Ok(owner),
        Some(_) => Err(expired_token()),
        None => Err(Error::new(ErrorCode::UnknownToken, "Unknown access token")),
    }
}

fn expired_token() -> Error {
    // The spec wants `soft_logout: true` here; the error type carries the body.
    Error::Uia(serde_json::json!({
        "errcode": "M_UNKNOWN_TOKEN", "error": "Access token has expired", "soft_logout": true
    }))
}

/// Logs out one device.
pub async fn logout(server: &Server, user_id: &UserId, device_id: &DeviceId) -> Result<()> {
    delete_devices(server, user_id, vec![device_id.to_owned()]).await
}

/// Logs out every device of the user.
pub async fn logout_all(server: &Server, user_id: &UserId) -> Result<()> {
    let user = user_id.to_string();
    let own = server.server_name().to_string();
    server
        .store
        .write(move |tx| delete_devices_except_in_tx(tx, &own, &user, None))
        .await?;
    server.tokens.invalidate();
    Ok(())
}

/// Deletes devices of a user (and with them their tokens, keys and to-device inboxes), and
/// tells everyone who tracks the user's devices. Unknown device IDs are skipped.
pub async fn delete_devices(
    server: &Server,
    user_id: &UserId,
    device_ids: Vec<OwnedDeviceId>,
) -> Result<()> {
    let user = user_id.to_string();
    let device_ids: Vec<String> = device_ids.into_iter().map(String::from).collect();
    let own = server.server_name().to_string();
    server
        .store
        .write(move |tx| delete_devices_in_tx(tx, &own, &user, &device_ids))
        .await?;
    server.tokens.invalidate();
    Ok(())
}

/// [`delete_devices`] in the caller's write transaction; the caller invalidates the token
/// cache once it committed.
pub fn delete_devices_in_tx(
    tx: &mut WriteTx<'_>,
    own: &str,
    user: &str,
    device_ids: &[String],
) -> Result<()> {
    let existing: Vec<String> = accounts::devices(tx, user)?
        .into_iter()
        .map(|d| d.device_id)
        .filter(|d| device_ids.contains(d))
        .collect();
    for device in &existing {
        accounts::delete_device(tx, user, device)?;
    }
    super::e2ee::devices_deleted_in_tx(tx, own, user, &existing)
}

/// Deletes every device of a user but `keep`, in a write transaction.
fn delete_devices_except_in_tx(
    tx: &mut crate::store::WriteTx<'_>,
    own: &str,
    user: &str,
    keep: Option<&str>,
) -> Result<()> {
    let gone: Vec<String> = accounts::devices(tx, user)?
        .into_iter()
        .map(|d| d.device_id)
        .filter(|d| Some(d.as_str()) != keep)
        .collect();
    accounts::delete_devices_except(tx, user, keep)?;
    super::e2ee::devices_deleted_in_tx(tx, own, user, &gone)
}

/// Swaps a refresh token for a new access + refresh token pair.
pub async fn refresh(server: &Server, refresh_token: &str) -> Result<Session> {
    let hash = token_hash(refresh_token);
    let device = DeviceRequest {
        refresh_token: true,
        ..Default::default()
    };
    let mut tokens = new_tokens(&device);
    let issued = tokens.clone();
    let owner = server
        .store
        .write(move |tx| {
            let Some(accounts::DeviceOwner {
                user_id: user,
                device_id,
            }) = accounts::take_refresh_token(tx, &hash)?
            else {
                return Err(Error::new(ErrorCode::UnknownToken, "Unknown refresh token"));
            };
            // An OAuth session rotates at the token endpoint, which tracks reuse; here its
            // token would escape that (the error rolls the take back).
            if crate::store::oauth::session(tx, &user, &device_id)?.is_some() {
                return Err(Error::new(
                    ErrorCode::UnknownToken,
                    "This session refreshes at the OAuth 2.0 token endpoint",
                ));
            }
            let now = now_ms();
            accounts::insert_access_token(
                tx,
                &token_hash(&issued.access),
                &user,
                &device_id,
                Some(now + REFRESHABLE_TOKEN_MS),
                now,
            )?;
            if let Some(refresh) = &issued.refresh {
                accounts::insert_refresh_token(tx, &token_hash(refresh), &user, &device_id, now)?;
            }
            Ok((user, device_id))
        })
        .await?;
    server.tokens.invalidate();
    tokens.device_id = owner.1;
    let user_id = OwnedUserId::try_from(owner.0).map_err(|err| Error::internal(err.to_string()))?;
    Ok(tokens.into_session(user_id))
}

/// Sets a new password; optionally logs out every other device.
pub async fn change_password(
    server: &Server,
    user_id: &UserId,
    keep_device: Option<&DeviceId>,
    password: String,
    logout_devices: bool,
) -> Result<()> {
    let hash = hash_password(password).await?;
    let (user, keep) = (user_id.to_string(), keep_device.map(DeviceId::to_string));
    let own = server.server_name().to_string();
    server
        .store
        .write(move |tx| {
            accounts::set_password(tx, &user, &hash)?;
            if logout_devices {
                delete_devices_except_in_tx(tx, &own, &user, keep.as_deref())?;
            }
            Ok(())
        })
        .await?;
    server.tokens.invalidate();
    Ok(())
}

/// Deactivates an account: no more logins, every session ended, every room left.
pub async fn deactivate(server: &Server, user_id: OwnedUserId) -> Result<()> {
    let user = user_id.to_string();
    let rooms = server
        .store
        .read(move |conn| {
            let mut rooms = crate::store::state::rooms_with_membership(conn, &user, "join")?;
            rooms.extend(crate::store::state::rooms_with_membership(
                conn, &user, "invite",
            )?);
            Ok(rooms)
        })
        .await?;
    for room in rooms {
        let room_id =
            ruma::OwnedRoomId::try_from(room).map_err(|err| Error::internal(err.to_string()))?;
        if let Err(err) = super::membership::change(
            server,
            room_id,
            user_id.clone(),
            user_id.clone(),
            super::membership::Membership::Leave,
            None,
            Default::default(),
            None,
        )
        .await
        {
            tracing::warn!(user = %user_id, error = %err, "leaving room on deactivation failed");
        }
    }
    let user = user_id.to_string();
    server
        .store
        .write(move |tx| accounts::deactivate(tx, &user))
        .await?;
    server.tokens.invalidate();
    tracing::info!(user = %user_id, "deactivated user");
    Ok(())
}

/// The devices of a user.
pub async fn devices(server: &Server, user_id: &UserId) -> Result<Vec<accounts::DeviceRow>> {
    let user = user_id.to_string();
    server
        .store
        .read(move |conn| accounts::devices(conn, &user))
        .await
}

/// Renames one of a user's devices (`M_NOT_FOUND` when they have no such device); their
/// room-mates' device lists learn of it.
pub async fn rename_device(
    server: &Server,
    user_id: &UserId,
    device_id: &DeviceId,
    display_name: Option<String>,
) -> Result<()> {
    let (user, device_id) = (user_id.to_string(), device_id.to_string());
    let own = server.server_name().to_string();
    let renamed = server
        .store
        .write(move |tx| {
            let renamed = accounts::rename_device(tx, &user, &device_id, display_name.as_deref())?;
            if renamed {
                super::e2ee::device_changed_in_tx(tx, &own, &user, &device_id, false)?;
            }
            Ok(renamed)
        })
        .await?;
    if !renamed {
        return Err(Error::not_found("No such device"));
    }
    Ok(())
}

/// Whether a registration token may be used now (exists, not expired, uses left).
pub async fn registration_token_valid(server: &Server, token: String) -> Result<bool> {
    server
        .store
        .read(move |conn| accounts::registration_token_valid(conn, &token, now_ms()))
        .await
}
