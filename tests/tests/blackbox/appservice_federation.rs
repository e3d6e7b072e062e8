//! Appservice users in rooms federated with a peer unit, like any local user (issue 17): a
//! ghost registered by the appservice on unit A joins a room that lives on unit B over
//! federation, the appservice receives B's messages in its transactions, and what it sends as
//! the ghost (with a massaged timestamp) reaches B's user. The appservice is
//! `tests::appservice::TestAppservice`, registered on A and loaded by SIGHUP.

use std::process::Command;

use tests::appservice::TestAppservice;
use tests::federation::{DELIVERY, Federation, wait_for_bodies};
use tests::{Value, enc, json, ok, poll_until, str_field};

const HS_TOKEN: &str = "hs-fed-bridge-secret";
const AS_TOKEN: &str = "as-fed-bridge-secret";
const GHOST: &str = "@bridge_alice:unit-a.test";

/// `path` acting as the ghost (`user_id` masquerading), with `extra` query pairs.
fn as_ghost(path: &str, extra: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}user_id={}{extra}", enc(GHOST))
}

#[test]
fn appservice_users_join_and_talk_in_a_room_on_a_peer_unit() {
    let fed = Federation::start(&["unit-a.test", "unit-b.test"]);
    let appservice = TestAppservice::start(HS_TOKEN);
    let yaml = appservice.registration(
        "bridge",
        AS_TOKEN,
        "bridgebot",
        [&["exclusive:@bridge_.*:unit-a\\.test"], &[], &[]],
        "",
    );
    TestAppservice::install(&fed[0].data_dir(), "bridge", &yaml);
    let status = Command::new("kill")
        .args(["-HUP", &fed[0].pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success(), "SIGHUP to unit A");

    // The appservice registers its ghost on A once the reload has loaded it.
    let bridge = fed[0].anon().with_token(Some(AS_TOKEN));
    poll_until("the appservice registers its ghost", DELIVERY, || {
        let (status, _) = bridge.post(
            "/_matrix/client/v3/register",
            &json!({"type": "m.login.application_service", "username": "bridge_alice"}),
        );
        (status == 200).then_some(())
    });

    // Bob's public room lives on B; the ghost joins it over federation.
    let bob = fed[1].register("bob");
    let room = bob.create_room(&json!({"preset": "public_chat", "name": "Bridged"}));
    ok(
        bridge.post(
            &as_ghost(
                &format!("/_matrix/client/v3/join/{}", enc(&room)),
                "&server_name=unit-b.test",
            ),
            &json!({}),
        ),
        "the ghost joins B's room",
    );

    // B's message reaches the appservice in a transaction (the ghost is a member).
    let hello = bob.send_text(&room, "hello, bridge");
    poll_until("B's message at the appservice", DELIVERY, || {
        appservice
            .events()
            .iter()
            .any(|e| e["event_id"] == hello.as_str() && e["room_id"] == room.as_str())
            .then_some(())
    });
    let from_b = appservice
        .events()
        .into_iter()
        .find(|e| e["event_id"] == hello.as_str())
        .expect("found above");
    assert_eq!(from_b["sender"], bob.user_id.as_str(), "{from_b:#}");
    assert_eq!(from_b["content"]["body"], "hello, bridge");

    // The ghost answers with a massaged timestamp; B's user sees it from the ghost.
    let reply = ok(
        bridge.put(
            &as_ghost(
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/ghost-1",
                    enc(&room)
                ),
                "&ts=1700000000000",
            ),
            &json!({"msgtype": "m.text", "body": "hello from the bridge"}),
        ),
        "the ghost sends",
    );
    let event_id = str_field(&reply, "event_id");
    wait_for_bodies(&bob, &room, &["hello from the bridge".to_owned()], DELIVERY);
    let seen: Value = bob.get_ok(&format!(
        "/_matrix/client/v3/rooms/{}/event/{}",
        enc(&room),
        enc(&event_id)
    ));
    assert_eq!(seen["sender"], GHOST, "{seen:#}");
    assert_eq!(seen["origin_server_ts"], 1_700_000_000_000_u64, "{seen:#}");
    let members = bob.get_ok(&format!(
        "/_matrix/client/v3/rooms/{}/joined_members",
        enc(&room)
    ));
    assert!(members["joined"].get(GHOST).is_some(), "{members:#}");
}
