//! Spaces across units: a space on A whose children live on A and on B (one of them a space on
//! B with its own child). The client `/hierarchy` on A lists B's rooms (asked of B over
//! federation, depth first, with names and member counts) and pages, limits depth and follows
//! only suggested children across local and remote rooms; the same space walked from B (whose
//! user joined it over federation) lists A's child. The federation `hierarchy` endpoint answers
//! a signed request with the room, the children the asking server may see and the inaccessible
//! ones, and refuses rooms it does not hold. A child whose `via` names a server that is not
//! allow-listed is left out without a connection attempt; one on an allow-listed but
//! unreachable peer is skipped without failing the request.

use std::net::Ipv4Addr;
use tests::federation::{ConnCounter, DELIVERY, Federation, Puppet, Unit, eventually, x_matrix};
use tests::{Client, Reply, Value, enc, json, ok, str_field};

/// `GET /hierarchy` of `room` as `client` with a raw query, asserting 200.
fn hierarchy(client: &Client, room: &str, query: &str) -> Value {
    client.get_ok(&format!(
        "/_matrix/client/v1/rooms/{}/hierarchy?{query}",
        enc(room)
    ))
}

/// The room IDs of a hierarchy page, in order.
fn ids(body: &Value) -> Vec<String> {
    body["rooms"]
        .as_array()
        .unwrap_or_else(|| panic!("rooms is an array: {body:#}"))
        .iter()
        .map(|r| str_field(r, "room_id"))
        .collect()
}

/// The entry for `room` in a hierarchy page.
fn entry<'a>(body: &'a Value, room: &str) -> &'a Value {
    body["rooms"]
        .as_array()
        .and_then(|rooms| rooms.iter().find(|r| r["room_id"] == room))
        .unwrap_or_else(|| panic!("{room} missing from {body:#}"))
}

/// Every page of a hierarchy walked with `limit`, concatenated.
fn all_pages(client: &Client, room: &str, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut query = format!("limit={limit}");
    for _ in 0..20 {
        let page = hierarchy(client, room, &query);
        let got = ids(&page);
        assert!(got.len() <= limit, "page longer than {limit}: {page:#}");
        out.extend(got);
        match page["next_batch"].as_str() {
            Some(next) => query = format!("limit={limit}&from={}", enc(next)),
            None => return out,
        }
    }
    panic!("pagination did not end after 20 pages: {out:?}");
}

/// A federation `hierarchy` request to `to`, signed as unit `from`.
fn fed_hierarchy(from: &Unit, to: &Unit, room: &str, query: &str) -> Reply {
    let uri = format!("/_matrix/federation/v1/hierarchy/{}{query}", enc(room));
    let auth = x_matrix(
        &from.signing_key(),
        from.name(),
        to.name(),
        "GET",
        &uri,
        None,
    );
    to.fed_client()
        .request("GET", &uri, Some(&auth), None)
        .unwrap_or_else(|err| panic!("GET {uri} to {}: {err}", to.name()))
}

/// The room IDs of an array of summaries.
fn summary_ids(summaries: &Value) -> Vec<String> {
    summaries
        .as_array()
        .unwrap_or_else(|| panic!("an array: {summaries:#}"))
        .iter()
        .map(|r| str_field(r, "room_id"))
        .collect()
}

fn space_child(client: &Client, space: &str, child: &str, content: Value) {
    client.put_state(space, "m.space.child", child, &content);
}

