//! Storage of end-to-end encryption material: device keys (local, and a cache of remote
//! users'), one-time and fallback keys, cross-signing keys and signatures, the device-list
//! stream and the per-device to-device inbox.
//!
//! Keys are kept as the JSON the client signed: the server never re-serialises what a
//! signature covers beyond what it must merge (signatures from other keys).

use rusqlite::{Connection, OptionalExtension, params};

use super::appservice::MemberChange;
use crate::error::Result;

/// Stores (or replaces) a device's signed keys; `Ok(true)` when they changed.
pub fn set_device_keys(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    key_json: &str,
    display_name: Option<&str>,
) -> Result<bool> {
    let old: Option<(String, Option<String>)> = conn
        .query_row(
            "SELECT key_json, display_name FROM device_keys WHERE user_id = ?1 AND device_id = ?2",
            params![user_id, device_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if old
        .as_ref()
        .is_some_and(|(k, d)| k == key_json && d.as_deref() == display_name)
    {
        return Ok(false);
    }
    conn.execute(
        "INSERT INTO device_keys (user_id, device_id, key_json, display_name) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json,
         display_name = excluded.display_name",
        params![user_id, device_id, key_json, display_name],
    )?;
    Ok(true)
}

/// The keys of one device.
#[derive(Debug, Clone)]
pub struct DeviceKeyRow {
    /// The device.
    pub device_id: String,
    /// Its signed device keys, JSON text.
    pub key_json: String,
    /// The display name cached with a remote device's keys.
    pub display_name: Option<String>,
}

/// A user's device keys.
pub fn device_keys(conn: &Connection, user_id: &str) -> Result<Vec<DeviceKeyRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT device_id, key_json, display_name FROM device_keys WHERE user_id = ?1 ORDER BY device_id",
    )?;
    let rows = stmt.query_map(params![user_id], |r| {
        Ok(DeviceKeyRow {
            device_id: r.get(0)?,
            key_json: r.get(1)?,
            display_name: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Forgets every key of a device (it was deleted or logged out).
pub fn delete_device_keys(conn: &Connection, user_id: &str, device_id: &str) -> Result<()> {
    for sql in [
        "DELETE FROM device_keys WHERE user_id = ?1 AND device_id = ?2",
        "DELETE FROM one_time_keys WHERE user_id = ?1 AND device_id = ?2",
        "DELETE FROM fallback_keys WHERE user_id = ?1 AND device_id = ?2",
        "DELETE FROM to_device WHERE user_id = ?1 AND device_id = ?2",
        "DELETE FROM key_signatures WHERE target_user = ?1 AND target_key = ?2",
    ] {
        conn.prepare_cached(sql)?
            .execute(params![user_id, device_id])?;
    }
    Ok(())
}

/// Replaces a remote user's cached device list with what their server published.
pub fn replace_remote_devices(
    conn: &Connection,
    user_id: &str,
    stream_id: i64,
    fetched_pos: i64,
    devices: &[(String, String, Option<String>)],
) -> Result<()> {
    conn.execute(
        "DELETE FROM device_keys WHERE user_id = ?1",
        params![user_id],
    )?;
    for (device_id, key_json, name) in devices {
        set_device_keys(conn, user_id, device_id, key_json, name.as_deref())?;
    }
    conn.execute(
        "INSERT INTO remote_device_lists (user_id, stream_id, stale, fetched_pos)
         VALUES (?1, ?2, 0, ?3)
         ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id, stale = 0,
         fetched_pos = excluded.fetched_pos",
        params![user_id, stream_id, fetched_pos],
    )?;
    Ok(())
}

/// What we know of a remote user's device list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteDeviceList {
    /// The last `stream_id` of the user's updates applied.
    pub stream_id: i64,
    /// Whether the cached list missed an update and must be fetched again.
    pub stale: bool,
}

/// What we know of a remote user's device list.
pub fn remote_device_list(conn: &Connection, user_id: &str) -> Result<Option<RemoteDeviceList>> {
    Ok(conn
        .query_row(
            "SELECT stream_id, stale FROM remote_device_lists WHERE user_id = ?1",
            params![user_id],
            |r| {
                Ok(RemoteDeviceList {
                    stream_id: r.get(0)?,
                    stale: r.get::<_, i64>(1)? != 0,
                })
            },
        )
        .optional()?)
}

/// Moves a remote user's cached list to `stream_id` (an update applied in order).
pub fn set_remote_stream_id(conn: &Connection, user_id: &str, stream_id: i64) -> Result<()> {
    conn.execute(
        "UPDATE remote_device_lists SET stream_id = ?2 WHERE user_id = ?1",
        params![user_id, stream_id],
    )?;
    Ok(())
}

/// Marks a remote user's cached list as stale: the next query resyncs it.
pub fn mark_remote_stale(conn: &Connection, user_id: &str) -> Result<()> {
    conn.execute(
        "UPDATE remote_device_lists SET stale = 1 WHERE user_id = ?1",
        params![user_id],
    )?;
    Ok(())
}

/// Stores a one-time key unless one with that ID exists; returns the stored JSON when one
/// already existed (the caller compares).
pub fn add_one_time_key(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
    key_id: &str,
    key_json: &str,
) -> Result<Option<String>> {
    let existing: Option<String> = conn
        .prepare_cached(
            "SELECT key_json FROM one_time_keys WHERE user_id = ?1 AND device_id = ?2
             AND algorithm = ?3 AND key_id = ?4",
        )?
        .query_row(params![user_id, device_id, algorithm, key_id], |r| r.get(0))
        .optional()?;
    if existing.is_none() {
        conn.prepare_cached(
            "INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![user_id, device_id, algorithm, key_id, key_json])?;
    }
    Ok(existing)
}

/// How many unclaimed one-time keys of one algorithm a device has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCount {
    /// The algorithm.
    pub algorithm: String,
    /// How many keys.
    pub count: i64,
}

/// Unclaimed one-time keys of a device, per algorithm.
pub fn one_time_key_counts(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
) -> Result<Vec<KeyCount>> {
    let mut stmt = conn.prepare_cached(
        "SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = ?1 AND device_id = ?2
         GROUP BY algorithm ORDER BY algorithm",
    )?;
    let rows = stmt.query_map(params![user_id, device_id], |r| {
        Ok(KeyCount {
            algorithm: r.get(0)?,
            count: r.get(1)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A one-time or fallback key handed out.
#[derive(Debug, Clone)]
pub struct ClaimedKey {
    /// `algorithm:id`.
    pub key_id: String,
    /// The signed key, JSON text.
    pub key_json: String,
}

/// Takes one one-time key of `algorithm` from a device, removed.
pub fn claim_one_time_key(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
) -> Result<Option<ClaimedKey>> {
    let key: Option<ClaimedKey> = conn
        .prepare_cached(
            "SELECT key_id, key_json FROM one_time_keys WHERE user_id = ?1 AND device_id = ?2
             AND algorithm = ?3 ORDER BY key_id LIMIT 1",
        )?
        .query_row(params![user_id, device_id, algorithm], |r| {
            Ok(ClaimedKey {
                key_id: r.get(0)?,
                key_json: r.get(1)?,
            })
        })
        .optional()?;
    if let Some(claimed) = &key {
        conn.prepare_cached(
            "DELETE FROM one_time_keys WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3
             AND key_id = ?4",
        )?
        .execute(params![user_id, device_id, algorithm, claimed.key_id])?;
    }
    Ok(key)
}

/// Sets a device's fallback key for an algorithm (replacing the previous one, unused again).
pub fn set_fallback_key(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
    key_id: &str,
    key_json: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)
         VALUES (?1, ?2, ?3, ?4, ?5, 0)
         ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id,
         key_json = excluded.key_json,
         used = CASE WHEN fallback_keys.key_json = excluded.key_json THEN fallback_keys.used ELSE 0 END",
    )?
    .execute(params![user_id, device_id, algorithm, key_id, key_json])?;
    Ok(())
}

/// Hands out a device's fallback key for an algorithm (marked used, not removed).
pub fn claim_fallback_key(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
) -> Result<Option<ClaimedKey>> {
    let key: Option<ClaimedKey> = conn
        .prepare_cached(
            "SELECT key_id, key_json FROM fallback_keys WHERE user_id = ?1 AND device_id = ?2
             AND algorithm = ?3",
        )?
        .query_row(params![user_id, device_id, algorithm], |r| {
            Ok(ClaimedKey {
                key_id: r.get(0)?,
                key_json: r.get(1)?,
            })
        })
        .optional()?;
    if key.is_some() {
        conn.prepare_cached(
            "UPDATE fallback_keys SET used = 1 WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3",
        )?
        .execute(params![user_id, device_id, algorithm])?;
    }
    Ok(key)
}

/// Algorithms for which the device has a fallback key that was never handed out.
pub fn unused_fallback_types(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT algorithm FROM fallback_keys WHERE user_id = ?1 AND device_id = ?2 AND used = 0
         ORDER BY algorithm",
    )?;
    let rows = stmt.query_map(params![user_id, device_id], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Stores a cross-signing key; `Ok(true)` when it changed.
pub fn set_cross_signing_key(
    conn: &Connection,
    user_id: &str,
    key_type: &str,
    key_json: &str,
) -> Result<bool> {
    let changed = conn.execute(
        "INSERT INTO cross_signing_keys (user_id, key_type, key_json) VALUES (?1, ?2, ?3)
         ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json
         WHERE cross_signing_keys.key_json <> excluded.key_json",
        params![user_id, key_type, key_json],
    )?;
    Ok(changed > 0)
}

/// A user's cross-signing key of a type (`master`, `self_signing`, `user_signing`).
pub fn cross_signing_key(
    conn: &Connection,
    user_id: &str,
    key_type: &str,
) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT key_json FROM cross_signing_keys WHERE user_id = ?1 AND key_type = ?2",
        )?
        .query_row(params![user_id, key_type], |r| r.get(0))
        .optional()?)
}

/// Stores one signature over a key (a device ID or a cross-signing public key).
pub fn add_signature(
    conn: &Connection,
    target_user: &str,
    target_key: &str,
    signer_user: &str,
    signer_key_id: &str,
    signature: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO key_signatures (target_user, target_key, signer_user, signer_key_id, signature)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (target_user, target_key, signer_user, signer_key_id)
         DO UPDATE SET signature = excluded.signature",
    )?
    .execute(params![target_user, target_key, signer_user, signer_key_id, signature])?;
    Ok(())
}

/// A signature stored over a key.
#[derive(Debug, Clone)]
pub struct KeySignature {
    /// Who signed.
    pub signer_user: String,
    /// With which of their keys (`ed25519:…`).
    pub signer_key_id: String,
    /// The signature.
    pub signature: String,
}

/// Signatures stored over one key.
pub fn signatures(
    conn: &Connection,
    target_user: &str,
    target_key: &str,
) -> Result<Vec<KeySignature>> {
    let mut stmt = conn.prepare_cached(
        "SELECT signer_user, signer_key_id, signature FROM key_signatures
         WHERE target_user = ?1 AND target_key = ?2 ORDER BY signer_user, signer_key_id",
    )?;
    let rows = stmt.query_map(params![target_user, target_key], |r| {
        Ok(KeySignature {
            signer_user: r.get(0)?,
            signer_key_id: r.get(1)?,
            signature: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Records that a user's devices or cross-signing keys changed, at a stream position.
pub fn record_device_list_change(conn: &Connection, user_id: &str, pos: i64) -> Result<()> {
    conn.prepare_cached("INSERT INTO device_list_changes (stream_pos, user_id) VALUES (?1, ?2)")?
        .execute(params![pos, user_id])?;
    Ok(())
}

/// Users whose device lists changed in `(after, upto]`.
pub fn device_list_changes(conn: &Connection, after: i64, upto: i64) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT user_id FROM device_list_changes WHERE stream_pos > ?1 AND stream_pos <= ?2",
    )?;
    let rows = stmt.query_map(params![after, upto], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The position of a user's latest device-list change (their device-list stream ID).
pub fn last_device_list_change(conn: &Connection, user_id: &str) -> Result<i64> {
    Ok(conn
        .prepare_cached(
            "SELECT COALESCE(MAX(stream_pos), 0) FROM device_list_changes WHERE user_id = ?1",
        )?
        .query_row(params![user_id], |r| r.get(0))?)
}

/// Puts a to-device message in a device's inbox.
pub fn push_to_device(
    conn: &Connection,
    pos: i64,
    user_id: &str,
    device_id: &str,
    sender: &str,
    event_type: &str,
    content: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO to_device (stream_pos, user_id, device_id, sender, event_type, content)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        pos, user_id, device_id, sender, event_type, content
    ])?;
    Ok(())
}

/// A to-device message waiting for a device.
#[derive(Debug, Clone)]
pub struct ToDeviceRow {
    /// Its stream position: where a sync that hands it out has delivered up to.
    pub stream_pos: i64,
    /// The user who sent it.
    pub sender: String,
    /// Its event type.
    pub event_type: String,
    /// Its content, JSON text.
    pub content: String,
}

/// A device's to-device messages in `(after, upto]`, oldest first, at most `limit`:
/// `(stream_pos, sender, type, content)`.
pub fn to_device_since(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    after: i64,
    upto: i64,
    limit: usize,
) -> Result<Vec<ToDeviceRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT stream_pos, sender, event_type, content FROM to_device WHERE user_id = ?1
         AND device_id = ?2 AND stream_pos > ?3 AND stream_pos <= ?4 ORDER BY stream_pos LIMIT ?5",
    )?;
    let rows = stmt.query_map(
        params![user_id, device_id, after, upto, limit as i64],
        |r| {
            Ok(ToDeviceRow {
                stream_pos: r.get(0)?,
                sender: r.get(1)?,
                event_type: r.get(2)?,
                content: r.get(3)?,
            })
        },
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Deletes a device's to-device messages the client acknowledged (at or before `upto`).
/// Returns how many went.
pub fn ack_to_device(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    upto: i64,
) -> Result<usize> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM to_device WHERE user_id = ?1 AND device_id = ?2 AND stream_pos <= ?3",
        )?
        .execute(params![user_id, device_id, upto])?)
}

/// Whether a device has acknowledged-but-undeleted messages at or before `upto` (so sync
/// knows whether a delete is worth a write).
pub fn has_to_device_upto(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    upto: i64,
) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM to_device WHERE user_id = ?1 AND device_id = ?2 AND stream_pos <= ?3)",
        )?
        .query_row(params![user_id, device_id, upto], |r| r.get(0))?)
}

