//! EDU contents as serde types (spec: Server-Server API, "EDUs";
//! `data/api/server-server/definitions/event-schemas/m.*.yaml`, v1.19), the other half of
//! [`super::wire::Edu`], whose `content` stays a value until its type is known.
//!
//! The rule is [`super::wire`]'s: a content that lacks a field the spec requires, or has one of
//! the wrong type, does not parse, and is never read as an empty default. EDUs are best effort,
//! so `service::federation::edu` drops such an EDU with a log line naming its origin and type
//! and goes on with the rest of the transaction, which still gets 200.
//!
//! Objects a client signed (device keys, cross-signing keys) and to-device message contents
//! stay values: they are stored and passed on as they came.

use std::collections::BTreeMap;

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::wire::Edu;

/// A received EDU's content, by `edu_type`.
#[derive(Debug)]
pub enum EduContent {
    /// `m.typing`.
    Typing(Typing),
    /// `m.receipt`.
    Receipt(Receipts),
    /// `m.presence`.
    Presence(Presence),
    /// `m.direct_to_device`.
    DirectToDevice(DirectToDevice),
    /// `m.device_list_update`.
    DeviceListUpdate(DeviceListUpdate),
    /// `m.signing_key_update`.
    SigningKeyUpdate(SigningKeyUpdate),
    /// A type this server does not handle; the spec lets a receiver ignore it.
    Unknown,
}

impl EduContent {
    /// Parses `edu`'s content by its type: an error when a known type's content is malformed.
    pub fn parse(edu: &Edu) -> Result<Self, serde_json::Error> {
        let content = &edu.content;
        Ok(match edu.edu_type.as_str() {
            "m.typing" => Self::Typing(Typing::deserialize(content)?),
            "m.receipt" => Self::Receipt(Receipts::deserialize(content)?),
            "m.presence" => Self::Presence(Presence::deserialize(content)?),
            "m.direct_to_device" => Self::DirectToDevice(DirectToDevice::deserialize(content)?),
            "m.device_list_update" => {
                Self::DeviceListUpdate(DeviceListUpdate::deserialize(content)?)
            }
            "m.signing_key_update" => {
                Self::SigningKeyUpdate(SigningKeyUpdate::deserialize(content)?)
            }
            _ => Self::Unknown,
        })
    }
}

/// `m.typing` (`room_id`, `user_id` and `typing` required).
#[derive(Debug, Deserialize, Serialize)]
pub struct Typing {
    /// The room.
    pub room_id: OwnedRoomId,
    /// Who started or stopped typing.
    pub user_id: OwnedUserId,
    /// Whether they are typing now.
    pub typing: bool,
}

/// `m.receipt`: room → its receipts.
pub type Receipts = BTreeMap<OwnedRoomId, RoomReceipts>;

/// The receipts of one room (`m.read` required; other receipt types are not federated).
#[derive(Debug, Deserialize, Serialize)]
pub struct RoomReceipts {
    /// Read receipts: user → receipt.
    #[serde(rename = "m.read")]
    pub read: BTreeMap<OwnedUserId, UserReceipt>,
}

/// One user's read receipt (`event_ids`, exactly one, and `data` required).
#[derive(Debug, Deserialize, Serialize)]
pub struct UserReceipt {
    /// The event read up to (the spec's `minItems: 1, maxItems: 1`).
    pub event_ids: [OwnedEventId; 1],
    /// When, and in which thread.
    pub data: ReceiptData,
}

/// A receipt's metadata (`ts` required).
#[derive(Debug, Deserialize, Serialize)]
pub struct ReceiptData {
    /// When the user read the event (ms since the epoch).
    pub ts: i64,
    /// The thread's root event ID, or `main`; absent for an unthreaded receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
}

/// `m.presence` (`push` required).
#[derive(Debug, Deserialize, Serialize)]
pub struct Presence {
    /// Presence updates of the origin's users.
    pub push: Vec<PresenceUpdate>,
}

/// One user's presence (`user_id`, `presence` and `last_active_ago` required).
#[derive(Debug, Deserialize, Serialize)]
pub struct PresenceUpdate {
    /// Whose presence.
    pub user_id: OwnedUserId,
    /// `online`, `unavailable` or `offline`.
    pub presence: PresenceState,
    /// Milliseconds since the user last did something.
    pub last_active_ago: i64,
    /// The user's status message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_msg: Option<String>,
    /// Whether the user is likely at their client now (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currently_active: Option<bool>,
}

/// The three presence states of the spec; any other string is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceState {
    /// At the client.
    Online,
    /// Idle or away.
    Unavailable,
    /// Not connected.
    Offline,
}

impl PresenceState {
    /// The state as the spec spells it (and as `presence` rows store it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Unavailable => "unavailable",
            Self::Offline => "offline",
        }
    }
}

/// `m.direct_to_device` (`sender`, `type`, `message_id` and `messages` required).
#[derive(Debug, Deserialize, Serialize)]
pub struct DirectToDevice {
    /// The sending user.
    pub sender: OwnedUserId,
    /// The messages' event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Unique per message, for idempotence.
    pub message_id: String,
    /// User → device ID (or `*`) → message content, an object passed on as it came.
    pub messages: BTreeMap<OwnedUserId, BTreeMap<String, Map<String, Value>>>,
}

