//! `/sync`: initial and incremental syncs, long-polling (woken by another client, and timing
//! out empty), `full_state`, filters (timeline limit with `limited`/`prev_batch` feeding
//! `/messages`, lazy-loaded members, event types, senders, rooms, stored filters), and the
//! `invite` and `leave` sections.

use std::thread;
use std::time::{Duration, Instant};
use tests::{
    Client, TestEnv, Value, bodies, enc, event_ids, json, ok, section_events, str_field, timeline,
};

const DEADLINE: Duration = Duration::from_secs(10);

fn next_batch(sync: &Value) -> String {
    str_field(sync, "next_batch")
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| event["type"].as_str().map(str::to_owned))
        .collect()
}

/// `(type, state_key)` of the room's state and timeline events in a sync response.
fn state_keys(sync: &Value, room: &str) -> Vec<(String, String)> {
    let mut all = section_events(sync, "join", room, "state");
    all.extend(timeline(sync, room));
    all.iter()
        .filter_map(|event| {
            Some((
                event["type"].as_str()?.to_owned(),
                event["state_key"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

fn joined_room_ids(sync: &Value) -> Vec<String> {
    sync["rooms"]["join"]
        .as_object()
        .map(|rooms| rooms.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn initial_sync_has_state_and_timeline() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({ "name": "Base" }));
    let hello = alice.send_text(&room, "hello");

    let sync = alice.sync(None, 0, None);
    next_batch(&sync);
    let keys = state_keys(&sync, &room);
    for wanted in ["m.room.create", "m.room.name", "m.room.power_levels"] {
        assert!(
            keys.contains(&(wanted.to_owned(), String::new())),
            "{wanted} in the initial sync: {sync:#}"
        );
    }
    assert!(keys.contains(&("m.room.member".to_owned(), alice.user_id.clone())));
    let events = timeline(&sync, &room);
    assert_eq!(
        event_ids(&events).last(),
        Some(&hello),
        "newest event last: {sync:#}"
    );
}

#[test]
fn incremental_sync_returns_only_new_events_and_is_repeatable() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({}));
    alice.send_text(&room, "old");
    let since = next_batch(&alice.sync(None, 0, None));

    let new = alice.send_text(&room, "new");
    alice.put_state(&room, "m.room.topic", "", &json!({ "topic": "t" }));
    let sync = alice.sync(Some(&since), 0, None);
    let events = timeline(&sync, &room);
    assert_eq!(bodies(&events), vec!["new"]);
    assert_eq!(event_ids(&events).first(), Some(&new));
    assert_eq!(types(&events), vec!["m.room.message", "m.room.topic"]);
    assert_ne!(sync["rooms"]["join"][&room]["timeline"]["limited"], true);

    let again = alice.sync(Some(&since), 0, None);
    assert_eq!(
        event_ids(&timeline(&again, &room)),
        event_ids(&events),
        "same since, same answer"
    );

    let quiet = alice.sync(Some(&next_batch(&sync)), 0, None);
    assert!(timeline(&quiet, &room).is_empty(), "nothing new: {quiet:#}");
}

#[test]
fn long_poll_is_woken_by_another_client() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    bob.join(&room);
    let since = next_batch(&alice.sync(None, 0, None));

    // The long-poll gets its own connection so the test can see it arrive before sending.
    let addr = env.addr();
    let baseline = tests::established_connections(addr.port());
    let head = format!(
        "GET /_matrix/client/v3/sync?timeout=30000&since={} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}",
        enc(&since),
        alice.access_token.as_deref().expect("token")
    );
    let poller = thread::spawn(move || {
        let start = Instant::now();
        let reply = tests::raw_http(addr, &head, b"").expect("long-poll request");
        (start.elapsed(), reply)
    });
    tests::poll_until("the long-poll to connect", DEADLINE, || {
        (tests::established_connections(addr.port()) > baseline).then_some(())
    });
    let sent = bob.send_text(&room, "wake up");
    let (elapsed, reply) = poller.join().expect("poller thread");
    assert_eq!(reply.status, 200, "{reply:?}");
    let sync = reply.json();
    assert!(
        elapsed < Duration::from_secs(15),
        "long-poll not woken: took {elapsed:?}"
    );
    assert!(
        event_ids(&timeline(&sync, &room)).contains(&sent),
        "{sync:#}"
    );
}

#[test]
fn long_poll_times_out_empty() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({}));
    let since = next_batch(&alice.sync(None, 0, None));

    let start = Instant::now();
    let sync = alice.sync(Some(&since), 700, None);
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(600),
        "returned early after {elapsed:?}: {sync:#}"
    );
    assert!(elapsed < Duration::from_secs(10), "overslept: {elapsed:?}");
    assert!(timeline(&sync, &room).is_empty(), "{sync:#}");
    // The returned token is usable and still sees later events.
    let later = alice.send_text(&room, "later");
    let next = alice.sync(Some(&next_batch(&sync)), 0, None);
    assert_eq!(event_ids(&timeline(&next, &room)), vec![later]);
}

