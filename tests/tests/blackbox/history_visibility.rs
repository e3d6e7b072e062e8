//! History visibility (spec: client-server API, "Room History Visibility"): for each of
//! `shared`, `invited`, `joined` and `world_readable`, what a user who joins later sees of the
//! events before their join on every path that returns events (`/messages`, initial and
//! incremental `/sync`, `/context`, `/event` (404 `M_NOT_FOUND`), `/relations`, search); a
//! change of setting applying from its event on; `invited` counting from the invite; a member
//! who left seeing up to their leave; and over federation, a unit whose users may not see
//! earlier history never receiving its content through backfill.

use tests::federation::{DELIVERY, Federation, eventually, wait_for_invite};
use tests::{
    Client, TestEnv, Value, assert_error, bodies, enc, json, ok, section_events, str_field,
    timeline,
};

const SEARCH: &str = "/_matrix/client/v3/search";

/// A sync filter with a timeline long enough for every event of these tests.
fn long_timeline() -> Value {
    json!({ "room": { "timeline": { "limit": 100 } } })
}

/// Creates a public room (anyone may join) with the given history visibility.
fn room_with(alice: &Client, visibility: &str) -> String {
    alice.create_room(&json!({
        "preset": "public_chat",
        "initial_state": [{
            "type": "m.room.history_visibility",
            "state_key": "",
            "content": { "history_visibility": visibility },
        }],
    }))
}

fn set_visibility(alice: &Client, room: &str, visibility: &str) {
    alice.put_state(
        room,
        "m.room.history_visibility",
        "",
        &json!({ "history_visibility": visibility }),
    );
}

/// Message bodies of the whole room as `client` pages it backwards with `/messages`.
fn messages(client: &Client, room: &str) -> Vec<String> {
    let mut all = bodies(&client.all_messages(room, "b", None));
    all.reverse();
    all
}

/// Bodies of the room's timeline in an initial `/sync` with a long timeline.
fn initial_sync_bodies(client: &Client, room: &str) -> Vec<String> {
    let sync = client.sync(None, 0, Some(&long_timeline()));
    bodies(&timeline(&sync, room))
}

