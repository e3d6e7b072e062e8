//! Events: the PDUs of every room, their DAG edges, forward extremities, transaction IDs and
//! the orderings clients page through.
//!
//! Two orderings exist: `stream_pos` (local arrival, what sync follows) and the topological key
//! `(depth, stream_pos)` (what `/messages` follows, so backfilled history sorts before newer
//! events even though it arrived later).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use ruma::OwnedEventId;
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::{Error, Result};
use crate::matrix::pdu::Pdu;

/// A stored event with its local bookkeeping.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The PDU (redacted form once redacted).
    pub pdu: Pdu,
    /// Local stream position.
    pub stream_pos: i64,
    /// State group of the state after this event.
    pub state_group: Option<i64>,
    /// The redaction that redacted it, if any.
    pub redacted_by: Option<String>,
    /// Sending device and transaction ID, for local events.
    pub txn: Option<EventTxn>,
}

/// Who sent a local event under which transaction ID (`PUT /send/…/{txnId}`), so the sender's
/// device sees `unsigned.transaction_id` and a retry finds the event again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTxn {
    /// The sending device (an appservice request without a device: empty).
    pub device_id: String,
    /// The client's transaction ID.
    pub txn_id: String,
}

/// A forward extremity of a room: an event no other event of the room references yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extremity {
    /// The event.
    pub event_id: OwnedEventId,
    /// Its depth, which the next local event exceeds.
    pub depth: u64,
}

const COLUMNS: &str =
    "event_id, json, rejected, stream_pos, state_group, redacted_by, txn_device, txn_id";

/// One `events` row in `COLUMNS` order, before its PDU is parsed.
struct RawRow {
    /// The event ID.
    event_id: String,
    /// The stored PDU JSON.
    json: String,
    /// Whether the event failed authorisation.
    rejected: bool,
    /// Local stream position.
    stream_pos: i64,
    /// State group of the state after the event.
    state_group: Option<i64>,
    /// The redaction that redacted it.
    redacted_by: Option<String>,
    /// The sending device, for local events.
    txn_device: Option<String>,
    /// The client's transaction ID, for local events.
    txn_id: Option<String>,
}

/// The row→type function of `events` (columns in `COLUMNS` order).
fn from_row(row: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        event_id: row.get(0)?,
        json: row.get(1)?,
        rejected: row.get(2)?,
        stream_pos: row.get(3)?,
        state_group: row.get(4)?,
        redacted_by: row.get(5)?,
        txn_device: row.get(6)?,
        txn_id: row.get(7)?,
    })
}

/// How many parsed PDUs [`PARSED`] keeps before it starts over (about 3 KiB each).
const PARSED_CAPACITY: usize = 4096;

/// PDUs parsed from stored rows, by event ID: an initial `/sync` reads the same few thousand
/// events on every call, and parsing them was its largest cost. An entry is used only when
/// the row still holds the very JSON it was parsed from (a redaction rewrites it), so it is
/// never stale and needs no invalidation; it is a cache of parsing, not of answers. Bounded by
/// [`PARSED_CAPACITY`]: emptied whole when full.
static PARSED: LazyLock<Mutex<HashMap<String, Pdu>>> = LazyLock::new(Mutex::default);

/// Parses a stored PDU, or takes it from [`PARSED`] when the row's JSON is unchanged.
fn parse_cached(event_id: String, json: String, rejected: bool) -> Result<Pdu> {
    if let Ok(cache) = PARSED.lock()
        && let Some(pdu) = cache.get(&event_id)
        && pdu.json == json
        && pdu.rejected == rejected
    {
        return Ok(pdu.clone());
    }
    let id = OwnedEventId::try_from(event_id.as_str())
        .map_err(|err| Error::internal(format!("stored event id invalid: {err}")))?;
    let pdu = Pdu::parse(id, json, rejected)
        .map_err(|err| Error::internal(format!("stored event invalid: {err}")))?;
    if let Ok(mut cache) = PARSED.lock() {
        if cache.len() >= PARSED_CAPACITY {
            cache.clear();
        }
        cache.insert(event_id, pdu.clone());
    }
    Ok(pdu)
}

fn into_stored(raw: RawRow) -> Result<StoredEvent> {
    let pdu = parse_cached(raw.event_id, raw.json, raw.rejected)?;
    let txn = raw
        .txn_device
        .zip(raw.txn_id)
        .map(|(device_id, txn_id)| EventTxn { device_id, txn_id });
    Ok(StoredEvent {
        pdu,
        stream_pos: raw.stream_pos,
        state_group: raw.state_group,
        redacted_by: raw.redacted_by,
        txn,
    })
}

