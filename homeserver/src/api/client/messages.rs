//! Room history: `/messages`, `/context` and `/event`, in topological order with pagination
//! tokens `t<depth>_<stream>` (sync tokens `s<stream>` are accepted as well).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use rusqlite::Connection;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::extract::{
    Auth, PathParams, QueryParams, TimestampQuery, event_id, room_id, timestamp_answer,
};
use crate::error::{Error, ErrorCode, Result};
use crate::matrix::filter::RoomEventFilter;
use crate::matrix::visibility::Visible;
use crate::service::Server;
use crate::service::aggregations;
use crate::service::rooms;
use crate::store::events::{self, StoredEvent, TopoKey};
use crate::store::state;

/// Most events one page returns.
const MAX_LIMIT: usize = 1000;

/// A parsed pagination token.
#[derive(Clone, Copy)]
enum Token {
    Topo(TopoKey),
    Stream(i64),
}

fn parse_token(token: &str) -> Result<Token> {
    let bad = || Error::invalid_param(format!("Invalid pagination token {token:?}"));
    if let Some(rest) = token.strip_prefix('t') {
        let (depth, pos) = rest.split_once('_').ok_or_else(bad)?;
        Ok(Token::Topo(TopoKey {
            depth: depth.parse().map_err(|_| bad())?,
            stream_pos: pos.parse().map_err(|_| bad())?,
        }))
    } else {
        Ok(Token::Stream(
            crate::service::sync::parse_token(token).map_err(|_| bad())?,
        ))
    }
}

/// A token as a stream position (for `/members?at=`).
pub fn parse_position(token: &str) -> Result<i64> {
    Ok(match parse_token(token)? {
        Token::Topo(key) => key.stream_pos - 1,
        Token::Stream(pos) => pos,
    })
}

fn resolve(conn: &Connection, room: &str, token: Token) -> Result<TopoKey> {
    match token {
        Token::Topo(key) => Ok(key),
        Token::Stream(pos) => events::topo_key_after_stream(conn, room, pos),
    }
}

fn token_of(key: TopoKey) -> String {
    format!("t{}_{}", key.depth, key.stream_pos)
}

fn key_of(event: &StoredEvent) -> TopoKey {
    TopoKey {
        depth: event.pdu.depth as i64,
        stream_pos: event.stream_pos,
    }
}

#[derive(Deserialize)]
pub struct MessagesQuery {
    from: Option<String>,
    to: Option<String>,
    dir: String,
    limit: Option<usize>,
    filter: Option<String>,
}

/// Where a page starts, which way it goes, how long it is, and where it must stop.
#[derive(Clone, Copy)]
struct Page {
    start: TopoKey,
    backwards: bool,
    limit: usize,
    stop: Option<TopoKey>,
}

/// Collects up to `limit` visible, filter-passing events from `start` in one direction.
/// Returns them and the key to continue from (`None` when the room is exhausted).
fn paginate(
    conn: &Connection,
    room: &str,
    page: Page,
    visible: &Visible,
    filter: &RoomEventFilter,
) -> Result<(Vec<StoredEvent>, Option<TopoKey>)> {
    let Page {
        start,
        backwards,
        limit,
        stop,
    } = page;
    let mut out = Vec::new();
    let mut cursor = start;
    loop {
        let batch = events::room_events_topo(conn, room, cursor, backwards, 100)?;
        let exhausted = batch.len() < 100;
        for event in batch {
            let key = key_of(&event);
            cursor = if backwards {
                key
            } else {
                TopoKey {
                    depth: key.depth,
                    stream_pos: key.stream_pos + 1,
                }
            };
            let past_stop = stop.is_some_and(|s| if backwards { key < s } else { key >= s });
            if past_stop {
                return Ok((out, None));
            }
            if visible.allows(event.stream_pos) && filter.allows(&event.pdu) {
                out.push(event);
                if out.len() == limit {
                    return Ok((out, Some(cursor)));
                }
            }
        }
        if exhausted {
            return Ok((out, None));
        }
    }
}

fn parse_filter(raw: Option<&str>) -> Result<RoomEventFilter> {
    match raw {
        Some(raw) => serde_json::from_str(raw)
            .map_err(|err| Error::bad_json(format!("Invalid filter: {err}"))),
        None => Ok(RoomEventFilter::default()),
    }
}

