//! `POST /_matrix/client/v1/appservice/{appserviceId}/ping` (spec v1.7): an appservice asks
//! the homeserver to call its `/_matrix/app/v1/ping`, to check the link both ways.

use std::sync::Arc;

use axum::extract::State;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::api::extract::{JsonBody, PathParams, access_token};
use crate::service::Server;
use crate::service::appservice::ping::{PingError, ping};

/// The routes of this area.
pub fn routes() -> Router<Arc<Server>> {
    Router::new().route(
        "/_matrix/client/v1/appservice/{appservice_id}/ping",
        post(ping_appservice),
    )
}

#[derive(Deserialize)]
pub struct PingBody {
    #[serde(default)]
    transaction_id: Option<String>,
}

/// # `POST /_matrix/client/v1/appservice/{appserviceId}/ping`
/// Only the appservice itself may ask (its `as_token`, else 403 `M_FORBIDDEN`).
async fn ping_appservice(
    State(server): State<Arc<Server>>,
    parts: Parts,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<PingBody>,
) -> Response {
    let caller = access_token(&parts).and_then(|t| server.appservices.by_as_token(&t));
    if caller.is_none_or(|reg| reg.id != id) {
        return PingError::Forbidden.into_response();
    }
    match ping(&server, &id, body.transaction_id).await {
        Ok(ms) => Json(json!({"duration_ms": ms})).into_response(),
        Err(err) => err.into_response(),
    }
}
