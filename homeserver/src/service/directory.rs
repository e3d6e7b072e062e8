//! The local public room directory (`/publicRooms`), one listing for the client API and for
//! other units over federation.
//!
//! Pages are offsets into the directory in a stable order, handed out as opaque tokens
//! (`d<offset>`), so a client cannot mistake one for a number it may do arithmetic on; a
//! `since` that is not such a token is 400 `M_INVALID_PARAM`.
//!
//! Application services keep lists of their own, one per third-party network
//! (`appservice_room_list`); a client reads them with `third_party_instance_id` (one
//! network) or `include_all_networks` (the unit's directory and every list). A network's
//! instance ID is `<appservice id>|<network id>` (what `/thirdparty/protocols` answers and
//! what Synapse uses); a bare network ID selects that network of every appservice.

use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::Value;

use rusqlite::Connection;

use super::Server;
use crate::error::{Error, Result};
use crate::matrix::wire::{PublicRoomsChunk, PublicRoomsResponse};
use crate::store::{events, state};

/// Entries on a page when the request sets no limit, and the most on one page.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 500;

/// What a directory page asks for.
#[derive(Debug, Clone, Default)]
pub struct DirectoryQuery {
    /// Most entries to return.
    pub limit: Option<usize>,
    /// A `next_batch` or `prev_batch` token of an earlier page.
    pub since: Option<String>,
    /// Only rooms whose name, topic or canonical alias contain this (case-insensitive).
    pub term: Option<String>,
}

/// The token of the page starting at `offset`.
fn token(offset: usize) -> String {
    format!("d{offset}")
}

/// The offset a `since` token names.
fn parse_since(raw: &str) -> Result<usize> {
    raw.strip_prefix('d')
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| Error::invalid_param(format!("Invalid since token {raw:?}")))
}

/// Which published directories a `/publicRooms` page lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Networks {
    /// The unit's own directory (the default).
    #[default]
    Main,
    /// The unit's own directory and every appservice list (`include_all_networks`).
    All,
    /// One third-party network's lists (`third_party_instance_id`).
    Instance(String),
}

impl Networks {
    /// Whether the list of `appservice` for `network` is one of these.
    fn includes(&self, appservice: &str, network: &str) -> bool {
        match self {
            Self::Main => false,
            Self::All => true,
            Self::Instance(id) => match id.split_once('|') {
                Some((a, n)) => a == appservice && n == network,
                None => id == network,
            },
        }
    }
}

/// One page of this unit's public rooms (spec: `PublicRoomsResponse`).
pub async fn local_public_rooms(
    server: &Server,
    query: DirectoryQuery,
) -> Result<PublicRoomsResponse> {
    local_public_rooms_in(server, query, Networks::Main).await
}

/// One page of the rooms published in `networks`: the unit's own directory and the lists of
/// registered appservices (rooms in several lists are listed once).
pub async fn local_public_rooms_in(
    server: &Server,
    query: DirectoryQuery,
    networks: Networks,
) -> Result<PublicRoomsResponse> {
    let registered: Vec<String> = server
        .appservices
        .all()
        .iter()
        .map(|r| r.id.clone())
        .collect();
    let offset = query
        .since
        .as_deref()
        .map(parse_since)
        .transpose()?
        .unwrap_or(0);
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let term = query.term.map(|t| t.to_lowercase());
    let all = server
        .store
        .read(move |conn| {
            let mut rooms = match networks {
                Networks::Instance(_) => Vec::new(),
                Networks::Main | Networks::All => state::public_rooms(conn)?,
            };
            let mut seen: std::collections::HashSet<String> = rooms.iter().cloned().collect();
            for listing in state::appservice_room_lists(conn)? {
                if registered.contains(&listing.appservice_id)
                    && networks.includes(&listing.appservice_id, &listing.network_id)
                    && seen.insert(listing.room_id.clone())
                {
                    rooms.push(listing.room_id);
                }
            }
            let mut out = Vec::new();
            for room in rooms {
                let summary = room_summary(conn, &room)?;
                let matches = term.as_ref().is_none_or(|t| {
                    [&summary.name, &summary.topic, &summary.canonical_alias]
                        .into_iter()
                        .any(|v| v.as_ref().is_some_and(|v| v.to_lowercase().contains(t)))
                });
                if matches {
                    out.push(summary);
                }
            }
            Ok(out)
        })
        .await?;
    let total = all.len();
    let chunk = all.into_iter().skip(offset).take(limit).collect();
    Ok(PublicRoomsResponse {
        chunk,
        next_batch: (offset.saturating_add(limit) < total).then(|| token(offset + limit)),
        prev_batch: (offset > 0).then(|| token(offset.saturating_sub(limit))),
        total_room_count_estimate: Some(total as u64),
    })
}

