//! The token endpoint's grants (authorisation code with PKCE, refresh token with rotation and
//! reuse detection, device code), the device authorisation endpoint, and revocation.
//!
//! Every check of a code or refresh token runs in the write transaction that consumes it,
//! so two racing exchanges of one code cannot both succeed. A refusal that must still change
//! something (a code burnt, a session revoked on reuse) is returned as a value from the
//! transaction, which commits, and only then becomes the error.

use std::collections::HashMap;
use std::sync::Mutex;

use ruma::UserId;
use serde::{Deserialize, Serialize};

use super::super::{Server, accounts};
use super::clients::{self, Client};
use super::{ACCESS_TOKEN_TTL_MS, PREFIX};
use crate::error::{Error, Result};
use crate::matrix::oauth::{self, GRANT_DEVICE_CODE, Scope};
use crate::store::oauth as store;
use crate::store::{WriteTx, accounts as account_store};
use crate::util::{now_ms, random_string};

/// How long a device code and its user code stay valid.
const DEVICE_CODE_TTL_MS: i64 = 10 * 60 * 1000;

/// The polling interval the device authorisation response asks for (seconds).
const DEVICE_POLL_INTERVAL_SECS: i64 = 2;

/// A poll sooner than this after the previous one is answered `slow_down` (RFC 8628 3.5).
const DEVICE_MIN_POLL_GAP_MS: i64 = 1000;

/// Pending device codes held at most; beyond it new requests are refused (`slow_down` is
/// for polls; a full table answers `temporarily_unavailable`).
const DEVICE_CODES_MAX: usize = 10_000;

/// The token endpoint's form body (RFC 6749 sections 4.1.3 and 6, RFC 8628 section 3.4).
#[derive(Debug, Default, Deserialize)]
pub struct TokenRequest {
    /// Which grant.
    pub grant_type: Option<String>,
    /// The client.
    pub client_id: Option<String>,
    /// `authorization_code`: the code.
    pub code: Option<String>,
    /// `authorization_code`: the redirect URI of the authorisation request.
    pub redirect_uri: Option<String>,
    /// `authorization_code`: the PKCE verifier.
    pub code_verifier: Option<String>,
    /// `refresh_token`: the refresh token.
    pub refresh_token: Option<String>,
    /// Device grant: the device code.
    pub device_code: Option<String>,
    /// `refresh_token`: a narrower scope (only the same scope is accepted).
    pub scope: Option<String>,
}

/// A successful token response (RFC 6749 section 5.1).
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds the access token lives.
    pub expires_in: i64,
    /// The refresh token.
    pub refresh_token: String,
    /// The granted scope.
    pub scope: String,
}

fn token_response(access: String, refresh: String, scope: String) -> TokenResponse {
    TokenResponse {
        access_token: access,
        token_type: "Bearer",
        expires_in: ACCESS_TOKEN_TTL_MS / 1000,
        refresh_token: refresh,
        scope,
    }
}

/// What a transaction decided about a grant.
enum Outcome {
    /// Tokens issued: access, refresh, scope.
    Issued(String, String, String),
    /// `invalid_grant`, with why.
    Refused(&'static str),
    /// A reused code or refresh token: its session was revoked.
    Reused(&'static str),
}

impl Outcome {
    fn into_result(self, server: &Server) -> Result<TokenResponse> {
        match self {
            Outcome::Issued(access, refresh, scope) => {
                server.tokens.invalidate();
                Ok(token_response(access, refresh, scope))
            }
            Outcome::Refused(why) => Err(Error::oauth("invalid_grant", why)),
            Outcome::Reused(why) => {
                server.tokens.invalidate();
                Err(Error::oauth("invalid_grant", why))
            }
        }
    }
}

/// # The token endpoint
pub async fn token(server: &Server, request: TokenRequest) -> Result<TokenResponse> {
    let grant = request
        .grant_type
        .clone()
        .ok_or_else(|| Error::oauth("invalid_request", "grant_type is required"))?;
    if !oauth::GRANT_TYPES.contains(&grant.as_str()) {
        return Err(Error::oauth(
            "unsupported_grant_type",
            format!("grant_type {grant:?} is not supported"),
        ));
    }
    let client = clients::require(server, request.client_id.as_deref()).await?;
    if !client.may_use(&grant) {
        return Err(Error::oauth(
            "unauthorized_client",
            format!("The client did not register for the {grant} grant"),
        ));
    }
    match grant.as_str() {
        "authorization_code" => authorization_code(server, &client, request).await,
        "refresh_token" => refresh(server, &client, request).await,
        _ => device_code(server, &client, request).await,
    }
}

fn required(value: Option<String>, name: &str) -> Result<String> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Error::oauth("invalid_request", format!("{name} is required")))
}

