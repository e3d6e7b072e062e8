//! A client's request to set room state (`PUT /rooms/{roomId}/state/...`), checked before the
//! event is built: what the room rules cannot say (no second `m.room.create`, valid
//! memberships, canonical aliases that point at the room) and which path it takes (a local
//! event, or an invite that another unit must countersign first).
//!
//! Both the state endpoint and delayed state events (MSC4140) go through here, so a delayed
//! event is checked exactly as an immediate one, at the time it is sent.

use ruma::events::TimelineEventType;
use ruma::{OwnedRoomAliasId, OwnedUserId, RoomId};
use serde_json::{Map, Value};

use super::Server;
use crate::error::{Error, ErrorCode, Result};
use crate::matrix::build::NewEvent;

/// How a checked state request is carried out.
pub enum StateRequest {
    /// An ordinary local state event.
    Local(NewEvent),
    /// An invite of a user on another unit: that unit countersigns it first
    /// (`service::federation::invite_remote`), which is why
    /// `service::federation::invites::carry_out` carries checked requests out.
    RemoteInvite {
        /// Who is invited.
        target: OwnedUserId,
        /// `is_direct` from the content.
        is_direct: bool,
    },
}

/// Checks a state request in `room` and says how to carry it out.
pub async fn check(
    server: &Server,
    room: &RoomId,
    kind: String,
    key: String,
    content: Map<String, Value>,
) -> Result<StateRequest> {
    if kind == "m.room.create" {
        return Err(Error::forbidden(
            "m.room.create cannot be sent after room creation",
        ));
    }
    if kind == "m.room.member" {
        let target = OwnedUserId::try_from(key.as_str()).map_err(|_| {
            Error::invalid_param(format!("{key:?} is not a valid user ID for a member event"))
        })?;
        super::require_allowed_user(server, &target)?;
        if target.server_name() != server.server_name()
            && content.get("membership").and_then(Value::as_str) == Some("invite")
        {
            let is_direct = content
                .get("is_direct")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            return Ok(StateRequest::RemoteInvite { target, is_direct });
        }
        let membership = content
            .get("membership")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !matches!(membership, "join" | "leave" | "invite" | "ban" | "knock") {
            return Err(Error::bad_json("m.room.member needs a valid membership"));
        }
    }
    if kind == "m.room.canonical_alias" {
        check_canonical_alias(server, room, &content).await?;
    }
    Ok(StateRequest::Local(NewEvent::state(
        TimelineEventType::from(kind),
        key,
        Value::Object(content),
    )))
}

/// Spec: a canonical alias must be an alias (`M_INVALID_PARAM`) and point at this room
/// (`M_BAD_ALIAS`, checked for aliases of this unit, the only ones we can resolve).
async fn check_canonical_alias(
    server: &Server,
    room: &RoomId,
    content: &Map<String, Value>,
) -> Result<()> {
    let mut aliases: Vec<String> = content
        .get("alias")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .into_iter()
        .collect();
    match content.get("alt_aliases") {
        None => {}
        Some(Value::Array(alt)) => {
            for entry in alt {
                let alias = entry.as_str().ok_or_else(|| {
                    Error::invalid_param(format!("alt_aliases entry {entry} is not a string"))
                })?;
                aliases.push(alias.to_owned());
            }
        }
        Some(other) => {
            return Err(Error::invalid_param(format!(
                "alt_aliases must be a list of aliases, not {other}"
            )));
        }
    }
    for alias in aliases {
        let parsed = OwnedRoomAliasId::try_from(alias.as_str()).map_err(|_| {
            Error::new(
                ErrorCode::InvalidParam,
                format!("{alias:?} is not a valid alias"),
            )
        })?;
        if parsed.server_name() != server.server_name() {
            continue;
        }
        let target = server
            .store
            .read(move |conn| crate::store::misc::get_alias(conn, &alias))
            .await?;
        if target.map(|t| t.room_id) != Some(room.to_string()) {
            return Err(Error::new(
                ErrorCode::BadAlias,
                format!("Alias {parsed} does not point to this room"),
            ));
        }
    }
    Ok(())
}
