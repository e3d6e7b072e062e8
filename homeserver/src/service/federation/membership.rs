//! Joins and leaves across units (spec: Server-Server API, "Joining Rooms", "Leaving Rooms"):
//! the resident side (`make_join`/`make_leave` templates, `send_join`/`send_leave`, restricted
//! joins co-signed for another unit) and the joining side (`make_*` → sign → `send_*` through
//! each resident server in turn).

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::*;
use crate::matrix::wire::{
    EventRef, MakeMembershipAnswer, MakeMembershipResponse, SendJoinResponse, TemplateContent,
};
use crate::store::wake::Audience;

/// `make_join`/`make_leave` (resident side): an unsigned event template for a remote user.
pub async fn make_membership_template(
    server: &Server,
    origin: &str,
    room_id: OwnedRoomId,
    user_id: OwnedUserId,
    membership: &'static str,
    versions: Vec<String>,
) -> Result<MakeMembershipAnswer> {
    if user_id.server_name().as_str() != origin {
        return Err(Error::forbidden(
            "the user must belong to the requesting server",
        ));
    }
    let signer = Arc::clone(&server.signer);
    server
        .store
        .write(move |tx| {
            let room = state::get_room(tx, room_id.as_str())?
                .ok_or_else(|| Error::not_found("Unknown room"))?;
            if state::current_state_id(tx, room_id.as_str(), "m.room.create", "")?.is_none() {
                return Err(Error::not_found("This unit is not in that room"));
            }
            if membership != "leave"
                && !versions.is_empty()
                && !versions.contains(&room.room_version)
            {
                return Err(Error::new(
                    ErrorCode::IncompatibleRoomVersion,
                    format!(
                        "the {membership}ing server does not support room version {}",
                        room.room_version
                    ),
                ));
            }
            let mut content = json!({"membership": membership});
            if membership == "join"
                && let Some(authoriser) =
                    restricted_authoriser_in(tx, &room_id, &user_id, signer.server_name.as_str())?
            {
                content["join_authorised_via_users_server"] = json!(authoriser);
            }
            let event = NewEvent::state(
                TimelineEventType::RoomMember,
                user_id.as_str(),
                content.clone(),
            );
            let position = rooms::position_in_tx(tx, &room_id, &user_id, &event)?;
            // Refuse now, with the reason, if the auth rules would reject the membership (e.g.
            // a join to an invite-only room without an invite).
            rooms::build_checked_in_tx(tx, &signer, &room_id, &user_id, event)?;
            let template = json!({
                "type": "m.room.member",
                "room_id": room_id,
                "sender": user_id,
                "state_key": user_id,
                "content": content,
                "origin_server_ts": now_ms(),
                "depth": position.depth,
            });
            let template = with_references(template, &position);
            Ok(MakeMembershipAnswer {
                room_version: room.room_version,
                event: template,
            })
        })
        .await
}

/// Adds the prev and auth events to a membership template in the room version's format:
/// bare IDs, or in room versions 1 and 2 `[event_id, {"sha256": reference_hash}]` pairs.
pub(super) fn with_references(mut template: Value, position: &rooms::Position) -> Value {
    let list = |ids: &[OwnedEventId]| -> Value {
        if position.rules.events_reference_format
            == ruma::room_version_rules::EventsReferenceFormatVersion::V1
        {
            ids.iter()
                .map(|id| json!([id, position.reference_hashes.get(id)]))
                .collect()
        } else {
            json!(ids)
        }
    };
    template["prev_events"] = list(&position.prev_events);
    template["auth_events"] = list(&position.auth_events);
    template
}

