//! One notification outcome per event for the members on the default push rules (migration
//! 0022): a message into a room writes one shared row, not one per member, and unread counts
//! and `/notifications` are computed from it at read time. They must read as they did with one
//! row per member: only while the member was joined, only while they were on the default
//! rules, a mention counted once, and rows written per member before the upgrade still
//! counted.

use std::sync::atomic::{AtomicU64, Ordering};

use tests::{Client, TestEnv, Value, enc, json, ok, str_field};

/// Transaction IDs for [`send`].
static TXN: AtomicU64 = AtomicU64::new(0);

fn send(client: &Client, room: &str, content: &Value) -> String {
    let txn = format!("shared-{}", TXN.fetch_add(1, Ordering::Relaxed));
    let reply = client.send_event(room, "m.room.message", &txn, content);
    str_field(&ok(reply, "send"), "event_id")
}

fn text(body: &str) -> Value {
    json!({"msgtype": "m.text", "body": body})
}

/// `(notification_count, highlight_count)` of a joined room in an initial sync.
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

/// The event IDs of every notification of `client`, newest first, page by page.
fn listed(client: &Client, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let path = match &from {
            Some(token) => format!(
                "/_matrix/client/v3/notifications?limit={limit}&from={}",
                enc(token)
            ),
            None => format!("/_matrix/client/v3/notifications?limit={limit}"),
        };
        let page = client.get_ok(&path);
        for n in page["notifications"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            out.push(str_field(&n["event"], "event_id"));
        }
        match page.get("next_token").and_then(Value::as_str) {
            Some(token) => from = Some(token.to_owned()),
            None => return out,
        }
    }
}

/// Rows of a table, read from the database file while the server runs (WAL: readers see the
/// committed state).
fn rows(env: &TestEnv, sql: &str) -> i64 {
    let db = rusqlite::Connection::open(env.db_path()).expect("db");
    db.query_row(sql, [], |r| r.get(0)).expect(sql)
}

#[test]
fn one_outcome_per_event_counts_for_every_member() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    let crowd: Vec<Client> = (0..6)
        .map(|i| {
            let member = env.register(&format!("member{i}"));
            member.join(&room);
            member
        })
        .collect();
    let bob = &crowd[0];
    let first = send(&alice, &room, &text("one"));
    let mention = send(
        &alice,
        &room,
        &json!({"msgtype": "m.text", "body": "bob!", "m.mentions": {"user_ids": [bob.user_id]}}),
    );
    let last = send(&alice, &room, &text("three"));

    assert_eq!(
        rows(
            &env,
            "SELECT (SELECT count(*) FROM notifications) + (SELECT count(*) FROM notifications_recent)"
        ),
        1,
        "only the mentioned member has a row of their own"
    );
    assert_eq!(
        rows(&env, "SELECT count(*) FROM room_notifications"),
        3,
        "one shared outcome per message"
    );
    assert_eq!(counts(bob, &room), (3, 1), "the mention counted once");
    for member in &crowd[1..] {
        assert_eq!(counts(member, &room), (3, 0));
    }
    assert_eq!(counts(&alice, &room), (0, 0), "own messages never count");
    assert_eq!(
        listed(bob, 2),
        [last.as_str(), mention.as_str(), first.as_str()]
    );
    assert_eq!(
        listed(&crowd[1], 1),
        [last.as_str(), mention.as_str(), first.as_str()]
    );
    assert!(listed(&alice, 10).is_empty(), "own messages are not listed");
    let highlights = bob.get_ok("/_matrix/client/v3/notifications?only=highlight");
    assert_eq!(
        highlights["notifications"][0]["event"]["event_id"], mention,
        "{highlights:#}"
    );
    assert_eq!(
        highlights["notifications"].as_array().map(Vec::len),
        Some(1)
    );

    bob.post_ok(
        &format!(
            "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
            enc(&room),
            enc(&mention)
        ),
        &json!({}),
    );
    assert_eq!(counts(bob, &room), (1, 0));
    assert_eq!(counts(&crowd[1], &room), (3, 0));

    // A redaction takes its shared outcome with it.
    alice.put_ok(
        &format!(
            "/_matrix/client/v3/rooms/{}/redact/{}/redact-1",
            enc(&room),
            enc(&last)
        ),
        &json!({}),
    );
    assert_eq!(counts(&crowd[1], &room), (2, 0));
    assert_eq!(listed(&crowd[1], 5), [mention.as_str(), first.as_str()]);
}

