//! Reporting content: `/rooms/{roomId}/report/{eventId}`, `/rooms/{roomId}/report`,
//! `/users/{userId}/report`, stored by `service::reports`.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

use crate::api::client::wire::Empty;
use crate::api::extract::{Auth, JsonBody, PathParams, event_id, room_id, user_id};
use crate::error::Result;
use crate::service::{Server, reports};

/// The routes of this area.
pub fn routes() -> Router<Arc<Server>> {
    const V3: &str = "/_matrix/client/v3";
    Router::new()
        .route(
            &format!("{V3}/rooms/{{room_id}}/report/{{event_id}}"),
            post(report_event),
        )
        .route(&format!("{V3}/rooms/{{room_id}}/report"), post(report_room))
        .route(&format!("{V3}/users/{{user_id}}/report"), post(report_user))
}

#[derive(Deserialize)]
pub struct ReportBody {
    #[serde(default)]
    reason: Option<String>,
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}`
pub async fn report_event(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((room, event)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<ReportBody>,
) -> Result<Json<Empty>> {
    let (room, event) = (room_id(&room)?, event_id(&event)?);
    let reason = body.reason.unwrap_or_default();
    reports::event(&server, &auth.user_id, room, event, reason).await?;
    Ok(Json(Empty {}))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/report`
pub async fn report_room(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    JsonBody(body): JsonBody<ReportBody>,
) -> Result<Json<Empty>> {
    let room = room_id(&room)?;
    let reason = body.reason.unwrap_or_default();
    reports::room(&server, &auth.user_id, room, reason).await?;
    Ok(Json(Empty {}))
}

/// # `POST /_matrix/client/v3/users/{userId}/report`
pub async fn report_user(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(user): PathParams<String>,
    JsonBody(body): JsonBody<ReportBody>,
) -> Result<Json<Empty>> {
    let target = user_id(&user)?;
    let reason = body.reason.unwrap_or_default();
    reports::user(&server, &auth.user_id, target, reason).await?;
    Ok(Json(Empty {}))
}