fn searched(client: &Client, term: &str) -> Vec<String> {
    let body = json!({ "search_categories": { "room_events": { "search_term": term } } });
    let reply = ok(client.post(SEARCH, &body), "search");
    reply["search_categories"]["room_events"]["results"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r["result"]["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

fn event_path(room: &str, event: &str) -> String {
    format!(
        "/_matrix/client/v3/rooms/{}/event/{}",
        enc(room),
        enc(event)
    )
}

fn context_path(room: &str, event: &str) -> String {
    format!(
        "/_matrix/client/v3/rooms/{}/context/{}?limit=20",
        enc(room),
        enc(event)
    )
}

fn relations_path(room: &str, event: &str) -> String {
    format!(
        "/_matrix/client/v1/rooms/{}/relations/{}",
        enc(room),
        enc(event)
    )
}

fn react(client: &Client, room: &str, target: &str, txn: &str) -> String {
    let content = json!({
        "m.relates_to": { "rel_type": "m.annotation", "event_id": target, "key": "👍" }
    });
    str_field(
        &ok(
            client.send_event(room, "m.reaction", txn, &content),
            "react",
        ),
        "event_id",
    )
}

/// What Bob, who joins after Alice wrote `earlier`, sees, per path.
struct Scene {
    env: TestEnv,
    alice: Client,
    bob: Client,
    room: String,
    earlier: String,
    reaction: String,
    since: String,
}

/// Alice's room with `visibility`; Bob syncs once (not yet in the room), then Alice writes
/// "earlier words" (and reacts to it), Bob joins and Alice writes "later words".
fn scene(visibility: &str) -> Scene {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = room_with(&alice, visibility);
    let since = str_field(&bob.sync(None, 0, None), "next_batch");
    let earlier = alice.send_text(&room, "earlier words");
    let reaction = react(&alice, &room, &earlier, "r1");
    bob.join(&room);
    alice.send_text(&room, "later words");
    Scene {
        env,
        alice,
        bob,
        room,
        earlier,
        reaction,
        since,
    }
}

#[test]
fn joined_history_hides_what_came_before_the_join_on_every_path() {
    let s = scene("joined");
    let (bob, room) = (&s.bob, s.room.as_str());
    assert_eq!(messages(bob, room), vec!["later words"], "/messages");
    assert_eq!(
        initial_sync_bodies(bob, room),
        vec!["later words"],
        "initial /sync"
    );
    let incremental = bob.sync(Some(&s.since), 0, Some(&long_timeline()));
    assert_eq!(
        bodies(&timeline(&incremental, room)),
        vec!["later words"],
        "incremental /sync: {incremental:#}"
    );
    assert!(
        !section_events(&incremental, "join", room, "timeline")
            .iter()
            .any(|e| e["event_id"] == s.reaction.as_str()),
        "incremental /sync shows no reaction from before the join"
    );
    assert_eq!(
        incremental["rooms"]["join"][room]["timeline"]["limited"],
        json!(false),
        "nothing visible was left out, so the timeline is not limited"
    );
    assert_error(&bob.get(&event_path(room, &s.earlier)), 404, "M_NOT_FOUND");
    assert_error(&bob.get(&event_path(room, &s.reaction)), 404, "M_NOT_FOUND");
    assert_error(
        &bob.get(&context_path(room, &s.earlier)),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &bob.get(&relations_path(room, &s.earlier)),
        404,
        "M_NOT_FOUND",
    );
    assert_eq!(searched(bob, "words"), vec!["later words"], "search");
    // Alice, there all along, sees everything.
    assert_eq!(
        messages(&s.alice, room),
        vec!["earlier words", "later words"]
    );
    drop(s.env);
}

#[test]
fn shared_history_shows_what_came_before_the_join() {
    let s = scene("shared");
    let (bob, room) = (&s.bob, s.room.as_str());
    let both = vec!["earlier words", "later words"];
    assert_eq!(messages(bob, room), both, "/messages");
    assert_eq!(initial_sync_bodies(bob, room), both, "initial /sync");
    let incremental = bob.sync(Some(&s.since), 0, Some(&long_timeline()));
    assert_eq!(
        bodies(&timeline(&incremental, room)),
        both,
        "incremental /sync"
    );
    let event = ok(bob.get(&event_path(room, &s.earlier)), "/event");
    assert_eq!(event["content"]["body"], "earlier words");
    ok(bob.get(&context_path(room, &s.earlier)), "/context");
    let relations = ok(bob.get(&relations_path(room, &s.earlier)), "/relations");
    assert_eq!(relations["chunk"][0]["event_id"], s.reaction.as_str());
    let mut found = searched(bob, "words");
    found.sort();
    assert_eq!(found, both, "search");
}

#[test]
fn context_leaves_out_the_neighbours_a_joiner_may_not_see() {
    let s = scene("joined");
    let later = s.alice.send_text(&s.room, "latest words");
    let context = ok(s.bob.get(&context_path(&s.room, &later)), "/context");
    let before: Vec<Value> = context["events_before"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(bodies(&before), vec!["later words"], "{context:#}");
    assert!(
        !before
            .iter()
            .any(|e| e["event_id"] == s.earlier.as_str() || e["event_id"] == s.reaction.as_str()),
        "{context:#}"
    );
}

#[test]
fn invited_history_counts_from_the_invite() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = room_with(&alice, "invited");
    alice.send_text(&room, "before the invite");
    alice.invite(&room, &bob.user_id);
    alice.send_text(&room, "after the invite");
    bob.join(&room);
    alice.send_text(&room, "after the join");
    let want = vec!["after the invite", "after the join"];
    assert_eq!(messages(&bob, &room), want, "/messages");
    assert_eq!(initial_sync_bodies(&bob, &room), want, "initial /sync");
    assert_eq!(searched(&bob, "before"), Vec::<String>::new(), "search");
}

#[test]
fn a_change_of_setting_applies_from_its_event_on() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = room_with(&alice, "shared");
    alice.send_text(&room, "while shared");
    set_visibility(&alice, &room, "joined");
    alice.send_text(&room, "while joined");
    bob.join(&room);
    alice.send_text(&room, "after the join");
    assert_eq!(
        messages(&bob, &room),
        vec!["while shared", "after the join"],
        "/messages"
    );
    // The change itself is visible: the setting before it allowed Bob to see it.
    let events = bob.all_messages(&room, "b", None);
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "m.room.history_visibility"
                && e["content"]["history_visibility"] == "joined"),
        "the change to joined is visible"
    );
    // And back: opening the history later does not open what was sent while it was closed.
    set_visibility(&alice, &room, "shared");
    alice.send_text(&room, "shared again");
    let carol = env.register("carol");
    carol.join(&room);
    assert_eq!(
        messages(&carol, &room),
        vec!["while shared", "shared again"],
        "/messages of a later joiner: what was sent while joined-only stays closed"
    );
}

