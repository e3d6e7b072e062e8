//! The wire shape of `/sync` and sliding sync answers: which keys are present, absent or empty
//! in a representative initial, incremental, lazy-loaded, gappy, `state_after` and quiet
//! `/sync`, and in a sliding sync window with every extension. Clients (Element X, matrix-sdk)
//! treat a missing field and an empty one differently, so the key sets are pinned here, as
//! lines of `path: kind`, with room, user and event IDs replaced by labels and event bodies
//! reduced to their top-level keys (what the events hold is other tests' business).

use std::collections::{BTreeMap, BTreeSet};

use tests::e2ee::Device;
use tests::{Client, TestEnv, Value, enc, json, ok, str_field};

const SLIDING: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// The labels IDs are replaced with.
struct Labels(BTreeMap<String, String>);

impl Labels {
    fn key(&self, key: &str) -> String {
        if let Some(label) = self.0.get(key) {
            return label.clone();
        }
        match key.chars().next() {
            Some('$') => "$event".to_owned(),
            Some('@') => "@user".to_owned(),
            Some('!') => "!room".to_owned(),
            _ => key.to_owned(),
        }
    }
}

/// The shape of `value` as sorted `path: kind` lines. Objects are walked; an object with a
/// `type` inside an array is an event, shown as its sorted top-level keys; scalars show as
/// their JSON type, booleans as their value.
fn shape(value: &Value, labels: &Labels) -> String {
    let mut lines = BTreeSet::new();
    walk(value, "", labels, &mut lines);
    lines.into_iter().collect::<Vec<_>>().join("\n")
}

fn walk(value: &Value, path: &str, labels: &Labels, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) if map.is_empty() => {
            out.insert(format!("{path}: {{}}"));
        }
        Value::Object(map) => {
            for (key, inner) in map {
                let sub = if path.is_empty() {
                    labels.key(key)
                } else {
                    format!("{path}.{}", labels.key(key))
                };
                walk(inner, &sub, labels, out);
            }
        }
        Value::Array(list) if list.is_empty() => {
            out.insert(format!("{path}: []"));
        }
        Value::Array(list) => {
            for item in list {
                match item {
                    Value::Object(event) if event.contains_key("type") => {
                        let keys: Vec<&str> = event.keys().map(String::as_str).collect();
                        out.insert(format!("{path}[]: event{{{}}}", keys.join(",")));
                    }
                    _ => walk(item, &format!("{path}[]"), labels, out),
                }
            }
        }
        Value::Bool(b) => {
            out.insert(format!("{path}: {b}"));
        }
        Value::Number(_) => {
            out.insert(format!("{path}: number"));
        }
        Value::String(_) => {
            out.insert(format!("{path}: string"));
        }
        Value::Null => {
            out.insert(format!("{path}: null"));
        }
    }
}

/// Asserts a shape, printing the whole of it on a mismatch so the expectation can be updated
/// after a deliberate change. With `SHAPE_PRINT` set it prints every shape instead of
/// asserting (to refresh the constants below).
fn check(what: &str, value: &Value, labels: &Labels, expected: &str) {
    let actual = shape(value, labels);
    if std::env::var_os("SHAPE_PRINT").is_some() {
        eprintln!("=== {what}\n{actual}\n");
        return;
    }
    let expected = expected.trim();
    if actual != expected {
        let missing: Vec<&str> = expected
            .lines()
            .filter(|l| !actual.lines().any(|a| a == *l))
            .collect();
        let extra: Vec<&str> = actual
            .lines()
            .filter(|l| !expected.lines().any(|e| e == *l))
            .collect();
        panic!(
            "{what}: shape changed\nmissing: {missing:#?}\nextra: {extra:#?}\n\
             actual:\n{actual}\n\nbody: {value:#}"
        );
    }
}

fn account_data_path(client: &Client, kind: &str) -> String {
    format!(
        "/_matrix/client/v3/user/{}/account_data/{kind}",
        enc(&client.user_id)
    )
}

fn typing(client: &Client, room: &str) {
    ok(
        client.put(
            &format!(
                "/_matrix/client/v3/rooms/{}/typing/{}",
                enc(room),
                enc(&client.user_id)
            ),
            &json!({ "typing": true, "timeout": 60000 }),
        ),
        "typing",
    );
}

