//! Rooms: `createRoom` options and versions; membership (join, leave, invite, kick, ban, unban,
//! forget) including permission errors; member lists; state get/put; sending with transaction
//! IDs; redaction; `/event`, `/context`, `/messages`; aliases; the public room directory.

use tests::{Client, TestEnv, Value, assert_error, bodies, enc, event_ids, json, ok, str_field};

fn room_path(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/{rest}", enc(room))
}

fn state_content(client: &Client, room: &str, event_type: &str, state_key: &str) -> Value {
    ok(
        client.get(&Client::state_path(room, event_type, state_key)),
        &format!("GET state {event_type}/{state_key}"),
    )
}

fn joined_members(client: &Client, room: &str) -> Vec<String> {
    let body = ok(
        client.get(&room_path(room, "joined_members")),
        "joined_members",
    );
    let mut members: Vec<String> = body["joined"]
        .as_object()
        .unwrap_or_else(|| panic!("joined is an object: {body:#}"))
        .keys()
        .cloned()
        .collect();
    members.sort();
    members
}

fn joined_rooms(client: &Client) -> Vec<String> {
    let body = ok(
        client.get("/_matrix/client/v3/joined_rooms"),
        "joined_rooms",
    );
    body["joined_rooms"]
        .as_array()
        .unwrap_or_else(|| panic!("joined_rooms is an array: {body:#}"))
        .iter()
        .map(|id| id.as_str().expect("room IDs are strings").to_owned())
        .collect()
}

fn membership_of(client: &Client, room: &str, user_id: &str) -> Value {
    state_content(client, room, "m.room.member", user_id)
}

#[test]
fn create_room_applies_its_options() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({
        "preset": "public_chat",
        "name": "Lobby",
        "topic": "Say hello",
        "room_alias_name": "lobby",
        "initial_state": [
            { "type": "org.example.custom", "state_key": "", "content": { "k": "v" } },
        ],
        "power_level_content_override": { "state_default": 60 },
    }));
    assert!(room.starts_with('!'), "room IDs start with '!': {room}");

    assert_eq!(
        state_content(&alice, &room, "m.room.create", "")["room_version"],
        "12"
    );
    assert_eq!(
        state_content(&alice, &room, "m.room.name", "")["name"],
        "Lobby"
    );
    assert_eq!(
        state_content(&alice, &room, "m.room.topic", "")["topic"],
        "Say hello"
    );
    assert_eq!(
        state_content(&alice, &room, "m.room.join_rules", "")["join_rule"],
        "public"
    );
    assert_eq!(
        state_content(&alice, &room, "m.room.history_visibility", "")["history_visibility"],
        "shared"
    );
    assert_eq!(
        state_content(&alice, &room, "m.room.canonical_alias", "")["alias"],
        "#lobby:outpost.test"
    );
    assert_eq!(
        state_content(&alice, &room, "org.example.custom", ""),
        json!({ "k": "v" })
    );
    assert_eq!(
        state_content(&alice, &room, "m.room.power_levels", "")["state_default"],
        60
    );
    assert_eq!(
        membership_of(&alice, &room, &alice.user_id)["membership"],
        "join"
    );

    let resolved = ok(
        alice.get(&format!(
            "/_matrix/client/v3/directory/room/{}",
            enc("#lobby:outpost.test")
        )),
        "resolve alias",
    );
    assert_eq!(resolved["room_id"], room.as_str());
    assert_eq!(joined_rooms(&alice), vec![room]);
}

#[test]
fn create_room_versions() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    for version in ["10", "11", "12"] {
        let room = alice.create_room(&json!({ "room_version": version }));
        assert_eq!(
            state_content(&alice, &room, "m.room.create", "")["room_version"],
            version
        );
        // From v12 the room ID is the create event's reference hash, with no server name.
        let has_server = room.ends_with(":outpost.test");
        assert_eq!(
            has_server,
            version != "12",
            "room ID shape for v{version}: {room}"
        );
    }
    let reply = alice.post(
        "/_matrix/client/v3/createRoom",
        &json!({ "room_version": "999" }),
    );
    assert_error(&reply, 400, "M_UNSUPPORTED_ROOM_VERSION");
    assert!(
        joined_rooms(&alice).len() == 3,
        "the failed create made no room"
    );
}

