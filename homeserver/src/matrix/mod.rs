//! The Matrix rules, with no I/O: signing keys, the PDU type, building and signing new events,
//! authorisation checks (through ruma-state-res), and the client event format.
//!
//! Everything here is handed what it needs (state, keys, clocks' readings) by the services; it
//! opens no file or socket and reads no clock, so every rule can be tested byte-for-byte.

pub mod appservice;
pub mod build;
pub mod client_format;
pub mod edu;
pub mod filter;
pub mod join_rules;
pub mod keys;
pub mod oauth;
pub mod pdu;
pub mod peer_card;
pub mod power;
pub mod state_res_v1;
pub mod visibility;
pub mod wire;
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

/// The rules of a room version we support, from its name on the wire: an unknown name is
/// `M_BAD_JSON`, a known but unsupported one `M_UNSUPPORTED_ROOM_VERSION`.
pub fn room_rules(version: &str) -> crate::error::Result<(RoomVersionId, RoomVersionRules)> {
    let id = RoomVersionId::try_from(version)
        .map_err(|_| crate::error::Error::bad_json(format!("bad room version {version}")))?;
    let rules = rules_for(&id).ok_or_else(|| {
        crate::error::Error::new(
            crate::error::ErrorCode::UnsupportedRoomVersion,
            format!("room version {version} is not supported"),
        )
    })?;
    Ok((id, rules))
}

/// The rules of a supported room version, or `None` when we do not support it.
pub fn rules_for(version: &RoomVersionId) -> Option<RoomVersionRules> {
    if SUPPORTED_ROOM_VERSIONS.contains(version) {
        version.rules()
    } else {
        None
    }
}
