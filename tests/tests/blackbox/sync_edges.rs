//! `/sync` edge cases clients notice: lazy-loaded members in gappy and non-gappy incremental
//! syncs (and `include_redundant_members`), one's own member change arriving as that one event,
//! the room summary's `m.heroes` (and sliding sync's `heroes`), presence of users one newly
//! shares a room with, `device_lists.changed` on a new login, `timeline.limit: 0`,
//! `event_format: "federation"`, and a room joined and left within one sync batch.

use std::time::Duration;
use tests::{Client, TestEnv, Value, bodies, enc, json, ok, section_events, str_field, timeline};

const DEADLINE: Duration = Duration::from_secs(10);

fn next_batch(sync: &Value) -> String {
    str_field(sync, "next_batch")
}

/// The state keys of the `m.room.member` events in the room's `state` section.
fn state_members(sync: &Value, room: &str) -> Vec<String> {
    let mut members: Vec<String> = section_events(sync, "join", room, "state")
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .filter_map(|e| e["state_key"].as_str().map(str::to_owned))
        .collect();
    members.sort();
    members
}

fn lazy_filter(limit: u64, redundant: bool) -> Value {
    json!({
        "room": {
            "timeline": { "limit": limit },
            "state": { "lazy_load_members": true, "include_redundant_members": redundant },
        }
    })
}

#[test]
fn lazy_members_in_gappy_and_plain_incremental_syncs() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let carol = env.register("carol");
    let dave = env.register("dave");
    // A named room: no heroes whose members lazy loading would have to send.
    let room = alice.create_room(&json!({ "preset": "public_chat", "name": "Lazy" }));
    bob.join(&room);
    carol.join(&room);
    for n in 0..3 {
        alice.send_text(&room, &format!("a{n}"));
    }
    let filter = lazy_filter(2, false);
    let initial = alice.sync(None, 0, Some(&filter));
    assert_eq!(bodies(&timeline(&initial, &room)), vec!["a1", "a2"]);
    assert_eq!(state_members(&initial, &room), vec![alice.user_id.clone()]);
    let since1 = next_batch(&initial);

    // A gap: dave joins (not in the timeline), then bob sends more than the limit.
    dave.join(&room);
    for n in 0..3 {
        bob.send_text(&room, &format!("b{n}"));
    }
    let gappy = alice.sync(Some(&since1), 0, Some(&filter));
    assert_eq!(bodies(&timeline(&gappy, &room)), vec!["b1", "b2"]);
    assert_eq!(gappy["rooms"]["join"][&room]["timeline"]["limited"], true);
    let members = state_members(&gappy, &room);
    assert!(
        members.contains(&bob.user_id),
        "the sender's member event the client never got: {gappy:#}"
    );
    assert!(
        members.contains(&dave.user_id),
        "a member who changed in the gap: {gappy:#}"
    );
    assert!(
        !members.contains(&carol.user_id),
        "carol neither sent nor changed: {members:?}"
    );
    let since2 = next_batch(&gappy);

    // Bob's member event was sent with since2's response: redundant from now on...
    for n in 3..6 {
        bob.send_text(&room, &format!("b{n}"));
    }
    let again = alice.sync(Some(&since2), 0, Some(&filter));
    assert_eq!(bodies(&timeline(&again, &room)), vec!["b4", "b5"]);
    assert!(
        !state_members(&again, &room).contains(&bob.user_id),
        "a member event the client already has is not resent: {again:#}"
    );
    // ... unless the filter asks for redundant members ...
    let redundant = alice.sync(Some(&since2), 0, Some(&lazy_filter(2, true)));
    assert!(
        state_members(&redundant, &room).contains(&bob.user_id),
        "include_redundant_members sends it every time: {redundant:#}"
    );
    // ... and a retried sync from the older token (whose answer may have been lost) still
    // carries it.
    let retried = alice.sync(Some(&since1), 0, Some(&filter));
    assert!(
        state_members(&retried, &room).contains(&bob.user_id),
        "a retry from since1: {retried:#}"
    );

    // A sync without a gap: carol speaks for the first time; the client never got her member
    // event.
    let since3 = next_batch(&again);
    carol.send_text(&room, "c0");
    let plain = alice.sync(Some(&since3), 0, Some(&filter));
    assert_eq!(bodies(&timeline(&plain, &room)), vec!["c0"]);
    assert_ne!(plain["rooms"]["join"][&room]["timeline"]["limited"], true);
    assert_eq!(
        state_members(&plain, &room),
        vec![carol.user_id.clone()],
        "{plain:#}"
    );
}

