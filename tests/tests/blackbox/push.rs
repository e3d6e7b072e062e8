//! Push: the server-default rules, rule CRUD (ordering with `before`/`after`, enabling,
//! actions, errors), `m.push_rules` in `/sync`, unread notification and highlight counts in
//! `/sync` (messages from others, read receipts, mentions, disabled rules), `/notifications`,
//! pushers, and delivery to a push gateway (including a retry after a failure).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;
use tests::{Client, TestEnv, Value, assert_error, enc, json, ok, poll_until, str_field};

const DEADLINE: Duration = Duration::from_secs(10);

/// Transaction IDs for [`send`].
static TXN: AtomicU64 = AtomicU64::new(0);

const OVERRIDE_DEFAULTS: [&str; 10] = [
    ".m.rule.master",
    ".m.rule.suppress_notices",
    ".m.rule.invite_for_me",
    ".m.rule.member_event",
    ".m.rule.is_user_mention",
    ".m.rule.is_room_mention",
    ".m.rule.tombstone",
    ".m.rule.reaction",
    ".m.rule.room.server_acl",
    ".m.rule.suppress_edits",
];

const UNDERRIDE_DEFAULTS: [&str; 5] = [
    ".m.rule.call",
    ".m.rule.encrypted_room_one_to_one",
    ".m.rule.room_one_to_one",
    ".m.rule.message",
    ".m.rule.encrypted",
];

fn rule_path(kind: &str, rule_id: &str) -> String {
    format!(
        "/_matrix/client/v3/pushrules/global/{kind}/{}",
        enc(rule_id)
    )
}

fn rule_ids(rules: &Value, kind: &str) -> Vec<String> {
    rules[kind]
        .as_array()
        .unwrap_or_else(|| panic!("{kind} is an array: {rules:#}"))
        .iter()
        .map(|rule| str_field(rule, "rule_id"))
        .collect()
}

fn global_rules(client: &Client) -> Value {
    client.get_ok("/_matrix/client/v3/pushrules/")["global"].clone()
}

/// The user-defined override rules, in order.
fn custom_overrides(client: &Client) -> Vec<String> {
    rule_ids(&global_rules(client), "override")
        .into_iter()
        .filter(|id| !id.starts_with('.'))
        .collect()
}

fn put_override(client: &Client, rule_id: &str, query: &str) {
    let path = format!("{}{query}", rule_path("override", rule_id));
    client.put_ok(
        &path,
        &json!({
            "conditions": [{"kind": "event_match", "key": "content.body", "pattern": rule_id}],
            "actions": ["notify"],
        }),
    );
}

fn receipt(client: &Client, room: &str, kind: &str, event_id: &str) {
    client.post_ok(
        &format!(
            "/_matrix/client/v3/rooms/{}/receipt/{kind}/{}",
            enc(room),
            enc(event_id)
        ),
        &json!({}),
    );
}

fn send(client: &Client, room: &str, content: &Value) -> String {
    let txn = format!("push-{}", TXN.fetch_add(1, Ordering::Relaxed));
    let reply = client.send_event(room, "m.room.message", &txn, content);
    str_field(&ok(reply, "send"), "event_id")
}

/// `(notification_count, highlight_count)` of a room in an initial sync.
fn counts(client: &Client, room: &str) -> (i64, i64) {
    let sync = client.sync(None, 0, None);
    let unread = &sync["rooms"]["join"][room]["unread_notifications"];
    (
        unread["notification_count"]
            .as_i64()
            .unwrap_or_else(|| panic!("count in {sync:#}")),
        unread["highlight_count"]
            .as_i64()
            .unwrap_or_else(|| panic!("highlights in {sync:#}")),
    )
}

/// A room of `alice` (creator) with `others` joined; more than two members unless `others`
/// has one entry.
fn room_with(alice: &Client, others: &[&Client]) -> String {
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    for other in others {
        other.join(&room);
    }
    room
}

