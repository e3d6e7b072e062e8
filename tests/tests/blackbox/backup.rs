//! Server-side key backup (`/room_keys`): version create/read/update/delete (numbers never
//! reused, deleting twice succeeds), key round trips at every level, `etag`/`count`, the
//! spec's replacement rules, writes to a version that is not current
//! (`M_WRONG_ROOM_KEYS_VERSION` with `current_version`), malformed requests, and that one user
//! can never read or touch another's backup.

use tests::{Client, TestEnv, Value, assert_error, enc, json, ok, str_field};

const VERSION: &str = "/_matrix/client/v3/room_keys/version";
const ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";
const ROOM: &str = "!room:outpost.test";
const OTHER_ROOM: &str = "!other:outpost.test";

fn auth_data(public_key: &str) -> Value {
    json!({
        "public_key": public_key,
        "signatures": { "@alice:outpost.test": { "ed25519:DEV": "sig" } },
    })
}

fn create(client: &Client, public_key: &str) -> String {
    let body = ok(
        client.post(
            VERSION,
            &json!({ "algorithm": ALGORITHM, "auth_data": auth_data(public_key) }),
        ),
        "create backup version",
    );
    str_field(&body, "version")
}

fn keys_path(version: &str, room: Option<&str>, session: Option<&str>) -> String {
    let mut path = "/_matrix/client/v3/room_keys/keys".to_owned();
    if let Some(room) = room {
        path.push('/');
        path.push_str(&enc(room));
    }
    if let Some(session) = session {
        path.push('/');
        path.push_str(&enc(session));
    }
    format!("{path}?version={}", enc(version))
}

fn key(verified: bool, first_message_index: u64, forwarded_count: u64, data: &str) -> Value {
    json!({
        "first_message_index": first_message_index,
        "forwarded_count": forwarded_count,
        "is_verified": verified,
        "session_data": { "ephemeral": "eph", "ciphertext": data, "mac": "mac" },
    })
}

fn put_session(client: &Client, version: &str, room: &str, session: &str, body: &Value) -> Value {
    ok(
        client.put(&keys_path(version, Some(room), Some(session)), body),
        &format!("PUT key {room}/{session}"),
    )
}

fn get_session(client: &Client, version: &str, room: &str, session: &str) -> Value {
    ok(
        client.get(&keys_path(version, Some(room), Some(session))),
        &format!("GET key {room}/{session}"),
    )
}

fn etag(body: &Value) -> String {
    str_field(body, "etag")
}

#[test]
fn version_lifecycle() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    assert_error(&alice.get(VERSION), 404, "M_NOT_FOUND");

    let first = create(&alice, "key-1");
    let current = ok(alice.get(VERSION), "current version");
    assert_eq!(current["version"], first.as_str());
    assert_eq!(current["algorithm"], ALGORITHM);
    assert_eq!(current["auth_data"], auth_data("key-1"));
    assert_eq!(current["count"], 0);
    assert!(current["etag"].is_string(), "{current:#}");
    let by_number = ok(alice.get(&format!("{VERSION}/{first}")), "GET version");
    assert_eq!(by_number, current);

    // Only auth_data can change.
    ok(
        alice.put(
            &format!("{VERSION}/{first}"),
            &json!({ "algorithm": ALGORITHM, "auth_data": auth_data("key-1b"), "version": first }),
        ),
        "update auth_data",
    );
    assert_eq!(
        ok(alice.get(VERSION), "after update")["auth_data"],
        auth_data("key-1b")
    );
    assert_error(
        &alice.put(
            &format!("{VERSION}/{first}"),
            &json!({ "algorithm": "org.example.other", "auth_data": {} }),
        ),
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &alice.put(
            &format!("{VERSION}/{first}"),
            &json!({ "algorithm": ALGORITHM, "auth_data": {}, "version": "77" }),
        ),
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &alice.put(
            &format!("{VERSION}/77"),
            &json!({ "algorithm": ALGORITHM, "auth_data": {} }),
        ),
        404,
        "M_NOT_FOUND",
    );

    // A newer version becomes current; deleting it makes the older one current again.
    let second = create(&alice, "key-2");
    assert_ne!(second, first);
    assert_eq!(
        ok(alice.get(VERSION), "current")["version"],
        second.as_str()
    );
    ok(alice.delete(&format!("{VERSION}/{second}")), "delete");
    ok(
        alice.delete(&format!("{VERSION}/{second}")),
        "deleting a deleted version succeeds",
    );
    assert_error(
        &alice.get(&format!("{VERSION}/{second}")),
        404,
        "M_NOT_FOUND",
    );
    assert_eq!(ok(alice.get(VERSION), "current")["version"], first.as_str());
    assert_error(&alice.delete(&format!("{VERSION}/77")), 404, "M_NOT_FOUND");
    assert_error(
        &alice.get(&format!("{VERSION}/not-a-version")),
        404,
        "M_NOT_FOUND",
    );

    // Version numbers are never reused.
    let third = create(&alice, "key-3");
    assert!(
        third != first && third != second,
        "{first} {second} {third}"
    );
    ok(alice.delete(&format!("{VERSION}/{third}")), "delete third");
    ok(alice.delete(&format!("{VERSION}/{first}")), "delete first");
    assert_error(&alice.get(VERSION), 404, "M_NOT_FOUND");
}

