//! Event relationships (`/relations`) and thread lists (`/threads`).
//!
//! Relations come from the `event_relations` index that triggers on `events` keep (migration
//! 0005), so local, federated and backfilled events are all related and a redacted child drops
//! out. What a user may see is [`rooms::visibility`]'s decision, as for `/messages`. Relation
//! pages use `/messages` tokens (`service::tokens`), so clients can mix them as the spec
//! allows; a threads page continues from the stream position of the last thread's latest
//! event. Events carry their bundled aggregations (`service::aggregations`).

use std::collections::BTreeSet;

use ruma::{DeviceId, OwnedEventId, OwnedRoomId, UserId};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Server;
use super::aggregations;
use super::rooms;
use super::tokens::{self, key_of, topo_token};
use crate::error::{Error, ErrorCode, Result};
use crate::matrix::visibility::Visible;
use crate::store::events::{self, TopoKey};
use crate::store::search::{self as index, RelationQuery};

/// Default and largest page of `/relations` and `/threads`.
const DEFAULT_LIMIT: usize = 5;
const MAX_LIMIT: usize = 100;
/// How many levels `recurse=true` follows (the spec asks for at least 3).
const RECURSION_DEPTH: usize = 3;
/// Most parents a recursive walk collects, so a huge reaction pile cannot make a huge query.
const MAX_PARENTS: usize = 1000;

/// Query parameters of `/relations`.
#[derive(Debug, Deserialize, Default)]
pub struct RelationsQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    dir: Option<String>,
    recurse: Option<bool>,
}

/// Query parameters of `/threads`.
#[derive(Debug, Deserialize, Default)]
pub struct ThreadsQuery {
    include: Option<String>,
    limit: Option<usize>,
    from: Option<String>,
}

/// What a `/relations` request asks for, validated.
#[derive(Debug)]
pub struct RelationsRequest {
    /// The room.
    pub room: OwnedRoomId,
    /// The event whose children are listed.
    pub parent: OwnedEventId,
    /// Only children of this relation type.
    pub rel_type: Option<String>,
    /// Only children of this event type.
    pub event_type: Option<String>,
    /// Paging.
    pub query: RelationsQuery,
}

/// A `/relations` page (spec: `GET /rooms/{roomId}/relations/{eventId}` 200). The events
/// are client-format event JSON with their bundled aggregations; their content is arbitrary.
#[derive(Debug, Serialize)]
pub struct RelationsPage {
    /// The child events.
    pub chunk: Vec<Value>,
    /// The token of the next page, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_batch: Option<String>,
    /// The `from` token the page was asked with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_batch: Option<String>,
    /// How deep the server followed relations, when the client asked with `recurse`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recursion_depth: Option<usize>,
}

/// A `/threads` page (spec: `GET /rooms/{roomId}/threads` 200): thread roots as client-format
/// event JSON (arbitrary content).
#[derive(Debug, Serialize)]
pub struct ThreadsPage {
    /// The thread roots, latest activity first.
    pub chunk: Vec<Value>,
    /// The token of the next page, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_batch: Option<String>,
}

/// What the user may see of the room, with `M_FORBIDDEN` mapped to `not_found` where the spec
/// wants a 404 rather than a hint that the room exists.
fn visible_to(conn: &Connection, room: &str, user: &str, hide: bool) -> Result<Visible> {
    match rooms::visibility(conn, room, user) {
        Ok(visible) => Ok(visible),
        Err(Error::Matrix {
            code: ErrorCode::Forbidden,
            ..
        }) if hide => Err(Error::not_found("Event not found")),
        Err(err) => Err(err),
    }
}

