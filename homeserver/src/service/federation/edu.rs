//! EDUs received from peers: receipts, typing notices, presence, to-device messages and
//! device-list updates. (The receipts and typing notices this unit sends are queued by the
//! domain services themselves, through `store::outbox::enqueue_edu_for_room`.)

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

/// Handles a peer's `m.typing` EDU: a user of the origin starts or stops typing in a room
/// they are joined to (ignored otherwise), for 30 s at most.
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
    if joined
        && server
            .typing
            .set(room, user, typing, std::time::Duration::from_secs(30))
    {
        let now = server.typing.changed_since(room, 0).unwrap_or_default();
        crate::service::appservice::ephemeral::typing_changed(server, vec![(room.to_owned(), now)])
            .await;
    }
    Ok(())
}