/// The content of a room's current `kind` state event with an empty state key (`Null` when
/// there is none).
pub fn state_content(conn: &Connection, room: &str, kind: &str) -> Result<Value> {
    Ok(match state::current_state_id(conn, room, kind, "")? {
        Some(id) => events::get_event(conn, &id)?
            .map(|e| e.pdu.content_value())
            .unwrap_or_default(),
        None => Value::Null,
    })
}

/// A room's public summary (spec: `PublishedRoomsChunk`), as the public room directory lists
/// it and as both hierarchy endpoints start from, so all three describe a room alike.
pub fn room_summary(conn: &Connection, room: &str) -> Result<PublicRoomsChunk> {
    // The string field `field` of the room's `kind` state content, when it is a string.
    let text = |kind: &str, field: &str| -> Result<Option<String>> {
        Ok(state_content(conn, room, kind)?
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_owned))
    };
    let history = text("m.room.history_visibility", "history_visibility")?;
    let guest = text("m.room.guest_access", "guest_access")?;
    Ok(PublicRoomsChunk {
        room_id: RoomId::parse(room)
            .map_err(|e| Error::internal(format!("stored room ID {room:?}: {e}")))?,
        num_joined_members: state::members_with(conn, room, "join")?.len() as u64,
        world_readable: history.as_deref() == Some("world_readable"),
        guest_can_join: guest.as_deref() == Some("can_join"),
        canonical_alias: text("m.room.canonical_alias", "alias")?,
        name: text("m.room.name", "name")?,
        topic: text("m.room.topic", "topic")?,
        avatar_url: text("m.room.avatar", "url")?,
        join_rule: Some(
            text("m.room.join_rules", "join_rule")?.unwrap_or_else(|| "invite".to_owned()),
        ),
        room_type: text("m.room.create", "type")?,
    })
}

/// Whether a room is listed in this unit's directory (`M_NOT_FOUND` for an unknown room).
pub async fn is_public(server: &Server, room: OwnedRoomId) -> Result<bool> {
    let row = server
        .store
        .read(move |conn| state::get_room(conn, room.as_str()))
        .await?;
    Ok(row
        .ok_or_else(|| Error::not_found("Room not found"))?
        .is_public)
}

/// Lists or unlists a room in an application service's list for `network_id` (the
/// appservice's token is the whole authorisation, as the spec says); `M_NOT_FOUND` for a
/// room this unit does not have.
pub async fn set_appservice_listed(
    server: &Server,
    appservice_id: String,
    network_id: String,
    room: OwnedRoomId,
    listed: bool,
) -> Result<()> {
    server
        .store
        .write(move |tx| {
            if state::get_room(tx, room.as_str())?.is_none() {
                return Err(Error::not_found("Room not found"));
            }
            state::set_appservice_room_listed(
                tx,
                &appservice_id,
                &network_id,
                room.as_str(),
                listed,
            )
        })
        .await
}

/// Lists or unlists a room; whoever may set its `m.room.canonical_alias` may.
pub async fn set_public(
    server: &Server,
    user: &UserId,
    room: OwnedRoomId,
    public: bool,
) -> Result<()> {
    let user = user.to_string();
    server
        .store
        .write(move |tx| {
            if state::get_room(tx, room.as_str())?.is_none() {
                return Err(Error::not_found("Room not found"));
            }
            let power = state::power_levels(tx, room.as_str())?;
            if power.user_level(&user) < power.state_level("m.room.canonical_alias") {
                return Err(Error::forbidden(
                    "You may not change this room's directory visibility",
                ));
            }
            state::set_room_public(tx, room.as_str(), public)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_numbers_are_refused() {
        assert_eq!(parse_since(&token(0)).expect("d0"), 0);
        assert_eq!(parse_since(&token(250)).expect("d250"), 250);
        for bad in [
            "",
            "d",
            "5",
            "-1",
            "d-1",
            "d+1",
            "d1x",
            "x5",
            "d99999999999999999999999",
        ] {
            assert!(parse_since(bad).is_err(), "{bad:?}");
        }
    }
}
