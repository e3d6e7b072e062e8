//! Event relationships: `/relations` (all children, by relation type, by relation and event
//! type; both directions; pagination; `recurse`; redacted children dropping out; 404 for
//! unknown parents and for users who cannot see the room) and `/threads` (roots ordered by
//! their latest reply, the bundled `m.thread` aggregation, `include=participated`, pagination,
//! errors).

use tests::{Client, TestEnv, Value, assert_error, enc, json, ok, str_field};

fn relations_path(room: &str, parent: &str, rest: &str) -> String {
    format!(
        "/_matrix/client/v1/rooms/{}/relations/{}{rest}",
        enc(room),
        enc(parent)
    )
}

fn threads_path(room: &str, query: &str) -> String {
    format!("/_matrix/client/v1/rooms/{}/threads{query}", enc(room))
}

fn send(client: &Client, room: &str, event_type: &str, txn: &str, content: Value) -> String {
    str_field(
        &ok(client.send_event(room, event_type, txn, &content), "send"),
        "event_id",
    )
}

fn reply_in_thread(client: &Client, room: &str, root: &str, txn: &str, body: &str) -> String {
    send(
        client,
        room,
        "m.room.message",
        txn,
        json!({
            "msgtype": "m.text",
            "body": body,
            "m.relates_to": { "rel_type": "m.thread", "event_id": root },
        }),
    )
}

fn react(client: &Client, room: &str, target: &str, txn: &str, key: &str) -> String {
    send(
        client,
        room,
        "m.reaction",
        txn,
        json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": target, "key": key } }),
    )
}

fn ids(body: &Value) -> Vec<String> {
    body["chunk"]
        .as_array()
        .unwrap_or_else(|| panic!("chunk is an array: {body:#}"))
        .iter()
        .map(|e| str_field(e, "event_id"))
        .collect()
}

#[test]
fn relations_by_type_direction_and_pages() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    bob.join(&room);
    let root = alice.send_text(&room, "root");
    let t1 = reply_in_thread(&bob, &room, &root, "t1", "one");
    let r1 = react(&alice, &room, &root, "r1", "👍");
    let t2 = reply_in_thread(&alice, &room, &root, "t2", "two");
    let r2 = react(&bob, &room, &root, "r2", "🎉");
    let t3 = reply_in_thread(&bob, &room, &root, "t3", "three");
    let edit = send(
        &alice,
        &room,
        "m.room.message",
        "e1",
        json!({
            "msgtype": "m.text", "body": "* root!",
            "m.new_content": { "msgtype": "m.text", "body": "root!" },
            "m.relates_to": { "rel_type": "m.replace", "event_id": root },
        }),
    );
    alice.send_text(&room, "unrelated");

    let all = ok(
        alice.get(&relations_path(&room, &root, "?limit=10")),
        "all relations",
    );
    assert_eq!(
        ids(&all),
        vec![
            edit.clone(),
            t3.clone(),
            r2.clone(),
            t2.clone(),
            r1.clone(),
            t1.clone()
        ]
    );
    assert!(all.get("next_batch").is_none(), "{all:#}");
    assert!(all.get("recursion_depth").is_none());

    let threads = ok(
        alice.get(&relations_path(&room, &root, "/m.thread")),
        "thread relations",
    );
    assert_eq!(ids(&threads), vec![t3.clone(), t2.clone(), t1.clone()]);
    let reactions = ok(
        alice.get(&relations_path(&room, &root, "/m.annotation/m.reaction")),
        "reactions",
    );
    assert_eq!(ids(&reactions), vec![r2.clone(), r1.clone()]);
    let none = ok(
        alice.get(&relations_path(
            &room,
            &root,
            "/m.annotation/m.room.message",
        )),
        "no such children",
    );
    assert!(ids(&none).is_empty());
    let forwards = ok(
        alice.get(&relations_path(&room, &root, "/m.thread?dir=f")),
        "forwards",
    );
    assert_eq!(ids(&forwards), vec![t1.clone(), t2.clone(), t3.clone()]);

    // Pages of two, backwards then forwards, each following next_batch to the end.
    for (dir, expected) in [
        (
            "b",
            vec![
                edit.clone(),
                t3.clone(),
                r2.clone(),
                t2.clone(),
                r1.clone(),
                t1.clone(),
            ],
        ),
        (
            "f",
            vec![
                t1.clone(),
                r1.clone(),
                t2.clone(),
                r2.clone(),
                t3.clone(),
                edit.clone(),
            ],
        ),
    ] {
        let mut seen = Vec::new();
        let mut from: Option<String> = None;
        for _ in 0..10 {
            let query = match &from {
                Some(token) => format!("?limit=2&dir={dir}&from={}", enc(token)),
                None => format!("?limit=2&dir={dir}"),
            };
            let page = ok(alice.get(&relations_path(&room, &root, &query)), "page");
            seen.extend(ids(&page));
            match page["next_batch"].as_str() {
                Some(next) => from = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen, expected, "dir={dir}");
    }

    // `to` stops the page.
    let first = ok(
        alice.get(&relations_path(&room, &root, "/m.thread?limit=1")),
        "first",
    );
    let to = str_field(&first, "next_batch");
    let bounded = ok(
        alice.get(&relations_path(&room, &root, "?limit=10&dir=f")),
        "forward",
    );
    assert_eq!(ids(&bounded).len(), 6);
    let up_to = ok(
        alice.get(&relations_path(
            &room,
            &root,
            &format!("/m.thread?dir=f&to={}", enc(&to)),
        )),
        "forwards up to a token",
    );
    assert_eq!(ids(&up_to), vec![t1.clone(), t2.clone()]);

    // Errors: unknown parent, bad direction, bad token, outsiders.
    assert_error(
        &alice.get(&relations_path(&room, "$nope:outpost.test", "")),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &alice.get(&relations_path(&room, &root, "?dir=x")),
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &alice.get(&relations_path(&room, &root, "?from=zzz")),
        400,
        "M_INVALID_PARAM",
    );
    let carol = env.register("carol");
    assert_error(
        &carol.get(&relations_path(&room, &root, "")),
        404,
        "M_NOT_FOUND",
    );
}

