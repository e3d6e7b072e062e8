//! Storage side of message search (SQLite FTS5), the event relations index and the user
//! directory.
//!
//! The FTS5 table `event_search` and the `event_relations` index are filled by triggers on
//! `events` (see migration 0005), so nothing here writes. Queries join it back to `events` to apply what may change after an event
//! was stored (rejected, soft-failed, outlier, redacted) and the searcher's visibility, which the
//! service computes and passes in as the visible stream-position ranges of each room
//! (`[[from, to], …]`, inclusive, see [`ranges_json`]). Lists travel as
//! JSON parameters read with `json_each`, so the SQL stays static whatever their length.

use rusqlite::{Connection, Row, params};
use serde_json::json;

use crate::error::Result;

/// What to search for and where: built by the service, never from raw client input.
#[derive(Debug, Clone)]
pub struct EventQuery {
    /// An FTS5 MATCH expression made of quoted tokens only, so client text cannot inject FTS5
    /// syntax (`NEAR`, `*`, parentheses, column filters).
    pub fts: String,
    /// Rooms to search, each with the stream-position ranges the searcher may see there.
    pub rooms: Vec<(String, Vec<(i64, i64)>)>,
    /// Only events from these senders, when given.
    pub senders: Option<Vec<String>>,
    /// Never events from these senders.
    pub not_senders: Vec<String>,
}

/// Result order (spec: `order_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Most relevant first (FTS5 bm25, lower is better), ties newest first.
    Rank,
    /// Newest (highest stream position) first.
    Recent,
}

/// Where the previous page stopped: the last hit returned. Keyset pagination, so a page does
/// not shift when new messages arrive between requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cursor {
    /// bm25 score of the last hit (ignored for [`Order::Recent`]).
    pub score: f64,
    /// Stream position of the last hit.
    pub stream_pos: i64,
}

/// One matching event.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The event.
    pub event_id: String,
    /// Its stream position (FTS rowid).
    pub stream_pos: i64,
    /// bm25 score: lower is more relevant.
    pub score: f64,
}

/// One page of matches: ?1 MATCH expression, ?2 `{room: [[from, to], …]}`, ?3 senders array or NULL,
/// ?4 excluded senders array, ?5/?6 the cursor (score, stream_pos) or NULLs, ?7 the page size,
/// ?8 the order (`rank` or `recent`). One statement for both orders keeps the visibility
/// conditions in one place; the FTS result set is sorted in a temporary b-tree either way.
const PAGE: &str = "
    SELECT e.event_id, e.stream_pos, bm25(event_search) AS score
    FROM event_search
    JOIN events e ON e.stream_pos = event_search.rowid
    JOIN json_each(?2) AS visible ON visible.key = e.room_id
    WHERE event_search MATCH ?1
      AND EXISTS (SELECT 1 FROM json_each(visible.value) AS r
                  WHERE e.stream_pos BETWEEN r.value ->> 0 AND r.value ->> 1)
      AND e.rejected = 0 AND e.soft_failed = 0 AND e.outlier = 0 AND e.redacted_by IS NULL
      AND (?3 IS NULL OR e.sender IN (SELECT value FROM json_each(?3)))
      AND e.sender NOT IN (SELECT value FROM json_each(?4))
      AND (?6 IS NULL
           OR (?8 = 'recent' AND e.stream_pos < ?6)
           OR (?8 = 'rank' AND (score > ?5 OR (score = ?5 AND e.stream_pos < ?6))))
    ORDER BY CASE WHEN ?8 = 'rank' THEN score END, e.stream_pos DESC
    LIMIT ?7";

