//! Building, hashing and signing a new event that originates on this server.
//!
//! The caller supplies the DAG position (prev events, depth) and the auth events it selected
//! from the room state; this module fills the PDU fields for the room version, adds the content
//! hash and our signature (ruma-signatures), and derives the event ID from the reference hash.

use ruma::events::TimelineEventType;
use std::collections::HashMap;

use ruma::room_version_rules::{
    EventIdFormatVersion, EventsReferenceFormatVersion, RoomVersionRules,
};
use ruma::signatures::{JsonError, hash_and_sign_event, reference_hash};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId,
    RoomId, ServerName, UserId,
};
use serde_json::json;

use super::keys::SigningKey;
use super::pdu::{Pdu, event_id_of};

/// What a client (or the server on its behalf) asks to send.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Event type.
    pub kind: TimelineEventType,
    /// State key, for state events.
    pub state_key: Option<String>,
    /// Content as given.
    pub content: serde_json::Value,
    /// The event a redaction redacts.
    pub redacts: Option<OwnedEventId>,
}

impl NewEvent {
    /// A state event.
    pub fn state(
        kind: TimelineEventType,
        state_key: impl Into<String>,
        content: serde_json::Value,
    ) -> Self {
        Self {
            kind,
            state_key: Some(state_key.into()),
            content,
            redacts: None,
        }
    }
    /// A message-like event.
    pub fn message(kind: TimelineEventType, content: serde_json::Value) -> Self {
        Self {
            kind,
            state_key: None,
            content,
            redacts: None,
        }
    }
}

/// Where the new event goes and who signs it.
pub struct Placement<'a> {
    /// The room's version rules.
    pub rules: &'a RoomVersionRules,
    /// The room; `None` only for a v12 create event, whose ID makes the room ID.
    pub room_id: Option<&'a RoomId>,
    /// Sender.
    pub sender: &'a UserId,
    /// Current forward extremities.
    pub prev_events: Vec<OwnedEventId>,
    /// One more than the deepest prev event.
    pub depth: u64,
    /// Selected auth events.
    pub auth_events: Vec<OwnedEventId>,
    /// Room versions 1 and 2 only: the hashes object listed next to each prev and auth event
    /// ID (`{"sha256": reference_hash}`; kept as a resident's `make_join` template gave it).
    /// Empty for later versions.
    pub reference_hashes: HashMap<OwnedEventId, serde_json::Value>,
    /// The server's clock reading.
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    /// This server.
    pub server_name: &'a ServerName,
    /// Our signing key.
    pub key: &'a SigningKey,
}

/// Why an event could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Content that cannot be canonical JSON (floats, out-of-range integers).
    #[error("content is not valid canonical JSON: {0}")]
    NotCanonical(String),
    /// The signed PDU exceeds 65,536 bytes.
    #[error("event is too large")]
    TooLarge,
    /// A field exceeds the spec's 255-byte limit (type, state_key).
    #[error("{0} exceeds 255 bytes")]
    FieldTooLong(&'static str),
    /// Hashing or signing failed.
    #[error("cannot sign event: {0}")]
    Signing(String),
}

/// Builds, hashes and signs `event`; returns the parsed PDU.
pub fn build_event(event: NewEvent, at: Placement<'_>) -> Result<Pdu, BuildError> {
    if event.kind.to_string().len() > 255 {
        return Err(BuildError::FieldTooLong("type"));
    }
    if event.state_key.as_ref().is_some_and(|k| k.len() > 255) {
        return Err(BuildError::FieldTooLong("state_key"));
    }
    let (prev_events, auth_events) = match at.rules.events_reference_format {
        EventsReferenceFormatVersion::V1 => {
            let with_hashes = |ids: &[OwnedEventId]| -> Result<Vec<serde_json::Value>, BuildError> {
                ids.iter()
                    .map(|id| {
                        let hashes = at.reference_hashes.get(id).ok_or_else(|| {
                            BuildError::Signing(format!("no reference hash for {id}"))
                        })?;
                        Ok(json!([id, hashes]))
                    })
                    .collect()
            };
            (
                json!(with_hashes(&at.prev_events)?),
                json!(with_hashes(&at.auth_events)?),
            )
        }
        _ => (json!(at.prev_events), json!(at.auth_events)),
    };
    let mut value = json!({
        "type": event.kind.to_string(),
        "sender": at.sender,
        "content": event.content,
        "origin_server_ts": at.origin_server_ts,
        "depth": at.depth,
        "prev_events": prev_events,
        "auth_events": auth_events,
    });
    let fields = value.as_object_mut().expect("literal object");
    // Room versions 1 and 2: the event ID is chosen by the origin and is part of the JSON.
    if at.rules.event_id_format == EventIdFormatVersion::V1 {
        fields.insert(
            "event_id".to_owned(),
            json!(format!(
                "${}:{}",
                crate::util::random_string(24),
                at.server_name
            )),
        );
    }
    if let Some(room_id) = at.room_id {
        fields.insert("room_id".to_owned(), json!(room_id));
    }
    if let Some(state_key) = &event.state_key {
        fields.insert("state_key".to_owned(), json!(state_key));
    }
    if let Some(redacts) = &event.redacts {
        if at.rules.redaction.content_field_redacts {
            if let Some(content) = fields.get_mut("content").and_then(|c| c.as_object_mut()) {
                content.insert("redacts".to_owned(), json!(redacts));
            }
        } else {
            fields.insert("redacts".to_owned(), json!(redacts));
        }
    }
    let mut object: CanonicalJsonObject = match ruma::canonical_json::to_canonical_value(&value)
        .map_err(|err| BuildError::NotCanonical(err.to_string()))?
    {
        CanonicalJsonValue::Object(object) => object,
        _ => unreachable!("a JSON object stays an object"),
    };
    hash_and_sign_event(
        at.server_name.as_str(),
        at.key.pair(),
        &mut object,
        &at.rules.redaction,
    )
    .map_err(map_json_error)?;
    // The reference hash also bounds the size (PduTooLarge) in every version.
    reference_hash(&object, at.rules).map_err(map_json_error)?;
    let event_id = event_id_of(&object, at.rules).map_err(|err| BuildError::Signing(err.0))?;
    let json =
        serde_json::to_string(&object).map_err(|err| BuildError::Signing(err.to_string()))?;
    Pdu::parse(event_id, json, false).map_err(|err| BuildError::Signing(err.to_string()))
}

