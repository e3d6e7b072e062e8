//! What this unit serves to peers about its rooms and users (spec: Server-Server API,
//! "Retrieving events", "Backfilling", "Querying for information"): single events, the state
//! at an event with its auth chain, backfill, missing events, auth chains, profiles, aliases
//! and the event closest to a timestamp. Every room read is for a server with (or that had) a
//! member in the room, and events it may not see (history visibility) go out redacted.

use std::collections::BTreeSet;

use ruma::room_version_rules::RoomVersionRules;
use ruma::{OwnedEventId, OwnedRoomId, UserId};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::matrix::visibility::Visible;
use crate::service::{Server, rooms};
use crate::store::events;
use crate::store::{dag, misc, state};

fn pdu_json(event: &events::StoredEvent) -> Value {
    serde_json::from_str(&event.pdu.json).unwrap_or(Value::Null)
}

/// Whether `origin` has (or had) a member in the room, so it may read the room's events.
fn origin_in_room(conn: &rusqlite::Connection, room: &str, origin: &str) -> Result<bool> {
    let state = state::current_state(conn, room)?;
    Ok(state.keys().any(|(kind, key)| {
        kind == "m.room.member" && key.split_once(':').map(|(_, s)| s) == Some(origin)
    }))
}

fn require_in_room(conn: &rusqlite::Connection, room: &str, origin: &str) -> Result<()> {
    if origin_in_room(conn, room, origin)? {
        Ok(())
    } else {
        Err(Error::forbidden(format!("{origin} is not in room {room}")))
    }
}

/// What a server may see of a room, with the room's redaction rules: the events it may not
/// see are sent in their redacted form (see [`rooms::pdu_for_server`]).
struct ServerView {
    visible: Visible,
    rules: RoomVersionRules,
}

impl ServerView {
    fn of(conn: &rusqlite::Connection, room: &str, origin: &str) -> Result<Self> {
        let version = state::get_room(conn, room)?
            .ok_or_else(|| Error::not_found("Unknown room"))?
            .room_version;
        let (_, rules) = crate::matrix::room_rules(&version)?;
        Ok(Self {
            visible: rooms::server_visibility(conn, room, origin)?,
            rules,
        })
    }

    fn pdu(&self, event: &events::StoredEvent) -> Result<Value> {
        rooms::pdu_for_server(event, &self.visible, &self.rules)
    }
}

/// State before `event_id` and its auth chain, as event IDs.
fn state_at(
    conn: &rusqlite::Connection,
    room: &str,
    event: &str,
    origin: &str,
) -> Result<(Vec<String>, Vec<String>)> {
    let stored = events::get_room_event(conn, room, event)?
        .ok_or_else(|| Error::not_found("Event not found"))?;
    // The state at an event tells who was there and what the room was called: only for a
    // server that may see the event.
    if !rooms::server_visibility(conn, room, origin)?.allows(stored.stream_pos) {
        return Err(Error::forbidden(format!(
            "{origin} may not see {event} (history visibility)"
        )));
    }
    let group = state::state_group_before(conn, room, stored.stream_pos)?;
    let map = match group {
        Some(group) => state::state_at_group(conn, group)?,
        None => Default::default(),
    };
    let ids: Vec<String> = map.values().cloned().collect();
    let chain: Vec<String> = dag::auth_chain(conn, &ids)?.into_iter().collect();
    Ok((ids, chain))
}

/// The stored PDU JSON of `ids` (those we hold).
fn pdus_json(conn: &rusqlite::Connection, ids: &[String]) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for id in ids {
        if let Some(event) = events::get_event(conn, id)? {
            out.push(pdu_json(&event));
        }
    }
    Ok(out)
}

/// # Event
/// A single event for `origin`, which must have a member in its room.
pub async fn event(server: &Server, origin: String, id: OwnedEventId) -> Result<Value> {
    server
        .store
        .read(move |conn| {
            let event = events::get_event(conn, id.as_str())?
                .ok_or_else(|| Error::not_found("Event not found"))?;
            let room = event.pdu.room_id.as_str();
            require_in_room(conn, room, &origin)?;
            ServerView::of(conn, room, &origin)?.pdu(&event)
        })
        .await
}

/// # State IDs
/// The state before `event` in `room` and its auth chain, as event IDs, for `origin`.
pub async fn state_ids(
    server: &Server,
    room: OwnedRoomId,
    event: String,
    origin: String,
) -> Result<(Vec<String>, Vec<String>)> {
    server
        .store
        .read(move |conn| {
            require_in_room(conn, room.as_str(), &origin)?;
            state_at(conn, room.as_str(), &event, &origin)
        })
        .await
}

