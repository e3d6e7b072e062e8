//! The deprecated endpoints still in the spec: `GET /initialSync`, `GET /events` (with
//! `room_id`: peeking), `GET /events/{eventId}` and `GET /rooms/{roomId}/initialSync`. The
//! behaviour lives in `service::legacy`, on top of `/sync` and `/messages`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::Value;

use crate::api::extract::{Auth, PathParams, QueryParams, event_id, room_id};
use crate::error::Result;
use crate::service::Server;
use crate::service::legacy;

/// Query parameters of `GET /initialSync` and `GET /rooms/{roomId}/initialSync`.
#[derive(Deserialize, Default)]
pub struct InitialSyncQuery {
    limit: Option<u64>,
    #[serde(default)]
    archived: bool,
}

/// # `GET /_matrix/client/v3/initialSync`
pub async fn initial_sync(
    State(server): State<Arc<Server>>,
    auth: Auth,
    QueryParams(q): QueryParams<InitialSyncQuery>,
) -> Result<Json<legacy::InitialSync>> {
    Ok(Json(
        legacy::initial_sync(&server, auth.viewer(), q.limit, q.archived).await?,
    ))
}

/// Query parameters of `GET /events`.
#[derive(Deserialize, Default)]
pub struct EventsQuery {
    from: Option<String>,
    timeout: Option<u64>,
    room_id: Option<String>,
}

/// # `GET /_matrix/client/v3/events`
pub async fn events(
    State(server): State<Arc<Server>>,
    auth: Auth,
    QueryParams(q): QueryParams<EventsQuery>,
) -> Result<Json<legacy::EventsPage>> {
    let room = q.room_id.as_deref().map(room_id).transpose()?;
    let timeout = Duration::from_millis(q.timeout.unwrap_or(0));
    Ok(Json(
        legacy::events(&server, auth.viewer(), q.from, timeout, room).await?,
    ))
}

/// # `GET /_matrix/client/v3/events/{eventId}`
pub async fn event(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(event): PathParams<String>,
) -> Result<Json<Value>> {
    // One client-format event: its content is arbitrary JSON.
    let event = event_id(&event)?;
    Ok(Json(
        legacy::get_event(&server, auth.viewer(), event).await?,
    ))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/initialSync`
pub async fn room_initial_sync(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    QueryParams(q): QueryParams<InitialSyncQuery>,
) -> Result<Json<legacy::RoomInfo>> {
    let room = room_id(&room)?;
    Ok(Json(
        legacy::initial_sync_room(&server, auth.viewer(), room, q.limit).await?,
    ))
}
