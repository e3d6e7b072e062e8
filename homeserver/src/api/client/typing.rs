//! Typing notifications.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use crate::api::client::wire::Empty;
use crate::api::extract::{Auth, JsonBody, PathParams, room_id, user_id};
use crate::error::{Error, Result};
use crate::service::Server;
use crate::service::typing;

#[derive(Deserialize)]
pub struct TypingBody {
    typing: bool,
    timeout: Option<u64>,
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}`
pub async fn set_typing(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((room, user)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<TypingBody>,
) -> Result<Json<Empty>> {
    let room = room_id(&room)?;
    if user_id(&user)? != auth.user_id {
        return Err(Error::forbidden("You may only set your own typing state"));
    }
    let timeout = Duration::from_millis(body.timeout.unwrap_or(30_000));
    typing::set_typing(&server, &room, &auth.user_id, body.typing, timeout).await?;
    Ok(Json(Empty {}))
}
