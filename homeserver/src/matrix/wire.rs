//! Server-Server API bodies as serde types: what peers send us and what we read from their
//! answers (and, where the shape is the same, what we answer).
//!
//! The rule: a body that lacks a field the spec requires, or has one of the wrong type, is an
//! error — never an empty default. For a body a peer sends us that is 400 `M_BAD_JSON`
//! (`api::federation` turns the parse error into it); for a peer's answer to our request the
//! peer has failed (`transport::client::FederationClient::request_as`), and a "try each
//! resident server" loop moves on to the next one. A transaction without `pdus` or a
//! `send_join` answer without `auth_chain` therefore never becomes an empty list.
//!
//! PDUs stay JSON values here: their format depends on the room version, and `incoming::
//! verify_pdu` checks each one (format, hashes, signatures) on its own, so one bad PDU in a
//! transaction is reported against its event and does not refuse its neighbours.
//!
//! Fields are checked against `data/api/server-server/*.yaml` of the spec (v1.19). Where a
//! field the spec marks optional is needed to act (a `make_join` template's `prev_events`), a
//! body without it is refused too: that is noted at the field.

use std::collections::BTreeMap;

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `PUT /_matrix/federation/v1/send/{txnId}` (`transaction.yaml`: `origin`, `origin_server_ts`
/// and `pdus` required; `edus` "may be omitted").
#[derive(Debug, Deserialize, Serialize)]
pub struct Transaction {
    /// The sending server (checked against the signed origin).
    pub origin: String,
    /// When the sender started the transaction.
    pub origin_server_ts: i64,
    /// Persistent events, at most 50, each checked on its own.
    pub pdus: Vec<Value>,
    /// Ephemeral events, at most 100.
    #[serde(default)]
    pub edus: Vec<Edu>,
}

/// An EDU (`edu.yaml`: `edu_type` and `content` required).
#[derive(Debug, Deserialize, Serialize)]
pub struct Edu {
    /// `m.typing`, `m.receipt`, …
    pub edu_type: String,
    /// Its content, read by the EDU's handler.
    pub content: Value,
}

/// The answer of `/send`: each event ID mapped to `{}` or `{"error": …}`.
#[derive(Debug, Deserialize, Serialize)]
pub struct TransactionResult {
    /// Per-PDU outcome.
    pub pdus: Map<String, Value>,
}

/// A list of PDUs with its origin: the answer of `/backfill` and `/event`
/// (`unlimited_pdu_transaction.yaml`: all three fields required).
#[derive(Debug, Deserialize, Serialize)]
pub struct PduTransaction {
    /// The answering server.
    pub origin: String,
    /// When it answered.
    pub origin_server_ts: i64,
    /// The events.
    pub pdus: Vec<Value>,
}

/// `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}` (`invites-v2.yaml`: `room_version`
/// and `event` required).
#[derive(Debug, Deserialize, Serialize)]
pub struct InviteRequest {
    /// The room's version, which decides how the event is checked.
    pub room_version: String,
    /// The invite event, signed by the inviting server.
    pub event: Value,
    /// Stripped state shown to the invitee before they join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite_room_state: Option<Vec<Value>>,
}

/// The answer of `invite` v2 (`event` required): the invite countersigned by the invitee's
/// server.
#[derive(Debug, Deserialize, Serialize)]
pub struct InviteResponse {
    /// The countersigned event.
    pub event: Value,
}

/// An event reference in a template: a bare event ID, or in room versions 1 and 2 a pair of
/// the ID and its reference hashes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum EventRef {
    /// Room versions 3 and later.
    Id(OwnedEventId),
    /// Room versions 1 and 2: `[event_id, {"sha256": …}]`.
    WithHashes(OwnedEventId, Map<String, Value>),
}

impl EventRef {
    /// The referenced event.
    pub fn event_id(&self) -> &OwnedEventId {
        match self {
            Self::Id(id) | Self::WithHashes(id, _) => id,
        }
    }
}

/// The answer of `make_join`, `make_leave` and `make_knock` (`room_version` and `event`
/// required for joins and knocks; `make_leave`'s v1 answer may omit the version, and a
/// `make_join` without one means room version 1 or 2).
#[derive(Debug, Deserialize)]
pub struct MakeMembershipResponse {
    /// The room's version.
    #[serde(default)]
    pub room_version: Option<String>,
    /// The unsigned event to build ours from.
    pub event: MembershipTemplate,
}