#[test]
fn keys_round_trip_at_every_level_with_etag_and_count() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let version = create(&alice, "k");
    let start_etag = etag(&ok(alice.get(VERSION), "version"));

    let one = put_session(&alice, &version, ROOM, "s1", &key(true, 0, 0, "c1"));
    assert_eq!(one["count"], 1);
    assert_ne!(etag(&one), start_etag);
    assert_eq!(
        get_session(&alice, &version, ROOM, "s1"),
        key(true, 0, 0, "c1")
    );

    let room = ok(
        alice.put(
            &keys_path(&version, Some(ROOM), None),
            &json!({ "sessions": { "s2": key(false, 1, 0, "c2"), "s3": key(false, 2, 1, "c3") } }),
        ),
        "PUT room keys",
    );
    assert_eq!(room["count"], 3);
    assert_ne!(etag(&room), etag(&one));

    let all = ok(
        alice.put(
            &keys_path(&version, None, None),
            &json!({ "rooms": { OTHER_ROOM: { "sessions": { "s4": key(true, 3, 0, "c4") } } } }),
        ),
        "PUT all keys",
    );
    assert_eq!(all["count"], 4);
    let info = ok(alice.get(VERSION), "version");
    assert_eq!(info["count"], 4);
    assert_eq!(info["etag"], all["etag"]);

    let everything = ok(alice.get(&keys_path(&version, None, None)), "GET all");
    assert_eq!(
        everything,
        json!({ "rooms": {
            ROOM: { "sessions": {
                "s1": key(true, 0, 0, "c1"),
                "s2": key(false, 1, 0, "c2"),
                "s3": key(false, 2, 1, "c3"),
            } },
            OTHER_ROOM: { "sessions": { "s4": key(true, 3, 0, "c4") } },
        } })
    );
    assert_eq!(
        ok(
            alice.get(&keys_path(&version, Some(OTHER_ROOM), None)),
            "GET room"
        ),
        json!({ "sessions": { "s4": key(true, 3, 0, "c4") } })
    );
    assert_eq!(
        ok(
            alice.get(&keys_path(&version, Some("!empty:outpost.test"), None)),
            "GET empty room"
        ),
        json!({ "sessions": {} })
    );
    assert_error(
        &alice.get(&keys_path(&version, Some(ROOM), Some("nope"))),
        404,
        "M_NOT_FOUND",
    );

    // An upload that changes nothing leaves the etag alone.
    let same = put_session(&alice, &version, ROOM, "s1", &key(true, 0, 0, "c1-again"));
    assert_eq!((same["count"].clone(), etag(&same)), (json!(4), etag(&all)));

    let deleted_one = ok(
        alice.delete(&keys_path(&version, Some(ROOM), Some("s2"))),
        "DELETE session",
    );
    assert_eq!(deleted_one["count"], 3);
    assert_ne!(etag(&deleted_one), etag(&all));
    assert_error(
        &alice.get(&keys_path(&version, Some(ROOM), Some("s2"))),
        404,
        "M_NOT_FOUND",
    );
    let deleted_room = ok(
        alice.delete(&keys_path(&version, Some(ROOM), None)),
        "DELETE room",
    );
    assert_eq!(deleted_room["count"], 1);
    let deleted_all = ok(alice.delete(&keys_path(&version, None, None)), "DELETE all");
    assert_eq!(deleted_all["count"], 0);
    assert_eq!(
        ok(alice.get(&keys_path(&version, None, None)), "GET all"),
        json!({ "rooms": {} })
    );
    // Deleting nothing changes nothing.
    let again = ok(
        alice.delete(&keys_path(&version, None, None)),
        "DELETE all again",
    );
    assert_eq!(etag(&again), etag(&deleted_all));

    // Deleting the version takes its keys with it.
    put_session(&alice, &version, ROOM, "s1", &key(true, 0, 0, "c1"));
    ok(
        alice.delete(&format!("{VERSION}/{version}")),
        "delete version",
    );
    assert_error(
        &alice.get(&keys_path(&version, None, None)),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &alice.put(
            &keys_path(&version, Some(ROOM), Some("s1")),
            &key(true, 0, 0, "c1"),
        ),
        404,
        "M_NOT_FOUND",
    );
}

