//! The Matrix rules, with no I/O: signing keys, the PDU type, building and signing new events,
//! authorisation checks (through ruma-state-res), and the client event format.
//!
//! Everything here is handed what it needs (state, keys, clocks' readings) by the services; it
//! opens no file or socket and reads no clock, so every rule can be tested byte-for-byte.

pub mod build;
pub mod client_format;
pub mod filter;
pub mod keys;
pub mod pdu;
pub mod peer_card;
pub mod power;
pub mod state_res_v1;
pub mod visibility;
pub mod xmatrix;

use ruma::{RoomVersionId, room_version_rules::RoomVersionRules};

/// The room versions this server creates and joins (every stable version of the spec); the
/// first is the default for new rooms.
pub const SUPPORTED_ROOM_VERSIONS: [RoomVersionId; 12] = [
    RoomVersionId::V12,
    RoomVersionId::V11,
    RoomVersionId::V10,
    RoomVersionId::V9,
    RoomVersionId::V8,
    RoomVersionId::V7,
    RoomVersionId::V6,
    RoomVersionId::V5,
    RoomVersionId::V4,
    RoomVersionId::V3,
    RoomVersionId::V2,
    RoomVersionId::V1,
];

/// The default version for new rooms.
pub const DEFAULT_ROOM_VERSION: RoomVersionId = RoomVersionId::V12;

/// The rules of a supported room version, or `None` when we do not support it.
pub fn rules_for(version: &RoomVersionId) -> Option<RoomVersionRules> {
    if SUPPORTED_ROOM_VERSIONS.contains(version) {
        version.rules()
    } else {
        None
    }
}