/// The number of matches of [`PAGE`]'s conditions without cursor and limit.
const COUNT: &str = "
    SELECT count(*)
    FROM event_search
    JOIN events e ON e.stream_pos = event_search.rowid
    JOIN json_each(?2) AS visible ON visible.key = e.room_id
    WHERE event_search MATCH ?1
      AND EXISTS (SELECT 1 FROM json_each(visible.value) AS r
                  WHERE e.stream_pos BETWEEN r.value ->> 0 AND r.value ->> 1)
      AND e.rejected = 0 AND e.soft_failed = 0 AND e.outlier = 0 AND e.redacted_by IS NULL
      AND (?3 IS NULL OR e.sender IN (SELECT value FROM json_each(?3)))
      AND e.sender NOT IN (SELECT value FROM json_each(?4))";

/// Visible stream-position ranges as JSON (`[[from, to], …]`). The open ends are written as
/// ±2^62 so SQLite's JSON reader keeps them integers.
fn ranges_value(ranges: &[(i64, i64)]) -> serde_json::Value {
    const END: i64 = 1 << 62;
    json!(
        ranges
            .iter()
            .map(|&(lo, hi)| [lo.max(-END), hi.min(END)])
            .collect::<Vec<_>>()
    )
}

/// Visible stream-position ranges as a JSON parameter, for the conditions
/// `EXISTS (SELECT 1 FROM json_each(?n) AS r WHERE pos BETWEEN r.value ->> 0 AND r.value ->> 1)`.
pub fn ranges_json(ranges: &[(i64, i64)]) -> String {
    ranges_value(ranges).to_string()
}

/// The list parameters of a query, as JSON text for `json_each`.
struct ListParams {
    rooms: String,
    senders: Option<String>,
    not_senders: String,
}

fn list_params(query: &EventQuery) -> ListParams {
    let rooms: serde_json::Map<String, serde_json::Value> = query
        .rooms
        .iter()
        .map(|(room, ranges)| (room.clone(), ranges_value(ranges)))
        .collect();
    ListParams {
        rooms: serde_json::Value::Object(rooms).to_string(),
        senders: query.senders.as_ref().map(|s| json!(s).to_string()),
        not_senders: json!(query.not_senders).to_string(),
    }
}

fn hit_from_row(row: &Row<'_>) -> rusqlite::Result<Hit> {
    Ok(Hit {
        event_id: row.get(0)?,
        stream_pos: row.get(1)?,
        score: row.get(2)?,
    })
}

