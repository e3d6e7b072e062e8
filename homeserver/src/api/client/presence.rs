//! Presence: `/presence/{userId}/status`.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::api::client::wire::Empty;
use crate::api::extract::{Auth, JsonBody, PathParams, user_id};
use crate::error::{Error, Result};
use crate::service::{Server, presence};

/// The routes of this area.
pub fn routes() -> Router<Arc<Server>> {
    Router::new().route(
        "/_matrix/client/v3/presence/{user_id}/status",
        get(get_status).put(set_status),
    )
}

#[derive(Deserialize)]
pub struct StatusBody {
    presence: String,
    status_msg: Option<String>,
}

/// # `PUT /_matrix/client/v3/presence/{userId}/status`
pub async fn set_status(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(user): PathParams<String>,
    JsonBody(body): JsonBody<StatusBody>,
) -> Result<Json<Empty>> {
    if user_id(&user)? != auth.user_id {
        return Err(Error::forbidden("You may only set your own presence"));
    }
    if body.status_msg.as_ref().is_some_and(|m| m.len() > 1024) {
        return Err(Error::invalid_param("status_msg is longer than 1024 bytes"));
    }
    presence::set(
        &server,
        &auth.user_id,
        &body.presence,
        Some(body.status_msg),
    )
    .await?;
    Ok(Json(Empty {}))
}

/// # `GET /_matrix/client/v3/presence/{userId}/status`
pub async fn get_status(
    State(server): State<Arc<Server>>,
    _auth: Auth,
    PathParams(user): PathParams<String>,
) -> Result<Json<presence::PresenceContent>> {
    let user = user_id(&user)?;
    Ok(Json(presence::get(&server, &user).await?))
}
