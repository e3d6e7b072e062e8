//! Event relationships: `GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]` and
//! `GET /rooms/{roomId}/threads` (client API v1).
//!
//! Relations come from the `event_relations` index that triggers on `events` keep (migration
//! 0005), so local, federated and backfilled events are all related and a redacted child drops
//! out. What a user may see is [`rooms::visibility`]'s decision, as for `/messages`. Relation
//! pages use `/messages` tokens (`t<depth>_<stream>`, and `s<pos>` sync tokens), so clients can
//! mix them as the spec allows; a threads page continues from the stream position of the last
//! thread's latest event. Events carry their bundled aggregations (`service::aggregations`).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use rusqlite::Connection;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::extract::{Auth, PathParams, QueryParams, event_id, room_id};
use crate::error::{Error, ErrorCode, Result};
use crate::matrix::visibility::Visible;
use crate::service::Server;
use crate::service::aggregations;
use crate::service::rooms;
use crate::store::events::{self, StoredEvent, TopoKey};
use crate::store::search::{self as index, RelationQuery};

/// Default and largest page of `/relations` and `/threads`.
const DEFAULT_LIMIT: usize = 5;
const MAX_LIMIT: usize = 100;
/// How many levels `recurse=true` follows (the spec asks for at least 3).
const RECURSION_DEPTH: usize = 3;
/// Most parents a recursive walk collects, so a huge reaction pile cannot make a huge query.
const MAX_PARENTS: usize = 1000;

/// The routes of this area.
pub fn routes() -> Router<Arc<Server>> {
    const V1: &str = "/_matrix/client/v1/rooms/{room_id}";
    let r = |path: &str| format!("{V1}{path}");
    Router::new()
        .route(&r("/relations/{event_id}"), get(relations))
        .route(
            &r("/relations/{event_id}/{rel_type}"),
            get(relations_of_type),
        )
        .route(
            &r("/relations/{event_id}/{rel_type}/{event_type}"),
            get(relations_of_type_and_event_type),
        )
        .route(&r("/threads"), get(threads))
}

/// Query parameters of `/relations`.
#[derive(Deserialize, Default)]
pub struct RelationsQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    dir: Option<String>,
    recurse: Option<bool>,
}

/// Query parameters of `/threads`.
#[derive(Deserialize, Default)]
pub struct ThreadsQuery {
    include: Option<String>,
    limit: Option<usize>,
    from: Option<String>,
}

/// What a `/relations` request asks for, validated.
struct RelationsRequest {
    room: String,
    parent: String,
    rel_type: Option<String>,
    event_type: Option<String>,
    query: RelationsQuery,
}

fn topo(event: &StoredEvent) -> TopoKey {
    TopoKey {
        depth: event.pdu.depth as i64,
        stream_pos: event.stream_pos,
    }
}

fn token_of(key: TopoKey) -> String {
    format!("t{}_{}", key.depth, key.stream_pos)
}

/// Parses a `/messages`-style token (`t<depth>_<stream>` or a sync token) into a gap.
fn parse_token(conn: &Connection, room: &str, token: &str) -> Result<TopoKey> {
    let bad = || Error::invalid_param(format!("Invalid pagination token {token:?}"));
    if let Some(rest) = token.strip_prefix('t') {
        let (depth, pos) = rest.split_once('_').ok_or_else(bad)?;
        return Ok(TopoKey {
            depth: depth.parse().map_err(|_| bad())?,
            stream_pos: pos.parse().map_err(|_| bad())?,
        });
    }
    let pos = crate::service::sync::parse_token(token).map_err(|_| bad())?;
    events::topo_key_after_stream(conn, room, pos)
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
) -> Result<Value> {
    let (user, _) = viewer;
    let room = request.room.as_str();
    let q = &request.query;
    let backwards = match q.dir.as_deref() {
        None | Some("b") => true,
        Some("f") => false,
        Some(_) => return Err(Error::invalid_param("dir must be 'b' or 'f'")),
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let visible = visible_to(conn, room, user, true)?;
    events::get_room_event(conn, room, &request.parent)?
        .filter(|e| visible.allows(e.stream_pos) && !e.pdu.rejected)
        .ok_or_else(|| Error::not_found("Event not found"))?;

    let depth = if q.recurse == Some(true) {
        RECURSION_DEPTH
    } else {
        1
    };
    let mut parents = vec![request.parent.clone()];
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
        Some(token) => parse_token(conn, room, token)?,
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
            .map(|t| parse_token(conn, room, t))
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
        let key = topo(&event);
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
    let mut body = json!({
        "chunk": aggregations::format_events(conn, &chunk, Some(viewer))?,
    });
    if let (true, Some(last)) = (more, chunk.last()) {
        let key = topo(last);
        let next = if backwards {
            key
        } else {
            TopoKey {
                depth: key.depth,
                stream_pos: key.stream_pos + 1,
            }
        };
        body["next_batch"] = json!(token_of(next));
    }
    if let Some(from) = &q.from {
        body["prev_batch"] = json!(from);
    }
    if q.recurse.is_some() {
        body["recursion_depth"] = json!(depth);
    }
    Ok(body)
}

async fn run_relations(server: &Server, auth: Auth, request: RelationsRequest) -> Result<Value> {
    let user = auth.user_id.to_string();
    let device = auth.device_id;
    server
        .store
        .read(move |conn| relations_page(conn, (&user, &device), &request))
        .await
}

fn request(
    room: &str,
    parent: &str,
    rel_type: Option<String>,
    event_type: Option<String>,
    query: RelationsQuery,
) -> Result<RelationsRequest> {
    Ok(RelationsRequest {
        room: room_id(room)?.to_string(),
        parent: event_id(parent)?.to_string(),
        rel_type,
        event_type,
        query,
    })
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}`
pub async fn relations(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((room, parent)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<RelationsQuery>,
) -> Result<Json<Value>> {
    let request = request(&room, &parent, None, None, query)?;
    Ok(Json(run_relations(&server, auth, request).await?))
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}`
pub async fn relations_of_type(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((room, parent, rel_type)): PathParams<(String, String, String)>,
    QueryParams(query): QueryParams<RelationsQuery>,
) -> Result<Json<Value>> {
    let request = request(&room, &parent, Some(rel_type), None, query)?;
    Ok(Json(run_relations(&server, auth, request).await?))
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}`
pub async fn relations_of_type_and_event_type(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((room, parent, rel_type, event_type)): PathParams<(String, String, String, String)>,
    QueryParams(query): QueryParams<RelationsQuery>,
) -> Result<Json<Value>> {
    let request = request(&room, &parent, Some(rel_type), Some(event_type), query)?;
    Ok(Json(run_relations(&server, auth, request).await?))
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/threads`
pub async fn threads(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    QueryParams(query): QueryParams<ThreadsQuery>,
) -> Result<Json<Value>> {
    let room = room_id(&room)?.to_string();
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
    let user = auth.user_id.to_string();
    let device = auth.device_id;
    let body = server
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
            for (root_id, latest) in roots.into_iter().take(limit) {
                last = Some(latest);
                if let Some(root) = events::get_room_event(conn, &room, &root_id)?
                    .filter(|e| visible.allows(e.stream_pos) && !e.pdu.rejected)
                {
                    found.push(root);
                }
            }
            let chunk = aggregations::format_events(conn, &found, Some(viewer))?;
            let mut body = json!({ "chunk": chunk });
            if let (true, Some(last)) = (more, last) {
                body["next_batch"] = json!(last.to_string());
            }
            Ok(body)
        })
        .await?;
    Ok(Json(body))
}