#[test]
fn private_rooms_need_an_invite() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let carol = env.register("carol");
    let room = alice.create_room(&json!({
        "preset": "private_chat",
        "invite": [bob.user_id],
        "is_direct": true,
    }));
    assert_eq!(
        state_content(&alice, &room, "m.room.join_rules", "")["join_rule"],
        "invite"
    );
    let invite = membership_of(&alice, &room, &bob.user_id);
    assert_eq!(invite["membership"], "invite");
    assert_eq!(invite["is_direct"], true, "{invite:#}");

    assert_error(
        &carol.membership(&room, "join", &json!({})),
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(bob.join(&room), room);
    assert_eq!(joined_members(&alice, &room), {
        let mut both = vec![alice.user_id.clone(), bob.user_id.clone()];
        both.sort();
        both
    });
    assert_eq!(joined_rooms(&bob), vec![room.clone()]);

    // Inviting an existing member, or inviting from outside the room, is refused.
    let again = alice.membership(&room, "invite", &json!({ "user_id": bob.user_id }));
    assert_eq!(again.0, 403, "re-inviting a member: {:#}", again.1);
    let outsider = carol.membership(&room, "invite", &json!({ "user_id": carol.user_id }));
    assert_eq!(outsider.0, 403, "inviting from outside: {:#}", outsider.1);

    // Rejecting an invite is leaving; the inviter can invite again.
    alice.invite(&room, &carol.user_id);
    ok(
        carol.membership(&room, "leave", &json!({})),
        "reject invite",
    );
    assert_eq!(
        membership_of(&alice, &room, &carol.user_id)["membership"],
        "leave"
    );
    alice.invite(&room, &carol.user_id);
    assert_eq!(carol.join(&room), room);
}

#[test]
fn kick_ban_unban_and_their_permissions() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let carol = env.register("carol");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    bob.join(&room);
    carol.join(&room);

    // Bob has power level 0.
    let target = json!({ "user_id": carol.user_id, "reason": "no" });
    assert_error(&bob.membership(&room, "kick", &target), 403, "M_FORBIDDEN");
    assert_error(&bob.membership(&room, "ban", &target), 403, "M_FORBIDDEN");
    assert_error(
        &bob.put(
            &Client::state_path(&room, "m.room.name", ""),
            &json!({ "name": "Bob's" }),
        ),
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        membership_of(&alice, &room, &carol.user_id)["membership"],
        "join"
    );

    ok(
        alice.membership(
            &room,
            "kick",
            &json!({ "user_id": carol.user_id, "reason": "spam" }),
        ),
        "kick",
    );
    let kicked = membership_of(&alice, &room, &carol.user_id);
    assert_eq!(kicked["membership"], "leave");
    assert_eq!(kicked["reason"], "spam");
    assert_eq!(carol.join(&room), room, "a kick is not a ban");

    ok(
        alice.membership(&room, "ban", &json!({ "user_id": carol.user_id })),
        "ban",
    );
    assert_eq!(
        membership_of(&alice, &room, &carol.user_id)["membership"],
        "ban"
    );
    assert_error(
        &carol.membership(&room, "join", &json!({})),
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &bob.membership(&room, "unban", &json!({ "user_id": carol.user_id })),
        403,
        "M_FORBIDDEN",
    );
    ok(
        alice.membership(&room, "unban", &json!({ "user_id": carol.user_id })),
        "unban",
    );
    assert_eq!(
        membership_of(&alice, &room, &carol.user_id)["membership"],
        "leave"
    );
    assert_eq!(carol.join(&room), room);
    assert_eq!(joined_members(&alice, &room).len(), 3);
}

