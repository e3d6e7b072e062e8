//! The deprecated endpoints the spec still carries (the server claims every version up to
//! v1.19): `GET /initialSync`, `GET /events` (also with `room_id`, peeking into a room the
//! user may read without being a member), `GET /events/{eventId}` and
//! `GET /rooms/{roomId}/initialSync`.
//!
//! They are answered by the code behind their replacements, reshaped: `/initialSync` is an
//! initial `/sync` (state after the timeline, `include_leave` for `archived`), `/events` an
//! incremental `/sync` whose room timelines are concatenated, and the room snapshot and the
//! peeking stream use `/sync`'s timeline selection with the viewer's history visibility.
//!
//! Tokens are `/sync` tokens. `/events` and `/initialSync` hand out no to-device messages, so
//! their tokens say "to-device delivered up to where it was" (the token's third part): a client
//! that goes on to `/sync` with one still receives every waiting to-device message.

use std::collections::BTreeMap;
use std::time::Duration;

use ruma::{OwnedEventId, OwnedRoomId};
use rusqlite::Connection;
use serde::Serialize;
use serde_json::Value;

use super::aggregations::format_events;
use super::rooms;
use super::sync::{self, SyncRequest};
use super::tokens::{self, SyncToken};
use super::{Server, Viewer};
use crate::error::{Error, ErrorCode, Result};
use crate::matrix::filter::{Filter, RoomEventFilter};
use crate::store::{events, misc, state};

/// Messages per room when `/initialSync` sets no `limit`.
const DEFAULT_LIMIT: u64 = 10;
/// Most events one `/events` answer carries per room.
const EVENTS_LIMIT: u64 = 100;

// The answers. Events are client-format event JSON (arbitrary content), taken from `/sync`'s
// answer or formatted as `/messages` does.

/// A page of the `/events` stream (spec: `GET /events` 200).
#[derive(Debug, Serialize)]
pub struct EventsPage {
    /// The token the page starts at.
    pub start: String,
    /// The token to continue from.
    pub end: String,
    /// The events.
    pub chunk: Vec<Value>,
}

/// A room's latest messages (spec: `PaginationChunk`).
#[derive(Debug, Serialize)]
pub struct PaginationChunk {
    /// The messages, oldest first.
    pub chunk: Vec<Value>,
    /// The token after the last of them.
    pub end: String,
    /// The token before the first of them, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
}

/// One room of `/initialSync`, or `/rooms/{roomId}/initialSync` (spec: `RoomInfo`).
#[derive(Debug, Serialize)]
pub struct RoomInfo {
    /// The room.
    pub room_id: String,
    /// The user's membership, when they have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub membership: Option<String>,
    /// The latest messages (absent for an invite).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<PaginationChunk>,
    /// The state (absent for an invite).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<Vec<Value>>,
    /// `public` or `private` in the room directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visibility: Option<&'static str>,
    /// The user's room account data events (absent for an invite).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_data: Option<Vec<Value>>,
    /// The invite event, for an invited room.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invite: Option<Value>,
}

/// The answer of `GET /initialSync`.
#[derive(Debug, Serialize)]
pub struct InitialSync {
    /// The token to go on from with `/events` or `/sync`.
    pub end: String,
    /// Every room of the user.
    pub rooms: Vec<RoomInfo>,
    /// Presence events.
    pub presence: Vec<Value>,
    /// Global account data events.
    pub account_data: Vec<Value>,
}

fn sync_request(server: &Server, viewer: &Viewer, filter: Filter) -> SyncRequest {
    SyncRequest {
        user_id: viewer.user_id.clone(),
        device_id: viewer.device_id.clone(),
        since: None,
        typing_since: 0,
        to_device_since: None,
        full_state: false,
        filter,
        timeout: Duration::ZERO,
        use_state_after: false,
        own_server: server.server_name().to_string(),
        ignored: Vec::new(),
        related_rooms: None,
    }
}