/// Opens the session a grant allows: the device (new or reused), its tokens, and the record
/// of which client opened it.
fn open_session_in_tx(
    tx: &mut WriteTx<'_>,
    own: &str,
    user_id: &str,
    client_id: &str,
    scope: &Scope,
    now: i64,
) -> Result<Outcome> {
    match account_store::get_user(tx, user_id)? {
        Some(user) if !user.deactivated => {}
        _ => {
            return Ok(Outcome::Refused(
                "The account no longer exists or was deactivated",
            ));
        }
    }
    let (access, refresh) =
        accounts::open_session_in_tx(tx, own, user_id, &scope.device_id, ACCESS_TOKEN_TTL_MS, now)?;
    let granted = scope.to_scope_string();
    store::upsert_session(tx, user_id, &scope.device_id, client_id, &granted, now)?;
    Ok(Outcome::Issued(access, refresh, granted))
}

/// Ends an OAuth session: deletes its device (and so its tokens) if `client_id` opened it.
fn revoke_session_in_tx(
    tx: &mut WriteTx<'_>,
    own: &str,
    user_id: &str,
    device_id: &str,
    client_id: Option<&str>,
) -> Result<()> {
    let opened_by = store::session(tx, user_id, device_id)?.map(|s| s.client_id);
    if opened_by.is_some() && (client_id.is_none() || opened_by.as_deref() == client_id) {
        accounts::delete_devices_in_tx(tx, own, user_id, &[device_id.to_owned()])?;
        tracing::warn!(user = %user_id, device = %device_id, "OAuth session revoked on token reuse");
    }
    Ok(())
}

/// `authorization_code`: RFC 6749 section 4.1.3 with PKCE (RFC 7636 section 4.6).
async fn authorization_code(
    server: &Server,
    client: &Client,
    request: TokenRequest,
) -> Result<TokenResponse> {
    let code = required(request.code, "code")?;
    let redirect_uri = required(request.redirect_uri, "redirect_uri")?;
    let verifier = required(request.code_verifier, "code_verifier")?;
    let hash = accounts::token_hash(&code);
    let client_id = client.row.client_id.clone();
    let own = server.server_name().to_string();
    let outcome = server
        .store
        .write(move |tx| {
            let now = now_ms();
            let Some(grant) = store::get_code(tx, &hash)? else {
                return Ok(Outcome::Refused("Unknown authorisation code"));
            };
            if grant.used_ts.is_some() {
                // RFC 6749 4.1.2: a code used twice revokes what it granted.
                let client = grant.client_id.clone();
                revoke_session_in_tx(tx, &own, &grant.user_id, &grant.device_id, Some(&client))?;
                return Ok(Outcome::Reused(
                    "The authorisation code was already used; its session is revoked",
                ));
            }
            // Any exchange attempt burns the code, so a stolen code cannot be tried again.
            store::mark_code_used(tx, &hash, now)?;
            if grant.client_id != client_id {
                return Ok(Outcome::Refused("The code was issued to another client"));
            }
            if grant.expires_ts <= now {
                return Ok(Outcome::Refused("The authorisation code has expired"));
            }
            if grant.redirect_uri != redirect_uri {
                return Ok(Outcome::Refused(
                    "redirect_uri differs from the authorisation request's",
                ));
            }
            if !oauth::pkce_matches(&verifier, &grant.code_challenge) {
                return Ok(Outcome::Refused(
                    "code_verifier does not match the code_challenge",
                ));
            }
            let Ok(scope) = oauth::parse_scope(&grant.scope) else {
                return Ok(Outcome::Refused("The code's scope is no longer valid"));
            };
            open_session_in_tx(tx, &own, &grant.user_id, &client_id, &scope, now)
        })
        .await?;
    outcome.into_result(server)
}

