//! A minimal end-to-end-encryption client built on vodozemac: real Olm accounts, Olm sessions
//! and Megolm group sessions, driving a unit over its client API.
//!
//! [`Device`] owns one logged-in [`Client`] and one Olm account. It publishes signed device
//! keys, one-time keys and fallback keys, claims and queries keys of others, sends Megolm room
//! keys to other devices as Olm-encrypted to-device messages, and decrypts what it receives.
//! The message shapes are the spec's (`m.olm.v1.curve25519-aes-sha2`,
//! `m.megolm.v1.aes-sha2`), so a unit that carries them for this client carries them for
//! Element too.

use std::collections::BTreeMap;

use ruma::CanonicalJsonValue;
use serde_json::{Value, json};
use vodozemac::megolm::{
    GroupSession, InboundGroupSession, MegolmMessage, SessionConfig, SessionKey,
};
use vodozemac::olm::{Account, OlmMessage, Session, SessionConfig as OlmConfig};
use vodozemac::{
    Curve25519PublicKey, Ed25519PublicKey, Ed25519Signature, base64_decode, base64_encode,
};

use crate::client::{Client, ok, str_field};
use crate::enc;

/// The Olm algorithm name.
pub const OLM: &str = "m.olm.v1.curve25519-aes-sha2";
/// The Megolm algorithm name.
pub const MEGOLM: &str = "m.megolm.v1.aes-sha2";

/// The canonical JSON of a signed object without its `signatures` and `unsigned`: the bytes a
/// signature covers.
pub fn signing_bytes(object: &Value) -> Vec<u8> {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("signatures");
        map.remove("unsigned");
    }
    let canonical = CanonicalJsonValue::try_from(object).expect("key objects are canonical JSON");
    canonical.to_string().into_bytes()
}

/// Whether `object` carries a valid ed25519 signature by `user`'s key `key_id` (`ed25519:…`)
/// whose public half is `public_key` (unpadded base64).
pub fn verify_signature(object: &Value, user: &str, key_id: &str, public_key: &str) -> bool {
    let Some(signature) = object["signatures"][user][key_id].as_str() else {
        return false;
    };
    let (Ok(key), Ok(signature)) = (
        Ed25519PublicKey::from_base64(public_key),
        Ed25519Signature::from_base64(signature),
    ) else {
        return false;
    };
    key.verify(&signing_bytes(object), &signature).is_ok()
}

/// One device of one user: a client plus an Olm account, and the sessions it made.
pub struct Device {
    /// The logged-in client of this device.
    pub client: Client,
    /// The device's Olm account (identity keys, one-time keys).
    pub account: Account,
    /// Olm sessions with other devices, by their curve25519 key.
    pub olm: BTreeMap<String, Session>,
    /// Megolm sessions for decrypting, by session ID.
    pub inbound: BTreeMap<String, InboundGroupSession>,
}

impl Device {
    /// A new Olm account for `client`'s device (nothing published yet).
    pub fn new(client: Client) -> Device {
        Device {
            client,
            account: Account::new(),
            olm: BTreeMap::new(),
            inbound: BTreeMap::new(),
        }
    }

    /// The user ID.
    pub fn user_id(&self) -> &str {
        &self.client.user_id
    }

    /// The device ID.
    pub fn device_id(&self) -> &str {
        &self.client.device_id
    }

    /// This device's curve25519 identity key (base64).
    pub fn curve_key(&self) -> String {
        self.account.curve25519_key().to_base64()
    }

    /// This device's ed25519 identity key (base64).
    pub fn ed_key(&self) -> String {
        self.account.ed25519_key().to_base64()
    }

    /// Signs a JSON object with the device's ed25519 key, adding it under `signatures`.
    pub fn sign(&self, object: &mut Value) {
        let signature = self.account.sign(signing_bytes(object)).to_base64();
        object["signatures"][self.user_id()][format!("ed25519:{}", self.device_id())] =
            json!(signature);
    }

    /// The signed `DeviceKeys` object of this device.
    pub fn device_keys(&self) -> Value {
        let mut keys = json!({
            "user_id": self.user_id(),
            "device_id": self.device_id(),
            "algorithms": [OLM, MEGOLM],
            "keys": {
                format!("curve25519:{}", self.device_id()): self.curve_key(),
                format!("ed25519:{}", self.device_id()): self.ed_key(),
            },
        });
        self.sign(&mut keys);
        keys
    }

    /// `POST /keys/upload` with `body`, asserting 200; returns the response.
    pub fn upload(&self, body: &Value) -> Value {
        ok(
            self.client.post("/_matrix/client/v3/keys/upload", body),
            "keys/upload",
        )
    }