/// `next_batch` of a sync answer with its to-device part set to `to_device`.
fn token_keeping_to_device(next_batch: &str, to_device: i64) -> Result<String> {
    let token = SyncToken::parse(next_batch)?;
    Ok(SyncToken {
        to_device: Some(to_device),
        ..token
    }
    .to_string())
}

/// Whether a client-format (or stripped) event is `user`'s own member event.
fn is_own_member_event(event: &Value, user: &str) -> bool {
    event["type"] == "m.room.member" && event["state_key"] == user
}

/// # `GET /initialSync`: every room of the user with its current state and latest
/// `limit` messages, presence and account data.
pub async fn initial_sync(
    server: &Server,
    viewer: Viewer,
    limit: Option<u64>,
    archived: bool,
) -> Result<InitialSync> {
    let mut filter = Filter::default();
    filter.room.timeline.limit = Some(limit.unwrap_or(DEFAULT_LIMIT));
    filter.room.include_leave = archived;
    let mut request = sync_request(server, &viewer, filter);
    request.use_state_after = true;
    let answer = sync::sync(server, request).await?;
    let end = token_keeping_to_device(&answer.next_batch, 0)?;
    let user = viewer.user_id.as_str();
    // A joined or left room as `RoomInfo`; `leave` covers bans too: the user's own member
    // event in the state says which.
    let room_info = |room_id: String,
                     membership: &str,
                     timeline: sync::Timeline,
                     state: sync::RoomState,
                     account_data: sync::Events| {
        let state = state.into_events();
        let membership = state
            .iter()
            .find(|e| is_own_member_event(e, user))
            .and_then(|e| e["content"]["membership"].as_str())
            .unwrap_or(membership)
            .to_owned();
        RoomInfo {
            room_id,
            membership: Some(membership),
            messages: Some(PaginationChunk {
                chunk: timeline.events,
                end: end.clone(),
                start: timeline.prev_batch,
            }),
            account_data: Some(account_data.events),
            state: Some(state),
            visibility: None,
            invite: None,
        }
    };
    let sync::Rooms {
        join,
        invite,
        leave,
        knock: _,
    } = answer.rooms;
    let mut rooms = Vec::new();
    for (room_id, section) in join {
        rooms.push(room_info(
            room_id,
            "join",
            section.timeline,
            section.state,
            section.account_data,
        ));
    }
    for (room_id, section) in leave {
        rooms.push(room_info(
            room_id,
            "leave",
            section.timeline,
            section.state,
            section.account_data,
        ));
    }
    for (room_id, section) in invite {
        let invite = section
            .invite_state
            .events
            .into_iter()
            .find(|e| is_own_member_event(e, user))
            .map(|mut event| {
                event["room_id"] = Value::String(room_id.clone());
                event
            });
        rooms.push(RoomInfo {
            room_id,
            membership: Some("invite".to_owned()),
            messages: None,
            state: None,
            visibility: None,
            account_data: None,
            invite,
        });
    }
    let ids: Vec<String> = rooms.iter().map(|r| r.room_id.clone()).collect();
    let public = server
        .store
        .read(move |conn| {
            ids.into_iter()
                .map(|id| {
                    let public = state::get_room(conn, &id)?.is_some_and(|r| r.is_public);
                    Ok((id, public))
                })
                .collect::<Result<BTreeMap<_, _>>>()
        })
        .await?;
    for room in &mut rooms {
        let is_public = public.get(&room.room_id).copied().unwrap_or(false);
        room.visibility = Some(if is_public { "public" } else { "private" });
    }
    Ok(InitialSync {
        end,
        rooms,
        presence: answer.presence.events,
        account_data: answer.account_data.events,
    })
}

