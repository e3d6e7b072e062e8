//! The client-server event format: what `/sync`, `/messages` and friends return for a PDU.
//!
//! Strips federation-only fields (hashes, signatures, auth/prev events, depth) and adds the
//! `unsigned` block the caller computed (age, transaction ID, prev_content, redacted_because).

use ruma::OwnedUserId;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::pdu::Pdu;

/// The state event types shown as stripped state to invitees and knockers, in invites
/// (`invite_room_state`), knocks (`knock_room_state`) and `/sync`'s `invite_state` (spec:
/// Client-Server API, "Stripped state"; its list, with `m.room.create` first, which v1.16
/// made required).
pub const STRIPPED_STATE_TYPES: [&str; 7] = [
    "m.room.create",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.join_rules",
    "m.room.canonical_alias",
    "m.room.encryption",
];

/// Extra, per-viewer information for the `unsigned` block.
#[derive(Debug, Default, Clone)]
pub struct Unsigned {
    /// Milliseconds since the event was sent, from the server's clock.
    pub age: Option<i64>,
    /// The client's transaction ID, only for the device that sent it.
    pub transaction_id: Option<String>,
    /// The content of the state event this one replaced.
    pub prev_content: Option<Value>,
    /// Who replaced it.
    pub replaces_state: Option<String>,
    /// The redaction event, if this event was redacted.
    pub redacted_because: Option<Value>,
    /// The delayed event (MSC4140) it was sent from, only for its sender.
    pub delay_id: Option<String>,
}

/// Formats a PDU as a client event (including `room_id`).
pub fn to_client_event(pdu: &Pdu, unsigned: Unsigned) -> Value {
    let mut event = Map::new();
    event.insert("event_id".to_owned(), json!(pdu.event_id));
    event.insert("room_id".to_owned(), json!(pdu.room_id));
    event.insert("sender".to_owned(), json!(pdu.sender));
    event.insert("type".to_owned(), json!(pdu.kind.to_string()));
    event.insert("origin_server_ts".to_owned(), json!(pdu.origin_server_ts));
    event.insert("content".to_owned(), pdu.content_value());
    if let Some(state_key) = &pdu.state_key {
        event.insert("state_key".to_owned(), json!(state_key));
    }
    if let Some(redacts) = &pdu.redacts {
        event.insert("redacts".to_owned(), json!(redacts));
    }
    let mut extra = Map::new();
    if let Some(age) = unsigned.age {
        extra.insert("age".to_owned(), json!(age.max(0)));
    }
    if let Some(txn) = unsigned.transaction_id {
        extra.insert("transaction_id".to_owned(), json!(txn));
    }
    if let Some(prev) = unsigned.prev_content {
        extra.insert("prev_content".to_owned(), prev);
    }
    if let Some(replaces) = unsigned.replaces_state {
        extra.insert("replaces_state".to_owned(), json!(replaces));
    }
    if let Some(because) = unsigned.redacted_because {
        extra.insert("redacted_because".to_owned(), because);
    }
    if let Some(delay_id) = unsigned.delay_id {
        extra.insert("org.matrix.msc4140.delay_id".to_owned(), json!(delay_id));
    }
    if !extra.is_empty() {
        event.insert("unsigned".to_owned(), Value::Object(extra));
    }
    Value::Object(event)
}

/// A stripped state event as a peer may still send one in `knock_room_state` (spec:
/// `StrippedStateEvent`, all four fields required; v1.16 asks for full PDUs instead): an entry
/// that lacks one is malformed and dropped, not shown with an empty sender or content.
#[derive(Debug, Deserialize, Serialize)]
pub struct StrippedState {
    /// The event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The state key.
    pub state_key: String,
    /// Who sent it.
    pub sender: OwnedUserId,
    /// Its content.
    pub content: Map<String, Value>,
}

/// The stripped form of a state event, as sent in `invite_state`.
pub fn to_stripped_state(pdu: &Pdu) -> Value {
    json!({
        "type": pdu.kind.to_string(),
        "state_key": pdu.state_key.clone().unwrap_or_default(),
        "sender": pdu.sender,
        "content": pdu.content_value(),
    })
}
