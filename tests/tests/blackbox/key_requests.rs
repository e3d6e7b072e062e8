//! Malformed request bodies of the key endpoints (`/keys/upload`, `/keys/query`,
//! `/keys/claim`, `/keys/signatures/upload`, `/keys/device_signing/upload`, and a peer's
//! `user/keys/query|claim`): each is refused whole with the spec's 400 (`M_BAD_JSON` for a
//! wrong shape, `M_INVALID_PARAM` for a malformed user ID) and nothing of it is acted on,
//! rather than its well-formed parts being read and the rest skipped.

use std::net::{Ipv4Addr, SocketAddr};

use tests::e2ee::Device;
use tests::federation::{Puppet, Unit, UnitOptions, free_port_on, unit_ip};
use tests::{TestEnv, Value, assert_error, json, ok};

const UPLOAD: &str = "/_matrix/client/v3/keys/upload";
const QUERY: &str = "/_matrix/client/v3/keys/query";
const CLAIM: &str = "/_matrix/client/v3/keys/claim";
const SIGNATURES: &str = "/_matrix/client/v3/keys/signatures/upload";
const SIGNING: &str = "/_matrix/client/v3/keys/device_signing/upload";

/// bob's unclaimed signed_curve25519 one-time keys, as `/keys/upload` with nothing counts them.
fn one_time_count(device: &Device) -> Value {
    device.upload(&json!({}))["one_time_key_counts"]["signed_curve25519"].clone()
}

/// A cross-signing key object of `user` (the server checks its shape, never its signatures).
fn cross_key(user: &str, usage: &str, public: &str) -> Value {
    json!({ "user_id": user, "usage": [usage], "keys": { format!("ed25519:{public}"): public } })
}

#[test]
fn malformed_query_and_claim_bodies_are_refused_whole() {
    let env = TestEnv::dev();
    let mut bob = Device::new(env.register("bob"));
    let alice = Device::new(env.register("alice"));
    bob.publish_device_keys();
    bob.publish_one_time_keys(1);

    // `/keys/query`: a device ID that is not a string, a user ID that is not one, no map.
    let user = bob.user_id();
    for (body, errcode) in [
        (
            json!({ "device_keys": { user: ["DEVICE", 5] } }),
            "M_BAD_JSON",
        ),
        (json!({ "device_keys": { user: "DEVICE" } }), "M_BAD_JSON"),
        (
            json!({ "device_keys": { "not a user": [] } }),
            "M_INVALID_PARAM",
        ),
        (json!({ "device_keys": [user] }), "M_BAD_JSON"),
        (
            json!({ "device_keys": { user: [] }, "timeout": "soon" }),
            "M_BAD_JSON",
        ),
        (json!({}), "M_BAD_JSON"),
    ] {
        assert_error(&alice.client.post(QUERY, &body), 400, errcode);
    }

    // `/keys/claim`: bob's key next to a malformed entry is not claimed.
    let device = bob.device_id().to_owned();
    for (body, errcode) in [
        (
            json!({ "one_time_keys": { user: { &device: "signed_curve25519" },
                                       "not a user": { "X": "signed_curve25519" } } }),
            "M_INVALID_PARAM",
        ),
        (
            json!({ "one_time_keys": { user: { &device: "signed_curve25519" },
                                       "@carol:outpost.test": { "X": 5 } } }),
            "M_BAD_JSON",
        ),
        (
            json!({ "one_time_keys": { user: [&device] } }),
            "M_BAD_JSON",
        ),
        (
            json!({ "one_time_keys": { user: { &device: "signed_curve25519" } }, "timeout": -1 }),
            "M_BAD_JSON",
        ),
    ] {
        assert_error(&alice.client.post(CLAIM, &body), 400, errcode);
    }
    assert_eq!(one_time_count(&bob), 1, "no key was claimed");
    // The well-formed request still works.
    let reply = alice.claim(user, &device);
    assert!(
        reply["one_time_keys"][user][&device].is_object(),
        "{reply:#}"
    );
    assert_eq!(one_time_count(&bob), 0);
}