    /// Publishes the device keys.
    pub fn publish_device_keys(&self) -> Value {
        self.upload(&json!({ "device_keys": self.device_keys() }))
    }

    /// Generates and publishes `count` signed one-time keys; returns the upload response.
    pub fn publish_one_time_keys(&mut self, count: usize) -> Value {
        self.account.generate_one_time_keys(count);
        let mut keys = serde_json::Map::new();
        for (id, key) in self.account.one_time_keys() {
            let mut object = json!({ "key": key.to_base64() });
            self.sign(&mut object);
            keys.insert(format!("signed_curve25519:{}", id.to_base64()), object);
        }
        self.account.mark_keys_as_published();
        self.upload(&json!({ "one_time_keys": keys }))
    }

    /// Generates and publishes a signed fallback key.
    pub fn publish_fallback_key(&mut self) -> Value {
        self.account.generate_fallback_key();
        let mut keys = serde_json::Map::new();
        for (id, key) in self.account.fallback_key() {
            let mut object = json!({ "key": key.to_base64(), "fallback": true });
            self.sign(&mut object);
            keys.insert(format!("signed_curve25519:{}", id.to_base64()), object);
        }
        self.account.mark_keys_as_published();
        self.upload(&json!({ "fallback_keys": keys }))
    }

    /// `POST /keys/query` for every device of `user`; returns the response.
    pub fn query(&self, user: &str) -> Value {
        ok(
            self.client.post(
                "/_matrix/client/v3/keys/query",
                &json!({ "device_keys": { user: [] } }),
            ),
            "keys/query",
        )
    }

    /// `POST /keys/claim` of one signed_curve25519 key of `user`'s `device`; returns the
    /// response.
    pub fn claim(&self, user: &str, device: &str) -> Value {
        ok(
            self.client.post(
                "/_matrix/client/v3/keys/claim",
                &json!({ "one_time_keys": { user: { device: "signed_curve25519" } } }),
            ),
            "keys/claim",
        )
    }

    /// Starts an Olm session with `other` from a claimed key, after checking that the claimed
    /// key and `other`'s queried device keys carry valid signatures of `other`'s ed25519 key.
    pub fn start_olm(&mut self, other_user: &str, other_device: &str) -> String {
        let queried = self.query(other_user);
        let device_keys = &queried["device_keys"][other_user][other_device];
        let ed_id = format!("ed25519:{other_device}");
        let ed = str_field(&device_keys["keys"], &ed_id);
        let curve = str_field(&device_keys["keys"], &format!("curve25519:{other_device}"));
        assert!(
            verify_signature(device_keys, other_user, &ed_id, &ed),
            "device keys of {other_user}/{other_device} verify: {device_keys:#}"
        );
        let claimed = self.claim(other_user, other_device);
        let keys = claimed["one_time_keys"][other_user][other_device]
            .as_object()
            .unwrap_or_else(|| panic!("claimed a key of {other_user}/{other_device}: {claimed:#}"));
        let (_, key) = keys.iter().next().expect("one claimed key");
        assert!(
            verify_signature(key, other_user, &ed_id, &ed),
            "claimed key verifies: {key:#}"
        );
        let one_time = Curve25519PublicKey::from_base64(&str_field(key, "key")).expect("curve key");
        let identity = Curve25519PublicKey::from_base64(&curve).expect("identity key");
        let session = self
            .account
            .create_outbound_session(OlmConfig::version_1(), identity, one_time)
            .expect("outbound Olm session");
        self.olm.insert(curve.clone(), session);
        curve
    }

    /// Olm-encrypts `payload` (a to-device event) for the device with identity key `curve`,
    /// as `m.room.encrypted` content.
    pub fn olm_encrypt(&mut self, curve: &str, payload: &Value) -> Value {
        let sender_key = self.curve_key();
        let session = self
            .olm
            .get_mut(curve)
            .expect("an Olm session with that device");
        let message = session
            .encrypt(payload.to_string())
            .expect("Olm encryption");
        let (kind, body) = message.to_parts();
        json!({
            "algorithm": OLM,
            "sender_key": sender_key,
            "ciphertext": { curve: { "type": kind, "body": base64_encode(body) } },
        })
    }

