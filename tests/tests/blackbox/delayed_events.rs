//! Delayed events (MSC4140), as MatrixRTC clients use them: scheduled through `/send` and
//! `/state` with `?org.matrix.msc4140.delay=` or the `delayed_event` endpoint, sent by the unit
//! at their time (never before), managed with send / cancel / restart, kept across a restart,
//! checked against the room's rules when they are sent, and bounded by the unit's limits.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tests::{Client, TestEnv, assert_error, enc, json, poll_until, str_field};

const PREFIX: &str = "/_matrix/client/unstable/org.matrix.msc4140";
const DEADLINE: Duration = Duration::from_secs(30);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

fn send_delayed(client: &Client, room: &str, txn: &str, delay_ms: u64, body: &str) -> String {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}?org.matrix.msc4140.delay={delay_ms}",
        enc(room)
    );
    let answer = client.put_ok(&path, &json!({"msgtype": "m.text", "body": body}));
    assert!(answer.get("event_id").is_none(), "{answer:#}");
    str_field(&answer, "delay_id")
}

fn delayed(client: &Client, delay_id: &str) -> (u16, Value) {
    client.get(&format!("{PREFIX}/delayed_events/{}", enc(delay_id)))
}

fn act(client: &Client, delay_id: &str, action: &str) -> (u16, Value) {
    client.post(
        &format!("{PREFIX}/delayed_events/{}/{action}", enc(delay_id)),
        &json!({}),
    )
}

fn room_bodies(client: &Client, room: &str) -> Vec<String> {
    tests::bodies(&client.all_messages(room, "f", None))
}

#[test]
fn a_delayed_message_goes_out_at_its_time_and_only_its_sender_sees_the_delay_id() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = alice.create_room(&json!({"preset": "public_chat"}));
    bob.join(&room);

    let delay_id = send_delayed(&alice, &room, "t1", 1500, "later");
    // Retrying the request (same transaction ID) gives the same delayed event.
    assert_eq!(send_delayed(&alice, &room, "t1", 1500, "later"), delay_id);
    assert!(!room_bodies(&alice, &room).contains(&"later".to_owned()));
    let listed = alice.get_ok(&format!("{PREFIX}/delayed_events"));
    let entries = listed["delayed_events"].as_array().expect("delayed_events");
    assert_eq!(entries.len(), 1, "{listed:#}");
    assert_eq!(entries[0]["delay_id"], delay_id.as_str());
    assert_eq!(entries[0]["room_id"], room.as_str());
    assert_eq!(entries[0]["type"], "m.room.message");
    assert_eq!(entries[0]["delay_ms"], 1500);
    assert_eq!(entries[0]["content"]["body"], "later");
    assert!(entries[0].get("finalised_ts").is_none(), "{listed:#}");
    let scheduled_at = entries[0]["scheduled_at"].as_i64().expect("scheduled_at");
    // Bob does not see alice's.
    assert_eq!(
        bob.get_ok(&format!("{PREFIX}/delayed_events"))["delayed_events"],
        json!([])
    );
    assert_error(&delayed(&bob, &delay_id), 404, "M_NOT_FOUND");

    let sent = poll_until("the delayed message to be sent", DEADLINE, || {
        let (status, body) = delayed(&alice, &delay_id);
        assert_eq!(status, 200, "{body:#}");
        body.get("event_id").is_some().then_some(body)
    });
    let event_id = str_field(&sent, "event_id");
    assert!(sent["finalised_ts"].as_i64().is_some(), "{sent:#}");
    assert!(sent.get("error").is_none(), "{sent:#}");
    let event = alice.get_ok(&format!(
        "/_matrix/client/v3/rooms/{}/event/{}",
        enc(&room),
        enc(&event_id)
    ));
    assert_eq!(event["content"]["body"], "later");
    assert_eq!(event["sender"], alice.user_id.as_str());
    // Never before its time.
    assert!(
        event["origin_server_ts"].as_i64().expect("ts") >= scheduled_at + 1500,
        "sent at {} but due at {}",
        event["origin_server_ts"],
        scheduled_at + 1500
    );
    assert_eq!(
        event["unsigned"]["org.matrix.msc4140.delay_id"],
        delay_id.as_str()
    );
    let seen_by_bob = bob.get_ok(&format!(
        "/_matrix/client/v3/rooms/{}/event/{}",
        enc(&room),
        enc(&event_id)
    ));
    assert!(
        seen_by_bob["unsigned"]
            .get("org.matrix.msc4140.delay_id")
            .is_none(),
        "{seen_by_bob:#}"
    );
    assert_eq!(
        alice.get_ok(&format!("{PREFIX}/delayed_events"))["delayed_events"],
        json!([])
    );
    // The same transaction ID after it went out still names the same delayed event.
    assert_eq!(send_delayed(&alice, &room, "t1", 1500, "later"), delay_id);
    assert_eq!(
        room_bodies(&bob, &room)
            .iter()
            .filter(|b| *b == "later")
            .count(),
        1
    );
}