#[test]
fn membership_and_own_rules_bound_the_shared_outcome() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let carol = env.register("carol");
    let dave = env.register("dave");
    let erin = env.register("erin");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    for member in [&carol, &dave, &erin] {
        member.join(&room);
    }
    let while_joined = send(&alice, &room, &text("carol is here"));
    assert_eq!(counts(&carol, &room), (1, 0));
    ok(
        carol.post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
            &json!({}),
        ),
        "leave",
    );
    let while_away = send(&alice, &room, &text("carol is away"));
    carol.join(&room);
    let back = send(&alice, &room, &text("carol is back"));
    assert_eq!(
        counts(&carol, &room),
        (1, 0),
        "only what came after the rejoin"
    );
    assert_eq!(
        listed(&carol, 10),
        [back.as_str(), while_joined.as_str()],
        "nothing from while carol was away ({while_away})"
    );

    // Dave mutes the room with a rule of his own: what the defaults decided before still
    // counts, nothing after it does.
    dave.put_ok(
        &format!(
            "/_matrix/client/v3/pushrules/global/override/{}",
            enc("mute-room")
        ),
        &json!({
            "conditions": [{"kind": "event_match", "key": "room_id", "pattern": room}],
            "actions": [],
        }),
    );
    send(&alice, &room, &text("muted for dave"));
    assert_eq!(counts(&dave, &room), (3, 0));
    assert_eq!(
        listed(&dave, 10),
        [back.as_str(), while_away.as_str(), while_joined.as_str()]
    );
    // Erin's rule adds a highlight to every message: her own rows from now on, the shared
    // outcome before.
    erin.put_ok(
        &format!(
            "/_matrix/client/v3/pushrules/global/override/{}",
            enc("all-loud")
        ),
        &json!({
            "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.message"}],
            "actions": ["notify", {"set_tweak": "highlight"}],
        }),
    );
    let loud = send(&alice, &room, &text("loud for erin"));
    assert_eq!(counts(&erin, &room), (5, 1));
    assert_eq!(listed(&erin, 2).first(), Some(&loud));
    assert_eq!(listed(&erin, 2).len(), 5);
}

#[test]
fn rows_written_per_member_before_the_upgrade_still_count() {
    let mut env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let carol = env.register("carol");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    bob.join(&room);
    carol.join(&room);
    let old = [
        send(&alice, &room, &text("old one")),
        send(&alice, &room, &text("old two")),
    ];
    env.stop();
    {
        // Turn the shared outcomes into the per-member rows a server before migration 0022
        // wrote for the same events.
        let db = rusqlite::Connection::open(env.db_path()).expect("db");
        for user in [&bob.user_id, &carol.user_id] {
            db.execute(
                "INSERT INTO notifications (user_id, room_id, stream_pos, highlight, actions)
                 SELECT ?1, room_id, stream_pos, highlight, actions FROM room_notifications",
                [user],
            )
            .expect("per-member rows");
        }
        db.execute("DELETE FROM room_notifications", [])
            .expect("no shared rows before the upgrade");
    }
    env.restart();
    let new = send(&alice, &room, &text("new"));
    assert_eq!(counts(&bob, &room), (3, 0));
    assert_eq!(
        listed(&bob, 2),
        [new.as_str(), old[1].as_str(), old[0].as_str()]
    );
    assert_eq!(
        listed(&carol, 5),
        [new.as_str(), old[1].as_str(), old[0].as_str()]
    );
}
