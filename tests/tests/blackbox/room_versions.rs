//! Every stable room version (1–12) end to end across two units: a room of each version created
//! on A, joined over federation by a user of B, messages and state both ways, event IDs in the
//! version's format, and redactions showing the version's redacted form on both units
//! (`allow` of join rules kept from v8, `invite` of power levels kept from v11, `creator` in the
//! create event before v11). `/capabilities` lists every version as stable. A fork of a v1 room
//! resolves with state resolution v1 on both units.

use std::net::SocketAddr;

use tests::federation::{
    DELIVERY, Federation, eventually, free_port_on, share_room, state_content, state_ids,
    timeline_events, unit_ip, wait_for_bodies,
};
use tests::{Client, Value, enc, json, ok, str_field};

const VERSIONS: [&str; 12] = [
    "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12",
];

fn room_path(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/{rest}", enc(room))
}

fn event(client: &Client, room: &str, event_id: &str) -> Value {
    client.get_ok(&room_path(room, &format!("event/{}", enc(event_id))))
}

fn redact(client: &Client, room: &str, event_id: &str, txn: &str) -> String {
    let reply = client.put(
        &room_path(room, &format!("redact/{}/{}", enc(event_id), enc(txn))),
        &json!({ "reason": "version test" }),
    );
    str_field(&ok(reply, &format!("redact {event_id}")), "event_id")
}

/// Waits until `client`'s unit shows `event_id` redacted; returns its content then.
fn redacted_content(client: &Client, room: &str, event_id: &str) -> Value {
    eventually(
        &format!("{} to show {event_id} redacted", client.user_id),
        DELIVERY,
        || {
            let (status, body) = client.get(&room_path(room, &format!("event/{}", enc(event_id))));
            if status == 200 && body["unsigned"]["redacted_because"].is_object() {
                Ok(body["content"].clone())
            } else {
                Err(format!("{status} {body}"))
            }
        },
    )
}

/// Checks that every event ID of the room has the version's format.
fn assert_event_id_format(version: &str, room: &str, ids: &[String]) {
    let v: u32 = version.parse().expect("numeric version");
    for id in ids {
        assert!(
            id.starts_with('$'),
            "v{version} {room}: {id} has the $ sigil"
        );
        match v {
            1 | 2 => assert!(
                id.ends_with(":unit-a.test") || id.ends_with(":unit-b.test"),
                "v{version}: event ID {id} is $opaque:server"
            ),
            3 => assert!(
                !id.contains(':') && id.len() == 44 && !id.contains('-') && !id.contains('_'),
                "v3: event ID {id} is a standard-base64 reference hash"
            ),
            _ => assert!(
                !id.contains(':') && id.len() == 44 && !id.contains('+') && !id.contains('/'),
                "v{version}: event ID {id} is a URL-safe reference hash"
            ),
        }
    }
}

