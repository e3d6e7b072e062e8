//! Federation behaviour: receiving transactions (with fetching of missing history), joining
//! rooms on other units and letting their users join ours, and invites in both directions.
//!
//! Everything here talks only to allow-listed peers (through [`FederationClient`]) and checks
//! every incoming PDU with [`crate::federation::incoming`] before it touches a room.

pub mod hierarchy;
pub mod knock;
pub mod media;

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::http::Method;
use ruma::events::TimelineEventType;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
};
use serde_json::{Map, Value, json};

use super::Server;
use super::rooms::{self, RestrictedJoin, enqueue_for_peers_in_tx};
use crate::error::{Error, ErrorCode, Result};
use crate::federation::incoming::{Missing, Outcome, accept_in_tx, room_rules, verify_pdu};
use crate::matrix::build::{NewEvent, Placement, build_event};
use crate::matrix::client_format::to_stripped_state;
use crate::matrix::pdu::Pdu;
use crate::store::state::{self, StateMap};
use crate::store::{events, federation, misc};
use crate::util::now_ms;

/// Most rounds of fetching missing events for one incoming PDU.
const MAX_FETCH_ROUNDS: usize = 4;

fn object_of(value: &Value) -> Result<CanonicalJsonObject> {
    match ruma::canonical_json::to_canonical_value(value)
        .map_err(|e| Error::bad_json(format!("PDU is not canonical JSON: {e}")))?
    {
        CanonicalJsonValue::Object(object) => Ok(object),
        _ => Err(Error::bad_json("PDU is not an object")),
    }
}

/// The room version of a room we know.
async fn version_of(server: &Server, room_id: &str) -> Result<Option<String>> {
    let room = room_id.to_owned();
    Ok(server
        .store
        .read(move |conn| state::get_room(conn, &room))
        .await?
        .map(|r| r.room_version))
}

/// Verifies a PDU received from a peer for a room of known version.
fn verify(server: &Server, version: &str, value: &Value) -> Result<Pdu> {
    let (_, rules) = room_rules(version)?;
    verify_pdu(&server.peers, &server.signer, &rules, object_of(value)?)
}

/// Handles `PUT /send/{txnId}`: every PDU is checked and processed independently; the answer
/// maps each event ID to `{}` or `{"error"}`.
pub async fn receive_transaction(
    server: &Server,
    origin: &str,
    txn_id: &str,
    body: Value,
) -> Result<Value> {
    let (o, t) = (origin.to_owned(), txn_id.to_owned());
    if let Some(previous) = server
        .store
        .read(move |conn| federation::received_transaction(conn, &o, &t))
        .await?
    {
        return serde_json::from_str(&previous).map_err(|e| Error::internal(e.to_string()));
    }
    if let Some(claimed) = body.get("origin").and_then(Value::as_str)
        && claimed != origin
    {
        return Err(Error::forbidden(
            "transaction origin does not match the signed request",
        ));
    }
    let pdus = body
        .get("pdus")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let edus = body
        .get("edus")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if pdus.len() > 50 || edus.len() > 100 {
        return Err(Error::new(
            ErrorCode::TooLarge,
            "a transaction holds at most 50 PDUs and 100 EDUs",
        ));
    }
    let mut results = Map::new();
    for value in pdus {
        let room_id = value
            .get("room_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let outcome = async {
            let version = version_of(server, &room_id)
                .await?
                .ok_or_else(|| Error::not_found(format!("room {room_id} is not known here")))?;
            let pdu = verify(server, &version, &value)?;
            let event_id = pdu.event_id.clone();
            process_pdu(server, origin, pdu)
                .await
                .map(|o| (event_id, o))
        }
        .await;
        match outcome {
            Ok((event_id, Outcome::Rejected(reason))) => {
                results.insert(event_id.to_string(), json!({"error": reason}));
            }
            Ok((event_id, _)) => {
                results.insert(event_id.to_string(), json!({}));
            }
            Err(err) => {
                let id = event_id_of(server, &room_id, &value)
                    .await
                    .unwrap_or_else(|| format!("unparsed-{}", results.len()));
                tracing::warn!(origin, event_id = %id, error = %err, "refused PDU in transaction");
                results.insert(id, json!({"error": err.to_string()}));
            }
        }
    }
    for edu in edus {
        if let Err(err) = receive_edu(server, origin, &edu).await {
            tracing::debug!(origin, error = %err, "ignored EDU");
        }
    }
    let response = json!({"pdus": results});
    let (o, t, r) = (origin.to_owned(), txn_id.to_owned(), response.to_string());
    server
        .store
        .write(move |tx| federation::record_transaction(tx, &o, &t, &r, now_ms()))
        .await?;
    Ok(response)
}

