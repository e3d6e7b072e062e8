//! End-to-end encryption support on one unit, driven by vodozemac devices: key upload, query
//! and claim (one-time keys first, then the fallback key), one-time key counts and fallback
//! types in `/sync`, an Olm + Megolm round trip between two users, to-device delivery exactly
//! once with idempotent transactions, `device_lists` in `/sync` and `/keys/changes`, devices
//! (list, rename, delete with UIA), cross-signing verified with ed25519, and bad input.

use std::time::Duration;
use tests::e2ee::{Device, MEGOLM, megolm_encrypt, verify_signature};
use tests::{TestEnv, Value, assert_error, enc, json, ok, password_for, str_field, timeline};
use vodozemac::Ed25519Keypair;
use vodozemac::megolm::{GroupSession, SessionConfig};

const DEADLINE: Duration = Duration::from_secs(10);

fn to_device_events(sync: &Value) -> Vec<Value> {
    sync["to_device"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn next_batch(sync: &Value) -> String {
    str_field(sync, "next_batch")
}

#[test]
fn keys_upload_query_claim_and_counts() {
    let env = TestEnv::dev();
    let mut bob = Device::new(env.register("bob"));
    let alice = Device::new(env.register("alice"));

    bob.publish_device_keys();
    let counts = bob.publish_one_time_keys(2);
    assert_eq!(
        counts["one_time_key_counts"]["signed_curve25519"], 2,
        "{counts:#}"
    );
    bob.publish_fallback_key();

    let sync = bob.client.sync(None, 0, None);
    assert_eq!(
        sync["device_one_time_keys_count"]["signed_curve25519"], 2,
        "{sync:#}"
    );
    assert_eq!(
        sync["device_unused_fallback_key_types"],
        json!(["signed_curve25519"]),
        "{sync:#}"
    );

    // Query: the device keys as signed, with the device's display name in `unsigned`.
    let queried = alice.query(bob.user_id());
    let keys = &queried["device_keys"][bob.user_id()][bob.device_id()];
    let ed_id = format!("ed25519:{}", bob.device_id());
    assert!(
        verify_signature(keys, bob.user_id(), &ed_id, &bob.ed_key()),
        "queried keys keep bob's valid signature: {queried:#}"
    );

    // Claim: the two one-time keys, then the fallback key (again and again), never an error.
    let mut claimed = Vec::new();
    for _ in 0..4 {
        let reply = alice.claim(bob.user_id(), bob.device_id());
        let key = reply["one_time_keys"][bob.user_id()][bob.device_id()].clone();
        assert!(key.is_object(), "a key each time: {reply:#}");
        claimed.push(key);
    }
    assert_ne!(claimed[0], claimed[1], "one-time keys are handed out once");
    assert_eq!(claimed[2], claimed[3], "after that, the fallback key");
    let fallback = claimed[2]
        .as_object()
        .expect("key map")
        .values()
        .next()
        .expect("key");
    assert_eq!(fallback["fallback"], true, "{fallback:#}");

    let sync = bob.client.sync(None, 0, None);
    assert_eq!(
        sync["device_one_time_keys_count"]["signed_curve25519"], 0,
        "{sync:#}"
    );
    assert_eq!(
        sync["device_unused_fallback_key_types"],
        json!([]),
        "{sync:#}"
    );

    // A new fallback key is unused again.
    bob.publish_fallback_key();
    let sync = bob.client.sync(None, 0, None);
    assert_eq!(
        sync["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );

    // Unknown users and devices: empty, not an error.
    let reply = ok(
        alice.client.post(
            "/_matrix/client/v3/keys/claim",
            &json!({ "one_time_keys": {
                "@nobody:outpost.test": { "X": "signed_curve25519" },
                bob.user_id(): { "NODEVICE": "signed_curve25519" },
            } }),
        ),
        "claim unknown",
    );
    assert_eq!(reply["one_time_keys"], json!({}), "{reply:#}");
    let reply = alice.query("@nobody:outpost.test");
    assert_eq!(
        reply["device_keys"]["@nobody:outpost.test"],
        json!({}),
        "{reply:#}"
    );
}

#[test]
fn olm_and_megolm_round_trip_on_one_unit() {
    let env = TestEnv::dev();
    let mut alice = Device::new(env.register("alice"));
    let mut bob = Device::new(env.register("bob"));
    for device in [&mut alice, &mut bob] {
        device.publish_device_keys();
        device.publish_one_time_keys(5);
    }
    let room = alice.client.create_room(&json!({
        "preset": "private_chat",
        "invite": [bob.user_id()],
        "initial_state": [{ "type": "m.room.encryption", "state_key": "",
                            "content": { "algorithm": MEGOLM } }],
    }));
    bob.client.join(&room);
    let bob_start = next_batch(&bob.client.sync(None, 0, None));

    let curve = alice.start_olm(bob.user_id(), bob.device_id());
    let mut session = GroupSession::new(SessionConfig::version_1());
    let (bob_user, bob_device, bob_ed) = (
        bob.user_id().to_owned(),
        bob.device_id().to_owned(),
        bob.ed_key(),
    );
    alice.share_room_key(&curve, &bob_user, &bob_device, &bob_ed, &room, &session);
    let content = megolm_encrypt(&alice, &mut session, &room, "secret plans");
    ok(
        alice
            .client
            .send_event(&room, "m.room.encrypted", "enc-1", &content),
        "send encrypted",
    );

    let sync = bob
        .client
        .sync_until(Some(&bob_start), None, DEADLINE, |s| {
            !to_device_events(s).is_empty() && !timeline(s, &room).is_empty()
        });
    let events = to_device_events(&sync);
    assert_eq!(events.len(), 1, "one to-device message: {sync:#}");
    assert_eq!(events[0]["sender"], alice.user_id());
    assert_eq!(events[0]["type"], "m.room.encrypted");
    let payload = bob.olm_decrypt(&events[0]);
    assert_eq!(payload["type"], "m.room_key");
    let encrypted = timeline(&sync, &room)
        .into_iter()
        .find(|e| e["type"] == "m.room.encrypted")
        .expect("the encrypted event");
    let plain = bob.megolm_decrypt(&encrypted);
    assert_eq!(plain["content"]["body"], "secret plans");

    // Exactly once: acknowledged by syncing from the returned token, never again.
    let again = bob.client.sync(Some(&next_batch(&sync)), 0, None);
    assert!(to_device_events(&again).is_empty(), "{again:#}");
    let replay = bob.client.sync(Some(&bob_start), 0, None);
    assert!(
        to_device_events(&replay).is_empty(),
        "deleted once acknowledged: {replay:#}"
    );
}

#[test]
fn to_device_delivery_idempotency_wildcards_and_limits() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob1 = env.register("bob");
    let bob2 = env.login("bob");
    let since1 = next_batch(&bob1.sync(None, 0, None));
    let since2 = next_batch(&bob2.sync(None, 0, None));

    let send = |txn: &str, messages: Value| {
        alice.put(
            &format!("/_matrix/client/v3/sendToDevice/m.test/{}", enc(txn)),
            &json!({ "messages": messages }),
        )
    };
    ok(
        send("t1", json!({ &bob1.user_id: { "*": { "n": 1 } } })),
        "wildcard",
    );
    ok(
        send("t1", json!({ &bob1.user_id: { "*": { "n": 1 } } })),
        "same txn again",
    );
    ok(
        send(
            "t2",
            json!({ &bob1.user_id: { &bob2.device_id: { "n": 2 } } }),
        ),
        "one device",
    );

    let s1 = bob1.sync(Some(&since1), 0, None);
    let s2 = bob2.sync(Some(&since2), 0, None);
    let contents = |s: &Value| -> Vec<Value> {
        to_device_events(s)
            .iter()
            .map(|e| e["content"].clone())
            .collect()
    };
    assert_eq!(contents(&s1), vec![json!({ "n": 1 })], "{s1:#}");
    assert_eq!(
        contents(&s2),
        vec![json!({ "n": 1 }), json!({ "n": 2 })],
        "{s2:#}"
    );

    // More than one sync's worth: handed out in order over several syncs, none lost or repeated.
    for n in 0..250 {
        ok(
            send(
                &format!("bulk-{n}"),
                json!({ &bob1.user_id: { &bob1.device_id: { "n": n } } }),
            ),
            "bulk",
        );
    }
    let mut since = next_batch(&s1);
    let mut got = Vec::new();
    for _ in 0..10 {
        let s = bob1.sync(Some(&since), 0, None);
        let batch = contents(&s);
        assert!(batch.len() <= 100, "at most 100 per sync");
        got.extend(batch);
        since = next_batch(&s);
        if got.len() >= 250 {
            break;
        }
    }
    let numbers: Vec<i64> = got.iter().filter_map(|c| c["n"].as_i64()).collect();
    assert_eq!(numbers, (0..250).collect::<Vec<_>>());

    assert_error(
        &alice.put(
            "/_matrix/client/v3/sendToDevice/m.test/bad",
            &json!({ "messages": { &bob1.user_id: "not an object" } }),
        ),
        400,
        "M_BAD_JSON",
    );
}

#[test]
fn device_lists_follow_key_changes_and_shared_rooms() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = Device::new(env.register("bob"));
    let carol = env.register("carol");
    let room =
        alice.create_room(&json!({ "preset": "private_chat", "invite": [&bob.client.user_id] }));
    let start = next_batch(&alice.sync(None, 0, None));

    bob.client.join(&room);
    let sync = alice.sync_until(Some(&start), None, DEADLINE, |s| {
        s["device_lists"]["changed"]
            .as_array()
            .is_some_and(|c| c.iter().any(|u| u == bob.user_id()))
    });
    let after_join = next_batch(&sync);

    bob.publish_device_keys();
    alice.sync_until(Some(&after_join), None, DEADLINE, |s| {
        s["device_lists"]["changed"]
            .as_array()
            .is_some_and(|c| c.iter().any(|u| u == bob.user_id()))
    });
    // carol shares no room with bob: his key changes are none of her business.
    let carol_start = next_batch(&carol.sync(None, 0, None));
    bob.publish_device_keys();
    let upload = Device::new(bob.client.clone());
    upload.publish_device_keys();
    let carol_sync = carol.sync(Some(&carol_start), 0, None);
    assert_eq!(
        carol_sync["device_lists"]["changed"],
        json!([]),
        "{carol_sync:#}"
    );

    // /keys/changes over the same range agrees.
    let changes = alice.get_ok(&format!(
        "/_matrix/client/v3/keys/changes?from={}&to={}",
        enc(&start),
        enc(&next_batch(&alice.sync(None, 0, None)))
    ));
    assert!(
        changes["changed"]
            .as_array()
            .is_some_and(|c| c.iter().any(|u| u == bob.user_id())),
        "{changes:#}"
    );

    // bob leaves the only shared room: alice may forget his devices.
    let before_leave = next_batch(&alice.sync(None, 0, None));
    ok(bob.client.membership(&room, "leave", &json!({})), "leave");
    alice.sync_until(Some(&before_leave), None, DEADLINE, |s| {
        s["device_lists"]["left"]
            .as_array()
            .is_some_and(|l| l.iter().any(|u| u == bob.user_id()))
    });
}

#[test]
fn devices_list_rename_delete_with_uia() {
    let env = TestEnv::dev();
    let bob = env.register("bob");
    let second = Device::new(env.login("bob"));
    second.publish_device_keys();

    let list = bob.get_ok("/_matrix/client/v3/devices");
    let ids: Vec<String> = list["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| str_field(d, "device_id"))
        .collect();
    assert!(
        ids.contains(&bob.device_id) && ids.contains(&second.client.device_id),
        "{list:#}"
    );

    let path = format!(
        "/_matrix/client/v3/devices/{}",
        enc(&second.client.device_id)
    );
    ok(
        bob.put(&path, &json!({ "display_name": "Field laptop" })),
        "rename",
    );
    assert_eq!(bob.get_ok(&path)["display_name"], "Field laptop");
    let queried = Device::new(bob.clone()).query(&bob.user_id);
    assert_eq!(
        queried["device_keys"][&bob.user_id][&second.client.device_id]["unsigned"]["device_display_name"],
        "Field laptop",
        "{queried:#}"
    );
    assert_error(
        &bob.get("/_matrix/client/v3/devices/NOPE"),
        404,
        "M_NOT_FOUND",
    );

    // Delete: first a UIA challenge, then with the password.
    let (status, body) = bob.delete(&path);
    assert_eq!(status, 401, "{body:#}");
    let session = str_field(&body, "session");
    let (status, body) = bob.call(
        "DELETE",
        &path,
        Some(
            &json!({ "auth": { "type": "m.login.password", "session": session,
            "identifier": { "type": "m.id.user", "user": "bob" }, "password": "wrong" } }),
        ),
    );
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_FORBIDDEN")),
        "{body:#}"
    );
    ok(
        bob.call(
            "DELETE",
            &path,
            Some(&json!({ "auth": { "type": "m.login.password", "session": session,
                "identifier": { "type": "m.id.user", "user": "bob" }, "password": password_for("bob") } })),
        ),
        "delete with password",
    );
    // The deleted device's token is dead and its keys are gone.
    assert_error(
        &second.client.get("/_matrix/client/v3/account/whoami"),
        401,
        "M_UNKNOWN_TOKEN",
    );
    let queried = Device::new(bob.clone()).query(&bob.user_id);
    assert!(
        queried["device_keys"][&bob.user_id]
            .get(&second.client.device_id)
            .is_none(),
        "{queried:#}"
    );

    // delete_devices: several at once, unknown IDs ignored.
    let third = env.login("bob");
    let (status, body) = bob.post(
        "/_matrix/client/v3/delete_devices",
        &json!({ "devices": [&third.device_id, "UNKNOWN"] }),
    );
    assert_eq!(status, 401, "{body:#}");
    ok(
        bob.post(
            "/_matrix/client/v3/delete_devices",
            &json!({ "devices": [&third.device_id, "UNKNOWN"],
                     "auth": { "type": "m.login.password", "session": str_field(&body, "session"),
                               "identifier": { "type": "m.id.user", "user": "bob" },
                               "password": password_for("bob") } }),
        ),
        "delete_devices",
    );
    assert_error(
        &third.get("/_matrix/client/v3/account/whoami"),
        401,
        "M_UNKNOWN_TOKEN",
    );
}

/// A cross-signing key object for `user` with `usage`, signed by `signer` (if any).
fn cross_key(
    user: &str,
    usage: &str,
    key: &Ed25519Keypair,
    signer: Option<(&Ed25519Keypair, &str)>,
) -> Value {
    let public = key.public_key().to_base64();
    let mut object = json!({
        "user_id": user,
        "usage": [usage],
        "keys": { format!("ed25519:{public}"): public },
    });
    if let Some((signer, signer_public)) = signer {
        let signature = signer
            .sign(&tests::e2ee::signing_bytes(&object))
            .to_base64();
        object["signatures"][user][format!("ed25519:{signer_public}")] = json!(signature);
    }
    object
}

#[test]
fn cross_signing_upload_sign_and_verify() {
    let env = TestEnv::dev();
    let bob = Device::new(env.register("bob"));
    let alice = Device::new(env.register("alice"));
    bob.publish_device_keys();
    alice.publish_device_keys();

    let master = Ed25519Keypair::new();
    let self_signing = Ed25519Keypair::new();
    let user_signing = Ed25519Keypair::new();
    let master_pub = master.public_key().to_base64();
    let upload = json!({
        "master_key": cross_key(bob.user_id(), "master", &master, None),
        "self_signing_key": cross_key(bob.user_id(), "self_signing", &self_signing, Some((&master, &master_pub))),
        "user_signing_key": cross_key(bob.user_id(), "user_signing", &user_signing, Some((&master, &master_pub))),
    });
    // The first upload needs no password.
    ok(
        bob.client
            .post("/_matrix/client/v3/keys/device_signing/upload", &upload),
        "first cross-signing upload",
    );

    // The self-signing key signs bob's device.
    let ssk_pub = self_signing.public_key().to_base64();
    let mut device_keys = bob.device_keys();
    let signature = self_signing
        .sign(&tests::e2ee::signing_bytes(&device_keys))
        .to_base64();
    device_keys["signatures"] =
        json!({ bob.user_id(): { format!("ed25519:{ssk_pub}"): signature } });
    let reply = ok(
        bob.client.post(
            "/_matrix/client/v3/keys/signatures/upload",
            &json!({ bob.user_id(): { bob.device_id(): device_keys } }),
        ),
        "signatures/upload",
    );
    assert_eq!(reply["failures"], json!({}), "{reply:#}");

    // alice sees bob's master and self-signing keys (not his user-signing key), and the
    // device now carries both its own and the self-signing signature; all verify.
    let queried = alice.query(bob.user_id());
    let master_q = &queried["master_keys"][bob.user_id()];
    assert_eq!(
        master_q["keys"][format!("ed25519:{master_pub}")],
        master_pub,
        "{queried:#}"
    );
    let ssk_q = &queried["self_signing_keys"][bob.user_id()];
    assert!(
        queried["user_signing_keys"].get(bob.user_id()).is_none(),
        "{queried:#}"
    );
    assert!(
        verify_signature(
            ssk_q,
            bob.user_id(),
            &format!("ed25519:{master_pub}"),
            &master_pub
        ),
        "self-signing key signed by the master key: {queried:#}"
    );
    let device_q = &queried["device_keys"][bob.user_id()][bob.device_id()];
    assert!(verify_signature(
        device_q,
        bob.user_id(),
        &format!("ed25519:{ssk_pub}"),
        &ssk_pub
    ));
    assert!(verify_signature(
        device_q,
        bob.user_id(),
        &format!("ed25519:{}", bob.device_id()),
        &bob.ed_key()
    ));
    assert!(bob.query(bob.user_id())["user_signing_keys"][bob.user_id()].is_object());

    // Replacing the master key needs the password.
    let other = Ed25519Keypair::new();
    let replace = json!({ "master_key": cross_key(bob.user_id(), "master", &other, None) });
    let (status, body) = bob
        .client
        .post("/_matrix/client/v3/keys/device_signing/upload", &replace);
    assert_eq!(status, 401, "{body:#}");
    let mut with_auth = replace.clone();
    with_auth["auth"] = json!({ "type": "m.login.password", "session": str_field(&body, "session"),
        "identifier": { "type": "m.id.user", "user": "bob" }, "password": password_for("bob") });
    ok(
        bob.client
            .post("/_matrix/client/v3/keys/device_signing/upload", &with_auth),
        "replace with password",
    );

    // Signatures over unknown keys are reported, not stored.
    let reply = ok(
        bob.client.post(
            "/_matrix/client/v3/keys/signatures/upload",
            &json!({ bob.user_id(): { "NODEVICE": { "signatures": {} } } }),
        ),
        "unknown key",
    );
    assert!(
        reply["failures"][bob.user_id()]["NODEVICE"].is_object(),
        "{reply:#}"
    );
}

#[test]
fn malformed_keys_are_refused_but_bad_signatures_are_stored() {
    let env = TestEnv::dev();
    let bob = Device::new(env.register("bob"));
    let path = "/_matrix/client/v3/keys/upload";
    let bad_bodies = [
        json!({ "device_keys": { "user_id": "@someone:else", "device_id": bob.device_id(),
                                 "algorithms": [], "keys": { "ed25519:X": "k" } } }),
        json!({ "device_keys": { "user_id": bob.user_id(), "device_id": "OTHER",
                                 "algorithms": [], "keys": { "ed25519:X": "k" } } }),
        json!({ "device_keys": { "user_id": bob.user_id(), "device_id": bob.device_id(),
                                 "algorithms": [], "keys": "not a map" } }),
        json!({ "one_time_keys": { "no-colon": "k" } }),
        json!({ "one_time_keys": { "signed_curve25519:A": 7 } }),
        json!({ "fallback_keys": { "signed_curve25519:A": { "nokey": true } } }),
        json!({ "device_keys": { "user_id": bob.user_id(), "device_id": bob.device_id(),
                                 "algorithms": [], "keys": { "ed25519:X": "k" },
                                 "signatures": { bob.user_id(): "flat" } } }),
    ];
    for body in &bad_bodies {
        assert_error(&bob.client.post(path, body), 400, "M_BAD_JSON");
    }
    // A key with a signature that does not verify is stored as given: clients judge it.
    let mut keys = bob.device_keys();
    keys["signatures"][bob.user_id()][format!("ed25519:{}", bob.device_id())] = json!("AAAA");
    ok(
        bob.client.post(path, &json!({ "device_keys": keys })),
        "bad signature stored",
    );
    let queried = bob.query(bob.user_id());
    assert_eq!(
        queried["device_keys"][bob.user_id()][bob.device_id()]["signatures"][bob.user_id()]
            [format!("ed25519:{}", bob.device_id())],
        "AAAA"
    );
    // The same one-time key ID with other content is refused.
    ok(
        bob.client.post(
            path,
            &json!({ "one_time_keys": { "signed_curve25519:A": { "key": "x" } } }),
        ),
        "otk",
    );
    assert_error(
        &bob.client.post(
            path,
            &json!({ "one_time_keys": { "signed_curve25519:A": { "key": "y" } } }),
        ),
        400,
        "M_INVALID_PARAM",
    );
}

#[test]
fn encryption_cannot_be_turned_off() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({
        "initial_state": [{ "type": "m.room.encryption", "state_key": "",
                            "content": { "algorithm": MEGOLM } }],
    }));
    let path = tests::Client::state_path(&room, "m.room.encryption", "");
    assert_error(&alice.put(&path, &json!({})), 403, "M_FORBIDDEN");
    assert_error(
        &alice.put(&path, &json!({ "algorithm": "" })),
        403,
        "M_FORBIDDEN",
    );
    let event = str_field(
        &alice
            .get_ok(&format!(
                "/_matrix/client/v3/rooms/{}/state?format=event",
                enc(&room)
            ))
            .as_array()
            .expect("state list")
            .iter()
            .find(|e| e["type"] == "m.room.encryption")
            .expect("encryption event")
            .clone(),
        "event_id",
    );
    assert_error(
        &alice.put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/r1",
                enc(&room),
                enc(&event)
            ),
            &json!({}),
        ),
        403,
        "M_FORBIDDEN",
    );
    // Rotation settings may change; the algorithm stays.
    ok(
        alice.put(
            &path,
            &json!({ "algorithm": MEGOLM, "rotation_period_ms": 604800000 }),
        ),
        "change rotation period",
    );
}

