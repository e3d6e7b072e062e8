//! A client's request to set room state (`PUT /rooms/{roomId}/state/...`), checked before the
//! event is built: what the room rules cannot say (no second `m.room.create`, valid
//! memberships, canonical aliases that point at the room) and which path it takes (a local
//! event, or an invite that another unit must countersign first).
//!
//! Both the state endpoint and delayed state events (MSC4140) go through here, so a delayed
//! event is checked exactly as an immediate one, at the time it is sent.

use ruma::events::TimelineEventType;
use ruma::{OwnedRoomAliasId, OwnedUserId, RoomId};
use serde::Deserialize;
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
        let member = MemberFields::deserialize(&content)
            .map_err(|err| Error::bad_json(format!("m.room.member content: {err}")))?;
        if !matches!(
            member.membership.as_str(),
            "join" | "leave" | "invite" | "ban" | "knock"
        ) {
            return Err(Error::bad_json("m.room.member needs a valid membership"));
        }
        if target.server_name() != server.server_name() && member.membership == "invite" {
            return Ok(StateRequest::RemoteInvite {
                target,
                is_direct: member.is_direct.unwrap_or(false),
            });
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

/// The fields of an `m.room.member` content this check reads (`membership` required).
#[derive(Deserialize)]
struct MemberFields {
    /// `join`, `leave`, `invite`, `ban` or `knock`.
    membership: String,
    /// Whether an invite starts a direct chat; `null` reads as absent.
    #[serde(default)]
    is_direct: Option<bool>,
}

/// The fields of an `m.room.canonical_alias` content (both optional; `null` reads as absent).
#[derive(Deserialize)]
struct CanonicalAliasFields {
    /// The canonical alias.
    #[serde(default)]
    alias: Option<String>,
    /// Other aliases that point at the room.
    #[serde(default)]
    alt_aliases: Option<Vec<String>>,
}

/// Spec: a canonical alias must be an alias (`M_INVALID_PARAM`) and point at this room
/// (`M_BAD_ALIAS`, checked for aliases of this unit, the only ones we can resolve).
async fn check_canonical_alias(
    server: &Server,
    room: &RoomId,
    content: &Map<String, Value>,
) -> Result<()> {
    let fields = CanonicalAliasFields::deserialize(content)
        .map_err(|err| Error::invalid_param(format!("m.room.canonical_alias content: {err}")))?;
    let aliases = fields
        .alias
        .into_iter()
        .chain(fields.alt_aliases.into_iter().flatten());
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
