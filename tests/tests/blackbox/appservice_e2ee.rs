//! Encrypted appservices (MSC3202, issue 17): a registration with `org.matrix.msc3202: true`
//! gets, in its transactions, the device-list changes of users who share a room with its
//! users (`changed`) or no longer do (`left`), and the one-time key counts and unused fallback
//! key types of its users' devices when they change (an upload, a claim), keyed by user then
//! device; a change queued while the appservice is down survives a `kill -9`. The appservice
//! is `tests::appservice::TestAppservice`.

use std::time::Duration;

use tests::appservice::{Behaviour, TestAppservice};
use tests::{Client, TestEnv, Value, json, ok, poll_until};

const DEADLINE: Duration = Duration::from_secs(30);
const CONFIG: &str = "[registration]\nenabled = true\n\n[rate_limit]\nenabled = false\n\n\
                      [appservices]\nretry_cap_secs = 1\nrequest_timeout_secs = 2\n";
const DEVICE_LISTS: &str = "org.matrix.msc3202.device_lists";
const OTK_COUNTS: &str = "org.matrix.msc3202.device_one_time_keys_count";
const OTK_COUNTS_OLD: &str = "org.matrix.msc3202.device_one_time_key_counts";
const FALLBACK_TYPES: &str = "org.matrix.msc3202.device_unused_fallback_key_types";

/// A server with an encrypted bridge (users `@bridge_.*`) registered.
fn setup(extra: &str) -> (TestEnv, TestAppservice) {
    let appservice = TestAppservice::start("hs-crypto-secret");
    let yaml = appservice.registration(
        "crypto",
        "as-crypto-secret",
        "cryptobot",
        [&["@bridge_.*"], &[], &[]],
        extra,
    );
    let (env, ()) = TestEnv::with_config_setup(CONFIG, |data| {
        TestAppservice::install(data, "crypto", &yaml);
    });
    (env, appservice)
}

/// Uploads identity keys for the client's device (a device-list change).
fn upload_device_keys(client: &Client) {
    let (user, device) = (&client.user_id, &client.device_id);
    ok(
        client.post(
            "/_matrix/client/v3/keys/upload",
            &json!({"device_keys": {
                "user_id": user,
                "device_id": device,
                "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
                "keys": {format!("curve25519:{device}"): "curve", format!("ed25519:{device}"): "ed"},
                "signatures": {user.clone(): {format!("ed25519:{device}"): "sig"}},
            }}),
        ),
        "device keys",
    );
}

/// Uploads `n` signed one-time keys (named `prefix<i>`) and, if asked, a fallback key.
fn upload_one_time_keys(client: &Client, prefix: &str, n: usize, fallback: bool) {
    let (user, device) = (&client.user_id, &client.device_id);
    let key = |id: String| json!({"key": format!("key-{id}"), "signatures": {user.clone(): {format!("ed25519:{device}"): "sig"}}});
    let one_time: serde_json::Map<String, Value> = (0..n)
        .map(|i| {
            let id = format!("{prefix}{i}");
            (format!("signed_curve25519:{id}"), key(id))
        })
        .collect();
    let mut body = json!({"one_time_keys": one_time});
    if fallback {
        body["fallback_keys"] =
            json!({format!("signed_curve25519:{prefix}fb"): key(format!("{prefix}fb"))});
    }
    ok(
        client.post("/_matrix/client/v3/keys/upload", &body),
        "one-time keys",
    );
}

/// `claimer` claims one signed_curve25519 key of `owner`'s device.
fn claim(claimer: &Client, owner: &Client) -> Value {
    ok(
        claimer.post(
            "/_matrix/client/v3/keys/claim",
            &json!({"one_time_keys": {owner.user_id.clone(): {owner.device_id.clone(): "signed_curve25519"}}}),
        ),
        "claim",
    )
}