#[test]
fn full_state_returns_all_state_immediately() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({ "name": "Full" }));
    let since = next_batch(&alice.sync(None, 0, None));

    let start = Instant::now();
    let sync = alice.sync_raw(&format!(
        "since={}&full_state=true&timeout=30000",
        enc(&since)
    ));
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "full_state ignores timeout"
    );
    let keys = state_keys(&sync, &room);
    for wanted in [
        "m.room.create",
        "m.room.name",
        "m.room.power_levels",
        "m.room.join_rules",
    ] {
        assert!(
            keys.contains(&(wanted.to_owned(), String::new())),
            "{wanted}: {sync:#}"
        );
    }
    assert!(keys.contains(&("m.room.member".to_owned(), alice.user_id.clone())));
    assert!(timeline(&sync, &room).is_empty(), "no new events: {sync:#}");
}

#[test]
fn timeline_limit_sets_limited_and_a_usable_prev_batch() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({}));
    for i in 0..10 {
        alice.send_text(&room, &format!("m{i}"));
    }
    let filter = json!({ "room": { "timeline": { "limit": 3 } } });
    let previous = |sync: &Value, limit: u32| -> Vec<String> {
        let section = &sync["rooms"]["join"][&room]["timeline"];
        assert_eq!(section["limited"], true, "{sync:#}");
        let prev_batch = str_field(section, "prev_batch");
        let page = ok(
            alice.get(&format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit={limit}&from={}",
                enc(&room),
                enc(&prev_batch)
            )),
            "messages from prev_batch",
        );
        bodies(page["chunk"].as_array().expect("chunk"))
    };

    let initial = alice.sync(None, 0, Some(&filter));
    assert_eq!(bodies(&timeline(&initial, &room)), vec!["m7", "m8", "m9"]);
    assert_eq!(previous(&initial, 3), vec!["m6", "m5", "m4"]);

    for i in 0..5 {
        alice.send_text(&room, &format!("n{i}"));
    }
    let incremental = alice.sync(Some(&next_batch(&initial)), 0, Some(&filter));
    assert_eq!(
        bodies(&timeline(&incremental, &room)),
        vec!["n2", "n3", "n4"]
    );
    assert_eq!(previous(&incremental, 2), vec!["n1", "n0"]);

    // The same filter stored server-side behaves identically.
    let filter_path = format!("/_matrix/client/v3/user/{}/filter", enc(&alice.user_id));
    let filter_id = str_field(
        &ok(alice.post(&filter_path, &filter), "store filter"),
        "filter_id",
    );
    let stored = ok(
        alice.get(&format!("{filter_path}/{}", enc(&filter_id))),
        "get filter",
    );
    assert_eq!(stored["room"]["timeline"]["limit"], 3, "{stored:#}");
    let by_id = alice.sync_raw(&format!("timeout=0&filter={}", enc(&filter_id)));
    assert_eq!(bodies(&timeline(&by_id, &room)), vec!["n2", "n3", "n4"]);

    let unknown = alice.get(&format!("{filter_path}/99999999"));
    tests::assert_error(&unknown, 404, "M_NOT_FOUND");
}

