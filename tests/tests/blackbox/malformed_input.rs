//! Malformed input is an error, never an empty value (issue 15): EDUs a peer sends that lack a
//! field the spec requires are dropped (the transaction still gets 200 and its good EDUs are
//! applied), and client bodies of the wrong shape get the spec's 400 instead of being read with
//! defaults.
//!
//! The peer is a [`Puppet`], a card and a signing key the test speaks for, so it can send
//! exactly the bodies a broken or hostile server would.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tests::federation::{
    Member, Puppet, Unit, UnitOptions, eventually, free_port_on, now_ms, unit_ip,
};
use tests::{Client, TestEnv, Value, assert_error, enc, json};

/// Long enough for the unit to apply a transaction's EDUs and a sync to see them.
const DEADLINE: Duration = Duration::from_secs(20);

/// The events of type `kind` in a room's `ephemeral` section of a sync.
fn ephemeral(sync: &Value, room: &str, kind: &str) -> Vec<Value> {
    sync["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|event| event["type"] == kind)
        .cloned()
        .collect()
}

#[test]
fn malformed_edus_are_dropped_and_the_good_ones_applied() {
    let endpoint = SocketAddr::from((
        Ipv4Addr::new(127, 0, 0, 10),
        free_port_on(Ipv4Addr::new(127, 0, 0, 10)),
    ));
    let peer = Puppet::new("peer.test", endpoint);
    let mut a = Unit::new("unit-a.test", unit_ip(0), &UnitOptions::default());
    a.trust_card(peer.name(), peer.card());
    a.start();
    let alice = a.register("alice");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    let mallory = Member::join(&peer, &a, &room, "mallory").expect("mallory joins");
    let trudy = Member::join(&peer, &a, &room, "trudy").expect("trudy joins");
    let read = alice.send_text(&room, "read me");
    let whoami = alice.get_ok("/_matrix/client/v3/account/whoami");
    let device = whoami["device_id"]
        .as_str()
        .expect("alice's device")
        .to_owned();

    let receipt = |user: &str, data: Value| {
        json!({ "edu_type": "m.receipt", "content": { room.clone(): { "m.read": {
            user: { "event_ids": [read.clone()], "data": data } } } } })
    };
    let presence = |user: &str, update: Value| {
        let mut update = update;
        update["user_id"] = json!(user);
        json!({ "edu_type": "m.presence", "content": { "push": [update] } })
    };
    let to_device = |content: Value| {
        let mut content = content;
        content["sender"] = json!(mallory.user_id);
        content["type"] = json!("org.example.test");
        content["messages"] = json!({ alice.user_id.clone(): { device.clone(): content["body"] } });
        json!({ "edu_type": "m.direct_to_device", "content": content })
    };
    let edus = vec![
        // Bad: the receipt's `data.ts` is required.
        receipt(&trudy.user_id, json!({})),
        // Bad: `typing` is required (it used to read as "stopped").
        json!({ "edu_type": "m.typing", "content": {
            "room_id": room, "user_id": trudy.user_id } }),
        // Bad: `last_active_ago` is required (it used to read as "just now").
        presence(
            &trudy.user_id,
            json!({ "presence": "online", "status_msg": "bad" }),
        ),
        // Bad: `message_id` is required.
        to_device(json!({ "body": { "n": "bad" } })),
        // Bad: not even an object.
        json!({ "edu_type": "m.typing", "content": "garbage" }),
        // Good, after the bad ones.
        receipt(&mallory.user_id, json!({ "ts": 1_234 })),
        json!({ "edu_type": "m.typing", "content": {
            "room_id": room, "user_id": mallory.user_id, "typing": true } }),
        presence(
            &mallory.user_id,
            json!({ "presence": "online", "last_active_ago": 10, "status_msg": "good" }),
        ),
        to_device(json!({ "message_id": "m1", "body": { "n": "good" } })),
    ];
    let txn = json!({
        "origin": peer.name(), "origin_server_ts": now_ms(), "pdus": [], "edus": edus,
    });
    let reply = peer.request(&a, "PUT", "/_matrix/federation/v1/send/edus-1", Some(&txn));
    assert_eq!(
        reply.status,
        200,
        "the transaction is accepted: {}",
        reply.json()
    );

    // The good EDUs are applied.
    let sync = eventually("the good EDUs reach alice's sync", DEADLINE, || {
        let sync = alice.sync(None, 0, None);
        let typing = ephemeral(&sync, &room, "m.typing");
        let receipts = ephemeral(&sync, &room, "m.receipt");
        let typing_ok = typing.iter().any(|e| {
            e["content"]["user_ids"]
                .to_string()
                .contains(&mallory.user_id)
        });
        let receipt_ok = receipts
            .iter()
            .any(|e| e["content"][&read]["m.read"][&mallory.user_id]["ts"] == json!(1_234));
        if typing_ok
            && receipt_ok
            && !sync["to_device"]["events"]
                .as_array()
                .is_none_or(Vec::is_empty)
        {
            Ok(sync)
        } else {
            Err(format!("{sync}"))
        }
    });
    let status =
        |user: &str| alice.get(&format!("/_matrix/client/v3/presence/{}/status", enc(user)));
    let (code, body) = status(&mallory.user_id);
    assert_eq!((code, &body["status_msg"]), (200, &json!("good")), "{body}");

    // Nothing of the bad ones is.
    let receipts = ephemeral(&sync, &room, "m.receipt");
    assert!(
        !receipts
            .iter()
            .any(|e| e["content"].to_string().contains(&trudy.user_id)),
        "a receipt without data.ts was applied: {receipts:?}"
    );
    let typing = ephemeral(&sync, &room, "m.typing");
    assert!(
        !typing
            .iter()
            .any(|e| e["content"].to_string().contains(&trudy.user_id)),
        "a typing notice without `typing` was applied: {typing:?}"
    );
    assert_error(&status(&trudy.user_id), 404, "M_NOT_FOUND");
    let delivered: Vec<Value> = sync["to_device"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        delivered
            .iter()
            .map(|e| e["content"]["n"].clone())
            .collect::<Vec<_>>(),
        vec![json!("good")],
        "only the to-device message with a message_id: {delivered:?}"
    );
    // Each drop is logged with its origin and type.
    let log = a.current_log();
    for edu_type in ["m.receipt", "m.typing", "m.presence", "m.direct_to_device"] {
        assert!(
            log.lines().any(|l| l.contains("dropped EDU")
                && l.contains("peer.test")
                && l.contains(edu_type)),
            "no log line for the dropped {edu_type} EDU:\n{log}"
        );
    }
}

/// A complete, valid pusher body.
fn pusher_body() -> Value {
    json!({
        "pushkey": "key1",
        "kind": "http",
        "app_id": "org.example.app",
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "lang": "en",
        "data": { "url": "https://push.example.org/_matrix/push/v1/notify", "custom": 1 },
    })
}

fn pushers(client: &Client) -> Vec<Value> {
    client.get_ok("/_matrix/client/v3/pushers")["pushers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn malformed_pusher_bodies_are_refused() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let set = "/_matrix/client/v3/pushers/set";
    let bad = [
        ("append", json!("yes")),
        ("profile_tag", json!(7)),
        ("lang", json!(["en"])),
        (
            "data",
            json!({ "url": "https://push.example.org/_matrix/push/v1/notify", "format": 1 }),
        ),
        ("data", json!({ "url": 5 })),
        ("data", json!("url")),
        ("kind", json!(1)),
    ];
    for (field, value) in bad {
        let mut body = pusher_body();
        body[field] = value.clone();
        let reply = alice.post(set, &body);
        assert!(
            reply.0 == 400 && reply.1["errcode"] == "M_BAD_JSON",
            "{field}: {value} → {reply:?}"
        );
    }
    assert!(
        pushers(&alice).is_empty(),
        "a malformed body stored a pusher"
    );
    // Missing fields are still named.
    let mut body = pusher_body();
    body.as_object_mut().expect("object").remove("lang");
    assert_error(&alice.post(set, &body), 400, "M_MISSING_PARAM");
    // The control: the same body, well formed, is stored as sent.
    alice.post_ok(set, &pusher_body());
    let listed = pushers(&alice);
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0]["data"],
        json!({ "url": "https://push.example.org/_matrix/push/v1/notify", "custom": 1 })
    );
}

