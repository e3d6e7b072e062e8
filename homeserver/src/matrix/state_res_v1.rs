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
                .find(|event| allowed_in(rules, &resolved, event, &fetch))
            {
                resolved.insert(slot, winner.event_id.clone());
            }
        }
    }
    resolved
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use ruma::events::TimelineEventType;
    use ruma::{MilliSecondsSinceUnixEpoch, OwnedRoomId, RoomVersionId, owned_server_name};
    use serde_json::{Value, json};

    use super::*;
    use crate::matrix::build::{NewEvent, Placement, build_event};
    use crate::matrix::keys::SigningKey;

    const ALICE: &str = "@alice:a.example";
    const BOB: &str = "@bob:a.example";

    /// Builds v1 events at chosen depths (the DAG links do not matter to the algorithm, which
    /// sees only the states and the events).
    struct Room {
        key: SigningKey,
        room: OwnedRoomId,
        events: HashMap<OwnedEventId, Pdu>,
        base: StateMap<OwnedEventId>,
    }

    impl Room {
        fn new() -> Room {
            let mut room = Room {
                key: SigningKey::generate(),
                room: OwnedRoomId::try_from("!r:a.example").expect("room id"),
                events: HashMap::new(),
                base: StateMap::new(),
            };
            let create = room.event("m.room.create", "", ALICE, 1, json!({"creator": ALICE}));
            room.set_base(&create);
            let join = room.event(
                "m.room.member",
                ALICE,
                ALICE,
                2,
                json!({"membership": "join"}),
            );
            room.set_base(&join);
            let power = room.event("m.room.power_levels", "", ALICE, 3, power(&[(ALICE, 100)]));
            room.set_base(&power);
            let rules = room.event(
                "m.room.join_rules",
                "",
                ALICE,
                4,
                json!({"join_rule": "public"}),
            );
            room.set_base(&rules);
            let bob = room.event("m.room.member", BOB, BOB, 5, json!({"membership": "join"}));
            room.set_base(&bob);
            room
        }

        fn event(
            &mut self,
            kind: &str,
            key: &str,
            sender: &str,
            depth: u64,
            content: Value,
        ) -> Pdu {
            let rules = RoomVersionId::V1.rules().expect("v1 rules");
            let server = owned_server_name!("a.example");
            let sender = ruma::UserId::parse(sender).expect("user id");
            let pdu = build_event(
                NewEvent::state(TimelineEventType::from(kind), key, content),
                Placement {
                    rules: &rules,
                    room_id: Some(&self.room),
                    sender: &sender,
                    prev_events: vec![],
                    depth,
                    auth_events: vec![],
                    reference_hashes: HashMap::new(),
                    origin_server_ts: MilliSecondsSinceUnixEpoch(1_000u32.into()),
                    server_name: &server,
                    key: &self.key,
                },
            )
            .expect("builds");
            self.events.insert(pdu.event_id.clone(), pdu.clone());
            pdu
        }

        fn set_base(&mut self, pdu: &Pdu) {
            self.base.insert(slot(pdu), pdu.event_id.clone());
        }

        fn with(&self, pdus: &[&Pdu]) -> StateMap<OwnedEventId> {
            let mut state = self.base.clone();
            for pdu in pdus {
                state.insert(slot(pdu), pdu.event_id.clone());
            }
            state
        }

        fn resolve(&self, states: &[StateMap<OwnedEventId>]) -> StateMap<OwnedEventId> {
            let rules = RoomVersionId::V1.rules().expect("v1 rules");
            resolve(&rules.authorization, states, |id| {
                self.events.get(id).cloned()
            })
        }
    }

    fn slot(pdu: &Pdu) -> (StateEventType, String) {
        (
            StateEventType::from(pdu.kind.to_string()),
            pdu.state_key.clone().expect("state event"),
        )
    }

    fn power(users: &[(&str, i64)]) -> Value {
        let users: serde_json::Map<String, Value> = users
            .iter()
            .map(|(u, l)| ((*u).to_owned(), json!(l)))
            .collect();
        json!({"users": users, "state_default": 50, "events_default": 0, "users_default": 0})
    }

    fn winner(state: &StateMap<OwnedEventId>, kind: &str, key: &str) -> OwnedEventId {
        state
            .get(&(StateEventType::from(kind), key.to_owned()))
            .cloned()
            .expect("slot resolved")
    }

    #[test]
    fn unconflicted_state_is_kept_and_other_conflicts_take_the_deepest_allowed() {
        let mut room = Room::new();
        let shallow = room.event("m.room.topic", "", ALICE, 6, json!({"topic": "old"}));
        let deep = room.event("m.room.topic", "", ALICE, 9, json!({"topic": "new"}));
        // Bob (power 0) may not set the topic (state_default 50): deepest, but not allowed.
        let forbidden = room.event("m.room.topic", "", BOB, 12, json!({"topic": "bob's"}));
        let states = [
            room.with(&[&shallow]),
            room.with(&[&deep]),
            room.with(&[&forbidden]),
        ];
        let resolved = room.resolve(&states);
        assert_eq!(winner(&resolved, "m.room.topic", ""), deep.event_id);
        for (slot, id) in &room.base {
            assert_eq!(resolved.get(slot), Some(id), "unconflicted {slot:?} kept");
        }
    }

    #[test]
    fn equal_depth_other_conflicts_take_the_lowest_sha1() {
        let mut room = Room::new();
        let one = room.event("m.room.topic", "", ALICE, 7, json!({"topic": "one"}));
        let two = room.event("m.room.topic", "", ALICE, 7, json!({"topic": "two"}));
        let resolved = room.resolve(&[room.with(&[&one]), room.with(&[&two])]);
        let lowest = if sha1(&one.event_id) < sha1(&two.event_id) {
            &one
        } else {
            &two
        };
        assert_eq!(winner(&resolved, "m.room.topic", ""), lowest.event_id);
    }

    #[test]
    fn power_levels_apply_in_ascending_depth_until_one_is_not_allowed() {
        let mut room = Room::new();
        // Depth 6: Alice gives Bob 50. Depth 8: Alice gives Bob 75. Both allowed in turn, so
        // the deeper one ends up in R.
        let first = room.event(
            "m.room.power_levels",
            "",
            ALICE,
            6,
            power(&[(ALICE, 100), (BOB, 50)]),
        );
        let second = room.event(
            "m.room.power_levels",
            "",
            ALICE,
            8,
            power(&[(ALICE, 100), (BOB, 75)]),
        );
        let resolved = room.resolve(&[room.with(&[&second]), room.with(&[&first])]);
        assert_eq!(
            winner(&resolved, "m.room.power_levels", ""),
            second.event_id
        );

        // Depth 6: Alice demotes herself to 0. Depth 8: Alice sets levels again, which in R
        // (after the demotion) she may no longer do: the chain stops at the demotion, and the
        // deeper event loses (the "state reset" the spec warns about).
        let demote = room.event("m.room.power_levels", "", ALICE, 6, power(&[(ALICE, 0)]));
        let later = room.event(
            "m.room.power_levels",
            "",
            ALICE,
            8,
            power(&[(ALICE, 100), (BOB, 10)]),
        );
        let resolved = room.resolve(&[room.with(&[&demote]), room.with(&[&later])]);
        assert_eq!(
            winner(&resolved, "m.room.power_levels", ""),
            demote.event_id
        );
    }

    #[test]
    fn equal_depth_power_levels_go_in_descending_sha1_order() {
        let mut room = Room::new();
        let one = room.event(
            "m.room.power_levels",
            "",
            ALICE,
            6,
            power(&[(ALICE, 100), (BOB, 1)]),
        );
        let two = room.event(
            "m.room.power_levels",
            "",
            ALICE,
            6,
            power(&[(ALICE, 100), (BOB, 2)]),
        );
        let resolved = room.resolve(&[room.with(&[&one]), room.with(&[&two])]);
        // Descending sha1: the higher hash goes first, the lower one is applied last and wins.
        let last = if sha1(&one.event_id) < sha1(&two.event_id) {
            &one
        } else {
            &two
        };
        assert_eq!(winner(&resolved, "m.room.power_levels", ""), last.event_id);
    }

    #[test]
    fn member_conflicts_are_resolved_against_the_resolved_power_levels() {
        let mut room = Room::new();
        // Fork 1 bans Bob at depth 6 (Alice has ban power); fork 2 has Bob leave at depth 7.
        let ban = room.event("m.room.member", BOB, ALICE, 6, json!({"membership": "ban"}));
        let leave = room.event("m.room.member", BOB, BOB, 7, json!({"membership": "leave"}));
        let resolved = room.resolve(&[room.with(&[&ban]), room.with(&[&leave])]);
        // Ascending depth: the ban first; Bob's leave is then not allowed (he is banned).
        assert_eq!(winner(&resolved, "m.room.member", BOB), ban.event_id);
    }
}