/// A kick and a ban of the same member sent at once: the ban stands, whichever lands first.
/// The kick's precondition (the member is not banned) is checked in the writer transaction
/// that writes its leave, so a kick behind the ban is refused; checked in a read before the
/// write, it could pass on the member's old state and then write its leave over the ban (an
/// unban by the back door, which the auth rules allow the room's admin).
#[test]
fn a_kick_racing_a_ban_never_undoes_it() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let carol = env.register("carol");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    let target = json!({ "user_id": carol.user_id });
    for round in 0..40 {
        assert_eq!(carol.join(&room), room);
        let barrier = std::sync::Barrier::new(2);
        let (kick, ban) = std::thread::scope(|s| {
            let kick = s.spawn(|| {
                barrier.wait();
                alice.membership(&room, "kick", &target)
            });
            let ban = s.spawn(|| {
                barrier.wait();
                alice.membership(&room, "ban", &target)
            });
            (
                kick.join().expect("kick thread"),
                ban.join().expect("ban thread"),
            )
        });
        ok(ban, "ban");
        assert!(
            kick.0 == 200 || (kick.0 == 403 && kick.1["errcode"] == "M_FORBIDDEN"),
            "round {round}: kick answered {kick:?}"
        );
        assert_eq!(
            membership_of(&alice, &room, &carol.user_id)["membership"],
            "ban",
            "round {round}: the kick (answered {kick:?}) undid the ban"
        );
        ok(alice.membership(&room, "unban", &target), "unban");
    }
}

#[test]
fn leave_and_forget() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    bob.join(&room);

    let early = bob.membership(&room, "forget", &json!({}));
    assert_eq!(early.0, 400, "forgetting a joined room: {:#}", early.1);

    ok(bob.membership(&room, "leave", &json!({})), "leave");
    assert!(joined_rooms(&bob).is_empty());
    assert_eq!(
        membership_of(&alice, &room, &bob.user_id)["membership"],
        "leave"
    );
    ok(bob.membership(&room, "forget", &json!({})), "forget");
    assert_eq!(joined_members(&alice, &room), vec![alice.user_id.clone()]);
}

#[test]
fn member_lists() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let carol = env.register("carol");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    bob.join(&room);
    alice.invite(&room, &carol.user_id);

    let members = ok(alice.get(&room_path(&room, "members")), "members");
    let mut seen: Vec<(String, String)> = members["chunk"]
        .as_array()
        .expect("chunk array")
        .iter()
        .map(|event| {
            assert_eq!(event["type"], "m.room.member");
            (
                str_field(event, "state_key"),
                event["content"]["membership"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    seen.sort();
    let mut expected = vec![
        (alice.user_id.clone(), "join".to_owned()),
        (bob.user_id.clone(), "join".to_owned()),
        (carol.user_id.clone(), "invite".to_owned()),
    ];
    expected.sort();
    assert_eq!(seen, expected);

    let joined_only = ok(
        alice.get(&room_path(&room, "members?membership=join")),
        "members",
    );
    assert_eq!(joined_only["chunk"].as_array().map(Vec::len), Some(2));

    let mut both = vec![alice.user_id.clone(), bob.user_id.clone()];
    both.sort();
    assert_eq!(joined_members(&bob, &room), both);

    // `unsigned.prev_content` stays right where a user has more than one member event (bob's
    // name change replaces his join) and is absent where the event is the user's only one.
    ok(
        bob.put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
                enc(&room),
                enc(&bob.user_id)
            ),
            &json!({ "membership": "join", "displayname": "Bobby" }),
        ),
        "rename",
    );
    let members = ok(alice.get(&room_path(&room, "members")), "members");
    let entry = |user: &str| {
        members["chunk"]
            .as_array()
            .expect("chunk array")
            .iter()
            .find(|event| event["state_key"] == user)
            .cloned()
            .expect("member listed")
    };
    let renamed = entry(&bob.user_id);
    assert_eq!(renamed["content"]["displayname"], "Bobby");
    assert_eq!(renamed["unsigned"]["prev_content"]["membership"], "join");
    assert!(renamed["unsigned"]["replaces_state"].is_string());
    assert!(
        entry(&carol.user_id)["unsigned"]
            .get("prev_content")
            .is_none()
    );

    let outsider = env.register("dave");
    assert_error(
        &outsider.get(&room_path(&room, "members")),
        403,
        "M_FORBIDDEN",
    );
}

#[test]
fn state_get_and_put_with_and_without_trailing_slash() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({}));

    let no_slash = room_path(&room, "state/m.room.topic");
    let with_slash = room_path(&room, "state/m.room.topic/");
    let event_id = str_field(
        &ok(alice.put(&no_slash, &json!({ "topic": "one" })), "PUT"),
        "event_id",
    );
    assert!(event_id.starts_with('$'));
    assert_eq!(ok(alice.get(&no_slash), "GET")["topic"], "one");
    assert_eq!(ok(alice.get(&with_slash), "GET /")["topic"], "one");

    ok(alice.put(&with_slash, &json!({ "topic": "two" })), "PUT /");
    assert_eq!(ok(alice.get(&no_slash), "GET")["topic"], "two");

    alice.put_state(
        &room,
        "org.example.thing",
        "key/with:odd chars",
        &json!({ "n": 1 }),
    );
    assert_eq!(
        state_content(&alice, &room, "org.example.thing", "key/with:odd chars"),
        json!({ "n": 1 })
    );
    assert_error(
        &alice.get(&Client::state_path(&room, "org.example.thing", "other")),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &alice.get(&Client::state_path(&room, "org.example.absent", "")),
        404,
        "M_NOT_FOUND",
    );

    let all = ok(alice.get(&room_path(&room, "state")), "GET state");
    let all = all.as_array().expect("full state is an array");
    let topic = all
        .iter()
        .find(|event| event["type"] == "m.room.topic" && event["state_key"] == "")
        .expect("topic in the full state");
    assert_eq!(topic["content"]["topic"], "two");
    for required in ["m.room.create", "m.room.power_levels", "m.room.join_rules"] {
        assert!(
            all.iter().any(|event| event["type"] == required),
            "{required} in full state"
        );
    }

    let outsider = env.register("eve");
    assert_error(
        &outsider.get(&room_path(&room, "state")),
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &outsider.put(&no_slash, &json!({ "topic": "mine" })),
        403,
        "M_FORBIDDEN",
    );
}

