//! Search: `POST /search` (room events: what is found, ranking and recency order, pagination,
//! filters, keys, context, state, groups; visibility of rooms never joined and of rooms left;
//! redacted events leaving the index; hostile query text) and `POST /user_directory/search`
//! (every local user, co-members and public-room members from other units, never strangers
//! from other units, never deactivated accounts), including over federation.

use std::collections::BTreeSet;

use tests::federation::{DELIVERY, Federation, eventually, share_room, wait_for_bodies};
use tests::{Client, TestEnv, Value, assert_error, enc, json, ok, password_for, str_field};

const SEARCH: &str = "/_matrix/client/v3/search";
const DIRECTORY: &str = "/_matrix/client/v3/user_directory/search";

/// One `/search` for `room_events` with `criteria`, asserting 200; returns `room_events`.
fn search_page(client: &Client, criteria: &Value, next_batch: Option<&str>) -> Value {
    let path = match next_batch {
        Some(token) => format!("{SEARCH}?next_batch={}", enc(token)),
        None => SEARCH.to_owned(),
    };
    let body = json!({ "search_categories": { "room_events": criteria } });
    let reply = ok(client.post(&path, &body), &format!("search {criteria}"));
    reply["search_categories"]["room_events"].clone()
}

fn search(client: &Client, term: &str) -> Value {
    search_page(client, &json!({ "search_term": term }), None)
}

fn results(room_events: &Value) -> Vec<Value> {
    room_events["results"]
        .as_array()
        .unwrap_or_else(|| panic!("results is an array: {room_events:#}"))
        .clone()
}

/// The `content.body` of each result, in order.
fn found(room_events: &Value) -> Vec<String> {
    results(room_events)
        .iter()
        .map(|r| {
            r["result"]["content"]["body"]
                .as_str()
                .unwrap_or_else(|| panic!("result with a body: {r:#}"))
                .to_owned()
        })
        .collect()
}

fn sorted(mut list: Vec<String>) -> Vec<String> {
    list.sort();
    list
}

fn redact(client: &Client, room: &str, event: &str, txn: &str) {
    ok(
        client.put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/{}",
                enc(room),
                enc(event),
                enc(txn)
            ),
            &json!({}),
        ),
        "redact",
    );
}

fn set_displayname(client: &Client, name: &str) {
    ok(
        client.put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&client.user_id)
            ),
            &json!({ "displayname": name }),
        ),
        "set displayname",
    );
}

fn directory(client: &Client, term: &str, limit: Option<u64>) -> Value {
    let mut body = json!({ "search_term": term });
    if let Some(limit) = limit {
        body["limit"] = json!(limit);
    }
    ok(
        client.post(DIRECTORY, &body),
        &format!("directory {term:?}"),
    )
}

fn directory_ids(client: &Client, term: &str) -> BTreeSet<String> {
    directory(client, term, None)["results"]
        .as_array()
        .unwrap_or_else(|| panic!("directory results for {term:?}"))
        .iter()
        .map(|u| str_field(u, "user_id"))
        .collect()
}