/// `send_join`/`send_leave` (resident side): checks and stores the signed membership event and
/// forwards it to the other servers of the room. Returns the state before it and its auth chain.
pub async fn receive_membership(
    server: &Server,
    origin: &str,
    room_id: OwnedRoomId,
    value: Value,
    membership: &'static str,
) -> Result<SendJoinResponse> {
    let pdu = accept_membership(server, origin, &room_id, value, membership, None).await?;
    let signer = Arc::clone(&server.signer);
    let event = pdu.clone();
    let origin_name = origin.to_owned();
    let (state_events, auth_chain, servers) = server
        .store
        .write(move |tx| {
            enqueue_for_peers_in_tx(tx, &signer, &event, Some(&origin_name))?;
            let group = state::state_group_before(
                tx,
                event.room_id.as_str(),
                events::get_event(tx, event.event_id.as_str())?
                    .map(|e| e.stream_pos)
                    .unwrap_or(i64::MAX),
            )?;
            let map = match group {
                Some(group) => state::state_at_group(tx, group)?,
                None => StateMap::new(),
            };
            let ids: Vec<String> = map
                .values()
                .cloned()
                .chain([event.event_id.to_string()])
                .collect();
            let chain = dag::auth_chain(tx, &ids)?;
            let mut state_json = Vec::new();
            for id in map.values() {
                if let Some(e) = events::get_event(tx, id)? {
                    state_json.push(stored_json(&e.pdu)?);
                }
            }
            let mut chain_json = Vec::new();
            for id in &chain {
                if let Some(e) = events::get_event(tx, id)? {
                    chain_json.push(stored_json(&e.pdu)?);
                }
            }
            let servers: BTreeSet<String> =
                state::members_with(tx, event.room_id.as_str(), "join")?
                    .iter()
                    .filter_map(|u| u.split_once(':').map(|(_, s)| s.to_owned()))
                    .collect();
            Ok((state_json, chain_json, servers))
        })
        .await?;
    Ok(SendJoinResponse {
        origin: Some(server.server_name().to_string()),
        state: state_events,
        auth_chain,
        event: Some(stored_json(&pdu)?),
        members_omitted: false,
        servers_in_room: Some(servers.into_iter().collect()),
    })
}

/// A stored PDU as JSON. Stored events were parsed when they arrived, so a failure here is
/// a damaged database, an internal error (it was `null` in the answer before).
fn stored_json(pdu: &Pdu) -> Result<Value> {
    serde_json::from_str(&pdu.json).map_err(|e| Error::internal(format!("stored PDU: {e}")))
}

/// Under a restricted join rule, the local member to name in `join_authorised_via_users_server`
/// of a template for `user_id`; `None` when the rule is another one or the user is invited or
/// joined already (the ordinary auth rules admit them). Refuses, with the spec's error, a join
/// this unit cannot authorise.
pub(super) fn restricted_authoriser_in(
    conn: &rusqlite::Connection,
    room_id: &RoomId,
    user_id: &UserId,
    own_server: &str,
) -> Result<Option<String>> {
    if matches!(
        state::membership(conn, room_id.as_str(), user_id.as_str())?.as_deref(),
        Some("join" | "invite")
    ) {
        return Ok(None);
    }
    match rooms::restricted_join(conn, room_id.as_str(), user_id.as_str(), own_server)? {
        RestrictedJoin::NotRestricted => Ok(None),
        RestrictedJoin::Authorised(authoriser) => Ok(Some(authoriser)),
        RestrictedJoin::NoAuthoriser => Err(Error::new(
            ErrorCode::UnableToGrantJoin,
            format!(
                "{user_id} may join, but no member on this unit may authorise it; try another server"
            ),
        )),
        RestrictedJoin::CannotCheck => Err(Error::new(
            ErrorCode::UnableToAuthoriseJoin,
            "this unit holds none of the rooms the join rule allows, so it cannot authorise the join",
        )),
        RestrictedJoin::Fails => Err(Error::forbidden(format!(
            "{user_id} is not joined to any room the join rule allows"
        ))),
    }
}

/// What [`countersign_restricted_join`] reads of a peer's membership event before it is
/// verified (`sender` and `content.membership` required, as of every event).
#[derive(Deserialize)]
struct JoinFields {
    /// The joining user.
    sender: OwnedUserId,
    /// `membership` and the authorising user.
    content: TemplateContent,
}