#[test]
fn send_is_idempotent_per_transaction_and_device() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let laptop = env.login("alice");
    let room = alice.create_room(&json!({}));
    let content = json!({ "msgtype": "m.text", "body": "once" });

    let first = str_field(
        &ok(
            alice.send_event(&room, "m.room.message", "t1", &content),
            "t1",
        ),
        "event_id",
    );
    let again = str_field(
        &ok(
            alice.send_event(&room, "m.room.message", "t1", &content),
            "t1 again",
        ),
        "event_id",
    );
    assert_eq!(
        first, again,
        "the same transaction ID yields the same event"
    );
    let other_txn = str_field(
        &ok(
            alice.send_event(&room, "m.room.message", "t2", &content),
            "t2",
        ),
        "event_id",
    );
    assert_ne!(first, other_txn);
    let other_device = str_field(
        &ok(
            laptop.send_event(&room, "m.room.message", "t1", &content),
            "t1 from another device",
        ),
        "event_id",
    );
    assert_ne!(
        first, other_device,
        "transaction IDs are scoped to the device"
    );

    let messages = alice.all_messages(&room, "b", Some(&json!({ "types": ["m.room.message"] })));
    let ids = event_ids(&messages);
    assert_eq!(ids.iter().filter(|id| **id == first).count(), 1, "{ids:?}");
    assert_eq!(ids.len(), 3, "three distinct messages: {ids:?}");
}

#[test]
fn redaction() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    bob.join(&room);
    let secret = alice.send_text(&room, "a secret");
    let bobs = bob.send_text(&room, "bob's own");

    let redact = |client: &Client, event: &str, txn: &str| {
        client.put(
            &room_path(&room, &format!("redact/{}/{}", enc(event), enc(txn))),
            &json!({ "reason": "oops" }),
        )
    };
    assert_error(&redact(&bob, &secret, "r1"), 403, "M_FORBIDDEN");
    ok(redact(&bob, &bobs, "r2"), "redact own message");

    let redaction = str_field(&ok(redact(&alice, &secret, "r3"), "redact"), "event_id");
    let repeat = str_field(
        &ok(redact(&alice, &secret, "r3"), "redact again"),
        "event_id",
    );
    assert_eq!(redaction, repeat, "redaction transactions are idempotent");

    let event = ok(
        alice.get(&room_path(&room, &format!("event/{}", enc(&secret)))),
        "event",
    );
    assert_eq!(event["type"], "m.room.message");
    assert_eq!(
        event["content"],
        json!({}),
        "redacted content is stripped: {event:#}"
    );
    if let Some(because) = event["unsigned"].get("redacted_because") {
        assert_eq!(because["event_id"], redaction.as_str());
    }
    let redaction_event = ok(
        alice.get(&room_path(&room, &format!("event/{}", enc(&redaction)))),
        "redaction",
    );
    assert_eq!(redaction_event["type"], "m.room.redaction");
    let target = redaction_event["content"]["redacts"]
        .as_str()
        .or(redaction_event["redacts"].as_str());
    assert_eq!(target, Some(secret.as_str()));
}

