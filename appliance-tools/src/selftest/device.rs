//! A temporary end-to-end-encryption device: a logged-in [`Session`] plus a vodozemac Olm
//! account, speaking the spec's shapes (`m.olm.v1.curve25519-aes-sha2` to-device messages
//! carrying an `m.room_key`, `m.megolm.v1.aes-sha2` room events), so what works for it works
//! for Element and other clients too.
//!
//! Every key object is signed and every signature checked: a unit that mangles keys in
//! transit fails the selftest rather than passing it.

use ruma::CanonicalJsonValue;
use serde_json::{Value, json};
use vodozemac::megolm::{
    GroupSession, InboundGroupSession, MegolmMessage, SessionConfig, SessionKey,
};
use vodozemac::olm::{Account, OlmMessage, Session as OlmSession, SessionConfig as OlmConfig};
use vodozemac::{
    Curve25519PublicKey, Ed25519PublicKey, Ed25519Signature, base64_decode, base64_encode,
};

use super::matrix::{Deadline, Session, encode};

/// The Olm algorithm.
pub const OLM: &str = "m.olm.v1.curve25519-aes-sha2";
/// The Megolm algorithm.
pub const MEGOLM: &str = "m.megolm.v1.aes-sha2";

/// One-time keys each device publishes (one is used).
const ONE_TIME_KEYS: usize = 5;

/// Another device's identity keys, as published and checked.
#[derive(Debug, Clone)]
pub struct DeviceKeys {
    /// Its user.
    pub user_id: String,
    /// Its device ID.
    pub device_id: String,
    /// Its curve25519 identity key (unpadded base64).
    pub curve25519: String,
    /// Its ed25519 signing key (unpadded base64).
    pub ed25519: String,
}

/// One temporary device.
pub struct Device {
    /// The logged-in session.
    pub session: Session,
    account: Account,
    olm: Option<OlmSession>,
    inbound: Option<InboundGroupSession>,
}

impl Device {
    /// A new Olm account for the device of `session`; nothing published yet.
    pub fn new(session: Session) -> Self {
        Self {
            session,
            account: Account::new(),
            olm: None,
            inbound: None,
        }
    }

    /// The user ID.
    pub fn user_id(&self) -> &str {
        &self.session.user_id
    }

    /// The device ID.
    pub fn device_id(&self) -> &str {
        &self.session.device_id
    }

    /// This device's keys, as others should see them.
    pub fn keys(&self) -> DeviceKeys {
        DeviceKeys {
            user_id: self.user_id().to_owned(),
            device_id: self.device_id().to_owned(),
            curve25519: self.account.curve25519_key().to_base64(),
            ed25519: self.account.ed25519_key().to_base64(),
        }
    }

    /// Adds this device's signature to `object`.
    fn sign(&self, object: &mut Value) -> Result<(), String> {
        let signature = self.account.sign(signing_bytes(object)?).to_base64();
        object["signatures"][self.user_id()][format!("ed25519:{}", self.device_id())] =
            json!(signature);
        Ok(())
    }

    /// `POST /keys/upload`: the signed device keys and [`ONE_TIME_KEYS`] signed one-time keys.
    /// Fails unless the server counts them.
    pub fn publish_keys(&mut self, deadline: &Deadline) -> Result<(), String> {
        let own = self.keys();
        let mut device_keys = json!({
            "user_id": own.user_id,
            "device_id": own.device_id,
            "algorithms": [OLM, MEGOLM],
            "keys": {
                format!("curve25519:{}", own.device_id): own.curve25519,
                format!("ed25519:{}", own.device_id): own.ed25519,
            },
        });
        self.sign(&mut device_keys)?;
        self.account.generate_one_time_keys(ONE_TIME_KEYS);
        let mut one_time_keys = serde_json::Map::new();
        for (id, key) in self.account.one_time_keys() {
            let mut object = json!({ "key": key.to_base64() });
            self.sign(&mut object)?;
            one_time_keys.insert(format!("signed_curve25519:{}", id.to_base64()), object);
        }
        let reply = self.session.post(
            "/_matrix/client/v3/keys/upload",
            &json!({ "device_keys": device_keys, "one_time_keys": one_time_keys }),
            deadline,
        )?;
        self.account.mark_keys_as_published();
        let counted = reply["one_time_key_counts"]["signed_curve25519"]
            .as_u64()
            .unwrap_or(0);
        if counted < ONE_TIME_KEYS as u64 {
            return Err(format!(
                "{} uploaded {ONE_TIME_KEYS} one-time keys but the server counts {counted}",
                self.user_id()
            ));
        }
        Ok(())
    }