fn receipt(client: &Client, room: &str, event: &str) {
    ok(
        client.post(
            &format!(
                "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
                enc(room),
                enc(event)
            ),
            &json!({}),
        ),
        "receipt",
    );
}

fn to_device(from: &Client, to: &Client, txn: &str) {
    ok(
        from.put(
            &format!("/_matrix/client/v3/sendToDevice/m.test/{txn}"),
            &json!({ "messages": { &to.user_id: { &to.device_id: { "n": txn } } } }),
        ),
        "sendToDevice",
    );
}

/// Alice's world: a named room with Bob, an unnamed one with Bob (heroes), a room she left, an
/// invite from Bob, a knock on Bob's room, account data (global and per room), a receipt,
/// Bob typing, a to-device message and her one-time and fallback keys.
struct World {
    env: TestEnv,
    alice: Client,
    bob: Client,
    named: String,
    unnamed: String,
    labels: Labels,
}

fn world() -> World {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let named = alice.create_room(&json!({ "name": "Named" }));
    alice.invite(&named, &bob.user_id);
    bob.join(&named);
    let unnamed = bob.create_room(&json!({}));
    bob.invite(&unnamed, &alice.user_id);
    alice.join(&unnamed);
    let left = bob.create_room(&json!({ "preset": "public_chat" }));
    alice.join(&left);
    ok(
        alice.post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&left)),
            &json!({}),
        ),
        "leave",
    );
    let invited = bob.create_room(&json!({ "name": "Invite" }));
    bob.invite(&invited, &alice.user_id);
    let knocked = bob.create_room(&json!({
        "name": "Knock",
        "initial_state": [{ "type": "m.room.join_rules", "state_key": "",
                            "content": { "join_rule": "knock" } }],
    }));
    ok(
        alice.post(
            &format!("/_matrix/client/v3/knock/{}", enc(&knocked)),
            &json!({}),
        ),
        "knock",
    );
    alice.put_ok(
        &account_data_path(&alice, "org.example.global"),
        &json!({ "v": 1 }),
    );
    alice.put_ok(
        &format!(
            "/_matrix/client/v3/user/{}/rooms/{}/tags/u.work",
            enc(&alice.user_id),
            enc(&named)
        ),
        &json!({ "order": 0.5 }),
    );
    let message = bob.send_text(&named, "hello");
    receipt(&bob, &named, &message);
    typing(&bob, &named);
    let mut device = Device::new(alice.clone());
    device.publish_device_keys();
    device.publish_one_time_keys(2);
    device.publish_fallback_key();
    let bob_device = Device::new(bob.clone());
    bob_device.publish_device_keys();
    to_device(&bob, &alice, "1");
    let labels = Labels(BTreeMap::from([
        (named.clone(), "!named".to_owned()),
        (unnamed.clone(), "!unnamed".to_owned()),
        (left, "!left".to_owned()),
        (invited, "!invited".to_owned()),
        (knocked, "!knocked".to_owned()),
        (alice.user_id.clone(), "@alice".to_owned()),
        (bob.user_id.clone(), "@bob".to_owned()),
    ]));
    World {
        env,
        alice,
        bob,
        named,
        unnamed,
        labels,
    }
}

