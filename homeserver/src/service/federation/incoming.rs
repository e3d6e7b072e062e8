//! Checks on PDUs that arrive from peers (spec: "Checks performed on receipt of a PDU"), in the
//! spec's order, and the bookkeeping that follows: state before the event (state resolution v2
//! / v2.1 through ruma-state-res, v1 through `matrix::state_res_v1`, when the DAG has forked),
//! rejection, soft failure, forward extremities, and the room's new current state.
//!
//! [`verify_pdu`] runs before any database work: format, allow-listed servers, signatures
//! against pinned keys, content hash (redact on mismatch). [`accept_in_tx`] runs inside the
//! writer and needs the event's auth events and prev events to be present (the caller fetches
//! missing ones first, or supplies the state before the event from `/state_ids`).

use std::collections::{BTreeMap, HashMap, HashSet};

use ruma::events::{StateEventType, TimelineEventType};
use ruma::room_version_rules::{RoomVersionRules, StateResolutionVersion};
use ruma::signatures::{
    PublicKeyMap, Verified, required_server_signatures_to_verify_event, verify_event,
};
use ruma::state_res::utils::event_id_set::EventIdSet;
use ruma::state_res::{
    check_pdu_format, check_state_dependent_auth_rules, check_state_independent_auth_rules,
};
use ruma::{CanonicalJsonObject, OwnedEventId};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::matrix::keys::Signer;
use crate::matrix::pdu::Pdu;
use crate::matrix::room_rules;
use crate::store::state::{self, StateMap};
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

fn to_ruma_map(map: &StateMap) -> ruma::state_res::StateMap<OwnedEventId> {
    map.iter()
        .filter_map(|((kind, key), id)| {
            Some((
                (StateEventType::from(kind.as_str()), key.clone()),
                OwnedEventId::try_from(id.as_str()).ok()?,
            ))
        })
        .collect()
}

fn from_ruma_map(map: ruma::state_res::StateMap<OwnedEventId>) -> StateMap {
    map.into_iter()
        .map(|((kind, key), id)| ((kind.to_string(), key), id.to_string()))
        .collect()
}

/// Resolves forked room states with the room version's algorithm.
pub fn resolve(tx: &WriteTx<'_>, rules: &RoomVersionRules, maps: &[StateMap]) -> Result<StateMap> {
    let ruma_maps: Vec<_> = maps.iter().map(to_ruma_map).collect();
    let res_rules = match &rules.state_res {
        StateResolutionVersion::V2(res_rules) => res_rules,
        // Room version 1: ruma-state-res has no v1, so ours (matrix/state_res_v1.rs).
        _ => {
            return Ok(from_ruma_map(crate::matrix::state_res_v1::resolve(
                &rules.authorization,
                &ruma_maps,
                |id| tx.pdu(id.as_str()).ok().flatten(),
            )));
        }
    };
    let mut auth_chains = Vec::with_capacity(maps.len());
    for map in maps {
        let ids: Vec<String> = map.values().cloned().collect();
        let chain = dag::auth_chain(tx, &ids)?;
        let mut set = EventIdSet::new();
        for id in chain {
            if let Ok(id) = OwnedEventId::try_from(id) {
                set.insert(id);
            }
        }
        auth_chains.push(set);
    }
    let resolved = ruma::state_res::resolve(
        &rules.authorization,
        res_rules,
        &ruma_maps,
        auth_chains,
        |id| tx.pdu(id.as_str()).ok().flatten(),
        |conflicted| conflicted_subgraph(tx, conflicted),
    )
    .map_err(|e| Error::internal(format!("state resolution failed: {e}")))?;
    Ok(from_ruma_map(resolved))
}