/// `refresh_token`: rotation with reuse detection (spec "Refresh token grant"). A current
/// token is swapped for a new pair and remembered with its successor; an old token whose
/// successor is still unused is a retry of a swap whose answer was lost and is served again
/// (the spec's MUST); an old token whose successor was used is reuse, and the session ends.
async fn refresh(server: &Server, client: &Client, request: TokenRequest) -> Result<TokenResponse> {
    let token = required(request.refresh_token, "refresh_token")?;
    let hash = accounts::token_hash(&token);
    let client_id = client.row.client_id.clone();
    let asked_scope = request.scope;
    let own = server.server_name().to_string();
    let outcome = server
        .store
        .write(move |tx| {
            let now = now_ms();
            let (user, device, replaced) = if let Some(owner) = store::refresh_owner(tx, &hash)? {
                (owner.user_id, owner.device_id, None)
            } else if let Some(rotated) = store::rotated(tx, &hash)? {
                if store::refresh_owner(tx, &rotated.successor_hash)?.is_none() {
                    let client = store::session(tx, &rotated.user_id, &rotated.device_id)?
                        .map(|s| s.client_id);
                    if client.as_deref() == Some(client_id.as_str()) {
                        revoke_session_in_tx(
                            tx,
                            &own,
                            &rotated.user_id,
                            &rotated.device_id,
                            Some(&client_id),
                        )?;
                        return Ok(Outcome::Reused(
                            "The refresh token was already used; the session is revoked",
                        ));
                    }
                    return Ok(Outcome::Refused("Unknown refresh token"));
                }
                let successor = rotated.successor_hash.clone();
                (rotated.user_id, rotated.device_id, Some(successor))
            } else {
                return Ok(Outcome::Refused("Unknown refresh token"));
            };
            let Some(store::SessionRow {
                client_id: session_client,
                scope,
            }) = store::session(tx, &user, &device)?
            else {
                return Ok(Outcome::Refused(
                    "This refresh token was not issued by an OAuth grant",
                ));
            };
            if session_client != client_id {
                return Ok(Outcome::Refused(
                    "The refresh token belongs to another client",
                ));
            }
            if asked_scope.as_deref().is_some_and(|s| {
                oauth::parse_scope(s).ok().map(|s| s.to_scope_string()) != Some(scope.clone())
            }) {
                return Ok(Outcome::Refused("The scope can only be the one granted"));
            }
            // The old pair goes (the current token, or the unused successor of a retried
            // one) with the device's access tokens.
            let current = replaced.clone().unwrap_or_else(|| hash.clone());
            account_store::take_refresh_token(tx, &current)?;
            let (access, refresh) =
                accounts::issue_tokens_in_tx(tx, &user, &device, ACCESS_TOKEN_TTL_MS, now)?;
            let new_hash = accounts::token_hash(&refresh);
            store::record_rotation(tx, &hash, &user, &device, &new_hash, now)?;
            if let Some(successor) = &replaced {
                store::record_rotation(tx, successor, &user, &device, &new_hash, now)?;
            }
            Ok(Outcome::Issued(access, refresh, scope))
        })
        .await?;
    outcome.into_result(server)
}

/// The device authorisation endpoint's form body (RFC 8628 section 3.1).
#[derive(Debug, Default, Deserialize)]
pub struct DeviceAuthorizationRequest {
    /// The client.
    pub client_id: Option<String>,
    /// The requested scope.
    pub scope: Option<String>,
}

/// The device authorisation response (RFC 8628 section 3.2).
#[derive(Debug, Serialize)]
pub struct DeviceAuthorizationResponse {
    /// The code the device polls with.
    pub device_code: String,
    /// The code the user types (`XXXX-XXXX`).
    pub user_code: String,
    /// The page where the user types it.
    pub verification_uri: String,
    /// The page with the code filled in.
    pub verification_uri_complete: String,
    /// Seconds both codes live.
    pub expires_in: i64,
    /// Seconds between polls.
    pub interval: i64,
}

/// Where a device grant stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DeviceStatus {
    /// The user has not decided yet.
    Pending,
    /// The user refused.
    Denied,
    /// The user allowed it.
    Approved(String),
}

