//! Closed federation under attack: forged, replayed, tampered, malformed and oversized requests
//! against a unit's TLS federation listener, PDUs with bad hashes, bad signatures and failing
//! auth; and the closed-by-design guarantee that a unit never dials a host that is not an
//! allow-listed endpoint, whatever rooms and users its clients name.
//!
//! The attacker is a [`Puppet`]: a peer that exists only as a card and a signing key (made by the
//! homeserver's own `peer-card`), so the test can sign exactly what it wants.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tests::federation::{
    Checks, ConnCounter, DELIVERY, Federation, Member, Puppet, Unit, UnitOptions, eventually,
    free_port_on, now_ms, random_key, sign_pdu, state_ids, unit_ip, wait_for_bodies,
    wait_for_invite, within, x_matrix,
};
use tests::{Client, Reply, Value, enc, json, ok};

const SEND: &str = "/_matrix/federation/v1/send";

/// An address on `ip` where nothing listens.
fn dead_endpoint(ip: Ipv4Addr) -> SocketAddr {
    SocketAddr::from((ip, free_port_on(ip)))
}

/// A transaction body from `origin`.
fn txn(origin: &str, pdus: Vec<Value>) -> Value {
    json!({ "origin": origin, "origin_server_ts": now_ms(), "pdus": pdus, "edus": [] })
}

/// The per-PDU result of a `/send` reply, if the reply lists that event.
fn pdu_result(reply: &Reply, event_id: &str) -> Option<Value> {
    reply.json()["pdus"].get(event_id).cloned()
}

/// `GET /rooms/{room}/event/{id}` as `client`.
fn get_event(client: &Client, room: &str, event_id: &str) -> (u16, Value) {
    client.get(&format!(
        "/_matrix/client/v3/rooms/{}/event/{}",
        enc(room),
        enc(event_id)
    ))
}

