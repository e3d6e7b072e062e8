//! Ephemeral data for appservices that set `receive_ephemeral` (spec v1.13 / MSC2409):
//! typing notices and read receipts of rooms the appservice is interested in, presence of
//! users in its namespaces or sharing such a room, and to-device messages to users in its
//! namespaces. Each domain service calls the `*_in_tx` function here in the write that
//! records the change, so the item is queued ([`crate::store::appservice`]) exactly when the
//! change is durable; the sender puts it in its next transaction under both the stable key
//! and the MSC2409 one.
//!
//! Typing is queued on every change of a room's typing set: a user starting or stopping
//! (locally or on a peer) and a notice expiring ([`typing_changed`]).
//!
//! For appservices that set `org.matrix.msc3202` (encrypted bridges), a change of the one-time
//! key counts or unused fallback key types of a device of a user in its namespace (an upload,
//! a claim) queues that device ([`keys_changed_in_tx`]); the transaction then carries the
//! counts as they are when it is formed. Device-list changes need no queue: they are on the
//! event stream, and the sender reads them for the stream range a transaction covers
//! ([`super::push`]).

use std::sync::Arc;

use serde_json::{Value, json};

use crate::error::Result;
use crate::matrix::appservice::Registration;
use crate::service::Server;
use crate::store::{WriteTx, appservice as store, state};
use crate::util::now_ms;

use super::push::room_is_interesting;

/// The registrations that receive ephemeral data (and have somewhere to send it).
pub fn receivers(all: &[Arc<Registration>]) -> Vec<Arc<Registration>> {
    all.iter()
        .filter(|r| r.receive_ephemeral && r.url.is_some())
        .cloned()
        .collect()
}

/// The registrations that receive MSC3202's device lists and key counts (and have somewhere
/// to send them).
pub fn msc3202_receivers(all: &[Arc<Registration>]) -> Vec<Arc<Registration>> {
    all.iter()
        .filter(|r| r.msc3202 && r.url.is_some())
        .cloned()
        .collect()
}

/// Queues `user_id`'s device `device_id`, whose one-time key counts or unused fallback key
/// types changed, for each MSC3202 receiver whose user namespace holds the user; whether any
/// was queued (the caller then kicks the senders).
pub fn keys_changed_in_tx(
    tx: &WriteTx<'_>,
    receivers: &[Arc<Registration>],
    server_name: &str,
    user_id: &str,
    device_id: &str,
) -> Result<bool> {
    let mut queued = false;
    let payload = json!({"user_id": user_id, "device_id": device_id}).to_string();
    for reg in receivers {
        if reg.may_masquerade_as(user_id, server_name) {
            store::enqueue_ephemeral(tx, &reg.id, store::KEYS_SECTION, &payload, now_ms())?;
            queued = true;
        }
    }
    Ok(queued)
}

/// Queues, for the appservices that receive ephemeral data, the `m.typing` event of each of
/// `rooms` with who types there now: called when typing changed other than through
/// [`crate::service::typing::set_typing`] (a notice expiring, a peer's typing EDU). A failure
/// is logged: typing is ephemeral and the next change is sent anyway.
pub async fn typing_changed(server: &Server, rooms: Vec<(String, Vec<String>)>) {
    let receivers = receivers(&server.appservices.all());
    if receivers.is_empty() || rooms.is_empty() {
        return;
    }
    let own = server.server_name().to_string();
    let queued = server
        .store
        .write(move |tx| {
            let mut queued = false;
            for (room_id, users) in &rooms {
                let event = typing_event(room_id, users);
                queued |= room_edu_in_tx(tx, &receivers, &own, room_id, &event)?;
            }
            Ok(queued)
        })
        .await;
    match queued {
        Ok(true) => server.appservice_kicker.kick(),
        Ok(false) => {}
        Err(err) => tracing::warn!(error = %err, "could not queue typing for appservices"),
    }
}

/// Queues an `m.typing` or `m.receipt` event of `room_id` for each receiver interested in the
/// room; whether any was queued (the caller then kicks the senders).
pub fn room_edu_in_tx(
    tx: &WriteTx<'_>,
    receivers: &[Arc<Registration>],
    server_name: &str,
    room_id: &str,
    event: &Value,
) -> Result<bool> {
    let mut queued = false;
    let payload = event.to_string();
    for reg in receivers {
        if room_is_interesting(tx, reg, server_name, room_id)? {
            store::enqueue_ephemeral(tx, &reg.id, "ephemeral", &payload, now_ms())?;
            queued = true;
        }
    }
    Ok(queued)
}

/// The `m.typing` event of a room with who is typing there now.
pub fn typing_event(room_id: &str, user_ids: &[String]) -> Value {
    json!({"type": "m.typing", "room_id": room_id, "content": {"user_ids": user_ids}})
}

/// The `m.receipt` event of one receipt.
pub fn receipt_event(
    room_id: &str,
    event_id: &str,
    kind: &str,
    user_id: &str,
    data: Value,
) -> Value {
    json!({
        "type": "m.receipt",
        "room_id": room_id,
        "content": {event_id: {kind: {user_id: data}}},
    })
}

/// Queues an `m.presence` event of `user_id` for each receiver whose namespace holds the user
/// or one of the rooms the user is joined to.
pub fn presence_in_tx(
    tx: &WriteTx<'_>,
    receivers: &[Arc<Registration>],
    server_name: &str,
    user_id: &str,
    content: &Value,
) -> Result<bool> {
    if receivers.is_empty() {
        return Ok(false);
    }
    let payload = json!({"type": "m.presence", "sender": user_id, "content": content}).to_string();
    let rooms = state::rooms_with_membership(tx, user_id, "join")?;
    let mut queued = false;
    for reg in receivers {
        let mut wants = reg.may_masquerade_as(user_id, server_name);
        for room in &rooms {
            if wants {
                break;
            }
            wants = room_is_interesting(tx, reg, server_name, room)?;
        }
        if wants {
            store::enqueue_ephemeral(tx, &reg.id, "ephemeral", &payload, now_ms())?;
            queued = true;
        }
    }
    Ok(queued)
}

/// Queues one to-device message to `to_user`'s `to_device` for each receiver whose user
/// namespace holds `to_user` (MSC2409's format: `to_user_id` and `to_device_id` added).
pub fn to_device_in_tx(
    tx: &WriteTx<'_>,
    receivers: &[Arc<Registration>],
    server_name: &str,
    message: (&str, &str, &Value),
    to_user: &str,
    to_device: &str,
) -> Result<bool> {
    let (sender, event_type, content) = message;
    let mut queued = false;
    for reg in receivers {
        if reg.may_masquerade_as(to_user, server_name) {
            let payload = json!({
                "type": event_type,
                "sender": sender,
                "content": content,
                "to_user_id": to_user,
                "to_device_id": to_device,
            })
            .to_string();
            store::enqueue_ephemeral(tx, &reg.id, "to_device", &payload, now_ms())?;
            queued = true;
        }
    }
    Ok(queued)
}