#[derive(Debug, Clone)]
struct DeviceGrant {
    client_id: String,
    scope: Scope,
    user_code: String,
    expires_ms: i64,
    last_poll_ms: i64,
    status: DeviceStatus,
}

/// Pending device codes (RFC 8628), in memory: keyed by the device code's hash. A restart
/// forgets them; the device then starts again (its poll gets `expired_token`).
#[derive(Default)]
pub struct DeviceCodes {
    inner: Mutex<HashMap<Vec<u8>, DeviceGrant>>,
}

/// A device grant the verification page shows.
#[derive(Debug, Clone)]
pub struct DeviceRequestView {
    /// The device code's hash (the key).
    pub key: Vec<u8>,
    /// The client asking.
    pub client_id: String,
    /// The scope asked for.
    pub scope: Scope,
}

impl DeviceCodes {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<Vec<u8>, DeviceGrant>>> {
        self.inner
            .lock()
            .map_err(|_| Error::internal("device code table poisoned"))
    }

    /// The pending grant a typed user code names, if any and not expired.
    pub fn by_user_code(&self, typed: &str) -> Result<Option<DeviceRequestView>> {
        let code = oauth::normalise_user_code(typed);
        let now = now_ms();
        Ok(self
            .lock()?
            .iter()
            .find(|(_, g)| {
                g.user_code == code && g.expires_ms > now && g.status == DeviceStatus::Pending
            })
            .map(|(key, g)| DeviceRequestView {
                key: key.clone(),
                client_id: g.client_id.clone(),
                scope: g.scope.clone(),
            }))
    }

    /// Records the user's decision: `Some(user)` allowed, `None` refused.
    pub fn decide(&self, key: &[u8], user_id: Option<String>) -> Result<bool> {
        let mut guard = self.lock()?;
        let Some(grant) = guard.get_mut(key) else {
            return Ok(false);
        };
        if grant.status != DeviceStatus::Pending || grant.expires_ms <= now_ms() {
            return Ok(false);
        }
        grant.status = match user_id {
            Some(user) => DeviceStatus::Approved(user),
            None => DeviceStatus::Denied,
        };
        Ok(true)
    }
}

/// # The device authorisation endpoint
pub async fn device_authorization(
    server: &Server,
    request: DeviceAuthorizationRequest,
) -> Result<DeviceAuthorizationResponse> {
    let client = clients::require(server, request.client_id.as_deref()).await?;
    if !client.may_use(GRANT_DEVICE_CODE) {
        return Err(Error::oauth(
            "unauthorized_client",
            "The client did not register for the device code grant",
        ));
    }
    let scope = request
        .scope
        .ok_or_else(|| Error::oauth("invalid_request", "scope is required"))?;
    let scope = oauth::parse_scope(&scope).map_err(|why| Error::oauth("invalid_scope", why))?;
    let device_code = random_string(43);
    let user_code: String = {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        (0..8)
            .map(|_| {
                let alphabet = oauth::USER_CODE_ALPHABET;
                char::from(alphabet[rng.gen_range(0..alphabet.len())])
            })
            .collect()
    };
    let now = now_ms();
    {
        let mut guard = server.oauth.devices.lock()?;
        guard.retain(|_, g| g.expires_ms > now);
        if guard.len() >= DEVICE_CODES_MAX {
            return Err(Error::oauth(
                "temporarily_unavailable",
                "Too many device sign-ins in progress; try again later",
            ));
        }
        guard.insert(
            accounts::token_hash(&device_code),
            DeviceGrant {
                client_id: client.row.client_id.clone(),
                scope,
                user_code: user_code.clone(),
                expires_ms: now + DEVICE_CODE_TTL_MS,
                last_poll_ms: 0,
                status: DeviceStatus::Pending,
            },
        );
    }
    let base = super::issuer(server)?;
    let verification_uri = format!("{}{PREFIX}/link", base.trim_end_matches('/'));
    let shown = oauth::display_user_code(&user_code);
    Ok(DeviceAuthorizationResponse {
        device_code,
        verification_uri_complete: format!("{verification_uri}?user_code={shown}"),
        verification_uri,
        user_code: shown,
        expires_in: DEVICE_CODE_TTL_MS / 1000,
        interval: DEVICE_POLL_INTERVAL_SECS,
    })
}

