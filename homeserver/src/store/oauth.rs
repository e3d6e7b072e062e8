//! The OAuth 2.0 server's tables (migration 0021): registered clients, authorisation codes,
//! which client opened which device's session, and rotated refresh tokens.
//!
//! Codes and tokens are SHA-256 hashes; callers pass the hash.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::{Error, Result};
use crate::store::accounts::DeviceOwner;

/// A registered client.
#[derive(Debug, Clone)]
pub struct ClientRow {
    /// The `client_id` handed out.
    pub client_id: String,
    /// `client_name`, if given.
    pub client_name: Option<String>,
    /// `client_uri`.
    pub client_uri: String,
    /// `web` or `native`.
    pub application_type: String,
    /// The registered redirect URIs.
    pub redirect_uris: Vec<String>,
    /// The grant types it may use.
    pub grant_types: Vec<String>,
    /// The registration answer (JSON object text).
    pub metadata: String,
    /// When it registered (ms).
    pub created_ts: i64,
}

fn json_list(raw: String) -> rusqlite::Result<Vec<String>> {
    serde_json::from_str(&raw).map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(err))
    })
}

fn client_row(row: &Row<'_>) -> rusqlite::Result<ClientRow> {
    Ok(ClientRow {
        client_id: row.get(0)?,
        client_name: row.get(1)?,
        client_uri: row.get(2)?,
        application_type: row.get(3)?,
        redirect_uris: json_list(row.get(4)?)?,
        grant_types: json_list(row.get(5)?)?,
        metadata: row.get(6)?,
        created_ts: row.get(7)?,
    })
}

/// Stores a new client.
pub fn insert_client(conn: &Connection, client: &ClientRow) -> Result<()> {
    let redirects = serde_json::to_string(&client.redirect_uris)
        .map_err(|err| Error::internal(err.to_string()))?;
    let grants = serde_json::to_string(&client.grant_types)
        .map_err(|err| Error::internal(err.to_string()))?;
    conn.execute(
        "INSERT INTO oauth_clients (client_id, client_name, client_uri, application_type,
             redirect_uris, grant_types, metadata, created_ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            client.client_id,
            client.client_name,
            client.client_uri,
            client.application_type,
            redirects,
            grants,
            client.metadata,
            client.created_ts
        ],
    )?;
    Ok(())
}

/// One client by ID.
pub fn get_client(conn: &Connection, client_id: &str) -> Result<Option<ClientRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT client_id, client_name, client_uri, application_type, redirect_uris,
                 grant_types, metadata, created_ts
             FROM oauth_clients WHERE client_id = ?1",
        )?
        .query_row(params![client_id], client_row)
        .optional()?)
}

/// A client with how many sessions it holds open now.
#[derive(Debug, Clone)]
pub struct ClientWithSessions {
    /// The client.
    pub client: ClientRow,
    /// Its open sessions.
    pub sessions: i64,
}

/// Every client, oldest first, with how many sessions each holds open now.
pub fn list_clients(conn: &Connection) -> Result<Vec<ClientWithSessions>> {
    let mut stmt = conn.prepare(
        "SELECT client_id, client_name, client_uri, application_type, redirect_uris,
             grant_types, metadata, created_ts,
             (SELECT COUNT(*) FROM oauth_sessions s WHERE s.client_id = c.client_id)
         FROM oauth_clients c ORDER BY created_ts, client_id",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok(ClientWithSessions {
            client: client_row(row)?,
            sessions: row.get(8)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// An authorisation code as stored.
#[derive(Debug, Clone)]
pub struct CodeRow {
    /// The client it was issued to.
    pub client_id: String,
    /// The user who consented.
    pub user_id: String,
    /// The device the scope allocates.
    pub device_id: String,
    /// The granted scope string.
    pub scope: String,
    /// The redirect URI of the authorisation request.
    pub redirect_uri: String,
    /// The PKCE `S256` challenge.
    pub code_challenge: String,
    /// Expiry (ms).
    pub expires_ts: i64,
    /// When it was exchanged (or burnt by a failed exchange), if it was.
    pub used_ts: Option<i64>,
}

/// Stores a new code under its hash, dropping codes that expired an hour or more ago (a used
/// code is kept until then so its reuse is still recognised).
pub fn insert_code(conn: &Connection, hash: &[u8], code: &CodeRow, now: i64) -> Result<()> {
    conn.execute(
        "DELETE FROM oauth_codes WHERE expires_ts < ?1",
        params![now - 3_600_000],
    )?;
    conn.execute(
        "INSERT INTO oauth_codes (code_hash, client_id, user_id, device_id, scope, redirect_uri,
             code_challenge, expires_ts, used_ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL)",
        params![
            hash,
            code.client_id,
            code.user_id,
            code.device_id,
            code.scope,
            code.redirect_uri,
            code.code_challenge,
            code.expires_ts
        ],
    )?;
    Ok(())
}

/// A code by hash.
pub fn get_code(conn: &Connection, hash: &[u8]) -> Result<Option<CodeRow>> {
    Ok(conn
        .query_row(
            "SELECT client_id, user_id, device_id, scope, redirect_uri, code_challenge,
                 expires_ts, used_ts
             FROM oauth_codes WHERE code_hash = ?1",
            params![hash],
            |row| {
                Ok(CodeRow {
                    client_id: row.get(0)?,
                    user_id: row.get(1)?,
                    device_id: row.get(2)?,
                    scope: row.get(3)?,
                    redirect_uri: row.get(4)?,
                    code_challenge: row.get(5)?,
                    expires_ts: row.get(6)?,
                    used_ts: row.get(7)?,
                })
            },
        )
        .optional()?)
}

/// Marks a code used.
pub fn mark_code_used(conn: &Connection, hash: &[u8], now: i64) -> Result<()> {
    conn.execute(
        "UPDATE oauth_codes SET used_ts = ?2 WHERE code_hash = ?1",
        params![hash, now],
    )?;
    Ok(())
}

/// Records (or replaces) which client opened a device's session.
pub fn upsert_session(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    client_id: &str,
    scope: &str,
    now: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO oauth_sessions (user_id, device_id, client_id, scope, created_ts)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (user_id, device_id) DO UPDATE
         SET client_id = excluded.client_id, scope = excluded.scope,
             created_ts = excluded.created_ts",
        params![user_id, device_id, client_id, scope, now],
    )?;
    conn.execute(
        "DELETE FROM oauth_rotated_refresh_tokens WHERE user_id = ?1 AND device_id = ?2",
        params![user_id, device_id],
    )?;
    Ok(())
}

