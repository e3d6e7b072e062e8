//! Users, devices, access and refresh tokens, registration tokens.
//!
//! Tokens are stored as SHA-256 hashes (see the migration); callers pass the hash.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;

/// A user's login facts.
#[derive(Debug)]
pub struct UserRow {
    /// Argon2 PHC string, `None` for accounts that cannot log in with a password.
    pub password_hash: Option<String>,
    /// Whether the account was deactivated.
    pub deactivated: bool,
}

/// Who an access token belongs to.
#[derive(Debug, Clone)]
pub struct TokenOwner {
    /// The user.
    pub user_id: String,
    /// The device the token was issued to.
    pub device_id: String,
    /// Expiry, for tokens issued with a refresh token.
    pub expires_ts: Option<i64>,
}

/// The user and device a refresh token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceOwner {
    /// The user.
    pub user_id: String,
    /// The device.
    pub device_id: String,
}

/// Creates a user; `Ok(false)` if the ID is taken.
pub fn create_user(
    conn: &Connection,
    user_id: &str,
    password_hash: Option<&str>,
    now: i64,
) -> Result<bool> {
    // The display name starts as the localpart, as clients expect of a new account (they show
    // it in member lists and mentions until the user picks another).
    let localpart = user_id
        .strip_prefix('@')
        .and_then(|rest| rest.split(':').next())
        .unwrap_or(user_id);
    let inserted = conn.execute(
        "INSERT INTO users (user_id, password_hash, created_ts, displayname)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_id) DO NOTHING",
        params![user_id, password_hash, now, localpart],
    )?;
    Ok(inserted == 1)
}

/// Loads a user's login facts.
pub fn get_user(conn: &Connection, user_id: &str) -> Result<Option<UserRow>> {
    Ok(conn
        .query_row(
            "SELECT password_hash, deactivated FROM users WHERE user_id = ?1",
            params![user_id],
            |row| {
                Ok(UserRow {
                    password_hash: row.get(0)?,
                    deactivated: row.get(1)?,
                })
            },
        )
        .optional()?)
}

/// Replaces a user's password hash.
pub fn set_password(conn: &Connection, user_id: &str, hash: &str) -> Result<()> {
    conn.execute(
        "UPDATE users SET password_hash = ?2 WHERE user_id = ?1",
        params![user_id, hash],
    )?;
    Ok(())
}

/// Marks a user deactivated and removes every device (and so every token).
pub fn deactivate(conn: &Connection, user_id: &str) -> Result<()> {
    conn.execute(
        "UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = ?1",
        params![user_id],
    )?;
    conn.execute("DELETE FROM devices WHERE user_id = ?1", params![user_id])?;
    conn.execute(
        "DELETE FROM lazy_members_sent WHERE user_id = ?1",
        params![user_id],
    )?;
    Ok(())
}

/// Creates a device or, if it exists, updates its display name when one is given; `true` when
/// the device is new (a device-list change others must hear about).
pub fn upsert_device(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    display_name: Option<&str>,
    now: i64,
) -> Result<bool> {
    let existed = conn
        .prepare_cached("SELECT 1 FROM devices WHERE user_id = ?1 AND device_id = ?2")?
        .exists(params![user_id, device_id])?;
    conn.execute(
        "INSERT INTO devices (user_id, device_id, display_name, last_seen_ts) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_id, device_id) DO UPDATE
         SET display_name = coalesce(excluded.display_name, display_name), last_seen_ts = excluded.last_seen_ts",
        params![user_id, device_id, display_name, now],
    )?;
    Ok(!existed)
}

/// Removes all tokens of a device (a re-login on the same device ID replaces its session).
pub fn delete_device_tokens(conn: &Connection, user_id: &str, device_id: &str) -> Result<()> {
    conn.execute(
        "DELETE FROM access_tokens WHERE user_id = ?1 AND device_id = ?2",
        params![user_id, device_id],
    )?;
    conn.execute(
        "DELETE FROM refresh_tokens WHERE user_id = ?1 AND device_id = ?2",
        params![user_id, device_id],
    )?;
    Ok(())
}

/// Deletes a device and, through the foreign keys, its tokens.
pub fn delete_device(conn: &Connection, user_id: &str, device_id: &str) -> Result<()> {
    conn.execute(
        "DELETE FROM devices WHERE user_id = ?1 AND device_id = ?2",
        params![user_id, device_id],
    )?;
    conn.execute(
        "DELETE FROM lazy_members_sent WHERE user_id = ?1 AND device_id = ?2",
        params![user_id, device_id],
    )?;
    Ok(())
}

/// Deletes every device of a user except `keep`.
pub fn delete_devices_except(conn: &Connection, user_id: &str, keep: Option<&str>) -> Result<()> {
    conn.execute(
        "DELETE FROM devices WHERE user_id = ?1 AND (?2 IS NULL OR device_id != ?2)",
        params![user_id, keep],
    )?;
    conn.execute(
        "DELETE FROM lazy_members_sent WHERE user_id = ?1 AND (?2 IS NULL OR device_id != ?2)",
        params![user_id, keep],
    )?;
    Ok(())
}