#[test]
fn finds_messages_only_in_rooms_the_user_is_in() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let carol = env.register("carol");
    let shared = alice.create_room(&json!({ "preset": "private_chat", "invite": [bob.user_id] }));
    bob.join(&shared);
    let bobs_own = bob.create_room(&json!({ "preset": "private_chat" }));
    let public = carol.create_room(&json!({ "preset": "public_chat" }));

    alice.send_text(&shared, "Martians are landing");
    bob.send_text(&shared, "the martian menu is ready");
    alice.send_text(&shared, "unrelated chatter");
    bob.send_text(&bobs_own, "martian notes to self");
    carol.send_text(&public, "martian broadcast");
    carol.invite(&public, &alice.user_id);

    let for_alice = search(&alice, "martian");
    assert_eq!(
        sorted(found(&for_alice)),
        vec!["Martians are landing", "the martian menu is ready"],
        "alice sees her room only; an invite is not membership: {for_alice:#}"
    );
    assert_eq!(for_alice["count"], 2);
    let highlights: BTreeSet<String> = for_alice["highlights"]
        .as_array()
        .expect("highlights")
        .iter()
        .map(|h| h.as_str().expect("string").to_owned())
        .collect();
    assert!(
        highlights.contains("martian") && highlights.contains("martians"),
        "the term and the word it matched are highlighted: {highlights:?}"
    );
    for result in results(&for_alice) {
        assert!(
            result["rank"].as_f64().is_some_and(|r| r > 0.0),
            "{result:#}"
        );
        assert_eq!(result["result"]["room_id"], shared.as_str());
        assert_eq!(result["result"]["type"], "m.room.message");
        assert!(result["result"]["event_id"].is_string());
    }
    assert!(for_alice.get("next_batch").is_none());

    assert_eq!(
        sorted(found(&search(&bob, "martian"))),
        vec![
            "Martians are landing",
            "martian notes to self",
            "the martian menu is ready"
        ]
    );
    assert_eq!(found(&search(&carol, "martian")), vec!["martian broadcast"]);
    let stranger = env.register("dave");
    let nothing = search(&stranger, "martian");
    assert_eq!(found(&nothing), Vec::<String>::new());
    assert_eq!(nothing["count"], 0);

    // Diacritics and case are folded both ways.
    alice.send_text(&shared, "Meet at the Café");
    assert_eq!(found(&search(&alice, "CAFE")), vec!["Meet at the Café"]);
}

#[test]
fn orders_by_rank_or_recency_and_pages_with_next_batch() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({}));
    alice.send_text(&room, "apple apple apple");
    alice.send_text(
        &room,
        "an apple mentioned once among many other words about a long afternoon",
    );
    alice.send_text(&room, "apple pie");

    let by_rank = search_page(
        &alice,
        &json!({ "search_term": "apple", "order_by": "rank" }),
        None,
    );
    let ranked = found(&by_rank);
    assert_eq!(ranked[0], "apple apple apple", "{by_rank:#}");
    assert_eq!(
        ranked[2],
        "an apple mentioned once among many other words about a long afternoon"
    );
    let ranks: Vec<f64> = results(&by_rank)
        .iter()
        .map(|r| r["rank"].as_f64().expect("rank"))
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] >= w[1]), "{ranks:?}");
    // Rank is the default order.
    assert_eq!(found(&search(&alice, "apple")), ranked);

    let recent = search_page(
        &alice,
        &json!({ "search_term": "apple", "order_by": "recent" }),
        None,
    );
    assert_eq!(
        found(&recent),
        vec![
            "apple pie",
            "an apple mentioned once among many other words about a long afternoon",
            "apple apple apple"
        ]
    );

    for n in 0..12 {
        alice.send_text(&room, &format!("needle number {n}"));
    }
    for order in ["rank", "recent"] {
        let criteria =
            json!({ "search_term": "needle", "order_by": order, "filter": { "limit": 5 } });
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = search_page(&alice, &criteria, token.as_deref());
            pages += 1;
            let bodies = found(&page);
            assert!(bodies.len() <= 5, "{order}: page too long: {page:#}");
            assert_eq!(page["count"], 12, "{order}: count is the whole match");
            seen.extend(bodies);
            match page["next_batch"].as_str() {
                Some(next) => token = Some(next.to_owned()),
                None => break,
            }
            assert!(pages < 10, "{order}: pagination does not end");
        }
        assert_eq!(pages, 3, "{order}: 12 results in pages of 5");
        let unique: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(
            (seen.len(), unique.len()),
            (12, 12),
            "{order}: every result once: {seen:?}"
        );
        if order == "recent" {
            let expected: Vec<String> = (0..12)
                .rev()
                .map(|n| format!("needle number {n}"))
                .collect();
            assert_eq!(seen, expected);
        }
    }

    // A token only continues a search in the same order; garbage is a 400, not a 500.
    let first = search_page(
        &alice,
        &json!({ "search_term": "needle", "filter": { "limit": 5 } }),
        None,
    );
    let token = str_field(&first, "next_batch");
    let body = json!({ "search_categories": { "room_events": {
        "search_term": "needle", "order_by": "recent" } } });
    assert_error(
        &alice.post(&format!("{SEARCH}?next_batch={}", enc(&token)), &body),
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &alice.post(&format!("{SEARCH}?next_batch=garbage"), &body),
        400,
        "M_INVALID_PARAM",
    );
}

