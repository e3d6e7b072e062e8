//! Federation routes for knocking: `make_knock` and `send_knock` (spec: Server-Server API,
//! "Knocking upon a room"). The origin is already checked against the allow-list by
//! [`Signed`]; the behaviour lives in [`crate::service::federation::knock`].

use std::sync::Arc;

use crate::matrix::wire::{MakeMembershipAnswer, SendKnockResponse};
use axum::extract::State;
use axum::routing::{get, put};
use axum::{Json, Router};

use super::Signed;
use crate::api::extract::{PathParams, RawQuery, room_id, user_id};
use crate::error::{Error, Result};
use crate::service::Server;
use crate::service::federation::knock;

/// The routes of this area.
pub fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route(
            "/_matrix/federation/v1/make_knock/{room_id}/{user_id}",
            get(make_knock),
        )
        .route(
            "/_matrix/federation/v1/send_knock/{room_id}/{event_id}",
            put(send_knock),
        )
}

/// # `GET /_matrix/federation/v1/make_knock/{roomId}/{userId}`
async fn make_knock(
    State(server): State<Arc<Server>>,
    PathParams((room, user)): PathParams<(String, String)>,
    query: RawQuery,
    signed: Signed,
) -> Result<Json<MakeMembershipAnswer>> {
    let versions = query.all("ver");
    if versions.is_empty() {
        return Err(Error::new(
            crate::error::ErrorCode::MissingParam,
            "make_knock needs the room versions the knocking server supports (`ver`)",
        ));
    }
    Ok(Json(
        knock::make_knock(
            &server,
            &signed.origin,
            room_id(&room)?,
            user_id(&user)?,
            versions,
        )
        .await?,
    ))
}

/// # `PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}`
async fn send_knock(
    State(server): State<Arc<Server>>,
    PathParams((room, event)): PathParams<(String, String)>,
    signed: Signed,
) -> Result<Json<SendKnockResponse>> {
    let body = signed
        .body
        .ok_or_else(|| Error::bad_json("missing knock event"))?;
    Ok(Json(
        knock::receive_knock(&server, &signed.origin, room_id(&room)?, &event, body).await?,
    ))
}
