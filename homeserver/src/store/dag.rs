//! The room DAG beyond the local timeline: outliers (auth chains, invites), soft-failed
//! events, auth chains, walks between events for `get_missing_events` and backfill, the
//! backfill point and positions, wholesale current-state replacement after state resolution,
//! invites received from other units, and whether this unit takes part in a room.

use std::collections::{BTreeSet, HashSet};

use rusqlite::{Connection, OptionalExtension, params};

use super::state::StateMap;
use crate::error::Result;
use crate::matrix::pdu::Pdu;

/// Stores an event we hold outside the timeline (auth chain, invite).
pub fn insert_outlier(conn: &Connection, pdu: &Pdu, stream_pos: i64) -> Result<()> {
    super::events::insert_event(conn, pdu, stream_pos, None, None)?;
    conn.execute(
        "UPDATE events SET outlier = 1 WHERE event_id = ?1",
        params![pdu.event_id.as_str()],
    )?;
    Ok(())
}

/// Turns an outlier into a timeline event with its state.
pub fn de_outlier(
    conn: &Connection,
    event_id: &str,
    state_group: Option<i64>,
    rejected: bool,
    soft_failed: bool,
) -> Result<()> {
    conn.execute(
        "UPDATE events SET outlier = 0, state_group = ?2, rejected = ?3, soft_failed = ?4 WHERE event_id = ?1",
        params![event_id, state_group, rejected, soft_failed],
    )?;
    Ok(())
}

/// Marks an event soft-failed (stored, never shown, never built upon).
pub fn set_soft_failed(conn: &Connection, event_id: &str) -> Result<()> {
    conn.execute(
        "UPDATE events SET soft_failed = 1 WHERE event_id = ?1",
        params![event_id],
    )?;
    Ok(())
}

/// Whether an event is stored (in any form).
pub fn have_event(conn: &Connection, event_id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM events WHERE event_id = ?1")?
        .query_row(params![event_id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Whether an event is stored as an outlier.
pub fn is_outlier(conn: &Connection, event_id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT outlier FROM events WHERE event_id = ?1")?
        .query_row(params![event_id], |r| r.get::<_, bool>(0))
        .optional()?
        .unwrap_or(false))
}

/// The full auth chain (all auth-event ancestors) of `event_ids`, excluding the events
/// themselves. An event's `auth_events` are read from its stored PDU (a list of IDs, or of
/// `[id, hashes]` pairs in room versions 1 and 2; redaction keeps them): no table repeats
/// them, because such a table is keyed by random event IDs and cost every stored event
/// ~2.4 pages of write-ahead log (migration 0016).
pub fn auth_chain(conn: &Connection, event_ids: &[String]) -> Result<HashSet<String>> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut frontier: Vec<String> = event_ids.to_vec();
    let mut stmt = conn.prepare_cached(
        "SELECT CASE a.type WHEN 'array' THEN a.value ->> 0 ELSE a.value END
         FROM events e CROSS JOIN json_each(e.json, '$.auth_events') AS a
         WHERE e.event_id = ?1",
    )?;
    while let Some(id) = frontier.pop() {
        let parents = stmt.query_map(params![id], |r| r.get::<_, String>(0))?;
        for parent in parents {
            let parent = parent?;
            if seen.insert(parent.clone()) {
                frontier.push(parent);
            }
        }
    }
    Ok(seen)
}

/// Replaces a room's current state wholesale (after state resolution). `memberships` gives
/// the membership of each member event in `state`.
pub fn replace_current_state(
    conn: &Connection,
    room_id: &str,
    state: &StateMap,
    memberships: &dyn Fn(&str) -> Option<String>,
    group: i64,
) -> Result<()> {
    conn.execute(
        "DELETE FROM current_state WHERE room_id = ?1",
        params![room_id],
    )?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO current_state (room_id, event_type, state_key, event_id, membership) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for ((kind, key), event_id) in state {
        let membership = if kind == "m.room.member" {
            memberships(event_id)
        } else {
            None
        };
        insert.execute(params![room_id, kind, key, event_id, membership])?;
    }
    conn.execute(
        "UPDATE rooms SET current_state_group = ?2 WHERE room_id = ?1",
        params![room_id, group],
    )?;
    Ok(())
}

/// Events of a room between `earliest` (exclusive) and `latest`, walking prev_events backwards
/// from `latest`, at most `limit`, oldest first (for get_missing_events).
pub fn missing_between(
    conn: &Connection,
    room_id: &str,
    earliest: &BTreeSet<String>,
    latest: &[String],
    limit: usize,
) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut seen: HashSet<String> = latest.iter().cloned().collect();
    let mut frontier: Vec<String> = latest.to_vec();
    let mut prevs = conn.prepare_cached(
        "SELECT v.event_id FROM events e CROSS JOIN json_each(e.json, '$.prev_events') AS p
         JOIN events v
           ON v.event_id = CASE p.type WHEN 'array' THEN p.value ->> 0 ELSE p.value END
         WHERE e.event_id = ?1 AND v.room_id = ?2",
    )?;
    while let Some(id) = frontier.pop() {
        let parents: Vec<String> = prevs
            .query_map(params![id, room_id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for parent in parents {
            if earliest.contains(&parent) || !seen.insert(parent.clone()) {
                continue;
            }
            found.push(parent.clone());
            if found.len() >= limit {
                return Ok(found);
            }
            frontier.push(parent);
        }
    }
    Ok(found)
}

/// Remembers an invite from another unit, with the stripped state to show the invitee.
pub fn store_remote_invite(
    conn: &Connection,
    room_id: &str,
    user_id: &str,
    event_id: &str,
    invite_state: &str,
) -> Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO remote_invites (room_id, user_id, event_id, invite_state) VALUES (?1, ?2, ?3, ?4)",
        params![room_id, user_id, event_id, invite_state],
    )?;
    Ok(())
}