#[test]
fn after_leaving_only_earlier_events_are_found() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    bob.join(&room);
    alice.send_text(&room, "rendezvous before the leave");
    ok(bob.membership(&room, "leave", &json!({})), "bob leaves");
    alice.send_text(&room, "rendezvous after the leave");

    assert_eq!(
        found(&search(&bob, "rendezvous")),
        vec!["rendezvous before the leave"]
    );
    assert_eq!(
        sorted(found(&search(&alice, "rendezvous"))),
        vec!["rendezvous after the leave", "rendezvous before the leave"]
    );

    // The state bob gets for the room is the state as he left it, not what came later.
    alice.put_state(
        &room,
        "m.room.topic",
        "",
        &json!({ "topic": "changed after bob left" }),
    );
    let with_state = search_page(
        &bob,
        &json!({ "search_term": "rendezvous", "include_state": true }),
        None,
    );
    let state = with_state["state"][&room]
        .as_array()
        .unwrap_or_else(|| panic!("state of the room: {with_state:#}"));
    let bobs_member = state
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        .expect("bob's member event in the state");
    assert_eq!(bobs_member["content"]["membership"], "leave");
    assert!(
        !state.iter().any(|e| e["type"] == "m.room.topic"),
        "the later topic is not shown: {state:#?}"
    );

    // Forgetting the room removes it from search altogether.
    ok(bob.membership(&room, "forget", &json!({})), "forget");
    assert_eq!(found(&search(&bob, "rendezvous")), Vec::<String>::new());

    // Rejoining shows everything again.
    bob.join(&room);
    assert_eq!(found(&search(&bob, "rendezvous")).len(), 2);
}

#[test]
fn redacted_messages_vanish_from_results() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({}));
    let secret = alice.send_text(&room, "the launch code is swordfish");
    alice.send_text(&room, "swordfish for dinner");
    assert_eq!(found(&search(&alice, "swordfish")).len(), 2);

    redact(&alice, &room, &secret, "redact-1");
    let after = search(&alice, "swordfish");
    assert_eq!(found(&after), vec!["swordfish for dinner"], "{after:#}");
    assert_eq!(after["count"], 1);
    assert_eq!(found(&search(&alice, "launch")), Vec::<String>::new());
}

#[test]
fn hostile_query_text_never_fails() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({}));
    alice.send_text(&room, "martians near the base (sector 7)");

    let finds = [
        "martians",
        "NEAR(martians",
        "martians*",
        "\"martians near",
        "(martians",
        "martians)",
        "-martians",
        "^martians",
        "'martians'",
        "martians:",
        "\"martians\" \"",
    ];
    for term in finds {
        assert_eq!(
            found(&search(&alice, term)),
            vec!["martians near the base (sector 7)"],
            "{term:?} is searched as its words"
        );
    }
    let odd = [
        "",
        " ",
        "\"",
        "\"\"",
        "*",
        "(",
        ")",
        "()",
        "NEAR",
        "AND",
        "OR",
        "NOT",
        ":",
        "{",
        "}",
        "^",
        "-",
        "\\",
        "'",
        "%",
        "_",
        "\u{0}",
        "🚀",
        "a\"b\"c\"d",
        "NEAR(a b, 2)",
        "x OR y AND NOT z",
        "col:*",
        "\"unbalanced",
        "body:martians",
        "{body}: martians",
        "martians AND",
        "martians OR",
        "martians NOT",
    ];
    for term in odd {
        let reply = search(&alice, term);
        assert!(
            reply["results"].is_array(),
            "{term:?} answers with results: {reply:#}"
        );
    }
    let long = "martians ".repeat(500);
    assert_eq!(found(&search(&alice, &long)).len(), 1);
}