#[test]
fn forged_tampered_and_malformed_requests_are_refused() {
    let evil = Puppet::new("evil.test", dead_endpoint(Ipv4Addr::new(127, 0, 0, 10)));
    let stranger = Puppet::new("stranger.test", dead_endpoint(Ipv4Addr::new(127, 0, 0, 11)));
    let mut a = Unit::new(
        "unit-a.test",
        unit_ip(0),
        &UnitOptions {
            federation_max_body: Some(64 * 1024),
            ..UnitOptions::default()
        },
    );
    a.trust_card(evil.name(), evil.card());
    a.start();
    let alice = a.register("alice");
    let lobby = alice.create_room(&json!({
        "preset": "public_chat",
        "visibility": "public",
        "name": "Lobby",
    }));
    let private = alice.create_room(&json!({ "preset": "private_chat", "name": "Private" }));
    let fed = a.fed_client();
    let mut checks = Checks::new();

    // Controls: the listener speaks TLS with the card's CA, and the puppet's signatures are
    // good, so the refusals below are about what they test and nothing else.
    let version = fed
        .request("GET", "/_matrix/federation/v1/version", None, None)
        .expect("GET /version");
    checks.raw("unsigned /version", &version, &[200], &[]);
    let public = evil.request(&a, "GET", "/_matrix/federation/v1/publicRooms", None);
    checks.raw("signed publicRooms", &public, &[200], &[]);
    checks.check(
        "publicRooms lists the lobby",
        public.json()["chunk"].to_string().contains(&lobby),
        || format!("{}", public.json()),
    );

    let events_before = a.count_rows("events");
    let txns_before = a.count_rows("received_transactions");
    // A message from a user of the puppet into the lobby, well formed and well signed.
    let message = |puppet: &Puppet, body: &str| -> (String, Value) {
        sign_pdu(
            &puppet.key(),
            puppet.name(),
            &json!({
                "type": "m.room.message",
                "room_id": lobby,
                "sender": puppet.user_id("mallory"),
                "content": { "msgtype": "m.text", "body": body },
                "origin_server_ts": now_ms(),
                "depth": 20,
                "prev_events": [],
                "auth_events": [],
            }),
        )
    };

    // Unknown origin, properly signed with its own key.
    let (stranger_id, stranger_pdu) = message(&stranger, "from a stranger");
    let body = txn(stranger.name(), vec![stranger_pdu]);
    let reply = stranger.request(&a, "PUT", &format!("{SEND}/s1"), Some(&body));
    checks.raw(
        "unknown origin",
        &reply,
        &[401, 403],
        &["M_FORBIDDEN", "M_UNAUTHORIZED"],
    );

    // Known origin, right key ID, wrong key.
    let evil_key_version = evil.key().version().to_owned();
    let (forged_id, forged_pdu) = sign_pdu(
        &random_key(&evil_key_version),
        evil.name(),
        &message(&evil, "forged").1,
    );
    let body = txn(evil.name(), vec![forged_pdu]);
    let uri = format!("{SEND}/w1");
    let auth = x_matrix(
        &random_key(&evil_key_version),
        evil.name(),
        a.name(),
        "PUT",
        &uri,
        Some(&body),
    );
    let reply = fed
        .request("PUT", &uri, Some(&auth), Some(body.to_string().as_bytes()))
        .expect("wrong-key request");
    checks.raw(
        "known origin, wrong key",
        &reply,
        &[401],
        &["M_UNAUTHORIZED"],
    );
    // Known origin, a key ID that is not pinned.
    let auth = x_matrix(
        &random_key("rogue"),
        evil.name(),
        a.name(),
        "PUT",
        &uri,
        Some(&body),
    );
    let reply = fed
        .request("PUT", &uri, Some(&auth), Some(body.to_string().as_bytes()))
        .expect("unpinned-key request");
    checks.raw(
        "known origin, unpinned key ID",
        &reply,
        &[401],
        &["M_UNAUTHORIZED"],
    );

    // A genuine request for unit-b.test, replayed to A.
    let (replay_id, replay_pdu) = message(&evil, "replayed");
    let body = txn(evil.name(), vec![replay_pdu]);
    let uri = format!("{SEND}/r1");
    let for_b = evil.authorization("unit-b.test", "PUT", &uri, Some(&body));
    let reply = fed
        .request("PUT", &uri, Some(&for_b), Some(body.to_string().as_bytes()))
        .expect("replayed request");
    checks.raw(
        "request signed for another destination",
        &reply,
        &[401],
        &["M_UNAUTHORIZED"],
    );
    // The same with the destination parameter stripped (pre-v1.3 style header).
    let stripped = for_b.replace(",destination=\"unit-b.test\"", "");
    let reply = fed
        .request(
            "PUT",
            &uri,
            Some(&stripped),
            Some(body.to_string().as_bytes()),
        )
        .expect("replayed request without destination");
    checks.raw(
        "request for another destination, destination stripped",
        &reply,
        &[401],
        &["M_UNAUTHORIZED"],
    );
    // Signed for A, but the path or the body changed on the way.
    let for_a = evil.authorization(a.name(), "PUT", &uri, Some(&body));
    let reply = fed
        .request(
            "PUT",
            &format!("{SEND}/r2"),
            Some(&for_a),
            Some(body.to_string().as_bytes()),
        )
        .expect("request with another path");
    checks.raw(
        "signature for another path",
        &reply,
        &[401],
        &["M_UNAUTHORIZED"],
    );
    let mut other_body = body.clone();
    other_body["origin_server_ts"] = json!(1);
    let reply = fed
        .request(
            "PUT",
            &uri,
            Some(&for_a),
            Some(other_body.to_string().as_bytes()),
        )
        .expect("request with another body");
    checks.raw(
        "signature for another body",
        &reply,
        &[401],
        &["M_UNAUTHORIZED"],
    );
    let reply = fed
        .request("PUT", &uri, None, Some(body.to_string().as_bytes()))
        .expect("unsigned request");
    checks.raw("no Authorization", &reply, &[401], &["M_UNAUTHORIZED"]);
    let reply = fed
        .request(
            "PUT",
            &uri,
            Some("X-Matrix origin=evil.test"),
            Some(body.to_string().as_bytes()),
        )
        .expect("malformed Authorization");
    checks.raw("malformed X-Matrix header", &reply, &[400, 401], &[]);

    // Malformed JSON and oversized bodies from a known, correctly signing origin.
    let uri = format!("{SEND}/m1");
    let auth = evil.authorization(a.name(), "PUT", &uri, None);
    let reply = fed
        .request("PUT", &uri, Some(&auth), Some(b"{\"pdus\": ["))
        .expect("malformed JSON");
    checks.raw("malformed JSON", &reply, &[400], &["M_NOT_JSON"]);
    let mut big = txn(evil.name(), Vec::new());
    big["padding"] = json!("x".repeat(100 * 1024));
    let uri = format!("{SEND}/big1");
    let auth = evil.authorization(a.name(), "PUT", &uri, Some(&big));
    let reply = fed
        .request("PUT", &uri, Some(&auth), Some(big.to_string().as_bytes()))
        .expect("oversized transaction");
    checks.raw("oversized transaction", &reply, &[413], &["M_TOO_LARGE"]);
    let many: Vec<Value> = (0..51)
        .map(|i| message(&evil, &format!("one of many {i}")).1)
        .collect();
    let body = txn(evil.name(), many);
    let reply = evil.request(&a, "PUT", &format!("{SEND}/many1"), Some(&body));
    checks.raw(
        "transaction with 51 PDUs",
        &reply,
        &[400, 413],
        &["M_TOO_LARGE", "M_BAD_JSON", "M_INVALID_PARAM"],
    );
    // The transaction's origin field must match the signed origin.
    let body = txn("unit-b.test", Vec::new());
    let reply = evil.request(&a, "PUT", &format!("{SEND}/o1"), Some(&body));
    checks.raw("transaction origin mismatch", &reply, &[400, 403], &[]);
    // `pdus` is required (spec: Transactions): a transaction without it is malformed, not an
    // empty one that would be acknowledged and remembered.
    let mut no_pdus = txn(evil.name(), Vec::new());
    no_pdus
        .as_object_mut()
        .expect("a transaction is an object")
        .remove("pdus");
    let reply = evil.request(&a, "PUT", &format!("{SEND}/n1"), Some(&no_pdus));
    checks.raw("transaction without pdus", &reply, &[400], &["M_BAD_JSON"]);

    checks.check(
        "nothing stored for refused requests",
        a.count_rows("events") == events_before
            && a.count_rows("received_transactions") == txns_before,
        || {
            format!(
                "events {events_before} → {}, received_transactions {txns_before} → {}",
                a.count_rows("events"),
                a.count_rows("received_transactions")
            )
        },
    );
    for id in [&stranger_id, &forged_id, &replay_id] {
        checks.check("refused event not stored", !a.has_event_row(id), || {
            id.to_string()
        });
    }

    // A puppet user joins the public room the way a real server would (control).
    let mut mallory = match Member::join(&evil, &a, &lobby, "mallory") {
        Ok(member) => member,
        Err(reply) => panic!(
            "the puppet could not join the lobby: {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        ),
    };
    eventually("alice to see mallory join", DELIVERY, || {
        let state = state_ids(&alice, &lobby);
        if state.contains_key(&("m.room.member".to_owned(), mallory.user_id.clone())) {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    });
    let (good_id, good) = evil.sign_event(&mallory.template(
        "m.room.message",
        None,
        json!({ "msgtype": "m.text", "body": "hello from evil" }),
    ));
    let reply = evil.request(
        &a,
        "PUT",
        &format!("{SEND}/g1"),
        Some(&txn(evil.name(), vec![good.clone()])),
    );
    checks.raw("a good message", &reply, &[200], &[]);
    checks.check(
        "a good message is accepted",
        pdu_result(&reply, &good_id) == Some(json!({})),
        || format!("{}", reply.json()),
    );
    mallory.advance(&good_id);
    wait_for_bodies(&alice, &lobby, &["hello from evil".to_owned()], DELIVERY);
    // The same transaction again: the same answer, and no duplicate.
    let again = evil.request(
        &a,
        "PUT",
        &format!("{SEND}/g1"),
        Some(&txn(evil.name(), vec![good])),
    );
    checks.check(
        "a repeated transaction gets the same answer",
        again.status == 200 && again.json()["pdus"] == reply.json()["pdus"],
        || format!("{} {}", again.status, again.json()),
    );
    let bodies = tests::federation::timeline_bodies(&alice, &lobby);
    checks.check(
        "a repeated transaction stores nothing twice",
        bodies.iter().filter(|b| *b == "hello from evil").count() == 1,
        || format!("{bodies:?}"),
    );

    // Bad content hash: the server keeps only the redacted event.
    let template = mallory.template(
        "m.room.message",
        None,
        json!({ "msgtype": "m.text", "body": "original" }),
    );
    let (hash_id, mut tampered) = evil.sign_event(&template);
    tampered["content"]["body"] = json!("tampered after signing");
    let reply = evil.request(
        &a,
        "PUT",
        &format!("{SEND}/h1"),
        Some(&txn(evil.name(), vec![tampered])),
    );
    checks.raw("bad content hash: transaction", &reply, &[200], &[]);
    let (status, event) = get_event(&alice, &lobby, &hash_id);
    checks.check(
        "bad content hash: stored redacted",
        status == 200 && event["content"] == json!({}),
        || format!("{status} {event}"),
    );
    checks.check(
        "bad content hash: tampered text not stored",
        !a.db()
            .query_row(
                "SELECT json FROM events WHERE event_id = ?1",
                [&hash_id],
                |row| row.get::<_, String>(0),
            )
            .unwrap_or_default()
            .contains("tampered"),
        || "the tampered content is in the database".to_owned(),
    );
    if status == 200 {
        mallory.advance(&hash_id);
    }

    // Bad signature: refused outright.
    let (badsig_id, mut badsig) = evil.sign_event(&mallory.template(
        "m.room.message",
        None,
        json!({ "msgtype": "m.text", "body": "bad signature" }),
    ));
    let key_id = format!("ed25519:{evil_key_version}");
    let sig = badsig["signatures"][evil.name()][&key_id]
        .as_str()
        .expect("signed")
        .to_owned();
    let flipped: String = sig
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 5 {
                if c == 'A' { 'B' } else { 'A' }
            } else {
                c
            }
        })
        .collect();
    badsig["signatures"][evil.name()][&key_id] = json!(flipped);
    let reply = evil.request(
        &a,
        "PUT",
        &format!("{SEND}/b1"),
        Some(&txn(evil.name(), vec![badsig])),
    );
    checks.raw("bad signature: transaction", &reply, &[200], &[]);
    checks.check(
        "bad signature: the /send answer reports an error for that event ID",
        pdu_result(&reply, &badsig_id).is_some_and(|r| r["error"].is_string()),
        || format!("{}", reply.json()),
    );
    checks.check(
        "bad signature: not stored",
        !a.has_event_row(&badsig_id),
        || badsig_id.clone(),
    );
    // Impersonation: an event "from alice" signed by the puppet.
    let mut as_alice = mallory.template(
        "m.room.message",
        None,
        json!({ "msgtype": "m.text", "body": "I am alice" }),
    );
    as_alice["sender"] = json!(alice.user_id);
    as_alice["auth_events"] = json!([
        mallory.state_id("m.room.power_levels", ""),
        mallory.state_id("m.room.member", &alice.user_id),
    ]);
    let (imp_id, imp) = evil.sign_event(&as_alice);
    let reply = evil.request(
        &a,
        "PUT",
        &format!("{SEND}/i1"),
        Some(&txn(evil.name(), vec![imp])),
    );
    checks.raw("impersonation: transaction", &reply, &[200], &[]);
    checks.check(
        "impersonation: error reported",
        pdu_result(&reply, &imp_id).is_some_and(|r| r["error"].is_string()),
        || format!("{}", reply.json()),
    );
    checks.check(
        "impersonation: not stored",
        !a.has_event_row(&imp_id),
        || imp_id.clone(),
    );

    // Auth failures: stored as rejected at most, never shown, never state.
    let pl_before =
        state_ids(&alice, &lobby)[&("m.room.power_levels".to_owned(), String::new())].clone();
    let mut levels = tests::federation::state_content(&alice, &lobby, "m.room.power_levels", "")
        .expect("power levels");
    levels["users"][&mallory.user_id] = json!(100);
    let (coup_id, coup) =
        evil.sign_event(&mallory.template("m.room.power_levels", Some(""), levels));
    let reply = evil.request(
        &a,
        "PUT",
        &format!("{SEND}/p1"),
        Some(&txn(evil.name(), vec![coup])),
    );
    checks.check(
        "power grab: error reported",
        pdu_result(&reply, &coup_id).is_some_and(|r| r["error"].is_string()),
        || format!("{} {}", reply.status, reply.json()),
    );
    let pl_after =
        state_ids(&alice, &lobby)[&("m.room.power_levels".to_owned(), String::new())].clone();
    checks.check(
        "power grab: power levels unchanged",
        pl_after == pl_before,
        || format!("{pl_before} → {pl_after}"),
    );
    let shown = get_event(&alice, &lobby, &coup_id);
    checks.reply("power grab: not shown", &shown, &[404], &["M_NOT_FOUND"]);

    // A join to the invite-only room without an invite: make_join and send_join refuse it, and
    // so does /send.
    let eve = evil.user_id("eve");
    let make = evil.request(
        &a,
        "GET",
        &format!(
            "/_matrix/federation/v1/make_join/{}/{}?ver=12",
            enc(&private),
            enc(&eve)
        ),
        None,
    );
    checks.raw(
        "make_join to an invite-only room",
        &make,
        &[403],
        &["M_FORBIDDEN"],
    );
    let private_state = state_ids(&alice, &private);
    let latest = tests::federation::timeline_ids(&alice, &private)
        .last()
        .cloned()
        .expect("the private room has events");
    let latest_depth: i64 = a
        .db()
        .query_row(
            "SELECT depth FROM events WHERE event_id = ?1",
            [&latest],
            |row| row.get(0),
        )
        .expect("depth of the latest event");
    let (join_id, join) = evil.sign_event(&json!({
        "type": "m.room.member",
        "state_key": eve,
        "room_id": private,
        "sender": eve,
        "content": { "membership": "join" },
        "origin_server_ts": now_ms(),
        "depth": latest_depth + 1,
        "prev_events": [latest],
        "auth_events": [
            private_state[&("m.room.power_levels".to_owned(), String::new())],
            private_state[&("m.room.join_rules".to_owned(), String::new())],
        ],
    }));
    let reply = evil.request(
        &a,
        "PUT",
        &format!(
            "/_matrix/federation/v2/send_join/{}/{}",
            enc(&private),
            enc(&join_id)
        ),
        Some(&join),
    );
    checks.raw(
        "send_join to an invite-only room",
        &reply,
        &[403],
        &["M_FORBIDDEN"],
    );
    // A fresh event (send_join above may have stored the first as rejected).
    let mut again = join.clone();
    again["origin_server_ts"] = json!(now_ms() + 1);
    if let Some(object) = again.as_object_mut() {
        object.remove("signatures");
        object.remove("hashes");
    }
    let (join2_id, join2) = evil.sign_event(&again);
    let reply = evil.request(
        &a,
        "PUT",
        &format!("{SEND}/j1"),
        Some(&txn(evil.name(), vec![join2])),
    );
    checks.check(
        "uninvited join via /send: error reported",
        pdu_result(&reply, &join2_id).is_some_and(|r| r["error"].is_string()),
        || format!("{} {}", reply.status, reply.json()),
    );
    checks.check(
        "uninvited join: eve is not a member",
        !state_ids(&alice, &private).contains_key(&("m.room.member".to_owned(), eve.clone())),
        || "eve's join became state".to_owned(),
    );
    for id in [&join_id, &join2_id] {
        checks.reply(
            "uninvited join: not shown",
            &get_event(&alice, &private, id),
            &[404],
            &["M_NOT_FOUND"],
        );
    }

    // Reading a room the origin has no member in, asking for another server's user, and
    // spoofing another server's user in an invite or an EDU.
    let reply = evil.request(
        &a,
        "GET",
        &format!(
            "/_matrix/federation/v1/state_ids/{}?event_id={}",
            enc(&private),
            enc(&latest)
        ),
        None,
    );
    checks.raw(
        "state_ids of a room without the origin",
        &reply,
        &[403],
        &["M_FORBIDDEN"],
    );
    let reply = evil.request(
        &a,
        "GET",
        &format!("/_matrix/federation/v1/event/{}", enc(&latest)),
        None,
    );
    checks.raw(
        "event of a room without the origin",
        &reply,
        &[403, 404],
        &[],
    );
    let reply = evil.request(
        &a,
        "GET",
        &format!(
            "/_matrix/federation/v1/make_join/{}/{}?ver=12",
            enc(&lobby),
            enc(&alice.user_id)
        ),
        None,
    );
    checks.raw(
        "make_join for another server's user",
        &reply,
        &[403],
        &["M_FORBIDDEN"],
    );
    let (invite_id, invite) = evil.sign_event(&mallory.template(
        "m.room.member",
        Some(&alice.user_id),
        json!({ "membership": "invite" }),
    ));
    let mut spoofed = invite.clone();
    spoofed["sender"] = json!("@someone:unit-b.test");
    let (spoofed_id, spoofed) = sign_pdu(&evil.key(), evil.name(), &spoofed);
    let reply = evil.request(
        &a,
        "PUT",
        &format!(
            "/_matrix/federation/v2/invite/{}/{}",
            enc(&lobby),
            enc(&spoofed_id)
        ),
        Some(&json!({ "event": spoofed, "room_version": "12", "invite_room_state": [] })),
    );
    checks.raw(
        "invite whose sender is on another server",
        &reply,
        &[400, 403],
        &[],
    );
    let _ = invite_id;
    let receipts_before = a.count_rows("receipts");
    let edu = json!({
        "origin": evil.name(), "origin_server_ts": now_ms(), "pdus": [],
        "edus": [{ "edu_type": "m.receipt", "content": { lobby.clone(): { "m.read": {
            alice.user_id.clone(): { "event_ids": [good_id], "data": { "ts": 1 } } } } } }],
    });
    let reply = evil.request(&a, "PUT", &format!("{SEND}/e1"), Some(&edu));
    checks.raw("spoofed receipt EDU: transaction", &reply, &[200], &[]);
    checks.check(
        "spoofed receipt EDU: ignored",
        a.count_rows("receipts") == receipts_before,
        || "a receipt for alice was stored from evil.test".to_owned(),
    );

    // Still serving, on both listeners.
    checks.check("the unit is still running", a.is_running(), || a.log());
    checks.reply(
        "client API still answers",
        &a.anon().get("/_matrix/client/versions"),
        &[200],
        &[],
    );
    let version = fed
        .request("GET", "/_matrix/federation/v1/version", None, None)
        .expect("GET /version at the end");
    checks.raw("federation API still answers", &version, &[200], &[]);
    checks.finish();
}