/// The newest stream position on disk (0 for a fresh database).
pub fn max_stream_pos(conn: &Connection) -> rusqlite::Result<i64> {
    let events: i64 =
        conn.query_row("SELECT coalesce(max(stream_pos), 0) FROM events", [], |r| {
            r.get(0)
        })?;
    let data: i64 = conn.query_row(
        "SELECT coalesce(max(stream_pos), 0) FROM account_data",
        [],
        |r| r.get(0),
    )?;
    let receipts: i64 = conn.query_row(
        "SELECT coalesce(max(stream_pos), 0) FROM receipts",
        [],
        |r| r.get(0),
    )?;
    let meta: i64 = conn
        .query_row(
            "SELECT CAST(value AS INTEGER) FROM server_meta WHERE key = 'stream_pos'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    // Device-list changes, to-device messages and presence take positions of their own too
    // (a login is a device-list change): the next position after a restart must pass them.
    let mut others = 0;
    for sql in [
        "SELECT coalesce(max(stream_pos), 0) FROM device_list_changes",
        "SELECT coalesce(max(stream_pos), 0) FROM to_device",
        "SELECT coalesce(max(stream_pos), 0) FROM presence",
    ] {
        others = others.max(conn.query_row(sql, [], |r| r.get::<_, i64>(0))?);
    }
    Ok(events.max(data).max(receipts).max(meta).max(others))
}

/// Records a stream position that has no row of its own (e.g. a deleted account-data item),
/// so positions never go backwards after a restart.
pub fn record_stream_pos(conn: &Connection, pos: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO server_meta (key, value) VALUES ('stream_pos', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![pos.to_string()],
    )?;
    Ok(())
}

/// Inserts a new event; its edges (`prev_events`, `auth_events`) are read from the stored PDU
/// when needed. The caller updates extremities and state.
pub fn insert_event(
    conn: &Connection,
    pdu: &Pdu,
    stream_pos: i64,
    state_group: Option<i64>,
    txn: Option<(&str, &str)>,
) -> Result<()> {
    // Cached: compiling this statement also compiles the search triggers on `events`.
    conn.prepare_cached(
        "INSERT INTO events (stream_pos, event_id, room_id, event_type, state_key, sender,
            origin_server_ts, depth, json, state_group, rejected, txn_device, txn_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        stream_pos,
        pdu.event_id.as_str(),
        pdu.room_id.as_str(),
        pdu.kind.to_string(),
        pdu.state_key,
        pdu.sender.as_str(),
        i64::from(pdu.origin_server_ts.get()),
        pdu.depth as i64,
        pdu.json,
        state_group,
        pdu.rejected,
        txn.map(|t| t.0),
        txn.map(|t| t.1),
    ])?;
    Ok(())
}

/// Loads one event by ID.
pub fn get_event(conn: &Connection, event_id: &str) -> Result<Option<StoredEvent>> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {COLUMNS} FROM events WHERE event_id = ?1"))?;
    stmt.query_row(params![event_id], from_row)
        .optional()?
        .map(into_stored)
        .transpose()
}

/// One event of a room's current state, unparsed: for listings of thousands (`/members`) that
/// format most events straight from their JSON and load the few that need more with
/// [`get_event`].
#[derive(Debug)]
pub struct CurrentStateRow {
    /// The event's ID.
    pub event_id: String,
    /// Its state key.
    pub state_key: String,
    /// `current_state.membership`: the `membership` of an `m.room.member` event.
    pub membership: Option<String>,
    /// The stored PDU JSON (redacted form once redacted).
    pub json: String,
    /// The redaction that redacted it, if any.
    pub redacted_by: Option<String>,
}

