//! Room upgrades: the new room carries the old one's settings and names it as predecessor,
//! the old room gets a tombstone and is muted, aliases move, and the permission and version
//! errors are the spec's.

use tests::{Client, TestEnv, Value, assert_error, enc, json, ok, str_field};

fn state(client: &Client, room: &str, kind: &str) -> Value {
    client.get_ok(&Client::state_path(room, kind, ""))
}

fn upgrade(client: &Client, room: &str, version: &str) -> (u16, Value) {
    client.post(
        &format!("/_matrix/client/v3/rooms/{}/upgrade", enc(room)),
        &json!({ "new_version": version }),
    )
}

#[test]
fn upgrade_carries_settings_and_tombstones_the_old_room() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let old = alice.create_room(&json!({
        "room_version": "11",
        "preset": "public_chat",
        "name": "Ops",
        "topic": "Daily ops",
        "room_alias_name": "ops",
        "initial_state": [{ "type": "m.room.encryption", "state_key": "",
                            "content": { "algorithm": "m.megolm.v1.aes-sha2" } }],
    }));
    bob.join(&old);
    assert_error(&upgrade(&bob, &old, "12"), 403, "M_FORBIDDEN");
    assert_error(
        &upgrade(&alice, &old, "99"),
        400,
        "M_UNSUPPORTED_ROOM_VERSION",
    );

    let new = str_field(
        &ok(upgrade(&alice, &old, "12"), "upgrade"),
        "replacement_room",
    );
    assert_ne!(new, old);

    let tombstone = state(&alice, &old, "m.room.tombstone");
    assert_eq!(tombstone["replacement_room"], new.as_str(), "{tombstone:#}");
    let create = state(&alice, &new, "m.room.create");
    assert_eq!(create["room_version"], "12");
    assert_eq!(create["predecessor"]["room_id"], old.as_str(), "{create:#}");
    assert_eq!(state(&alice, &new, "m.room.name")["name"], "Ops");
    assert_eq!(state(&alice, &new, "m.room.topic")["topic"], "Daily ops");
    assert_eq!(
        state(&alice, &new, "m.room.join_rules")["join_rule"],
        "public"
    );
    assert_eq!(
        state(&alice, &new, "m.room.encryption")["algorithm"],
        "m.megolm.v1.aes-sha2"
    );

    // The alias now leads to the new room, which bob can join.
    let alias = env.alias("ops");
    let resolved = alice.get_ok(&format!(
        "/_matrix/client/v3/directory/room/{}",
        enc(&alias)
    ));
    assert_eq!(resolved["room_id"], new.as_str());
    assert_eq!(bob.join(&new), new);

    // The old room is muted for ordinary members.
    let (status, body) = bob.send_event(
        &old,
        "m.room.message",
        "late",
        &json!({ "msgtype": "m.text", "body": "hello?" }),
    );
    assert_eq!(status, 403, "{body:#}");
    // Upgrading again (same version) works from the new room.
    ok(upgrade(&alice, &new, "12"), "upgrade again");
}