#[test]
fn default_rules_are_the_spec_list() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let all = alice.get_ok("/_matrix/client/v3/pushrules/");
    let global = &all["global"];
    assert_eq!(rule_ids(global, "override"), OVERRIDE_DEFAULTS);
    assert_eq!(rule_ids(global, "underride"), UNDERRIDE_DEFAULTS);
    for kind in ["content", "room", "sender"] {
        assert_eq!(global[kind], json!([]), "{kind} starts empty: {global:#}");
    }
    let master = &global["override"][0];
    assert_eq!(master["enabled"], false);
    assert_eq!(master["default"], true);
    let mention = alice.get_ok(&rule_path("override", ".m.rule.is_user_mention"));
    assert_eq!(
        mention["conditions"][0]["value"], alice.user_id,
        "the mention rule names the user: {mention:#}"
    );
    assert_eq!(
        alice.get_ok("/_matrix/client/v3/pushrules/global/"),
        *global
    );
}

#[test]
fn rules_are_created_ordered_replaced_and_deleted() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    put_override(&alice, "a", "");
    put_override(&alice, "b", "");
    assert_eq!(custom_overrides(&alice), ["b", "a"], "new rules come first");
    let ids = rule_ids(&global_rules(&alice), "override");
    assert_eq!(ids[0], ".m.rule.master", "master stays first: {ids:?}");

    put_override(&alice, "c", "?after=a");
    assert_eq!(custom_overrides(&alice), ["b", "a", "c"]);
    put_override(&alice, "d", "?before=a");
    assert_eq!(custom_overrides(&alice), ["b", "d", "a", "c"]);
    // Moving an existing rule down and up.
    put_override(&alice, "b", "?after=c");
    assert_eq!(custom_overrides(&alice), ["d", "a", "c", "b"]);
    put_override(&alice, "c", "?before=d");
    assert_eq!(custom_overrides(&alice), ["c", "d", "a", "b"]);
    // Replacing without a position keeps the place and the enabled flag.
    alice.put_ok(
        &format!("{}/enabled", rule_path("override", "a")),
        &json!({"enabled": false}),
    );
    alice.put_ok(&rule_path("override", "a"), &json!({"actions": []}));
    assert_eq!(custom_overrides(&alice), ["c", "d", "a", "b"]);
    let a = alice.get_ok(&rule_path("override", "a"));
    assert_eq!(
        (
            a["enabled"].clone(),
            a["actions"].clone(),
            a["default"].clone()
        ),
        (json!(false), json!([]), json!(false)),
        "{a:#}"
    );

    alice.put_ok(
        &rule_path("content", "cake"),
        &json!({"pattern": "cake*lie", "actions": ["notify", {"set_tweak": "sound", "value": "cakealarm.wav"}]}),
    );
    let cake = alice.get_ok(&rule_path("content", "cake"));
    assert_eq!(cake["pattern"], "cake*lie");
    assert_eq!(cake["actions"][1]["value"], "cakealarm.wav");
    let room = alice.create_room(&json!({}));
    alice.put_ok(&rule_path("room", &room), &json!({"actions": []}));
    alice.put_ok(
        &rule_path("sender", "@spam:outpost.test"),
        &json!({"actions": []}),
    );
    let rules = global_rules(&alice);
    assert_eq!(rule_ids(&rules, "room"), vec![room.clone()]);
    assert_eq!(rule_ids(&rules, "sender"), ["@spam:outpost.test"]);

    ok(alice.delete(&rule_path("override", "d")), "delete d");
    assert_eq!(custom_overrides(&alice), ["c", "a", "b"]);
    assert_error(&alice.get(&rule_path("override", "d")), 404, "M_NOT_FOUND");
    assert_error(
        &alice.delete(&rule_path("override", "d")),
        404,
        "M_NOT_FOUND",
    );
    ok(alice.delete(&rule_path("room", &room)), "delete room rule");
    assert_eq!(
        rule_ids(&global_rules(&alice), "room"),
        Vec::<String>::new()
    );
}

