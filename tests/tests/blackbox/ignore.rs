//! `m.ignored_user_list`: an ignored user's messages leave `/sync` and `/messages`, and their
//! invites are not shown.

use tests::{TestEnv, bodies, enc, json, timeline};

#[test]
fn ignored_users_vanish_from_timelines_and_invites() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let carol = env.register("carol");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    bob.join(&room);
    carol.join(&room);
    bob.send_text(&room, "from bob");
    carol.send_text(&room, "from carol");

    alice.put_ok(
        &format!(
            "/_matrix/client/v3/user/{}/account_data/m.ignored_user_list",
            enc(&alice.user_id)
        ),
        &json!({ "ignored_users": { &bob.user_id: {} } }),
    );
    let sync = alice.sync(None, 0, None);
    let seen = bodies(&timeline(&sync, &room));
    assert!(seen.contains(&"from carol".to_owned()), "{seen:?}");
    assert!(!seen.contains(&"from bob".to_owned()), "{seen:?}");
    let messages = alice.all_messages(&room, "b", None);
    assert!(
        messages.iter().all(|e| e["sender"] != bob.user_id.as_str()),
        "{messages:#?}"
    );

    let private = bob.create_room(&json!({ "preset": "private_chat" }));
    bob.invite(&private, &alice.user_id);
    let sync = alice.sync(None, 0, None);
    assert!(sync["rooms"]["invite"].get(&private).is_none(), "{sync:#}");
}