#[test]
fn every_room_version_works_across_units() {
    let fed = Federation::start(&["unit-a.test", "unit-b.test"]);
    let alice = fed[0].register("alice");
    let bob = fed[1].register("bob");

    let caps = ok(alice.get("/_matrix/client/v3/capabilities"), "capabilities");
    let versions = &caps["capabilities"]["m.room_versions"];
    assert_eq!(versions["default"], "12", "{caps:#}");
    for version in VERSIONS {
        assert_eq!(
            versions["available"][version], "stable",
            "room version {version} is listed as stable: {caps:#}"
        );
    }

    for version in VERSIONS {
        let v: u32 = version.parse().expect("numeric version");
        let room = share_room(
            &alice,
            &[&bob],
            &json!({ "preset": "private_chat", "room_version": version, "name": format!("v{version}") }),
        );
        assert_eq!(
            room.ends_with(":unit-a.test"),
            v < 12,
            "v{version}: room ID shape {room}"
        );
        for client in [&alice, &bob] {
            let create = client.get_ok(&Client::state_path(&room, "m.room.create", ""));
            assert_eq!(
                create["room_version"], version,
                "v{version} create: {create}"
            );
            if v < 11 {
                assert_eq!(
                    create["creator"], alice.user_id,
                    "v{version} names the creator"
                );
            } else {
                assert!(
                    create.get("creator").is_none(),
                    "v{version} has no creator: {create}"
                );
            }
        }

        // Messages and state both ways.
        let from_alice = alice.send_text(&room, &format!("v{version} hello from A"));
        let from_bob = bob.send_text(&room, &format!("v{version} hello from B"));
        let bodies = [
            format!("v{version} hello from A"),
            format!("v{version} hello from B"),
        ];
        wait_for_bodies(&alice, &room, &bodies, DELIVERY);
        wait_for_bodies(&bob, &room, &bodies, DELIVERY);
        alice.put_state(
            &room,
            "m.room.topic",
            "",
            &json!({ "topic": format!("topic v{version}") }),
        );
        bob.put_state(
            &room,
            "m.room.member",
            &bob.user_id,
            &json!({ "membership": "join", "displayname": format!("Bob v{version}") }),
        );
        let allow = json!([{ "type": "m.room_membership", "room_id": room }]);
        let join_rules = alice.put_state(
            &room,
            "m.room.join_rules",
            "",
            &json!({ "join_rule": "invite", "allow": allow }),
        );
        let power = str_field(
            &event_of_state(&alice, &room, "m.room.power_levels"),
            "event_id",
        );
        for (client, other) in [(&alice, &bob), (&bob, &alice)] {
            eventually(
                &format!("v{version}: {} sees the state", client.user_id),
                DELIVERY,
                || {
                    let topic = client.get(&Client::state_path(&room, "m.room.topic", ""));
                    let member =
                        client.get(&Client::state_path(&room, "m.room.member", &bob.user_id));
                    let rules = client.get(&Client::state_path(&room, "m.room.join_rules", ""));
                    if topic.1["topic"] == format!("topic v{version}")
                        && member.1["displayname"] == format!("Bob v{version}")
                        && rules.1["join_rule"] == "invite"
                    {
                        Ok(())
                    } else {
                        Err(format!(
                            "{topic:?} {member:?} {rules:?} (other: {})",
                            other.user_id
                        ))
                    }
                },
            );
        }

        // Redactions: a message of B's, the join rules and the power levels, by A's admin.
        redact(&alice, &room, &from_bob, &format!("r-msg-{version}"));
        redact(&alice, &room, &join_rules, &format!("r-rules-{version}"));
        redact(&alice, &room, &power, &format!("r-power-{version}"));
        for client in [&alice, &bob] {
            let content = redacted_content(client, &room, &from_bob);
            assert_eq!(
                content,
                json!({}),
                "v{version}: redacted message on {}",
                client.user_id
            );
            let rules = redacted_content(client, &room, &join_rules);
            assert_eq!(rules["join_rule"], "invite", "v{version}: {rules}");
            assert_eq!(
                rules.get("allow").is_some(),
                v >= 8,
                "v{version}: join rules keep `allow` only from v8 ({} shows {rules})",
                client.user_id
            );
            let levels = redacted_content(client, &room, &power);
            assert!(levels["users"].is_object(), "v{version}: {levels}");
            if v < 12 {
                // From v12 creators are privileged by the create event, not listed here.
                assert_eq!(levels["users"][&alice.user_id], 100, "v{version}: {levels}");
            }
            assert!(
                levels.get("notifications").is_none(),
                "v{version}: {levels}"
            );
            assert_eq!(
                levels.get("invite").is_some(),
                v >= 11,
                "v{version}: power levels keep `invite` only from v11 ({} shows {levels})",
                client.user_id
            );
        }
        assert_eq!(
            event(&bob, &room, &from_alice)["content"]["body"],
            format!("v{version} hello from A"),
            "v{version}: an unredacted event is untouched"
        );

        // The room goes on after the redactions, both ways.
        bob.send_text(&room, &format!("v{version} after from B"));
        alice.send_text(&room, &format!("v{version} after from A"));
        let after = [
            format!("v{version} after from A"),
            format!("v{version} after from B"),
        ];
        wait_for_bodies(&alice, &room, &after, DELIVERY);
        wait_for_bodies(&bob, &room, &after, DELIVERY);

        for client in [&alice, &bob] {
            let ids: Vec<String> = timeline_events(client, &room)
                .iter()
                .map(|e| str_field(e, "event_id"))
                .collect();
            assert!(
                ids.len() >= 12,
                "v{version}: {} sees the history",
                client.user_id
            );
            assert_event_id_format(version, &room, &ids);
        }
    }
}