/// Up to `limit` visible matches after `cursor`, in `order`.
pub fn search_events(
    conn: &Connection,
    query: &EventQuery,
    order: Order,
    cursor: Option<Cursor>,
    limit: usize,
) -> Result<Vec<Hit>> {
    let lists = list_params(query);
    let order = match order {
        Order::Rank => "rank",
        Order::Recent => "recent",
    };
    let mut stmt = conn.prepare_cached(PAGE)?;
    let rows = stmt.query_map(
        params![
            query.fts,
            lists.rooms,
            lists.senders,
            lists.not_senders,
            cursor.map(|c| c.score),
            cursor.map(|c| c.stream_pos),
            limit as i64,
            order,
        ],
        hit_from_row,
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// How many visible events match (before type filters applied by the caller).
pub fn count_events(conn: &Connection, query: &EventQuery) -> Result<i64> {
    let lists = list_params(query);
    Ok(conn.prepare_cached(COUNT)?.query_row(
        params![query.fts, lists.rooms, lists.senders, lists.not_senders],
        |r| r.get(0),
    )?)
}

/// A user as the directory shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    /// The user.
    pub user_id: String,
    /// Display name, if they set one.
    pub displayname: Option<String>,
    /// Avatar, if they set one.
    pub avatar_url: Option<String>,
}

fn entry_from_row(row: &Row<'_>) -> rusqlite::Result<DirectoryEntry> {
    Ok(DirectoryEntry {
        user_id: row.get(0)?,
        displayname: row.get(1)?,
        avatar_url: row.get(2)?,
    })
}

/// Every active local account with its global profile.
pub fn local_users(conn: &Connection) -> Result<Vec<DirectoryEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT user_id, displayname, avatar_url FROM users WHERE deactivated = 0",
    )?;
    let rows = stmt.query_map([], entry_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Users joined to a room that `requester` is joined to, or to a room whose join rule is
/// `public` or whose history is `world_readable` (the spec's minimum directory), with the
/// profile from their member event. A user in several such rooms appears once per room.
pub fn visible_room_members(conn: &Connection, requester: &str) -> Result<Vec<DirectoryEntry>> {
    let mut stmt = conn.prepare_cached(
        "WITH rooms AS (
             SELECT room_id FROM current_state
             WHERE event_type = 'm.room.member' AND state_key = ?1 AND membership = 'join'
             UNION
             SELECT cs.room_id FROM current_state cs JOIN events e ON e.event_id = cs.event_id
             WHERE cs.event_type = 'm.room.join_rules' AND cs.state_key = ''
               AND json_extract(e.json, '$.content.join_rule') = 'public'
             UNION
             SELECT cs.room_id FROM current_state cs JOIN events e ON e.event_id = cs.event_id
             WHERE cs.event_type = 'm.room.history_visibility' AND cs.state_key = ''
               AND json_extract(e.json, '$.content.history_visibility') = 'world_readable'
         )
         SELECT cs.state_key,
             CASE WHEN json_type(e.json, '$.content.displayname') = 'text'
                 THEN json_extract(e.json, '$.content.displayname') END,
             CASE WHEN json_type(e.json, '$.content.avatar_url') = 'text'
                 THEN json_extract(e.json, '$.content.avatar_url') END
         FROM current_state cs JOIN events e ON e.event_id = cs.event_id
         WHERE cs.event_type = 'm.room.member' AND cs.membership = 'join'
           AND cs.room_id IN (SELECT room_id FROM rooms)",
    )?;
    let rows = stmt.query_map(params![requester], entry_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// What a relations page asks for.
#[derive(Debug, Clone)]
pub struct RelationQuery {
    /// The room.
    pub room_id: String,
    /// The parent events whose children are listed (several when recursing).
    pub parents: Vec<String>,
    /// Only this relation type.
    pub rel_type: Option<String>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// The stream-position ranges the requester may see in the room.
    pub visible: Vec<(i64, i64)>,
}

/// Children of a relations page, newest first, before the topological gap `(?6, ?7)`.
const RELATED_BACKWARDS: &str = "
    SELECT r.event_id FROM event_relations r JOIN events e ON e.event_id = r.event_id
    WHERE r.relates_to IN (SELECT value FROM json_each(?1)) AND r.room_id = ?2
      AND (?3 IS NULL OR r.rel_type = ?3) AND (?4 IS NULL OR e.event_type = ?4)
      AND EXISTS (SELECT 1 FROM json_each(?5) AS v WHERE e.stream_pos BETWEEN v.value ->> 0 AND v.value ->> 1)
      AND e.rejected = 0 AND e.soft_failed = 0 AND e.outlier = 0
      AND (e.depth, e.stream_pos) < (?6, ?7)
    ORDER BY e.depth DESC, e.stream_pos DESC LIMIT ?8";

/// Children of a relations page, oldest first, from the topological gap `(?6, ?7)` on.
const RELATED_FORWARDS: &str = "
    SELECT r.event_id FROM event_relations r JOIN events e ON e.event_id = r.event_id
    WHERE r.relates_to IN (SELECT value FROM json_each(?1)) AND r.room_id = ?2
      AND (?3 IS NULL OR r.rel_type = ?3) AND (?4 IS NULL OR e.event_type = ?4)
      AND EXISTS (SELECT 1 FROM json_each(?5) AS v WHERE e.stream_pos BETWEEN v.value ->> 0 AND v.value ->> 1)
      AND e.rejected = 0 AND e.soft_failed = 0 AND e.outlier = 0
      AND (e.depth, e.stream_pos) >= (?6, ?7)
    ORDER BY e.depth ASC, e.stream_pos ASC LIMIT ?8";

/// IDs of up to `limit` events relating to the query's parents, in topological order from
/// the gap `(depth, stream_pos)`: backwards gives the events before it, newest first;
/// forwards the events at or after it, oldest first.
pub fn related_events(
    conn: &Connection,
    query: &RelationQuery,
    from: (i64, i64),
    backwards: bool,
    limit: usize,
) -> Result<Vec<String>> {
    let sql = if backwards {
        RELATED_BACKWARDS
    } else {
        RELATED_FORWARDS
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(
        params![
            json!(query.parents).to_string(),
            query.room_id,
            query.rel_type,
            query.event_type,
            ranges_json(&query.visible),
            from.0,
            from.1,
            limit as i64,
        ],
        |r| r.get(0),
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// IDs of the events relating directly to any of `parents` in a room (one level, any type),
/// for walking relations recursively.
pub fn child_ids(conn: &Connection, room_id: &str, parents: &[String]) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT event_id FROM event_relations
         WHERE relates_to IN (SELECT value FROM json_each(?1)) AND room_id = ?2",
    )?;
    let rows = stmt.query_map(params![json!(parents).to_string(), room_id], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A thread root with the stream position of its latest visible thread event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadRoot {
    /// The root event.
    pub root_id: String,
    /// The stream position of the thread's latest visible event.
    pub latest: i64,
}

/// A child event of a parent: an edit, or a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildOf {
    /// The parent event.
    pub parent: String,
    /// The child event.
    pub child: String,
}

/// Thread roots of a room with the stream position of their latest visible thread event,
/// latest first: threads whose latest event is before `before` (a page continuation), and
/// with `participant` only those the user started or posted in.
pub fn thread_roots(
    conn: &Connection,
    room_id: &str,
    visible: &[(i64, i64)],
    before: Option<i64>,
    participant: Option<&str>,
    limit: usize,
) -> Result<Vec<ThreadRoot>> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.relates_to, max(e.stream_pos) AS latest
         FROM event_relations r JOIN events e ON e.event_id = r.event_id
         WHERE r.room_id = ?1 AND r.rel_type = 'm.thread'
           AND EXISTS (SELECT 1 FROM json_each(?2) AS v
                       WHERE e.stream_pos BETWEEN v.value ->> 0 AND v.value ->> 1)
           AND e.rejected = 0 AND e.soft_failed = 0 AND e.outlier = 0
         GROUP BY r.relates_to
         HAVING (?3 IS NULL OR latest < ?3)
            AND (?4 IS NULL
                 OR EXISTS (SELECT 1 FROM events root
                            WHERE root.event_id = r.relates_to AND root.sender = ?4)
                 OR EXISTS (SELECT 1 FROM event_relations r2
                            JOIN events e2 ON e2.event_id = r2.event_id
                            WHERE r2.relates_to = r.relates_to AND r2.rel_type = 'm.thread'
                              AND e2.sender = ?4
                              AND EXISTS (SELECT 1 FROM json_each(?2) AS v
                       WHERE e2.stream_pos BETWEEN v.value ->> 0 AND v.value ->> 1)))
         ORDER BY latest DESC LIMIT ?5",
    )?;
    let rows = stmt.query_map(
        params![
            room_id,
            ranges_json(visible),
            before,
            participant,
            limit as i64
        ],
        |r| {
            Ok(ThreadRoot {
                root_id: r.get(0)?,
                latest: r.get(1)?,
            })
        },
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A thread as its root's bundled aggregation describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadSummary {
    /// The thread root.
    pub root: String,
    /// Visible events in the thread.
    pub count: i64,
    /// The topologically latest of them.
    pub latest_event: String,
    /// Whether the viewer sent one of them.
    pub user_posted: bool,
}

/// Which children of a batch of parents in one room count towards their bundled
/// aggregations: visible to the viewer, from no ignored sender, and not rejected,
/// soft-failed or an outlier. The common part of the aggregation queries below.
#[derive(Debug, Clone)]
pub struct ChildFilter<'a> {
    /// The room of the parents.
    pub room_id: &'a str,
    /// The parent events.
    pub parents: &'a [String],
    /// The stream-position ranges the viewer may see in the room.
    pub visible: &'a [(i64, i64)],
    /// Senders whose children are left out (the viewer's ignored users).
    pub not_senders: &'a [String],
}

impl ChildFilter<'_> {
    fn params(&self) -> (String, &str, String, String) {
        (
            json!(self.parents).to_string(),
            self.room_id,
            ranges_json(self.visible),
            json!(self.not_senders).to_string(),
        )
    }
}

// The three bundling queries run for every batch of events a client is sent (each /sync), so
// they must cost what the batch's relations cost, never the room's size: `INDEXED BY` and
// `CROSS JOIN` pin the plan to "the parents' relations first (by the parent index), then
// their events". Left to itself the planner started from every event of the room, which made
// each incremental sync of a 72,000-event room scan all of it (delivery p50 19 ms -> 385 ms).

/// The `m.thread` summaries of the parents that are thread roots, in one query: count,
/// latest event (topologically) and whether `user` (?5) posted. `?1` parents, `?2` room,
/// `?3` visible ranges, `?4` ignored senders.
const THREAD_SUMMARIES: &str = "
    SELECT relates_to, event_id, n, mine FROM (
        SELECT r.relates_to, e.event_id,
               count(*) OVER thread AS n,
               max(e.sender = ?5) OVER thread AS mine,
               row_number() OVER (PARTITION BY r.relates_to
                                  ORDER BY e.depth DESC, e.stream_pos DESC) AS rank
        FROM event_relations r INDEXED BY event_relations_parent
        CROSS JOIN events e ON e.event_id = r.event_id
        WHERE r.relates_to IN (SELECT value FROM json_each(?1)) AND r.rel_type = 'm.thread'
          AND r.room_id = ?2 AND e.room_id = ?2
          AND EXISTS (SELECT 1 FROM json_each(?3) AS v
                      WHERE e.stream_pos BETWEEN v.value ->> 0 AND v.value ->> 1)
          AND e.sender NOT IN (SELECT value FROM json_each(?4))
          AND e.rejected = 0 AND e.soft_failed = 0 AND e.outlier = 0
        WINDOW thread AS (PARTITION BY r.relates_to))
    WHERE rank = 1";

/// The most recent valid `m.replace` of each parent (spec: "Validity of replacement events":
/// same room, same sender, same type, neither a state event, the original not itself an
/// edit, the replacement carrying `m.new_content` unless encrypted; most recent by
/// `origin_server_ts`, then the larger event ID). A redacted original bundles no edit; a
/// redacted edit has left the index. Parameters as [`THREAD_SUMMARIES`].
const LATEST_EDITS: &str = "
    SELECT relates_to, event_id FROM (
        SELECT r.relates_to, e.event_id,
               row_number() OVER (PARTITION BY r.relates_to
                                  ORDER BY e.origin_server_ts DESC, e.event_id DESC) AS rank
        FROM event_relations r INDEXED BY event_relations_parent
        CROSS JOIN events e ON e.event_id = r.event_id
        CROSS JOIN events p ON p.event_id = r.relates_to
        WHERE r.relates_to IN (SELECT value FROM json_each(?1)) AND r.rel_type = 'm.replace'
          AND r.room_id = ?2 AND e.room_id = ?2 AND p.room_id = ?2
          AND e.sender = p.sender AND e.event_type = p.event_type
          AND e.state_key IS NULL AND p.state_key IS NULL
          AND p.redacted_by IS NULL AND e.redacted_by IS NULL
          AND (e.event_type = 'm.room.encrypted'
               OR json_type(e.json, '$.content.\"m.new_content\"') = 'object')
          AND coalesce(json_extract(p.json, '$.content.\"m.relates_to\".rel_type'), '')
              <> 'm.replace'
          AND EXISTS (SELECT 1 FROM json_each(?3) AS v
                      WHERE e.stream_pos BETWEEN v.value ->> 0 AND v.value ->> 1)
          AND e.sender NOT IN (SELECT value FROM json_each(?4))
          AND e.rejected = 0 AND e.soft_failed = 0 AND e.outlier = 0)
    WHERE rank = 1";

/// Every visible `m.reference` child of the parents, oldest first. Parameters as
/// [`THREAD_SUMMARIES`].
const REFERENCES: &str = "
    SELECT r.relates_to, e.event_id
    FROM event_relations r INDEXED BY event_relations_parent
    CROSS JOIN events e ON e.event_id = r.event_id
    WHERE r.relates_to IN (SELECT value FROM json_each(?1)) AND r.rel_type = 'm.reference'
      AND r.room_id = ?2 AND e.room_id = ?2
      AND EXISTS (SELECT 1 FROM json_each(?3) AS v
                  WHERE e.stream_pos BETWEEN v.value ->> 0 AND v.value ->> 1)
      AND e.sender NOT IN (SELECT value FROM json_each(?4))
      AND e.rejected = 0 AND e.soft_failed = 0 AND e.outlier = 0
    ORDER BY e.depth, e.stream_pos";

/// Which of `rooms` hold any relation at all (one index seek per room on
/// `event_relations_room`): an initial `/sync` asks once for every joined room, so the rooms
/// without relations (most of them) skip [`any_relations`] and the bundling reads entirely.
pub fn rooms_with_relations(
    conn: &Connection,
    rooms: &[&str],
) -> Result<std::collections::HashSet<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT value FROM json_each(?1) AS r
          WHERE EXISTS (SELECT 1 FROM event_relations INDEXED BY event_relations_room
                         WHERE room_id = r.value)",
    )?;
    let rows = stmt.query_map([json!(rooms).to_string()], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Whether any event relates to one of `parents` (of any kind, visible or not): most batches
/// of events have no relations at all, and this one index probe spares them the three
/// bundling queries and the visibility reads they need.
pub fn any_relations(conn: &Connection, parents: &[String]) -> Result<bool> {
    let mut stmt = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM event_relations INDEXED BY event_relations_parent
                        WHERE relates_to IN (SELECT value FROM json_each(?1)))",
    )?;
    Ok(stmt.query_row([json!(parents).to_string()], |r| r.get(0))?)
}