#[test]
fn enabled_and_actions_of_default_and_user_rules() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let master = format!("{}/enabled", rule_path("override", ".m.rule.master"));
    assert_eq!(alice.get_ok(&master), json!({"enabled": false}));
    alice.put_ok(&master, &json!({"enabled": true}));
    assert_eq!(alice.get_ok(&master), json!({"enabled": true}));

    let actions = format!("{}/actions", rule_path("underride", ".m.rule.message"));
    assert_eq!(alice.get_ok(&actions), json!({"actions": ["notify"]}));
    let loud = json!(["notify", {"set_tweak": "sound", "value": "bing"}]);
    alice.put_ok(&actions, &json!({"actions": loud}));
    assert_eq!(alice.get_ok(&actions)["actions"], loud);
    // Historical actions are ignored.
    alice.put_ok(&actions, &json!({"actions": ["dont_notify"]}));
    assert_eq!(alice.get_ok(&actions)["actions"], json!([]));

    assert_error(
        &alice.get(&format!("{}/enabled", rule_path("override", "nope"))),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &alice.put(
            &format!("{}/actions", rule_path("underride", "nope")),
            &json!({"actions": []}),
        ),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &alice.put(&master, &json!({"enabled": "yes"})),
        400,
        "M_BAD_JSON",
    );
}

#[test]
fn rule_errors_follow_the_spec() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let notify = json!({"actions": ["notify"]});
    assert_error(
        &alice.get("/_matrix/client/v3/pushrules/global/bogus/x"),
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &alice.put("/_matrix/client/v3/pushrules/global/bogus/x", &notify),
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &alice.put(&rule_path("override", ".mine"), &notify),
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &alice.delete(&rule_path("override", ".m.rule.master")),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &alice.put(&rule_path("override", "x"), &json!({"conditions": []})),
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &alice.put(&rule_path("override", "x"), &json!({"actions": "notify"})),
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &alice.put(
            &rule_path("override", "x"),
            &json!({"actions": [], "conditions": "all"}),
        ),
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &alice.put(&rule_path("content", "x"), &notify),
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &alice.put(&rule_path("room", "not-a-room"), &notify),
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &alice.put(&rule_path("sender", "not-a-user"), &notify),
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &alice.put(
            &format!("{}?before=missing", rule_path("override", "x")),
            &notify,
        ),
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &alice.put(
            &format!("{}?after=.m.rule.master", rule_path("override", "x")),
            &notify,
        ),
        400,
        "M_INVALID_PARAM",
    );
    let reply = alice.request("PUT", &rule_path("override", "x"), &[], Some(b"{not json"));
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(reply.json()["errcode"], "M_NOT_JSON");
    assert_eq!(
        custom_overrides(&alice),
        Vec::<String>::new(),
        "nothing was stored"
    );
    assert_error(
        &env.anon().get("/_matrix/client/v3/pushrules/"),
        401,
        "M_MISSING_TOKEN",
    );
}

#[test]
fn push_rules_are_account_data_in_sync() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let push_rules = |sync: &Value| -> Option<Value> {
        sync["account_data"]["events"]
            .as_array()?
            .iter()
            .find(|event| event["type"] == "m.push_rules")
            .map(|event| event["content"].clone())
    };
    let initial = alice.sync(None, 0, None);
    let content = push_rules(&initial).unwrap_or_else(|| panic!("m.push_rules in {initial:#}"));
    assert_eq!(
        rule_ids(&content["global"], "underride"),
        UNDERRIDE_DEFAULTS
    );
    let since = str_field(&initial, "next_batch");
    let quiet = alice.sync(Some(&since), 0, None);
    assert_eq!(push_rules(&quiet), None, "unchanged rules are not resent");

    alice.put_ok(
        &format!("{}/enabled", rule_path("underride", ".m.rule.message")),
        &json!({"enabled": false}),
    );
    let changed = alice.sync(Some(&since), 0, None);
    let content = push_rules(&changed).unwrap_or_else(|| panic!("m.push_rules in {changed:#}"));
    let message = content["global"]["underride"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["rule_id"] == ".m.rule.message"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(message["enabled"], false, "{content:#}");
    let after = alice.sync(Some(&str_field(&changed, "next_batch")), 0, None);
    assert_eq!(push_rules(&after), None);
}

