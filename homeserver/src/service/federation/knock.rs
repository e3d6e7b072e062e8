//! Knocking over federation (spec: Server-Server API, "Knocking upon a room"), both sides.
//!
//! Resident side: `make_knock` hands a remote user a template when the room's join rule admits
//! knocks, and `send_knock` accepts the signed knock into the room (its members see it like any
//! member event; other servers in the room receive it through the outbox) and answers with the
//! room's `knock_room_state`.
//!
//! Knocking side: a local user knocks on a room this unit does not hold through an allow-listed
//! resident; the knock is kept as an outlier with the stripped state the resident sent, so
//! `/sync` lists the room under `rooms.knock`. An invite that answers the knock arrives through
//! `invite` v2 and the join through `make_join`/`send_join` like any other remote join; a knock
//! is rescinded through `make_leave`/`send_leave`.

use std::collections::BTreeSet;

use ruma::events::TimelineEventType;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Server, accept_membership, ask_to_enter, membership_handshake, room_rules, verify};
use crate::error::{Error, ErrorCode, Result};
use crate::matrix::client_format::{StrippedState, to_stripped_state};
use crate::matrix::pdu::Pdu;
use crate::matrix::wire::{MakeMembershipAnswer, SendKnockResponse};
use crate::service::rooms;
use crate::store::wake::Audience;
use crate::store::{dag, events, state};
use crate::util::now_ms;

