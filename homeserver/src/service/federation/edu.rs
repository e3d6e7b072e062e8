//! EDUs received from peers: receipts, typing notices, presence, to-device messages and
//! device-list updates. (The receipts and typing notices this unit sends are queued by the
//! domain services themselves, through `store::outbox::enqueue_edu_for_room`.)
//!
//! Each content is parsed as its `matrix::edu` type first: a malformed EDU (a required field
//! missing or of the wrong type) is an error here, which `receive` logs with the origin and
//! the EDU type before going on with the transaction's other EDUs.

use super::*;
use crate::matrix::edu::{EduContent, Receipts, Typing};
use crate::matrix::wire::Edu;
use crate::store::wake::Audience;

/// Handles an EDU: receipts and typing notices for rooms the origin's users are joined to,
/// presence, to-device messages, device-list and cross-signing updates; other types are
/// ignored. A malformed content is `M_BAD_JSON`; an update about a user of another server
/// than the origin is `M_FORBIDDEN` (a receipt's is skipped on its own).
pub(super) async fn receive_edu(server: &Server, origin: &str, edu: &Edu) -> Result<()> {
    let content = EduContent::parse(edu)
        .map_err(|err| Error::bad_json(format!("malformed {} EDU: {err}", edu.edu_type)))?;
    let of_origin = |user: &UserId| {
        if user.server_name().as_str() == origin {
            Ok(())
        } else {
            Err(Error::forbidden(format!(
                "{} EDU about {user}, a user of another server",
                edu.edu_type
            )))
        }
    };
    match content {
        EduContent::Typing(typing) => {
            of_origin(&typing.user_id)?;
            receive_typing(server, typing).await
        }
        EduContent::Receipt(receipts) => receive_receipts(server, origin, receipts).await,
        EduContent::Presence(presence) => {
            crate::service::presence::receive(server, origin, presence).await
        }
        EduContent::DirectToDevice(message) => {
            of_origin(&message.sender)?;
            crate::service::e2ee::receive_to_device(server, message).await
        }
        EduContent::DeviceListUpdate(update) => {
            of_origin(&update.user_id)?;
            crate::service::e2ee::receive_device_list_update(server, update).await
        }
        EduContent::SigningKeyUpdate(update) => {
            of_origin(&update.user_id)?;
            crate::service::e2ee::receive_signing_key_update(server, update).await
        }
        EduContent::Unknown => Ok(()),
    }
}

/// Handles a peer's `m.receipt` EDU: the read receipts of the origin's users in rooms they are
/// joined to (others are skipped), in one write.
async fn receive_receipts(server: &Server, origin: &str, receipts: Receipts) -> Result<()> {
    let mut rows = Vec::new();
    for (room_id, room) in receipts {
        for (user_id, receipt) in room.read {
            if user_id.server_name().as_str() != origin {
                tracing::debug!(origin, user = %user_id, "skipped a receipt of another server's user");
                continue;
            }
            let [event_id] = receipt.event_ids;
            let receipt = misc::Receipt {
                receipt_type: "m.read".to_owned(),
                user_id: user_id.to_string(),
                // Absent: unthreaded, stored as "".
                thread_id: receipt.data.thread_id.unwrap_or_default(),
                event_id: event_id.to_string(),
                ts: receipt.data.ts,
            };
            rows.push((room_id.to_string(), receipt));
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    server
        .store
        .write(move |tx| {
            for (room, receipt) in &rows {
                if state::membership(tx, room, &receipt.user_id)?.as_deref() != Some("join") {
                    continue;
                }
                let pos = tx.next_stream_pos(Audience::Room(room));
                misc::set_receipt(tx, room, receipt, pos)?;
            }
            Ok(())
        })
        .await
}

/// Handles a peer's `m.typing` EDU (its user already checked to be the origin's): the user
/// starts or stops typing in a room they are joined to (ignored otherwise), for 30 s at most.
async fn receive_typing(server: &Server, typing: Typing) -> Result<()> {
    let (room, user) = (typing.room_id.as_str(), typing.user_id.as_str());
    let (r, u) = (room.to_owned(), user.to_owned());
    let joined = server
        .store
        .read(move |conn| Ok(state::membership(conn, &r, &u)?.as_deref() == Some("join")))
        .await?;
    if joined
        && server.typing.set(
            &typing.room_id,
            &typing.user_id,
            typing.typing,
            std::time::Duration::from_secs(30),
        )
    {
        // `None`: the room's entry is gone, nobody types there.
        let now = server
            .typing
            .changed_since(&typing.room_id, 0)
            .unwrap_or_default();
        crate::service::appservice::ephemeral::typing_changed(server, vec![(room.to_owned(), now)])
            .await;
    }
    Ok(())
}
