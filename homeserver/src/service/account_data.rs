//! Account data writes and their quotas.
//!
//! One item's content is capped at `[limits] account_data_max_bytes` and a user's total at
//! `[limits] account_data_quota_bytes`; both are answered 413 `M_TOO_LARGE`. Not
//! `M_RESOURCE_LIMIT_EXCEEDED`: the spec defines that for the homeserver as a whole reaching a
//! resource limit (it must carry an `admin_contact`, and clients show it as a server-wide
//! banner), while here one user's request is too large for what that user may store.

use ruma::{EventId, RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::error::{Error, ErrorCode, Result};
use crate::service::Server;
use crate::store::misc::{self, Receipt};
use crate::store::wake::Audience;
use crate::store::{events, outbox};
use crate::util::now_ms;

/// The key the store files account data under: the room, or empty for global data.
fn room_key(room: Option<&RoomId>) -> String {
    room.map(RoomId::to_string).unwrap_or_default()
}

/// Stores `content` (JSON text) as `user`'s account data `kind`, global when `room` is `None`,
/// at a new stream position; 413 `M_TOO_LARGE` over the item size or the user's quota.
pub async fn put(
    server: &Server,
    user: &UserId,
    room: Option<&RoomId>,
    kind: String,
    content: String,
) -> Result<()> {
    let (user, room) = (user.to_string(), room_key(room));
    let limits = &server.config.limits;
    if content.len() > limits.account_data_max_bytes {
        return Err(Error::new(
            ErrorCode::TooLarge,
            format!(
                "Account data content is {} bytes; one item may hold at most {}",
                content.len(),
                limits.account_data_max_bytes
            ),
        ));
    }
    let quota = limits.account_data_quota_bytes;
    server
        .store
        .write(move |tx| {
            let others = misc::account_data_bytes_except(tx, &user, &room, &kind)?;
            if others + content.len() as u64 > quota {
                return Err(Error::new(
                    ErrorCode::TooLarge,
                    format!(
                        "Storing this would bring your account data to {} bytes; \
                         the quota is {quota}. Remove some first",
                        others + content.len() as u64
                    ),
                ));
            }
            let pos = tx.next_stream_pos(Audience::User(&user));
            misc::set_account_data(tx, &user, &room, &kind, &content, pos)
        })
        .await
}

/// One account data item of the user (`room` `None`: global); `M_NOT_FOUND` when unset.
pub async fn get(
    server: &Server,
    user: &UserId,
    room: Option<&RoomId>,
    kind: String,
) -> Result<Value> {
    let (user, room) = (user.to_string(), room_key(room));
    let found = server
        .store
        .read(move |conn| misc::get_account_data(conn, &user, &room, &kind))
        .await?;
    let json = found.ok_or_else(|| Error::not_found("Account data not found"))?;
    serde_json::from_str(&json).map_err(|err| Error::internal(err.to_string()))
}

/// Stores a receipt after checking the user is joined and the event is in the room.
pub async fn store_receipt(
    server: &Server,
    user: &UserId,
    room: &RoomId,
    receipt_type: String,
    event: &EventId,
    thread_id: String,
) -> Result<()> {
    let (user, room, event) = (user.to_string(), room.to_string(), event.to_string());
    let own = server.server_name().to_string();
    let receivers = super::appservice::ephemeral::receivers(&server.appservices.all());
    let any_receiver = !receivers.is_empty();
    let stored = server
        .store
        .write(move |tx| {
            if super::membership::current(tx, &room, &user)?
                != Some(super::membership::Membership::Join)
            {
                return Err(Error::forbidden("You are not joined to this room"));
            }
            if events::get_room_event(tx, &room, &event)?.is_none() {
                return Err(Error::not_found("Event not found in this room"));
            }
            // A receipt is for the room (the reader is joined, checked above), and so is
            // the reader's own `m.fully_read` marker.
            let pos = tx.next_stream_pos(Audience::Room(&room));
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
            let mut data = json!({"ts": receipt.ts});
            if !receipt.thread_id.is_empty() {
                data["thread_id"] = json!(receipt.thread_id);
            }
            super::appservice::ephemeral::room_edu_in_tx(
                tx,
                &receivers,
                &own,
                &room,
                &super::appservice::ephemeral::receipt_event(
                    &room,
                    &receipt.event_id,
                    &receipt.receipt_type,
                    &receipt.user_id,
                    data,
                ),
            )?;
            if receipt.receipt_type == "m.read" {
                outbox::enqueue_edu_for_room(
                    tx,
                    &own,
                    &room,
                    &receipt_edu(&room, &receipt),
                    now_ms(),
                )?;
            }
            Ok(())
        })
        .await;
    if any_receiver {
        server.appservice_kicker.kick();
    }
    stored
}

/// The `m.receipt` EDU that tells a room's other units about a local user's read receipt.
fn receipt_edu(room_id: &str, receipt: &Receipt) -> String {
    let mut data = json!({"ts": receipt.ts});
    if !receipt.thread_id.is_empty() {
        data["thread_id"] = json!(receipt.thread_id);
    }
    json!({
        "edu_type": "m.receipt",
        "content": { room_id: { "m.read": { receipt.user_id.clone(): {"event_ids": [receipt.event_id], "data": data} } } },
    })
    .to_string()
}

/// The users listed in the user's `m.ignored_user_list` account data.
pub fn ignored_users(conn: &rusqlite::Connection, user_id: &str) -> Result<Vec<String>> {
    let Some(raw) = misc::get_account_data(conn, user_id, "", "m.ignored_user_list")? else {
        return Ok(Vec::new());
    };
    let content: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
    Ok(content
        .get("ignored_users")
        .and_then(Value::as_object)
        .map(|users| users.keys().cloned().collect())
        .unwrap_or_default())
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
pub async fn edit_tag(
    server: &Server,
    user: &UserId,
    room: &RoomId,
    tag: String,
    info: Option<Value>,
) -> Result<()> {
    let (user, room) = (user.to_string(), room.to_string());
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
                let pos = tx.next_stream_pos(Audience::User(&user));
                let content = json!({"tags": tags}).to_string();
                misc::set_account_data(tx, &user, &room, "m.tag", &content, pos)?;
            }
            Ok(())
        })
        .await
}

/// The `tags` map of a room's `m.tag` account data (empty when unset).
pub async fn tags(server: &Server, user: &UserId, room: &RoomId) -> Result<Map<String, Value>> {
    let (user, room) = (user.to_string(), room.to_string());
    server
        .store
        .read(move |conn| tags_of(conn, &user, &room))
        .await
}
