//! Simplified sliding sync (MSC4186), over raw HTTP in the dialect Element X sends: the
//! `/versions` flag; a list window ordered by recency with names, counts, timeline and
//! required state; incremental long polls that wake on a message and carry only that room;
//! room subscriptions outside the window; a grown room config answered at once with the longer
//! timeline (`expanded_timeline`); invites with stripped state, joins and leaves; the
//! `e2ee`, `to_device`, `account_data`, `receipts` and `typing` extensions; `M_UNKNOWN_POS` for
//! unknown, foreign and pre-restart positions; malformed bodies; and an empty long poll that
//! returns at its timeout.

use std::thread;
use std::time::{Duration, Instant};
use tests::e2ee::Device;
use tests::{Client, TestEnv, Value, assert_error, enc, json, ok, str_field};

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// The state Element X's room list asks for, in the experimental `[type, state_key]` form.
fn room_list_state() -> Value {
    json!([
        ["m.room.create", ""],
        ["m.room.name", ""],
        ["m.room.member", "$LAZY"],
        ["m.room.member", "$ME"],
    ])
}

/// A request body with one list `all` over `range` and the given extensions.
fn body(range: [u64; 2], timeline_limit: u64, extensions: Value) -> Value {
    json!({
        "conn_id": "room-list",
        "lists": {
            "all": {
                "ranges": [range],
                "timeline_limit": timeline_limit,
                "required_state": room_list_state(),
            }
        },
        "extensions": extensions,
    })
}

/// One sliding sync request: `(status, body)`.
fn try_sliding(client: &Client, pos: Option<&str>, timeout_ms: u64, body: &Value) -> (u16, Value) {
    let mut path = format!("{PATH}?timeout={timeout_ms}");
    if let Some(pos) = pos {
        path.push_str(&format!("&pos={}", enc(pos)));
    }
    client.post(&path, body)
}

/// One sliding sync request asserting 200.
fn sliding(client: &Client, pos: Option<&str>, timeout_ms: u64, body: &Value) -> Value {
    ok(try_sliding(client, pos, timeout_ms, body), "sliding sync")
}

fn pos(response: &Value) -> String {
    str_field(response, "pos")
}

