//! Delayed events (MSC4140): events a client schedules now for the server to send later, and
//! the timer that sends them.
//!
//! MatrixRTC is the user: a client in a call schedules its "left the call" state event with a
//! short delay and keeps restarting the timer; if the client vanishes, the unit sends the event
//! and the call's other members see it leave. Reminders and self-destructing messages work the
//! same way.
//!
//! Scheduled events live in the database (`store::delayed_events`), so they survive a restart,
//! and the ones that fell due while the unit was down are sent at start, soonest first. An event
//! is checked and authorised when it is *sent*, exactly as an immediate send would be (the MSC:
//! power levels are evaluated at the point of sending). Marking it sent happens in the same
//! write transaction as the send, so a racing cancel or a crash can never send it twice.
//!
//! Limits (`[limits]` in the config): the longest delay and how many events one user may have
//! scheduled, both advertised in `/capabilities`. Finalised events are kept for seven days so
//! a client can look up how one ended.

use std::sync::Arc;
use std::time::Duration;

use ruma::events::TimelineEventType;
use ruma::{OwnedDeviceId, OwnedRoomId, OwnedUserId, UserId};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, watch};

use super::Server;
use super::state_request::{self, StateRequest};
use crate::error::{Error, Result};
use crate::matrix::build::NewEvent;
use crate::store::delayed_events::{self as store, DelayedEvent, Status};

/// How long finalised delayed events stay available for lookup (the MSC's recommendation).
const KEEP_FINALISED_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// Most due events sent in one round of the timer.
const BATCH: i64 = 64;
/// The timer wakes at least this often, to prune old rows and to notice a clock step.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// The pause before trying again when the unit itself could not send a due event.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Wakes the timer when the soonest due time may have moved earlier.
#[derive(Default)]
pub struct Timer {
    wake: Notify,
}

impl Timer {
    fn poke(&self) {
        self.wake.notify_one();
    }
}

/// What the client asked to schedule.
pub struct Schedule {
    /// The room.
    pub room_id: OwnedRoomId,
    /// The event type.
    pub event_type: String,
    /// The state key, for a state event.
    pub state_key: Option<String>,
    /// The content.
    pub content: Map<String, Value>,
    /// The delay (ms), as the client gave it.
    pub delay_ms: u64,
}

/// Parses the delay a client gave (`delay_ms` or the `org.matrix.msc4140.delay` query
/// parameter): a positive integer of milliseconds.
pub fn parse_delay(raw: &str) -> Result<u64> {
    match raw.parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(ms),
        _ => Err(Error::invalid_param(format!(
            "delay must be a positive number of milliseconds, not {raw:?}"
        ))),
    }
}

