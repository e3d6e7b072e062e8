//! Restricted joins over federation between real units: a space S and a room R whose join rule
//! is `restricted` (allow: members of S) live on A. A user of B who joined S joins R through A:
//! A's `make_join` names one of its members in `join_authorised_via_users_server`, A signs the
//! join on `send_join` and returns it, and B stores the join with A's signature. A user of B who
//! is not in S is refused with `M_FORBIDDEN`; a room restricted to a space A does not hold is
//! refused with `M_UNABLE_TO_AUTHORISE_JOIN`.

use tests::federation::{DELIVERY, Federation, Unit, eventually, state_content, wait_for_bodies};
use tests::{Client, Value, enc, json, ok};

const NAMES: [&str; 2] = ["unit-a.test", "unit-b.test"];

/// Creates a room on `creator`'s unit whose join rule is `restricted` to members of `allowed`.
fn restricted_room(creator: &Client, allowed: &str, name: &str) -> String {
    creator.create_room(&json!({
        "name": name,
        "initial_state": [{ "type": "m.room.join_rules", "state_key": "",
                            "content": { "join_rule": "restricted",
                                         "allow": [{ "type": "m.room_membership",
                                                     "room_id": allowed }] } }],
    }))
}

/// `POST /join/{room}?via=..` as `client`.
fn join_via(client: &Client, room: &str, via: &str) -> (u16, Value) {
    client.post(
        &format!("/_matrix/client/v3/join/{}?via={}", enc(room), enc(via)),
        &json!({}),
    )
}

/// The stored PDU JSON of `user`'s current member event in `room`, read from `unit`'s
/// database.
fn stored_member_pdu(unit: &Unit, room: &str, user: &str) -> Value {
    let text: String = unit
        .db()
        .query_row(
            "SELECT e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
             WHERE c.room_id = ?1 AND c.event_type = 'm.room.member' AND c.state_key = ?2",
            [room, user],
            |row| row.get(0),
        )
        .unwrap_or_else(|err| {
            panic!(
                "{}: no member event of {user} in {room}: {err}",
                unit.name()
            )
        });
    serde_json::from_str(&text).expect("stored PDUs are JSON")
}

#[test]
fn restricted_room_admits_members_of_the_allowed_space_over_federation() {
    let fed = Federation::start(&NAMES);
    let alice = fed[0].register("alice");
    let bob = fed[1].register("bob");
    let carol = fed[1].register("carol");
    let space = alice.create_room(&json!({
        "name": "Team space",
        "preset": "public_chat",
        "creation_content": { "type": "m.space" },
    }));
    let room = restricted_room(&alice, &space, "Team room");

    // Carol is in no allowed room: A refuses the join and says why.
    let (status, body) = join_via(&carol, &room, NAMES[0]);
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body:#}"
    );
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("not joined to any room the join rule allows")),
        "the error explains the refusal: {body:#}"
    );
    assert!(state_content(&alice, &room, "m.room.member", &carol.user_id).is_none());

    // Bob joins the space over federation, then the restricted room.
    ok(join_via(&bob, &space, NAMES[0]), "bob joins the space");
    let joined = ok(
        join_via(&bob, &room, NAMES[0]),
        "bob joins the restricted room",
    );
    assert_eq!(joined["room_id"], room.as_str());
    let content = eventually("A to list bob as joined", DELIVERY, || match state_content(
        &alice,
        &room,
        "m.room.member",
        &bob.user_id,
    ) {
        Some(content) if content["membership"] == "join" => Ok(content),
        other => Err(format!("{other:?}")),
    });
    assert_eq!(
        content["join_authorised_via_users_server"],
        alice.user_id.as_str(),
        "{content:#}"
    );

    // The join carries A's signature (the authorising server) as well as B's, on both units.
    for unit in [&fed[0], &fed[1]] {
        let pdu = stored_member_pdu(unit, &room, &bob.user_id);
        for server in NAMES {
            assert!(
                pdu["signatures"][server].is_object(),
                "{}'s copy of the join lacks {server}'s signature: {pdu:#}",
                unit.name()
            );
        }
    }

    alice.send_text(&room, "hello over the restricted room");
    wait_for_bodies(
        &bob,
        &room,
        &["hello over the restricted room".to_owned()],
        DELIVERY,
    );
    bob.send_text(&room, "hello back");
    wait_for_bodies(&alice, &room, &["hello back".to_owned()], DELIVERY);
}

#[test]
fn a_resident_that_cannot_check_the_allowed_rooms_says_so() {
    let fed = Federation::start(&NAMES);
    let alice = fed[0].register("alice");
    let bob = fed[1].register("bob");
    // The allowed room lives on B only; A cannot see who is in it.
    let elsewhere = bob.create_room(&json!({ "name": "B's space", "preset": "public_chat" }));
    let room = restricted_room(&alice, &elsewhere, "Restricted to B's space");

    let (status, body) = join_via(&bob, &room, NAMES[0]);
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_UNABLE_TO_AUTHORISE_JOIN")),
        "{body:#}"
    );
    assert!(state_content(&alice, &room, "m.room.member", &bob.user_id).is_none());
}
