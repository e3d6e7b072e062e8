//! What the server pushes to application services: per appservice, how far through the event
//! stream the sender has looked (its cursor), the one transaction formed and not yet
//! acknowledged (ID and body fixed when formed), the ephemeral items waiting for it, and its
//! link state (migration 0018).
//!
//! The queue of room events is the event stream itself: an event is durable in the write
//! transaction that stores it, and the cursor and the formed transaction move in one write, so
//! a crash between any two steps neither loses nor reorders an event, and a transaction is
//! re-sent with its own ID and body.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;

/// An appservice's row: cursor and link state.
#[derive(Debug, Clone, Default)]
pub struct AsState {
    /// Stream position up to which events were examined.
    pub cursor: i64,
    /// The next transaction ID to give out.
    pub next_txn: i64,
    /// When a transaction was last acknowledged (ms).
    pub last_success_ts: Option<i64>,
    /// When the last attempt failed (ms).
    pub last_error_ts: Option<i64>,
    /// Why it failed.
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub failures: i64,
    /// When the sender tries again (ms), while failing.
    pub next_retry_ts: Option<i64>,
}

/// The state row of `id`, if the sender has ever started for it.
pub fn state(conn: &Connection, id: &str) -> Result<Option<AsState>> {
    Ok(conn
        .prepare_cached(
            "SELECT cursor, next_txn, last_success_ts, last_error_ts, last_error, failures, next_retry_ts
             FROM appservice_state WHERE appservice_id = ?1",
        )?
        .query_row(params![id], |r| {
            Ok(AsState {
                cursor: r.get(0)?,
                next_txn: r.get(1)?,
                last_success_ts: r.get(2)?,
                last_error_ts: r.get(3)?,
                last_error: r.get(4)?,
                failures: r.get(5)?,
                next_retry_ts: r.get(6)?,
            })
        })
        .optional()?)
}

/// Creates the state row of `id` with its cursor at `cursor` (a newly registered appservice
/// gets what happens from now on, not the history); keeps an existing row.
pub fn ensure_state(conn: &Connection, id: &str, cursor: i64) -> Result<AsState> {
    conn.prepare_cached(
        "INSERT INTO appservice_state (appservice_id, cursor) VALUES (?1, ?2)
         ON CONFLICT (appservice_id) DO NOTHING",
    )?
    .execute(params![id, cursor])?;
    Ok(state(conn, id)?.unwrap_or_default())
}

/// A transaction formed and not yet acknowledged.
#[derive(Debug, Clone)]
pub struct FormedTxn {
    /// Its `txnId`.
    pub txn_id: String,
    /// The JSON body, exactly as first formed.
    pub body: String,
    /// How many events and ephemeral items it carries.
    pub items: i64,
}

/// The transaction in flight for `id`.
pub fn in_flight(conn: &Connection, id: &str) -> Result<Option<FormedTxn>> {
    Ok(conn
        .prepare_cached("SELECT txn_id, body, items FROM appservice_txns WHERE appservice_id = ?1")?
        .query_row(params![id], |r| {
            Ok(FormedTxn {
                txn_id: r.get(0)?,
                body: r.get(1)?,
                items: r.get(2)?,
            })
        })
        .optional()?)
}

/// A stored event the sender examines: its position, event ID and PDU JSON.
pub type StreamEvent = (i64, String, String);

