//! Rooms: `/createRoom`, room state, sending events and redactions.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use ruma::events::TimelineEventType;
use ruma::{OwnedUserId, RoomVersionId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::client::delayed_events;
use crate::api::client::wire::{EventIdResponse, RoomIdResponse, SendResponse, UpgradeResponse};
use crate::api::extract::{Auth, JsonBody, PathParams, RawQuery, event_id, room_id, user_id};
use crate::error::{Error, ErrorCode, Result};
use crate::matrix::build::NewEvent;
use crate::matrix::rules_for;
use crate::service::delayed_events::Schedule;
use crate::service::rooms::{self, CreateRoom};
use crate::service::state_request::StateRequest;
use crate::service::{Server, room_state, state_request};

#[derive(Deserialize)]
pub struct StateEventBody {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    state_key: String,
    content: Map<String, Value>,
}

#[derive(Deserialize)]
pub struct CreateRoomBody {
    visibility: Option<String>,
    room_alias_name: Option<String>,
    name: Option<String>,
    topic: Option<String>,
    #[serde(default)]
    invite: Vec<String>,
    #[serde(default)]
    invite_3pid: Vec<Value>,
    room_version: Option<String>,
    creation_content: Option<Map<String, Value>>,
    #[serde(default)]
    initial_state: Vec<StateEventBody>,
    preset: Option<String>,
    #[serde(default)]
    is_direct: bool,
    power_level_content_override: Option<Map<String, Value>>,
}

/// # `POST /_matrix/client/v3/createRoom`
pub async fn create_room(
    State(server): State<Arc<Server>>,
    auth: Auth,
    JsonBody(body): JsonBody<CreateRoomBody>,
) -> Result<Json<RoomIdResponse>> {
    let version = match &body.room_version {
        Some(v) => {
            let id = RoomVersionId::try_from(v.as_str()).map_err(|_| {
                Error::new(
                    ErrorCode::UnsupportedRoomVersion,
                    "Unsupported room version",
                )
            })?;
            if rules_for(&id).is_none() {
                return Err(Error::new(
                    ErrorCode::UnsupportedRoomVersion,
                    format!("Room version {v} is not supported"),
                ));
            }
            Some(id)
        }
        None => None,
    };
    if !body.invite_3pid.is_empty() {
        return Err(Error::new(
            ErrorCode::ThreepidDenied,
            "Third-party invites are not available on this unit",
        ));
    }
    if let Some(preset) = &body.preset
        && !matches!(
            preset.as_str(),
            "public_chat" | "private_chat" | "trusted_private_chat"
        )
    {
        return Err(Error::bad_json(format!("Unknown preset {preset:?}")));
    }
    let public = match body.visibility.as_deref() {
        None | Some("private") => false,
        Some("public") => true,
        Some(other) => return Err(Error::bad_json(format!("Unknown visibility {other:?}"))),
    };
    let alias = match &body.room_alias_name {
        Some(local) => {
            let alias = format!("#{local}:{}", server.server_name());
            if local.is_empty()
                || local.contains(':')
                || ruma::OwnedRoomAliasId::try_from(alias.as_str()).is_err()
            {
                return Err(Error::new(
                    ErrorCode::InvalidParam,
                    "Invalid room alias name",
                ));
            }
            crate::service::aliases::appservice_may_manage(
                &server,
                auth.appservice.as_deref(),
                &alias,
            )?;
            Some(alias)
        }
        None => None,
    };
    let invite = body
        .invite
        .iter()
        .map(|u| user_id(u))
        .collect::<Result<Vec<OwnedUserId>>>()?;
    for invitee in &invite {
        crate::service::federation::require_allowed_user(&server, invitee)?;
    }
    let request = CreateRoom {
        version,
        creation_content: body.creation_content.unwrap_or_default(),
        preset: body.preset,
        name: body.name,
        topic: body.topic,
        alias,
        invite,
        initial_state: body
            .initial_state
            .into_iter()
            .map(|s| (s.kind, s.state_key, Value::Object(s.content)))
            .collect(),
        power_level_override: body.power_level_content_override,
        is_direct: body.is_direct,
        public,
    };
    let room_id =
        crate::service::federation::invites::create_room(&server, auth.user_id, request).await?;
    Ok(Json(RoomIdResponse { room_id }))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/state`
pub async fn full_state(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(raw_room): PathParams<String>,
) -> Result<Json<Vec<Value>>> {
    // Client-format state events: their content is arbitrary JSON.
    let events = room_state::all(&server, &auth.user_id, room_id(&raw_room)?).await?;
    Ok(Json(events))
}

async fn state_content(
    server: &Server,
    auth: &Auth,
    raw_room: &str,
    kind: String,
    key: String,
    query: &RawQuery,
) -> Result<Value> {
    let format = match query.first("format").as_deref() {
        None | Some("content") => room_state::StateFormat::Content,
        Some("event") => room_state::StateFormat::Event,
        Some(other) => {
            return Err(Error::invalid_param(format!(
                "format must be \"content\" or \"event\", not {other:?}"
            )));
        }
    };
    room_state::content(server, &auth.user_id, room_id(raw_room)?, kind, key, format).await
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
pub async fn get_state(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((room, kind, key)): PathParams<(String, String, String)>,
    query: RawQuery,
) -> Result<Json<Value>> {
    // A state event's content (or with `format=event` the event): arbitrary JSON.
    state_content(&server, &auth, &room, kind, key, &query)
        .await
        .map(Json)
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}` (empty state key)
pub async fn get_state_empty_key(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((room, kind)): PathParams<(String, String)>,
    query: RawQuery,
) -> Result<Json<Value>> {
    // As `get_state`: arbitrary JSON.
    state_content(&server, &auth, &room, kind, String::new(), &query)
        .await
        .map(Json)
}

/// An application service's `?ts=` (spec: "Timestamp massaging"): the `origin_server_ts` of
/// the event it sends, a non-negative integer in canonical JSON's range (400
/// `M_INVALID_PARAM` otherwise). Other callers' `ts` is ignored, as the spec gives it no
/// meaning for them.
fn massaged_ts(auth: &Auth, query: &RawQuery) -> Result<Option<ruma::MilliSecondsSinceUnixEpoch>> {
    if !auth.is_appservice() {
        return Ok(None);
    }
    let Some(raw) = query.first("ts") else {
        return Ok(None);
    };
    raw.parse::<u64>()
        .ok()
        .and_then(ruma::UInt::new)
        .map(|ms| Some(ruma::MilliSecondsSinceUnixEpoch(ms)))
        .ok_or_else(|| {
            Error::invalid_param(format!(
                "ts must be a timestamp in milliseconds (0 to 2^53-1), not {raw:?}"
            ))
        })
}

async fn put_state_inner(
    server: &Server,
    auth: Auth,
    raw_room: &str,
    kind: String,
    key: String,
    content: Map<String, Value>,
    ts: Option<ruma::MilliSecondsSinceUnixEpoch>,
) -> Result<Json<SendResponse>> {
    let room = room_id(raw_room)?;
    let request = state_request::check(server, &room, kind, key, content).await?;
    let id = match (request, ts) {
        (StateRequest::Local(event), Some(ts)) => {
            rooms::send_at(server, room, auth.user_id, event, None, Some(ts)).await?
        }
        (request, _) => {
            crate::service::federation::invites::carry_out(server, room, auth.user_id, request)
                .await?
        }
    };
    Ok(Json(SendResponse::Sent(EventIdResponse { event_id: id })))
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
pub async fn put_state(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((room, kind, key)): PathParams<(String, String, String)>,
    query: RawQuery,
    JsonBody(content): JsonBody<Map<String, Value>>,
) -> Result<Json<SendResponse>> {
    if let Some(delay_ms) = delayed_events::delay_param(&query)? {
        return schedule_state(&server, auth, &room, kind, key, content, delay_ms).await;
    }
    let ts = massaged_ts(&auth, &query)?;
    put_state_inner(&server, auth, &room, kind, key, content, ts).await
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}` (empty state key)
pub async fn put_state_empty_key(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((room, kind)): PathParams<(String, String)>,
    query: RawQuery,
    JsonBody(content): JsonBody<Map<String, Value>>,
) -> Result<Json<SendResponse>> {
    if let Some(delay_ms) = delayed_events::delay_param(&query)? {
        return schedule_state(&server, auth, &room, kind, String::new(), content, delay_ms).await;
    }
    let ts = massaged_ts(&auth, &query)?;
    put_state_inner(&server, auth, &room, kind, String::new(), content, ts).await
}

/// A state event with `?org.matrix.msc4140.delay=`: scheduled, answered with its delay ID.
async fn schedule_state(
    server: &Server,
    auth: Auth,
    raw_room: &str,
    kind: String,
    key: String,
    content: Map<String, Value>,
    delay_ms: u64,
) -> Result<Json<SendResponse>> {
    let request = Schedule {
        room_id: room_id(raw_room)?,
        event_type: kind,
        state_key: Some(key),
        content,
        delay_ms,
    };
    delayed_events::answer_scheduled(server, auth, None, request).await
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`
pub async fn send(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((room, kind, txn_id)): PathParams<(String, String, String)>,
    query: RawQuery,
    JsonBody(content): JsonBody<Map<String, Value>>,
) -> Result<Json<SendResponse>> {
    let room = room_id(&room)?;
    if matches!(kind.as_str(), "m.room.redaction") {
        return Err(Error::forbidden(
            "Use the /redact endpoint to redact events",
        ));
    }
    if let Some(delay_ms) = delayed_events::delay_param(&query)? {
        let request = Schedule {
            room_id: room,
            event_type: kind,
            state_key: None,
            content,
            delay_ms,
        };
        return delayed_events::answer_scheduled(&server, auth, Some(txn_id), request).await;
    }
    let ts = massaged_ts(&auth, &query)?;
    let event = NewEvent::message(TimelineEventType::from(kind), Value::Object(content));
    let id = rooms::send_at(
        &server,
        room,
        auth.user_id,
        event,
        Some((auth.device_id, txn_id)),
        ts,
    )
    .await?;
    Ok(Json(SendResponse::Sent(EventIdResponse { event_id: id })))
}

#[derive(Deserialize)]
pub struct RedactBody {
    reason: Option<String>,
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}`
pub async fn redact(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((room, target, txn_id)): PathParams<(String, String, String)>,
    JsonBody(body): JsonBody<RedactBody>,
) -> Result<Json<EventIdResponse>> {
    let room = room_id(&room)?;
    let target = event_id(&target)?;
    let mut content = json!({});
    if let Some(reason) = body.reason {
        content["reason"] = json!(reason);
    }
    let event = NewEvent {
        kind: TimelineEventType::RoomRedaction,
        state_key: None,
        content,
        redacts: Some(target),
    };
    let id = rooms::send(
        &server,
        room,
        auth.user_id,
        event,
        Some((auth.device_id, format!("redact:{txn_id}"))),
    )
    .await?;
    Ok(Json(EventIdResponse { event_id: id }))
}

#[derive(Deserialize)]
pub struct UpgradeBody {
    new_version: String,
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/upgrade`
pub async fn upgrade(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    JsonBody(body): JsonBody<UpgradeBody>,
) -> Result<Json<UpgradeResponse>> {
    let room = room_id(&room)?;
    let version = ruma::RoomVersionId::try_from(body.new_version.as_str()).map_err(|_| {
        Error::new(
            crate::error::ErrorCode::UnsupportedRoomVersion,
            "Unknown room version",
        )
    })?;
    let new_room =
        crate::service::upgrade::upgrade_room(&server, auth.user_id, room, version).await?;
    Ok(Json(UpgradeResponse {
        replacement_room: new_room,
    }))
}
