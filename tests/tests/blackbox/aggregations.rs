//! Bundled aggregations (`unsigned.m.relations`): the latest valid edit (`m.replace`), thread
//! summaries (`m.thread`) and references (`m.reference`) on every path that serves events —
//! `/event`, `/messages`, `/context`, `/sync`, sliding sync, `/relations`, `/threads` and
//! search — with the spec's edit rules (same sender, not an edit of an edit, a redacted edit
//! no longer applies, a redacted original bundles no edit) and history visibility applied to
//! the children.

use tests::{Client, TestEnv, Value, enc, json, ok, str_field, timeline};

fn send(client: &Client, room: &str, event_type: &str, txn: &str, content: Value) -> String {
    str_field(
        &ok(client.send_event(room, event_type, txn, &content), "send"),
        "event_id",
    )
}

fn edit(client: &Client, room: &str, target: &str, txn: &str, body: &str) -> String {
    send(
        client,
        room,
        "m.room.message",
        txn,
        json!({
            "msgtype": "m.text", "body": format!("* {body}"),
            "m.new_content": { "msgtype": "m.text", "body": body },
            "m.relates_to": { "rel_type": "m.replace", "event_id": target },
        }),
    )
}

fn reply_in_thread(client: &Client, room: &str, root: &str, txn: &str, body: &str) -> String {
    send(
        client,
        room,
        "m.room.message",
        txn,
        json!({
            "msgtype": "m.text", "body": body,
            "m.relates_to": { "rel_type": "m.thread", "event_id": root },
        }),
    )
}

fn redact(client: &Client, room: &str, event: &str, txn: &str) {
    ok(
        client.put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/{txn}",
                enc(room),
                enc(event)
            ),
            &json!({}),
        ),
        "redact",
    );
}

fn get_event(client: &Client, room: &str, event: &str) -> Value {
    ok(
        client.get(&format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            enc(room),
            enc(event)
        )),
        "get event",
    )
}

fn relations(event: &Value) -> &Value {
    &event["unsigned"]["m.relations"]
}

/// The event `id` in a list of client events.
fn find<'a>(list: &'a [Value], id: &str) -> &'a Value {
    list.iter()
        .find(|e| e["event_id"] == id)
        .unwrap_or_else(|| panic!("{id} in {list:#?}"))
}

fn messages(client: &Client, room: &str) -> Vec<Value> {
    let body = ok(
        client.get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
            enc(room)
        )),
        "messages",
    );
    body["chunk"].as_array().cloned().unwrap_or_default()
}