/// The events of `room_id`'s current state of type `event_type`, in one query (no order).
pub fn current_state_rows(
    conn: &Connection,
    room_id: &str,
    event_type: &str,
) -> Result<Vec<CurrentStateRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.event_id, c.state_key, c.membership, e.json, e.redacted_by
         FROM current_state c JOIN events e ON e.event_id = c.event_id
         WHERE c.room_id = ?1 AND c.event_type = ?2",
    )?;
    let rows = stmt.query_map(params![room_id, event_type], |row| {
        Ok(CurrentStateRow {
            event_id: row.get(0)?,
            state_key: row.get(1)?,
            membership: row.get(2)?,
            json: row.get(3)?,
            redacted_by: row.get(4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Loads one event and checks it belongs to `room_id`.
pub fn get_room_event(
    conn: &Connection,
    room_id: &str,
    event_id: &str,
) -> Result<Option<StoredEvent>> {
    Ok(get_event(conn, event_id)?.filter(|e| e.pdu.room_id.as_str() == room_id))
}

/// The event a device already sent with this transaction ID.
pub fn event_for_txn(
    conn: &Connection,
    sender: &str,
    device: &str,
    txn_id: &str,
) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT event_id FROM events WHERE sender = ?1 AND txn_device = ?2 AND txn_id = ?3",
        )?
        .query_row(params![sender, device, txn_id], |r| r.get(0))
        .optional()?)
}

/// The room's forward extremities with their depth, shallowest first.
pub fn forward_extremities(conn: &Connection, room_id: &str) -> Result<Vec<Extremity>> {
    let mut stmt = conn.prepare_cached(
        "SELECT f.event_id, e.depth FROM forward_extremities f JOIN events e USING (event_id)
         WHERE f.room_id = ?1 ORDER BY e.depth",
    )?;
    let rows = stmt.query_map(params![room_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, depth) = row?;
        let event_id =
            OwnedEventId::try_from(id).map_err(|err| Error::internal(err.to_string()))?;
        out.push(Extremity {
            event_id,
            depth: depth as u64,
        });
    }
    Ok(out)
}

/// Makes `event_id` a forward extremity in place of the events it references.
pub fn advance_extremities(conn: &Connection, pdu: &Pdu) -> Result<()> {
    let mut del = conn
        .prepare_cached("DELETE FROM forward_extremities WHERE room_id = ?1 AND event_id = ?2")?;
    for prev in &pdu.prev_events {
        del.execute(params![pdu.room_id.as_str(), prev.as_str()])?;
    }
    conn.prepare_cached(
        "INSERT OR IGNORE INTO forward_extremities (room_id, event_id) VALUES (?1, ?2)",
    )?
    .execute(params![pdu.room_id.as_str(), pdu.event_id.as_str()])?;
    Ok(())
}

/// Replaces an event's JSON with its redacted form.
pub fn store_redaction(
    conn: &Connection,
    event_id: &str,
    redacted_json: &str,
    redacted_by: &str,
) -> Result<()> {
    conn.execute(
        "UPDATE events SET json = ?2, redacted_by = ?3 WHERE event_id = ?1",
        params![event_id, redacted_json, redacted_by],
    )?;
    Ok(())
}

/// Events of a room with `after < stream_pos <= upto`, newest first, at most `limit`.
pub fn room_events_desc(
    conn: &Connection,
    room_id: &str,
    after: i64,
    upto: i64,
    limit: usize,
) -> Result<Vec<StoredEvent>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM events WHERE room_id = ?1 AND stream_pos > ?2 AND stream_pos <= ?3
         AND rejected = 0 AND soft_failed = 0 AND outlier = 0 ORDER BY stream_pos DESC LIMIT ?4"
    ))?;
    let rows = stmt.query_map(params![room_id, after, upto, limit as i64], from_row)?;
    rows.map(|r| into_stored(r?)).collect()
}

/// A position in a room's topological order: the gap just before the event at
/// `(depth, stream_pos)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TopoKey {
    /// Depth.
    pub depth: i64,
    /// Stream position (tie-break).
    pub stream_pos: i64,
}

/// Events of a room in topological order from `from`: backwards gives events before the gap,
/// newest first; forwards gives events at or after it, oldest first.
pub fn room_events_topo(
    conn: &Connection,
    room_id: &str,
    from: TopoKey,
    backwards: bool,
    limit: usize,
) -> Result<Vec<StoredEvent>> {
    let sql = if backwards {
        format!(
            "SELECT {COLUMNS} FROM events WHERE room_id = ?1 AND (depth, stream_pos) < (?2, ?3)
             AND rejected = 0 AND soft_failed = 0 AND outlier = 0 ORDER BY depth DESC, stream_pos DESC LIMIT ?4"
        )
    } else {
        format!(
            "SELECT {COLUMNS} FROM events WHERE room_id = ?1 AND (depth, stream_pos) >= (?2, ?3)
             AND rejected = 0 AND soft_failed = 0 AND outlier = 0 ORDER BY depth ASC, stream_pos ASC LIMIT ?4"
        )
    };
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![room_id, from.depth, from.stream_pos, limit as i64],
        from_row,
    )?;
    rows.map(|r| into_stored(r?)).collect()
}