/// The thread summaries of those of the filter's parents that have visible thread events,
/// with `user`'s participation.
pub fn thread_summaries(
    conn: &Connection,
    filter: &ChildFilter<'_>,
    user: &str,
) -> Result<Vec<ThreadSummary>> {
    let (parents, room, visible, not_senders) = filter.params();
    let mut stmt = conn.prepare_cached(THREAD_SUMMARIES)?;
    let rows = stmt.query_map(params![parents, room, visible, not_senders, user], |r| {
        Ok(ThreadSummary {
            root: r.get(0)?,
            latest_event: r.get(1)?,
            count: r.get(2)?,
            user_posted: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The latest valid edit (`child`) of those of the filter's parents that were edited.
pub fn latest_edits(conn: &Connection, filter: &ChildFilter<'_>) -> Result<Vec<ChildOf>> {
    let (parents, room, visible, not_senders) = filter.params();
    let mut stmt = conn.prepare_cached(LATEST_EDITS)?;
    let rows = stmt.query_map(params![parents, room, visible, not_senders], |r| {
        Ok(ChildOf {
            parent: r.get(0)?,
            child: r.get(1)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Every visible reference (`child`) to the filter's parents, oldest first.
pub fn references(conn: &Connection, filter: &ChildFilter<'_>) -> Result<Vec<ChildOf>> {
    let (parents, room, visible, not_senders) = filter.params();
    let mut stmt = conn.prepare_cached(REFERENCES)?;
    let rows = stmt.query_map(params![parents, room, visible, not_senders], |r| {
        Ok(ChildOf {
            parent: r.get(0)?,
            child: r.get(1)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut conn = Connection::open_in_memory().expect("in-memory db");
        super::super::migrations::apply(&mut conn).expect("migrations apply");
        conn.execute(
            "INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ('!r', '12', '@a:x', 0)",
            [],
        )
        .expect("room");
        conn
    }

    fn insert(conn: &Connection, pos: i64, kind: &str, content: serde_json::Value) {
        let pdu = json!({"type": kind, "content": content});
        conn.execute(
            "INSERT INTO events (stream_pos, event_id, room_id, event_type, sender,
                origin_server_ts, depth, json)
             VALUES (?1, ?2, '!r', ?3, '@a:x', 0, ?1, ?4)",
            params![pos, format!("$e{pos}"), kind, pdu.to_string()],
        )
        .expect("insert event");
    }

    fn find(conn: &Connection, fts: &str) -> Vec<i64> {
        let query = EventQuery {
            fts: fts.to_owned(),
            rooms: vec![("!r".to_owned(), vec![(i64::MIN, i64::MAX)])],
            senders: None,
            not_senders: Vec::new(),
        };
        let mut hits: Vec<i64> = search_events(conn, &query, Order::Recent, None, 100)
            .expect("search")
            .into_iter()
            .map(|h| h.stream_pos)
            .collect();
        hits.sort_unstable();
        hits
    }

    #[test]
    fn triggers_index_searchable_text_and_drop_redacted_events() {
        let conn = db();
        insert(
            &conn,
            1,
            "m.room.message",
            json!({"body": "Martians and men"}),
        );
        // Backfilled events have negative positions.
        insert(
            &conn,
            -4,
            "m.room.message",
            json!({"body": "martian history"}),
        );
        insert(&conn, 2, "m.room.name", json!({"name": "Café"}));
        insert(
            &conn,
            3,
            "m.room.topic",
            json!({"topic": "plain", "m.topic": {"m.text": [
                {"body": "<b>html</b>", "mimetype": "text/html"},
                {"body": "richer words"},
                "junk",
            ]}}),
        );
        // Malformed content is stored, just not indexed.
        insert(&conn, 5, "m.room.message", json!({"body": {"not": "text"}}));
        insert(
            &conn,
            6,
            "m.room.topic",
            json!({"topic": 7, "m.topic": "junk"}),
        );
        insert(&conn, 7, "m.room.encrypted", json!({"body": "martian"}));

        assert_eq!(find(&conn, "\"martian\"*"), vec![-4, 1]);
        assert_eq!(find(&conn, "\"cafe\""), vec![2]);
        assert_eq!(find(&conn, "\"richer\""), vec![3]);
        assert_eq!(find(&conn, "\"plain\""), vec![3]);
        assert!(find(&conn, "\"html\"").is_empty());
        assert_eq!(find(&conn, "{name} : \"cafe\""), vec![2]);
        assert!(find(&conn, "{body} : \"cafe\"").is_empty());

        conn.execute(
            "UPDATE events SET json = '{\"content\":{}}', redacted_by = '$r' WHERE stream_pos = 1",
            [],
        )
        .expect("redact");
        assert_eq!(find(&conn, "\"martian\"*"), vec![-4]);
        conn.execute("DELETE FROM events WHERE stream_pos = -4", [])
            .expect("delete");
        assert!(find(&conn, "\"martian\"*").is_empty());
    }

    #[test]
    fn triggers_keep_the_relations_index() {
        let conn = db();
        insert(&conn, 1, "m.room.message", json!({"body": "root"}));
        let thread = |parent: &str| {
            json!({"body": "reply", "m.relates_to": {
            "rel_type": "m.thread", "event_id": parent}})
        };
        insert(&conn, 2, "m.room.message", thread("$e1"));
        insert(
            &conn,
            3,
            "m.reaction",
            json!({"m.relates_to": {
            "rel_type": "m.annotation", "event_id": "$e2", "key": "+1"}}),
        );
        // Not relations: no rel_type, or a non-string parent.
        insert(
            &conn,
            4,
            "m.room.message",
            json!({"body": "x", "m.relates_to": {
            "m.in_reply_to": {"event_id": "$e1"}}}),
        );
        insert(
            &conn,
            5,
            "m.room.message",
            json!({"m.relates_to": {
            "rel_type": "m.thread", "event_id": 5}}),
        );

        let ids = |parents: &[&str]| {
            let parents: Vec<String> = parents.iter().map(|p| (*p).to_owned()).collect();
            let mut found = child_ids(&conn, "!r", &parents).expect("children");
            found.sort();
            found
        };
        assert_eq!(ids(&["$e1"]), vec!["$e2"]);
        assert_eq!(ids(&["$e1", "$e2"]), vec!["$e2", "$e3"]);
        let parents = ["$e1".to_owned(), "$e4".to_owned()];
        let filter = ChildFilter {
            room_id: "!r",
            parents: &parents,
            visible: &[(i64::MIN, i64::MAX)],
            not_senders: &[],
        };
        assert_eq!(
            thread_summaries(&conn, &filter, "@a:x").expect("summaries"),
            vec![ThreadSummary {
                root: "$e1".to_owned(),
                count: 1,
                latest_event: "$e2".to_owned(),
                user_posted: true
            }]
        );
        let ignoring = ["@a:x".to_owned()];
        let filter = ChildFilter {
            not_senders: &ignoring,
            ..filter
        };
        assert!(
            thread_summaries(&conn, &filter, "@a:x")
                .expect("summaries")
                .is_empty()
        );
        assert_eq!(
            thread_roots(&conn, "!r", &[(i64::MIN, i64::MAX)], None, None, 10).expect("roots"),
            vec![ThreadRoot {
                root_id: "$e1".to_owned(),
                latest: 2
            }]
        );

        conn.execute(
            "UPDATE events SET json = '{\"content\":{}}', redacted_by = '$r' WHERE stream_pos = 2",
            [],
        )
        .expect("redact");
        assert!(ids(&["$e1"]).is_empty());
    }

    #[test]
    fn migration_indexes_events_stored_before_it() {
        let conn = db();
        insert(
            &conn,
            1,
            "m.room.message",
            json!({"body": "legacy message"}),
        );
        insert(
            &conn,
            2,
            "m.reaction",
            json!({"m.relates_to": {
            "rel_type": "m.annotation", "event_id": "$e1", "key": "x"}}),
        );
        // Back to the schema before 0005, keeping the events, then upgrade again.
        conn.execute_batch(
            "DROP TRIGGER events_search_insert; DROP TRIGGER events_search_update;
             DROP TRIGGER events_search_delete; DROP VIEW event_search_source;
             DROP TABLE event_search;
             DROP TRIGGER events_relations_insert; DROP TRIGGER events_relations_update;
             DROP TRIGGER events_relations_delete; DROP VIEW event_relations_source;
             DROP TABLE event_relations;
             DROP TABLE room_key_backup_keys; DROP TABLE room_key_backup_versions;",
        )
        .expect("undo 0005");
        conn.execute_batch(include_str!("migrations/0005_search_backup.sql"))
            .expect("0005 applies to a database with events");
        assert_eq!(find(&conn, "\"legacy\""), vec![1]);
        assert_eq!(
            child_ids(&conn, "!r", &["$e1".to_owned()]).expect("children"),
            vec!["$e2".to_owned()]
        );
    }
}
