//! A waiting `/sync` or sliding sync wakes for every kind of change it can show, and only then.
//!
//! The server wakes a long-poll only for a commit that concerns its user or one of its rooms
//! (see `store/wake.rs`). Each case here starts a long-poll with a 30 s timeout, first commits
//! something that concerns someone else (which must leave the poll asleep), then the change
//! under test: the poll must answer with it. A poll that missed its wake-up would answer at
//! its timeout with the empty response it computed before the change, and the case fails.

use std::thread;
use std::time::{Duration, Instant};

use tests::federation::{Federation, share_room};
use tests::{Client, TestEnv, Value, enc, json, section_events, str_field, timeline};

/// The long-poll's timeout: far longer than any wake-up takes.
const POLL_MS: u64 = 30_000;
/// How long the poll gets to start waiting before the changes are made.
const SETTLE: Duration = Duration::from_millis(400);

/// Long-polls `/sync` from `since` on another thread while `change` runs here; returns the
/// answer and how long it took.
fn poll_across(client: &Client, since: &str, change: impl FnOnce()) -> (Value, Duration) {
    let (poller, since) = (client.clone(), since.to_owned());
    let waiting = thread::spawn(move || {
        let started = Instant::now();
        let answer = poller.sync(Some(&since), POLL_MS, None);
        (answer, started.elapsed())
    });
    thread::sleep(SETTLE);
    change();
    waiting.join().expect("the polling thread")
}

/// Asserts that the poll answered before its timeout and that `found` holds of the answer.
fn assert_woke(what: &str, (answer, took): &(Value, Duration), found: impl Fn(&Value) -> bool) {
    assert!(
        found(answer),
        "{what}: the waiting /sync answered after {took:?} without it: {answer:#}"
    );
    assert!(
        *took < Duration::from_millis(POLL_MS / 2),
        "{what}: the waiting /sync answered only after {took:?}"
    );
}

fn next_batch(sync: &Value) -> String {
    str_field(sync, "next_batch")
}

fn ephemeral_types(sync: &Value, room: &str) -> Vec<String> {
    section_events(sync, "join", room, "ephemeral")
        .iter()
        .filter_map(|e| e["type"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_waiting_sync_wakes_for_each_kind_of_change_and_not_for_others() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let carol = env.register("carol");
    let shared = alice.create_room(&json!({ "preset": "public_chat", "name": "Shared" }));
    bob.join(&shared);
    // Carol's room: alice is not in it, so nothing there concerns her.
    let elsewhere = carol.create_room(&json!({ "preset": "public_chat", "name": "Elsewhere" }));
    let unrelated = || {
        carol.send_text(&elsewhere, "not for alice");
    };
    let mut since = next_batch(&alice.sync(None, 0, None));

    let answer = poll_across(&alice, &since, || {
        unrelated();
        bob.send_text(&shared, "hello alice");
    });
    assert_woke("a message in a room she is in", &answer, |s| {
        timeline(s, &shared)
            .iter()
            .any(|e| e["content"]["body"] == "hello alice")
    });
    since = next_batch(&answer.0);

    let mut invited_to = String::new();
    let answer = poll_across(&alice, &since, || {
        unrelated();
        invited_to = bob.create_room(&json!({ "preset": "private_chat" }));
        bob.invite(&invited_to, &alice.user_id);
    });
    assert_woke("an invite to a room she is not in", &answer, |s| {
        s["rooms"]["invite"].get(&invited_to).is_some()
    });
    since = next_batch(&answer.0);

    let answer = poll_across(&alice, &since, || {
        unrelated();
        bob.put_ok(
            "/_matrix/client/v3/sendToDevice/m.test/wake-1",
            &json!({ "messages": { &alice.user_id: { "*": { "n": 1 } } } }),
        );
    });
    assert_woke("a to-device message", &answer, |s| {
        s["to_device"]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["type"] == "m.test"))
    });
    since = next_batch(&answer.0);

    // Account data written from another of her devices.
    let other_device = env.login("alice");
    // That login is news itself (her device list): take it first.
    since = next_batch(&alice.sync(Some(&since), 0, None));
    let answer = poll_across(&alice, &since, || {
        unrelated();
        other_device.put_ok(
            &format!(
                "/_matrix/client/v3/user/{}/account_data/org.example.wake",
                enc(&alice.user_id)
            ),
            &json!({ "n": 1 }),
        );
    });
    assert_woke("account data", &answer, |s| {
        s["account_data"]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["type"] == "org.example.wake"))
    });
    since = next_batch(&answer.0);

    let event = bob.send_text(&shared, "something to read");
    since = next_batch(&alice.sync(Some(&since), 0, None));
    let answer = poll_across(&alice, &since, || {
        unrelated();
        bob.post_ok(
            &format!(
                "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
                enc(&shared),
                enc(&event)
            ),
            &json!({}),
        );
    });
    assert_woke("a receipt in a room she is in", &answer, |s| {
        ephemeral_types(s, &shared).iter().any(|t| t == "m.receipt")
    });
    since = next_batch(&answer.0);

    let answer = poll_across(&alice, &since, || {
        unrelated();
        bob.put_ok(
            &format!(
                "/_matrix/client/v3/rooms/{}/typing/{}",
                enc(&shared),
                enc(&bob.user_id)
            ),
            &json!({ "typing": true, "timeout": 10_000 }),
        );
    });
    assert_woke("typing in a room she is in", &answer, |s| {
        ephemeral_types(s, &shared).iter().any(|t| t == "m.typing")
    });
    since = next_batch(&answer.0);

    // A new login of someone she shares a room with changes their device list.
    let answer = poll_across(&alice, &since, || {
        unrelated();
        env.login("bob");
    });
    assert_woke("a room-mate's new device", &answer, |s| {
        s["device_lists"]["changed"]
            .as_array()
            .is_some_and(|users| users.iter().any(|u| *u == bob.user_id.as_str()))
    });
    since = next_batch(&answer.0);

    let answer = poll_across(&alice, &since, || {
        unrelated();
        bob.put_ok(
            &format!("/_matrix/client/v3/presence/{}/status", enc(&bob.user_id)),
            &json!({ "presence": "unavailable", "status_msg": "away for a bit" }),
        );
    });
    assert_woke("a room-mate's presence", &answer, |s| {
        s["presence"]["events"].as_array().is_some_and(|events| {
            events
                .iter()
                .any(|e| e["content"]["status_msg"] == "away for a bit")
        })
    });
    since = next_batch(&answer.0);

    let answer = poll_across(&alice, &since, || {
        unrelated();
        bob.membership(&shared, "leave", &json!({}));
    });
    assert_woke("a room-mate leaving", &answer, |s| {
        timeline(s, &shared).iter().any(|e| {
            e["type"] == "m.room.member"
                && e["state_key"] == bob.user_id.as_str()
                && e["content"]["membership"] == "leave"
        })
    });
}