    /// `POST /keys/query` for `user`'s `device`; `None` while the server does not list it yet.
    /// The device keys must carry a valid signature of the device's own ed25519 key.
    pub fn query(
        &self,
        user: &str,
        device: &str,
        deadline: &Deadline,
    ) -> Result<Option<DeviceKeys>, String> {
        let reply = self.session.post(
            "/_matrix/client/v3/keys/query",
            &json!({ "device_keys": { user: [device] } }),
            deadline,
        )?;
        let object = &reply["device_keys"][user][device];
        if object.is_null() {
            return Ok(None);
        }
        let key = |algorithm: &str| {
            object["keys"][format!("{algorithm}:{device}")]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| {
                    format!("the device keys of {user}/{device} have no {algorithm} key")
                })
        };
        let found = DeviceKeys {
            user_id: user.to_owned(),
            device_id: device.to_owned(),
            curve25519: key("curve25519")?,
            ed25519: key("ed25519")?,
        };
        if object["user_id"] != user || object["device_id"] != device {
            return Err(format!(
                "the device keys returned for {user}/{device} name another device"
            ));
        }
        verify(object, &found, "device keys")?;
        Ok(Some(found))
    }

    /// `POST /keys/claim` of one of `other`'s one-time keys (its signature checked), and an
    /// outbound Olm session with it. Returns the claimed key's ID.
    pub fn claim_and_open(
        &mut self,
        other: &DeviceKeys,
        deadline: &Deadline,
    ) -> Result<String, String> {
        let reply = self.session.post(
            "/_matrix/client/v3/keys/claim",
            &json!({ "one_time_keys": { &other.user_id: { &other.device_id: "signed_curve25519" } } }),
            deadline,
        )?;
        let (key_id, object) = reply["one_time_keys"][&other.user_id][&other.device_id]
            .as_object()
            .and_then(|keys| keys.iter().next())
            .ok_or_else(|| {
                format!(
                    "no one-time key of {}/{} could be claimed{}",
                    other.user_id,
                    other.device_id,
                    failures(&reply)
                )
            })?;
        verify(object, other, "claimed one-time key")?;
        let one_time = object["key"]
            .as_str()
            .and_then(|key| Curve25519PublicKey::from_base64(key).ok())
            .ok_or_else(|| format!("the claimed one-time key {key_id} is not a curve25519 key"))?;
        let identity = curve_key(&other.curve25519)?;
        let session = self
            .account
            .create_outbound_session(OlmConfig::version_1(), identity, one_time)
            .map_err(|err| format!("cannot open an Olm session: {err}"))?;
        self.olm = Some(session);
        Ok(key_id.clone())
    }

    /// Sends `group`'s room key for `room` to `other` as an Olm-encrypted `m.room_key`
    /// (`PUT /sendToDevice/m.room.encrypted/{txn}`), over the session of
    /// [`Device::claim_and_open`].
    pub fn send_room_key(
        &mut self,
        other: &DeviceKeys,
        room: &str,
        group: &GroupSession,
        deadline: &Deadline,
    ) -> Result<(), String> {
        let own = self.keys();
        let payload = json!({
            "type": "m.room_key",
            "content": {
                "algorithm": MEGOLM,
                "room_id": room,
                "session_id": group.session_id(),
                "session_key": group.session_key().to_base64(),
            },
            "sender": own.user_id,
            "sender_device": own.device_id,
            "keys": { "ed25519": own.ed25519 },
            "recipient": other.user_id,
            "recipient_keys": { "ed25519": other.ed25519 },
        });
        let session = self
            .olm
            .as_mut()
            .ok_or("no Olm session with the other device")?;
        let message = session
            .encrypt(payload.to_string())
            .map_err(|err| format!("Olm encryption failed: {err}"))?;
        let (kind, body) = message.to_parts();
        let content = json!({
            "algorithm": OLM,
            "sender_key": own.curve25519,
            "ciphertext": { &other.curve25519: { "type": kind, "body": base64_encode(body) } },
        });
        let txn = homeserver::util::random_string(16);
        self.session.put(
            &format!("/_matrix/client/v3/sendToDevice/m.room.encrypted/{txn}"),
            &json!({ "messages": { &other.user_id: { &other.device_id: content } } }),
            deadline,
        )?;
        Ok(())
    }

    /// Decrypts the Olm to-device `event` from `sender` (a pre-key message: the first of a new
    /// session), checks it is the `m.room_key` for `room` meant for this device, and keeps
    /// the Megolm session it carries. Returns the Megolm session ID.
    pub fn receive_room_key(
        &mut self,
        event: &Value,
        sender: &DeviceKeys,
        room: &str,
    ) -> Result<String, String> {
        let own = self.keys();
        let content = &event["content"];
        if event["type"] != "m.room.encrypted" || content["algorithm"] != OLM {
            return Err(format!(
                "the to-device message is not Olm-encrypted: {}",
                event["type"]
            ));
        }
        if event["sender"] != sender.user_id || content["sender_key"] != sender.curve25519 {
            return Err(format!(
                "the to-device message claims to come from {} with key {}, not the sending device",
                event["sender"], content["sender_key"]
            ));
        }
        let mine = &content["ciphertext"][&own.curve25519];
        let kind = mine["type"]
            .as_u64()
            .ok_or("no ciphertext for this device")?;
        let body = mine["body"]
            .as_str()
            .and_then(|body| base64_decode(body).ok())
            .ok_or("the ciphertext is not base64")?;
        let message = OlmMessage::from_parts(kind as usize, &body)
            .map_err(|err| format!("not an Olm message: {err}"))?;
        let OlmMessage::PreKey(prekey) = &message else {
            return Err("the first Olm message of a session is not a pre-key message".to_owned());
        };
        let created = self
            .account
            .create_inbound_session(
                OlmConfig::version_1(),
                curve_key(&sender.curve25519)?,
                prekey,
            )
            .map_err(|err| format!("Olm decryption failed: {err}"))?;
        self.olm = Some(created.session);
        let payload: Value = serde_json::from_slice(&created.plaintext)
            .map_err(|err| format!("the decrypted to-device payload is not JSON: {err}"))?;
        let problems = [
            (payload["type"] != "m.room_key", "is not an m.room_key"),
            (
                payload["recipient"] != own.user_id,
                "names another recipient",
            ),
            (
                payload["recipient_keys"]["ed25519"] != own.ed25519,
                "names another recipient device",
            ),
            (payload["sender"] != sender.user_id, "names another sender"),
            (
                payload["keys"]["ed25519"] != sender.ed25519,
                "carries another sender key",
            ),
            (payload["content"]["room_id"] != room, "is for another room"),
            (
                payload["content"]["algorithm"] != MEGOLM,
                "is not a Megolm key",
            ),
        ];
        if let Some((_, what)) = problems.iter().find(|(wrong, _)| *wrong) {
            return Err(format!("the decrypted to-device payload {what}"));
        }
        let key = payload["content"]["session_key"]
            .as_str()
            .and_then(|key| SessionKey::from_base64(key).ok())
            .ok_or("the room key is not a Megolm session key")?;
        let inbound = InboundGroupSession::new(&key, SessionConfig::version_1());
        let session_id = inbound.session_id();
        self.inbound = Some(inbound);
        Ok(session_id)
    }

    /// Decrypts the Megolm room `event` with the room key received earlier; returns the
    /// decrypted event (`type`, `content`, `room_id`).
    pub fn decrypt_room_event(&mut self, event: &Value) -> Result<Value, String> {
        let content = &event["content"];
        if content["algorithm"] != MEGOLM {
            return Err(format!(
                "the room event is not Megolm-encrypted: {}",
                content["algorithm"]
            ));
        }
        let inbound = self
            .inbound
            .as_mut()
            .ok_or("no room key was received before the message")?;
        if content["session_id"] != inbound.session_id() {
            return Err(format!(
                "the message is encrypted with session {}, not the one whose key arrived",
                content["session_id"]
            ));
        }
        let message = content["ciphertext"]
            .as_str()
            .and_then(|text| MegolmMessage::from_base64(text).ok())
            .ok_or("the ciphertext is not a Megolm message")?;
        let decrypted = inbound
            .decrypt(&message)
            .map_err(|err| format!("Megolm decryption failed: {err}"))?;
        serde_json::from_slice(&decrypted.plaintext)
            .map_err(|err| format!("the decrypted message is not JSON: {err}"))
    }
}