/// A restricted join names a local authorising user: checks that the joiner still qualifies
/// and adds this unit's signature, which the auth rules of room versions 8+ require (spec:
/// `send_join`, "the resident server must sign the event"). Other events pass unchanged.
pub(super) async fn countersign_restricted_join(
    server: &Server,
    room_id: &RoomId,
    version: &str,
    value: Value,
) -> Result<Value> {
    let join = JoinFields::deserialize(&value)
        .map_err(|err| Error::bad_json(format!("malformed membership event: {err}")))?;
    let own = server.server_name().to_string();
    let Some(authoriser) = join
        .content
        .join_authorised_via_users_server
        .filter(|a| a.server_name().as_str() == own)
    else {
        return Ok(value);
    };
    if join.content.membership != "join" {
        return Ok(value);
    }
    let sender = join.sender;
    let room = room_id.to_owned();
    let who = sender.clone();
    let decision = server
        .store
        .read(move |conn| {
            if matches!(
                state::membership(conn, room.as_str(), who.as_str())?.as_deref(),
                Some("join" | "invite")
            ) {
                return Ok(None);
            }
            rooms::restricted_join(conn, room.as_str(), who.as_str(), &own).map(Some)
        })
        .await?;
    match decision {
        None | Some(RestrictedJoin::Authorised(_)) => {}
        Some(RestrictedJoin::NotRestricted) => {
            return Err(Error::forbidden(
                "the room's join rule is not restricted; no authorisation is needed or given",
            ));
        }
        Some(RestrictedJoin::NoAuthoriser) => {
            return Err(Error::new(
                ErrorCode::UnableToGrantJoin,
                "no member on this unit may authorise the join",
            ));
        }
        Some(RestrictedJoin::CannotCheck) => {
            return Err(Error::new(
                ErrorCode::UnableToAuthoriseJoin,
                "this unit holds none of the rooms the join rule allows",
            ));
        }
        Some(RestrictedJoin::Fails) => {
            return Err(Error::forbidden(format!(
                "{sender} is not joined to any room the join rule allows"
            )));
        }
    }
    tracing::debug!(room = %room_id, user = %sender, %authoriser, "countersigning a restricted join");
    let (_, rules) = room_rules(version)?;
    let mut object = object_of(&value)?;
    object.remove("unsigned");
    ruma::signatures::sign_event(
        server.server_name().as_str(),
        server.signer.key.pair(),
        &mut object,
        &rules.redaction,
    )
    .map_err(|e| Error::bad_json(format!("cannot sign the join: {e}")))?;
    serde_json::to_value(&object).map_err(|e| Error::internal(e.to_string()))
}

/// `send_join`/`send_leave`/`send_knock` (resident side), the part they share: checks the
/// signed membership event of a user of `origin` about themselves (and, when given, that it
/// has the event ID of the request path), countersigns a restricted join, and accepts it into
/// the room. Returns the stored event.
pub(super) async fn accept_membership(
    server: &Server,
    origin: &str,
    room_id: &RoomId,
    value: Value,
    membership: &'static str,
    expected_id: Option<&str>,
) -> Result<Pdu> {
    let version = version_of(server, room_id.as_str())
        .await?
        .ok_or_else(|| Error::not_found("Unknown room"))?;
    let value = if membership == "join" {
        countersign_restricted_join(server, room_id, &version, value).await?
    } else {
        value
    };
    let pdu = verify(server, &version, &value)?;
    if expected_id.is_some_and(|id| id != pdu.event_id.as_str()) {
        return Err(Error::bad_json(
            "the event ID does not match the request path",
        ));
    }
    if pdu.room_id != room_id || pdu.kind != TimelineEventType::RoomMember {
        return Err(Error::bad_json("not a membership event of this room"));
    }
    if pdu.sender.server_name().as_str() != origin
        || pdu.state_key.as_deref() != Some(pdu.sender.as_str())
    {
        return Err(Error::forbidden(
            "the event must be sent by a user of the requesting server about themselves",
        ));
    }
    if pdu
        .content_value()
        .get("membership")
        .and_then(Value::as_str)
        != Some(membership)
    {
        return Err(Error::bad_json(format!("membership must be {membership}")));
    }
    match process_pdu(server, origin, pdu.clone()).await? {
        Outcome::Rejected(reason) => return Err(Error::forbidden(reason)),
        Outcome::SoftFailed => {
            return Err(Error::forbidden(
                "the event does not pass auth against the room's current state",
            ));
        }
        Outcome::Accepted | Outcome::AlreadyKnown => {}
    }
    Ok(pdu)
}

/// The servers to try when joining `room_id`: those the client named, the server of a pending
/// invite's sender, and (for room versions before 12) the server in the room ID. Only
/// allow-listed peers survive.
pub async fn join_candidates(
    server: &Server,
    room_id: &RoomId,
    user_id: &UserId,
    via: Vec<String>,
) -> Result<Vec<String>> {
    let (room, user) = (room_id.to_string(), user_id.to_string());
    let invite = server
        .store
        .read(move |conn| dag::remote_invite(conn, &room, &user))
        .await?;
    let mut candidates = via;
    if let Some(dag::RemoteInvite { event_id, .. }) = invite {
        let id = event_id.clone();
        if let Some(event) = server
            .store
            .read(move |conn| events::get_event(conn, &id))
            .await?
        {
            candidates.push(event.pdu.sender.server_name().to_string());
        }
    }
    if let Some(name) = room_id.server_name() {
        candidates.push(name.to_string());
    }
    let own = server.server_name().as_str();
    let mut seen = BTreeSet::new();
    Ok(candidates
        .into_iter()
        .filter(|s| s != own && server.peers.contains(s) && seen.insert(s.clone()))
        .collect())
}