fn room_ids(response: &Value) -> Vec<String> {
    let mut ids: Vec<String> = response["rooms"]
        .as_object()
        .map(|rooms| rooms.keys().cloned().collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

fn bodies_of(room: &Value) -> Vec<String> {
    room["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

fn state_types(room: &Value) -> Vec<(String, String)> {
    room["required_state"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["type"].as_str()?.to_owned(),
                e["state_key"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

#[test]
fn versions_advertise_simplified_sliding_sync() {
    let env = TestEnv::dev();
    let versions = env.anon().get_ok("/_matrix/client/versions");
    assert_eq!(
        versions["unstable_features"]["org.matrix.simplified_msc3575"], true,
        "{versions:#}"
    );
}

#[test]
fn list_window_is_ordered_by_recency_with_names_counts_timeline_and_state() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let old = alice.create_room(&json!({ "name": "Old" }));
    let middle = alice.create_room(&json!({}));
    alice.invite(&middle, &bob.user_id);
    bob.join(&middle);
    let newest = alice.create_room(&json!({ "name": "Newest" }));
    alice.send_text(&old, "first");
    alice.send_text(&middle, "second");
    alice.send_text(&newest, "third");
    alice.send_text(&newest, "fourth");

    let top = sliding(&alice, None, 0, &body([0, 0], 2, json!({})));
    assert_eq!(top["lists"]["all"]["count"], 3, "{top:#}");
    assert_eq!(
        room_ids(&top),
        vec![newest.clone()],
        "only the newest: {top:#}"
    );
    let room = &top["rooms"][&newest];
    assert_eq!(room["initial"], true);
    assert_eq!(room["name"], "Newest");
    assert_eq!(room["joined_count"], 1);
    assert_eq!(room["invited_count"], 0);
    assert_eq!(room["notification_count"], 0);
    assert_eq!(room["membership"], "join");
    assert_eq!(bodies_of(room), vec!["third", "fourth"], "{room:#}");
    assert_eq!(room["limited"], true);
    assert!(room["prev_batch"].is_string());
    let state = state_types(room);
    for wanted in [
        ("m.room.create", ""),
        ("m.room.name", ""),
        ("m.room.member", alice.user_id.as_str()),
    ] {
        assert!(
            state.contains(&(wanted.0.to_owned(), wanted.1.to_owned())),
            "{wanted:?} in required_state: {room:#}"
        );
    }
    assert!(
        !state.iter().any(|(t, _)| t == "m.room.power_levels"),
        "only what was asked: {state:?}"
    );

    // Growing the window sends the other rooms, not the one already sent.
    let grown = sliding(&alice, Some(&pos(&top)), 0, &body([0, 19], 2, json!({})));
    assert_eq!(room_ids(&grown), {
        let mut ids = vec![old.clone(), middle.clone()];
        ids.sort();
        ids
    });
    let unnamed = &grown["rooms"][&middle];
    assert!(unnamed.get("name").is_none(), "{unnamed:#}");
    assert_eq!(unnamed["heroes"][0]["user_id"], bob.user_id.as_str());
    assert_eq!(unnamed["joined_count"], 2);
    let stamp = |r: &str| {
        grown["rooms"][r]["bump_stamp"]
            .as_i64()
            .expect("bump_stamp")
    };
    let newest_stamp = top["rooms"][&newest]["bump_stamp"]
        .as_i64()
        .expect("bump_stamp");
    assert!(newest_stamp > stamp(&middle) && stamp(&middle) > stamp(&old));
}

#[test]
fn a_message_wakes_the_long_poll_with_only_that_room_which_moves_to_the_top() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let first = alice.create_room(&json!({ "name": "First" }));
    let second = alice.create_room(&json!({ "name": "Second" }));
    alice.send_text(&second, "latest");
    let start = sliding(&alice, None, 0, &body([0, 19], 5, json!({})));
    assert_eq!(room_ids(&start).len(), 2);
    let first_stamp = start["rooms"][&first]["bump_stamp"]
        .as_i64()
        .expect("stamp");

    let sender = alice.clone();
    let room = first.clone();
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        sender.send_text(&room, "wake up");
    });
    let began = Instant::now();
    let next = sliding(
        &alice,
        Some(&pos(&start)),
        10_000,
        &body([0, 19], 5, json!({})),
    );
    writer.join().expect("writer thread");
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "woken promptly, not at the timeout: {:?}",
        began.elapsed()
    );
    assert_eq!(room_ids(&next), vec![first.clone()], "{next:#}");
    let room = &next["rooms"][&first];
    assert!(room.get("initial").is_none(), "incremental: {room:#}");
    assert_eq!(bodies_of(room), vec!["wake up"]);
    assert_eq!(room["num_live"], 1);
    assert!(room["bump_stamp"].as_i64().expect("stamp") > first_stamp);
    assert_ne!(pos(&next), pos(&start));

    // A fresh connection with a one-room window now gets the room that just moved up.
    let mut top = body([0, 0], 1, json!({}));
    top["conn_id"] = json!("other");
    let top = sliding(&alice, None, 0, &top);
    assert_eq!(room_ids(&top), vec![first]);
}

#[test]
fn room_subscriptions_reach_rooms_outside_the_window_the_user_may_see() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let quiet = alice.create_room(&json!({ "name": "Quiet" }));
    for n in 0..3 {
        alice.send_text(&quiet, &format!("old {n}"));
    }
    let busy = alice.create_room(&json!({ "name": "Busy" }));
    alice.send_text(&busy, "recent");
    let foreign = bob.create_room(&json!({ "name": "Bob's" }));

    let mut request = body([0, 0], 1, json!({}));
    request["room_subscriptions"] = json!({
        &quiet: { "timeline_limit": 3, "required_state": [["*", "*"]] },
        &foreign: { "timeline_limit": 3, "required_state": [["*", "*"]] },
    });
    let response = sliding(&alice, None, 0, &request);
    let mut expected = vec![quiet.clone(), busy.clone()];
    expected.sort();
    assert_eq!(room_ids(&response), expected, "{response:#}");
    let room = &response["rooms"][&quiet];
    assert_eq!(bodies_of(room), vec!["old 0", "old 1", "old 2"]);
    assert!(
        room.get("lists").is_none(),
        "matched by the subscription only"
    );
    assert!(
        state_types(room).contains(&("m.room.power_levels".to_owned(), String::new())),
        "`*` asks for all state: {room:#}"
    );

    request["room_subscriptions"] = json!({ "not-a-room-id": { "timeline_limit": 1 } });
    assert_error(
        &try_sliding(&alice, None, 0, &request),
        400,
        "M_INVALID_PARAM",
    );
}

#[test]
fn a_grown_room_config_resends_the_room_at_once_with_the_longer_timeline() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({ "name": "History" }));
    for n in 0..4 {
        alice.send_text(&room, &format!("m{n}"));
    }
    let first = sliding(&alice, None, 0, &body([0, 19], 1, json!({})));
    assert_eq!(bodies_of(&first["rooms"][&room]), vec!["m3"]);

    // Opening the room: a subscription asking for more history answers without waiting.
    let mut opened = body([0, 19], 1, json!({}));
    opened["room_subscriptions"] = json!({
        &room: { "timeline_limit": 3, "required_state": [["m.room.name", ""]] },
    });
    let began = Instant::now();
    let grown = sliding(&alice, Some(&pos(&first)), 10_000, &opened);
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "not held until the timeout"
    );
    let entry = &grown["rooms"][&room];
    assert_eq!(entry["initial"], true, "{grown:#}");
    assert_eq!(entry["expanded_timeline"], true);
    assert_eq!(bodies_of(entry), vec!["m1", "m2", "m3"]);
    assert_eq!(entry["num_live"], 0, "nothing new, only history");

    // Unchanged config and no news: the same room is not sent again.
    let again = sliding(&alice, Some(&pos(&grown)), 0, &opened);
    assert!(room_ids(&again).is_empty(), "{again:#}");
}

