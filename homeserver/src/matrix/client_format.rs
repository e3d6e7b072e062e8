//! The client-server event format: what `/sync`, `/messages` and friends return for a PDU.
//!
//! Strips federation-only fields (hashes, signatures, auth/prev events, depth) and adds the
//! `unsigned` block the caller computed (age, transaction ID, prev_content, redacted_because).
//! [`state_event_with_age`] writes the common case of a state event straight from its stored
//! JSON, for listings of thousands (`/members`).

use std::borrow::Cow;

use ruma::OwnedUserId;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
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

/// The fields of a stored state event that its client form repeats, borrowed from the JSON.
#[derive(serde::Deserialize)]
struct StoredStateFields<'a> {
    #[serde(borrow)]
    content: &'a RawValue,
    #[serde(borrow)]
    room_id: Cow<'a, str>,
    #[serde(borrow)]
    sender: Cow<'a, str>,
    origin_server_ts: u64,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    state_key: Cow<'a, str>,
}

/// A state event's client form with only `unsigned.age`, serialised as it is built.
#[derive(serde::Serialize)]
struct ClientStateEvent<'a> {
    event_id: &'a str,
    room_id: &'a str,
    sender: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    origin_server_ts: u64,
    content: &'a RawValue,
    state_key: &'a str,
    unsigned: AgeOnly,
}

#[derive(serde::Serialize)]
struct AgeOnly {
    age: i64,
}

/// The client form of a stored, unredacted state event whose `unsigned` holds only its age,
/// written straight from the stored JSON: what [`to_client_event`] gives with
/// `Unsigned { age, .. }` and nothing else, without parsing a [`Pdu`] or building a `Value`.
/// `/members` of a room with thousands of members formats each member event this way (parsing
/// and building values were most of its time). `None` when the JSON lacks a field the form
/// needs (a v12 create event has no `room_id`): the caller then takes the general path.
pub fn state_event_with_age(event_id: &str, json: &str, now_ms: i64) -> Option<Box<RawValue>> {
    let fields: StoredStateFields<'_> = serde_json::from_str(json).ok()?;
    let sent = i64::try_from(fields.origin_server_ts).unwrap_or(i64::MAX);
    let event = ClientStateEvent {
        event_id,
        room_id: &fields.room_id,
        sender: &fields.sender,
        kind: &fields.kind,
        origin_server_ts: fields.origin_server_ts,
        content: fields.content,
        state_key: &fields.state_key,
        unsigned: AgeOnly {
            age: now_ms.saturating_sub(sent).max(0),
        },
    };
    serde_json::value::to_raw_value(&event).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_event_with_age_matches_to_client_event() {
        let json = r#"{"auth_events":["$a"],"content":{"displayname":"B\u00f6b \"x\"","membership":"join"},"depth":7,"hashes":{"sha256":"x"},"origin_server_ts":1000,"prev_events":["$p"],"room_id":"!r:example.org","sender":"@b\u006fb:example.org","signatures":{},"state_key":"@bob:example.org","type":"m.room.member"}"#;
        let id = ruma::OwnedEventId::try_from("$e1").expect("valid event ID");
        let pdu = Pdu::parse(id, json.to_owned(), false).expect("valid PDU");
        let general = to_client_event(
            &pdu,
            Unsigned {
                age: Some(250),
                ..Unsigned::default()
            },
        );
        let fast = state_event_with_age("$e1", json, 1250).expect("formats");
        let fast: Value = serde_json::from_str(fast.get()).expect("JSON");
        assert_eq!(fast, general);
        // A clock behind the event's timestamp gives age 0, as `to_client_event` does.
        let early = state_event_with_age("$e1", json, 10).expect("formats");
        assert!(
            early.get().contains(r#""unsigned":{"age":0}"#),
            "{}",
            early.get()
        );
        assert!(state_event_with_age("$e1", r#"{"type":"m.room.create"}"#, 0).is_none());
    }
}
