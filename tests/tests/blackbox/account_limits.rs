//! Per-user bounds on what an account can make the server store: account data is capped per
//! item and per user (413 `M_TOO_LARGE`, see `service/account_data.rs` for why not
//! `M_RESOURCE_LIMIT_EXCEEDED`), and an invite to a local user who does not exist is 404
//! `M_NOT_FOUND` instead of an event nobody can act on.

use tests::{TestEnv, assert_error, enc, json, ok};

fn account_data_path(user_id: &str, kind: &str) -> String {
    format!(
        "/_matrix/client/v3/user/{}/account_data/{}",
        enc(user_id),
        enc(kind)
    )
}

#[test]
fn account_data_is_capped_per_item_and_per_user() {
    let env = TestEnv::with_config(
        "[registration]\nenabled = true\n\n[rate_limit]\nenabled = false\n\n\
         [limits]\naccount_data_max_bytes = 4096\naccount_data_quota_bytes = 16384\n",
    );
    let alice = env.register("alice");
    let bob = env.register("bob");
    let filler = |len: usize| json!({"data": "x".repeat(len)});

    // One item over the per-item cap.
    let big = alice.put(
        &account_data_path(&alice.user_id, "org.example.big"),
        &filler(5000),
    );
    assert_error(&big, 413, "M_TOO_LARGE");

    // Items of 3 KB each until the 16 KB quota refuses one.
    let mut stored = 0;
    let refused = loop {
        let reply = alice.put(
            &account_data_path(&alice.user_id, &format!("org.example.item{stored}")),
            &filler(3000),
        );
        if reply.0 != 200 {
            break reply;
        }
        stored += 1;
        assert!(stored < 10, "the quota never applied");
    };
    assert_eq!(stored, 5, "5 items of ~3 KB fit in 16 KB");
    assert_error(&refused, 413, "M_TOO_LARGE");

    // Replacing an item with one of the same size stays within the quota, and what was stored
    // is intact.
    ok(
        alice.put(
            &account_data_path(&alice.user_id, "org.example.item0"),
            &filler(3000),
        ),
        "replacing an item",
    );
    let item = alice.get_ok(&account_data_path(&alice.user_id, "org.example.item4"));
    assert_eq!(item["data"].as_str().map(str::len), Some(3000));
    let refused_kind = alice.get(&account_data_path(&alice.user_id, "org.example.item5"));
    assert_error(&refused_kind, 404, "M_NOT_FOUND");

    // Quotas are per user.
    ok(
        bob.put(
            &account_data_path(&bob.user_id, "org.example.item0"),
            &filler(3000),
        ),
        "another user's account data",
    );
}

#[test]
fn the_default_item_cap_refuses_900_kb() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let reply = alice.put(
        &account_data_path(&alice.user_id, "org.example.huge"),
        &json!({"data": "x".repeat(900 * 1024)}),
    );
    assert_error(&reply, 413, "M_TOO_LARGE");
}

#[test]
fn inviting_a_local_user_who_does_not_exist_is_not_found() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = alice.create_room(&json!({}));
    let invite = |user: &str| {
        alice.post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            &json!({"user_id": user}),
        )
    };
    let ghost = format!("@ghost:{}", env.server_name());
    assert_error(&invite(&ghost), 404, "M_NOT_FOUND");
    // No invite event was stored for the ghost.
    let members = alice.get_ok(&format!("/_matrix/client/v3/rooms/{}/members", enc(&room)));
    assert!(
        !members.to_string().contains(&ghost),
        "the ghost is in the member list: {members:#}"
    );
    ok(invite(&bob.user_id), "inviting a real user");
}