#[test]
fn invites_show_stripped_state_then_the_join_then_the_leave_once() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = bob.create_room(&json!({ "name": "Party" }));
    bob.invite(&room, &alice.user_id);

    let mut request = body([0, 19], 5, json!({}));
    request["lists"]["invites"] = json!({
        "ranges": [[0, 19]], "timeline_limit": 0, "required_state": [],
        "filters": { "is_invite": true },
    });
    let invited = sliding(&alice, None, 0, &request);
    assert_eq!(invited["lists"]["invites"]["count"], 1);
    let entry = &invited["rooms"][&room];
    assert_eq!(entry["membership"], "invite", "{entry:#}");
    let stripped = entry["invite_state"].as_array().expect("invite_state");
    assert!(
        stripped
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Party")
    );
    assert!(stripped.iter().any(|e| e["type"] == "m.room.member"
        && e["state_key"] == alice.user_id.as_str()
        && e["content"]["membership"] == "invite"));
    assert!(entry.get("timeline").is_none(), "no history before joining");

    alice.join(&room);
    let joined = sliding(&alice, Some(&pos(&invited)), 10_000, &request);
    assert_eq!(joined["lists"]["invites"]["count"], 0);
    let entry = &joined["rooms"][&room];
    assert_eq!(entry["membership"], "join", "{joined:#}");
    assert_eq!(entry["initial"], true);
    assert_eq!(entry["joined_count"], 2);
    assert!(entry.get("invite_state").is_none());

    alice.membership(&room, "leave", &json!({}));
    let left = sliding(&alice, Some(&pos(&joined)), 10_000, &request);
    let entry = &left["rooms"][&room];
    assert_eq!(entry["membership"], "leave", "{left:#}");
    let timeline = entry["timeline"].as_array().expect("timeline");
    assert_eq!(
        timeline.last().map(|e| e["content"]["membership"].clone()),
        Some(json!("leave"))
    );

    bob.send_text(&room, "after alice left");
    let later = sliding(&alice, Some(&pos(&left)), 0, &request);
    assert!(
        room_ids(&later).is_empty(),
        "the leave is sent once: {later:#}"
    );
    assert_eq!(later["lists"]["all"]["count"], 0);
}