#[test]
fn malformed_uploads_store_nothing() {
    let env = TestEnv::dev();
    let bob = Device::new(env.register("bob"));
    let keys = bob.device_keys();
    let user = bob.user_id();
    for body in [
        // Good device keys with a malformed unstable fallback map next to them.
        json!({ "device_keys": keys, "org.matrix.msc2732.fallback_keys": 5 }),
        json!({ "device_keys": keys, "fallback_keys": [] }),
        json!({ "device_keys": keys, "one_time_keys": "none" }),
        json!({ "device_keys": keys, "one_time_keys": { "signed_curve25519:A": 7 } }),
        json!({ "device_keys": 5 }),
    ] {
        assert_error(&bob.client.post(UPLOAD, &body), 400, "M_BAD_JSON");
    }
    let queried = bob.query(user);
    assert_eq!(queried["device_keys"][user], json!({}), "{queried:#}");
    assert_eq!(one_time_count(&bob), 0);
    bob.publish_device_keys();

    // Cross-signing keys: a malformed `auth` is refused even on the first upload.
    let body = json!({ "master_key": cross_key(user, "master", "MASTERKEY"), "auth": "password" });
    assert_error(&bob.client.post(SIGNING, &body), 400, "M_BAD_JSON");
    let body =
        json!({ "master_key": cross_key(user, "master", "MASTERKEY"), "user_signing_key": [] });
    assert_error(&bob.client.post(SIGNING, &body), 400, "M_BAD_JSON");
    let queried = bob.query(user);
    assert!(queried["master_keys"].get(user).is_none(), "{queried:#}");

    // Signatures: one good signature next to a malformed entry is not stored.
    let mut signed = bob.device_keys();
    signed["signatures"][user]["ed25519:OTHERKEY"] = json!("c2lnbmF0dXJl");
    for (body, errcode) in [
        (
            json!({ user: { bob.device_id(): &signed, "OTHER": 5 } }),
            "M_BAD_JSON",
        ),
        (
            json!({ user: { bob.device_id(): &signed }, "not a user": {} }),
            "M_INVALID_PARAM",
        ),
        (json!({ user: "flat" }), "M_BAD_JSON"),
        (
            json!({ user: { bob.device_id(): { "signatures": { user: { "ed25519:K": 5 } } } } }),
            "M_BAD_JSON",
        ),
    ] {
        assert_error(&bob.client.post(SIGNATURES, &body), 400, errcode);
    }
    let queried = bob.query(user);
    let device = &queried["device_keys"][user][bob.device_id()];
    assert!(
        device["signatures"][user].get("ed25519:OTHERKEY").is_none(),
        "{queried:#}"
    );
    // The well-formed request is stored.
    let reply = ok(
        bob.client
            .post(SIGNATURES, &json!({ user: { bob.device_id(): &signed } })),
        "signatures/upload",
    );
    assert_eq!(reply["failures"], json!({}), "{reply:#}");
    let queried = bob.query(user);
    assert_eq!(
        queried["device_keys"][user][bob.device_id()]["signatures"][user]["ed25519:OTHERKEY"],
        "c2lnbmF0dXJl",
        "{queried:#}"
    );
}

#[test]
fn a_peers_malformed_key_requests_are_refused() {
    let ip = Ipv4Addr::new(127, 0, 0, 12);
    let peer = Puppet::new("peer.test", SocketAddr::from((ip, free_port_on(ip))));
    let mut unit = Unit::new("unit-a.test", unit_ip(0), &UnitOptions::default());
    unit.trust_card(peer.name(), peer.card());
    unit.start();
    let mut bob = Device::new(unit.register("bob"));
    bob.publish_device_keys();
    bob.publish_one_time_keys(1);
    let user = bob.user_id().to_owned();
    let device = bob.device_id().to_owned();

    let claim = "/_matrix/federation/v1/user/keys/claim";
    let query = "/_matrix/federation/v1/user/keys/query";
    for (path, body, errcode) in [
        (
            claim,
            json!({ "one_time_keys": { &user: { &device: "signed_curve25519" },
                                       "not a user": { "X": "signed_curve25519" } } }),
            "M_INVALID_PARAM",
        ),
        (
            claim,
            json!({ "one_time_keys": { &user: { &device: "signed_curve25519" }, "@x:y": [] } }),
            "M_BAD_JSON",
        ),
        (
            query,
            json!({ "device_keys": { "not a user": [] } }),
            "M_INVALID_PARAM",
        ),
        (
            query,
            json!({ "device_keys": { &user: [5] } }),
            "M_BAD_JSON",
        ),
    ] {
        let reply = peer.request(&unit, "POST", path, Some(&body));
        assert_error(&(reply.status, reply.json()), 400, errcode);
    }
    assert_eq!(one_time_count(&bob), 1, "no key was claimed");
    let reply = peer.request(
        &unit,
        "POST",
        claim,
        Some(&json!({ "one_time_keys": { &user: { &device: "signed_curve25519" } } })),
    );
    assert_eq!(reply.status, 200);
    assert!(
        reply.json()["one_time_keys"][&user][&device].is_object(),
        "{:#}",
        reply.json()
    );
}