/// # `GET /events`: the user's new room events after `from` (or from now), waiting up to
/// `timeout` for some; with `room`, the events of that one room, which the user need only be
/// allowed to read (peeking into a `world_readable` room).
pub async fn events(
    server: &Server,
    viewer: Viewer,
    from: Option<String>,
    timeout: Duration,
    room: Option<OwnedRoomId>,
) -> Result<EventsPage> {
    let parsed = from.as_deref().map(SyncToken::parse).transpose()?;
    let (since, typing, to_device) = match parsed {
        Some(t) => (t.pos, t.typing, t.to_device.unwrap_or(t.pos)),
        None => (server.store.current_pos(), 0, server.store.current_pos()),
    };
    let start = from.unwrap_or_else(|| {
        SyncToken {
            pos: since,
            typing,
            to_device: Some(to_device),
        }
        .to_string()
    });
    if let Some(room) = room {
        let cursor = Cursor {
            since,
            typing,
            to_device,
        };
        return room_events(server, viewer, room, cursor, start, timeout).await;
    }
    let mut filter = Filter::default();
    filter.room.timeline.limit = Some(EVENTS_LIMIT);
    let mut request = sync_request(server, &viewer, filter);
    request.since = Some(since);
    request.typing_since = typing;
    request.to_device_since = Some(to_device);
    request.timeout = timeout;
    let answer = sync::sync(server, request).await?;
    let end = token_keeping_to_device(&answer.next_batch, to_device)?;
    let rooms = answer.rooms;
    let chunk = (rooms.join.into_values().map(|room| room.timeline))
        .chain(rooms.leave.into_values().map(|room| room.timeline))
        .flat_map(|timeline| timeline.events)
        .collect();
    Ok(EventsPage { start, end, chunk })
}

/// Where an `/events` stream stands: the parts of its token.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    since: i64,
    typing: u64,
    to_device: i64,
}

/// `/events?room_id=`: a long poll on one room's timeline as the viewer may see it.
async fn room_events(
    server: &Server,
    viewer: Viewer,
    room: OwnedRoomId,
    cursor: Cursor,
    start: String,
    timeout: Duration,
) -> Result<EventsPage> {
    let Cursor {
        since,
        typing,
        to_device,
    } = cursor;
    let deadline = tokio::time::Instant::now() + timeout.min(sync::MAX_TIMEOUT);
    let mut positions = server.store.subscribe();
    let mut shutdown = server.shutdown.clone();
    loop {
        let upto = *positions.borrow_and_update();
        let (room, viewer_c) = (room.clone(), viewer.clone());
        let chunk = server
            .store
            .read(move |conn| {
                let visible = rooms::visibility(conn, room.as_str(), viewer_c.user_id.as_str())?;
                let filter = RoomEventFilter {
                    limit: Some(EVENTS_LIMIT),
                    not_senders: super::account_data::ignored_users(
                        conn,
                        viewer_c.user_id.as_str(),
                    )?,
                    ..RoomEventFilter::default()
                };
                let (list, _) =
                    sync::timeline(conn, room.as_str(), &filter, &visible, since, upto)?;
                format_events(conn, &list, Some(viewer_c.pair()))
            })
            .await?;
        if !chunk.is_empty() || tokio::time::Instant::now() >= deadline {
            let end = SyncToken {
                pos: upto,
                typing,
                to_device: Some(to_device),
            }
            .to_string();
            return Ok(EventsPage { start, end, chunk });
        }
        tokio::select! {
            changed = tokio::time::timeout_at(deadline, positions.changed()) => match changed {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => {
                    return Ok(EventsPage { end: start.clone(), start, chunk: Vec::new() });
                }
            },
            _ = crate::util::stopped(&mut shutdown) => {
                return Ok(EventsPage { end: start.clone(), start, chunk: Vec::new() });
            }
        }
    }
}

/// # `GET /events/{eventId}`: one event of any room, if the user may see it (404 otherwise,
/// as for an unknown event).
fn event(conn: &Connection, viewer: &Viewer, event_id: &str) -> Result<Value> {
    let not_found = || Error::not_found("Event not found");
    let stored = events::get_event(conn, event_id)?.ok_or_else(not_found)?;
    let visible = rooms::visibility(conn, stored.pdu.room_id.as_str(), viewer.user_id.as_str())
        .map_err(|err| match err {
            Error::Matrix {
                code: ErrorCode::Forbidden,
                ..
            } => not_found(),
            err => err,
        })?;
    if !visible.allows(stored.stream_pos) || stored.pdu.rejected {
        return Err(not_found());
    }
    format_events(conn, &[stored], Some(viewer.pair()))?
        .pop()
        .ok_or_else(|| Error::internal("formatting lost the event"))
}