#[test]
fn notification_count_follows_messages_and_read_receipts() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = room_with(&alice, &[&bob]);
    assert_eq!(counts(&bob, &room), (0, 0));
    let first = alice.send_text(&room, "one");
    let second = alice.send_text(&room, "two");
    let third = alice.send_text(&room, "three");
    assert_eq!(counts(&bob, &room), (3, 0));
    assert_eq!(counts(&alice, &room), (0, 0), "own messages never notify");

    receipt(&bob, &room, "m.read", &first);
    assert_eq!(counts(&bob, &room), (2, 0));
    // The newer of m.read and m.read.private counts.
    receipt(&bob, &room, "m.read.private", &second);
    assert_eq!(counts(&bob, &room), (1, 0));
    receipt(&bob, &room, "m.read", &first);
    assert_eq!(counts(&bob, &room), (1, 0));
    receipt(&bob, &room, "m.read", &third);
    assert_eq!(counts(&bob, &room), (0, 0));

    // The count arrives in the same incremental sync as the event.
    let since = str_field(&bob.sync(None, 0, None), "next_batch");
    alice.send_text(&room, "four");
    let sync = bob.sync(Some(&since), 0, None);
    assert_eq!(
        sync["rooms"]["join"][&room]["unread_notifications"]["notification_count"], 1,
        "{sync:#}"
    );
    // Sending a message marks the room read.
    bob.send_text(&room, "reply");
    assert_eq!(counts(&bob, &room), (0, 0));
}

#[test]
fn mentions_highlight() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let carol = env.register("carol");
    bob.put_ok(
        &format!(
            "/_matrix/client/v3/profile/{}/displayname",
            enc(&bob.user_id)
        ),
        &json!({"displayname": "Bobby"}),
    );
    let room = room_with(&alice, &[&bob, &carol]);

    send(
        &alice,
        &room,
        &json!({"msgtype": "m.text", "body": "hi bob", "m.mentions": {"user_ids": [bob.user_id]}}),
    );
    assert_eq!(counts(&bob, &room), (1, 1));
    assert_eq!(counts(&carol, &room), (1, 0));

    // @room from the creator (power 100 ≥ notifications.room 50) highlights everyone…
    send(
        &alice,
        &room,
        &json!({"msgtype": "m.text", "body": "all", "m.mentions": {"room": true}}),
    );
    assert_eq!(counts(&bob, &room), (2, 2));
    // …but not from a member without that power.
    send(
        &carol,
        &room,
        &json!({"msgtype": "m.text", "body": "all?", "m.mentions": {"room": true}}),
    );
    assert_eq!(counts(&bob, &room), (3, 2));

    // Notices notify nobody under the default rules.
    send(
        &alice,
        &room,
        &json!({"msgtype": "m.notice", "body": "Bobby bot"}),
    );
    assert_eq!(counts(&bob, &room), (3, 2));

    // contains_display_name in a user-defined rule sees the member's display name (user
    // override rules come before the default ones, .m.rule.master aside).
    bob.put_ok(
        &rule_path("override", "my-name"),
        &json!({
            "conditions": [{"kind": "contains_display_name"}],
            "actions": ["notify", {"set_tweak": "highlight"}],
        }),
    );
    alice.send_text(&room, "where is Bobby?");
    assert_eq!(counts(&bob, &room), (4, 3));
    alice.send_text(&room, "where is Bob?");
    assert_eq!(counts(&bob, &room), (5, 3));
    send(
        &alice,
        &room,
        &json!({"msgtype": "m.notice", "body": "Bobby bot"}),
    );
    assert_eq!(counts(&bob, &room), (6, 4));
}

#[test]
fn disabled_message_rule_stops_counting() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let carol = env.register("carol");
    let room = room_with(&alice, &[&bob, &carol]);
    let enabled = format!("{}/enabled", rule_path("underride", ".m.rule.message"));
    bob.put_ok(&enabled, &json!({"enabled": false}));
    alice.send_text(&room, "quiet");
    assert_eq!(counts(&bob, &room), (0, 0));
    assert_eq!(counts(&carol, &room), (1, 0));
    bob.put_ok(&enabled, &json!({"enabled": true}));
    alice.send_text(&room, "loud");
    assert_eq!(counts(&bob, &room), (1, 0));
    // The master rule silences everything.
    bob.put_ok(
        &format!("{}/enabled", rule_path("override", ".m.rule.master")),
        &json!({"enabled": true}),
    );
    alice.send_text(&room, "muted");
    assert_eq!(counts(&bob, &room), (1, 0));
}