#[test]
fn filters_keys_context_state_and_groups() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    set_displayname(&alice, "Alice Early");
    let first = alice.create_room(&json!({ "preset": "public_chat", "name": "Orbit planning" }));
    let second = alice.create_room(&json!({ "preset": "public_chat", "topic": "orbit gossip" }));
    bob.join(&first);
    bob.join(&second);
    alice.send_text(&first, "before one");
    alice.send_text(&first, "before two");
    let hit = alice.send_text(&first, "orbit insertion at noon");
    bob.send_text(&first, "after one");
    bob.send_text(&first, "after two");
    bob.send_text(&second, "orbit decay observed");
    set_displayname(&alice, "Alice Later");

    // keys: names and topics are searched only when asked for.
    let bodies_only = search_page(
        &alice,
        &json!({ "search_term": "orbit", "keys": ["content.body"] }),
        None,
    );
    assert_eq!(
        sorted(found(&bodies_only)),
        vec!["orbit decay observed", "orbit insertion at noon"]
    );
    let names = search_page(
        &alice,
        &json!({ "search_term": "orbit", "keys": ["content.name"] }),
        None,
    );
    let named = results(&names);
    assert_eq!(named.len(), 1, "{names:#}");
    assert_eq!(named[0]["result"]["type"], "m.room.name");
    assert_eq!(named[0]["result"]["room_id"], first.as_str());
    let topics = search_page(
        &alice,
        &json!({ "search_term": "gossip", "keys": ["content.topic"] }),
        None,
    );
    assert_eq!(results(&topics)[0]["result"]["type"], "m.room.topic");
    assert_eq!(
        results(&search(&alice, "orbit")).len(),
        4,
        "all keys by default"
    );

    // filter: rooms, not_rooms, senders, not_senders, types.
    let filtered = |filter: Value| {
        sorted(found(&search_page(
            &alice,
            &json!({ "search_term": "orbit", "keys": ["content.body"], "filter": filter }),
            None,
        )))
    };
    assert_eq!(
        filtered(json!({ "rooms": [second] })),
        vec!["orbit decay observed"]
    );
    assert_eq!(
        filtered(json!({ "not_rooms": [second] })),
        vec!["orbit insertion at noon"]
    );
    assert_eq!(
        filtered(json!({ "senders": [bob.user_id] })),
        vec!["orbit decay observed"]
    );
    assert_eq!(
        filtered(json!({ "not_senders": [bob.user_id] })),
        vec!["orbit insertion at noon"]
    );
    assert_eq!(
        filtered(json!({ "types": ["m.room.topic"] })),
        Vec::<String>::new()
    );

    // event_context with profiles as they were at the time of the result.
    let with_context = search_page(
        &alice,
        &json!({
            "search_term": "insertion",
            "event_context": { "before_limit": 1, "after_limit": 2, "include_profile": true },
        }),
        None,
    );
    let result = &results(&with_context)[0];
    assert_eq!(result["result"]["event_id"], hit.as_str());
    let context = &result["context"];
    let before: Vec<&str> = context["events_before"]
        .as_array()
        .expect("events_before")
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(before, vec!["before two"], "{context:#}");
    let after: Vec<&str> = context["events_after"]
        .as_array()
        .expect("events_after")
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(after, vec!["after one", "after two"], "{context:#}");
    assert!(context["start"].is_string() && context["end"].is_string());
    assert_eq!(
        context["profile_info"][&alice.user_id]["displayname"], "Alice Early",
        "{context:#}"
    );
    assert!(context["profile_info"].get(&bob.user_id).is_some());
    // The context tokens work with /messages.
    let older = ok(
        alice.get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1&from={}",
            enc(&first),
            enc(context["start"].as_str().expect("start"))
        )),
        "messages from the context start",
    );
    assert_eq!(older["chunk"][0]["content"]["body"], "before one");

    // include_state and groupings.
    let grouped = search_page(
        &alice,
        &json!({
            "search_term": "orbit",
            "keys": ["content.body"],
            "include_state": true,
            "groupings": { "group_by": [{ "key": "room_id" }, { "key": "sender" }] },
        }),
        None,
    );
    let state = &grouped["state"];
    for room in [&first, &second] {
        let events = state[room.as_str()]
            .as_array()
            .unwrap_or_else(|| panic!("state of {room}: {grouped:#}"));
        assert!(events.iter().any(|e| e["type"] == "m.room.create"));
    }
    let by_room = &grouped["groups"]["room_id"];
    assert_eq!(by_room[&first]["results"], json!([hit]));
    assert_eq!(
        by_room[&second]["results"].as_array().map(Vec::len),
        Some(1)
    );
    let orders: BTreeSet<u64> = [&first, &second]
        .iter()
        .map(|r| by_room[r.as_str()]["order"].as_u64().expect("order"))
        .collect();
    assert_eq!(orders, BTreeSet::from([1, 2]));
    let by_sender = &grouped["groups"]["sender"];
    assert_eq!(by_sender[&alice.user_id]["results"], json!([hit]));
    assert!(by_sender[&bob.user_id]["results"].is_array());
}

