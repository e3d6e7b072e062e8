//! The deprecated endpoints the spec still carries: `GET /initialSync`, `GET /events` (the
//! user's stream, and `?room_id=` peeking into a `world_readable` room), `GET /events/{eventId}`
//! and `GET /rooms/{roomId}/initialSync` (for a joined room and for a `world_readable` room the
//! user never joined), in the spec's shapes.

use std::thread;

use tests::{TestEnv, Value, assert_error, enc, json, ok, str_field};

const V3: &str = "/_matrix/client/v3";

fn bodies(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("array: {list:#}"))
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| str_field(&e["content"], "body"))
        .collect()
}

#[test]
fn initial_sync_and_event_by_id() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = alice.create_room(&json!({
        "preset": "public_chat", "visibility": "public", "name": "Old school",
    }));
    bob.join(&room);
    for n in 1..=4 {
        alice.send_text(&room, &format!("m{n}"));
    }
    let private = alice.create_room(&json!({ "preset": "private_chat" }));
    alice.invite(&private, &format!("@bob:{}", env.server_name()));
    let secret = alice.send_text(&private, "secret");

    let snapshot = ok(bob.get(&format!("{V3}/initialSync?limit=2")), "initialSync");
    let end = str_field(&snapshot, "end");
    assert!(snapshot["presence"].is_array(), "{snapshot:#}");
    assert!(snapshot["account_data"].is_array(), "{snapshot:#}");
    let rooms = snapshot["rooms"].as_array().expect("rooms array");
    let joined = rooms
        .iter()
        .find(|r| r["room_id"] == room)
        .unwrap_or_else(|| panic!("joined room listed: {snapshot:#}"));
    assert_eq!(joined["membership"], "join");
    assert_eq!(joined["visibility"], "public");
    assert_eq!(bodies(&joined["messages"]["chunk"]), vec!["m3", "m4"]);
    assert!(joined["messages"]["end"].is_string());
    let state = joined["state"].as_array().expect("state array");
    assert!(
        state
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Old school"),
        "current state: {state:#?}"
    );
    assert!(state.iter().any(|e| e["type"] == "m.room.member"
        && e["state_key"] == format!("@bob:{}", env.server_name())
        && e["content"]["membership"] == "join"));
    let invited = rooms
        .iter()
        .find(|r| r["room_id"] == private)
        .unwrap_or_else(|| panic!("invite listed: {snapshot:#}"));
    assert_eq!(invited["membership"], "invite");
    assert_eq!(invited["invite"]["content"]["membership"], "invite");

    // The stream from initialSync's token: new events arrive through /events.
    let later = alice.send_text(&room, "m5");
    let stream = ok(
        bob.get(&format!("{V3}/events?from={}&timeout=5000", enc(&end))),
        "events",
    );
    assert_eq!(stream["start"], end.as_str());
    assert_eq!(bodies(&stream["chunk"]), vec!["m5"]);
    let next = str_field(&stream, "end");
    assert_ne!(next, end);
    // Nothing new: an empty chunk after the timeout.
    let idle = ok(
        bob.get(&format!("{V3}/events?from={}&timeout=100", enc(&next))),
        "idle events",
    );
    assert!(bodies(&idle["chunk"]).is_empty(), "{idle:#}");

    // /events/{eventId}: visible events only; the invite does not show the room's history.
    let event = ok(bob.get(&format!("{V3}/events/{}", enc(&later))), "event");
    assert_eq!(event["event_id"], later.as_str());
    assert_eq!(event["room_id"], room.as_str());
    assert_eq!(event["content"]["body"], "m5");
    assert_error(
        &bob.get(&format!("{V3}/events/{}", enc(&secret))),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &bob.get(&format!("{V3}/events/{}", enc("$nope:example.org"))),
        404,
        "M_NOT_FOUND",
    );

    // A /sync after initialSync with its token still works.
    let sync = ok(
        bob.get(&format!("{V3}/sync?since={}&timeout=0", enc(&next))),
        "sync after events",
    );
    assert!(sync["next_batch"].is_string());
}

#[test]
fn room_initial_sync_and_peeking_a_world_readable_room() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let open = alice.create_room(&json!({ "preset": "public_chat", "name": "Open" }));
    alice.put_state(
        &open,
        "m.room.history_visibility",
        "",
        &json!({ "history_visibility": "world_readable" }),
    );
    alice.send_text(&open, "hello world");
    let closed = alice.create_room(&json!({ "preset": "private_chat" }));
    alice.send_text(&closed, "members only");

    // Joined: alice's own view.
    let own = ok(
        alice.get(&format!("{V3}/rooms/{}/initialSync", enc(&open))),
        "room initialSync",
    );
    assert_eq!(own["room_id"], open.as_str());
    assert_eq!(own["membership"], "join");
    assert_eq!(own["visibility"], "private");
    assert!(bodies(&own["messages"]["chunk"]).contains(&"hello world".to_owned()));
    assert!(own["messages"]["end"].is_string() && own["messages"]["start"].is_string());

    // Bob never joined: he may peek into the world_readable room but not the other.
    let peek = ok(
        bob.get(&format!("{V3}/rooms/{}/initialSync", enc(&open))),
        "peek initialSync",
    );
    assert_eq!(peek["room_id"], open.as_str());
    assert!(bodies(&peek["messages"]["chunk"]).contains(&"hello world".to_owned()));
    assert!(
        peek["state"]
            .as_array()
            .is_some_and(|s| s.iter().any(|e| e["type"] == "m.room.name")),
        "{peek:#}"
    );
    assert!(peek.get("membership").is_none(), "{peek:#}");
    assert_error(
        &bob.get(&format!("{V3}/rooms/{}/initialSync", enc(&closed))),
        403,
        "M_FORBIDDEN",
    );

    // Peeking the stream: /events?room_id= returns the room's new events to a non-member.
    let end = str_field(&peek["messages"], "end");
    let waiter = {
        let bob = env.with_token(bob.access_token.as_deref().expect("bob's token"));
        let open = open.clone();
        let end = end.clone();
        thread::spawn(move || {
            bob.get(&format!(
                "{V3}/events?room_id={}&from={}&timeout=10000",
                enc(&open),
                enc(&end)
            ))
        })
    };
    alice.send_text(&open, "news");
    let stream = ok(waiter.join().expect("peek thread"), "peek events");
    assert_eq!(bodies(&stream["chunk"]), vec!["news"]);
    assert!(stream["end"].is_string());
    assert_error(
        &bob.get(&format!("{V3}/events?room_id={}&timeout=0", enc(&closed))),
        403,
        "M_FORBIDDEN",
    );
}