/// Joins a room held by other units: `make_join` → sign → `send_join` → store the room state.
pub async fn join_remote(
    server: &Server,
    room_id: OwnedRoomId,
    user_id: OwnedUserId,
    candidates: Vec<String>,
) -> Result<()> {
    let (room, user) = (&room_id, &user_id);
    try_each_resident(
        room,
        candidates,
        "remote join",
        "no allow-listed unit to join this room through; pass one as `via`",
        |resident| async move { try_join(server, room, user, &resident).await },
    )
    .await
}

pub(super) async fn try_join(
    server: &Server,
    room_id: &RoomId,
    user_id: &UserId,
    resident: &str,
) -> Result<()> {
    let (join, version, response): (Pdu, String, SendJoinResponse) =
        ask_to_enter(server, resident, room_id, user_id, "join", None).await?;

    // Closed federation: every event of the room must come from allow-listed servers, and no
    // member may be on a server outside the allow-list.
    // The resident returns the event it stored; for a restricted join it carries the
    // resident's signature, which every server checking the join needs.
    let join = match response.event.as_ref().filter(|e| e.is_object()) {
        Some(value) => {
            let signed = verify(server, &version, value)?;
            if signed.event_id != join.event_id {
                return Err(Error::bad_json(format!(
                    "{resident} returned a different join event"
                )));
            }
            signed
        }
        None => join,
    };
    let mut state_pdus = Vec::new();
    for value in &response.state {
        state_pdus.push(verify(server, &version, value)?);
    }
    let mut chain = Vec::new();
    for value in &response.auth_chain {
        chain.push(verify(server, &version, value)?);
    }
    for member in state_pdus
        .iter()
        .filter(|p| p.kind == TimelineEventType::RoomMember)
    {
        // A state key that is not a user ID names no allow-listed server: refused below.
        let server_name = member
            .state_key
            .as_deref()
            .and_then(|k| k.split_once(':'))
            .map(|(_, s)| s)
            .unwrap_or_default();
        if server_name != server.server_name().as_str() && !server.peers.contains(server_name) {
            return Err(Error::forbidden(format!(
                "the room includes {server_name}, which is not an allow-listed peer of this unit"
            )));
        }
    }
    let create = state_pdus
        .iter()
        .find(|p| p.kind == TimelineEventType::RoomCreate)
        .ok_or_else(|| Error::bad_json("send_join state has no create event"))?;
    if create.room_id != room_id {
        return Err(Error::bad_json("send_join state is for another room"));
    }
    let creator = create.sender.to_string();
    let map: StateMap = state_pdus
        .iter()
        .filter_map(|p| {
            Some((
                (p.kind.to_string(), p.state_key.clone()?),
                p.event_id.to_string(),
            ))
        })
        .collect();
    let mut outliers: Vec<Pdu> = chain.into_iter().chain(state_pdus).collect();
    outliers.sort_by_key(|p| p.depth);
    let room = room_id.to_owned();
    let signer = Arc::clone(&server.signer);
    let outcome = server
        .store
        .write(move |tx| {
            if state::get_room(tx, room.as_str())?.is_none() {
                state::create_room(tx, room.as_str(), &version, &creator, now_ms())?;
            }
            for pdu in &outliers {
                if !dag::have_event(tx, pdu.event_id.as_str())? {
                    let pos = tx.next_stream_pos(Audience::Room(room.as_str()));
                    dag::insert_outlier(tx, pdu, pos)?;
                }
            }
            let outcome = accept_in_tx(tx, &join, Some(map))?;
            if let Ok(Outcome::Accepted) = outcome {
                // Other servers in the room learn of the join from the resident; we tell no one.
                let _ = &signer;
            }
            Ok(outcome)
        })
        .await?;
    match outcome {
        Ok(Outcome::Accepted) | Ok(Outcome::AlreadyKnown) => Ok(()),
        Ok(Outcome::Rejected(reason)) => Err(Error::forbidden(format!("join rejected: {reason}"))),
        Ok(Outcome::SoftFailed) => Err(Error::forbidden("join soft-failed")),
        Err(missing) => Err(Error::new(
            ErrorCode::Unknown,
            format!("join incomplete: {missing}"),
        )),
    }
}