/// Accepts one verified PDU, fetching missing auth events and history from `origin` first.
pub async fn process_pdu(server: &Server, origin: &str, pdu: Pdu) -> Result<Outcome> {
    let mut supplied: Option<StateMap> = None;
    for _ in 0..MAX_FETCH_ROUNDS {
        let event = pdu.clone();
        let state = supplied.clone();
        let result = server
            .store
            .write(move |tx| accept_in_tx(tx, &event, state))
            .await?;
        match result {
            Ok(outcome) => return Ok(outcome),
            Err(Missing::AuthEvent(_)) => fetch_auth_chain(server, origin, &pdu).await?,
            Err(Missing::PrevEvent(_)) => {
                if !fetch_missing_events(server, origin, &pdu).await? {
                    supplied = Some(fetch_state_before(server, origin, &pdu).await?);
                }
            }
        }
    }
    Err(Error::forbidden(format!(
        "cannot place event {} in its room",
        pdu.event_id
    )))
}

/// Fetches and stores (as outliers) the auth chain of `pdu` from `origin`.
async fn fetch_auth_chain(server: &Server, origin: &str, pdu: &Pdu) -> Result<()> {
    let path = format!(
        "/_matrix/federation/v1/event_auth/{}/{}",
        pdu.room_id, pdu.event_id
    );
    let response = server
        .federation
        .request(origin, Method::GET, &path, None)
        .await
        .map_err(fed_error)?;
    let chain = response
        .get("auth_chain")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    store_outliers(server, &pdu.room_id, chain).await
}

/// Verifies `values` and stores them as outliers, oldest first.
async fn store_outliers(server: &Server, room_id: &RoomId, values: Vec<Value>) -> Result<()> {
    let version = version_of(server, room_id.as_str())
        .await?
        .ok_or_else(|| Error::not_found("unknown room"))?;
    let mut pdus = Vec::new();
    for value in &values {
        pdus.push(verify(server, &version, value)?);
    }
    pdus.sort_by_key(|p| p.depth);
    server
        .store
        .write(move |tx| {
            for pdu in &pdus {
                if !federation::have_event(tx, pdu.event_id.as_str())? {
                    let pos = tx.next_stream_pos();
                    federation::insert_outlier(tx, pdu, pos)?;
                }
            }
            Ok(())
        })
        .await
}