#[test]
fn group_next_batch_pages_within_the_group() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let busy = alice.create_room(&json!({}));
    let quiet = alice.create_room(&json!({}));
    for n in 0..4 {
        alice.send_text(&busy, &format!("ping busy {n}"));
    }
    alice.send_text(&quiet, "ping quiet");
    let criteria = json!({
        "search_term": "ping",
        "order_by": "recent",
        "filter": { "limit": 2 },
        "groupings": { "group_by": [{ "key": "room_id" }] },
    });
    let first = search_page(&alice, &criteria, None);
    assert_eq!(found(&first), vec!["ping quiet", "ping busy 3"]);
    let token = str_field(&first["groups"]["room_id"][&busy], "next_batch");
    let within = search_page(&alice, &criteria, Some(&token));
    assert_eq!(found(&within), vec!["ping busy 2", "ping busy 1"]);
    let rest = search_page(&alice, &criteria, Some(&str_field(&within, "next_batch")));
    assert_eq!(found(&rest), vec!["ping busy 0"], "still within the group");
    assert!(rest.get("next_batch").is_none());
}

#[test]
fn search_request_errors() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bad = |criteria: Value| {
        alice.post(
            SEARCH,
            &json!({ "search_categories": { "room_events": criteria } }),
        )
    };
    assert_error(&bad(json!({})), 400, "M_BAD_JSON");
    assert_error(&bad(json!({ "search_term": 5 })), 400, "M_BAD_JSON");
    assert_error(
        &bad(json!({ "search_term": "x", "order_by": "oldest" })),
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &bad(json!({ "search_term": "x", "keys": ["content.secret"] })),
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &bad(json!({ "search_term": "x", "groupings": { "group_by": [{ "key": "type" }] } })),
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &bad(json!({ "search_term": "x", "event_context": { "before_limit": -1 } })),
        400,
        "M_BAD_JSON",
    );
    assert_error(&alice.post(SEARCH, &json!({})), 400, "M_BAD_JSON");
    assert_error(
        &env.anon().post(
            SEARCH,
            &json!({ "search_categories": { "room_events": { "search_term": "x" } } }),
        ),
        401,
        "M_MISSING_TOKEN",
    );
    let no_category = ok(
        alice.post(SEARCH, &json!({ "search_categories": {} })),
        "no category",
    );
    assert_eq!(no_category, json!({ "search_categories": {} }));
}

