//! The `/sync` answer as typed structs (spec: `GET /_matrix/client/v3/sync` 200), serialised
//! once by the HTTP layer. The envelope is typed; the events inside are client-format event
//! JSON (`serde_json::Value`, arbitrary content), moved in as they were formatted.
//!
//! Which fields are present matters to clients (matrix-sdk and Element X treat a missing field
//! and an empty one differently), so each `skip_serializing_if` below is deliberate, and
//! `tests/tests/blackbox/sync_shape.rs` pins the result.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// A whole `/sync` answer.
#[derive(Debug, Serialize)]
pub struct SyncResponse {
    /// The token to sync from next time.
    pub next_batch: String,
    /// Rooms by the user's membership.
    pub rooms: Rooms,
    /// Global account data that changed.
    pub account_data: Events,
    /// Presence of users the syncing user shares a room with.
    pub presence: Events,
    /// To-device messages for this device.
    pub to_device: Events,
    /// Users whose devices changed, or who no longer share a room.
    pub device_lists: DeviceLists,
    /// Unclaimed one-time keys of this device, per algorithm.
    pub device_one_time_keys_count: Value,
    /// Algorithms of this device's fallback keys never handed out.
    pub device_unused_fallback_key_types: Vec<String>,
}

impl SyncResponse {
    /// Whether the answer carries nothing new (a long poll keeps waiting).
    pub fn is_empty(&self) -> bool {
        self.rooms.join.is_empty()
            && self.rooms.invite.is_empty()
            && self.rooms.knock.is_empty()
            && self.rooms.leave.is_empty()
            && self.account_data.events.is_empty()
            && self.presence.events.is_empty()
            && self.to_device.events.is_empty()
            && self.device_lists.changed.is_empty()
            && self.device_lists.left.is_empty()
    }
}

/// `{"events": […]}`, the wrapper of every event list in `/sync`.
#[derive(Debug, Default, Serialize)]
pub struct Events {
    /// The events.
    pub events: Vec<Value>,
}

impl Events {
    /// Wraps a list, moving it in.
    pub fn of(events: Vec<Value>) -> Events {
        Events { events }
    }
}

/// The `rooms` object: one map per membership, by room ID (each always present, maybe empty).
#[derive(Debug, Default, Serialize)]
pub struct Rooms {
    /// Rooms the user is joined to.
    pub join: BTreeMap<String, JoinedRoom>,
    /// Rooms the user is invited to.
    pub invite: BTreeMap<String, InvitedRoom>,
    /// Rooms the user left or was removed from.
    pub leave: BTreeMap<String, LeftRoom>,
    /// Rooms the user knocked on.
    pub knock: BTreeMap<String, KnockedRoom>,
}

/// The state of a room's section: `state` (before the timeline), or `state_after` (up to its
/// end) when the client asked for `use_state_after`. Exactly one of the two keys is sent.
#[derive(Debug, Serialize)]
pub enum RoomState {
    /// `state`: the state before the timeline.
    #[serde(rename = "state")]
    Before(Events),
    /// `state_after`: the state at the end of the timeline.
    #[serde(rename = "state_after")]
    After(Events),
}

impl RoomState {
    /// `state_after` when `after`, else `state`, holding `events`.
    pub fn new(after: bool, events: Vec<Value>) -> RoomState {
        if after {
            RoomState::After(Events::of(events))
        } else {
            RoomState::Before(Events::of(events))
        }
    }

    /// The events, whichever key they go under.
    pub fn into_events(self) -> Vec<Value> {
        match self {
            RoomState::Before(events) | RoomState::After(events) => events.events,
        }
    }
}

/// A room's timeline section.
#[derive(Debug, Serialize)]
pub struct Timeline {
    /// The events, oldest first.
    pub events: Vec<Value>,
    /// Whether older events were left out (a gap).
    pub limited: bool,
    /// A `/messages` token to page back from; absent when there is nothing to page back to
    /// from (the spec allows omitting it; it is never `null`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_batch: Option<String>,
}

/// A joined room's section.
#[derive(Debug, Serialize)]
pub struct JoinedRoom {
    /// New events.
    pub timeline: Timeline,
    /// The state the client lacks.
    #[serde(flatten)]
    pub state: RoomState,
    /// Typing notices and receipts.
    pub ephemeral: Events,
    /// The user's room account data that changed.
    pub account_data: Events,
    /// Unread counts; absent from a section that only carries account data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unread_notifications: Option<UnreadNotifications>,
    /// Member counts and heroes (`{}` in a section that only carries account data).
    pub summary: RoomSummary,
}

impl JoinedRoom {
    /// A section with nothing but (room account data, filled in by the caller): sent for a
    /// room whose only news is account data.
    pub fn data_only(use_state_after: bool) -> JoinedRoom {
        JoinedRoom {
            timeline: Timeline {
                events: Vec::new(),
                limited: false,
                prev_batch: None,
            },
            state: RoomState::new(use_state_after, Vec::new()),
            ephemeral: Events::default(),
            account_data: Events::default(),
            unread_notifications: None,
            summary: RoomSummary::default(),
        }
    }
}

/// `unread_notifications`.
#[derive(Debug, Serialize)]
pub struct UnreadNotifications {
    /// Unread events that notify.
    pub notification_count: i64,
    /// Unread events that highlight.
    pub highlight_count: i64,
}

/// A room's `summary`.
#[derive(Debug, Default, Serialize)]
pub struct RoomSummary {
    /// Members to name an unnamed room after; absent when the room has a name or alias.
    #[serde(rename = "m.heroes", skip_serializing_if = "Option::is_none")]
    pub heroes: Option<Vec<String>>,
    /// Joined members.
    #[serde(
        rename = "m.joined_member_count",
        skip_serializing_if = "Option::is_none"
    )]
    pub joined_member_count: Option<i64>,
    /// Invited members.
    #[serde(
        rename = "m.invited_member_count",
        skip_serializing_if = "Option::is_none"
    )]
    pub invited_member_count: Option<i64>,
}

/// An invited room's section.
#[derive(Debug, Serialize)]
pub struct InvitedRoom {
    /// Stripped state of the room, with the invite.
    pub invite_state: Events,
}

/// A knocked room's section.
#[derive(Debug, Serialize)]
pub struct KnockedRoom {
    /// Stripped state of the room, with the knock.
    pub knock_state: Events,
}

/// A left room's section: what happened up to the leave.
#[derive(Debug, Serialize)]
pub struct LeftRoom {
    /// Events up to the leave.
    pub timeline: Timeline,
    /// The state the client lacks.
    #[serde(flatten)]
    pub state: RoomState,
    /// Room account data (always empty: it is sent with joined rooms).
    pub account_data: Events,
}

/// `device_lists`.
#[derive(Debug, Default, Serialize)]
pub struct DeviceLists {
    /// Users whose devices changed (or who newly share a room).
    pub changed: Vec<String>,
    /// Users who no longer share any room.
    pub left: Vec<String>,
}
