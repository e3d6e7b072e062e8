//! Simplified sliding sync (MSC4186): the wire format of `POST …/sync`, turned into a
//! [`SlidingSyncRequest`] for `service::sliding_sync`.
//!
//! Two request dialects are accepted, since clients in the field send the first and the MSC
//! text now describes the second: Synapse's experimental one (as ruma and matrix-rust-sdk, so
//! Element X, send it: `pos`/`timeout` in the query, list `ranges`, `required_state` as
//! `[type, state_key]` pairs with `*`, `$LAZY` and `$ME`, filter `is_invite`) and the current
//! MSC text's (`pos`/`timeout` in the body, `range`, `required_state` as
//! `{include, exclude, lazy_members}`, `is_invited`). The answer carries the fields both expect
//! (`invite_state` and `stripped_state`, `expanded_timeline` and its unstable name).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use ruma::{DeviceId, UserId};
use serde::Deserialize;
use serde_json::Value;

use crate::api::extract::{Auth, JsonBody, QueryParams, room_id};
use crate::error::{Error, Result};
use crate::service::sliding_sync::{
    self, ExtensionScope, Extensions, ListConfig, ListFilters, MAX_LISTS, MAX_TIMELINE_LIMIT,
    RequiredState, RoomConfig, SlidingSyncRequest, SlidingSyncResponse, StatePattern,
    ToDeviceConfig,
};
use crate::service::{Server, presence};

/// Most to-device messages one answer carries (as `/sync`).
const MAX_TO_DEVICE: usize = 100;

/// The routes of this area: the unstable path clients use, and the proposed stable ones.
pub fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route(
            "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
            post(sync),
        )
        .route("/_matrix/client/v4/sync", post(sync))
        .route("/_matrix/client/v5/sync", post(sync))
}