/// Schedules an event for `user` and returns its delay ID; a retry with the same transaction
/// ID gets the first one's.
pub async fn schedule(
    server: &Server,
    user: OwnedUserId,
    device: Option<OwnedDeviceId>,
    txn_id: Option<String>,
    request: Schedule,
) -> Result<String> {
    let limits = &server.config.limits;
    if limits.delayed_events_per_user == 0 {
        return Err(Error::forbidden(
            "Delayed events are turned off on this unit",
        ));
    }
    if request.delay_ms == 0 {
        return Err(Error::invalid_param("delay_ms must be positive"));
    }
    if request.delay_ms > limits.delayed_event_max_delay_ms {
        return Err(Error::forbidden(format!(
            "The delay may be at most {} ms on this unit",
            limits.delayed_event_max_delay_ms
        )));
    }
    if request.event_type == TimelineEventType::RoomRedaction.to_string()
        && request.state_key.is_none()
    {
        return Err(Error::forbidden(
            "Use the /redact endpoint to redact events",
        ));
    }
    if let Some(key) = &request.state_key {
        // Checked now too, so a request that can never succeed fails while the client waits.
        if let StateRequest::RemoteInvite { .. } = state_request::check(
            server,
            &request.room_id,
            request.event_type.clone(),
            key.clone(),
            request.content.clone(),
        )
        .await?
        {
            // Deviation: a remote invite needs the invitee's unit to countersign it, which
            // cannot be part of the send's one transaction; it is refused rather than sent
            // without the exactly-once guarantee.
            return Err(Error::invalid_param(
                "A delayed invite of a user on another unit is not supported",
            ));
        }
    }
    let max_scheduled = limits.delayed_events_per_user;
    let content = Value::Object(request.content).to_string();
    let now = server.clock.now_ms();
    let event = DelayedEvent {
        delay_id: format!("syd_{}", crate::util::random_string(20)),
        user_id: user.to_string(),
        room_id: request.room_id.to_string(),
        event_type: request.event_type,
        state_key: request.state_key,
        content,
        delay_ms: i64::try_from(request.delay_ms).unwrap_or(i64::MAX),
        scheduled_at: now,
        status: Status::Scheduled,
        event_id: None,
        error: None,
        finalised_ts: None,
    };
    let device = super::device_key(device.as_deref()).to_owned();
    let delay_id = server
        .store
        .write(move |tx| {
            if let Some(txn) = &txn_id
                && let Some(existing) = store::for_txn(tx, &event.user_id, &device, txn)?
            {
                return Ok(existing);
            }
            let scheduled = store::count_scheduled(tx, &event.user_id)?;
            if scheduled.count >= max_scheduled {
                let wait = scheduled
                    .soonest_due
                    .map_or(1000, |due| (due - now).max(1000));
                return Err(Error::RateLimited {
                    retry_after_ms: u64::try_from(wait).unwrap_or(1000),
                });
            }
            store::insert(tx, &event, &device, txn_id.as_deref())?;
            Ok(event.delay_id.clone())
        })
        .await?;
    server.delayed.poke();
    Ok(delay_id)
}

/// What a client may do to a scheduled event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send it now.
    Send,
    /// Never send it.
    Cancel,
    /// Start its delay again from now.
    Restart,
}

impl Action {
    /// Parses the action's name; unknown names are the client's mistake.
    pub fn parse(name: &str) -> Result<Action> {
        match name {
            "send" => Ok(Action::Send),
            "cancel" => Ok(Action::Cancel),
            "restart" => Ok(Action::Restart),
            other => Err(Error::invalid_param(format!(
                "Unknown delayed event action {other:?} (send, cancel or restart)"
            ))),
        }
    }
}

/// Applies `action` to `user`'s delayed event. Retrying an action that already took effect
/// succeeds; one that conflicts with how the event ended is 409 (the MSC's rules).
pub async fn manage(server: &Server, user: &UserId, delay_id: &str, action: Action) -> Result<()> {
    let event = lookup(server, user, delay_id).await?;
    match (event.status, action) {
        (Status::Scheduled, Action::Restart) => {
            let id = event.delay_id.clone();
            let now = server.clock.now_ms();
            let restarted = server
                .store
                .write(move |tx| store::restart(tx, &id, now))
                .await?;
            if !restarted {
                // Finalised meanwhile: answer as if it had been when we looked.
                return Box::pin(manage(server, user, delay_id, action)).await;
            }
            server.delayed.poke();
            Ok(())
        }
        (Status::Scheduled, Action::Cancel) => {
            let id = event.delay_id.clone();
            let now = server.clock.now_ms();
            let cancelled = server
                .store
                .write(move |tx| store::finalise(tx, &id, Status::Cancelled, None, None, now))
                .await?;
            if !cancelled {
                return Box::pin(manage(server, user, delay_id, action)).await;
            }
            Ok(())
        }
        (Status::Scheduled, Action::Send) => match send_now(server, &event).await {
            Ok(_) => Ok(()),
            Err(SendError::AlreadyFinalised) => {
                Box::pin(manage(server, user, delay_id, action)).await
            }
            // The MSC: answer with the send's error and keep the event scheduled, so it can
            // still go out at its time or on a later retry.
            Err(SendError::Refused(err)) => Err(err),
        },
        (Status::Sent, Action::Send) | (Status::Cancelled | Status::Failed, Action::Cancel) => {
            Ok(())
        }
        _ => Err(Error::Conflict(format!(
            "The delayed event was already {}",
            match event.status {
                Status::Sent => "sent",
                Status::Cancelled => "cancelled",
                Status::Failed => "dropped after a failed send",
                Status::Scheduled => "scheduled",
            }
        ))),
    }
}