#[test]
fn sync_answers_keep_their_shape() {
    let w = world();
    let include_leave = json!({ "room": { "include_leave": true } });
    let initial = w.alice.sync(None, 0, Some(&include_leave));
    check("initial /sync", &initial, &w.labels, INITIAL);

    // Quiet: nothing new since the initial sync.
    let since = str_field(&initial, "next_batch");
    let quiet = w.alice.sync(Some(&since), 0, None);
    check("quiet incremental /sync", &quiet, &w.labels, QUIET);

    // Incremental: a message in one room, new global account data, another to-device message.
    let since = str_field(&quiet, "next_batch");
    w.bob.send_text(&w.named, "news");
    w.alice.put_ok(
        &account_data_path(&w.alice, "org.example.global"),
        &json!({ "v": 2 }),
    );
    to_device(&w.bob, &w.alice, "2");
    let incremental = w.alice.sync(Some(&since), 0, None);
    check("incremental /sync", &incremental, &w.labels, INCREMENTAL);

    // Lazy-loaded members, initial then incremental.
    let lazy = json!({ "room": { "state": { "lazy_load_members": true } } });
    let lazy_initial = w.alice.sync(None, 0, Some(&lazy));
    check("lazy initial /sync", &lazy_initial, &w.labels, LAZY_INITIAL);
    let since = str_field(&lazy_initial, "next_batch");
    w.bob.send_text(&w.unnamed, "lazy");
    let lazy_incremental = w.alice.sync(Some(&since), 0, Some(&lazy));
    check(
        "lazy incremental /sync",
        &lazy_incremental,
        &w.labels,
        LAZY_INCREMENTAL,
    );

    // Gappy: more events than the timeline limit, with a state change in the gap.
    let since = str_field(&lazy_incremental, "next_batch");
    w.alice
        .put_state(&w.named, "m.room.topic", "", &json!({ "topic": "t" }));
    for n in 0..3 {
        w.bob.send_text(&w.named, &format!("gap {n}"));
    }
    let limit = json!({ "room": { "timeline": { "limit": 1 } } });
    let gappy = w.alice.sync(Some(&since), 0, Some(&limit));
    check("gappy /sync", &gappy, &w.labels, GAPPY);

    // `use_state_after` replaces `state`.
    let after = w.alice.sync_raw("timeout=0&use_state_after=true");
    check("state_after /sync", &after, &w.labels, STATE_AFTER);

    // Only room account data new, under `use_state_after`: the room's section carries an empty
    // `state_after`, never `state` (spec: `state` MUST be omitted).
    let since = str_field(&after, "next_batch");
    w.alice.put_ok(
        &format!(
            "/_matrix/client/v3/user/{}/rooms/{}/tags/u.later",
            enc(&w.alice.user_id),
            enc(&w.named)
        ),
        &json!({}),
    );
    let data_only = w.alice.sync_raw(&format!(
        "since={}&timeout=0&use_state_after=true",
        enc(&since)
    ));
    check(
        "account data only, state_after",
        &data_only,
        &w.labels,
        DATA_ONLY_STATE_AFTER,
    );

    // A room left, synced with `timeline.limit: 0`: no events, so no `prev_batch` (spec: it
    // "may be omitted"; it is never `null`).
    let since = str_field(&data_only, "next_batch");
    ok(
        w.alice.post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&w.unnamed)),
            &json!({}),
        ),
        "leave",
    );
    let none = json!({ "room": { "timeline": { "limit": 0 } } });
    let left = w.alice.sync(Some(&since), 0, Some(&none));
    check("left, no timeline", &left, &w.labels, LEFT_NO_TIMELINE);
    drop(w.env);
}

#[test]
fn sliding_sync_answers_keep_their_shape() {
    let w = world();
    let request = json!({
        "conn_id": "shape",
        "lists": {
            "all": {
                "ranges": [[0, 19]],
                "timeline_limit": 2,
                "required_state": [["m.room.create", ""], ["m.room.name", ""],
                                   ["m.room.member", "$LAZY"], ["m.room.member", "$ME"]],
            }
        },
        "room_subscriptions": { &w.unnamed: { "timeline_limit": 1, "required_state": [] } },
        "extensions": {
            "to_device": { "enabled": true },
            "e2ee": { "enabled": true },
            "account_data": { "enabled": true },
            "receipts": { "enabled": true, "rooms": ["*"] },
            "typing": { "enabled": true },
        },
        "txn_id": "t1",
    });
    let first = ok(
        w.alice.post(&format!("{SLIDING}?timeout=0"), &request),
        "sliding",
    );
    check("sliding window", &first, &w.labels, SLIDING_INITIAL);

    w.bob.send_text(&w.named, "news");
    // An avatar event without a URL: `avatar` is `null` (removed), not absent (unchanged).
    w.alice.put_state(&w.named, "m.room.avatar", "", &json!({}));
    w.alice.put_ok(
        &account_data_path(&w.alice, "org.example.global"),
        &json!({ "v": 2 }),
    );
    let pos = str_field(&first, "pos");
    let mut next = request.clone();
    next["extensions"]["to_device"]["since"] =
        first["extensions"]["to_device"]["next_batch"].clone();
    let second = ok(
        w.alice
            .post(&format!("{SLIDING}?timeout=0&pos={}", enc(&pos)), &next),
        "sliding",
    );
    check(
        "sliding incremental",
        &second,
        &w.labels,
        SLIDING_INCREMENTAL,
    );
    drop(w.env);
}