/// Every `device_lists.<list>` user the appservice was sent, in order.
fn device_list(appservice: &TestAppservice, list: &str) -> Vec<String> {
    appservice
        .unique_transactions()
        .iter()
        .flat_map(|(_, body)| {
            body[DEVICE_LISTS][list]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|u| u.as_str().map(str::to_owned))
        .collect()
}

/// The latest transaction with key counts for `client`'s device.
fn latest_counts(appservice: &TestAppservice, client: &Client) -> Option<Value> {
    appservice
        .unique_transactions()
        .into_iter()
        .rev()
        .map(|(_, body)| body)
        .find(|body| !body[OTK_COUNTS][&client.user_id][&client.device_id].is_null())
}

/// Waits for a transaction with `n` signed_curve25519 keys for `client`'s device; returns it.
fn wait_for_count(appservice: &TestAppservice, client: &Client, n: i64) -> Value {
    poll_until(&format!("a key count of {n}"), DEADLINE, || {
        latest_counts(appservice, client).filter(|body| {
            body[OTK_COUNTS][&client.user_id][&client.device_id]["signed_curve25519"] == n
        })
    })
}

#[test]
fn device_lists_and_key_counts_reach_an_encrypted_appservice() {
    let (mut env, appservice) = setup("org.matrix.msc3202: true\n");
    let alice = env.register("alice");
    let bob = env.register("bob");
    let ghost = env.register("bridge_eve");
    let room = alice.create_room(&json!({}));
    alice.invite(&room, &ghost.user_id);
    ghost.join(&room);

    // Bob shares no room with the bridge's users; Alice does. Bob's change comes first, so
    // once Alice's arrived, Bob's was passed over.
    upload_device_keys(&bob);
    upload_device_keys(&alice);
    poll_until("alice's device-list change", DEADLINE, || {
        device_list(&appservice, "changed")
            .contains(&alice.user_id)
            .then_some(())
    });
    assert!(!device_list(&appservice, "changed").contains(&bob.user_id));

    // Its user's one-time and fallback keys: counts keyed by user, then device, under the
    // current name and Synapse's older one.
    upload_one_time_keys(&ghost, "a", 3, true);
    let body = wait_for_count(&appservice, &ghost, 3);
    assert_eq!(
        body[OTK_COUNTS_OLD], body[OTK_COUNTS],
        "both names carry the same counts"
    );
    assert_eq!(
        body[FALLBACK_TYPES][&ghost.user_id][&ghost.device_id],
        json!(["signed_curve25519"])
    );
    // A claim (by any user) lowers the count, and the appservice hears of it.
    claim(&alice, &ghost);
    wait_for_count(&appservice, &ghost, 2);

    // A change while the appservice is down is stored with the rest of its queue.
    appservice.set_behaviour(Behaviour::Error500);
    let before = appservice.requests().len();
    claim(&alice, &ghost);
    poll_until("a refused transaction", DEADLINE, || {
        (appservice.requests().len() > before).then_some(())
    });
    env.kill9();
    appservice.set_behaviour(Behaviour::Normal);
    env.restart();
    wait_for_count(&appservice, &ghost, 1);

    // Once the one-time keys are gone the fallback key is handed out, and is used then.
    let alice = env.login("alice");
    claim(&alice, &ghost);
    claim(&alice, &ghost);
    let body = wait_for_count(&appservice, &ghost, 0);
    let latest = poll_until("the fallback key used", DEADLINE, || {
        let body = latest_counts(&appservice, &ghost)?;
        (body[FALLBACK_TYPES][&ghost.user_id][&ghost.device_id] == json!([])).then_some(body)
    });
    assert_eq!(
        latest[OTK_COUNTS][&ghost.user_id][&ghost.device_id]["signed_curve25519"], 0,
        "{body:#}"
    );

    // Alice leaves the only room she shares with the bridge's users.
    ok(alice.membership(&room, "leave", &json!({})), "leave");
    poll_until("alice left", DEADLINE, || {
        device_list(&appservice, "left")
            .contains(&alice.user_id)
            .then_some(())
    });
    assert!(!device_list(&appservice, "left").contains(&ghost.user_id));
}

#[test]
fn appservices_without_msc3202_get_no_device_lists_or_key_counts() {
    let (env, appservice) = setup("");
    let alice = env.register("alice");
    let ghost = env.register("bridge_fay");
    let room = alice.create_room(&json!({}));
    alice.invite(&room, &ghost.user_id);
    ghost.join(&room);
    upload_device_keys(&alice);
    upload_one_time_keys(&ghost, "b", 2, false);
    // An event after both changes: once it arrives, they would have too.
    let marker = alice.send_text(&room, "after the keys");
    poll_until("the marker", DEADLINE, || {
        appservice.event_ids().contains(&marker).then_some(())
    });
    for (_, body) in appservice.transactions() {
        for key in [DEVICE_LISTS, OTK_COUNTS, OTK_COUNTS_OLD, FALLBACK_TYPES] {
            assert!(body.get(key).is_none(), "{key} in {body:#}");
        }
    }
}