/// Accepted, non-outlier events after `after` up to `upto`, oldest first, at most `limit`.
pub fn events_between(
    conn: &Connection,
    after: i64,
    upto: i64,
    limit: usize,
) -> Result<Vec<StreamEvent>> {
    let mut stmt = conn.prepare_cached(
        "SELECT stream_pos, event_id, json FROM events
         WHERE stream_pos > ?1 AND stream_pos <= ?2 AND outlier = 0 AND rejected = 0 AND soft_failed = 0
         ORDER BY stream_pos LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![after, upto, limit as i64], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Moves the cursor of `id` (nothing interesting was found up to `cursor`).
pub fn set_cursor(conn: &Connection, id: &str, cursor: i64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE appservice_state SET cursor = max(cursor, ?2) WHERE appservice_id = ?1",
    )?
    .execute(params![id, cursor])?;
    Ok(())
}

/// Stores a formed transaction, moves the cursor past its events and removes the ephemeral
/// items it carries (up to `ephemeral_up_to`), in one write. Returns its ID.
pub fn form(
    conn: &Connection,
    id: &str,
    body: &str,
    items: i64,
    cursor: i64,
    ephemeral_up_to: Option<i64>,
    now: i64,
) -> Result<String> {
    let next: i64 = conn.query_row(
        "SELECT next_txn FROM appservice_state WHERE appservice_id = ?1",
        params![id],
        |r| r.get(0),
    )?;
    let txn_id = next.to_string();
    conn.prepare_cached(
        "INSERT INTO appservice_txns (appservice_id, txn_id, body, items, created_ts) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![id, txn_id, body, items, now])?;
    conn.prepare_cached(
        "UPDATE appservice_state SET cursor = max(cursor, ?2), next_txn = next_txn + 1 WHERE appservice_id = ?1",
    )?
    .execute(params![id, cursor])?;
    if let Some(up_to) = ephemeral_up_to {
        conn.prepare_cached(
            "DELETE FROM appservice_ephemeral WHERE appservice_id = ?1 AND id <= ?2",
        )?
        .execute(params![id, up_to])?;
    }
    Ok(txn_id)
}

/// Records that the transaction in flight was acknowledged.
pub fn delivered(conn: &Connection, id: &str, now: i64) -> Result<()> {
    conn.prepare_cached("DELETE FROM appservice_txns WHERE appservice_id = ?1")?
        .execute(params![id])?;
    conn.prepare_cached(
        "UPDATE appservice_state SET last_success_ts = ?2, failures = 0, next_retry_ts = NULL
         WHERE appservice_id = ?1",
    )?
    .execute(params![id, now])?;
    Ok(())
}

/// Records a failed attempt and when the next one is due.
pub fn failed(conn: &Connection, id: &str, error: &str, now: i64, next_retry: i64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE appservice_state SET last_error_ts = ?2, last_error = ?3, failures = failures + 1,
         next_retry_ts = ?4 WHERE appservice_id = ?1",
    )?
    .execute(params![id, now, error, next_retry])?;
    Ok(())
}

/// Queues an ephemeral item (`section` is the transaction key it goes under) for `id`.
pub fn enqueue_ephemeral(
    conn: &Connection,
    id: &str,
    section: &str,
    payload: &str,
    now: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO appservice_ephemeral (appservice_id, section, payload, created_ts) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![id, section, payload, now])?;
    Ok(())
}

/// The oldest queued ephemeral items of `id`: `(id, section, payload)`.
pub fn ephemeral_batch(
    conn: &Connection,
    id: &str,
    limit: usize,
) -> Result<Vec<(i64, String, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, section, payload FROM appservice_ephemeral WHERE appservice_id = ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![id, limit as i64], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// What waits for `id`: the items of the transaction in flight, the events after its cursor
/// not yet examined (an upper bound: the sender may find some uninteresting), and the queued
/// ephemeral items.
pub fn queue_depth(conn: &Connection, id: &str) -> Result<i64> {
    let in_flight: i64 = conn.query_row(
        "SELECT coalesce(sum(items), 0) FROM appservice_txns WHERE appservice_id = ?1",
        params![id],
        |r| r.get(0),
    )?;
    let unexamined: i64 = match state(conn, id)? {
        Some(st) => conn.query_row(
            "SELECT count(*) FROM events WHERE stream_pos > ?1 AND outlier = 0 AND rejected = 0 AND soft_failed = 0",
            params![st.cursor],
            |r| r.get(0),
        )?,
        None => 0,
    };
    let ephemeral: i64 = conn.query_row(
        "SELECT count(*) FROM appservice_ephemeral WHERE appservice_id = ?1",
        params![id],
        |r| r.get(0),
    )?;
    Ok(in_flight + unexamined + ephemeral)
}