/// Stores an access token hash.
pub fn insert_access_token(
    conn: &Connection,
    hash: &[u8],
    user_id: &str,
    device_id: &str,
    expires_ts: Option<i64>,
    now: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO access_tokens (token_hash, user_id, device_id, expires_ts, created_ts)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![hash, user_id, device_id, expires_ts, now],
    )?;
    Ok(())
}

/// Stores a refresh token hash.
pub fn insert_refresh_token(
    conn: &Connection,
    hash: &[u8],
    user_id: &str,
    device_id: &str,
    now: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts) VALUES (?1, ?2, ?3, ?4)",
        params![hash, user_id, device_id, now],
    )?;
    Ok(())
}

/// Consumes a refresh token: returns its owner and deletes it, along with the device's
/// current access tokens (they are being replaced).
pub fn take_refresh_token(conn: &Connection, hash: &[u8]) -> Result<Option<DeviceOwner>> {
    let owner = conn
        .query_row(
            "DELETE FROM refresh_tokens WHERE token_hash = ?1 RETURNING user_id, device_id",
            params![hash],
            |row| {
                Ok(DeviceOwner {
                    user_id: row.get(0)?,
                    device_id: row.get(1)?,
                })
            },
        )
        .optional()?;
    if let Some(owner) = &owner {
        conn.execute(
            "DELETE FROM access_tokens WHERE user_id = ?1 AND device_id = ?2",
            params![owner.user_id, owner.device_id],
        )?;
    }
    Ok(owner)
}

/// Looks up an access token hash.
pub fn token_owner(conn: &Connection, hash: &[u8]) -> Result<Option<TokenOwner>> {
    Ok(conn
        .query_row(
            "SELECT user_id, device_id, expires_ts FROM access_tokens WHERE token_hash = ?1",
            params![hash],
            |row| {
                Ok(TokenOwner {
                    user_id: row.get(0)?,
                    device_id: row.get(1)?,
                    expires_ts: row.get(2)?,
                })
            },
        )
        .optional()?)
}

/// Deletes one access token.
pub fn delete_access_token(conn: &Connection, hash: &[u8]) -> Result<()> {
    conn.execute(
        "DELETE FROM access_tokens WHERE token_hash = ?1",
        params![hash],
    )?;
    Ok(())
}

/// Ensures the configured registration tokens exist (unlimited uses).
pub fn ensure_registration_token(conn: &Connection, token: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO registration_tokens (token) VALUES (?1) ON CONFLICT (token) DO NOTHING",
        params![token],
    )?;
    Ok(())
}

/// Whether a registration token may be used now.
pub fn registration_token_valid(conn: &Connection, token: &str, now: i64) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM registration_tokens WHERE token = ?1
             AND (uses_allowed IS NULL OR completed < uses_allowed)
             AND (expiry_ts IS NULL OR expiry_ts > ?2)",
            params![token, now],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Counts one completed registration against a token.
pub fn use_registration_token(conn: &Connection, token: &str) -> Result<()> {
    conn.execute(
        "UPDATE registration_tokens SET completed = completed + 1 WHERE token = ?1",
        params![token],
    )?;
    Ok(())
}

/// Sets or clears a profile field (`displayname` or `avatar_url`).
pub fn set_profile(
    conn: &Connection,
    user_id: &str,
    displayname: Option<&str>,
    avatar_url: Option<&str>,
) -> Result<()> {
    conn.execute(
        "UPDATE users SET displayname = ?2, avatar_url = ?3 WHERE user_id = ?1",
        params![user_id, displayname, avatar_url],
    )?;
    Ok(())
}

/// A user's profile fields, as stored.
#[derive(Debug, Clone, Default)]
pub struct ProfileRow {
    /// The display name, when set.
    pub displayname: Option<String>,
    /// The avatar's `mxc://` URI, when set.
    pub avatar_url: Option<String>,
}

/// A user's profile, `None` if the user does not exist.
pub fn get_profile(conn: &Connection, user_id: &str) -> Result<Option<ProfileRow>> {
    Ok(conn
        .query_row(
            "SELECT displayname, avatar_url FROM users WHERE user_id = ?1",
            params![user_id],
            |row| {
                Ok(ProfileRow {
                    displayname: row.get(0)?,
                    avatar_url: row.get(1)?,
                })
            },
        )
        .optional()?)
}

/// One of a user's devices, as `/devices` lists it.
#[derive(Debug, Clone)]
pub struct DeviceRow {
    /// The device ID.
    pub device_id: String,
    /// The name the user gave it.
    pub display_name: Option<String>,
    /// When it was last used (ms), if known.
    pub last_seen_ts: Option<i64>,
    /// From where it was last used, if known.
    pub last_seen_ip: Option<String>,
}

/// A user's devices, by ID.
pub fn devices(conn: &Connection, user_id: &str) -> Result<Vec<DeviceRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = ?1
         ORDER BY device_id",
    )?;
    let rows = stmt.query_map(params![user_id], |r| {
        Ok(DeviceRow {
            device_id: r.get(0)?,
            display_name: r.get(1)?,
            last_seen_ts: r.get(2)?,
            last_seen_ip: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Renames a device; `Ok(false)` when the user has no such device.
pub fn rename_device(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    display_name: Option<&str>,
) -> Result<bool> {
    Ok(conn.execute(
        "UPDATE devices SET display_name = ?3 WHERE user_id = ?1 AND device_id = ?2",
        params![user_id, device_id, display_name],
    )? == 1)
}
