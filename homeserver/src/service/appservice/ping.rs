//! The appservice ping (spec v1.7: `POST /_matrix/client/v1/appservice/{appserviceId}/ping`
//! and the admin socket's `POST /v1/appservices/{id}/ping`): the homeserver calls the
//! appservice's `POST /_matrix/app/v1/ping` and reports how long it took, or why it failed
//! with the spec's error codes.
//!
//! A successful ping also ends the backoff of the appservice's transaction sender: the
//! appservice is up, so its queue is retried at once rather than when the backoff (up to
//! `[appservices] retry_cap_secs`) runs out. Bridges ping the homeserver when they start;
//! an operator pings after fixing one.

use std::time::{Duration, Instant};

use axum::Json;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::service::Server;
use crate::transport::appservice::{CallError, call};

/// Why a ping did not succeed, answered as the spec's error JSON.
#[derive(Debug, Clone)]
pub enum PingError {
    /// 403 `M_FORBIDDEN`: the token is not the appservice's `as_token`.
    Forbidden,
    /// 404 `M_NOT_FOUND`: no appservice has this ID (admin socket).
    UnknownAppservice(String),
    /// 400 `M_URL_NOT_SET`: a send-only appservice.
    UrlNotSet,
    /// 502 `M_BAD_STATUS`, with the appservice's status and body.
    BadStatus {
        /// Its HTTP status.
        status: u16,
        /// Its body text.
        body: String,
    },
    /// 502 `M_CONNECTION_FAILED`.
    ConnectionFailed(String),
    /// 504 `M_CONNECTION_TIMEOUT`.
    Timeout,
}

impl IntoResponse for PingError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                json!({"errcode": "M_FORBIDDEN", "error": "Provided access token is not the appservice's as_token"}),
            ),
            Self::UnknownAppservice(id) => (
                StatusCode::NOT_FOUND,
                json!({"errcode": "M_NOT_FOUND", "error": format!("no appservice {id:?} is registered")}),
            ),
            Self::UrlNotSet => (
                StatusCode::BAD_REQUEST,
                json!({"errcode": "M_URL_NOT_SET", "error": "Application service doesn't have a URL configured"}),
            ),
            Self::BadStatus { status, body } => (
                StatusCode::BAD_GATEWAY,
                json!({"errcode": "M_BAD_STATUS", "error": format!("Ping returned status {status}"), "status": status, "body": body}),
            ),
            Self::ConnectionFailed(why) => (
                StatusCode::BAD_GATEWAY,
                json!({"errcode": "M_CONNECTION_FAILED", "error": format!("Connection to the application service failed: {why}")}),
            ),
            Self::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                json!({"errcode": "M_CONNECTION_TIMEOUT", "error": "Connection to application service timed out"}),
            ),
        };
        (status, Json(body)).into_response()
    }
}

/// Pings the appservice `id`, passing `transaction_id` through; the round trip in ms.
pub async fn ping(
    server: &Server,
    id: &str,
    transaction_id: Option<String>,
) -> Result<u64, PingError> {
    let reg = server
        .appservices
        .by_id(id)
        .ok_or_else(|| PingError::UnknownAppservice(id.to_owned()))?;
    let url = reg.url.as_deref().ok_or(PingError::UrlNotSet)?;
    let body = match transaction_id {
        Some(txn) => json!({"transaction_id": txn}),
        None => Value::Object(Default::default()),
    };
    let timeout = Duration::from_secs(server.config.appservices.request_timeout_secs);
    let started = Instant::now();
    match call(
        url,
        &reg.hs_token,
        Method::POST,
        "/_matrix/app/v1/ping",
        Some(&body),
        timeout,
    )
    .await
    {
        Ok(_) => {
            server.appservice_kicker.retry_now(id);
            Ok(started.elapsed().as_millis() as u64)
        }
        Err(CallError::Status { status, body }) => Err(PingError::BadStatus { status, body }),
        Err(CallError::Connection(why)) => Err(PingError::ConnectionFailed(why)),
        Err(CallError::Timeout) => Err(PingError::Timeout),
    }
}
