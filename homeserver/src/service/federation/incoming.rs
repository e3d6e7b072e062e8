//! Checks on PDUs that arrive from peers (spec: "Checks performed on receipt of a PDU"), in the
//! spec's order, and the bookkeeping that follows: state before the event (state resolution v2
//! / v2.1 through ruma-state-res, v1 through `matrix::state_res_v1`, when the DAG has forked),
//! rejection and soft failure; an accepted event then goes through `service::persist` (forward
//! extremities, redaction, the room's new current state, push), like a local one.
//!
//! [`verify_pdu`] runs before any database work: format, allow-listed servers, signatures
//! against pinned keys, content hash (redact on mismatch). [`accept_in_tx`] runs inside the
//! writer and needs the event's auth events and prev events to be present (the caller fetches
//! missing ones first, or supplies the state before the event from `/state_ids`).

use std::collections::{BTreeMap, HashMap};

use ruma::events::{StateEventType, TimelineEventType};
use ruma::room_version_rules::RoomVersionRules;
use ruma::signatures::{
    PublicKeyMap, Verified, required_server_signatures_to_verify_event, verify_event,
};
use ruma::state_res::{
    check_pdu_format, check_state_dependent_auth_rules, check_state_independent_auth_rules,
};
use ruma::{CanonicalJsonObject, OwnedEventId};

use crate::error::{Error, Result};
use crate::matrix::keys::Signer;
use crate::matrix::pdu::Pdu;
use crate::matrix::room_rules;
use crate::service::persist::{self, CurrentState};
use crate::service::state_res::resolve;
use crate::store::state::{self, StateMap};
use crate::store::wake::Audience;
use crate::store::{WriteTx, dag, events};
use crate::transport::peers::Allowlist;

/// What happened to an incoming event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored and part of the room.
    Accepted,
    /// We had it already.
    AlreadyKnown,
    /// Failed auth: stored as rejected, never shown or built upon.
    Rejected(String),
    /// Passed auth but not against the current state: stored, hidden, not built upon.
    SoftFailed,
}

/// Why an event could not be processed yet.
#[derive(Debug, thiserror::Error)]
pub enum Missing {
    /// An auth event is not stored.
    #[error("missing auth event {0}")]
    AuthEvent(String),
    /// A prev event is not stored (and no state was supplied).
    #[error("missing prev event {0}")]
    PrevEvent(String),
}

/// The server part of a user ID.
fn server_of(user_id: &str) -> Option<&str> {
    user_id.split_once(':').map(|(_, server)| server)
}

