//! Server-side key backup (`/room_keys`): versions and per-session keys with the spec's
//! replacement rules.
//!
//! The server stores what clients encrypted and never interprets `auth_data` or
//! `session_data`. What it does decide: which version is current (the newest not deleted),
//! that keys are only written to the current version, which of two uploads of one session key
//! is kept (spec: verified beats unverified, then the lower `first_message_index`, then the
//! lower `forwarded_count`; a full tie keeps the stored key), and the `etag`/`count` that let a
//! client notice another device's writes. Each operation runs in one writer transaction, so a
//! version cannot be deleted between the check and the write.

use std::collections::BTreeMap;

use ruma::OwnedUserId;
use serde_json::Value;

use rusqlite::Connection;

use super::Server;
use crate::error::{Error, Result};
use crate::store::backup::{self as store, KeyRow, VersionRow};

/// Why a backup request failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Any ordinary failure.
    #[error(transparent)]
    Other(#[from] Error),
    /// Keys were sent to a version that exists but is not the current one: the client's
    /// backup is stale and must learn the current version (spec: 403
    /// `M_WRONG_ROOM_KEYS_VERSION` with `current_version`).
    #[error("backup version {current} is the current one")]
    WrongVersion {
        /// The user's current version.
        current: String,
    },
}

/// A version as `GET /room_keys/version` describes it (and its answer, serialised as it is).
#[derive(Debug, Clone, serde::Serialize)]
pub struct VersionInfo {
    /// The version, as the opaque string clients use.
    pub version: String,
    /// The client's algorithm.
    pub algorithm: String,
    /// The client's `auth_data` object.
    pub auth_data: Value,
    /// Number of keys stored.
    pub count: i64,
    /// Changes whenever the keys change.
    pub etag: String,
}

/// What key writes and deletes answer: the version's new `etag` and `count` (serialised as
/// the answer).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Counts {
    /// Changes whenever the keys change.
    pub etag: String,
    /// Number of keys stored.
    pub count: i64,
}

/// One session key as a client sends and receives it (spec: `KeyBackupData`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SessionKey {
    /// Index of the first message the key can decrypt.
    pub first_message_index: u64,
    /// How many times the key was forwarded between devices.
    pub forwarded_count: u64,
    /// Whether the uploading device had verified the key's origin.
    pub is_verified: bool,
    /// The encrypted data: arbitrary JSON, opaque to the server.
    pub session_data: serde_json::Map<String, Value>,
}

/// Keys by room ID, then session ID.
pub type KeysByRoom = BTreeMap<String, BTreeMap<String, SessionKey>>;

/// Which keys of a version a request addresses: all, one room's, or one session's.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// Only this room's keys.
    pub room_id: Option<String>,
    /// Only this session's key (together with `room_id`).
    pub session_id: Option<String>,
}

/// Parses a version string as issued by [`create_version`]: a positive decimal without
/// leading zeros. Anything else names no version (spec: 404).
fn parse_version(raw: &str) -> Result<i64> {
    raw.parse::<i64>()
        .ok()
        .filter(|v| *v > 0 && v.to_string() == raw)
        .ok_or_else(|| Error::not_found("Unknown backup version"))
}

/// A live (not deleted) version of the user's, or 404.
fn live_version(conn: &Connection, user: &str, raw: &str) -> Result<VersionRow> {
    let version = parse_version(raw)?;
    store::get_version(conn, user, version)?
        .filter(|row| !row.deleted)
        .ok_or_else(|| Error::not_found("Unknown backup version"))
}

fn info(conn: &Connection, user: &str, row: VersionRow) -> Result<VersionInfo> {
    let auth_data = serde_json::from_str(&row.auth_data)
        .map_err(|err| Error::internal(format!("stored auth_data: {err}")))?;
    Ok(VersionInfo {
        version: row.version.to_string(),
        algorithm: row.algorithm,
        auth_data,
        count: store::count_keys(conn, user, row.version)?,
        etag: row.etag.to_string(),
    })
}