#[test]
fn get_event() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({}));
    let id = alice.send_text(&room, "hello");
    let event = ok(
        alice.get(&room_path(&room, &format!("event/{}", enc(&id)))),
        "event",
    );
    assert_eq!(event["event_id"], id.as_str());
    assert_eq!(event["room_id"], room.as_str());
    assert_eq!(event["sender"], alice.user_id.as_str());
    assert_eq!(event["type"], "m.room.message");
    assert_eq!(event["content"]["body"], "hello");
    assert!(
        event["origin_server_ts"]
            .as_u64()
            .is_some_and(|ts| ts > 1_600_000_000_000)
    );

    assert_error(
        &alice.get(&room_path(
            &room,
            "event/%24unknownEventIdxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        )),
        404,
        "M_NOT_FOUND",
    );
    let outsider = env.register("eve");
    let (status, body) = outsider.get(&room_path(&room, &format!("event/{}", enc(&id))));
    assert!(
        (status == 404 && body["errcode"] == "M_NOT_FOUND")
            || (status == 403 && body["errcode"] == "M_FORBIDDEN"),
        "an outsider cannot read events: {status} {body:#}"
    );
}

#[test]
fn context_around_an_event() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({}));
    let ids: Vec<String> = (0..7)
        .map(|i| alice.send_text(&room, &format!("m{i}")))
        .collect();

    let context = ok(
        alice.get(&room_path(
            &room,
            &format!("context/{}?limit=4", enc(&ids[3])),
        )),
        "context",
    );
    assert_eq!(context["event"]["event_id"], ids[3].as_str());
    let before = event_ids(context["events_before"].as_array().expect("events_before"));
    let after = event_ids(context["events_after"].as_array().expect("events_after"));
    assert!(
        before.len() + after.len() <= 4,
        "limit applies to the sum: {before:?} {after:?}"
    );
    assert_eq!(
        before.first(),
        Some(&ids[2]),
        "events_before is newest first"
    );
    assert_eq!(after.first(), Some(&ids[4]), "events_after is oldest first");
    for (i, id) in before.iter().enumerate() {
        assert_eq!(id, &ids[2 - i]);
    }
    for (i, id) in after.iter().enumerate() {
        assert_eq!(id, &ids[4 + i]);
    }
    let state = context["state"].as_array().expect("state array");
    assert!(
        state.iter().any(|event| event["type"] == "m.room.create"),
        "state at the event"
    );

    // `end` continues forwards right after the last of events_after.
    let end = str_field(&context, "end");
    let next = ok(
        alice.get(&room_path(
            &room,
            &format!("messages?dir=f&limit=1&from={}", enc(&end)),
        )),
        "messages from context end",
    );
    let next_ids = event_ids(next["chunk"].as_array().expect("chunk"));
    assert_eq!(next_ids.first(), ids.get(4 + after.len()), "{next:#}");

    // `start` continues backwards right before the first of events_before.
    let start = str_field(&context, "start");
    let prev = ok(
        alice.get(&room_path(
            &room,
            &format!("messages?dir=b&limit=1&from={}", enc(&start)),
        )),
        "messages from context start",
    );
    let prev_ids = event_ids(prev["chunk"].as_array().expect("chunk"));
    if before.len() < 3 {
        assert_eq!(prev_ids.first(), Some(&ids[2 - before.len()]), "{prev:#}");
    }

    assert_error(
        &alice.get(&room_path(
            &room,
            "context/%24unknownEventIdxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        )),
        404,
        "M_NOT_FOUND",
    );
}

#[test]
fn messages_paginate_both_ways_with_sync_tokens_and_filters() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({}));
    let s1 = str_field(&alice.sync(None, 0, None), "next_batch");
    let first: Vec<String> = (0..5)
        .map(|i| alice.send_text(&room, &format!("a{i}")))
        .collect();
    let s2 = str_field(&alice.sync(Some(&s1), 0, None), "next_batch");
    let second: Vec<String> = (0..5)
        .map(|i| alice.send_text(&room, &format!("b{i}")))
        .collect();
    alice.put_state(&room, "m.room.topic", "", &json!({ "topic": "late" }));

    let page = |query: &str| -> (Vec<String>, Value) {
        let body = ok(
            alice.get(&room_path(&room, &format!("messages?{query}"))),
            query,
        );
        (event_ids(body["chunk"].as_array().expect("chunk")), body)
    };

    // Forwards between two sync tokens: exactly the first batch.
    let (ids, _) = page(&format!("dir=f&from={}&to={}&limit=50", enc(&s1), enc(&s2)));
    assert_eq!(ids, first);

    // Backwards from a sync token: newest first.
    let (ids, body) = page(&format!("dir=b&from={}&limit=2", enc(&s2)));
    assert_eq!(ids, vec![first[4].clone(), first[3].clone()]);
    let end = str_field(&body, "end");
    let (ids, _) = page(&format!("dir=b&from={}&limit=2", enc(&end)));
    assert_eq!(ids, vec![first[2].clone(), first[1].clone()]);

    // Forwards from s2 with a type filter: the second batch, without the topic change.
    let filter = enc(&json!({ "types": ["m.room.message"] }).to_string());
    let (ids, _) = page(&format!("dir=f&from={}&limit=50&filter={filter}", enc(&s2)));
    assert_eq!(ids, second);
    let not_messages = enc(&json!({ "not_types": ["m.room.message"] }).to_string());
    let (_, body) = page(&format!(
        "dir=f&from={}&limit=50&filter={not_messages}",
        enc(&s2)
    ));
    let types: Vec<&str> = body["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter_map(|event| event["type"].as_str())
        .collect();
    assert_eq!(types, vec!["m.room.topic"]);

    // Without `from`, dir=b starts at the end of the room.
    let (ids, _) = page("dir=b&limit=1");
    assert_eq!(ids.len(), 1);
    let messages_filter = json!({ "types": ["m.room.message"] });
    let (ids, _) = page(&format!("dir=b&limit=1&filter={filter}"));
    assert_eq!(ids, vec![second[4].clone()]);

    // Paginating all the way back reaches the create event, newest first.
    let everything = alice.all_messages(&room, "b", None);
    assert_eq!(
        everything.last().map(|e| e["type"].clone()),
        Some(json!("m.room.create"))
    );
    let msgs = bodies(&everything);
    assert_eq!(
        msgs,
        vec!["b4", "b3", "b2", "b1", "b0", "a4", "a3", "a2", "a1", "a0"]
    );
    let forwards = alice.all_messages(&room, "f", Some(&messages_filter));
    assert_eq!(
        bodies(&forwards),
        vec!["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2", "b3", "b4"]
    );

    let outsider = env.register("eve");
    assert_error(
        &outsider.get(&room_path(&room, "messages?dir=b")),
        403,
        "M_FORBIDDEN",
    );
    let (status, body) = alice.get(&room_path(&room, "messages?dir=sideways"));
    assert_eq!(status, 400, "bad dir: {body:#}");
}