/// A `remote_invites` row: an invite (or a knock's pending state) from another unit for a
/// room this unit does not take part in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteInvite {
    /// The invite (or knock) member event.
    pub event_id: String,
    /// The stripped state the inviting server sent, as a JSON list.
    pub invite_state: String,
}

/// An invite from another unit.
pub fn remote_invite(
    conn: &Connection,
    room_id: &str,
    user_id: &str,
) -> Result<Option<RemoteInvite>> {
    Ok(conn
        .query_row(
            "SELECT event_id, invite_state FROM remote_invites WHERE room_id = ?1 AND user_id = ?2",
            params![room_id, user_id],
            |r| {
                Ok(RemoteInvite {
                    event_id: r.get(0)?,
                    invite_state: r.get(1)?,
                })
            },
        )
        .optional()?)
}

/// Whether this unit takes part in the room (holds its current state).
pub fn participating(conn: &Connection, room_id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM current_state WHERE room_id = ?1 AND event_type = 'm.room.create'",
        )?
        .query_row(params![room_id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Where a room's locally held history begins with a gap: the prev events of the earliest
/// timeline event that we do not hold as timeline events (`None` when the history reaches the
/// create event or nothing is missing).
pub fn backfill_point(conn: &Connection, room_id: &str) -> Result<Option<Vec<String>>> {
    let earliest: Option<(String, String)> = conn
        .query_row(
            "SELECT event_id, event_type FROM events WHERE room_id = ?1 AND outlier = 0
             ORDER BY depth, stream_pos LIMIT 1",
            params![room_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((event_id, kind)) = earliest else {
        return Ok(None);
    };
    if kind == "m.room.create" {
        return Ok(None);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT prev FROM (
             SELECT CASE p.type WHEN 'array' THEN p.value ->> 0 ELSE p.value END AS prev
             FROM events e CROSS JOIN json_each(e.json, '$.prev_events') AS p
             WHERE e.event_id = ?1)
         LEFT JOIN events v ON v.event_id = prev
         WHERE v.event_id IS NULL OR v.outlier = 1",
    )?;
    let missing: Vec<String> = stmt
        .query_map(params![event_id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok((!missing.is_empty()).then_some(missing))
}

/// A stream position below every existing one, for history fetched by backfill: it belongs
/// before everything a client has synced, so sync never reports it as new.
pub fn next_backfill_pos(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT min(0, coalesce(min(stream_pos), 0)) - 1 FROM events",
        [],
        |r| r.get(0),
    )?)
}

/// Stores a backfilled event as history (or gives an outlier its place in the timeline).
pub fn store_backfilled(conn: &Connection, pdu: &Pdu) -> Result<bool> {
    if have_event(conn, pdu.event_id.as_str())? {
        if is_outlier(conn, pdu.event_id.as_str())? {
            conn.execute(
                "UPDATE events SET outlier = 0 WHERE event_id = ?1",
                params![pdu.event_id.as_str()],
            )?;
            return Ok(true);
        }
        return Ok(false);
    }
    let pos = next_backfill_pos(conn)?;
    super::events::insert_event(conn, pdu, pos, None, None)?;
    Ok(true)
}