/// The device code grant: a poll (RFC 8628 section 3.5).
async fn device_code(
    server: &Server,
    client: &Client,
    request: TokenRequest,
) -> Result<TokenResponse> {
    let code = required(request.device_code, "device_code")?;
    let key = accounts::token_hash(&code);
    let now = now_ms();
    let (user_id, scope) = {
        let mut guard = server.oauth.devices.lock()?;
        let Some(grant) = guard.get_mut(&key) else {
            return Err(Error::oauth("invalid_grant", "Unknown device_code"));
        };
        if grant.client_id != client.row.client_id {
            return Err(Error::oauth(
                "invalid_grant",
                "The device_code was issued to another client",
            ));
        }
        if grant.expires_ms <= now {
            guard.remove(&key);
            return Err(Error::oauth("expired_token", "The device_code has expired"));
        }
        let too_soon = now - grant.last_poll_ms < DEVICE_MIN_POLL_GAP_MS;
        grant.last_poll_ms = now;
        match grant.status.clone() {
            DeviceStatus::Pending if too_soon => {
                return Err(Error::oauth("slow_down", "Poll less often"));
            }
            DeviceStatus::Pending => {
                return Err(Error::oauth(
                    "authorization_pending",
                    "The user has not answered yet",
                ));
            }
            DeviceStatus::Denied => {
                guard.remove(&key);
                return Err(Error::oauth("access_denied", "The user refused"));
            }
            DeviceStatus::Approved(user) => {
                let scope = grant.scope.clone();
                guard.remove(&key);
                (user, scope)
            }
        }
    };
    let client_id = client.row.client_id.clone();
    let own = server.server_name().to_string();
    let outcome = server
        .store
        .write(move |tx| open_session_in_tx(tx, &own, &user_id, &client_id, &scope, now_ms()))
        .await?;
    outcome.into_result(server)
}

/// The revocation endpoint's form body (RFC 7009 section 2.1).
#[derive(Debug, Default, Deserialize)]
pub struct RevocationRequest {
    /// The access or refresh token.
    pub token: Option<String>,
    /// `access_token` or `refresh_token`.
    pub token_type_hint: Option<String>,
    /// The client, optional (the spec: revoke even without it or when it differs).
    pub client_id: Option<String>,
}

/// # The revocation endpoint
/// Logs the token's device out (both its tokens go with it); an unknown token is already
/// revoked (200), as RFC 7009 says.
pub async fn revoke(server: &Server, request: RevocationRequest) -> Result<()> {
    let token = required(request.token, "token")?;
    match request.token_type_hint.as_deref() {
        None | Some("access_token" | "refresh_token") => {}
        Some(_) => {
            return Err(Error::oauth(
                "unsupported_token_type",
                "token_type_hint must be access_token or refresh_token",
            ));
        }
    }
    let hash = accounts::token_hash(&token);
    let own = server.server_name().to_string();
    let revoked = server
        .store
        .write(move |tx| {
            let owner = match account_store::token_owner(tx, &hash)? {
                Some(owner) => Some((owner.user_id, owner.device_id)),
                None => store::refresh_owner(tx, &hash)?.map(|o| (o.user_id, o.device_id)),
            };
            let Some((user, device)) = owner else {
                return Ok(None);
            };
            accounts::delete_devices_in_tx(tx, &own, &user, std::slice::from_ref(&device))?;
            Ok(Some((user, device)))
        })
        .await?;
    if let Some((user, device)) = revoked {
        server.tokens.invalidate();
        tracing::info!(%user, %device, "OAuth revocation logged a device out");
    }
    Ok(())
}

/// Ends every OAuth session of a user (their devices are logged out, refresh tokens with
/// them): `appliance oauth revoke`. Returns the devices signed out.
pub async fn revoke_user(server: &Server, user_id: &UserId) -> Result<Vec<String>> {
    let user = user_id.to_string();
    let own = server.server_name().to_string();
    let ended = server
        .store
        .write(move |tx| {
            let devices = store::user_sessions(tx, &user)?;
            accounts::delete_devices_in_tx(tx, &own, &user, &devices)?;
            Ok(devices)
        })
        .await?;
    server.tokens.invalidate();
    tracing::info!(user = %user_id, devices = ended.len(), "OAuth sessions revoked by the admin");
    Ok(ended)
}