#[test]
fn send_cancel_and_restart_follow_the_msc_rules() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({}));

    // Cancel: never sent; cancelling again is fine; sending it now conflicts.
    let cancelled = send_delayed(&alice, &room, "c", 60_000, "cancelled");
    assert_eq!(act(&alice, &cancelled, "cancel").0, 200);
    let (_, body) = delayed(&alice, &cancelled);
    assert!(body["finalised_ts"].as_i64().is_some(), "{body:#}");
    assert!(body.get("event_id").is_none() && body.get("error").is_none());
    assert_eq!(act(&alice, &cancelled, "cancel").0, 200);
    assert_error(&act(&alice, &cancelled, "send"), 409, "M_UNKNOWN");
    assert_error(&act(&alice, &cancelled, "restart"), 409, "M_UNKNOWN");

    // Restart moves scheduled_at forward; send sends at once, and again is fine.
    let later = send_delayed(&alice, &room, "s", 60_000, "sent now");
    let first = delayed(&alice, &later).1["scheduled_at"]
        .as_i64()
        .expect("scheduled_at");
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(act(&alice, &later, "restart").0, 200);
    let restarted = delayed(&alice, &later).1["scheduled_at"]
        .as_i64()
        .expect("scheduled_at");
    assert!(restarted > first, "{first} -> {restarted}");
    assert_eq!(act(&alice, &later, "send").0, 200);
    let (_, body) = delayed(&alice, &later);
    let event_id = str_field(&body, "event_id");
    assert!(room_bodies(&alice, &room).contains(&"sent now".to_owned()));
    assert_eq!(act(&alice, &later, "send").0, 200);
    assert_error(&act(&alice, &later, "cancel"), 409, "M_UNKNOWN");
    assert_eq!(str_field(&delayed(&alice, &later).1, "event_id"), event_id);

    // The earlier form with the action in the body, as released js-sdk versions send it.
    let in_body = send_delayed(&alice, &room, "b", 60_000, "in body");
    let (status, body) = alice.post(
        &format!("{PREFIX}/delayed_events/{}", enc(&in_body)),
        &json!({"action": "cancel"}),
    );
    assert_eq!(status, 200, "{body:#}");

    assert_error(&act(&alice, "nonexistent", "send"), 404, "M_NOT_FOUND");
    assert_error(&act(&alice, &in_body, "explode"), 400, "M_INVALID_PARAM");
    assert_error(
        &alice.put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/z?org.matrix.msc4140.delay=soon",
                enc(&room)
            ),
            &json!({"body": "x"}),
        ),
        400,
        "M_INVALID_PARAM",
    );
}

#[test]
fn the_delayed_event_endpoint_schedules_state_that_survives_a_restart() {
    let mut env = TestEnv::unlimited();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({}));
    let key = format!("_{}_DEVICE", alice.user_id);
    let (status, answer) = alice.put(
        &format!(
            "{PREFIX}/rooms/{}/delayed_event/org.matrix.msc3401.call.member/txn1",
            enc(&room)
        ),
        &json!({"delay_ms": 2000, "state_key": key, "content": {}}),
    );
    assert_eq!(status, 200, "{answer:#}");
    let delay_id = str_field(&answer, "delay_id");
    // The call is joined meanwhile; the delayed "left" state replaces it later.
    alice.put_state(
        &room,
        "org.matrix.msc3401.call.member",
        &key,
        &json!({"application": "m.call", "call_id": ""}),
    );
    let due = delayed(&alice, &delay_id).1["scheduled_at"]
        .as_i64()
        .expect("scheduled_at")
        + 2000;

    // The unit is down when the event falls due; it goes out once the unit is back.
    env.kill9();
    poll_until("the delayed event to fall due", DEADLINE, || {
        (now_ms() > due + 200).then_some(())
    });
    env.restart();
    let path = Client::state_path(&room, "org.matrix.msc3401.call.member", &key);
    poll_until(
        "the delayed state to be sent after the restart",
        DEADLINE,
        || {
            let (status, content) = alice.get(&path);
            (status == 200 && content == json!({})).then_some(())
        },
    );
    let (_, body) = delayed(&alice, &delay_id);
    assert!(body.get("event_id").is_some(), "{body:#}");
}

