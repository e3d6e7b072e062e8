//! Rooms, room state (state groups with deltas, and the materialised current state) and
//! memberships.
//!
//! A state group is either a full snapshot or a delta against a previous group; chains are cut
//! with a fresh snapshot every [`MAX_DELTA_DEPTH`] deltas so loading any state stays cheap.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, Result};
use crate::matrix::power::PowerLevels;

/// Longest delta chain before a new full snapshot is written.
const MAX_DELTA_DEPTH: i64 = 50;

/// A room's state: `(type, state_key) → event_id`.
pub type StateMap = BTreeMap<(String, String), String>;

/// A room's row.
#[derive(Debug, Clone)]
pub struct RoomRow {
    /// Room version string.
    pub room_version: String,
    /// Whether it is in the local public directory.
    pub is_public: bool,
    /// State group matching the current state.
    pub current_state_group: Option<i64>,
}

/// The room's current power levels, from its current `m.room.power_levels` and create events
/// read under its version's rules (for checks outside the auth rules: redactions, aliases,
/// directory listing, push conditions, upgrades).
pub fn power_levels(conn: &Connection, room_id: &str) -> Result<PowerLevels> {
    let room = get_room(conn, room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
    let (_, rules) = crate::matrix::room_rules(&room.room_version)?;
    let event = |kind: &str| -> Result<Option<crate::matrix::pdu::Pdu>> {
        Ok(match current_state_id(conn, room_id, kind, "")? {
            Some(id) => super::events::get_event(conn, &id)?.map(|e| e.pdu),
            None => None,
        })
    };
    let content = event("m.room.power_levels")?.map(|p| p.content_value());
    let mut creators = Vec::new();
    if let Some(create) = event("m.room.create")? {
        creators.push(create.sender.to_string());
        if rules.authorization.additional_room_creators
            && let Some(extra) = create
                .content_value()
                .get("additional_creators")
                .and_then(serde_json::Value::as_array)
        {
            creators.extend(
                extra
                    .iter()
                    .filter_map(serde_json::Value::as_str)
                    .map(str::to_owned),
            );
        }
    }
    Ok(PowerLevels::new(
        content,
        creators,
        rules.authorization.explicitly_privilege_room_creators,
    ))
}

/// Creates a room row.
pub fn create_room(
    conn: &Connection,
    room_id: &str,
    version: &str,
    creator: &str,
    now: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES (?1, ?2, ?3, ?4)",
        params![room_id, version, creator, now],
    )?;
    Ok(())
}

/// Loads a room's row.
pub fn get_room(conn: &Connection, room_id: &str) -> Result<Option<RoomRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT room_version, is_public, current_state_group FROM rooms WHERE room_id = ?1",
        )?
        .query_row(params![room_id], |r| {
            Ok(RoomRow {
                room_version: r.get(0)?,
                is_public: r.get(1)?,
                current_state_group: r.get(2)?,
            })
        })
        .optional()?)
}

/// Publishes or unpublishes a room in the local directory.
pub fn set_room_public(conn: &Connection, room_id: &str, public: bool) -> Result<()> {
    conn.execute(
        "UPDATE rooms SET is_public = ?2 WHERE room_id = ?1",
        params![room_id, public],
    )?;
    Ok(())
}

/// Rooms in the local public directory.
pub fn public_rooms(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT room_id FROM rooms WHERE is_public = 1 ORDER BY created_ts")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Adds a room to, or removes it from, an application service's list for one network.
pub fn set_appservice_room_listed(
    conn: &Connection,
    appservice_id: &str,
    network_id: &str,
    room_id: &str,
    listed: bool,
) -> Result<()> {
    if listed {
        conn.execute(
            "INSERT INTO appservice_room_list (appservice_id, network_id, room_id)
             VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            params![appservice_id, network_id, room_id],
        )?;
    } else {
        conn.execute(
            "DELETE FROM appservice_room_list
             WHERE appservice_id = ?1 AND network_id = ?2 AND room_id = ?3",
            params![appservice_id, network_id, room_id],
        )?;
    }
    Ok(())
}

/// One `appservice_room_list` row: a room an appservice published for one of its networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppserviceListing {
    /// The appservice's registration ID.
    pub appservice_id: String,
    /// The third-party network it published the room for.
    pub network_id: String,
    /// The published room.
    pub room_id: String,
}

