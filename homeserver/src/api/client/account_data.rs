//! Account data (global and per room), receipts and read markers.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use ruma::{RoomId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::sync::check_self as check_own_user;
use crate::api::client::wire::{Empty, Tags};
use crate::api::extract::{Auth, JsonBody, PathParams, event_id, room_id};
use crate::error::{Error, Result};
use crate::service::{Server, account_data};

async fn get_json(
    server: &Server,
    user: &UserId,
    room: Option<&RoomId>,
    kind: String,
) -> Result<Json<Value>> {
    // Account data content is whatever the client stored: arbitrary JSON.
    Ok(Json(account_data::get(server, user, room, kind).await?))
}

/// Types the server manages itself; clients may not write them through account data.
fn check_writable(kind: &str) -> Result<()> {
    if kind == "m.fully_read" || kind == "m.push_rules" {
        return Err(Error::bad_json(format!(
            "{kind} cannot be set through this endpoint"
        )));
    }
    Ok(())
}

async fn put(
    server: &Server,
    user: &UserId,
    room: Option<&RoomId>,
    kind: String,
    content: Map<String, Value>,
) -> Result<Json<Empty>> {
    let json = Value::Object(content).to_string();
    account_data::put(server, user, room, kind, json).await?;
    Ok(Json(Empty {}))
}

/// # `PUT /_matrix/client/v3/user/{userId}/account_data/{type}`
pub async fn put_global(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((user, kind)): PathParams<(String, String)>,
    JsonBody(content): JsonBody<Map<String, Value>>,
) -> Result<Json<Empty>> {
    check_own_user(&auth, &user)?;
    check_writable(&kind)?;
    put(&server, &auth.user_id, None, kind, content).await
}

/// # `GET /_matrix/client/v3/user/{userId}/account_data/{type}`
pub async fn get_global(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((user, kind)): PathParams<(String, String)>,
) -> Result<Json<Value>> {
    check_own_user(&auth, &user)?;
    get_json(&server, &auth.user_id, None, kind).await
}

/// # `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
pub async fn put_room(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((user, room, kind)): PathParams<(String, String, String)>,
    JsonBody(content): JsonBody<Map<String, Value>>,
) -> Result<Json<Empty>> {
    check_own_user(&auth, &user)?;
    check_writable(&kind)?;
    let room = room_id(&room)?;
    put(&server, &auth.user_id, Some(&room), kind, content).await
}

/// # `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
pub async fn get_room(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((user, room, kind)): PathParams<(String, String, String)>,
) -> Result<Json<Value>> {
    check_own_user(&auth, &user)?;
    let room = room_id(&room)?;
    get_json(&server, &auth.user_id, Some(&room), kind).await
}

#[derive(Deserialize, Default)]
pub struct ReceiptBody {
    thread_id: Option<String>,
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}`
pub async fn receipt(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((room, kind, event)): PathParams<(String, String, String)>,
    JsonBody(body): JsonBody<ReceiptBody>,
) -> Result<Json<Empty>> {
    let room = room_id(&room)?;
    let event = event_id(&event)?;
    if !matches!(kind.as_str(), "m.read" | "m.read.private" | "m.fully_read") {
        return Err(Error::invalid_param(format!(
            "Unknown receipt type {kind:?}"
        )));
    }
    let thread = body.thread_id.filter(|t| t != "main").unwrap_or_default();
    account_data::store_receipt(&server, &auth.user_id, &room, kind, &event, thread).await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize)]
pub struct ReadMarkersBody {
    #[serde(rename = "m.fully_read")]
    fully_read: Option<String>,
    #[serde(rename = "m.read")]
    read: Option<String>,
    #[serde(rename = "m.read.private")]
    read_private: Option<String>,
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/read_markers`
pub async fn read_markers(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    JsonBody(body): JsonBody<ReadMarkersBody>,
) -> Result<Json<Empty>> {
    let room = room_id(&room)?;
    for (kind, event) in [
        ("m.fully_read", body.fully_read),
        ("m.read", body.read),
        ("m.read.private", body.read_private),
    ] {
        if let Some(event) = event {
            let event = event_id(&event)?;
            account_data::store_receipt(
                &server,
                &auth.user_id,
                &room,
                kind.to_owned(),
                &event,
                String::new(),
            )
            .await?;
        }
    }
    Ok(Json(Empty {}))
}

/// # `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags`
pub async fn get_tags(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((user, room)): PathParams<(String, String)>,
) -> Result<Json<Tags>> {
    check_own_user(&auth, &user)?;
    let room = room_id(&room)?;
    let tags = account_data::tags(&server, &auth.user_id, &room).await?;
    Ok(Json(Tags { tags }))
}

/// # `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
pub async fn put_tag(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((user, room, tag)): PathParams<(String, String, String)>,
    JsonBody(info): JsonBody<Map<String, Value>>,
) -> Result<Json<Empty>> {
    check_own_user(&auth, &user)?;
    if info.get("order").is_some_and(|o| !o.is_number()) {
        return Err(Error::bad_json("order must be a number"));
    }
    let room = room_id(&room)?;
    account_data::edit_tag(
        &server,
        &auth.user_id,
        &room,
        tag,
        Some(Value::Object(info)),
    )
    .await?;
    Ok(Json(Empty {}))
}

/// # `DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
pub async fn delete_tag(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((user, room, tag)): PathParams<(String, String, String)>,
) -> Result<Json<Empty>> {
    check_own_user(&auth, &user)?;
    let room = room_id(&room)?;
    account_data::edit_tag(&server, &auth.user_id, &room, tag, None).await?;
    Ok(Json(Empty {}))
}
