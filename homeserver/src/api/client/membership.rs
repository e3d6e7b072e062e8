//! Membership: join, knock, leave, forget, invite, kick, ban, unban, and member lists; joins,
//! knocks and leaves of rooms held by other units go through `service::federation`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use ruma::{OwnedRoomId, OwnedUserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::extract::{Auth, JsonBody, PathParams, QueryParams, room_id, user_id};
use crate::error::{Error, Result};
use crate::service::Server;
use crate::service::rooms::{self, Access};
use crate::store::{events, misc, state};

/// # `GET /_matrix/client/v3/joined_rooms`
pub async fn joined_rooms(State(server): State<Arc<Server>>, auth: Auth) -> Result<Json<Value>> {
    let user = auth.user_id.to_string();
    let rooms = server
        .store
        .read(move |conn| state::rooms_with_membership(conn, &user, "join"))
        .await?;
    Ok(Json(json!({"joined_rooms": rooms})))
}

#[derive(Deserialize, Default)]
pub struct ReasonBody {
    reason: Option<String>,
}

async fn join(
    server: &Server,
    auth: Auth,
    room: OwnedRoomId,
    reason: Option<String>,
    via: Vec<String>,
) -> Result<Json<Value>> {
    let key = room.to_string();
    let participating = server
        .store
        .read(move |conn| crate::store::dag::participating(conn, &key))
        .await?;
    if !participating {
        // A room held by other units: join through an allow-listed peer.
        let candidates =
            crate::service::federation::join_candidates(server, &room, &auth.user_id, via).await?;
        crate::service::federation::join_remote(server, room.clone(), auth.user_id, candidates)
            .await?;
        return Ok(Json(json!({"room_id": room})));
    }
    rooms::set_membership(
        server,
        room.clone(),
        auth.user_id.clone(),
        auth.user_id,
        "join",
        reason,
        Map::new(),
    )
    .await?;
    Ok(Json(json!({"room_id": room})))
}