/// The answer of `make_join`, `make_leave` and `make_knock` as this unit sends it: the
/// template is an unsigned PDU skeleton in the room version's format, a value like every PDU.
#[derive(Debug, Serialize)]
pub struct MakeMembershipAnswer {
    /// The room's version.
    pub room_version: String,
    /// The unsigned member event to sign and send back.
    pub event: Value,
}

/// The part of a membership template we build on. The spec marks `prev_events` and
/// `auth_events` optional in the template schema, but an event cannot be placed without them,
/// so a template lacking them is refused like any malformed answer.
#[derive(Debug, Deserialize)]
pub struct MembershipTemplate {
    /// `{"membership": …}` and, for a restricted join, the authorising user.
    pub content: TemplateContent,
    /// The events ours follows.
    pub prev_events: Vec<EventRef>,
    /// The events that authorise ours.
    pub auth_events: Vec<EventRef>,
    /// Its depth (not in the template schema; 1 when absent, as before this was typed).
    #[serde(default = "first_depth")]
    pub depth: u64,
}

fn first_depth() -> u64 {
    1
}

/// A template's `content` (`membership` required).
#[derive(Debug, Deserialize)]
pub struct TemplateContent {
    /// `join`, `leave` or `knock`.
    pub membership: String,
    /// Restricted joins (room versions 8+): the resident's member who authorises the join.
    #[serde(default)]
    pub join_authorised_via_users_server: Option<OwnedUserId>,
}

/// The answer of `send_join` v2 (`joins-v2.yaml`: `state` and `auth_chain` required).
#[derive(Debug, Deserialize, Serialize)]
pub struct SendJoinResponse {
    /// The resident server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The room's state before the join.
    pub state: Vec<Value>,
    /// The auth chain of that state and of the join.
    pub auth_chain: Vec<Value>,
    /// The join as the resident stored it (with its signature for a restricted join).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Value>,
    /// Whether `state` leaves out member events (we never ask for that).
    #[serde(default)]
    pub members_omitted: bool,
    /// The servers in the room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servers_in_room: Option<Vec<String>>,
}

/// The answer of `send_knock` (`knocks.yaml`: `knock_room_state` required).
#[derive(Debug, Deserialize, Serialize)]
pub struct SendKnockResponse {
    /// State of the room for the knocker: full PDUs, or older stripped events.
    pub knock_room_state: Vec<Value>,
}

/// The answer of `/state` (`events.yaml`: `auth_chain` and `pdus` required).
#[derive(Debug, Deserialize, Serialize)]
pub struct StateResponse {
    /// The state at the event.
    pub pdus: Vec<Value>,
    /// Its auth chain.
    pub auth_chain: Vec<Value>,
}

/// The answer of `/state_ids` (`auth_chain_ids` and `pdu_ids` required).
#[derive(Debug, Deserialize, Serialize)]
pub struct StateIdsResponse {
    /// The state at the event, as IDs.
    pub pdu_ids: Vec<String>,
    /// Its auth chain, as IDs.
    pub auth_chain_ids: Vec<String>,
}

/// The answer of `/event_auth` (`auth_chain` required).
#[derive(Debug, Deserialize, Serialize)]
pub struct EventAuthResponse {
    /// The event's auth chain.
    pub auth_chain: Vec<Value>,
}

/// `POST /get_missing_events` (`backfill.yaml`: `earliest_events` and `latest_events`
/// required).
#[derive(Debug, Deserialize, Serialize)]
pub struct MissingEventsRequest {
    /// Events the requester has: the walk stops there.
    pub earliest_events: Vec<String>,
    /// Events whose missing ancestors are wanted.
    pub latest_events: Vec<String>,
    /// At most this many events (default 10, as the spec).
    #[serde(default = "ten")]
    pub limit: u64,
    /// No events below this depth (default 0).
    #[serde(default)]
    pub min_depth: u64,
}

fn ten() -> u64 {
    10
}

/// The answer of `get_missing_events` (`events` required).
#[derive(Debug, Deserialize, Serialize)]
pub struct MissingEventsResponse {
    /// The missing events.
    pub events: Vec<Value>,
}