/// `m.room.encrypted` content of a text message `body` in `room`, encrypted with `group`.
pub fn encrypt_room_message(
    sender: &Device,
    group: &mut GroupSession,
    room: &str,
    body: &str,
) -> Value {
    let payload = json!({
        "type": "m.room.message",
        "content": { "msgtype": "m.text", "body": body },
        "room_id": room,
    });
    json!({
        "algorithm": MEGOLM,
        "sender_key": sender.keys().curve25519,
        "ciphertext": group.encrypt(payload.to_string()).to_base64(),
        "session_id": group.session_id(),
        "device_id": sender.device_id(),
    })
}

/// `PUT /rooms/{room}/send/m.room.encrypted/{txn}` of `content`; returns the event ID.
pub fn send_encrypted(
    sender: &Device,
    room: &str,
    content: &Value,
    deadline: &Deadline,
) -> Result<String, String> {
    let txn = homeserver::util::random_string(16);
    let reply = sender.session.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.encrypted/{txn}",
            encode(room)
        ),
        content,
        deadline,
    )?;
    reply["event_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "the send answer has no event_id".to_owned())
}

/// The canonical JSON of a signed object without `signatures` and `unsigned`: the bytes its
/// signatures cover.
fn signing_bytes(object: &Value) -> Result<Vec<u8>, String> {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("signatures");
        map.remove("unsigned");
    }
    let canonical = CanonicalJsonValue::try_from(object)
        .map_err(|err| format!("a key object is not canonical JSON: {err}"))?;
    Ok(canonical.to_string().into_bytes())
}