fn counts(conn: &Connection, user: &str, version: i64) -> Result<Counts> {
    let etag = store::get_version(conn, user, version)?
        .map(|row| row.etag)
        .ok_or_else(|| Error::not_found("Unknown backup version"))?;
    Ok(Counts {
        etag: etag.to_string(),
        count: store::count_keys(conn, user, version)?,
    })
}

/// Whether an uploaded key should replace the stored one (spec: "Server-side key backups").
pub fn should_replace(stored: &KeyRow, new: &SessionKey) -> bool {
    if stored.is_verified != new.is_verified {
        return new.is_verified;
    }
    let new_index = new.first_message_index as i64;
    if stored.first_message_index != new_index {
        return new_index < stored.first_message_index;
    }
    (new.forwarded_count as i64) < stored.forwarded_count
}

fn to_row(key: &SessionKey) -> KeyRow {
    KeyRow {
        first_message_index: key.first_message_index as i64,
        forwarded_count: key.forwarded_count as i64,
        is_verified: key.is_verified,
        session_data: Value::Object(key.session_data.clone()).to_string(),
    }
}

fn from_row(row: KeyRow) -> Result<SessionKey> {
    let session_data = match serde_json::from_str(&row.session_data) {
        Ok(Value::Object(map)) => map,
        _ => return Err(Error::internal("stored session_data is not an object")),
    };
    Ok(SessionKey {
        first_message_index: row.first_message_index.max(0) as u64,
        forwarded_count: row.forwarded_count.max(0) as u64,
        is_verified: row.is_verified,
        session_data,
    })
}

/// Creates a new backup version, which becomes the current one.
#[tracing::instrument(skip(server, auth_data))]
pub async fn create_version(
    server: &Server,
    user: OwnedUserId,
    algorithm: String,
    auth_data: serde_json::Map<String, Value>,
) -> Result<String> {
    if algorithm.is_empty() {
        return Err(Error::invalid_param("algorithm must not be empty"));
    }
    let auth_data = Value::Object(auth_data).to_string();
    let version = server
        .store
        .write(move |tx| store::create_version(tx, user.as_str(), &algorithm, &auth_data))
        .await?;
    Ok(version.to_string())
}

/// The current version (`version` is `None`) or one given live version.
#[tracing::instrument(skip(server))]
pub async fn get_version(
    server: &Server,
    user: OwnedUserId,
    version: Option<String>,
) -> Result<VersionInfo> {
    server
        .store
        .read(move |conn| {
            let row = match &version {
                None => store::current_version(conn, user.as_str())?
                    .ok_or_else(|| Error::not_found("No current backup version"))?,
                Some(raw) => live_version(conn, user.as_str(), raw)?,
            };
            info(conn, user.as_str(), row)
        })
        .await
}

/// Replaces a version's `auth_data`; the algorithm cannot change.
#[tracing::instrument(skip(server, auth_data))]
pub async fn update_version(
    server: &Server,
    user: OwnedUserId,
    version: String,
    algorithm: String,
    auth_data: serde_json::Map<String, Value>,
) -> Result<()> {
    let auth_data = Value::Object(auth_data).to_string();
    server
        .store
        .write(move |tx| {
            let row = live_version(tx, user.as_str(), &version)?;
            if row.algorithm != algorithm {
                return Err(Error::invalid_param(
                    "Algorithm does not match the backup's algorithm",
                ));
            }
            store::set_auth_data(tx, user.as_str(), row.version, &auth_data)
        })
        .await
}

/// Deletes a version and its keys. Deleting an already deleted version succeeds; a version
/// that never existed is 404.
#[tracing::instrument(skip(server))]
pub async fn delete_version(server: &Server, user: OwnedUserId, version: String) -> Result<()> {
    let version = parse_version(&version)?;
    server
        .store
        .write(
            move |tx| match store::get_version(tx, user.as_str(), version)? {
                None => Err(Error::not_found("Unknown backup version")),
                Some(row) if row.deleted => Ok(()),
                Some(_) => store::delete_version(tx, user.as_str(), version),
            },
        )
        .await
}