#[test]
fn room_aliases() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    let alias = env.alias("place");
    let alias_path = format!("/_matrix/client/v3/directory/room/{}", enc(&alias));

    assert_error(&alice.get(&alias_path), 404, "M_NOT_FOUND");
    ok(
        alice.put(&alias_path, &json!({ "room_id": room })),
        "create alias",
    );
    let (status, body) = alice.put(&alias_path, &json!({ "room_id": room }));
    assert_eq!(status, 409, "duplicate alias: {body:#}");

    let resolved = ok(bob.get(&alias_path), "resolve");
    assert_eq!(resolved["room_id"], room.as_str());
    assert!(
        resolved["servers"]
            .as_array()
            .is_some_and(|servers| servers.iter().any(|s| s == "outpost.test")),
        "{resolved:#}"
    );
    assert_eq!(bob.join(&alias), room, "join by alias");
    let aliases = ok(alice.get(&room_path(&room, "aliases")), "room aliases");
    assert!(
        aliases["aliases"]
            .as_array()
            .is_some_and(|list| list.iter().any(|a| *a == alias)),
        "{aliases:#}"
    );

    let (status, body) = alice.put(
        "/_matrix/client/v3/directory/room/no-sigil",
        &json!({ "room_id": room }),
    );
    assert_eq!(status, 400, "invalid alias: {body:#}");

    ok(alice.delete(&alias_path), "delete alias");
    assert_error(&alice.get(&alias_path), 404, "M_NOT_FOUND");
    let (status, body) = bob.membership(&room, "leave", &json!({}));
    assert_eq!(status, 200, "{body:#}");
    let rejoin = bob.post(
        &format!("/_matrix/client/v3/join/{}", enc(&alias)),
        &json!({}),
    );
    assert_eq!(rejoin.0, 404, "joining a deleted alias: {:#}", rejoin.1);
}