#[test]
fn malformed_state_contents_are_refused() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = alice.create_room(&json!({ "preset": "private_chat" }));
    let (code, body) = alice.put(
        &Client::state_path(&room, "m.room.member", &bob.user_id),
        &json!({ "membership": "invite", "is_direct": "yes" }),
    );
    assert_eq!(
        (code, &body["errcode"]),
        (400, &json!("M_BAD_JSON")),
        "{body}"
    );
    let (code, body) = alice.put(
        &Client::state_path(&room, "m.room.member", &bob.user_id),
        &json!({ "membership": 5 }),
    );
    assert_eq!(
        (code, &body["errcode"]),
        (400, &json!("M_BAD_JSON")),
        "{body}"
    );
    let (code, body) = alice.put(
        &Client::state_path(&room, "m.room.canonical_alias", ""),
        &json!({ "alias": 5 }),
    );
    assert_eq!(
        (code, &body["errcode"]),
        (400, &json!("M_INVALID_PARAM")),
        "{body}"
    );
    let (code, _) = alice.get(&Client::state_path(&room, "m.room.canonical_alias", ""));
    assert_eq!(code, 404, "no canonical alias event was stored");
    // The controls.
    alice.put_ok(
        &Client::state_path(&room, "m.room.member", &bob.user_id),
        &json!({ "membership": "invite", "is_direct": true }),
    );
    alice.put_ok(
        &Client::state_path(&room, "m.room.canonical_alias", ""),
        &json!({ "alt_aliases": [] }),
    );
}