#[test]
fn redacted_children_leave_and_recursion_finds_grandchildren() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({}));
    let root = alice.send_text(&room, "root");
    let reply = reply_in_thread(&alice, &room, &root, "t1", "reply");
    let on_reply = react(&alice, &room, &reply, "r1", "👀");
    let on_root = react(&alice, &room, &root, "r2", "✅");

    let direct = ok(alice.get(&relations_path(&room, &root, "")), "direct");
    assert_eq!(ids(&direct), vec![on_root.clone(), reply.clone()]);
    let deep = ok(
        alice.get(&relations_path(&room, &root, "?recurse=true")),
        "recursive",
    );
    assert_eq!(
        ids(&deep),
        vec![on_root.clone(), on_reply.clone(), reply.clone()]
    );
    assert_eq!(deep["recursion_depth"], 3);
    let flat = ok(
        alice.get(&relations_path(&room, &root, "?recurse=false")),
        "recurse=false",
    );
    assert_eq!(flat["recursion_depth"], 1);
    assert_eq!(ids(&flat), ids(&direct));

    ok(
        alice.put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/x1",
                enc(&room),
                enc(&on_root)
            ),
            &json!({}),
        ),
        "redact",
    );
    let after = ok(alice.get(&relations_path(&room, &root, "")), "after");
    assert_eq!(ids(&after), vec![reply]);
}

#[test]
fn threads_list_roots_with_their_aggregation() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    bob.join(&room);
    let older = alice.send_text(&room, "older thread");
    let newer = bob.send_text(&room, "newer thread");
    reply_in_thread(&alice, &room, &older, "a1", "a reply");
    reply_in_thread(&alice, &room, &newer, "b1", "b reply");
    let latest = reply_in_thread(&alice, &room, &older, "a2", "latest reply");

    let list = ok(alice.get(&threads_path(&room, "")), "threads");
    assert_eq!(
        ids(&list),
        vec![older.clone(), newer.clone()],
        "latest reply first"
    );
    let bundle = &list["chunk"][0]["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(bundle["count"], 2, "{bundle:#}");
    assert_eq!(bundle["latest_event"]["event_id"], latest.as_str());
    assert_eq!(bundle["current_user_participated"], true);

    // Bob started the newer thread but never posted in the older one.
    let bobs = ok(
        bob.get(&threads_path(&room, "?include=participated")),
        "participated",
    );
    assert_eq!(ids(&bobs), vec![newer.clone()]);
    let bobs_view = ok(bob.get(&threads_path(&room, "")), "bob's threads");
    assert_eq!(
        bobs_view["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["current_user_participated"],
        false
    );

    let first = ok(alice.get(&threads_path(&room, "?limit=1")), "page 1");
    assert_eq!(ids(&first), vec![older.clone()]);
    let next = str_field(&first, "next_batch");
    let second = ok(
        alice.get(&threads_path(
            &room,
            &format!("?limit=1&from={}", enc(&next)),
        )),
        "page 2",
    );
    assert_eq!(ids(&second), vec![newer]);
    assert!(second.get("next_batch").is_none());

    assert_error(
        &alice.get(&threads_path(&room, "?include=mine")),
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &alice.get(&threads_path(&room, "?from=abc")),
        400,
        "M_INVALID_PARAM",
    );
    let carol = env.register("carol");
    assert_error(&carol.get(&threads_path(&room, "")), 403, "M_FORBIDDEN");

    // After leaving, bob sees threads only as they were when he left.
    ok(bob.membership(&room, "leave", &json!({})), "bob leaves");
    reply_in_thread(&alice, &room, &older, "a3", "after bob left");
    let after_leave = ok(bob.get(&threads_path(&room, "")), "threads after leaving");
    assert_eq!(
        after_leave["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["count"], 2,
        "{after_leave:#}"
    );
}