/// Member events for the senders of `chunk`, for lazy-loading clients.
fn lazy_members(conn: &Connection, room: &str, chunk: &[StoredEvent]) -> Result<Vec<Value>> {
    let mut senders: Vec<&str> = chunk.iter().map(|e| e.pdu.sender.as_str()).collect();
    senders.sort_unstable();
    senders.dedup();
    let mut out = Vec::new();
    for sender in senders {
        if let Some(id) = state::current_state_id(conn, room, "m.room.member", sender)?
            && let Some(event) = events::get_event(conn, &id)?
        {
            out.push(rooms::client_event(conn, &event, None)?);
        }
    }
    Ok(out)
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/messages`
pub async fn messages(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    QueryParams(q): QueryParams<MessagesQuery>,
) -> Result<Json<Value>> {
    let room = room_id(&room)?;
    let backwards = match q.dir.as_str() {
        "b" => true,
        "f" => false,
        _ => return Err(Error::invalid_param("dir must be 'b' or 'f'")),
    };
    let limit = q.limit.unwrap_or(10).clamp(1, MAX_LIMIT);
    let filter = parse_filter(q.filter.as_deref())?;
    let from = q.from.as_deref().map(parse_token).transpose()?;
    let to = q.to.as_deref().map(parse_token).transpose()?;
    let user = auth.user_id.to_string();
    let device = auth.device_id.clone();
    let current = server.store.current_pos();
    let run = |room: ruma::OwnedRoomId, user: String, device: String, filter: RoomEventFilter| {
        server.store.read(move |conn| {
            let room = room.as_str();
            let visible = rooms::visibility(conn, room, &user)?;
            let mut filter = filter;
            filter
                .not_senders
                .extend(crate::service::sync::ignored_users(conn, &user)?);
            let mut start = match from {
                Some(token) => resolve(conn, room, token)?,
                None if backwards => events::topo_key_after_stream(conn, room, current)?,
                None => TopoKey {
                    depth: 0,
                    stream_pos: 0,
                },
            };
            // Nothing after the last visible event (a member who left) needs scanning.
            if backwards
                && let Some(last) = visible.last_at_or_before(i64::MAX)
                && last < i64::MAX
            {
                start = start.min(events::topo_key_after_stream(conn, room, last)?);
            }
            let stop = to.map(|t| resolve(conn, room, t)).transpose()?;
            let (chunk, next) = paginate(
                conn,
                room,
                Page {
                    start,
                    backwards,
                    limit,
                    stop,
                },
                &visible,
                &filter,
            )?;
            let formatted = aggregations::format_events(conn, &chunk, Some((&user, &device)))?;
            let state = if filter.lazy_load_members {
                lazy_members(conn, room, &chunk)?
            } else {
                Vec::new()
            };
            let mut body = json!({"start": token_of(start), "chunk": formatted});
            if let Some(next) = next {
                body["end"] = json!(token_of(next));
            }
            if !state.is_empty() {
                body["state"] = json!(state);
            }
            Ok(body)
        })
    };
    let mut body = run(room.clone(), user.clone(), device.clone(), filter.clone()).await?;
    // At the start of the history this unit holds for a room joined through another unit:
    // fetch older events from a peer and page again.
    if backwards
        && body.get("end").is_none()
        && crate::service::federation::backfill(&server, &room, limit.max(20)).await? > 0
    {
        body = run(room, user, device, filter).await?;
    }
    Ok(Json(body))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}`
pub async fn get_event(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((room, event)): PathParams<(String, String)>,
) -> Result<Json<Value>> {
    let room = room_id(&room)?;
    let event = event_id(&event)?;
    let user = auth.user_id.to_string();
    let device = auth.device_id.clone();
    let body = server
        .store
        .read(move |conn| {
            // A room the user may not read is as unknown as an event they may not see
            // (spec: 404 `M_NOT_FOUND` for both).
            let visible =
                rooms::visibility(conn, room.as_str(), &user).map_err(|err| match err {
                    Error::Matrix {
                        code: ErrorCode::Forbidden,
                        ..
                    } => Error::not_found("Event not found"),
                    err => err,
                })?;
            let stored = events::get_room_event(conn, room.as_str(), event.as_str())?
                .filter(|e| visible.allows(e.stream_pos) && !e.pdu.rejected)
                .ok_or_else(|| Error::not_found("Event not found"))?;
            aggregations::format_events(conn, &[stored], Some((&user, &device)))?
                .pop()
                .ok_or_else(|| Error::internal("formatting lost the event"))
        })
        .await?;
    Ok(Json(body))
}

#[derive(Deserialize)]
pub struct ContextQuery {
    limit: Option<usize>,
    filter: Option<String>,
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}`
pub async fn context(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((room, event)): PathParams<(String, String)>,
    QueryParams(q): QueryParams<ContextQuery>,
) -> Result<Json<Value>> {
    let room = room_id(&room)?;
    let event = event_id(&event)?;
    let limit = q.limit.unwrap_or(10).min(MAX_LIMIT);
    let filter = parse_filter(q.filter.as_deref())?;
    let user = auth.user_id.to_string();
    let device = auth.device_id.clone();
    let body = server
        .store
        .read(move |conn| {
            let room = room.as_str();
            let visible = rooms::visibility(conn, room, &user)?;
            let target = events::get_room_event(conn, room, event.as_str())?
                .filter(|e| visible.allows(e.stream_pos))
                .ok_or_else(|| Error::not_found("Event not found"))?;
            let key = key_of(&target);
            let before_n = limit / 2;
            let after_n = limit - before_n;
            let (before, start) = if before_n == 0 {
                (Vec::new(), Some(key))
            } else {
                paginate(
                    conn,
                    room,
                    Page {
                        start: key,
                        backwards: true,
                        limit: before_n,
                        stop: None,
                    },
                    &visible,
                    &filter,
                )?
            };
            let after_key = TopoKey {
                depth: key.depth,
                stream_pos: key.stream_pos + 1,
            };
            let (after, end) = if after_n == 0 {
                (Vec::new(), Some(after_key))
            } else {
                paginate(
                    conn,
                    room,
                    Page {
                        start: after_key,
                        backwards: false,
                        limit: after_n,
                        stop: None,
                    },
                    &visible,
                    &filter,
                )?
            };
            let format = |list: &[StoredEvent]| -> Result<Vec<Value>> {
                list.iter()
                    .map(|e| rooms::client_event(conn, e, Some((&user, &device))))
                    .collect()
            };
            // The target and its neighbours with their bundled aggregations, in one batch.
            let mut timeline: Vec<StoredEvent> = vec![target.clone()];
            timeline.extend(before.iter().cloned());
            timeline.extend(after.iter().cloned());
            let mut bundled = aggregations::format_events(conn, &timeline, Some((&user, &device)))?;
            let events_after = bundled.split_off(1 + before.len());
            let events_before = bundled.split_off(1);
            let event = bundled.remove(0);
            let state_map = match target.state_group {
                Some(group) => state::state_at_group(conn, group)?,
                None => Default::default(),
            };
            let state_events = rooms::load_state_events(conn, &state_map, |kind, _| {
                !filter.lazy_load_members || kind != "m.room.member"
            })?;
            let mut state = format(&state_events)?;
            if filter.lazy_load_members {
                let mut all = before.clone();
                all.push(target.clone());
                all.extend(after.iter().cloned());
                state.extend(lazy_members(conn, room, &all)?);
            }
            let last_after = after.last().map(|e| TopoKey {
                depth: e.pdu.depth as i64,
                stream_pos: e.stream_pos + 1,
            });
            Ok(json!({
                "event": event,
                "events_before": events_before,
                "events_after": events_after,
                "start": token_of(start.unwrap_or(before.last().map(key_of).unwrap_or(key))),
                "end": token_of(end.or(last_after).unwrap_or(after_key)),
                "state": state,
            }))
        })
        .await?;
    Ok(Json(body))
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event`
/// Answered from the events this unit holds (it holds the whole room once joined, and
/// backfills on `/messages`); `M_NOT_FOUND` when none is on that side of `ts` or visible.
pub async fn timestamp_to_event(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    QueryParams(q): QueryParams<TimestampQuery>,
) -> Result<Json<Value>> {
    let room = room_id(&room)?.to_string();
    let forward = q.forward()?;
    let user = auth.user_id.to_string();
    let found = server
        .store
        .read(move |conn| {
            let visible = rooms::visibility(conn, &room, &user)?;
            Ok(events::closest_to_timestamp(conn, &room, q.ts, forward)?
                .filter(|(_, _, pos)| visible.allows(*pos)))
        })
        .await?;
    timestamp_answer(found)
}