#[test]
fn notifications_are_listed_and_paginated() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let carol = env.register("carol");
    let room = room_with(&alice, &[&bob, &carol]);
    let plain = alice.send_text(&room, "plain");
    let mention = send(
        &alice,
        &room,
        &json!({"msgtype": "m.text", "body": "bob!", "m.mentions": {"user_ids": [bob.user_id]}}),
    );
    let all = bob.get_ok("/_matrix/client/v3/notifications");
    let list = all["notifications"].as_array().cloned().unwrap_or_default();
    let ids: Vec<&str> = list
        .iter()
        .filter_map(|n| n["event"]["event_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [mention.as_str(), plain.as_str()],
        "newest first: {all:#}"
    );
    assert_eq!(list[0]["room_id"], room);
    assert_eq!(list[0]["read"], false);
    assert!(list[0]["ts"].is_i64());
    assert!(
        list[0]["actions"]
            .as_array()
            .is_some_and(|a| a.contains(&json!({"set_tweak": "highlight"}))),
        "{all:#}"
    );
    assert!(all.get("next_token").is_none(), "one page: {all:#}");

    let highlights = bob.get_ok("/_matrix/client/v3/notifications?only=highlight");
    assert_eq!(
        highlights["notifications"].as_array().map(Vec::len),
        Some(1)
    );

    let page = bob.get_ok("/_matrix/client/v3/notifications?limit=1");
    assert_eq!(page["notifications"][0]["event"]["event_id"], mention);
    let next = str_field(&page, "next_token");
    let rest = bob.get_ok(&format!(
        "/_matrix/client/v3/notifications?limit=1&from={}",
        enc(&next)
    ));
    assert_eq!(rest["notifications"][0]["event"]["event_id"], plain);

    receipt(&bob, &room, "m.read", &mention);
    let read = bob.get_ok("/_matrix/client/v3/notifications");
    assert_eq!(read["notifications"][1]["read"], true);
    assert_error(
        &bob.get("/_matrix/client/v3/notifications?from=nonsense"),
        400,
        "M_INVALID_PARAM",
    );
}

fn pusher_body(pushkey: &str, url: &str) -> Value {
    json!({
        "pushkey": pushkey,
        "kind": "http",
        "app_id": "org.example.app",
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "profile_tag": "tag",
        "lang": "en",
        "data": {"url": url, "format": "event_id_only", "custom": 1},
    })
}

fn pushers(client: &Client) -> Vec<Value> {
    client.get_ok("/_matrix/client/v3/pushers")["pushers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn pushers_are_set_replaced_and_deleted() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let set = "/_matrix/client/v3/pushers/set";
    let url = "https://push.example.org/_matrix/push/v1/notify";
    assert!(pushers(&alice).is_empty());
    alice.post_ok(set, &pusher_body("key1", url));
    let listed = pushers(&alice);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["pushkey"], "key1");
    assert_eq!(listed[0]["data"]["url"], url);
    assert_eq!(listed[0]["profile_tag"], "tag");

    let mut renamed = pusher_body("key1", url);
    renamed["device_display_name"] = json!("Tablet");
    alice.post_ok(set, &renamed);
    let listed = pushers(&alice);
    assert_eq!(listed.len(), 1, "same app and key: replaced");
    assert_eq!(listed[0]["device_display_name"], "Tablet");

    // Another user taking the same app ID and pushkey removes it from alice, unless appending.
    let mut appended = pusher_body("key1", url);
    appended["append"] = json!(true);
    bob.post_ok(set, &appended);
    assert_eq!(pushers(&alice).len(), 1);
    bob.post_ok(set, &pusher_body("key1", url));
    assert!(pushers(&alice).is_empty());
    assert_eq!(pushers(&bob).len(), 1);

    bob.post_ok(
        set,
        &json!({"pushkey": "key1", "app_id": "org.example.app", "kind": null}),
    );
    assert!(pushers(&bob).is_empty());

    assert_error(
        &alice.post(set, &json!({"pushkey": "k", "app_id": "a", "kind": "http"})),
        400,
        "M_MISSING_PARAM",
    );
    assert_error(
        &alice.post(set, &json!({"pushkey": "k", "app_id": "a"})),
        400,
        "M_MISSING_PARAM",
    );
    assert_error(
        &alice.post(set, &pusher_body("k", "http://10.0.0.1/wrong/path")),
        400,
        "M_INVALID_PARAM",
    );
    let mut email = pusher_body("k", url);
    email["kind"] = json!("email");
    assert_error(&alice.post(set, &email), 400, "M_INVALID_PARAM");
    assert_error(
        &alice.post(set, &pusher_body(&"k".repeat(513), url)),
        400,
        "M_INVALID_PARAM",
    );
}