#[test]
fn replacement_rules_decide_which_key_is_kept() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let version = create(&alice, "k");
    let kept = |expected: &Value| {
        assert_eq!(&get_session(&alice, &version, ROOM, "s"), expected);
    };
    let put = |body: &Value| put_session(&alice, &version, ROOM, "s", body);

    let a = key(false, 5, 1, "a");
    put(&a);
    kept(&a);
    // A higher first_message_index loses, even with a lower forwarded_count.
    let before = put(&key(false, 6, 0, "b"));
    kept(&a);
    // Same index: the lower forwarded_count wins.
    let c = key(false, 5, 0, "c");
    let after_c = put(&c);
    kept(&c);
    assert_ne!(etag(&after_c), etag(&before));
    // Verified beats unverified whatever the numbers.
    let d = key(true, 9, 9, "d");
    put(&d);
    kept(&d);
    put(&key(false, 0, 0, "e"));
    kept(&d);
    // A full tie keeps the stored key, and the etag stays.
    let tie_before = etag(&ok(alice.get(VERSION), "version"));
    let tie = put(&key(true, 9, 9, "f"));
    kept(&d);
    assert_eq!(etag(&tie), tie_before);
    // Among verified keys the lower index wins.
    let g = key(true, 2, 9, "g");
    put(&g);
    kept(&g);
    assert_eq!(ok(alice.get(VERSION), "version")["count"], 1);
}

#[test]
fn keys_go_only_to_the_current_version() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let old = create(&alice, "old");
    let current = create(&alice, "new");

    let wrong = alice.put(
        &keys_path(&old, Some(ROOM), Some("s")),
        &key(true, 0, 0, "x"),
    );
    assert_error(&wrong, 403, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(
        wrong.1["current_version"],
        current.as_str(),
        "{:#}",
        wrong.1
    );
    let bulk = [
        (
            keys_path(&old, Some(ROOM), None),
            json!({ "sessions": { "s": key(true, 0, 0, "x") } }),
        ),
        (
            keys_path(&old, None, None),
            json!({ "rooms": { ROOM: { "sessions": { "s": key(true, 0, 0, "x") } } } }),
        ),
    ];
    for (path, body) in bulk {
        let reply = alice.put(&path, &body);
        assert_error(&reply, 403, "M_WRONG_ROOM_KEYS_VERSION");
        assert_eq!(reply.1["current_version"], current.as_str());
    }
    assert_error(
        &alice.put(
            &keys_path("77", Some(ROOM), Some("s")),
            &key(true, 0, 0, "x"),
        ),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &alice.put("/_matrix/client/v3/room_keys/keys", &json!({ "rooms": {} })),
        400,
        "M_MISSING_PARAM",
    );
    assert_error(
        &alice.get("/_matrix/client/v3/room_keys/keys"),
        400,
        "M_MISSING_PARAM",
    );
    // Old versions can still be read.
    assert_eq!(
        ok(alice.get(&keys_path(&old, None, None)), "read old"),
        json!({ "rooms": {} })
    );

    // Once the newer one is deleted, the older one is current and writable again; the
    // deleted one is gone for writes.
    ok(
        alice.delete(&format!("{VERSION}/{current}")),
        "delete current",
    );
    let stored = put_session(&alice, &old, ROOM, "s", &key(true, 0, 0, "x"));
    assert_eq!(stored["count"], 1);
    assert_error(
        &alice.put(
            &keys_path(&current, Some(ROOM), Some("s")),
            &key(true, 0, 0, "x"),
        ),
        404,
        "M_NOT_FOUND",
    );
}