#[test]
fn a_delayed_event_is_authorised_when_it_is_sent_not_when_scheduled() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = alice.create_room(&json!({"preset": "public_chat"}));
    bob.join(&room);
    let path = format!(
        "{}?org.matrix.msc4140.delay=60000",
        Client::state_path(&room, "m.room.name", "")
    );
    let answer = bob.put_ok(&path, &json!({"name": "bob's room"}));
    let delay_id = str_field(&answer, "delay_id");

    // Sending it now fails as an immediate send would, and it stays scheduled.
    assert_error(&act(&bob, &delay_id, "send"), 403, "M_FORBIDDEN");
    let (_, body) = delayed(&bob, &delay_id);
    assert!(body.get("finalised_ts").is_none(), "{body:#}");

    // Once alice gives bob the power, the same delayed event goes through.
    let mut levels = alice.get_ok(&Client::state_path(&room, "m.room.power_levels", ""));
    levels["users"][bob.user_id.as_str()] = json!(50);
    alice.put_state(&room, "m.room.power_levels", "", &levels);
    assert_eq!(act(&bob, &delay_id, "send").0, 200);
    let name = alice.get_ok(&Client::state_path(&room, "m.room.name", ""));
    assert_eq!(name["name"], "bob's room");

    // One that falls due while forbidden is dropped with the error the send got.
    let mut levels = alice.get_ok(&Client::state_path(&room, "m.room.power_levels", ""));
    levels["users"][bob.user_id.as_str()] = json!(0);
    alice.put_state(&room, "m.room.power_levels", "", &levels);
    let path = format!(
        "{}?org.matrix.msc4140.delay=500",
        Client::state_path(&room, "m.room.topic", "")
    );
    let delay_id = str_field(&bob.put_ok(&path, &json!({"topic": "no"})), "delay_id");
    let failed = poll_until("the forbidden delayed event to fail", DEADLINE, || {
        let (_, body) = delayed(&bob, &delay_id);
        body.get("finalised_ts").is_some().then_some(body)
    });
    assert_eq!(failed["error"]["errcode"], "M_FORBIDDEN", "{failed:#}");
    assert!(failed.get("event_id").is_none(), "{failed:#}");
}

#[test]
fn limits_are_enforced_and_advertised() {
    let env = TestEnv::with_config(
        "[registration]\nenabled = true\n\n[rate_limit]\nenabled = false\n\n\
         [limits]\ndelayed_event_max_delay_ms = 10000\ndelayed_events_per_user = 2\n",
    );
    let alice = env.register("alice");
    let room = alice.create_room(&json!({}));

    let versions = env.anon().get_ok("/_matrix/client/versions");
    assert_eq!(versions["unstable_features"]["org.matrix.msc4140"], true);
    let caps = alice.get_ok("/_matrix/client/v3/capabilities");
    assert_eq!(
        caps["capabilities"]["org.matrix.msc4140.delayed_events"],
        json!({"max_delay_ms": 10000, "max_scheduled": 2})
    );

    let too_long = alice.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/long?org.matrix.msc4140.delay=10001",
            enc(&room)
        ),
        &json!({"body": "x"}),
    );
    assert_error(&too_long, 403, "M_FORBIDDEN");
    let zero = alice.put(
        &format!(
            "{PREFIX}/rooms/{}/delayed_event/m.room.message/zero",
            enc(&room)
        ),
        &json!({"delay_ms": 0, "content": {}}),
    );
    assert_error(&zero, 400, "M_INVALID_PARAM");

    send_delayed(&alice, &room, "one", 9000, "one");
    send_delayed(&alice, &room, "two", 9000, "two");
    let body = json!({"body": "three"}).to_string();
    let response = alice.request(
        "PUT",
        &format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/three?org.matrix.msc4140.delay=9000",
            enc(&room)
        ),
        &[],
        Some(body.as_bytes()),
    );
    assert_eq!(response.status, 429);
    assert_eq!(response.json()["errcode"], "M_LIMIT_EXCEEDED");
    let retry: u64 = response
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=10).contains(&retry), "Retry-After {retry}");
}
