//! Reporting content: `/rooms/{roomId}/report/{eventId}`, `/rooms/{roomId}/report`,
//! `/users/{userId}/report`. Reports are stored for the unit's admin (`appliance reports`).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::extract::{Auth, JsonBody, PathParams, event_id, room_id, user_id};
use crate::error::{Error, Result};
use crate::service::Server;
use crate::store::admin::{Report, add_report};
use crate::store::{accounts, events, state};
use crate::util::now_ms;

/// The routes of this area.
pub fn routes() -> Router<Arc<Server>> {
    const V3: &str = "/_matrix/client/v3";
    Router::new()
        .route(
            &format!("{V3}/rooms/{{room_id}}/report/{{event_id}}"),
            post(report_event),
        )
        .route(&format!("{V3}/rooms/{{room_id}}/report"), post(report_room))
        .route(&format!("{V3}/users/{{user_id}}/report"), post(report_user))
}

#[derive(Deserialize)]
pub struct ReportBody {
    #[serde(default)]
    reason: Option<String>,
}

/// Longest reason kept: a report is a note to the admin, not a document.
const MAX_REASON: usize = 4096;

fn reason_of(body: ReportBody) -> Result<String> {
    let reason = body.reason.unwrap_or_default();
    if reason.len() > MAX_REASON {
        return Err(Error::invalid_param("reason is longer than 4096 bytes"));
    }
    Ok(reason)
}

async fn file(server: &Server, report: Report) -> Result<Json<Value>> {
    tracing::info!(reporter = %report.reporter, kind = %report.kind, "content reported");
    server
        .store
        .write(move |tx| add_report(tx, &report))
        .await?;
    Ok(Json(json!({})))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}`
/// The reporter must be joined to the room and the event visible to them; otherwise
/// `M_NOT_FOUND`, whether or not the event exists.
pub async fn report_event(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((room, event)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<ReportBody>,
) -> Result<Json<Value>> {
    let (room, event) = (room_id(&room)?.to_string(), event_id(&event)?.to_string());
    let reason = reason_of(body)?;
    let reporter = auth.user_id.to_string();
    let (r, e, u) = (room.clone(), event.clone(), reporter.clone());
    let sender = server
        .store
        .read(move |conn| {
            if state::membership(conn, &r, &u)?.as_deref() != Some("join") {
                return Ok(None);
            }
            Ok(events::get_room_event(conn, &r, &e)?
                .filter(|ev| ev.redacted_by.is_none())
                .map(|ev| ev.pdu.sender.to_string()))
        })
        .await?
        .ok_or_else(|| {
            Error::not_found("The event was not found or you are not joined to the room")
        })?;
    let report = Report {
        id: 0,
        reporter,
        kind: "event".to_owned(),
        room_id: Some(room),
        event_id: Some(event),
        target_user: Some(sender),
        reason,
        created_ts: now_ms(),
    };
    file(&server, report).await
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/report`
/// Any room this unit knows may be reported, joined or not (the spec does not require
/// membership); unknown rooms are `M_NOT_FOUND`.
pub async fn report_room(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    JsonBody(body): JsonBody<ReportBody>,
) -> Result<Json<Value>> {
    let room = room_id(&room)?.to_string();
    let reason = reason_of(body)?;
    let r = room.clone();
    let known = server
        .store
        .read(move |conn| Ok(state::get_room(conn, &r)?.is_some()))
        .await?;
    if !known {
        return Err(Error::not_found("The room was not found"));
    }
    let report = Report {
        id: 0,
        reporter: auth.user_id.to_string(),
        kind: "room".to_owned(),
        room_id: Some(room),
        event_id: None,
        target_user: None,
        reason,
        created_ts: now_ms(),
    };
    file(&server, report).await
}

/// # `POST /_matrix/client/v3/users/{userId}/report`
/// Local users must exist (`M_NOT_FOUND` otherwise: every account on a unit is a colleague,
/// so there is nothing to conceal); users of other units are taken as given.
pub async fn report_user(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(user): PathParams<String>,
    JsonBody(body): JsonBody<ReportBody>,
) -> Result<Json<Value>> {
    let target = user_id(&user)?;
    let reason = reason_of(body)?;
    if target.server_name() == server.server_name() {
        let t = target.to_string();
        let known = server
            .store
            .read(move |conn| Ok(accounts::get_user(conn, &t)?.is_some()))
            .await?;
        if !known {
            return Err(Error::not_found("The user was not found"));
        }
    }
    let report = Report {
        id: 0,
        reporter: auth.user_id.to_string(),
        kind: "user".to_owned(),
        room_id: None,
        event_id: None,
        target_user: Some(target.to_string()),
        reason,
        created_ts: now_ms(),
    };
    file(&server, report).await
}
