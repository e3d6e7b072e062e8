//! End-to-end encryption across two units, with vodozemac devices: alice on unit A and bob on
//! unit B publish device, one-time and fallback keys; alice queries and claims bob's keys over
//! federation, opens an Olm session, shares a Megolm room key by to-device and sends an
//! encrypted message, which bob decrypts. Then B is stopped, alice shares a new key and sends
//! again, B restarts and bob still decrypts (the durable outbox carried the to-device
//! message). Then bob's one-time keys are exhausted and claims fall back to his fallback key,
//! which still opens a working session. Finally bob's cross-signing keys and signatures are
//! queried from A and verified.

use tests::e2ee::{Device, MEGOLM, megolm_encrypt, signing_bytes, verify_signature};
use tests::federation::{DELIVERY, Federation, share_room};
use tests::{Value, json, ok, str_field, timeline};
use vodozemac::Ed25519Keypair;
use vodozemac::megolm::{GroupSession, SessionConfig};

fn to_device_events(sync: &Value) -> Vec<Value> {
    sync["to_device"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Syncs bob from `since` until a to-device message and the encrypted event `event_id` have
/// both arrived; decrypts both and returns the plaintext body and the next token.
fn receive(bob: &mut Device, since: &str, room: &str, event_id: &str) -> (String, String) {
    let mut since = since.to_owned();
    let mut keys = Vec::new();
    let mut event = None;
    let start = std::time::Instant::now();
    while keys.is_empty() || event.is_none() {
        assert!(
            start.elapsed() < DELIVERY,
            "bob did not receive the key and the message"
        );
        let sync = bob.client.sync(Some(&since), 1000, None);
        keys.extend(to_device_events(&sync));
        if let Some(found) = timeline(&sync, room)
            .into_iter()
            .find(|e| e["event_id"] == event_id)
        {
            event = Some(found);
        }
        since = str_field(&sync, "next_batch");
    }
    for key in &keys {
        assert_eq!(key["type"], "m.room.encrypted", "{key:#}");
        let payload = bob.olm_decrypt(key);
        assert_eq!(payload["type"], "m.room_key", "{payload:#}");
    }
    let plain = bob.megolm_decrypt(&event.expect("event"));
    (str_field(&plain["content"], "body"), since)
}

#[test]
fn encrypted_messages_between_units_survive_a_stopped_peer() {
    let mut fed = Federation::start(&["unit-a.test", "unit-b.test"]);
    let mut alice = Device::new(fed[0].register("alice"));
    let mut bob = Device::new(fed[1].register("bob"));
    for device in [&mut alice, &mut bob] {
        device.publish_device_keys();
        device.publish_one_time_keys(3);
        device.publish_fallback_key();
    }
    let room = share_room(
        &alice.client,
        &[&bob.client],
        &json!({ "preset": "private_chat",
                 "initial_state": [{ "type": "m.room.encryption", "state_key": "",
                                     "content": { "algorithm": MEGOLM } }] }),
    );
    let bob_since = str_field(&bob.client.sync(None, 0, None), "next_batch");
    let (bob_user, bob_device, bob_ed) = (
        bob.user_id().to_owned(),
        bob.device_id().to_owned(),
        bob.ed_key(),
    );

    // Over federation: query (signature checked), claim, Olm, Megolm.
    let curve = alice.start_olm(&bob_user, &bob_device);
    let mut session = GroupSession::new(SessionConfig::version_1());
    alice.share_room_key(&curve, &bob_user, &bob_device, &bob_ed, &room, &session);
    let content = megolm_encrypt(&alice, &mut session, &room, "across the link");
    let sent = str_field(
        &ok(
            alice
                .client
                .send_event(&room, "m.room.encrypted", "e1", &content),
            "send",
        ),
        "event_id",
    );
    let (body, bob_since) = receive(&mut bob, &bob_since, &room, &sent);
    assert_eq!(body, "across the link");

    // B is down: the new room key and the message wait in A's outbox.
    fed[1].stop();
    let mut session = GroupSession::new(SessionConfig::version_1());
    alice.share_room_key(&curve, &bob_user, &bob_device, &bob_ed, &room, &session);
    let content = megolm_encrypt(&alice, &mut session, &room, "while you were away");
    let sent = str_field(
        &ok(
            alice
                .client
                .send_event(&room, "m.room.encrypted", "e2", &content),
            "send while B is down",
        ),
        "event_id",
    );
    // alice can still query bob's keys while B is down: A answers from its cache (kept
    // current by B's device-list updates, so A does not even need to ask).
    let queried = alice.query(&bob_user);
    assert!(
        queried["device_keys"][&bob_user][&bob_device].is_object(),
        "cached keys of a partitioned peer: {queried:#}"
    );
    fed[1].restart();
    let (body, bob_since) = receive(&mut bob, &bob_since, &room, &sent);
    assert_eq!(body, "while you were away");

    // Exhaust bob's one-time keys over federation; then the fallback key, reused.
    let mut fallback_seen = 0;
    for _ in 0..6 {
        let reply = alice.claim(&bob_user, &bob_device);
        let key = reply["one_time_keys"][&bob_user][&bob_device]
            .as_object()
            .and_then(|k| k.values().next().cloned())
            .unwrap_or_else(|| panic!("a key for every claim: {reply:#}"));
        if key["fallback"] == true {
            fallback_seen += 1;
        }
    }
    // 3 published, 1 used by the first session: 2 one-time keys, then 4 fallback answers.
    assert_eq!(fallback_seen, 4);
    let curve = alice.start_olm(&bob_user, &bob_device);
    let mut session = GroupSession::new(SessionConfig::version_1());
    alice.share_room_key(&curve, &bob_user, &bob_device, &bob_ed, &room, &session);
    let content = megolm_encrypt(&alice, &mut session, &room, "on the fallback key");
    let sent = str_field(
        &ok(
            alice
                .client
                .send_event(&room, "m.room.encrypted", "e3", &content),
            "send",
        ),
        "event_id",
    );
    let (body, _) = receive(&mut bob, &bob_since, &room, &sent);
    assert_eq!(body, "on the fallback key");
    let sync = bob.client.sync(None, 0, None);
    assert_eq!(
        sync["device_unused_fallback_key_types"],
        json!([]),
        "{sync:#}"
    );
}

fn cross_key(
    user: &str,
    usage: &str,
    key: &Ed25519Keypair,
    signer: Option<&Ed25519Keypair>,
) -> Value {
    let public = key.public_key().to_base64();
    let mut object = json!({ "user_id": user, "usage": [usage],
                             "keys": { format!("ed25519:{public}"): public } });
    if let Some(signer) = signer {
        let signer_public = signer.public_key().to_base64();
        let signature = signer.sign(&signing_bytes(&object)).to_base64();
        object["signatures"][user][format!("ed25519:{signer_public}")] = json!(signature);
    }
    object
}

#[test]
fn cross_signing_and_device_changes_reach_the_other_unit() {
    let fed = Federation::start(&["unit-a.test", "unit-b.test"]);
    let alice = Device::new(fed[0].register("alice"));
    let bob = Device::new(fed[1].register("bob"));
    bob.publish_device_keys();
    share_room(
        &alice.client,
        &[&bob.client],
        &json!({ "preset": "private_chat" }),
    );
    let alice_since = str_field(&alice.client.sync(None, 0, None), "next_batch");
    // A caches bob's list on first query.
    let first = alice.query(bob.user_id());
    assert!(
        first["device_keys"][bob.user_id()][bob.device_id()].is_object(),
        "{first:#}"
    );

    let master = Ed25519Keypair::new();
    let ssk = Ed25519Keypair::new();
    let usk = Ed25519Keypair::new();
    ok(
        bob.client.post(
            "/_matrix/client/v3/keys/device_signing/upload",
            &json!({
                "master_key": cross_key(bob.user_id(), "master", &master, None),
                "self_signing_key": cross_key(bob.user_id(), "self_signing", &ssk, Some(&master)),
                "user_signing_key": cross_key(bob.user_id(), "user_signing", &usk, Some(&master)),
            }),
        ),
        "cross-signing upload",
    );
    let ssk_pub = ssk.public_key().to_base64();
    let mut device_keys = bob.device_keys();
    let signature = ssk.sign(&signing_bytes(&device_keys)).to_base64();
    device_keys["signatures"] =
        json!({ bob.user_id(): { format!("ed25519:{ssk_pub}"): signature } });
    ok(
        bob.client.post(
            "/_matrix/client/v3/keys/signatures/upload",
            &json!({ bob.user_id(): { bob.device_id(): device_keys } }),
        ),
        "sign own device",
    );

    // alice's sync on A reports bob's keys changed (from the EDUs), and a query from A shows
    // the new keys and signatures, which verify.
    alice
        .client
        .sync_until(Some(&alice_since), None, DELIVERY, |s| {
            s["device_lists"]["changed"]
                .as_array()
                .is_some_and(|c| c.iter().any(|u| u == bob.user_id()))
        });
    let master_pub = master.public_key().to_base64();
    let queried = tests::federation::eventually("A to show bob's cross-signing", DELIVERY, || {
        let q = alice.query(bob.user_id());
        let device = &q["device_keys"][bob.user_id()][bob.device_id()];
        if q["master_keys"][bob.user_id()].is_object()
            && verify_signature(
                device,
                bob.user_id(),
                &format!("ed25519:{ssk_pub}"),
                &ssk_pub,
            )
        {
            Ok(q)
        } else {
            Err(format!("{q:#}"))
        }
    });
    assert!(verify_signature(
        &queried["self_signing_keys"][bob.user_id()],
        bob.user_id(),
        &format!("ed25519:{master_pub}"),
        &master_pub
    ));
    assert!(
        queried["user_signing_keys"].get(bob.user_id()).is_none(),
        "{queried:#}"
    );

    // A new device of bob's appears on A through an m.device_list_update EDU.
    let since = str_field(&alice.client.sync(None, 0, None), "next_batch");
    let bob2 = Device::new(login(&fed[1], "bob"));
    bob2.publish_device_keys();
    alice.client.sync_until(Some(&since), None, DELIVERY, |s| {
        s["device_lists"]["changed"]
            .as_array()
            .is_some_and(|c| c.iter().any(|u| u == bob.user_id()))
    });
    tests::federation::eventually("A to list bob's new device", DELIVERY, || {
        let q = alice.query(bob.user_id());
        if q["device_keys"][bob.user_id()][bob2.device_id()].is_object() {
            Ok(())
        } else {
            Err(format!("{q:#}"))
        }
    });
}

fn login(unit: &tests::federation::Unit, localpart: &str) -> tests::Client {
    let body = ok(
        unit.anon().post(
            "/_matrix/client/v3/login",
            &json!({ "type": "m.login.password",
                     "identifier": { "type": "m.id.user", "user": localpart },
                     "password": tests::password_for(localpart) }),
        ),
        "login",
    );
    let mut client = unit
        .anon()
        .with_token(Some(&str_field(&body, "access_token")));
    client.user_id = str_field(&body, "user_id");
    client.device_id = str_field(&body, "device_id");
    client
}