/// The full current state event of `kind` with an empty state key, from `/state`.
fn event_of_state(client: &Client, room: &str, kind: &str) -> Value {
    let state = client.get_ok(&room_path(room, "state"));
    state
        .as_array()
        .and_then(|events| {
            events
                .iter()
                .find(|e| e["type"] == kind && e["state_key"] == "")
                .cloned()
        })
        .unwrap_or_else(|| panic!("no {kind} in {state:#}"))
}

/// A v1 room forks while the units cannot reach each other: A sets the topic twice, then B (with
/// the power to) sets it once, later. State resolution v1 picks the conflicting non-auth event
/// of the greatest depth (A's second topic); v2 would have picked B's, the latest. Both units
/// must agree on A's.
#[test]
fn v1_fork_resolves_by_depth_on_both_units() {
    let fed = Federation::start(&["unit-a.test", "unit-b.test"]);
    let alice = fed[0].register("alice");
    let bob = fed[1].register("bob");
    let room = share_room(
        &alice,
        &[&bob],
        &json!({ "preset": "private_chat", "room_version": "1" }),
    );
    let mut levels = state_content(&alice, &room, "m.room.power_levels", "").expect("levels");
    levels["users"][&bob.user_id] = json!(50);
    let promote = alice.put_state(&room, "m.room.power_levels", "", &levels);
    eventually("B to see Bob promoted", DELIVERY, || {
        let ids = state_ids(&bob, &room);
        match ids.get(&("m.room.power_levels".to_owned(), String::new())) {
            Some(id) if *id == promote => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    let dead_a = SocketAddr::from((unit_ip(0), free_port_on(unit_ip(0))));
    let dead_b = SocketAddr::from((unit_ip(1), free_port_on(unit_ip(1))));
    fed[0].cut_link(&fed[1], dead_b);
    fed[1].cut_link(&fed[0], dead_a);
    alice.put_state(&room, "m.room.topic", "", &json!({ "topic": "A first" }));
    let deepest = alice.put_state(&room, "m.room.topic", "", &json!({ "topic": "A second" }));
    let latest = bob.put_state(&room, "m.room.topic", "", &json!({ "topic": "B, later" }));
    fed[0].mend_link(&fed[1]);
    fed[1].mend_link(&fed[0]);

    // Each side learns of the other's branch; a message from each afterwards merges the DAG.
    for (client, other_event) in [(&alice, &latest), (&bob, &deepest)] {
        eventually(
            &format!("{} to receive the other branch", client.user_id),
            DELIVERY,
            || {
                let (status, body) =
                    client.get(&room_path(&room, &format!("event/{}", enc(other_event))));
                if status == 200 {
                    Ok(())
                } else {
                    Err(format!("{status} {body}"))
                }
            },
        );
    }
    alice.send_text(&room, "merge from A");
    bob.send_text(&room, "merge from B");
    let bodies = ["merge from A".to_owned(), "merge from B".to_owned()];
    wait_for_bodies(&alice, &room, &bodies, DELIVERY);
    wait_for_bodies(&bob, &room, &bodies, DELIVERY);
    for client in [&alice, &bob] {
        eventually(
            &format!("{} to resolve the topic by depth", client.user_id),
            DELIVERY,
            || {
                let ids = state_ids(client, &room);
                match ids.get(&("m.room.topic".to_owned(), String::new())) {
                    Some(id) if *id == deepest => Ok(()),
                    other => Err(format!(
                        "topic is {other:?}; deepest {deepest}, latest {latest}"
                    )),
                }
            },
        );
    }
    assert_eq!(
        state_ids(&alice, &room),
        state_ids(&bob, &room),
        "both units agree"
    );
}