/// `m.device_list_update` (`user_id`, `device_id` and `stream_id` required).
#[derive(Debug, Deserialize, Serialize)]
pub struct DeviceListUpdate {
    /// The device's owner.
    pub user_id: OwnedUserId,
    /// The device that changed.
    pub device_id: String,
    /// The device's public name; absent when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_display_name: Option<String>,
    /// This update's ID in the user's sequence.
    pub stream_id: i64,
    /// Earlier updates not yet referred to; absent or empty for the first of a sequence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prev_id: Vec<i64>,
    /// Whether the device was deleted (default false).
    #[serde(default)]
    pub deleted: bool,
    /// The device's identity keys, as its client signed them; absent without keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Value>,
}

/// `m.signing_key_update` (`user_id` required).
#[derive(Debug, Deserialize, Serialize)]
pub struct SigningKeyUpdate {
    /// Whose cross-signing keys changed.
    pub user_id: OwnedUserId,
    /// The new master key, as signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key: Option<Value>,
    /// The new self-signing key, as signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_signing_key: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(edu_type: &str, content: Value) -> Result<EduContent, serde_json::Error> {
        EduContent::parse(&Edu {
            edu_type: edu_type.to_owned(),
            content,
        })
    }

    #[test]
    fn the_specs_examples_parse() {
        let typing = json!({"room_id": "!r:x.test", "user_id": "@a:x.test", "typing": true});
        assert!(matches!(parse("m.typing", typing), Ok(EduContent::Typing(t)) if t.typing));
        let receipt = json!({"!r:x.test": {"m.read": {"@a:x.test": {
            "event_ids": ["$e:x.test"], "data": {"ts": 1533358089009_i64}}}}});
        assert!(matches!(
            parse("m.receipt", receipt),
            Ok(EduContent::Receipt(_))
        ));
        let presence = json!({"push": [{"user_id": "@a:x.test", "presence": "online",
            "last_active_ago": 5000, "currently_active": true, "status_msg": "cupcakes"}]});
        assert!(matches!(
            parse("m.presence", presence),
            Ok(EduContent::Presence(_))
        ));
        let to_device = json!({"sender": "@a:x.test", "type": "m.room_key_request",
            "message_id": "hiezohf6Hoo7kaev", "messages": {"@b:y.test": {"*": {"k": 1}}}});
        assert!(matches!(
            parse("m.direct_to_device", to_device),
            Ok(EduContent::DirectToDevice(_))
        ));
        let devices = json!({"user_id": "@a:x.test", "device_id": "D", "stream_id": 6});
        assert!(matches!(
            parse("m.device_list_update", devices),
            Ok(EduContent::DeviceListUpdate(d)) if d.prev_id.is_empty() && !d.deleted
        ));
        let keys = json!({"user_id": "@a:x.test"});
        assert!(matches!(
            parse("m.signing_key_update", keys),
            Ok(EduContent::SigningKeyUpdate(_))
        ));
        assert!(matches!(
            parse("org.example.new", json!(1)),
            Ok(EduContent::Unknown)
        ));
    }

    #[test]
    fn a_missing_required_field_is_malformed_not_empty() {
        let cases = [
            (
                "m.typing",
                json!({"room_id": "!r:x.test", "user_id": "@a:x.test"}),
            ),
            (
                "m.typing",
                json!({"room_id": "!r:x.test", "user_id": "a", "typing": true}),
            ),
            (
                "m.receipt",
                json!({"!r:x.test": {"m.read": {"@a:x.test": {
                "event_ids": ["$e:x.test"], "data": {}}}}}),
            ),
            (
                "m.receipt",
                json!({"!r:x.test": {"m.read": {"@a:x.test": {
                "event_ids": [], "data": {"ts": 1}}}}}),
            ),
            ("m.receipt", json!({"!r:x.test": {}})),
            ("m.receipt", json!([])),
            ("m.presence", json!({})),
            (
                "m.presence",
                json!({"push": [{"user_id": "@a:x.test", "presence": "online"}]}),
            ),
            (
                "m.presence",
                json!({"push": [{"user_id": "@a:x.test", "presence": "busy",
                "last_active_ago": 1}]}),
            ),
            (
                "m.direct_to_device",
                json!({"sender": "@a:x.test", "type": "t",
                "messages": {}}),
            ),
            (
                "m.direct_to_device",
                json!({"sender": "@a:x.test", "type": "t",
                "message_id": "m", "messages": {"@b:y.test": {"D": "not an object"}}}),
            ),
            (
                "m.device_list_update",
                json!({"user_id": "@a:x.test", "device_id": "D"}),
            ),
            (
                "m.device_list_update",
                json!({"user_id": "@a:x.test", "device_id": "D",
                "stream_id": 1, "prev_id": "5"}),
            ),
            ("m.signing_key_update", json!({"master_key": {}})),
        ];
        for (edu_type, content) in cases {
            assert!(
                parse(edu_type, content.clone()).is_err(),
                "{edu_type} {content} parsed"
            );
        }
    }
}