fn relations_page(
    conn: &Connection,
    viewer: (&str, &str),
    request: &RelationsRequest,
) -> Result<RelationsPage> {
    let (user, _) = viewer;
    let room = request.room.as_str();
    let parent = request.parent.to_string();
    let q = &request.query;
    let backwards = match q.dir.as_deref() {
        None | Some("b") => true,
        Some("f") => false,
        Some(_) => return Err(Error::invalid_param("dir must be 'b' or 'f'")),
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let visible = visible_to(conn, room, user, true)?;
    events::get_room_event(conn, room, &parent)?
        .filter(|e| visible.allows(e.stream_pos) && !e.pdu.rejected)
        .ok_or_else(|| Error::not_found("Event not found"))?;

    let depth = if q.recurse == Some(true) {
        RECURSION_DEPTH
    } else {
        1
    };
    let mut parents = vec![parent];
    let mut seen: BTreeSet<String> = parents.iter().cloned().collect();
    let mut level = parents.clone();
    for _ in 1..depth {
        level = index::child_ids(conn, room, &level)?
            .into_iter()
            .filter(|id| seen.insert(id.clone()))
            .collect();
        if level.is_empty() {
            break;
        }
        parents.extend(level.iter().cloned());
        if parents.len() >= MAX_PARENTS {
            parents.truncate(MAX_PARENTS);
            break;
        }
    }
    let query = RelationQuery {
        room_id: room.to_owned(),
        parents,
        rel_type: request.rel_type.clone(),
        event_type: request.event_type.clone(),
        visible: visible.ranges().to_vec(),
    };
    let from = match &q.from {
        Some(token) => tokens::resolve(conn, room, token)?,
        None if backwards => TopoKey {
            depth: i64::MAX,
            stream_pos: i64::MAX,
        },
        None => TopoKey {
            depth: i64::MIN,
            stream_pos: i64::MIN,
        },
    };
    let stop =
        q.to.as_deref()
            .map(|t| tokens::resolve(conn, room, t))
            .transpose()?;
    let ids = index::related_events(
        conn,
        &query,
        (from.depth, from.stream_pos),
        backwards,
        limit + 1,
    )?;
    let mut chunk = Vec::new();
    let mut more = false;
    for id in ids {
        let Some(event) = events::get_event(conn, &id)? else {
            continue;
        };
        let key = key_of(&event);
        let past_stop = stop.is_some_and(|s| if backwards { key < s } else { key >= s });
        if past_stop {
            break;
        }
        if chunk.len() == limit {
            more = true;
            break;
        }
        chunk.push(event);
    }
    let next_batch = match (more, chunk.last()) {
        (true, Some(last)) => {
            let key = key_of(last);
            let next = if backwards {
                key
            } else {
                TopoKey {
                    depth: key.depth,
                    stream_pos: key.stream_pos + 1,
                }
            };
            Some(topo_token(next))
        }
        _ => None,
    };
    Ok(RelationsPage {
        chunk: aggregations::format_events(conn, &chunk, Some(viewer))?,
        next_batch,
        prev_batch: q.from.clone(),
        recursion_depth: q.recurse.is_some().then_some(depth),
    })
}

/// A `/relations` page: the children of an event the user may see, with their bundled
/// aggregations.
pub async fn relations(
    server: &Server,
    user: &UserId,
    device: Option<&DeviceId>,
    request: RelationsRequest,
) -> Result<RelationsPage> {
    let user = user.to_string();
    let device = super::device_key(device).to_owned();
    server
        .store
        .read(move |conn| relations_page(conn, (&user, &device), &request))
        .await
}

/// A `/threads` page: the thread roots of a room the user may see, latest activity first.
pub async fn threads(
    server: &Server,
    user: &UserId,
    device: Option<&DeviceId>,
    room: OwnedRoomId,
    query: ThreadsQuery,
) -> Result<ThreadsPage> {
    let room = room.to_string();
    let participated = match query.include.as_deref() {
        None | Some("all") => false,
        Some("participated") => true,
        Some(other) => {
            return Err(Error::invalid_param(format!(
                "include must be 'all' or 'participated', not {other:?}"
            )));
        }
    };
    let before = query
        .from
        .as_deref()
        .map(|raw| {
            raw.parse::<i64>()
                .map_err(|_| Error::invalid_param("Unknown pagination token"))
        })
        .transpose()?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let user = user.to_string();
    let device = super::device_key(device).to_owned();
    server
        .store
        .read(move |conn| {
            let viewer = (user.as_str(), device.as_str());
            let visible = visible_to(conn, &room, &user, false)?;
            let participant = participated.then_some(user.as_str());
            let roots = index::thread_roots(
                conn,
                &room,
                visible.ranges(),
                before,
                participant,
                limit + 1,
            )?;
            let more = roots.len() > limit;
            let mut found = Vec::new();
            let mut last = None;
            for root in roots.into_iter().take(limit) {
                last = Some(root.latest);
                if let Some(root) = events::get_room_event(conn, &room, &root.root_id)?
                    .filter(|e| visible.allows(e.stream_pos) && !e.pdu.rejected)
                {
                    found.push(root);
                }
            }
            let chunk = aggregations::format_events(conn, &found, Some(viewer))?;
            let next_batch = match (more, last) {
                (true, Some(last)) => Some(last.to_string()),
                _ => None,
            };
            Ok(ThreadsPage { chunk, next_batch })
        })
        .await
}