#[test]
fn units_never_dial_hosts_that_are_not_allow_listed_endpoints() {
    // The "unknown" server is a real address: a naive server would dial it directly.
    let trap = ConnCounter::bind(Ipv4Addr::new(127, 0, 0, 9));
    let unknown = trap.addr().to_string();
    // A peer of B (not of A) whose server name is that same address; its card's endpoint is
    // another listener, which B may dial and A must not.
    let ghost_endpoint = ConnCounter::bind(Ipv4Addr::new(127, 0, 0, 10));
    let ghost = Puppet::new(&unknown, ghost_endpoint.addr());

    let fed = Federation::start(&["unit-a.test", "unit-b.test"]);
    fed[1].trust_card("ghost", ghost.card());
    fed[1].reload_peers();
    let alice = fed[0].register("alice");
    let bob = fed[1].register("bob");
    let room = alice.create_room(&json!({ "preset": "private_chat", "room_alias_name": "ops" }));
    let mut checks = Checks::new();
    let forbidden = |checks: &mut Checks, name: &str, reply: (u16, Value)| {
        checks.reply(name, &reply, &[403], &["M_FORBIDDEN"]);
    };

    // Clients of A name the unknown server in every way they can.
    for target in [format!("@x:{unknown}"), "@x:unknown.test".to_owned()] {
        forbidden(
            &mut checks,
            &format!("invite {target}"),
            alice.membership(&room, "invite", &json!({ "user_id": target })),
        );
    }
    forbidden(
        &mut checks,
        "join a room ID on the unknown server",
        alice.post(
            &format!(
                "/_matrix/client/v3/join/{}",
                enc(&format!("!room:{unknown}"))
            ),
            &json!({}),
        ),
    );
    forbidden(
        &mut checks,
        "join via the unknown server",
        alice.post(
            &format!(
                "/_matrix/client/v3/join/{}?via={}",
                enc("!elsewhere:unknown.test"),
                enc(&unknown)
            ),
            &json!({}),
        ),
    );
    let reply = alice.post(
        &format!(
            "/_matrix/client/v3/join/{}",
            enc(&format!("#room:{unknown}"))
        ),
        &json!({}),
    );
    checks.reply(
        "join an alias of the unknown server",
        &reply,
        &[403, 404],
        &["M_FORBIDDEN", "M_NOT_FOUND"],
    );
    let reply = alice.get(&format!(
        "/_matrix/client/v3/profile/{}",
        enc(&format!("@x:{unknown}"))
    ));
    checks.reply(
        "profile of a user of the unknown server",
        &reply,
        &[403, 404],
        &["M_FORBIDDEN", "M_NOT_FOUND"],
    );
    let reply = alice.get(&format!(
        "/_matrix/client/v3/directory/room/{}",
        enc(&format!("#room:{unknown}"))
    ));
    checks.reply(
        "alias lookup on the unknown server",
        &reply,
        &[403, 404],
        &["M_FORBIDDEN", "M_NOT_FOUND"],
    );
    let reply = alice.get(&format!(
        "/_matrix/client/v3/publicRooms?server={}",
        enc(&unknown)
    ));
    checks.reply(
        "public rooms of the unknown server",
        &reply,
        &[403, 404],
        &["M_FORBIDDEN", "M_NOT_FOUND"],
    );
    let media = alice.get(&format!(
        "/_matrix/client/v1/media/download/{unknown}/abcdef"
    ));
    checks.check(
        "media of the unknown server is not fetched",
        media.0 >= 400,
        || format!("{media:?}"),
    );
    forbidden(
        &mut checks,
        "createRoom inviting a user of the unknown server",
        alice.post(
            "/_matrix/client/v3/createRoom",
            &json!({ "invite": [format!("@x:{unknown}")] }),
        ),
    );
    forbidden(
        &mut checks,
        "invite via the state API",
        alice.put(
            &Client::state_path(&room, "m.room.member", &format!("@x:{unknown}")),
            &json!({ "membership": "invite" }),
        ),
    );

    // B allows the ghost; a ghost user joins a public room on B. A must refuse to join that
    // room, without ever contacting the ghost.
    let lounge = bob.create_room(&json!({ "preset": "public_chat", "room_alias_name": "lounge" }));
    match Member::join(&ghost, &fed[1], &lounge, "spectre") {
        Ok(_) => {}
        Err(reply) => panic!(
            "the ghost could not join B's lounge: {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        ),
    }
    let reply = alice.post(
        "/_matrix/client/v3/join/%23lounge%3Aunit-b.test",
        &json!({}),
    );
    forbidden(
        &mut checks,
        "join a room that includes a server A does not allow",
        reply,
    );
    let shared = bob.create_room(&json!({ "preset": "private_chat" }));
    bob.invite(&shared, &alice.user_id);
    wait_for_invite(&alice, &shared, DELIVERY);
    alice.join(&shared);
    // An event of B naming the ghost reaches A: A refuses it.
    ok(
        bob.membership(
            &shared,
            "ban",
            &json!({ "user_id": ghost.user_id("spectre") }),
        ),
        "bob bans the ghost's user in the shared room",
    );
    bob.send_text(&shared, "after the ban");
    let delivered = within(Duration::from_secs(15), || {
        tests::federation::timeline_bodies(&alice, &shared).contains(&"after the ban".to_owned())
    });
    checks.check(
        "B's later messages still reach A after A refused an event naming the ghost",
        delivered,
        || "\"after the ban\" never arrived at A".to_owned(),
    );
    let member = tests::federation::state_content(
        &alice,
        &shared,
        "m.room.member",
        &ghost.user_id("spectre"),
    );
    checks.check(
        "A holds no state naming the ghost's server",
        member.is_none(),
        || format!("{member:?}"),
    );

    checks.check(
        "no connection to the unknown address",
        trap.count() == 0,
        || format!("{} connections", trap.count()),
    );
    checks.finish();
}

/// A room of the puppet (room version 12): its creator's create, join, power levels and public
/// join rule, signed by the puppet.
struct PuppetRoom {
    id: String,
    /// `(event ID, PDU)` of each state event, oldest first.
    state: Vec<(String, Value)>,
}

impl PuppetRoom {
    fn new(puppet: &Puppet) -> PuppetRoom {
        let owner = puppet.user_id("owner");
        let (create_id, create) = puppet.sign_event(&json!({
            "type": "m.room.create", "state_key": "", "sender": owner,
            "content": { "room_version": "12" }, "origin_server_ts": now_ms(), "depth": 1,
            "prev_events": [], "auth_events": [],
        }));
        let id = format!("!{}", &create_id[1..]);
        let mut state = vec![(create_id.clone(), create)];
        let mut add = |kind: &str, key: &str, content: Value, auth: Vec<String>| {
            let (last, depth) = (state.last().expect("create").0.clone(), state.len() + 1);
            let signed = puppet.sign_event(&json!({
                "type": kind, "state_key": key, "room_id": id, "sender": owner,
                "content": content, "origin_server_ts": now_ms(), "depth": depth,
                "prev_events": [last], "auth_events": auth,
            }));
            state.push(signed.clone());
            signed.0
        };
        let member = add(
            "m.room.member",
            &owner,
            json!({ "membership": "join" }),
            vec![],
        );
        let levels = add("m.room.power_levels", "", json!({}), vec![member.clone()]);
        add(
            "m.room.join_rules",
            "",
            json!({ "join_rule": "public" }),
            vec![levels, member],
        );
        PuppetRoom { id, state }
    }

    fn event_id(&self, kind: &str) -> String {
        self.state
            .iter()
            .find(|(_, pdu)| pdu["type"] == kind)
            .map(|(id, _)| id.clone())
            .unwrap_or_else(|| panic!("the puppet room has no {kind}"))
    }

    /// The `make_join` template for `user_id`.
    fn template(&self, user_id: &str) -> Value {
        json!({
            "room_version": "12",
            "event": {
                "type": "m.room.member", "state_key": user_id, "room_id": self.id,
                "sender": user_id, "content": { "membership": "join" },
                "origin_server_ts": now_ms(), "depth": self.state.len() + 1,
                "prev_events": [self.event_id("m.room.join_rules")],
                "auth_events": [self.event_id("m.room.power_levels"), self.event_id("m.room.join_rules")],
            },
        })
    }
}

/// Serves the federation API of `puppet` as a resident of `room` on `listener` (TLS with the
/// puppet's certificate, HTTP/1.1 with keep-alive): `make_join` templates, and `send_join`
/// answers that carry `auth_chain` only while `with_auth_chain` is set. Transactions are
/// acknowledged; anything else is 404. Requests are not authenticated: only the unit dials it.
fn serve_as_resident(
    listener: TcpListener,
    puppet: &Puppet,
    room: Arc<PuppetRoom>,
    with_auth_chain: Arc<AtomicBool>,
) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls = puppet.data_dir().join("tls");
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(tls.join("cert.pem"))
        .expect("the puppet's certificate")
        .collect::<Result<_, _>>()
        .expect("the puppet's certificate is PEM");
    let key = PrivateKeyDer::from_pem_file(tls.join("key.pem")).expect("the puppet's TLS key");
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("rustls protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("the puppet's TLS identity"),
    );
    let origin = puppet.name().to_owned();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let (config, room, flag, origin) = (
                Arc::clone(&config),
                Arc::clone(&room),
                Arc::clone(&with_auth_chain),
                origin.clone(),
            );
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(120)));
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut stream = rustls::StreamOwned::new(conn, tcp);
                while let Some((method, path, body)) = read_request(&mut stream) {
                    let (status, answer) = if method == "GET"
                        && path.starts_with("/_matrix/federation/v1/make_join/")
                    {
                        let user = path
                            .split('/')
                            .nth(6)
                            .and_then(|u| u.split('?').next())
                            .map(|u| {
                                u.replace("%40", "@")
                                    .replace("%3A", ":")
                                    .replace("%3a", ":")
                            })
                            .unwrap_or_default();
                        (200, room.template(&user))
                    } else if method == "PUT"
                        && path.starts_with("/_matrix/federation/v2/send_join/")
                    {
                        let join: Value = serde_json::from_slice(&body).unwrap_or_default();
                        let state: Vec<Value> = room.state.iter().map(|(_, p)| p.clone()).collect();
                        let mut answer = json!({ "origin": origin, "state": state, "event": join });
                        if flag.load(Ordering::SeqCst) {
                            answer["auth_chain"] = json!(state);
                        }
                        (200, answer)
                    } else if method == "PUT" && path.starts_with("/_matrix/federation/v1/send/") {
                        (200, json!({ "pdus": {} }))
                    } else {
                        (
                            404,
                            json!({ "errcode": "M_UNRECOGNIZED", "error": "not served" }),
                        )
                    };
                    let body = answer.to_string();
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream
                        .write_all(reply.as_bytes())
                        .and_then(|()| stream.flush())
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
}