/// The single event of the room's incremental timeline, asserting there is exactly one and the
/// sync is not limited.
fn only_event(sync: &Value, room: &str) -> Value {
    let events = timeline(sync, room);
    assert_eq!(events.len(), 1, "one event, no re-join: {sync:#}");
    assert_ne!(sync["rooms"]["join"][room]["timeline"]["limited"], true);
    assert!(
        section_events(sync, "join", room, "state").is_empty(),
        "no state replayed: {sync:#}"
    );
    events[0].clone()
}

#[test]
fn own_member_change_arrives_as_that_one_event() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({ "name": "Profile" }));
    alice.send_text(&room, "hello");
    let since = next_batch(&alice.sync(None, 0, None));

    let member_path = Client::state_path(&room, "m.room.member", &alice.user_id);
    let current = alice.get_ok(&member_path);
    let mut content = current.clone();
    content["displayname"] = json!("Alice in state");
    let event_id = alice.put_state(&room, "m.room.member", &alice.user_id, &content);
    let sync = alice.sync(Some(&since), 0, None);
    let event = only_event(&sync, &room);
    assert_eq!(event["event_id"], event_id.as_str());
    assert_eq!(event["content"]["displayname"], "Alice in state");

    let since = next_batch(&sync);
    ok(
        alice.put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&alice.user_id)
            ),
            &json!({ "displayname": "Alice by profile" }),
        ),
        "set display name",
    );
    let sync = alice.sync_until(Some(&since), None, DEADLINE, |s| {
        !timeline(s, &room).is_empty()
    });
    let event = only_event(&sync, &room);
    assert_eq!(event["type"], "m.room.member");
    assert_eq!(event["content"]["displayname"], "Alice by profile");
    assert_eq!(event["content"]["membership"], "join");
}

#[test]
fn heroes_are_the_first_five_other_members_by_stream_order() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    // Stream order differs from alphabetical order; xu is invited, the rest join.
    let mut expected = Vec::new();
    let mut clients = Vec::new();
    for name in ["zed", "yan", "xu", "wim", "vic", "uma"] {
        let client = env.register(name);
        if name == "xu" {
            alice.invite(&room, &client.user_id);
        } else {
            client.join(&room);
        }
        expected.push(client.user_id.clone());
        clients.push(client);
    }
    expected.truncate(5);

    let sync = alice.sync(None, 0, None);
    let summary = &sync["rooms"]["join"][&room]["summary"];
    assert_eq!(summary["m.heroes"], json!(expected), "{summary:#}");
    assert_eq!(summary["m.joined_member_count"], 6);
    assert_eq!(summary["m.invited_member_count"], 1);

    // A member's view leaves themself out and takes the next member.
    let zed = &clients[0];
    let sync = zed.sync(None, 0, None);
    let mut others = vec![alice.user_id.clone()];
    others.extend(expected[1..].iter().cloned());
    assert_eq!(
        sync["rooms"]["join"][&room]["summary"]["m.heroes"],
        json!(others)
    );

    // Sliding sync's `heroes` follow the same order.
    let sliding = ok(
        alice.post(
            "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?timeout=0",
            &json!({
                "conn_id": "heroes",
                "lists": { "all": { "ranges": [[0, 10]], "timeline_limit": 1 } },
            }),
        ),
        "sliding sync",
    );
    let heroes: Vec<Value> = sliding["rooms"][&room]["heroes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ids: Vec<&str> = heroes
        .iter()
        .filter_map(|h| h["user_id"].as_str())
        .collect();
    assert_eq!(ids, expected, "{sliding:#}");
}

#[test]
fn users_newly_sharing_a_room_appear_in_presence() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    ok(
        bob.put(
            &format!("/_matrix/client/v3/presence/{}/status", enc(&bob.user_id)),
            &json!({ "presence": "online", "status_msg": "around" }),
        ),
        "bob sets presence",
    );
    let since = next_batch(&alice.sync(None, 0, None));

    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    bob.join(&room);
    let sync = alice.sync_until(Some(&since), None, DEADLINE, |s| {
        timeline(s, &room)
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
    });
    let presence: Vec<Value> = sync["presence"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let bobs = presence
        .iter()
        .find(|e| e["sender"] == bob.user_id.as_str())
        .unwrap_or_else(|| panic!("bob's presence after he joined: {sync:#}"));
    assert_eq!(bobs["content"]["presence"], "online");
    assert_eq!(bobs["content"]["status_msg"], "around");
}