#[test]
fn user_directory_lists_local_users_but_not_deactivated_ones() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    set_displayname(&bob, "Robert Tables");
    env.register("bobby");
    let eve = env.register("eve");

    // Local users need no shared room (see the module docs of service/search.rs).
    assert_eq!(
        directory_ids(&alice, "bob"),
        BTreeSet::from([bob.user_id.clone(), format!("@bobby:{}", env.server_name())])
    );
    let by_name = directory(&alice, "TABLES", None);
    assert_eq!(by_name["results"][0]["user_id"], bob.user_id.as_str());
    assert_eq!(by_name["results"][0]["display_name"], "Robert Tables");
    assert_eq!(by_name["limited"], false);
    // An exact localpart beats a prefix match.
    assert_eq!(
        directory(&alice, "bob", None)["results"][0]["user_id"],
        bob.user_id.as_str()
    );
    assert_eq!(
        directory_ids(&alice, "outpost.test").len(),
        4,
        "user IDs match in full"
    );

    let limited = directory(&alice, "b", Some(1));
    assert_eq!(limited["results"].as_array().map(Vec::len), Some(1));
    assert_eq!(limited["limited"], true);
    assert!(directory_ids(&alice, "nobody-by-this-name").is_empty());

    // Deactivated accounts disappear.
    let path = "/_matrix/client/v3/account/deactivate";
    let (_, challenge) = eve.post(path, &json!({}));
    ok(
        eve.post(
            path,
            &json!({ "auth": {
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": "eve" },
                "password": password_for("eve"),
                "session": challenge["session"],
            } }),
        ),
        "deactivate eve",
    );
    assert!(directory_ids(&alice, "eve").is_empty());

    assert_error(&alice.post(DIRECTORY, &json!({})), 400, "M_BAD_JSON");
    assert_error(
        &env.anon().post(DIRECTORY, &json!({ "search_term": "bob" })),
        401,
        "M_MISSING_TOKEN",
    );
}

#[test]
fn federation_events_are_searchable_and_remote_users_are_listed_by_the_rule() {
    let fed = Federation::start(&["unit-a.test", "unit-b.test"]);
    let alice = fed[0].register("alice");
    let erin = fed[0].register("erin");
    let carol = fed[1].register("carol");
    let dave = fed[1].register("dave");
    let frank = fed[1].register("frank");
    for (client, name) in [
        (&carol, "Carol Remote"),
        (&dave, "Dave Hidden"),
        (&frank, "Frank Public"),
    ] {
        set_displayname(client, name);
    }

    let shared = share_room(&alice, &[&carol], &json!({ "preset": "private_chat" }));
    share_room(&erin, &[&dave], &json!({ "preset": "private_chat" }));
    share_room(&erin, &[&frank], &json!({ "preset": "public_chat" }));

    // An event that arrived over federation is indexed like a local one.
    carol.send_text(&shared, "telemetry from unit b");
    wait_for_bodies(
        &alice,
        &shared,
        &["telemetry from unit b".to_owned()],
        DELIVERY,
    );
    eventually("the remote message to be searchable", DELIVERY, || {
        let bodies = found(&search(&alice, "telemetry"));
        if bodies == vec!["telemetry from unit b"] {
            Ok(())
        } else {
            Err(format!("found {bodies:?}"))
        }
    });

    // Alice sees carol (shared room) and frank (public room), not dave (erin's private room).
    let remote = |client: &Client, term: &str| -> Vec<Value> {
        directory(client, term, None)["results"]
            .as_array()
            .expect("results")
            .clone()
    };
    let carol_found = remote(&alice, "carol");
    assert_eq!(carol_found.len(), 1, "{carol_found:#?}");
    assert_eq!(carol_found[0]["user_id"], carol.user_id.as_str());
    assert_eq!(carol_found[0]["display_name"], "Carol Remote");
    assert_eq!(
        remote(&alice, "frank public")[0]["user_id"],
        frank.user_id.as_str()
    );
    assert!(
        remote(&alice, "dave").is_empty(),
        "dave is a stranger to alice"
    );
    assert!(remote(&alice, "hidden").is_empty());
    // Erin shares a room with dave.
    assert_eq!(remote(&erin, "dave")[0]["user_id"], dave.user_id.as_str());
}
