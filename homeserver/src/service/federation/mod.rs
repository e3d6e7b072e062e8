//! Federation behaviour: receiving transactions (with fetching of missing history), joining
//! rooms on other units and letting their users join ours, and invites in both directions.
//! One file per concern: `receive` (transactions), `edu`, `membership` (joins and leaves),
//! `invites`, `knock`, `backfill`, `directory` (remote queries), `resident` (what peers read
//! from us), `hierarchy` (spaces), `media`, and `route` (the client operations that may reach
//! another unit, choosing between the domain service and the federation flow); this file
//! keeps the helpers they share.
//!
//! Everything here talks only to allow-listed peers (through [`FederationClient`]) and checks
//! every incoming PDU with [`incoming`] before it touches a room.

mod backfill;
mod directory;
mod edu;
pub mod hierarchy;
pub mod incoming;
pub mod invites;
pub mod knock;
pub mod media;
mod membership;
mod receive;
pub mod resident;
pub mod route;

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::http::Method;
use ruma::events::TimelineEventType;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
};
use serde_json::{Map, Value, json};

use self::incoming::{Missing, Outcome, accept_in_tx, verify_pdu};
use super::Server;
use super::rooms::{self, RestrictedJoin, enqueue_for_peers_in_tx};
use crate::error::{Error, ErrorCode, Result};
use crate::matrix::build::{NewEvent, Placement, build_event};
use crate::matrix::client_format::to_stripped_state;
use crate::matrix::pdu::Pdu;
use crate::matrix::room_rules;
use crate::store::state::{self, StateMap};
use crate::store::{dag, events, misc, outbox};
use crate::util::now_ms;

pub use self::backfill::*;
pub use self::directory::*;
use self::edu::*;
pub use self::invites::{
    invite_remote, invite_remote_checked, receive_invite, reject_remote_invite,
};
pub use self::membership::*;
pub use self::receive::*;
pub use super::require_allowed_user;
pub use crate::transport::client::fed_error;
pub use crate::util::urlencode;

fn object_of(value: &Value) -> Result<CanonicalJsonObject> {
    match ruma::canonical_json::to_canonical_value(value)
        .map_err(|e| Error::bad_json(format!("PDU is not canonical JSON: {e}")))?
    {
        CanonicalJsonValue::Object(object) => Ok(object),
        _ => Err(Error::bad_json("PDU is not an object")),
    }
}

/// The room version of a room we know.
async fn version_of(server: &Server, room_id: &str) -> Result<Option<String>> {
    let room = room_id.to_owned();
    Ok(server
        .store
        .read(move |conn| state::get_room(conn, &room))
        .await?
        .map(|r| r.room_version))
}

/// Verifies a PDU received from a peer for a room of known version.
fn verify(server: &Server, version: &str, value: &Value) -> Result<Pdu> {
    let (_, rules) = room_rules(version)?;
    verify_pdu(&server.peers, &server.signer, &rules, object_of(value)?)
}

/// The one "try each resident server" loop: runs `attempt` through each candidate unit in
/// turn until one succeeds, logging each failure as `what` failed. With no candidate the
/// answer is `M_FORBIDDEN` with `none`; otherwise the last failure.
pub(crate) async fn try_each_resident<T, F, Fut>(
    room_id: &RoomId,
    candidates: Vec<String>,
    what: &str,
    none: &str,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut last = Error::forbidden(none);
    for resident in candidates {
        match attempt(resident.clone()).await {
            Ok(done) => return Ok(done),
            Err(err) => {
                tracing::warn!(room = %room_id, via = %resident, error = %err, "{what} failed");
                last = err;
            }
        }
    }
    Err(last)
}

/// The event ID of a received PDU (its reference hash), for reporting even a refused event.
async fn event_id_of(server: &Server, room_id: &str, value: &Value) -> Option<String> {
    let version = version_of(server, room_id).await.ok()??;
    let (_, rules) = room_rules(&version).ok()?;
    let mut object = object_of(value).ok()?;
    object.remove("unsigned");
    crate::matrix::pdu::event_id_of(&object, &rules)
        .ok()
        .map(|id| id.to_string())
}