#[test]
fn hierarchy_spans_units_and_asks_only_allow_listed_peers() {
    // A server name that is a real address: a naive server would dial it.
    let trap = ConnCounter::bind(Ipv4Addr::new(127, 0, 0, 9));
    let unknown = trap.addr().to_string();
    // An allow-listed peer (of A only) whose endpoint accepts and hangs up: unreachable.
    let dead_endpoint = ConnCounter::bind(Ipv4Addr::new(127, 0, 0, 10));
    let dead = Puppet::new("dead.test", dead_endpoint.addr());

    let fed = Federation::start(&["unit-a.test", "unit-b.test"]);
    fed[0].trust_card("dead", dead.card());
    fed[0].reload_peers();
    let (a, b) = (fed[0].name().to_owned(), fed[1].name().to_owned());
    let alice = fed[0].register("alice");
    let bob = fed[1].register("bob");
    let carol = fed[1].register("carol");

    // On B: a space with one child, which two of B's users joined.
    let b_space = bob.create_room(&json!({
        "preset": "public_chat", "name": "B Space",
        "creation_content": { "type": "m.space" },
    }));
    let b_deep = bob.create_room(&json!({ "preset": "public_chat", "name": "B Deep" }));
    carol.join(&b_deep);
    space_child(&bob, &b_space, &b_deep, json!({ "via": [b] }));

    // On A: the space, a public and a private child on A, B's space, and two children that
    // cannot be described: one via a server A does not allow, one via a dead peer.
    let space = alice.create_room(&json!({
        "preset": "public_chat", "name": "Team", "topic": "Everything",
        "creation_content": { "type": "m.space" },
    }));
    let a_room = alice.create_room(&json!({ "preset": "public_chat", "name": "A Lobby" }));
    let a_secret = alice.create_room(&json!({ "preset": "private_chat", "name": "A Secret" }));
    let ghost = format!("!nowhere:{unknown}");
    space_child(
        &alice,
        &space,
        &b_space,
        json!({ "via": [b], "order": "a", "suggested": true }),
    );
    space_child(&alice, &space, &a_room, json!({ "via": [a], "order": "b" }));
    space_child(
        &alice,
        &space,
        &a_secret,
        json!({ "via": [a], "order": "c" }),
    );
    space_child(
        &alice,
        &space,
        &ghost,
        json!({ "via": [unknown], "order": "d" }),
    );
    space_child(
        &alice,
        &space,
        "!gone:dead.test",
        json!({ "via": ["dead.test"], "order": "e" }),
    );

    // A's client walk: depth first, B's space before A's later children, its child below it.
    let all = hierarchy(&alice, &space, "");
    assert_eq!(
        ids(&all),
        vec![
            space.clone(),
            b_space.clone(),
            b_deep.clone(),
            a_room.clone(),
            a_secret.clone()
        ],
        "{all:#}"
    );
    let root = entry(&all, &space);
    assert_eq!(root["room_type"], "m.space");
    assert_eq!(root["children_state"].as_array().map(Vec::len), Some(5));
    for (room, name, members) in [
        (&b_space, "B Space", 1),
        (&b_deep, "B Deep", 2),
        (&a_room, "A Lobby", 1),
    ] {
        let e = entry(&all, room);
        assert_eq!(e["name"], name, "{e:#}");
        assert_eq!(e["num_joined_members"], members, "{e:#}");
    }
    assert_eq!(entry(&all, &b_space)["room_type"], "m.space");
    assert_eq!(
        entry(&all, &b_space)["children_state"][0]["state_key"],
        b_deep.as_str()
    );
    assert!(
        dead_endpoint.count() >= 1,
        "the allow-listed (dead) peer was asked"
    );

    // Paging, depth and suggested_only across local and remote rooms.
    for limit in [1, 2, 3] {
        assert_eq!(all_pages(&alice, &space, limit), ids(&all), "limit={limit}");
    }
    assert_eq!(
        ids(&hierarchy(&alice, &space, "max_depth=1")),
        vec![
            space.clone(),
            b_space.clone(),
            a_room.clone(),
            a_secret.clone()
        ]
    );
    assert_eq!(
        ids(&hierarchy(&alice, &space, "max_depth=0")),
        vec![space.clone()]
    );
    assert_eq!(
        ids(&hierarchy(&alice, &space, "suggested_only=true")),
        vec![space.clone(), b_space.clone()]
    );
    let first = hierarchy(&alice, &space, "limit=2");
    let next = enc(&str_field(&first, "next_batch"));
    let mut bad = vec!["limit=0".to_owned(), "from=bogus".to_owned()];
    // The spec forbids changing these while paging.
    bad.push(format!("from={next}&suggested_only=true"));
    bad.push(format!("from={next}&max_depth=1"));
    for query in bad {
        let (status, body) = alice.get(&format!(
            "/_matrix/client/v1/rooms/{}/hierarchy?{query}",
            enc(&space)
        ));
        assert_eq!(
            (status, body["errcode"].as_str()),
            (400, Some("M_INVALID_PARAM")),
            "{query}: {body:#}"
        );
    }

    // The federation endpoint, asked by B.
    let reply = fed_hierarchy(&fed[1], &fed[0], &space, "");
    assert_eq!(reply.status, 200, "{:#}", reply.json());
    let answer = reply.json();
    assert_eq!(answer["room"]["room_id"], space.as_str());
    assert_eq!(answer["room"]["name"], "Team");
    assert_eq!(answer["room"]["room_version"], "12");
    assert_eq!(
        answer["room"]["children_state"]
            .as_array()
            .map(|c| c.iter().all(|e| e["origin_server_ts"].is_i64())),
        Some(true),
        "{answer:#}"
    );
    // Children A does not hold (B's space, the ghost, the dead one) are left out.
    assert_eq!(summary_ids(&answer["children"]), vec![a_room.clone()]);
    assert_eq!(answer["children"][0]["name"], "A Lobby");
    assert_eq!(answer["inaccessible_children"], json!([a_secret]));
    let suggested = fed_hierarchy(&fed[1], &fed[0], &space, "?suggested_only=true").json();
    assert_eq!(
        suggested["room"]["children_state"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(suggested["children"], json!([]));
    for room in ["!unknown:unit-a.test".to_owned(), a_secret.clone()] {
        let reply = fed_hierarchy(&fed[1], &fed[0], &room, "");
        assert_eq!(
            (reply.status, reply.json()["errcode"].as_str()),
            (404, Some("M_NOT_FOUND")),
            "{room}"
        );
    }
    let unsigned = fed[0]
        .fed_client()
        .request(
            "GET",
            &format!("/_matrix/federation/v1/hierarchy/{}", enc(&space)),
            None,
            None,
        )
        .expect("an unsigned request gets an answer");
    assert_eq!(unsigned.status, 401);

    // B's user joins the space over federation; B walks it and asks A for A's rooms.
    ok(
        bob.post(
            &format!("/_matrix/client/v3/join/{}?via={a}", enc(&space)),
            &json!({}),
        ),
        "bob joins the space over federation",
    );
    let from_b = eventually("B to walk the space", DELIVERY, || {
        let body = hierarchy(&bob, &space, "");
        if ids(&body).contains(&a_room) {
            Ok(body)
        } else {
            Err(format!("{body:#}"))
        }
    });
    assert_eq!(
        ids(&from_b),
        vec![
            space.clone(),
            b_space.clone(),
            b_deep.clone(),
            a_room.clone()
        ],
        "bob may not see A's private room: {from_b:#}"
    );
    assert_eq!(entry(&from_b, &a_room)["name"], "A Lobby");
    assert_eq!(entry(&from_b, &a_room)["num_joined_members"], 1);
    assert_eq!(entry(&from_b, &space)["num_joined_members"], 2);
    assert_eq!(all_pages(&bob, &space, 2), ids(&from_b));

    // Once B has an invited user in A's private room, A lets B see it.
    alice.invite(&a_secret, &bob.user_id);
    let answer = fed_hierarchy(&fed[1], &fed[0], &space, "").json();
    assert_eq!(
        summary_ids(&answer["children"]),
        vec![a_room.clone(), a_secret.clone()],
        "{answer:#}"
    );
    assert_eq!(answer["inaccessible_children"], json!([]));

    // A room of the older `!opaque:server` form that B does not hold: B asks the room's
    // server, since it is allow-listed.
    let old_space = alice.create_room(&json!({
        "preset": "public_chat", "name": "Old Space", "room_version": "10",
        "creation_content": { "type": "m.space" },
    }));
    space_child(&alice, &old_space, &a_room, json!({ "via": [a] }));
    assert_eq!(
        ids(&hierarchy(&bob, &old_space, "")),
        vec![old_space.clone(), a_room.clone()]
    );
    // A v12 room B does not hold names no server to ask.
    let (status, body) = bob.get(&format!(
        "/_matrix/client/v1/rooms/{}/hierarchy",
        enc(&b_deep.replace('!', "!x"))
    ));
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body:#}"
    );

    assert_eq!(
        trap.count(),
        0,
        "no connection to the non-allow-listed server"
    );
}
