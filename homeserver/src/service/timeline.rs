//! Room history: `/messages`, `/context`, `/event` and `timestamp_to_event`, in topological
//! order. Pagination tokens are `service::tokens`'s. A page that reaches the start of the
//! history this unit holds is backfilled from a peer by `service::federation::route::messages`,
//! which then asks [`messages`] again.

use ruma::{DeviceId, OwnedEventId, OwnedRoomId, UserId};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Server;
use super::aggregations;
use super::rooms;
use super::tokens::{PageToken, key_of, topo_token};
use crate::error::{Error, ErrorCode, Result};
use crate::matrix::filter::RoomEventFilter;
use crate::matrix::visibility::Visible;
use crate::store::events::{self, StoredEvent, TopoKey};
use crate::store::state;

/// What `timestamp_to_event` finds (the store's row, which serialises as the answer).
pub use crate::store::events::TimestampMatch;

/// A `/messages` page (spec: `GET /rooms/{roomId}/messages` 200). Events are client-format
/// event JSON (`aggregations::format_events`), whose content is arbitrary.
#[derive(Debug, Serialize)]
pub struct MessagesPage {
    /// The token the page starts at.
    pub start: String,
    /// The events, in the page's direction.
    pub chunk: Vec<Value>,
    /// The token to continue from; absent when the page reached the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// Lazy-loaded member events for the senders of `chunk`, when the filter asks for them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub state: Vec<Value>,
}

/// A `/context` answer (spec: `GET /rooms/{roomId}/context/{eventId}` 200). Events are
/// client-format event JSON, whose content is arbitrary.
#[derive(Debug, Serialize)]
pub struct ContextPage {
    /// The event asked for.
    pub event: Value,
    /// Events before it, newest first.
    pub events_before: Vec<Value>,
    /// Events after it, oldest first.
    pub events_after: Vec<Value>,
    /// A token to paginate backwards from.
    pub start: String,
    /// A token to paginate forwards from.
    pub end: String,
    /// The room state at the event.
    pub state: Vec<Value>,
}

/// Most events one page returns.
const MAX_LIMIT: usize = 1000;

/// The parameters of `/messages`.
#[derive(Debug, Deserialize)]
pub struct MessagesQuery {
    from: Option<String>,
    to: Option<String>,
    dir: String,
    limit: Option<usize>,
    filter: Option<String>,
}

impl MessagesQuery {
    /// Whether the page goes back in time (`dir=b`).
    pub fn backwards(&self) -> bool {
        self.dir == "b"
    }

    /// How many events the page holds at most.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(10).clamp(1, MAX_LIMIT)
    }
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

/// `/messages`: a page of the room's events in topological order as `user` may see them. A
/// page without `from` starts at stream position `current` (read once per request, so a page
/// asked again after a backfill starts where the first one did). A backwards page without
/// `end` reached the start of what this unit holds.
pub async fn messages(
    server: &Server,
    user: &UserId,
    device: Option<&DeviceId>,
    room: OwnedRoomId,
    q: &MessagesQuery,
    current: i64,
) -> Result<MessagesPage> {
    let backwards = match q.dir.as_str() {
        "b" => true,
        "f" => false,
        _ => return Err(Error::invalid_param("dir must be 'b' or 'f'")),
    };
    let limit = q.limit();
    let filter = parse_filter(q.filter.as_deref())?;
    let from = q.from.as_deref().map(PageToken::parse).transpose()?;
    let to = q.to.as_deref().map(PageToken::parse).transpose()?;
    let user = user.to_string();
    let device = super::device_key(device).to_owned();
    server
        .store
        .read(move |conn| {
            let room = room.as_str();
            let visible = rooms::visibility(conn, room, &user)?;
            let mut filter = filter;
            filter
                .not_senders
                .extend(super::account_data::ignored_users(conn, &user)?);
            let mut start = match from {
                Some(token) => token.resolve(conn, room)?,
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
            let stop = to.map(|t| t.resolve(conn, room)).transpose()?;
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
            Ok(MessagesPage {
                start: topo_token(start),
                chunk: formatted,
                end: next.map(topo_token),
                state,
            })
        })
        .await
}

/// `/event`: one event as `auth` may see it (404 when hidden or unknown).
pub async fn get_event(
    server: &Server,
    user: &UserId,
    device: Option<&DeviceId>,
    room: OwnedRoomId,
    event: OwnedEventId,
) -> Result<Value> {
    let user = user.to_string();
    let device = super::device_key(device).to_owned();
    server
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
        .await
}

/// The parameters of `/context`.
#[derive(Debug, Deserialize)]
pub struct ContextQuery {
    limit: Option<usize>,
    filter: Option<String>,
}

/// `/context`: an event with the events before and after it and the state at it.
pub async fn context(
    server: &Server,
    user: &UserId,
    device: Option<&DeviceId>,
    room: OwnedRoomId,
    event: OwnedEventId,
    q: ContextQuery,
) -> Result<ContextPage> {
    let limit = q.limit.unwrap_or(10).min(MAX_LIMIT);
    let filter = parse_filter(q.filter.as_deref())?;
    let user = user.to_string();
    let device = super::device_key(device).to_owned();
    server
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
            Ok(ContextPage {
                event,
                events_before,
                events_after,
                start: topo_token(start.unwrap_or(before.last().map(key_of).unwrap_or(key))),
                end: topo_token(end.or(last_after).unwrap_or(after_key)),
                state,
            })
        })
        .await
}

/// `timestamp_to_event`, answered from the events this unit holds (it holds the whole room
/// once joined, and backfills on `/messages`): the visible event closest to `ts` on the side
/// `forward` says.
pub async fn closest_to_timestamp(
    server: &Server,
    user: &UserId,
    room: OwnedRoomId,
    ts: i64,
    forward: bool,
) -> Result<Option<events::TimestampMatch>> {
    let room = room.to_string();
    let user = user.to_string();
    server
        .store
        .read(move |conn| {
            let visible = rooms::visibility(conn, &room, &user)?;
            Ok(events::closest_to_timestamp(conn, &room, ts, forward)?
                .filter(|found| visible.allows(found.stream_pos)))
        })
        .await
}
