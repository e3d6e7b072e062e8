//! Spaces: `/hierarchy` walks `m.space.child` breadth first, shows only rooms the user may
//! see, honours `suggested_only`, `max_depth` and pagination.

use tests::{Client, TestEnv, assert_error, enc, json, str_field};

fn hierarchy(client: &Client, room: &str, query: &str) -> tests::Value {
    client.get_ok(&format!(
        "/_matrix/client/v1/rooms/{}/hierarchy?{query}",
        enc(room)
    ))
}

fn ids(body: &tests::Value) -> Vec<String> {
    body["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| str_field(r, "room_id"))
        .collect()
}

#[test]
fn hierarchy_walks_children_it_may_show() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let space = alice.create_room(&json!({
        "preset": "public_chat", "name": "Team",
        "creation_content": { "type": "m.space" },
    }));
    let public = alice.create_room(&json!({ "preset": "public_chat", "name": "Lobby" }));
    let private = alice.create_room(&json!({ "preset": "private_chat", "name": "Secret" }));
    let sub = alice.create_room(
        &json!({ "preset": "public_chat", "creation_content": { "type": "m.space" } }),
    );
    let deep = alice.create_room(&json!({ "preset": "public_chat", "name": "Deep" }));
    let via = json!({ "via": ["outpost.test"] });
    alice.put_state(
        &space,
        "m.space.child",
        &public,
        &json!({ "via": ["outpost.test"], "suggested": true }),
    );
    alice.put_state(&space, "m.space.child", &private, &via);
    alice.put_state(&space, "m.space.child", &sub, &via);
    alice.put_state(&sub, "m.space.child", &deep, &via);
    // A removed child (no via) is not a child.
    let gone = alice.create_room(&json!({ "preset": "public_chat" }));
    alice.put_state(&space, "m.space.child", &gone, &json!({}));

    let all = hierarchy(&alice, &space, "");
    let mut got = ids(&all);
    got.sort();
    let mut want = vec![
        space.clone(),
        public.clone(),
        private.clone(),
        sub.clone(),
        deep.clone(),
    ];
    want.sort();
    assert_eq!(got, want, "{all:#}");
    assert_eq!(all["rooms"][0]["room_id"], space.as_str(), "root first");
    assert_eq!(all["rooms"][0]["room_type"], "m.space");
    assert_eq!(
        all["rooms"][0]["children_state"].as_array().map(Vec::len),
        Some(3)
    );

    // bob sees the public rooms, not the private one.
    let seen = ids(&hierarchy(&bob, &space, ""));
    assert!(
        seen.contains(&public) && !seen.contains(&private),
        "{seen:?}"
    );

    assert_eq!(
        ids(&hierarchy(&alice, &space, "max_depth=0")),
        vec![space.clone()]
    );
    let suggested = hierarchy(&alice, &space, "suggested_only=true");
    assert_eq!(ids(&suggested), vec![space.clone(), public.clone()]);

    // Pages of two.
    let first = hierarchy(&alice, &space, "limit=2");
    assert_eq!(ids(&first).len(), 2);
    let next = str_field(&first, "next_batch");
    let second = hierarchy(&alice, &space, &format!("limit=2&from={next}"));
    assert_eq!(ids(&second).len(), 2);
    assert!(ids(&second).iter().all(|r| !ids(&first).contains(r)));

    assert_error(
        &bob.get(&format!(
            "/_matrix/client/v1/rooms/{}/hierarchy",
            enc(&private)
        )),
        403,
        "M_FORBIDDEN",
    );
}