/// The OAuth session of a device: which client opened it, with what scope.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// The client whose grant opened it.
    pub client_id: String,
    /// The scope granted, space-separated.
    pub scope: String,
}

/// The client and scope of a device's OAuth session, if an OAuth grant opened it.
pub fn session(conn: &Connection, user_id: &str, device_id: &str) -> Result<Option<SessionRow>> {
    Ok(conn
        .query_row(
            "SELECT client_id, scope FROM oauth_sessions WHERE user_id = ?1 AND device_id = ?2",
            params![user_id, device_id],
            |row| {
                Ok(SessionRow {
                    client_id: row.get(0)?,
                    scope: row.get(1)?,
                })
            },
        )
        .optional()?)
}

/// The devices of a user's OAuth sessions.
pub fn user_sessions(conn: &Connection, user_id: &str) -> Result<Vec<String>> {
    let mut stmt =
        conn.prepare("SELECT device_id FROM oauth_sessions WHERE user_id = ?1 ORDER BY device_id")?;
    let rows = stmt.query_map(params![user_id], |row| row.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The owner of a current (unused) refresh token.
pub fn refresh_owner(conn: &Connection, hash: &[u8]) -> Result<Option<DeviceOwner>> {
    Ok(conn
        .query_row(
            "SELECT user_id, device_id FROM refresh_tokens WHERE token_hash = ?1",
            params![hash],
            |row| {
                Ok(DeviceOwner {
                    user_id: row.get(0)?,
                    device_id: row.get(1)?,
                })
            },
        )
        .optional()?)
}

/// A rotated refresh token: its owner and the hash of the token that replaced it.
#[derive(Debug, Clone)]
pub struct Rotated {
    /// The user.
    pub user_id: String,
    /// The device.
    pub device_id: String,
    /// The replacing token's hash.
    pub successor_hash: Vec<u8>,
}

/// Looks up a rotated refresh token.
pub fn rotated(conn: &Connection, hash: &[u8]) -> Result<Option<Rotated>> {
    Ok(conn
        .query_row(
            "SELECT user_id, device_id, successor_hash FROM oauth_rotated_refresh_tokens
             WHERE token_hash = ?1",
            params![hash],
            |row| {
                Ok(Rotated {
                    user_id: row.get(0)?,
                    device_id: row.get(1)?,
                    successor_hash: row.get(2)?,
                })
            },
        )
        .optional()?)
}

/// Records that `hash` was swapped for `successor` (or, for a retried swap, now points at the
/// newer successor).
pub fn record_rotation(
    conn: &Connection,
    hash: &[u8],
    user_id: &str,
    device_id: &str,
    successor: &[u8],
    now: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO oauth_rotated_refresh_tokens
             (token_hash, user_id, device_id, successor_hash, rotated_ts)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (token_hash) DO UPDATE SET successor_hash = excluded.successor_hash",
        params![hash, user_id, device_id, successor, now],
    )?;
    Ok(())
}