/// Stores keys in the current version, applying the replacement rules per session. A live
/// version that is not the current one is [`BackupError::WrongVersion`]; an unknown or deleted
/// one is 404.
#[tracing::instrument(skip(server, keys))]
pub async fn put_keys(
    server: &Server,
    user: OwnedUserId,
    version: String,
    keys: KeysByRoom,
) -> Result<Counts, BackupError> {
    let outcome = server
        .store
        .write(move |tx| {
            let requested = live_version(tx, user.as_str(), &version)?;
            let current = store::current_version(tx, user.as_str())?
                .ok_or_else(|| Error::internal("a live version exists but none is current"))?;
            if requested.version != current.version {
                return Ok(Err(current.version.to_string()));
            }
            let mut changed = false;
            for (room_id, sessions) in &keys {
                for (session_id, key) in sessions {
                    let stored =
                        store::get_key(tx, user.as_str(), current.version, room_id, session_id)?;
                    if stored.is_none_or(|stored| should_replace(&stored, key)) {
                        let row = to_row(key);
                        store::put_key(
                            tx,
                            user.as_str(),
                            current.version,
                            room_id,
                            session_id,
                            &row,
                        )?;
                        changed = true;
                    }
                }
            }
            if changed {
                store::bump_etag(tx, user.as_str(), current.version)?;
            }
            Ok(Ok(counts(tx, user.as_str(), current.version)?))
        })
        .await?;
    outcome.map_err(|current| BackupError::WrongVersion { current })
}

/// The keys of a live version (all, one room's, or one session's).
#[tracing::instrument(skip(server))]
pub async fn get_keys(
    server: &Server,
    user: OwnedUserId,
    version: String,
    selector: Selector,
) -> Result<KeysByRoom> {
    server
        .store
        .read(move |conn| {
            let row = live_version(conn, user.as_str(), &version)?;
            let mut out = KeysByRoom::new();
            for row in store::keys(
                conn,
                user.as_str(),
                row.version,
                selector.room_id.as_deref(),
                selector.session_id.as_deref(),
            )? {
                out.entry(row.room_id)
                    .or_default()
                    .insert(row.session_id, from_row(row.key)?);
            }
            Ok(out)
        })
        .await
}

/// Deletes keys of a live version (all, one room's, or one session's).
#[tracing::instrument(skip(server))]
pub async fn delete_keys(
    server: &Server,
    user: OwnedUserId,
    version: String,
    selector: Selector,
) -> Result<Counts> {
    server
        .store
        .write(move |tx| {
            let row = live_version(tx, user.as_str(), &version)?;
            let removed = store::delete_keys(
                tx,
                user.as_str(),
                row.version,
                selector.room_id.as_deref(),
                selector.session_id.as_deref(),
            )?;
            if removed > 0 {
                store::bump_etag(tx, user.as_str(), row.version)?;
            }
            counts(tx, user.as_str(), row.version)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(is_verified: bool, first_message_index: i64, forwarded_count: i64) -> KeyRow {
        KeyRow {
            first_message_index,
            forwarded_count,
            is_verified,
            session_data: "{}".to_owned(),
        }
    }

    fn new(is_verified: bool, first_message_index: u64, forwarded_count: u64) -> SessionKey {
        SessionKey {
            first_message_index,
            forwarded_count,
            is_verified,
            session_data: serde_json::Map::new(),
        }
    }

    #[test]
    fn replacement_rules_follow_the_spec_order() {
        // Verification wins over everything else.
        assert!(should_replace(&stored(false, 0, 0), &new(true, 9, 9)));
        assert!(!should_replace(&stored(true, 9, 9), &new(false, 0, 0)));
        // Then the lower first_message_index.
        assert!(should_replace(&stored(true, 5, 0), &new(true, 4, 9)));
        assert!(!should_replace(&stored(true, 4, 9), &new(true, 5, 0)));
        // Then the lower forwarded_count.
        assert!(should_replace(&stored(false, 3, 2), &new(false, 3, 1)));
        assert!(!should_replace(&stored(false, 3, 1), &new(false, 3, 2)));
        // A full tie keeps what is stored.
        assert!(!should_replace(&stored(true, 3, 1), &new(true, 3, 1)));
    }
}
