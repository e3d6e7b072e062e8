//! `/timestamp_to_event`: the event closest to a time, in either direction, only for users who
//! can see the room.

use std::thread;
use std::time::Duration;
use tests::{TestEnv, assert_error, enc, json, str_field};

#[test]
fn finds_the_closest_event_either_way() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let stranger = env.register("stranger");
    let room = alice.create_room(&json!({ "preset": "private_chat" }));
    let first = alice.send_text(&room, "first");
    thread::sleep(Duration::from_millis(20));
    let second = alice.send_text(&room, "second");
    let ts_of = |event: &str| {
        alice.get_ok(&format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            enc(&room),
            enc(event)
        ))["origin_server_ts"]
            .as_i64()
            .expect("origin_server_ts")
    };
    let (t1, t2) = (ts_of(&first), ts_of(&second));
    assert!(t2 > t1);
    let path = |ts: i64, dir: &str| {
        format!(
            "/_matrix/client/v1/rooms/{}/timestamp_to_event?ts={ts}&dir={dir}",
            enc(&room)
        )
    };
    let found = alice.get_ok(&path(t1 + 1, "f"));
    assert_eq!(str_field(&found, "event_id"), second);
    assert_eq!(found["origin_server_ts"], t2);
    let found = alice.get_ok(&path(t2 - 1, "b"));
    assert_eq!(str_field(&found, "event_id"), first);
    assert_error(&alice.get(&path(t2 + 60_000, "f")), 404, "M_NOT_FOUND");
    assert_error(&alice.get(&path(t1, "sideways")), 400, "M_INVALID_PARAM");
    assert_error(&stranger.get(&path(t1, "f")), 403, "M_FORBIDDEN");
}