fn map_json_error(err: JsonError) -> BuildError {
    match err {
        JsonError::PduTooLarge => BuildError::TooLarge,
        other => BuildError::Signing(other.to_string()),
    }
}

/// A fresh room ID for room versions before 12 (`!random:server`).
pub fn new_legacy_room_id(server_name: &ServerName) -> OwnedRoomId {
    OwnedRoomId::try_from(format!("!{}:{server_name}", crate::util::random_string(18)))
        .expect("random alphanumerics and a valid server name form a room id")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::RoomVersionId;
    use ruma::signatures::{PublicKeyMap, Verified, verify_event};
    use ruma::{owned_server_name, owned_user_id};

    fn place<'a>(
        rules: &'a RoomVersionRules,
        key: &'a SigningKey,
        server: &'a ServerName,
        sender: &'a UserId,
        room_id: Option<&'a RoomId>,
    ) -> Placement<'a> {
        Placement {
            rules,
            room_id,
            sender,
            prev_events: vec![],
            depth: 1,
            auth_events: vec![],
            reference_hashes: HashMap::new(),
            origin_server_ts: MilliSecondsSinceUnixEpoch(1_000_000u32.into()),
            server_name: server,
            key,
        }
    }

    #[test]
    fn v12_create_event_defines_room_id_and_verifies() {
        let rules = RoomVersionId::V12.rules().expect("v12 known");
        let key = SigningKey::generate();
        let server = owned_server_name!("unit-a.example");
        let sender = owned_user_id!("@admin:unit-a.example");
        let create = NewEvent::state(
            TimelineEventType::RoomCreate,
            "",
            json!({"room_version": "12"}),
        );
        let pdu = build_event(create, place(&rules, &key, &server, &sender, None)).expect("builds");
        assert_eq!(&pdu.room_id.as_str()[1..], &pdu.event_id.as_str()[1..]);
        let object: CanonicalJsonObject = serde_json::from_str(&pdu.json).expect("json");
        let mut keys = PublicKeyMap::new();
        keys.insert(
            server.to_string(),
            [(
                key.key_id(),
                ruma::serde::Base64::parse(key.public_key_base64()).expect("b64"),
            )]
            .into_iter()
            .collect(),
        );
        assert_eq!(
            verify_event(&keys, &object, &rules).expect("verifies"),
            Verified::All
        );
    }

    #[test]
    fn floats_are_refused() {
        let rules = RoomVersionId::V11.rules().expect("v11 known");
        let key = SigningKey::generate();
        let server = owned_server_name!("unit-a.example");
        let sender = owned_user_id!("@a:unit-a.example");
        let room = new_legacy_room_id(&server);
        let event = NewEvent::message(TimelineEventType::RoomMessage, json!({"n": 1.5}));
        let err = build_event(event, place(&rules, &key, &server, &sender, Some(&room)));
        assert!(matches!(err, Err(BuildError::NotCanonical(_))));
    }

    #[test]
    fn oversized_events_are_refused() {
        let rules = RoomVersionId::V12.rules().expect("v12 known");
        let key = SigningKey::generate();
        let server = owned_server_name!("unit-a.example");
        let sender = owned_user_id!("@a:unit-a.example");
        let room = new_legacy_room_id(&server);
        let body = "x".repeat(70_000);
        let event = NewEvent::message(TimelineEventType::RoomMessage, json!({"body": body}));
        let err = build_event(event, place(&rules, &key, &server, &sender, Some(&room)));
        assert!(matches!(err, Err(BuildError::TooLarge)));
    }
}
