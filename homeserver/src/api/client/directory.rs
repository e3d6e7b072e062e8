//! Room aliases and the local public room directory.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use ruma::OwnedRoomAliasId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::extract::{Auth, JsonBody, PathParams, QueryParams, room_id};
use crate::error::{Error, Result};
use crate::service::Server;
use crate::service::directory::{self, DirectoryQuery};
use crate::service::rooms;
use crate::store::{misc, state};

fn local_alias(server: &Server, raw: &str) -> Result<OwnedRoomAliasId> {
    let alias = OwnedRoomAliasId::try_from(raw)
        .map_err(|_| Error::invalid_param(format!("{raw:?} is not a valid room alias")))?;
    if alias.server_name() != server.server_name() {
        return Err(Error::invalid_param(
            "Aliases of other units cannot be managed here",
        ));
    }
    Ok(alias)
}

/// # `GET /_matrix/client/v3/directory/room/{roomAlias}`
pub async fn get_alias(
    State(server): State<Arc<Server>>,
    PathParams(raw): PathParams<String>,
) -> Result<Json<Value>> {
    let alias = OwnedRoomAliasId::try_from(raw.as_str())
        .map_err(|_| Error::invalid_param(format!("{raw:?} is not a valid room alias")))?;
    if alias.server_name() != server.server_name() {
        let (room, servers) =
            crate::service::federation::resolve_remote_alias(&server, &alias).await?;
        return Ok(Json(json!({"room_id": room, "servers": servers})));
    }
    let key = alias.to_string();
    let found = server
        .store
        .read(move |conn| misc::get_alias(conn, &key))
        .await?;
    match found {
        Some((room, _)) => Ok(Json(
            json!({"room_id": room, "servers": [server.server_name()]}),
        )),
        None => Err(Error::not_found(format!("Room alias {alias} not found"))),
    }
}

#[derive(Deserialize)]
pub struct AliasBody {
    room_id: String,
}

/// # `PUT /_matrix/client/v3/directory/room/{roomAlias}`
pub async fn put_alias(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(raw): PathParams<String>,
    JsonBody(body): JsonBody<AliasBody>,
) -> Result<Json<Value>> {
    let alias = local_alias(&server, &raw)?;
    let room = room_id(&body.room_id)?;
    let user = auth.user_id.to_string();
    server
        .store
        .write(move |tx| {
            if state::get_room(tx, room.as_str())?.is_none() {
                return Err(Error::not_found("Room not found"));
            }
            if state::membership(tx, room.as_str(), &user)?.as_deref() != Some("join") {
                return Err(Error::forbidden(
                    "You must be in the room to give it an alias",
                ));
            }
            if !misc::create_alias(tx, alias.as_str(), room.as_str(), &user)? {
                return Err(Error::Conflict("Room alias already exists".to_owned()));
            }
            Ok(())
        })
        .await?;
    Ok(Json(json!({})))
}

/// # `DELETE /_matrix/client/v3/directory/room/{roomAlias}`
pub async fn delete_alias(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(raw): PathParams<String>,
) -> Result<Json<Value>> {
    let alias = local_alias(&server, &raw)?;
    let user = auth.user_id.to_string();
    server
        .store
        .write(move |tx| {
            let Some((room, creator)) = misc::get_alias(tx, alias.as_str())? else {
                return Err(Error::not_found("Room alias not found"));
            };
            if creator != user {
                let power = rooms::power_levels(tx, &room)?;
                if power.user_level(&user) < power.state_level("m.room.canonical_alias") {
                    return Err(Error::forbidden("You may not remove this alias"));
                }
            }
            misc::delete_alias(tx, alias.as_str())
        })
        .await?;
    Ok(Json(json!({})))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/aliases`
pub async fn room_aliases(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
) -> Result<Json<Value>> {
    let room = room_id(&room)?;
    let user = auth.user_id.to_string();
    let aliases = server
        .store
        .read(move |conn| {
            rooms::membership_access(conn, room.as_str(), &user)?;
            misc::room_aliases(conn, room.as_str())
        })
        .await?;
    Ok(Json(json!({"aliases": aliases})))
}

/// # `GET /_matrix/client/v3/directory/list/room/{roomId}`
pub async fn get_visibility(
    State(server): State<Arc<Server>>,
    PathParams(room): PathParams<String>,
) -> Result<Json<Value>> {
    let room = room_id(&room)?;
    let row = server
        .store
        .read(move |conn| state::get_room(conn, room.as_str()))
        .await?;
    let row = row.ok_or_else(|| Error::not_found("Room not found"))?;
    Ok(Json(
        json!({"visibility": if row.is_public { "public" } else { "private" }}),
    ))
}

#[derive(Deserialize)]
pub struct VisibilityBody {
    visibility: Option<String>,
}

/// # `PUT /_matrix/client/v3/directory/list/room/{roomId}`
pub async fn set_visibility(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    JsonBody(body): JsonBody<VisibilityBody>,
) -> Result<Json<Value>> {
    let room = room_id(&room)?;
    let public = match body.visibility.as_deref() {
        Some("public") => true,
        Some("private") | None => false,
        Some(other) => {
            return Err(Error::invalid_param(format!(
                "Unknown visibility {other:?}"
            )));
        }
    };
    let user = auth.user_id.to_string();
    server
        .store
        .write(move |tx| {
            if state::get_room(tx, room.as_str())?.is_none() {
                return Err(Error::not_found("Room not found"));
            }
            let power = rooms::power_levels(tx, room.as_str())?;
            if power.user_level(&user) < power.state_level("m.room.canonical_alias") {
                return Err(Error::forbidden(
                    "You may not change this room's directory visibility",
                ));
            }
            state::set_room_public(tx, room.as_str(), public)
        })
        .await?;
    Ok(Json(json!({})))
}

/// A public-directory entry for a room (shared with both space `hierarchy` endpoints).
pub use crate::service::federation::hierarchy::room_summary;

#[derive(Deserialize, Default)]
pub struct PublicRoomsQuery {
    limit: Option<usize>,
    since: Option<String>,
    server: Option<String>,
}

async fn list_public(
    server: &Server,
    limit: Option<usize>,
    since: Option<String>,
    term: Option<String>,
    remote: Option<String>,
) -> Result<Json<Value>> {
    if let Some(remote) = remote
        && remote != server.server_name().as_str()
    {
        return crate::service::federation::remote_public_rooms(
            server, &remote, limit, since, term,
        )
        .await
        .map(Json);
    }
    let query = DirectoryQuery { limit, since, term };
    Ok(Json(directory::local_public_rooms(server, query).await?))
}

/// # `GET /_matrix/client/v3/publicRooms`
pub async fn public_rooms(
    State(server): State<Arc<Server>>,
    QueryParams(q): QueryParams<PublicRoomsQuery>,
) -> Result<Json<Value>> {
    list_public(&server, q.limit, q.since, None, q.server).await
}

#[derive(Deserialize, Default)]
pub struct SearchBody {
    limit: Option<usize>,
    since: Option<String>,
    filter: Option<SearchFilter>,
}

#[derive(Deserialize, Default)]
pub struct SearchFilter {
    generic_search_term: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct ServerQuery {
    server: Option<String>,
}

/// # `POST /_matrix/client/v3/publicRooms`
pub async fn search_public_rooms(
    State(server): State<Arc<Server>>,
    _auth: Auth,
    QueryParams(q): QueryParams<ServerQuery>,
    JsonBody(body): JsonBody<SearchBody>,
) -> Result<Json<Value>> {
    let term = body.filter.and_then(|f| f.generic_search_term);
    list_public(&server, body.limit, body.since, term, q.server).await
}