fn changed(sync: &Value) -> Vec<String> {
    sync["device_lists"]["changed"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_new_login_is_a_device_list_change() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    bob.join(&room);
    let alice_since = next_batch(&alice.sync(None, 0, None));
    let bob_since = next_batch(&bob.sync(None, 0, None));

    let _phone = env.login("alice");
    let own = alice.sync_until(Some(&alice_since), None, DEADLINE, |s| {
        changed(s).contains(&alice.user_id)
    });
    assert!(changed(&own).contains(&alice.user_id));
    let peer = bob.sync_until(Some(&bob_since), None, DEADLINE, |s| {
        changed(s).contains(&alice.user_id)
    });
    assert!(changed(&peer).contains(&alice.user_id));
}

#[test]
fn timeline_limit_zero_gives_no_events() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({ "name": "Zero" }));
    alice.send_text(&room, "one");
    let filter = json!({ "room": { "timeline": { "limit": 0 } } });

    let initial = alice.sync(None, 0, Some(&filter));
    assert!(
        initial["rooms"]["join"][&room].is_object(),
        "the room is still listed: {initial:#}"
    );
    assert!(timeline(&initial, &room).is_empty(), "{initial:#}");
    assert!(
        section_events(&initial, "join", &room, "state")
            .iter()
            .any(|e| e["type"] == "m.room.name"),
        "its state comes in `state`: {initial:#}"
    );

    alice.send_text(&room, "two");
    let sync = alice.sync(Some(&next_batch(&initial)), 0, Some(&filter));
    assert!(
        sync["rooms"]["join"][&room].is_object(),
        "a room with news appears: {sync:#}"
    );
    assert!(timeline(&sync, &room).is_empty(), "{sync:#}");
    assert_eq!(sync["rooms"]["join"][&room]["timeline"]["limited"], true);
}

#[test]
fn federation_event_format_is_honoured() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({ "name": "Fed" }));
    alice.send_text(&room, "hello");
    let sync = alice.sync(None, 0, Some(&json!({ "event_format": "federation" })));
    let events = timeline(&sync, &room);
    assert!(!events.is_empty(), "{sync:#}");
    for event in events
        .iter()
        .chain(section_events(&sync, "join", &room, "state").iter())
    {
        for field in [
            "auth_events",
            "prev_events",
            "depth",
            "hashes",
            "signatures",
        ] {
            assert!(
                event.get(field).is_some(),
                "{field} in a federation-format event: {event:#}"
            );
        }
        // The PDU as it is: a room version 12 create event carries no `room_id`.
        if event["type"] != "m.room.create" {
            assert_eq!(event["room_id"], room.as_str(), "{event:#}");
        }
    }
    let client = alice.sync(None, 0, Some(&json!({ "event_format": "client" })));
    assert!(
        timeline(&client, &room)
            .iter()
            .all(|e| e.get("auth_events").is_none()),
        "client format is the default shape"
    );
}

#[test]
fn a_room_joined_and_left_within_one_batch_comes_with_its_state() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = alice.create_room(&json!({ "preset": "public_chat", "name": "Brief" }));
    alice.send_text(&room, "before bob");
    let filter = json!({ "room": { "include_leave": true } });
    let since = next_batch(&bob.sync(None, 0, Some(&filter)));

    bob.join(&room);
    bob.send_text(&room, "hi and bye");
    ok(bob.membership(&room, "leave", &json!({})), "leave");
    let sync = bob.sync(Some(&since), 0, Some(&filter));
    let left = &sync["rooms"]["leave"][&room];
    assert!(left.is_object(), "the room under leave: {sync:#}");
    let events = section_events(&sync, "leave", &room, "timeline");
    assert!(
        bodies(&events).contains(&"hi and bye".to_owned()),
        "its timeline: {sync:#}"
    );
    let membership_of = |e: &Value| e["content"]["membership"].as_str().map(str::to_owned);
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
            .filter_map(membership_of)
            .collect::<Vec<_>>(),
        vec!["join", "leave"],
        "{sync:#}"
    );
    // The room comes as a fresh view (as a newly joined room would): its state before the
    // timeline plus the timeline cover the room's current state.
    let mut state = section_events(&sync, "leave", &room, "state");
    assert!(!state.is_empty(), "the left room's state: {sync:#}");
    state.extend(events);
    for kind in ["m.room.create", "m.room.name", "m.room.join_rules"] {
        assert!(
            state.iter().any(|e| e["type"] == kind),
            "{kind} in the left room's state or timeline: {sync:#}"
        );
    }
}