/// Checks a PDU's format, the servers it names, its signatures (against pinned keys only) and
/// its content hash. Returns the event ID and the PDU, redacted if the hash did not match.
pub fn verify_pdu(
    peers: &Allowlist,
    signer: &Signer,
    rules: &RoomVersionRules,
    mut object: CanonicalJsonObject,
) -> Result<Pdu> {
    // The `unsigned` block is never trusted from the network.
    object.remove("unsigned");
    check_pdu_format(&object, &rules.event_format)
        .map_err(|e| Error::bad_json(format!("PDU format: {e}")))?;
    let event_id = crate::matrix::pdu::event_id_of(&object, rules)
        .map_err(|e| Error::bad_json(e.to_string()))?;
    let own = signer.server_name.as_str();
    let allowed = |server: &str| server == own || peers.contains(server);
    // No sender names no allow-listed server: refused just below.
    let sender = object
        .get("sender")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    match server_of(&sender) {
        Some(server) if allowed(server) => {}
        _ => {
            return Err(Error::forbidden(format!(
                "event {event_id} is from {sender}, whose server is not allow-listed"
            )));
        }
    }
    // An event that names a server outside the allow-list is authentic but against policy: it
    // is kept as rejected (never shown, never authorising anything) so that later events
    // referencing it still find their place in the DAG.
    let is_member = object.get("type").and_then(|v| v.as_str()) == Some("m.room.member");
    let names_stranger = is_member
        && object
            .get("state_key")
            .and_then(|v| v.as_str())
            .is_some_and(|target| !server_of(target).is_some_and(allowed));
    let servers = required_server_signatures_to_verify_event(&object, &rules.signatures)
        .map_err(|e| Error::bad_json(e.to_string()))?;
    let mut keys = PublicKeyMap::new();
    for server in servers {
        let server = server.as_str();
        let mut set = BTreeMap::new();
        if server == own {
            set.insert(
                signer.key.key_id(),
                ruma::serde::Base64::parse(signer.key.public_key_base64())
                    .map_err(|e| Error::internal(e.to_string()))?,
            );
            // Our own events from before a key rotation come back in joins and backfill.
            for old in signer.key.old_verify_keys() {
                set.insert(
                    old.key_id.clone(),
                    ruma::serde::Base64::parse(&old.public_key)
                        .map_err(|e| Error::internal(e.to_string()))?,
                );
            }
        } else {
            let peer = peers.get(server).ok_or_else(|| {
                Error::forbidden(format!(
                    "event {event_id} needs a signature of {server}, which is not allow-listed"
                ))
            })?;
            for (id, key) in peer
                .card
                .verify_keys
                .iter()
                .chain(peer.card.old_verify_keys.iter().map(|(id, k)| (id, &k.key)))
            {
                set.insert(
                    id.clone(),
                    ruma::serde::Base64::parse(key).map_err(|e| Error::internal(e.to_string()))?,
                );
            }
        }
        keys.insert(server.to_owned(), set);
    }
    let verified = verify_event(&keys, &object, rules)
        .map_err(|e| Error::forbidden(format!("event {event_id}: bad signature: {e}")))?;
    if verified == Verified::Signatures {
        tracing::warn!(event_id = %event_id, "content hash mismatch: storing the redacted event");
        object = ruma::canonical_json::redact(object, &rules.redaction, None)
            .map_err(|e| Error::bad_json(e.to_string()))?;
    }
    let json = serde_json::to_string(&object).map_err(|e| Error::internal(e.to_string()))?;
    if names_stranger {
        tracing::warn!(event_id = %event_id, "event names a server outside the allow-list: rejecting it");
    }
    Pdu::parse(event_id, json, names_stranger).map_err(|e| Error::bad_json(e.to_string()))
}

/// The state before an event, from the states after its prev events (resolved if several).
fn state_before(
    tx: &WriteTx<'_>,
    rules: &RoomVersionRules,
    prev_events: &[OwnedEventId],
) -> Result<std::result::Result<(StateMap, Option<i64>), Missing>> {
    let mut maps = Vec::new();
    let mut groups = Vec::new();
    for prev in prev_events {
        let stored = events::get_event(tx, prev.as_str())?;
        match stored {
            Some(event) if !dag::is_outlier(tx, prev.as_str())? => {
                let group = event.state_group;
                let map = match group {
                    Some(group) => state::state_at_group(tx, group)?,
                    None => StateMap::new(),
                };
                groups.push(group);
                maps.push(map);
            }
            _ => return Ok(Err(Missing::PrevEvent(prev.to_string()))),
        }
    }
    Ok(Ok(match maps.len() {
        0 => (StateMap::new(), None),
        1 => (maps.pop().unwrap_or_default(), groups.pop().flatten()),
        _ => (resolve(tx, rules, &maps)?, None),
    }))
}