/// Our user's `join` or `knock` through `resident`: the handshake offering every room version
/// this unit supports, with the user's profile (and `reason`) in the event's content.
pub(super) async fn ask_to_enter<T: DeserializeOwned>(
    server: &Server,
    resident: &str,
    room_id: &RoomId,
    user_id: &UserId,
    membership: &'static str,
    reason: Option<&str>,
) -> Result<(Pdu, String, T)> {
    let versions: Vec<String> = crate::matrix::SUPPORTED_ROOM_VERSIONS
        .iter()
        .map(|v| format!("ver={v}"))
        .collect();
    let (displayname, avatar) = rooms::profile_of(server, user_id).await?;
    let mut content = json!({"membership": membership});
    if let Some(reason) = reason {
        content["reason"] = json!(reason);
    }
    if let Some(name) = displayname {
        content["displayname"] = json!(name);
    }
    if let Some(url) = avatar {
        content["avatar_url"] = json!(url);
    }
    membership_handshake(
        server,
        resident,
        room_id,
        user_id,
        membership,
        &format!("?{}", versions.join("&")),
        content,
        None,
    )
    .await
}

/// The two-step membership handshake with a resident unit (`make_join`/`make_leave`, then
/// `send_join`/`send_leave` v2): fetches the template, builds and signs our event from it with
/// `content`, sends it, and returns the event, the room version and the resident's answer,
/// read as `T` (a malformed answer is the resident's failure).
#[allow(clippy::too_many_arguments)]
pub(super) async fn membership_handshake<T: DeserializeOwned>(
    server: &Server,
    resident: &str,
    room_id: &RoomId,
    user_id: &UserId,
    membership: &str,
    query: &str,
    content: Value,
    known_version: Option<&str>,
) -> Result<(Pdu, String, T)> {
    let path = format!(
        "/_matrix/federation/v1/make_{membership}/{}/{}{query}",
        urlencode(room_id.as_str()),
        urlencode(user_id.as_str())
    );
    let template: MakeMembershipResponse = server
        .federation
        .request_as(resident, Method::GET, &path, None)
        .await
        .map_err(fed_error)?;
    let version = template
        .room_version
        .as_deref()
        .or(known_version)
        .unwrap_or("1")
        .to_owned();
    let (_, rules) = room_rules(&version)?;
    let event = template.event;
    let mut content = content;
    // A restricted join names the resident's member who authorises it (room versions 8+).
    if membership == "join"
        && let Some(authoriser) = event.content.join_authorised_via_users_server
    {
        if authoriser.server_name().as_str() != resident {
            return Err(Error::bad_json(
                "make_join names an authorising user of another server",
            ));
        }
        content["join_authorised_via_users_server"] = json!(authoriser);
    }
    // Room versions 1 and 2 list `[event_id, {"sha256": hash}]` pairs; later ones bare IDs.
    // The hashes object is copied as the resident gave it (some servers send `{}`).
    let mut reference_hashes = std::collections::HashMap::new();
    let mut ids = |refs: Vec<EventRef>| -> Vec<OwnedEventId> {
        refs.into_iter()
            .map(|r| match r {
                EventRef::Id(id) => id,
                EventRef::WithHashes(id, hashes) => {
                    reference_hashes.insert(id.clone(), Value::Object(hashes));
                    id
                }
            })
            .collect()
    };
    let prev_events = ids(event.prev_events);
    let auth_events = ids(event.auth_events);
    let pdu = build_event(
        NewEvent::state(TimelineEventType::RoomMember, user_id.as_str(), content),
        Placement {
            rules: &rules,
            room_id: Some(room_id),
            sender: user_id,
            prev_events,
            depth: event.depth,
            auth_events,
            reference_hashes,
            origin_server_ts: ruma::MilliSecondsSinceUnixEpoch::now(),
            server_name: &server.signer.server_name,
            key: &server.signer.key,
        },
    )
    .map_err(|e| Error::bad_json(e.to_string()))?;
    // `send_knock` exists only as v1 (its answer was never wrapped the way v1 joins were).
    let api = if membership == "knock" { "v1" } else { "v2" };
    let path = format!(
        "/_matrix/federation/{api}/send_{membership}/{}/{}",
        urlencode(room_id.as_str()),
        urlencode(pdu.event_id.as_str())
    );
    let body: Value =
        serde_json::from_str(&pdu.json).map_err(|e| Error::internal(e.to_string()))?;
    let response: T = server
        .federation
        .request_as(resident, Method::PUT, &path, Some(body))
        .await
        .map_err(fed_error)?;
    Ok((pdu, version, response))
}
