//! Room operations that may reach another unit: `/createRoom` with invitees on other units,
//! and carrying out a checked state request that is a remote invite. Both start from the
//! domain service (`rooms`, `state_request`) and add the remote part, so the domain services
//! never call federation behaviour.

use ruma::{OwnedRoomId, OwnedUserId};

use crate::error::Result;
use crate::service::Server;
use crate::service::rooms::{self, CreateRoom};
use crate::service::state_request::StateRequest;
use crate::store::wake::Audience;

use super::*;
use crate::matrix::wire::{InviteRequest, InviteResponse};

/// Creates a room ([`rooms::create_room`]) and then invites the users of other units in
/// `req.invite` through their unit, which countersigns the invite. A failed remote invite is
/// logged; the room stands.
pub async fn create_room(
    server: &Server,
    creator: OwnedUserId,
    req: CreateRoom,
) -> Result<OwnedRoomId> {
    let own = server.server_name().to_owned();
    let remote: Vec<OwnedUserId> = req
        .invite
        .iter()
        .filter(|u| u.server_name() != own)
        .cloned()
        .collect();
    let is_direct = req.is_direct;
    let inviter = creator.clone();
    let room_id = rooms::create_room(server, creator, req).await?;
    for target in remote {
        if let Err(err) = invite_remote(
            server,
            room_id.clone(),
            inviter.clone(),
            target.clone(),
            is_direct,
        )
        .await
        {
            tracing::warn!(room = %room_id, user = %target, error = %err, "invite from createRoom failed");
        }
    }
    Ok(room_id)
}

/// Carries out a checked state request as `sender` and returns the event ID.
pub async fn carry_out(
    server: &Server,
    room: OwnedRoomId,
    sender: OwnedUserId,
    request: StateRequest,
) -> Result<ruma::OwnedEventId> {
    match request {
        StateRequest::Local(event) => rooms::send(server, room, sender, event, None).await,
        StateRequest::RemoteInvite { target, is_direct } => {
            invite_remote(server, room, sender, target, is_direct).await
        }
    }
}

/// Invites a user of another unit: the invitee's server countersigns the invite before it
/// enters the room.
pub async fn invite_remote(
    server: &Server,
    room_id: OwnedRoomId,
    sender: OwnedUserId,
    target: OwnedUserId,
    is_direct: bool,
) -> Result<OwnedEventId> {
    invite_remote_checked(server, room_id, sender, target, is_direct, |_| Ok(())).await
}

