//! What the server pushes to application services: per appservice, how far through the event
//! stream the sender has looked (its cursor), the one transaction formed and not yet
//! acknowledged (ID and body fixed when formed), the ephemeral items waiting for it, and its
//! link state (migrations 0018 and 0020).
//!
//! The queue of room events is the event stream itself: an event is durable in the write
//! transaction that stores it, and the cursor and the formed transaction move in one write, so
//! a crash between any two steps neither loses nor reorders an event, and a transaction is
//! re-sent with its own ID and body.
//!
//! An appservice that is no longer registered keeps its row, marked removed (its transaction
//! in flight and queued items dropped); registered again, it starts at the stream position of
//! that moment with its transaction IDs still counting up ([`start_stream`]).

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
    /// When it was found no longer registered; `None` while it is.
    pub removed_ts: Option<i64>,
}

/// The state row of `id`, if the sender has ever started for it.
pub fn state(conn: &Connection, id: &str) -> Result<Option<AsState>> {
    Ok(conn
        .prepare_cached(
            "SELECT cursor, next_txn, last_success_ts, last_error_ts, last_error, failures, next_retry_ts,
             removed_ts FROM appservice_state WHERE appservice_id = ?1",
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
                removed_ts: r.get(7)?,
            })
        })
        .optional()?)
}

/// Creates the state row of `id` with its cursor at `cursor` (a newly registered appservice
/// gets what happens from now on, not the history); keeps an existing row, a removed one
/// included (only [`start_stream`] starts a removed appservice again).
pub fn ensure_state(conn: &Connection, id: &str, cursor: i64) -> Result<AsState> {
    conn.prepare_cached(
        "INSERT INTO appservice_state (appservice_id, cursor) VALUES (?1, ?2)
         ON CONFLICT (appservice_id) DO NOTHING",
    )?
    .execute(params![id, cursor])?;
    Ok(state(conn, id)?.unwrap_or_default())
}

/// Starts the stream of registered appservice `id` at `cursor`: a new row, or, for an
/// appservice that was removed, its row restarted there (link state cleared, anything left
/// for it dropped) with its transaction counter kept, so its txnIds never repeat. A row of
/// an appservice that stayed registered is kept as it is.
pub fn start_stream(conn: &Connection, id: &str, cursor: i64) -> Result<()> {
    match state(conn, id)? {
        None => {
            ensure_state(conn, id, cursor)?;
        }
        Some(st) if st.removed_ts.is_some() => {
            drop_queued(conn, id)?;
            conn.prepare_cached(
                "UPDATE appservice_state SET cursor = ?2, removed_ts = NULL, last_success_ts = NULL,
                 last_error_ts = NULL, last_error = NULL, failures = 0, next_retry_ts = NULL
                 WHERE appservice_id = ?1",
            )?
            .execute(params![id, cursor])?;
        }
        Some(_) => {}
    }
    Ok(())
}

/// Marks every appservice with a row that is not in `registered` as removed at `now`,
/// dropping its transaction in flight and its queued items; returns their IDs.
pub fn mark_removed(conn: &Connection, registered: &[String], now: i64) -> Result<Vec<String>> {
    let active: Vec<String> = conn
        .prepare_cached("SELECT appservice_id FROM appservice_state WHERE removed_ts IS NULL")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let gone: Vec<String> = active
        .into_iter()
        .filter(|id| !registered.contains(id))
        .collect();
    for id in &gone {
        drop_queued(conn, id)?;
        conn.prepare_cached(
            "UPDATE appservice_state SET removed_ts = ?2, failures = 0, next_retry_ts = NULL
             WHERE appservice_id = ?1",
        )?
        .execute(params![id, now])?;
    }
    Ok(gone)
}

/// Drops the transaction in flight and the queued ephemeral items of `id`.
fn drop_queued(conn: &Connection, id: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM appservice_txns WHERE appservice_id = ?1")?
        .execute(params![id])?;
    conn.prepare_cached("DELETE FROM appservice_ephemeral WHERE appservice_id = ?1")?
        .execute(params![id])?;
    Ok(())
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

/// A stored event the appservice sender examines.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    /// Its stream position (how far the appservice's cursor moves past it).
    pub stream_pos: i64,
    /// The event ID.
    pub event_id: String,
    /// The stored PDU JSON.
    pub json: String,
}

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
        Ok(StreamEvent {
            stream_pos: r.get(0)?,
            event_id: r.get(1)?,
            json: r.get(2)?,
        })
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
/// items it carries (up to `ephemeral_up_to`), in one write. Returns its ID; `None` (nothing
/// stored) when the appservice was removed meanwhile.
pub fn form(
    conn: &Connection,
    id: &str,
    body: &str,
    items: i64,
    cursor: i64,
    ephemeral_up_to: Option<i64>,
    now: i64,
) -> Result<Option<String>> {
    let Some(next) = conn
        .prepare_cached(
            "SELECT next_txn FROM appservice_state WHERE appservice_id = ?1 AND removed_ts IS NULL",
        )?
        .query_row(params![id], |r| r.get::<_, i64>(0))
        .optional()?
    else {
        return Ok(None);
    };
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
    Ok(Some(txn_id))
}

