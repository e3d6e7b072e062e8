//! Reading a room's state as a user may see it (`/rooms/{roomId}/state[/{type}/{key}]`): the
//! current state for a member, the state when they left for a former member
//! ([`rooms::membership_access`]).

use ruma::{OwnedRoomId, UserId};
use serde_json::Value;

use super::Server;
use super::rooms::{self, Access};
use crate::error::{Error, Result};
use crate::store::{events, state};

/// Every state event of the room the user may see, in the client format.
pub async fn all(server: &Server, user: &UserId, room: OwnedRoomId) -> Result<Vec<Value>> {
    let user = user.to_string();
    server
        .store
        .read(move |conn| {
            let map = match rooms::membership_access(conn, room.as_str(), &user)? {
                Access::All => state::current_state(conn, room.as_str())?,
                Access::UpTo(pos) => {
                    match state::state_group_before(conn, room.as_str(), pos + 1)? {
                        Some(group) => state::state_at_group(conn, group)?,
                        None => Default::default(),
                    }
                }
            };
            let stored = rooms::load_state_events(conn, &map, |_, _| true)?;
            stored
                .iter()
                .map(|e| rooms::client_event(conn, e, None))
                .collect::<Result<Vec<_>>>()
        })
        .await
}

/// What `GET /rooms/{roomId}/state/{eventType}/{stateKey}` answers with (`?format=`, spec
/// v1.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateFormat {
    /// The event's content only (the default).
    #[default]
    Content,
    /// The whole event in the client format (event ID, sender, timestamp, unsigned…).
    Event,
}

/// One state event the user may see, as `format` says (`M_NOT_FOUND` when none).
pub async fn content(
    server: &Server,
    user: &UserId,
    room: OwnedRoomId,
    kind: String,
    key: String,
    format: StateFormat,
) -> Result<Value> {
    let user = user.to_string();
    server
        .store
        .read(move |conn| {
            let id = match rooms::membership_access(conn, room.as_str(), &user)? {
                Access::All => state::current_state_id(conn, room.as_str(), &kind, &key)?,
                Access::UpTo(pos) => {
                    match state::state_group_before(conn, room.as_str(), pos + 1)? {
                        Some(group) => state::state_entry_at_group(conn, group, &kind, &key)?,
                        None => None,
                    }
                }
            };
            let event = match id {
                Some(id) => events::get_event(conn, &id)?,
                None => None,
            };
            let event = event.ok_or_else(|| Error::not_found("Event not found"))?;
            match format {
                StateFormat::Content => Ok(event.pdu.content_value()),
                StateFormat::Event => rooms::client_event(conn, &event, None),
            }
        })
        .await
}
