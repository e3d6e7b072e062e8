//! State resolution v1 (room version 1, spec `rooms/v1.md` "State resolution"), which
//! ruma-state-res does not implement (it has only v2 and v2.1).
//!
//! A pure function over state maps: the caller hands it the states to resolve and a way to fetch
//! events; the auth checks "in state R" are ruma's state-dependent auth rules with R as the state.
//! The algorithm is known to reset state (the spec's own warning); it is implemented as written
//! because every server in a v1 room must reach the same answer.

use std::collections::{BTreeMap, BTreeSet};

use ruma::events::StateEventType;
use ruma::room_version_rules::AuthorizationRules;
use ruma::state_res::{StateMap, check_state_dependent_auth_rules};
use ruma::{EventId, OwnedEventId};

use super::pdu::Pdu;

/// `sha1(event_id)`, the tie-breaker of state resolution v1.
fn sha1(event_id: &EventId) -> Vec<u8> {
    ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        event_id.as_str().as_bytes(),
    )
    .as_ref()
    .to_vec()
}

/// Whether `event` would be allowed by the authorisation rules in a room whose state is `state`.
fn allowed_in(
    rules: &AuthorizationRules,
    state: &StateMap<OwnedEventId>,
    event: &Pdu,
    fetch: &impl Fn(&EventId) -> Option<Pdu>,
) -> bool {
    check_state_dependent_auth_rules(rules, event.clone(), |kind: &StateEventType, key: &str| {
        state
            .get(&(kind.clone(), key.to_owned()))
            .and_then(|id| fetch(id))
    })
    .is_ok()
}

/// Resolves `states` (the states after each prev event) into the state before the new event,
/// per room version 1. Conflicted events that cannot be fetched are left out of the resolution.
pub fn resolve(
    rules: &AuthorizationRules,
    states: &[StateMap<OwnedEventId>],
    fetch: impl Fn(&EventId) -> Option<Pdu>,
) -> StateMap<OwnedEventId> {
    // Every event ID seen for each (type, state_key).
    let mut seen: BTreeMap<(String, String), BTreeSet<OwnedEventId>> = BTreeMap::new();
    for state in states {
        for ((kind, key), id) in state {
            seen.entry((kind.to_string(), key.clone()))
                .or_default()
                .insert(id.clone());
        }
    }
    // R starts as the union of the states without the conflicting events.
    let mut resolved: StateMap<OwnedEventId> = StateMap::new();
    let mut conflicts: Vec<((String, String), Vec<Pdu>)> = Vec::new();
    for (key, ids) in seen {
        if ids.len() == 1 {
            let id = ids.into_iter().next().expect("one id");
            resolved.insert((StateEventType::from(key.0.as_str()), key.1), id);
        } else {
            let events: Vec<Pdu> = ids.iter().filter_map(|id| fetch(id)).collect();
            conflicts.push((key, events));
        }
    }
    // Power levels, then join rules, then members: these affect the auth rules, so each list is
    // applied in order while its events stay allowed. A conflict is per (type, state_key).
    let rank = |kind: &str| match kind {
        "m.room.power_levels" => 0,
        "m.room.join_rules" => 1,
        "m.room.member" => 2,
        _ => 3,
    };
    conflicts.sort_by(|(a, _), (b, _)| (rank(&a.0), a).cmp(&(rank(&b.0), b)));
    for ((kind, state_key), mut events) in conflicts {
        let slot = (StateEventType::from(kind.as_str()), state_key);
        if rank(&kind) < 3 {
            // Ascending depth, then descending sha1(event_id).
            events.sort_by(|a, b| {
                a.depth
                    .cmp(&b.depth)
                    .then_with(|| sha1(&b.event_id).cmp(&sha1(&a.event_id)))
            });
            let mut events = events.into_iter();
            let Some(first) = events.next() else { continue };
            resolved.insert(slot.clone(), first.event_id.clone());
            for event in events {
                if !allowed_in(rules, &resolved, &event, &fetch) {
                    break;
                }
                resolved.insert(slot.clone(), event.event_id.clone());
            }
        } else {
            // The highest depth and lowest sha1(event_id) that passes auth in R.
            events.sort_by(|a, b| {
                b.depth
                    .cmp(&a.depth)
                    .then_with(|| sha1(&a.event_id).cmp(&sha1(&b.event_id)))
            });
            if let Some(winner) = events
                .iter()
                .find(|event| allowed_in(rules, &resolved, *event, &fetch))
            {
                resolved.insert(slot, winner.event_id.clone());
            }
        }
    }
    resolved
}
