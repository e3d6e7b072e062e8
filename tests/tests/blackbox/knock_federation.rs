//! Knocking over federation between real units: a user of B knocks on a knock room held by A
//! (`make_knock`/`send_knock`), A's members (and C, a third unit in the room) see the knock
//! with its reason, B's user sees the room under `rooms.knock` with the name from
//! `knock_state`, A's admin invites, B's user joins and messages cross. Knocks on rooms that do not accept them, through servers that are not
//! allow-listed, or with room versions the knocking server lacks are refused with the spec's
//! errors, and a knock can be rescinded through `make_leave`/`send_leave`.

use std::net::Ipv4Addr;
use tests::federation::{
    Checks, ConnCounter, DELIVERY, Federation, Puppet, free_port_on, share_room, state_content,
    unit_ip, wait_for_bodies, wait_for_invite,
};
use tests::{Client, Value, enc, json, ok, str_field};

const NAMES: [&str; 2] = ["unit-a.test", "unit-b.test"];

/// Creates a room on `creator`'s unit whose join rule is `rule`, named `name`.
fn room_with_rule(creator: &Client, rule: &str, name: &str) -> String {
    creator.create_room(&json!({
        "name": name,
        "initial_state": [{ "type": "m.room.join_rules", "state_key": "",
                            "content": { "join_rule": rule } }],
    }))
}

/// `POST /knock/{room}?via=..` as `client`.
fn knock(client: &Client, room: &str, via: &str, reason: &str) -> (u16, Value) {
    client.post(
        &format!("/_matrix/client/v3/knock/{}?via={}", enc(room), enc(via)),
        &json!({ "reason": reason }),
    )
}

/// Waits until `observer`'s unit shows `user`'s membership of `room` as `membership`; returns
/// the member event content.
fn wait_for_membership(observer: &Client, room: &str, user: &str, membership: &str) -> Value {
    tests::federation::eventually(
        &format!(
            "{user} to be {membership} in {room} as seen by {}",
            observer.user_id
        ),
        DELIVERY,
        || match state_content(observer, room, "m.room.member", user) {
            Some(content) if content["membership"] == membership => Ok(content),
            other => Err(format!("member content: {other:?}")),
        },
    )
}

#[test]
fn knock_over_federation_then_invite_join_and_talk() {
    let fed = Federation::start(&[NAMES[0], NAMES[1], "unit-c.test"]);
    let alice = fed[0].register("alice");
    let bob = fed[1].register("bob");
    let carol = fed[2].register("carol");
    // Carol (on C) is already in the room: the knock must reach her unit too.
    let room = share_room(
        &alice,
        &[&carol],
        &json!({
            "name": "Knock here",
            "initial_state": [{ "type": "m.room.join_rules", "state_key": "",
                                "content": { "join_rule": "knock" } }],
        }),
    );
    let bob_since = str_field(&bob.sync(None, 0, None), "next_batch");

    let knocked = ok(
        knock(&bob, &room, NAMES[0], "let me in"),
        "knock over federation",
    );
    assert_eq!(knocked["room_id"], room.as_str());

    // The knock is a state event of the room: A's members see it with its reason.
    let content = wait_for_membership(&alice, &room, &bob.user_id, "knock");
    assert_eq!(content["reason"], "let me in", "{content:#}");
    let relayed = wait_for_membership(&carol, &room, &bob.user_id, "knock");
    assert_eq!(relayed["reason"], "let me in", "C's copy: {relayed:#}");

    // B's user sees the room under rooms.knock, named from the resident's knock_room_state.
    let sync = bob.sync_until(Some(&bob_since), None, DELIVERY, |s| {
        s["rooms"]["knock"].get(&room).is_some()
    });
    let state = sync["rooms"]["knock"][&room]["knock_state"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        state
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Knock here"),
        "knock_state carries the room name: {sync:#}"
    );
    assert!(
        state.iter().any(|e| e["type"] == "m.room.create"),
        "knock_state carries the create event: {sync:#}"
    );
    assert!(
        state.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == bob.user_id.as_str()
            && e["content"]["membership"] == "knock"),
        "knock_state carries the knock itself: {sync:#}"
    );

    // A knocker cannot just join; the resident's admin answers with an invite.
    let (status, body) = bob.post(
        &format!(
            "/_matrix/client/v3/join/{}?via={}",
            enc(&room),
            enc(NAMES[0])
        ),
        &json!({}),
    );
    assert_eq!(status, 403, "a knocker joining uninvited: {body:#}");
    alice.invite(&room, &bob.user_id);
    wait_for_invite(&bob, &room, DELIVERY);
    assert_eq!(bob.join(&room), room);
    wait_for_membership(&alice, &room, &bob.user_id, "join");

    alice.send_text(&room, "welcome, bob");
    wait_for_bodies(&bob, &room, &["welcome, bob".to_owned()], DELIVERY);
    bob.send_text(&room, "thanks, alice");
    wait_for_bodies(&alice, &room, &["thanks, alice".to_owned()], DELIVERY);
    wait_for_bodies(
        &carol,
        &room,
        &["welcome, bob".to_owned(), "thanks, alice".to_owned()],
        DELIVERY,
    );
}