/// Accepts a verified PDU into its room. `supplied_state` is the state before the event when
/// the caller got it from a peer (`/state_ids`, `send_join`) instead of from prev events.
pub fn accept_in_tx(
    tx: &mut WriteTx<'_>,
    pdu: &Pdu,
    supplied_state: Option<StateMap>,
) -> Result<std::result::Result<Outcome, Missing>> {
    let event_id = pdu.event_id.as_str();
    if dag::have_event(tx, event_id)? && !dag::is_outlier(tx, event_id)? {
        return Ok(Ok(Outcome::AlreadyKnown));
    }
    let room = state::get_room(tx, pdu.room_id.as_str())?
        .ok_or_else(|| Error::not_found("Unknown room"))?;
    let (_, rules) = room_rules(&room.room_version)?;

    let mut auth_map: HashMap<OwnedEventId, Pdu> = HashMap::new();
    for auth_id in &pdu.auth_events {
        match tx.pdu(auth_id.as_str())? {
            Some(auth) => {
                auth_map.insert(auth_id.clone(), auth);
            }
            None => return Ok(Err(Missing::AuthEvent(auth_id.to_string()))),
        }
    }
    // From v12 the create event is implied by the room ID rather than listed.
    if pdu.kind != TimelineEventType::RoomCreate {
        let create_id =
            match state::current_state_id(tx, pdu.room_id.as_str(), "m.room.create", "")? {
                Some(id) => Some(id),
                // v12: the room ID is the create event's ID with another sigil.
                None if rules.authorization.room_create_event_id_as_room_id => {
                    Some(format!("${}", &pdu.room_id.as_str()[1..]))
                }
                None => None,
            };
        if let Some(create) = create_id.map(|id| tx.pdu(&id)).transpose()?.flatten() {
            auth_map.entry(create.event_id.clone()).or_insert(create);
        }
    }

    let (before, before_group) = match supplied_state {
        Some(map) => (map, None),
        None => match state_before(tx, &rules, &pdu.prev_events)? {
            Ok(found) => found,
            Err(missing) => return Ok(Err(missing)),
        },
    };

    let mut rejection = if pdu.rejected {
        Some("the event names a server outside the allow-list".to_owned())
    } else {
        check_state_independent_auth_rules(&rules.authorization, pdu, |id| {
            auth_map.get(id).cloned()
        })
        .err()
    };
    if rejection.is_none() {
        let by_key: HashMap<(String, String), Pdu> = auth_map
            .values()
            .filter_map(|p| Some(((p.kind.to_string(), p.state_key.clone()?), p.clone())))
            .collect();
        rejection = check_state_dependent_auth_rules(
            &rules.authorization,
            pdu,
            |kind: &StateEventType, key: &str| {
                by_key.get(&(kind.to_string(), key.to_owned())).cloned()
            },
        )
        .err();
    }
    if rejection.is_none() {
        let reader: &WriteTx<'_> = tx;
        rejection = check_state_dependent_auth_rules(
            &rules.authorization,
            pdu,
            |kind: &StateEventType, key: &str| {
                let id = before.get(&(kind.to_string(), key.to_owned()))?;
                reader.pdu(id).ok()?
            },
        )
        .err();
    }

    let pos = tx.next_stream_pos(Audience::of_event(pdu));
    let rejected = rejection.is_some();
    let group = {
        let mut delta = StateMap::new();
        if let (Some(key), false) = (&pdu.state_key, rejected) {
            delta.insert(
                (pdu.kind.to_string(), key.clone()),
                pdu.event_id.to_string(),
            );
        }
        match before_group {
            Some(group) if delta.is_empty() => group,
            Some(group) => state::new_state_group(tx, pdu.room_id.as_str(), Some(group), &delta)?,
            None => {
                let mut full = before.clone();
                full.extend(delta);
                state::new_state_group(tx, pdu.room_id.as_str(), None, &full)?
            }
        }
    };
    if dag::have_event(tx, event_id)? {
        // An outlier (auth chain, invite) that now gets its place in the room's DAG. It keeps
        // its stream position: it is history from before we saw it, not news for sync.
        dag::de_outlier(tx, event_id, Some(group), rejected, false)?;
    } else {
        let mut stored = pdu.clone();
        if rejected {
            stored = Pdu::parse(pdu.event_id.clone(), pdu.json.clone(), true)
                .map_err(|e| Error::internal(e.to_string()))?;
        }
        events::insert_event(tx, &stored, pos, Some(group), None)?;
    }
    if let Some(reason) = rejection {
        tracing::warn!(event_id, reason = %reason, "rejected incoming event");
        return Ok(Ok(Outcome::Rejected(reason)));
    }

    // Soft failure: authorised by its own history but not by the room as it is now.
    let reader: &WriteTx<'_> = tx;
    let room_id = pdu.room_id.as_str();
    // A room we are only now joining has no current state to check against.
    let soft = dag::participating(reader, room_id)?
        && check_state_dependent_auth_rules(
            &rules.authorization,
            pdu,
            |kind: &StateEventType, key: &str| {
                let id =
                    state::current_state_id(reader, room_id, &kind.to_string(), key).ok()??;
                reader.pdu(&id).ok()?
            },
        )
        .is_err()
        && pdu.kind != TimelineEventType::RoomCreate;
    if soft {
        dag::set_soft_failed(tx, event_id)?;
        tracing::warn!(event_id, "soft-failed incoming event");
        return Ok(Ok(Outcome::SoftFailed));
    }

    persist::apply_in_tx(tx, &rules, pdu, pos, CurrentState::Recompute)?;
    Ok(Ok(Outcome::Accepted))
}
