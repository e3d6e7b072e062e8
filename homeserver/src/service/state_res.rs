//! State resolution over stored events, and the room's current state that follows from its
//! forward extremities. Rooms of version 2 and later resolve with ruma-state-res (v2, or v2.1
//! with its conflicted subgraph from v12), fed auth chains from `store::dag`; room version 1
//! with ours (`matrix::state_res_v1`). Received PDUs use it for the state before an event whose
//! prev events disagree (`service::federation::incoming`); [`recompute_current_state`] is how
//! `service::persist` moves a room's current state on after a received event.

use std::collections::{HashMap, HashSet};

use ruma::OwnedEventId;
use ruma::events::StateEventType;
use ruma::room_version_rules::{RoomVersionRules, StateResolutionVersion};
use ruma::state_res::utils::event_id_set::EventIdSet;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::store::state::{self, StateMap};
use crate::store::{WriteTx, dag, events};

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
    for extremity in &extremities {
        if let Some(event) = events::get_event(tx, extremity.event_id.as_str())?
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