/// Reads one HTTP/1.1 request: `(method, path, body)`; `None` at the end of the connection.
fn read_request(stream: &mut impl Read) -> Option<(String, String, Vec<u8>)> {
    let mut received = Vec::new();
    let mut byte = [0u8; 1];
    while !received.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => received.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&received).into_owned();
    let mut words = head.split_whitespace();
    let (method, path) = (words.next()?.to_owned(), words.next()?.to_owned());
    let length: usize = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some((method, path, body))
}

#[test]
fn a_send_join_answer_without_auth_chain_fails_the_join_cleanly() {
    let listener =
        TcpListener::bind((Ipv4Addr::new(127, 0, 0, 12), 0)).expect("a listener for the puppet");
    let evil = Puppet::new("evil.test", listener.local_addr().expect("its address"));
    let mut a = Unit::new("unit-a.test", unit_ip(0), &UnitOptions::default());
    a.trust_card(evil.name(), evil.card());
    a.start();
    let alice = a.register("alice");
    let room = Arc::new(PuppetRoom::new(&evil));
    let with_auth_chain = Arc::new(AtomicBool::new(false));
    serve_as_resident(
        listener,
        &evil,
        Arc::clone(&room),
        Arc::clone(&with_auth_chain),
    );
    let join_path = format!(
        "/_matrix/client/v3/join/{}?via={}",
        enc(&room.id),
        enc(evil.name())
    );
    let joined = |client: &Client| -> bool {
        let (_, body) = client.get("/_matrix/client/v3/joined_rooms");
        body["joined_rooms"].to_string().contains(&room.id)
    };
    let mut checks = Checks::new();

    // `auth_chain` is required in a send_join answer (spec: joins v2): without it the resident
    // has failed, and the join fails instead of building the room on an empty chain.
    let reply = alice.post(&join_path, &json!({}));
    checks.check(
        "a join whose send_join answer lacks auth_chain fails",
        reply.0 >= 400 && reply.0 != 500,
        || format!("{reply:?}"),
    );
    checks.check(
        "the failed join left alice outside",
        !joined(&alice),
        || "alice is joined".to_owned(),
    );
    let create = room.event_id("m.room.create");
    checks.check(
        "nothing of the room is stored after the failed join",
        !a.has_event_row(&create),
        || format!("the create event {create} is stored"),
    );

    // Control: the same resident with a whole answer is joined through.
    with_auth_chain.store(true, Ordering::SeqCst);
    let reply = alice.post(&join_path, &json!({}));
    checks.reply(
        "the join with a whole send_join answer",
        &reply,
        &[200],
        &[],
    );
    checks.check("alice is joined", joined(&alice), || format!("{reply:?}"));
    checks.finish();
}
