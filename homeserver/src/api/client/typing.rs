//! Typing notifications.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::extract::{Auth, JsonBody, PathParams, room_id, user_id};
use crate::error::{Error, Result};
use crate::service::Server;
use crate::store::state;

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
) -> Result<Json<Value>> {
    let room = room_id(&room)?;
    if user_id(&user)? != auth.user_id {
        return Err(Error::forbidden("You may only set your own typing state"));
    }
    let (key, me) = (room.to_string(), auth.user_id.to_string());
    let joined = server
        .store
        .read(move |conn| Ok(state::membership(conn, &key, &me)?.as_deref() == Some("join")))
        .await?;
    if !joined {
        return Err(Error::forbidden("You are not joined to this room"));
    }
    let timeout = Duration::from_millis(body.timeout.unwrap_or(30_000));
    if server
        .typing
        .set(room.as_str(), auth.user_id.as_str(), body.typing, timeout)
    {
        crate::service::federation::send_typing(
            &server,
            room.as_str(),
            auth.user_id.as_str(),
            body.typing,
        )
        .await?;
    }
    Ok(Json(json!({})))
}
