//! What goes with a device, an account or a redacted event: a logged-out device's pushers, a
//! deactivated account's key backups, and the unread count of a redacted message.

use tests::{Client, TestEnv, enc, json, ok, password_for, str_field};

fn pushers(client: &Client) -> Vec<tests::Value> {
    client.get_ok("/_matrix/client/v3/pushers")["pushers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn notification_count(client: &Client, room: &str) -> i64 {
    let sync = client.sync(None, 0, None);
    sync["rooms"]["join"][room]["unread_notifications"]["notification_count"]
        .as_i64()
        .unwrap_or(0)
}

#[test]
fn logout_drops_the_devices_pushers() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let phone = env.login("alice");
    let body = json!({
        "kind": "http", "app_id": "im.example", "pushkey": "k1", "app_display_name": "App",
        "device_display_name": "Phone", "lang": "en",
        "data": { "url": "http://10.0.0.9:5000/_matrix/push/v1/notify" },
    });
    ok(
        phone.post("/_matrix/client/v3/pushers/set", &body),
        "set pusher",
    );
    assert_eq!(pushers(&alice).len(), 1);
    ok(
        phone.post("/_matrix/client/v3/logout", &json!({})),
        "logout",
    );
    assert!(
        pushers(&alice).is_empty(),
        "the logged-out device's pusher is gone"
    );
}

#[test]
fn redacted_messages_stop_counting_as_unread() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    bob.join(&room);
    let first = alice.send_text(&room, "one");
    alice.send_text(&room, "two");
    assert_eq!(notification_count(&bob, &room), 2);
    ok(
        alice.put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/r1",
                enc(&room),
                enc(&first)
            ),
            &json!({}),
        ),
        "redact",
    );
    assert_eq!(notification_count(&bob, &room), 1);
}

#[test]
fn deactivation_drops_key_backups() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let version = str_field(
        &ok(
            alice.post(
                "/_matrix/client/v3/room_keys/version",
                &json!({ "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
                         "auth_data": { "public_key": "abc" } }),
            ),
            "create backup",
        ),
        "version",
    );
    ok(
        alice.put(
            &format!(
                "/_matrix/client/v3/room_keys/keys/{}/s1?version={version}",
                enc("!r:outpost.test")
            ),
            &json!({ "first_message_index": 0, "forwarded_count": 0, "is_verified": true,
                     "session_data": { "ciphertext": "x" } }),
        ),
        "store a key",
    );
    let (status, body) = alice.post(
        "/_matrix/client/v3/account/deactivate",
        &json!({ "auth": { "type": "m.login.password",
                           "identifier": { "type": "m.id.user", "user": "alice" },
                           "password": password_for("alice") } }),
    );
    assert_eq!(status, 200, "{body:#}");
    let db = rusqlite::Connection::open(env.db_path()).expect("db");
    let keys: i64 = db
        .query_row("SELECT COUNT(*) FROM room_key_backup_keys", [], |r| {
            r.get(0)
        })
        .expect("count");
    assert_eq!(keys, 0, "the deactivated account's backed-up keys are gone");
}
