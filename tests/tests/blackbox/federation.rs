//! Closed federation between real units: three `homeserver` processes on 127.0.0.2–4 with their
//! own keys, TLS CAs and cross-imported peer cards. A room on A with users of B and C joined over
//! federation; messages in every direction, in order, everywhere; state set on one unit agreed
//! by all; receipts and typing across units; joins by remote alias and `via`, leaves, kicks and
//! createRoom invites across units; client look-ups (alias, profile, directory) of peers; a
//! partition (C down while A crashes and restarts, and A and B fork the room with conflicting
//! state) that heals to identical state and timelines; a link cut for many backoff cycles that
//! loses nothing and duplicates nothing.

use std::collections::{BTreeMap, BTreeSet};
use tests::federation::{
    Checks, DELIVERY, Federation, Unit, eventually, free_port_on, share_room, state_content,
    state_ids, timeline_events, unit_ip, wait_for_bodies, within,
};
use tests::{Client, Value, enc, json, ok, str_field};

const NAMES: [&str; 3] = ["unit-a.test", "unit-b.test", "unit-c.test"];

/// Three meshed units, a user on each, and a private room on A that the users of B and C
/// joined over federation (after being invited by A's user).
struct Mesh {
    fed: Federation,
    users: [Client; 3],
    room: String,
}

impl Mesh {
    fn new() -> Mesh {
        let fed = Federation::start(&NAMES);
        let users = [
            fed[0].register("alice"),
            fed[1].register("bob"),
            fed[2].register("carol"),
        ];
        let room = share_room(
            &users[0],
            &[&users[1], &users[2]],
            &json!({ "preset": "private_chat", "name": "Ops", "topic": "Initial topic" }),
        );
        Mesh { fed, users, room }
    }

    fn unit(&self, n: usize) -> &Unit {
        &self.fed[n]
    }
}

/// The timeline events of `room` on `client`'s unit after (not including) `marker`, oldest
/// first, by `/messages` order.
fn events_after(client: &Client, room: &str, marker: &str) -> Vec<Value> {
    let events = timeline_events(client, room);
    let start = events
        .iter()
        .position(|e| e["event_id"] == marker)
        .unwrap_or_else(|| panic!("{} has no event {marker} in {room}", client.user_id));
    events[start + 1..].to_vec()
}

fn id_set(events: &[Value]) -> BTreeSet<String> {
    events
        .iter()
        .map(|e| str_field(e, "event_id"))
        .collect::<BTreeSet<_>>()
}

/// The message bodies of `events` grouped by sender, each in the order given.
fn bodies_by_sender(events: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for event in events.iter().filter(|e| e["type"] == "m.room.message") {
        out.entry(str_field(event, "sender"))
            .or_default()
            .push(str_field(&event["content"], "body"));
    }
    out
}

/// The timeline of `room` from one initial `/sync` (stream order, as a client sees it live).
fn sync_timeline(client: &Client, room: &str) -> Vec<Value> {
    let filter = json!({ "room": { "timeline": { "limit": 500 } } });
    let sync = client.sync(None, 0, Some(&filter));
    tests::timeline(&sync, room)
}

/// Waits until every unit reports the same current state map; returns it.
fn converged_state(users: &[&Client], room: &str) -> BTreeMap<(String, String), String> {
    eventually(
        "all units to report identical current state",
        DELIVERY,
        || {
            let maps: Vec<_> = users.iter().map(|u| state_ids(u, room)).collect();
            if maps.windows(2).all(|pair| pair[0] == pair[1]) {
                Ok(maps[0].clone())
            } else {
                let keys: BTreeSet<_> = maps.iter().flat_map(|m| m.keys().cloned()).collect();
                let differing: Vec<String> = keys
                    .into_iter()
                    .filter(|key| maps.iter().any(|m| m.get(key) != maps[0].get(key)))
                    .map(|(kind, key)| {
                        let ids: Vec<_> = maps
                            .iter()
                            .map(|m| m.get(&(kind.clone(), key.clone())).cloned())
                            .collect();
                        format!("{kind}/{key}: {ids:?}")
                    })
                    .collect();
                Err(format!("differences: {differing:#?}"))
            }
        },
    )
}

