//! Room history: `/messages`, `/context`, `/event` and `timestamp_to_event`
//! (`service::timeline`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::Value;

use crate::api::extract::{
    Auth, PathParams, QueryParams, TimestampQuery, event_id, room_id, timestamp_answer,
};
use crate::error::Result;
use crate::service::Server;
use crate::service::federation::route;
use crate::service::timeline::{self, ContextPage, ContextQuery, MessagesPage, MessagesQuery};

/// # `GET /_matrix/client/v3/rooms/{roomId}/messages`
pub async fn messages(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    QueryParams(q): QueryParams<MessagesQuery>,
) -> Result<Json<MessagesPage>> {
    let room = room_id(&room)?;
    let device = auth.device_id.as_deref();
    Ok(Json(
        route::messages(&server, &auth.user_id, device, room, q).await?,
    ))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}`
pub async fn get_event(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((room, event)): PathParams<(String, String)>,
) -> Result<Json<Value>> {
    // One client-format event: its content is arbitrary JSON.
    let (room, event) = (room_id(&room)?, event_id(&event)?);
    let device = auth.device_id.as_deref();
    Ok(Json(
        timeline::get_event(&server, &auth.user_id, device, room, event).await?,
    ))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}`
pub async fn context(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((room, event)): PathParams<(String, String)>,
    QueryParams(q): QueryParams<ContextQuery>,
) -> Result<Json<ContextPage>> {
    let (room, event) = (room_id(&room)?, event_id(&event)?);
    let device = auth.device_id.as_deref();
    Ok(Json(
        timeline::context(&server, &auth.user_id, device, room, event, q).await?,
    ))
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event`
/// `M_NOT_FOUND` when no visible event is on that side of `ts`.
pub async fn timestamp_to_event(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    QueryParams(q): QueryParams<TimestampQuery>,
) -> Result<Json<timeline::TimestampMatch>> {
    let room = room_id(&room)?;
    let forward = q.forward()?;
    timestamp_answer(
        timeline::closest_to_timestamp(&server, &auth.user_id, room, q.ts, forward).await?,
    )
}
