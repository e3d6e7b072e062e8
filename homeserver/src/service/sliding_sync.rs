//! Simplified sliding sync (MSC4186): the room list ordered by recency, windows into it, room
//! subscriptions and the extensions (to-device, e2ee, account data, receipts, typing).
//!
//! A request names what the client wants ([`SlidingSyncRequest`], already parsed from the wire
//! by the HTTP layer). The answer is computed for `(pos, upto]` like `/sync`: everything carries
//! a stream position from the one writer, and a long poll waits on the store's commit `watch`
//! channel (and the typing serial), never on a timer. What a connection has already been sent
//! is remembered in memory per `pos` ([`connection`]); a `pos` this process does not know is
//! `M_UNKNOWN_POS`, and the client starts afresh.
//!
//! Timelines, stripped state, receipts, account data, device lists, to-device messages and
//! unread counts come from the same functions `/sync` uses (`service::sync`, `service::e2ee`,
//! `service::push`), so both sync flavours agree on what a user may see. The answer is a typed
//! [`SlidingSyncResponse`] (`response.rs`), typed down to the event lists.

mod connection;
mod extensions;
mod response;
mod rooms;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ruma::{OwnedDeviceId, OwnedUserId};

pub use connection::Connections;
use connection::{ConnKey, ConnState};
pub use response::{
    AccountDataResponse, E2eeResponse, ExtensionsResponse, Hero, ListResponse, RoomEvents,
    RoomResponse, SlidingSyncResponse, ToDeviceResponse,
};

use super::Server;
use super::account_data::ignored_users;
use super::sync::{MAX_TIMEOUT, Wake};
use crate::error::Result;
use crate::store::wake::Interest;

/// Most timeline events one room may ask for.
pub const MAX_TIMELINE_LIMIT: usize = 1000;
/// Most lists, and most room subscriptions, in one request (MSC4186).
pub const MAX_LISTS: usize = 100;

/// One `required_state` pattern; `None` matches anything.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StatePattern {
    /// The event type, or any.
    pub kind: Option<String>,
    /// The state key (with `$ME` already replaced by the user ID), or any.
    pub state_key: Option<String>,
}

impl StatePattern {
    fn matches(&self, kind: &str, state_key: &str) -> bool {
        self.kind.as_deref().is_none_or(|k| k == kind)
            && self.state_key.as_deref().is_none_or(|k| k == state_key)
    }
}

/// The state one rule asks for: what `include` matches and `exclude` does not, plus, with
/// `lazy_members`, the members who appear in the timeline sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequiredState {
    /// Patterns of state to return.
    pub include: BTreeSet<StatePattern>,
    /// Patterns filtered out of `include`'s matches.
    pub exclude: BTreeSet<StatePattern>,
    /// Lazy-load members: those who sent or are the subject of timeline events.
    pub lazy_members: bool,
}

/// What to send for a room (MSC4186 "room config"); several rules matching one room combine
/// into their superset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomConfig {
    /// Most timeline events to send.
    pub timeline_limit: usize,
    /// The state rules; a state event is sent when any rule wants it.
    pub required_state: Vec<RequiredState>,
}

impl RoomConfig {
    /// Combines another rule's config into this one (the superset of both).
    pub fn merge(&mut self, other: &RoomConfig) {
        self.timeline_limit = self.timeline_limit.max(other.timeline_limit);
        for rule in &other.required_state {
            if !self.required_state.contains(rule) {
                self.required_state.push(rule.clone());
            }
        }
        self.required_state.sort();
    }

    /// Whether this config would return more than `old` did: a longer timeline or a state rule
    /// `old` did not have. A room sent under `old` is then sent again in full.
    fn expands(&self, old: &RoomConfig) -> bool {
        self.timeline_limit > old.timeline_limit
            || self
                .required_state
                .iter()
                .any(|rule| !old.required_state.contains(rule))
    }

    /// Whether a state event is wanted by a rule (lazy members aside).
    fn wants(&self, kind: &str, state_key: &str) -> bool {
        self.required_state.iter().any(|rule| {
            rule.include.iter().any(|p| p.matches(kind, state_key))
                && !rule.exclude.iter().any(|p| p.matches(kind, state_key))
        })
    }

    /// Whether any rule lazy-loads members.
    fn lazy_members(&self) -> bool {
        self.required_state.iter().any(|rule| rule.lazy_members)
    }
}

/// Filters narrowing a list (each one set is ANDed with the others).
#[derive(Debug, Clone, Default)]
pub struct ListFilters {
    /// Only rooms in (true) or not in (false) the user's `m.direct`.
    pub is_dm: Option<bool>,
    /// Only rooms the user is (true) or is not (false) invited to.
    pub is_invite: Option<bool>,
    /// Only rooms with (true) or without (false) `m.room.encryption`.
    pub is_encrypted: Option<bool>,
    /// Only rooms whose create event's `type` is one of these (`None`: no type).
    pub room_types: Option<Vec<Option<String>>>,
    /// Not rooms whose type is one of these.
    pub not_room_types: Vec<Option<String>>,
    /// Only rooms that are `m.space.child` of one of these joined spaces.
    pub spaces: Option<Vec<String>>,
    /// Only rooms carrying one of these tags.
    pub tags: Option<Vec<String>>,
    /// Not rooms carrying one of these tags.
    pub not_tags: Vec<String>,
}

/// One list: a window (or several) into the filtered, recency-ordered room list.
#[derive(Debug, Clone, Default)]
pub struct ListConfig {
    /// Inclusive index ranges; `None` means the whole list.
    pub ranges: Option<Vec<(usize, usize)>>,
    /// What to send for its rooms.
    pub room: RoomConfig,
    /// Which rooms the list holds.
    pub filters: ListFilters,
}

