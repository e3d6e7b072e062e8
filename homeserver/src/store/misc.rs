//! Small per-user and per-room tables: room aliases, account data, receipts, filters, the
//! member events lazy-loading syncs sent each device, and server facts.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;

/// Creates an alias; `Ok(false)` if it is taken.
pub fn create_alias(conn: &Connection, alias: &str, room_id: &str, creator: &str) -> Result<bool> {
    Ok(conn.execute(
        "INSERT INTO room_aliases (alias, room_id, creator) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        params![alias, room_id, creator],
    )? == 1)
}

/// A local alias.
#[derive(Debug, Clone)]
pub struct AliasRow {
    /// The room it points at.
    pub room_id: String,
    /// The user who created it (who may delete it without power).
    pub creator: String,
}

/// Resolves an alias.
pub fn get_alias(conn: &Connection, alias: &str) -> Result<Option<AliasRow>> {
    Ok(conn
        .query_row(
            "SELECT room_id, creator FROM room_aliases WHERE alias = ?1",
            params![alias],
            |r| {
                Ok(AliasRow {
                    room_id: r.get(0)?,
                    creator: r.get(1)?,
                })
            },
        )
        .optional()?)
}

/// Deletes an alias.
pub fn delete_alias(conn: &Connection, alias: &str) -> Result<()> {
    conn.execute("DELETE FROM room_aliases WHERE alias = ?1", params![alias])?;
    Ok(())
}

/// Aliases pointing at a room.
pub fn room_aliases(conn: &Connection, room_id: &str) -> Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT alias FROM room_aliases WHERE room_id = ?1 ORDER BY alias")?;
    let rows = stmt.query_map(params![room_id], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Sets account data (`room_id` empty for global).
pub fn set_account_data(
    conn: &Connection,
    user_id: &str,
    room_id: &str,
    kind: &str,
    content: &str,
    pos: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO account_data (user_id, room_id, data_type, content, stream_pos) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (user_id, room_id, data_type) DO UPDATE SET content = excluded.content, stream_pos = excluded.stream_pos",
        params![user_id, room_id, kind, content, pos],
    )?;
    Ok(())
}

/// Bytes of account data content `user_id` stores, leaving out the item `(room_id, kind)`
/// (which a write is about to replace).
pub fn account_data_bytes_except(
    conn: &Connection,
    user_id: &str,
    room_id: &str,
    kind: &str,
) -> Result<u64> {
    let bytes: i64 = conn.query_row(
        "SELECT COALESCE(SUM(length(CAST(content AS BLOB))), 0) FROM account_data
         WHERE user_id = ?1 AND NOT (room_id = ?2 AND data_type = ?3)",
        params![user_id, room_id, kind],
        |row| row.get(0),
    )?;
    Ok(u64::try_from(bytes).unwrap_or(0))
}

/// Reads one account data item.
pub fn get_account_data(
    conn: &Connection,
    user_id: &str,
    room_id: &str,
    kind: &str,
) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT content FROM account_data WHERE user_id = ?1 AND room_id = ?2 AND data_type = ?3",
            params![user_id, room_id, kind],
            |r| r.get(0),
        )
        .optional()?)
}

/// One account data entry of a user.
#[derive(Debug, Clone)]
pub struct AccountDataRow {
    /// The room it belongs to; empty for global account data.
    pub room_id: String,
    /// Its event type.
    pub kind: String,
    /// Its content, JSON text.
    pub content: String,
}