#[test]
fn public_room_directory() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let zebra = alice.create_room(&json!({
        "preset": "public_chat", "visibility": "public", "name": "Zebra Lounge", "topic": "stripes",
    }));
    let aardvark = alice.create_room(&json!({
        "preset": "public_chat", "visibility": "public", "name": "Aardvark Den",
    }));
    let okapi = alice.create_room(&json!({
        "preset": "public_chat", "visibility": "public", "name": "Okapi Field",
    }));
    let secret = alice.create_room(&json!({ "preset": "private_chat", "name": "Secret" }));
    bob.join(&zebra);

    let listed = |body: &Value| -> Vec<String> {
        body["chunk"]
            .as_array()
            .unwrap_or_else(|| panic!("chunk array: {body:#}"))
            .iter()
            .map(|room| str_field(room, "room_id"))
            .collect()
    };
    let all = ok(bob.get("/_matrix/client/v3/publicRooms"), "publicRooms");
    let ids = listed(&all);
    for room in [&zebra, &aardvark, &okapi] {
        assert!(ids.contains(room), "{room} listed: {all:#}");
    }
    assert!(!ids.contains(&secret), "private rooms are not listed");
    let entry = all["chunk"]
        .as_array()
        .and_then(|chunk| chunk.iter().find(|r| r["room_id"] == zebra.as_str()))
        .expect("zebra entry");
    assert_eq!(entry["name"], "Zebra Lounge");
    assert_eq!(entry["topic"], "stripes");
    assert_eq!(entry["num_joined_members"], 2);
    assert!(entry["world_readable"].is_boolean() && entry["guest_can_join"].is_boolean());

    let search = ok(
        bob.post(
            "/_matrix/client/v3/publicRooms",
            &json!({ "filter": { "generic_search_term": "zebra" } }),
        ),
        "search",
    );
    assert_eq!(listed(&search), vec![zebra.clone()]);

    let page1 = ok(bob.get("/_matrix/client/v3/publicRooms?limit=2"), "page 1");
    let mut paged = listed(&page1);
    assert_eq!(paged.len(), 2);
    let next = str_field(&page1, "next_batch");
    let page2 = ok(
        bob.get(&format!(
            "/_matrix/client/v3/publicRooms?limit=2&since={}",
            enc(&next)
        )),
        "page 2",
    );
    paged.extend(listed(&page2));
    paged.sort();
    let mut expected = vec![zebra.clone(), aardvark.clone(), okapi.clone()];
    expected.sort();
    assert_eq!(paged, expected);

    let visibility = |room: &str| {
        ok(
            bob.get(&format!(
                "/_matrix/client/v3/directory/list/room/{}",
                enc(room)
            )),
            "visibility",
        )["visibility"]
            .clone()
    };
    assert_eq!(visibility(&zebra), "public");
    assert_eq!(visibility(&secret), "private");
    ok(
        alice.put(
            &format!("/_matrix/client/v3/directory/list/room/{}", enc(&zebra)),
            &json!({ "visibility": "private" }),
        ),
        "unpublish",
    );
    assert_eq!(visibility(&zebra), "private");
    let after = ok(bob.get("/_matrix/client/v3/publicRooms"), "publicRooms");
    assert!(!listed(&after).contains(&zebra));
}