/// Which rooms a per-room extension covers: rooms of the named lists (all lists when `None`)
/// and the named subscriptions (all subscriptions when `None` or when it holds `*`).
#[derive(Debug, Clone, Default)]
pub struct ExtensionScope {
    /// List names.
    pub lists: Option<Vec<String>>,
    /// Room IDs, or `*` for every subscription.
    pub rooms: Option<Vec<String>>,
}

/// The to-device extension (MSC3885): its own token acknowledges what came before it.
#[derive(Debug, Clone, Default)]
pub struct ToDeviceConfig {
    /// Stream position from the previous `next_batch`.
    pub since: Option<i64>,
    /// Most messages to send.
    pub limit: usize,
}

/// The extensions a request enables.
#[derive(Debug, Clone, Default)]
pub struct Extensions {
    /// To-device messages (MSC3885).
    pub to_device: Option<ToDeviceConfig>,
    /// Device lists and key counts (MSC3884).
    pub e2ee: bool,
    /// Global and room account data (MSC3959).
    pub account_data: Option<ExtensionScope>,
    /// Read receipts (MSC3960).
    pub receipts: Option<ExtensionScope>,
    /// Typing notices (MSC3961).
    pub typing: Option<ExtensionScope>,
}

/// A parsed sliding sync request.
#[derive(Debug, Clone)]
pub struct SlidingSyncRequest {
    /// The user syncing.
    pub user_id: OwnedUserId,
    /// Their device (`None`: an application service's request without one).
    pub device_id: Option<OwnedDeviceId>,
    /// The connection (`""` when the client named none).
    pub conn_id: String,
    /// The `pos` resumed from (`None`: a new connection).
    pub pos: Option<String>,
    /// Long-poll timeout (ignored without a `pos`).
    pub timeout: Duration,
    /// The lists by name.
    pub lists: BTreeMap<String, ListConfig>,
    /// Room subscriptions by room ID.
    pub subscriptions: BTreeMap<String, RoomConfig>,
    /// The extensions enabled.
    pub extensions: Extensions,
    /// Echoed back so clients can tell which request an answer belongs to.
    pub txn_id: Option<String>,
}

/// What one computation produced.
struct Computed {
    /// The answer, with `pos` and `txn_id` still to fill in.
    response: SlidingSyncResponse,
    state: ConnState,
    /// Nothing the client does not already have (a long poll keeps waiting).
    empty: bool,
}

/// Typing notices as seen when computing: every room with a record, and those changed since
/// the connection's serial.
struct TypingView {
    /// The typing serial these were read at.
    serial: u64,
    all: std::collections::HashMap<String, Vec<String>>,
    changed: std::collections::HashMap<String, Vec<String>>,
}

/// Runs a sliding sync request, waiting up to its timeout when it resumes a `pos` and nothing
/// is new.
#[tracing::instrument(skip_all, fields(user = %req.user_id, conn = %req.conn_id))]
pub async fn sync(server: &Server, req: SlidingSyncRequest) -> Result<SlidingSyncResponse> {
    let key = ConnKey {
        user_id: req.user_id.to_string(),
        device_id: req.device_id.clone(),
        conn_id: req.conn_id.clone(),
    };
    let (base_id, base) = server.sliding_sync.resume(&key, req.pos.as_deref())?;
    if let Some(since) = req.extensions.to_device.as_ref().and_then(|t| t.since) {
        // A to-device token acknowledges the messages handed out before it (MSC3885).
        let device = req.device_id.as_deref();
        super::e2ee::ack_to_device(server, &req.user_id, device, since).await?;
    }
    let user = req.user_id.clone();
    let ignored = server
        .store
        .read(move |conn| ignored_users(conn, user.as_str()))
        .await?;
    let deadline = tokio::time::Instant::now() + req.timeout.min(MAX_TIMEOUT);
    let mut positions = server.store.subscribe();
    let mut typing_changes = server.typing.subscribe();
    let mut shutdown = server.shutdown.clone();
    let req = Arc::new(req);
    let ignored = Arc::new(ignored);
    loop {
        let upto = *positions.borrow_and_update();
        let typing_now = *typing_changes.borrow_and_update();
        let typing = TypingView {
            serial: typing_now,
            all: server.typing.changes_since(0),
            changed: server.typing.changes_since(base.typing.min(typing_now)),
        };
        let (request, resumed, ignored_users) =
            (Arc::clone(&req), Arc::clone(&base), Arc::clone(&ignored));
        let resumed_pos = base_id.map(|_| base.stream_pos);
        let (computed, interest) = server
            .store
            .read(move |conn| {
                let computed = rooms::compute(
                    conn,
                    &request,
                    &ignored_users,
                    &resumed,
                    resumed_pos,
                    upto,
                    &typing,
                )?;
                Ok((computed, Interest::of(conn, request.user_id.as_str())?))
            })
            .await?;
        let Computed {
            mut response,
            state,
            empty,
        } = computed;
        response.txn_id.clone_from(&req.txn_id);
        let wait = empty && base_id.is_some() && !req.timeout.is_zero();
        if !wait {
            response.pos = server.sliding_sync.record(&key, base_id, state)?;
            return Ok(response);
        }
        // Nothing new: answering with the same `pos` is correct once the wait is over (a
        // resumed connection always has one).
        response.pos = req.pos.clone().unwrap_or_default();
        let wake = Wake {
            positions: &mut positions,
            typing: &mut typing_changes,
            shutdown: &mut shutdown,
            deadline,
        };
        if !wake.concerning(server, &interest, upto, typing_now).await {
            return Ok(response);
        }
    }
}