/// Account data changed in `(after, upto]`, in stream order.
pub fn account_data_since(
    conn: &Connection,
    user_id: &str,
    after: i64,
    upto: i64,
) -> Result<Vec<AccountDataRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT room_id, data_type, content FROM account_data WHERE user_id = ?1
         AND stream_pos > ?2 AND stream_pos <= ?3 ORDER BY stream_pos",
    )?;
    let rows = stmt.query_map(params![user_id, after, upto], |r| {
        Ok(AccountDataRow {
            room_id: r.get(0)?,
            kind: r.get(1)?,
            content: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A stored receipt.
#[derive(Debug, Clone)]
pub struct Receipt {
    /// Receipt type (`m.read`, `m.read.private`).
    pub receipt_type: String,
    /// Reader.
    pub user_id: String,
    /// Thread (`""` for unthreaded).
    pub thread_id: String,
    /// Event read up to.
    pub event_id: String,
    /// When.
    pub ts: i64,
}

/// Upserts a receipt.
pub fn set_receipt(conn: &Connection, room_id: &str, r: &Receipt, pos: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, ts, stream_pos)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (room_id, receipt_type, user_id, thread_id)
         DO UPDATE SET event_id = excluded.event_id, ts = excluded.ts, stream_pos = excluded.stream_pos",
        params![room_id, r.receipt_type, r.user_id, r.thread_id, r.event_id, r.ts, pos],
    )?;
    Ok(())
}

/// Receipts of a room in `(after, upto]`.
pub fn receipts_since(
    conn: &Connection,
    room_id: &str,
    after: i64,
    upto: i64,
) -> Result<Vec<Receipt>> {
    let mut stmt = conn.prepare_cached(
        "SELECT receipt_type, user_id, thread_id, event_id, ts FROM receipts WHERE room_id = ?1
         AND stream_pos > ?2 AND stream_pos <= ?3",
    )?;
    let rows = stmt.query_map(params![room_id, after, upto], |r| {
        Ok(Receipt {
            receipt_type: r.get(0)?,
            user_id: r.get(1)?,
            thread_id: r.get(2)?,
            event_id: r.get(3)?,
            ts: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Rooms with receipts recorded in `(after, upto]`: with the rooms that have events there, the
/// only rooms an incremental `/sync` needs to look into (`service::sync`).
pub fn rooms_with_receipts_between(
    conn: &Connection,
    after: i64,
    upto: i64,
) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT room_id FROM receipts WHERE stream_pos > ?1 AND stream_pos <= ?2",
    )?;
    let rows = stmt.query_map(params![after, upto], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Stores a filter; returns its ID.
pub fn create_filter(conn: &Connection, user_id: &str, json: &str) -> Result<i64> {
    let id: i64 = conn.query_row(
        "SELECT coalesce(max(filter_id), -1) + 1 FROM filters WHERE user_id = ?1",
        params![user_id],
        |r| r.get(0),
    )?;
    conn.execute(
        "INSERT INTO filters (user_id, filter_id, json) VALUES (?1, ?2, ?3)",
        params![user_id, id, json],
    )?;
    Ok(id)
}

/// Loads a filter.
pub fn get_filter(conn: &Connection, user_id: &str, filter_id: i64) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT json FROM filters WHERE user_id = ?1 AND filter_id = ?2",
            params![user_id, filter_id],
            |r| r.get(0),
        )
        .optional()?)
}

/// Points every local alias of `old_room` at `new_room` (a room upgrade).
pub fn move_aliases(conn: &Connection, old_room: &str, new_room: &str) -> Result<()> {
    conn.execute(
        "UPDATE room_aliases SET room_id = ?2 WHERE room_id = ?1",
        params![old_room, new_room],
    )?;
    Ok(())
}

/// The room a user's server notices go to, if one was made.
pub fn notice_room(conn: &Connection, user_id: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT room_id FROM server_notice_rooms WHERE user_id = ?1",
            params![user_id],
            |r| r.get(0),
        )
        .optional()?)
}

/// Records the room a user's server notices go to.
pub fn set_notice_room(conn: &Connection, user_id: &str, room_id: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO server_notice_rooms (user_id, room_id) VALUES (?1, ?2)
         ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id",
        params![user_id, room_id],
    )?;
    Ok(())
}

/// A member event a device was sent under lazy loading.
#[derive(Debug, Clone)]
pub struct LazyMemberSent {
    /// The member (the event's state key).
    pub member: String,
    /// The member event sent.
    pub event_id: String,
}

/// The member events of a room a device was sent under lazy loading by responses the client
/// has moved past (`sent_upto <= since`).
pub fn lazy_members_sent(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    room_id: &str,
    since: i64,
) -> Result<Vec<LazyMemberSent>> {
    let mut stmt = conn.prepare_cached(
        "SELECT member, event_id FROM lazy_members_sent
         WHERE user_id = ?1 AND device_id = ?2 AND room_id = ?3 AND sent_upto <= ?4",
    )?;
    let rows = stmt.query_map(params![user_id, device_id, room_id, since], |r| {
        Ok(LazyMemberSent {
            member: r.get(0)?,
            event_id: r.get(1)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Records that a device was sent `(room_id, member, event_id)` entries by a response whose
/// `next_batch` position is `upto`.
pub fn record_lazy_members_sent(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    sent: &[(String, String, String)],
    upto: i64,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO lazy_members_sent (user_id, device_id, room_id, member, event_id, sent_upto)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (user_id, device_id, room_id, member) DO UPDATE
         SET event_id = excluded.event_id, sent_upto = excluded.sent_upto",
    )?;
    for (room_id, member, event_id) in sent {
        stmt.execute(params![user_id, device_id, room_id, member, event_id, upto])?;
    }
    Ok(())
}
