//! Storage of presence: one row per user, each change at a stream position.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;

/// A user's stored presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRow {
    /// The user.
    pub user_id: String,
    /// `online`, `unavailable` or `offline`, as last set.
    pub state: String,
    /// The status message, if any.
    pub status_msg: Option<String>,
    /// When the user was last active (ms).
    pub last_active_ts: i64,
    /// When this row last changed, on the stream.
    pub stream_pos: i64,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PresenceRow> {
    Ok(PresenceRow {
        user_id: r.get(0)?,
        state: r.get(1)?,
        status_msg: r.get(2)?,
        last_active_ts: r.get(3)?,
        stream_pos: r.get(4)?,
    })
}

/// A user's presence, if known.
pub fn get(conn: &Connection, user_id: &str) -> Result<Option<PresenceRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT user_id, state, status_msg, last_active_ts, stream_pos FROM presence
             WHERE user_id = ?1",
        )?
        .query_row(params![user_id], row)
        .optional()?)
}

/// Stores a user's presence.
pub fn set(conn: &Connection, presence: &PresenceRow) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO presence (user_id, state, status_msg, last_active_ts, stream_pos)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (user_id) DO UPDATE SET state = excluded.state,
         status_msg = excluded.status_msg, last_active_ts = excluded.last_active_ts,
         stream_pos = excluded.stream_pos",
    )?
    .execute(params![
        presence.user_id,
        presence.state,
        presence.status_msg,
        presence.last_active_ts,
        presence.stream_pos
    ])?;
    Ok(())
}

/// Moves a user's last activity forward in place, keeping the row's stream position: activity
/// while the user stays currently active is no news to the clients holding their presence
/// (the service decides), but the idle rule reads it.
pub fn touch(conn: &Connection, user_id: &str, last_active_ts: i64) -> Result<()> {
    conn.prepare_cached("UPDATE presence SET last_active_ts = ?2 WHERE user_id = ?1")?
        .execute(params![user_id, last_active_ts])?;
    Ok(())
}

/// Presence of the users who share a joined room with `user_id` (and their own), changed in
/// `(after, upto]`.
pub fn changed_for(
    conn: &Connection,
    user_id: &str,
    after: i64,
    upto: i64,
) -> Result<Vec<PresenceRow>> {
    let mut stmt = conn.prepare_cached(
        // A correlated EXISTS per changed row rather than `IN (everyone sharing a room)`: the
        // range holds few rows or none, and materialising every member of every room the user
        // is in for each sync was a tenth of a busy unit's `/sync` CPU.
        "SELECT p.user_id, p.state, p.status_msg, p.last_active_ts, p.stream_pos FROM presence p
         WHERE p.stream_pos > ?2 AND p.stream_pos <= ?3
         AND (p.user_id = ?1 OR EXISTS (
             SELECT 1 FROM current_state mine
             JOIN current_state other ON other.room_id = mine.room_id
             AND other.event_type = 'm.room.member' AND other.state_key = p.user_id
             AND other.membership = 'join'
             WHERE mine.event_type = 'm.room.member' AND mine.state_key = ?1
             AND mine.membership = 'join'))
         ORDER BY p.stream_pos",
    )?;
    let rows = stmt.query_map(params![user_id, after, upto], row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