/// # State
/// The PDUs of [`state_ids`]'s answer: `(state, auth_chain)`.
pub async fn state_pdus(
    server: &Server,
    ids: Vec<String>,
    chain: Vec<String>,
) -> Result<(Vec<Value>, Vec<Value>)> {
    server
        .store
        .read(move |conn| Ok((pdus_json(conn, &ids)?, pdus_json(conn, &chain)?)))
        .await
}

/// # Backfill
/// Up to `limit` events of `room` from `from` backwards, for `origin`.
pub async fn backfill(
    server: &Server,
    origin: String,
    room: OwnedRoomId,
    from: Vec<String>,
    limit: usize,
) -> Result<Vec<Value>> {
    server
        .store
        .read(move |conn| {
            require_in_room(conn, room.as_str(), &origin)?;
            let mut ids: Vec<String> = from
                .iter()
                .filter(|id| dag::have_event(conn, id).unwrap_or(false))
                .cloned()
                .collect();
            ids.extend(dag::missing_between(
                conn,
                room.as_str(),
                &BTreeSet::new(),
                &from,
                limit,
            )?);
            ids.truncate(limit);
            let view = ServerView::of(conn, room.as_str(), &origin)?;
            let mut out = Vec::new();
            for id in ids {
                if let Some(e) = events::get_room_event(conn, room.as_str(), &id)? {
                    out.push(view.pdu(&e)?);
                }
            }
            Ok(out)
        })
        .await
}

/// # Missing events
/// Events between `earliest` and `latest` (at most `limit`, at `min_depth` or deeper), in
/// topological order, for `origin`.
pub async fn missing_events(
    server: &Server,
    origin: String,
    room: OwnedRoomId,
    earliest: BTreeSet<String>,
    latest: Vec<String>,
    limit: usize,
    min_depth: u64,
) -> Result<Vec<Value>> {
    server
        .store
        .read(move |conn| {
            require_in_room(conn, room.as_str(), &origin)?;
            let ids = dag::missing_between(conn, room.as_str(), &earliest, &latest, limit)?;
            let mut found = Vec::new();
            for id in ids {
                if let Some(e) = events::get_room_event(conn, room.as_str(), &id)?
                    && e.pdu.depth >= min_depth
                {
                    found.push(e);
                }
            }
            found.sort_by_key(|e| (e.pdu.depth, e.stream_pos));
            let view = ServerView::of(conn, room.as_str(), &origin)?;
            found
                .iter()
                .map(|e| view.pdu(e))
                .collect::<Result<Vec<_>>>()
        })
        .await
}

/// # Event auth
/// The auth chain of `event` as PDUs, for `origin`.
pub async fn event_auth(
    server: &Server,
    origin: String,
    room: OwnedRoomId,
    event: OwnedEventId,
) -> Result<Vec<Value>> {
    server
        .store
        .read(move |conn| {
            require_in_room(conn, room.as_str(), &origin)?;
            let ids: Vec<String> = dag::auth_chain(conn, &[event.to_string()])?
                .into_iter()
                .collect();
            pdus_json(conn, &ids)
        })
        .await
}

/// # Profile
/// A local user's `(displayname, avatar_url)`; `M_NOT_FOUND` when there is no profile.
pub async fn profile(server: &Server, user: &UserId) -> Result<(Option<String>, Option<String>)> {
    let key = user.to_string();
    server
        .store
        .read(move |conn| crate::store::accounts::get_profile(conn, &key))
        .await?
        .map(|p| (p.displayname, p.avatar_url))
        .ok_or_else(|| Error::not_found("Profile not found"))
}

/// # Directory
/// The room a local alias points at; `M_NOT_FOUND` when none.
pub async fn alias(server: &Server, alias: String) -> Result<String> {
    let found = server
        .store
        .read(move |conn| misc::get_alias(conn, &alias))
        .await?;
    let found = found.ok_or_else(|| Error::not_found("Room alias not found"))?;
    Ok(found.room_id)
}

/// # Timestamp to event
/// The event of `room` closest to `ts` that this unit holds, for `origin`.
pub async fn closest_to_timestamp(
    server: &Server,
    origin: String,
    room: OwnedRoomId,
    ts: i64,
    forward: bool,
) -> Result<Option<events::TimestampMatch>> {
    server
        .store
        .read(move |conn| {
            require_in_room(conn, room.as_str(), &origin)?;
            events::closest_to_timestamp(conn, room.as_str(), ts, forward)
        })
        .await
}