/// A push gateway on a loopback port: answers each request with the next status in
/// `statuses` (then 200) and hands every request body to the returned channel.
fn gateway(statuses: Vec<u16>) -> (String, mpsc::Receiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test gateway");
    let url = format!(
        "http://{}/_matrix/push/v1/notify",
        listener.local_addr().expect("gateway address")
    );
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut statuses = statuses.into_iter();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone the gateway socket"));
            let mut length = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let status = statuses.next().unwrap_or(200);
            let answer = r#"{"rejected":[]}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
            if tx
                .send(serde_json::from_slice(&body).unwrap_or(Value::Null))
                .is_err()
            {
                return;
            }
        }
    });
    (url, rx)
}

#[test]
fn notifications_reach_the_push_gateway_and_are_retried() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let carol = env.register("carol");
    let room = room_with(&alice, &[&bob, &carol]);
    // The first attempt fails with a 500; the worker retries after its backoff.
    let (url, bodies) = gateway(vec![500]);
    let mut body = pusher_body("bob-phone", &url);
    body["data"]["format"] = json!("full");
    bob.post_ok("/_matrix/client/v3/pushers/set", &body);

    let event = send(
        &alice,
        &room,
        &json!({"msgtype": "m.text", "body": "ping", "m.mentions": {"user_ids": [bob.user_id]}}),
    );
    let first = bodies.recv_timeout(DEADLINE).expect("first push attempt");
    let retry = bodies.recv_timeout(DEADLINE).expect("retried push");
    assert_eq!(first, retry, "a retry repeats the notification");
    let n = &retry["notification"];
    assert_eq!(n["event_id"], event);
    assert_eq!(n["room_id"], room);
    assert_eq!(n["type"], "m.room.message");
    assert_eq!(n["sender"], alice.user_id);
    assert_eq!(n["content"]["body"], "ping");
    assert_eq!(n["counts"]["unread"], 1);
    assert_eq!(n["prio"], "high");
    let device = &n["devices"][0];
    assert_eq!(device["pushkey"], "bob-phone");
    assert_eq!(device["app_id"], "org.example.app");
    assert_eq!(
        device["data"],
        json!({"format": "full", "custom": 1}),
        "url is not forwarded"
    );
    assert_eq!(device["tweaks"]["highlight"], true);
    assert_eq!(device["tweaks"]["sound"], "default");

    // Nothing for events that do not notify bob (his own), and nothing once it is delivered.
    bob.send_text(&room, "mine");
    alice.send_text(&room, "second");
    let next = poll_until("the second push", DEADLINE, || bodies.try_recv().ok());
    assert_eq!(next["notification"]["content"]["body"], "second");
    assert!(
        bodies.recv_timeout(Duration::from_millis(500)).is_err(),
        "each notification is delivered once"
    );
}

/// Members on the default rules share one evaluation per event; a member event still notifies
/// a member whose own rule matches member events, and no member on the defaults
/// (`.m.rule.member_event`).
#[test]
fn member_events_notify_custom_rules_only() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let carol = env.register("carol");
    let erin = env.register("erin");
    let dave = env.register("dave");
    erin.put_ok(
        &rule_path("override", "members"),
        &json!({
            "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.member"}],
            "actions": ["notify"],
        }),
    );
    let room = room_with(&alice, &[&bob, &carol, &erin]);
    alice.invite(&room, &dave.user_id);
    let invite = |client: &Client| -> bool {
        client.get_ok("/_matrix/client/v3/notifications")["notifications"]
            .as_array()
            .is_some_and(|list| {
                list.iter().any(|n| {
                    n["event"]["type"] == "m.room.member"
                        && n["event"]["state_key"] == dave.user_id.as_str()
                        && n["event"]["content"]["membership"] == "invite"
                })
            })
    };
    assert!(invite(&erin), "a custom rule on member events matches");
    assert!(!invite(&bob) && !invite(&carol), "other members are not");
}