fn position(bodies: &[String], body: &str) -> usize {
    bodies
        .iter()
        .position(|b| b == body)
        .unwrap_or_else(|| panic!("{body:?} missing from {bodies:?}"))
}

#[test]
fn three_units_exchange_messages_and_agree_on_state() {
    let mesh = Mesh::new();
    let room = &mesh.room;
    let [alice, bob, carol] = &mesh.users;

    // Everyone talks at once: each unit's users send in turn, nobody waits for delivery.
    let mut sent: Vec<String> = Vec::new();
    for round in 0..5 {
        for user in &mesh.users {
            let body = format!("{} says {round}", user.user_id);
            user.send_text(room, &body);
            sent.push(body);
        }
    }
    // A causal chain across units: each reply is sent only after its cause arrived.
    let chain = ["ping from A", "pong from B", "pang from C"];
    for (n, body) in chain.iter().enumerate() {
        mesh.users[n].send_text(room, body);
        let next = &mesh.users[(n + 1) % 3];
        wait_for_bodies(next, room, &[body.to_string()], DELIVERY);
    }
    sent.extend(chain.iter().map(|b| b.to_string()));

    let carol_join =
        state_ids(alice, room)[&("m.room.member".to_owned(), carol.user_id.clone())].clone();
    let mut sets = Vec::new();
    for (n, user) in mesh.users.iter().enumerate() {
        wait_for_bodies(user, room, &sent, DELIVERY);
        let events = events_after(user, room, &carol_join);
        let by_sender = bodies_by_sender(&events);
        for sender in &mesh.users {
            let expected: Vec<String> = sent
                .iter()
                .filter(|b| b.starts_with(&sender.user_id))
                .cloned()
                .collect();
            let got: Vec<String> = by_sender
                .get(&sender.user_id)
                .map(|bodies| {
                    bodies
                        .iter()
                        .filter(|b| b.starts_with(&sender.user_id))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(
                got, expected,
                "{}: /messages order of {}'s messages",
                NAMES[n], sender.user_id
            );
        }
        let bodies = tests::bodies(&events);
        assert!(
            position(&bodies, chain[0]) < position(&bodies, chain[1])
                && position(&bodies, chain[1]) < position(&bodies, chain[2]),
            "{}: causal order in /messages: {bodies:?}",
            NAMES[n]
        );
        // The live view (/sync, stream order) keeps each sender's order and causality too.
        let live = tests::bodies(&sync_timeline(user, room));
        for sender in &mesh.users {
            let expected: Vec<&String> = sent
                .iter()
                .filter(|b| b.starts_with(&sender.user_id))
                .collect();
            let got: Vec<&String> = live
                .iter()
                .filter(|b| b.starts_with(&sender.user_id))
                .collect();
            assert_eq!(
                got, expected,
                "{}: /sync order of {}",
                NAMES[n], sender.user_id
            );
        }
        assert!(
            position(&live, chain[0]) < position(&live, chain[1])
                && position(&live, chain[1]) < position(&live, chain[2]),
            "{}: causal order in /sync: {live:?}",
            NAMES[n]
        );
        for body in &sent {
            assert_eq!(
                bodies.iter().filter(|b| *b == body).count(),
                1,
                "{}: {body:?} exactly once",
                NAMES[n]
            );
        }
        sets.push(id_set(&events));
    }
    assert!(
        sets.windows(2).all(|pair| pair[0] == pair[1]),
        "every unit holds the same events since the last join: {sets:#?}"
    );

    // State set on A (and a change on B that A's power levels allow) agrees everywhere.
    alice.put_state(room, "m.room.name", "", &json!({ "name": "Operations" }));
    alice.put_state(
        room,
        "m.room.topic",
        "",
        &json!({ "topic": "Status: green" }),
    );
    let mut levels = state_content(alice, room, "m.room.power_levels", "").expect("power levels");
    levels["users"][&bob.user_id] = json!(50);
    levels["events"]["m.room.topic"] = json!(50);
    alice.put_state(room, "m.room.power_levels", "", &levels);
    eventually("B to see bob's new power level", DELIVERY, || {
        let seen = state_content(bob, room, "m.room.power_levels", "");
        if seen.as_ref() == Some(&levels) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    bob.put_state(
        room,
        "m.room.topic",
        "",
        &json!({ "topic": "Status: amber (bob)" }),
    );
    let users: Vec<&Client> = mesh.users.iter().collect();
    let state = converged_state(&users, room);
    for user in &mesh.users {
        assert_eq!(
            state_content(user, room, "m.room.name", "").map(|c| c["name"].clone()),
            Some(json!("Operations"))
        );
        assert_eq!(
            state_content(user, room, "m.room.topic", "").map(|c| c["topic"].clone()),
            Some(json!("Status: amber (bob)"))
        );
        assert_eq!(
            state_content(user, room, "m.room.power_levels", ""),
            Some(levels.clone())
        );
    }
    assert_eq!(
        state
            .keys()
            .filter(|(kind, _)| kind == "m.room.member")
            .count(),
        3,
        "three members in {state:#?}"
    );
    // A user of C cannot do what the room's power levels (set on A) forbid.
    let (status, body) = carol.put(
        &Client::state_path(room, "m.room.topic", ""),
        &json!({ "topic": "carol was here" }),
    );
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "carol (power 0) changing the topic: {body}"
    );
}

#[test]
fn receipts_and_typing_cross_units() {
    let fed = Federation::start(&NAMES[..2]);
    let alice = fed[0].register("alice");
    let bob = fed[1].register("bob");
    let room = share_room(&alice, &[&bob], &json!({ "preset": "private_chat" }));
    let event = bob.send_text(&room, "read me");
    wait_for_bodies(&alice, &room, &["read me".to_owned()], DELIVERY);
    ok(
        alice.post(
            &format!(
                "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
                enc(&room),
                enc(&event)
            ),
            &json!({}),
        ),
        "alice's read receipt",
    );
    eventually("B to show alice's read receipt", DELIVERY, || {
        let sync = bob.sync(None, 0, None);
        let receipts: Vec<Value> = tests::section_events(&sync, "join", &room, "ephemeral")
            .into_iter()
            .filter(|e| e["type"] == "m.receipt")
            .collect();
        let seen = receipts
            .iter()
            .any(|r| r["content"][&event]["m.read"][&alice.user_id]["ts"].is_u64());
        if seen {
            Ok(())
        } else {
            Err(format!("ephemeral receipts on B: {receipts:?}"))
        }
    });

    // Typing notifications travel as m.typing EDUs, both ways.
    for (typist, watcher) in [(&alice, &bob), (&bob, &alice)] {
        ok(
            typist.put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/typing/{}",
                    enc(&room),
                    enc(&typist.user_id)
                ),
                &json!({ "typing": true, "timeout": 30000 }),
            ),
            "typing",
        );
        eventually(
            &format!("{} to see {} typing", watcher.user_id, typist.user_id),
            DELIVERY,
            || {
                let sync = watcher.sync(None, 0, None);
                let typing: Vec<Value> = tests::section_events(&sync, "join", &room, "ephemeral")
                    .into_iter()
                    .filter(|e| e["type"] == "m.typing")
                    .collect();
                let seen = typing.iter().any(|t| {
                    t["content"]["user_ids"]
                        .as_array()
                        .is_some_and(|ids| ids.iter().any(|id| *id == json!(typist.user_id)))
                });
                if seen {
                    Ok(())
                } else {
                    Err(format!("m.typing on the watcher's unit: {typing:?}"))
                }
            },
        );
    }
}

/// Sets `users[user] = level` in the room's power levels through `client`.
fn set_power(client: &Client, room: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut levels = state_content(client, room, "m.room.power_levels", "").expect("power levels");
    edit(&mut levels);
    client.put_state(room, "m.room.power_levels", "", &levels)
}

/// An address on `ip` where nothing listens (connections are refused).
fn dead_endpoint(ip: std::net::Ipv4Addr) -> std::net::SocketAddr {
    std::net::SocketAddr::from((ip, free_port_on(ip)))
}

#[test]
fn partitioned_unit_catches_up_after_a_fork_with_conflicting_state() {
    let mut mesh = Mesh::new();
    let room = mesh.room.clone();
    let [alice, bob, carol] = mesh.users.clone();
    // Bob may change state and power levels too, so both sides of the fork can.
    let promote = set_power(&alice, &room, |levels| {
        levels["users"][&bob.user_id] = json!(100);
    });
    let carol_join =
        state_ids(&alice, &room)[&("m.room.member".to_owned(), carol.user_id.clone())].clone();
    eventually("the promotion to reach C", DELIVERY, || {
        if state_ids(&carol, &room).values().any(|id| *id == promote) {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    });

    // C goes down hard.
    mesh.fed[2].kill9();

    let mut sent = Vec::new();
    for i in 0..10 {
        for user in [&alice, &bob] {
            let body = format!("{} while C is down {i}", user.user_id);
            user.send_text(&room, &body);
            sent.push(body);
        }
    }

    // A crashes with C's queue pending; the outbox is durable, so nothing is lost.
    mesh.fed[0].kill9();
    mesh.fed[0].restart();

    // A and B lose each other too, and change the room independently: a real fork.
    let dead_a = dead_endpoint(unit_ip(0));
    let dead_b = dead_endpoint(unit_ip(1));
    mesh.unit(0).cut_link(mesh.unit(1), dead_b);
    mesh.unit(1).cut_link(mesh.unit(0), dead_a);
    alice.put_state(&room, "m.room.name", "", &json!({ "name": "Name from A" }));
    alice.put_state(
        &room,
        "m.room.topic",
        "",
        &json!({ "topic": "Topic from A" }),
    );
    set_power(&alice, &room, |levels| {
        levels["users"]["@auditor:unit-a.test"] = json!(10);
        levels["events"]["m.room.avatar"] = json!(60);
    });
    ok(
        alice.membership(&room, "ban", &json!({ "user_id": "@troll:unit-b.test" })),
        "alice bans a user of B",
    );
    bob.put_state(&room, "m.room.name", "", &json!({ "name": "Name from B" }));
    bob.put_state(
        &room,
        "m.room.topic",
        "",
        &json!({ "topic": "Topic from B" }),
    );
    set_power(&bob, &room, |levels| {
        levels["invite"] = json!(50);
        levels["users"]["@auditor:unit-b.test"] = json!(20);
    });
    ok(
        bob.membership(&room, "ban", &json!({ "user_id": "@troll:unit-a.test" })),
        "bob bans a user of A",
    );
    for i in 0..5 {
        for user in [&alice, &bob] {
            let body = format!("{} during the fork {i}", user.user_id);
            user.send_text(&room, &body);
            sent.push(body);
        }
    }
    assert_ne!(
        state_ids(&alice, &room),
        state_ids(&bob, &room),
        "the cut really separated A and B"
    );

    // The A–B link heals first; both resolve the fork the same way.
    mesh.unit(0).mend_link(mesh.unit(1));
    mesh.unit(1).mend_link(mesh.unit(0));
    for user in [&alice, &bob] {
        wait_for_bodies(user, &room, &sent, DELIVERY);
    }
    let ab_state = converged_state(&[&alice, &bob], &room);
    for i in 0..3 {
        for user in [&alice, &bob] {
            let body = format!("{} after the fork {i}", user.user_id);
            user.send_text(&room, &body);
            sent.push(body);
        }
    }

    // C returns and catches up with everything.
    mesh.fed[2].restart();
    wait_for_bodies(&carol, &room, &sent, DELIVERY);
    let users = [&alice, &bob, &carol];
    let state = converged_state(&users, &room);
    for key in [("m.room.name", ""), ("m.room.topic", "")] {
        let key = (key.0.to_owned(), key.1.to_owned());
        assert_eq!(
            state.get(&key),
            ab_state.get(&key),
            "{key:?} as A and B resolved it"
        );
    }
    for banned in ["@troll:unit-a.test", "@troll:unit-b.test"] {
        let member = state_content(&carol, &room, "m.room.member", banned);
        assert_eq!(
            member.map(|m| m["membership"].clone()),
            Some(json!("ban")),
            "C knows {banned} is banned"
        );
    }
    let timelines: Vec<BTreeSet<String>> = eventually(
        "all units to hold the same timeline events",
        DELIVERY,
        || {
            let sets: Vec<_> = users
                .iter()
                .map(|u| id_set(&events_after(u, &room, &carol_join)))
                .collect();
            if sets.windows(2).all(|pair| pair[0] == pair[1]) {
                Ok(sets)
            } else {
                Err(format!(
                    "A−C: {:?}, C−A: {:?}, A−B: {:?}, B−A: {:?}",
                    sets[0].difference(&sets[2]).collect::<Vec<_>>(),
                    sets[2].difference(&sets[0]).collect::<Vec<_>>(),
                    sets[0].difference(&sets[1]).collect::<Vec<_>>(),
                    sets[1].difference(&sets[0]).collect::<Vec<_>>(),
                ))
            }
        },
    );
    assert!(
        timelines[0].len() >= sent.len(),
        "every message is in the timeline"
    );
    for user in users {
        let bodies = tests::bodies(&events_after(user, &room, &carol_join));
        for body in &sent {
            assert_eq!(
                bodies.iter().filter(|b| *b == body).count(),
                1,
                "{}: {body:?} exactly once",
                user.user_id
            );
        }
        for sender in [&alice, &bob] {
            let expected: Vec<&String> = sent
                .iter()
                .filter(|b| b.starts_with(&sender.user_id))
                .collect();
            let got: Vec<&String> = bodies
                .iter()
                .filter(|b| b.starts_with(&sender.user_id))
                .collect();
            assert_eq!(
                got, expected,
                "{}: order of {}",
                user.user_id, sender.user_id
            );
        }
    }
}

/// Count of "delivery failed" warnings for `peer` in a unit's current log.
fn delivery_failures(unit: &Unit, peer: &str) -> usize {
    unit.current_log()
        .lines()
        .filter(|line| line.contains("federation delivery failed") && line.contains(peer))
        .count()
}

#[test]
fn cut_link_delivers_everything_in_order_once_after_many_backoff_cycles() {
    let mesh = Mesh::new();
    let room = &mesh.room;
    let [alice, bob, carol] = &mesh.users;
    let (a, b) = (mesh.unit(0), mesh.unit(1));
    a.cut_link(b, dead_endpoint(unit_ip(1)));

    let mut sent = Vec::new();
    for batch in 0..3 {
        let failures = delivery_failures(a, "unit-b.test");
        for i in 0..10 {
            let body = format!("cut batch {batch} message {i}");
            alice.send_text(room, &body);
            sent.push(body);
        }
        // The other link is unaffected: C gets each batch while B's queue waits.
        wait_for_bodies(carol, room, &sent, DELIVERY);
        eventually("A to retry B a few more times", DELIVERY, || {
            let now = delivery_failures(a, "unit-b.test");
            if now >= failures + 3 {
                Ok(())
            } else {
                Err(format!("{now} failures logged so far"))
            }
        });
    }
    let seen_by_b = tests::bodies(&timeline_events(bob, room));
    assert!(
        sent.iter().all(|body| !seen_by_b.contains(body)),
        "nothing crossed the cut link: {seen_by_b:?}"
    );
    // Bob keeps talking; B → A still works.
    bob.send_text(room, "B to A still flows");
    wait_for_bodies(alice, room, &["B to A still flows".to_owned()], DELIVERY);

    a.mend_link(b);
    let bodies = wait_for_bodies(bob, room, &sent, DELIVERY);
    let delivered: Vec<&String> = bodies
        .iter()
        .filter(|b| b.starts_with("cut batch"))
        .collect();
    let expected: Vec<&String> = sent.iter().collect();
    assert_eq!(delivered, expected, "/messages on B: all, in order, once");
    let live = tests::bodies(&sync_timeline(bob, room));
    let live: Vec<&String> = live.iter().filter(|b| b.starts_with("cut batch")).collect();
    assert_eq!(live, expected, "/sync on B: all, in order, once");
    // The queue drained: a new message arrives promptly.
    alice.send_text(room, "after the cut");
    wait_for_bodies(bob, room, &["after the cut".to_owned()], DELIVERY);
    // No duplicates appeared with the later message either (retries reuse transaction IDs).
    let again = tests::bodies(&timeline_events(bob, room));
    for body in &sent {
        assert_eq!(
            again.iter().filter(|b| *b == body).count(),
            1,
            "{body:?} once"
        );
    }
}

/// The membership of `user_id` in `room` as `client`'s unit reports it ("" when unknown).
fn membership_of(client: &Client, room: &str, user_id: &str) -> String {
    state_content(client, room, "m.room.member", user_id)
        .and_then(|m| m["membership"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn membership_changes_cross_units() {
    let fed = Federation::start(&NAMES[..2]);
    let alice = fed[0].register("alice");
    let bob = fed[1].register("bob");
    let lobby = alice.create_room(&json!({
        "preset": "public_chat",
        "visibility": "public",
        "room_alias_name": "lobby",
        "name": "Lobby",
    }));
    let mut checks = Checks::new();

    // Join by a remote alias (query/directory on A, then make_join/send_join).
    let joined = bob.join("#lobby:unit-a.test");
    assert_eq!(joined, lobby, "joining #lobby:unit-a.test from B");
    checks.check(
        "A sees bob's remote join",
        within(DELIVERY, || {
            membership_of(&alice, &lobby, &bob.user_id) == "join"
        }),
        || "no join on A".to_owned(),
    );

    // Leave and come back (through `via`, no invite needed in a public room).
    ok(bob.membership(&lobby, "leave", &json!({})), "bob leaves");
    checks.check(
        "A sees bob's leave",
        within(DELIVERY, || {
            membership_of(&alice, &lobby, &bob.user_id) == "leave"
        }),
        || "no leave on A".to_owned(),
    );
    let rejoin = bob.post(
        &format!("/_matrix/client/v3/join/{}?via=unit-a.test", enc(&lobby)),
        &json!({}),
    );
    checks.reply("bob rejoins via unit-a.test", &rejoin, &[200], &[]);
    checks.check(
        "A sees bob's rejoin",
        within(DELIVERY, || {
            membership_of(&alice, &lobby, &bob.user_id) == "join"
        }),
        || "no rejoin on A".to_owned(),
    );
    // A kick by A's user reaches B.
    ok(
        alice.membership(
            &lobby,
            "kick",
            &json!({ "user_id": bob.user_id, "reason": "test" }),
        ),
        "alice kicks bob",
    );
    checks.check(
        "B learns bob was kicked",
        within(DELIVERY, || {
            let filter = json!({ "room": { "include_leave": true } });
            let sync = bob.sync(None, 0, Some(&filter));
            sync["rooms"]["leave"][&lobby].is_object()
        }),
        || "the room never moved to `leave` in bob's /sync".to_owned(),
    );

    // Inviting a user of a peer in createRoom (as clients do for direct chats).
    let dm = alice.create_room(&json!({
        "preset": "trusted_private_chat",
        "is_direct": true,
        "invite": [bob.user_id],
    }));
    checks.check(
        "an invite made by createRoom reaches the peer's user",
        within(DELIVERY, || {
            bob.sync(None, 0, None)["rooms"]["invite"][&dm].is_object()
        }),
        || "no invite in bob's /sync".to_owned(),
    );
    checks.finish();
}

#[test]
fn client_lookups_reach_allow_listed_peers() {
    let fed = Federation::start(&NAMES[..2]);
    let alice = fed[0].register("alice");
    let bob = fed[1].register("bob");
    ok(
        alice.put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&alice.user_id)
            ),
            &json!({ "displayname": "Alice of A" }),
        ),
        "alice sets a display name",
    );
    let lobby = alice.create_room(&json!({
        "preset": "public_chat",
        "visibility": "public",
        "room_alias_name": "lobby",
    }));
    let mut checks = Checks::new();
    // Look-ups a client expects to work across allow-listed units (query/directory,
    // query/profile and publicRooms are served by every unit).
    let alias = bob.get("/_matrix/client/v3/directory/room/%23lobby%3Aunit-a.test");
    checks.check(
        "GET /directory/room of an alias of a peer",
        alias.0 == 200 && alias.1["room_id"] == json!(lobby),
        || format!("{alias:?}"),
    );
    let profile = bob.get(&format!(
        "/_matrix/client/v3/profile/{}",
        enc(&alice.user_id)
    ));
    checks.check(
        "GET /profile of a user of a peer",
        profile.0 == 200 && profile.1["displayname"] == json!("Alice of A"),
        || format!("{profile:?}"),
    );
    let directory = bob.get("/_matrix/client/v3/publicRooms?server=unit-a.test");
    checks.check(
        "GET /publicRooms?server= of a peer",
        directory.0 == 200 && directory.1["chunk"].to_string().contains(&lobby),
        || format!("{directory:?}"),
    );

    checks.finish();
}
