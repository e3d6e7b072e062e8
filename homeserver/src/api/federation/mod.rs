//! The federation listener: TLS with the unit's certificate, X-Matrix authentication against
//! pinned keys of allow-listed peers, and the Server-Server API routes.
//!
//! Architecture invariant: a request whose origin is not allow-listed, or whose signature does
//! not verify against the pinned key, is refused by [`Signed`] before any handler runs — no
//! database write, no outbound request.

mod handlers;
mod hierarchy;
mod knock;
mod media;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::routing::{get, post, put};
use serde_json::Value;

use crate::error::{Error, ErrorCode};
use crate::matrix::xmatrix::{parse_header, verify_request};
use crate::service::Server;

/// A verified federation request: who sent it, and its JSON body (if any).
pub struct Signed {
    /// The allow-listed origin server.
    pub origin: String,
    /// The parsed body, `None` for an empty body.
    pub body: Option<Value>,
}

impl Signed {
    /// The body read as its wire type (`matrix::wire`): an absent body, or one without a
    /// field the spec requires, is 400 `M_BAD_JSON`, never an empty default.
    pub fn body_as<T: serde::de::DeserializeOwned>(&mut self, what: &str) -> Result<T, Error> {
        let body = self
            .body
            .take()
            .ok_or_else(|| Error::bad_json(format!("missing {what} body")))?;
        serde_json::from_value(body)
            .map_err(|err| Error::bad_json(format!("malformed {what} body: {err}")))
    }
}

fn unauthorized(why: impl Into<String>) -> Error {
    Error::new(ErrorCode::Unauthorized, why)
}

impl FromRequest<Arc<Server>> for Signed {
    type Rejection = Error;

    async fn from_request(req: Request, server: &Arc<Server>) -> Result<Self, Error> {
        let header = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .ok_or_else(|| unauthorized("Missing X-Matrix authorization"))?;
        let auth = parse_header(header).map_err(|e| unauthorized(e.to_string()))?;
        let own = server.server_name().as_str();
        if auth.destination.as_deref().is_some_and(|d| d != own) {
            return Err(unauthorized("Request is addressed to another server"));
        }
        let peer = server.peers.get(&auth.origin).ok_or_else(|| {
            Error::forbidden(format!(
                "{} is not an allow-listed peer of this unit",
                auth.origin
            ))
        })?;
        let key = peer
            .verify_key(&auth.key)
            .ok_or_else(|| {
                unauthorized(format!(
                    "Key {} is not pinned for {}",
                    auth.key, auth.origin
                ))
            })?
            .to_owned();
        let method = req.method().as_str().to_owned();
        let uri = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let limit = server.config.federation.max_body_bytes;
        let bytes: Bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| {
                Error::new(
                    ErrorCode::TooLarge,
                    format!("Request body exceeds {limit} bytes"),
                )
            })?;
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            Some(serde_json::from_slice::<Value>(&bytes).map_err(|e| {
                Error::new(ErrorCode::NotJson, format!("Body is not valid JSON: {e}"))
            })?)
        };
        verify_request(&auth, &key, own, &method, &uri, body.as_ref())
            .map_err(|e| unauthorized(e.to_string()))?;
        Ok(Self {
            origin: auth.origin,
            body,
        })
    }
}

/// The federation routes.
pub fn router(server: Arc<Server>) -> Router {
    const V1: &str = "/_matrix/federation/v1";
    const V2: &str = "/_matrix/federation/v2";
    Router::new()
        .route("/_matrix/key/v2/server", get(handlers::server_keys))
        .route(&format!("{V1}/version"), get(handlers::version))
        .route(
            &format!("{V1}/openid/userinfo"),
            get(handlers::openid_userinfo),
        )
        .route(
            &format!("{V1}/send/{{txn_id}}"),
            put(handlers::send_transaction),
        )
        .route(
            &format!("{V1}/make_join/{{room_id}}/{{user_id}}"),
            get(handlers::make_join),
        )
        .route(
            &format!("{V2}/send_join/{{room_id}}/{{event_id}}"),
            put(handlers::send_join),
        )
        .route(
            &format!("{V1}/make_leave/{{room_id}}/{{user_id}}"),
            get(handlers::make_leave),
        )
        .route(
            &format!("{V2}/send_leave/{{room_id}}/{{event_id}}"),
            put(handlers::send_leave),
        )
        .route(
            &format!("{V2}/invite/{{room_id}}/{{event_id}}"),
            put(handlers::invite),
        )
        .route(&format!("{V1}/event/{{event_id}}"), get(handlers::event))
        .route(&format!("{V1}/state/{{room_id}}"), get(handlers::state))
        .route(
            &format!("{V1}/state_ids/{{room_id}}"),
            get(handlers::state_ids),
        )
        .route(
            &format!("{V1}/backfill/{{room_id}}"),
            get(handlers::backfill),
        )
        .route(
            &format!("{V1}/get_missing_events/{{room_id}}"),
            post(handlers::get_missing_events),
        )
        .route(
            &format!("{V1}/event_auth/{{room_id}}/{{event_id}}"),
            get(handlers::event_auth),
        )
        .route(&format!("{V1}/query/profile"), get(handlers::query_profile))
        .route(
            &format!("{V1}/query/directory"),
            get(handlers::query_directory),
        )
        .route(
            &format!("{V1}/user/devices/{{user_id}}"),
            get(handlers::user_devices),
        )
        .route(
            &format!("{V1}/user/keys/query"),
            post(handlers::user_keys_query),
        )
        .route(
            &format!("{V1}/user/keys/claim"),
            post(handlers::user_keys_claim),
        )
        .route(
            &format!("{V1}/timestamp_to_event/{{room_id}}"),
            get(handlers::timestamp_to_event),
        )
        .route(
            &format!("{V1}/publicRooms"),
            get(handlers::public_rooms).post(handlers::public_rooms_post),
        )
        .merge(knock::routes())
        .merge(hierarchy::routes())
        .merge(media::routes())
        .fallback(|| async { Error::new(ErrorCode::Unrecognized, "Unrecognized request") })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .with_state(server)
}