#[test]
fn lazy_loading_sends_only_the_senders_members() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let carol = env.register("carol");
    let dave = env.register("dave");
    // A named room: an unnamed one has heroes, whose member events lazy loading must send.
    let room = alice.create_room(&json!({ "preset": "public_chat", "name": "Lazy" }));
    for member in [&bob, &carol, &dave] {
        member.join(&room);
    }
    bob.send_text(&room, "one");
    bob.send_text(&room, "two");

    let members_in = |sync: &Value| -> Vec<String> {
        let mut members: Vec<String> = state_keys(sync, &room)
            .into_iter()
            .filter(|(t, _)| t == "m.room.member")
            .map(|(_, key)| key)
            .collect();
        members.sort();
        members.dedup();
        members
    };

    let eager = alice.sync(
        None,
        0,
        Some(&json!({ "room": { "timeline": { "limit": 2 } } })),
    );
    assert_eq!(
        members_in(&eager).len(),
        4,
        "without lazy loading all members: {eager:#}"
    );

    let lazy = alice.sync(
        None,
        0,
        Some(&json!({
            "room": {
                "timeline": { "limit": 2 },
                "state": { "lazy_load_members": true },
            }
        })),
    );
    assert_eq!(bodies(&timeline(&lazy, &room)), vec!["one", "two"]);
    let members = members_in(&lazy);
    assert!(
        members.contains(&bob.user_id),
        "the sender's membership: {lazy:#}"
    );
    for absent in [&carol.user_id, &dave.user_id] {
        assert!(
            !members.contains(absent),
            "{absent} sent nothing: {members:?}"
        );
    }
    let keys = state_keys(&lazy, &room);
    assert!(
        keys.contains(&("m.room.create".to_owned(), String::new())),
        "other state kept"
    );
}

#[test]
fn type_and_sender_filters() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    bob.join(&room);
    alice.put_state(&room, "m.room.topic", "", &json!({ "topic": "filters" }));
    alice.send_text(&room, "from alice");
    bob.send_text(&room, "from bob");
    alice.send_event(&room, "org.example.ping", "p1", &json!({}));

    let timeline_with = |timeline_filter: Value| -> Vec<Value> {
        let filter = json!({ "room": { "timeline": timeline_filter } });
        timeline(&alice.sync(None, 0, Some(&filter)), &room)
    };

    let only_messages = timeline_with(json!({ "types": ["m.room.message"] }));
    assert_eq!(
        types(&only_messages),
        vec!["m.room.message", "m.room.message"]
    );

    let no_messages = timeline_with(json!({ "not_types": ["m.room.message"] }));
    let no_message_types = types(&no_messages);
    assert!(
        !no_message_types.contains(&"m.room.message".to_owned()),
        "{no_message_types:?}"
    );
    assert!(
        no_message_types.contains(&"m.room.topic".to_owned()),
        "{no_message_types:?}"
    );
    assert!(
        no_message_types.contains(&"org.example.ping".to_owned()),
        "{no_message_types:?}"
    );

    let wildcard = timeline_with(json!({ "types": ["org.example.*"] }));
    assert_eq!(types(&wildcard), vec!["org.example.ping"]);

    let not_bob =
        timeline_with(json!({ "not_senders": [bob.user_id], "types": ["m.room.message"] }));
    assert_eq!(bodies(&not_bob), vec!["from alice"]);
    let only_bob = timeline_with(json!({ "senders": [bob.user_id] }));
    assert!(
        only_bob
            .iter()
            .all(|event| event["sender"] == bob.user_id.as_str())
    );
    assert!(bodies(&only_bob).contains(&"from bob".to_owned()));
}