/// MSC3814: a dehydrated device receives room keys while the user has no device online; a
/// new device reads them through the events endpoint in batches and decrypts them.
#[test]
fn dehydrated_device_collects_room_keys() {
    const PREFIX: &str = "/_matrix/client/unstable/org.matrix.msc3814.v1";
    let env = TestEnv::unlimited();
    let mut alice = Device::new(env.register("alice"));
    alice.publish_device_keys();
    let bob = env.register("bob");
    assert_error(
        &bob.get(&format!("{PREFIX}/dehydrated_device")),
        404,
        "M_NOT_FOUND",
    );

    // bob's dehydrated device: an Olm account whose device ID is its curve25519 key.
    let mut dehydrated = Device::new(bob.clone());
    let id = dehydrated.curve_key();
    dehydrated.client.device_id = id.clone();
    dehydrated.account.generate_one_time_keys(2);
    let mut one_time = serde_json::Map::new();
    for (key_id, key) in dehydrated.account.one_time_keys() {
        let mut object = json!({ "key": key.to_base64() });
        dehydrated.sign(&mut object);
        one_time.insert(format!("signed_curve25519:{}", key_id.to_base64()), object);
    }
    dehydrated.account.mark_keys_as_published();
    let mut device_keys = dehydrated.device_keys();
    device_keys["dehydrated"] = json!(true);
    dehydrated.sign(&mut device_keys);
    let put = ok(
        bob.put(
            &format!("{PREFIX}/dehydrated_device"),
            &json!({ "device_id": id, "device_data": { "algorithm": "org.matrix.msc3814.v2", "device_pickle": "opaque" },
                     "initial_device_display_name": "Dehydrated", "device_keys": device_keys,
                     "one_time_keys": one_time }),
        ),
        "PUT dehydrated_device",
    );
    assert_eq!(put["device_id"], id);
    let got = bob.get_ok(&format!("{PREFIX}/dehydrated_device"));
    assert_eq!(got["device_id"], id);
    assert_eq!(got["device_data"]["device_pickle"], "opaque");

    // alice encrypts two room keys to it.
    let curve = alice.start_olm(&bob.user_id, &id);
    let ed = dehydrated.ed_key();
    let sessions: Vec<GroupSession> = (0..2)
        .map(|_| GroupSession::new(SessionConfig::version_1()))
        .collect();
    for session in &sessions {
        alice.share_room_key(
            &curve,
            &bob.user_id,
            &id,
            &ed,
            "!room:outpost.test",
            session,
        );
    }

    // A new device of bob's rehydrates: events in batches, nothing deleted on the way.
    let events_path = format!("{PREFIX}/dehydrated_device/{}/events", enc(&id));
    let first = ok(bob.post(&events_path, &json!({})), "events");
    let events = first["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(events.len(), 2, "{first:#}");
    assert!(
        first.get("next_batch").is_none(),
        "one batch holds both: {first:#}"
    );
    let again = bob.get_ok(&events_path);
    assert_eq!(
        again["events"].as_array().map(Vec::len),
        Some(2),
        "not deleted: {again:#}"
    );
    for event in &events {
        let payload = dehydrated.olm_decrypt(event);
        assert_eq!(payload["type"], "m.room_key");
    }
    assert_eq!(dehydrated.inbound.len(), 2);

    assert_error(
        &bob.post(
            &format!("{PREFIX}/dehydrated_device/OTHER/events"),
            &json!({}),
        ),
        403,
        "M_FORBIDDEN",
    );
    // The dehydrated device is listed with bob's devices and can be deleted without UIA.
    let devices = bob.get_ok("/_matrix/client/v3/devices");
    assert!(
        devices["devices"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x["device_id"] == id))
    );
    assert_eq!(
        ok(bob.delete(&format!("{PREFIX}/dehydrated_device")), "DELETE")["device_id"],
        id
    );
    assert_error(
        &bob.get(&format!("{PREFIX}/dehydrated_device")),
        404,
        "M_NOT_FOUND",
    );
    let queried = alice.query(&bob.user_id);
    assert!(
        queried["device_keys"][&bob.user_id].get(&id).is_none(),
        "{queried:#}"
    );
}
