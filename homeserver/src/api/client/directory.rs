//! Room aliases, the local public room directory and application services' lists in it.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use ruma::OwnedRoomAliasId;
use serde::{Deserialize, Serialize};

use crate::api::client::wire::Empty;
use crate::api::extract::{Auth, JsonBody, PathParams, QueryParams, room_id};
use crate::error::{Error, Result};
use crate::matrix::wire::PublicRoomsResponse;
use crate::service::Server;
use crate::service::aliases;
use crate::service::directory::{self, DirectoryQuery, Networks};
use crate::service::federation::route;

/// Parses a `{roomAlias}` path parameter.
fn alias(raw: &str) -> Result<OwnedRoomAliasId> {
    OwnedRoomAliasId::try_from(raw)
        .map_err(|_| Error::invalid_param(format!("{raw:?} is not a valid room alias")))
}

/// `{"room_id", "servers"}`.
#[derive(Serialize)]
pub struct AliasAnswer {
    room_id: ruma::OwnedRoomId,
    servers: Vec<String>,
}

/// # `GET /_matrix/client/v3/directory/room/{roomAlias}`
pub async fn get_alias(
    State(server): State<Arc<Server>>,
    PathParams(raw): PathParams<String>,
) -> Result<Json<AliasAnswer>> {
    let found = route::resolve_alias(&server, &alias(&raw)?).await?;
    Ok(Json(AliasAnswer {
        room_id: found.room_id,
        servers: found.servers,
    }))
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
) -> Result<Json<Empty>> {
    let alias = alias(&raw)?;
    let room = room_id(&body.room_id)?;
    let appservice = auth.appservice.as_deref();
    aliases::create(&server, &auth.user_id, appservice, alias, room).await?;
    Ok(Json(Empty {}))
}

/// # `DELETE /_matrix/client/v3/directory/room/{roomAlias}`
pub async fn delete_alias(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(raw): PathParams<String>,
) -> Result<Json<Empty>> {
    let appservice = auth.appservice.as_deref();
    aliases::delete(&server, &auth.user_id, appservice, alias(&raw)?).await?;
    Ok(Json(Empty {}))
}

/// `{"aliases": […]}`.
#[derive(Serialize)]
pub struct RoomAliases {
    aliases: Vec<String>,
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/aliases`
pub async fn room_aliases(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
) -> Result<Json<RoomAliases>> {
    let aliases = aliases::of_room(&server, &auth.user_id, room_id(&room)?).await?;
    Ok(Json(RoomAliases { aliases }))
}

/// `{"visibility": "public" | "private"}`.
#[derive(Serialize)]
pub struct Visibility {
    visibility: &'static str,
}

/// # `GET /_matrix/client/v3/directory/list/room/{roomId}`
pub async fn get_visibility(
    State(server): State<Arc<Server>>,
    PathParams(room): PathParams<String>,
) -> Result<Json<Visibility>> {
    let public = directory::is_public(&server, room_id(&room)?).await?;
    Ok(Json(Visibility {
        visibility: if public { "public" } else { "private" },
    }))
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
) -> Result<Json<Empty>> {
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
    directory::set_public(&server, &auth.user_id, room, public).await?;
    Ok(Json(Empty {}))
}

/// `{"visibility"}` of the appservice list endpoint: required, unlike the room list's.
#[derive(Deserialize)]
pub struct AppserviceVisibilityBody {
    visibility: String,
}

/// # `PUT /_matrix/client/v3/directory/list/appservice/{networkId}/{roomId}`
/// Only an application service may (403 `M_FORBIDDEN` for a user's token); it lists rooms
/// under its own networks only, so no appservice can change another's list.
pub async fn set_appservice_visibility(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((network, room)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<AppserviceVisibilityBody>,
) -> Result<Json<Empty>> {
    let appservice = auth.appservice.ok_or_else(|| {
        Error::forbidden("Only an application service may change its published room list")
    })?;
    let room = room_id(&room)?;
    let listed = match body.visibility.as_str() {
        "public" => true,
        "private" => false,
        other => {
            return Err(Error::invalid_param(format!(
                "Unknown visibility {other:?}"
            )));
        }
    };
    directory::set_appservice_listed(&server, appservice.id.clone(), network, room, listed).await?;
    Ok(Json(Empty {}))
}

/// A public-directory entry for a room (shared with both space `hierarchy` endpoints).
pub use crate::service::directory::room_summary;

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
) -> Result<Json<PublicRoomsResponse>> {
    let query = DirectoryQuery { limit, since, term };
    Ok(Json(route::public_rooms(server, query, remote).await?))
}

/// # `GET /_matrix/client/v3/publicRooms`
pub async fn public_rooms(
    State(server): State<Arc<Server>>,
    QueryParams(q): QueryParams<PublicRoomsQuery>,
) -> Result<Json<PublicRoomsResponse>> {
    list_public(&server, q.limit, q.since, None, q.server).await
}

#[derive(Deserialize, Default)]
pub struct SearchBody {
    limit: Option<usize>,
    since: Option<String>,
    filter: Option<SearchFilter>,
    #[serde(default)]
    include_all_networks: bool,
    third_party_instance_id: Option<String>,
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
) -> Result<Json<PublicRoomsResponse>> {
    let networks = match (body.include_all_networks, body.third_party_instance_id) {
        (true, Some(_)) => {
            return Err(Error::invalid_param(
                "third_party_instance_id cannot be used with include_all_networks",
            ));
        }
        (true, None) => Networks::All,
        (false, Some(id)) => Networks::Instance(id),
        (false, None) => Networks::Main,
    };
    let term = body.filter.and_then(|f| f.generic_search_term);
    let own = q.server.is_none() || q.server.as_deref() == Some(server.server_name().as_str());
    if networks != Networks::Main && own {
        // Appservice lists are this unit's alone; another unit's directory is asked as is.
        let query = DirectoryQuery {
            limit: body.limit,
            since: body.since,
            term,
        };
        return Ok(Json(
            directory::local_public_rooms_in(&server, query, networks).await?,
        ));
    }
    list_public(&server, body.limit, body.since, term, q.server).await
}