// The shapes, as captured from the server before `/sync` and sliding sync were typed, with two
// deliberate changes towards the spec: DATA_ONLY_STATE_AFTER carried `state` instead of
// `state_after`, and LEFT_NO_TIMELINE carried `"prev_batch": null`.

const INITIAL: &str = r"
account_data.events[]: event{content,type}
device_lists.changed: []
device_lists.left: []
device_one_time_keys_count.signed_curve25519: number
device_unused_fallback_key_types[]: string
next_batch: string
presence.events[]: event{content,sender,type}
rooms.invite.!invited.invite_state.events[]: event{content,sender,state_key,type}
rooms.join.!named.account_data.events[]: event{content,type}
rooms.join.!named.ephemeral.events[]: event{content,type}
rooms.join.!named.state.events: []
rooms.join.!named.summary.m.invited_member_count: number
rooms.join.!named.summary.m.joined_member_count: number
rooms.join.!named.timeline.events[]: event{content,event_id,origin_server_ts,room_id,sender,state_key,type,unsigned}
rooms.join.!named.timeline.events[]: event{content,event_id,origin_server_ts,room_id,sender,type,unsigned}
rooms.join.!named.timeline.limited: false
rooms.join.!named.timeline.prev_batch: string
rooms.join.!named.unread_notifications.highlight_count: number
rooms.join.!named.unread_notifications.notification_count: number
rooms.join.!unnamed.account_data.events: []
rooms.join.!unnamed.ephemeral.events: []
rooms.join.!unnamed.state.events: []
rooms.join.!unnamed.summary.m.heroes[]: string
rooms.join.!unnamed.summary.m.invited_member_count: number
rooms.join.!unnamed.summary.m.joined_member_count: number
rooms.join.!unnamed.timeline.events[]: event{content,event_id,origin_server_ts,room_id,sender,state_key,type,unsigned}
rooms.join.!unnamed.timeline.limited: false
rooms.join.!unnamed.timeline.prev_batch: string
rooms.join.!unnamed.unread_notifications.highlight_count: number
rooms.join.!unnamed.unread_notifications.notification_count: number
rooms.knock.!knocked.knock_state.events[]: event{content,sender,state_key,type}
rooms.leave.!left.account_data.events: []
rooms.leave.!left.state.events: []
rooms.leave.!left.timeline.events[]: event{content,event_id,origin_server_ts,room_id,sender,state_key,type,unsigned}
rooms.leave.!left.timeline.limited: false
rooms.leave.!left.timeline.prev_batch: string
to_device.events[]: event{content,sender,type}
";
const QUIET: &str = r"
account_data.events: []
device_lists.changed: []
device_lists.left: []
device_one_time_keys_count.signed_curve25519: number
device_unused_fallback_key_types[]: string
next_batch: string
presence.events: []
rooms.invite: {}
rooms.join: {}
rooms.knock: {}
rooms.leave: {}
to_device.events: []
";
const INCREMENTAL: &str = r"
account_data.events[]: event{content,type}
device_lists.changed: []
device_lists.left: []
device_one_time_keys_count.signed_curve25519: number
device_unused_fallback_key_types[]: string
next_batch: string
presence.events: []
rooms.invite: {}
rooms.join.!named.account_data.events: []
rooms.join.!named.ephemeral.events: []
rooms.join.!named.state.events: []
rooms.join.!named.summary.m.invited_member_count: number
rooms.join.!named.summary.m.joined_member_count: number
rooms.join.!named.timeline.events[]: event{content,event_id,origin_server_ts,room_id,sender,type,unsigned}
rooms.join.!named.timeline.limited: false
rooms.join.!named.timeline.prev_batch: string
rooms.join.!named.unread_notifications.highlight_count: number
rooms.join.!named.unread_notifications.notification_count: number
rooms.knock: {}
rooms.leave: {}
to_device.events[]: event{content,sender,type}
";
const LAZY_INITIAL: &str = r"
account_data.events[]: event{content,type}
device_lists.changed: []
device_lists.left: []
device_one_time_keys_count.signed_curve25519: number
device_unused_fallback_key_types[]: string
next_batch: string
presence.events[]: event{content,sender,type}
rooms.invite.!invited.invite_state.events[]: event{content,sender,state_key,type}
rooms.join.!named.account_data.events[]: event{content,type}
rooms.join.!named.ephemeral.events[]: event{content,type}
rooms.join.!named.state.events[]: event{content,event_id,origin_server_ts,room_id,sender,state_key,type,unsigned}
rooms.join.!named.summary.m.invited_member_count: number
rooms.join.!named.summary.m.joined_member_count: number
rooms.join.!named.timeline.events[]: event{content,event_id,origin_server_ts,room_id,sender,state_key,type,unsigned}
rooms.join.!named.timeline.events[]: event{content,event_id,origin_server_ts,room_id,sender,type,unsigned}
rooms.join.!named.timeline.limited: true
rooms.join.!named.timeline.prev_batch: string
rooms.join.!named.unread_notifications.highlight_count: number
rooms.join.!named.unread_notifications.notification_count: number
rooms.join.!unnamed.account_data.events: []
rooms.join.!unnamed.ephemeral.events: []
rooms.join.!unnamed.state.events: []
rooms.join.!unnamed.summary.m.heroes[]: string
rooms.join.!unnamed.summary.m.invited_member_count: number
rooms.join.!unnamed.summary.m.joined_member_count: number
rooms.join.!unnamed.timeline.events[]: event{content,event_id,origin_server_ts,room_id,sender,state_key,type,unsigned}
rooms.join.!unnamed.timeline.limited: false
rooms.join.!unnamed.timeline.prev_batch: string
rooms.join.!unnamed.unread_notifications.highlight_count: number
rooms.join.!unnamed.unread_notifications.notification_count: number
rooms.knock.!knocked.knock_state.events[]: event{content,sender,state_key,type}
rooms.leave: {}
to_device.events[]: event{content,sender,type}
";
const LAZY_INCREMENTAL: &str = r"
account_data.events: []
device_lists.changed: []
device_lists.left: []
device_one_time_keys_count.signed_curve25519: number
device_unused_fallback_key_types[]: string
next_batch: string
presence.events: []
rooms.invite: {}
rooms.join.!unnamed.account_data.events: []
rooms.join.!unnamed.ephemeral.events: []
rooms.join.!unnamed.state.events: []
rooms.join.!unnamed.summary.m.heroes[]: string
rooms.join.!unnamed.summary.m.invited_member_count: number
rooms.join.!unnamed.summary.m.joined_member_count: number
rooms.join.!unnamed.timeline.events[]: event{content,event_id,origin_server_ts,room_id,sender,type,unsigned}
rooms.join.!unnamed.timeline.limited: false
rooms.join.!unnamed.timeline.prev_batch: string
rooms.join.!unnamed.unread_notifications.highlight_count: number
rooms.join.!unnamed.unread_notifications.notification_count: number
rooms.knock: {}
rooms.leave: {}
to_device.events: []
";
const GAPPY: &str = r"
account_data.events: []
device_lists.changed: []
device_lists.left: []
device_one_time_keys_count.signed_curve25519: number
device_unused_fallback_key_types[]: string
next_batch: string
presence.events: []
rooms.invite: {}
rooms.join.!named.account_data.events: []
rooms.join.!named.ephemeral.events: []
rooms.join.!named.state.events[]: event{content,event_id,origin_server_ts,room_id,sender,state_key,type,unsigned}
rooms.join.!named.summary.m.invited_member_count: number
rooms.join.!named.summary.m.joined_member_count: number
rooms.join.!named.timeline.events[]: event{content,event_id,origin_server_ts,room_id,sender,type,unsigned}
rooms.join.!named.timeline.limited: true
rooms.join.!named.timeline.prev_batch: string
rooms.join.!named.unread_notifications.highlight_count: number
rooms.join.!named.unread_notifications.notification_count: number
rooms.knock: {}
rooms.leave: {}
to_device.events: []
";
const STATE_AFTER: &str = r"
account_data.events[]: event{content,type}
device_lists.changed: []
device_lists.left: []
device_one_time_keys_count.signed_curve25519: number
device_unused_fallback_key_types[]: string
next_batch: string
presence.events[]: event{content,sender,type}
rooms.invite.!invited.invite_state.events[]: event{content,sender,state_key,type}
rooms.join.!named.account_data.events[]: event{content,type}
rooms.join.!named.ephemeral.events[]: event{content,type}
rooms.join.!named.state_after.events[]: event{content,event_id,origin_server_ts,room_id,sender,state_key,type,unsigned}
rooms.join.!named.summary.m.invited_member_count: number
rooms.join.!named.summary.m.joined_member_count: number
rooms.join.!named.timeline.events[]: event{content,event_id,origin_server_ts,room_id,sender,state_key,type,unsigned}
rooms.join.!named.timeline.events[]: event{content,event_id,origin_server_ts,room_id,sender,type,unsigned}
rooms.join.!named.timeline.limited: true
rooms.join.!named.timeline.prev_batch: string
rooms.join.!named.unread_notifications.highlight_count: number
rooms.join.!named.unread_notifications.notification_count: number
rooms.join.!unnamed.account_data.events: []
rooms.join.!unnamed.ephemeral.events: []
rooms.join.!unnamed.state_after.events[]: event{content,event_id,origin_server_ts,room_id,sender,state_key,type,unsigned}
rooms.join.!unnamed.summary.m.heroes[]: string
rooms.join.!unnamed.summary.m.invited_member_count: number
rooms.join.!unnamed.summary.m.joined_member_count: number
rooms.join.!unnamed.timeline.events[]: event{content,event_id,origin_server_ts,room_id,sender,state_key,type,unsigned}
rooms.join.!unnamed.timeline.events[]: event{content,event_id,origin_server_ts,room_id,sender,type,unsigned}
rooms.join.!unnamed.timeline.limited: false
rooms.join.!unnamed.timeline.prev_batch: string
rooms.join.!unnamed.unread_notifications.highlight_count: number
rooms.join.!unnamed.unread_notifications.notification_count: number
rooms.knock.!knocked.knock_state.events[]: event{content,sender,state_key,type}
rooms.leave: {}
to_device.events: []
";
const DATA_ONLY_STATE_AFTER: &str = r"
account_data.events: []
device_lists.changed: []
device_lists.left: []
device_one_time_keys_count.signed_curve25519: number
device_unused_fallback_key_types[]: string
next_batch: string
presence.events: []
rooms.invite: {}
rooms.join.!named.account_data.events[]: event{content,type}
rooms.join.!named.ephemeral.events: []
rooms.join.!named.state_after.events: []
rooms.join.!named.summary: {}
rooms.join.!named.timeline.events: []
rooms.join.!named.timeline.limited: false
rooms.knock: {}
rooms.leave: {}
to_device.events: []
";
const LEFT_NO_TIMELINE: &str = r"
account_data.events: []
device_lists.changed: []
device_lists.left: []
device_one_time_keys_count.signed_curve25519: number
device_unused_fallback_key_types[]: string
next_batch: string
presence.events: []
rooms.invite: {}
rooms.join: {}
rooms.knock: {}
rooms.leave.!unnamed.account_data.events: []
rooms.leave.!unnamed.state.events[]: event{content,event_id,origin_server_ts,room_id,sender,state_key,type,unsigned}
rooms.leave.!unnamed.timeline.events: []
rooms.leave.!unnamed.timeline.limited: true
to_device.events: []
";
const SLIDING_INITIAL: &str = r"
extensions.account_data.global[]: event{content,type}
extensions.account_data.rooms.!named[]: event{content,type}
extensions.e2ee.device_lists.changed: []
extensions.e2ee.device_lists.left: []
extensions.e2ee.device_one_time_keys_count.signed_curve25519: number
extensions.e2ee.device_unused_fallback_key_types[]: string
extensions.receipts.rooms.!named.content.$event.m.read.@bob.ts: number
extensions.receipts.rooms.!named.type: string
extensions.to_device.events[]: event{content,sender,type}
extensions.to_device.next_batch: string
extensions.typing.rooms.!named.content.user_ids[]: string
extensions.typing.rooms.!named.type: string
lists.all.count: number
pos: string
rooms.!invited.bump_stamp: number
rooms.!invited.initial: true
rooms.!invited.invite_state[]: event{content,sender,state_key,type}
rooms.!invited.is_dm: false
rooms.!invited.lists[]: string
rooms.!invited.membership: string
rooms.!invited.stripped_state[]: event{content,sender,state_key,type}
rooms.!knocked.bump_stamp: number
rooms.!knocked.initial: true
rooms.!knocked.is_dm: false
rooms.!knocked.lists[]: string
rooms.!knocked.membership: string
rooms.!knocked.stripped_state[]: event{content,sender,state_key,type}
rooms.!named.bump_stamp: number
rooms.!named.highlight_count: number
rooms.!named.initial: true
rooms.!named.invited_count: number
rooms.!named.is_dm: false
rooms.!named.joined_count: number
rooms.!named.limited: true
rooms.!named.lists[]: string
rooms.!named.membership: string
rooms.!named.name: string
rooms.!named.notification_count: number
rooms.!named.num_live: number
rooms.!named.prev_batch: string
rooms.!named.required_state[]: event{content,event_id,origin_server_ts,room_id,sender,state_key,type,unsigned}
rooms.!named.timeline[]: event{content,event_id,origin_server_ts,room_id,sender,state_key,type,unsigned}
rooms.!named.timeline[]: event{content,event_id,origin_server_ts,room_id,sender,type,unsigned}
rooms.!unnamed.bump_stamp: number
rooms.!unnamed.heroes[].displayname: string
rooms.!unnamed.heroes[].user_id: string
rooms.!unnamed.highlight_count: number
rooms.!unnamed.initial: true
rooms.!unnamed.invited_count: number
rooms.!unnamed.is_dm: false
rooms.!unnamed.joined_count: number
rooms.!unnamed.limited: true
rooms.!unnamed.lists[]: string
rooms.!unnamed.membership: string
rooms.!unnamed.notification_count: number
rooms.!unnamed.num_live: number
rooms.!unnamed.prev_batch: string
rooms.!unnamed.required_state[]: event{content,event_id,origin_server_ts,room_id,sender,state_key,type,unsigned}
rooms.!unnamed.timeline[]: event{content,event_id,origin_server_ts,room_id,sender,state_key,type,unsigned}
txn_id: string
";
const SLIDING_INCREMENTAL: &str = r"
extensions.account_data.global[]: event{content,type}
extensions.account_data.rooms: {}
extensions.e2ee.device_lists.changed: []
extensions.e2ee.device_lists.left: []
extensions.e2ee.device_one_time_keys_count.signed_curve25519: number
extensions.e2ee.device_unused_fallback_key_types[]: string
extensions.receipts.rooms: {}
extensions.to_device.events: []
extensions.to_device.next_batch: string
extensions.typing.rooms: {}
lists.all.count: number
pos: string
rooms.!named.avatar: null
rooms.!named.bump_stamp: number
rooms.!named.highlight_count: number
rooms.!named.invited_count: number
rooms.!named.joined_count: number
rooms.!named.limited: false
rooms.!named.lists[]: string
rooms.!named.membership: string
rooms.!named.name: string
rooms.!named.notification_count: number
rooms.!named.num_live: number
rooms.!named.prev_batch: string
rooms.!named.required_state[]: event{content,event_id,origin_server_ts,room_id,sender,state_key,type,unsigned}
rooms.!named.timeline[]: event{content,event_id,origin_server_ts,room_id,sender,state_key,type,unsigned}
rooms.!named.timeline[]: event{content,event_id,origin_server_ts,room_id,sender,type,unsigned}
txn_id: string
";