/// The conflicted state subgraph (room v12, state resolution v2.1): every event on an auth-chain
/// path from one conflicted event to another.
fn conflicted_subgraph(
    tx: &WriteTx<'_>,
    conflicted: &ruma::state_res::StateMap<Vec<OwnedEventId>>,
) -> Option<EventIdSet<OwnedEventId>> {
    let roots: HashSet<String> = conflicted
        .values()
        .flatten()
        .map(|id| id.to_string())
        .collect();
    let mut ancestors_of: HashMap<String, HashSet<String>> = HashMap::new();
    for root in &roots {
        ancestors_of.insert(
            root.clone(),
            dag::auth_chain(tx, std::slice::from_ref(root)).ok()?,
        );
    }
    let candidates: HashSet<String> = ancestors_of
        .values()
        .flatten()
        .cloned()
        .chain(roots.iter().cloned())
        .collect();
    let mut subgraph = EventIdSet::new();
    for candidate in candidates {
        let mut lineage = dag::auth_chain(tx, std::slice::from_ref(&candidate)).ok()?;
        lineage.insert(candidate.clone());
        let below_a_root =
            ancestors_of.values().any(|a| a.contains(&candidate)) || roots.contains(&candidate);
        let above_a_root = lineage.iter().any(|e| roots.contains(e));
        if below_a_root && above_a_root {
            subgraph.insert(OwnedEventId::try_from(candidate).ok()?);
        }
    }
    Some(subgraph)
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

    let pos = tx.next_stream_pos();
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

    events::advance_extremities(tx, pdu)?;
    if pdu.kind == TimelineEventType::RoomRedaction
        && let Some(target) = &pdu.redacts
        && let Some(stored) = events::get_room_event(tx, room_id, target.as_str())?
        && (stored.pdu.sender.server_name() == pdu.sender.server_name()
            || crate::service::rooms::power_levels(tx, room_id)?.user_level(pdu.sender.as_str())
                >= crate::service::rooms::power_levels(tx, room_id)?.redact_level())
    {
        crate::service::rooms::apply_redaction(tx, &rules, &stored, pdu.event_id.as_str())?;
    }
    recompute_current_state(tx, &rules, room_id)?;
    crate::service::push::notify_in_tx(tx, pdu, pos)?;
    Ok(Ok(Outcome::Accepted))
}

/// Recomputes a room's current state from its forward extremities (resolving a fork) and
/// records membership changes for sync.
pub fn recompute_current_state(
    tx: &mut WriteTx<'_>,
    rules: &RoomVersionRules,
    room_id: &str,
) -> Result<()> {
    let extremities = events::forward_extremities(tx, room_id)?;
    let mut maps = Vec::new();
    let mut groups = Vec::new();
    for (id, _) in &extremities {
        if let Some(event) = events::get_event(tx, id.as_str())?
            && let Some(group) = event.state_group
        {
            maps.push(state::state_at_group(tx, group)?);
            groups.push(group);
        }
    }
    let (new_state, group) = match maps.len() {
        0 => return Ok(()),
        1 => (maps.pop().unwrap_or_default(), groups[0]),
        _ => {
            let resolved = resolve(tx, rules, &maps)?;
            let group = state::new_state_group(tx, room_id, None, &resolved)?;
            (resolved, group)
        }
    };
    let old = state::current_state(tx, room_id)?;
    let mut memberships: HashMap<String, String> = HashMap::new();
    for ((kind, key), id) in &new_state {
        if kind == "m.room.member"
            && old.get(&(kind.clone(), key.clone())) != Some(id)
            && let Some(event) = events::get_event(tx, id)?
        {
            let membership = event
                .pdu
                .content_value()
                .get("membership")
                .and_then(Value::as_str)
                .unwrap_or("leave")
                .to_owned();
            state::record_membership_change(tx, event.stream_pos, room_id, key, &membership)?;
            memberships.insert(id.clone(), membership);
        }
    }
    let reader: &WriteTx<'_> = tx;
    let membership_of = |id: &str| -> Option<String> {
        if let Some(m) = memberships.get(id) {
            return Some(m.clone());
        }
        let event = events::get_event(reader, id).ok()??;
        event
            .pdu
            .content_value()
            .get("membership")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    dag::replace_current_state(tx, room_id, &new_state, &membership_of, group)?;
    Ok(())
}