/// The servers a client names for a join (`via`, or the older `server_name`), from the query.
fn via_servers(uri: &axum::http::Uri) -> Vec<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(uri.query().unwrap_or_default())
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k == "via" || k == "server_name")
        .map(|(_, v)| v)
        .collect()
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/join`
pub async fn join_room(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    uri: axum::http::Uri,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Json<Value>> {
    join(
        &server,
        auth,
        room_id(&room)?,
        body.reason,
        via_servers(&uri),
    )
    .await
}

/// # `POST /_matrix/client/v3/join/{roomIdOrAlias}`
pub async fn join_by_id_or_alias(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(target): PathParams<String>,
    uri: axum::http::Uri,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Json<Value>> {
    let mut via = via_servers(&uri);
    let room = room_of_target(&server, &target, &mut via).await?;
    join(&server, auth, room, body.reason, via).await
}

/// The room a `{roomIdOrAlias}` path names. A remote alias is resolved through its server,
/// whose answer adds to `via` the servers that can be joined or knocked through.
async fn room_of_target(
    server: &Server,
    target: &str,
    via: &mut Vec<String>,
) -> Result<OwnedRoomId> {
    if !target.starts_with('#') {
        return room_id(target);
    }
    let alias = ruma::OwnedRoomAliasId::try_from(target)
        .map_err(|_| Error::invalid_param(format!("{target:?} is not a valid room alias")))?;
    if alias.server_name() == server.server_name() {
        return local_alias(server, alias.as_str()).await;
    }
    let (room, servers) = crate::service::federation::resolve_remote_alias(server, &alias).await?;
    via.extend(servers);
    Ok(room)
}

/// The room a local alias points at; `M_NOT_FOUND` when none.
async fn local_alias(server: &Server, alias: &str) -> Result<OwnedRoomId> {
    let key = alias.to_owned();
    let found = server
        .store
        .read(move |conn| misc::get_alias(conn, &key))
        .await?;
    let (room, _) =
        found.ok_or_else(|| Error::not_found(format!("Room alias {alias} not found")))?;
    room_id(&room)
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/leave`
pub async fn leave(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    uri: axum::http::Uri,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Json<Value>> {
    let room = room_id(&room)?;
    let key = room.to_string();
    let participating = server
        .store
        .read(move |conn| crate::store::dag::participating(conn, &key))
        .await?;
    if !participating {
        if crate::service::federation::knock::has_remote_knock(&server, &room, &auth.user_id)
            .await?
        {
            // Rescinding a knock on another unit's room: the leave goes through a resident.
            crate::service::federation::knock::rescind_remote_knock(
                &server,
                room,
                auth.user_id,
                via_servers(&uri),
            )
            .await?;
            return Ok(Json(json!({})));
        }
        // Rejecting an invite from another unit: the leave goes through the inviter's unit.
        crate::service::federation::reject_remote_invite(&server, room, auth.user_id).await?;
        return Ok(Json(json!({})));
    }
    rooms::set_membership(
        &server,
        room,
        auth.user_id.clone(),
        auth.user_id,
        "leave",
        body.reason,
        Map::new(),
    )
    .await?;
    Ok(Json(json!({})))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/forget`
pub async fn forget(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
) -> Result<Json<Value>> {
    let room = room_id(&room)?;
    let user = auth.user_id.to_string();
    server
        .store
        .write(
            move |tx| match state::membership(tx, room.as_str(), &user)?.as_deref() {
                Some("join") | Some("invite") | Some("knock") => Err(Error::bad_json(
                    "You must leave the room before forgetting it",
                )),
                None => Err(Error::not_found("You are not a member of this room")),
                Some(_) => state::set_forgotten(tx, &user, room.as_str(), true),
            },
        )
        .await?;
    Ok(Json(json!({})))
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
    membership: &'static str,
) -> Result<Json<Value>> {
    let room = room_id(room)?;
    let target: OwnedUserId = user_id(&body.user_id)?;
    crate::service::federation::require_allowed_user(server, &target)?;
    if membership == "invite" {
        let key = room.to_string();
        let me = auth.user_id.to_string();
        let them = target.to_string();
        let local = target.server_name() == server.server_name();
        let current = server
            .store
            .read(move |conn| {
                Ok((
                    state::membership(conn, &key, &me)?,
                    state::membership(conn, &key, &them)?,
                    local && crate::store::accounts::get_user(conn, &them)?.is_none(),
                ))
            })
            .await?;
        if current.0.as_deref() != Some("join") {
            return Err(Error::forbidden("You are not joined to this room"));
        }
        // Deviation: the spec documents no 404 for /invite, but an invite to a local user who
        // does not exist would be an event nobody can ever act on; M_NOT_FOUND says why.
        if current.2 {
            return Err(Error::not_found(format!(
                "{target} does not exist on this unit"
            )));
        }
        if current.1.as_deref() == Some("join") {
            return Err(Error::forbidden(format!("{target} is already in the room")));
        }
        if target.server_name() != server.server_name() {
            crate::service::federation::invite_remote(server, room, auth.user_id, target, false)
                .await?;
            return Ok(Json(json!({})));
        }
    }
    if membership == "leave" {
        // unban: only from ban; kick: only from join/invite/knock (auth rules check power).
        let key = room.to_string();
        let them = target.to_string();
        let current = server
            .store
            .read(move |conn| state::membership(conn, &key, &them))
            .await?;
        if current.is_none() || current.as_deref() == Some("leave") {
            return Err(Error::forbidden(format!(
                "{target} is not a member of this room"
            )));
        }
    }
    rooms::set_membership(
        server,
        room,
        auth.user_id,
        target,
        membership,
        body.reason,
        Map::new(),
    )
    .await?;
    Ok(Json(json!({})))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/invite`
pub async fn invite(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>> {
    if body.get("id_server").is_some() || body.get("medium").is_some() {
        return Err(Error::new(
            crate::error::ErrorCode::ThreepidDenied,
            "Third-party invites are not available on this unit",
        ));
    }
    let body: TargetBody =
        serde_json::from_value(body).map_err(|err| Error::bad_json(err.to_string()))?;
    act_on(&server, auth, &room, body, "invite").await
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/kick`
pub async fn kick(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    JsonBody(body): JsonBody<TargetBody>,
) -> Result<Json<Value>> {
    // A leave over a ban is an unban in the auth rules; `/kick` must not unban by the back door.
    let key = room_id(&room)?.to_string();
    let them = body.user_id.clone();
    let current = server
        .store
        .read(move |conn| state::membership(conn, &key, &them))
        .await?;
    if current.as_deref() == Some("ban") {
        return Err(Error::forbidden(format!(
            "{} is banned; unban them instead of kicking",
            body.user_id
        )));
    }
    act_on(&server, auth, &room, body, "leave").await
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/ban`
pub async fn ban(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    JsonBody(body): JsonBody<TargetBody>,
) -> Result<Json<Value>> {
    act_on(&server, auth, &room, body, "ban").await
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/unban`
pub async fn unban(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    JsonBody(body): JsonBody<TargetBody>,
) -> Result<Json<Value>> {
    let room_key = body.user_id.clone();
    let room_parsed = room_id(&room)?;
    let key = room_parsed.to_string();
    let current = server
        .store
        .read(move |conn| state::membership(conn, &key, &room_key))
        .await?;
    if current.as_deref() != Some("ban") {
        return Err(Error::forbidden(format!("{} is not banned", body.user_id)));
    }
    act_on(&server, auth, &room, body, "leave").await
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
) -> Result<Json<Value>> {
    let room = room_id(&room)?;
    let user = auth.user_id.to_string();
    let at = match &q.at {
        Some(token) => Some(crate::api::client::messages::parse_position(token)?),
        None => None,
    };
    let chunk = server
        .store
        .read(move |conn| {
            let visible = rooms::membership_access(conn, room.as_str(), &user)?;
            let limit = match (visible, at) {
                (Access::All, None) => None,
                (Access::All, Some(pos)) => Some(pos),
                (Access::UpTo(max), Some(pos)) => Some(pos.min(max)),
                (Access::UpTo(max), None) => Some(max),
            };
            let map = match limit {
                None => state::current_state(conn, room.as_str())?,
                Some(pos) => match state::state_group_before(conn, room.as_str(), pos + 1)? {
                    Some(group) => state::state_at_group(conn, group)?,
                    None => Default::default(),
                },
            };
            let members = rooms::load_state_events(conn, &map, |kind, _| kind == "m.room.member")?;
            let mut out = Vec::new();
            for event in members {
                let membership = event
                    .pdu
                    .content_value()
                    .get("membership")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if q.membership.as_ref().is_some_and(|m| *m != membership)
                    || q.not_membership.as_ref().is_some_and(|m| *m == membership)
                {
                    continue;
                }
                out.push(rooms::client_event(conn, &event, None)?);
            }
            Ok(out)
        })
        .await?;
    Ok(Json(json!({"chunk": chunk})))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/joined_members`
pub async fn joined_members(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
) -> Result<Json<Value>> {
    let room = room_id(&room)?;
    let user = auth.user_id.to_string();
    let joined = server
        .store
        .read(move |conn| {
            if state::membership(conn, room.as_str(), &user)?.as_deref() != Some("join") {
                return Err(Error::forbidden("You are not joined to this room"));
            }
            let mut joined = Map::new();
            for member in state::members_with(conn, room.as_str(), "join")? {
                let content =
                    match state::current_state_id(conn, room.as_str(), "m.room.member", &member)? {
                        Some(id) => events::get_event(conn, &id)?
                            .map(|e| e.pdu.content_value())
                            .unwrap_or_default(),
                        None => Value::Null,
                    };
                joined.insert(
                    member,
                    json!({
                        "display_name": content.get("displayname"),
                        "avatar_url": content.get("avatar_url"),
                    }),
                );
            }
            Ok(joined)
        })
        .await?;
    Ok(Json(json!({"joined": joined})))
}

/// # `POST /_matrix/client/v3/knock/{roomIdOrAlias}`
/// Asks to be let into a room whose join rule is `knock` (or `knock_restricted`); the room's
/// auth rules refuse a knock anywhere else. A room held only by other units is knocked on over
/// federation, through the allow-listed servers named by `via` / `server_name` (or the
/// alias's server); other servers are refused without being contacted.
pub async fn knock(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(target): PathParams<String>,
    uri: axum::http::Uri,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Json<Value>> {
    let mut via = via_servers(&uri);
    let room = room_of_target(&server, &target, &mut via).await?;
    let key = room.to_string();
    let participating = server
        .store
        .read(move |conn| crate::store::dag::participating(conn, &key))
        .await?;
    if !participating {
        // The same servers a remote join would try; only allow-listed peers survive.
        let candidates =
            crate::service::federation::join_candidates(&server, &room, &auth.user_id, via).await?;
        crate::service::federation::knock::knock_remote(
            &server,
            room.clone(),
            auth.user_id,
            body.reason,
            candidates,
        )
        .await?;
        return Ok(Json(json!({"room_id": room})));
    }
    rooms::set_membership(
        &server,
        room.clone(),
        auth.user_id.clone(),
        auth.user_id,
        "knock",
        body.reason,
        Map::new(),
    )
    .await?;
    Ok(Json(json!({"room_id": room})))
}