#[test]
fn a_waiting_sliding_sync_wakes_for_its_rooms_and_not_for_others() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let carol = env.register("carol");
    let shared = alice.create_room(&json!({ "preset": "public_chat", "name": "Shared" }));
    bob.join(&shared);
    let elsewhere = carol.create_room(&json!({ "preset": "public_chat", "name": "Elsewhere" }));
    let path = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
    let body = json!({
        "lists": { "all": { "ranges": [[0, 19]], "timeline_limit": 1 } },
    });
    let first = alice.post_ok(&format!("{path}?timeout=0"), &body);
    let pos = str_field(&first, "pos");

    let poller = alice.clone();
    let (poll_body, poll_path) = (
        body.clone(),
        format!("{path}?pos={}&timeout={POLL_MS}", enc(&pos)),
    );
    let waiting = thread::spawn(move || {
        let started = Instant::now();
        let answer = poller.post_ok(&poll_path, &poll_body);
        (answer, started.elapsed())
    });
    thread::sleep(SETTLE);
    carol.send_text(&elsewhere, "not for alice");
    bob.send_text(&shared, "hello alice");
    let answer = waiting.join().expect("the polling thread");
    assert_woke("a message in a room of her list", &answer, |s| {
        s["rooms"][shared.as_str()]["timeline"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["content"]["body"] == "hello alice"))
    });
}

#[test]
fn a_waiting_sync_wakes_for_a_remote_message_and_a_remote_invite() {
    let fed = Federation::start(&["wake-a", "wake-b"]);
    let alice = fed[0].register("alice");
    let bob = fed[1].register("bob");
    let shared = share_room(&bob, &[&alice], &json!({ "preset": "private_chat" }));
    let since = next_batch(&alice.sync(None, 0, None));

    let answer = poll_across(&alice, &since, || {
        bob.send_text(&shared, "over the link");
    });
    assert_woke("a message from another unit", &answer, |s| {
        timeline(s, &shared)
            .iter()
            .any(|e| e["content"]["body"] == "over the link")
    });
    let since = next_batch(&answer.0);

    let mut invited_to = String::new();
    let answer = poll_across(&alice, &since, || {
        invited_to = bob.create_room(&json!({ "preset": "private_chat" }));
        bob.invite(&invited_to, &alice.user_id);
    });
    assert_woke("an invite from another unit", &answer, |s| {
        s["rooms"]["invite"].get(&invited_to).is_some()
    });
}
