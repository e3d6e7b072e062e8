//! Response bodies shared by several client endpoints, as typed structs (serialised once,
//! here) rather than `serde_json::Value`s built in each handler. Bodies used by one endpoint
//! only are defined next to it.

use serde::Serialize;

/// `{}`: the answer of endpoints that only acknowledge.
#[derive(Debug, Default, Serialize)]
pub struct Empty {}

/// `{"room_id": …}`: the answer of createRoom, join and knock.
#[derive(Debug, Serialize)]
pub struct RoomIdResponse {
    /// The room joined, knocked on or created.
    pub room_id: ruma::OwnedRoomId,
}

/// `{"chunk": […]}`: a list answer without pagination.
#[derive(Debug, Serialize)]
pub struct Chunk<T> {
    /// The items.
    pub chunk: Vec<T>,
}
