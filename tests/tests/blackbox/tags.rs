//! Room tags (`/user/{userId}/rooms/{roomId}/tags`): set, list, delivered as `m.tag` room
//! account data in `/sync`, removed, and only by their owner.

use tests::{TestEnv, assert_error, enc, json, ok};

#[test]
fn tags_round_trip_through_sync() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = alice.create_room(&json!({}));
    let base = format!(
        "/_matrix/client/v3/user/{}/rooms/{}/tags",
        enc(&alice.user_id),
        enc(&room)
    );
    ok(
        alice.put(&format!("{base}/m.favourite"), &json!({ "order": 0.5 })),
        "favourite",
    );
    ok(
        alice.put(&format!("{base}/u.work"), &json!({})),
        "custom tag",
    );
    let tags = alice.get_ok(&base);
    assert_eq!(tags["tags"]["m.favourite"]["order"], 0.5, "{tags:#}");
    assert!(tags["tags"]["u.work"].is_object());

    let sync = alice.sync(None, 0, None);
    let data = &sync["rooms"]["join"][&room]["account_data"]["events"];
    assert!(
        data.as_array().is_some_and(|events| events
            .iter()
            .any(|e| e["type"] == "m.tag" && e["content"]["tags"]["u.work"].is_object())),
        "{sync:#}"
    );

    ok(alice.delete(&format!("{base}/u.work")), "remove");
    let tags = alice.get_ok(&base);
    assert!(tags["tags"].get("u.work").is_none(), "{tags:#}");
    assert_error(
        &alice.put(
            &format!("{base}/m.lowpriority"),
            &json!({ "order": "high" }),
        ),
        400,
        "M_BAD_JSON",
    );
    assert_error(&bob.get(&base), 403, "M_FORBIDDEN");
}