/// The answer of `query/directory` (`room_id` and `servers` required).
#[derive(Debug, Deserialize, Serialize)]
pub struct DirectoryResponse {
    /// The room the alias names.
    pub room_id: OwnedRoomId,
    /// Servers that may be joined through.
    pub servers: Vec<String>,
}

/// The answer of `query/profile` (no field required: an unset one is absent or null).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct ProfileResponse {
    /// The display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub displayname: Option<String>,
    /// The avatar's `mxc://` URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

/// `POST /user/keys/query` (`user_keys.yaml`: `device_keys` required): user → device IDs
/// (an empty list asks for every device).
#[derive(Debug, Deserialize, Serialize)]
pub struct KeysQueryRequest {
    /// The users and devices asked about.
    pub device_keys: BTreeMap<String, Vec<ruma::OwnedDeviceId>>,
}

/// `POST /user/keys/claim` (`one_time_keys` required): user → device → key algorithm.
#[derive(Debug, Deserialize, Serialize)]
pub struct KeysClaimRequest {
    /// The keys to claim.
    pub one_time_keys: BTreeMap<String, BTreeMap<ruma::OwnedDeviceId, String>>,
}

/// The answer of `publicRooms` (`public_rooms_response.yaml`: `chunk` required), passed on to
/// clients as it is typed here.
#[derive(Debug, Deserialize, Serialize)]
pub struct PublicRoomsResponse {
    /// One page of published rooms.
    pub chunk: Vec<PublicRoomsChunk>,
    /// Token of the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_batch: Option<String>,
    /// Token of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_batch: Option<String>,
    /// An estimate of the number of published rooms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_room_count_estimate: Option<u64>,
}

/// One published room (`public_rooms_chunk.yaml`: `room_id`, `num_joined_members`,
/// `world_readable` and `guest_can_join` required).
#[derive(Debug, Deserialize, Serialize)]
pub struct PublicRoomsChunk {
    /// The room.
    pub room_id: OwnedRoomId,
    /// How many members are joined.
    pub num_joined_members: u64,
    /// Whether anyone may read it without joining.
    pub world_readable: bool,
    /// Whether guests may join.
    pub guest_can_join: bool,
    /// The canonical alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canonical_alias: Option<String>,
    /// The name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The avatar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    /// The join rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_rule: Option<String>,
    /// `m.space` for a space.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_type: Option<String>,
}

/// The answer of `hierarchy` (`space_hierarchy.yaml`: `room`, `children` and
/// `inaccessible_children` required). The summaries stay values: `service::federation::
/// hierarchy` keeps only the spec's fields of each.
#[derive(Debug, Deserialize, Serialize)]
pub struct HierarchyResponse {
    /// The room asked about.
    pub room: Value,
    /// Its children the peer may show.
    pub children: Vec<Value>,
    /// Children the peer may not show.
    pub inaccessible_children: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_transaction_without_pdus_is_malformed() {
        let without = json!({"origin": "a.test", "origin_server_ts": 1, "edus": []});
        assert!(serde_json::from_value::<Transaction>(without).is_err());
        let minimal = json!({"origin": "a.test", "origin_server_ts": 1, "pdus": []});
        let parsed: Transaction = serde_json::from_value(minimal).expect("edus may be omitted");
        assert!(parsed.edus.is_empty());
    }

    #[test]
    fn a_send_join_answer_without_auth_chain_is_malformed() {
        let answer = json!({"state": [], "event": {}});
        assert!(serde_json::from_value::<SendJoinResponse>(answer).is_err());
    }

    #[test]
    fn template_references_come_in_both_shapes() {
        let template = json!({
            "content": {"membership": "join"},
            "prev_events": ["$a:x.test", ["$b:x.test", {"sha256": "abc"}]],
            "auth_events": [],
        });
        let parsed: MembershipTemplate = serde_json::from_value(template).expect("template");
        let ids: Vec<&str> = parsed
            .prev_events
            .iter()
            .map(|r| r.event_id().as_str())
            .collect();
        assert_eq!(ids, ["$a:x.test", "$b:x.test"]);
        assert_eq!(parsed.depth, 1);
    }
}