/// [`invite_remote`], with `check` (a precondition on the room's current state) run in the
/// writer transaction that builds the invite event, so nothing can change between the check
/// and the event's place in the room.
pub async fn invite_remote_checked(
    server: &Server,
    room_id: OwnedRoomId,
    sender: OwnedUserId,
    target: OwnedUserId,
    is_direct: bool,
    check: impl FnOnce(&crate::store::WriteTx<'_>) -> Result<()> + Send + 'static,
) -> Result<OwnedEventId> {
    let target_server = target.server_name().to_string();
    if !server.peers.contains(&target_server) {
        return Err(Error::forbidden(format!(
            "{target_server} is not an allow-listed peer of this unit"
        )));
    }
    let signer = Arc::clone(&server.signer);
    let (room, inviter, invitee) = (room_id.clone(), sender.clone(), target.clone());
    let (pdu, version, stripped) = server
        .store
        .write(move |tx| {
            check(tx)?;
            let event = NewEvent::state(
                TimelineEventType::RoomMember,
                invitee.as_str(),
                if is_direct {
                    json!({"membership": "invite", "is_direct": true})
                } else {
                    json!({"membership": "invite"})
                },
            );
            let pdu = rooms::build_checked_in_tx(tx, &signer, &room, &inviter, event)?;
            let version = state::get_room(tx, room.as_str())?
                .map(|r| r.room_version)
                .ok_or_else(|| Error::not_found("Unknown room"))?;
            let mut stripped = Vec::new();
            for kind in crate::matrix::client_format::STRIPPED_STATE_TYPES {
                if let Some(id) = state::current_state_id(tx, room.as_str(), kind, "")?
                    && let Some(event) = events::get_event(tx, &id)?
                {
                    stripped.push(to_stripped_state(&event.pdu));
                }
            }
            stripped.push(to_stripped_state(&pdu));
            Ok((pdu, version, stripped))
        })
        .await?;
    let path = format!(
        "/_matrix/federation/v2/invite/{}/{}",
        urlencode(room_id.as_str()),
        urlencode(pdu.event_id.as_str())
    );
    let body = json!({
        "event": serde_json::from_str::<Value>(&pdu.json).map_err(|e| Error::internal(e.to_string()))?,
        "room_version": version,
        "invite_room_state": stripped,
    });
    let response: InviteResponse = server
        .federation
        .request_as(&target_server, Method::PUT, &path, Some(body))
        .await
        .map_err(fed_error)?;
    let countersigned = verify(server, &version, &response.event)?;
    if countersigned.event_id != pdu.event_id {
        return Err(Error::forbidden(format!(
            "{target_server} returned a different invite event"
        )));
    }
    let signer = Arc::clone(&server.signer);
    let event = countersigned.clone();
    let outcome = server
        .store
        .write(move |tx| {
            let outcome = accept_in_tx(tx, &event, None)?;
            if let Ok(Outcome::Accepted) = outcome {
                enqueue_for_peers_in_tx(tx, &signer, &event, Some(&target_server))?;
            }
            Ok(outcome)
        })
        .await?;
    match outcome {
        Ok(Outcome::Accepted) | Ok(Outcome::AlreadyKnown) => Ok(countersigned.event_id.clone()),
        Ok(other) => Err(Error::forbidden(format!("invite not accepted: {other:?}"))),
        Err(missing) => Err(Error::internal(format!("invite incomplete: {missing}"))),
    }
}

/// `PUT /v2/invite` (invitee side): checks the invite, countersigns it, and shows it to the
/// invited local user.
pub async fn receive_invite(
    server: &Server,
    origin: &str,
    room_id: OwnedRoomId,
    event_id: &str,
    body: InviteRequest,
) -> Result<InviteResponse> {
    let InviteRequest {
        room_version: version,
        event: value,
        invite_room_state,
    } = body;
    let (_, rules) = room_rules(&version)?;
    let pdu = verify_pdu(&server.peers, &server.signer, &rules, object_of(&value)?)?;
    if pdu.event_id.as_str() != event_id || pdu.room_id != room_id {
        return Err(Error::bad_json("event does not match the request path"));
    }
    let target = pdu.state_key.clone().unwrap_or_default();
    if pdu.kind != TimelineEventType::RoomMember
        || pdu
            .content_value()
            .get("membership")
            .and_then(Value::as_str)
            != Some("invite")
        || target.split_once(':').map(|(_, s)| s) != Some(server.server_name().as_str())
    {
        return Err(Error::bad_json("not an invite for a user of this unit"));
    }
    if pdu.sender.server_name().as_str() != origin {
        return Err(Error::forbidden(
            "invites must come from the inviter's own server",
        ));
    }
    let user = target.clone();
    if server
        .store
        .read(move |conn| crate::store::accounts::get_user(conn, &user))
        .await?
        .is_none()
    {
        return Err(Error::not_found(format!("no user {target} here")));
    }
    let mut object = object_of(&value)?;
    object.remove("unsigned");
    ruma::signatures::sign_event(
        server.server_name().as_str(),
        server.signer.key.pair(),
        &mut object,
        &rules.redaction,
    )
    .map_err(|e| Error::internal(e.to_string()))?;
    let signed_json = serde_json::to_string(&object).map_err(|e| Error::internal(e.to_string()))?;
    let signed = Pdu::parse(pdu.event_id.clone(), signed_json.clone(), false)
        .map_err(|e| Error::internal(e.to_string()))?;
    let stripped = Value::from(invite_room_state.unwrap_or_default()).to_string();
    let creator = pdu.sender.to_string();
    server
        .store
        .write(move |tx| {
            let room = signed.room_id.as_str();
            if state::get_room(tx, room)?.is_none() {
                state::create_room(tx, room, &version, &creator, now_ms())?;
            }
            if dag::participating(tx, room)? {
                // We are in the room already: the invite arrives like any other event.
                return Ok(());
            }
            if !dag::have_event(tx, signed.event_id.as_str())? {
                let pos = tx.next_stream_pos(Audience::Member {
                    room,
                    user: &target,
                });
                dag::insert_outlier(tx, &signed, pos)?;
                state::record_membership_change(tx, pos, room, &target, "invite")?;
            }
            dag::store_remote_invite(tx, room, &target, signed.event_id.as_str(), &stripped)
        })
        .await?;
    // The PDU we just signed, returned as the value every PDU is.
    let event = serde_json::from_str::<Value>(&signed_json)
        .map_err(|e| Error::internal(format!("countersigned invite: {e}")))?;
    Ok(InviteResponse { event })
}

/// Rejects an invite from another unit: `make_leave` → sign → `send_leave` through the
/// inviter's unit, then shows the room as left.
pub async fn reject_remote_invite(
    server: &Server,
    room_id: OwnedRoomId,
    user_id: OwnedUserId,
) -> Result<()> {
    let (room, user) = (room_id.to_string(), user_id.to_string());
    let invite = server
        .store
        .read(move |conn| dag::remote_invite(conn, &room, &user))
        .await?;
    let Some(dag::RemoteInvite {
        event_id: invite_id,
        ..
    }) = invite
    else {
        return Err(Error::forbidden("You are not invited to this room"));
    };
    let id = invite_id.clone();
    let invite_event = server
        .store
        .read(move |conn| events::get_event(conn, &id))
        .await?
        .ok_or_else(|| Error::internal("stored invite missing"))?;
    let inviter = invite_event.pdu.sender.server_name().to_string();
    let version = version_of(server, room_id.as_str())
        .await?
        .ok_or_else(|| Error::internal("invited room missing"))?;
    // The `send_leave` answer is `{}`; nothing in it is used.
    let (leave, _, _): (Pdu, String, serde::de::IgnoredAny) = membership_handshake(
        server,
        &inviter,
        &room_id,
        &user_id,
        "leave",
        "",
        json!({"membership": "leave"}),
        Some(&version),
    )
    .await?;
    server
        .store
        .write(move |tx| {
            if !dag::have_event(tx, leave.event_id.as_str())? {
                let pos = tx.next_stream_pos(Audience::of_event(&leave));
                dag::insert_outlier(tx, &leave, pos)?;
                state::record_membership_change(
                    tx,
                    pos,
                    leave.room_id.as_str(),
                    user_id.as_str(),
                    "leave",
                )?;
            }
            Ok(())
        })
        .await
}
