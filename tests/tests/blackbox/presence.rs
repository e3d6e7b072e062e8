//! Presence: `PUT`/`GET /presence/{userId}/status`, presence in `/sync` for users who share a
//! room (and only them), `set_presence` on `/sync`, errors, and presence across two units.

use std::time::Duration;
use tests::federation::{DELIVERY, Federation, share_room};
use tests::{TestEnv, Value, assert_error, enc, json, ok, str_field};

const DEADLINE: Duration = Duration::from_secs(10);

fn presence_of(sync: &Value, user: &str) -> Option<Value> {
    sync["presence"]["events"]
        .as_array()?
        .iter()
        .rev()
        .find(|e| e["sender"] == user && e["type"] == "m.presence")
        .map(|e| e["content"].clone())
}

fn status_path(user: &str) -> String {
    format!("/_matrix/client/v3/presence/{}/status", enc(user))
}

#[test]
fn set_get_and_errors() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    // A local user who was never active is offline, not unknown.
    let never = alice.get_ok(&status_path(&bob.user_id));
    assert_eq!(never, json!({ "presence": "offline" }));

    ok(
        bob.put(
            &status_path(&bob.user_id),
            &json!({ "presence": "online", "status_msg": "On shift" }),
        ),
        "set presence",
    );
    let got = alice.get_ok(&status_path(&bob.user_id));
    assert_eq!(got["presence"], "online", "{got:#}");
    assert_eq!(got["status_msg"], "On shift");
    assert_eq!(got["currently_active"], true);
    assert!(
        got["last_active_ago"]
            .as_i64()
            .is_some_and(|ago| (0..60_000).contains(&ago))
    );

    ok(
        bob.put(
            &status_path(&bob.user_id),
            &json!({ "presence": "unavailable" }),
        ),
        "away",
    );
    let got = alice.get_ok(&status_path(&bob.user_id));
    assert_eq!(got["presence"], "unavailable");
    assert!(got.get("status_msg").is_none(), "message cleared: {got:#}");

    assert_error(
        &alice.put(&status_path(&bob.user_id), &json!({ "presence": "online" })),
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &bob.put(&status_path(&bob.user_id), &json!({ "presence": "asleep" })),
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &bob.put(&status_path(&bob.user_id), &json!({})),
        400,
        "M_BAD_JSON",
    );
}

#[test]
fn sync_shows_presence_of_room_members_only() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let carol = env.register("carol");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    bob.join(&room);

    // A sync with set_presence=offline leaves no trace.
    carol.sync_raw("set_presence=offline&timeout=0");
    let carol_status = alice.get_ok(&status_path(&carol.user_id));
    assert_eq!(
        carol_status,
        json!({ "presence": "offline" }),
        "no activity recorded"
    );

    let alice_since = str_field(&alice.sync(None, 0, None), "next_batch");
    let carol_since = str_field(&carol.sync(None, 0, None), "next_batch");
    ok(
        bob.put(
            &status_path(&bob.user_id),
            &json!({ "presence": "unavailable", "status_msg": "Lunch" }),
        ),
        "set",
    );
    let sync = alice.sync_until(Some(&alice_since), None, DEADLINE, |s| {
        presence_of(s, &bob.user_id).is_some_and(|p| p["presence"] == "unavailable")
    });
    assert_eq!(
        presence_of(&sync, &bob.user_id).expect("bob")["status_msg"],
        "Lunch"
    );
    let carol_sync = carol.sync(Some(&carol_since), 0, None);
    assert!(
        presence_of(&carol_sync, &bob.user_id).is_none(),
        "{carol_sync:#}"
    );

    // Syncing marks a user online; an initial sync of a room member shows it.
    bob.sync(None, 0, None);
    let initial = alice.sync(None, 0, None);
    let bob_presence = presence_of(&initial, &bob.user_id).expect("bob's presence");
    assert_eq!(bob_presence["presence"], "online", "{initial:#}");
    assert_eq!(
        bob_presence["status_msg"], "Lunch",
        "sync keeps the message"
    );
    // A presence filter can leave it out.
    let filtered = alice.sync(
        None,
        0,
        Some(&json!({ "presence": { "not_types": ["m.presence"] } })),
    );
    assert!(presence_of(&filtered, &bob.user_id).is_none());
}

#[test]
fn presence_crosses_units() {
    let fed = Federation::start(&["unit-a.test", "unit-b.test"]);
    let alice = fed[0].register("alice");
    let bob = fed[1].register("bob");
    share_room(&alice, &[&bob], &json!({ "preset": "private_chat" }));
    let since = str_field(&alice.sync(None, 0, None), "next_batch");
    ok(
        bob.put(
            &status_path(&bob.user_id),
            &json!({ "presence": "online", "status_msg": "In the field" }),
        ),
        "set on B",
    );
    let sync = alice.sync_until(Some(&since), None, DELIVERY, |s| {
        presence_of(s, &bob.user_id).is_some_and(|p| p["status_msg"] == "In the field")
    });
    assert_eq!(
        presence_of(&sync, &bob.user_id).expect("bob")["presence"],
        "online"
    );
    let got = alice.get_ok(&status_path(&bob.user_id));
    assert_eq!(got["status_msg"], "In the field");
}