/// The join rule of a room this unit holds, and its version.
async fn join_rule_and_version(server: &Server, room_id: &RoomId) -> Result<(String, String)> {
    let room = room_id.to_owned();
    server
        .store
        .read(move |conn| {
            let info = state::get_room(conn, room.as_str())?
                .ok_or_else(|| Error::not_found("Unknown room"))?;
            if !dag::participating(conn, room.as_str())? {
                return Err(Error::not_found("This unit is not in that room"));
            }
            let rule = match state::current_state_id(conn, room.as_str(), "m.room.join_rules", "")?
            {
                Some(id) => events::get_event(conn, &id)?
                    .and_then(|e| {
                        e.pdu
                            .content_value()
                            .get("join_rule")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .unwrap_or_else(|| "invite".to_owned()),
                None => "invite".to_owned(),
            };
            Ok((rule, info.room_version))
        })
        .await
}

/// # `make_knock` (resident side)
/// A template for a remote user's knock. Refuses rooms whose version has no knocking or that
/// the knocking server does not support (`M_INCOMPATIBLE_ROOM_VERSION`), and rooms whose join
/// rule is not `knock` or `knock_restricted` (`M_FORBIDDEN`); the auth rules then get the last
/// word (a banned user, say) when the template is built.
pub async fn make_knock(
    server: &Server,
    origin: &str,
    room_id: OwnedRoomId,
    user_id: OwnedUserId,
    versions: Vec<String>,
) -> Result<MakeMembershipAnswer> {
    let (rule, version) = join_rule_and_version(server, &room_id).await?;
    let (_, rules) = room_rules(&version)?;
    if !rules.authorization.knocking {
        return Err(Error::new(
            ErrorCode::IncompatibleRoomVersion,
            format!("room version {version} does not support knocking"),
        ));
    }
    if !versions.contains(&version) {
        return Err(Error::new(
            ErrorCode::IncompatibleRoomVersion,
            format!("the knocking server does not support room version {version}"),
        ));
    }
    let knockable = rule == "knock"
        || (rule == "knock_restricted" && rules.authorization.knock_restricted_join_rule);
    if !knockable {
        return Err(Error::forbidden(format!(
            "this room does not accept knocks (its join rule is {rule})"
        )));
    }
    super::make_membership_template(server, origin, room_id, user_id, "knock", versions).await
}

/// # `send_knock` (resident side)
/// Accepts a remote user's signed knock and answers with the room's `knock_room_state` as full
/// PDUs (spec v1.16+), so the knocking server can check them.
pub async fn receive_knock(
    server: &Server,
    origin: &str,
    room_id: OwnedRoomId,
    event_id: &str,
    value: Value,
) -> Result<SendKnockResponse> {
    let (rule, _) = join_rule_and_version(server, &room_id).await?;
    if !matches!(rule.as_str(), "knock" | "knock_restricted") {
        return Err(Error::forbidden(format!(
            "this room does not accept knocks (its join rule is {rule})"
        )));
    }
    let pdu = accept_membership(server, origin, &room_id, value, "knock", Some(event_id)).await?;
    let signer = std::sync::Arc::clone(&server.signer);
    let event = pdu.clone();
    let origin_name = origin.to_owned();
    let knock_room_state = server
        .store
        .write(move |tx| {
            rooms::enqueue_for_peers_in_tx(tx, &signer, &event, Some(&origin_name))?;
            let mut out = Vec::new();
            for kind in crate::matrix::client_format::STRIPPED_STATE_TYPES {
                if let Some(id) = state::current_state_id(tx, event.room_id.as_str(), kind, "")?
                    && let Some(stored) = events::get_event(tx, &id)?
                {
                    out.push(
                        serde_json::from_str::<Value>(&stored.pdu.json)
                            .map_err(|e| Error::internal(e.to_string()))?,
                    );
                }
            }
            Ok(out)
        })
        .await?;
    Ok(SendKnockResponse { knock_room_state })
}

/// Turns the resident's `knock_room_state` into stripped state for the knocker's `/sync`.
/// Full PDUs must verify (signatures of allow-listed servers, content hash) and belong to the
/// room; entries in the older stripped form (no signatures) are kept when they have the four
/// fields the spec requires of one, and dropped with a log line otherwise.
fn stripped_knock_state(
    server: &Server,
    room_id: &RoomId,
    version: &str,
    response: &SendKnockResponse,
) -> Vec<Value> {
    let mut stripped = Vec::new();
    for entry in &response.knock_room_state {
        if entry.get("signatures").is_some() {
            match verify(server, version, entry) {
                Ok(pdu) if pdu.room_id == room_id && pdu.state_key.is_some() => {
                    stripped.push(to_stripped_state(&pdu));
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(room = %room_id, error = %err, "dropped knock_room_state entry");
                }
            }
        } else {
            match StrippedState::deserialize(entry) {
                Ok(entry) => stripped.push(json!(entry)),
                Err(err) => {
                    tracing::warn!(room = %room_id, error = %err, "dropped malformed knock_room_state entry");
                }
            }
        }
    }
    stripped
}

/// Knocks on a room held by other units: `make_knock` → sign → `send_knock` through the first
/// candidate that accepts, then shows the room to the knocker under `rooms.knock`.
pub async fn knock_remote(
    server: &Server,
    room_id: OwnedRoomId,
    user_id: OwnedUserId,
    reason: Option<String>,
    candidates: Vec<String>,
) -> Result<()> {
    let (room, user, reason) = (&room_id, &user_id, reason.as_deref());
    super::try_each_resident(
        room,
        candidates,
        "remote knock",
        "no allow-listed unit to knock through; pass one as `via`",
        |resident| async move { try_knock(server, room, user, reason, &resident).await },
    )
    .await
}

async fn try_knock(
    server: &Server,
    room_id: &RoomId,
    user_id: &UserId,
    reason: Option<&str>,
    resident: &str,
) -> Result<()> {
    let (knock, version, response): (_, _, SendKnockResponse) =
        ask_to_enter(server, resident, room_id, user_id, "knock", reason).await?;
    let mut stripped = stripped_knock_state(server, room_id, &version, &response);
    stripped.push(to_stripped_state(&knock));
    let creator = stripped
        .iter()
        .find(|e| e["type"] == "m.room.create")
        .and_then(|e| e["sender"].as_str())
        .unwrap_or(user_id.as_str())
        .to_owned();
    let stripped = Value::Array(stripped).to_string();
    let user = user_id.to_owned();
    server
        .store
        .write(move |tx| {
            let room = knock.room_id.as_str();
            if state::get_room(tx, room)?.is_none() {
                state::create_room(tx, room, &version, &creator, now_ms())?;
            }
            if !dag::have_event(tx, knock.event_id.as_str())? {
                let pos = tx.next_stream_pos(Audience::of_event(&knock));
                dag::insert_outlier(tx, &knock, pos)?;
                state::record_membership_change(tx, pos, room, user.as_str(), "knock")?;
            }
            // The knock and its stripped state live where a remote invite's do: `/sync` shows
            // them the same way, and an invite that answers the knock replaces them.
            dag::store_remote_invite(tx, room, user.as_str(), knock.event_id.as_str(), &stripped)
        })
        .await
}

/// Whether `user_id`'s latest membership of a room this unit does not hold is a knock it
/// sent over federation.
pub async fn has_remote_knock(server: &Server, room_id: &RoomId, user_id: &UserId) -> Result<bool> {
    let (room, user) = (room_id.to_string(), user_id.to_string());
    server
        .store
        .read(move |conn| {
            if dag::participating(conn, &room)? {
                return Ok(false);
            }
            let Some(dag::RemoteInvite { event_id, .. }) = dag::remote_invite(conn, &room, &user)?
            else {
                return Ok(false);
            };
            Ok(events::get_event(conn, &event_id)?.is_some_and(|e| {
                e.pdu.kind == TimelineEventType::RoomMember
                    && e.pdu
                        .content_value()
                        .get("membership")
                        .and_then(Value::as_str)
                        == Some("knock")
            }))
        })
        .await
}

/// Rescinds a knock on a room held by other units: `make_leave` → sign → `send_leave` through
/// a resident (the servers of the stripped state's senders, then `via`), then shows the room as
/// left.
pub async fn rescind_remote_knock(
    server: &Server,
    room_id: OwnedRoomId,
    user_id: OwnedUserId,
    via: Vec<String>,
) -> Result<()> {
    let (room, user) = (room_id.to_string(), user_id.to_string());
    let stored = server
        .store
        .read(move |conn| dag::remote_invite(conn, &room, &user))
        .await?;
    let Some(dag::RemoteInvite {
        invite_state: stripped_json,
        ..
    }) = stored
    else {
        return Err(Error::forbidden("You have not knocked on this room"));
    };
    let stripped: Vec<Value> = serde_json::from_str(&stripped_json)
        .map_err(|e| Error::internal(format!("stored knock state: {e}")))?;
    let own = server.server_name().to_string();
    let mut seen = BTreeSet::new();
    let candidates: Vec<String> = stripped
        .iter()
        .filter_map(|e| e["sender"].as_str())
        .filter_map(|s| s.split_once(':').map(|(_, name)| name.to_owned()))
        .chain(via)
        .chain(room_id.server_name().map(|s| s.to_string()))
        .filter(|s| *s != own && server.peers.contains(s) && seen.insert(s.clone()))
        .collect();
    let version = super::version_of(server, room_id.as_str())
        .await?
        .ok_or_else(|| Error::internal("knocked room missing"))?;
    let (room, user, version) = (&room_id, &user_id, &version);
    let (leave, _, _) = super::try_each_resident(
        room,
        candidates,
        "rescinding a knock",
        "no allow-listed unit of the room to rescind the knock through",
        |resident| async move {
            membership_handshake::<serde::de::IgnoredAny>(
                server,
                &resident,
                room,
                user,
                "leave",
                "",
                json!({"membership": "leave"}),
                Some(version),
            )
            .await
        },
    )
    .await?;
    store_leave(server, leave, user_id, stripped_json).await
}

/// Records the leave that rescinded a knock, as an outlier, and the knocker's new membership;
/// the leave takes the knock's place next to the stripped state, so the knock counts as gone.
async fn store_leave(
    server: &Server,
    leave: Pdu,
    user_id: OwnedUserId,
    stripped: String,
) -> Result<()> {
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
            dag::store_remote_invite(
                tx,
                leave.room_id.as_str(),
                user_id.as_str(),
                leave.event_id.as_str(),
                &stripped,
            )
        })
        .await
}