impl AppserviceListing {
    /// The row→type function of `appservice_room_list` (`appservice_id, network_id, room_id`).
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            appservice_id: r.get(0)?,
            network_id: r.get(1)?,
            room_id: r.get(2)?,
        })
    }
}

/// Every entry of the appservices' lists, rooms in the order of the unit's own directory
/// (creation time).
pub fn appservice_room_lists(conn: &Connection) -> Result<Vec<AppserviceListing>> {
    let mut stmt = conn.prepare_cached(
        "SELECT l.appservice_id, l.network_id, l.room_id
         FROM appservice_room_list l JOIN rooms r ON r.room_id = l.room_id
         ORDER BY r.created_ts, l.room_id",
    )?;
    let rows = stmt.query_map([], AppserviceListing::from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Writes a new state group: `prev` plus `delta`. Returns its ID.
pub fn new_state_group(
    conn: &Connection,
    room_id: &str,
    prev: Option<i64>,
    delta: &StateMap,
) -> Result<i64> {
    let prev_depth: Option<i64> = match prev {
        Some(group) => conn
            .prepare_cached("SELECT delta_depth FROM state_groups WHERE state_group = ?1")?
            .query_row(params![group], |r| r.get(0))
            .optional()?,
        None => None,
    };
    let (prev, depth, entries) = match (prev, prev_depth) {
        (Some(prev), Some(depth)) if depth < MAX_DELTA_DEPTH => {
            (Some(prev), depth + 1, delta.clone())
        }
        (Some(prev), _) => {
            let mut full = state_at_group(conn, prev)?;
            full.extend(delta.iter().map(|(k, v)| (k.clone(), v.clone())));
            (None, 0, full)
        }
        (None, _) => (None, 0, delta.clone()),
    };
    conn.prepare_cached(
        "INSERT INTO state_groups (room_id, prev_group, delta_depth) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![room_id, prev, depth])?;
    let group = conn.last_insert_rowid();
    let mut insert = conn.prepare_cached(
        "INSERT INTO state_group_entries (state_group, event_type, state_key, event_id) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for ((kind, key), event_id) in &entries {
        insert.execute(params![group, kind, key, event_id])?;
    }
    Ok(group)
}

/// Prefixes a query with the delta chain of group `?1` as `chain(g, n)`: the group itself at
/// `n = 0`, then each `prev_group` with `n` one more, up to the snapshot. One recursive query
/// instead of a query per hop: formatting each state event for a client looks up its previous
/// state here, and a chain may be [`MAX_DELTA_DEPTH`] long.
macro_rules! with_chain {
    ($select:literal) => {
        concat!(
            "WITH RECURSIVE chain(g, n) AS (
                VALUES (?1, 0)
                UNION ALL
                SELECT s.prev_group, chain.n + 1 FROM chain
                CROSS JOIN state_groups s ON s.state_group = chain.g
                WHERE s.prev_group IS NOT NULL) ",
            $select
        )
    };
}

/// The full state of a group (walking its delta chain).
pub fn state_at_group(conn: &Connection, group: i64) -> Result<StateMap> {
    // Farthest group first, so a nearer delta's entry overwrites an older one.
    let mut entries = conn.prepare_cached(with_chain!(
        "SELECT e.event_type, e.state_key, e.event_id
         FROM chain CROSS JOIN state_group_entries e ON e.state_group = chain.g
         ORDER BY chain.n DESC"
    ))?;
    let mut state = StateMap::new();
    let rows = entries.query_map(params![group], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?;
    for row in rows {
        let (key, event_id) = row?;
        state.insert(key, event_id);
    }
    Ok(state)
}

/// The member events of `members` in a room's state group, member → event ID; members
/// without one are absent. A lazy-loading incremental `/sync` without a gap needs only the
/// timeline's senders and the heroes, not the whole state of the room. When `group` is the
/// room's current one (the usual case: no state event since the timeline began) they are
/// read from `current_state`, which holds exactly that group's state; otherwise by walking
/// the group's delta chain.
pub fn member_entries_at_group<'a>(
    conn: &Connection,
    room_id: &str,
    group: i64,
    members: impl IntoIterator<Item = &'a str>,
) -> Result<HashMap<String, String>> {
    let members = serde_json::Value::from(members.into_iter().collect::<Vec<_>>()).to_string();
    let current: Option<i64> = conn
        .prepare_cached("SELECT current_state_group FROM rooms WHERE room_id = ?1")?
        .query_row(params![room_id], |r| r.get(0))
        .optional()?
        .flatten();
    let entry: fn(&rusqlite::Row<'_>) -> rusqlite::Result<(String, String)> =
        |r| Ok((r.get(0)?, r.get(1)?));
    let mut stmt;
    let rows = if current == Some(group) {
        stmt = conn.prepare_cached(
            "SELECT c.state_key, c.event_id FROM json_each(?2) AS m
             CROSS JOIN current_state c
             ON c.room_id = ?1 AND c.event_type = 'm.room.member' AND c.state_key = m.value",
        )?;
        stmt.query_map(params![room_id, members], entry)?
    } else {
        // Farthest group first, so a nearer delta's entry overwrites an older one.
        stmt = conn.prepare_cached(with_chain!(
            "SELECT e.state_key, e.event_id
             FROM chain CROSS JOIN json_each(?2) AS m
                  CROSS JOIN state_group_entries e
                  ON e.state_group = chain.g AND e.event_type = 'm.room.member'
                  AND e.state_key = m.value
             ORDER BY chain.n DESC"
        ))?;
        stmt.query_map(params![group, members], entry)?
    };
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Updates the current state after a state event and records the room's current group.
pub fn set_current_state(
    conn: &Connection,
    room_id: &str,
    kind: &str,
    state_key: &str,
    event_id: &str,
    membership: Option<&str>,
    group: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO current_state (room_id, event_type, state_key, event_id, membership)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (room_id, event_type, state_key)
         DO UPDATE SET event_id = excluded.event_id, membership = excluded.membership",
    )?
    .execute(params![room_id, kind, state_key, event_id, membership])?;
    conn.prepare_cached("UPDATE rooms SET current_state_group = ?2 WHERE room_id = ?1")?
        .execute(params![room_id, group])?;
    Ok(())
}

/// The event ID of one current state entry.
pub fn current_state_id(
    conn: &Connection,
    room_id: &str,
    kind: &str,
    state_key: &str,
) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT event_id FROM current_state WHERE room_id = ?1 AND event_type = ?2 AND state_key = ?3",
        )?
        .query_row(params![room_id, kind, state_key], |r| r.get(0))
        .optional()?)
}