#[test]
fn edits_threads_and_references_are_bundled_on_every_path() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    bob.join(&room);

    let root = alice.send_text(&room, "cake is nice");
    let first_edit = edit(&alice, &room, &root, "e1", "cake is great");
    let latest_edit = edit(&alice, &room, &root, "e2", "cake is the best");
    // Not valid edits: someone else's, and an edit of an edit.
    edit(&bob, &room, &root, "e3", "bob was here");
    edit(&alice, &room, &latest_edit, "e4", "edit of an edit");
    let t1 = reply_in_thread(&bob, &room, &root, "t1", "agreed");
    let t2 = reply_in_thread(&bob, &room, &root, "t2", "very");
    let t2_edit = edit(&bob, &room, &t2, "t2e", "very much");
    let reference = send(
        &bob,
        &room,
        "m.room.message",
        "ref",
        json!({ "msgtype": "m.text", "body": "see above",
                "m.relates_to": { "rel_type": "m.reference", "event_id": root } }),
    );

    let check = |event: &Value, path: &str| {
        let rel = relations(event);
        assert_eq!(
            rel["m.replace"]["event_id"], latest_edit,
            "{path}: {event:#}"
        );
        assert_eq!(
            rel["m.replace"]["content"]["m.new_content"]["body"], "cake is the best",
            "{path}: the edit is served whole"
        );
        assert_eq!(rel["m.thread"]["count"], 2, "{path}: {event:#}");
        assert_eq!(rel["m.thread"]["latest_event"]["event_id"], t2, "{path}");
        assert_eq!(
            relations(&rel["m.thread"]["latest_event"])["m.replace"]["event_id"],
            t2_edit,
            "{path}: the latest thread event carries its own edit"
        );
        assert_eq!(
            rel["m.reference"],
            json!({ "chunk": [{ "event_id": reference }] }),
            "{path}"
        );
    };

    // /event, as each user sees it.
    let as_alice = get_event(&alice, &room, &root);
    check(&as_alice, "/event");
    assert_eq!(
        relations(&as_alice)["m.thread"]["current_user_participated"],
        true,
        "the root's sender participates"
    );
    let as_bob = get_event(&bob, &room, &root);
    assert_eq!(
        relations(&as_bob)["m.thread"]["current_user_participated"],
        true
    );
    // The thread reply carries its edit too.
    assert_eq!(
        relations(&get_event(&alice, &room, &t2))["m.replace"]["event_id"],
        t2_edit
    );
    // An edit of an edit is not an edit.
    assert!(
        relations(&get_event(&alice, &room, &latest_edit))
            .get("m.replace")
            .is_none()
    );

    // /messages.
    check(find(&messages(&bob, &room), &root), "/messages");

    // /context around the root and around a later event.
    let context = ok(
        bob.get(&format!(
            "/_matrix/client/v3/rooms/{}/context/{}?limit=20",
            enc(&room),
            enc(&root)
        )),
        "context",
    );
    check(&context["event"], "/context event");
    let around = ok(
        bob.get(&format!(
            "/_matrix/client/v3/rooms/{}/context/{}?limit=20",
            enc(&room),
            enc(&t1)
        )),
        "context",
    );
    let before: Vec<Value> = around["events_before"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    check(find(&before, &root), "/context events_before");

    // /sync (initial, so limited) with a timeline long enough to hold the root.
    let filter = json!({ "room": { "timeline": { "limit": 50 } } });
    let sync = bob.sync(None, 0, Some(&filter));
    check(find(&timeline(&sync, &room), &root), "/sync");

    // Sliding sync.
    let sliding = ok(
        bob.post(
            "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?timeout=0",
            &json!({
                "conn_id": "agg",
                "lists": { "all": { "ranges": [[0, 10]], "timeline_limit": 50,
                                    "required_state": [] } },
            }),
        ),
        "sliding sync",
    );
    let sliding_timeline = sliding["rooms"][&room]["timeline"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    check(find(&sliding_timeline, &root), "sliding sync");

    // /relations lists the thread events, each with its own aggregations.
    let thread = ok(
        bob.get(&format!(
            "/_matrix/client/v1/rooms/{}/relations/{}/m.thread",
            enc(&room),
            enc(&root)
        )),
        "relations",
    );
    let chunk = thread["chunk"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        relations(find(&chunk, &t2))["m.replace"]["event_id"],
        t2_edit,
        "/relations"
    );

    // /threads.
    let threads = ok(
        bob.get(&format!("/_matrix/client/v1/rooms/{}/threads", enc(&room))),
        "threads",
    );
    check(&threads["chunk"][0], "/threads");

    // Search results.
    let search = ok(
        bob.post(
            "/_matrix/client/v3/search",
            &json!({ "search_categories": { "room_events": { "search_term": "nice" } } }),
        ),
        "search",
    );
    let results = search["search_categories"]["room_events"]["results"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let hit = results
        .iter()
        .map(|r| r["result"].clone())
        .find(|e| e["event_id"] == root)
        .unwrap_or_else(|| panic!("root found: {search:#}"));
    check(&hit, "search");

    // A redacted edit no longer applies: the one before it is the latest again.
    redact(&alice, &room, &latest_edit, "r1");
    assert_eq!(
        relations(&get_event(&bob, &room, &root))["m.replace"]["event_id"],
        first_edit
    );
    // A redacted original bundles no edit, though the thread and reference remain.
    redact(&alice, &room, &root, "r2");
    let redacted = get_event(&bob, &room, &root);
    assert!(
        relations(&redacted).get("m.replace").is_none(),
        "{redacted:#}"
    );
    assert_eq!(relations(&redacted)["m.thread"]["count"], 2);
}

#[test]
fn children_the_viewer_may_not_see_are_not_aggregated() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let carol = env.register("carol");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    alice.put_state(
        &room,
        "m.room.history_visibility",
        "",
        &json!({ "history_visibility": "joined" }),
    );
    bob.join(&room);
    carol.join(&room);
    let root = bob.send_text(&room, "root");
    let seen = reply_in_thread(&bob, &room, &root, "t1", "while carol is here");
    ok(carol.membership(&room, "leave", &json!({})), "carol leaves");
    let unseen = reply_in_thread(&alice, &room, &root, "t2", "after carol left");
    let unseen_edit = edit(&bob, &room, &root, "e1", "root, edited after carol left");

    // Alice sees the whole thread and the edit.
    let as_alice = get_event(&alice, &room, &root);
    assert_eq!(relations(&as_alice)["m.thread"]["count"], 2, "{as_alice:#}");
    assert_eq!(
        relations(&as_alice)["m.thread"]["latest_event"]["event_id"],
        unseen
    );
    assert_eq!(relations(&as_alice)["m.replace"]["event_id"], unseen_edit);

    // Carol still reads the root, but what was sent after she left is not aggregated for her.
    let as_carol = get_event(&carol, &room, &root);
    let thread = &relations(&as_carol)["m.thread"];
    assert_eq!(thread["count"], 1, "{as_carol:#}");
    assert_eq!(thread["latest_event"]["event_id"], seen);
    assert_eq!(thread["current_user_participated"], false);
    assert!(
        relations(&as_carol).get("m.replace").is_none(),
        "an edit carol may not see: {as_carol:#}"
    );
    let listed = messages(&carol, &room);
    assert_eq!(relations(find(&listed, &root))["m.thread"]["count"], 1);

    // Ignoring a user drops their children from the aggregation.
    let alice_id = format!("@alice:{}", env.server_name());
    let bob_id = format!("@bob:{}", env.server_name());
    ok(
        alice.put(
            &format!(
                "/_matrix/client/v3/user/{}/account_data/m.ignored_user_list",
                enc(&alice_id)
            ),
            &json!({ "ignored_users": { bob_id: {} } }),
        ),
        "ignore bob",
    );
    let ignoring = get_event(&alice, &room, &root);
    assert_eq!(relations(&ignoring)["m.thread"]["count"], 1, "{ignoring:#}");
    assert_eq!(
        relations(&ignoring)["m.thread"]["latest_event"]["event_id"],
        unseen
    );
}
