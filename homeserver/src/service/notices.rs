//! Server notices (spec: "Server Notices"): the admin's messages to users, sent from the
//! reserved `@server-notices` account into one room per user that only that account may post
//! in, tagged `m.server_notice` so clients show it apart.

use ruma::events::TimelineEventType;
use ruma::{OwnedRoomId, OwnedUserId};
use serde_json::json;

use super::Server;
use super::rooms::{CreateRoom, create_room, send};
use crate::error::{Error, Result};
use crate::matrix::build::NewEvent;
use crate::store::wake::Audience;
use crate::store::{accounts, misc, state};
use crate::util::now_ms;

/// The localpart of the account notices come from; users may not register it.
pub const SENDER_LOCALPART: &str = "server-notices";

/// The notices sender of this unit.
pub fn sender(server: &Server) -> Result<OwnedUserId> {
    OwnedUserId::try_from(format!("@{SENDER_LOCALPART}:{}", server.server_name()))
        .map_err(|err| Error::internal(err.to_string()))
}

/// Sends `body` as a server notice to the local user `user`; returns the event ID.
pub async fn send_notice(server: &Server, user: OwnedUserId, body: String) -> Result<String> {
    if user.server_name() != server.server_name() {
        return Err(Error::invalid_param(
            "server notices go to local users only",
        ));
    }
    let from = sender(server)?;
    let (target, notices) = (user.to_string(), from.to_string());
    let room = server
        .store
        .write(move |tx| {
            match accounts::get_user(tx, &target)? {
                Some(row) if !row.deactivated => {}
                _ => return Err(Error::not_found(format!("{target} is not an active user"))),
            }
            // The sender has no password: nobody can log in as it.
            accounts::create_user(tx, &notices, None, now_ms())?;
            let room = misc::notice_room(tx, &target)?;
            // A room the user left is replaced by a fresh one.
            Ok(room.filter(|room| {
                matches!(
                    state::membership(tx, room, &target)
                        .ok()
                        .flatten()
                        .as_deref(),
                    Some("join" | "invite")
                )
            }))
        })
        .await?;
    let room = match room {
        Some(room) => {
            OwnedRoomId::try_from(room).map_err(|err| Error::internal(err.to_string()))?
        }
        None => new_notices_room(server, &from, &user).await?,
    };
    let event = send(
        server,
        room,
        from,
        NewEvent::message(
            TimelineEventType::RoomMessage,
            json!({"msgtype": "m.server_notice", "body": body}),
        ),
        None,
    )
    .await?;
    tracing::info!(user = %user, "server notice sent");
    Ok(event.to_string())
}

/// Creates a user's notices room: private, only the sender may post, the user invited and
/// the room tagged `m.server_notice` in the user's account data.
async fn new_notices_room(
    server: &Server,
    from: &OwnedUserId,
    user: &OwnedUserId,
) -> Result<OwnedRoomId> {
    let mut power = serde_json::Map::new();
    power.insert("events_default".to_owned(), json!(100));
    power.insert("state_default".to_owned(), json!(100));
    power.insert("invite".to_owned(), json!(100));
    let room = create_room(
        server,
        from.clone(),
        CreateRoom {
            version: None,
            creation_content: serde_json::Map::new(),
            preset: Some("private_chat".to_owned()),
            name: Some("Server notices".to_owned()),
            topic: Some("Messages from the administrator of this unit".to_owned()),
            alias: None,
            invite: vec![user.clone()],
            initial_state: Vec::new(),
            power_level_override: Some(power),
            is_direct: false,
            public: false,
        },
    )
    .await?;
    let (target, room_key) = (user.to_string(), room.to_string());
    server
        .store
        .write(move |tx| {
            misc::set_notice_room(tx, &target, &room_key)?;
            let pos = tx.next_stream_pos(Audience::User(&target));
            misc::set_account_data(
                tx,
                &target,
                &room_key,
                "m.tag",
                &json!({"tags": {"m.server_notice": {"order": 0.1}}}).to_string(),
                pos,
            )
        })
        .await?;
    Ok(room)
}