/// Checks that `object` (`what`, for the error) is signed by `device`'s ed25519 key.
fn verify(object: &Value, device: &DeviceKeys, what: &str) -> Result<(), String> {
    let signature = object["signatures"][&device.user_id][format!("ed25519:{}", device.device_id)]
        .as_str()
        .and_then(|text| Ed25519Signature::from_base64(text).ok());
    let key = Ed25519PublicKey::from_base64(&device.ed25519).ok();
    let (Some(signature), Some(key)) = (signature, key) else {
        return Err(format!(
            "the {what} of {}/{} carry no usable signature",
            device.user_id, device.device_id
        ));
    };
    key.verify(&signing_bytes(object)?, &signature)
        .map_err(|_| {
            format!(
                "the signature on the {what} of {}/{} does not verify: the keys were changed \
                 on the way",
                device.user_id, device.device_id
            )
        })
}

/// A curve25519 key from its base64 form.
fn curve_key(text: &str) -> Result<Curve25519PublicKey, String> {
    Curve25519PublicKey::from_base64(text)
        .map_err(|err| format!("{text:?} is not a curve25519 key: {err}"))
}

/// The `failures` of a keys answer (servers that did not answer), for an error message.
fn failures(reply: &Value) -> String {
    match reply["failures"].as_object() {
        Some(failed) if !failed.is_empty() => format!(
            " (no answer from {})",
            failed.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_object_verifies_and_a_changed_one_does_not() {
        let account = Account::new();
        let keys = DeviceKeys {
            user_id: "@a:x".to_owned(),
            device_id: "D".to_owned(),
            curve25519: account.curve25519_key().to_base64(),
            ed25519: account.ed25519_key().to_base64(),
        };
        let mut object = json!({ "key": "abc", "unsigned": { "x": 1 } });
        let signature = account
            .sign(signing_bytes(&object).expect("canonical"))
            .to_base64();
        object["signatures"]["@a:x"]["ed25519:D"] = json!(signature);
        assert!(verify(&object, &keys, "key").is_ok());
        object["key"] = json!("abd");
        assert!(verify(&object, &keys, "key").is_err());
    }
}
