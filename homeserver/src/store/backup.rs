//! Storage of server-side room key backups (`/room_keys`).
//!
//! A user's backup versions are numbered from 1 and never reused; a deleted version keeps its
//! row with `deleted = 1` (see migration 0005). Every function takes the owning user, so one
//! user's backups cannot be reached through another's requests. `auth_data` and
//! `session_data` are opaque client JSON, stored as text.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::Result;

/// One backup version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRow {
    /// The version number (sent to clients as a decimal string).
    pub version: i64,
    /// The backup algorithm the client chose.
    pub algorithm: String,
    /// The `auth_data` object as JSON text.
    pub auth_data: String,
    /// Change counter of the version's keys.
    pub etag: i64,
    /// Whether the version was deleted.
    pub deleted: bool,
}

/// One backed-up session key: the replacement-rule metadata plus the encrypted data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// Index of the first message the key can decrypt.
    pub first_message_index: i64,
    /// How many times the key was forwarded between devices.
    pub forwarded_count: i64,
    /// Whether the uploading device had verified the key's origin.
    pub is_verified: bool,
    /// The encrypted `session_data` object as JSON text.
    pub session_data: String,
}

fn version_from_row(row: &Row<'_>) -> rusqlite::Result<VersionRow> {
    Ok(VersionRow {
        version: row.get(0)?,
        algorithm: row.get(1)?,
        auth_data: row.get(2)?,
        etag: row.get(3)?,
        deleted: row.get(4)?,
    })
}

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        first_message_index: row.get(0)?,
        forwarded_count: row.get(1)?,
        is_verified: row.get(2)?,
        session_data: row.get(3)?,
    })
}

/// Creates the user's next version (one above any version they ever had) and returns it.
pub fn create_version(
    conn: &Connection,
    user_id: &str,
    algorithm: &str,
    auth_data: &str,
) -> Result<i64> {
    let version: i64 = conn
        .prepare_cached(
            "SELECT coalesce(max(version), 0) + 1 FROM room_key_backup_versions WHERE user_id = ?1",
        )?
        .query_row(params![user_id], |r| r.get(0))?;
    conn.prepare_cached(
        "INSERT INTO room_key_backup_versions (user_id, version, algorithm, auth_data)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![user_id, version, algorithm, auth_data])?;
    Ok(version)
}

/// The user's current version: the newest one not deleted.
pub fn current_version(conn: &Connection, user_id: &str) -> Result<Option<VersionRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT version, algorithm, auth_data, etag, deleted FROM room_key_backup_versions
             WHERE user_id = ?1 AND deleted = 0 ORDER BY version DESC LIMIT 1",
        )?
        .query_row(params![user_id], version_from_row)
        .optional()?)
}

/// One of the user's versions, deleted or not.
pub fn get_version(conn: &Connection, user_id: &str, version: i64) -> Result<Option<VersionRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT version, algorithm, auth_data, etag, deleted FROM room_key_backup_versions
             WHERE user_id = ?1 AND version = ?2",
        )?
        .query_row(params![user_id, version], version_from_row)
        .optional()?)
}

/// Replaces a version's `auth_data`.
pub fn set_auth_data(
    conn: &Connection,
    user_id: &str,
    version: i64,
    auth_data: &str,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE room_key_backup_versions SET auth_data = ?3 WHERE user_id = ?1 AND version = ?2",
    )?
    .execute(params![user_id, version, auth_data])?;
    Ok(())
}

/// Deletes a version's keys and marks it deleted (its number stays taken).
pub fn delete_version(conn: &Connection, user_id: &str, version: i64) -> Result<()> {
    conn.prepare_cached("DELETE FROM room_key_backup_keys WHERE user_id = ?1 AND version = ?2")?
        .execute(params![user_id, version])?;
    conn.prepare_cached(
        "UPDATE room_key_backup_versions SET deleted = 1, auth_data = '{}'
         WHERE user_id = ?1 AND version = ?2",
    )?
    .execute(params![user_id, version])?;
    Ok(())
}

/// Records that a version's keys changed.
pub fn bump_etag(conn: &Connection, user_id: &str, version: i64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE room_key_backup_versions SET etag = etag + 1 WHERE user_id = ?1 AND version = ?2",
    )?
    .execute(params![user_id, version])?;
    Ok(())
}

/// Number of keys in a version.
pub fn count_keys(conn: &Connection, user_id: &str, version: i64) -> Result<i64> {
    Ok(conn
        .prepare_cached(
            "SELECT count(*) FROM room_key_backup_keys WHERE user_id = ?1 AND version = ?2",
        )?
        .query_row(params![user_id, version], |r| r.get(0))?)
}

/// One stored session key.
pub fn get_key(
    conn: &Connection,
    user_id: &str,
    version: i64,
    room_id: &str,
    session_id: &str,
) -> Result<Option<KeyRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT first_message_index, forwarded_count, is_verified, session_data
             FROM room_key_backup_keys
             WHERE user_id = ?1 AND version = ?2 AND room_id = ?3 AND session_id = ?4",
        )?
        .query_row(params![user_id, version, room_id, session_id], key_from_row)
        .optional()?)
}

/// Inserts or replaces one session key (the caller applied the replacement rules).
pub fn put_key(
    conn: &Connection,
    user_id: &str,
    version: i64,
    room_id: &str,
    session_id: &str,
    key: &KeyRow,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO room_key_backup_keys (user_id, version, room_id, session_id,
             first_message_index, forwarded_count, is_verified, session_data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
             first_message_index = excluded.first_message_index,
             forwarded_count = excluded.forwarded_count,
             is_verified = excluded.is_verified,
             session_data = excluded.session_data",
    )?
    .execute(params![
        user_id,
        version,
        room_id,
        session_id,
        key.first_message_index,
        key.forwarded_count,
        key.is_verified,
        key.session_data,
    ])?;
    Ok(())
}

/// A backed-up key with the session it belongs to.
#[derive(Debug, Clone)]
pub struct SessionKeyRow {
    /// The room of the session.
    pub room_id: String,
    /// The Megolm session.
    pub session_id: String,
    /// The key.
    pub key: KeyRow,
}

/// The keys of a version, optionally only one room's or one session's, ordered by room and
/// session.
pub fn keys(
    conn: &Connection,
    user_id: &str,
    version: i64,
    room_id: Option<&str>,
    session_id: Option<&str>,
) -> Result<Vec<SessionKeyRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified,
             session_data
         FROM room_key_backup_keys
         WHERE user_id = ?1 AND version = ?2
           AND (?3 IS NULL OR room_id = ?3) AND (?4 IS NULL OR session_id = ?4)
         ORDER BY room_id, session_id",
    )?;
    let rows = stmt.query_map(params![user_id, version, room_id, session_id], |r| {
        Ok(SessionKeyRow {
            room_id: r.get(0)?,
            session_id: r.get(1)?,
            key: KeyRow {
                first_message_index: r.get(2)?,
                forwarded_count: r.get(3)?,
                is_verified: r.get(4)?,
                session_data: r.get(5)?,
            },
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Deletes a version's keys, optionally only one room's or one session's; returns how many.
pub fn delete_keys(
    conn: &Connection,
    user_id: &str,
    version: i64,
    room_id: Option<&str>,
    session_id: Option<&str>,
) -> Result<usize> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM room_key_backup_keys WHERE user_id = ?1 AND version = ?2
               AND (?3 IS NULL OR room_id = ?3) AND (?4 IS NULL OR session_id = ?4)",
        )?
        .execute(params![user_id, version, room_id, session_id])?)
}