/// The whole current state of a room.
pub fn current_state(conn: &Connection, room_id: &str) -> Result<StateMap> {
    let mut stmt = conn.prepare_cached(
        "SELECT event_type, state_key, event_id FROM current_state WHERE room_id = ?1",
    )?;
    let rows = stmt.query_map(params![room_id], |r| {
        Ok(((r.get(0)?, r.get(1)?), r.get(2)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A user's current membership in a room.
pub fn membership(conn: &Connection, room_id: &str, user_id: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT membership FROM current_state WHERE room_id = ?1 AND event_type = 'm.room.member'
             AND state_key = ?2",
        )?
        .query_row(params![room_id, user_id], |r| r.get(0))
        .optional()?
        .flatten())
}

/// Rooms where the user's current membership is `membership`.
pub fn rooms_with_membership(
    conn: &Connection,
    user_id: &str,
    membership: &str,
) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT room_id FROM current_state WHERE event_type = 'm.room.member' AND state_key = ?1
         AND membership = ?2",
    )?;
    let rows = stmt.query_map(params![user_id, membership], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Members of a room with a given membership.
pub fn members_with(conn: &Connection, room_id: &str, membership: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT state_key FROM current_state WHERE room_id = ?1 AND event_type = 'm.room.member'
         AND membership = ?2",
    )?;
    let rows = stmt.query_map(params![room_id, membership], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The servers of a room's joined members (the part of each user ID after its first `:`),
/// each once: where a new event of the room goes. Computed in SQL, so a room of thousands of
/// members costs one scan and no string per member.
pub fn joined_servers(conn: &Connection, room_id: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT substr(state_key, instr(state_key, ':') + 1) FROM current_state
         WHERE room_id = ?1 AND event_type = 'm.room.member' AND membership = 'join'
         AND instr(state_key, ':') > 0",
    )?;
    let rows = stmt.query_map(params![room_id], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// How many members a room has joined and invited (the room summary's counts).
#[derive(Debug, Clone, Copy)]
pub struct MemberCounts {
    /// Members whose current membership is `join`.
    pub joined: i64,
    /// Members whose current membership is `invite`.
    pub invited: i64,
}

/// A room's joined and invited member counts, in one read.
pub fn member_counts(conn: &Connection, room_id: &str) -> Result<MemberCounts> {
    Ok(conn
        .prepare_cached(
            "SELECT coalesce(sum(membership = 'join'), 0), coalesce(sum(membership = 'invite'), 0)
             FROM current_state WHERE room_id = ?1 AND event_type = 'm.room.member'",
        )?
        .query_row(params![room_id], |r| {
            Ok(MemberCounts {
                joined: r.get(0)?,
                invited: r.get(1)?,
            })
        })?)
}

/// Whether the room's current `m.room.name` has a non-empty `name` or its current
/// `m.room.canonical_alias` a non-empty `alias` (a room the client names from those, not from
/// heroes). One read of both events, and only the two fields parsed.
pub fn has_name_or_alias(conn: &Connection, room_id: &str) -> Result<bool> {
    /// The fields of either event that matter here; serde skips the rest unparsed.
    #[derive(serde::Deserialize)]
    struct Named {
        content: NamedContent,
    }
    #[derive(serde::Deserialize)]
    struct NamedContent {
        #[serde(default)]
        name: Option<serde_json::Value>,
        #[serde(default)]
        alias: Option<serde_json::Value>,
    }
    let mut stmt = conn.prepare_cached(
        "SELECT cs.event_type, e.json FROM current_state cs JOIN events e ON e.event_id = cs.event_id
         WHERE cs.room_id = ?1 AND cs.state_key = ''
           AND cs.event_type IN ('m.room.name', 'm.room.canonical_alias')",
    )?;
    let rows = stmt.query_map(params![room_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    for row in rows {
        let (kind, json) = row?;
        let Ok(named) = serde_json::from_str::<Named>(&json) else {
            continue;
        };
        let value = if kind == "m.room.name" {
            named.content.name
        } else {
            named.content.alias
        };
        if value
            .as_ref()
            .and_then(serde_json::Value::as_str)
            .is_some_and(|value| !value.is_empty())
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Up to `limit` members of a room other than `user_id` whose current membership is `first`
/// or `second`, in the stream order of their current member events (the room summary's
/// `m.heroes` order).
pub fn members_by_stream_order(
    conn: &Connection,
    room_id: &str,
    user_id: &str,
    (first, second): (&str, &str),
    limit: usize,
) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT cs.state_key FROM current_state cs JOIN events e ON e.event_id = cs.event_id
         WHERE cs.room_id = ?1 AND cs.event_type = 'm.room.member' AND cs.state_key != ?2
         AND cs.membership IN (?3, ?4)
         ORDER BY e.stream_pos LIMIT ?5",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![room_id, user_id, first, second, limit], |r| {
        r.get(0)
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Records the membership change carried by the member event at `stream_pos`, for sync. A
/// position belongs to one event, so recording it again (state resolution making an older
/// member event current again) replaces the earlier record.
pub fn record_membership_change(
    conn: &Connection,
    stream_pos: i64,
    room_id: &str,
    user_id: &str,
    membership: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO membership_changes (stream_pos, room_id, user_id, membership) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![stream_pos, room_id, user_id, membership])?;
    Ok(())
}

/// One of a user's memberships: a row of `membership_changes`.
#[derive(Debug, Clone)]
pub struct MembershipRow {
    /// The room.
    pub room_id: String,
    /// `join`, `invite`, `knock`, `leave` or `ban`.
    pub membership: String,
    /// Stream position of the member event.
    pub stream_pos: i64,
}

/// The row→type function of `SELECT room_id, membership, stream_pos FROM membership_changes`.
fn membership_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MembershipRow> {
    Ok(MembershipRow {
        room_id: r.get(0)?,
        membership: r.get(1)?,
        stream_pos: r.get(2)?,
    })
}

/// A user's membership changes in `(after, upto]`, in stream order.
pub fn membership_changes(
    conn: &Connection,
    user_id: &str,
    after: i64,
    upto: i64,
) -> Result<Vec<MembershipRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT room_id, membership, stream_pos FROM membership_changes WHERE user_id = ?1
         AND stream_pos > ?2 AND stream_pos <= ?3 ORDER BY stream_pos",
    )?;
    let rows = stmt.query_map(params![user_id, after, upto], membership_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The user's latest membership event in a room at or before `upto`.
pub fn membership_pos_at(
    conn: &Connection,
    user_id: &str,
    room_id: &str,
    upto: i64,
) -> Result<Option<MembershipRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT room_id, membership, stream_pos FROM membership_changes WHERE user_id = ?1
             AND room_id = ?2 AND stream_pos <= ?3 ORDER BY stream_pos DESC LIMIT 1",
        )?
        .query_row(params![user_id, room_id, upto], membership_row)
        .optional()?)
}

/// Marks a room forgotten (or not) for a user.
pub fn set_forgotten(
    conn: &Connection,
    user_id: &str,
    room_id: &str,
    forgotten: bool,
) -> Result<()> {
    if forgotten {
        conn.execute(
            "INSERT OR IGNORE INTO forgotten_rooms (user_id, room_id) VALUES (?1, ?2)",
            params![user_id, room_id],
        )?;
    } else {
        conn.execute(
            "DELETE FROM forgotten_rooms WHERE user_id = ?1 AND room_id = ?2",
            params![user_id, room_id],
        )?;
    }
    Ok(())
}

/// Whether the user forgot the room.
pub fn is_forgotten(conn: &Connection, user_id: &str, room_id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM forgotten_rooms WHERE user_id = ?1 AND room_id = ?2")?
        .query_row(params![user_id, room_id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// The user's membership in every room they ever had one in, as of stream position `upto`.
pub fn memberships_as_of(
    conn: &Connection,
    user_id: &str,
    upto: i64,
) -> Result<Vec<MembershipRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT room_id, membership, max(stream_pos) FROM membership_changes
         WHERE user_id = ?1 AND stream_pos <= ?2 GROUP BY room_id",
    )?;
    let rows = stmt.query_map(params![user_id, upto], membership_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The state group in force just before stream position `pos` in a room (`None` before the
/// room's first event).
pub fn state_group_before(conn: &Connection, room_id: &str, pos: i64) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached(
            "SELECT state_group FROM events WHERE room_id = ?1 AND stream_pos < ?2
             AND rejected = 0 AND soft_failed = 0 AND outlier = 0 ORDER BY stream_pos DESC LIMIT 1",
        )?
        .query_row(params![room_id, pos], |r| r.get(0))
        .optional()?
        .flatten())
}

/// Whether the room holds a state event with this type and state key other than
/// `event_id`. When it holds none, no state of the room can have an entry for the key apart
/// from that event, so formatting it needs no walk of the delta chain for its
/// `prev_content` (most state events of a room's timeline are the first of their key).
pub fn other_state_with_key(
    conn: &Connection,
    room_id: &str,
    kind: &str,
    state_key: &str,
    event_id: &str,
) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM events WHERE room_id = ?1 AND event_type = ?2 AND state_key = ?3
             AND event_id != ?4 LIMIT 1",
        )?
        .query_row(params![room_id, kind, state_key, event_id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// One entry of a group's state, walking the delta chain only as far as needed.
pub fn state_entry_at_group(
    conn: &Connection,
    group: i64,
    kind: &str,
    state_key: &str,
) -> Result<Option<String>> {
    let mut entry = conn.prepare_cached(with_chain!(
        "SELECT e.event_id
         FROM chain CROSS JOIN state_group_entries e
              ON e.state_group = chain.g AND e.event_type = ?2 AND e.state_key = ?3
         ORDER BY chain.n LIMIT 1"
    ))?;
    Ok(entry
        .query_row(params![group, kind, state_key], |r| r.get(0))
        .optional()?)
}

/// A room's `m.room.history_visibility` event, as [`matrix::visibility`] reads it.
///
/// [`matrix::visibility`]: crate::matrix::visibility
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisibilityChange {
    /// Where the event sits in the room's timeline (its stream order).
    pub stream_pos: i64,
    /// `content.history_visibility`; `None` when absent or not a string ("not understood",
    /// which counts as `shared`).
    pub value: Option<String>,
}

/// A room's `m.room.history_visibility` events in stream order. Feeds `matrix::visibility`;
/// the room's timeline order is its stream order. Outliers count: the state a unit received
/// when it joined another unit's room is stored as outliers, at positions before its join.
pub fn history_visibility_changes(
    conn: &Connection,
    room_id: &str,
) -> Result<Vec<VisibilityChange>> {
    let mut stmt = conn.prepare_cached(
        "SELECT stream_pos, json_extract(json, '$.content.history_visibility') FROM events
         WHERE room_id = ?1 AND event_type = 'm.room.history_visibility' AND state_key = ''
           AND rejected = 0 AND soft_failed = 0
         ORDER BY stream_pos",
    )?;
    let rows = stmt.query_map(params![room_id], |r| {
        // A value that is not a string is "not understood" (shared), like an absent one.
        let value = match r.get::<_, rusqlite::types::Value>(1)? {
            rusqlite::types::Value::Text(text) => Some(text),
            _ => None,
        };
        Ok(VisibilityChange {
            stream_pos: r.get(0)?,
            value,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A member event of a room (any origin, backfilled ones included), as history visibility
/// reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberEvent {
    /// Where the event sits in the room's timeline (its stream order).
    pub stream_pos: i64,
    /// The member (the event's `state_key`).
    pub user_id: String,
    /// `content.membership` (empty when absent).
    pub membership: String,
}

impl MemberEvent {
    /// The row→type function of member events read from `events`
    /// (`stream_pos, state_key, membership`).
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            stream_pos: r.get(0)?,
            user_id: r.get(1)?,
            membership: r.get(2)?,
        })
    }
}

/// A user's member events in a room in stream order. Unlike `membership_changes` this
/// includes backfilled events.
pub fn member_events_of(
    conn: &Connection,
    room_id: &str,
    user_id: &str,
) -> Result<Vec<MemberEvent>> {
    let mut stmt = conn.prepare_cached(
        "SELECT stream_pos, state_key, coalesce(json_extract(json, '$.content.membership'), '')
         FROM events
         WHERE room_id = ?1 AND event_type = 'm.room.member' AND state_key = ?2
           AND rejected = 0 AND soft_failed = 0
         ORDER BY stream_pos",
    )?;
    let rows = stmt.query_map(params![room_id, user_id], MemberEvent::from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The member events of one server's users in a room in stream order.
pub fn member_events_of_server(
    conn: &Connection,
    room_id: &str,
    server: &str,
) -> Result<Vec<MemberEvent>> {
    let mut stmt = conn.prepare_cached(
        "SELECT stream_pos, state_key, coalesce(json_extract(json, '$.content.membership'), '')
         FROM events
         WHERE room_id = ?1 AND event_type = 'm.room.member' AND state_key IS NOT NULL
           AND substr(state_key, instr(state_key, ':') + 1) = ?2
           AND rejected = 0 AND soft_failed = 0
         ORDER BY stream_pos",
    )?;
    let rows = stmt.query_map(params![room_id, server], MemberEvent::from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The users of a room with more than one stored member event (of any kind: outliers and
/// rejected ones count). Every other member event is the only one for its key, so no state
/// before it can hold a member event for that user: `/members` skips looking for a
/// `prev_content` there. One pass over the `events_room_state` index.
pub fn members_with_history(
    conn: &Connection,
    room_id: &str,
) -> Result<std::collections::HashSet<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT state_key FROM events WHERE room_id = ?1 AND event_type = 'm.room.member'
         GROUP BY state_key HAVING count(*) > 1",
    )?;
    let rows = stmt.query_map(params![room_id], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
