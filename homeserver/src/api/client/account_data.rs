//! Account data (global and per room), receipts and read markers.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::sync::check_self as check_own_user;
use crate::api::extract::{Auth, JsonBody, PathParams, event_id, room_id};
use crate::error::{Error, Result};
use crate::service::Server;
use crate::store::misc::{self, Receipt};
use crate::store::{events, state};
use crate::util::now_ms;

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
    user: String,
    room: String,
    kind: String,
    content: Map<String, Value>,
) -> Result<Json<Value>> {
    let json = Value::Object(content).to_string();
    crate::service::account_data::put(server, user, room, kind, json).await?;
    Ok(Json(json!({})))
}

async fn get(server: &Server, user: String, room: String, kind: String) -> Result<Json<Value>> {
    let found = server
        .store
        .read(move |conn| misc::get_account_data(conn, &user, &room, &kind))
        .await?;
    let json = found.ok_or_else(|| Error::not_found("Account data not found"))?;
    Ok(Json(
        serde_json::from_str(&json).map_err(|err| Error::internal(err.to_string()))?,
    ))
}

/// # `PUT /_matrix/client/v3/user/{userId}/account_data/{type}`
pub async fn put_global(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((user, kind)): PathParams<(String, String)>,
    JsonBody(content): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>> {
    check_own_user(&auth, &user)?;
    check_writable(&kind)?;
    put(
        &server,
        auth.user_id.to_string(),
        String::new(),
        kind,
        content,
    )
    .await
}

/// # `GET /_matrix/client/v3/user/{userId}/account_data/{type}`
pub async fn get_global(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((user, kind)): PathParams<(String, String)>,
) -> Result<Json<Value>> {
    check_own_user(&auth, &user)?;
    get(&server, auth.user_id.to_string(), String::new(), kind).await
}

/// # `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
pub async fn put_room(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((user, room, kind)): PathParams<(String, String, String)>,
    JsonBody(content): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>> {
    check_own_user(&auth, &user)?;
    check_writable(&kind)?;
    let room = room_id(&room)?;
    put(
        &server,
        auth.user_id.to_string(),
        room.to_string(),
        kind,
        content,
    )
    .await
}

/// # `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
pub async fn get_room(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((user, room, kind)): PathParams<(String, String, String)>,
) -> Result<Json<Value>> {
    check_own_user(&auth, &user)?;
    let room = room_id(&room)?;
    get(&server, auth.user_id.to_string(), room.to_string(), kind).await
}

/// Stores a receipt after checking the user is joined and the event is in the room.
async fn store_receipt(
    server: &Server,
    user: String,
    room: String,
    receipt_type: String,
    event: String,
    thread_id: String,
) -> Result<()> {
    let own = server.server_name().to_string();
    server
        .store
        .write(move |tx| {
            if state::membership(tx, &room, &user)?.as_deref() != Some("join") {
                return Err(Error::forbidden("You are not joined to this room"));
            }
            if events::get_room_event(tx, &room, &event)?.is_none() {
                return Err(Error::not_found("Event not found in this room"));
            }
            let pos = tx.next_stream_pos();
            if receipt_type == "m.fully_read" {
                let content = json!({"event_id": event}).to_string();
                return misc::set_account_data(tx, &user, &room, "m.fully_read", &content, pos);
            }
            let receipt = Receipt {
                receipt_type,
                user_id: user.clone(),
                thread_id,
                event_id: event,
                ts: now_ms(),
            };
            misc::set_receipt(tx, &room, &receipt, pos)?;
            if receipt.receipt_type == "m.read" {
                crate::service::federation::enqueue_receipt_in_tx(tx, &own, &room, &receipt)?;
            }
            Ok(())
        })
        .await
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
) -> Result<Json<Value>> {
    let room = room_id(&room)?;
    let event = event_id(&event)?;
    if !matches!(kind.as_str(), "m.read" | "m.read.private" | "m.fully_read") {
        return Err(Error::invalid_param(format!(
            "Unknown receipt type {kind:?}"
        )));
    }
    let thread = body.thread_id.filter(|t| t != "main").unwrap_or_default();
    store_receipt(
        &server,
        auth.user_id.to_string(),
        room.to_string(),
        kind,
        event.to_string(),
        thread,
    )
    .await?;
    Ok(Json(json!({})))
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
) -> Result<Json<Value>> {
    let room = room_id(&room)?;
    for (kind, event) in [
        ("m.fully_read", body.fully_read),
        ("m.read", body.read),
        ("m.read.private", body.read_private),
    ] {
        if let Some(event) = event {
            let event = event_id(&event)?;
            store_receipt(
                &server,
                auth.user_id.to_string(),
                room.to_string(),
                kind.to_owned(),
                event.to_string(),
                String::new(),
            )
            .await?;
        }
    }
    Ok(Json(json!({})))
}

/// Reads a room's `m.tag` content as its `tags` map.
fn tags_of(conn: &rusqlite::Connection, user: &str, room: &str) -> Result<Map<String, Value>> {
    Ok(misc::get_account_data(conn, user, room, "m.tag")?
        .and_then(|raw| serde_json::from_str::<Value>(&raw).ok())
        .and_then(|content| content.get("tags").and_then(Value::as_object).cloned())
        .unwrap_or_default())
}

/// Changes one tag of a room (`Some` sets it, `None` removes it), read and written in one
/// transaction so concurrent tag edits do not lose each other.
async fn edit_tag(
    server: &Server,
    user: String,
    room: String,
    tag: String,
    info: Option<Value>,
) -> Result<Json<Value>> {
    if tag.len() > 255 {
        return Err(Error::invalid_param("tag names are at most 255 bytes"));
    }
    server
        .store
        .write(move |tx| {
            let mut tags = tags_of(tx, &user, &room)?;
            let changed = match info {
                Some(info) => tags.insert(tag, info.clone()) != Some(info),
                None => tags.remove(&tag).is_some(),
            };
            if changed {
                let pos = tx.next_stream_pos();
                let content = json!({"tags": tags}).to_string();
                misc::set_account_data(tx, &user, &room, "m.tag", &content, pos)?;
            }
            Ok(())
        })
        .await?;
    Ok(Json(json!({})))
}

/// # `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags`
pub async fn get_tags(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((user, room)): PathParams<(String, String)>,
) -> Result<Json<Value>> {
    check_own_user(&auth, &user)?;
    let (user, room) = (auth.user_id.to_string(), room_id(&room)?.to_string());
    let tags = server
        .store
        .read(move |conn| tags_of(conn, &user, &room))
        .await?;
    Ok(Json(json!({"tags": tags})))
}

/// # `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
pub async fn put_tag(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((user, room, tag)): PathParams<(String, String, String)>,
    JsonBody(info): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>> {
    check_own_user(&auth, &user)?;
    if info.get("order").is_some_and(|o| !o.is_number()) {
        return Err(Error::bad_json("order must be a number"));
    }
    let room = room_id(&room)?.to_string();
    edit_tag(
        &server,
        auth.user_id.to_string(),
        room,
        tag,
        Some(Value::Object(info)),
    )
    .await
}

/// # `DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
pub async fn delete_tag(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((user, room, tag)): PathParams<(String, String, String)>,
) -> Result<Json<Value>> {
    check_own_user(&auth, &user)?;
    let room = room_id(&room)?.to_string();
    edit_tag(&server, auth.user_id.to_string(), room, tag, None).await
}