/// # `GET /rooms/{roomId}/initialSync`: a snapshot of one room the user may read (a member,
/// a former member, or anyone while it is `world_readable`): its latest `limit` messages the
/// user may see and the state at the last of them they may see (the current state unless
/// they left), the user's membership, the room's directory visibility and their room
/// account data. 403 when the user may read nothing of it.
fn room_initial_sync(
    conn: &Connection,
    viewer: &Viewer,
    room_id: &str,
    upto: i64,
    limit: Option<u64>,
) -> Result<RoomInfo> {
    let user = viewer.user_id.as_str();
    let visible = rooms::visibility(conn, room_id, user)?;
    let filter = RoomEventFilter {
        limit: Some(limit.unwrap_or(DEFAULT_LIMIT)),
        not_senders: super::account_data::ignored_users(conn, user)?,
        ..RoomEventFilter::default()
    };
    let (list, _) = sync::timeline(conn, room_id, &filter, &visible, 0, upto)?;
    let chunk = format_events(conn, &list, Some(viewer.pair()))?;
    // The state at the last position the user may see: now, unless they left.
    let state_map = match visible.last_at_or_before(i64::MAX) {
        Some(i64::MAX) => state::current_state(conn, room_id)?,
        Some(last) => match state::state_group_before(conn, room_id, last.saturating_add(1))? {
            Some(group) => state::state_at_group(conn, group)?,
            None => state::StateMap::new(),
        },
        None => state::StateMap::new(),
    };
    let state_events = rooms::load_state_events(conn, &state_map, |_, _| true)?;
    let state_json = state_events
        .iter()
        .map(|e| rooms::client_event(conn, e, Some(viewer.pair())))
        .collect::<Result<Vec<_>>>()?;
    let membership = state_events
        .iter()
        .find(|e| {
            e.pdu.kind == ruma::events::TimelineEventType::RoomMember
                && e.pdu.state_key.as_deref() == Some(user)
        })
        .and_then(|e| {
            e.pdu.content_value()["membership"]
                .as_str()
                .map(str::to_owned)
        });
    let messages = PaginationChunk {
        chunk,
        end: tokens::stream_token(upto),
        start: list.first().map(tokens::token_before),
    };
    let account_data: Vec<Value> = misc::account_data_since(conn, user, 0, upto)?
        .into_iter()
        .filter(|row| row.room_id == room_id)
        .map(|row| sync::account_data_event(row.kind, &row.content))
        .collect();
    let public = state::get_room(conn, room_id)?.is_some_and(|r| r.is_public);
    Ok(RoomInfo {
        room_id: room_id.to_owned(),
        membership,
        messages: Some(messages),
        state: Some(state_json),
        visibility: Some(if public { "public" } else { "private" }),
        account_data: Some(account_data),
        invite: None,
    })
}

/// `GET /events/{eventId}` for `viewer` (404 when hidden or unknown).
pub async fn get_event(server: &Server, viewer: Viewer, event_id: OwnedEventId) -> Result<Value> {
    server
        .store
        .read(move |conn| event(conn, &viewer, event_id.as_str()))
        .await
}

/// `GET /rooms/{roomId}/initialSync` for `viewer`, as of now.
pub async fn initial_sync_room(
    server: &Server,
    viewer: Viewer,
    room_id: OwnedRoomId,
    limit: Option<u64>,
) -> Result<RoomInfo> {
    let upto = server.store.current_pos();
    server
        .store
        .read(move |conn| room_initial_sync(conn, &viewer, room_id.as_str(), upto, limit))
        .await
}
