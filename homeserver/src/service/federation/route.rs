//! The client operations that may reach another unit, routed: each asks whether the room,
//! alias, profile or directory is this unit's, and calls the domain service for it, or the
//! federation flow for another unit's. The client handlers call these; the domain services
//! they wrap never import federation behaviour (the layering test keeps it so). `/createRoom`
//! and state requests with a remote invite are routed the same way in [`super::invites`].

use ruma::{DeviceId, OwnedRoomAliasId, OwnedRoomId, OwnedUserId, UserId};

use super::{
    backfill, invite_remote_checked, join_candidates, join_remote, reject_remote_invite,
    remote_profile, remote_public_rooms, resolve_remote_alias,
};
use crate::error::{Error, Result};
use crate::matrix::wire::PublicRoomsResponse;
use crate::service::aliases::{self, Resolved};
use crate::service::directory::{self, DirectoryQuery};
use crate::service::membership::{self, Action};
use crate::service::timeline::{self, MessagesPage, MessagesQuery};
use crate::service::{Server, profile, require_allowed_user};

/// Resolves an alias: this unit's from the database (`M_NOT_FOUND` when none), another unit's
/// through `query/directory` on that unit.
pub async fn resolve_alias(server: &Server, alias: &OwnedRoomAliasId) -> Result<Resolved> {
    if alias.server_name() != server.server_name() {
        let (room_id, servers) = resolve_remote_alias(server, alias).await?;
        return Ok(Resolved { room_id, servers });
    }
    aliases::resolve(server, alias).await
}

/// A user's `(displayname, avatar_url)`: a local user's from the database, another unit's
/// user's asked of their unit.
pub async fn profile(server: &Server, user: &UserId) -> Result<(Option<String>, Option<String>)> {
    if user.server_name() != server.server_name() {
        return remote_profile(server, user).await;
    }
    profile::load(server, user).await
}

/// One page of the public rooms of this unit, or of `remote` (another unit, asked over
/// federation).
pub async fn public_rooms(
    server: &Server,
    query: DirectoryQuery,
    remote: Option<String>,
) -> Result<PublicRoomsResponse> {
    if let Some(remote) = remote
        && remote != server.server_name().as_str()
    {
        return remote_public_rooms(server, &remote, query.limit, query.since, query.term).await;
    }
    directory::local_public_rooms(server, query).await
}

/// `/messages` ([`timeline::messages`]); a backwards page that reaches the start of the
/// history this unit holds (a room joined through another unit) fetches older events from a
/// peer and is asked again.
pub async fn messages(
    server: &Server,
    user: &UserId,
    device: Option<&DeviceId>,
    room: OwnedRoomId,
    q: MessagesQuery,
) -> Result<MessagesPage> {
    let current = server.store.current_pos();
    let body = timeline::messages(server, user, device, room.clone(), &q, current).await?;
    if q.backwards() && body.end.is_none() && backfill(server, &room, q.limit().max(20)).await? > 0
    {
        return timeline::messages(server, user, device, room, &q, current).await;
    }
    Ok(body)
}

/// Joins `room`: locally when this unit participates in it, otherwise through an allow-listed
/// peer (`via`, then what we know of the room).
pub async fn join(
    server: &Server,
    user: OwnedUserId,
    room: OwnedRoomId,
    reason: Option<String>,
    via: Vec<String>,
) -> Result<()> {
    if !membership::participating(server, &room).await? {
        let candidates = join_candidates(server, &room, &user, via).await?;
        return join_remote(server, room, user, candidates).await;
    }
    membership::join(server, user, room, reason).await
}

/// Joins the room a `{roomIdOrAlias}` path names; returns its ID.
pub async fn join_target(
    server: &Server,
    user: OwnedUserId,
    target: &str,
    reason: Option<String>,
    mut via: Vec<String>,
) -> Result<OwnedRoomId> {
    let room = room_of_target(server, target, &mut via).await?;
    join(server, user, room.clone(), reason, via).await?;
    Ok(room)
}

/// Knocks on the room a `{roomIdOrAlias}` path names (join rule `knock` or
/// `knock_restricted`; the auth rules refuse a knock anywhere else). A room held only by other
/// units is knocked on over federation through the allow-listed servers of `via` (or the
/// alias's server). Returns the room's ID.
pub async fn knock(
    server: &Server,
    user: OwnedUserId,
    target: &str,
    reason: Option<String>,
    mut via: Vec<String>,
) -> Result<OwnedRoomId> {
    let room = room_of_target(server, target, &mut via).await?;
    if !membership::participating(server, &room).await? {
        // The same servers a remote join would try; only allow-listed peers survive.
        let candidates = join_candidates(server, &room, &user, via).await?;
        super::knock::knock_remote(server, room.clone(), user, reason, candidates).await?;
        return Ok(room);
    }
    membership::knock(server, user, room.clone(), reason).await?;
    Ok(room)
}

/// The room a `{roomIdOrAlias}` path names. A remote alias is resolved through its server,
/// whose answer adds to `via` the servers that can be joined or knocked through.
async fn room_of_target(
    server: &Server,
    target: &str,
    via: &mut Vec<String>,
) -> Result<OwnedRoomId> {
    if !target.starts_with('#') {
        return membership::parse_room(target);
    }
    let alias = OwnedRoomAliasId::try_from(target)
        .map_err(|_| Error::invalid_param(format!("{target:?} is not a valid room alias")))?;
    let found = resolve_alias(server, &alias).await?;
    if alias.server_name() != server.server_name() {
        via.extend(found.servers);
    }
    Ok(found.room_id)
}

/// Leaves `room`. In a room held by other units this rescinds a knock or rejects an invite,
/// through a resident server (`via`) or the inviter's unit.
pub async fn leave(
    server: &Server,
    user: OwnedUserId,
    room: OwnedRoomId,
    reason: Option<String>,
    via: Vec<String>,
) -> Result<()> {
    if !membership::participating(server, &room).await? {
        if super::knock::has_remote_knock(server, &room, &user).await? {
            super::knock::rescind_remote_knock(server, room, user, via).await?;
        } else {
            reject_remote_invite(server, room, user).await?;
        }
        return Ok(());
    }
    membership::leave(server, user, room, reason).await
}

/// A member's invite, kick, ban or unban of `target`. An invite of a user on another unit goes
/// over federation, its precondition checked in the transaction that builds the invite;
/// everything else is [`membership::act`].
pub async fn act(
    server: &Server,
    sender: OwnedUserId,
    room: OwnedRoomId,
    target: OwnedUserId,
    reason: Option<String>,
    action: Action,
) -> Result<()> {
    if action == Action::Invite && target.server_name() != server.server_name() {
        require_allowed_user(server, &target)?;
        let (room_c, sender_c, target_c) = (room.to_string(), sender.to_string(), target.clone());
        invite_remote_checked(server, room, sender, target, false, move |tx| {
            membership::check_in_tx(tx, &room_c, &sender_c, &target_c, action, false)
        })
        .await?;
        return Ok(());
    }
    membership::act(server, sender, room, target, reason, action).await
}
