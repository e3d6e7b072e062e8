//! The sliding sync answer as typed structs (MSC4186's response body), serialised once by the
//! HTTP layer. The envelope is typed; events are client-format (or stripped) event JSON,
//! moved in as they were formatted.
//!
//! Which fields are present matters to clients (Element X reads a missing field as "unchanged"
//! and an empty one as "now empty"), so each `skip_serializing_if` below is deliberate, and
//! `tests/tests/blackbox/sync_shape.rs` pins the result.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::service::sync::DeviceLists;

/// A whole sliding sync answer.
#[derive(Debug, Serialize)]
pub struct SlidingSyncResponse {
    /// The position to resume from.
    pub pos: String,
    /// The request's `txn_id`, echoed back when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub txn_id: Option<String>,
    /// Every list of the request, by name.
    pub lists: BTreeMap<String, ListResponse>,
    /// The rooms with something to send, by room ID.
    pub rooms: BTreeMap<String, RoomResponse>,
    /// The enabled extensions' answers.
    pub extensions: ExtensionsResponse,
}

/// One list's answer.
#[derive(Debug, Serialize)]
pub struct ListResponse {
    /// How many rooms the list holds after filtering, before windowing.
    pub count: usize,
}

/// One room's result. Which fields appear depends on the membership and on whether the room
/// is `initial` for the connection (see `rooms::room_result`).
#[derive(Debug, Default, Serialize)]
pub struct RoomResponse {
    /// `true` the first time the connection sees the room (or its config grew); else absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial: Option<bool>,
    /// The user's membership.
    pub membership: String,
    /// MSC4186's `bump_stamp`: the position of the last event that sorts the room.
    pub bump_stamp: i64,
    /// The lists whose windows hold the room; absent for a subscription only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lists: Vec<String>,
    /// Whether the room is a DM: sent when `initial`, or when it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_dm: Option<bool>,
    /// Stripped state of an invite (the older field name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invite_state: Option<Vec<Value>>,
    /// Stripped state of an invite or knock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stripped_state: Option<Vec<Value>>,
    /// The state the room config asks for (stubs `{type, state_key}` for entries gone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_state: Option<Vec<Value>>,
    /// The newest events, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Vec<Value>>,
    /// `true` when a grown `timeline_limit` resent the timeline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expanded_timeline: Option<bool>,
    /// The same, under the name clients used before MSC4186 settled it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unstable_expanded_timeline: Option<bool>,
    /// A `/messages` token to page back from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_batch: Option<String>,
    /// Whether older events were left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limited: Option<bool>,
    /// How many of the timeline's events are new since the connection's previous position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_live: Option<usize>,
    /// The room's name, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Members to name the room after, when it has no name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heroes: Option<Vec<Hero>>,
    /// The avatar: present when the room has an `m.room.avatar` event, `null` when that has
    /// no URL (the avatar was removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar: Option<Option<String>>,
    /// Joined members.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joined_count: Option<i64>,
    /// Invited members.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invited_count: Option<i64>,
    /// Unread events that notify (joined rooms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification_count: Option<i64>,
    /// Unread events that highlight (joined rooms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub highlight_count: Option<i64>,
}

/// A member a room without a name is named after.
#[derive(Debug, Serialize)]
pub struct Hero {
    /// The member.
    pub user_id: String,
    /// Their display name in the room, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub displayname: Option<String>,
    /// Their avatar in the room, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

/// The `extensions` object: one entry per extension the request enabled.
#[derive(Debug, Default, Serialize)]
pub struct ExtensionsResponse {
    /// To-device messages (MSC3885).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_device: Option<ToDeviceResponse>,
    /// Device lists and key counts (MSC3884).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e2ee: Option<E2eeResponse>,
    /// Global and room account data (MSC3959).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_data: Option<AccountDataResponse>,
    /// Read receipts, one `m.receipt` event per room (MSC3960).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipts: Option<RoomEvents>,
    /// Typing notices, one `m.typing` event per room (MSC3961).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typing: Option<RoomEvents>,
}

/// The to-device extension's answer.
#[derive(Debug, Serialize)]
pub struct ToDeviceResponse {
    /// The token to send as `since` next time (acknowledging these messages).
    pub next_batch: String,
    /// The messages, oldest first.
    pub events: Vec<Value>,
}

/// The e2ee extension's answer.
#[derive(Debug, Serialize)]
pub struct E2eeResponse {
    /// Users whose devices changed, or who no longer share a room.
    pub device_lists: DeviceLists,
    /// Unclaimed one-time keys of this device, per algorithm.
    pub device_one_time_keys_count: Value,
    /// Algorithms of this device's fallback keys never handed out.
    pub device_unused_fallback_key_types: Vec<String>,
}

/// The account data extension's answer.
#[derive(Debug, Serialize)]
pub struct AccountDataResponse {
    /// Global account data events.
    pub global: Vec<Value>,
    /// Room account data events, by room ID.
    pub rooms: BTreeMap<String, Vec<Value>>,
}

/// `{"rooms": {room ID: event}}`: the receipts and typing extensions' answers.
#[derive(Debug, Default, Serialize)]
pub struct RoomEvents {
    /// One event per room.
    pub rooms: BTreeMap<String, Value>,
}