#[test]
fn e2ee_and_to_device_extensions_deliver_each_message_once() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let mut bob = Device::new(env.register("bob"));
    let room = alice.create_room(&json!({}));
    alice.invite(&room, bob.user_id());
    bob.client.join(&room);
    bob.publish_one_time_keys(3);
    bob.publish_fallback_key();

    let ext = json!({ "e2ee": { "enabled": true }, "to_device": { "enabled": true } });
    let request = body([0, 19], 1, ext.clone());
    let first = sliding(&bob.client, None, 0, &request);
    let e2ee = &first["extensions"]["e2ee"];
    assert_eq!(
        e2ee["device_one_time_keys_count"]["signed_curve25519"], 3,
        "{first:#}"
    );
    assert_eq!(
        e2ee["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );
    let since = str_field(&first["extensions"]["to_device"], "next_batch");

    // Alice's new device keys make her "changed" for Bob.
    let alice_device = Device::new(alice.clone());
    alice_device.publish_device_keys();
    ok(
        alice.put(
            &format!("/_matrix/client/v3/sendToDevice/m.test/{}", enc("t1")),
            &json!({ "messages": { bob.user_id(): { bob.device_id(): { "n": 1 } } } }),
        ),
        "sendToDevice",
    );
    let mut request = body([0, 19], 1, ext);
    request["extensions"]["to_device"]["since"] = json!(since);
    let second = sliding(&bob.client, Some(&pos(&first)), 10_000, &request);
    let changed = &second["extensions"]["e2ee"]["device_lists"]["changed"];
    assert!(
        changed
            .as_array()
            .expect("changed")
            .contains(&json!(alice.user_id)),
        "{second:#}"
    );
    let to_device = &second["extensions"]["to_device"];
    let events = to_device["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{second:#}");
    assert_eq!(events[0]["content"]["n"], 1);
    assert_eq!(events[0]["sender"], alice.user_id.as_str());

    // A retry (the client lost the answer) gets the message again, and the connection goes on
    // from the retry's pos; the next to-device token acknowledges the message.
    let retry = sliding(&bob.client, Some(&pos(&first)), 0, &request);
    assert_eq!(
        retry["extensions"]["to_device"]["events"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    request["extensions"]["to_device"]["since"] = to_device["next_batch"].clone();
    let third = sliding(&bob.client, Some(&pos(&retry)), 0, &request);
    assert_eq!(
        third["extensions"]["to_device"]["events"]
            .as_array()
            .map(Vec::len),
        Some(0),
        "{third:#}"
    );
    let mut fresh = body([0, 19], 1, json!({ "to_device": { "enabled": true } }));
    fresh["conn_id"] = json!("encryption");
    let fresh = sliding(&bob.client, None, 0, &fresh);
    assert_eq!(
        fresh["extensions"]["to_device"]["events"]
            .as_array()
            .map(Vec::len),
        Some(0),
        "acknowledged messages are gone for every connection: {fresh:#}"
    );
}

#[test]
fn account_data_receipts_and_typing_extensions() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = alice.create_room(&json!({ "name": "Chat" }));
    alice.invite(&room, &bob.user_id);
    bob.join(&room);
    let message = bob.send_text(&room, "read me");
    let account = |kind: &str| {
        format!(
            "/_matrix/client/v3/user/{}/account_data/{kind}",
            enc(&alice.user_id)
        )
    };
    alice.put_ok(&account("org.example.setting"), &json!({ "v": 1 }));
    alice.put_ok(
        &format!(
            "/_matrix/client/v3/user/{}/rooms/{}/tags/u.work",
            enc(&alice.user_id),
            enc(&room)
        ),
        &json!({ "order": 0.5 }),
    );

    let ext = json!({
        "account_data": { "enabled": true },
        "receipts": { "enabled": true, "rooms": ["*"] },
        "typing": { "enabled": true },
    });
    let request = body([0, 19], 5, ext);
    let first = sliding(&alice, None, 0, &request);
    let data = &first["extensions"]["account_data"];
    let global = data["global"].as_array().expect("global");
    assert!(
        global
            .iter()
            .any(|e| e["type"] == "org.example.setting" && e["content"]["v"] == 1)
    );
    assert!(
        global.iter().any(|e| e["type"] == "m.push_rules"),
        "{data:#}"
    );
    let tags = data["rooms"][&room].as_array().expect("room account data");
    assert!(
        tags.iter()
            .any(|e| e["type"] == "m.tag" && e["content"]["tags"]["u.work"].is_object())
    );

    // Only what changed afterwards: a new setting, Bob's receipt, Bob typing.
    alice.put_ok(&account("org.example.setting"), &json!({ "v": 2 }));
    ok(
        bob.post(
            &format!(
                "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
                enc(&room),
                enc(&message)
            ),
            &json!({}),
        ),
        "receipt",
    );
    let second = sliding(&alice, Some(&pos(&first)), 0, &request);
    let global = second["extensions"]["account_data"]["global"]
        .as_array()
        .expect("global");
    assert_eq!(global.len(), 1, "{second:#}");
    assert_eq!(global[0]["content"]["v"], 2);
    let receipt = &second["extensions"]["receipts"]["rooms"][&room];
    assert_eq!(receipt["type"], "m.receipt", "{second:#}");
    assert!(receipt["content"][&message]["m.read"][&bob.user_id]["ts"].is_number());

    let typist = bob.clone();
    let typing_room = room.clone();
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        ok(
            typist.put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/typing/{}",
                    enc(&typing_room),
                    enc(&typist.user_id)
                ),
                &json!({ "typing": true, "timeout": 30000 }),
            ),
            "typing",
        );
    });
    let began = Instant::now();
    let third = sliding(&alice, Some(&pos(&second)), 10_000, &request);
    writer.join().expect("typing thread");
    assert!(began.elapsed() < Duration::from_secs(5));
    assert_eq!(
        third["extensions"]["typing"]["rooms"][&room]["content"]["user_ids"],
        json!([bob.user_id]),
        "{third:#}"
    );
}