    /// Sends a Megolm session's key to `other`'s device over an Olm session, as the spec's
    /// `m.room_key` to-device event.
    pub fn share_room_key(
        &mut self,
        curve: &str,
        other_user: &str,
        other_device: &str,
        other_ed: &str,
        room: &str,
        session: &GroupSession,
    ) {
        let payload = json!({
            "type": "m.room_key",
            "content": {
                "algorithm": MEGOLM,
                "room_id": room,
                "session_id": session.session_id(),
                "session_key": session.session_key().to_base64(),
            },
            "sender": self.user_id(),
            "recipient": other_user,
            "recipient_keys": { "ed25519": other_ed },
            "keys": { "ed25519": self.ed_key() },
        });
        let content = self.olm_encrypt(curve, &payload);
        let txn = format!("key-{}", session.session_id().replace(['/', '+'], "_"));
        let path = format!(
            "/_matrix/client/v3/sendToDevice/{}/{}",
            enc("m.room.encrypted"),
            enc(&txn)
        );
        ok(
            self.client.put(
                &path,
                &json!({ "messages": { other_user: { other_device: content } } }),
            ),
            "sendToDevice m.room.encrypted",
        );
    }

    /// Decrypts an Olm to-device event addressed to this device and returns its payload;
    /// creates the inbound session from a pre-key message if needed. A decrypted `m.room_key`
    /// is kept as an inbound Megolm session.
    pub fn olm_decrypt(&mut self, event: &Value) -> Value {
        let content = &event["content"];
        assert_eq!(content["algorithm"], OLM, "Olm event: {event:#}");
        let sender_key = str_field(content, "sender_key");
        let mine = &content["ciphertext"][self.curve_key()];
        let kind = mine["type"].as_u64().expect("message type") as usize;
        let body = base64_decode(str_field(mine, "body")).expect("base64 ciphertext");
        let message = OlmMessage::from_parts(kind, &body).expect("Olm message");
        let existing = self.olm.get_mut(&sender_key);
        let plaintext = match (&message, existing) {
            // A pre-key message of a session we already have (the sender has not heard back
            // from us yet) decrypts with that session; one-time keys are single use.
            (OlmMessage::PreKey(prekey), Some(session))
                if session.session_id() == prekey.session_id() =>
            {
                session.decrypt(&message).expect("Olm decryption")
            }
            (OlmMessage::PreKey(prekey), _) => {
                let identity = Curve25519PublicKey::from_base64(&sender_key).expect("sender key");
                let created = self
                    .account
                    .create_inbound_session(OlmConfig::version_1(), identity, prekey)
                    .expect("inbound Olm session from a pre-key message");
                self.olm.insert(sender_key.clone(), created.session);
                created.plaintext
            }
            (OlmMessage::Normal(_), Some(session)) => {
                session.decrypt(&message).expect("Olm decryption")
            }
            (OlmMessage::Normal(_), None) => panic!("normal Olm message without a session"),
        };
        let payload: Value = serde_json::from_slice(&plaintext).expect("Olm payload is JSON");
        assert_eq!(
            payload["recipient"],
            self.user_id(),
            "payload names us: {payload:#}"
        );
        if payload["type"] == "m.room_key" {
            let key = SessionKey::from_base64(&str_field(&payload["content"], "session_key"))
                .expect("session key");
            let inbound = InboundGroupSession::new(&key, SessionConfig::version_1());
            self.inbound.insert(inbound.session_id(), inbound);
        }
        payload
    }

    /// Decrypts a Megolm `m.room.encrypted` room event with a session this device received.
    pub fn megolm_decrypt(&mut self, event: &Value) -> Value {
        let content = &event["content"];
        assert_eq!(content["algorithm"], MEGOLM, "Megolm event: {event:#}");
        let session_id = str_field(content, "session_id");
        let session = self
            .inbound
            .get_mut(&session_id)
            .unwrap_or_else(|| panic!("no room key for session {session_id}"));
        let message =
            MegolmMessage::from_base64(&str_field(content, "ciphertext")).expect("Megolm message");
        let decrypted = session.decrypt(&message).expect("Megolm decryption");
        serde_json::from_slice(&decrypted.plaintext).expect("Megolm payload is JSON")
    }
}

/// Encrypts a room message with a Megolm session as `m.room.encrypted` content.
pub fn megolm_encrypt(
    sender: &Device,
    session: &mut GroupSession,
    room: &str,
    body: &str,
) -> Value {
    let payload = json!({
        "type": "m.room.message",
        "content": { "msgtype": "m.text", "body": body },
        "room_id": room,
    });
    let ciphertext = session.encrypt(payload.to_string()).to_base64();
    json!({
        "algorithm": MEGOLM,
        "sender_key": sender.curve_key(),
        "ciphertext": ciphertext,
        "session_id": session.session_id(),
        "device_id": sender.device_id(),
    })
}