#[test]
fn a_member_who_left_sees_from_their_join_to_their_leave() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = room_with(&alice, "joined");
    alice.send_text(&room, "before bob");
    bob.join(&room);
    alice.send_text(&room, "while bob is here");
    ok(bob.membership(&room, "leave", &json!({})), "leave");
    alice.send_text(&room, "after bob left");
    assert_eq!(
        messages(&bob, &room),
        vec!["while bob is here"],
        "/messages"
    );
    let sync = bob.sync(
        None,
        0,
        Some(&json!({ "room": { "include_leave": true, "timeline": { "limit": 100 } } })),
    );
    assert_eq!(
        bodies(&section_events(&sync, "leave", &room, "timeline")),
        vec!["while bob is here"],
        "left room in /sync: {sync:#}"
    );
    assert_eq!(searched(&bob, "bob"), vec!["while bob is here"], "search");
}

#[test]
fn world_readable_history_is_readable_without_joining() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let carol = env.register("carol");
    let room = room_with(&alice, "world_readable");
    let open = alice.send_text(&room, "open words");
    assert_eq!(messages(&carol, &room), vec!["open words"], "/messages");
    let event = ok(carol.get(&event_path(&room, &open)), "/event");
    assert_eq!(event["content"]["body"], "open words");
    // Closed again: what follows is for members only; what was sent while world-readable
    // stays readable (the setting at each event decides).
    set_visibility(&alice, &room, "joined");
    let closed = alice.send_text(&room, "closed words");
    assert_eq!(
        messages(&carol, &room),
        vec!["open words"],
        "/messages once closed"
    );
    assert_error(&carol.get(&event_path(&room, &closed)), 404, "M_NOT_FOUND");
    ok(
        carol.get(&event_path(&room, &open)),
        "/event of a world-readable event",
    );
    // A room that was never world-readable stays closed to non-members.
    let private = room_with(&alice, "shared");
    alice.send_text(&private, "members only");
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b", enc(&private));
    assert_error(&carol.get(&path), 403, "M_FORBIDDEN");
}

#[test]
fn event_of_a_room_never_joined_is_not_found() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let mallory = env.register("mallory");
    let room = alice.create_room(&json!({ "preset": "private_chat" }));
    let secret = alice.send_text(&room, "private words");
    assert_error(
        &mallory.get(&event_path(&room, &secret)),
        404,
        "M_NOT_FOUND",
    );
}

/// A room on unit A with `joined` history; B's user joins over federation after Alice wrote;
/// paging back on B fetches history from A by backfill, and A sends the earlier events only
/// redacted: neither Bob nor B's database ever holds their content. With `shared` history the
/// same steps bring the content (so the backfill itself works).
#[test]
fn backfill_sends_no_content_a_unit_may_not_see() {
    let fed = Federation::start(&["unit-a.test", "unit-b.test"]);
    let alice = fed[0].register("alice");
    let bob = fed[1].register("bob");
    for (visibility, word) in [("joined", "hiddenword"), ("shared", "sharedword")] {
        let room = alice.create_room(&json!({
            "preset": "private_chat",
            "initial_state": [{
                "type": "m.room.history_visibility",
                "state_key": "",
                "content": { "history_visibility": visibility },
            }],
        }));
        for n in 0..3 {
            alice.send_text(&room, &format!("{word} {n}"));
        }
        alice.invite(&room, &bob.user_id);
        wait_for_invite(&bob, &room, DELIVERY);
        bob.join(&room);
        alice.send_text(&room, &format!("after {visibility}"));
        eventually("the message after the join to reach B", DELIVERY, || {
            let seen = messages(&bob, &room);
            if seen.contains(&format!("after {visibility}")) {
                Ok(seen)
            } else {
                Err(format!("{seen:?}"))
            }
        });
        let seen = messages(&bob, &room);
        let held: i64 = fed[1]
            .db()
            .query_row(
                "SELECT count(*) FROM events WHERE room_id = ?1 AND json LIKE ?2",
                rusqlite::params![room, format!("%{word}%")],
                |r| r.get(0),
            )
            .expect("count events");
        if visibility == "joined" {
            assert!(
                !seen.iter().any(|b| b.contains(word)),
                "Bob sees nothing from before his join: {seen:?}"
            );
            assert_eq!(held, 0, "B's database holds none of the hidden content");
        } else {
            let want: Vec<String> = (0..3).map(|n| format!("{word} {n}")).collect();
            assert!(
                want.iter().all(|w| seen.contains(w)),
                "shared history reaches Bob through backfill: {seen:?}"
            );
            assert!(held >= 3, "B holds the shared history");
        }
    }
}