/// Asks `origin` for the events between our forward extremities and `pdu`; returns whether it
/// filled the gap.
async fn fetch_missing_events(server: &Server, origin: &str, pdu: &Pdu) -> Result<bool> {
    let room = pdu.room_id.to_string();
    let earliest: Vec<String> = server
        .store
        .read(move |conn| {
            Ok(events::forward_extremities(conn, &room)?
                .into_iter()
                .map(|(id, _)| id.to_string())
                .collect())
        })
        .await?;
    let path = format!("/_matrix/federation/v1/get_missing_events/{}", pdu.room_id);
    let body = json!({"earliest_events": earliest, "latest_events": [pdu.event_id], "limit": 50, "min_depth": 0});
    let response = server
        .federation
        .request(origin, Method::POST, &path, Some(body))
        .await
        .map_err(fed_error)?;
    let mut missing = Vec::new();
    let version = version_of(server, pdu.room_id.as_str())
        .await?
        .ok_or_else(|| Error::not_found("unknown room"))?;
    for value in response
        .get("events")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        missing.push(verify(server, &version, &value)?);
    }
    if missing.is_empty() {
        return Ok(false);
    }
    missing.sort_by_key(|p| p.depth);
    for event in missing {
        let candidate = event.clone();
        let result = server
            .store
            .write(move |tx| accept_in_tx(tx, &candidate, None))
            .await?;
        if let Err(Missing::AuthEvent(_)) = result {
            fetch_auth_chain(server, origin, &event).await?;
            let candidate = event.clone();
            if server
                .store
                .write(move |tx| accept_in_tx(tx, &candidate, None))
                .await?
                .is_err()
            {
                return Ok(false);
            }
        } else if result.is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Gets the state before `pdu` from `origin` (`/state_ids`, then the events we lack).
async fn fetch_state_before(server: &Server, origin: &str, pdu: &Pdu) -> Result<StateMap> {
    let path = format!(
        "/_matrix/federation/v1/state/{}?event_id={}",
        pdu.room_id,
        urlencode(pdu.event_id.as_str())
    );
    let response = server
        .federation
        .request(origin, Method::GET, &path, None)
        .await
        .map_err(fed_error)?;
    let mut all = response
        .get("auth_chain")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let pdus = response
        .get("pdus")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    all.extend(pdus.iter().cloned());
    store_outliers(server, &pdu.room_id, all).await?;
    let version = version_of(server, pdu.room_id.as_str())
        .await?
        .ok_or_else(|| Error::not_found("unknown room"))?;
    let mut map = StateMap::new();
    for value in pdus {
        let event = verify(server, &version, &value)?;
        if let Some(key) = &event.state_key {
            map.insert(
                (event.kind.to_string(), key.clone()),
                event.event_id.to_string(),
            );
        }
    }
    Ok(map)
}

/// Minimal percent-encoding for path and query components (event IDs contain `$`, `+`, `/`).
pub fn urlencode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Maps an outbound failure to a client-facing error.
pub fn fed_error(err: crate::federation::client::FedError) -> Error {
    use crate::federation::client::FedError as F;
    match err {
        F::NotAllowed(server) => {
            Error::forbidden(format!("{server} is not an allow-listed peer of this unit"))
        }
        F::Status {
            server,
            status,
            body,
        } => {
            let parsed = serde_json::from_str::<Value>(&body).ok();
            let errcode = parsed
                .as_ref()
                .and_then(|v| v.get("errcode").and_then(Value::as_str).map(str::to_owned));
            let detail = parsed
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or(body);
            // Codes that tell the client what to do next keep their meaning across the hop.
            let passed = match errcode.as_deref() {
                Some("M_UNABLE_TO_AUTHORISE_JOIN") => Some(ErrorCode::UnableToAuthoriseJoin),
                Some("M_UNABLE_TO_GRANT_JOIN") => Some(ErrorCode::UnableToGrantJoin),
                Some("M_INCOMPATIBLE_ROOM_VERSION") => Some(ErrorCode::IncompatibleRoomVersion),
                _ => None,
            };
            if let Some(code) = passed {
                Error::new(code, format!("{server}: {detail}"))
            } else if status == axum::http::StatusCode::FORBIDDEN {
                Error::forbidden(format!("{server} refused: {detail}"))
            } else if status == axum::http::StatusCode::NOT_FOUND {
                Error::not_found(format!("{server}: {detail}"))
            } else {
                Error::new(
                    ErrorCode::Unknown,
                    format!("{server} answered {status}: {detail}"),
                )
            }
        }
        other => Error::new(ErrorCode::Unknown, other.to_string()),
    }
}

/// Handles an EDU: receipts and typing notices for rooms the origin's users are joined to,
/// presence, to-device messages, device-list and cross-signing updates; other types are
/// ignored.
async fn receive_edu(server: &Server, origin: &str, edu: &Value) -> Result<()> {
    let kind = edu
        .get("edu_type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let content = edu.get("content").unwrap_or(&Value::Null);
    match kind {
        "m.typing" => return receive_typing(server, origin, content).await,
        "m.direct_to_device" => {
            return super::e2ee::receive_to_device(server, origin, content).await;
        }
        "m.device_list_update" => {
            return super::e2ee::receive_device_list_update(server, origin, content).await;
        }
        "m.signing_key_update" => {
            return super::e2ee::receive_signing_key_update(server, origin, content).await;
        }
        "m.presence" => return super::presence::receive(server, origin, content).await,
        "m.receipt" => {}
        _ => return Ok(()),
    }
    let Some(rooms) = edu.get("content").and_then(Value::as_object) else {
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

/// `make_join`/`make_leave` (resident side): an unsigned event template for a remote user.
pub async fn make_membership_template(
    server: &Server,
    origin: &str,
    room_id: OwnedRoomId,
    user_id: OwnedUserId,
    membership: &'static str,
    versions: Vec<String>,
) -> Result<Value> {
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
            Ok(json!({"room_version": room.room_version, "event": template}))
        })
        .await
}

/// Adds the prev and auth events to a membership template in the room version's format:
/// bare IDs, or in room versions 1 and 2 `[event_id, {"sha256": reference_hash}]` pairs.
fn with_references(mut template: Value, position: &rooms::Position) -> Value {
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
) -> Result<Value> {
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
            let chain = federation::auth_chain(tx, &ids)?;
            let mut state_json = Vec::new();
            for id in map.values() {
                if let Some(e) = events::get_event(tx, id)? {
                    state_json
                        .push(serde_json::from_str::<Value>(&e.pdu.json).unwrap_or(Value::Null));
                }
            }
            let mut chain_json = Vec::new();
            for id in &chain {
                if let Some(e) = events::get_event(tx, id)? {
                    chain_json
                        .push(serde_json::from_str::<Value>(&e.pdu.json).unwrap_or(Value::Null));
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
    Ok(json!({
        "origin": server.server_name(),
        "state": state_events,
        "auth_chain": auth_chain,
        "event": serde_json::from_str::<Value>(&pdu.json).unwrap_or(Value::Null),
        "members_omitted": false,
        "servers_in_room": servers,
    }))
}

/// Under a restricted join rule, the local member to name in `join_authorised_via_users_server`
/// of a template for `user_id`; `None` when the rule is another one or the user is invited or
/// joined already (the ordinary auth rules admit them). Refuses, with the spec's error, a join
/// this unit cannot authorise.
fn restricted_authoriser_in(
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

/// A restricted join names a local authorising user: checks that the joiner still qualifies
/// and adds this unit's signature, which the auth rules of room versions 8+ require (spec:
/// `send_join`, "the resident server must sign the event"). Other events pass unchanged.
async fn countersign_restricted_join(
    server: &Server,
    room_id: &RoomId,
    version: &str,
    value: Value,
) -> Result<Value> {
    let content = value.get("content").cloned().unwrap_or(Value::Null);
    let own = server.server_name().to_string();
    let Some(authoriser) = content
        .get("join_authorised_via_users_server")
        .and_then(Value::as_str)
        .filter(|a| a.rsplit_once(':').is_some_and(|(_, s)| s == own))
        .map(str::to_owned)
    else {
        return Ok(value);
    };
    if content.get("membership").and_then(Value::as_str) != Some("join") {
        return Ok(value);
    }
    let sender = value
        .get("sender")
        .and_then(Value::as_str)
        .and_then(|s| OwnedUserId::try_from(s).ok())
        .ok_or_else(|| Error::bad_json("membership event without a valid sender"))?;
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
        .read(move |conn| federation::remote_invite(conn, &room, &user))
        .await?;
    let mut candidates = via;
    if let Some((event_id, _)) = invite {
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
    let mut last =
        Error::forbidden("no allow-listed unit to join this room through; pass one as `via`");
    for resident in candidates {
        match try_join(server, &room_id, &user_id, &resident).await {
            Ok(()) => return Ok(()),
            Err(err) => {
                tracing::warn!(room = %room_id, via = %resident, error = %err, "remote join failed");
                last = err;
            }
        }
    }
    Err(last)
}

async fn try_join(
    server: &Server,
    room_id: &RoomId,
    user_id: &UserId,
    resident: &str,
) -> Result<()> {
    let (join, version, response) =
        ask_to_enter(server, resident, room_id, user_id, "join", None).await?;

    // Closed federation: every event of the room must come from allow-listed servers, and no
    // member may be on a server outside the allow-list.
    // The resident returns the event it stored; for a restricted join it carries the
    // resident's signature, which every server checking the join needs.
    let join = match response.get("event").filter(|e| e.is_object()) {
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
    for value in response
        .get("state")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        state_pdus.push(verify(server, &version, &value)?);
    }
    let mut chain = Vec::new();
    for value in response
        .get("auth_chain")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        chain.push(verify(server, &version, &value)?);
    }
    for member in state_pdus
        .iter()
        .filter(|p| p.kind == TimelineEventType::RoomMember)
    {
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
                if !federation::have_event(tx, pdu.event_id.as_str())? {
                    let pos = tx.next_stream_pos();
                    federation::insert_outlier(tx, pdu, pos)?;
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

/// Invites a user of another unit: the invitee's server countersigns the invite before it
/// enters the room.
pub async fn invite_remote(
    server: &Server,
    room_id: OwnedRoomId,
    sender: OwnedUserId,
    target: OwnedUserId,
    is_direct: bool,
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
                .unwrap_or_default();
            let mut stripped = Vec::new();
            for kind in [
                "m.room.create",
                "m.room.join_rules",
                "m.room.name",
                "m.room.avatar",
                "m.room.canonical_alias",
                "m.room.encryption",
            ] {
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
    let response = server
        .federation
        .request(&target_server, Method::PUT, &path, Some(body))
        .await
        .map_err(fed_error)?;
    let signed = response
        .get("event")
        .cloned()
        .ok_or_else(|| Error::bad_json("invite response without event"))?;
    let countersigned = verify(server, &version, &signed)?;
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
    body: Value,
) -> Result<Value> {
    let version = body
        .get("room_version")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::bad_json("missing room_version"))?
        .to_owned();
    let (_, rules) = room_rules(&version)?;
    let value = body
        .get("event")
        .cloned()
        .ok_or_else(|| Error::bad_json("missing event"))?;
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
    let stripped = body
        .get("invite_room_state")
        .cloned()
        .unwrap_or(json!([]))
        .to_string();
    let creator = pdu.sender.to_string();
    server
        .store
        .write(move |tx| {
            let room = signed.room_id.as_str();
            if state::get_room(tx, room)?.is_none() {
                state::create_room(tx, room, &version, &creator, now_ms())?;
            }
            if federation::participating(tx, room)? {
                // We are in the room already: the invite arrives like any other event.
                return Ok(());
            }
            if !federation::have_event(tx, signed.event_id.as_str())? {
                let pos = tx.next_stream_pos();
                federation::insert_outlier(tx, &signed, pos)?;
                state::record_membership_change(tx, pos, room, &target, "invite")?;
            }
            federation::store_remote_invite(tx, room, &target, signed.event_id.as_str(), &stripped)
        })
        .await?;
    Ok(json!({"event": serde_json::from_str::<Value>(&signed_json).unwrap_or(Value::Null)}))
}

/// Resolves an alias of another unit through `query/directory` on that unit.
pub async fn resolve_remote_alias(
    server: &Server,
    alias: &ruma::RoomAliasId,
) -> Result<(OwnedRoomId, Vec<String>)> {
    let owner = alias.server_name().to_string();
    let path = format!(
        "/_matrix/federation/v1/query/directory?room_alias={}",
        urlencode(alias.as_str())
    );
    let response = server
        .federation
        .request(&owner, Method::GET, &path, None)
        .await
        .map_err(fed_error)?;
    let room = response
        .get("room_id")
        .and_then(Value::as_str)
        .and_then(|r| OwnedRoomId::try_from(r).ok())
        .ok_or_else(|| Error::bad_json("directory answer without room_id"))?;
    let mut servers: Vec<String> = response
        .get("servers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    servers.insert(0, owner);
    Ok((room, servers))
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
        federation::enqueue(tx, &server, "edu", &edu, now)?;
    }
    Ok(())
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
        .read(move |conn| federation::remote_invite(conn, &room, &user))
        .await?;
    let Some((invite_id, _)) = invite else {
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
    let (leave, _, _) = membership_handshake(
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
            if !federation::have_event(tx, leave.event_id.as_str())? {
                let pos = tx.next_stream_pos();
                federation::insert_outlier(tx, &leave, pos)?;
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

async fn receive_typing(server: &Server, origin: &str, content: &Value) -> Result<()> {
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
                federation::enqueue(tx, &server, "edu", &edu, now)?;
            }
            Ok(())
        })
        .await
}

/// The event ID of a received PDU (its reference hash), for reporting even a refused event.
async fn event_id_of(server: &Server, room_id: &str, value: &Value) -> Option<String> {
    let version = version_of(server, room_id).await.ok()??;
    let (_, rules) = room_rules(&version).ok()?;
    let mut object = object_of(value).ok()?;
    object.remove("unsigned");
    crate::matrix::pdu::event_id_of(&object, &rules)
        .ok()
        .map(|id| id.to_string())
}

/// Refuses a user of a server that is neither this unit nor an allow-listed peer: no event of
/// ours may name one (closed federation).
pub fn require_allowed_user(server: &Server, user_id: &UserId) -> Result<()> {
    let name = user_id.server_name().as_str();
    if name == server.server_name().as_str() || server.peers.contains(name) {
        Ok(())
    } else {
        Err(Error::forbidden(format!(
            "{name} is not an allow-listed peer of this unit, so {user_id} cannot be part of its rooms"
        )))
    }
}

/// Fetches history from before this unit's first event in a room from a peer in the room, so
/// back-pagination reaches the room's beginning. Returns how many events were added.
///
/// Backfilled events are checked for format, allow-listed servers, signatures and content
/// hash; they are not re-authorised against the state at their place in the DAG, which this
/// unit does not hold.
pub async fn backfill(server: &Server, room_id: &RoomId, limit: usize) -> Result<usize> {
    let room = room_id.to_string();
    let point = server
        .store
        .read(move |conn| federation::backfill_point(conn, &room))
        .await?;
    let Some(from) = point else { return Ok(0) };
    let room = room_id.to_string();
    let own = server.server_name().to_string();
    let servers: BTreeSet<String> = server
        .store
        .read(move |conn| state::members_with(conn, &room, "join"))
        .await?
        .iter()
        .filter_map(|u| u.split_once(':').map(|(_, s)| s.to_owned()))
        .filter(|s| *s != own && server.peers.contains(s))
        .collect();
    let Some(version) = version_of(server, room_id.as_str()).await? else {
        return Ok(0);
    };
    let query: Vec<String> = from
        .iter()
        .map(|id| format!("v={}", urlencode(id)))
        .collect();
    let path = format!(
        "/_matrix/federation/v1/backfill/{}?limit={}&{}",
        urlencode(room_id.as_str()),
        limit.min(100),
        query.join("&")
    );
    for peer in servers {
        let response = match server
            .federation
            .request(&peer, Method::GET, &path, None)
            .await
        {
            Ok(response) => response,
            Err(err) => {
                tracing::warn!(room = %room_id, peer = %peer, error = %err, "backfill failed");
                continue;
            }
        };
        let mut pdus = Vec::new();
        for value in response
            .get("pdus")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            match verify(server, &version, &value) {
                Ok(pdu) if pdu.room_id == room_id => pdus.push(pdu),
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(room = %room_id, peer = %peer, error = %err, "refused backfilled event")
                }
            }
        }
        if pdus.is_empty() {
            continue;
        }
        pdus.sort_by_key(|p| std::cmp::Reverse(p.depth));
        let added = server
            .store
            .write(move |tx| {
                let mut added = 0;
                for pdu in &pdus {
                    if federation::store_backfilled(tx, pdu)? {
                        added += 1;
                    }
                }
                Ok(added)
            })
            .await?;
        return Ok(added);
    }
    Ok(0)
}

/// A user's profile from their own unit (`query/profile`).
pub async fn remote_profile(
    server: &Server,
    user_id: &UserId,
) -> Result<(Option<String>, Option<String>)> {
    let owner = user_id.server_name().to_string();
    require_allowed_user(server, user_id)?;
    let path = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        urlencode(user_id.as_str())
    );
    let response = server
        .federation
        .request(&owner, Method::GET, &path, None)
        .await
        .map_err(fed_error)?;
    let field = |key: &str| response.get(key).and_then(Value::as_str).map(str::to_owned);
    Ok((field("displayname"), field("avatar_url")))
}

/// A peer's public room directory (`publicRooms` on that unit).
pub async fn remote_public_rooms(
    server: &Server,
    peer: &str,
    limit: Option<usize>,
    since: Option<String>,
    term: Option<String>,
) -> Result<Value> {
    if !server.peers.contains(peer) {
        return Err(Error::forbidden(format!(
            "{peer} is not an allow-listed peer of this unit"
        )));
    }
    let mut body = json!({});
    if let Some(limit) = limit {
        body["limit"] = json!(limit);
    }
    if let Some(since) = since {
        body["since"] = json!(since);
    }
    if let Some(term) = term {
        body["filter"] = json!({"generic_search_term": term});
    }
    server
        .federation
        .request(
            peer,
            Method::POST,
            "/_matrix/federation/v1/publicRooms",
            Some(body),
        )
        .await
        .map_err(fed_error)
}

/// Our user's `join` or `knock` through `resident`: the handshake offering every room version
/// this unit supports, with the user's profile (and `reason`) in the event's content.
async fn ask_to_enter(
    server: &Server,
    resident: &str,
    room_id: &RoomId,
    user_id: &UserId,
    membership: &'static str,
    reason: Option<&str>,
) -> Result<(Pdu, String, Value)> {
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
/// `content`, sends it, and returns the event, the room version and the resident's answer.
#[allow(clippy::too_many_arguments)]
async fn membership_handshake(
    server: &Server,
    resident: &str,
    room_id: &RoomId,
    user_id: &UserId,
    membership: &str,
    query: &str,
    content: Value,
    known_version: Option<&str>,
) -> Result<(Pdu, String, Value)> {
    let path = format!(
        "/_matrix/federation/v1/make_{membership}/{}/{}{query}",
        urlencode(room_id.as_str()),
        urlencode(user_id.as_str())
    );
    let template = server
        .federation
        .request(resident, Method::GET, &path, None)
        .await
        .map_err(fed_error)?;
    let version = template
        .get("room_version")
        .and_then(Value::as_str)
        .or(known_version)
        .unwrap_or("1")
        .to_owned();
    let (_, rules) = room_rules(&version)?;
    let event = template
        .get("event")
        .cloned()
        .ok_or_else(|| Error::bad_json(format!("make_{membership} without event")))?;
    let mut content = content;
    // A restricted join names the resident's member who authorises it (room versions 8+).
    if membership == "join"
        && let Some(authoriser) = event
            .get("content")
            .and_then(|c| c.get("join_authorised_via_users_server"))
            .and_then(Value::as_str)
    {
        let authoriser = UserId::parse(authoriser).map_err(|_| {
            Error::bad_json("make_join names an invalid join_authorised_via_users_server")
        })?;
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
    let mut ids = |key: &str| -> Vec<OwnedEventId> {
        event
            .get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| match v {
                        Value::Array(pair) => {
                            let id = OwnedEventId::try_from(pair.first()?.as_str()?).ok()?;
                            let hashes = pair.get(1).filter(|h| h.is_object())?;
                            reference_hashes.insert(id.clone(), hashes.clone());
                            Some(id)
                        }
                        _ => v.as_str().and_then(|s| OwnedEventId::try_from(s).ok()),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let prev_events = ids("prev_events");
    let auth_events = ids("auth_events");
    let pdu = build_event(
        NewEvent::state(TimelineEventType::RoomMember, user_id.as_str(), content),
        Placement {
            rules: &rules,
            room_id: Some(room_id),
            sender: user_id,
            prev_events,
            depth: event.get("depth").and_then(Value::as_u64).unwrap_or(1),
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
    let response = server
        .federation
        .request(resident, Method::PUT, &path, Some(body))
        .await
        .map_err(fed_error)?;
    Ok((pdu, version, response))
}