#[test]
fn room_filters_select_rooms() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let first = alice.create_room(&json!({}));
    let second = alice.create_room(&json!({}));

    let only_first = alice.sync(None, 0, Some(&json!({ "room": { "rooms": [first] } })));
    assert_eq!(joined_room_ids(&only_first), vec![first.clone()]);
    let not_first = alice.sync(None, 0, Some(&json!({ "room": { "not_rooms": [first] } })));
    assert_eq!(joined_room_ids(&not_first), vec![second.clone()]);
    let both = joined_room_ids(&alice.sync(None, 0, None));
    assert!(both.contains(&first) && both.contains(&second));
}

#[test]
fn invites_appear_in_the_invite_section() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let since = next_batch(&bob.sync(None, 0, None));
    let room = alice.create_room(&json!({ "preset": "private_chat", "name": "Invite me" }));
    alice.invite(&room, &bob.user_id);

    let sync = bob.sync_until(Some(&since), None, DEADLINE, |sync| {
        sync["rooms"]["invite"].get(&room).is_some()
    });
    let invite_state = section_events(&sync, "invite", &room, "invite_state");
    let own = invite_state
        .iter()
        .find(|event| {
            event["type"] == "m.room.member" && event["state_key"] == bob.user_id.as_str()
        })
        .unwrap_or_else(|| panic!("bob's invite in invite_state: {sync:#}"));
    assert_eq!(own["content"]["membership"], "invite");
    assert!(
        invite_state
            .iter()
            .any(|event| event["type"] == "m.room.name" && event["content"]["name"] == "Invite me"),
        "stripped room name: {sync:#}"
    );
    assert!(!joined_room_ids(&sync).contains(&room));

    let initial = bob.sync(None, 0, None);
    assert!(
        initial["rooms"]["invite"].get(&room).is_some(),
        "pending invite in initial sync"
    );

    bob.join(&room);
    let joined = bob.sync(Some(&next_batch(&sync)), 0, None);
    assert!(joined_room_ids(&joined).contains(&room), "{joined:#}");
    assert!(joined["rooms"]["invite"].get(&room).is_none(), "{joined:#}");
}

#[test]
fn left_rooms_appear_in_the_leave_section() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    bob.join(&room);
    let since = next_batch(&bob.sync(None, 0, None));

    ok(
        alice.membership(
            &room,
            "kick",
            &json!({ "user_id": bob.user_id, "reason": "bye" }),
        ),
        "kick",
    );
    let sync = bob.sync(Some(&since), 0, None);
    assert!(!joined_room_ids(&sync).contains(&room), "{sync:#}");
    let left = section_events(&sync, "leave", &room, "timeline");
    let kick = left
        .iter()
        .find(|event| {
            event["type"] == "m.room.member" && event["state_key"] == bob.user_id.as_str()
        })
        .unwrap_or_else(|| panic!("the kick in the leave section: {sync:#}"));
    assert_eq!(kick["content"]["membership"], "leave");

    // Messages after leaving are not delivered to the leaver.
    alice.send_text(&room, "after bob");
    let after = bob.sync(Some(&next_batch(&sync)), 0, None);
    assert!(
        !bodies(&section_events(&after, "leave", &room, "timeline"))
            .contains(&"after bob".to_owned()),
        "{after:#}"
    );

    let initial = bob.sync(None, 0, None);
    assert!(
        initial["rooms"]["leave"].get(&room).is_none(),
        "left rooms need include_leave"
    );
    let with_leave = bob.sync(None, 0, Some(&json!({ "room": { "include_leave": true } })));
    assert!(
        with_leave["rooms"]["leave"].get(&room).is_some(),
        "{with_leave:#}"
    );
}

#[test]
fn sync_rejects_unknown_tokens() {
    let env = TestEnv::dev();
    let stranger: Client = env.with_token("not-a-token");
    let reply = stranger.get("/_matrix/client/v3/sync?timeout=0");
    tests::assert_error(&reply, 401, "M_UNKNOWN_TOKEN");
}