/// `user`'s delayed event, or 404 (also for someone else's: a delay ID reveals nothing).
pub async fn lookup(server: &Server, user: &UserId, delay_id: &str) -> Result<DelayedEvent> {
    let id = delay_id.to_owned();
    let event = server.store.read(move |conn| store::get(conn, &id)).await?;
    match event {
        Some(event) if event.user_id == user.as_str() => Ok(event),
        _ => Err(Error::not_found("No such delayed event")),
    }
}

/// `user`'s scheduled events, soonest due first.
pub async fn list(server: &Server, user: &UserId) -> Result<Vec<DelayedEvent>> {
    let user = user.to_string();
    server
        .store
        .read(move |conn| store::scheduled_for_user(conn, &user))
        .await
}

/// The client form of a delayed event (MSC4140's lookup response).
#[derive(Debug, Serialize)]
pub struct ClientDelayedEvent {
    /// The opaque ID handed to the client.
    pub delay_id: String,
    /// The room it goes into.
    pub room_id: String,
    /// Its event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The delay asked for (ms).
    pub delay_ms: i64,
    /// When it was scheduled or last restarted (ms since the epoch).
    pub scheduled_at: i64,
    /// The event content as the client sent it: arbitrary JSON.
    pub content: Value,
    /// Its state key, for a state event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_key: Option<String>,
    /// The event ID, once sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// The standard error response of a send that failed (stored as the error body was).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    /// When it was sent, cancelled or failed (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finalised_ts: Option<i64>,
}

/// The client form of a delayed event (the MSC's lookup response).
pub fn to_client(event: &DelayedEvent) -> ClientDelayedEvent {
    ClientDelayedEvent {
        delay_id: event.delay_id.clone(),
        room_id: event.room_id.clone(),
        event_type: event.event_type.clone(),
        delay_ms: event.delay_ms,
        scheduled_at: event.scheduled_at,
        // Written by this server from a client's JSON object; `{}` only if the row was damaged.
        content: serde_json::from_str::<Value>(&event.content).unwrap_or_else(|_| json!({})),
        state_key: event.state_key.clone(),
        event_id: event.event_id.clone(),
        error: event
            .error
            .as_ref()
            .map(|error| serde_json::from_str(error).unwrap_or_else(|_| json!({}))),
        finalised_ts: event.finalised_ts,
    }
}

enum SendError {
    /// Someone else (a cancel, the timer) finalised it first.
    AlreadyFinalised,
    /// The send was refused, as an immediate send would have been.
    Refused(Error),
}

/// Sends a scheduled event now, as its owner, and marks it sent in the same transaction.
async fn send_now(server: &Server, event: &DelayedEvent) -> Result<String, SendError> {
    let room = OwnedRoomId::try_from(event.room_id.as_str())
        .map_err(|err| SendError::Refused(Error::internal(err.to_string())))?;
    let sender = OwnedUserId::try_from(event.user_id.as_str())
        .map_err(|err| SendError::Refused(Error::internal(err.to_string())))?;
    let content: Map<String, Value> = serde_json::from_str(&event.content)
        .map_err(|err| SendError::Refused(Error::internal(err.to_string())))?;
    let new_event = match &event.state_key {
        Some(key) => match state_request::check(
            server,
            &room,
            event.event_type.clone(),
            key.clone(),
            content,
        )
        .await
        .map_err(SendError::Refused)?
        {
            StateRequest::Local(new_event) => new_event,
            StateRequest::RemoteInvite { .. } => {
                return Err(SendError::Refused(Error::invalid_param(
                    "A delayed invite of a user on another unit is not supported",
                )));
            }
        },
        None => NewEvent::message(
            TimelineEventType::from(event.event_type.clone()),
            Value::Object(content),
        ),
    };
    let delay_id = event.delay_id.clone();
    let now = server.clock.now_ms();
    let sent = crate::service::rooms::send_with(
        server,
        room,
        sender,
        new_event,
        None,
        move |conn, event_id| {
            if store::finalise(
                conn,
                &delay_id,
                Status::Sent,
                Some(event_id.as_str()),
                None,
                now,
            )? {
                Ok(())
            } else {
                Err(Error::Conflict("already finalised".to_owned()))
            }
        },
    )
    .await;
    match sent {
        Ok(id) => Ok(id.to_string()),
        Err(Error::Conflict(_)) => Err(SendError::AlreadyFinalised),
        Err(err) => Err(SendError::Refused(err)),
    }
}