/// The topological gap just after the newest event of the room at or before `stream_pos`.
pub fn topo_key_after_stream(conn: &Connection, room_id: &str, stream_pos: i64) -> Result<TopoKey> {
    let key: Option<(i64, i64)> = conn
        .prepare_cached(
            "SELECT depth, stream_pos FROM events WHERE room_id = ?1 AND stream_pos <= ?2
             ORDER BY depth DESC, stream_pos DESC LIMIT 1",
        )?
        .query_row(params![room_id, stream_pos], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match key {
        Some((depth, pos)) => TopoKey {
            depth,
            stream_pos: pos + 1,
        },
        None => TopoKey {
            depth: 0,
            stream_pos: 0,
        },
    })
}

/// Which of `rooms` have events in `(after, upto]`. The range holds at most `upto - after`
/// events (positions of every stream share one counter): a short range is read whole, and a
/// longer one (a `/sync` that woke late on a busy unit) is asked about with one index probe
/// per room, so it costs what the user's own rooms cost.
pub fn rooms_with_events_between(
    conn: &Connection,
    rooms: &[&str],
    after: i64,
    upto: i64,
) -> Result<Vec<String>> {
    if upto.saturating_sub(after) <= rooms.len() as i64 {
        let wanted: std::collections::HashSet<&str> = rooms.iter().copied().collect();
        let mut stmt = conn.prepare_cached(
            "SELECT DISTINCT room_id FROM events WHERE stream_pos > ?1 AND stream_pos <= ?2",
        )?;
        let rows = stmt.query_map(params![after, upto], |r| r.get::<_, String>(0))?;
        let mut found = Vec::new();
        for room in rows {
            let room = room?;
            if wanted.contains(room.as_str()) {
                found.push(room);
            }
        }
        return Ok(found);
    }
    let rooms = serde_json::Value::from(rooms.to_vec()).to_string();
    let mut stmt = conn.prepare_cached(
        "SELECT r.value FROM json_each(?1) AS r WHERE EXISTS (
             SELECT 1 FROM events e
             WHERE e.room_id = r.value AND e.stream_pos > ?2 AND e.stream_pos <= ?3)",
    )?;
    let rows = stmt.query_map(params![rooms, after, upto], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// An event found by [`closest_to_timestamp`]; serialises as the `timestamp_to_event` answer
/// (`event_id`, `origin_server_ts`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TimestampMatch {
    /// The event.
    pub event_id: String,
    /// Its timestamp.
    pub origin_server_ts: i64,
    /// Its stream position, for the visibility check (not part of the answer).
    #[serde(skip)]
    pub stream_pos: i64,
}

/// The timeline event of a room closest to `ts` in direction `forward` (at or after `ts`) or
/// backward (at or before).
pub fn closest_to_timestamp(
    conn: &Connection,
    room_id: &str,
    ts: i64,
    forward: bool,
) -> Result<Option<TimestampMatch>> {
    let sql = if forward {
        "SELECT event_id, origin_server_ts, stream_pos FROM events WHERE room_id = ?1
         AND origin_server_ts >= ?2 AND rejected = 0 AND soft_failed = 0 AND outlier = 0
         ORDER BY origin_server_ts ASC, stream_pos ASC LIMIT 1"
    } else {
        "SELECT event_id, origin_server_ts, stream_pos FROM events WHERE room_id = ?1
         AND origin_server_ts <= ?2 AND rejected = 0 AND soft_failed = 0 AND outlier = 0
         ORDER BY origin_server_ts DESC, stream_pos DESC LIMIT 1"
    };
    Ok(conn
        .prepare_cached(sql)?
        .query_row(params![room_id, ts], |r| {
            Ok(TimestampMatch {
                event_id: r.get(0)?,
                origin_server_ts: r.get(1)?,
                stream_pos: r.get(2)?,
            })
        })
        .optional()?)
}

/// The newest timeline event of a room (by stream order), if any.
pub fn latest_event_id(conn: &Connection, room_id: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT event_id FROM events WHERE room_id = ?1 AND rejected = 0 AND outlier = 0
             ORDER BY stream_pos DESC LIMIT 1",
        )?
        .query_row(params![room_id], |r| r.get(0))
        .optional()?)
}
