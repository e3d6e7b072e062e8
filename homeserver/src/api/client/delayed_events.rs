//! Delayed events (MSC4140, unstable prefix `org.matrix.msc4140`): scheduling, managing and
//! listing them. Scheduling through `/send` and `/state` with `?org.matrix.msc4140.delay=` (the
//! form MatrixRTC clients use) is in `room.rs`; both go to `service::delayed_events`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::api::client::wire::{DelayedEvents, Empty, SendResponse};
use crate::api::extract::{Auth, JsonBody, PathParams, RawQuery, room_id};
use crate::error::{Error, Result};
use crate::service::Server;
use crate::service::delayed_events::{self, Action, Schedule};

/// The unstable prefix every route here lives under.
pub const PREFIX: &str = "/_matrix/client/unstable/org.matrix.msc4140";

#[derive(Deserialize)]
pub struct ScheduleBody {
    delay_ms: Value,
    state_key: Option<String>,
    content: Map<String, Value>,
}

/// # `PUT …/rooms/{roomId}/delayed_event/{eventType}/{txnId}`
pub async fn schedule(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((room, kind, txn_id)): PathParams<(String, String, String)>,
    JsonBody(body): JsonBody<ScheduleBody>,
) -> Result<Json<SendResponse>> {
    let delay_ms = match &body.delay_ms {
        Value::Number(n) => n
            .as_u64()
            .filter(|ms| *ms > 0)
            .ok_or_else(|| Error::invalid_param("delay_ms must be a positive integer"))?,
        _ => return Err(Error::bad_json("delay_ms must be a positive integer")),
    };
    let request = Schedule {
        room_id: room_id(&room)?,
        event_type: kind,
        state_key: body.state_key,
        content: body.content,
        delay_ms,
    };
    answer_scheduled(&server, auth, Some(txn_id), request).await
}

/// Schedules `request` for the caller and answers with its delay ID: the one answer of every
/// way to schedule (this endpoint, and `/send` or `/state` with a delay).
pub async fn answer_scheduled(
    server: &Server,
    auth: Auth,
    txn_id: Option<String>,
    request: Schedule,
) -> Result<Json<SendResponse>> {
    let delay_id =
        delayed_events::schedule(server, auth.user_id, auth.device_id, txn_id, request).await?;
    Ok(Json(SendResponse::Scheduled { delay_id }))
}

/// # `POST …/delayed_events/{delayId}/{action}`
pub async fn manage(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((delay_id, action)): PathParams<(String, String)>,
) -> Result<Json<Empty>> {
    let action = Action::parse(&action)?;
    delayed_events::manage(&server, &auth.user_id, &delay_id, action).await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize)]
pub struct ActionBody {
    action: String,
}

/// # `POST …/delayed_events/{delayId}` with `{"action": …}`
/// The MSC's earlier form, which released matrix-js-sdk versions still send.
pub async fn manage_in_body(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(delay_id): PathParams<String>,
    JsonBody(body): JsonBody<ActionBody>,
) -> Result<Json<Empty>> {
    let action = Action::parse(&body.action)?;
    delayed_events::manage(&server, &auth.user_id, &delay_id, action).await?;
    Ok(Json(Empty {}))
}

/// # `GET …/delayed_events/{delayId}`
pub async fn get_one(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(delay_id): PathParams<String>,
) -> Result<Json<delayed_events::ClientDelayedEvent>> {
    let event = delayed_events::lookup(&server, &auth.user_id, &delay_id).await?;
    Ok(Json(delayed_events::to_client(&event)))
}

/// # `GET …/delayed_events`: the caller's scheduled events, soonest due first.
pub async fn list(State(server): State<Arc<Server>>, auth: Auth) -> Result<Json<DelayedEvents>> {
    let events = delayed_events::list(&server, &auth.user_id).await?;
    let delayed_events = events.iter().map(delayed_events::to_client).collect();
    Ok(Json(DelayedEvents { delayed_events }))
}

/// The delay of a `/send` or `/state` request (`?org.matrix.msc4140.delay=`), if it asks for
/// one. Any other MSC4140 parameter (`parent_delay_id`, from an older draft) is refused rather
/// than ignored, so a client never believes it got a behaviour it did not.
pub fn delay_param(query: &RawQuery) -> Result<Option<u64>> {
    let mut delay = None;
    for (key, value) in query.pairs() {
        match key.as_str() {
            "org.matrix.msc4140.delay" => {
                delay = Some(delayed_events::parse_delay(value)?);
            }
            key if key.starts_with("org.matrix.msc4140.") => {
                return Err(Error::invalid_param(format!(
                    "{key} is not supported; only org.matrix.msc4140.delay is"
                )));
            }
            _ => {}
        }
    }
    Ok(delay)
}