#[test]
fn knocks_that_are_not_allowed_are_refused() {
    // A server that is on no allow-list, at a real address: a knock through it must not dial.
    let trap = ConnCounter::bind(Ipv4Addr::new(127, 0, 0, 9));
    let fed = Federation::start(&NAMES);
    // A peer of A that the test speaks for, to call make_knock directly.
    let ip = unit_ip(6);
    let puppet = Puppet::new(
        "puppet.test",
        std::net::SocketAddr::from((ip, free_port_on(ip))),
    );
    fed[0].trust_card("puppet", puppet.card());
    fed[0].reload_peers();
    let alice = fed[0].register("alice");
    let bob = fed[1].register("bob");
    let private = alice.create_room(&json!({ "preset": "private_chat", "name": "Private" }));
    let knockable = room_with_rule(&alice, "knock", "Knockable");
    let mut checks = Checks::new();

    checks.reply(
        "knock on an invite-only room over federation",
        &knock(&bob, &private, NAMES[0], "please"),
        &[403],
        &["M_FORBIDDEN"],
    );
    checks.check(
        "no knock stored for the invite-only room",
        state_content(&alice, &private, "m.room.member", &bob.user_id).is_none(),
        || "bob has a member event in the private room".to_owned(),
    );
    let trap_name = trap.addr().to_string();
    checks.reply(
        "knock through a server that is not allow-listed",
        &knock(&bob, &knockable, &trap_name, "please"),
        &[403],
        &["M_FORBIDDEN"],
    );
    checks.reply(
        "knock with no server to knock through",
        &bob.post(
            &format!("/_matrix/client/v3/knock/{}", enc(&knockable)),
            &json!({}),
        ),
        &[403],
        &["M_FORBIDDEN"],
    );
    checks.check(
        "the unknown server was never dialled",
        trap.count() == 0,
        || format!("{} connection attempts", trap.count()),
    );

    // The resident side, asked directly by a peer.
    let user = enc(&puppet.user_id("mallory"));
    let make = |room: &str, query: &str| {
        puppet.request(
            &fed[0],
            "GET",
            &format!(
                "/_matrix/federation/v1/make_knock/{}/{user}{query}",
                enc(room)
            ),
            None,
        )
    };
    checks.raw(
        "make_knock without a shared room version",
        &make(&knockable, "?ver=1&ver=2"),
        &[400],
        &["M_INCOMPATIBLE_ROOM_VERSION"],
    );
    checks.raw(
        "make_knock on an invite-only room",
        &make(&private, "?ver=10&ver=11&ver=12"),
        &[403],
        &["M_FORBIDDEN"],
    );
    let template = make(&knockable, "?ver=10&ver=11&ver=12");
    checks.raw("make_knock on a knock room", &template, &[200], &[]);
    let event = &template.json()["event"];
    checks.check(
        "the template is a knock of the asking user",
        event["type"] == "m.room.member"
            && event["content"]["membership"] == "knock"
            && event["state_key"] == puppet.user_id("mallory").as_str()
            && event["room_id"] == knockable.as_str(),
        || format!("{event:#}"),
    );
    checks.raw(
        "make_knock for a user of another server",
        &puppet.request(
            &fed[0],
            "GET",
            &format!(
                "/_matrix/federation/v1/make_knock/{}/{}?ver=12",
                enc(&knockable),
                enc(&bob.user_id)
            ),
            None,
        ),
        &[403],
        &["M_FORBIDDEN"],
    );
    checks.finish();
}

#[test]
fn a_knock_can_be_rescinded() {
    let fed = Federation::start(&NAMES);
    let alice = fed[0].register("alice");
    let bob = fed[1].register("bob");
    let room = room_with_rule(&alice, "knock", "Knock and leave");

    ok(
        knock(&bob, &room, NAMES[0], "maybe"),
        "knock over federation",
    );
    wait_for_membership(&alice, &room, &bob.user_id, "knock");
    let since = str_field(&bob.sync(None, 0, None), "next_batch");

    ok(
        bob.membership(&room, "leave", &json!({})),
        "rescind the knock",
    );
    wait_for_membership(&alice, &room, &bob.user_id, "leave");
    let sync = bob.sync_until(Some(&since), None, DELIVERY, |s| {
        s["rooms"]["leave"].get(&room).is_some()
    });
    assert!(
        sync["rooms"]["knock"].get(&room).is_none(),
        "the room left rooms.knock: {sync:#}"
    );

    // Knocking again after rescinding works.
    ok(
        knock(&bob, &room, NAMES[0], "second thoughts"),
        "knock again",
    );
    let content = wait_for_membership(&alice, &room, &bob.user_id, "knock");
    assert_eq!(content["reason"], "second thoughts", "{content:#}");
}
