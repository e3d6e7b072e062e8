//! Membership: join, knock, leave, forget, invite, kick, ban, unban, and member lists. The
//! state machine is `service::membership`'s, the local / remote routing
//! `service::federation::route`'s.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::client::wire::{Chunk, Empty, RoomIdResponse};
use crate::api::extract::{Auth, JsonBody, PathParams, QueryParams, RawQuery, room_id, user_id};
use crate::error::{Error, Result};
use crate::service::Server;
use crate::service::federation::route;
use crate::service::membership::{self, Action, JoinedMember, MembersFilter};
use crate::service::tokens::PageToken;

/// `{"joined_rooms": […]}`.
#[derive(Serialize)]
pub struct JoinedRooms {
    joined_rooms: Vec<String>,
}

/// # `GET /_matrix/client/v3/joined_rooms`
pub async fn joined_rooms(
    State(server): State<Arc<Server>>,
    auth: Auth,
) -> Result<Json<JoinedRooms>> {
    let joined_rooms = membership::joined_rooms(&server, &auth.user_id).await?;
    Ok(Json(JoinedRooms { joined_rooms }))
}

#[derive(Deserialize, Default)]
pub struct ReasonBody {
    reason: Option<String>,
}

/// The servers a client names for a join (`via`, or the older `server_name`), from the query.
fn via_servers(query: &RawQuery) -> Vec<String> {
    query
        .pairs()
        .filter(|(k, _)| k == "via" || k == "server_name")
        .map(|(_, v)| v.clone())
        .collect()
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/join`
pub async fn join_room(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    query: RawQuery,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Json<RoomIdResponse>> {
    let room = room_id(&room)?;
    route::join(
        &server,
        auth.user_id,
        room.clone(),
        body.reason,
        via_servers(&query),
    )
    .await?;
    Ok(Json(RoomIdResponse { room_id: room }))
}

/// # `POST /_matrix/client/v3/join/{roomIdOrAlias}`
pub async fn join_by_id_or_alias(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(target): PathParams<String>,
    query: RawQuery,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Json<RoomIdResponse>> {
    let room_id = route::join_target(
        &server,
        auth.user_id,
        &target,
        body.reason,
        via_servers(&query),
    )
    .await?;
    Ok(Json(RoomIdResponse { room_id }))
}

/// # `POST /_matrix/client/v3/knock/{roomIdOrAlias}`
/// Asks to be let into a room whose join rule is `knock` (or `knock_restricted`). A room held
/// only by other units is knocked on over federation, through the allow-listed servers named
/// by `via` / `server_name` (or the alias's server); other servers are refused without being
/// contacted.
pub async fn knock(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(target): PathParams<String>,
    query: RawQuery,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Json<RoomIdResponse>> {
    let room_id = route::knock(
        &server,
        auth.user_id,
        &target,
        body.reason,
        via_servers(&query),
    )
    .await?;
    Ok(Json(RoomIdResponse { room_id }))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/leave`
pub async fn leave(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    query: RawQuery,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Json<Empty>> {
    let room = room_id(&room)?;
    route::leave(
        &server,
        auth.user_id,
        room,
        body.reason,
        via_servers(&query),
    )
    .await?;
    Ok(Json(Empty {}))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/forget`
pub async fn forget(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
) -> Result<Json<Empty>> {
    membership::forget(&server, &auth.user_id, room_id(&room)?).await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize)]
pub struct TargetBody {
    user_id: String,
    reason: Option<String>,
}

async fn act_on(
    server: &Server,
    auth: Auth,
    room: &str,
    body: TargetBody,
    action: Action,
) -> Result<Json<Empty>> {
    let room = room_id(room)?;
    let target = user_id(&body.user_id)?;
    route::act(server, auth.user_id, room, target, body.reason, action).await?;
    Ok(Json(Empty {}))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/invite`
pub async fn invite(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Empty>> {
    membership::refuse_third_party_invite(&body)?;
    let body: TargetBody =
        serde_json::from_value(body).map_err(|err| Error::bad_json(err.to_string()))?;
    act_on(&server, auth, &room, body, Action::Invite).await
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/kick`
/// A leave over a ban is an unban in the auth rules; `/kick` refuses it (unban instead).
pub async fn kick(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    JsonBody(body): JsonBody<TargetBody>,
) -> Result<Json<Empty>> {
    act_on(&server, auth, &room, body, Action::Kick).await
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/ban`
pub async fn ban(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    JsonBody(body): JsonBody<TargetBody>,
) -> Result<Json<Empty>> {
    act_on(&server, auth, &room, body, Action::Ban).await
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/unban`
pub async fn unban(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    JsonBody(body): JsonBody<TargetBody>,
) -> Result<Json<Empty>> {
    act_on(&server, auth, &room, body, Action::Unban).await
}

#[derive(Deserialize)]
pub struct MembersQuery {
    membership: Option<String>,
    not_membership: Option<String>,
    at: Option<String>,
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/members`
pub async fn members(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    QueryParams(q): QueryParams<MembersQuery>,
) -> Result<Json<Chunk<Box<serde_json::value::RawValue>>>> {
    let room = room_id(&room)?;
    let filter = MembersFilter {
        membership: q.membership,
        not_membership: q.not_membership,
        at: q
            .at
            .as_deref()
            .map(PageToken::parse)
            .transpose()?
            .map(PageToken::position),
    };
    let chunk = membership::members(&server, &auth.user_id, room, filter).await?;
    Ok(Json(Chunk { chunk }))
}

/// `{"joined": {user: {display_name, avatar_url}}}`.
#[derive(Serialize)]
pub struct JoinedMembers {
    joined: BTreeMap<String, JoinedMember>,
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/joined_members`
pub async fn joined_members(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
) -> Result<Json<JoinedMembers>> {
    let joined = membership::joined_members(&server, &auth.user_id, room_id(&room)?).await?;
    Ok(Json(JoinedMembers { joined }))
}
