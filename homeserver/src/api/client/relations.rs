//! Event relationships: `GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]` and
//! `GET /rooms/{roomId}/threads` (client API v1), answered by `service::relations`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;

use crate::api::extract::{Auth, PathParams, QueryParams, event_id, room_id};
use crate::error::Result;
use crate::service::Server;
use crate::service::relations::{
    self, RelationsPage, RelationsQuery, RelationsRequest, ThreadsPage, ThreadsQuery,
};

/// The routes of this area.
pub fn routes() -> Router<Arc<Server>> {
    const V1: &str = "/_matrix/client/v1/rooms/{room_id}";
    let r = |path: &str| format!("{V1}{path}");
    Router::new()
        .route(&r("/relations/{event_id}"), get(relations_all))
        .route(
            &r("/relations/{event_id}/{rel_type}"),
            get(relations_of_type),
        )
        .route(
            &r("/relations/{event_id}/{rel_type}/{event_type}"),
            get(relations_of_type_and_event_type),
        )
        .route(&r("/threads"), get(threads))
}

fn request(
    room: &str,
    parent: &str,
    rel_type: Option<String>,
    event_type: Option<String>,
    query: RelationsQuery,
) -> Result<RelationsRequest> {
    Ok(RelationsRequest {
        room: room_id(room)?,
        parent: event_id(parent)?,
        rel_type,
        event_type,
        query,
    })
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}`
pub async fn relations_all(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((room, parent)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<RelationsQuery>,
) -> Result<Json<RelationsPage>> {
    let request = request(&room, &parent, None, None, query)?;
    let device = auth.device_id.as_deref();
    Ok(Json(
        relations::relations(&server, &auth.user_id, device, request).await?,
    ))
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}`
pub async fn relations_of_type(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((room, parent, rel_type)): PathParams<(String, String, String)>,
    QueryParams(query): QueryParams<RelationsQuery>,
) -> Result<Json<RelationsPage>> {
    let request = request(&room, &parent, Some(rel_type), None, query)?;
    let device = auth.device_id.as_deref();
    Ok(Json(
        relations::relations(&server, &auth.user_id, device, request).await?,
    ))
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}`
pub async fn relations_of_type_and_event_type(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((room, parent, rel_type, event_type)): PathParams<(String, String, String, String)>,
    QueryParams(query): QueryParams<RelationsQuery>,
) -> Result<Json<RelationsPage>> {
    let request = request(&room, &parent, Some(rel_type), Some(event_type), query)?;
    let device = auth.device_id.as_deref();
    Ok(Json(
        relations::relations(&server, &auth.user_id, device, request).await?,
    ))
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/threads`
pub async fn threads(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    QueryParams(query): QueryParams<ThreadsQuery>,
) -> Result<Json<ThreadsPage>> {
    let room = room_id(&room)?;
    let device = auth.device_id.as_deref();
    Ok(Json(
        relations::threads(&server, &auth.user_id, device, room, query).await?,
    ))
}
