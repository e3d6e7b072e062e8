//! EDUs in both directions: receipts, typing notices, presence, to-device messages and
//! device-list updates received from peers, and the receipts and typing notices this unit
//! queues for the peers in a room.

use super::*;

/// Handles an EDU: receipts and typing notices for rooms the origin's users are joined to,
/// presence, to-device messages, device-list and cross-signing updates; other types are
/// ignored.
pub(super) async fn receive_edu(
    server: &Server,
    origin: &str,
    edu: &crate::matrix::wire::Edu,
) -> Result<()> {
    let kind = edu.edu_type.as_str();
    let content = &edu.content;
    match kind {
        "m.typing" => return receive_typing(server, origin, content).await,
        "m.direct_to_device" => {
            return crate::service::e2ee::receive_to_device(server, origin, content).await;
        }
        "m.device_list_update" => {
            return crate::service::e2ee::receive_device_list_update(server, origin, content).await;
        }
        "m.signing_key_update" => {
            return crate::service::e2ee::receive_signing_key_update(server, origin, content).await;
        }
        "m.presence" => return crate::service::presence::receive(server, origin, content).await,
        "m.receipt" => {}
        _ => return Ok(()),
    }
    let Some(rooms) = content.as_object() else {
        return Ok(());
    };
    for (room_id, by_type) in rooms {
        let Some(reads) = by_type.get("m.read").and_then(Value::as_object) else {
            continue;
        };
        for (user_id, receipt) in reads {
            if user_id.split_once(':').map(|(_, s)| s) != Some(origin) {
                continue;
            }
            let Some(event_id) = receipt
                .get("event_ids")
                .and_then(Value::as_array)
                .and_then(|ids| ids.first())
                .and_then(Value::as_str)
            else {
                continue;
            };
            let ts = receipt
                .get("data")
                .and_then(|d| d.get("ts"))
                .and_then(Value::as_i64)
                .unwrap_or_else(now_ms);
            let thread = receipt
                .get("data")
                .and_then(|d| d.get("thread_id"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let (room, user, event) = (room_id.clone(), user_id.clone(), event_id.to_owned());
            server
                .store
                .write(move |tx| {
                    if state::membership(tx, &room, &user)?.as_deref() != Some("join") {
                        return Ok(());
                    }
                    let pos = tx.next_stream_pos();
                    let receipt = misc::Receipt {
                        receipt_type: "m.read".to_owned(),
                        user_id: user,
                        thread_id: thread,
                        event_id: event,
                        ts,
                    };
                    misc::set_receipt(tx, &room, &receipt, pos)
                })
                .await?;
        }
    }
    Ok(())
}

/// Queues an `m.receipt` EDU for every other server with members in the room.
pub fn enqueue_receipt_in_tx(
    tx: &crate::store::WriteTx<'_>,
    own: &str,
    room_id: &str,
    receipt: &misc::Receipt,
) -> Result<()> {
    let servers: BTreeSet<String> = state::members_with(tx, room_id, "join")?
        .iter()
        .filter_map(|u| u.split_once(':').map(|(_, s)| s.to_owned()))
        .filter(|s| s != own)
        .collect();
    if servers.is_empty() {
        return Ok(());
    }
    let mut data = json!({"ts": receipt.ts});
    if !receipt.thread_id.is_empty() {
        data["thread_id"] = json!(receipt.thread_id);
    }
    let edu = json!({
        "edu_type": "m.receipt",
        "content": { room_id: { "m.read": { receipt.user_id.clone(): {"event_ids": [receipt.event_id], "data": data} } } },
    })
    .to_string();
    let now = now_ms();
    for server in servers {
        outbox::enqueue(tx, &server, "edu", &edu, now)?;
    }
    Ok(())
}

pub(super) async fn receive_typing(server: &Server, origin: &str, content: &Value) -> Result<()> {
    let (Some(room), Some(user)) = (
        content.get("room_id").and_then(Value::as_str),
        content.get("user_id").and_then(Value::as_str),
    ) else {
        return Err(Error::bad_json("typing EDU without room_id or user_id"));
    };
    if user.split_once(':').map(|(_, s)| s) != Some(origin) {
        return Err(Error::forbidden("typing EDU for a user of another server"));
    }
    let typing = content
        .get("typing")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let (r, u) = (room.to_owned(), user.to_owned());
    let joined = server
        .store
        .read(move |conn| Ok(state::membership(conn, &r, &u)?.as_deref() == Some("join")))
        .await?;
    if joined {
        server
            .typing
            .set(room, user, typing, std::time::Duration::from_secs(30));
    }
    Ok(())
}

/// Tells the other servers in the room that a local user started or stopped typing.
pub async fn send_typing(
    server: &Server,
    room_id: &str,
    user_id: &str,
    typing: bool,
) -> Result<()> {
    let own = server.server_name().to_string();
    let (room, user) = (room_id.to_owned(), user_id.to_owned());
    server
        .store
        .write(move |tx| {
            let servers: BTreeSet<String> = state::members_with(tx, &room, "join")?
                .iter()
                .filter_map(|u| u.split_once(':').map(|(_, s)| s.to_owned()))
                .filter(|s| *s != own)
                .collect();
            let edu = json!({"edu_type": "m.typing", "content": {"room_id": room, "user_id": user, "typing": typing}}).to_string();
            let now = now_ms();
            for server in servers {
                outbox::enqueue(tx, &server, "edu", &edu, now)?;
            }
            Ok(())
        })
        .await
}