/// Removes the queued ephemeral items of `id` up to `up_to` without sending them (device key
/// changes queued for an appservice that no longer asks for MSC3202 data).
pub fn drop_ephemeral(conn: &Connection, id: &str, up_to: i64) -> Result<()> {
    conn.prepare_cached("DELETE FROM appservice_ephemeral WHERE appservice_id = ?1 AND id <= ?2")?
        .execute(params![id, up_to])?;
    Ok(())
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

/// Records a failed attempt and when the next one is due (`next_retry` is given the number
/// of failures since the last success, this one included); returns that number.
pub fn failed(
    conn: &Connection,
    id: &str,
    error: &str,
    now: i64,
    next_retry: impl FnOnce(i64) -> i64,
) -> Result<i64> {
    let failures = state(conn, id)?.map_or(0, |st| st.failures) + 1;
    let next_retry = next_retry(failures);
    conn.prepare_cached(
        "UPDATE appservice_state SET last_error_ts = ?2, last_error = ?3, failures = failures + 1,
         next_retry_ts = ?4 WHERE appservice_id = ?1",
    )?
    .execute(params![id, now, error, next_retry])?;
    Ok(failures)
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

/// One queued ephemeral item of an appservice.
#[derive(Debug, Clone)]
pub struct EphemeralItem {
    /// Its queue position.
    pub id: i64,
    /// The transaction section it goes into (or [`KEYS_SECTION`]).
    pub section: String,
    /// The item, JSON text.
    pub payload: String,
}

/// The oldest queued ephemeral items of `id`.
pub fn ephemeral_batch(conn: &Connection, id: &str, limit: usize) -> Result<Vec<EphemeralItem>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, section, payload FROM appservice_ephemeral WHERE appservice_id = ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![id, limit as i64], |r| {
        Ok(EphemeralItem {
            id: r.get(0)?,
            section: r.get(1)?,
            payload: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// What waits for `id` besides the events after its cursor: the items of the transaction in
/// flight and the queued ephemeral items (a device whose key counts changed counts once).
pub fn queued_items(conn: &Connection, id: &str) -> Result<i64> {
    let in_flight: i64 = conn.query_row(
        "SELECT coalesce(sum(items), 0) FROM appservice_txns WHERE appservice_id = ?1",
        params![id],
        |r| r.get(0),
    )?;
    let ephemeral: i64 = conn.query_row(
        "SELECT count(DISTINCT CASE WHEN section = ?2 THEN section || payload ELSE id END)
         FROM appservice_ephemeral WHERE appservice_id = ?1",
        params![id, KEYS_SECTION],
        |r| r.get(0),
    )?;
    Ok(in_flight + ephemeral)
}

/// The section of the ephemeral queue that names a device whose one-time key counts or
/// unused fallback key types changed (MSC3202): the payload is `{"user_id", "device_id"}`, and
/// the transaction carries the counts read when it is formed.
pub const KEYS_SECTION: &str = "msc3202.device_keys";

/// What decides whether an event interests an appservice, without its JSON: room, sender,
/// type and state key.
pub struct EventHead {
    /// The room.
    pub room_id: String,
    /// Who sent it.
    pub sender: String,
    /// Its type.
    pub event_type: String,
    /// Its state key, for a state event.
    pub state_key: Option<String>,
}

/// The heads of the accepted, non-outlier events after `after`, oldest first.
pub fn event_heads_after(conn: &Connection, after: i64) -> Result<Vec<EventHead>> {
    let mut stmt = conn.prepare_cached(
        "SELECT room_id, sender, event_type, state_key FROM events
         WHERE stream_pos > ?1 AND outlier = 0 AND rejected = 0 AND soft_failed = 0
         ORDER BY stream_pos",
    )?;
    let rows = stmt.query_map(params![after], |r| {
        Ok(EventHead {
            room_id: r.get(0)?,
            sender: r.get(1)?,
            event_type: r.get(2)?,
            state_key: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A membership change.
#[derive(Debug, Clone)]
pub struct MemberChange {
    /// The room.
    pub room_id: String,
    /// The member (the event's state key).
    pub user_id: String,
    /// The new membership (empty when the event has none).
    pub membership: String,
}

/// Membership changes in `(after, upto]`, oldest first.
pub fn member_changes(conn: &Connection, after: i64, upto: i64) -> Result<Vec<MemberChange>> {
    let mut stmt = conn.prepare_cached(
        "SELECT room_id, state_key, coalesce(json_extract(json, '$.content.membership'), '')
         FROM events
         WHERE stream_pos > ?1 AND stream_pos <= ?2 AND event_type = 'm.room.member'
         AND state_key IS NOT NULL AND outlier = 0 AND rejected = 0 AND soft_failed = 0
         ORDER BY stream_pos",
    )?;
    let rows = stmt.query_map(params![after, upto], |r| {
        Ok(MemberChange {
            room_id: r.get(0)?,
            user_id: r.get(1)?,
            membership: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