#[test]
fn unknown_foreign_and_pre_restart_positions_are_m_unknown_pos() {
    let mut env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let request = body([0, 19], 1, json!({}));
    for garbage in ["", "garbage", "s12_3", "0-1", "ffffffffffffffff-1"] {
        assert_error(
            &try_sliding(&alice, Some(garbage), 0, &request),
            400,
            "M_UNKNOWN_POS",
        );
    }
    let issued = pos(&sliding(&alice, None, 0, &request));
    assert_error(
        &try_sliding(&bob, Some(&issued), 0, &request),
        400,
        "M_UNKNOWN_POS",
    );
    let mut other_conn = request.clone();
    other_conn["conn_id"] = json!("another");
    assert_error(
        &try_sliding(&alice, Some(&issued), 0, &other_conn),
        400,
        "M_UNKNOWN_POS",
    );
    sliding(&alice, Some(&issued), 0, &request);

    env.sigterm();
    env.restart();
    let alice = env.login("alice");
    assert_error(
        &try_sliding(&alice, Some(&issued), 0, &request),
        400,
        "M_UNKNOWN_POS",
    );
}

#[test]
fn malformed_requests_get_the_spec_errors() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let reply = alice.request("POST", PATH, &[], Some(b"{not json"));
    assert_error(&(reply.status, reply.json()), 400, "M_NOT_JSON");
    for bad in [
        json!({ "lists": { "all": { "ranges": "everything" } } }),
        json!({ "lists": { "all": { "ranges": [[0, 1]], "timeline_limit": -1 } } }),
        json!({ "room_subscriptions": ["!a:b"] }),
        json!({ "extensions": { "to_device": { "enabled": "yes" } } }),
    ] {
        assert_error(&try_sliding(&alice, None, 0, &bad), 400, "M_BAD_JSON");
    }
    let reversed = json!({ "lists": { "all": { "ranges": [[5, 1]], "timeline_limit": 1 } } });
    assert_error(
        &try_sliding(&alice, None, 0, &reversed),
        400,
        "M_INVALID_PARAM",
    );
    let presence = format!("{PATH}?set_presence=dancing");
    assert_error(&alice.post(&presence, &json!({})), 400, "M_INVALID_PARAM");
}

#[test]
fn an_empty_long_poll_returns_at_its_timeout() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    alice.create_room(&json!({}));
    let request = body([0, 19], 1, json!({ "e2ee": { "enabled": true } }));
    let first = sliding(&alice, None, 0, &request);
    let began = Instant::now();
    let idle = sliding(&alice, Some(&pos(&first)), 700, &request);
    let waited = began.elapsed();
    assert!(waited >= Duration::from_millis(600), "waited {waited:?}");
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    assert!(room_ids(&idle).is_empty(), "{idle:#}");
    // The answer's pos (the same or a new one) resumes the connection.
    sliding(&alice, Some(&pos(&idle)), 0, &request);
}