/// The timer: sends delayed events when they fall due (at start, those that fell due while the
/// unit was down, soonest first), prunes old finalised ones, and stops on shutdown.
pub async fn run(server: Arc<Server>, mut stop: watch::Receiver<bool>) {
    loop {
        let now = server.clock.now_ms();
        let due = server
            .store
            .read(move |conn| store::due(conn, now, BATCH))
            .await;
        let mut held_back = false;
        match due {
            Ok(due) => {
                for event in &due {
                    held_back |= !send_due(&server, event).await;
                }
                if due.len() as i64 == BATCH && !held_back {
                    continue;
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "reading due delayed events failed");
                held_back = true;
            }
        }
        let pruned = server
            .store
            .write_bookkeeping(move |tx| store::prune_finalised(tx, now - KEEP_FINALISED_MS))
            .await;
        if let Err(err) = pruned {
            tracing::warn!(error = %err, "pruning finalised delayed events failed");
        }
        let next = server.store.read(store::next_due).await.ok().flatten();
        let mut sleep = match next {
            Some(due) => {
                Duration::from_millis(u64::try_from(due - server.clock.now_ms()).unwrap_or(0))
                    .min(MAX_SLEEP)
            }
            None => MAX_SLEEP,
        };
        if held_back {
            // Something due could not go out for a reason of the unit's (storage, disk
            // space): try again later instead of spinning on it.
            sleep = sleep.max(RETRY_AFTER);
        }
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = server.delayed.wake.notified() => {}
            _ = crate::util::stopped(&mut stop) => return,
        }
    }
}

/// Sends one due event; a refusal finalises it as failed with the error the client would have
/// got (the MSC: it is descheduled). `false` when it stays scheduled because the unit could
/// not send it now.
async fn send_due(server: &Server, event: &DelayedEvent) -> bool {
    match send_now(server, event).await {
        Ok(event_id) => {
            tracing::debug!(delay_id = %event.delay_id, %event_id, "sent a delayed event");
        }
        Err(SendError::AlreadyFinalised) => {}
        Err(SendError::Refused(err)) if err.is_disk_full() || is_transient(&err) => {
            // Not the event's fault: it stays scheduled and is tried again on the next round.
            tracing::warn!(delay_id = %event.delay_id, error = %err, "delayed event not sent yet");
            return false;
        }
        Err(SendError::Refused(err)) => {
            let body = err.client_body().to_string();
            let id = event.delay_id.clone();
            let now = server.clock.now_ms();
            let marked = server
                .store
                .write_bookkeeping(move |tx| {
                    store::finalise(tx, &id, Status::Failed, None, Some(&body), now)
                })
                .await;
            tracing::info!(delay_id = %event.delay_id, error = %err, "a delayed event could not be sent");
            if let Err(err) = marked {
                tracing::warn!(error = %err, "recording a failed delayed event failed");
                return false;
            }
        }
    }
    true
}

/// Failures of the unit rather than of the event (storage, shutdown, read-only mode).
fn is_transient(err: &Error) -> bool {
    matches!(
        err,
        Error::Database(_) | Error::WriterGone | Error::ResourceLimit { .. }
    )
}