#[test]
fn malformed_requests_are_refused() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    assert_error(
        &alice.post(VERSION, &json!({ "algorithm": ALGORITHM })),
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &alice.post(
            VERSION,
            &json!({ "algorithm": ALGORITHM, "auth_data": "text" }),
        ),
        400,
        "M_BAD_JSON",
    );
    let version = create(&alice, "k");
    let session = keys_path(&version, Some(ROOM), Some("s"));
    for bad in [
        json!({ "forwarded_count": 0, "is_verified": true, "session_data": {} }),
        key(true, 0, 0, "x")
            .as_object()
            .map(|o| {
                let mut o = o.clone();
                o.insert("first_message_index".to_owned(), json!(-1));
                Value::Object(o)
            })
            .expect("object"),
        json!({ "first_message_index": 0, "forwarded_count": 0, "is_verified": "yes",
                "session_data": {} }),
        json!({ "first_message_index": 0, "forwarded_count": 0, "is_verified": true,
                "session_data": "opaque" }),
    ] {
        assert_error(&alice.put(&session, &bad), 400, "M_BAD_JSON");
    }
    assert_error(
        &alice.put(
            &keys_path(&version, Some("not-a-room"), Some("s")),
            &key(true, 0, 0, "x"),
        ),
        400,
        "M_INVALID_PARAM",
    );
    assert_error(&env.anon().get(VERSION), 401, "M_MISSING_TOKEN");
    assert_eq!(
        ok(alice.get(VERSION), "version")["count"],
        0,
        "nothing was stored"
    );
}

#[test]
fn users_never_see_each_others_backups() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let version = create(&alice, "alice-key");
    put_session(
        &alice,
        &version,
        ROOM,
        "s",
        &key(true, 0, 0, "alice-secret"),
    );

    assert_error(&bob.get(VERSION), 404, "M_NOT_FOUND");
    assert_error(
        &bob.get(&format!("{VERSION}/{version}")),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &bob.get(&keys_path(&version, None, None)),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &bob.get(&keys_path(&version, Some(ROOM), Some("s"))),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &bob.put(
            &keys_path(&version, Some(ROOM), Some("s")),
            &key(true, 0, 0, "bob"),
        ),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &bob.delete(&keys_path(&version, None, None)),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &bob.delete(&format!("{VERSION}/{version}")),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &bob.put(
            &format!("{VERSION}/{version}"),
            &json!({ "algorithm": ALGORITHM, "auth_data": {} }),
        ),
        404,
        "M_NOT_FOUND",
    );

    // Bob's own backup is separate even when its version string is the same.
    let bobs = create(&bob, "bob-key");
    put_session(&bob, &bobs, ROOM, "s", &key(false, 4, 4, "bob-secret"));
    assert_eq!(
        get_session(&alice, &version, ROOM, "s"),
        key(true, 0, 0, "alice-secret")
    );
    assert_eq!(
        get_session(&bob, &bobs, ROOM, "s"),
        key(false, 4, 4, "bob-secret")
    );
    assert_eq!(
        ok(alice.get(VERSION), "alice's version")["auth_data"],
        auth_data("alice-key")
    );
}