/// Query parameters (the experimental dialect puts these in the query).
#[derive(Deserialize)]
struct SyncQuery {
    pos: Option<String>,
    timeout: Option<u64>,
    set_presence: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Body {
    conn_id: Option<String>,
    txn_id: Option<String>,
    pos: Option<String>,
    timeout: Option<u64>,
    set_presence: Option<String>,
    lists: BTreeMap<String, WireList>,
    room_subscriptions: BTreeMap<String, WireRoomConfig>,
    extensions: WireExtensions,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireList {
    ranges: Option<Vec<(u64, u64)>>,
    range: Option<(u64, u64)>,
    timeline_limit: Option<u64>,
    required_state: Option<WireRequiredState>,
    filters: Option<WireFilters>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireRoomConfig {
    timeline_limit: Option<u64>,
    required_state: Option<WireRequiredState>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireRequiredState {
    /// `[[type, state_key], …]` (experimental dialect).
    Pairs(Vec<(String, String)>),
    /// `{include, exclude, lazy_members}` (MSC text).
    Rules(WireRules),
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireRules {
    include: Vec<WirePattern>,
    exclude: Vec<WirePattern>,
    lazy_members: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WirePattern {
    #[serde(rename = "type")]
    kind: Option<String>,
    state_key: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireFilters {
    is_dm: Option<bool>,
    is_invite: Option<bool>,
    is_invited: Option<bool>,
    is_encrypted: Option<bool>,
    room_types: Option<Vec<Option<String>>>,
    not_room_types: Vec<Option<String>>,
    spaces: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    not_tags: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireExtensions {
    to_device: WireToDevice,
    e2ee: WireEnabled,
    account_data: WireScoped,
    receipts: WireScoped,
    typing: WireScoped,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireToDevice {
    enabled: Option<bool>,
    since: Option<String>,
    limit: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireEnabled {
    enabled: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireScoped {
    enabled: Option<bool>,
    lists: Option<Vec<String>>,
    rooms: Option<Vec<String>>,
}

/// # `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`
/// (also `/_matrix/client/v4/sync` and `/_matrix/client/v5/sync`)
async fn sync(
    State(server): State<Arc<Server>>,
    auth: Auth,
    QueryParams(query): QueryParams<SyncQuery>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<SlidingSyncResponse>> {
    let body: Body = serde_json::from_value(body)
        .map_err(|err| Error::bad_json(format!("Invalid sliding sync request: {err}")))?;
    let set_presence = query.set_presence.clone().or(body.set_presence.clone());
    if let Some(state) = &set_presence
        && !matches!(state.as_str(), "online" | "offline" | "unavailable")
    {
        return Err(Error::invalid_param(
            "set_presence must be online, offline or unavailable",
        ));
    }
    let request = parse(&auth.user_id, auth.device_id.as_deref(), query, body)?;
    match set_presence.as_deref().unwrap_or("online") {
        "offline" => {}
        state => presence::mark_active(&server, &auth.user_id, state).await?,
    }
    Ok(Json(sliding_sync::sync(&server, request).await?))
}

/// Validates the wire request into the service's terms.
fn parse(
    user_id: &UserId,
    device_id: Option<&DeviceId>,
    query: SyncQuery,
    body: Body,
) -> Result<SlidingSyncRequest> {
    if body.lists.len() > MAX_LISTS || body.room_subscriptions.len() > MAX_LISTS {
        return Err(Error::invalid_param(format!(
            "At most {MAX_LISTS} lists and {MAX_LISTS} room subscriptions"
        )));
    }
    let mut lists = BTreeMap::new();
    for (name, list) in body.lists {
        let ranges = match (list.ranges, list.range) {
            (None, None) => None,
            (ranges, range) => {
                let mut all = ranges.unwrap_or_default();
                all.extend(range);
                let mut out = Vec::new();
                for (start, end) in all {
                    if start > end {
                        return Err(Error::invalid_param(format!(
                            "List {name:?}: range start {start} is after its end {end}"
                        )));
                    }
                    out.push((index(start), index(end)));
                }
                Some(out)
            }
        };
        let room = room_config(user_id.as_str(), list.timeline_limit, list.required_state);
        let filters = list.filters.map(filters).unwrap_or_default();
        lists.insert(
            name,
            ListConfig {
                ranges,
                room,
                filters,
            },
        );
    }
    let mut subscriptions = BTreeMap::new();
    for (room, config) in body.room_subscriptions {
        let room = room_id(&room)?;
        subscriptions.insert(
            room.to_string(),
            room_config(
                user_id.as_str(),
                config.timeline_limit,
                config.required_state,
            ),
        );
    }
    let ext = body.extensions;
    let to_device = match ext.to_device.enabled {
        Some(true) => Some(ToDeviceConfig {
            since: ext
                .to_device
                .since
                .as_deref()
                .map(|since| {
                    since
                        .parse::<i64>()
                        .ok()
                        .filter(|pos| *pos >= 0)
                        .ok_or_else(|| Error::invalid_param("Unknown to_device since token"))
                })
                .transpose()?,
            limit: ext
                .to_device
                .limit
                .map_or(MAX_TO_DEVICE, |l| {
                    usize::try_from(l).unwrap_or(MAX_TO_DEVICE)
                })
                .min(MAX_TO_DEVICE),
        }),
        _ => None,
    };
    let scoped = |w: WireScoped| {
        (w.enabled == Some(true)).then_some(ExtensionScope {
            lists: w.lists,
            rooms: w.rooms,
        })
    };
    let timeout = query.timeout.or(body.timeout).unwrap_or(0);
    Ok(SlidingSyncRequest {
        user_id: user_id.to_owned(),
        device_id: device_id.map(DeviceId::to_owned),
        conn_id: body.conn_id.unwrap_or_default(),
        pos: query.pos.or(body.pos),
        timeout: Duration::from_millis(timeout),
        lists,
        subscriptions,
        extensions: Extensions {
            to_device,
            e2ee: ext.e2ee.enabled == Some(true),
            account_data: scoped(ext.account_data),
            receipts: scoped(ext.receipts),
            typing: scoped(ext.typing),
        },
        txn_id: body.txn_id,
    })
}

/// A list index from the wire (indexes beyond memory mean "to the end").
fn index(raw: u64) -> usize {
    usize::try_from(raw).unwrap_or(usize::MAX)
}

fn room_config(
    user_id: &str,
    timeline_limit: Option<u64>,
    required_state: Option<WireRequiredState>,
) -> RoomConfig {
    let timeline_limit = timeline_limit.map_or(0, index).min(MAX_TIMELINE_LIMIT);
    let rule = match required_state {
        None => RequiredState::default(),
        Some(WireRequiredState::Pairs(pairs)) => {
            let mut rule = RequiredState::default();
            for (kind, state_key) in pairs {
                if kind == "m.room.member" && state_key == "$LAZY" {
                    rule.lazy_members = true;
                    continue;
                }
                rule.include.insert(StatePattern {
                    kind: (kind != "*").then_some(kind),
                    state_key: wire_state_key(user_id, Some(state_key)),
                });
            }
            rule
        }
        Some(WireRequiredState::Rules(rules)) => {
            let convert = |patterns: Vec<WirePattern>| -> BTreeSet<StatePattern> {
                patterns
                    .into_iter()
                    .map(|p| StatePattern {
                        kind: p.kind,
                        state_key: p
                            .state_key
                            .map(|k| if k == "$ME" { user_id.to_owned() } else { k }),
                    })
                    .collect()
            };
            RequiredState {
                include: convert(rules.include),
                exclude: convert(rules.exclude),
                lazy_members: rules.lazy_members,
            }
        }
    };
    RoomConfig {
        timeline_limit,
        required_state: vec![rule],
    }
}

/// A state key of the experimental dialect: `*` is any, `$ME` the user.
fn wire_state_key(user_id: &str, state_key: Option<String>) -> Option<String> {
    match state_key.as_deref() {
        None | Some("*") => None,
        Some("$ME") => Some(user_id.to_owned()),
        Some(_) => state_key,
    }
}

fn filters(wire: WireFilters) -> ListFilters {
    ListFilters {
        is_dm: wire.is_dm,
        is_invite: wire.is_invite.or(wire.is_invited),
        is_encrypted: wire.is_encrypted,
        room_types: wire.room_types,
        not_room_types: wire.not_room_types,
        spaces: wire.spaces,
        tags: wire.tags,
        not_tags: wire.not_tags,
    }
}
