//! Knocking (`/knock`, the `knock` section of `/sync`, invite after a knock) and restricted
//! joins (`m.room.join_rules` `restricted`: members of an allowed room may join, others not).

use std::time::Duration;
use tests::{Client, TestEnv, assert_error, enc, json, ok, str_field};

const DEADLINE: Duration = Duration::from_secs(10);

fn member(client: &Client, room: &str, user: &str) -> tests::Value {
    client.get_ok(&Client::state_path(room, "m.room.member", user))
}

#[test]
fn knock_then_invite_then_join() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let carol = env.register("carol");
    let room = alice.create_room(&json!({
        "name": "Knock here",
        "initial_state": [{ "type": "m.room.join_rules", "state_key": "",
                            "content": { "join_rule": "knock" } }],
    }));
    let private = alice.create_room(&json!({ "preset": "private_chat" }));
    let bob_since = str_field(&bob.sync(None, 0, None), "next_batch");

    let knocked = ok(
        bob.post(
            &format!("/_matrix/client/v3/knock/{}", enc(&room)),
            &json!({ "reason": "let me in" }),
        ),
        "knock",
    );
    assert_eq!(knocked["room_id"], room.as_str());
    assert_eq!(member(&alice, &room, &bob.user_id)["membership"], "knock");
    assert_eq!(member(&alice, &room, &bob.user_id)["reason"], "let me in");

    let sync = bob.sync_until(Some(&bob_since), None, DEADLINE, |s| {
        s["rooms"]["knock"].get(&room).is_some()
    });
    let state = sync["rooms"]["knock"][&room]["knock_state"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        state
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Knock here"),
        "{sync:#}"
    );

    // Knocking where the rule is not knock is refused by the auth rules.
    assert_error(
        &carol.post(
            &format!("/_matrix/client/v3/knock/{}", enc(&private)),
            &json!({}),
        ),
        403,
        "M_FORBIDDEN",
    );
    // A knocker cannot just join.
    let (status, _) = bob.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
        &json!({}),
    );
    assert_eq!(status, 403);

    alice.invite(&room, &bob.user_id);
    assert_eq!(bob.join(&room), room);
    assert_eq!(member(&alice, &room, &bob.user_id)["membership"], "join");
}

#[test]
fn restricted_join_follows_membership_of_the_allowed_room() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let space = alice.create_room(&json!({ "preset": "private_chat", "name": "Team" }));
    let room = alice.create_room(&json!({
        "initial_state": [{ "type": "m.room.join_rules", "state_key": "",
                            "content": { "join_rule": "restricted",
                                         "allow": [{ "type": "m.room_membership", "room_id": space }] } }],
    }));
    let (status, body) = bob.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
        &json!({}),
    );
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body:#}"
    );

    alice.invite(&space, &bob.user_id);
    bob.join(&space);
    assert_eq!(bob.join(&room), room);
    let event = member(&alice, &room, &bob.user_id);
    assert_eq!(event["membership"], "join");
    assert_eq!(
        event["join_authorised_via_users_server"],
        alice.user_id.as_str(),
        "{event:#}"
    );
}