/// The devices of a local user (IDs only), for `*` to-device targets and key queries.
pub fn local_device_ids(conn: &Connection, user_id: &str) -> Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT device_id FROM devices WHERE user_id = ?1 ORDER BY device_id")?;
    let rows = stmt.query_map(params![user_id], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Users who share a joined room with `user_id` (including themselves).
pub fn users_sharing_rooms(conn: &Connection, user_id: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT other.state_key FROM current_state mine
         JOIN current_state other ON other.room_id = mine.room_id
         AND other.event_type = 'm.room.member' AND other.membership = 'join'
         WHERE mine.event_type = 'm.room.member' AND mine.state_key = ?1 AND mine.membership = 'join'",
    )?;
    let rows = stmt.query_map(params![user_id], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Member events in `(after, upto]` in rooms where `user_id` is joined now, plus the rooms
/// the user joined or left in that range (an event without a membership has an empty one).
pub fn member_events_in_shared_rooms(
    conn: &Connection,
    user_id: &str,
    after: i64,
    upto: i64,
) -> Result<Vec<MemberChange>> {
    let mut stmt = conn.prepare_cached(
        "SELECT e.room_id, e.state_key, json_extract(e.json, '$.content.membership')
         FROM events e
         WHERE e.event_type = 'm.room.member' AND e.stream_pos > ?2 AND e.stream_pos <= ?3
         AND e.rejected = 0 AND e.soft_failed = 0
         AND e.room_id IN (SELECT room_id FROM current_state WHERE event_type = 'm.room.member'
                           AND state_key = ?1)
         ORDER BY e.stream_pos",
    )?;
    let rows = stmt.query_map(params![user_id, after, upto], |r| {
        Ok(MemberChange {
            room_id: r.get(0)?,
            user_id: r.get(1)?,
            membership: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The servers of users who share a joined room with `user_id`, other than `own`.
pub fn servers_sharing_rooms(conn: &Connection, user_id: &str, own: &str) -> Result<Vec<String>> {
    let mut servers: Vec<String> = users_sharing_rooms(conn, user_id)?
        .into_iter()
        .filter_map(|u| u.split_once(':').map(|(_, s)| s.to_owned()))
        .filter(|s| s != own)
        .collect();
    servers.sort();
    servers.dedup();
    Ok(servers)
}

/// Records a `/sendToDevice` transaction; `Ok(false)` when it was already handled.
pub fn record_to_device_txn(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    txn_id: &str,
) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO to_device_txns (user_id, device_id, txn_id) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![user_id, device_id, txn_id])?
        == 1)
}

/// A user's dehydrated device (MSC3814) as stored.
#[derive(Debug, Clone)]
pub struct DehydratedDeviceRow {
    /// The device.
    pub device_id: String,
    /// The client's opaque `device_data`, as JSON text.
    pub device_data: String,
}

/// The user's dehydrated device (MSC3814).
pub fn dehydrated_device(conn: &Connection, user_id: &str) -> Result<Option<DehydratedDeviceRow>> {
    Ok(conn
        .prepare_cached("SELECT device_id, device_data FROM dehydrated_devices WHERE user_id = ?1")?
        .query_row(params![user_id], |r| {
            Ok(DehydratedDeviceRow {
                device_id: r.get(0)?,
                device_data: r.get(1)?,
            })
        })
        .optional()?)
}

/// Records which of the user's devices is the dehydrated one, and its opaque data.
pub fn set_dehydrated_device(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    device_data: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO dehydrated_devices (user_id, device_id, device_data) VALUES (?1, ?2, ?3)
         ON CONFLICT (user_id) DO UPDATE SET device_id = excluded.device_id,
         device_data = excluded.device_data",
    )?
    .execute(params![user_id, device_id, device_data])?;
    Ok(())
}

/// Whether a join happened after `since` in a room `remote_user` shares with us now, by them or
/// by one of our users (`own` server): the start of a shared room, possibly after a time when
/// their unit sent us no device-list updates. Profile changes count too (conservative).
pub fn joined_shared_room_since(
    conn: &Connection,
    remote_user: &str,
    own: &str,
    since: i64,
) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM events e
             WHERE e.event_type = 'm.room.member' AND e.stream_pos > ?3
             AND e.rejected = 0 AND e.soft_failed = 0
             AND json_extract(e.json, '$.content.membership') = 'join'
             AND (e.state_key = ?1 OR substr(e.state_key, -length(?2) - 1) = ':' || ?2)
             AND e.room_id IN (SELECT room_id FROM current_state WHERE event_type = 'm.room.member'
                               AND state_key = ?1 AND membership = 'join'))",
        )?
        .query_row(params![remote_user, own, since], |r| r.get(0))?)
}

/// The position at which a remote user's list was last fetched whole.
pub fn remote_fetched_pos(conn: &Connection, user_id: &str) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT fetched_pos FROM remote_device_lists WHERE user_id = ?1")?
        .query_row(params![user_id], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}
