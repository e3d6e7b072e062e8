//! The PDU: an event as signed and stored, parsed just enough for auth rules and state.
//!
//! The signed JSON is kept verbatim next to the parsed fields, so what we serve to peers is
//! byte-for-byte what was signed, and the parse never "normalises" a remote event.

use std::sync::Arc;

use ruma::events::TimelineEventType;
use ruma::room_version_rules::{EventIdFormatVersion, RoomVersionRules};
use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId,
    RoomId, UInt, UserId,
};
use serde::Deserialize;
use serde_json::value::RawValue as RawJsonValue;

/// A parsed PDU. Cheap to clone (`Arc` inside).
#[derive(Clone, Debug)]
pub struct Pdu(Arc<PduInner>);

/// The fields of a PDU the server needs; see [`Pdu`].
#[derive(Debug)]
pub struct PduInner {
    /// The event ID (computed from the reference hash; not part of the JSON in v3+ rooms).
    pub event_id: OwnedEventId,
    /// The room; for a v12 create event, derived from its event ID.
    pub room_id: OwnedRoomId,
    /// Whether `room_id` is a field of the JSON (not for v12 create events); the auth rules
    /// check its absence.
    pub room_id_in_json: bool,
    /// Sender.
    pub sender: OwnedUserId,
    /// Sender's claimed creation time.
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    /// Event type.
    pub kind: TimelineEventType,
    /// Raw content, as signed.
    pub content: Box<RawJsonValue>,
    /// State key for state events.
    pub state_key: Option<String>,
    /// DAG parents.
    pub prev_events: Vec<OwnedEventId>,
    /// Auth events.
    pub auth_events: Vec<OwnedEventId>,
    /// Depth in the DAG.
    pub depth: u64,
    /// The redacted event, for `m.room.redaction` (top-level before v11, in content after).
    pub redacts: Option<OwnedEventId>,
    /// Whether this event failed auth on receipt.
    pub rejected: bool,
    /// The full PDU JSON as stored.
    pub json: String,
}

#[derive(Deserialize)]
struct Fields {
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    content: Box<RawJsonValue>,
    state_key: Option<String>,
    #[serde(default)]
    prev_events: Vec<EventRef>,
    #[serde(default)]
    auth_events: Vec<EventRef>,
    depth: UInt,
    redacts: Option<OwnedEventId>,
}

/// One entry of `prev_events`/`auth_events`: a bare event ID (room versions 3+) or, in room
/// versions 1 and 2, an `[event_id, {"sha256": reference_hash}]` pair.
#[derive(Deserialize)]
#[serde(untagged)]
enum EventRef {
    Id(OwnedEventId),
    WithHash(OwnedEventId, serde::de::IgnoredAny),
}

impl EventRef {
    fn into_id(self) -> OwnedEventId {
        match self {
            Self::Id(id) | Self::WithHash(id, _) => id,
        }
    }
}

#[derive(Deserialize)]
struct RedactsInContent {
    redacts: Option<OwnedEventId>,
}

/// Why stored or received JSON is not a PDU.
#[derive(Debug, thiserror::Error)]
#[error("malformed PDU: {0}")]
pub struct PduError(pub String);

impl Pdu {
    /// Parses PDU JSON whose event ID is already known.
    pub fn parse(event_id: OwnedEventId, json: String, rejected: bool) -> Result<Self, PduError> {
        let fields: Fields =
            serde_json::from_str(&json).map_err(|err| PduError(err.to_string()))?;
        let room_id_in_json = fields.room_id.is_some();
        let room_id = match fields.room_id {
            Some(room_id) => room_id,
            // Room v12: the create event carries no room_id; the room ID is its event ID
            // with the `!` sigil.
            None if fields.kind == TimelineEventType::RoomCreate => {
                OwnedRoomId::try_from(format!("!{}", &event_id.as_str()[1..]))
                    .map_err(|err| PduError(format!("create event id as room id: {err}")))?
            }
            None => return Err(PduError("missing room_id".to_owned())),
        };
        let redacts = match fields.redacts {
            Some(redacts) => Some(redacts),
            None if fields.kind == TimelineEventType::RoomRedaction => {
                serde_json::from_str::<RedactsInContent>(fields.content.get())
                    .ok()
                    .and_then(|c| c.redacts)
            }
            None => None,
        };
        Ok(Self(Arc::new(PduInner {
            event_id,
            room_id,
            room_id_in_json,
            sender: fields.sender,
            origin_server_ts: fields.origin_server_ts,
            kind: fields.kind,
            content: fields.content,
            state_key: fields.state_key,
            prev_events: fields
                .prev_events
                .into_iter()
                .map(EventRef::into_id)
                .collect(),
            auth_events: fields
                .auth_events
                .into_iter()
                .map(EventRef::into_id)
                .collect(),
            depth: fields.depth.into(),
            redacts,
            rejected,
            json,
        })))
    }

    /// The content parsed as JSON.
    pub fn content_value(&self) -> serde_json::Value {
        serde_json::from_str(self.content.get()).unwrap_or(serde_json::Value::Null)
    }
}

/// The event ID of a PDU in a room of the given version: the `event_id` field in room versions
/// 1 and 2 (`$opaque:server`), otherwise `$` and the reference hash (standard base64 in v3,
/// URL-safe from v4), which ruma-signatures encodes per version.
pub fn event_id_of(
    object: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<OwnedEventId, PduError> {
    if rules.event_id_format == EventIdFormatVersion::V1 {
        let id = object
            .get("event_id")
            .and_then(|v| v.as_str())
            .ok_or_else(|| PduError("missing event_id".to_owned()))?;
        return OwnedEventId::try_from(id).map_err(|err| PduError(format!("event_id: {err}")));
    }
    let hash =
        ruma::signatures::reference_hash(object, rules).map_err(|err| PduError(err.to_string()))?;
    OwnedEventId::try_from(format!("${hash}")).map_err(|err| PduError(err.to_string()))
}

/// The reference hash of a stored PDU, as room versions 1 and 2 list it next to each prev and
/// auth event (`{"sha256": hash}`, unpadded standard base64).
pub fn reference_hash_of(pdu: &Pdu, rules: &RoomVersionRules) -> Result<String, PduError> {
    let mut object: CanonicalJsonObject =
        serde_json::from_str(&pdu.json).map_err(|err| PduError(err.to_string()))?;
    object.remove("unsigned");
    ruma::signatures::reference_hash(&object, rules).map_err(|err| PduError(err.to_string()))
}

impl std::ops::Deref for Pdu {
    type Target = PduInner;
    fn deref(&self) -> &PduInner {
        &self.0
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        self.room_id_in_json.then_some(&*self.room_id)
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawJsonValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        self.rejected
    }
}
